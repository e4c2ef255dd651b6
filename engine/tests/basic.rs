//! The engine's operations on a fault-free simulated disk: the behaviour a user relies on,
//! before any fault is injected.

use std::path::Path;

mod common;

use common::{data, get, run, small_cfg as cfg};
use podstore_disks::{SimDisk, SimFaults};
use podstore_engine::{Error, Shard, ShardConfig, ShardSet, ShardSpec};

#[test]
fn put_get_overwrite_delete_and_ranges() {
    run(async {
        let disk = SimDisk::new(1, SimFaults::default());
        let dir = Path::new("/d0");
        let (shard, report) = Shard::open(disk.clone(), cfg(), dir, 0).await.expect("open");
        assert_eq!(report.blobs, 0);
        assert_eq!(get(&shard, b"a").await, None);
        let v1 = data(10_000, 1);
        let done = shard.put_bytes(b"a", "image/jpeg", &v1).await.expect("put");
        let mut r = shard.get(b"a").await.expect("get").expect("exists");
        assert_eq!(&*r.meta.attrs.content_type, "image/jpeg");
        assert_eq!(r.meta.object_len, 10_000);
        assert_eq!(r.meta.digest, done.digest);
        r.set_range(100, 200);
        assert_eq!(r.read_all().await.expect("range"), &v1[100..200]);
        // Overwrite, empty object, large object over several chunks (read in pieces).
        let v2 = data(3_000_000, 2);
        shard.put_bytes(b"a", "", &v2).await.expect("overwrite");
        assert_eq!(get(&shard, b"a").await.as_deref(), Some(&v2[..]));
        let mut r = shard.get(b"a").await.expect("get").expect("exists");
        r.set_range(1_048_570, 2_100_000);
        assert_eq!(r.read_all().await.expect("range"), &v2[1_048_570..2_100_000]);
        shard.put_bytes(b"empty", "", b"").await.expect("empty");
        assert_eq!(get(&shard, b"empty").await, Some(vec![]));
        // The same content has the same digest (ETag) under another key.
        let d2 = shard.put_bytes(b"b", "", &v1).await.expect("put b");
        assert_eq!(d2.digest, done.digest);
        assert!(shard.delete(b"a").await.expect("delete"));
        assert!(!shard.delete(b"a").await.expect("delete again"));
        assert_eq!(get(&shard, b"a").await, None);
        let st = shard.stats();
        assert_eq!((st.objects, st.tombstones), (2, 1));
        assert!(st.dead_bytes > 3_000_000);
        // Limits.
        assert!(matches!(shard.put(b"", &"".into(), 1).await.map(|_| ()), Err(Error::Invalid(_))));
        // The longest storage key: a 63-byte bucket, a slash and a 1024-byte key, and room for
        // the node's own names built from them (a multipart upload's).
        const KEY_MAX: usize = podstore_engine::record::KEY_MAX_BYTES;
        assert_eq!(KEY_MAX, 63 + 1 + 1024 + 64);
        let longest = vec![b'k'; KEY_MAX];
        shard.put_bytes(&longest, "", b"v").await.expect("the longest key");
        assert_eq!(get(&shard, &longest).await, Some(b"v".to_vec()));
        assert!(shard.delete(&longest).await.expect("delete the longest key"));
        assert!(matches!(
            shard.put(&[b'k'; KEY_MAX + 1], &"".into(), 1).await.map(|_| ()),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            shard.put(b"x", &"".into(), 9 << 20).await.map(|_| ()),
            Err(Error::TooLarge { .. })
        ));
        let mut w = shard.put(b"short", &"".into(), 10).await.expect("put");
        w.write(b"12345").await.expect("write");
        assert!(matches!(w.finish().await, Err(Error::BodyLength { expected: 10, got: 5 })));
        let mut w = shard.put(b"long", &"".into(), 3).await.expect("put");
        assert!(matches!(w.write(b"1234").await, Err(Error::BodyLength { .. })));
        drop(w);
        assert_eq!(get(&shard, b"short").await, None);
        assert_eq!(get(&shard, b"long").await, None);

        // Reopen: from the checkpoint written at a clean point plus the tail.
        shard.checkpoint().await.expect("checkpoint");
        shard.put_bytes(b"after", "", b"tail").await.expect("put after checkpoint");
        drop(shard);
        let (shard, report) = Shard::open(disk.clone(), cfg(), dir, 0).await.expect("reopen");
        assert!(report.checkpoint_seq.is_some());
        assert_eq!(report.records_applied, 1, "{report:?}");
        assert_eq!(get(&shard, b"a").await, None);
        assert_eq!(get(&shard, b"b").await.as_deref(), Some(&v1[..]));
        assert_eq!(get(&shard, b"after").await.as_deref(), Some(&b"tail"[..]));
        assert_eq!(get(&shard, b"empty").await, Some(vec![]));
        // Without any checkpoint: a full rebuild from the blobs gives the same answers.
        for p in disk.paths() {
            if p.to_string_lossy().ends_with(".ckpt") {
                podstore_disks::Io::remove(&disk, &p).await.expect("rm");
            }
        }
        drop(shard);
        let (shard, report) = Shard::open(disk.clone(), cfg(), dir, 0).await.expect("rebuild");
        assert_eq!(report.checkpoint_seq, None);
        assert_eq!(get(&shard, b"a").await, None);
        assert_eq!(get(&shard, b"b").await.as_deref(), Some(&v1[..]));
        assert_eq!(shard.stats().objects, 3);
    });
}

#[test]
fn concurrent_writers_share_fdatasyncs() {
    run(async {
        let disk = SimDisk::new(2, SimFaults { latency_yields_max: 3, ..Default::default() });
        // One blob for all of them: each blob file has its own fdatasync.
        let cfg = ShardConfig { blob_size_bytes: 4 << 20, ..cfg() };
        let (shard, _) = Shard::open(disk.clone(), cfg, Path::new("/d"), 0).await.expect("open");
        let mut tasks = Vec::new();
        for i in 0..64u32 {
            let s = shard.clone();
            tasks.push(tokio::task::spawn_local(async move {
                s.put_bytes(format!("k{i}").as_bytes(), "", &data(4096, i as u8)).await.expect("put");
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let st = shard.stats();
        assert_eq!(st.puts, 64);
        eprintln!("64 concurrent puts: {} fdatasyncs", st.syncs);
        // Without group commit every put would sync once (64); the simulated disk's random
        // latencies spread completions out, so ask for at least two writers per sync.
        assert!(st.syncs <= 32, "64 concurrent puts took {} fdatasyncs: not grouped", st.syncs);
        for i in 0..64u32 {
            assert_eq!(get(&shard, format!("k{i}").as_bytes()).await, Some(data(4096, i as u8)));
        }
    });
}

#[test]
fn shard_set_routes_keys_and_iterates_versions() {
    run(async {
        let disk = SimDisk::new(3, SimFaults::default());
        let specs: Vec<ShardSpec> =
            (0..3).map(|i| ShardSpec { id: i, dir: format!("/disk{i}").into(), weight: 1.0 }).collect();
        let (set, reports) = ShardSet::open(disk.clone(), cfg(), &specs).await;
        assert!(reports.iter().all(|(_, r)| r.is_ok()));
        for i in 0..60 {
            set.put_bytes(format!("obj{i}").as_bytes(), "", &data(100, i)).await.expect("put");
        }
        set.delete(b"obj7").await.expect("delete");
        set.put_bytes(b"obj8", "", b"new").await.expect("overwrite");
        let per_shard: Vec<u64> = set.stats().iter().map(|s| s.objects).collect();
        assert!(per_shard.iter().all(|&n| n > 5), "placement spread {per_shard:?}");
        let mut seen = Vec::new();
        set.for_each_key(|_, kv| seen.push(kv)).await.expect("iterate");
        assert_eq!(seen.len(), 60);
        assert!(seen.iter().any(|k| k.key == b"obj7" && k.tombstone));
        assert_eq!(seen.iter().filter(|k| k.key == b"obj8").count(), 1);
        assert_eq!(
            set.get(b"obj8").await.expect("get").expect("exists").read_all().await.expect("read"),
            b"new"
        );
    });
}

#[test]
fn deletes_work_on_a_full_shard_and_checkpoints_come_due() {
    run(async {
        let disk = SimDisk::new(4, SimFaults::default());
        let cfg = ShardConfig {
            shard_size_max_bytes: 512 << 10,
            tombstone_reserve_bytes: 16 << 10,
            checkpoint_every_records: 10,
            ..cfg()
        };
        let (shard, _) = Shard::open(disk.clone(), cfg.clone(), Path::new("/full"), 0).await.expect("open");
        let mut stored = 0;
        loop {
            match shard.put_bytes(format!("k{stored}").as_bytes(), "", &data(20_000, 1)).await {
                Ok(_) => stored += 1,
                Err(Error::NoSpace { .. }) => break,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(stored > 10);
        assert!(shard.checkpoint_due());
        shard.checkpoint().await.expect("checkpoint");
        assert!(!shard.checkpoint_due());
        // Full for objects, but deletes still land in the reserve and stay deleted.
        assert!(matches!(shard.put_bytes(b"more", "", b"x").await, Err(Error::NoSpace { .. })));
        for i in 0..3 {
            assert!(shard.delete(format!("k{i}").as_bytes()).await.expect("delete on a full shard"));
        }
        drop(shard);
        let (shard, _) = Shard::open(disk, cfg, Path::new("/full"), 0).await.expect("reopen");
        assert_eq!(get(&shard, b"k0").await, None);
        assert_eq!(get(&shard, b"k3").await, Some(data(20_000, 1)));
    });
}

#[test]
fn a_failed_write_or_sync_fences_the_shard_and_promises_nothing() {
    run(async {
        for faults in [
            SimFaults { write_eio_ppm: 1_000_000, ..Default::default() },
            SimFaults { sync_eio_ppm: 1_000_000, ..Default::default() },
        ] {
            let disk = SimDisk::new(5, SimFaults::default());
            let dir = Path::new("/fence");
            let (shard, _) = Shard::open(disk.clone(), cfg(), dir, 0).await.expect("open");
            shard.put_bytes(b"before", "", &data(5000, 1)).await.expect("healthy put");
            disk.set_faults(faults.clone());
            let mut w = shard.put(b"victim", &"".into(), 100_000).await.expect("reserve");
            let mut failed = None;
            for piece in data(100_000, 2).chunks(7000) {
                if let Err(e) = w.write(piece).await {
                    failed = Some(e);
                    break;
                }
            }
            let err = match failed {
                Some(e) => e,
                None => w.finish().await.expect_err("the sync fails"),
            };
            assert!(matches!(err, Error::Fenced { .. }), "{err}");
            assert!(shard.fenced().is_some());
            // Nothing more is accepted, reads go on, and nothing of the victim is visible.
            disk.set_faults(SimFaults::default());
            assert!(matches!(shard.put_bytes(b"after", "", b"x").await, Err(Error::Fenced { .. })));
            assert!(matches!(shard.delete(b"before").await, Err(Error::Fenced { .. })));
            assert_eq!(get(&shard, b"before").await, Some(data(5000, 1)));
            assert_eq!(get(&shard, b"victim").await, None);
            drop(shard);
            disk.crash();
            let (shard, _) = Shard::open(disk.clone(), cfg(), dir, 0).await.expect("reopen");
            assert_eq!(get(&shard, b"before").await, Some(data(5000, 1)));
            assert_eq!(get(&shard, b"victim").await, None);
            assert!(shard.fenced().is_none());
        }
    });
}

#[test]
fn continuing_a_failed_write_is_an_error_not_a_panic() {
    run(async {
        let disk = SimDisk::new(6, SimFaults::default());
        let (shard, _) = Shard::open(disk.clone(), cfg(), Path::new("/w"), 0).await.expect("open");
        let mut w = shard.put(b"k", &"".into(), 10).await.expect("put");
        assert!(matches!(w.write(&[0; 11]).await, Err(Error::BodyLength { .. })));
        assert!(w.write(&[0; 10]).await.is_err());
        assert!(w.finish().await.is_err());
        assert_eq!(get(&shard, b"k").await, None);
    });
}

#[test]
fn fingerprint_collisions_never_mix_keys() {
    run(async {
        // Every key gets the same fingerprint: one lives in the main table, the rest in the
        // overflow map, and every lookup must compare the stored key.
        let cfg = ShardConfig { fingerprint_mask: 0, ..cfg() };
        let disk = SimDisk::new(7, SimFaults::default());
        let dir = Path::new("/collide");
        let (shard, _) = Shard::open(disk.clone(), cfg.clone(), dir, 0).await.expect("open");
        let key = |i: u32| format!("same-fp/{i}").into_bytes();
        for i in 0..20 {
            shard.put_bytes(&key(i), "", &data(1000 + i as usize, i as u8)).await.expect("put");
        }
        shard.delete(&key(0)).await.expect("delete the main-table key");
        shard.delete(&key(5)).await.expect("delete an overflow key");
        shard.put_bytes(&key(7), "", b"seven").await.expect("overwrite");
        shard.checkpoint().await.expect("checkpoint");
        shard.put_bytes(&key(9), "", b"nine").await.expect("overwrite after checkpoint");
        shard.put_bytes(&key(20), "", b"twenty").await.expect("new key after checkpoint");
        shard.delete(&key(11)).await.expect("delete after checkpoint");
        let expect = |i: u32| -> Option<Vec<u8>> {
            match i {
                0 | 5 | 11 => None,
                7 => Some(b"seven".to_vec()),
                9 => Some(b"nine".to_vec()),
                20 => Some(b"twenty".to_vec()),
                _ => Some(data(1000 + i as usize, i as u8)),
            }
        };
        for i in 0..=21 {
            let want = if i == 21 { None } else { expect(i) };
            assert_eq!(get(&shard, &key(i)).await, want, "live, key {i}");
        }
        drop(shard);
        // From the checkpoint plus the tail, then from the blobs alone.
        for pass in 0..2 {
            if pass == 1 {
                for p in disk.paths() {
                    if p.to_string_lossy().ends_with(".ckpt") {
                        podstore_disks::Io::remove(&disk, &p).await.expect("rm");
                    }
                }
            }
            let (shard, _) = Shard::open(disk.clone(), cfg.clone(), dir, 0).await.expect("reopen");
            for i in 0..=21 {
                let want = if i == 21 { None } else { expect(i) };
                assert_eq!(get(&shard, &key(i)).await, want, "pass {pass}, key {i}");
            }
            assert_eq!(shard.stats().objects, 18);
        }
    });
}

#[test]
fn read_only_open_changes_nothing_on_disk() {
    run(async {
        let disk = SimDisk::new(8, SimFaults::default());
        let dir = Path::new("/ro");
        let (shard, _) = Shard::open(disk.clone(), cfg(), dir, 0).await.expect("open");
        shard.put_bytes(b"kept", "", &data(3000, 1)).await.expect("put");
        // A write cut short: its record is torn at the tail.
        let mut w = shard.put(b"torn", &"".into(), 50_000).await.expect("put");
        w.write(&data(40_000, 2)).await.expect("write");
        drop(w);
        drop(shard);
        disk.crash();
        let before: Vec<_> = disk.paths().into_iter().map(|p| (p.clone(), disk.file_bytes(&p))).collect();
        let ro = ShardConfig { read_only: true, ..cfg() };
        let (shard, report) = Shard::open(disk.clone(), ro, dir, 0).await.expect("read-only open");
        assert_eq!(get(&shard, b"kept").await, Some(data(3000, 1)));
        assert!(matches!(shard.put_bytes(b"x", "", b"x").await, Err(Error::Fenced { .. })));
        let after: Vec<_> = disk.paths().into_iter().map(|p| (p.clone(), disk.file_bytes(&p))).collect();
        assert!(before == after, "a read-only open changed the disk");
        drop(shard);
        let (_shard, rw) = Shard::open(disk.clone(), cfg(), dir, 0).await.expect("open");
        assert_eq!(report.tails_truncated, rw.tails_truncated);
    });
}

#[test]
fn a_body_received_straight_into_the_writer_buffer_is_stored_and_checked() {
    run(async {
        let disk = SimDisk::new(7, SimFaults::default());
        let (shard, _) = Shard::open(disk.clone(), cfg(), Path::new("/d0"), 0).await.expect("open");
        let want = data(100_000, 9);
        let digest = {
            let mut w = shard.put(b"probe", &"".into(), want.len() as u64).await.expect("put");
            w.write(&want).await.expect("write");
            w.finish().await.expect("finish").digest
        };
        for (key, expect) in [(&b"direct"[..], Some(digest)), (&b"bad-digest"[..], Some([0u8; 16]))] {
            let mut w = shard.put(key, &"".into(), want.len() as u64).await.expect("put");
            let mut at = 0;
            let mut step = 1;
            loop {
                let room = w.spare();
                if room.is_empty() {
                    break;
                }
                let n = room.len().min(step).min(want.len() - at);
                room[..n].copy_from_slice(&want[at..at + n]);
                w.commit_spare(n).await.expect("commit");
                at += n;
                step = step * 3 + 1; // odd sizes, across buffer boundaries
            }
            assert_eq!(at, want.len());
            let r = w.finish_expecting(expect).await;
            if expect == Some(digest) {
                r.expect("matching digest");
                assert_eq!(get(&shard, key).await.as_deref(), Some(&want[..]));
            } else {
                assert!(r.is_err(), "a wrong digest stores nothing");
                assert_eq!(get(&shard, key).await, None);
            }
        }
    });
}

/// With few blob files kept open, every read still works: a reader keeps its own descriptor
/// while the cache closes its blob's, cold blobs are opened again, compaction removes blobs
/// under open readers, and a reopened shard starts within the limit.
#[test]
fn few_open_blob_files_serve_every_read() {
    run(async {
        let disk = SimDisk::new(9, SimFaults::default());
        let dir = Path::new("/few");
        let cfg = ShardConfig { open_blob_files_max: 2, ..cfg() };
        let (shard, _) = Shard::open(disk.clone(), cfg.clone(), dir, 0).await.expect("open");
        let big = data(3 << 20, 7);
        shard.put_bytes(b"big", "", &big).await.expect("put big");
        for i in 0..40u8 {
            shard.put_bytes(format!("k{i}").as_bytes(), "", &data(100_000, i)).await.expect("put");
        }
        let blobs = shard.stats().blobs;
        assert!(blobs >= 10, "{blobs} blobs");
        // A reader of the large object reads its first chunk, then every other blob is read.
        let mut r = shard.get(b"big").await.expect("get").expect("big");
        let first = r.next_chunk().await.expect("chunk").expect("first chunk");
        let mut got = first.to_vec();
        for i in 0..40u8 {
            assert_eq!(get(&shard, format!("k{i}").as_bytes()).await, Some(data(100_000, i)), "k{i}");
        }
        let st = shard.stats();
        assert!(st.open_blob_files <= 4, "{} open", st.open_blob_files);
        assert!(st.blob_reopens >= 8, "{} reopens", st.blob_reopens);
        while let Some(c) = r.next_chunk().await.expect("chunk after its blob was closed") {
            got.extend_from_slice(&c);
        }
        assert!(got == big, "the large object read across the closing of its blob differs");
        // Compaction copies live records out of blobs whose descriptors were closed, and
        // removes them while a reader of one of them is open.
        let mut old = shard.get(b"k0").await.expect("get").expect("k0");
        for i in (0..40u8).filter(|i| i % 2 == 1) {
            shard.delete(format!("k{i}").as_bytes()).await.expect("delete");
        }
        shard.compact(0.3, &podstore_engine::budget::IoBudget::new(0)).await.expect("compact");
        assert!(shard.compact_stats().blobs_compacted > 0);
        assert_eq!(old.read_all().await.expect("read of a compacted blob"), data(100_000, 0));
        for i in (0..40u8).filter(|i| i % 2 == 0) {
            assert_eq!(get(&shard, format!("k{i}").as_bytes()).await, Some(data(100_000, i)), "k{i}");
        }
        drop((old, r, shard));
        let (shard, _) = Shard::open(disk.clone(), cfg, dir, 0).await.expect("reopen");
        assert!(shard.stats().open_blob_files <= 2, "{} open after recovery", shard.stats().open_blob_files);
        assert_eq!(get(&shard, b"big").await.as_deref(), Some(&big[..]));
        for i in (0..40u8).filter(|i| i % 2 == 0) {
            assert_eq!(get(&shard, format!("k{i}").as_bytes()).await, Some(data(100_000, i)), "k{i}");
        }
    });
}

/// A copy checked by the chunk CRC32Cs its sender stored (no digest computed here): stored
/// with the sender's digest when every chunk matches; refused, with nothing stored, when one
/// chunk differs, when a CRC is missing, or when only a digest is offered to check it by.
#[test]
fn a_copy_checked_by_its_chunk_crcs_is_stored_only_when_every_chunk_matches() {
    use podstore_engine::{CopyCheck, Stamp, Version};
    run(async {
        let disk = SimDisk::new(3, SimFaults::default());
        let (shard, _) = Shard::open(disk.clone(), cfg(), Path::new("/d0"), 0).await.expect("open");
        // The sender's record: three chunks (1 MiB each), its CRCs and digest from its footer.
        let v = data(2_500_000, 9);
        shard.put_bytes(b"orig", "", &v).await.expect("put");
        let r = shard.get(b"orig").await.expect("get").expect("exists");
        let (digest, crcs) = (r.meta.digest, r.chunk_crcs().to_vec());
        assert_eq!(crcs.len(), 3);
        let version = Version { hlc: u64::MAX >> 20, origin: 7 };
        let copy = |key: &'static [u8], body: Vec<u8>, check: CopyCheck, crcs_only: bool| {
            let shard = shard.clone();
            async move {
                let mut w = shard
                    .put_stamped(key, &"".into(), body.len() as u64, Stamp::Given(version))
                    .await
                    .expect("start")
                    .expect("newer");
                if crcs_only {
                    w.check_chunks_only();
                }
                for part in body.chunks(100_000) {
                    w.write(part).await.expect("write");
                }
                w.finish_copy(check).await
            }
        };
        let good = CopyCheck::Chunks { digest, crcs: crcs.clone() };
        let done = copy(b"a", v.clone(), good.clone(), true).await.expect("a matching copy");
        assert_eq!(done.digest, digest);
        assert_eq!(get(&shard, b"a").await.as_deref(), Some(&v[..]));
        assert_eq!(shard.get(b"a").await.expect("get").expect("a").meta.digest, digest);
        // One flipped bit in the middle chunk.
        let mut bad = v.clone();
        bad[1_500_000] ^= 0x04;
        assert!(matches!(copy(b"b", bad, good.clone(), true).await, Err(Error::Invalid(_))));
        assert_eq!(get(&shard, b"b").await, None);
        // A CRC missing from the list.
        let short = CopyCheck::Chunks { digest, crcs: crcs[..2].to_vec() };
        assert!(matches!(copy(b"c", v.clone(), short, true).await, Err(Error::Invalid(_))));
        assert_eq!(get(&shard, b"c").await, None);
        // Without the digest computed, a digest alone can't check the copy.
        assert!(matches!(
            copy(b"d", v.clone(), CopyCheck::Digest(digest), true).await,
            Err(Error::Invalid(_))
        ));
        assert_eq!(get(&shard, b"d").await, None);
        // With the digest computed too, both must match.
        let wrong_digest = CopyCheck::Chunks { digest: [7; 16], crcs: crcs.clone() };
        assert!(matches!(copy(b"e", v.clone(), wrong_digest, false).await, Err(Error::Invalid(_))));
        assert_eq!(get(&shard, b"e").await, None);
        copy(b"f", v.clone(), good, false).await.expect("both match");
        // And all of it survives a restart (the records read back whole).
        drop(shard);
        let (shard, _) = Shard::open(disk.clone(), cfg(), Path::new("/d0"), 0).await.expect("reopen");
        for k in [&b"a"[..], b"f"] {
            assert_eq!(get(&shard, k).await.as_deref(), Some(&v[..]));
        }
        assert_eq!(get(&shard, b"b").await, None);
    });
}

/// A large object's chunks become `Bytes` for another thread without a copy (the bytes a
/// disk read put in its buffer are the ones sent), a small object's come whole, and both
/// carry exactly the object's bytes.
#[test]
fn chunks_become_bytes_without_a_copy_and_with_the_right_bytes() {
    run(async {
        let disk = SimDisk::new(1, SimFaults::default());
        let (shard, _) = Shard::open(disk, cfg(), Path::new("/d0"), 0).await.expect("open");
        let big = data(3_000_000, 7);
        shard.put_bytes(b"big", "", &big).await.expect("put");
        let mut r = shard.get(b"big").await.expect("get").expect("exists");
        let mut got = Vec::new();
        let mut uncopied = 0;
        while let Some(c) = r.next_chunk().await.expect("chunk") {
            let at = c.as_ptr();
            let b = c.into_bytes();
            uncopied += usize::from(b.as_ptr() == at);
            got.extend_from_slice(&b);
        }
        assert!(got == big, "the bytes differ");
        assert!(uncopied >= 2, "{uncopied} of 3 chunks went out without a copy");
        let small = data(3_000, 8);
        shard.put_bytes(b"small", "", &small).await.expect("put");
        let mut r = shard.get(b"small").await.expect("get").expect("exists");
        let c = r.next_chunk().await.expect("chunk").expect("one piece");
        assert_eq!(&c.into_bytes()[..], &small[..]);
        assert!(r.next_chunk().await.expect("end").is_none());
    });
}
