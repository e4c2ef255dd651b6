//! What the node's cores and its admin thread share: the configuration in force, the disks
//! and their routes, the cores' inboxes, counters; and the engine settings every shard gets.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;

use podstore_disks::AnyIo;
use podstore_engine::placement::Candidate;
use podstore_engine::{Shard, ShardConfig};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::msg::CoreMsg;

/// State of one configured disk, for `/admin/disks` and metrics.
#[derive(Debug, Clone)]
pub struct DiskInfo {
    pub id: u32,
    pub path: std::path::PathBuf,
    pub tier: podstore_disks::Tier,
    /// Why the disk is not serving, if it is not.
    pub failed: Option<String>,
    pub capacity_bytes: u64,
    pub core: usize,
    /// Its measured profile (`podstore-tune measure`), if one was found.
    pub profile: Option<crate::profile::DiskProfile>,
    /// This process's lock on the disk (none for a disk that failed its checks): held while
    /// the node keeps the disk in its layout, that is until it exits.
    pub lock: Option<Arc<podstore_disks::DiskLock>>,
}

/// The node's disks as they are now.
#[derive(Debug, Default, Clone)]
pub struct Layout {
    /// The disks that opened, with their weights (what peers are told).
    pub placement: Vec<Candidate>,
    /// The core that owns each open disk.
    pub shard_core: HashMap<u32, usize>,
    /// Every disk of the node, open or not.
    pub disks: Vec<DiskInfo>,
}

impl Shared {
    /// The configuration in force now (SIGHUP may replace its reloadable parts).
    pub fn cfg(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The bytes of blob files disk `id` may hold: its filesystem's size, or
    /// `engine.disk_bytes_max` when that is smaller (0 for a disk the node does not have).
    pub fn usable_bytes(&self, id: u32) -> u64 {
        let fs = self.disk(id).map(|d| d.capacity_bytes).unwrap_or(0);
        match self.cfg().engine.disk_bytes_max {
            0 => fs,
            max => fs.min(max),
        }
    }

    /// The core that owns disk `id`, if it is open.
    pub fn core_of(&self, id: u32) -> Option<usize> {
        self.layout.load().shard_core.get(&id).copied()
    }

    /// Disk `id` as the node knows it.
    pub fn disk(&self, id: u32) -> Option<DiskInfo> {
        self.layout.load().disks.iter().find(|d| d.id == id).cloned()
    }
}

/// What every core and the admin thread share: read-only after startup, apart from atomics and
/// the layout (swapped whole when a disk is added).
#[derive(Debug)]
pub struct Shared {
    /// The configuration in force: the file read at start, with the parts SIGHUP reloads
    /// (reload.rs) replaced; read it through [`Shared::cfg`].
    pub config: arc_swap::ArcSwap<Config>,
    /// Which disk holds a key and which takes its writes (engine/src/route.rs).
    pub routes: podstore_engine::route::Routes,
    /// Wakes every disk's rebalancing (a disk filled up, failed or is to be drained).
    pub rebalance_wake: tokio::sync::Notify,
    /// Keys forgotten by a disk after a move to another (counted by the shard as each entry
    /// goes, `ShardConfig::forgets_total`; a read that found nothing while it changed looks
    /// again).
    pub moves: Arc<AtomicU64>,
    /// The node's budget for write buffers (`engine.write_memory_bytes`), shared by every shard.
    pub write_memory: Arc<podstore_engine::write_memory::WriteMemory>,
    /// The node's disks and the cores that own them (replaced whole when a disk is added).
    pub layout: arc_swap::ArcSwap<Layout>,
    /// Each disk's last rebalance pass that found every key in place: the routing epoch it
    /// started and ended in (maintenance.rs clears spilled marks when all agree).
    pub settled: std::sync::Mutex<HashMap<u32, u64>>,
    /// Each fast disk's fill (blob bytes over capacity) at its migration's last look: objects
    /// are promoted only to a fast disk below its high watermark.
    pub fast_fill: std::sync::Mutex<HashMap<u32, f64>>,
    /// Objects promoted to the fast tier.
    pub promoted: AtomicU64,
    /// The keys (fingerprints) being moved between disks right now: one move of a key at a
    /// time (maintenance::move_key). Two at once, in opposite directions (a migration to the
    /// capacity tier and a promotion back), would each forget the copy the other made.
    pub moving: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// A disk is being added (one at a time).
    pub adding_disk: AtomicBool,
    pub inboxes: Vec<mpsc::Sender<CoreMsg>>,
    pub ready: AtomicBool,
    pub draining: AtomicBool,
    pub connections: AtomicUsize,
    pub heartbeats: Vec<AtomicU64>,
    /// Object requests each core has served (its disks' background work yields to them).
    pub foreground_ops: Vec<AtomicU64>,
    /// Each core's RAM cache counters.
    pub ram_cache: Vec<Arc<podstore_engine::cache::CacheCounters>>,
    /// Object reads served by each tier: the RAM cache, fast disks, capacity disks.
    pub tier_reads: [AtomicU64; 3],
    pub recovery_ms: AtomicU64,
    /// The node's clock: versions of the writes it accepts.
    pub clock: Arc<podstore_engine::Clock>,
    /// The replica set's shared secret (when replication is configured).
    pub repl_secret: Option<Vec<u8>>,
    /// Client access keys (None: none configured, every request is allowed).
    pub auth: arc_swap::ArcSwapOption<crate::auth::Auth>,
    /// Test builds: faults injected on one disk (`PODSTORE_FAULTS`).
    pub faults: Option<podstore_disks::FaultPlan>,
    /// Anti-entropy progress, one per peer.
    pub anti_entropy: Vec<crate::peer::progress::AntiEntropy>,
    /// Catch-up progress, one per peer.
    pub catch_up: Vec<crate::peer::progress::CatchUp>,
    /// Per peer (config order): whether this node holds a live connection to it now (core 0
    /// keeps one open to each; `podstore_repl_peer_up`).
    pub peer_up: Vec<AtomicBool>,
}

/// Most messages waiting in one core's inbox.
pub const INBOX_MAX: usize = 4096;

/// Pieces of a body in flight between two cores.
pub const PIECES_IN_FLIGHT_MAX: usize = 4;

pub(crate) type Shards = Rc<RefCell<HashMap<u32, Rc<Shard<AnyIo>>>>>;

/// The engine settings of every shard, from the configuration.
pub(crate) fn shard_config(cfg: &Config, clock: Arc<podstore_engine::Clock>) -> ShardConfig {
    ShardConfig {
        clock,
        blob_size_bytes: cfg.engine.blob_size_bytes,
        object_size_max_bytes: cfg.limits.object_bytes_max,
        writes_in_flight_max: cfg.engine.writes_in_flight_max,
        open_blob_files_max: cfg.engine.open_blob_files_max,
        checkpoint_every_records: cfg.engine.checkpoint_every_records,
        checkpoint_every_bytes: cfg.engine.checkpoint_every_bytes,
        // Room for deletes on a full disk: 1/64 of a blob, at least 1 MiB (256 tombstones),
        // at most a quarter of a blob. Space is reclaimed by compaction (maintenance.rs).
        tombstone_reserve_bytes: (cfg.engine.blob_size_bytes / 64)
            .max(1 << 20)
            .min(cfg.engine.blob_size_bytes / 4)
            / 4096
            * 4096,
        peers: cfg
            .replication
            .as_ref()
            .map(|r| r.peers.iter().map(|p| p.name.clone()).collect())
            .unwrap_or_default(),
        zero_ahead_bytes: cfg.engine.zero_ahead_bytes,
        names_memtable_bytes: cfg.engine.names_memtable_bytes,
        backlog_records_max: cfg.replication.as_ref().map_or(10_000_000, |r| r.backlog_records_max),
        tombstone_horizon_ms: cfg.maintenance.tombstone_horizon_s.saturating_mul(1000),
        shard_size_max_bytes: if cfg.engine.disk_bytes_max == 0 {
            u64::MAX
        } else {
            cfg.engine.disk_bytes_max
        },
        ..ShardConfig::default()
    }
}

/// `Shared::tier_reads` indexes, and their names.
pub const TIER_RAM: usize = 0;
pub const TIER_FAST: usize = 1;
pub const TIER_CAPACITY: usize = 2;
pub const TIER_NAMES: [&str; 3] = ["ram", "fast", "capacity"];

/// Marks a disk spilled (engine/src/route.rs), off the core's thread (it writes files on every disk).
pub(crate) async fn spill(shared: &Arc<Shared>, id: u32, why: &'static str) {
    let sh = shared.clone();
    let _ = tokio::task::spawn_blocking(move || sh.routes.spill(id, why)).await;
}
