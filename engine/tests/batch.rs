//! Batched writes (`Shard::put_batch`, what tiering's migration writes with): few disk
//! operations for many objects, nothing answered before it is durable, items that fail alone.

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use podstore_disks::{SimDisk, SimFaults};
use podstore_engine::{BatchItem, BatchOutcome, Clock, Error, Shard, ShardConfig, Stamp, Version};

fn cfg() -> ShardConfig {
    ShardConfig {
        blob_size_bytes: 1 << 20,
        write_buf_bytes: 16 << 10,
        scan_window_bytes: 64 << 10,
        object_size_max_bytes: 8 << 20,
        tombstone_reserve_bytes: 16 << 10,
        clock: Arc::new(Clock::new(1)),
        ..ShardConfig::default()
    }
}

fn run<F: std::future::Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    tokio::task::LocalSet::new().block_on(&rt, f);
}

fn v(ms: u64) -> Version {
    Version { hlc: ms << 16, origin: 7 }
}

fn body(i: usize) -> Vec<u8> {
    // Sizes from empty to several blocks, not aligned.
    let len = (i * 1_537) % 20_000;
    (0..len).map(|b| (b * 31 + i * 7) as u8).collect()
}

fn item(i: usize, stamp: Stamp) -> BatchItem {
    BatchItem {
        key: format!("bench/obj-{i}").into_bytes(),
        attrs: "image/jpeg".into(),
        data: body(i),
        stamp,
        digest: None,
    }
}

async fn read(shard: &Rc<Shard<SimDisk>>, key: &[u8]) -> Option<(Vec<u8>, Version)> {
    let mut r = shard.get(key).await.expect("get")?;
    let v = r.meta.version;
    Some((r.read_all().await.expect("read"), v))
}

async fn open(disk: &SimDisk) -> Rc<Shard<SimDisk>> {
    Shard::open(disk.clone(), cfg(), Path::new("/d"), 0).await.expect("open").0
}

#[test]
fn a_batch_is_durable_when_answered_in_few_operations() {
    run(async {
        let disk = SimDisk::new(11, SimFaults::default());
        let shard = open(&disk).await;
        shard.put_bytes(b"bench/first", "", b"opens the blob").await.expect("put");
        let items: Vec<BatchItem> = (0..40).map(|i| item(i, Stamp::Moved(v(1_000 + i as u64)))).collect();
        let ops = disk.ops();
        let out = shard.put_batch(&items).await.expect("batch");
        let used = disk.ops() - ops;
        for (it, r) in items.iter().zip(&out) {
            let Ok(BatchOutcome::Stored(done)) = r else {
                panic!("{:?}: {r:?}", String::from_utf8_lossy(&it.key))
            };
            let Stamp::Moved(want) = it.stamp else { unreachable!() };
            assert_eq!(done.version, want);
        }
        // 40 records of up to 20 KiB: a write per contiguous run (a second blob may start) and
        // a sync per blob, plus a new blob's creation; one at a time it is 80 and more.
        assert!(used <= 12, "a batch of 40 objects took {used} disk operations");
        // A crash right after the answer (everything not synced lost or torn): all there.
        drop(shard);
        disk.crash();
        let shard = open(&disk).await;
        for it in &items {
            let Stamp::Moved(want) = it.stamp else { unreachable!() };
            assert_eq!(read(&shard, &it.key).await, Some((it.data.clone(), want)), "{:?}", it.key);
        }
        // Moved copies join no peer backlog; a later batch's older copies are refused.
        let older: Vec<BatchItem> = (0..3).map(|i| item(i, Stamp::Moved(v(10)))).collect();
        for r in shard.put_batch(&older).await.expect("batch") {
            assert_eq!(r.expect("answered"), BatchOutcome::Superseded);
        }
    });
}

#[test]
fn bad_items_fail_alone() {
    run(async {
        let disk = SimDisk::new(12, SimFaults::default());
        let shard = open(&disk).await;
        let newer = item(1, Stamp::Given(v(5_000)));
        shard.put_batch(std::slice::from_ref(&newer)).await.expect("batch")[0].as_ref().expect("stored");
        let mut wrong_digest = item(2, Stamp::Given(v(100)));
        wrong_digest.digest = Some([9; 16]);
        let mut right_digest = item(3, Stamp::Given(v(100)));
        right_digest.digest = Some(xxhash_rust::xxh3::xxh3_128(&right_digest.data).to_le_bytes());
        let mut bad_name = item(4, Stamp::Given(v(100)));
        bad_name.key = Vec::new();
        let mut too_large = item(5, Stamp::Given(v(100)));
        too_large.data = vec![1; 600 << 10]; // over a quarter of a 1 MiB blob
        let items = vec![
            item(1, Stamp::Given(v(4_000))), // older than what the shard holds
            wrong_digest,
            right_digest,
            bad_name,
            too_large,
            item(6, Stamp::Given(v(100))),
            item(6, Stamp::Given(v(200))), // the same key twice
        ];
        let out = shard.put_batch(&items).await.expect("batch");
        assert_eq!(out[0].as_ref().expect("answered"), &BatchOutcome::Superseded);
        assert!(matches!(out[1], Err(Error::Invalid(_))), "{:?}", out[1]);
        assert!(matches!(out[2], Ok(BatchOutcome::Stored(_))), "{:?}", out[2]);
        assert!(matches!(out[3], Err(Error::Invalid(_))), "{:?}", out[3]);
        assert!(matches!(out[4], Err(Error::TooLarge { .. })), "{:?}", out[4]);
        assert_eq!(out.iter().skip(5).filter(|r| matches!(r, Ok(BatchOutcome::Stored(_)))).count(), 1);
        assert_eq!(out.iter().skip(5).filter(|r| matches!(r, Err(Error::Invalid(_)))).count(), 1);
        for restart in [false, true] {
            let shard = if restart {
                disk.crash();
                open(&disk).await
            } else {
                shard.clone()
            };
            assert_eq!(read(&shard, &items[0].key).await, Some((newer.data.clone(), v(5_000))));
            assert_eq!(read(&shard, &items[1].key).await, None, "a copy that failed its digest is absent");
            assert_eq!(read(&shard, &items[2].key).await.map(|r| r.0), Some(items[2].data.clone()));
            assert_eq!(read(&shard, &items[4].key).await, None);
            assert!(read(&shard, &items[5].key).await.is_some());
            assert!(shard.quarantined().is_empty(), "{:?}", shard.quarantined());
        }
    });
}

#[test]
fn a_failed_write_or_sync_answers_nothing() {
    for (seed, faults) in [
        (13, SimFaults { sync_eio_ppm: 1_000_000, ..Default::default() }),
        (14, SimFaults { write_eio_ppm: 1_000_000, ..Default::default() }),
    ] {
        run(async move {
            let disk = SimDisk::new(seed, SimFaults::default());
            let shard = open(&disk).await;
            shard.put_bytes(b"bench/first", "", b"opens the blob").await.expect("put");
            disk.set_faults(faults);
            let items: Vec<BatchItem> = (0..10).map(|i| item(i, Stamp::Moved(v(1_000)))).collect();
            let out = shard.put_batch(&items).await.expect("batch");
            assert!(out.iter().all(|r| matches!(r, Err(Error::Fenced { .. }))), "{out:?}");
            for it in &items {
                assert_eq!(read(&shard, &it.key).await, None, "not durable, yet visible");
            }
            assert!(shard.fenced().is_some());
        });
    }
}
