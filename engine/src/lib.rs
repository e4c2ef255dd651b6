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

pub mod attrs;
pub mod backlog;
mod blob;
pub mod budget;
pub mod cache;
pub mod checkpoint;
pub mod digest;
mod error;
pub mod files;
mod group_commit;
mod hex;
pub mod index;
pub mod names;
pub mod placement;
pub mod record;
pub mod record_key;
pub mod route;
mod scan;
mod shard;
mod shard_set;
pub mod version;
pub mod write_memory;

pub use attrs::{Attrs, AttrsError, DigestKind, Multipart};
pub use error::{Error, Result};
pub use hex::{hex, hex_into};
pub use shard::{compact, scrub};
pub use shard::{
    validate, BatchItem, BatchOutcome, Chunk, CopyCheck, CopyItem, DeleteDone, NamesFootprint, ObjectMeta,
    ObjectReader, PutDone, PutWriter, ReadCheck, RecoveryReport, Shard, ShardConfig, ShardStats, Stamp,
};
pub use shard_set::{KeyVersion, ShardSet, ShardSpec};
pub use version::{now_ms, Clock, Version};
