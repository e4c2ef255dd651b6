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

use crate::backlog::{Backlog, BacklogEntry, BacklogStats};
use crate::blob::{blob_name, BlobFile};
use crate::checkpoint::{ckpt_name, parse_ckpt_name, Checkpoint, CkptBlob, QuarantineReason, Quarantined};
use crate::group_commit::Synced;
use crate::index::{fingerprint, Index, Loc, Slot, BLOB_ID_MAX, BLOB_SIZE_MAX_BYTES};
use crate::record::{
    self, corrupt, verify_chunks, DataSums, Footer, FormatError, Header, BLOCK, CHUNK_BYTES,
    CONTENT_TYPE_MAX_BYTES, FLAG_TOMBSTONE, FLAG_VOID, KEY_MAX_BYTES,
};
use crate::scan::HEADER_READ_BYTES;
use crate::{Error, Result, Version};

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
        assert!(self.writes_in_flight_max > 0);
        assert!(self.reads_in_flight_max > 0);
        assert!(self.open_blob_files_max >= 2);
        assert!(
            self.tombstone_reserve_bytes.is_multiple_of(BLOCK)
                && self.tombstone_reserve_bytes < self.blob_size_bytes / 2
        );
    }
}

/// What a reader learns about an object before reading its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub object_len: u64,
    pub content_type: String,
    pub created_ms: u64,
    /// XXH3-128 of the content: the ETag.
    pub digest: [u8; 16],
    pub seq: u64,
    /// The write's version, the same on every copy.
    pub version: Version,
}

impl ObjectMeta {
    /// The digest as 32 hex digits.
    pub fn etag_hex(&self) -> String {
        self.digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A piece of object data: a window into an owned aligned buffer.
#[derive(Debug, Clone)]
pub struct Chunk {
    buf: Rc<AlignedBuf>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

/// Counters of one shard (monotonic unless noted).
#[derive(Debug, Clone, Default)]
pub struct ShardStats {
    pub shard_id: u32,
    /// Objects (not tombstones) in the index (gauge).
    pub objects: u64,
    /// Tombstones in the index (gauge).
    pub tombstones: u64,
    /// Bytes of records the index points to (gauge).
    pub live_bytes: u64,
    /// Bytes of records nothing points to any more (gauge).
    pub dead_bytes: u64,
    /// Bytes of blob files (gauge).
    pub blob_bytes: u64,
    /// Bytes appended or reserved in blobs (gauge).
    pub used_bytes: u64,
    /// Index memory (gauge).
    pub index_bytes: u64,
    pub blobs: u64,
    pub puts: u64,
    pub deletes: u64,
    pub gets: u64,
    pub aborted_writes: u64,
    pub io_errors: u64,
    pub checksum_errors: u64,
    /// Damaged records and regions awaiting repair (gauge).
    pub quarantined: u64,
    pub syncs: u64,
    /// Blob files open now (gauge), and reopened after the cache closed them.
    pub open_blob_files: u64,
    pub blob_reopens: u64,
    /// Writers covered by the most recent fdatasync (gauge).
    pub last_sync_batch: u64,
    /// The disk's read limit, and the most reads it has had in flight at once.
    pub reads_in_flight_max: u64,
    pub reads_in_flight_peak: u64,
    pub checkpoints: u64,
    /// Why the shard is fenced, if it is.
    pub fenced: Option<String>,
    /// Each peer's backlog on this shard.
    pub backlogs: Vec<(String, BacklogStats)>,
    /// Compaction's progress and totals, and whether it runs or is paused.
    pub compact: crate::compact::CompactStats,
    pub compact_running: bool,
    pub compact_paused: bool,
    /// Scrub's progress and totals, and whether it runs or is paused.
    pub scrub: crate::scrub::ScrubStats,
    pub scrub_running: bool,
    pub scrub_paused: bool,
    /// The disk's background I/O budget and what background jobs took of it (set by the node,
    /// which owns the budget; zero here).
    pub background_bytes_per_s: u64,
    pub background_bytes: u64,
    /// Keys the node moved from this disk to others (rebalancing, draining), and moves that
    /// failed (set by the node).
    pub moved_away: u64,
    pub move_failures: u64,
    /// Tiering (set by the node): objects and bytes moved from this fast disk to the capacity
    /// tier, moves that failed, bytes still to move at the last look, and whether it runs.
    pub migrated_objects: u64,
    pub migrated_bytes: u64,
    pub migration_failures: u64,
    pub migration_backlog_bytes: u64,
    pub migration_running: bool,
    pub migration_paused: bool,
    pub migration_passes: u64,
    pub migration_last_error: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) puts: u64,
    pub(crate) deletes: u64,
    pub(crate) gets: u64,
    pub(crate) aborted: u64,
    pub(crate) io_errors: u64,
    pub(crate) checksum_errors: u64,
    pub(crate) checkpoints: u64,
    pub(crate) live_bytes: u64,
    pub(crate) dead_bytes: u64,
    pub(crate) since_checkpoint_records: u64,
    pub(crate) since_checkpoint_bytes: u64,
    pub(crate) blob_reopens: u64,
}

/// One shard (one disk). Use through `Rc<Shard<I>>`.
#[derive(Debug)]
pub struct Shard<I: Io> {
    pub(crate) io: I,
    pub(crate) cfg: ShardConfig,
    pub(crate) dir: PathBuf,
    pub(crate) id: u32,
    pub(crate) blobs: RefCell<BTreeMap<u32, Rc<BlobFile<I>>>>,
    pub(crate) open_blob: Cell<Option<u32>>,
    pub(crate) next_blob_id: Cell<u32>,
    pub(crate) next_seq: Cell<u64>,
    pub(crate) index: RefCell<Index>,
    key_locks: RefCell<HashSet<u64>>,
    key_unlocked: Notify,
    write_slots: Arc<Semaphore>,
    /// Permits for reads of object data (`reads_in_flight_max`), and the most ever held.
    read_slots: Semaphore,
    reads_peak: Cell<usize>,
    reserve_lock: tokio::sync::Mutex<()>,
    /// Bytes reserved by client writes and not written yet (`ShardConfig::unfilled_bytes_max`).
    pub(crate) unfilled: Cell<u64>,
    checkpointing: Cell<bool>,
    pub(crate) fenced: RefCell<Option<String>>,
    pub(crate) quarantine: RefCell<Vec<Quarantined>>,
    pub(crate) quarantined_keys: RefCell<HashMap<Box<[u8]>, u64>>,
    pub(crate) counters: RefCell<Counters>,
    /// One per peer in `cfg.peers`.
    pub(crate) backlogs: RefCell<Vec<Backlog>>,
    /// Bucket digests of the current keys (digest.rs), kept when the shard has peers.
    pub(crate) digests: RefCell<Vec<u64>>,
    /// Woken when a checkpoint ends (compaction waits for one that no longer names a blob).
    pub(crate) checkpoint_done: Notify,
    /// Compaction (compact.rs): its control and progress.
    pub(crate) compact_ctl: crate::budget::JobCtl,
    pub(crate) compact_stats: RefCell<crate::compact::CompactStats>,
    /// Blobs compaction removed from the table whose files are still to be removed.
    pub(crate) removals: RefCell<Vec<(u32, bool)>>,
    /// Scrub (scrub.rs): its control, progress and persisted position.
    pub(crate) scrub_ctl: crate::budget::JobCtl,
    pub(crate) scrub_stats: RefCell<crate::scrub::ScrubStats>,
    pub(crate) scrub_done: Cell<u64>,
    /// Whether compaction may drop tombstones past the horizon: not while another disk of the
    /// node may hold an older copy of a key (a tombstone here shadows it; see `set_tombstone_drop`).
    pub(crate) tombstone_drop: Cell<bool>,
    /// Calls of `forget` so far (a reader looking for a key on several disks looks again when
    /// a move finished meanwhile).
    pub(crate) forgets: Cell<u64>,
    /// Tags every record header this shard writes, and is checked on every one it reads
    /// (record_key.rs).
    pub(crate) record_key: crate::record_key::RecordKey,
    /// Blob descriptors cached (an overestimate between trims; see `trim_open_files`), and a
    /// counter of descriptor uses (the eviction order).
    pub(crate) open_files: Cell<usize>,
    file_uses: Cell<u64>,
}

/// A key's previous state, when known: (version, tombstone).
pub(crate) type Held = Option<(Version, bool)>;

/// What a writer needs besides the record's shape: the slots and lock it holds, the index
/// slot, the key's previous state, the version and creation time it writes, and (for a move by
/// compaction) the record it copies.
pub(crate) struct WriterStart<I: Io> {
    pub(crate) permit: OwnedSemaphorePermit,
    pub(crate) lock: KeyLock<I>,
    pub(crate) slot: Slot,
    pub(crate) held: Held,
    pub(crate) version: Version,
    pub(crate) created_ms: u64,
    pub(crate) moved_from: Option<(Loc, u64)>,
    /// Whether the write joins the peers' backlogs (not for a move between disks).
    pub(crate) backlog: bool,
}

/// `ENOSPC` on Linux.
const ENOSPC: i32 = 28;

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

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
        self.shard.key_locks.borrow_mut().remove(&self.fp);
        self.shard.key_unlocked.notify_waiters();
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
        Shard {
            backlogs,
            digests: RefCell::new(vec![0; crate::digest::BUCKETS]),
            io,
            cfg,
            dir: dir.to_path_buf(),
            id,
            blobs: RefCell::new(BTreeMap::new()),
            open_blob: Cell::new(None),
            next_blob_id: Cell::new(0),
            next_seq: Cell::new(1),
            index: RefCell::new(Index::default()),
            key_locks: RefCell::new(HashSet::new()),
            key_unlocked: Notify::new(),
            write_slots: Arc::new(Semaphore::new(slots)),
            read_slots,
            reads_peak: Cell::new(0),
            reserve_lock: tokio::sync::Mutex::new(()),
            unfilled: Cell::new(0),
            checkpointing: Cell::new(false),
            fenced: RefCell::new(None),
            quarantine: RefCell::new(Vec::new()),
            quarantined_keys: RefCell::new(HashMap::new()),
            counters: RefCell::new(Counters::default()),
            checkpoint_done: Notify::new(),
            compact_ctl: Default::default(),
            compact_stats: Default::default(),
            removals: Default::default(),
            scrub_ctl: Default::default(),
            scrub_stats: Default::default(),
            scrub_done: Cell::new(0),
            tombstone_drop: Cell::new(true),
            forgets: Cell::new(0),
            record_key,
            open_files: Cell::new(0),
            file_uses: Cell::new(0),
        }
    }

    /// The blob's open file: its cached descriptor, or the file opened again (and cached) if
    /// the cache had closed it. Past `open_blob_files_max` cached descriptors, those of the
    /// least recently used sealed blobs with nothing in flight are closed (operations in
    /// flight hold clones: nothing closes under them).
    pub(crate) async fn blob_file(&self, blob: &BlobFile<I>) -> Result<I::File> {
        let tick = self.file_uses.get() + 1;
        self.file_uses.set(tick);
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
        self.open_files.set(self.open_files.get() + 1);
    }

    /// Closes cached descriptors down to 7/8 of the limit once it is passed (counted exactly
    /// then: the running count only ever overestimates, as removed blobs are not subtracted).
    fn trim_open_files(&self, keep: u32) {
        let max = self.cfg.open_blob_files_max;
        if self.open_files.get() <= max {
            return;
        }
        let blobs = self.blobs.borrow();
        let open_blob = self.open_blob.get();
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
        self.open_files.set(open);
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
        self.tombstone_drop.set(allowed);
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
            let notified = self.key_unlocked.notified();
            if self.key_locks.borrow_mut().insert(fp) {
                return KeyLock { shard: self.clone(), fp };
            }
            notified.await;
        }
    }

    pub(crate) async fn write_slot(&self) -> OwnedSemaphorePermit {
        self.write_slots.clone().acquire_owned().await.expect("the semaphore is never closed")
    }

    pub(crate) fn blob(&self, id: u32) -> Option<Rc<BlobFile<I>>> {
        self.blobs.borrow().get(&id).cloned()
    }

    /// A read of object data, within the disk's read limit (`reads_in_flight_max`).
    pub(crate) async fn read_limited(
        &self,
        file: &I::File,
        offset: u64,
        buf: podstore_disks::AlignedBuf,
    ) -> (podstore_disks::Result<()>, podstore_disks::AlignedBuf) {
        let _permit = self.read_slots.acquire().await.expect("the read semaphore is never closed");
        let held = self.cfg.reads_in_flight_max - self.read_slots.available_permits();
        if held > self.reads_peak.get() {
            self.reads_peak.set(held);
        }
        self.io.read_at(file, offset, buf).await
    }

    /// Reads one block at a record location and decodes its header and key.
    pub(crate) async fn read_header(
        &self,
        loc: Loc,
    ) -> Result<std::result::Result<(Header, Vec<u8>, String), FormatError>> {
        let blob = self.blob(loc.blob()).ok_or_else(|| Error::Damaged {
            shard: self.id,
            reason: format!("index points to missing blob {}", loc.blob()),
        })?;
        let mut buf = self.io.alloc_buf(HEADER_READ_BYTES).await;
        buf.set_len(HEADER_READ_BYTES);
        let (r, buf) = self.read_limited(&self.blob_file(&blob).await?, loc.offset(), buf).await;
        r.map_err(|e| self.disk_err(e))?;
        let b = &buf[..buf.len().min(HEADER_READ_BYTES)];
        Ok(Header::decode(b, &self.record_key).and_then(|h| {
            if h.shard_id != self.id || h.blob_id != loc.blob() || h.offset != loc.offset() {
                return Err(FormatError::Field("identity"));
            }
            let ct = String::from_utf8_lossy(h.content_type(b)).into_owned();
            Ok((h.clone(), h.key(b).to_vec(), ct))
        }))
    }

    /// Where `key`'s entry lives and what it is now. A fingerprint already in the main table
    /// for a different key sends this key to the overflow map; telling them apart costs one
    /// header read, on overwrites only.
    pub(crate) async fn resolve_slot(&self, fp: u64, key: &[u8]) -> Result<(Slot, Option<Loc>)> {
        self.resolve(fp, key).await.map(|(slot, old, _)| (slot, old))
    }

    /// [`Shard::resolve_slot`], plus what the header it had to read says (Some(held) when it
    /// read one: the version and tombstone flag, None if unreadable), so writers need not
    /// read it again.
    async fn resolve(&self, fp: u64, key: &[u8]) -> Result<(Slot, Option<Loc>, Option<Held>)> {
        if let Some(l) = self.index.borrow().overflow_get(key) {
            return Ok((Slot::Overflow, Some(l), None));
        }
        let Some(l) = self.index.borrow().main_get(fp) else {
            return Ok((Slot::Main, None, None));
        };
        let mut header = self.read_header(l).await;
        if header.as_ref().is_err_and(read_failed) {
            header = self.read_header(l).await; // once more: it may have been the transfer
        }
        match header? {
            Ok((_, k, _)) if k != key => Ok((Slot::Overflow, None, None)),
            Ok((h, _, _)) => Ok((Slot::Main, Some(l), Some(Some((h.version, h.is_tombstone()))))),
            // An unreadable record we can't attribute: replace it.
            Err(_) => Ok((Slot::Main, Some(l), Some(None))),
        }
    }

    /// [`Shard::resolve`] for a write: when the device can't read the record the key's
    /// fingerprint maps to, whose it is is not known. A key already marked bad there replaces
    /// it (its repair); any other key goes to the overflow map, which lookups ask first: another
    /// key's entry is never touched because its record can't be read at the moment.
    pub(crate) async fn resolve_for_write(
        &self,
        fp: u64,
        key: &[u8],
    ) -> Result<(Slot, Option<Loc>, Option<Held>)> {
        match self.resolve(fp, key).await {
            Err(e) if read_failed(&e) => {
                let Some(l) = self.index.borrow().main_get(fp) else { return Err(e) };
                let ours =
                    self.quarantine.borrow().iter().any(|q| {
                        q.key.as_deref() == Some(key) && q.blob == l.blob() && q.offset == l.offset()
                    });
                Ok(if ours { (Slot::Main, Some(l), Some(None)) } else { (Slot::Overflow, None, None) })
            }
            r => r,
        }
    }

    /// Reserves `len` bytes for a record: in the open blob, a new blob, or a dedicated one.
    ///
    /// The last `tombstone_reserve_bytes` of the open blob are kept for tombstones, so deletes
    /// still work when the shard has no room for another blob.
    ///
    /// One blob's worth of the shard's room is kept for compaction (`compacting`): it needs
    /// somewhere to copy live records before it can free a blob, so writes stop short of it.
    pub(crate) async fn reserve(
        &self,
        len: u64,
        tombstone: bool,
        compacting: bool,
    ) -> Result<(Rc<BlobFile<I>>, u64, u64)> {
        let _g = self.reserve_lock.lock().await;
        self.reserve_held(len, tombstone, compacting).await
    }

    /// Reserves records of `lens` one after another, with no other reservation between them:
    /// records that land in one blob are contiguous (a new blob starts where the open one has
    /// no room). Stops at the first that fails: the reservations made so far, and its error.
    pub(crate) async fn reserve_all(
        &self,
        lens: &[u64],
    ) -> (Vec<(Rc<BlobFile<I>>, u64, u64)>, Option<Error>) {
        let _g = self.reserve_lock.lock().await;
        let mut out = Vec::with_capacity(lens.len());
        for &len in lens {
            match self.reserve_held(len, false, false).await {
                Ok(r) => out.push(r),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    /// [`Shard::reserve`] with `reserve_lock` held.
    async fn reserve_held(
        &self,
        len: u64,
        tombstone: bool,
        compacting: bool,
    ) -> Result<(Rc<BlobFile<I>>, u64, u64)> {
        self.check_writable()?;
        let open = self.open_blob.get().and_then(|id| self.blob(id));
        let keep = if tombstone { 0 } else { self.cfg.tombstone_reserve_bytes };
        let blob = match open {
            Some(b) if b.room() >= len + keep => b,
            _ if len > self.cfg.blob_size_bytes / 4 => self.create_blob(len, true, compacting).await?,
            open => match self.create_blob(self.cfg.blob_size_bytes, false, compacting).await {
                Ok(b) => {
                    if let Some(old) = self.open_blob.replace(Some(b.id)).and_then(|id| self.blob(id)) {
                        old.sealed.set(true);
                    }
                    b
                }
                Err(Error::NoSpace { .. }) if tombstone && open.as_ref().is_some_and(|b| b.room() >= len) => {
                    open.expect("checked")
                }
                Err(e) => return Err(e),
            },
        };
        let offset = blob.tail.get();
        blob.tail.set(offset + len);
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        blob.in_flight.borrow_mut().insert(offset, seq);
        Ok((blob, offset, seq))
    }

    /// Gives the space of an abandoned reservation (its record `h`, no write of it in flight)
    /// back, if it can: a dedicated blob's file is removed (a crash first leaves it to
    /// recovery, which removes a dedicated blob whose one record never completed); a
    /// reservation that ends at the open blob's tail lowers the tail to its start, then over
    /// the abandoned ones before it (`BlobFile::voided`), never below `rewind_floor` (what a
    /// checkpoint told recovery to rescan from, what a scrub reads). Each region given back has
    /// its first block zeroed before anything can be reserved there: recovery then reads it as
    /// space never written, not as the abandoned record (whose length would carry its scan
    /// past records written there since). Returns whether the space was given back.
    pub(crate) async fn give_back(&self, blob: &Rc<BlobFile<I>>, h: &Header) -> Result<bool> {
        // A fenced shard writes nothing more: its abandoned space stays as it is.
        if self.cfg.read_only || self.check_writable().is_err() {
            return Ok(false);
        }
        let _g = self.reserve_lock.lock().await;
        if blob.dedicated {
            if h.offset != 0 || self.blobs.borrow().get(&blob.id).is_none() {
                return Ok(false);
            }
            blob.in_flight.borrow_mut().remove(&0);
            self.blobs.borrow_mut().remove(&blob.id);
            blob.file.borrow_mut().take();
            self.io.remove(&blob.path).await.map_err(|e| self.disk_err(e))?;
            return Ok(true);
        }
        let open = self.open_blob.get() == Some(blob.id) && !blob.sealed.get();
        if !open || blob.tail.get() != h.offset + h.record_len || h.offset < blob.rewind_floor.get() {
            return Ok(false);
        }
        // The tail first (a checkpoint snapshot taken while the block is zeroed then tells
        // recovery to scan from here), then the block; no reservation can come in between.
        blob.in_flight.borrow_mut().remove(&h.offset);
        blob.tail.set(h.offset);
        self.zero_block(blob, h.offset).await?;
        loop {
            let last = blob.voided.borrow().iter().next_back().map(|(&o, &l)| (o, l));
            let Some((o, l)) =
                last.filter(|&(o, l)| o + l == blob.tail.get() && o >= blob.rewind_floor.get())
            else {
                break;
            };
            blob.voided.borrow_mut().remove(&o);
            blob.tail.set(o);
            self.zero_block(blob, o).await?;
            let mut c = self.counters.borrow_mut();
            c.dead_bytes = c.dead_bytes.saturating_sub(l);
        }
        if blob.tail.get() == 0 {
            blob.first_seq.set(None);
        }
        Ok(true)
    }

    /// Writes a block of zeros at `offset` of `blob`.
    async fn zero_block(&self, blob: &BlobFile<I>, offset: u64) -> Result<()> {
        let mut buf = self.io.alloc_buf(BLOCK as usize).await;
        buf.clear();
        buf.set_len(BLOCK as usize);
        buf.as_mut_slice().fill(0);
        self.write_fenced(blob, offset, buf).await.map(|_| ())
    }

    async fn create_blob(&self, size: u64, dedicated: bool, compacting: bool) -> Result<Rc<BlobFile<I>>> {
        let id = self.next_blob_id.get();
        if id > BLOB_ID_MAX {
            return Err(Error::NoSpace { shard: self.id });
        }
        let used: u64 = self.blobs.borrow().values().map(|b| b.size_bytes).sum();
        let headroom = if compacting { 0 } else { self.compaction_headroom() };
        if used.saturating_add(size).saturating_add(headroom) > self.cfg.shard_size_max_bytes {
            return Err(Error::NoSpace { shard: self.id });
        }
        self.next_blob_id.set(id + 1);
        let path = self.dir.join(blob_name(id, dedicated));
        let file = self.io.open(&path, OpenMode::CreateNew).await.map_err(|e| self.disk_err(e))?;
        if let Err(e) = self.io.allocate(&file, size).await {
            let _ = self.io.remove(&path).await;
            return Err(match e.raw_os_error() {
                Some(ENOSPC) => Error::NoSpace { shard: self.id },
                _ => self.disk_err(e),
            });
        }
        // The blob's size and name must be durable before any record in it is acknowledged.
        if let Err(e) = self.io.sync_data(&file).await {
            return Err(self.fence(format!("fdatasync of new blob {id}: {e}")));
        }
        if let Err(e) = self.io.sync_dir(&self.dir).await {
            return Err(self.fence(format!("fsync of shard directory: {e}")));
        }
        let blob = Rc::new(BlobFile::new(id, file, path, size, dedicated, 0));
        self.blobs.borrow_mut().insert(id, blob.clone());
        self.note_opened();
        self.trim_open_files(id);
        Ok(blob)
    }

    /// Room kept for compaction: one regular blob, unless the shard is too small to spare it
    /// (fewer than four blobs' room).
    pub(crate) fn compaction_headroom(&self) -> u64 {
        let size = self.cfg.blob_size_bytes;
        if self.cfg.shard_size_max_bytes / size >= 4 {
            size
        } else {
            0
        }
    }

    /// Starts a streaming PUT of `object_len` bytes, stamped with a new version of this
    /// node's clock. Write the body with [`PutWriter::write`], then [`PutWriter::finish`]; the
    /// object exists only after `finish` returns Ok.
    pub async fn put(
        self: &Rc<Self>,
        key: &[u8],
        content_type: &str,
        object_len: u64,
    ) -> Result<PutWriter<I>> {
        Ok(self
            .put_stamped(key, content_type, object_len, Stamp::Local)
            .await?
            .expect("a local stamp is newest"))
    }

    /// Starts a streaming PUT with a given stamp. With [`Stamp::Given`] (a copy of another
    /// appliance's write) it returns `None`, writing nothing, when the shard already holds
    /// this version of the key or a newer one (an object or a tombstone): the newest write
    /// wins whatever order copies arrive in.
    pub async fn put_stamped(
        self: &Rc<Self>,
        key: &[u8],
        content_type: &str,
        object_len: u64,
        stamp: Stamp,
    ) -> Result<Option<PutWriter<I>>> {
        validate(key, content_type)?;
        if object_len > self.cfg.object_size_max_bytes {
            return Err(Error::TooLarge { len: object_len, max: self.cfg.object_size_max_bytes });
        }
        self.check_writable()?;
        // The key's lock first, then a write slot (every writer takes them in this order, so
        // none waits for a lock while holding a slot): writes queued behind one key (a slow
        // body holds its key's lock until it is complete) do not take the disk's slots from
        // writes of other keys.
        let fp = self.fp(key);
        let lock = self.lock_key(fp).await;
        let permit = self.write_slot().await;
        let (slot, old, known) = self.resolve_for_write(fp, key).await?;
        let (Some(version), held) = self.stamp(stamp, key, old, known).await? else {
            return Ok(None);
        };
        let backlog = !matches!(stamp, Stamp::Moved(_));
        let w = WriterStart {
            permit,
            lock,
            slot,
            held,
            version,
            created_ms: now_ms(),
            moved_from: None,
            backlog,
        };
        self.start_writer(key, content_type, object_len, w).await.map(Some)
    }

    /// Reserves a record and starts its writer (a PUT, or a move by compaction).
    pub(crate) async fn start_writer(
        self: &Rc<Self>,
        key: &[u8],
        content_type: &str,
        object_len: u64,
        w: WriterStart<I>,
    ) -> Result<PutWriter<I>> {
        let rec_len = record::record_len(key.len(), content_type.len(), object_len);
        // A client's write (not a move) counts against the bytes reserved and not yet filled.
        let counted = if w.moved_from.is_none() { rec_len } else { 0 };
        let unfilled = self.unfilled.get();
        if counted > 0 && unfilled.saturating_add(counted) > self.cfg.unfilled_bytes_max {
            return Err(Error::Busy {
                shard: self.id,
                what: format!(
                    "{unfilled} bytes are reserved by writes whose bodies have not arrived (at most {})",
                    self.cfg.unfilled_bytes_max
                ),
            });
        }
        // Counted before the reservation's wait, so writes starting together can't all pass.
        self.unfilled.set(unfilled + counted);
        let reserved = self.reserve(rec_len, false, w.moved_from.is_some()).await;
        let (blob, offset, seq) = reserved.inspect_err(|_| {
            self.unfilled.set(self.unfilled.get().saturating_sub(counted));
        })?;
        let header = Header {
            flags: 0,
            shard_id: self.id,
            blob_id: blob.id,
            offset,
            seq,
            created_ms: w.created_ms,
            object_len,
            record_len: rec_len,
            key_len: key.len() as u16,
            content_type_len: content_type.len() as u8,
            version: w.version,
        };
        let mut buf = self.io.alloc_buf(self.cfg.write_buf_bytes).await;
        buf.clear();
        let ds = header.data_start() as usize;
        buf.set_len(ds);
        header.encode(key, content_type.as_bytes(), buf.as_mut_slice(), &self.record_key);
        Ok(PutWriter {
            shard: self.clone(),
            _permit: w.permit,
            _lock: w.lock,
            blob,
            header,
            key: key.to_vec(),
            fp: self.fp(key),
            slot: w.slot,
            held: w.held,
            moved_from: w.moved_from,
            backlog: w.backlog,
            buf: Some(buf),
            pending: None,
            written: 0,
            sums: DataSums::new(),
            finished: false,
            broken: false,
            unfilled: counted,
            given_back: false,
        })
    }

    /// The version a write gets: a new stamp for a local write; for a copy, its own stamp if
    /// it is newer than what the shard holds for the key (`old`), else None. Also returns what
    /// the shard holds (read when it is needed: for a copy, or to keep digests).
    pub(crate) async fn stamp(
        &self,
        stamp: Stamp,
        key: &[u8],
        old: Option<Loc>,
        known: Option<Held>,
    ) -> Result<(Option<Version>, Held)> {
        let need_old = !matches!(stamp, Stamp::Local) || self.digests_on();
        let held = match (known, old) {
            (Some(h), _) => h,
            (None, Some(l)) if need_old => {
                self.read_header(l).await?.ok().map(|(h, _, _)| (h.version, h.is_tombstone()))
            }
            (None, _) => None,
        };
        match stamp {
            Stamp::Local => Ok((Some(self.cfg.clock.now()), held)),
            Stamp::Given(v) | Stamp::Moved(v) => {
                self.cfg.clock.observe(v.hlc);
                // An unreadable or corrupt record holds nothing worth keeping over a good copy,
                // even an older one: that is how a damaged record is repaired. One marked bad
                // after a read error whose header reads keeps its version (the error may have
                // passed: an older copy must not replace it; one of the same version repairs it).
                let quarantined = self.quarantined_keys.borrow().contains_key(key);
                let corrupt =
                    quarantined
                        && self.quarantine.borrow().iter().any(|q| {
                            q.key.as_deref() == Some(key) && q.reason != QuarantineReason::ReadError
                        });
                // A copy of the same version repairs a record marked bad.
                let take = match held {
                    Some(h) if !corrupt => v > h.0 || (quarantined && v == h.0),
                    _ => v > Version::NONE,
                };
                Ok((take.then_some(v), held))
            }
        }
    }

    /// Digests are kept when the shard has peers to compare with.
    pub(crate) fn digests_on(&self) -> bool {
        !self.cfg.peers.is_empty()
    }

    /// Replaces a key's contribution to its bucket digest.
    pub(crate) fn digest_apply(&self, key: &[u8], old: Held, new: Held) {
        if !self.digests_on() {
            return;
        }
        let b = crate::digest::bucket_of(key);
        let mut d = self.digests.borrow_mut();
        for (v, tomb) in old.into_iter().chain(new) {
            d[b] ^= crate::digest::entry_hash(key, v, tomb);
        }
    }

    /// The shard's bucket digests (all zero when digests are off).
    pub fn digests(&self) -> Vec<u64> {
        self.digests.borrow().clone()
    }

    /// Every current key of a bucket with its version, read from the records' headers.
    pub async fn bucket_keys(&self, bucket: usize) -> Result<Vec<crate::digest::KeyState>> {
        let exact = self.cfg.fingerprint_mask == u64::MAX;
        let locs: Vec<Loc> = {
            let ix = self.index.borrow();
            ix.main_entries()
                .filter(|(fp, _)| !exact || (*fp >> 52) as usize == bucket)
                .map(|(_, l)| l)
                .chain(
                    ix.overflow_entries()
                        .filter(|(k, _)| crate::digest::bucket_of(k) == bucket)
                        .map(|(_, l)| l),
                )
                .collect()
        };
        let mut out = Vec::new();
        for l in locs {
            // A record whose blob compaction removed meanwhile was moved: its copy was listed
            // or is compared at the next pass.
            let r = match self.read_header(l).await {
                Err(Error::Damaged { .. }) if self.blob(l.blob()).is_none() => continue,
                r => r?,
            };
            if let Ok((h, key, _)) = r {
                if crate::digest::bucket_of(&key) == bucket {
                    out.push(crate::digest::KeyState {
                        key,
                        version: h.version,
                        tombstone: h.is_tombstone(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Adds a committed record of this appliance's own writes to every peer's backlog.
    pub(crate) fn backlog_add(&self, h: &Header) {
        if h.version.origin != self.cfg.clock.origin() {
            return; // a copy of another appliance's write: its origin sends it to the others
        }
        let e = BacklogEntry::of(h);
        for b in self.backlogs.borrow_mut().iter_mut() {
            b.add(e, self.cfg.backlog_records_max);
        }
    }

    /// Peer `peer` (an index into `cfg.peers`) holds the write with this sequence durably.
    pub fn backlog_confirm(&self, peer: usize, seq: u64) {
        if let Some(b) = self.backlogs.borrow_mut().get_mut(peer) {
            b.confirm(seq);
        }
    }

    /// Up to `max` unconfirmed writes for `peer`, oldest first, created at or before
    /// `before_ms`; each stays reserved for the caller until confirmed or released.
    pub fn backlog_take(&self, peer: usize, max: usize, before_ms: u64) -> Vec<BacklogEntry> {
        self.backlogs.borrow_mut().get_mut(peer).map(|b| b.take(max, before_ms)).unwrap_or_default()
    }

    /// A taken entry could not be sent: it will be taken again.
    pub fn backlog_release(&self, peer: usize, seq: u64) {
        if let Some(b) = self.backlogs.borrow_mut().get_mut(peer) {
            b.release(seq);
        }
    }

    /// What `peer`'s backlog on this shard holds.
    pub fn backlog_stats(&self, peer: usize) -> BacklogStats {
        self.backlogs.borrow().get(peer).map(|b| b.stats()).unwrap_or_default()
    }

    /// The write a backlog entry stands for, if it is still the key's newest here: a reader
    /// of the object, or a tombstone's key and version. None if it was superseded (the newer
    /// write has its own entry, or came from another appliance that sends it).
    pub async fn backlog_item(
        self: &Rc<Self>,
        e: &BacklogEntry,
        check: ReadCheck,
    ) -> Result<Option<CopyItem<I>>> {
        // One read: the whole record when it is small enough (its length is in the entry), so
        // learning the key costs no read of its own.
        let loc_hint = Loc::new(e.blob, e.offset, e.record_len, false);
        let Some((blob, buf, whole)) = self.first_read(loc_hint).await? else { return Ok(None) };
        let h = match Header::decode(&buf, &self.record_key) {
            Ok(h) if h.shard_id == self.id && h.blob_id == e.blob && h.offset == e.offset => h,
            _ => return Ok(None),
        };
        let key = h.key(&buf).to_vec();
        let fp = self.fp(&key);
        let current = {
            let ix = self.index.borrow();
            ix.overflow_get(&key).or_else(|| ix.main_get(fp))
        };
        let Some(loc) = current.filter(|l| l.blob() == e.blob && l.offset() == e.offset) else {
            return Ok(None);
        };
        if loc.is_tombstone() {
            return Ok(Some(CopyItem::Delete { key, version: h.version }));
        }
        match self.reader_from(&key, loc, blob, buf, whole, check).await? {
            Opened::Reader(r) => Ok(Some(CopyItem::Put(r))),
            Opened::OtherKey => Ok(None),
            Opened::Bad(..) => {
                // Damaged (or a bad transfer): one more checked read, as a GET makes, then
                // quarantine.
                self.counters.borrow_mut().checksum_errors += 1;
                Ok(self.open_checked(&key, loc, 1).await?.ok().flatten().map(|r| CopyItem::Put(Box::new(r))))
            }
        }
    }

    /// The key's newest write here, to copy to a peer: a verified reader of the object or the
    /// tombstone's version. None if the shard has no record of the key.
    pub async fn copy_item(self: &Rc<Self>, key: &[u8], check: ReadCheck) -> Result<Option<CopyItem<I>>> {
        validate(key, "")?;
        let fp = self.fp(key);
        for _ in 0..2 {
            let (_, old) = match self.resolve_slot(fp, key).await {
                Err(Error::Damaged { .. }) => continue, // moved by compaction meanwhile
                r => r?,
            };
            let Some(loc) = old else { return Ok(None) };
            let e = BacklogEntry {
                seq: 0,
                blob: loc.blob(),
                offset: loc.offset(),
                record_len: loc.record_len().unwrap_or(BLOCK),
                created_ms: 0,
            };
            match self.backlog_item(&e, check).await? {
                // The record moved (compaction) between the lookup and the read: look again.
                None if self.blob(loc.blob()).is_none() => continue,
                item => return Ok(item),
            }
        }
        Ok(None)
    }

    /// Whether the index has an entry for the key's fingerprint (or the key itself): a record
    /// may be here even when its header does not read back.
    pub fn has_entry(&self, key: &[u8]) -> bool {
        self.entry_of(key).is_some()
    }

    /// Where the index points for `key` (its overflow entry, else its fingerprint's).
    pub(crate) fn entry_of(&self, key: &[u8]) -> Option<Loc> {
        let ix = self.index.borrow();
        ix.overflow_get(key).or_else(|| ix.main_get(self.fp(key)))
    }

    /// Notes that the record at `loc` was read now (a GET, from disk or from the node's RAM
    /// cache): its blob is not cold.
    pub fn note_read(&self, loc: Loc) {
        if let Some(b) = self.blob(loc.blob()) {
            b.last_read_ms.set(now_ms());
        }
    }

    /// Where the index points for `key` when a read would serve that record (not a tombstone,
    /// not quarantined): the RAM cache serves its copy only while this is the record it was
    /// read from.
    pub fn servable_loc(&self, key: &[u8]) -> Option<Loc> {
        if self.quarantined_keys.borrow().contains_key(key) {
            return None;
        }
        self.entry_of(key).filter(|l| !l.is_tombstone())
    }

    /// Whether the index says the key was deleted here (no disk read; a fingerprint shared with
    /// another key's tombstone also answers yes).
    pub fn is_deleted(&self, key: &[u8]) -> bool {
        self.entry_of(key).is_some_and(|l| l.is_tombstone())
    }

    /// The version of the key's newest record (object or tombstone), if the shard has one.
    /// Costs one header read.
    pub async fn version_of(&self, key: &[u8]) -> Result<Option<(Version, bool)>> {
        validate(key, "")?;
        let fp = self.fp(key);
        let mut again = true;
        loop {
            let r = async {
                let (_, old, known) = self.resolve(fp, key).await?;
                let Some(l) = old else { return Ok(None) };
                if let Some(held) = known {
                    return Ok(held);
                }
                Ok(self.read_header(l).await?.ok().map(|(h, _, _)| (h.version, h.is_tombstone())))
            }
            .await;
            match r {
                // Compaction moved the record and removed its blob meanwhile: look again.
                Err(Error::Damaged { .. }) if again => again = false,
                r => return r,
            }
        }
    }

    /// Stores a whole object from memory (a convenience over [`Shard::put`]).
    pub async fn put_bytes(self: &Rc<Self>, key: &[u8], content_type: &str, data: &[u8]) -> Result<PutDone> {
        let mut w = self.put(key, content_type, data.len() as u64).await?;
        w.write(data).await?;
        w.finish().await
    }

    /// Applies a committed record to the index and the counters.
    pub(crate) fn commit_index(&self, slot: Slot, fp: u64, key: &[u8], loc: Loc, rec_len: u64) {
        {
            let mut c = self.counters.borrow_mut();
            c.since_checkpoint_records += 1;
            c.since_checkpoint_bytes += rec_len;
        }
        let old = self.index.borrow_mut().set(slot, fp, key, loc);
        let mut c = self.counters.borrow_mut();
        if !loc.is_tombstone() {
            c.live_bytes += rec_len;
        } else {
            c.dead_bytes += rec_len;
        }
        if let Some(o) = old {
            let olen = o.record_len().unwrap_or(4 << 30);
            if !o.is_tombstone() {
                c.live_bytes = c.live_bytes.saturating_sub(olen);
                c.dead_bytes += olen;
            }
        }
        drop(c);
        if self.quarantined_keys.borrow_mut().remove(key).is_some() {
            // A newer record supersedes the damaged one: nothing of it needs repair any more.
            self.quarantine.borrow_mut().retain(|q| q.key.as_deref() != Some(key));
        }
    }

    /// Deletes a key with a tombstone record. Returns whether an object existed.
    pub async fn delete(self: &Rc<Self>, key: &[u8]) -> Result<bool> {
        Ok(self.delete_stamped(key, Stamp::Local, false).await?.existed)
    }

    /// Deletes a key with a tombstone stamped as `stamp` says. A local delete of a key the
    /// shard does not hold writes a tombstone only if `always` (a replica set needs it, so the
    /// delete reaches peers that hold the key); a copy of another appliance's delete writes
    /// one whenever it is newer than what the shard holds, so an older copy arriving later
    /// can't resurrect the object.
    pub async fn delete_stamped(
        self: &Rc<Self>,
        key: &[u8],
        stamp: Stamp,
        always: bool,
    ) -> Result<DeleteDone> {
        validate(key, "")?;
        self.check_writable()?;
        let fp = self.fp(key);
        let _lock = self.lock_key(fp).await;
        let _permit = self.write_slot().await;
        // A delete whose key's record can't be read fails (the caller retries): whether the
        // key exists, and so whether a tombstone must shadow it, is not known.
        let (slot, old, known) = self.resolve(fp, key).await?;
        let quarantined = self.quarantined_keys.borrow().contains_key(key);
        let existed = old.is_some_and(|l| !l.is_tombstone());
        let local = matches!(stamp, Stamp::Local);
        if local && !existed && !quarantined && !always {
            return Ok(DeleteDone { existed, version: None, seq: None });
        }
        let (Some(version), held) = self.stamp(stamp, key, old, known).await? else {
            return Ok(DeleteDone { existed, version: None, seq: None });
        };
        let header = self.write_tombstone(key, version, now_ms(), false).await?;
        let rec_len = header.record_len;
        self.commit_index(slot, fp, key, Loc::new(header.blob_id, header.offset, rec_len, true), rec_len);
        self.digest_apply(key, held, Some((version, true)));
        if !matches!(stamp, Stamp::Moved(_)) {
            self.backlog_add(&header);
        }
        self.counters.borrow_mut().deletes += 1;
        Ok(DeleteDone { existed, version: Some(version), seq: Some(header.seq) })
    }

    /// Writes a durable tombstone record (the caller holds the key's lock and changes the
    /// index); returns its header.
    pub(crate) async fn write_tombstone(
        &self,
        key: &[u8],
        version: Version,
        created_ms: u64,
        compacting: bool,
    ) -> Result<Header> {
        let rec_len = record::record_len(key.len(), 0, 0);
        let (blob, offset, seq) = self.reserve(rec_len, true, compacting).await?;
        let header = Header {
            flags: FLAG_TOMBSTONE,
            shard_id: self.id,
            blob_id: blob.id,
            offset,
            seq,
            created_ms,
            object_len: 0,
            record_len: rec_len,
            key_len: key.len() as u16,
            content_type_len: 0,
            version,
        };
        let mut buf = self.io.alloc_buf(rec_len as usize).await;
        buf.clear();
        let ds = header.data_start() as usize;
        buf.set_len(ds);
        header.encode(key, b"", buf.as_mut_slice(), &self.record_key);
        buf.extend_from(&DataSums::new().finish(seq).encode());
        buf.pad_to_alignment();
        let r = self.write_and_commit(&blob, offset, buf).await;
        blob.in_flight.borrow_mut().remove(&offset);
        r?;
        Ok(header)
    }

    /// Writes a buffer, fencing on failure.
    pub(crate) async fn write_fenced(
        &self,
        blob: &BlobFile<I>,
        offset: u64,
        buf: AlignedBuf,
    ) -> Result<AlignedBuf> {
        let file = self.blob_file(blob).await?;
        let (r, buf) = self.io.write_at(&file, offset, buf).await;
        match r {
            Ok(()) => Ok(buf),
            Err(e) => {
                if !matches!(e, podstore_disks::Error::Crashed) {
                    self.counters.borrow_mut().io_errors += 1;
                }
                Err(self.fence(format!("write failed: {e}")))
            }
        }
    }

    /// Waits for a group fdatasync covering everything written to `blob` so far.
    pub(crate) async fn commit(&self, blob: &BlobFile<I>) -> Result<()> {
        let io = &self.io;
        let file = &self.blob_file(blob).await?;
        match blob.commit.sync(|| async move { io.sync_data(file).await.map_err(|e| e.to_string()) }).await {
            Synced::Durable => Ok(()),
            Synced::Failed(e) => {
                self.counters.borrow_mut().io_errors += 1;
                Err(self.fence(format!("fdatasync failed: {e}")))
            }
        }
    }

    async fn write_and_commit(&self, blob: &BlobFile<I>, offset: u64, buf: AlignedBuf) -> Result<()> {
        self.write_fenced(blob, offset, buf).await?;
        self.commit(blob).await
    }

    /// Looks a key up and opens a verified reader of its newest record, or None if it does not
    /// exist (or was deleted). A record that fails its checks is never returned: the key is
    /// quarantined and the call fails.
    pub async fn get(self: &Rc<Self>, key: &[u8]) -> Result<Option<ObjectReader<I>>> {
        validate(key, "")?;
        self.counters.borrow_mut().gets += 1;
        if self.quarantined_keys.borrow().contains_key(key) {
            return Err(Error::Quarantined { shard: self.id });
        }
        let fp = self.fp(key);
        let mut again = true;
        loop {
            let loc = {
                let ix = self.index.borrow();
                ix.overflow_get(key).or_else(|| ix.main_get(fp))
            };
            let Some(loc) = loc else { return Ok(None) };
            if loc.is_tombstone() {
                return Ok(None);
            }
            return match self.open_checked(key, loc, 2).await {
                // Compaction moved the record and removed its blob between the lookup and the
                // read: look again.
                Err(Error::Damaged { .. }) if again && self.blob(loc.blob()).is_none() => {
                    again = false;
                    continue;
                }
                Err(e) => Err(e),
                Ok(Ok(r)) => {
                    self.note_read(loc);
                    Ok(r)
                }
                Ok(Err(e)) => Err(corrupt(self.id, loc.blob(), loc.offset(), e)),
            };
        }
    }

    /// A verified reader of `key`'s record at `loc` (None if the record is another key's),
    /// read up to `attempts` times: a checksum failure may be a bad transfer, not damage;
    /// after the last failure the record is quarantined and its error returned.
    pub(crate) async fn open_checked(
        self: &Rc<Self>,
        key: &[u8],
        loc: Loc,
        attempts: u32,
    ) -> Result<std::result::Result<Option<ObjectReader<I>>, FormatError>> {
        let mut last = None;
        for _ in 0..attempts {
            match self.open_reader(key, loc).await {
                Ok(Opened::Reader(r)) => return Ok(Ok(Some(*r))),
                Ok(Opened::OtherKey) => return Ok(Ok(None)),
                Ok(Opened::Bad(e, seq)) => {
                    self.counters.borrow_mut().checksum_errors += 1;
                    last = Some(Ok((e, seq)));
                }
                Err(e) if read_failed(&e) => last = Some(Err(e)),
                Err(e) => return Err(e),
            }
        }
        match last.expect("at least one attempt") {
            Ok((e, seq)) => {
                self.quarantine_read(key, loc, seq, QuarantineReason::ReadChecksum);
                Ok(Err(e))
            }
            // The device can't read it: marked bad too (a later check may find it readable).
            Err(e) => {
                self.quarantine_read(key, loc, 0, QuarantineReason::ReadError);
                Err(e)
            }
        }
    }

    /// The metadata of a key's newest record (reads and verifies like `get`).
    pub async fn head(self: &Rc<Self>, key: &[u8]) -> Result<Option<ObjectMeta>> {
        Ok(self.get(key).await?.map(|r| r.meta))
    }

    /// Takes `key`'s record at `loc` out of service until a newer write (a peer's copy: the
    /// repair) replaces it, or, for a read error, a later read finds it intact
    /// ([`Shard::recheck`]).
    pub(crate) fn quarantine_read(&self, key: &[u8], loc: Loc, seq: u64, reason: QuarantineReason) {
        if self.quarantined_keys.borrow().contains_key(key) {
            return;
        }
        let what = match reason {
            QuarantineReason::ReadError => "could not be read",
            _ => "failed its checksums",
        };
        tracing::warn!(
            "shard {}: record at blob {} offset {} {what}; quarantined",
            self.id,
            loc.blob(),
            loc.offset()
        );
        self.quarantined_keys.borrow_mut().insert(key.into(), seq);
        self.quarantine.borrow_mut().push(Quarantined {
            blob: loc.blob(),
            offset: loc.offset(),
            len_bytes: loc.record_len().unwrap_or(BLOCK),
            seq,
            key: Some(key.to_vec()),
            reason,
        });
    }

    pub(crate) async fn open_reader(self: &Rc<Self>, key: &[u8], loc: Loc) -> Result<Opened<I>> {
        let Some((blob, buf, whole)) = self.first_read(loc).await? else {
            return Err(Error::Damaged {
                shard: self.id,
                reason: format!("index points to missing blob {}", loc.blob()),
            });
        };
        self.reader_from(key, loc, blob, buf, whole, ReadCheck::Verify).await
    }

    /// The first read of a record: all of it when it is at most `single_read_max_bytes`
    /// (Some(length)), its header block otherwise. None if the blob is gone.
    async fn first_read(&self, loc: Loc) -> Result<Option<(Rc<BlobFile<I>>, AlignedBuf, Option<u64>)>> {
        let Some(blob) = self.blob(loc.blob()) else { return Ok(None) };
        let whole = loc.record_len().filter(|&l| l <= self.cfg.single_read_max_bytes);
        let first_read = whole.unwrap_or(HEADER_READ_BYTES as u64) as usize;
        let mut buf = self.io.alloc_buf(first_read).await;
        buf.set_len(first_read);
        let (r, buf) = self.read_limited(&self.blob_file(&blob).await?, loc.offset(), buf).await;
        r.map_err(|e| self.disk_err(e))?;
        Ok(Some((blob, buf, whole)))
    }

    /// A reader over a record whose first read is `buf` (see [`Shard::first_read`]).
    async fn reader_from(
        self: &Rc<Self>,
        key: &[u8],
        loc: Loc,
        blob: Rc<BlobFile<I>>,
        buf: AlignedBuf,
        whole: Option<u64>,
        check: ReadCheck,
    ) -> Result<Opened<I>> {
        let h = match Header::decode(&buf, &self.record_key) {
            Ok(h) if h.shard_id == self.id && h.blob_id == loc.blob() && h.offset == loc.offset() => h,
            Ok(_) => return Ok(Opened::Bad(FormatError::Field("identity"), 0)),
            Err(e) => return Ok(Opened::Bad(e, 0)),
        };
        if h.key(&buf) != key {
            return Ok(Opened::OtherKey);
        }
        if h.is_tombstone() || h.is_void() || whole.is_some_and(|l| l != h.record_len) {
            return Ok(Opened::Bad(FormatError::Field("record kind"), h.seq));
        }
        let content_type = String::from_utf8_lossy(h.content_type(&buf)).into_owned();
        let footer;
        let mem;
        if whole.is_some() {
            let fs = h.footer_start() as usize;
            footer = match Footer::decode(&buf[fs..], h.object_len, h.seq) {
                Ok(f) => f,
                Err(e) => return Ok(Opened::Bad(e, h.seq)),
            };
            let ds = h.data_start() as usize;
            if check == ReadCheck::Verify {
                if let Err(e) = verify_chunks(&footer, 0, &buf[ds..fs]) {
                    return Ok(Opened::Bad(e, h.seq));
                }
            }
            mem = Some(Rc::new(buf));
        } else {
            footer = match self.read_footer(&blob, loc.offset(), &h).await? {
                Ok(f) => f,
                Err(e) => return Ok(Opened::Bad(e, h.seq)),
            };
            mem = None;
        }
        let meta = ObjectMeta {
            object_len: h.object_len,
            content_type,
            created_ms: h.created_ms,
            digest: footer.digest,
            seq: h.seq,
            version: h.version,
        };
        // The reader keeps its own descriptor: the blob's may be closed by the cache, and the
        // file removed by compaction once nothing points into it, while the reader still reads.
        let file = self.blob_file(&blob).await?;
        Ok(Opened::Reader(Box::new(ObjectReader {
            shard: self.clone(),
            file,
            key: key.to_vec(),
            loc,
            header: h,
            footer,
            mem,
            check,
            pos: 0,
            end: meta.object_len,
            meta,
        })))
    }

    async fn read_footer(
        &self,
        blob: &BlobFile<I>,
        rec_off: u64,
        h: &Header,
    ) -> Result<std::result::Result<Footer, FormatError>> {
        let fs = rec_off + h.footer_start();
        let start = fs - fs % BLOCK;
        let end = podstore_disks::align_up(fs + record::footer_len(h.object_len));
        let mut buf = self.io.alloc_buf((end - start) as usize).await;
        buf.set_len((end - start) as usize);
        let (r, buf) = self.read_limited(&self.blob_file(blob).await?, start, buf).await;
        r.map_err(|e| self.disk_err(e))?;
        let at = (fs - start) as usize;
        Ok(buf.get(at..).ok_or(FormatError::Short).and_then(|b| Footer::decode(b, h.object_len, h.seq)))
    }

    /// A consistent snapshot of the index and blob table for a checkpoint.
    pub(crate) fn snapshot(&self) -> Checkpoint {
        let blobs = self.blobs.borrow();
        let ix = self.index.borrow();
        Checkpoint {
            shard_id: self.id,
            max_seq: self.next_seq.get() - 1,
            max_hlc: self.cfg.clock.last(),
            digests: if self.digests_on() { self.digests.borrow().clone() } else { Vec::new() },
            backlogs: self
                .cfg
                .peers
                .iter()
                .zip(self.backlogs.borrow().iter())
                .map(|(name, b)| crate::checkpoint::CkptBacklog {
                    peer: name.clone(),
                    overflowed: b.overflowed,
                    entries: b.entries.values().copied().collect(),
                })
                .collect(),
            blobs: blobs
                .values()
                .map(|b| CkptBlob {
                    id: b.id,
                    dedicated: b.dedicated,
                    size_bytes: b.size_bytes,
                    tail: b.tail.get(),
                    scan_from: {
                        let from = b.scan_from();
                        b.hold_tail_above(from);
                        from
                    },
                })
                .collect(),
            in_flight: blobs
                .values()
                .flat_map(|b| b.in_flight.borrow().values().copied().collect::<Vec<_>>())
                .collect(),
            main: ix.main_entries().map(|(f, l)| (f, l.to_raw())).collect(),
            overflow: ix.overflow_entries().map(|(k, l)| (k.to_vec(), l.to_raw())).collect(),
            quarantine: self.quarantine.borrow().clone(),
        }
    }

    /// Writes a checkpoint of the index (temporary file, fdatasync, rename, directory fsync)
    /// and removes older ones. Returns the checkpoint's size in bytes, or None if another
    /// checkpoint of this shard is being written.
    pub async fn checkpoint(&self) -> Result<Option<u64>> {
        if self.checkpointing.replace(true) {
            return Ok(None);
        }
        let r = self.write_checkpoint().await;
        self.checkpointing.set(false);
        self.checkpoint_done.notify_waiters();
        r.map(Some)
    }

    /// Whether enough was written since the last checkpoint that the core should write one
    /// (`checkpoint_every_records` / `checkpoint_every_bytes`), keeping startup scans short.
    pub fn checkpoint_due(&self) -> bool {
        let c = self.counters.borrow();
        c.since_checkpoint_records >= self.cfg.checkpoint_every_records
            || c.since_checkpoint_bytes >= self.cfg.checkpoint_every_bytes
    }

    async fn write_checkpoint(&self) -> Result<u64> {
        let snap = self.snapshot();
        let (records_then, bytes_then) = {
            let c = self.counters.borrow();
            (c.since_checkpoint_records, c.since_checkpoint_bytes)
        };
        let bytes = snap.encode();
        let name = ckpt_name(snap.max_seq);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let path = self.dir.join(&name);
        let _ = self.io.remove(&tmp).await;
        let file = self.io.open(&tmp, OpenMode::CreateNew).await.map_err(|e| self.disk_err(e))?;
        self.io.allocate(&file, bytes.len() as u64).await.map_err(|e| self.disk_err(e))?;
        let mut off = 0usize;
        while off < bytes.len() {
            let n = (bytes.len() - off).min(self.cfg.write_buf_bytes);
            let mut buf = self.io.alloc_buf(n).await;
            buf.clear();
            buf.extend_from(&bytes[off..off + n]);
            let (r, _) = self.io.write_at(&file, off as u64, buf).await;
            r.map_err(|e| self.disk_err(e))?;
            off += n;
        }
        self.io.sync_data(&file).await.map_err(|e| self.disk_err(e))?;
        self.io.rename(&tmp, &path).await.map_err(|e| self.disk_err(e))?;
        self.io.sync_dir(&self.dir).await.map_err(|e| self.disk_err(e))?;
        for old in self.io.list_dir(&self.dir).await.map_err(|e| self.disk_err(e))? {
            if parse_ckpt_name(&old).is_some_and(|s| s < snap.max_seq) {
                let _ = self.io.remove(&self.dir.join(&old)).await;
            }
        }
        self.io.sync_dir(&self.dir).await.map_err(|e| self.disk_err(e))?;
        let mut c = self.counters.borrow_mut();
        c.checkpoints += 1;
        // Records committed while the checkpoint was written still count towards the next.
        c.since_checkpoint_records -= records_then;
        c.since_checkpoint_bytes -= bytes_then;
        Ok(bytes.len() as u64)
    }

    /// Whether the shard is nearly out of room for new objects: it can't add another blob
    /// (`shard_size_max_bytes`; `extra_free_bytes`: what the filesystem has left beyond the
    /// blobs' preallocation) and its open blob has less than an eighth of a blob left.
    /// The free space is asked for only when the open blob is low on room.
    pub fn nearly_full(&self, extra_free_bytes: impl FnOnce() -> u64) -> bool {
        let size = self.cfg.blob_size_bytes;
        let room = self.open_blob.get().and_then(|id| self.blob(id)).map_or(0, |b| b.room());
        if room >= size / 8 + self.cfg.tombstone_reserve_bytes {
            return false;
        }
        let blobs: u64 = self.blobs.borrow().values().map(|b| b.size_bytes).sum();
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
            self.blobs.borrow().values().filter(|b| b.tail.get() > 0).cloned().collect();
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

    /// Damaged records and regions awaiting repair.
    pub fn quarantined(&self) -> Vec<Quarantined> {
        self.quarantine.borrow().clone()
    }

    /// Reads `key`'s record again if it was quarantined after a read error (the device may
    /// have failed it once and read it now: a remapped sector, a cable): if the record reads
    /// whole and passes its checksums, it is back in service. Returns whether it is.
    pub async fn recheck(self: &Rc<Self>, key: &[u8]) -> Result<bool> {
        let q = self
            .quarantine
            .borrow()
            .iter()
            .find(|q| q.key.as_deref() == Some(key) && q.reason == QuarantineReason::ReadError)
            .cloned();
        let Some(q) = q else { return Ok(false) };
        let Some(loc) = self.entry_of(key).filter(|l| l.blob() == q.blob && l.offset() == q.offset) else {
            return Ok(false);
        };
        // (whole, found corrupt): a record can have a bad sector and bad bytes both.
        let (whole, corrupt) = match self.open_reader(key, loc).await {
            Ok(Opened::Reader(mut r)) => loop {
                match r.next_chunk().await {
                    Ok(Some(_)) => {}
                    Ok(None) => break (true, false),
                    Err(e) if e.is_crash() => return Err(e),
                    Err(e) => break (false, matches!(e, Error::Corrupt { .. })),
                }
            },
            Ok(Opened::Bad(..)) => (false, true),
            Ok(Opened::OtherKey) => (false, false),
            Err(e) if e.is_crash() => return Err(e),
            Err(_) => (false, false),
        };
        // Still the record the index points to (a write may have replaced it meanwhile).
        let same = self.entry_of(key) == Some(loc);
        if corrupt && same {
            // Read now, it fails its checksums: not a passing read error but damage, which only
            // a repair (a newer copy) ends. The mark says so.
            for m in self.quarantine.borrow_mut().iter_mut() {
                if m.key.as_deref() == Some(key) && m.reason == QuarantineReason::ReadError {
                    m.reason = QuarantineReason::ReadChecksum;
                }
            }
            tracing::warn!(
                "shard {}: the record at blob {} offset {}, quarantined after a read error, fails \
                 its checksums when read again; it awaits repair",
                self.id,
                loc.blob(),
                loc.offset()
            );
            return Ok(false);
        }
        if whole && same && self.quarantined_keys.borrow_mut().remove(key).is_some() {
            self.quarantine.borrow_mut().retain(|q| q.key.as_deref() != Some(key));
            tracing::info!(
                "shard {}: the quarantined record of a key reads whole again; back in service",
                self.id
            );
            return Ok(true);
        }
        Ok(false)
    }

    /// Counters and gauges of the shard.
    pub fn stats(&self) -> ShardStats {
        let ix = self.index.borrow();
        let blobs = self.blobs.borrow();
        let c = self.counters.borrow();
        let (syncs, last_batch) =
            blobs.values().fold((0, 0), |(s, l), b| (s + b.commit.syncs(), l.max(b.commit.last_batch())));
        let used: u64 = blobs.values().map(|b| b.tail.get()).sum();
        ShardStats {
            shard_id: self.id,
            objects: ix.live_objects(),
            tombstones: ix.tombstones(),
            live_bytes: c.live_bytes,
            dead_bytes: c.dead_bytes,
            blob_bytes: blobs.values().map(|b| b.size_bytes).sum(),
            used_bytes: used,
            index_bytes: ix.memory_bytes(),
            blobs: blobs.len() as u64,
            puts: c.puts,
            deletes: c.deletes,
            gets: c.gets,
            aborted_writes: c.aborted,
            io_errors: c.io_errors,
            checksum_errors: c.checksum_errors,
            quarantined: self.quarantine.borrow().len() as u64,
            syncs,
            open_blob_files: blobs.values().filter(|b| b.file.borrow().is_some()).count() as u64,
            blob_reopens: c.blob_reopens,
            last_sync_batch: last_batch,
            reads_in_flight_max: self.cfg.reads_in_flight_max as u64,
            reads_in_flight_peak: self.reads_peak.get() as u64,
            checkpoints: c.checkpoints,
            fenced: self.fenced.borrow().clone(),
            backlogs: self
                .cfg
                .peers
                .iter()
                .cloned()
                .zip(self.backlogs.borrow().iter().map(|b| b.stats()))
                .collect(),
            compact: self.compact_stats.borrow().clone(),
            compact_running: self.compact_ctl.is_running(),
            compact_paused: self.compact_ctl.is_paused(),
            scrub: {
                let mut st = self.scrub_stats.borrow().clone();
                st.pass_bytes_done = self.scrub_done.get();
                st
            },
            scrub_running: self.scrub_ctl.is_running(),
            scrub_paused: self.scrub_ctl.is_paused(),
            background_bytes_per_s: 0,
            background_bytes: 0,
            moved_away: 0,
            move_failures: 0,
            migrated_objects: 0,
            migrated_bytes: 0,
            migration_failures: 0,
            migration_backlog_bytes: 0,
            migration_running: false,
            migration_paused: false,
            migration_passes: 0,
            migration_last_error: None,
        }
    }
}

pub(crate) enum Opened<I: Io> {
    Reader(Box<ObjectReader<I>>),
    /// The fingerprint's record belongs to another key (a collision): this key is absent.
    OtherKey,
    Bad(FormatError, u64),
}

/// What a reader checks as it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadCheck {
    /// Every chunk's CRC32C before its bytes are handed out (GETs, and anything served).
    Verify,
    /// Nothing: the bytes go to a peer that checks the whole object against the XXH3-128
    /// digest from the record's footer (itself checksummed) before storing any of it. Saves a
    /// pass over cold memory per copied byte; a sender whose copy is refused reads again with
    /// [`ReadCheck::Verify`], which finds and quarantines a damaged record.
    ByPeer,
}

/// A write to copy to a peer from the backlog.
#[derive(Debug)]
pub enum CopyItem<I: Io> {
    Put(Box<ObjectReader<I>>),
    Delete { key: Vec<u8>, version: Version },
}

/// How a write is stamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// A write accepted here: a new version of this node's clock.
    Local,
    /// A copy of a write accepted elsewhere, with that write's version.
    Given(Version),
    /// A write moved here from another disk of this node (rebalancing, draining): like
    /// `Given`, but it joins no peer backlog (the peers were sent it when it was written, or
    /// the disk it came from still says they were not).
    Moved(Version),
}

/// The result of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteDone {
    /// An object existed before.
    pub existed: bool,
    /// The tombstone's version, if one was written.
    pub version: Option<Version>,
    /// The tombstone's sequence, if one was written.
    pub seq: Option<u64>,
}

/// The result of a committed PUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutDone {
    pub seq: u64,
    /// The write's version.
    pub version: Version,
    /// XXH3-128 of the content (the ETag).
    pub digest: [u8; 16],
    pub record_len: u64,
}

/// A PUT in progress. Dropping it without `finish` abandons the write: the object is not
/// stored and the reserved space is dead (recovery sees a record without a footer). Data
/// blocks are written strictly in order and the footer last, each write waiting for the one
/// before, which is what lets recovery tell an incomplete record from a damaged one.
/// [`PutWriter::abort`] also marks the space void on disk.
#[derive(Debug)]
pub struct PutWriter<I: Io> {
    shard: Rc<Shard<I>>,
    _permit: OwnedSemaphorePermit,
    _lock: KeyLock<I>,
    blob: Rc<BlobFile<I>>,
    header: Header,
    key: Vec<u8>,
    fp: u64,
    slot: Slot,
    /// What the key held before (version, tombstone), when known: its digest is replaced.
    held: Held,
    /// A move by compaction: the record this one copies (location, sequence).
    moved_from: Option<(Loc, u64)>,
    /// Whether the write joins the peers' backlogs.
    backlog: bool,
    buf: Option<AlignedBuf>,
    /// The previous buffer's write, submitted and not yet awaited: the next buffer fills while
    /// it is written (one write in flight at most; its buffer comes back as the next spare).
    pending: Option<PendingWrite>,
    written: u64,
    sums: DataSums,
    finished: bool,
    broken: bool,
    /// Bytes of the reservation this writer still counts in `Shard::unfilled`.
    unfilled: u64,
    /// The abandoned reservation's space was given back (no dead bytes left behind).
    given_back: bool,
}

/// How a copy from elsewhere (a peer, a compaction move) is checked before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyCheck {
    /// The whole object's XXH3-128, computed here over every byte.
    Digest([u8; 16]),
    /// The chunk CRC32Cs the sender stored (see [`PutWriter::check_chunks_only`]), and the
    /// digest to store with them.
    Chunks { digest: [u8; 16], crcs: Vec<u32> },
}

/// A buffer's write in flight (see `PutWriter::flush`).
struct PendingWrite(WriteFuture);

type WriteFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<AlignedBuf>>>>;

impl std::fmt::Debug for PendingWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingWrite")
    }
}

impl<I: Io> std::fmt::Debug for KeyLock<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyLock({:x})", self.fp)
    }
}

impl<I: Io> PutWriter<I> {
    /// Submits the full buffer's write and returns with an empty buffer to fill, once the
    /// previous write (if any) is done: at most one write in flight, whose failure the next
    /// call (or `settle`) reports. `last`: no more data follows (no buffer is needed).
    async fn flush(&mut self, last: bool) -> Result<()> {
        let buf = self.buf.take().expect("writer holds its buffer");
        let n = buf.len() as u64;
        let at = self.header.offset + self.written;
        assert!(self.written + n <= self.header.record_len, "write past the reservation");
        let spare = self.settle().await?;
        let (shard, blob) = (self.shard.clone(), self.blob.clone());
        let write: WriteFuture = Box::pin(async move { shard.write_fenced(&blob, at, buf).await });
        self.pending = Some(PendingWrite(crate::scan::submit_now(write)));
        self.written += n;
        self.release_unfilled(n);
        if !last {
            // A second buffer no larger than what is left of the record (a 1 MiB object
            // leaves only its footer after its first buffer).
            let rest = (self.header.record_len - self.written).max(BLOCK) as usize;
            let mut next = match spare {
                Some(b) => b,
                None => self.shard.io.alloc_buf(self.shard.cfg.write_buf_bytes.min(rest)).await,
            };
            next.clear();
            self.buf = Some(next);
        }
        Ok(())
    }

    /// Stops counting `n` bytes of the reservation as unfilled.
    fn release_unfilled(&mut self, n: u64) {
        let n = n.min(self.unfilled);
        self.unfilled -= n;
        self.shard.unfilled.set(self.shard.unfilled.get().saturating_sub(n));
    }

    /// Waits for the write in flight, if any; returns its buffer.
    async fn settle(&mut self) -> Result<Option<AlignedBuf>> {
        match self.pending.take() {
            Some(w) => w.0.await.map(Some),
            None => Ok(None),
        }
    }

    async fn append(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let buf = self.buf.as_mut().expect("writer holds its buffer");
            let n = buf.extend_from(data);
            data = &data[n..];
            if buf.len() == buf.capacity() {
                self.flush(false).await?;
            }
        }
        Ok(())
    }

    /// Appends body bytes. Fails (and the PUT is abandoned) if more than the announced length
    /// arrives or the disk fails.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.usable()?;
        let got = self.sums.total() + data.len() as u64;
        if got > self.header.object_len {
            self.broken = true;
            return Err(Error::BodyLength { expected: self.header.object_len, got });
        }
        self.sums.update(data);
        let r = self.append(data).await;
        self.broken |= r.is_err();
        r
    }

    /// Room for body bytes in the writer's aligned buffer, at most what the object still
    /// needs: a reader can receive straight into it (then [`PutWriter::commit_spare`]) and
    /// save a copy. Empty when the object is complete.
    pub fn spare(&mut self) -> &mut [u8] {
        let left = self.header.object_len - self.sums.total();
        let buf = self.buf.as_mut().expect("writer holds its buffer");
        let start = buf.len();
        let n = ((buf.capacity() - start) as u64).min(left) as usize;
        &mut buf.spare_all()[start..start + n]
    }

    /// Takes the first `n` bytes of [`PutWriter::spare`] as body bytes (checksummed like
    /// [`PutWriter::write`]), writing the buffer out when it is full.
    pub async fn commit_spare(&mut self, n: usize) -> Result<()> {
        self.usable()?;
        let buf = self.buf.as_mut().expect("writer holds its buffer");
        let start = buf.len();
        assert!(start + n <= buf.capacity(), "commit beyond the spare room");
        assert!(self.sums.total() + n as u64 <= self.header.object_len, "commit beyond the object");
        self.sums.update(&buf.spare_all()[start..start + n]);
        buf.set_len(start + n);
        if buf.len() == buf.capacity() {
            let r = self.flush(false).await;
            self.broken |= r.is_err();
            r?;
        }
        Ok(())
    }

    /// After a failed write the record can't be completed: every later call fails too.
    fn usable(&self) -> Result<()> {
        if !self.broken {
            return Ok(());
        }
        self.shard.check_writable()?;
        Err(Error::Invalid("continuation of a failed write"))
    }

    /// Bytes of body received so far.
    pub fn received(&self) -> u64 {
        self.sums.total()
    }

    /// Completes the record, waits until it is durable, and makes it visible.
    pub async fn finish(self) -> Result<PutDone> {
        self.finish_expecting(None).await
    }

    /// Like [`PutWriter::finish`], but when `digest` is given (a copy from a peer names the
    /// content's XXH3-128), the record is completed only if the bytes received match it; on a
    /// mismatch nothing is stored and the call fails.
    pub async fn finish_expecting(self, digest: Option<[u8; 16]>) -> Result<PutDone> {
        self.finish_checked(digest.map(CopyCheck::Digest)).await
    }

    /// Checks a copy by the chunk CRC32Cs its sender stored with it instead of the whole
    /// object's digest (call before any data): the CRCs are computed here anyway, for the
    /// footer, so each byte is passed over once instead of twice. Finish with
    /// [`PutWriter::finish_copy`] and [`CopyCheck::Chunks`]: the digest is then taken as given
    /// once every chunk matches, which is what a GET checks of every chunk it serves (and a
    /// scrub checks the digest too).
    pub fn check_chunks_only(&mut self) {
        self.sums.crcs_only();
    }

    /// Completes a copy only if its content matches `check`; on a mismatch nothing is stored
    /// and the call fails.
    pub async fn finish_copy(self, check: CopyCheck) -> Result<PutDone> {
        self.finish_checked(Some(check)).await
    }

    async fn finish_checked(mut self, check: Option<CopyCheck>) -> Result<PutDone> {
        self.usable()?;
        if self.sums.total() != self.header.object_len {
            return Err(Error::BodyLength { expected: self.header.object_len, got: self.sums.total() });
        }
        let sums = std::mem::replace(&mut self.sums, DataSums::new());
        let hashed = sums.hashing();
        let mut footer = sums.finish(self.header.seq);
        let matches = match &check {
            None => hashed,
            Some(CopyCheck::Digest(d)) => hashed && *d == footer.digest,
            Some(CopyCheck::Chunks { digest, crcs }) => {
                *crcs == footer.chunk_crcs && (!hashed || *digest == footer.digest)
            }
        };
        if !matches {
            self.broken = true;
            return Err(Error::Invalid("the content does not match the checksums it was sent with"));
        }
        if let Some(CopyCheck::Chunks { digest, .. }) = check {
            footer.digest = digest;
        }
        self.append(&footer.encode()).await?;
        if let Some(b) = self.buf.as_mut() {
            if !b.is_empty() {
                b.pad_to_alignment();
                self.flush(true).await?;
            }
        }
        // Every write done (the footer's last) before the sync that makes them durable.
        self.settle().await?;
        assert_eq!(self.written, self.header.record_len, "record length mismatch");
        self.shard.commit(&self.blob).await?;
        self.blob.in_flight.borrow_mut().remove(&self.header.offset);
        self.finished = true;
        self.release_unfilled(u64::MAX);
        let loc = Loc::new(self.blob.id, self.header.offset, self.header.record_len, false);
        if let Some((from, old_seq)) = self.moved_from {
            self.shard.switch_moved(self.slot, self.fp, &self.key, from, old_seq, &self.header);
            return Ok(PutDone {
                seq: self.header.seq,
                version: self.header.version,
                digest: footer.digest,
                record_len: self.header.record_len,
            });
        }
        self.shard.commit_index(self.slot, self.fp, &self.key, loc, self.header.record_len);
        self.shard.digest_apply(&self.key, self.held, Some((self.header.version, false)));
        if self.backlog {
            self.shard.backlog_add(&self.header);
        }
        self.shard.counters.borrow_mut().puts += 1;
        Ok(PutDone {
            seq: self.header.seq,
            version: self.header.version,
            digest: footer.digest,
            record_len: self.header.record_len,
        })
    }

    /// Abandons the write. Its space is given back when it can be (a dedicated blob is
    /// removed; a reservation at the open blob's tail is reused, `Shard::give_back`), else
    /// marked void on disk (best effort: if the mark is lost in a crash, recovery reports the
    /// incomplete record instead) for compaction, or for the tail to come back over it.
    pub async fn abort(mut self) -> Result<()> {
        // The void mark must land after the header write it overrides, never before it; and
        // no write of this record may still be in flight when its space is given back.
        let spare = self.settle().await;
        if spare.is_ok() && self.shard.give_back(&self.blob, &self.header).await? {
            self.given_back = true;
            return Ok(());
        }
        let mut h = self.header.clone();
        h.flags |= FLAG_VOID;
        let mut buf = match (self.buf.take(), spare) {
            (Some(b), _) | (None, Ok(Some(b))) => b,
            _ => AlignedBuf::new(BLOCK as usize),
        };
        buf.clear();
        buf.set_len(h.data_start() as usize);
        h.encode(
            &self.key,
            &vec![b' '; h.content_type_len as usize],
            buf.as_mut_slice(),
            &self.shard.record_key,
        );
        buf.pad_to_alignment();
        buf.set_len(BLOCK as usize);
        let r = self.shard.write_fenced(&self.blob, h.offset, buf).await;
        if r.is_ok() && !self.blob.dedicated {
            self.blob.voided.borrow_mut().insert(h.offset, h.record_len);
        }
        r.map(|_| ())
    }
}

impl<I: Io> Drop for PutWriter<I> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.blob.in_flight.borrow_mut().remove(&self.header.offset);
        self.release_unfilled(u64::MAX);
        let mut c = self.shard.counters.borrow_mut();
        c.aborted += 1;
        if !self.given_back {
            c.dead_bytes += self.header.record_len;
        }
    }
}

/// A verified reader of one object (or a byte range of it).
#[derive(Debug)]
pub struct ObjectReader<I: Io> {
    shard: Rc<Shard<I>>,
    file: I::File,
    key: Vec<u8>,
    loc: Loc,
    header: Header,
    footer: Footer,
    /// The whole record, for records read in one go (verified when `check` says so).
    mem: Option<Rc<AlignedBuf>>,
    check: ReadCheck,
    pos: u64,
    end: u64,
    /// What the object is.
    pub meta: ObjectMeta,
}

impl<I: Io> ObjectReader<I> {
    /// The CRC32C of each data chunk, as the record's footer stores them (a copy to a peer
    /// sends them: see [`PutWriter::check_chunks_only`]).
    pub fn chunk_crcs(&self) -> &[u32] {
        &self.footer.chunk_crcs
    }

    /// The key this reader reads.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Where the record read is.
    pub fn loc(&self) -> Loc {
        self.loc
    }

    /// Restricts the reader to bytes `[start, end)` of the object (before reading).
    pub fn set_range(&mut self, start: u64, end: u64) {
        assert!(
            start <= end && end <= self.meta.object_len,
            "range {start}..{end} of {}",
            self.meta.object_len
        );
        self.pos = start;
        self.end = end;
    }

    /// The next verified piece of the object, or None at the end of the range.
    pub async fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let ds = self.header.data_start();
        if let Some(mem) = &self.mem {
            let c =
                Chunk { buf: mem.clone(), start: (ds + self.pos) as usize, end: (ds + self.end) as usize };
            self.pos = self.end;
            return Ok(Some(c));
        }
        // Large record: read the 1 MiB chunk holding `pos`, verify it, return its part.
        let ci = self.pos / CHUNK_BYTES;
        let c_start = ci * CHUNK_BYTES;
        let c_end = (c_start + CHUNK_BYTES).min(self.meta.object_len);
        let disk_start = self.loc.offset() + ds + c_start;
        let aligned = disk_start - disk_start % BLOCK;
        let disk_end = podstore_disks::align_up(self.loc.offset() + ds + c_end);
        let len = (disk_end - aligned) as usize;
        let mut buf = self.shard.io.alloc_buf(len).await;
        buf.set_len(len);
        let (mut r, mut buf) = self.shard.read_limited(&self.file, aligned, buf).await;
        if r.as_ref().is_err_and(|e| !matches!(e, podstore_disks::Error::Crashed)) {
            buf.set_len(len);
            (r, buf) = self.shard.read_limited(&self.file, aligned, buf).await;
            // once more
        }
        if let Err(e) = r {
            let e = self.shard.disk_err(e);
            if read_failed(&e) {
                self.shard.quarantine_read(&self.key, self.loc, self.header.seq, QuarantineReason::ReadError);
            }
            return Err(e);
        }
        let skip = (disk_start - aligned) as usize;
        let n = (c_end - c_start) as usize;
        let data = buf.get(skip..skip + n);
        let ok = data.map(|d| match self.check {
            ReadCheck::Verify => verify_chunks(&self.footer, ci, d),
            ReadCheck::ByPeer => Ok(()),
        });
        match ok {
            Some(Ok(())) => {}
            other => {
                let e = match other {
                    Some(Err(e)) => e,
                    _ => FormatError::Short,
                };
                self.shard.counters.borrow_mut().checksum_errors += 1;
                self.shard.quarantine_read(
                    &self.key,
                    self.loc,
                    self.header.seq,
                    QuarantineReason::ReadChecksum,
                );
                return Err(corrupt(self.shard.id, self.loc.blob(), self.loc.offset(), e));
            }
        }
        let from = (self.pos - c_start) as usize;
        let to = (self.end.min(c_end) - c_start) as usize;
        self.pos = self.end.min(c_end);
        Ok(Some(Chunk { buf: Rc::new(buf), start: skip + from, end: skip + to }))
    }

    /// Reads the rest of the range into memory (tests and small objects).
    pub async fn read_all(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity((self.end - self.pos) as usize);
        while let Some(c) = self.next_chunk().await? {
            out.extend_from_slice(&c);
        }
        Ok(out)
    }
}
