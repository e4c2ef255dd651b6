//! The `Io` trait: every disk operation the engine performs goes through it.
//!
//! Three implementations: [`crate::Uring`] (per-core io_uring, the production path),
//! [`crate::SyncIo`] (`pread`/`pwrite`, when io_uring is unavailable) and [`crate::SimDisk`]
//! (in memory, seeded, with faults). [`crate::AnyIo`] picks one of the first two at startup.
//!
//! Reads and writes take an [`AlignedBuf`] by value and give it back with the result, so the
//! buffer belongs to the operation for as long as the kernel may touch it. Offsets and lengths
//! of reads and writes are multiples of [`crate::ALIGN`]; implementations assert it.
//!
//! The futures are not `Send`: an `Io` belongs to one core.

use std::path::Path;

use crate::{AlignedBuf, Result};

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file for reading and writing.
    Existing,
    /// Create a new file; fail if it exists (`O_EXCL`).
    CreateNew,
    /// Open an existing file read-only.
    ReadOnly,
}

/// Whether files bypass the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// `O_DIRECT`: the production mode.
    Direct,
    /// Through the page cache: development only (tmpfs has no O_DIRECT). Durability still
    /// relies on `fdatasync`.
    Buffered,
}

/// The disk operations of one core. See the module documentation.
#[allow(async_fn_in_trait)] // the futures are per-core and deliberately not Send
pub trait Io: Clone + 'static {
    /// An open file. Cloning it shares the descriptor; it closes when the last clone and the
    /// last in-flight operation using it are gone.
    type File: Clone + std::fmt::Debug;

    /// Opens or creates a file.
    async fn open(&self, path: &Path, mode: OpenMode) -> Result<Self::File>;
    /// Reserves `len_bytes` of space from offset 0 (`fallocate(2)`, mode 0): the file size
    /// becomes at least `len_bytes` and the new range reads as zeros.
    async fn allocate(&self, file: &Self::File, len_bytes: u64) -> Result<()>;
    /// Reads `buf.len()` bytes (set by the caller, aligned) at `offset` into `buf`; on return
    /// `buf.len()` is the count read (less only at end of file).
    async fn read_at(&self, file: &Self::File, offset: u64, buf: AlignedBuf) -> (Result<()>, AlignedBuf);
    /// Writes the filled part of `buf` (`buf.len()`, aligned) at `offset`, all of it or an error.
    async fn write_at(&self, file: &Self::File, offset: u64, buf: AlignedBuf) -> (Result<()>, AlignedBuf);
    /// `fdatasync(2)`: everything written to the file before is durable when this returns Ok.
    async fn sync_data(&self, file: &Self::File) -> Result<()>;
    /// Sets the file size (`ftruncate(2)`).
    async fn truncate(&self, file: &Self::File, len_bytes: u64) -> Result<()>;
    /// The file's size in bytes.
    async fn file_size(&self, file: &Self::File) -> Result<u64>;
    /// Removes a file name (durable after `sync_dir` of its directory).
    async fn remove(&self, path: &Path) -> Result<()>;
    /// Renames a file atomically (durable after `sync_dir`).
    async fn rename(&self, from: &Path, to: &Path) -> Result<()>;
    /// Makes creations, removals and renames in `dir` durable (`fsync(2)` of the directory).
    async fn sync_dir(&self, dir: &Path) -> Result<()>;
    /// The names of the regular files in `dir`, sorted.
    async fn list_dir(&self, dir: &Path) -> Result<Vec<String>>;
    /// An empty buffer of at least `capacity_bytes` (from the core's registered pool when it
    /// fits; a pool buffer may be larger than asked).
    async fn alloc_buf(&self, capacity_bytes: usize) -> AlignedBuf {
        AlignedBuf::new(capacity_bytes)
    }
}
