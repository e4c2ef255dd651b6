//! podstore's storage engine: one shard per disk, and the node's set of shards.
//!
//! - [`record`]: the on-disk record format (byte diagram there).
//! - [`Shard`]: blob files, index, group commit, reads, deletes, checkpoints; recovery in
//!   `recovery.rs`.
//! - [`ShardSet`]: the shards of a core and the API the network layer calls.
//! - [`placement`]: which shard holds a key.
//!
//! Everything here runs on one core's thread; nothing is `Send`. Disk access goes through
//! [`podstore_disks::Io`], so the same engine runs on io_uring, the fallback and the simulator.
#![forbid(unsafe_code)]

pub mod backlog;
mod batch;
mod blob;
pub mod budget;
pub mod checkpoint;
pub mod compact;
pub mod digest;
mod error;
mod group_commit;
pub mod index;
pub mod placement;
mod rebalance;
pub mod record;
pub mod record_key;
mod recovery;
mod scan;
pub mod scrub;
mod shard;
mod shard_set;
pub mod version;

pub use batch::{BatchItem, BatchOutcome};
pub use error::{Error, Result};
pub use recovery::RecoveryReport;
pub use shard::{
    validate, Chunk, CopyCheck, CopyItem, DeleteDone, ObjectMeta, ObjectReader, PutDone, PutWriter,
    ReadCheck, Shard, ShardConfig, ShardStats, Stamp,
};
pub use shard_set::{KeyVersion, ShardSet, ShardSpec};
pub use version::{Clock, Version};
