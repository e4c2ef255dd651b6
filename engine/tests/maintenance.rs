//! Compaction and scrub on the simulated disk: what they reclaim, what they keep, what they find,
//! and what survives a restart. (The seeded simulation in sim.rs runs both under crashes and
//! faults; these tests pin down the cases a random workload reaches rarely.)

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use podstore_disks::{Io, SimDisk, SimFaults};
use podstore_engine::budget::IoBudget;
use podstore_engine::scrub::ScrubEnd;
use podstore_engine::{Clock, Error, Shard, ShardConfig, Stamp};

const DIR: &str = "/d";

fn cfg(horizon_ms: u64) -> ShardConfig {
    ShardConfig {
        blob_size_bytes: 64 << 10,
        write_buf_bytes: 16 << 10,
        scan_window_bytes: 16 << 10,
        object_size_max_bytes: 1 << 20,
        tombstone_reserve_bytes: 8 << 10,
        tombstone_horizon_ms: horizon_ms,
        clock: Arc::new(Clock::new(1)),
        ..ShardConfig::default()
    }
}

fn run<F: std::future::Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    tokio::task::LocalSet::new().block_on(&rt, f);
}

fn value(key: usize, gen: usize) -> Vec<u8> {
    (0..3000 + key * 7).map(|i| (i * 31 + key * 7 + gen * 13) as u8).collect()
}

async fn read(shard: &Rc<Shard<SimDisk>>, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    match shard.get(key).await? {
        Some(mut r) => r.read_all().await.map(Some),
        None => Ok(None),
    }
}

async fn open(disk: &SimDisk, c: ShardConfig) -> Rc<Shard<SimDisk>> {
    Shard::open(disk.clone(), c, Path::new(DIR), 0).await.expect("open").0
}

fn key(i: usize) -> Vec<u8> {
    format!("photos/{i:04}").into_bytes()
}

#[test]
fn compaction_reclaims_dead_space_and_keeps_every_live_object() {
    run(async {
        let disk = SimDisk::new(7, SimFaults::default());
        let shard = open(&disk, cfg(u64::MAX)).await;
        let n = 80;
        let mut want: Vec<Option<Vec<u8>>> = (0..n).map(|i| Some(value(i, 0))).collect();
        for i in 0..n {
            shard.put_bytes(&key(i), "image/jpeg", &value(i, 0)).await.expect("put");
        }
        // Two thirds overwritten, a sixth deleted: the early blobs are mostly dead.
        for i in (0..n).filter(|i| i % 3 != 0) {
            shard.put_bytes(&key(i), "image/jpeg", &value(i, 1)).await.expect("overwrite");
            want[i] = Some(value(i, 1));
        }
        for i in (0..n).filter(|i| i % 6 == 3) {
            assert!(shard.delete(&key(i)).await.expect("delete"));
            want[i] = None;
        }
        let before = shard.stats();
        let candidates = shard.compaction_candidates(0.5);
        assert!(candidates.len() >= 3, "dead blobs to compact: {candidates:?} of {:?}", shard.blob_usage());
        let removed = shard.compact(0.5, &IoBudget::new(0)).await.expect("compact").expect("not running");
        let after = shard.stats();
        let st = shard.compact_stats();
        assert!(removed >= 3 && st.blobs_compacted == removed, "{st:?}");
        assert!(after.blob_bytes < before.blob_bytes, "{} -> {}", before.blob_bytes, after.blob_bytes);
        assert_eq!(st.bytes_reclaimed, removed * (64 << 10), "whole blob files removed");
        assert!(st.records_moved > 0 && st.tombstones_dropped == 0, "{st:?}");
        assert!(
            shard.blob_usage().iter().all(|u| !u.sealed || u.dead_ratio() < 0.5),
            "{:?}",
            shard.blob_usage()
        );
        for (i, w) in want.iter().enumerate() {
            assert_eq!(read(&shard, &key(i)).await.expect("read").as_ref(), w.as_ref(), "key {i}");
        }
        // The disk holds exactly the blobs the shard knows (and its checkpoint).
        let names = disk.list_dir(Path::new(DIR)).await.expect("list");
        let blobs = names.iter().filter(|n| n.starts_with("blob-")).count() as u64;
        assert_eq!(blobs, shard.stats().blobs, "{names:?}");
        // After a crash, recovery finds the same objects.
        drop(shard);
        disk.crash();
        let shard = open(&disk, cfg(u64::MAX)).await;
        for (i, w) in want.iter().enumerate() {
            assert_eq!(
                read(&shard, &key(i)).await.expect("read").as_ref(),
                w.as_ref(),
                "key {i} after restart"
            );
        }
        assert_eq!(shard.stats().objects as usize, want.iter().filter(|w| w.is_some()).count());
    });
}

#[test]
fn a_dropped_tombstone_never_lets_an_older_record_back() {
    run(async {
        let disk = SimDisk::new(9, SimFaults::default());
        // Horizon zero: a tombstone may go as soon as nothing older can be found.
        let shard = open(&disk, cfg(0)).await;
        shard.put_bytes(b"victim", "", &value(1, 0)).await.expect("put");
        for i in 0..14 {
            shard.put_bytes(&key(i), "", &value(i, 0)).await.expect("fill");
        }
        assert!(shard.delete(b"victim").await.expect("delete"));
        for i in 14..40 {
            shard.put_bytes(&key(i), "", &value(i, 0)).await.expect("fill");
        }
        // Kill every other object written after the delete, so the tombstone's blob is a
        // candidate while the victim's old record still sits in the first blob.
        for i in (14..40).step_by(2) {
            shard.delete(&key(i)).await.expect("delete");
        }
        shard.compact(0.2, &IoBudget::new(0)).await.expect("compact");
        let dropped = shard.compact_stats().tombstones_dropped;
        // Whatever compaction did, a recovery that has to rescan every blob (no checkpoint)
        // must not find the victim.
        let rescan = |disk: SimDisk| async move {
            for n in disk.list_dir(Path::new(DIR)).await.expect("list") {
                if n.ends_with(".ckpt") {
                    disk.remove(&Path::new(DIR).join(n)).await.expect("remove checkpoint");
                }
            }
            disk.sync_dir(Path::new(DIR)).await.expect("sync");
            disk.crash();
            open(&disk, cfg(0)).await
        };
        drop(shard);
        let shard = rescan(disk.clone()).await;
        assert_eq!(read(&shard, b"victim").await.expect("read"), None, "resurrected ({dropped} dropped)");
        // Now empty the first blob and make every other one partly dead: the victim's tombstone
        // becomes the oldest thing left, and goes.
        for i in 0..14 {
            shard.delete(&key(i)).await.expect("delete");
        }
        for i in (15..40).step_by(2) {
            shard.put_bytes(&key(i), "", &value(i, 1)).await.expect("overwrite");
        }
        // (Fill the open blob, where the first compaction put the tombstone's copy, so it seals.)
        for i in 200..216 {
            shard.put_bytes(&key(i), "", &value(i, 0)).await.expect("fill");
            shard.delete(&key(i)).await.expect("delete");
        }
        for _ in 0..4 {
            shard.compact(0.0, &IoBudget::new(0)).await.expect("compact");
        }
        assert!(!shard.is_deleted(b"victim"), "the tombstone was dropped: {:?}", shard.compact_stats());
        drop(shard);
        let shard = rescan(disk.clone()).await;
        assert_eq!(read(&shard, b"victim").await.expect("read"), None, "resurrected after the drop");
        for i in (15..40).step_by(2) {
            assert_eq!(read(&shard, &key(i)).await.expect("read"), Some(value(i, 1)), "key {i}");
        }
    });
}

#[test]
fn a_tombstone_a_peer_has_not_confirmed_is_kept() {
    run(async {
        let disk = SimDisk::new(11, SimFaults::default());
        let c = ShardConfig { peers: vec!["pod-b".into()], ..cfg(0) };
        let shard = open(&disk, c).await;
        shard.put_bytes(b"k", "", b"v").await.expect("put");
        let seq = shard.delete_stamped(b"k", Stamp::Local, false).await.expect("delete").seq.expect("seq");
        for i in 0..30 {
            shard.put_bytes(&key(i), "", &value(i, 0)).await.expect("fill");
            shard.delete(&key(i)).await.expect("delete");
        }
        // Confirm everything but the tombstone.
        for e in shard.backlog_take(0, usize::MAX, u64::MAX) {
            if e.seq != seq {
                shard.backlog_confirm(0, e.seq);
            }
        }
        for _ in 0..4 {
            shard.compact(0.0, &IoBudget::new(0)).await.expect("compact");
        }
        assert!(shard.is_deleted(b"k"), "the unconfirmed tombstone is still in the index");
        assert!(shard.compact_stats().blobs_compacted > 0, "{:?}", shard.compact_stats());
        // Its backlog entry moved with it: the copy is what the peer gets.
        let left = shard.backlog_take(0, usize::MAX, u64::MAX);
        assert_eq!(left.len(), 1, "{left:?}");
        assert_ne!(left[0].seq, seq, "the entry names the moved copy");
        match shard.backlog_item(&left[0], podstore_engine::ReadCheck::Verify).await.expect("item") {
            Some(podstore_engine::CopyItem::Delete { key, .. }) => assert_eq!(key, b"k"),
            other => panic!("expected the tombstone, got {other:?}"),
        }
        // Confirmed, it goes once its blob is sealed and compacted.
        shard.backlog_confirm(0, left[0].seq);
        for i in 100..130 {
            shard.put_bytes(&key(i), "", &value(i, 0)).await.expect("fill");
            shard.delete(&key(i)).await.expect("delete");
        }
        for e in shard.backlog_take(0, usize::MAX, u64::MAX) {
            shard.backlog_confirm(0, e.seq);
        }
        for _ in 0..4 {
            shard.compact(0.0, &IoBudget::new(0)).await.expect("compact");
        }
        assert!(!shard.is_deleted(b"k") && shard.compact_stats().tombstones_dropped > 0);
    });
}

#[test]
fn scrub_finds_a_flipped_bit_quarantines_the_key_and_compaction_waits_for_its_repair() {
    run(async {
        let disk = SimDisk::new(13, SimFaults::default());
        let shard = open(&disk, cfg(u64::MAX)).await;
        for i in 0..40 {
            shard.put_bytes(&key(i), "", &value(i, 0)).await.expect("put");
        }
        let free = IoBudget::new(0);
        assert_eq!(shard.scrub(&free, &free).await.expect("scrub"), Some(ScrubEnd::Complete));
        let st = shard.scrub_stats().await;
        assert_eq!((st.passes, st.records_checked, st.bad_records), (1, 40, 0), "{st:?}");
        assert!(st.last_pass_end_ms > 0 && st.pass_started_ms == 0);
        // Flip one bit in the data of the record of key 3 (blob 0, the fourth record).
        let victim = key(3);
        let v = shard.version_of(&victim).await.expect("version").expect("exists").0;
        let blob0 = Path::new(DIR).join("blob-0000000.psb");
        assert!(disk.flip_bit_at(&blob0, 3 * 4096 * 2 + 700, 2));
        assert_eq!(shard.scrub(&free, &free).await.expect("scrub"), Some(ScrubEnd::Complete));
        let st = shard.scrub_stats().await;
        assert_eq!((st.passes, st.bad_records), (2, 1), "{st:?}");
        let bad: Vec<_> = shard.quarantined().into_iter().filter_map(|q| q.key).collect();
        assert_eq!(bad.len(), 1);
        assert!(matches!(read(&shard, &bad[0]).await, Err(Error::Quarantined { .. })));
        // Everything else still reads; the damaged blob is not compacted away.
        let damaged = bad[0].clone();
        for i in (0..40).map(key).filter(|k| *k != damaged) {
            assert!(read(&shard, &i).await.expect("read").is_some());
            shard.delete(&i).await.expect("delete");
        }
        shard.compact(0.0, &IoBudget::new(0)).await.expect("compact");
        assert!(shard.compact_stats().blobs_skipped > 0, "{:?}", shard.compact_stats());
        assert!(disk.file_bytes(&blob0).is_some(), "the blob with the damaged record stays");
        // A peer's copy repairs it (same version); then the blob can go.
        let i: usize = String::from_utf8_lossy(&damaged[7..]).parse().expect("index");
        let good = value(i, 0);
        let vv =
            if damaged == victim { v } else { shard.version_of(&damaged).await.expect("v").expect("some").0 };
        let mut w = shard
            .put_stamped(&damaged, &"".into(), good.len() as u64, Stamp::Given(vv))
            .await
            .expect("put")
            .expect("a repair");
        w.write(&good).await.expect("write");
        w.finish().await.expect("finish");
        assert_eq!(read(&shard, &damaged).await.expect("read"), Some(good));
        for _ in 0..3 {
            shard.compact(0.0, &IoBudget::new(0)).await.expect("compact");
        }
        assert!(disk.file_bytes(&blob0).is_none(), "blob 0 compacted once repaired");
    });
}

/// A disk fault that destroys an acknowledged record's *header* block (left zero, garbage, or
/// another record's header written there): the index keeps only a fingerprint, so the scrub
/// must find it by checking the index against what it read, quarantine it as damage known by
/// fingerprint, and let a peer name the key so the usual repair can fetch it.
#[test]
fn scrub_finds_records_whose_header_a_fault_destroyed_and_a_peer_names_them() {
    run(async {
        let disk = SimDisk::new(19, SimFaults::default());
        let shard = open(&disk, cfg(u64::MAX)).await;
        for i in 0..6 {
            shard.put_bytes(&key(i), "", &value(i, 0)).await.expect("put");
        }
        let mut versions = Vec::new();
        for i in 0..6 {
            versions.push(shard.version_of(&key(i)).await.expect("version").expect("exists").0);
        }
        let blob0 = Path::new(DIR).join("blob-0000000.psb");
        let bytes = disk.file_bytes(&blob0).expect("blob 0");
        // Where each key's header block is (its key is written there, and nowhere else).
        let at = |i: usize| {
            let k = key(i);
            let pos = bytes.windows(k.len()).position(|w| w == &k[..]).expect("key in blob 0");
            (pos - pos % 4096) as u64
        };
        let other_header = bytes[at(0) as usize..at(0) as usize + 4096].to_vec();
        assert!(disk.overwrite_at(&blob0, at(1), &[0u8; 4096]), "zeroed");
        assert!(disk.overwrite_at(&blob0, at(3), &[0x5a; 4096]), "garbage");
        assert!(disk.overwrite_at(&blob0, at(5), &other_header), "another record's header");
        let free = IoBudget::new(0);
        assert_eq!(shard.scrub(&free, &free).await.expect("scrub"), Some(ScrubEnd::Complete));
        let st = shard.scrub_stats().await;
        assert_eq!(st.bad_regions, 3, "{st:?}");
        let mut unnamed = shard.unnamed_damaged();
        unnamed.sort_by_key(|(_, l)| l.offset());
        assert_eq!(unnamed.iter().map(|(_, l)| l.offset()).collect::<Vec<_>>(), vec![at(1), at(3), at(5)]);
        // A second pass adds nothing.
        assert_eq!(shard.scrub(&free, &free).await.expect("scrub"), Some(ScrubEnd::Complete));
        assert_eq!(shard.quarantined().len(), 3);
        // A peer lists keys: only the one whose fingerprint and place match is taken.
        for (n, (fp, loc)) in unnamed.iter().enumerate() {
            let i = [1, 3, 5][n];
            assert!(!shard.fingerprint_matches(&key(i + 1), *fp));
            assert!(shard.fingerprint_matches(&key(i), *fp));
            assert!(!shard.name_damaged(&key(0), *loc), "key 0 is not at {loc:?}");
            assert!(shard.name_damaged(&key(i), *loc));
            assert!(!shard.name_damaged(&key(i), *loc), "named once");
        }
        let mut named: Vec<Vec<u8>> =
            shard.quarantined().into_iter().map(|q| q.key.expect("named")).collect();
        named.sort();
        assert_eq!(named, vec![key(1), key(3), key(5)]);
        // The repair: each key's copy from a peer, at its version.
        for i in [1, 3, 5] {
            assert!(matches!(read(&shard, &key(i)).await, Err(Error::Quarantined { .. })));
            let good = value(i, 0);
            let mut w = shard
                .put_stamped(&key(i), &"".into(), good.len() as u64, Stamp::Given(versions[i]))
                .await
                .expect("put")
                .expect("a repair");
            w.write(&good).await.expect("write");
            w.finish().await.expect("finish");
        }
        for i in 0..6 {
            assert_eq!(read(&shard, &key(i)).await.expect("read"), Some(value(i, 0)), "key {i}");
        }
        assert!(shard.quarantined().is_empty(), "{:?}", shard.quarantined());
        assert!(shard.unnamed_damaged().is_empty());
    });
}

#[test]
fn a_stopped_scrub_resumes_after_a_restart_where_it_stopped() {
    run(async {
        let disk = SimDisk::new(17, SimFaults::default());
        let shard = open(&disk, cfg(u64::MAX)).await;
        for i in 0..120 {
            shard.put_bytes(&key(i), "", &value(i, 0)).await.expect("put");
        }
        let blobs = shard.stats().blobs;
        assert!(blobs >= 8, "{blobs} blobs");
        // Paced at 2 MiB/s: about 4 ms per 8 KiB of reads; stop it after three blobs.
        let free = IoBudget::new(0);
        let pace = IoBudget::new(2 << 20);
        let s2 = shard.clone();
        let stopper = async move {
            while s2.scrub_stats().await.next_blob < 3 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            s2.scrub_ctl().stop();
        };
        let (end, ()) = tokio::join!(shard.scrub(&free, &pace), stopper);
        assert_eq!(end.expect("scrub"), Some(ScrubEnd::Stopped));
        let st = shard.scrub_stats().await;
        assert!(st.pass_started_ms > 0 && st.next_blob >= 3 && st.passes == 0, "{st:?}");
        drop(shard);
        disk.crash();
        let shard = open(&disk, cfg(u64::MAX)).await;
        let st2 = shard.scrub_stats().await;
        assert_eq!(
            (st2.next_blob, st2.pass_started_ms),
            (st.next_blob, st.pass_started_ms),
            "resumes from the saved place"
        );
        assert_eq!(shard.scrub(&free, &free).await.expect("scrub"), Some(ScrubEnd::Complete));
        let st3 = shard.scrub_stats().await;
        assert_eq!(st3.passes, 1);
        assert!(st3.records_checked < 120 && st3.records_checked > 0, "only the rest was read: {st3:?}");
    });
}

/// Where `k`'s record is: its blob file and offset.
fn place_of(disk: &SimDisk, shard: &Shard<SimDisk>, k: &[u8]) -> (std::path::PathBuf, u64) {
    let fp = podstore_engine::index::fingerprint(k);
    let (_, _, loc) = shard.entries().into_iter().find(|(f, _, _)| *f == fp).expect("indexed");
    let name = format!("blob-{:07}.", loc.blob()); // .psb, or .psl for a dedicated blob
    let path = disk.paths().into_iter().find(|p| p.to_string_lossy().contains(&name)).expect("blob file");
    (path, loc.offset())
}

#[test]
fn a_record_the_device_cannot_read_is_marked_bad_replaced_by_a_newer_write_and_back_once_it_reads() {
    run(async {
        let disk = SimDisk::new(19, SimFaults::default());
        // Records past 16 KiB are read in pieces after their header.
        let c = || ShardConfig { single_read_max_bytes: 16 << 10, ..cfg(u64::MAX) };
        let shard = open(&disk, c()).await;
        for i in 0..40 {
            shard.put_bytes(&key(i), "", &value(i, 0)).await.expect("put");
        }
        let is_bad = |shard: &Shard<SimDisk>, i: usize| {
            shard.quarantined().iter().any(|q| {
                q.key.as_deref() == Some(&key(i)[..])
                    && q.reason == podstore_engine::checkpoint::QuarantineReason::ReadError
            })
        };
        // A bad sector under key 3's header: the GET fails and marks it bad; the next answers
        // "quarantined" without touching the device; the other keys read.
        let (blob, off) = place_of(&disk, &shard, &key(3));
        disk.fail_region(&blob, off, off + 4096);
        assert!(matches!(read(&shard, &key(3)).await, Err(Error::Disk { .. })));
        assert!(is_bad(&shard, 3));
        assert!(matches!(read(&shard, &key(3)).await, Err(Error::Quarantined { .. })));
        for i in (0..40).filter(|&i| i != 3) {
            assert_eq!(read(&shard, &key(i)).await.expect("read"), Some(value(i, 0)), "key {i}");
        }
        // Still unreadable: stays bad. Readable again: back in service, as it was.
        assert!(!shard.recheck(&key(3)).await.expect("recheck"));
        disk.heal_regions();
        assert!(shard.recheck(&key(3)).await.expect("recheck"));
        assert!(!is_bad(&shard, 3));
        assert_eq!(read(&shard, &key(3)).await.expect("read"), Some(value(3, 0)));
        // A bad sector in the middle of a large object's data (read in pieces after its
        // header): the GET's body read fails and marks it.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        shard.put_bytes(&key(5), "", &big).await.expect("put");
        let (blob, off) = place_of(&disk, &shard, &key(5));
        disk.fail_region(&blob, off + 200_704, off + 204_800);
        let mut r = shard.get(&key(5)).await.expect("the header reads").expect("exists");
        assert!(r.read_all().await.is_err(), "the bad sector");
        assert!(is_bad(&shard, 5));
        // A write over a record the device can't read (key 7, never read since) succeeds: the
        // old record is marked bad and replaced; the write clears the mark.
        let (blob, off) = place_of(&disk, &shard, &key(7));
        disk.fail_region(&blob, off, off + 4096);
        shard.put_bytes(&key(7), "", &value(7, 1)).await.expect("a write over an unreadable record");
        assert_eq!(read(&shard, &key(7)).await.expect("read"), Some(value(7, 1)));
        assert!(!is_bad(&shard, 7));
        // A peer's copy of a key marked bad after a read error in its body (its header reads):
        // an older version is refused (the error may pass), the same version repairs it.
        let older = Stamp::Given(podstore_engine::Version { hlc: 1, origin: 9 });
        assert!(shard.put_stamped(&key(5), &"".into(), 1, older).await.expect("older").is_none());
        let v5 = Stamp::Given(shard.version_of(&key(5)).await.expect("version").expect("held").0);
        let w = shard.put_stamped(&key(5), &"".into(), value(5, 2).len() as u64, v5).await.expect("copy");
        let mut w = w.expect("a copy over a bad record is taken");
        w.write(&value(5, 2)).await.expect("write");
        w.finish().await.expect("finish");
        assert!(!is_bad(&shard, 5));
        assert_eq!(read(&shard, &key(5)).await.expect("read"), Some(value(5, 2)));
        let again = shard.put_stamped(&key(5), &"".into(), 0, v5).await.expect("again");
        assert!(again.is_none(), "the repaired key takes no second copy of the same version");
        // The scrub: key 9's header sits on a bad sector nobody read yet; the scan of its blob
        // fails, each record of the blob is then read alone: key 9's place is marked as a bad
        // region (its key is in the header that can't be read), the others pass; the next
        // GET of key 9 marks the key.
        let (blob, off) = place_of(&disk, &shard, &key(9));
        disk.heal_regions();
        disk.fail_region(&blob, off, off + 4096);
        let free = IoBudget::new(0);
        assert_eq!(shard.scrub(&free, &free).await.expect("scrub"), Some(ScrubEnd::Complete));
        let st = shard.scrub_stats().await;
        assert_eq!((st.read_errors, st.bad_regions, st.bad_records), (1, 1, 0), "{st:?}");
        let region = shard.quarantined().into_iter().find(|q| q.key.is_none()).expect("a region");
        assert_eq!(region.offset, off, "the region is key 9's place");
        assert!(st.records_checked >= 40, "the other records were checked one by one: {st:?}");
        assert!(read(&shard, &key(9)).await.is_err());
        assert!(is_bad(&shard, 9));
        let marked: Vec<_> = shard.quarantined().into_iter().filter_map(|q| q.key).collect();
        assert_eq!(marked, vec![key(9)], "key 9 alone is marked");
        // The mark survives a restart; the device reads it again; a check puts it back.
        shard.checkpoint().await.expect("checkpoint");
        drop(shard);
        disk.crash();
        disk.heal_regions();
        let shard = open(&disk, c()).await;
        assert!(matches!(read(&shard, &key(9)).await, Err(Error::Quarantined { .. })));
        assert!(shard.recheck(&key(9)).await.expect("recheck"));
        assert_eq!(read(&shard, &key(9)).await.expect("read"), Some(value(9, 0)));
    });
}
