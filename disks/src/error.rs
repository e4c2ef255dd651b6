//! The one error type of the hardware layer: what failed, where, and the OS error.

use std::path::PathBuf;

/// A disk operation, named in errors and in fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Open,
    Allocate,
    Read,
    Write,
    Sync,
    Truncate,
    Remove,
    Rename,
    SyncDir,
    ListDir,
    Stat,
    Lock,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Op::Open => "open",
            Op::Allocate => "allocate",
            Op::Read => "read",
            Op::Write => "write",
            Op::Sync => "fdatasync",
            Op::Truncate => "truncate",
            Op::Remove => "remove",
            Op::Rename => "rename",
            Op::SyncDir => "fsync(dir)",
            Op::ListDir => "list",
            Op::Stat => "stat",
            Op::Lock => "lock",
        };
        f.write_str(s)
    }
}

/// Errors of the hardware layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operation on a file failed with an OS error (or an injected one).
    #[error("{op} {path} at offset {offset}: {source}")]
    Io {
        op: Op,
        path: PathBuf,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    /// A read or write moved fewer bytes than asked (end of file on read, or a short write).
    #[error("{op} {path} at offset {offset}: short transfer, {done} of {wanted} bytes")]
    Short { op: Op, path: PathBuf, offset: u64, done: usize, wanted: usize },
    /// The directory can't be used as a podstore disk; the reason says what to do.
    #[error("disk {path}: {reason}")]
    Unusable { path: PathBuf, reason: String },
    /// Another process holds the disk's lock (`podstore.lock`, see [`crate::DiskLock`]).
    #[error("{} is locked by {}: a disk belongs to one process at a time (two writing it lose acknowledged data); stop that process first", path.display(), holder_pid.map_or("another process".to_string(), |p| format!("PID {p}")))]
    Locked { path: PathBuf, holder_pid: Option<u32> },
    /// io_uring could not be set up.
    #[error("io_uring unavailable: {0}")]
    UringUnavailable(String),
    /// The simulated machine has crashed; nothing more reaches its disks.
    #[error("simulated crash")]
    Crashed,
}

impl Error {
    pub(crate) fn io(op: Op, path: &std::path::Path, offset: u64, source: std::io::Error) -> Error {
        Error::Io { op, path: path.to_path_buf(), offset, source }
    }

    /// The errno behind this error, if it is an OS error.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Result of the hardware layer.
pub type Result<T> = std::result::Result<T, Error>;
