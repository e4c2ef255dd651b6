//! Fault injection on real disks, for test builds of the node (issue 8's disk-fault campaign).
//!
//! [`Faulty`] wraps a real backend and, for files under one directory (one disk), turns some
//! operations into faults: EIO on read, write and fdatasync (a failed write may persist a
//! prefix of its sectors), bits flipped in what a read returns (a bad transfer), bits flipped
//! in what a write stores (media corruption the write does not report), misdirected writes
//! (stored at another offset of the file, reported as done), torn writes (a prefix stored,
//! reported as done), and delay on every operation (a disk that slows down or hangs). Faults
//! are active while the plan's switch file exists, so a test can start and stop them.
//!
//! The node takes a plan from `PODSTORE_FAULTS` in builds with debug assertions only; a
//! release build refuses to start with it set (net/src/node.rs).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{AlignedBuf, Error, FdFile, Io, Op, OpenMode, Result};

/// How often each fault strikes (parts per million of the operations on the disk).
#[derive(Debug, Clone, Default)]
pub struct FaultRates {
    pub read_eio_ppm: u32,
    pub write_eio_ppm: u32,
    pub sync_eio_ppm: u32,
    pub read_flip_ppm: u32,
    pub write_flip_ppm: u32,
    pub misdirect_ppm: u32,
    pub torn_ppm: u32,
    /// Added to every operation on the disk.
    pub delay_ms: u64,
}

/// Faults injected so far, by kind (shared by every core).
#[derive(Debug, Default)]
pub struct FaultStats {
    pub read_eio: AtomicU64,
    pub write_eio: AtomicU64,
    pub sync_eio: AtomicU64,
    pub read_flips: AtomicU64,
    pub write_flips: AtomicU64,
    pub misdirected: AtomicU64,
    pub torn: AtomicU64,
    pub delayed: AtomicU64,
}

impl FaultStats {
    /// (kind, count) for reports and metrics.
    pub fn counts(&self) -> [(&'static str, u64); 8] {
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("read_eio", c(&self.read_eio)),
            ("write_eio", c(&self.write_eio)),
            ("sync_eio", c(&self.sync_eio)),
            ("read_flip", c(&self.read_flips)),
            ("write_flip", c(&self.write_flips)),
            ("misdirected_write", c(&self.misdirected)),
            ("torn_write", c(&self.torn)),
            ("delayed", c(&self.delayed)),
        ]
    }
}

/// Which files, how often, and while what file exists.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Files under this directory (one disk).
    pub dir: PathBuf,
    /// Faults strike only while this file exists.
    pub switch: PathBuf,
    pub rates: FaultRates,
    pub stats: Arc<FaultStats>,
}

impl FaultPlan {
    /// Parses `dir=PATH,switch=PATH,read_eio_ppm=N,...` (the rates' field names).
    pub fn parse(spec: &str) -> std::result::Result<FaultPlan, String> {
        let (mut dir, mut switch, mut r) = (None, None, FaultRates::default());
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("{part:?}: expected name=value"))?;
            let num = || v.parse::<u64>().map_err(|_| format!("{k}: {v:?} is not a number"));
            let ppm = || {
                num().and_then(|n| {
                    u32::try_from(n).ok().filter(|&n| n <= 1_000_000).ok_or(format!("{k}: at most 1000000"))
                })
            };
            match k {
                "dir" => dir = Some(PathBuf::from(v)),
                "switch" => switch = Some(PathBuf::from(v)),
                "read_eio_ppm" => r.read_eio_ppm = ppm()?,
                "write_eio_ppm" => r.write_eio_ppm = ppm()?,
                "sync_eio_ppm" => r.sync_eio_ppm = ppm()?,
                "read_flip_ppm" => r.read_flip_ppm = ppm()?,
                "write_flip_ppm" => r.write_flip_ppm = ppm()?,
                "misdirect_ppm" => r.misdirect_ppm = ppm()?,
                "torn_ppm" => r.torn_ppm = ppm()?,
                "delay_ms" => r.delay_ms = num()?,
                _ => return Err(format!("{k}: unknown fault setting")),
            }
        }
        Ok(FaultPlan {
            dir: dir.ok_or("dir= names the disk to harm")?,
            switch: switch.ok_or("switch= names the file whose presence turns the faults on")?,
            rates: r,
            stats: Default::default(),
        })
    }
}

/// A backend with faults injected by a [`FaultPlan`] (one per core).
#[derive(Debug, Clone)]
pub struct Faulty<I> {
    pub inner: I,
    plan: Rc<FaultPlan>,
    rng: Rc<RefCell<fastrand::Rng>>,
}

impl<I: Io<File = FdFile>> Faulty<I> {
    pub fn new(inner: I, plan: FaultPlan, seed: u64) -> Faulty<I> {
        Faulty { inner, plan: Rc::new(plan), rng: Rc::new(RefCell::new(fastrand::Rng::with_seed(seed))) }
    }

    /// Whether faults strike this path now (delaying it when the plan says so).
    async fn armed(&self, path: &Path) -> bool {
        if !path.starts_with(&self.plan.dir) || !self.plan.switch.exists() {
            return false;
        }
        if self.plan.rates.delay_ms > 0 {
            self.plan.stats.delayed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(self.plan.rates.delay_ms)).await;
        }
        true
    }

    fn chance(&self, ppm: u32) -> bool {
        ppm > 0 && self.rng.borrow_mut().u32(0..1_000_000) < ppm
    }

    fn flip(&self, b: &mut [u8]) {
        if !b.is_empty() {
            let bit = self.rng.borrow_mut().usize(0..b.len() * 8);
            b[bit / 8] ^= 1 << (bit % 8);
        }
    }

    fn eio(op: Op, path: &Path, offset: u64) -> Error {
        Error::io(op, path, offset, std::io::Error::from_raw_os_error(libc::EIO))
    }

    /// A prefix of `buf` (whole sectors), as a new buffer.
    fn prefix(&self, buf: &AlignedBuf) -> AlignedBuf {
        let sectors = buf.len() / crate::ALIGN;
        let kept = self.rng.borrow_mut().usize(0..sectors.max(1)) * crate::ALIGN;
        let mut p = AlignedBuf::new(kept.max(crate::ALIGN));
        p.extend_from(&buf[..kept]);
        p
    }
}

impl<I: Io<File = FdFile>> Io for Faulty<I> {
    type File = FdFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> Result<FdFile> {
        self.inner.open(path, mode).await
    }
    async fn allocate(&self, file: &FdFile, len_bytes: u64) -> Result<()> {
        self.inner.allocate(file, len_bytes).await
    }
    async fn read_at(&self, file: &FdFile, offset: u64, buf: AlignedBuf) -> (Result<()>, AlignedBuf) {
        let armed = self.armed(file.path()).await;
        let (r, mut buf) = self.inner.read_at(file, offset, buf).await;
        if !armed || r.is_err() {
            return (r, buf);
        }
        if self.chance(self.plan.rates.read_eio_ppm) {
            self.plan.stats.read_eio.fetch_add(1, Ordering::Relaxed);
            return (Err(Self::eio(Op::Read, file.path(), offset)), buf);
        }
        if self.chance(self.plan.rates.read_flip_ppm) {
            self.plan.stats.read_flips.fetch_add(1, Ordering::Relaxed);
            self.flip(buf.as_mut_slice());
        }
        (r, buf)
    }
    async fn write_at(&self, file: &FdFile, offset: u64, mut buf: AlignedBuf) -> (Result<()>, AlignedBuf) {
        if !self.armed(file.path()).await {
            return self.inner.write_at(file, offset, buf).await;
        }
        let rates = &self.plan.rates;
        if self.chance(rates.write_eio_ppm) {
            // A failed write may have stored a prefix of its sectors.
            self.plan.stats.write_eio.fetch_add(1, Ordering::Relaxed);
            let p = self.prefix(&buf);
            if p.len() < buf.len() && !p.is_empty() {
                let _ = self.inner.write_at(file, offset, p).await;
            }
            return (Err(Self::eio(Op::Write, file.path(), offset)), buf);
        }
        if self.chance(rates.torn_ppm) {
            // A prefix stored, the write reported done.
            self.plan.stats.torn.fetch_add(1, Ordering::Relaxed);
            let p = self.prefix(&buf);
            if !p.is_empty() && p.len() < buf.len() {
                let (r, _) = self.inner.write_at(file, offset, p).await;
                return (r, buf);
            }
        }
        if self.chance(rates.misdirect_ppm) {
            // Stored a few blocks before where it was meant to go (over older records).
            self.plan.stats.misdirected.fetch_add(1, Ordering::Relaxed);
            let back = self.rng.borrow_mut().u64(1..=16) * crate::ALIGN as u64;
            let (r, buf) = self.inner.write_at(file, offset.saturating_sub(back), buf).await;
            return (r, buf);
        }
        if self.chance(rates.write_flip_ppm) {
            // Stored with a bit flipped; the caller's buffer is given back as it was.
            self.plan.stats.write_flips.fetch_add(1, Ordering::Relaxed);
            let bit = self.rng.borrow_mut().usize(0..buf.len().max(1) * 8);
            let flip = |b: &mut AlignedBuf| {
                if let Some(x) = b.as_mut_slice().get_mut(bit / 8) {
                    *x ^= 1 << (bit % 8);
                }
            };
            flip(&mut buf);
            let (r, mut buf) = self.inner.write_at(file, offset, buf).await;
            flip(&mut buf);
            return (r, buf);
        }
        self.inner.write_at(file, offset, buf).await
    }
    async fn sync_data(&self, file: &FdFile) -> Result<()> {
        if self.armed(file.path()).await && self.chance(self.plan.rates.sync_eio_ppm) {
            self.plan.stats.sync_eio.fetch_add(1, Ordering::Relaxed);
            return Err(Self::eio(Op::Sync, file.path(), 0));
        }
        self.inner.sync_data(file).await
    }
    async fn truncate(&self, file: &FdFile, len_bytes: u64) -> Result<()> {
        self.inner.truncate(file, len_bytes).await
    }
    async fn file_size(&self, file: &FdFile) -> Result<u64> {
        self.inner.file_size(file).await
    }
    async fn remove(&self, path: &Path) -> Result<()> {
        self.inner.remove(path).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner.rename(from, to).await
    }
    async fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.inner.sync_dir(dir).await
    }
    async fn list_dir(&self, dir: &Path) -> Result<Vec<String>> {
        self.inner.list_dir(dir).await
    }
    async fn alloc_buf(&self, capacity_bytes: usize) -> AlignedBuf {
        self.inner.alloc_buf(capacity_bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_and_bad_ones_say_why() {
        let p = FaultPlan::parse("dir=/srv/d1,switch=/tmp/on,read_eio_ppm=20000,torn_ppm=5,delay_ms=3")
            .expect("plan");
        assert_eq!((p.dir, p.switch), (PathBuf::from("/srv/d1"), PathBuf::from("/tmp/on")));
        assert_eq!((p.rates.read_eio_ppm, p.rates.torn_ppm, p.rates.delay_ms), (20_000, 5, 3));
        for (bad, why) in [
            ("switch=/x", "dir="),
            ("dir=/x", "switch="),
            ("dir=/x,switch=/y,read_eio_ppm=2000000", "at most"),
            ("dir=/x,switch=/y,bogus=1", "unknown"),
            ("dir=/x,switch=/y,torn_ppm=many", "not a number"),
            ("dir", "name=value"),
        ] {
            assert!(FaultPlan::parse(bad).expect_err(bad).contains(why), "{bad}");
        }
    }
}
