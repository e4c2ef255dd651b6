//! [`AnyIo`]: the backend chosen at startup, io_uring when the kernel allows it, else the
//! `pread`/`pwrite` fallback, with the reason logged.

use std::path::Path;

use crate::fd::FdFile;
use crate::{
    AlignedBuf, BufPool, FaultPlan, Faulty, Io, OpenMode, Result, SyncIo, Uring, UringConfig, UringDriver,
};

/// The production `Io` of one core.
#[derive(Clone, Debug)]
pub enum AnyIo {
    Uring(Uring),
    Sync(SyncIo, BufPool),
    /// Test builds only: a backend with faults injected on one disk (faulty.rs).
    FaultyUring(Faulty<Uring>),
    FaultySync(Faulty<SyncIo>, BufPool),
}

/// Why the fallback was chosen (None when io_uring is in use).
#[derive(Debug, Clone)]
pub struct Backend {
    pub name: &'static str,
    pub fallback_reason: Option<String>,
}

/// The kernel's io_uring switch: 0 enabled, 1 only for `kernel.io_uring_group`, 2 disabled.
pub fn io_uring_disabled_sysctl() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok()?.trim().parse().ok()
}

impl AnyIo {
    /// Sets up io_uring, or the fallback if that fails or `force_sync` asks for it.
    /// Returns the driver task to spawn when io_uring is used.
    pub fn detect(cfg: UringConfig, force_sync: bool) -> (AnyIo, Option<UringDriver>, Backend) {
        let reason = if force_sync {
            "configured (io_backend = \"sync\")".to_string()
        } else {
            match Uring::new(cfg.clone()) {
                Ok((io, driver)) => {
                    return (
                        AnyIo::Uring(io),
                        Some(driver),
                        Backend { name: "io_uring", fallback_reason: None },
                    )
                }
                Err(e) => match io_uring_disabled_sysctl() {
                    Some(v) if v > 0 => format!("{e} (kernel.io_uring_disabled = {v})"),
                    _ => e.to_string(),
                },
            }
        };
        tracing::warn!("using the pread/pwrite fallback instead of io_uring: {reason}");
        let pool = BufPool::new(cfg.pool_buf_size_bytes, cfg.pool_buf_count);
        (
            AnyIo::Sync(SyncIo::new(cfg.cache), pool),
            None,
            Backend { name: "sync", fallback_reason: Some(reason) },
        )
    }

    /// The core's buffer pool.
    pub fn pool(&self) -> &BufPool {
        match self {
            AnyIo::Uring(u) => u.pool(),
            AnyIo::FaultyUring(f) => f.inner.pool(),
            AnyIo::Sync(_, p) | AnyIo::FaultySync(_, p) => p,
        }
    }

    /// The io_uring backend, when it is the one in use.
    pub fn uring(&self) -> Option<&Uring> {
        match self {
            AnyIo::Uring(u) => Some(u),
            AnyIo::FaultyUring(f) => Some(&f.inner),
            _ => None,
        }
    }

    /// The same backend with `plan`'s faults injected (test builds; see faulty.rs).
    pub fn with_faults(self, plan: FaultPlan, seed: u64) -> AnyIo {
        match self {
            AnyIo::Uring(u) => AnyIo::FaultyUring(Faulty::new(u, plan, seed)),
            AnyIo::Sync(s, p) => AnyIo::FaultySync(Faulty::new(s, plan, seed), p),
            other => other,
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $io:ident => $e:expr) => {
        match $self {
            AnyIo::Uring($io) => $e,
            AnyIo::Sync($io, _) => $e,
            AnyIo::FaultyUring($io) => $e,
            AnyIo::FaultySync($io, _) => $e,
        }
    };
}

impl Io for AnyIo {
    type File = FdFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> Result<FdFile> {
        dispatch!(self, io => io.open(path, mode).await)
    }
    async fn allocate(&self, file: &FdFile, len_bytes: u64) -> Result<()> {
        dispatch!(self, io => io.allocate(file, len_bytes).await)
    }
    async fn read_at(&self, file: &FdFile, offset: u64, buf: AlignedBuf) -> (Result<()>, AlignedBuf) {
        dispatch!(self, io => io.read_at(file, offset, buf).await)
    }
    async fn write_at(&self, file: &FdFile, offset: u64, buf: AlignedBuf) -> (Result<()>, AlignedBuf) {
        dispatch!(self, io => io.write_at(file, offset, buf).await)
    }
    async fn sync_data(&self, file: &FdFile) -> Result<()> {
        dispatch!(self, io => io.sync_data(file).await)
    }
    async fn truncate(&self, file: &FdFile, len_bytes: u64) -> Result<()> {
        dispatch!(self, io => io.truncate(file, len_bytes).await)
    }
    async fn file_size(&self, file: &FdFile) -> Result<u64> {
        dispatch!(self, io => io.file_size(file).await)
    }
    async fn remove(&self, path: &Path) -> Result<()> {
        dispatch!(self, io => io.remove(path).await)
    }
    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        dispatch!(self, io => io.rename(from, to).await)
    }
    async fn sync_dir(&self, dir: &Path) -> Result<()> {
        dispatch!(self, io => io.sync_dir(dir).await)
    }
    async fn list_dir(&self, dir: &Path) -> Result<Vec<String>> {
        dispatch!(self, io => io.list_dir(dir).await)
    }
    async fn alloc_buf(&self, capacity_bytes: usize) -> AlignedBuf {
        take_buf(self.pool(), capacity_bytes).await
    }
}

/// A buffer of at least `capacity_bytes`: a registered pool buffer when one fits and is free,
/// a heap buffer otherwise. It never waits, so a slow client holding pool buffers can't stall
/// other requests; callers bound their own concurrency.
pub(crate) async fn take_buf(pool: &BufPool, capacity_bytes: usize) -> AlignedBuf {
    if capacity_bytes <= pool.buf_size() {
        if let Some(b) = pool.try_acquire() {
            return b;
        }
    }
    AlignedBuf::new(capacity_bytes)
}
