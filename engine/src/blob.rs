//! Blob files: preallocated, append-only files of records on one shard.
//!
//! Regular blobs (`blob-NNNNNNN.psb`) have the configured size and take records in order; the
//! shard appends to one open blob and opens the next when it is full. A record too large for a
//! quarter of a regular blob gets a dedicated blob of exactly its size (`blob-NNNNNNN.psl`).
//! Space is reserved before a record is written, so several records (a large streaming PUT and
//! many small ones) can be written into one blob at once; each reservation stays "in flight"
//! until its record is durable or abandoned, and checkpoints remember the lowest in-flight
//! offset so recovery rescans from there.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use podstore_disks::Io;

use crate::group_commit::GroupCommit;

/// One blob file of the shard. Its descriptor is cached, not held: the shard closes those of
/// the least recently used sealed blobs past `ShardConfig::open_blob_files_max` and opens them
/// again when they are next read (`Shard::blob_file`).
#[derive(Debug)]
pub(crate) struct BlobFile<I: Io> {
    pub(crate) id: u32,
    /// The open descriptor, if cached. Operations take a clone, so closing the cached one
    /// never closes a file under an operation in flight.
    pub(crate) file: RefCell<Option<I::File>>,
    pub(crate) path: std::path::PathBuf,
    /// The shard's use counter when the file was last asked for (eviction order).
    pub(crate) last_use: Cell<u64>,
    pub(crate) size_bytes: u64,
    pub(crate) dedicated: bool,
    /// Next free offset (everything below is reserved or written).
    pub(crate) tail: Cell<u64>,
    /// Reservations not yet durable or abandoned: offset → sequence.
    pub(crate) in_flight: RefCell<BTreeMap<u64, u64>>,
    pub(crate) commit: GroupCommit,
    /// No new reservations will come (a dedicated blob, or a regular one replaced as the open
    /// blob): once nothing is in flight, recovery need not scan it.
    pub(crate) sealed: Cell<bool>,
    /// Sequence of the blob's first record, once read (records of a blob are in sequence
    /// order): compaction drops a tombstone only when no blob may hold an older record.
    pub(crate) first_seq: Cell<Option<u64>>,
    /// When a GET last read a record of this blob (ms since the epoch; the time the blob was
    /// opened or created until then): the tiering's migration takes the coldest blobs first.
    pub(crate) last_read_ms: Cell<u64>,
    /// The tail may go back (an abandoned reservation at its end is given back) no lower than
    /// this: the tail when the shard opened, the highest `scan_from` a checkpoint snapshot
    /// took (recovery rescans from there, so it must see what is written again below), and
    /// the end of what a scrub is reading.
    pub(crate) rewind_floor: Cell<u64>,
    /// Abandoned reservations not at the tail when abandoned (offset → length), their first
    /// block marked void: given back too once the tail comes down to their end.
    pub(crate) voided: RefCell<BTreeMap<u64, u64>>,
    /// Zeroing ahead of the tail (shard/zero_ahead.rs): where the region written with zeros
    /// ends (0 until the first zeroing), ...
    pub(crate) zeroed: Cell<u64>,
    /// ... where the zeroing in flight starts, if one is (no reservation may reach past it
    /// until it is done), ...
    pub(crate) zeroing: Cell<Option<u64>>,
    /// ... woken when it is done, ...
    pub(crate) zero_done: tokio::sync::Notify,
    /// ... and whether writes caught up with it on this blob (no more zeroing here: they go
    /// faster than it helps).
    pub(crate) zero_stopped: Cell<bool>,
}

impl<I: Io> BlobFile<I> {
    pub(crate) fn new(
        id: u32,
        file: I::File,
        path: std::path::PathBuf,
        size_bytes: u64,
        dedicated: bool,
        tail: u64,
    ) -> BlobFile<I> {
        BlobFile {
            id,
            file: RefCell::new(Some(file)),
            path,
            last_use: Cell::new(0),
            size_bytes,
            dedicated,
            tail: Cell::new(tail),
            in_flight: RefCell::new(BTreeMap::new()),
            commit: GroupCommit::default(),
            sealed: Cell::new(dedicated),
            first_seq: Cell::new(None),
            last_read_ms: Cell::new(crate::now_ms()),
            rewind_floor: Cell::new(tail),
            voided: RefCell::new(BTreeMap::new()),
            zeroed: Cell::new(0),
            zeroing: Cell::new(None),
            zero_done: tokio::sync::Notify::new(),
            zero_stopped: Cell::new(dedicated),
        }
    }

    /// Bytes left for new records.
    pub(crate) fn room(&self) -> u64 {
        self.size_bytes - self.tail.get()
    }

    /// Where recovery must rescan from: the lowest in-flight reservation, else the tail.
    pub(crate) fn scan_from(&self) -> u64 {
        let end = if self.sealed.get() { self.size_bytes } else { self.tail.get() };
        self.in_flight.borrow().keys().next().copied().unwrap_or(end)
    }

    /// Keeps the tail at or above `offset` from now on.
    pub(crate) fn hold_tail_above(&self, offset: u64) {
        self.rewind_floor.set(self.rewind_floor.get().max(offset));
    }
}
