//! The lock that makes a disk one process's: `podstore.lock` in the disk's directory, held with
//! `flock(2)` for as long as the process uses the disk.
//!
//! Two processes writing one disk each append to the blob files at the tail they believe is
//! theirs and overwrite each other's acknowledged records. A node takes an exclusive lock on
//! every disk before it reads anything there (label, placement, checkpoints, blobs) and keeps
//! it until it exits; a second process that wants the disk is refused, told the PID the lock
//! file names. `flock` locks belong to the open file description, so the kernel drops the
//! lock when the holder dies, `kill -9` included, and the next start goes on at once; nothing
//! stale is left to clean up. (The file's content is only the holder's PID for that message;
//! the lock itself is the kernel's.)
//!
//! Offline tools that read a stopped node's disk take a *shared* lock on the same file, opened
//! read-only and never created: they are refused while a node holds the disk, and a node is
//! refused while they read it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{Error, Op, Result};

/// The lock file's name inside a disk's directory.
pub const LOCK_FILE: &str = "podstore.lock";

/// How many bytes of the lock file are read for the holder's PID.
const PID_TEXT_MAX: usize = 32;

/// A held lock on one disk directory; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DiskLock {
    path: PathBuf,
    /// Holds the lock: the open file description the kernel's lock belongs to.
    _file: File,
}

impl DiskLock {
    /// Takes the exclusive lock on disk directory `dir`, creating the lock file if needed, and
    /// writes this process's PID into it. [`Error::Locked`] when another process holds it.
    pub fn exclusive(dir: &Path) -> Result<DiskLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(|e| Error::io(Op::Open, &path, 0, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder_pid = read_pid(&mut file);
                return Err(Error::Locked { path, holder_pid });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(Op::Lock, &path, 0, e)),
        }
        // Only a message's detail: not synced, and a reader may see it empty for a moment.
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(|e| Error::io(Op::Write, &path, 0, e))?;
        Ok(DiskLock { path, _file: file })
    }

    /// Takes a shared lock for an offline reader of a stopped node's disk: the lock file is
    /// opened read-only and never created or written. `Ok(None)` when there is no lock file
    /// (no node of this version has used the disk); [`Error::Locked`] while a node holds it.
    pub fn shared_if_present(dir: &Path) -> Result<Option<DiskLock>> {
        let path = dir.join(LOCK_FILE);
        let mut file = match OpenOptions::new().read(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(Op::Open, &path, 0, e)),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(Some(DiskLock { path, _file: file })),
            Err(TryLockError::WouldBlock) => {
                let holder_pid = read_pid(&mut file);
                Err(Error::Locked { path, holder_pid })
            }
            Err(TryLockError::Error(e)) => Err(Error::io(Op::Lock, &path, 0, e)),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The PID the lock file names, if it names one that is running now (a shared holder, such as
/// an offline tool, leaves the last node's PID in place).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = Vec::with_capacity(PID_TEXT_MAX);
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(PID_TEXT_MAX as u64).read_to_end(&mut text).ok()?;
    let pid: u32 = std::str::from_utf8(&text).ok()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("podstore-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create temp dir");
        d
    }

    #[test]
    fn one_holder_at_a_time_and_readers_only_while_no_node_holds_it() {
        let d = tempdir("excl");
        assert!(DiskLock::shared_if_present(&d).expect("no lock file").is_none());
        assert!(!d.join(LOCK_FILE).exists(), "an offline reader created the lock file");
        let held = DiskLock::exclusive(&d).expect("first lock");
        // A second open file description in this same process conflicts like another process.
        match DiskLock::exclusive(&d) {
            Err(Error::Locked { holder_pid, path }) => {
                assert_eq!(holder_pid, Some(std::process::id()));
                assert_eq!(path, d.join(LOCK_FILE));
            }
            other => panic!("second exclusive lock: {other:?}"),
        }
        assert!(matches!(DiskLock::shared_if_present(&d), Err(Error::Locked { .. })));
        drop(held);
        let reader = DiskLock::shared_if_present(&d).expect("free").expect("file exists");
        let reader2 = DiskLock::shared_if_present(&d).expect("readers share").expect("file exists");
        assert!(matches!(DiskLock::exclusive(&d), Err(Error::Locked { .. })));
        drop((reader, reader2));
        let again = DiskLock::exclusive(&d).expect("free again");
        let text = std::fs::read_to_string(again.path()).expect("read");
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(again);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_stale_or_garbled_pid_is_not_named() {
        let d = tempdir("stale");
        let held = DiskLock::exclusive(&d).expect("lock");
        // PID 0 never runs as a process; garbage parses as nothing.
        for content in ["0\n", "not a pid", ""] {
            std::fs::write(d.join(LOCK_FILE), content).expect("write");
            match DiskLock::exclusive(&d) {
                Err(Error::Locked { holder_pid: None, .. }) => {}
                other => panic!("{content:?}: {other:?}"),
            }
        }
        drop(held);
        let _ = std::fs::remove_dir_all(&d);
    }
}
