//! Versions: the newest write wins whatever order copies arrive in, a tombstone keeps an older
//! copy from coming back, and a node's clock never falls behind a version on its disks.

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

mod common;

use common::run;

use podstore_disks::{SimDisk, SimFaults};
use podstore_engine::{Clock, CopyItem, ReadCheck, Shard, ShardConfig, Stamp, Version};

fn cfg(clock: Arc<Clock>) -> ShardConfig {
    ShardConfig { clock, ..common::small_cfg() }
}

async fn copy(shard: &Rc<Shard<SimDisk>>, key: &[u8], body: &[u8], v: Version) -> bool {
    match shard.put_stamped(key, &"".into(), body.len() as u64, Stamp::Given(v)).await.expect("put copy") {
        Some(mut w) => {
            w.write(body).await.expect("write");
            assert_eq!(w.finish().await.expect("finish").version, v);
            true
        }
        None => false,
    }
}

async fn body(shard: &Rc<Shard<SimDisk>>, key: &[u8]) -> Option<(Vec<u8>, Version)> {
    let mut r = shard.get(key).await.expect("get")?;
    let v = r.meta.version;
    Some((r.read_all().await.expect("read"), v))
}

fn v(ms: u64, origin: u64) -> Version {
    Version { hlc: ms << 16, origin }
}

#[test]
fn copies_in_any_order_leave_the_newest() {
    run(async {
        let disk = SimDisk::new(1, SimFaults::default());
        let clock = Arc::new(Clock::new(1));
        let (shard, _) =
            Shard::open(disk.clone(), cfg(clock.clone()), Path::new("/d"), 0).await.expect("open");
        // Newer first, then older: the older is refused and nothing is written.
        assert!(copy(&shard, b"k", b"new", v(2_000, 5)).await);
        let records = shard.stats().objects;
        assert!(!copy(&shard, b"k", b"old", v(1_000, 5)).await);
        assert!(!copy(&shard, b"k", b"same", v(2_000, 5)).await, "the same version twice is one write");
        assert_eq!(shard.stats().objects, records);
        assert_eq!(body(&shard, b"k").await, Some((b"new".to_vec(), v(2_000, 5))));
        // A tie on the clock goes to the larger origin, the same on every appliance.
        assert!(copy(&shard, b"k", b"tie", v(2_000, 6)).await);
        assert!(!copy(&shard, b"k", b"tie-lower", v(2_000, 4)).await);
        assert_eq!(body(&shard, b"k").await.map(|b| b.0), Some(b"tie".to_vec()));

        // A copied delete newer than the object removes it; an older copy of the object
        // arriving afterwards does not bring it back, nor does a copy of an older delete.
        let d = shard.delete_stamped(b"k", Stamp::Given(v(3_000, 5)), false).await.expect("delete copy");
        assert_eq!((d.existed, d.version), (true, Some(v(3_000, 5))));
        assert!(!copy(&shard, b"k", b"stale", v(2_500, 7)).await);
        assert_eq!(body(&shard, b"k").await, None);
        let d = shard.delete_stamped(b"k", Stamp::Given(v(2_900, 5)), false).await.expect("old delete");
        assert_eq!(d.version, None);
        assert_eq!(shard.version_of(b"k").await.expect("version"), Some((v(3_000, 5), true)));
        // A newer write after the delete is accepted.
        assert!(copy(&shard, b"k", b"reborn", v(4_000, 5)).await);
        // A delete copy for a key never seen still leaves a tombstone (it may be older copies'
        // only guard), and a local delete of an absent key writes one only when asked.
        let d = shard.delete_stamped(b"never", Stamp::Given(v(5_000, 5)), false).await.expect("delete");
        assert_eq!((d.existed, d.version), (false, Some(v(5_000, 5))));
        assert!(!copy(&shard, b"never", b"x", v(4_999, 9)).await);
        let d = shard.delete_stamped(b"absent", Stamp::Local, false).await.expect("delete");
        assert_eq!(d.version, None);
        let d = shard.delete_stamped(b"absent", Stamp::Local, true).await.expect("delete");
        assert!(d.version.is_some());

        // Local writes are stamped after every version the clock has seen.
        let local = shard.put_bytes(b"k", "", b"local").await.expect("local put");
        assert!(local.version > v(5_000, 5) && local.version.origin == 1);

        // Versions survive a restart, from the checkpoint and from the tail after it.
        shard.checkpoint().await.expect("checkpoint");
        assert!(copy(&shard, b"tail", b"t", v(9_000_000_000_000, 3)).await);
        drop(shard);
        let mut tail_v = v(9_000_000_000_000, 3);
        for with_checkpoint in [true, false] {
            if !with_checkpoint {
                for p in disk.paths() {
                    if p.to_string_lossy().ends_with(".ckpt") {
                        podstore_disks::Io::remove(&disk, &p).await.expect("rm");
                    }
                }
            }
            // A fresh clock (a restarted process) learns every version from the disk.
            let fresh = Arc::new(Clock::new(1));
            let (shard, _) =
                Shard::open(disk.clone(), cfg(fresh.clone()), Path::new("/d"), 0).await.expect("reopen");
            assert_eq!(body(&shard, b"k").await, Some((b"local".to_vec(), local.version)));
            assert_eq!(body(&shard, b"tail").await.map(|b| b.1), Some(tail_v));
            assert!(fresh.last() >= tail_v.hlc, "with_checkpoint={with_checkpoint}");
            let next = shard.put_bytes(b"tail", "", b"after restart").await.expect("put");
            assert!(next.version > tail_v);
            assert!(!copy(&shard, b"tail", b"t", tail_v).await);
            tail_v = next.version;
        }
    });
}

#[test]
fn backlogs_hold_unconfirmed_local_writes_across_restarts() {
    run(async {
        let disk = SimDisk::new(2, SimFaults::default());
        let clock = Arc::new(Clock::new(1));
        let peers = |names: &[&str]| ShardConfig {
            peers: names.iter().map(|s| s.to_string()).collect(),
            ..cfg(clock.clone())
        };
        let (shard, _) =
            Shard::open(disk.clone(), peers(&["b", "c"]), Path::new("/d"), 0).await.expect("open");
        let d1 = shard.put_bytes(b"k1", "", b"one").await.expect("put");
        let d2 = shard.put_bytes(b"k2", "", b"two").await.expect("put");
        assert!(shard.delete(b"k1").await.expect("delete"));
        // A copy of another appliance's write is that appliance's to send.
        assert!(copy(&shard, b"theirs", b"t", v(9_000, 5)).await);
        for p in 0..2 {
            assert_eq!(shard.backlog_stats(p).objects, 3, "peer {p}");
        }
        shard.backlog_confirm(0, d2.seq);
        assert_eq!(shard.backlog_stats(0).objects, 2);
        assert_eq!(shard.backlog_stats(1).objects, 3);
        // The overwritten put is superseded (its tombstone has its own entry); the delete is
        // sent as a delete.
        let taken = shard.backlog_take(0, 10, u64::MAX);
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0].seq, d1.seq);
        assert!(shard.backlog_item(&taken[0], ReadCheck::Verify).await.expect("item").is_none());
        match shard.backlog_item(&taken[1], ReadCheck::Verify).await.expect("item") {
            Some(podstore_engine::CopyItem::Delete { key, .. }) => assert_eq!(key, b"k1"),
            other => panic!("expected a delete, got {other:?}"),
        }
        assert!(shard.backlog_take(0, 10, u64::MAX).is_empty(), "taken entries are reserved");
        shard.backlog_release(0, taken[1].seq);
        shard.backlog_confirm(0, taken[0].seq);

        // Restart from a checkpoint plus a tail; the peers' order in the config may change.
        shard.checkpoint().await.expect("checkpoint");
        let d3 = shard.put_bytes(b"k3", "", b"three").await.expect("put");
        drop(shard);
        let (shard, _) =
            Shard::open(disk.clone(), peers(&["c", "b"]), Path::new("/d"), 0).await.expect("reopen");
        assert_eq!(shard.backlog_stats(1).objects, 2, "b: the tombstone and k3");
        assert_eq!(shard.backlog_stats(0).objects, 4, "c: everything local");
        let b_seqs: Vec<u64> = shard.backlog_take(1, 10, u64::MAX).iter().map(|e| e.seq).collect();
        assert!(b_seqs.contains(&d3.seq));
        match shard
            .backlog_item(&shard.backlog_take(0, 10, u64::MAX)[1], ReadCheck::Verify)
            .await
            .expect("item")
        {
            Some(podstore_engine::CopyItem::Put(mut r)) => {
                assert_eq!(r.read_all().await.expect("read"), b"two");
                assert_eq!(r.meta.version, d2.version);
            }
            other => panic!("expected k2's put, got {other:?}"),
        }
        // Without any checkpoint every local write comes back (a copy sent twice is harmless).
        drop(shard);
        for p in disk.paths() {
            if p.to_string_lossy().ends_with(".ckpt") {
                podstore_disks::Io::remove(&disk, &p).await.expect("rm");
            }
        }
        let (shard, _) =
            Shard::open(disk.clone(), peers(&["b", "c"]), Path::new("/d"), 0).await.expect("rebuild");
        assert_eq!(shard.backlog_stats(0).objects, 4);
    });
}

/// The digests recomputed from scratch (every current key's record, read back).
async fn digests_from_scratch(shard: &Rc<Shard<SimDisk>>) -> Vec<u64> {
    let mut d = vec![0u64; podstore_engine::digest::BUCKETS];
    shard
        .for_each_key(|kv| {
            d[podstore_engine::digest::bucket_of(&kv.key)] ^=
                podstore_engine::digest::entry_hash(&kv.key, kv.version, kv.tombstone)
        })
        .await
        .expect("scan");
    d
}

async fn random_ops(shard: &Rc<Shard<SimDisk>>, n: usize, rng: &mut fastrand::Rng) {
    for i in 0..n {
        let key = format!("b/k{}", rng.usize(0..60));
        match rng.u8(0..4) {
            0 => {
                shard.delete_stamped(key.as_bytes(), Stamp::Local, rng.bool()).await.expect("delete");
            }
            1 => {
                let v = v(rng.u64(1..3_000_000_000_000), rng.u64(2..5));
                copy(shard, key.as_bytes(), b"copy", v).await;
            }
            _ => {
                shard.put_bytes(key.as_bytes(), "", &vec![i as u8; rng.usize(0..3000)]).await.expect("put");
            }
        }
    }
}

#[test]
fn digests_follow_every_write_and_survive_restarts() {
    run(async {
        let disk = SimDisk::new(3, SimFaults::default());
        let clock = Arc::new(Clock::new(1));
        let c = || ShardConfig { peers: vec!["b".into()], ..cfg(clock.clone()) };
        let (shard, _) = Shard::open(disk.clone(), c(), Path::new("/d"), 0).await.expect("open");
        let mut rng = fastrand::Rng::with_seed(5);
        random_ops(&shard, 300, &mut rng).await;
        assert_eq!(shard.digests(), digests_from_scratch(&shard).await);
        assert_ne!(shard.digests(), vec![0; podstore_engine::digest::BUCKETS]);
        // Bucket listings agree with the scan.
        let mut listed = 0;
        for b in 0..podstore_engine::digest::BUCKETS {
            for k in shard.bucket_keys(b).await.expect("bucket") {
                assert_eq!(podstore_engine::digest::bucket_of(&k.key), b);
                listed += 1;
            }
        }
        let mut scanned = 0;
        shard.for_each_key(|_| scanned += 1).await.expect("scan");
        assert_eq!(listed, scanned);
        // From a checkpoint plus a tail, and from a full rebuild.
        shard.checkpoint().await.expect("checkpoint");
        random_ops(&shard, 200, &mut rng).await;
        let want = shard.digests();
        drop(shard);
        let (shard, _) = Shard::open(disk.clone(), c(), Path::new("/d"), 0).await.expect("reopen");
        assert_eq!(shard.digests(), want, "checkpoint + tail");
        drop(shard);
        for p in disk.paths() {
            if p.to_string_lossy().ends_with(".ckpt") {
                podstore_disks::Io::remove(&disk, &p).await.expect("rm");
            }
        }
        let (shard, _) = Shard::open(disk.clone(), c(), Path::new("/d"), 0).await.expect("rebuild");
        assert_eq!(shard.digests(), want, "full rebuild");
    });
}

/// Copies to a peer are read without chunk checksums (the peer checks the whole digest): a
/// damaged record read that way is refused by the receiving side's digest check, and the
/// checked read the sender makes after a refused copy finds and quarantines it.
#[test]
fn a_damaged_record_copied_unchecked_is_refused_then_quarantined_by_the_checked_read() {
    run(async {
        let disk = SimDisk::new(5, SimFaults::default());
        let clock = Arc::new(Clock::new(1));
        let with_peer = ShardConfig { peers: vec!["b".into()], ..cfg(clock.clone()) };
        let (shard, _) = Shard::open(disk.clone(), with_peer, Path::new("/d"), 0).await.expect("open");
        let v: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        shard.put_bytes(b"k", "", &v).await.expect("put");
        let needle = &v[40_000..40_064];
        let mut flipped = false;
        for p in disk.paths() {
            let bytes = disk.file_bytes(&p).unwrap_or_default();
            if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
                flipped = disk.flip_bit_at(&p, at as u64 + 7, 2);
            }
        }
        assert!(flipped, "the object's bytes are on the disk");
        let e = shard.backlog_take(0, 10, u64::MAX)[0];

        // Unchecked, the damaged bytes come out...
        let Some(CopyItem::Put(mut r)) = shard.backlog_item(&e, ReadCheck::ByPeer).await.expect("item")
        else {
            panic!("expected a put");
        };
        let got = r.read_all().await.expect("unchecked read");
        assert_eq!(got.len(), v.len());
        assert_ne!(got, v, "the flip is in what was read");
        // ...and the receiving side (the same path a peer's copy takes) refuses to store them.
        let other = SimDisk::new(6, SimFaults::default());
        let (peer, _) = Shard::open(other, cfg(clock.clone()), Path::new("/d"), 0).await.expect("open peer");
        let mut w = peer
            .put_stamped(b"k", &"".into(), got.len() as u64, Stamp::Given(r.meta.version))
            .await
            .expect("put copy")
            .expect("a writer");
        w.write(&got).await.expect("write");
        assert!(w.finish_expecting(Some(r.meta.digest)).await.is_err(), "digest mismatch refused");
        assert!(peer.get(b"k").await.expect("get").is_none(), "nothing of the copy stored");

        // The checked read (after the refusal) finds the damage: nothing to send, quarantined.
        assert!(shard.backlog_item(&e, ReadCheck::Verify).await.expect("checked item").is_none());
        assert!(shard.get(b"k").await.is_err(), "the damaged record is not served");
        assert!(shard.stats().checksum_errors >= 2);
    });
}
