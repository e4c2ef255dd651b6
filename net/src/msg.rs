//! The messages a core's inbox takes: work on the objects of the disks it owns, sent by
//! whichever core took the request, and the answers' shapes.

use bytes::Bytes;
use podstore_disks::DiskSpec;
use podstore_engine::{DeleteDone, ObjectMeta, PutDone, RecoveryReport, ShardStats, Stamp};
use tokio::sync::{mpsc, oneshot};

use crate::body::Piece;
use crate::range::RangeAnswer;

/// Body of a PUT on its way to the owning core.
#[derive(Debug)]
pub enum BodyMsg {
    Data(Bytes),
    /// The body is complete; `ok` is false when it must not be stored (bad Content-MD5, a
    /// peer's aborted copy). `digest`: the content must have this XXH3-128 (a peer's copy).
    End {
        ok: bool,
        digest: Option<[u8; 16]>,
    },
}

/// What became of a PUT on the owning core.
#[derive(Debug)]
pub enum PutOutcome {
    Stored(PutDone),
    /// The shard already holds this version of the key or a newer one: nothing written.
    Superseded,
    /// The body was not to be stored.
    Aborted,
}

/// The start of a GET: what the object is and the bytes to come.
#[derive(Debug)]
pub struct GetStart {
    pub meta: ObjectMeta,
    pub range: RangeAnswer,
    /// The first verified piece, read before answering: a small object travels whole in the
    /// reply, and a read error becomes an error status instead of a cut-off body.
    pub first: Option<Bytes>,
    /// The pieces after the first (None when the first is the whole answer).
    pub body: Option<mpsc::Receiver<Piece>>,
}

/// Work for the core that owns a shard.
#[derive(Debug)]
pub enum CoreMsg {
    Put {
        shard: u32,
        key: Vec<u8>,
        attrs: podstore_engine::Attrs,
        len: u64,
        stamp: Stamp,
        /// The sender hashes the body as it passes: the digest its end names is stored as it
        /// is (the writer computes only the chunk CRCs). Otherwise a digest there is checked.
        digest_given: bool,
        body: mpsc::Receiver<BodyMsg>,
        reply: oneshot::Sender<Result<PutOutcome, podstore_engine::Error>>,
    },
    Get {
        shard: u32,
        key: Vec<u8>,
        range: Option<String>,
        head: bool,
        reply: oneshot::Sender<Result<Option<GetStart>, podstore_engine::Error>>,
    },
    Delete {
        shard: u32,
        key: Vec<u8>,
        stamp: Stamp,
        /// Write a tombstone even if the key is absent here (a replica set needs it).
        always: bool,
        reply: oneshot::Sender<Result<DeleteDone, podstore_engine::Error>>,
    },
    /// Whole objects from memory written to one disk in as few writes as their places allow
    /// (tiering's migration: `Shard::put_batch`).
    PutBatch {
        shard: u32,
        items: Vec<podstore_engine::BatchItem>,
        reply: oneshot::Sender<PutBatchResult>,
    },
    Stats {
        reply: oneshot::Sender<Vec<ShardStats>>,
    },
    /// The XOR of this core's shards' bucket digests.
    Digests {
        reply: oneshot::Sender<Vec<u64>>,
    },
    /// Every current key of a digest bucket on this core's shards.
    BucketKeys {
        bucket: usize,
        reply: oneshot::Sender<Result<Vec<podstore_engine::digest::KeyState>, podstore_engine::Error>>,
    },
    /// Whether the key was deleted here (read repair leaves deleted keys alone).
    Deleted {
        shard: u32,
        key: Vec<u8>,
        reply: oneshot::Sender<bool>,
    },
    /// Send the key's newest write here to peer `peer` (index in the config).
    Push {
        shard: u32,
        key: Vec<u8>,
        peer: usize,
        /// A client waits for this copy: dial even if a dial failed a moment ago.
        insist: bool,
        reply: oneshot::Sender<crate::peer::link::CopyResult>,
    },
    /// Peer `peer` (index in the config) confirmed the write with this sequence.
    Confirm {
        shard: u32,
        seq: u64,
        peer: usize,
    },
    /// Whether a disk's index has an entry for the key (in memory: no disk read; a key sharing
    /// its fingerprint also answers yes).
    Has {
        shard: u32,
        key: Vec<u8>,
        reply: oneshot::Sender<bool>,
    },
    /// A page of a disk's names from a seek (`Shard::list_names`): storage keys from `from`
    /// on that start with `prefix`, at most `max`.
    ListNames {
        shard: u32,
        from: Box<[u8]>,
        prefix: Box<[u8]>,
        max: usize,
        reply: oneshot::Sender<Result<podstore_engine::names::Listed, podstore_engine::Error>>,
    },
    /// Forgets a key on one disk if its newest record there still has `version`, with no
    /// tombstone (`Shard::forget`): the multipart sweep's garbage, which this appliance alone
    /// judged dead. Answers whether it did.
    Forget {
        shard: u32,
        key: Vec<u8>,
        version: podstore_engine::Version,
        reply: oneshot::Sender<Result<bool, podstore_engine::Error>>,
    },
    /// The version of the key's newest record on a disk (None: the disk has none).
    Version {
        shard: u32,
        key: Vec<u8>,
        reply: oneshot::Sender<Result<Option<(podstore_engine::Version, bool)>, podstore_engine::Error>>,
    },
    /// Open a disk added while the node runs (checked and labelled already) on this core and
    /// start its background jobs; None: it was open already.
    AddDisk {
        spec: DiskSpec,
        profile: Option<crate::profile::DiskProfile>,
        reply: oneshot::Sender<Result<Option<RecoveryReport>, podstore_engine::Error>>,
    },
    /// Start, pause, resume or stop a background job on one disk of this core (or all).
    Job {
        disk: Option<u32>,
        job: JobKind,
        action: JobAction,
        ratio: Option<f64>,
        /// Migration: move every blob no GET read for this many seconds (default the
        /// configured `tiering.migrate_idle_s`).
        idle_s: Option<u64>,
        /// The disks it was applied to.
        reply: oneshot::Sender<Vec<u32>>,
    },
}

/// What became of each object of a `CoreMsg::PutBatch`, in order (Err: none was written).
pub type PutBatchResult =
    Result<Vec<Result<podstore_engine::BatchOutcome, podstore_engine::Error>>, podstore_engine::Error>;

/// A background job of the disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Compact,
    Scrub,
    /// Tiering's migration of a fast disk to the capacity tier.
    Migrate,
}

/// What to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobAction {
    /// Run a pass now (compaction at the given dead share, default any; scrub unpaced).
    Start,
    Pause,
    Resume,
    /// End the current pass at its next step (scrub resumes there at its next pass).
    Stop,
}
