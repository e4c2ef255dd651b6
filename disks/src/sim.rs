//! The simulated disk: an in-memory `Io` with a written fault model, for seeded tests.
//!
//! Fault model (what a real disk and filesystem may do, and what podstore must survive):
//! - **Lost unsynced writes.** A write is durable only after `sync_data` of its file; a name
//!   (create, remove, rename) only after `sync_dir` of its directory. At a crash
//!   ([`SimDisk::crash`]) every write since the file's last sync persists only in part: a prefix
//!   of its sectors, chosen at random (from none to all), newest writes undone first. Size
//!   changes since the last sync survive or not at random. Names revert to the last `sync_dir`.
//! - **Torn writes.** A write that fails with EIO may have persisted any prefix of its sectors.
//! - **EIO** on read, write and fdatasync, each with its own probability.
//! - **Misdirected writes.** A write lands, whole, at another sector-aligned offset of the same
//!   file and reports success.
//! - **Bit flips.** [`SimDisk::flip_random_bit`] corrupts a stored byte (silent media damage);
//!   with `read_flip_ppm` a read returns a flipped bit without the medium changing.
//! - **Latency.** Each operation yields to the executor a random number of times, so concurrent
//!   operations interleave differently for different seeds (and identically for the same one).
//!
//! Everything random comes from one seeded generator: the same seed and the same sequence of
//! calls give the same faults. After a crash, handles opened before it fail with
//! [`Error::Crashed`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::{is_aligned, AlignedBuf, Error, Io, Op, OpenMode, Result};

/// Sector size of the simulated disk: the unit of tearing and misdirection.
pub const SIM_SECTOR: usize = 512;

/// Probabilities of faults, in parts per million of operations.
#[derive(Debug, Clone, Default)]
pub struct SimFaults {
    pub read_eio_ppm: u32,
    pub write_eio_ppm: u32,
    pub sync_eio_ppm: u32,
    pub misdirect_write_ppm: u32,
    pub read_flip_ppm: u32,
    /// Most executor yields per operation.
    pub latency_yields_max: u32,
}

/// How many faults were injected, for reports.
#[derive(Debug, Clone, Default)]
pub struct SimStats {
    pub ops: u64,
    pub read_eio: u64,
    pub write_eio: u64,
    pub sync_eio: u64,
    pub misdirected_writes: u64,
    pub read_flips: u64,
    pub bit_flips: u64,
    pub crashes: u64,
    pub writes_torn_at_crash: u64,
    pub writes_lost_at_crash: u64,
}

enum Pending {
    /// A write at `offset`; `old` holds the bytes it replaced and `old_len` the file length.
    Write { offset: u64, old: Vec<u8>, old_len: usize },
    /// A size change from `old_len`, with the bytes cut off if it shrank the file.
    Resize { old_len: usize, new_len: usize, cut: Vec<u8> },
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    pending: Vec<Pending>,
}

struct SimState {
    rng: fastrand::Rng,
    faults: SimFaults,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    epoch: u64,
    crashed: bool,
    crash_at_op: Option<u64>,
    stats: SimStats,
    /// Regions whose reads always fail (bad sectors): path, start, end.
    bad_regions: Vec<(PathBuf, u64, u64)>,
}

/// A handle on a simulated file.
#[derive(Debug, Clone)]
pub struct SimFile {
    inode: u64,
    epoch: u64,
    path: Rc<PathBuf>,
}

/// An in-memory disk (a whole namespace of files) with faults. Clones share the disk.
#[derive(Clone)]
pub struct SimDisk {
    s: Rc<RefCell<SimState>>,
}

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDisk").field("stats", &self.s.borrow().stats).finish()
    }
}

fn chance(rng: &mut fastrand::Rng, ppm: u32) -> bool {
    ppm > 0 && rng.u32(0..1_000_000) < ppm
}

impl SimDisk {
    /// An empty disk whose faults follow `faults`, all randomness from `seed`.
    pub fn new(seed: u64, faults: SimFaults) -> SimDisk {
        SimDisk {
            s: Rc::new(RefCell::new(SimState {
                rng: fastrand::Rng::with_seed(seed),
                faults,
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                inodes: HashMap::new(),
                next_inode: 1,
                epoch: 0,
                crashed: false,
                crash_at_op: None,
                stats: SimStats::default(),
                bad_regions: Vec::new(),
            })),
        }
    }

    /// Every read of `path` that overlaps `start..end` fails with EIO from now on (a bad
    /// sector), until [`SimDisk::heal_regions`].
    pub fn fail_region(&self, path: &Path, start: u64, end: u64) {
        self.s.borrow_mut().bad_regions.push((path.to_path_buf(), start, end));
    }

    /// Bad regions read again.
    pub fn heal_regions(&self) {
        self.s.borrow_mut().bad_regions.clear();
    }

    /// Replaces the fault probabilities (for example none while checking after a crash).
    pub fn set_faults(&self, faults: SimFaults) {
        self.s.borrow_mut().faults = faults;
    }

    /// The machine crashes when the operation count reaches `op` (None: never): that operation
    /// and every later one fail with [`Error::Crashed`] until [`SimDisk::crash`] is called.
    pub fn crash_at_op(&self, op: Option<u64>) {
        self.s.borrow_mut().crash_at_op = op;
    }

    /// Whether the crash point has been reached.
    pub fn has_crashed(&self) -> bool {
        self.s.borrow().crashed
    }

    /// Operations so far.
    pub fn ops(&self) -> u64 {
        self.s.borrow().stats.ops
    }

    /// Injected-fault counters.
    pub fn stats(&self) -> SimStats {
        self.s.borrow().stats.clone()
    }

    /// Power loss: applies the fault model to everything not yet durable and starts a new
    /// epoch (old handles fail). The disk can be used again afterwards.
    pub fn crash(&self) {
        let mut guard = self.s.borrow_mut();
        let s = &mut *guard;
        s.stats.crashes += 1;
        s.names = s.durable_names.clone();
        let live: std::collections::HashSet<u64> = s.names.values().copied().collect();
        s.inodes.retain(|ino, _| live.contains(ino));
        let mut inos: Vec<u64> = s.inodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let inode = s.inodes.get_mut(&ino).expect("listed");
            while let Some(p) = inode.pending.pop() {
                match p {
                    Pending::Write { offset, old, old_len } => {
                        let sectors = old.len().div_ceil(SIM_SECTOR);
                        let kept = s.rng.usize(0..=sectors);
                        if kept == sectors {
                            continue;
                        }
                        if kept == 0 {
                            s.stats.writes_lost_at_crash += 1;
                        } else {
                            s.stats.writes_torn_at_crash += 1;
                        }
                        let from = kept * SIM_SECTOR;
                        let start = offset as usize + from;
                        let end = offset as usize + old.len();
                        inode.data[start..end].copy_from_slice(&old[from..]);
                        // A write that extended the file leaves the length persisted only as far
                        // as its kept sectors reach.
                        if old_len < inode.data.len() && end >= inode.data.len() {
                            let keep_len = old_len.max(start);
                            inode.data.truncate(keep_len);
                        }
                    }
                    Pending::Resize { old_len, new_len, cut } => {
                        if s.rng.bool() {
                            continue; // the size change persisted
                        }
                        let cur = inode.data.len();
                        if new_len > old_len {
                            inode.data.truncate(old_len.min(cur));
                        } else if cur < old_len {
                            let from = cur.saturating_sub(new_len).min(cut.len());
                            inode.data.extend_from_slice(&cut[from..]);
                        }
                    }
                }
            }
        }
        s.epoch += 1;
        s.crashed = false;
        s.crash_at_op = None;
    }

    /// Flips one random bit of one random non-empty file whose path starts with `prefix`
    /// (silent media corruption, durable). Returns the file and byte offset, if any file matched.
    pub fn flip_random_bit(&self, prefix: &Path) -> Option<(PathBuf, u64)> {
        let mut guard = self.s.borrow_mut();
        let s = &mut *guard;
        let candidates: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, ino)| p.starts_with(prefix) && s.inodes.get(ino).is_some_and(|i| !i.data.is_empty()))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let (path, ino) = candidates[s.rng.usize(0..candidates.len())].clone();
        let inode = s.inodes.get_mut(&ino).expect("candidate");
        let at = s.rng.usize(0..inode.data.len());
        inode.data[at] ^= 1 << s.rng.u32(0..8);
        s.stats.bit_flips += 1;
        Some((path, at as u64))
    }

    /// Flips bit `bit` of the byte at `offset` of `path` (targeted silent corruption, durable).
    /// False if there is no such byte.
    pub fn flip_bit_at(&self, path: &Path, offset: u64, bit: u8) -> bool {
        let mut guard = self.s.borrow_mut();
        let s = &mut *guard;
        let Some(ino) = s.names.get(path).copied() else { return false };
        match s.inodes.get_mut(&ino).and_then(|i| i.data.get_mut(offset as usize)) {
            Some(b) => {
                *b ^= 1 << (bit % 8);
                s.stats.bit_flips += 1;
                true
            }
            None => false,
        }
    }

    /// Writes `bytes` at `offset` of `path` durably, as if it had always been there (a test
    /// stages what a power loss left, e.g. a record's first block lost and the rest kept).
    /// False if the file is missing or shorter than `offset + bytes.len()`.
    pub fn overwrite_at(&self, path: &Path, offset: u64, bytes: &[u8]) -> bool {
        let mut guard = self.s.borrow_mut();
        let s = &mut *guard;
        let Some(ino) = s.names.get(path).copied() else { return false };
        let start = offset as usize;
        match s.inodes.get_mut(&ino).and_then(|i| i.data.get_mut(start..start + bytes.len())) {
            Some(d) => {
                d.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// Current content of a file (test inspection).
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.s.borrow();
        let ino = s.names.get(path)?;
        Some(s.inodes.get(ino)?.data.clone())
    }

    /// Names of every file on the disk.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.s.borrow().names.keys().cloned().collect()
    }

    /// Counts an operation; fails if the machine has crashed or reaches its crash point now.
    fn begin(&self, file: Option<&SimFile>) -> Result<()> {
        let mut s = self.s.borrow_mut();
        if s.crashed {
            return Err(Error::Crashed);
        }
        s.stats.ops += 1;
        if s.crash_at_op.is_some_and(|at| s.stats.ops >= at) {
            s.crashed = true;
            return Err(Error::Crashed);
        }
        if let Some(f) = file {
            if f.epoch != s.epoch {
                return Err(Error::Crashed);
            }
        }
        Ok(())
    }

    async fn latency(&self) {
        let n = {
            let mut s = self.s.borrow_mut();
            let max = s.faults.latency_yields_max;
            if max == 0 {
                0
            } else {
                s.rng.u32(0..=max)
            }
        };
        for _ in 0..n {
            YieldNow(false).await;
        }
    }

    fn eio(op: Op, path: &Path, offset: u64) -> Error {
        Error::io(op, path, offset, std::io::Error::from_raw_os_error(libc::EIO))
    }

    fn write_bytes(inode: &mut Inode, offset: usize, data: &[u8]) {
        let end = offset + data.len();
        let old_len = inode.data.len();
        if inode.data.len() < end {
            inode.data.resize(end, 0);
        }
        let old = inode.data[offset..end].to_vec();
        inode.data[offset..end].copy_from_slice(data);
        inode.pending.push(Pending::Write { offset: offset as u64, old, old_len });
    }
}

/// Yields once to the executor.
struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

fn parent_of(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new(""))
}

impl Io for SimDisk {
    type File = SimFile;

    async fn open(&self, path: &Path, mode: OpenMode) -> Result<SimFile> {
        self.latency().await;
        self.begin(None)?;
        let mut s = self.s.borrow_mut();
        let epoch = s.epoch;
        let existing = s.names.get(path).copied();
        let inode = match (mode, existing) {
            (OpenMode::CreateNew, Some(_)) => {
                return Err(Error::io(Op::Open, path, 0, std::io::Error::from_raw_os_error(libc::EEXIST)))
            }
            (OpenMode::CreateNew, None) => {
                let ino = s.next_inode;
                s.next_inode += 1;
                s.inodes.insert(ino, Inode::default());
                s.names.insert(path.to_path_buf(), ino);
                ino
            }
            (_, Some(ino)) => ino,
            (_, None) => {
                return Err(Error::io(Op::Open, path, 0, std::io::Error::from_raw_os_error(libc::ENOENT)))
            }
        };
        Ok(SimFile { inode, epoch, path: Rc::new(path.to_path_buf()) })
    }

    async fn allocate(&self, file: &SimFile, len_bytes: u64) -> Result<()> {
        self.latency().await;
        self.begin(Some(file))?;
        let mut s = self.s.borrow_mut();
        let inode = s.inodes.get_mut(&file.inode).ok_or(Error::Crashed)?;
        let len = len_bytes as usize;
        if inode.data.len() < len {
            let old_len = inode.data.len();
            inode.data.resize(len, 0);
            inode.pending.push(Pending::Resize { old_len, new_len: len, cut: Vec::new() });
        }
        Ok(())
    }

    async fn read_at(&self, file: &SimFile, offset: u64, mut buf: AlignedBuf) -> (Result<()>, AlignedBuf) {
        assert!(is_aligned(offset) && is_aligned(buf.len() as u64), "unaligned read {offset}+{}", buf.len());
        self.latency().await;
        if let Err(e) = self.begin(Some(file)) {
            return (Err(e), buf);
        }
        let mut guard = self.s.borrow_mut();
        let s = &mut *guard;
        let end = offset + buf.len() as u64;
        let bad = s.bad_regions.iter().any(|(p, a, b)| **p == **file.path && offset < *b && *a < end);
        if bad || chance(&mut s.rng, s.faults.read_eio_ppm) {
            s.stats.read_eio += 1;
            buf.set_len(0);
            return (Err(Self::eio(Op::Read, &file.path, offset)), buf);
        }
        let Some(inode) = s.inodes.get(&file.inode) else {
            return (Err(Error::Crashed), buf);
        };
        let start = (offset as usize).min(inode.data.len());
        let n = buf.len().min(inode.data.len() - start);
        buf.spare_all()[..n].copy_from_slice(&inode.data[start..start + n]);
        buf.set_len(n);
        if n > 0 && chance(&mut s.rng, s.faults.read_flip_ppm) {
            let at = s.rng.usize(0..n);
            buf.as_mut_slice()[at] ^= 1 << s.rng.u32(0..8);
            s.stats.read_flips += 1;
        }
        (Ok(()), buf)
    }

    async fn write_at(&self, file: &SimFile, offset: u64, buf: AlignedBuf) -> (Result<()>, AlignedBuf) {
        assert!(is_aligned(offset) && is_aligned(buf.len() as u64), "unaligned write {offset}+{}", buf.len());
        self.latency().await;
        if let Err(e) = self.begin(Some(file)) {
            return (Err(e), buf);
        }
        let mut guard = self.s.borrow_mut();
        let s = &mut *guard;
        let Some(inode) = s.inodes.get_mut(&file.inode) else {
            return (Err(Error::Crashed), buf);
        };
        if chance(&mut s.rng, s.faults.write_eio_ppm) {
            // A failed write may still have persisted a prefix of its sectors.
            s.stats.write_eio += 1;
            let sectors = buf.len() / SIM_SECTOR;
            let kept = s.rng.usize(0..=sectors) * SIM_SECTOR;
            Self::write_bytes(inode, offset as usize, &buf[..kept]);
            return (Err(Self::eio(Op::Write, &file.path, offset)), buf);
        }
        let mut at = offset as usize;
        if chance(&mut s.rng, s.faults.misdirect_write_ppm) {
            let span = inode.data.len().max(at + buf.len()) / SIM_SECTOR;
            at = s.rng.usize(0..=span.saturating_sub(buf.len() / SIM_SECTOR)) * SIM_SECTOR;
            s.stats.misdirected_writes += 1;
        }
        Self::write_bytes(inode, at, &buf);
        (Ok(()), buf)
    }

    async fn sync_data(&self, file: &SimFile) -> Result<()> {
        self.latency().await;
        self.begin(Some(file))?;
        let mut guard = self.s.borrow_mut();
        let s = &mut *guard;
        if chance(&mut s.rng, s.faults.sync_eio_ppm) {
            s.stats.sync_eio += 1;
            return Err(Self::eio(Op::Sync, &file.path, 0));
        }
        let inode = s.inodes.get_mut(&file.inode).ok_or(Error::Crashed)?;
        inode.pending.clear();
        Ok(())
    }

    async fn truncate(&self, file: &SimFile, len_bytes: u64) -> Result<()> {
        self.latency().await;
        self.begin(Some(file))?;
        let mut s = self.s.borrow_mut();
        let inode = s.inodes.get_mut(&file.inode).ok_or(Error::Crashed)?;
        let len = len_bytes as usize;
        let old_len = inode.data.len();
        let cut = if len < old_len { inode.data[len..].to_vec() } else { Vec::new() };
        inode.data.resize(len, 0);
        inode.pending.push(Pending::Resize { old_len, new_len: len, cut });
        Ok(())
    }

    async fn file_size(&self, file: &SimFile) -> Result<u64> {
        self.begin(Some(file))?;
        let s = self.s.borrow();
        Ok(s.inodes.get(&file.inode).ok_or(Error::Crashed)?.data.len() as u64)
    }

    async fn remove(&self, path: &Path) -> Result<()> {
        self.latency().await;
        self.begin(None)?;
        let mut s = self.s.borrow_mut();
        if s.names.remove(path).is_none() {
            return Err(Error::io(Op::Remove, path, 0, std::io::Error::from_raw_os_error(libc::ENOENT)));
        }
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.latency().await;
        self.begin(None)?;
        let mut s = self.s.borrow_mut();
        let Some(ino) = s.names.remove(from) else {
            return Err(Error::io(Op::Rename, from, 0, std::io::Error::from_raw_os_error(libc::ENOENT)));
        };
        s.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.latency().await;
        self.begin(None)?;
        let mut guard = self.s.borrow_mut();
        let s = &mut *guard;
        s.durable_names.retain(|p, _| parent_of(p) != dir);
        for (p, ino) in s.names.iter() {
            if parent_of(p) == dir {
                s.durable_names.insert(p.clone(), *ino);
            }
        }
        Ok(())
    }

    async fn list_dir(&self, dir: &Path) -> Result<Vec<String>> {
        self.begin(None)?;
        let s = self.s.borrow();
        Ok(s.names
            .keys()
            .filter(|p| parent_of(p) == dir)
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
            .collect())
    }
}
