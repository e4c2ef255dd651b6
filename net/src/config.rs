//! The node's configuration: a TOML file (`--config`) or the embedded default.
//!
//! Every key is documented in `deploy/podstore.toml`, the commented example. Unknown keys and
//! bad values are errors that name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use podstore_disks::{CacheMode, Tier};
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's name; written into every disk label.
    pub node_id: String,
    /// Cores (pinned threads) to run; 0 means every CPU the process may use.
    #[serde(default)]
    pub cores: usize,
    /// `io_uring` (default) or `sync` (the pread/pwrite fallback).
    #[serde(default = "default_io_backend")]
    pub io_backend: String,
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub engine: Engine,
    #[serde(default)]
    pub maintenance: Maintenance,
    #[serde(default)]
    pub ram_cache: RamCacheConf,
    #[serde(default)]
    pub tiering: Tiering,
    /// The X-Copies a request gets when it names none.
    #[serde(default = "default_copies")]
    pub default_copies: String,
    /// What the log shows (tracing EnvFilter directives, e.g. "info" or
    /// "info,podstore_net::repl=debug"); PODSTORE_LOG, when set, wins. Reloaded on SIGHUP.
    #[serde(default)]
    pub log: Option<String>,
    /// The replica set: this node's peers in other datacenters. None: a single appliance.
    #[serde(default)]
    pub replication: Option<Replication>,
    /// Access keys and public buckets (auth.rs). No keys: every request is allowed, and the
    /// node listens on loopback only unless started with `--insecure`.
    #[serde(default)]
    pub auth: AuthConf,
    /// Missing in a fresh install's file: the check then says no disk is configured yet.
    #[serde(default)]
    pub disks: Vec<DiskConf>,
    /// `podstore serve --insecure`: listening beyond loopback without access keys (or with the
    /// admin port, which has no authentication, beyond loopback) is allowed.
    #[serde(skip)]
    pub insecure: bool,
}

/// Client authentication (issue 8; auth.rs, API.md "Authentication").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConf {
    /// Buckets anyone may GET and HEAD without credentials.
    pub public_buckets: Vec<String>,
    pub keys: Vec<AccessKeyConf>,
}

/// One access key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyConf {
    /// 1-64 of `A-Z a-z 0-9 _ -`; clients send `Bearer <id>.<secret>`.
    pub id: String,
    /// A file readable by the service only, holding the secret (at least 32 characters of
    /// base64 or another bearer-token alphabet).
    pub secret_file: PathBuf,
    /// The buckets the key may use (empty: every bucket).
    #[serde(default)]
    pub buckets: Vec<String>,
    /// GET and HEAD only.
    #[serde(default)]
    pub read_only: bool,
}

/// Replication to peer appliances (issue 4; DESIGN.md §3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replication {
    /// The replication port's address (default 127.0.0.1:7071).
    #[serde(default = "default_repl_listen", deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// This node's datacenter.
    pub datacenter: String,
    /// A file readable only by the service holding the replica set's shared secret.
    pub secret_file: PathBuf,
    /// Connections each core keeps to each peer.
    #[serde(default = "default_connections_per_peer")]
    pub connections_per_peer: usize,
    /// Time to connect and authenticate to a peer.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// A peer connection with no traffic for this long is checked with a ping and closed if
    /// the peer does not answer within it.
    #[serde(default = "default_peer_idle_ms")]
    pub peer_idle_ms: u64,
    /// Most unconfirmed writes kept per peer and disk; past it the peer needs anti-entropy.
    #[serde(default = "default_backlog_records_max")]
    pub backlog_records_max: u64,
    /// Copies of backlogged writes each core has in flight to each peer.
    #[serde(default = "default_catch_up_in_flight")]
    pub catch_up_in_flight: usize,
    /// Seconds between background anti-entropy passes with each peer (0: only on demand).
    #[serde(default = "default_anti_entropy_interval_s")]
    pub anti_entropy_interval_s: u64,
    /// Most objects an anti-entropy pass copies per second (each direction together).
    #[serde(default = "default_anti_entropy_objects_per_s")]
    pub anti_entropy_objects_per_s: u64,
    pub peers: Vec<PeerConf>,
}

fn default_repl_listen() -> SocketAddr {
    ([127, 0, 0, 1], 7071).into()
}
fn default_connections_per_peer() -> usize {
    4
}
fn default_connect_timeout_ms() -> u64 {
    2_000
}
fn default_peer_idle_ms() -> u64 {
    10_000
}
fn default_backlog_records_max() -> u64 {
    10_000_000
}
fn default_catch_up_in_flight() -> usize {
    64
}
fn default_anti_entropy_interval_s() -> u64 {
    3600
}
fn default_anti_entropy_objects_per_s() -> u64 {
    2000
}

/// One peer appliance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConf {
    /// The peer's node_id.
    pub name: String,
    pub datacenter: String,
    /// The peer's replication address.
    #[serde(deserialize_with = "socket_addr")]
    pub address: SocketAddr,
}

fn default_io_backend() -> String {
    "io_uring".into()
}

fn default_copies() -> String {
    "any".into()
}

/// Listening addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    #[serde(deserialize_with = "socket_addr")]
    pub data: SocketAddr,
    #[serde(deserialize_with = "socket_addr")]
    pub admin: SocketAddr,
    /// The S3 API's port (API.md "S3"); none when absent (the shipped configuration and the
    /// embedded default say 127.0.0.1:7073).
    #[serde(default, deserialize_with = "opt_socket_addr")]
    pub s3: Option<SocketAddr>,
    /// Virtual-hosted addressing on the S3 port: a request for host `bucket.<s3_domain>` is for
    /// that bucket (path-style requests keep working). None: path-style only.
    #[serde(default)]
    pub s3_domain: Option<String>,
}

fn opt_socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(d).map(Some)
}

/// An address as `ip:port`, `[ipv6]:port` or `host:port`; a host name is resolved once, when
/// the file is read (the first address the resolver gives).
fn socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    resolve(&text).map_err(serde::de::Error::custom)
}

/// [`socket_addr`] on text.
pub fn resolve(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    if text.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()) {
        return Err(format!("{text:?}: expected host:port, ip:port or [ipv6]:port"));
    }
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| format!("{text:?}: the name has no address")),
        Err(e) => Err(format!("{text:?}: can't resolve the host name: {e}")),
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            data: ([127, 0, 0, 1], 7070).into(),
            admin: ([127, 0, 0, 1], 7072).into(),
            s3: None,
            s3_domain: None,
        }
    }
}

/// Request limits and timeouts (API.md "Limits and timeouts").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub header_bytes_max: usize,
    pub headers_max: usize,
    pub object_bytes_max: u64,
    pub header_timeout_ms: u64,
    pub body_progress_bytes: u64,
    pub body_progress_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub connections_max: usize,
    pub copy_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_bytes_max: 16 << 10,
            headers_max: 100,
            object_bytes_max: 5 << 30,
            header_timeout_ms: 10_000,
            body_progress_bytes: 64 << 10,
            body_progress_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            connections_max: 10_000,
            copy_timeout_ms: 10_000,
        }
    }
}

/// Storage engine settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Engine {
    pub blob_size_bytes: u64,
    pub writes_in_flight_max: usize,
    pub checkpoint_every_records: u64,
    pub checkpoint_every_bytes: u64,
    /// Registered I/O buffers per core (1 MiB + 64 KiB each).
    pub io_buffers_per_core: usize,
    /// Most bytes of blob files per disk (0: as much as the filesystem holds).
    pub disk_bytes_max: u64,
    /// A disk whose probe read (one block, every second) fails or takes longer than this is
    /// marked failed: its requests fail fast and its objects come from the other disks of
    /// their chains and from peers.
    pub disk_timeout_ms: u64,
    /// Most blob files kept open per disk; the least recently used sealed ones past it are
    /// closed and opened again when read (60 disks x 4096 stays far below LimitNOFILE).
    pub open_blob_files_max: usize,
    /// Most of a disk (percent of its blob space) reserved by writes whose bodies have not
    /// arrived; a write beyond it answers 503 busy (clients starting writes they never send
    /// can't hold the disk).
    pub unfilled_percent_max: u64,
    /// Most bytes of full-size write buffers (1 MiB, two per streaming write) the node's
    /// writes hold together; past it a write goes on with one 64 KiB buffer (slower, never
    /// refused).
    pub write_memory_bytes: u64,
    /// How far ahead of each disk's write position zeros are written in the background (0:
    /// never): an fdatasync after writes into blocks the filesystem only reserved costs it a
    /// journal commit, about three times one over written blocks, and small PUTs wait for it.
    pub zero_ahead_bytes: u64,
    /// The memory of each disk's name index (the sorted names listings read) held before it
    /// is written to the disk as a run.
    pub names_memtable_bytes: u64,
}

impl Default for Engine {
    fn default() -> Self {
        Engine {
            blob_size_bytes: 1 << 30,
            writes_in_flight_max: 1024,
            checkpoint_every_records: 1 << 20,
            checkpoint_every_bytes: 16 << 30,
            io_buffers_per_core: 64,
            disk_bytes_max: 0,
            disk_timeout_ms: 10_000,
            open_blob_files_max: 4096,
            unfilled_percent_max: 25,
            write_memory_bytes: 128 << 20,
            zero_ahead_bytes: 128 << 20,
            names_memtable_bytes: 4 << 20,
        }
    }
}

/// Background work on each disk: compaction, scrub, repair (issue 6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Maintenance {
    /// Background I/O each disk allows, MiB/s, shared by compaction and scrub, when the disk has
    /// no measured profile (`podstore-tune measure`; the profile's figure wins).
    pub background_mib_per_s: u64,
    /// A sealed blob whose dead share reaches this is compacted.
    pub compact_dead_ratio: f64,
    /// Seconds between looks for blobs to compact (0: only on demand).
    pub compact_interval_s: u64,
    /// Every byte of a disk is verified within this many seconds; a pass is paced to take
    /// about that long (0: scrub only on demand).
    pub scrub_period_s: u64,
    /// Tombstones younger than this are kept (longer than any peer outage the replica set
    /// tolerates: an older copy arriving later must still find the delete).
    pub tombstone_horizon_s: u64,
    /// Seconds between attempts to repair quarantined objects from peers.
    pub repair_interval_s: u64,
    /// A core serving at least this many object requests per second is busy: its disks'
    /// background work then takes only `busy_share` of its budget (0: never yield).
    pub busy_ops_per_s: u64,
    /// The share of the background budget kept while the foreground is busy.
    pub busy_share: f64,
    /// KiB of the budget each background operation (a read, a write, an index change) costs on
    /// top of the bytes it moves: small objects are moved and copied at a rate the disk's
    /// queue and the cores can bear beside the foreground.
    pub op_cost_kib: u64,
    /// An S3 multipart upload not completed within this many seconds of its start is removed
    /// with its parts (and takes no more parts, nor a completion).
    pub multipart_expiry_s: u64,
    /// Seconds between sweeps of multipart uploads' parts (expired uploads, parts no object
    /// names any more).
    pub multipart_sweep_interval_s: u64,
    /// Parts of an upload younger than this are never swept (a completion, or copies from
    /// peers, may still be on their way).
    pub multipart_sweep_grace_s: u64,
}

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance {
            background_mib_per_s: 64,
            compact_dead_ratio: 0.3,
            compact_interval_s: 60,
            scrub_period_s: 30 * 86_400,
            tombstone_horizon_s: 30 * 86_400,
            repair_interval_s: 60,
            busy_ops_per_s: 500,
            busy_share: 0.25,
            op_cost_kib: 32,
            multipart_expiry_s: 7 * 86_400,
            multipart_sweep_interval_s: 3600,
            multipart_sweep_grace_s: 3600,
        }
    }
}

/// Moving objects between the fast and the capacity tier (issue 7; maintenance.rs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tiering {
    /// A fast disk this full (blob bytes over its capacity), or that stopped taking writes
    /// because it is full, moves its coldest blobs' objects to the capacity tier...
    pub fast_high_watermark: f64,
    /// ...until it is down to this.
    pub fast_low_watermark: f64,
    /// A fast disk's blob no GET has read for this long moves to the capacity tier whatever
    /// the fill (0: only by fill).
    pub migrate_idle_s: u64,
    /// Seconds between a fast disk's looks for what to move.
    pub migrate_interval_s: u64,
    /// An object on the capacity tier read this many times within `promote_window_s` is
    /// copied back to the fast tier (0: never). A scan reads each object once: it promotes
    /// nothing.
    pub promote_reads: u32,
    pub promote_window_s: u64,
    /// Most objects each core promotes per window.
    pub promotions_per_window_max: u32,
    /// Objects larger than this are written straight to the capacity tier (0: every object
    /// lands on the fast tier).
    pub fast_object_size_max_bytes: u64,
}

impl Default for Tiering {
    fn default() -> Self {
        Tiering {
            fast_high_watermark: 0.85,
            fast_low_watermark: 0.70,
            migrate_idle_s: 7 * 86_400,
            migrate_interval_s: 10,
            promote_reads: 4,
            promote_window_s: 60,
            promotions_per_window_max: 10_000,
            fast_object_size_max_bytes: 16 << 20,
        }
    }
}

/// The RAM cache of small hot objects (issue 7; engine/src/cache.rs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RamCacheConf {
    /// Memory the cache may hold, all cores together (each core gets an equal part); 0: no
    /// cache.
    pub size_bytes: u64,
    /// Largest object cached.
    pub object_size_max_bytes: u64,
}

impl Default for RamCacheConf {
    fn default() -> Self {
        RamCacheConf { size_bytes: 1 << 30, object_size_max_bytes: 256 << 10 }
    }
}

/// One disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConf {
    pub id: u32,
    pub path: PathBuf,
    /// `fast` or `capacity` (default).
    #[serde(default = "capacity")]
    pub tier: TierConf,
    /// Refuse to label a directory that is not a mount point (default true).
    #[serde(default = "yes")]
    pub require_mount_point: bool,
    /// `direct` (default) or `buffered` (development only).
    #[serde(default)]
    pub cache: CacheConf,
    /// Placement weight; default: the filesystem's size.
    pub weight: Option<f64>,
}

fn yes() -> bool {
    true
}

fn capacity() -> TierConf {
    TierConf::Capacity
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TierConf {
    Fast,
    Capacity,
}

impl From<Tier> for TierConf {
    fn from(t: Tier) -> TierConf {
        match t {
            Tier::Fast => TierConf::Fast,
            Tier::Capacity => TierConf::Capacity,
        }
    }
}

impl From<CacheMode> for CacheConf {
    fn from(c: CacheMode) -> CacheConf {
        match c {
            CacheMode::Direct => CacheConf::Direct,
            CacheMode::Buffered => CacheConf::Buffered,
        }
    }
}

impl DiskConf {
    /// A disk added while the node ran (recorded in the placement file), as the configuration
    /// would give it.
    pub fn added(id: u32, a: &podstore_engine::route::AddedDisk) -> DiskConf {
        DiskConf {
            id,
            path: a.path.clone(),
            tier: a.tier.into(),
            require_mount_point: a.require_mount_point,
            cache: a.cache.into(),
            weight: None,
        }
    }
}

impl From<TierConf> for Tier {
    fn from(t: TierConf) -> Tier {
        match t {
            TierConf::Fast => Tier::Fast,
            TierConf::Capacity => Tier::Capacity,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CacheConf {
    #[default]
    Direct,
    Buffered,
}

impl From<CacheConf> for CacheMode {
    fn from(c: CacheConf) -> CacheMode {
        match c {
            CacheConf::Direct => CacheMode::Direct,
            CacheConf::Buffered => CacheMode::Buffered,
        }
    }
}

/// Rows under their headers, each column as wide as its widest cell, `indent` before each line.
pub fn table<const N: usize>(header: &[String; N], rows: &[[String; N]], indent: &str) -> String {
    let mut width = [0usize; N];
    for r in std::iter::once(header).chain(rows) {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(header).chain(rows) {
        let mut line = indent.to_string();
        for (i, (cell, w)) in r.iter().zip(width).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A configuration that can't be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("can't read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

impl Config {
    /// Reads and checks a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Parses and checks TOML text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: origin.into(), message: e.to_string() })?;
        c.check()?;
        Ok(c)
    }

    /// The embedded default: four directory-backed disks under `./podstore-data`, loopback
    /// ports, 64 MiB blobs. For trying podstore out, not for production.
    pub fn embedded_default(data_dir: &Path) -> Config {
        Config {
            node_id: "podstore-dev".into(),
            cores: 0,
            io_backend: default_io_backend(),
            listen: Listen { s3: Some(([127, 0, 0, 1], 7073).into()), ..Listen::default() },
            limits: Limits::default(),
            engine: Engine { blob_size_bytes: 64 << 20, ..Engine::default() },
            maintenance: Maintenance::default(),
            ram_cache: RamCacheConf::default(),
            tiering: Tiering::default(),
            default_copies: default_copies(),
            log: None,
            replication: None,
            auth: AuthConf::default(),
            insecure: false,
            disks: (0..4)
                .map(|i| DiskConf {
                    id: i,
                    path: data_dir.join(format!("disk{i}")),
                    tier: TierConf::Capacity,
                    require_mount_point: false,
                    cache: CacheConf::Direct,
                    weight: Some(1.0),
                })
                .collect(),
        }
    }

    /// What `podstore check-config` prints for a valid file: node, ports, disks with tier and
    /// size, peers, access keys. A disk's size is its filesystem's, when its path exists.
    pub fn summary(&self) -> String {
        use crate::units::human_bytes;
        use std::fmt::Write;
        let mut out = String::new();
        let cores = if self.cores == 0 { "one per CPU".to_string() } else { self.cores.to_string() };
        let _ = writeln!(out, "node {}, cores: {cores}, disk I/O: {}", self.node_id, self.io_backend);
        let _ = writeln!(out, "data port {}, admin port {}", self.listen.data, self.listen.admin);
        if let Some(s3) = self.listen.s3 {
            let _ = writeln!(out, "S3 port {s3}");
        }
        let _ = writeln!(
            out,
            "blobs of {}, copies by default: {}",
            human_bytes(self.engine.blob_size_bytes),
            self.default_copies
        );
        let _ = writeln!(out, "disks ({}):", self.disks.len());
        let rows: Vec<[String; 5]> = self
            .disks
            .iter()
            .map(|d| {
                let size = match podstore_disks::fs_space(&d.path) {
                    Ok((cap, _)) => human_bytes(cap),
                    Err(_) => "missing".to_string(),
                };
                let tier = Tier::from(d.tier).to_string();
                let weight = d.weight.map_or("by size".to_string(), |w| w.to_string());
                [d.id.to_string(), tier, size, weight, d.path.display().to_string()]
            })
            .collect();
        let header = ["id", "tier", "size", "weight", "path"].map(String::from);
        out.push_str(&table(&header, &rows, "  "));
        match &self.replication {
            None => out.push_str("replication: none (a single appliance)\n"),
            Some(r) => {
                let _ = writeln!(
                    out,
                    "replication on {} in datacenter {}, {} peers:",
                    r.listen,
                    r.datacenter,
                    r.peers.len()
                );
                let rows: Vec<[String; 3]> = r
                    .peers
                    .iter()
                    .map(|p| [p.name.clone(), p.datacenter.clone(), p.address.to_string()])
                    .collect();
                out.push_str(&table(&["peer", "datacenter", "address"].map(String::from), &rows, "  "));
            }
        }
        if self.auth.keys.is_empty() {
            out.push_str("access keys: none (every request is allowed)\n");
        } else {
            let _ = writeln!(out, "access keys ({}):", self.auth.keys.len());
            let rows: Vec<[String; 3]> = self
                .auth
                .keys
                .iter()
                .map(|k| {
                    let buckets =
                        if k.buckets.is_empty() { "every bucket".into() } else { k.buckets.join(",") };
                    let mode = if k.read_only { "read-only" } else { "read-write" };
                    [k.id.clone(), buckets, mode.to_string()]
                })
                .collect();
            out.push_str(&table(&["key", "buckets", "access"].map(String::from), &rows, "  "));
        }
        if !self.auth.public_buckets.is_empty() {
            let _ = writeln!(out, "public buckets: {}", self.auth.public_buckets.join(", "));
        }
        out
    }

    /// A data port beyond loopback with no access keys, or an admin port (which has no
    /// authentication) beyond loopback, is refused unless the node was started with `--insecure`.
    pub fn check_exposure(&self, has_keys: bool) -> Result<(), String> {
        let cfg = self;
        if cfg.insecure {
            if !cfg.listen.data.ip().is_loopback() && !has_keys {
                tracing::warn!(
                    "--insecure: the data port {} takes writes and deletes from anyone who reaches it",
                    cfg.listen.data
                );
            }
            return Ok(());
        }
        if let Some(s3) = cfg.listen.s3.filter(|a| !a.ip().is_loopback() && !has_keys) {
            return Err(format!(
                "the S3 port listens on {s3} (beyond loopback) and no access keys are configured: \
                 add [[auth.keys]] (they sign S3 requests too), or start with --insecure"
            ));
        }
        if !cfg.listen.data.ip().is_loopback() && !has_keys {
            return Err(format!(
                "the data port listens on {} (beyond loopback) and no access keys are configured: anyone \
                 who reaches it could write and delete; add [[auth.keys]] (API.md \"Authentication\"), \
                 or start with --insecure",
                cfg.listen.data
            ));
        }
        if !cfg.listen.admin.ip().is_loopback() {
            return Err(format!(
                "the admin port listens on {} (beyond loopback); it has no authentication (drain, \
                 compaction, disks): keep it on loopback (publish /metrics through a proxy), or start \
                 with --insecure",
                cfg.listen.admin
            ));
        }
        Ok(())
    }

    /// Appliances holding a copy of every object: this one and its peers.
    pub fn replica_set_size(&self) -> u32 {
        1 + self.replication.as_ref().map_or(0, |r| r.peers.len() as u32)
    }

    /// Checks values the types can't.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.node_id.is_empty() || self.node_id.len() > podstore_disks::label::NODE_ID_MAX_BYTES {
            return Err(invalid("node_id", "must be 1 to 64 bytes"));
        }
        if !matches!(self.io_backend.as_str(), "io_uring" | "sync") {
            return Err(invalid(
                "io_backend",
                format!("{:?}: expected \"io_uring\" or \"sync\"", self.io_backend),
            ));
        }
        if let Some(d) = &self.listen.s3_domain {
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            };
            if d.len() > 200 || !d.split('.').all(label_ok) {
                return Err(invalid(
                    "listen.s3_domain",
                    format!("{d:?}: expected a lower-case domain name (such as s3.example.com)"),
                ));
            }
        }
        if let Some(filter) = &self.log {
            tracing_subscriber::EnvFilter::try_new(filter)
                .map_err(|e| invalid("log", format!("{filter:?}: {e}")))?;
        }
        if parse_copies(&self.default_copies, self.replica_set_size()).is_none() {
            return Err(invalid(
                "default_copies",
                format!(
                    "expected any, quorum, all or a number from 1 to {} (the replica set's size)",
                    self.replica_set_size()
                ),
            ));
        }
        self.check_auth()?;
        if let Some(r) = &self.replication {
            r.check(&self.node_id)?;
        }
        self.check_disks()?;
        self.check_ranges()
    }

    /// Access keys and public buckets.
    fn check_auth(&self) -> Result<(), ConfigError> {
        let mut ids = std::collections::HashSet::new();
        for (i, k) in self.auth.keys.iter().enumerate() {
            if !crate::names::valid_key_id(&k.id) {
                return Err(invalid(format!("auth.keys[{i}].id"), "must be 1 to 64 of A-Z a-z 0-9 _ -"));
            }
            if !ids.insert(k.id.as_str()) {
                return Err(invalid(format!("auth.keys[{i}].id"), "the same key id is named twice"));
            }
            if let Some(b) = k.buckets.iter().find(|b| !crate::names::valid_bucket(b)) {
                return Err(invalid(
                    format!("auth.keys[{i}].buckets"),
                    format!("{b:?} is not a bucket name"),
                ));
            }
        }
        if let Some(b) = self.auth.public_buckets.iter().find(|b| !crate::names::valid_bucket(b)) {
            return Err(invalid("auth.public_buckets", format!("{b:?} is not a bucket name")));
        }
        Ok(())
    }

    /// At least one disk; ids and paths once each; weights positive.
    fn check_disks(&self) -> Result<(), ConfigError> {
        if self.disks.is_empty() {
            return Err(invalid(
                "disks",
                "no disk is configured yet: add a [[disks]] table for each disk (id, path, tier), \
                 as the example at the end of deploy/podstore.toml shows",
            ));
        }
        let mut ids = std::collections::HashSet::new();
        let mut paths = std::collections::HashSet::new();
        for (i, d) in self.disks.iter().enumerate() {
            if !ids.insert(d.id) {
                return Err(invalid(format!("disks[{i}].id"), format!("disk id {} is used twice", d.id)));
            }
            if !paths.insert(d.path.clone()) {
                return Err(invalid(format!("disks[{i}].path"), "the same path is given twice"));
            }
            if d.weight.is_some_and(|w| !(w > 0.0 && w.is_finite())) {
                return Err(invalid(format!("disks[{i}].weight"), "must be a positive number"));
            }
        }
        Ok(())
    }

    /// Every number within its bounds.
    fn check_ranges(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        for (key, v, lo, hi) in [
            ("limits.header_bytes_max", l.header_bytes_max as u64, 1024, 1 << 20),
            ("limits.headers_max", l.headers_max as u64, 8, 1000),
            ("limits.object_bytes_max", l.object_bytes_max, 1, 5 << 30),
            ("limits.header_timeout_ms", l.header_timeout_ms, 100, 600_000),
            ("limits.body_progress_bytes", l.body_progress_bytes, 1, 1 << 30),
            ("limits.body_progress_timeout_ms", l.body_progress_timeout_ms, 100, 600_000),
            ("limits.idle_timeout_ms", l.idle_timeout_ms, 100, 3_600_000),
            ("limits.connections_max", l.connections_max as u64, 1, 1_000_000),
            ("limits.copy_timeout_ms", l.copy_timeout_ms, 1, 600_000),
            ("engine.blob_size_bytes", self.engine.blob_size_bytes, 1 << 20, 64 << 30),
            ("engine.writes_in_flight_max", self.engine.writes_in_flight_max as u64, 1, 1 << 20),
            ("engine.io_buffers_per_core", self.engine.io_buffers_per_core as u64, 1, 4096),
            ("engine.disk_timeout_ms", self.engine.disk_timeout_ms, 100, 600_000),
            ("engine.open_blob_files_max", self.engine.open_blob_files_max as u64, 2, 1 << 20),
            ("engine.unfilled_percent_max", self.engine.unfilled_percent_max, 1, 100),
            ("engine.write_memory_bytes", self.engine.write_memory_bytes, 1 << 20, 1 << 40),
            ("engine.zero_ahead_bytes", self.engine.zero_ahead_bytes, 0, 1 << 30),
            ("engine.names_memtable_bytes", self.engine.names_memtable_bytes, 64 << 10, 1 << 30),
            ("maintenance.background_mib_per_s", self.maintenance.background_mib_per_s, 1, 100_000),
            ("maintenance.compact_interval_s", self.maintenance.compact_interval_s, 0, 86_400),
            ("maintenance.scrub_period_s", self.maintenance.scrub_period_s, 0, 3650 * 86_400),
            ("maintenance.tombstone_horizon_s", self.maintenance.tombstone_horizon_s, 0, 3650 * 86_400),
            ("maintenance.repair_interval_s", self.maintenance.repair_interval_s, 1, 86_400),
            ("maintenance.busy_ops_per_s", self.maintenance.busy_ops_per_s, 0, 100_000_000),
            ("maintenance.op_cost_kib", self.maintenance.op_cost_kib, 0, 1 << 20),
            ("maintenance.multipart_expiry_s", self.maintenance.multipart_expiry_s, 1, 3650 * 86_400),
            (
                "maintenance.multipart_sweep_interval_s",
                self.maintenance.multipart_sweep_interval_s,
                1,
                86_400,
            ),
            ("maintenance.multipart_sweep_grace_s", self.maintenance.multipart_sweep_grace_s, 0, 30 * 86_400),
            ("ram_cache.size_bytes", self.ram_cache.size_bytes, 0, 1 << 50),
            ("tiering.migrate_idle_s", self.tiering.migrate_idle_s, 0, 3650 * 86_400),
            ("tiering.migrate_interval_s", self.tiering.migrate_interval_s, 1, 86_400),
            ("tiering.promote_reads", self.tiering.promote_reads as u64, 0, 1_000_000),
            ("tiering.promote_window_s", self.tiering.promote_window_s, 1, 86_400),
            ("tiering.fast_object_size_max_bytes", self.tiering.fast_object_size_max_bytes, 0, 1 << 50),
            (
                "tiering.promotions_per_window_max",
                self.tiering.promotions_per_window_max as u64,
                1,
                10_000_000,
            ),
            ("ram_cache.object_size_max_bytes", self.ram_cache.object_size_max_bytes, 1, 64 << 20),
        ] {
            if v < lo || v > hi {
                return Err(invalid(key, format!("{v} is outside {lo}..={hi}")));
            }
        }
        let (hi, lo) = (self.tiering.fast_high_watermark, self.tiering.fast_low_watermark);
        if !(0.05..=1.0).contains(&hi) || !(0.0..hi).contains(&lo) {
            return Err(invalid(
                "tiering.fast_low_watermark",
                format!("the watermarks ({lo}, {hi}) need 0 <= low < high, high in 0.05..=1.0"),
            ));
        }
        let b = self.maintenance.busy_share;
        if !(0.01..=1.0).contains(&b) {
            return Err(invalid("maintenance.busy_share", format!("{b} is outside 0.01..=1.0")));
        }
        let r = self.maintenance.compact_dead_ratio;
        if !(0.01..=1.0).contains(&r) {
            return Err(invalid("maintenance.compact_dead_ratio", format!("{r} is outside 0.01..=1.0")));
        }
        if !self.engine.blob_size_bytes.is_multiple_of(4096) {
            return Err(invalid("engine.blob_size_bytes", "must be a multiple of 4096"));
        }
        if !self.engine.zero_ahead_bytes.is_multiple_of(16384) {
            return Err(invalid("engine.zero_ahead_bytes", "must be a multiple of 16384"));
        }
        Ok(())
    }
}

impl Replication {
    /// Names, datacenters and bounds (`node_id`: this node's, which no peer may take).
    fn check(&self, node_id: &str) -> Result<(), ConfigError> {
        let r = self;
        if r.datacenter.is_empty() || r.datacenter.len() > 64 {
            return Err(invalid("replication.datacenter", "must be 1 to 64 bytes"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in r.peers.iter().enumerate() {
            if p.name.is_empty() || p.name.len() > podstore_disks::label::NODE_ID_MAX_BYTES {
                return Err(invalid(format!("replication.peers[{i}].name"), "must be 1 to 64 bytes"));
            }
            if p.name == node_id {
                return Err(invalid(format!("replication.peers[{i}].name"), "is this node's own node_id"));
            }
            if !names.insert(p.name.clone()) {
                return Err(invalid(format!("replication.peers[{i}].name"), "the same peer is named twice"));
            }
            if p.datacenter.is_empty() || p.datacenter.len() > 64 {
                return Err(invalid(format!("replication.peers[{i}].datacenter"), "must be 1 to 64 bytes"));
            }
        }
        for (key, v, lo, hi) in [
            ("replication.connections_per_peer", r.connections_per_peer as u64, 1, 64),
            ("replication.connect_timeout_ms", r.connect_timeout_ms, 10, 600_000),
            ("replication.peer_idle_ms", r.peer_idle_ms, 100, 3_600_000),
            ("replication.backlog_records_max", r.backlog_records_max, 1, 1 << 32),
            ("replication.catch_up_in_flight", r.catch_up_in_flight as u64, 1, 256),
            ("replication.anti_entropy_interval_s", r.anti_entropy_interval_s, 0, 30 * 86_400),
            ("replication.anti_entropy_objects_per_s", r.anti_entropy_objects_per_s, 1, 1_000_000),
        ] {
            if v < lo || v > hi {
                return Err(invalid(key, format!("{v} is outside {lo}..={hi}")));
            }
        }
        Ok(())
    }
}

/// The copies a request's `X-Copies` header (None: absent) asks for, the configured default
/// when it has none; the message for a client when the value is not one.
pub fn copies_wanted(value: Option<&[u8]>, cfg: &Config) -> Result<u32, String> {
    let n = cfg.replica_set_size();
    let v = match value {
        None => cfg.default_copies.as_str(),
        Some(v) => std::str::from_utf8(v).map_err(|_| "X-Copies is not text".to_string())?,
    };
    parse_copies(v.trim(), n).ok_or_else(|| {
        format!("X-Copies must be any, quorum, all or a number of appliances no larger than the replica set ({n})")
    })
}

/// The copies an `X-Copies` value asks for in a replica set of `n` appliances: `any` 1,
/// `quorum` a majority, `all` n, or a number from 1 to n. None for anything else.
pub fn parse_copies(v: &str, n: u32) -> Option<u32> {
    match v {
        "any" => Some(1),
        "quorum" => Some(n / 2 + 1),
        "all" => Some(n),
        _ if v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty() && v.len() <= 3 => {
            v.parse().ok().filter(|&c| (1..=n).contains(&c))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example with the commented block after `#--- NAME` (to `#--- end`) uncommented.
    fn uncomment(text: &str, name: &str) -> String {
        let (head, rest) = text.split_once(&format!("#--- {name}\n")).expect("marked block");
        let (block, tail) = rest.split_once("#--- end\n").expect("marked block end");
        let block: String = block
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#'))))
            .collect();
        format!("{head}{block}{tail}")
    }

    #[test]
    fn the_example_config_parses_once_it_names_disks() {
        let text = include_str!("../../deploy/podstore.toml");
        // As installed: no disks yet, which the service's start condition tells apart.
        let e = Config::parse(text, Path::new("podstore.toml")).expect_err("no disks yet");
        assert!(e.to_string().contains("disks"), "{e}");
        let c = Config::parse(&uncomment(text, "disks"), Path::new("podstore.toml")).expect("example parses");
        assert_eq!(c.disks.len(), 3);
        Config::embedded_default(Path::new("/tmp/x")).check().expect("default is valid");
    }

    #[test]
    fn the_example_replication_section_parses_when_uncommented() {
        let text = uncomment(&uncomment(include_str!("../../deploy/podstore.toml"), "disks"), "replication");
        let c = Config::parse(&text, Path::new("podstore.toml")).expect("parses");
        let r = c.replication.as_ref().expect("replication");
        assert_eq!((r.peers.len(), c.replica_set_size()), (1, 2));
        assert_eq!(parse_copies("quorum", 2), Some(2));
        assert_eq!(parse_copies("quorum", 3), Some(2));
        assert_eq!(parse_copies("3", 2), None);
        assert_eq!(parse_copies("0", 2), None);
        assert_eq!(parse_copies("", 2), None);
    }

    #[test]
    fn the_example_auth_section_parses_when_uncommented() {
        let text = uncomment(&uncomment(include_str!("../../deploy/podstore.toml"), "disks"), "auth");
        let c = Config::parse(&text, Path::new("podstore.toml")).expect("parses");
        assert_eq!(c.auth.keys.len(), 1);
        assert_eq!(c.auth.keys[0].buckets, ["photos", "music"]);
        assert_eq!(c.auth.public_buckets, ["cdn-assets"]);
        let bad = text.replace("id = \"uploader\"", "id = \"up.loader\"");
        let e = Config::parse(&bad, Path::new("podstore.toml")).expect_err("a dot in the id");
        assert!(e.to_string().contains("auth.keys[0].id"), "{e}");
        let bad = text.replace("\"cdn-assets\"", "\"CDN\"");
        let e = Config::parse(&bad, Path::new("podstore.toml")).expect_err("a bad bucket");
        assert!(e.to_string().contains("auth.public_buckets"), "{e}");
    }

    #[test]
    fn the_smallest_blobs_make_a_valid_engine_config() {
        let mut c = Config::embedded_default(Path::new("/tmp/x"));
        c.engine.blob_size_bytes = 1 << 20;
        c.check().expect("valid");
        crate::shared::shard_config(&c, Default::default()).check();
    }

    #[test]
    fn errors_name_the_key() {
        let base = "node_id = \"a\"\n[[disks]]\nid = 0\npath = \"/d0\"\ntier = \"capacity\"\n";
        let e = Config::parse(&format!("{base}bogus = 1\n"), Path::new("c.toml")).expect_err("unknown key");
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = Config::parse(&base.replace("capacity", "slow"), Path::new("c.toml")).expect_err("bad tier");
        assert!(e.to_string().contains("slow") || e.to_string().contains("tier"), "{e}");
        let e = Config::parse(&format!("{base}[limits]\nheaders_max = 0\n"), Path::new("c.toml"))
            .expect_err("range");
        assert!(e.to_string().contains("limits.headers_max"), "{e}");
        let e = Config::parse(
            &format!("{base}[[disks]]\nid = 0\npath = \"/d1\"\ntier = \"fast\"\n"),
            Path::new("c.toml"),
        )
        .expect_err("dup id");
        assert!(e.to_string().contains("disks[1].id"), "{e}");
    }
}
