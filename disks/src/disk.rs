//! Disk setup: checking that a configured directory can hold a podstore shard, labelling it on
//! first use and refusing it afterwards if the label is missing or foreign.
//!
//! A disk is a directory, normally the mount point of one filesystem on one drive. The checks,
//! in order:
//! 1. it exists and is a directory;
//! 2. if it has a label, the label must be valid and name this node and this disk id;
//! 3. without a label it must be empty (apart from `lost+found`): a directory with files but no
//!    label is refused, since that is how an unmounted mount point (the root filesystem's empty
//!    directory) or another program's data looks. With `require_mount_point` (the default for
//!    real disks) it must also be a mount point, so a disk that failed to mount is never
//!    silently filled;
//! 4. no other process holds the disk: the checks above are repeated under this process's
//!    exclusive lock (`podstore.lock`, lock.rs), which the returned [`Disk`] carries and the
//!    caller keeps for as long as it uses the disk;
//! 5. O_DIRECT must work there with an alignment that divides 4096 (`statx(2)` STATX_DIOALIGN,
//!    then a real aligned write and read); tmpfs, for one, refuses O_DIRECT. Development setups
//!    may choose [`CacheMode::Buffered`] explicitly instead.

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::label::{Label, LABEL_FILE, LABEL_SIZE, NODE_ID_MAX_BYTES};
use crate::{AlignedBuf, CacheMode, DiskLock, Error, Result, ALIGN, LOCK_FILE};

/// The class of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// SSD/NVMe.
    Fast,
    /// HDD.
    Capacity,
}

impl Tier {
    /// Its name in the config, the API and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Tier::Fast => "fast",
            Tier::Capacity => "capacity",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Tier, String> {
        match s {
            "fast" => Ok(Tier::Fast),
            "capacity" => Ok(Tier::Capacity),
            _ => Err(format!("unknown tier {s:?} (expected \"fast\" or \"capacity\")")),
        }
    }
}

/// One disk as the configuration gives it.
#[derive(Debug, Clone)]
pub struct DiskSpec {
    pub id: u32,
    pub path: PathBuf,
    pub tier: Tier,
    /// Refuse to label a directory that is not a mount point.
    pub require_mount_point: bool,
    pub cache: CacheMode,
}

/// A disk that passed the checks.
#[derive(Debug, Clone)]
pub struct Disk {
    pub spec: DiskSpec,
    pub label: Label,
    /// Whether this start wrote the label.
    pub labelled_now: bool,
    /// `STATX_DIOALIGN` offset alignment (0 when the filesystem does not report it).
    pub dio_offset_align: u32,
    /// `STATX_DIOALIGN` memory alignment.
    pub dio_mem_align: u32,
    /// This process's lock on the disk: keep it for as long as the disk is used.
    pub lock: Arc<DiskLock>,
}

/// Capacity and free space of the filesystem holding `path` (`statvfs(3)`).
pub fn fs_space(path: &Path) -> Result<(u64, u64)> {
    let c = crate::fd::cstring(crate::Op::Stat, path)?;
    // SAFETY: zeroed is valid for statvfs; c is a valid path and st a valid out-pointer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } < 0 {
        return Err(crate::fd::last_os_error(crate::Op::Stat, path, 0));
    }
    let frsize = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

fn unusable(path: &Path, reason: impl Into<String>) -> Error {
    Error::Unusable { path: path.to_path_buf(), reason: reason.into() }
}

fn is_mount_point(path: &Path) -> Result<bool> {
    let me = std::fs::metadata(path).map_err(|e| Error::io(crate::Op::Stat, path, 0, e))?;
    let parent = path.join("..");
    let up = std::fs::metadata(&parent).map_err(|e| Error::io(crate::Op::Stat, &parent, 0, e))?;
    Ok(me.dev() != up.dev() || me.ino() == up.ino())
}

/// `statx(2)` with STATX_DIOALIGN: (offset alignment, memory alignment), zeros if unreported.
fn dio_align(path: &Path) -> Result<(u32, u32)> {
    let c = crate::fd::cstring(crate::Op::Stat, path)?;
    // SAFETY: zeroed is valid for libc::statx.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid path; stx is a valid out-pointer.
    let r = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, libc::STATX_DIOALIGN, &mut stx) };
    if r < 0 {
        return Err(crate::fd::last_os_error(crate::Op::Stat, path, 0));
    }
    if stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return Ok((0, 0));
    }
    Ok((stx.stx_dio_offset_align, stx.stx_dio_mem_align))
}

/// `podstore-tune measure`'s test file in the disk's directory.
pub const MEASURE_FILE: &str = ".podstore-measure.tmp";

/// The direct-I/O probe's file (`.podstore-dio-probe.<pid>`), removed once it has been read
/// back. The PID keeps two processes' probes of one directory apart (a node's start and
/// `podstore-tune measure`, say).
const PROBE_FILE: &str = ".podstore-dio-probe";

/// Checks that O_DIRECT works in `dir` with 4096-byte alignment; returns the reported alignment.
pub fn probe_direct_io(dir: &Path) -> Result<(u32, u32)> {
    let probe = dir.join(format!("{PROBE_FILE}.{}", std::process::id()));
    let _ = std::fs::remove_file(&probe);
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return Err(unusable(
                dir,
                "the filesystem does not support O_DIRECT (tmpfs and some FUSE filesystems don't); \
                 put the disk on a block-device filesystem such as XFS or ext4, or set \
                 `cache = \"buffered\"` for development only",
            ))
        }
        Err(e) => return Err(unusable(dir, format!("can't create files here: {e}"))),
    };
    let result = (|| {
        let (off, mem) = dio_align(&probe)?;
        if off == 0 && mem == 0 {
            tracing::debug!(
                "{}: filesystem does not report STATX_DIOALIGN; trying an aligned write",
                dir.display()
            );
        } else if off == 0
            || !(ALIGN as u32).is_multiple_of(off)
            || mem == 0
            || !(ALIGN as u32).is_multiple_of(mem)
        {
            return Err(unusable(
                dir,
                format!("O_DIRECT alignment (offset {off}, memory {mem}) does not divide {ALIGN}"),
            ));
        }
        let mut buf = AlignedBuf::new(ALIGN);
        buf.extend_from(&[0x5a; ALIGN]);
        // SAFETY: buf is 4096-aligned and 4096 long, as O_DIRECT wants.
        f.write_all(&buf).map_err(|e| unusable(dir, format!("aligned O_DIRECT write failed: {e}")))?;
        Ok((off, mem))
    })();
    let mut check = AlignedBuf::new(ALIGN);
    let read_back =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&probe).and_then(|mut r| {
            check.set_len(ALIGN);
            r.read_exact(check.as_mut_slice())
        });
    // Closed before the unlink: FUSE and NFS keep a file deleted while open under another
    // name (.fuse_hidden*, .nfs*) until it is closed.
    drop(f);
    let _ = std::fs::remove_file(&probe);
    let aligned = result?;
    read_back.map_err(|e| unusable(dir, format!("aligned O_DIRECT read failed: {e}")))?;
    if check.iter().any(|&b| b != 0x5a) {
        return Err(unusable(dir, "O_DIRECT read returned other bytes than were written"));
    }
    Ok(aligned)
}

fn now_unix_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Checks a configured disk and labels it on first use (see the module documentation).
pub fn open_disk(spec: &DiskSpec, node_id: &str) -> Result<Disk> {
    let path = &spec.path;
    if node_id.is_empty() || node_id.len() > NODE_ID_MAX_BYTES {
        return Err(unusable(path, format!("node id must be 1..={NODE_ID_MAX_BYTES} bytes")));
    }
    let meta =
        std::fs::metadata(path).map_err(|e| unusable(path, format!("can't open the directory: {e}")))?;
    if !meta.is_dir() {
        return Err(unusable(path, "not a directory"));
    }
    // An unlabelled directory is checked before anything is written into it (the lock file
    // included): an unmounted mount point or another program's directory is refused as is.
    // A foreign disk is refused before too.
    if let Some(bytes) = read_label_or_check_fresh(spec)? {
        check_label(&bytes, spec, node_id)?;
    }
    // Then the disk becomes this process's, before its label, placement or blobs are read: a
    // second process on the same disk is refused here (lock.rs).
    let lock = Arc::new(DiskLock::exclusive(path)?);
    // Read again under the lock: a process that held it a moment ago may have labelled it.
    // The label is read, or a fresh disk's directory checked, before the direct-I/O probe
    // writes its file: on FUSE a file deleted just after its close can still be listed for a
    // moment (the close reaches the filesystem after the unlink), which made a fresh disk look
    // used (CI).
    let found = read_label_or_check_fresh(spec)?;
    remove_dead_probes(path);
    let (dio_offset_align, dio_mem_align) = match spec.cache {
        CacheMode::Direct => probe_direct_io(path)?,
        CacheMode::Buffered => {
            tracing::warn!("disk {}: buffered I/O (development only): page cache in use", path.display());
            (0, 0)
        }
    };
    match found {
        Some(bytes) => {
            let label = check_label(&bytes, spec, node_id)?;
            if label.tier != spec.tier {
                tracing::warn!(
                    "disk {}: labelled {}, configured {}; using the configured tier",
                    path.display(),
                    label.tier,
                    spec.tier
                );
            }
            Ok(Disk { spec: spec.clone(), label, labelled_now: false, dio_offset_align, dio_mem_align, lock })
        }
        None => {
            let label = Label {
                disk_id: spec.id,
                tier: spec.tier,
                node_id: node_id.to_string(),
                created_unix_s: now_unix_s(),
            };
            write_label(path, &label)?;
            tracing::info!("disk {}: labelled as disk {} of node {node_id}", path.display(), spec.id);
            Ok(Disk { spec: spec.clone(), label, labelled_now: true, dio_offset_align, dio_mem_align, lock })
        }
    }
}

/// The label, if it is valid and names this node and this disk.
fn check_label(bytes: &[u8], spec: &DiskSpec, node_id: &str) -> Result<Label> {
    let path = &spec.path;
    let label = Label::decode(bytes)
        .map_err(|e| unusable(path, format!("{LABEL_FILE} is damaged or not podstore's: {e}")))?;
    if label.node_id != node_id {
        return Err(unusable(
            path,
            format!("disk belongs to node {:?}, not {node_id:?} (foreign disk)", label.node_id),
        ));
    }
    if label.disk_id != spec.id {
        return Err(unusable(
            path,
            format!("label says disk id {}, the configuration says {}", label.disk_id, spec.id),
        ));
    }
    Ok(label)
}

/// Removes probe files left by processes that died mid-probe (their PID is not running, or
/// the name has none, as before 2026-12): they would otherwise stay forever.
fn remove_dead_probes(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PROBE_FILE)) else { continue };
        let alive = rest
            .strip_prefix('.')
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The label's bytes; or, where there is none, `None` once the directory passed the checks of
/// a fresh disk.
fn read_label_or_check_fresh(spec: &DiskSpec) -> Result<Option<Vec<u8>>> {
    let label_path = spec.path.join(LABEL_FILE);
    match std::fs::read(&label_path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => check_fresh(spec).map(|()| None),
        Err(e) => Err(unusable(&spec.path, format!("can't read {LABEL_FILE}: {e}"))),
    }
}

/// A disk without a label may be labelled only if its directory is empty (a mounted, fresh
/// filesystem) and, when required, a mount point. What a first start stopped mid-way leaves
/// (the probe's file, the label's temporary file) is not foreign: the next start goes on.
fn check_fresh(spec: &DiskSpec) -> Result<()> {
    let path = &spec.path;
    let rd = std::fs::read_dir(path).map_err(|e| unusable(path, format!("can't list: {e}")))?;
    // The label's temporary file, the lock, and what `podstore-tune measure` leaves (the
    // profile, and its test file if it was stopped): measuring a disk before its first start
    // must not get it refused.
    let ours = [
        format!("{LABEL_FILE}.tmp"),
        LOCK_FILE.to_string(),
        crate::label::PROFILE_FILE.to_string(),
        MEASURE_FILE.to_string(),
    ];
    let foreign: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| String::from_utf8_lossy(e.file_name().as_bytes()).into_owned())
        .filter(|n| n != "lost+found" && !ours.contains(n) && !n.starts_with(PROBE_FILE))
        .take(3)
        .collect();
    if !foreign.is_empty() {
        return Err(unusable(
            path,
            format!(
                "no {LABEL_FILE} but the directory is not empty ({}…); refusing to use it \
                 (is the right filesystem mounted?)",
                foreign.join(", ")
            ),
        ));
    }
    if spec.require_mount_point && !is_mount_point(path)? {
        return Err(unusable(
            path,
            "not a mount point: an unmounted disk must not be filled silently; mount the \
             disk, or set `require_mount_point = false` for a directory-backed disk",
        ));
    }
    Ok(())
}

/// Writes the label durably: a temporary file, fsync, rename, fsync of the directory.
fn write_label(dir: &Path, label: &Label) -> Result<()> {
    let tmp = dir.join(format!("{LABEL_FILE}.tmp"));
    let final_path = dir.join(LABEL_FILE);
    let bytes = label.encode();
    debug_assert_eq!(bytes.len(), LABEL_SIZE);
    let io = |e: std::io::Error| Error::io(crate::Op::Write, &tmp, 0, e);
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &final_path).map_err(|e| Error::io(crate::Op::Rename, &tmp, 0, e))?;
    crate::fd::sync_dir_blocking(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &Path) -> DiskSpec {
        DiskSpec {
            id: 3,
            path: path.to_path_buf(),
            tier: Tier::Capacity,
            require_mount_point: false,
            cache: CacheMode::Direct,
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("podstore-disk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create temp dir");
        d
    }

    #[test]
    fn labels_on_first_use_and_refuses_foreign_or_unlabelled() {
        let d = tempdir("label");
        if let Err(e) = probe_direct_io(&d) {
            panic!(
                "the temp directory's filesystem has no O_DIRECT ({e}): set TMPDIR to a disk's filesystem"
            );
        }
        let disk = open_disk(&spec(&d), "node-a").expect("a fresh directory is labelled");
        assert!(disk.labelled_now);
        let held = open_disk(&spec(&d), "node-a").expect_err("a disk held is refused");
        assert!(matches!(held, Error::Locked { .. }), "{held}");
        drop(disk);
        let again = open_disk(&spec(&d), "node-a").expect("own label accepted");
        assert!(!again.labelled_now);
        drop(again);
        let foreign = open_disk(&spec(&d), "node-b").expect_err("foreign node refused");
        assert!(foreign.to_string().contains("foreign"), "{foreign}");
        let mut other = spec(&d);
        other.id = 4;
        assert!(open_disk(&other, "node-a").is_err());

        // A first start stopped after the probe created its file, or while the label was
        // being written: the next start labels the disk.
        let h = tempdir("halfway");
        std::fs::write(h.join(PROBE_FILE), b"x").expect("write");
        std::fs::write(h.join(crate::label::PROFILE_FILE), b"queue_depth = 8").expect("write");
        let dead_probe = h.join(format!("{PROBE_FILE}.0"));
        std::fs::write(&dead_probe, b"x").expect("write");
        std::fs::write(h.join(format!("{LABEL_FILE}.tmp")), b"partial").expect("write");
        let halfway = open_disk(&spec(&h), "node-a").expect("a half-done first start goes on");
        assert!(halfway.labelled_now && halfway.label.node_id == "node-a");
        assert!(!h.join(PROBE_FILE).exists(), "the probe's file is removed");
        assert!(!dead_probe.exists(), "a dead process's probe file is removed");

        let e = tempdir("unlabelled");
        std::fs::write(e.join("somefile"), b"x").expect("write");
        let err = open_disk(&spec(&e), "node-a").expect_err("unlabelled non-empty refused");
        assert!(err.to_string().contains("not empty"), "{err}");

        let m = tempdir("mountpoint");
        let mut s = spec(&m);
        s.require_mount_point = true;
        let err = open_disk(&s, "node-a").expect_err("non-mount point refused");
        assert!(err.to_string().contains("mount point"), "{err}");
        for p in [d, h, e, m] {
            let _ = std::fs::remove_dir_all(p);
        }
    }

    #[test]
    fn tmpfs_is_refused_with_a_clear_reason() {
        let shm = Path::new("/dev/shm");
        assert!(shm.is_dir(), "no /dev/shm: this test needs a tmpfs there");
        let d = shm.join(format!("podstore-tmpfs-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("mkdir");
        let r = probe_direct_io(&d);
        let _ = std::fs::remove_dir_all(&d);
        match r {
            Err(e) => assert!(e.to_string().contains("O_DIRECT"), "{e}"),
            Ok(_) => eprintln!("note: this kernel's tmpfs accepts O_DIRECT"),
        }
    }
}
