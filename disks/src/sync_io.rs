//! The fallback `Io`: plain `pread`/`pwrite`/`fdatasync` on the calling thread.
//!
//! Used when io_uring can't be set up (`kernel.io_uring_disabled`, a seccomp filter, an old
//! kernel). Every call blocks the core's thread for the length of the syscall, so a node on
//! this backend serves fewer concurrent requests per core; it is chosen with a logged reason
//! (see [`crate::AnyIo::detect`]).

use std::path::Path;

use crate::fd::{
    cstring, fstat_size, last_os_error, list_regular_files, open_flags, sync_dir_blocking, FdFile, FILE_MODE,
};
use crate::{is_aligned, AlignedBuf, CacheMode, Error, Io, Op, OpenMode, Result};

/// Blocking `pread`/`pwrite` backend.
#[derive(Clone, Debug)]
pub struct SyncIo {
    cache: CacheMode,
}

impl SyncIo {
    /// A backend opening files with the given cache mode.
    pub fn new(cache: CacheMode) -> SyncIo {
        SyncIo { cache }
    }
}

impl Io for SyncIo {
    type File = FdFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> Result<FdFile> {
        let c = cstring(Op::Open, path)?;
        // SAFETY: c is a valid NUL-terminated path; flags and mode are plain integers.
        let fd = unsafe { libc::open(c.as_ptr(), open_flags(mode, self.cache), FILE_MODE as libc::c_uint) };
        if fd < 0 {
            return Err(last_os_error(Op::Open, path, 0));
        }
        Ok(FdFile::from_raw(fd, path))
    }

    async fn allocate(&self, file: &FdFile, len_bytes: u64) -> Result<()> {
        // SAFETY: valid descriptor; fallocate mode 0 only extends allocation.
        let r = unsafe { libc::fallocate(file.raw(), 0, 0, len_bytes as libc::off_t) };
        if r < 0 {
            return Err(last_os_error(Op::Allocate, file.path(), 0));
        }
        Ok(())
    }

    async fn read_at(&self, file: &FdFile, offset: u64, mut buf: AlignedBuf) -> (Result<()>, AlignedBuf) {
        assert!(is_aligned(offset), "unaligned read offset {offset}");
        let want = buf.len();
        assert!(is_aligned(want as u64), "unaligned read length {want}");
        let mut done = 0usize;
        let ptr = buf.as_mut_ptr();
        while done < want {
            // SAFETY: ptr+done..ptr+want lies inside the buffer, which this call owns.
            let n = unsafe {
                libc::pread(
                    file.raw(),
                    ptr.add(done).cast(),
                    want - done,
                    (offset + done as u64) as libc::off_t,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                buf.set_len(0);
                return (Err(Error::io(Op::Read, file.path(), offset, e)), buf);
            }
            if n == 0 {
                break;
            }
            done += n as usize;
        }
        buf.set_len(done);
        (Ok(()), buf)
    }

    async fn write_at(&self, file: &FdFile, offset: u64, buf: AlignedBuf) -> (Result<()>, AlignedBuf) {
        assert!(is_aligned(offset) && is_aligned(buf.len() as u64), "unaligned write {offset}+{}", buf.len());
        let want = buf.len();
        let mut done = 0usize;
        while done < want {
            let rest = &buf.as_slice()[done..];
            // SAFETY: rest is a valid readable slice for the duration of the call.
            let n = unsafe {
                libc::pwrite(
                    file.raw(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    (offset + done as u64) as libc::off_t,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return (Err(Error::io(Op::Write, file.path(), offset, e)), buf);
            }
            if n == 0 {
                return (
                    Err(Error::Short { op: Op::Write, path: file.path().into(), offset, done, wanted: want }),
                    buf,
                );
            }
            done += n as usize;
        }
        (Ok(()), buf)
    }

    async fn sync_data(&self, file: &FdFile) -> Result<()> {
        // SAFETY: valid descriptor.
        if unsafe { libc::fdatasync(file.raw()) } < 0 {
            return Err(last_os_error(Op::Sync, file.path(), 0));
        }
        Ok(())
    }

    async fn truncate(&self, file: &FdFile, len_bytes: u64) -> Result<()> {
        // SAFETY: valid descriptor.
        if unsafe { libc::ftruncate(file.raw(), len_bytes as libc::off_t) } < 0 {
            return Err(last_os_error(Op::Truncate, file.path(), len_bytes));
        }
        Ok(())
    }

    async fn file_size(&self, file: &FdFile) -> Result<u64> {
        fstat_size(file)
    }

    async fn remove(&self, path: &Path) -> Result<()> {
        std::fs::remove_file(path).map_err(|e| Error::io(Op::Remove, path, 0, e))
    }

    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        std::fs::rename(from, to).map_err(|e| Error::io(Op::Rename, from, 0, e))
    }

    async fn sync_dir(&self, dir: &Path) -> Result<()> {
        sync_dir_blocking(dir)
    }

    async fn list_dir(&self, dir: &Path) -> Result<Vec<String>> {
        list_regular_files(dir)
    }
}
