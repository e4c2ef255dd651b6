//! Zeroing ahead of the open blob's tail runs beside writers on a disk whose operations take
//! turns (each yields a random number of times), and never costs an acknowledged write: every
//! one reads back, before and after a power loss. Writes that catch up with a zeroing wait for
//! it (some do here); a write that reached into a region being zeroed would trip the shard's
//! assertion.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;

mod common;

use common::{data, get, run};
use podstore_disks::{SimDisk, SimFaults};
use podstore_engine::{Shard, ShardConfig};

const DIR: &str = "/d";

/// Acknowledged writes: key and bytes.
type Acked = Rc<RefCell<Vec<(Vec<u8>, Vec<u8>)>>>;

fn cfg() -> ShardConfig {
    ShardConfig {
        blob_size_bytes: 1 << 20,
        write_buf_bytes: 16 << 10,
        scan_window_bytes: 64 << 10,
        object_size_max_bytes: 256 << 10,
        tombstone_reserve_bytes: 16 << 10,
        // Steps of 16 KiB, starting 16 KiB past the tail, up to 64 KiB ahead.
        zero_ahead_bytes: 64 << 10,
        ..ShardConfig::default()
    }
}

#[test]
fn zeroing_ahead_beside_writers_loses_no_acknowledged_write() {
    let waits = Rc::new(Cell::new(0));
    for seed in 0..8u64 {
        let waits = waits.clone();
        run(async move {
            let faults = SimFaults { latency_yields_max: 6, ..SimFaults::default() };
            let disk = SimDisk::new(seed, faults);
            let (shard, _) = Shard::open(disk.clone(), cfg(), Path::new(DIR), 0).await.expect("open");
            let stop = Rc::new(Cell::new(false));
            let zeroer = {
                let (shard, stop) = (shard.clone(), stop.clone());
                tokio::task::spawn_local(async move {
                    while !stop.get() {
                        match shard.zero_ahead().await {
                            Ok(true) => {}
                            Ok(false) => tokio::task::yield_now().await,
                            Err(e) => panic!("zeroing failed: {e}"),
                        }
                    }
                })
            };
            // Writers of small objects, and now and then one large enough to catch up with a
            // zeroing in flight.
            let acked: Acked = Default::default();
            let writers: Vec<_> = (0..8u64)
                .map(|w| {
                    let (shard, acked) = (shard.clone(), acked.clone());
                    tokio::task::spawn_local(async move {
                        for i in 0..40u64 {
                            let n = if (w + i) % 13 == 0 {
                                100_000
                            } else {
                                500 + ((w * 31 + i * 7) % 9000) as usize
                            };
                            let key = format!("k/{w}-{i}").into_bytes();
                            let v = data(n, (seed + w * 40 + i) as u8);
                            shard.put_bytes(&key, "", &v).await.expect("put");
                            acked.borrow_mut().push((key, v));
                        }
                    })
                })
                .collect();
            for w in writers {
                w.await.expect("writer");
            }
            stop.set(true);
            zeroer.await.expect("zeroer");
            let st = shard.stats();
            assert!(st.zeroed_ahead_bytes > 0, "seed {seed}: nothing was zeroed: {st:?}");
            assert!(st.blobs > 2, "seed {seed}: the writes crossed blobs: {st:?}");
            waits.set(waits.get() + st.zero_ahead_waits);
            let acked = acked.borrow().clone();
            for (k, v) in &acked {
                assert_eq!(get(&shard, k).await.as_ref(), Some(v), "seed {seed}");
            }
            drop(shard);
            disk.crash(); // power loss
            let (shard, _) = Shard::open(disk.clone(), cfg(), Path::new(DIR), 0).await.expect("reopen");
            for (k, v) in &acked {
                assert_eq!(get(&shard, k).await.as_ref(), Some(v), "seed {seed}, after a power loss");
            }
            // The shard writes on after recovery, zeroing again.
            for i in 0..20u64 {
                shard
                    .put_bytes(format!("k/after-{i}").as_bytes(), "", &data(3000, i as u8))
                    .await
                    .expect("put");
                while shard.zero_ahead().await.expect("zero") {}
            }
            assert!(shard.stats().zeroed_ahead_bytes > 0);
        });
    }
    assert!(waits.get() > 0, "no write caught up with a zeroing: the wait was never tested");
}
