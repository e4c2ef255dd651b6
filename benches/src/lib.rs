//! The storage engine's benchmarks, as functions the `podstore-bench` binary runs at full size
//! beside `fio`, and the smoke test runs at a tiny size so they can't rot.
//!
//! Every benchmark runs one shard on one core (a current-thread runtime with its own io_uring
//! ring), on files in a directory the caller chooses, and returns what it measured. Figures
//! are measured, never assumed; comparisons with fio are made by the binary.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use podstore_disks::{probe_direct_io, CacheMode, Uring, UringConfig};
use podstore_engine::checkpoint::{Checkpoint, CkptBlob};
use podstore_engine::files::ckpt_name;
use podstore_engine::index::{Index, Loc, Slot};
use podstore_engine::{Shard, ShardConfig};

/// A throughput measurement.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub ops: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Rate {
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    pub fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `f` on a fresh current-thread runtime with an io_uring driver, as one core does.
pub fn on_core<T, F: std::future::Future<Output = T>>(dir: &Path, f: impl FnOnce(Uring) -> F) -> T {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let cache = if probe_direct_io(dir).is_ok() { CacheMode::Direct } else { CacheMode::Buffered };
    local.block_on(&rt, async move {
        let cfg = UringConfig { cache, pool_buf_count: 64, ..UringConfig::default() };
        let (io, driver) = Uring::new(cfg).expect("io_uring");
        tokio::task::spawn_local(driver.run());
        f(io).await
    })
}

fn shard_cfg() -> ShardConfig {
    ShardConfig { blob_size_bytes: 256 << 20, ..ShardConfig::default() }
}

/// A fresh, empty shard directory under `root`.
pub fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create bench dir");
    d
}

fn payload(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.u8(..)).collect()
}

/// Durable puts of `object_bytes` objects by `writers` concurrent writers into one shard,
/// `total_bytes` in all. Every put is acknowledged only after its fdatasync.
pub fn durable_puts(dir: &Path, object_bytes: usize, writers: usize, total_bytes: u64) -> Rate {
    let dir = dir.to_path_buf();
    on_core(&dir.clone(), |io| async move {
        let (shard, _) = Shard::open(io, shard_cfg(), &dir, 0).await.expect("open shard");
        let data = Rc::new(payload(object_bytes, 1));
        let per_writer = (total_bytes / object_bytes as u64).div_ceil(writers as u64);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (shard, data) = (shard.clone(), data.clone());
            tasks.push(tokio::task::spawn_local(async move {
                for i in 0..per_writer {
                    let key = format!("w{w}/o{i}");
                    shard.put_bytes(key.as_bytes(), "", &data).await.expect("put");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        let ops = per_writer * writers as u64;
        Rate { ops, bytes: ops * object_bytes as u64, elapsed: start.elapsed() }
    })
}

/// Stores `objects` objects of `object_bytes`, then reads random ones with `readers`
/// concurrent readers for `reads` reads in all (each read verified against its checksum).
pub fn random_reads(dir: &Path, object_bytes: usize, objects: u64, readers: usize, reads: u64) -> Rate {
    let dir = dir.to_path_buf();
    on_core(&dir.clone(), |io| async move {
        let (shard, _) = Shard::open(io, shard_cfg(), &dir, 0).await.expect("open shard");
        let data = Rc::new(payload(object_bytes, 2));
        let mut tasks = Vec::new();
        for w in 0..64u64 {
            let (shard, data) = (shard.clone(), data.clone());
            tasks.push(tokio::task::spawn_local(async move {
                let mut i = w;
                while i < objects {
                    shard.put_bytes(format!("r{i}").as_bytes(), "", &data).await.expect("put");
                    i += 64;
                }
            }));
        }
        for t in tasks {
            t.await.expect("loader");
        }
        let per = reads.div_ceil(readers as u64);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for r in 0..readers {
            let shard = shard.clone();
            tasks.push(tokio::task::spawn_local(async move {
                let mut rng = fastrand::Rng::with_seed(r as u64);
                let mut bytes = 0u64;
                for _ in 0..per {
                    let k = format!("r{}", rng.u64(0..objects));
                    let mut rd = shard.get(k.as_bytes()).await.expect("get").expect("stored");
                    while let Some(c) = rd.next_chunk().await.expect("read") {
                        bytes += c.len() as u64;
                    }
                }
                bytes
            }));
        }
        let mut bytes = 0;
        for t in tasks {
            bytes += t.await.expect("reader");
        }
        Rate { ops: per * readers as u64, bytes, elapsed: start.elapsed() }
    })
}

/// Index memory per object with `objects` entries (random fingerprints, packed locations).
pub fn index_bytes_per_object(objects: u64) -> f64 {
    let mut ix = Index::default();
    let mut rng = fastrand::Rng::with_seed(3);
    for i in 0..objects {
        let loc = Loc::new((i >> 16) as u32 & 0xFFFFF, (i & 0xFFFF) * 4096, 4096 * (1 + i % 200), false);
        ix.set(Slot::Main, rng.u64(..), b"", loc);
    }
    assert_eq!(ix.len() as u64, objects);
    ix.memory_bytes() as f64 / objects as f64
}

/// Startup from a checkpoint of `objects` entries: returns (objects loaded, time).
pub fn startup_from_checkpoint(dir: &Path, objects: u64) -> (u64, Duration) {
    // An empty shard first (its first open writes the record key), then a checkpoint naming
    // one sealed blob, with `objects` index entries pointing into it.
    let d = dir.to_path_buf();
    on_core(&d.clone(), |io| async move {
        Shard::open(io, shard_cfg(), &d, 0).await.expect("create");
    });
    let blob_size = 64 << 20;
    let blob = dir.join("blob-0000000.psb");
    let f = std::fs::File::create(&blob).expect("create blob");
    f.set_len(blob_size).expect("size blob");
    let mut rng = fastrand::Rng::with_seed(4);
    let main: Vec<(u64, u64)> = (0..objects)
        .map(|i| (rng.u64(..), Loc::new(0, (i % (blob_size / 4096)) * 4096, 4096, false).to_raw()))
        .collect();
    let ck = Checkpoint {
        shard_id: 0,
        max_seq: objects,
        blobs: vec![CkptBlob {
            id: 0,
            dedicated: false,
            size_bytes: blob_size,
            tail: blob_size,
            scan_from: blob_size,
        }],
        main,
        ..Default::default()
    };
    std::fs::write(dir.join(ckpt_name(objects)), ck.encode()).expect("write checkpoint");
    drop(ck);
    // Drop the page cache's copy so the load reads the disk (needs root; harmless otherwise).
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
    let dir = dir.to_path_buf();
    on_core(&dir.clone(), |io| async move {
        let start = Instant::now();
        let (shard, report) = Shard::open(io, shard_cfg(), &dir, 0).await.expect("open");
        let took = start.elapsed();
        assert_eq!(report.checkpoint_entries, objects);
        assert_eq!(shard.stats().objects, objects);
        (objects, took)
    })
}

/// Tail scan: writes `tail_bytes` of 1 MiB objects after a checkpoint, then reopens the shard
/// (which scans and verifies all of them). Returns (bytes scanned, scan time).
pub fn tail_scan(dir: &Path, tail_bytes: u64) -> (u64, Duration) {
    let d = dir.to_path_buf();
    on_core(&d.clone(), |io| async move {
        let (shard, _) = Shard::open(io, shard_cfg(), &d, 0).await.expect("open");
        shard.put_bytes(b"first", "", b"x").await.expect("put");
        shard.checkpoint().await.expect("checkpoint");
        let data = Rc::new(payload(1 << 20, 5));
        let n = tail_bytes >> 20;
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let (shard, data) = (shard.clone(), data.clone());
            tasks.push(tokio::task::spawn_local(async move {
                let mut i = w;
                while i < n {
                    shard.put_bytes(format!("t{i}").as_bytes(), "", &data).await.expect("put");
                    i += 8;
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
    });
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
    let d = dir.to_path_buf();
    on_core(&d.clone(), |io| async move {
        let start = Instant::now();
        let (_shard, report) = Shard::open(io, shard_cfg(), &d, 0).await.expect("reopen");
        let took = start.elapsed();
        assert!(report.records_applied >= tail_bytes >> 20, "{report:?}");
        (report.bytes_scanned, took)
    })
}

/// What the name index costs at scale (one disk, names without bodies).
#[derive(Debug, Clone)]
pub struct NamesAtScale {
    pub names: u64,
    /// RAM the index holds once the names are written (memtable empty), bytes per name.
    pub ram_bytes_per_name: f64,
    /// Bytes of its runs on the disk, per name.
    pub disk_bytes_per_name: f64,
    /// Runs left, and the time to build it (inserts in random order, flushes, merges).
    pub runs: usize,
    pub build: Duration,
    /// Time to the first page (1000 names) of a prefix, from a cold seek: median and worst
    /// over `seeks` random prefixes.
    pub first_page_median: Duration,
    pub first_page_max: Duration,
    /// Names listed per second paging through the whole index, 1000 at a time.
    pub list_per_s: f64,
}

/// Builds a name index of `names` names in random order on one disk (as a shard does: the
/// memtable written as a run when full, runs merged when due), then measures what it holds in
/// RAM, the first page of random prefixes and a full listing.
pub fn names_at_scale(dir: &Path, names: u64, seeks: usize) -> NamesAtScale {
    use podstore_engine::names::{Name, Names, Watermark};
    use podstore_engine::Version;
    let dir = dir.to_path_buf();
    // Keys as a photo platform names them: bucket, date, user, object.
    let key = |i: u64| {
        let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!(
            "photos/{}/{:02}/{:07}/{:016x}.jpg",
            2020 + h % 7,
            1 + (h >> 8) % 12,
            (h >> 16) % 1_000_000,
            h
        )
    };
    on_core(&dir.clone(), |io| async move {
        let ix = Names::new(io, &dir, 0, 4 << 20);
        let start = Instant::now();
        let jpeg = podstore_engine::Attrs::from("image/jpeg");
        for i in 0..names {
            let v = Version { hlc: i << 16, origin: 1 };
            ix.apply(
                key(i).as_bytes(),
                Name::live(v, 100_000 + i % 5_000_000, 1_796_000_000_000, [7; 16], &jpeg),
            );
            if ix.flush_due() {
                ix.flush(|| Watermark { max_seq: i, in_flight: vec![] }).await.expect("flush");
            }
            while ix.merge_due() {
                ix.merge(None).await.expect("merge");
            }
        }
        ix.flush(|| Watermark { max_seq: names, in_flight: vec![] }).await.expect("flush");
        while ix.merge_due() {
            ix.merge(None).await.expect("merge");
        }
        let build = start.elapsed();
        let (_, runs, run_bytes) = ix.run_counts();
        let ram = ix.memory_bytes();
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
        let mut rng = fastrand::Rng::with_seed(9);
        let mut times = Vec::with_capacity(seeks);
        for _ in 0..seeks {
            let k = key(rng.u64(..names));
            // A user's photos of a month: `photos/YYYY/MM/UUUUUUU/`.
            let prefix = &k.as_bytes()[..k.rfind('/').expect("a slash") + 1];
            let t = Instant::now();
            let page = ix.list(prefix, prefix, 1000).await.expect("list");
            times.push(t.elapsed());
            assert!(!page.entries.is_empty(), "the prefix of a stored key lists it");
        }
        times.sort();
        let t = Instant::now();
        let (mut from, mut listed): (Box<[u8]>, u64) = (Box::default(), 0);
        loop {
            let page = ix.list(&from, b"photos/", 1000).await.expect("list");
            listed += page.entries.len() as u64;
            match page.next {
                Some(n) => from = n,
                None => break,
            }
        }
        let list_per_s = listed as f64 / t.elapsed().as_secs_f64();
        NamesAtScale {
            names: listed,
            ram_bytes_per_name: ram as f64 / names as f64,
            disk_bytes_per_name: run_bytes as f64 / names as f64,
            runs,
            build,
            first_page_median: times[times.len() / 2],
            first_page_max: times[times.len() - 1],
            list_per_s,
        }
    })
}
