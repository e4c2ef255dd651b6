//! `podstore-tune measure`: what one disk can take, measured through podstore's own I/O path
//! (io_uring, O_DIRECT, the same aligned buffers), written as a per-disk profile.
//!
//! On a test file in the disk's directory: random 4 KiB reads and sequential 1 MiB reads and
//! writes at several queue depths (operations per second, bandwidth, latency percentiles),
//! and the latency of an fdatasync after a 1 MiB write (what a durable PUT waits for). From
//! them: the queue depth past which random reads stop gaining (`queue_depth`) and a budget
//! for background work (`background_mib_per_s`, a fifth of the best sequential write rate).
//! The file is removed afterwards.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use podstore_disks::{probe_direct_io, CacheMode, Io, OpenMode, Uring, UringConfig};

pub use podstore_disks::label::PROFILE_FILE;

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Size of the test file (random reads spread over all of it).
    pub file_bytes: u64,
    /// Time per measurement.
    pub seconds: f64,
    /// Queue depths tried.
    pub depths: Vec<usize>,
}

/// One measurement at one queue depth.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Point {
    pub queue_depth: usize,
    #[serde(serialize_with = "whole")]
    pub ops_per_s: f64,
    #[serde(serialize_with = "tenths")]
    pub mib_per_s: f64,
    #[serde(serialize_with = "whole")]
    pub p50_us: f64,
    #[serde(serialize_with = "whole")]
    pub p99_us: f64,
}

/// A rate or a latency in the file: a whole number (finer is noise).
fn whole<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(v.max(0.0).round() as u64)
}

/// A bandwidth in the file: to a tenth.
fn tenths<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((v * 10.0).round() / 10.0)
}

/// A disk's profile (its file: the values first, then each curve as an array of tables).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Profile {
    pub disk: PathBuf,
    pub direct_io: bool,
    /// The smallest queue depth reaching 90% of the best random-read rate.
    pub queue_depth: usize,
    /// A fifth of the best sequential write bandwidth: what background work may use.
    #[serde(serialize_with = "tenths")]
    pub background_mib_per_s: f64,
    #[serde(serialize_with = "whole")]
    pub fdatasync_p50_us: f64,
    #[serde(serialize_with = "whole")]
    pub fdatasync_p99_us: f64,
    pub random_read_4k: Vec<Point>,
    pub seq_read_1m: Vec<Point>,
    pub seq_write_1m: Vec<Point>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    RandomRead4k,
    SeqRead1m,
    SeqWrite1m,
}

/// `depth` concurrent streams of one kind of I/O for `seconds`.
async fn run_kind(
    io: &Uring,
    file: &Rc<<Uring as Io>::File>,
    file_bytes: u64,
    kind: Kind,
    depth: usize,
    seconds: f64,
) -> podstore_disks::Result<Point> {
    let size: usize = if kind == Kind::RandomRead4k { 4096 } else { 1 << 20 };
    let blocks = file_bytes / size as u64;
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let next = Rc::new(std::cell::Cell::new(0u64));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..depth {
        let (io, file, next) = (io.clone(), file.clone(), next.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let mut rng = fastrand::Rng::with_seed(w as u64 + 1);
            let mut lat = Vec::new();
            let mut buf = io.alloc_buf(size).await;
            buf.set_len(size);
            if kind == Kind::SeqWrite1m {
                buf.as_mut_slice().fill(0x5a);
            }
            while Instant::now() < until {
                let block = match kind {
                    Kind::RandomRead4k => rng.u64(0..blocks),
                    _ => {
                        let b = next.get();
                        next.set(b + 1);
                        b % blocks
                    }
                };
                let t = Instant::now();
                let (r, b) = match kind {
                    Kind::SeqWrite1m => io.write_at(&file, block * size as u64, buf).await,
                    _ => io.read_at(&file, block * size as u64, buf).await,
                };
                buf = b;
                r?;
                lat.push(t.elapsed());
            }
            Ok::<_, podstore_disks::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("measurement task")?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    let ops = lat.len() as f64 / elapsed;
    Ok(Point {
        queue_depth: depth,
        ops_per_s: ops,
        mib_per_s: ops * size as f64 / (1 << 20) as f64,
        p50_us: percentile(&lat, 0.5),
        p99_us: percentile(&lat, 0.99),
    })
}

/// Measures the disk whose filesystem holds `dir`. `progress` is told what runs.
pub fn measure(dir: &Path, plan: &Plan, progress: &mut dyn FnMut(&str)) -> Result<Profile, String> {
    let direct = probe_direct_io(dir).is_ok();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    let path = dir.join(podstore_disks::MEASURE_FILE);
    let cfg = UringConfig {
        cache: if direct { CacheMode::Direct } else { CacheMode::Buffered },
        pool_buf_count: plan.depths.iter().copied().max().unwrap_or(1).clamp(1, 256),
        ..UringConfig::default()
    };
    let file_bytes = plan.file_bytes.max(64 << 20) / (1 << 20) * (1 << 20);
    let result = local.block_on(&rt, async {
        let (io, driver) = Uring::new(cfg).map_err(|e| format!("io_uring: {e}"))?;
        tokio::task::spawn_local(driver.run());
        let _ = io.remove(&path).await;
        let file = Rc::new(io.open(&path, OpenMode::CreateNew).await.map_err(|e| e.to_string())?);
        io.allocate(&file, file_bytes).await.map_err(|e| e.to_string())?;
        progress(&format!("writing the {} MiB test file", file_bytes >> 20));
        let mut buf = io.alloc_buf(1 << 20).await;
        buf.set_len(1 << 20);
        let mut rng = fastrand::Rng::with_seed(7);
        buf.as_mut_slice().iter_mut().for_each(|b| *b = rng.u8(..));
        for off in (0..file_bytes).step_by(1 << 20) {
            let (r, b) = io.write_at(&file, off, buf).await;
            r.map_err(|e| e.to_string())?;
            buf = b;
        }
        io.sync_data(&file).await.map_err(|e| e.to_string())?;
        let mut profile = Profile {
            disk: dir.to_path_buf(),
            direct_io: direct,
            random_read_4k: Vec::new(),
            seq_read_1m: Vec::new(),
            seq_write_1m: Vec::new(),
            fdatasync_p50_us: 0.0,
            fdatasync_p99_us: 0.0,
            queue_depth: 1,
            background_mib_per_s: 0.0,
        };
        for (kind, name) in [
            (Kind::RandomRead4k, "random 4 KiB reads"),
            (Kind::SeqRead1m, "sequential 1 MiB reads"),
            (Kind::SeqWrite1m, "sequential 1 MiB writes"),
        ] {
            for &qd in &plan.depths {
                progress(&format!("{name} at queue depth {qd}"));
                let p = run_kind(&io, &file, file_bytes, kind, qd, plan.seconds)
                    .await
                    .map_err(|e| e.to_string())?;
                match kind {
                    Kind::RandomRead4k => profile.random_read_4k.push(p),
                    Kind::SeqRead1m => profile.seq_read_1m.push(p),
                    Kind::SeqWrite1m => profile.seq_write_1m.push(p),
                }
            }
        }
        progress("fdatasync after a 1 MiB write");
        let mut lat = Vec::new();
        let until = Instant::now() + Duration::from_secs_f64(plan.seconds);
        let mut off = 0u64;
        while Instant::now() < until || lat.len() < 3 {
            let (r, b) = io.write_at(&file, off % file_bytes, buf).await;
            r.map_err(|e| e.to_string())?;
            buf = b;
            let t = Instant::now();
            io.sync_data(&file).await.map_err(|e| e.to_string())?;
            lat.push(t.elapsed());
            off += 1 << 20;
        }
        lat.sort();
        profile.fdatasync_p50_us = percentile(&lat, 0.5);
        profile.fdatasync_p99_us = percentile(&lat, 0.99);
        let best = profile.random_read_4k.iter().map(|p| p.ops_per_s).fold(0.0, f64::max);
        profile.queue_depth =
            profile.random_read_4k.iter().find(|p| p.ops_per_s >= 0.9 * best).map_or(1, |p| p.queue_depth);
        let best_write = profile.seq_write_1m.iter().map(|p| p.mib_per_s).fold(0.0, f64::max);
        profile.background_mib_per_s = best_write / 5.0;
        Ok(profile)
    });
    let _ = std::fs::remove_file(&path);
    result
}

impl Profile {
    /// The profile as TOML (the file the node reads).
    pub fn to_toml(&self) -> Result<String, String> {
        let body = toml::to_string(self).map_err(|e| format!("the profile as TOML: {e}"))?;
        Ok(format!("# podstore disk profile: written by `podstore-tune measure`, read by the node.\n{body}"))
    }
}
