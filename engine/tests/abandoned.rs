//! Writes whose bodies never come: the space they reserved is bounded while they wait, and
//! given back when they are abandoned (a dedicated blob removed, the open blob's tail lowered
//! over them), so a flood of abandoned writes leaves no dead space behind; what is written
//! there afterwards survives a restart's recovery.

use std::path::Path;
use std::rc::Rc;

mod common;

use common::{data, get, run, small_cfg as cfg};
use podstore_disks::{SimDisk, SimFaults};
use podstore_engine::{Error, PutWriter, Shard, ShardConfig};

const DIR: &str = "/d";

/// Starts a write of `len` bytes and sends half of its body.
async fn started(shard: &Rc<Shard<SimDisk>>, key: &str, len: usize) -> PutWriter<SimDisk> {
    let mut w = shard.put(key.as_bytes(), &"".into(), len as u64).await.expect("start");
    w.write(&data(len / 2, 9)).await.expect("half the body");
    w
}

#[test]
fn abandoned_writes_leave_no_dead_space_and_what_comes_after_survives_a_restart() {
    run(async {
        let disk = SimDisk::new(3, SimFaults::default());
        let (shard, _) = Shard::open(disk.clone(), cfg(), Path::new(DIR), 0).await.expect("open");
        let a = data(20_000, 1);
        shard.put_bytes(b"k/a", "", &a).await.expect("put a");
        let used_a = shard.stats().used_bytes;

        // One at a time, each at the tail: given back at once.
        for i in 0..50 {
            started(&shard, &format!("k/gone-{i}"), 30_000).await.abort().await.expect("abort");
        }
        let st = shard.stats();
        assert_eq!((st.dead_bytes, st.used_bytes, st.aborted_writes), (0, used_a, 50), "{st:?}");

        // Interleaved: the first abandoned one is not at the tail (voided), the last is; the
        // middle one then brings the tail down over both.
        let (w1, w2, w3) = (
            started(&shard, "k/w1", 10_000).await,
            started(&shard, "k/w2", 10_000).await,
            started(&shard, "k/w3", 10_000).await,
        );
        w1.abort().await.expect("abort w1");
        assert!(shard.stats().dead_bytes > 0, "w1 is not at the tail: void until the tail comes back");
        w3.abort().await.expect("abort w3");
        w2.abort().await.expect("abort w2");
        let st = shard.stats();
        assert_eq!((st.dead_bytes, st.used_bytes), (0, used_a), "{st:?}");

        // A record written between abandoned ones keeps the one before it void.
        let v1 = started(&shard, "k/v1", 10_000).await;
        shard.put_bytes(b"k/b", "", &data(5_000, 2)).await.expect("put b");
        v1.abort().await.expect("abort v1");
        assert!(shard.stats().dead_bytes > 0, "a record after it holds the space");

        // A write larger than a regular blob has a dedicated one: removed when abandoned.
        let blobs = shard.stats().blobs;
        let big = started(&shard, "k/big", 300_000).await;
        assert_eq!(shard.stats().blobs, blobs + 1, "{:?}", shard.stats());
        big.abort().await.expect("abort big");
        assert_eq!(shard.stats().blobs, blobs, "the dedicated blob is removed");

        // What is written where abandoned writes were reads back, before and after recovery.
        let mut want = vec![(b"k/a".to_vec(), a.clone()), (b"k/b".to_vec(), data(5_000, 2))];
        for i in 0..6 {
            let w = started(&shard, &format!("k/again-{i}"), 12_000).await;
            w.abort().await.expect("abort");
            let v = data(7_000 + i * 1000, 20 + i as u8);
            let key = format!("k/new-{i}").into_bytes();
            shard.put_bytes(&key, "", &v).await.expect("put over given-back space");
            want.push((key, v));
        }
        for (k, v) in &want {
            assert_eq!(get(&shard, k).await.as_ref(), Some(v));
        }
        drop(shard);
        let (shard, report) = Shard::open(disk.clone(), cfg(), Path::new(DIR), 0).await.expect("reopen");
        assert_eq!(report.quarantined_new, 0, "{report:?}");
        for (k, v) in &want {
            assert_eq!(
                get(&shard, k).await.as_ref(),
                Some(v),
                "{} after recovery",
                String::from_utf8_lossy(k)
            );
        }
        for i in 0..50 {
            assert_eq!(get(&shard, format!("k/gone-{i}").as_bytes()).await, None);
        }
    });
}

#[test]
fn writes_waiting_for_their_bodies_hold_at_most_the_configured_bytes() {
    run(async {
        let disk = SimDisk::new(4, SimFaults::default());
        let c = ShardConfig { unfilled_bytes_max: 100_000, ..cfg() };
        let (shard, _) = Shard::open(disk, c, Path::new(DIR), 0).await.expect("open");
        let mut waiting = Vec::new();
        let refused = loop {
            match shard.put(format!("k/w{}", waiting.len()).as_bytes(), &"".into(), 20_000).await {
                Ok(w) => waiting.push(w),
                Err(e) => break e,
            }
            assert!(waiting.len() < 10, "never refused");
        };
        assert!(matches!(refused, Error::Busy { .. }), "{refused}");
        assert_eq!(waiting.len(), 4, "4 records of 20,000 bytes and their headers fit 100,000");
        // A write that sends its body stops counting what it wrote: another one fits then.
        let mut w = waiting.remove(0);
        w.write(&data(20_000, 3)).await.expect("body");
        w.finish().await.expect("finish");
        let more = shard.put(b"k/more", &"".into(), 20_000).await.expect("room again");
        drop(more);
        // Abandoned ones give theirs back.
        for w in waiting {
            w.abort().await.expect("abort");
        }
        for i in 0..4 {
            let w = shard.put(format!("k/after-{i}").as_bytes(), &"".into(), 20_000).await.expect("after");
            w.abort().await.expect("abort");
        }
        shard.put_bytes(b"k/last", "", &data(20_000, 4)).await.expect("a normal write");
    });
}
