//! One shard: everything podstore keeps on one disk, and the operations on it.
//!
//! A shard owns its blob files, its index and its checkpoints, and runs on one core (nothing
//! here is `Send`). Writes reserve space at the tail of the open blob, stream the record into
//! it through aligned buffers, wait for a group fdatasync, and only then change the index and
//! answer. Writes to one key are serialized (by fingerprint), so a key's records are committed
//! in sequence order. Reads are one disk read for records up to `single_read_max_bytes`, and
//! every byte is checked against its CRC before it is returned. A failed write or fdatasync
//! fences the shard read-only; it is never retried and trusted.
//!
//! Recovery (opening a shard) lives in `recovery.rs`; the record format in `record.rs`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use podstore_disks::{AlignedBuf, Io, OpenMode};
use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::attrs::{Attrs, DigestKind};
use crate::backlog::{Backlog, BacklogEntry, BacklogStats};
use crate::blob::BlobFile;
use crate::checkpoint::{Checkpoint, CkptBlob, QuarantineReason, Quarantined};
use crate::files::{blob_name, ckpt_name, parse_ckpt_name};
use crate::group_commit::Synced;
use crate::index::{fingerprint, Index, Loc, Slot, BLOB_ID_MAX, BLOB_SIZE_MAX_BYTES};
use crate::names::Name;
use crate::record::{
    self, corrupt, verify_chunks, DataSums, Footer, FormatError, Header, BLOCK, CHUNK_BYTES,
    CONTENT_TYPE_MAX_BYTES, FLAG_MD5, FLAG_TOMBSTONE, FLAG_VOID, KEY_MAX_BYTES,
};
use crate::scan::HEADER_READ_BYTES;
use crate::{Error, Result, Version};

mod batch;
pub mod compact;
mod names;
mod persist;
mod read;
mod rebalance;
mod recovery;
mod replica;
pub mod scrub;
mod stats;
mod write;
mod zero_ahead;

pub use batch::{BatchItem, BatchOutcome};
pub use names::NamesFootprint;
pub(crate) use read::Opened;
pub use read::{Chunk, ObjectMeta, ObjectReader, ReadCheck};
pub use recovery::RecoveryReport;
pub use replica::CopyItem;
pub(crate) use stats::Counters;
pub use stats::ShardStats;
pub(crate) use write::WriterStart;
pub use write::{CopyCheck, DeleteDone, PutDone, PutWriter, Stamp};

/// Whether an error is the device failing a read (not a simulated crash).
pub(crate) fn read_failed(e: &Error) -> bool {
    matches!(e, Error::Disk { .. }) && !e.is_crash()
}

/// Limits and sizes of one shard.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Size of a regular blob file.
    pub blob_size_bytes: u64,
    /// Largest object.
    pub object_size_max_bytes: u64,
    /// Most bytes of blob files on the shard (the disk's free space also limits it).
    pub shard_size_max_bytes: u64,
    /// Records up to this length are read with one read.
    pub single_read_max_bytes: u64,
    /// Buffer of a streaming write (a multiple of 4096).
    pub write_buf_bytes: usize,
    /// Most writes (PUT or DELETE) in progress on the shard; more wait.
    pub writes_in_flight_max: usize,
    /// Most reads of object data in flight on the disk at once; more wait their turn here
    /// rather than in the device's queue. The node sets it from the disk's measured profile
    /// (`podstore-tune measure`: the depth past which random reads stop gaining).
    pub reads_in_flight_max: usize,
    /// Read window of recovery scans (a multiple of 4096).
    pub scan_window_bytes: usize,
    /// Room at the end of the open blob that only tombstones may use, so deletes work on a
    /// full shard.
    pub tombstone_reserve_bytes: u64,
    /// Open for inspection only: recovery changes nothing on disk (no truncation, no
    /// checkpoint, no clean-up) and the shard refuses writes.
    pub read_only: bool,
    /// Applied to every key fingerprint. Testing only (it forces fingerprint collisions to
    /// exercise the overflow path); never change it for an existing shard.
    pub fingerprint_mask: u64,
    /// A checkpoint is due after this many records since the last one ...
    pub checkpoint_every_records: u64,
    /// ... or this many bytes of records.
    pub checkpoint_every_bytes: u64,
    /// The node's clock: stamps local writes, and observes every version found on the disk.
    pub clock: std::sync::Arc<crate::Clock>,
    /// Counts, node-wide, the index entries `forget` removed, at the moment each goes (a
    /// read that found a key nowhere while it changed looks again: the key may have moved).
    pub forgets_total: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// The replica set's other appliances, by name: each has a backlog of this appliance's
    /// writes it has not confirmed.
    pub peers: Vec<String>,
    /// Most entries of one peer's backlog on one shard; past it the backlog is dropped and the
    /// peer needs anti-entropy.
    pub backlog_records_max: u64,
    /// A tombstone younger than this (by its version's clock) is kept by compaction: longer
    /// than any outage of a peer the replica set tolerates, so an old copy arriving late never
    /// resurrects a deleted object.
    pub tombstone_horizon_ms: u64,
    /// Most blob file descriptors the shard keeps open; past it those of the least recently
    /// used sealed blobs are closed, and opened again when next read. A pod of 60 disks of
    /// 20 TB holds about 1.2 million 1 GiB blobs, more than a process may keep open.
    pub open_blob_files_max: usize,
    /// Most bytes reserved for client writes whose bodies have not arrived yet (each write's
    /// record length less what it has written); a write beyond it is refused with
    /// [`Error::Busy`], so clients that start writes and never send the bodies can't hold the
    /// disk's space.
    pub unfilled_bytes_max: u64,
    /// The node's budget for write buffers (shared by every shard): past it a write gets one
    /// small buffer (see [`crate::write_memory`]). None: every write gets two full buffers.
    pub write_memory: Option<std::sync::Arc<crate::write_memory::WriteMemory>>,
    /// How far ahead of the open blob's tail [`Shard::zero_ahead`] writes zeros (0: never). A
    /// write into space the filesystem only allocated (`fallocate`) makes the fdatasync after
    /// it commit an extent conversion to the filesystem's journal, about three times the cost
    /// of one over written blocks; small writes are bound by that sync. A multiple of 16 KiB.
    pub zero_ahead_bytes: u64,
    /// The name index's memtable is written as a run past this much memory (see
    /// [`crate::names`]).
    pub names_memtable_bytes: u64,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            blob_size_bytes: 1 << 30,
            object_size_max_bytes: 5 << 30,
            shard_size_max_bytes: u64::MAX,
            unfilled_bytes_max: u64::MAX,
            single_read_max_bytes: 2 << 20,
            write_buf_bytes: 1 << 20,
            writes_in_flight_max: 1024,
            reads_in_flight_max: 256,
            scan_window_bytes: 4 << 20,
            tombstone_reserve_bytes: 1 << 20,
            fingerprint_mask: u64::MAX,
            read_only: false,
            checkpoint_every_records: 1 << 20,
            checkpoint_every_bytes: 16 << 30,
            clock: std::sync::Arc::new(crate::Clock::default()),
            forgets_total: None,
            peers: Vec::new(),
            backlog_records_max: 10_000_000,
            tombstone_horizon_ms: 30 * 86_400_000,
            open_blob_files_max: 4096,
            write_memory: None,
            zero_ahead_bytes: 128 << 20,
            names_memtable_bytes: 4 << 20,
        }
    }
}

impl ShardConfig {
    /// Panics if the settings are inconsistent (asserted when a shard opens).
    pub fn check(&self) {
        assert!(self.blob_size_bytes.is_multiple_of(BLOCK) && self.blob_size_bytes >= 4 * BLOCK);
        assert!(self.blob_size_bytes <= BLOB_SIZE_MAX_BYTES);
        assert!(self.object_size_max_bytes < BLOB_SIZE_MAX_BYTES - 2 * BLOCK);
        assert!(
            self.write_buf_bytes.is_multiple_of(BLOCK as usize) && self.write_buf_bytes >= BLOCK as usize
        );
        assert!(
            self.scan_window_bytes.is_multiple_of(BLOCK as usize)
                && self.scan_window_bytes >= 2 * BLOCK as usize
        );
        assert!(self.zero_ahead_bytes.is_multiple_of(4 * BLOCK));
        assert!(self.writes_in_flight_max > 0);
        assert!(self.reads_in_flight_max > 0);
        assert!(self.open_blob_files_max >= 2);
        assert!(
            self.tombstone_reserve_bytes.is_multiple_of(BLOCK)
                && self.tombstone_reserve_bytes < self.blob_size_bytes / 2
        );
    }
}

/// One shard (one disk). Use through `Rc<Shard<I>>`.
#[derive(Debug)]
pub struct Shard<I: Io> {
    pub(crate) io: I,
    pub(crate) cfg: ShardConfig,
    pub(crate) dir: PathBuf,
    pub(crate) id: u32,
    pub(crate) index: RefCell<Index>,
    pub(crate) fenced: RefCell<Option<String>>,
    pub(crate) counters: RefCell<Counters>,
    /// Tags every record header this shard writes, and is checked on every one it reads
    /// (record_key.rs).
    pub(crate) record_key: crate::record_key::RecordKey,
    /// The shard's blob files: the table, the open one, descriptors cached, removals due.
    pub(crate) files: Files<I>,
    /// What writes share: the sequence, per-key locks, write slots, the reserve lock, space
    /// reserved and not yet written.
    pub(crate) writes: Writes,
    /// Permits for reads of object data (`reads_in_flight_max`), and the most ever held.
    pub(crate) reads: Reads,
    /// Records found damaged (quarantined), and the keys among them.
    pub(crate) damage: Damage,
    /// Replica bookkeeping: one backlog per peer in `cfg.peers`, and the bucket digests of the
    /// current keys (digest.rs), kept when the shard has peers.
    pub(crate) replica: Replica,
    /// Background work and checkpoints: compaction and scrub (control, progress, position),
    /// tombstone dropping, forgets, the checkpoint in progress.
    pub(crate) jobs: Jobs,
    /// Every key in byte order, for listings (names.rs); not ready when it was lost and the
    /// shard is open read-only (it is rebuilt from the blobs otherwise).
    pub(crate) names: crate::names::Names<I>,
    pub(crate) names_ready: Cell<bool>,
}

/// The shard's blob files: the table, the open one, descriptors cached, removals due.
#[derive(Debug)]
pub(crate) struct Files<I: Io> {
    pub(crate) blobs: RefCell<BTreeMap<u32, Rc<BlobFile<I>>>>,
    pub(crate) open_blob: Cell<Option<u32>>,
    pub(crate) next_blob_id: Cell<u32>,
    /// Blobs compaction removed from the table whose files are still to be removed.
    pub(crate) removals: RefCell<Vec<(u32, bool)>>,
    /// Blob descriptors cached (an overestimate between trims; see `trim_open_files`), and a
    /// counter of descriptor uses (the eviction order).
    pub(crate) open_files: Cell<usize>,
    pub(crate) file_uses: Cell<u64>,
}

/// What writes share: the sequence, per-key locks, write slots, the reserve lock, space
/// reserved and not yet written.
#[derive(Debug)]
pub(crate) struct Writes {
    pub(crate) next_seq: Cell<u64>,
    pub(crate) key_locks: RefCell<HashSet<u64>>,
    pub(crate) key_unlocked: Notify,
    pub(crate) write_slots: Arc<Semaphore>,
    pub(crate) reserve_lock: tokio::sync::Mutex<()>,
    /// Bytes reserved by client writes and not written yet (`ShardConfig::unfilled_bytes_max`).
    pub(crate) unfilled: Cell<u64>,
}

/// Permits for reads of object data (`reads_in_flight_max`), and the most ever held.
#[derive(Debug)]
pub(crate) struct Reads {
    pub(crate) read_slots: Semaphore,
    pub(crate) reads_peak: Cell<usize>,
}

/// Records found damaged (quarantined), and the keys among them.
#[derive(Debug)]
pub(crate) struct Damage {
    pub(crate) quarantine: RefCell<Vec<Quarantined>>,
    pub(crate) quarantined_keys: RefCell<HashMap<Box<[u8]>, u64>>,
}

/// Replica bookkeeping: one backlog per peer in `cfg.peers`, and the bucket digests of the
/// current keys (digest.rs), kept when the shard has peers.
#[derive(Debug)]
pub(crate) struct Replica {
    /// One per peer in `cfg.peers`.
    pub(crate) backlogs: RefCell<Vec<Backlog>>,
    /// Bucket digests of the current keys (digest.rs), kept when the shard has peers.
    pub(crate) digests: RefCell<Vec<u64>>,
}

/// Background work and checkpoints: compaction and scrub (control, progress, position),
/// tombstone dropping, forgets, the checkpoint in progress.
#[derive(Debug)]
pub(crate) struct Jobs {
    pub(crate) checkpointing: Cell<bool>,
    /// Woken when a checkpoint ends (compaction waits for one that no longer names a blob).
    pub(crate) checkpoint_done: Notify,
    /// Compaction (compact.rs): its control and progress.
    pub(crate) compact_ctl: crate::budget::JobCtl,
    pub(crate) compact_stats: RefCell<compact::CompactStats>,
    /// Scrub (scrub.rs): its control, progress and persisted position.
    pub(crate) scrub_ctl: crate::budget::JobCtl,
    pub(crate) scrub_stats: RefCell<scrub::ScrubStats>,
    pub(crate) scrub_done: Cell<u64>,
    /// Whether compaction may drop tombstones past the horizon: not while another disk of the
    /// node may hold an older copy of a key (a tombstone here shadows it; see `set_tombstone_drop`).
    pub(crate) tombstone_drop: Cell<bool>,
    /// Calls of `forget` so far (a reader looking for a key on several disks looks again when
    /// a move finished meanwhile).
    pub(crate) forgets: Cell<u64>,
}

/// A key's previous state, when known: (version, tombstone).
pub(crate) type Held = Option<(Version, bool)>;

/// Checks a key and content type against the format's limits.
pub fn validate(key: &[u8], content_type: &str) -> Result<()> {
    if key.is_empty() || key.len() > KEY_MAX_BYTES {
        return Err(Error::Invalid("key length"));
    }
    if content_type.len() > CONTENT_TYPE_MAX_BYTES {
        return Err(Error::Invalid("content type length"));
    }
    Ok(())
}

pub(crate) struct KeyLock<I: Io> {
    shard: Rc<Shard<I>>,
    fp: u64,
}

impl<I: Io> Drop for KeyLock<I> {
    fn drop(&mut self) {
        self.shard.writes.key_locks.borrow_mut().remove(&self.fp);
        self.shard.writes.key_unlocked.notify_waiters();
    }
}

impl<I: Io> std::fmt::Debug for KeyLock<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyLock({:x})", self.fp)
    }
}

impl<I: Io> Shard<I> {
    pub(crate) fn new_empty(
        io: I,
        cfg: ShardConfig,
        dir: &Path,
        id: u32,
        record_key: crate::record_key::RecordKey,
    ) -> Shard<I> {
        cfg.check();
        let slots = cfg.writes_in_flight_max;
        let read_slots = Semaphore::new(cfg.reads_in_flight_max);
        let backlogs = RefCell::new(vec![Backlog::default(); cfg.peers.len()]);
        let names = crate::names::Names::new(io.clone(), dir, id, cfg.names_memtable_bytes);
        Shard {
            io,
            cfg,
            names,
            names_ready: Cell::new(true),
            dir: dir.to_path_buf(),
            id,
            index: RefCell::new(Index::default()),
            fenced: RefCell::new(None),
            counters: RefCell::new(Counters::default()),
            record_key,
            files: Files {
                blobs: RefCell::new(BTreeMap::new()),
                open_blob: Cell::new(None),
                next_blob_id: Cell::new(0),
                removals: Default::default(),
                open_files: Cell::new(0),
                file_uses: Cell::new(0),
            },
            writes: Writes {
                next_seq: Cell::new(1),
                key_locks: RefCell::new(HashSet::new()),
                key_unlocked: Notify::new(),
                write_slots: Arc::new(Semaphore::new(slots)),
                reserve_lock: tokio::sync::Mutex::new(()),
                unfilled: Cell::new(0),
            },
            reads: Reads { read_slots, reads_peak: Cell::new(0) },
            damage: Damage {
                quarantine: RefCell::new(Vec::new()),
                quarantined_keys: RefCell::new(HashMap::new()),
            },
            replica: Replica { backlogs, digests: RefCell::new(vec![0; crate::digest::BUCKETS]) },
            jobs: Jobs {
                checkpointing: Cell::new(false),
                checkpoint_done: Notify::new(),
                compact_ctl: Default::default(),
                compact_stats: Default::default(),
                scrub_ctl: Default::default(),
                scrub_stats: Default::default(),
                scrub_done: Cell::new(0),
                tombstone_drop: Cell::new(true),
                forgets: Cell::new(0),
            },
        }
    }

    /// The blob's open file: its cached descriptor, or the file opened again (and cached) if
    /// the cache had closed it. Past `open_blob_files_max` cached descriptors, those of the
    /// least recently used sealed blobs with nothing in flight are closed (operations in
    /// flight hold clones: nothing closes under them).
    pub(crate) async fn blob_file(&self, blob: &BlobFile<I>) -> Result<I::File> {
        let tick = self.files.file_uses.get() + 1;
        self.files.file_uses.set(tick);
        blob.last_use.set(tick);
        if let Some(f) = blob.file.borrow().as_ref() {
            return Ok(f.clone());
        }
        let mode = if self.cfg.read_only { OpenMode::ReadOnly } else { OpenMode::Existing };
        let f = self.io.open(&blob.path, mode).await.map_err(|e| self.disk_err(e))?;
        let f = {
            let mut slot = blob.file.borrow_mut();
            match slot.as_ref() {
                // Another task opened it meanwhile.
                Some(g) => return Ok(g.clone()),
                None => slot.insert(f).clone(),
            }
        };
        self.counters.borrow_mut().blob_reopens += 1;
        self.note_opened();
        self.trim_open_files(blob.id);
        Ok(f)
    }

    /// Counts a blob descriptor the shard caches.
    pub(crate) fn note_opened(&self) {
        self.files.open_files.set(self.files.open_files.get() + 1);
    }

    /// Closes cached descriptors down to 7/8 of the limit once it is passed (counted exactly
    /// then: the running count only ever overestimates, as removed blobs are not subtracted).
    fn trim_open_files(&self, keep: u32) {
        let max = self.cfg.open_blob_files_max;
        if self.files.open_files.get() <= max {
            return;
        }
        let blobs = self.files.blobs.borrow();
        let open_blob = self.files.open_blob.get();
        let mut open = 0;
        let mut closable: Vec<(u64, &Rc<BlobFile<I>>)> = Vec::new();
        for b in blobs.values().filter(|b| b.file.borrow().is_some()) {
            open += 1;
            if b.id != keep && Some(b.id) != open_blob && b.sealed.get() && b.in_flight.borrow().is_empty() {
                closable.push((b.last_use.get(), b));
            }
        }
        let target = max - max / 8;
        if open > target {
            closable.sort_unstable_by_key(|c| c.0);
            for (_, b) in closable.iter().take(open - target) {
                *b.file.borrow_mut() = None;
                open -= 1;
            }
        }
        self.files.open_files.set(open);
    }

    /// The index fingerprint of a key.
    pub(crate) fn fp(&self, key: &[u8]) -> u64 {
        fingerprint(key) & self.cfg.fingerprint_mask
    }

    /// Allows or forbids compaction to drop tombstones past the horizon. The node forbids it
    /// while keys may live on several of its disks (a disk spilled, or one is drained): a
    /// tombstone on one disk then shadows an older copy on another, which its dropping would
    /// bring back.
    pub fn set_tombstone_drop(&self, allowed: bool) {
        self.jobs.tombstone_drop.set(allowed);
    }

    /// The shard (disk) id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The shard's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why the shard is fenced, if it is.
    pub fn fenced(&self) -> Option<String> {
        self.fenced.borrow().clone()
    }

    pub(crate) fn disk_err(&self, source: podstore_disks::Error) -> Error {
        if !matches!(source, podstore_disks::Error::Crashed) {
            self.counters.borrow_mut().io_errors += 1;
        }
        Error::Disk { shard: self.id, source }
    }

    /// Fences the shard after a failed write or sync: no more writes, reads go on.
    pub(crate) fn fence(&self, reason: String) -> Error {
        let mut f = self.fenced.borrow_mut();
        if f.is_none() {
            tracing::error!("shard {} fenced read-only: {reason}", self.id);
            *f = Some(reason.clone());
        }
        Error::Fenced { shard: self.id, reason: f.clone().unwrap_or(reason) }
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        match &*self.fenced.borrow() {
            Some(reason) => Err(Error::Fenced { shard: self.id, reason: reason.clone() }),
            None => Ok(()),
        }
    }

    pub(crate) async fn lock_key(self: &Rc<Self>, fp: u64) -> KeyLock<I> {
        loop {
            let notified = self.writes.key_unlocked.notified();
            if self.writes.key_locks.borrow_mut().insert(fp) {
                return KeyLock { shard: self.clone(), fp };
            }
            notified.await;
        }
    }

    pub(crate) async fn write_slot(&self) -> OwnedSemaphorePermit {
        self.writes.write_slots.clone().acquire_owned().await.expect("the semaphore is never closed")
    }

    pub(crate) fn blob(&self, id: u32) -> Option<Rc<BlobFile<I>>> {
        self.files.blobs.borrow().get(&id).cloned()
    }

    /// Whether the shard is nearly out of room for new objects: it can't add another blob
    /// (`shard_size_max_bytes`; `extra_free_bytes`: what the filesystem has left beyond the
    /// blobs' preallocation) and its open blob has less than an eighth of a blob left.
    /// The free space is asked for only when the open blob is low on room.
    pub fn nearly_full(&self, extra_free_bytes: impl FnOnce() -> u64) -> bool {
        let size = self.cfg.blob_size_bytes;
        let room = self.files.open_blob.get().and_then(|id| self.blob(id)).map_or(0, |b| b.room());
        if room >= size / 8 + self.cfg.tombstone_reserve_bytes {
            return false;
        }
        let blobs: u64 = self.files.blobs.borrow().values().map(|b| b.size_bytes).sum();
        let keep = self.compaction_headroom();
        let can_grow = blobs.saturating_add(size).saturating_add(keep) <= self.cfg.shard_size_max_bytes
            && extra_free_bytes() > size + keep;
        !can_grow
    }

    /// Reads the first block of up to four blobs with records in them (the two oldest and the
    /// two newest): whether the disk still answers (None: nothing written yet). Written blocks
    /// only: the filesystem answers reads of preallocated, never written space (a record whose
    /// write failed) without the device, and the oldest blobs' first records were surely
    /// written. The caller bounds it in time; a read never answered means the disk hangs.
    pub async fn probe(&self) -> Option<Result<()>> {
        let written: Vec<Rc<BlobFile<I>>> =
            self.files.blobs.borrow().values().filter(|b| b.tail.get() > 0).cloned().collect();
        if written.is_empty() {
            return None;
        }
        let n = written.len();
        let mut picks: Vec<&Rc<BlobFile<I>>> =
            written.iter().take(2).chain(written.iter().skip(n.saturating_sub(2))).collect();
        picks.dedup_by_key(|b| b.id);
        for blob in picks {
            let mut buf = self.io.alloc_buf(BLOCK as usize).await;
            buf.set_len(BLOCK as usize);
            let file = match self.blob_file(blob).await {
                Ok(f) => f,
                Err(e) => return Some(Err(e)),
            };
            let (r, _) = self.io.read_at(&file, 0, buf).await;
            if let Err(e) = r {
                return Some(Err(self.disk_err(e)));
            }
        }
        Some(Ok(()))
    }
}
