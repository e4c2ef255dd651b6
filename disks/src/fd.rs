//! Open files backed by a kernel descriptor, shared by the io_uring driver and the fallback.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::{CacheMode, Error, Op, OpenMode, Result};

/// An open file: a descriptor and the path it was opened by (for error messages).
/// The descriptor closes when the last clone is dropped; in-flight io_uring operations hold a
/// clone, so a file never closes under the kernel.
#[derive(Clone, Debug)]
pub struct FdFile {
    pub(crate) fd: Rc<OwnedFd>,
    pub(crate) path: Rc<PathBuf>,
}

impl FdFile {
    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The path this file was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn from_raw(fd: RawFd, path: &Path) -> FdFile {
        // SAFETY: `fd` was just returned by a successful open and is owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        FdFile { fd: Rc::new(owned), path: Rc::new(path.to_path_buf()) }
    }
}

/// The `open(2)` flags for a mode. `O_DIRECT` bypasses the page cache (open(2): "Try to
/// minimize cache effects of the I/O to and from this file"); `O_CLOEXEC` keeps descriptors out
/// of child processes; `O_NOATIME` is not used because it fails with EPERM for non-owners.
pub(crate) fn open_flags(mode: OpenMode, cache: CacheMode) -> i32 {
    let base = match mode {
        OpenMode::Existing => libc::O_RDWR,
        OpenMode::CreateNew => libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
        OpenMode::ReadOnly => libc::O_RDONLY,
    };
    let direct = match cache {
        CacheMode::Direct => libc::O_DIRECT,
        CacheMode::Buffered => 0,
    };
    base | direct | libc::O_CLOEXEC
}

/// Permission bits of created files: owner read/write only.
pub(crate) const FILE_MODE: libc::mode_t = 0o600;

pub(crate) fn cstring(op: Op, path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        Error::io(op, path, 0, std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))
    })
}

pub(crate) fn last_os_error(op: Op, path: &Path, offset: u64) -> Error {
    Error::io(op, path, offset, std::io::Error::last_os_error())
}

/// Lists the regular files of a directory, sorted (used by both fd-based backends: io_uring has
/// no getdents opcode).
pub(crate) fn list_regular_files(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(Op::ListDir, dir, 0, e))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(Op::ListDir, dir, 0, e))?;
        let ft = entry.file_type().map_err(|e| Error::io(Op::ListDir, dir, 0, e))?;
        if ft.is_file() {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// `fsync(2)` of a directory, so entries created, removed or renamed in it are durable.
pub(crate) fn sync_dir_blocking(dir: &Path) -> Result<()> {
    let c = cstring(Op::SyncDir, dir)?;
    // SAFETY: c is a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last_os_error(Op::SyncDir, dir, 0));
    }
    // SAFETY: fd was just opened and is owned here.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: owned holds a valid descriptor.
    if unsafe { libc::fsync(owned.as_raw_fd()) } < 0 {
        return Err(last_os_error(Op::SyncDir, dir, 0));
    }
    Ok(())
}

/// File size via `fstat(2)`.
pub(crate) fn fstat_size(file: &FdFile) -> Result<u64> {
    // SAFETY: zeroed is a valid bit pattern for libc::stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is valid while `file` lives and st is a valid out-pointer.
    if unsafe { libc::fstat(file.raw(), &mut st) } < 0 {
        return Err(last_os_error(Op::Stat, file.path(), 0));
    }
    Ok(st.st_size as u64)
}
