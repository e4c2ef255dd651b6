//! The admin port: `/metrics` (Prometheus text), `/health`, `/ready`, `/admin/disks`,
//! `/admin/peers`, `/admin/jobs`; `POST /admin/recover`, `/admin/drain`, `/admin/compact`,
//! `/admin/scrub`.
//! It runs on its own thread, asks the cores for their shards' stats by message, and never
//! touches the data path.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use podstore_engine::ShardStats;
use tokio::sync::{oneshot, watch};

use crate::body::RespBody;
use crate::body::SERVER;
use crate::msg::CoreMsg;
use crate::shared::Shared;

/// Collects every shard's stats from the cores (cores that don't answer in time are skipped).
pub async fn all_stats(shared: &Shared) -> Vec<ShardStats> {
    let mut waits = Vec::new();
    for inbox in &shared.inboxes {
        let (tx, rx) = oneshot::channel();
        if inbox.try_send(CoreMsg::Stats { reply: tx }).is_ok() {
            waits.push(rx);
        }
    }
    let mut out = Vec::new();
    for w in waits {
        if let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(2), w).await {
            out.append(&mut s);
        }
    }
    out
}

fn disk_state(shared: &Shared, id: u32, stats: Option<&ShardStats>) -> &'static str {
    let d = shared.disk(id);
    if shared.routes.is_failed(id) {
        return "failed";
    }
    if shared.routes.is_draining(id) {
        // Drained once nothing is left on it: safe to pull.
        return match stats {
            Some(s) if s.objects + s.tombstones > 0 => "draining",
            _ => "drained",
        };
    }
    match (d.and_then(|d| d.failed), stats) {
        (Some(_), _) | (None, None) => "failed",
        (None, Some(s)) if s.fenced.is_some() => "read_only",
        _ => "online",
    }
}

/// Every metric the node exports, with its help text (the exposition's `# HELP`). Called
/// once, after the recorder is installed; a test checks that every name used is described.
pub fn describe_metrics() {
    use metrics::{describe_counter as c, describe_gauge as g, describe_histogram as h, Unit};
    g!(
        "podstore_disk_state",
        "1 for the disk's state (online, read_only: fenced after a write error, failed, draining, drained)"
    );
    g!(
        "podstore_disk_capacity_bytes",
        Unit::Bytes,
        "Size of the disk's filesystem (or the configured limit)"
    );
    g!("podstore_disk_used_bytes", Unit::Bytes, "Bytes of blob files and checkpoints on the disk");
    g!("podstore_disk_free_bytes", Unit::Bytes, "Bytes still available to blob files");
    g!("podstore_disk_objects", "Live objects on the disk");
    c!("podstore_tier_reads_total", "Object reads served, by tier: ram (the RAM cache), fast, capacity");
    c!("podstore_disk_migrated_objects_total", "Objects moved from this fast disk to the capacity tier");
    c!(
        "podstore_tier_promoted_total",
        "Objects of the capacity tier read often and copied back to the fast tier"
    );
    c!(
        "podstore_disk_migrated_bytes_total",
        Unit::Bytes,
        "Bytes moved from this fast disk to the capacity tier"
    );
    c!(
        "podstore_disk_migration_failures_total",
        "Objects of this fast disk that could not be moved to the capacity tier"
    );
    g!(
        "podstore_disk_migration_backlog_bytes",
        Unit::Bytes,
        "Bytes this fast disk had to move to the capacity tier at its last look"
    );
    c!("podstore_ram_cache_hits_total", "GETs the RAM cache answered");
    c!("podstore_ram_cache_misses_total", "GETs the RAM cache could not answer (read from disk)");
    c!(
        "podstore_ram_cache_offered_total",
        "Objects read from disk and offered to the RAM cache (admitted or not)"
    );
    c!(
        "podstore_ram_cache_invalidated_total",
        "RAM cache entries dropped because their object was written, deleted or moved"
    );
    g!("podstore_ram_cache_bytes", Unit::Bytes, "Memory the RAM cache holds (objects, keys and entries)");
    g!(
        "podstore_ram_cache_capacity_bytes",
        Unit::Bytes,
        "Memory the RAM cache may hold (ram_cache.size_bytes)"
    );
    g!("podstore_ram_cache_entries", "Objects in the RAM cache");
    g!("podstore_disk_tombstones", "Tombstones (versioned deletes) on the disk");
    g!(
        "podstore_disk_dead_bytes",
        Unit::Bytes,
        "Bytes of overwritten or deleted records (reclaimed by compaction)"
    );
    g!("podstore_disk_live_bytes", Unit::Bytes, "Bytes of live records");
    g!("podstore_disk_quarantined", "Records set aside after failing their checksums");
    g!("podstore_index_memory_bytes", Unit::Bytes, "Memory of the disk's in-memory index");
    g!("podstore_group_commit_last_batch_writers", "Writers that shared the disk's last fdatasync");
    g!(
        "podstore_disk_reads_in_flight_max",
        "The disk's read limit (its measured queue depth, or the default)"
    );
    g!("podstore_disk_reads_in_flight_peak", "The most reads the disk has had in flight at once");
    g!(
        "podstore_disk_takes_writes",
        "1 if the disk takes new objects; 0 when full, fenced or failed (its keys' writes go to the next disks)"
    );
    g!("podstore_disk_spilled", "1 if some of the disk's keys may live on the next disks of their order");
    c!("podstore_disk_io_errors_total", "I/O errors on the disk since the node started");
    c!("podstore_disk_checksum_errors_total", "Reads that failed their checksums since the node started");
    c!("podstore_disk_fdatasyncs_total", "fdatasync calls (one per group commit) since the node started");
    g!(
        "podstore_disk_open_blob_files",
        "Blob files the disk keeps open (engine.open_blob_files_max at most, after a trim)"
    );
    c!(
        "podstore_disk_blob_reopens_total",
        "Blob files opened again after the open-file cache had closed them"
    );
    c!("podstore_disk_checkpoints_total", "Index checkpoints written since the node started");
    g!(
        "podstore_disk_background_budget_bytes_per_second",
        Unit::Bytes,
        "The disk's background I/O budget (compaction and scrub share it)"
    );
    c!(
        "podstore_disk_background_bytes_total",
        Unit::Bytes,
        "Bytes background jobs read and wrote on the disk"
    );
    c!(
        "podstore_disk_moved_away_total",
        "Keys moved from the disk to the disks that take their writes (rebalancing, draining)"
    );
    c!("podstore_disk_move_failures_total", "Keys that could not be moved off the disk (retried)");
    g!("podstore_disk_compaction_running", "1 while a compaction pass runs on the disk");
    g!("podstore_disk_compaction_paused", "1 while the disk's compaction is paused");
    g!(
        "podstore_disk_compaction_progress_ratio",
        "Share of the live records of the blob being compacted moved so far"
    );
    c!("podstore_disk_compacted_blobs_total", "Blob files compacted and removed since the node started");
    c!("podstore_disk_reclaimed_bytes_total", Unit::Bytes, "Bytes of blob files compaction removed");
    c!("podstore_disk_compaction_moved_bytes_total", Unit::Bytes, "Bytes of live records compaction rewrote");
    c!("podstore_disk_tombstones_dropped_total", "Tombstones past the horizon compaction dropped");
    c!(
        "podstore_disk_compaction_skipped_total",
        "Blobs compaction left in place because a record in them awaits repair"
    );
    g!("podstore_disk_scrub_running", "1 while a scrub pass runs on the disk");
    g!("podstore_disk_scrub_paused", "1 while the disk's scrub is paused");
    g!("podstore_disk_scrub_progress_ratio", "Share of the disk the current scrub pass has read");
    g!(
        "podstore_disk_scrub_last_pass_end_timestamp_seconds",
        Unit::Seconds,
        "When the disk's last full scrub pass ended (Unix time; 0: never)"
    );
    g!(
        "podstore_disk_scrub_pass_start_timestamp_seconds",
        Unit::Seconds,
        "When the current scrub pass started (Unix time; 0: none running)"
    );
    g!("podstore_disk_scrub_period_seconds", Unit::Seconds, "The configured period of a full scrub pass");
    c!("podstore_disk_scrub_passes_total", "Full scrub passes of the disk (kept across restarts)");
    c!("podstore_disk_scrub_records_total", "Records the scrub verified since the node started");
    c!(
        "podstore_disk_scrub_damaged_total",
        "Damaged records and regions the scrub found since the node started"
    );
    c!(
        "podstore_repairs_total",
        "Quarantined objects the repair loop dealt with, by outcome (read_again: a record marked bad after a read error read whole again; repaired, not_repaired: asked of peers)"
    );
    g!("podstore_node_ready", "1 once every shard recovered and the node serves data");
    g!(
        "podstore_tombstone_horizon_seconds",
        Unit::Seconds,
        "How long deletes are kept; a peer whose backlog is older needs anti-entropy"
    );
    g!("podstore_recovery_duration_seconds", Unit::Seconds, "How long the last start's recovery took");
    g!("podstore_http_open_connections", "Open client connections on the data port");
    c!("podstore_http_requests_total", "Data requests by operation and status");
    h!(
        "podstore_http_request_duration_seconds",
        Unit::Seconds,
        "Data request latency by operation, until the response head"
    );
    c!("podstore_http_received_bytes_total", Unit::Bytes, "Object bytes received from clients");
    c!("podstore_http_sent_bytes_total", Unit::Bytes, "Object bytes sent to clients");
    c!("podstore_http_connections_refused_total", "Connections refused at the connection limit");
    c!(
        "podstore_test_faults_injected_total",
        "Test builds with PODSTORE_FAULTS only: disk faults injected, by kind"
    );
    c!(
        "podstore_http_header_timeouts_total",
        "Connections closed because a request's headers did not arrive within limits.header_timeout_ms"
    );
    c!(
        "podstore_disk_writes_refused_unfilled_total",
        "Writes refused (503 busy) because engine.unfilled_percent_max of the disk was reserved by writes whose bodies had not arrived"
    );
    c!(
        "podstore_repl_copy_retries_total",
        "Failed copies a client waited for, sent again from the stored record on a fresh connection, by outcome"
    );
    c!(
        "podstore_config_reloads_total",
        "Reloads of the configuration file (SIGHUP, podstore reload), by outcome (ok, failed)"
    );
    c!(
        "podstore_http_unparsable_requests_total",
        "Requests the HTTP parser refused before any handler (431 headers beyond the limits, 414, 400), by status"
    );
    g!("podstore_repl_backlog_objects", "Writes the peer has not confirmed yet (catch-up backlog)");
    g!("podstore_repl_backlog_bytes", Unit::Bytes, "Bytes of the writes in the peer's backlog");
    g!("podstore_repl_backlog_age_seconds", Unit::Seconds, "Age of the oldest write in the peer's backlog");
    g!(
        "podstore_repl_backlog_overflowed",
        "1 if the peer's backlog overflowed its limit (anti-entropy completes it)"
    );
    g!("podstore_repl_anti_entropy_running", "1 while an anti-entropy pass with the peer runs");
    g!(
        "podstore_repl_anti_entropy_buckets_pending",
        "Differing digest buckets not yet compared in the current pass"
    );
    g!("podstore_repl_anti_entropy_pushed", "Objects copied to the peer in the current or last pass");
    g!("podstore_repl_anti_entropy_pulled", "Objects copied from the peer in the current or last pass");
    c!("podstore_repl_anti_entropy_passes_total", "Anti-entropy passes with the peer since the node started");
    c!("podstore_repl_anti_entropy_errors_total", "Failed copies and passes of anti-entropy with the peer");
    g!("podstore_repl_peer_up", "1 while this node holds a connection to the peer that answers, else 0");
    g!(
        "podstore_repl_anti_entropy_interval_seconds",
        Unit::Seconds,
        "Configured time between anti-entropy passes with each peer (0: on demand only)"
    );
    g!(
        "podstore_repl_anti_entropy_last_end_timestamp_seconds",
        Unit::Seconds,
        "When the last pass with the peer ended (Unix time)"
    );
    c!("podstore_repl_copies_total", "Copies of client writes sent to peers, by peer and outcome");
    c!("podstore_repl_catch_up_copies_total", "Backlogged writes delivered to the peer by catch-up");
    c!(
        "podstore_repl_catch_up_bytes_total",
        "Record bytes of the backlogged writes delivered to the peer by catch-up"
    );
    c!(
        "podstore_repl_catch_up_woken_total",
        "Catch-up back-offs toward the peer cut short because the peer connected to this node"
    );
    c!("podstore_repl_connections_total", "Replication connections opened to peers");
    c!("podstore_repl_handshake_failures_total", "Failed replication handshakes with peers");
    c!("podstore_repl_refused_total", "Incoming replication connections refused, by reason");
    c!("podstore_repl_read_repairs_total", "GETs served from a peer and repaired locally, by outcome");
    c!("podstore_repl_sent_bytes_total", Unit::Bytes, "Object bytes sent to the peer");
    c!("podstore_repl_received_bytes_total", Unit::Bytes, "Object bytes received from the peer");
    c!(
        "podstore_repl_received_direct_total",
        "Copies received straight into the owning core's write buffers"
    );
    c!(
        "podstore_repl_received_forwarded_total",
        "Copies received on another core than their disk's and passed to it"
    );
    c!(
        "podstore_repl_zero_copy_fallbacks_total",
        "Times zero-copy sends to the peer fell back to plain sends"
    );
}

/// Sets the gauges that come from shard stats, then renders the exposition.
pub async fn render_metrics(shared: &Shared, handle: &PrometheusHandle) -> String {
    let stats = all_stats(shared).await;
    let layout = shared.layout.load_full();
    for d in &layout.disks {
        let s = stats.iter().find(|s| s.shard_id == d.id);
        let disk = d.id.to_string();
        let tier = d.tier.to_string();
        for state in ["online", "read_only", "failed", "draining", "drained"] {
            let v = if disk_state(shared, d.id, s) == state { 1.0 } else { 0.0 };
            metrics::gauge!("podstore_disk_state", "disk" => disk.clone(), "tier" => tier.clone(), "state" => state).set(v);
        }
        metrics::gauge!("podstore_disk_spilled", "disk" => disk.clone())
            .set(if shared.routes.is_spilled(d.id) { 1.0 } else { 0.0 });
        if let Some(s) = s {
            let g = |name: &'static str, v: u64| metrics::gauge!(name, "disk" => disk.clone()).set(v as f64);
            g("podstore_disk_capacity_bytes", d.capacity_bytes);
            g("podstore_disk_used_bytes", s.used_bytes);
            g("podstore_disk_free_bytes", d.capacity_bytes.saturating_sub(s.blob_bytes));
            g("podstore_disk_objects", s.objects);
            g("podstore_disk_tombstones", s.tombstones);
            g("podstore_disk_dead_bytes", s.dead_bytes);
            g("podstore_disk_live_bytes", s.live_bytes);
            g("podstore_disk_quarantined", s.quarantined);
            g("podstore_index_memory_bytes", s.index_bytes);
            g("podstore_group_commit_last_batch_writers", s.last_sync_batch);
            g("podstore_disk_reads_in_flight_max", s.reads_in_flight_max);
            g("podstore_disk_reads_in_flight_peak", s.reads_in_flight_peak);
            g("podstore_disk_takes_writes", shared.routes.is_writable(d.id) as u64);
            // Counts since the node started: counters (a restart resets them, which
            // Prometheus' rate() handles).
            let c = |name: &'static str, v: u64| metrics::counter!(name, "disk" => disk.clone()).absolute(v);
            c("podstore_disk_io_errors_total", s.io_errors);
            c("podstore_disk_checksum_errors_total", s.checksum_errors);
            c("podstore_disk_fdatasyncs_total", s.syncs);
            g("podstore_disk_open_blob_files", s.open_blob_files);
            c("podstore_disk_blob_reopens_total", s.blob_reopens);
            c("podstore_disk_checkpoints_total", s.checkpoints);
            c("podstore_disk_background_bytes_total", s.background_bytes);
            c("podstore_disk_moved_away_total", s.moved_away);
            c("podstore_disk_migrated_objects_total", s.migrated_objects);
            c("podstore_disk_migrated_bytes_total", s.migrated_bytes);
            c("podstore_disk_migration_failures_total", s.migration_failures);
            g("podstore_disk_migration_backlog_bytes", s.migration_backlog_bytes);
            c("podstore_disk_move_failures_total", s.move_failures);
            g("podstore_disk_background_budget_bytes_per_second", s.background_bytes_per_s);
            let (cs, ss) = (&s.compact, &s.scrub);
            g("podstore_disk_compaction_running", s.compact_running as u64);
            g("podstore_disk_compaction_paused", s.compact_paused as u64);
            let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { (a as f64 / b as f64).min(1.0) };
            metrics::gauge!("podstore_disk_compaction_progress_ratio", "disk" => disk.clone())
                .set(ratio(cs.current_done_bytes, cs.current_total_bytes));
            c("podstore_disk_compacted_blobs_total", cs.blobs_compacted);
            c("podstore_disk_reclaimed_bytes_total", cs.bytes_reclaimed);
            c("podstore_disk_compaction_moved_bytes_total", cs.bytes_moved);
            c("podstore_disk_tombstones_dropped_total", cs.tombstones_dropped);
            c("podstore_disk_compaction_skipped_total", cs.blobs_skipped);
            g("podstore_disk_scrub_running", s.scrub_running as u64);
            g("podstore_disk_scrub_paused", s.scrub_paused as u64);
            metrics::gauge!("podstore_disk_scrub_progress_ratio", "disk" => disk.clone())
                .set(ratio(ss.pass_bytes_done, ss.pass_bytes_total));
            g("podstore_disk_scrub_last_pass_end_timestamp_seconds", ss.last_pass_end_ms / 1000);
            g("podstore_disk_scrub_pass_start_timestamp_seconds", ss.pass_started_ms / 1000);
            g("podstore_disk_scrub_period_seconds", shared.cfg().maintenance.scrub_period_s);
            c("podstore_disk_scrub_passes_total", ss.passes);
            c("podstore_disk_scrub_records_total", ss.records_checked);
            c("podstore_disk_scrub_damaged_total", ss.bad_records + ss.bad_regions);
        }
    }
    let now_ms = now_ms();
    for p in peer_totals(shared, &stats) {
        let g = |name: &'static str, v: f64| metrics::gauge!(name, "peer" => p.name.clone()).set(v);
        g("podstore_repl_backlog_objects", p.objects as f64);
        g("podstore_repl_backlog_bytes", p.bytes as f64);
        g("podstore_repl_backlog_age_seconds", p.age_seconds(now_ms));
        g("podstore_repl_backlog_overflowed", if p.overflowed { 1.0 } else { 0.0 });
    }
    if let Some(r) = &shared.cfg().replication {
        for (p, ae) in r.peers.iter().zip(&shared.anti_entropy) {
            let g = |name: &'static str, v: f64| metrics::gauge!(name, "peer" => p.name.clone()).set(v);
            let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
            g(
                "podstore_repl_anti_entropy_running",
                if ae.running.load(Ordering::Relaxed) { 1.0 } else { 0.0 },
            );
            g("podstore_repl_anti_entropy_buckets_pending", n(&ae.buckets_differing) - n(&ae.buckets_done));
            g("podstore_repl_anti_entropy_pushed", n(&ae.pushed));
            g("podstore_repl_anti_entropy_pulled", n(&ae.pulled));
            let c = |name: &'static str, a: &std::sync::atomic::AtomicU64| {
                metrics::counter!(name, "peer" => p.name.clone()).absolute(a.load(Ordering::Relaxed))
            };
            c("podstore_repl_anti_entropy_passes_total", &ae.passes);
            c("podstore_repl_anti_entropy_errors_total", &ae.errors);
            g("podstore_repl_anti_entropy_last_end_timestamp_seconds", n(&ae.last_end_s));
        }
        for (p, up) in r.peers.iter().zip(&shared.peer_up) {
            let v = if up.load(Ordering::Relaxed) { 1.0 } else { 0.0 };
            metrics::gauge!("podstore_repl_peer_up", "peer" => p.name.clone()).set(v);
        }
        metrics::gauge!("podstore_repl_anti_entropy_interval_seconds").set(r.anti_entropy_interval_s as f64);
    }
    metrics::gauge!("podstore_tombstone_horizon_seconds")
        .set(shared.cfg().maintenance.tombstone_horizon_s as f64);
    for (i, name) in crate::shared::TIER_NAMES.iter().enumerate() {
        metrics::counter!("podstore_tier_reads_total", "tier" => *name)
            .absolute(shared.tier_reads[i].load(Ordering::Relaxed));
    }
    metrics::counter!("podstore_tier_promoted_total").absolute(shared.promoted.load(Ordering::Relaxed));
    if let Some(plan) = &shared.faults {
        for (kind, n) in plan.stats.counts() {
            metrics::counter!("podstore_test_faults_injected_total", "kind" => kind).absolute(n);
        }
    }
    let cache = crate::cache::CacheTotals::of(&shared.ram_cache);
    metrics::counter!("podstore_ram_cache_hits_total").absolute(cache.hits);
    metrics::counter!("podstore_ram_cache_misses_total").absolute(cache.misses);
    metrics::counter!("podstore_ram_cache_offered_total").absolute(cache.offered);
    metrics::counter!("podstore_ram_cache_invalidated_total").absolute(cache.invalidated);
    metrics::gauge!("podstore_ram_cache_bytes").set(cache.bytes as f64);
    metrics::gauge!("podstore_ram_cache_capacity_bytes").set(shared.cfg().ram_cache.size_bytes as f64);
    metrics::gauge!("podstore_ram_cache_entries").set(cache.entries as f64);
    metrics::gauge!("podstore_http_open_connections").set(shared.connections.load(Ordering::Relaxed) as f64);
    metrics::gauge!("podstore_recovery_duration_seconds")
        .set(shared.recovery_ms.load(Ordering::Relaxed) as f64 / 1000.0);
    metrics::gauge!("podstore_node_ready").set(if shared.ready.load(Ordering::Relaxed) { 1.0 } else { 0.0 });
    handle.render()
}

use podstore_engine::now_ms;

/// One peer's backlog over every disk.
#[derive(Debug, Default)]
struct PeerTotals {
    name: String,
    objects: u64,
    bytes: u64,
    oldest_created_ms: u64,
    overflowed: bool,
}

impl PeerTotals {
    fn age_seconds(&self, now_ms: u64) -> f64 {
        if self.objects == 0 {
            0.0
        } else {
            now_ms.saturating_sub(self.oldest_created_ms) as f64 / 1000.0
        }
    }
}

fn peer_totals(shared: &Shared, stats: &[ShardStats]) -> Vec<PeerTotals> {
    let Some(r) = &shared.cfg().replication else { return Vec::new() };
    r.peers
        .iter()
        .map(|p| {
            let mut t = PeerTotals { name: p.name.clone(), ..Default::default() };
            for (_, b) in stats.iter().flat_map(|s| s.backlogs.iter()).filter(|(n, _)| *n == p.name) {
                t.objects += b.objects;
                t.bytes += b.bytes;
                t.overflowed |= b.overflowed;
                if b.objects > 0 && (t.oldest_created_ms == 0 || b.oldest_created_ms < t.oldest_created_ms) {
                    t.oldest_created_ms = b.oldest_created_ms;
                }
            }
            t
        })
        .collect()
}

async fn peers_json(shared: &Shared) -> String {
    let stats = all_stats(shared).await;
    let now = now_ms();
    let cfg = shared.cfg();
    let conf = cfg.replication.as_ref();
    let peers: Vec<serde_json::Value> = peer_totals(shared, &stats)
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let c = conf.and_then(|r| r.peers.iter().find(|p| p.name == t.name));
            let ae = &shared.anti_entropy[i];
            let cu = &shared.catch_up[i];
            let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            serde_json::json!({
                "name": t.name,
                "datacenter": c.map(|c| c.datacenter.clone()),
                "address": c.map(|c| c.address.to_string()),
                "backlog_objects": t.objects,
                "backlog_bytes": t.bytes,
                "backlog_age_seconds": t.age_seconds(now),
                "backlog_overflowed": t.overflowed,
                // Deletes older than the horizon may be gone here: a peer this far behind
                // needs a full comparison (anti-entropy) and may bring old objects back.
                "beyond_tombstone_horizon":
                    t.age_seconds(now) > shared.cfg().maintenance.tombstone_horizon_s as f64,
                "catch_up": {
                    "copies": n(&cu.copies),
                    "bytes": n(&cu.bytes),
                    "first_copy_unix_ms": n(&cu.first_ms),
                    "last_copy_unix_ms": n(&cu.last_ms),
                },
                "anti_entropy": {
                    "running": ae.running.load(Ordering::Relaxed),
                    "passes": n(&ae.passes),
                    "buckets_differing": n(&ae.buckets_differing),
                    "buckets_done": n(&ae.buckets_done),
                    "keys_compared": n(&ae.keys_compared),
                    "pushed": n(&ae.pushed),
                    "pulled": n(&ae.pulled),
                    "errors": n(&ae.errors),
                    "pass_errors": n(&ae.pass_errors),
                    "last_end_unix_s": n(&ae.last_end_s),
                    "last_duration_ms": n(&ae.last_duration_ms),
                    "last_error": ae.last_error.lock().ok().and_then(|e| e.clone()),
                },
            })
        })
        .collect();
    serde_json::json!({
        "node": shared.cfg().node_id,
        "datacenter": conf.map(|r| r.datacenter.clone()),
        "replica_set_size": shared.cfg().replica_set_size(),
        "peers": peers,
    })
    .to_string()
}

async fn disks_json(shared: &Shared) -> String {
    let stats = all_stats(shared).await;
    let disks: Vec<serde_json::Value> = shared
        .layout
        .load()
        .disks
        .iter()
        .map(|d| {
            let s = stats.iter().find(|s| s.shard_id == d.id);
            serde_json::json!({
                "id": d.id,
                "path": d.path.display().to_string(),
                "tier": d.tier.to_string(),
                "state": disk_state(shared, d.id, s),
                "capacity_bytes": d.capacity_bytes,
                "used_bytes": s.map(|s| s.used_bytes).unwrap_or(0),
                "free_bytes": d.capacity_bytes.saturating_sub(s.map(|s| s.blob_bytes).unwrap_or(0)),
                "objects": s.map(|s| s.objects).unwrap_or(0),
                "dead_bytes": s.map(|s| s.dead_bytes).unwrap_or(0),
                "io_errors": s.map(|s| s.io_errors).unwrap_or(0),
                "quarantined": s.map(|s| s.quarantined).unwrap_or(0),
                // Whether new objects of its keys go to it, and whether its keys may also be
                // on the next disks of their chains (it filled up, was fenced or failed).
                "takes_writes": shared.routes.is_writable(d.id),
                "spilled": shared.routes.is_spilled(d.id),
                "reads_in_flight_max": s.map(|s| s.reads_in_flight_max).unwrap_or(0),
                "reads_in_flight_peak": s.map(|s| s.reads_in_flight_peak).unwrap_or(0),
                "profile": d.profile.map(|p| serde_json::json!({
                    "queue_depth": p.queue_depth,
                    "background_mib_per_s": p.background_mib_per_s,
                })),
                "error": d.failed.clone().or_else(|| s.and_then(|s| s.fenced.clone())),
            })
        })
        .collect();
    serde_json::json!({ "disks": disks }).to_string()
}

/// `/admin/tiers`: each tier's disks, objects, bytes and fill, the reads each tier served
/// (the RAM cache's among them) and their share of all reads, and the RAM cache.
async fn tiers_json(shared: &Shared) -> String {
    let stats = all_stats(shared).await;
    let layout = shared.layout.load();
    let reads: Vec<u64> = shared.tier_reads.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let all_reads: u64 = reads.iter().sum();
    let share = |n: u64| if all_reads == 0 { 0.0 } else { n as f64 / all_reads as f64 };
    let mut tiers = Vec::new();
    for (i, name) in crate::shared::TIER_NAMES.iter().enumerate().skip(1) {
        let disks: Vec<_> = layout.disks.iter().filter(|d| d.tier.as_str() == *name).collect();
        let st = |f: fn(&ShardStats) -> u64| -> u64 {
            disks.iter().filter_map(|d| stats.iter().find(|s| s.shard_id == d.id)).map(f).sum()
        };
        let capacity: u64 = disks.iter().map(|d| shared.usable_bytes(d.id)).sum();
        let used = st(|s| s.blob_bytes);
        tiers.push(serde_json::json!({
            "tier": name,
            "disks": disks.iter().map(|d| d.id).collect::<Vec<_>>(),
            "objects": st(|s| s.objects),
            "live_bytes": st(|s| s.live_bytes),
            "used_bytes": used,
            "capacity_bytes": capacity,
            "fill": if capacity == 0 { 0.0 } else { used as f64 / capacity as f64 },
            "reads": reads[i],
            "read_share": share(reads[i]),
        }));
    }
    let c = crate::cache::CacheTotals::of(&shared.ram_cache);
    let sum = |f: fn(&ShardStats) -> u64| -> u64 { stats.iter().map(f).sum() };
    serde_json::json!({
        "tiers": tiers,
        "migration": {
            "running": stats.iter().any(|s| s.migration_running),
            "backlog_bytes": sum(|s| s.migration_backlog_bytes),
            "migrated_objects": sum(|s| s.migrated_objects),
            "migrated_bytes": sum(|s| s.migrated_bytes),
            "failures": sum(|s| s.migration_failures),
        },
        "promoted": shared.promoted.load(Ordering::Relaxed),
        "ram_cache": {
            "size_bytes": shared.cfg().ram_cache.size_bytes,
            "object_size_max_bytes": shared.cfg().ram_cache.object_size_max_bytes,
            "bytes": c.bytes,
            "entries": c.entries,
            "hits": c.hits,
            "misses": c.misses,
            "hit_ratio": if c.hits + c.misses == 0 { 0.0 } else { c.hits as f64 / (c.hits + c.misses) as f64 },
            "offered": c.offered,
            "invalidated": c.invalidated,
            "reads": reads[crate::shared::TIER_RAM],
            "read_share": share(reads[crate::shared::TIER_RAM]),
        },
    })
    .to_string()
}

/// One disk's compaction and scrub, for `/admin/jobs`.
fn jobs_of(s: &ShardStats) -> serde_json::Value {
    let (c, sc) = (&s.compact, &s.scrub);
    serde_json::json!({
        "disk": s.shard_id,
        "background_bytes_per_s": s.background_bytes_per_s,
        "background_bytes": s.background_bytes,
        "dead_bytes": s.dead_bytes,
        "compaction": {
            "running": s.compact_running,
            "paused": s.compact_paused,
            "passes": c.passes,
            "current_blob": c.current_blob,
            "current_done_bytes": c.current_done_bytes,
            "current_total_bytes": c.current_total_bytes,
            "blobs_compacted": c.blobs_compacted,
            "bytes_reclaimed": c.bytes_reclaimed,
            "records_moved": c.records_moved,
            "bytes_moved": c.bytes_moved,
            "tombstones_dropped": c.tombstones_dropped,
            "blobs_skipped": c.blobs_skipped,
            "last_error": c.last_error,
        },
        "migration": {
            "running": s.migration_running,
            "paused": s.migration_paused,
            "passes": s.migration_passes,
            "backlog_bytes": s.migration_backlog_bytes,
            "migrated_objects": s.migrated_objects,
            "migrated_bytes": s.migrated_bytes,
            "failures": s.migration_failures,
            "last_error": s.migration_last_error,
        },
        "scrub": {
            "running": s.scrub_running,
            "paused": s.scrub_paused,
            "passes": sc.passes,
            "last_pass_end_ms": sc.last_pass_end_ms,
            "pass_started_ms": sc.pass_started_ms,
            "next_blob": sc.next_blob,
            "pass_bytes_done": sc.pass_bytes_done,
            "pass_bytes_total": sc.pass_bytes_total,
            "records_checked": sc.records_checked,
            "damaged_records": sc.bad_records,
            "damaged_regions": sc.bad_regions,
            "read_errors": sc.read_errors,
            "last_error": sc.last_error,
            "last_pass": {
                "records_checked": sc.last_pass.records_checked,
                "damaged_records": sc.last_pass.bad_records,
                "damaged_regions": sc.last_pass.bad_regions,
                "read_errors": sc.last_pass.read_errors,
            },
        },
    })
}

async fn jobs_json(shared: &Shared) -> String {
    let mut stats = all_stats(shared).await;
    stats.sort_by_key(|s| s.shard_id);
    serde_json::json!({ "disks": stats.iter().map(jobs_of).collect::<Vec<_>>() }).to_string()
}

/// `POST /admin/compact` and `POST /admin/scrub` with `?action=start|pause|resume|stop`
/// (default start), `&disk=N` (default every disk) and, for compaction, `&ratio=R` (the dead
/// share a blob needs; default any dead byte).
async fn job_request(shared: &Shared, job: crate::msg::JobKind, query: &str) -> Response<RespBody> {
    use crate::msg::JobAction;
    let err = |status, code: &str, msg: String| {
        reply(status, "application/json", serde_json::json!({"error": code, "message": msg}).to_string())
    };
    let (mut disk, mut action, mut ratio, mut idle_s) = (None, JobAction::Start, None, None);
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some(("disk", v)) => match v.parse::<u32>() {
                Ok(d) if shared.disk(d).is_some() => disk = Some(d),
                _ => return err(StatusCode::NOT_FOUND, "not_found", format!("no disk {v:?} on this node")),
            },
            Some(("action", v)) => {
                action = match v {
                    "start" => JobAction::Start,
                    "pause" => JobAction::Pause,
                    "resume" => JobAction::Resume,
                    "stop" => JobAction::Stop,
                    _ => {
                        return err(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            format!("action {v:?}: expected start, pause, resume or stop"),
                        )
                    }
                }
            }
            Some(("ratio", v)) if job == crate::msg::JobKind::Compact => match v.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => ratio = Some(r),
                _ => {
                    return err(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("ratio {v:?}: expected 0 to 1"),
                    )
                }
            },
            Some(("idle_s", v)) if job == crate::msg::JobKind::Migrate => match v.parse::<u64>() {
                Ok(s) if s <= 3650 * 86_400 => idle_s = Some(s),
                _ => {
                    return err(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("idle_s {v:?}: expected seconds, 0 to 10 years"),
                    )
                }
            },
            _ => return err(StatusCode::BAD_REQUEST, "bad_request", format!("unknown parameter {kv:?}")),
        }
    }
    // Migration moves the fast tier's objects: a node without one has nothing to migrate.
    let layout = shared.layout.load();
    let fast = |d: &crate::shared::DiskInfo| d.tier == podstore_disks::Tier::Fast;
    if job == crate::msg::JobKind::Migrate && !layout.disks.iter().any(fast) {
        return err(
            StatusCode::CONFLICT,
            "no_fast_tier",
            "this node has no fast tier: migration moves objects from disks of tier \"fast\" to the \
             capacity tier, and every disk here is of tier \"capacity\""
                .into(),
        );
    }
    if let (crate::msg::JobKind::Migrate, Some(d)) = (job, disk) {
        if layout.disks.iter().any(|x| x.id == d && !fast(x)) {
            return err(
                StatusCode::CONFLICT,
                "not_fast_tier",
                format!("disk {d} is of the capacity tier: migration moves objects off fast disks"),
            );
        }
    }
    drop(layout);
    let mut applied = Vec::new();
    for inbox in &shared.inboxes {
        let (tx, rx) = oneshot::channel();
        let msg = CoreMsg::Job { disk, job, action, ratio, idle_s, reply: tx };
        if inbox.send(msg).await.is_err() {
            return err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the node is shutting down".into());
        }
        if let Ok(Ok(mut d)) = tokio::time::timeout(Duration::from_secs(5), rx).await {
            applied.append(&mut d);
        }
    }
    if applied.is_empty() {
        return err(StatusCode::CONFLICT, "no_disk", "no serving disk took the request".into());
    }
    applied.sort_unstable();
    reply(StatusCode::ACCEPTED, "application/json", serde_json::json!({ "disks": applied }).to_string())
}

/// `POST /admin/drain?disk=N`: the disk takes no more writes and its keys move to the others
/// (`/admin/disks` says `draining`, then `drained`: safe to pull).
async fn start_drain(shared: &Arc<Shared>, query: &str) -> Response<RespBody> {
    let err = |status, code: &str, msg: &str| {
        reply(status, "application/json", serde_json::json!({"error": code, "message": msg}).to_string())
    };
    let Some(disk) =
        query.split('&').find_map(|kv| kv.strip_prefix("disk=")).and_then(|v| v.parse::<u32>().ok())
    else {
        return err(StatusCode::BAD_REQUEST, "bad_request", "name the disk: /admin/drain?disk=N");
    };
    if shared.disk(disk).is_none() {
        return err(StatusCode::NOT_FOUND, "not_found", "no such disk on this node");
    }
    let others = shared.layout.load().disks.iter().any(|d| d.id != disk && shared.routes.is_writable(d.id));
    if !others && !shared.routes.is_draining(disk) {
        return err(StatusCode::CONFLICT, "no_room", "no other disk takes writes: nowhere to move its keys");
    }
    let sh = shared.clone();
    let known = tokio::task::spawn_blocking(move || sh.routes.drain(disk)).await.unwrap_or(false);
    if !known {
        return err(StatusCode::NOT_FOUND, "not_found", "the disk has no place in the node's placement");
    }
    shared.rebalance_wake.notify_waiters();
    reply(
        StatusCode::ACCEPTED,
        "application/json",
        serde_json::json!({"disk": disk, "draining": true}).to_string(),
    )
}

/// Disks a node takes at most (the replication handshake tells peers about each).
const DISKS_MAX: usize = crate::peer::frame::PLACEMENT_DISKS_MAX;

/// `POST /admin/disks?id=N&path=P`, optionally with `weight=W` (default: its size in the unit
/// the node's disks use, `same_unit_weight`), `tier=fast|capacity` (default capacity), `cache=direct|buffered` and
/// `require_mount_point=false`: adds a disk while the node runs. It is checked and labelled,
/// opened on the core with the fewest disks, and joins the placement (recorded in the
/// placement file on every disk, so it is opened at every start). It joins spilled: the keys
/// it becomes the home of are written to it at once and moved to it from the other disks in
/// the background, under their budgets; `/admin/disks` shows it `spilled` until that is done.
async fn add_disk(shared: &Arc<Shared>, query: &str) -> Response<RespBody> {
    use crate::config::{CacheConf, DiskConf, TierConf};
    let err = |status, code: &str, msg: String| {
        reply(status, "application/json", serde_json::json!({"error": code, "message": msg}).to_string())
    };
    let bad = |msg: String| err(StatusCode::BAD_REQUEST, "bad_request", msg);
    let mut conf = DiskConf {
        id: u32::MAX,
        path: Default::default(),
        tier: TierConf::Capacity,
        require_mount_point: true,
        cache: CacheConf::Direct,
        weight: None,
    };
    let (mut id, mut path) = (None, None);
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let Some((k, v)) = kv.split_once('=') else { return bad(format!("{kv:?}: expected name=value")) };
        let v = match crate::names::percent_decode(v).ok().and_then(|v| String::from_utf8(v).ok()) {
            Some(v) => v,
            None => return bad(format!("{k}: not percent-encoded UTF-8")),
        };
        match (k, v.as_str()) {
            ("id", v) => match v.parse::<u32>() {
                Ok(v) => id = Some(v),
                Err(_) => return bad(format!("id {v:?}: expected a disk number")),
            },
            ("path", v) => path = Some(std::path::PathBuf::from(v)),
            ("weight", v) => match v.parse::<f64>() {
                Ok(w) if w > 0.0 && w.is_finite() => conf.weight = Some(w),
                _ => return bad(format!("weight {v:?}: expected a positive number")),
            },
            ("tier", "fast") => conf.tier = TierConf::Fast,
            ("tier", "capacity") => conf.tier = TierConf::Capacity,
            ("cache", "direct") => conf.cache = CacheConf::Direct,
            ("cache", "buffered") => conf.cache = CacheConf::Buffered,
            ("require_mount_point", "true") => conf.require_mount_point = true,
            ("require_mount_point", "false") => conf.require_mount_point = false,
            _ => return bad(format!("{k}={v:?}: unknown parameter or value")),
        }
    }
    let (Some(id), Some(path)) = (id, path) else {
        return bad("name the disk and its directory: /admin/disks?id=N&path=/srv/podstore/diskN".into());
    };
    conf.id = id;
    if !path.is_absolute() || path.to_str().is_none_or(|p| p.contains(['\n', '\r'])) {
        return bad(format!("path {}: expected an absolute path on one line", path.display()));
    }
    let Ok(path) = path.canonicalize() else {
        return bad(format!("path {}: no such directory", path.display()));
    };
    conf.path = path.clone();
    if shared.adding_disk.swap(true, Ordering::AcqRel) {
        return err(
            StatusCode::CONFLICT,
            "busy",
            "another disk is being added; try again when it is done".into(),
        );
    }
    let r = add_disk_now(shared, conf).await;
    shared.adding_disk.store(false, Ordering::Release);
    match r {
        Ok(body) => reply(StatusCode::CREATED, "application/json", body.to_string()),
        Err((status, code, msg)) => err(status, code, msg),
    }
}

/// The weight of a new disk of `capacity_bytes` in the unit the node's disks already use:
/// its size times their weight per byte (configured disks of weight 1 each give a disk of
/// the same size weight 1, disks weighed by their size give it its size). None when no
/// serving disk tells the unit.
fn same_unit_weight(layout: &crate::shared::Layout, capacity_bytes: u64) -> Option<f64> {
    let (mut weight, mut bytes) = (0.0, 0.0);
    for c in &layout.placement {
        let Some(d) = layout.disks.iter().find(|d| d.id == c.shard_id && d.capacity_bytes > 0) else {
            continue;
        };
        weight += c.weight;
        bytes += d.capacity_bytes as f64;
    }
    (bytes > 0.0 && capacity_bytes > 0)
        .then(|| (capacity_bytes as f64 * weight / bytes).max(f64::MIN_POSITIVE))
}

async fn add_disk_now(
    shared: &Arc<Shared>,
    conf: crate::config::DiskConf,
) -> Result<serde_json::Value, (StatusCode, &'static str, String)> {
    let id = conf.id;
    let layout = shared.layout.load_full();
    let same = |p: &std::path::Path| p.canonicalize().is_ok_and(|p| p == conf.path);
    if shared.routes.knows(id) || layout.disks.iter().any(|d| d.id == id) {
        return Err((
            StatusCode::CONFLICT,
            "disk_exists",
            format!("disk {id} is already a disk of this node"),
        ));
    }
    if let Some(d) = layout.disks.iter().find(|d| same(&d.path)) {
        return Err((
            StatusCode::CONFLICT,
            "disk_exists",
            format!("{} is disk {} already", conf.path.display(), d.id),
        ));
    }
    if layout.disks.len() >= DISKS_MAX {
        return Err((
            StatusCode::CONFLICT,
            "too_many_disks",
            format!("a node takes at most {DISKS_MAX} disks"),
        ));
    }
    // The core with the fewest disks owns it.
    let mut load = vec![0usize; shared.inboxes.len()];
    for &c in layout.shard_core.values() {
        load[c] += 1;
    }
    let core = (0..load.len()).min_by_key(|&c| load[c]).unwrap_or(0);
    let (node_id, engine) = (shared.cfg().node_id.clone(), shared.cfg().engine.clone());
    let c2 = conf.clone();
    let (spec, info, weight) =
        tokio::task::spawn_blocking(move || crate::prepare::prepare_disk(&c2, &node_id, &engine, None, core))
            .await
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
            .map_err(|e| (StatusCode::CONFLICT, "disk_in_use", e))?;
    if let Some(why) = &info.failed {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, "unusable_disk", why.clone()));
    }
    let weight = match conf.weight {
        Some(w) => w,
        None => same_unit_weight(&layout, info.capacity_bytes).unwrap_or(weight.unwrap_or(1.0)),
    };
    let (tx, rx) = oneshot::channel();
    let msg = CoreMsg::AddDisk { spec, profile: info.profile, reply: tx };
    let unavailable =
        || (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the node is shutting down".to_string());
    shared.inboxes[core].send(msg).await.map_err(|_| unavailable())?;
    let report = rx.await.map_err(|_| unavailable())?.map_err(|e| {
        (StatusCode::UNPROCESSABLE_ENTITY, "unusable_disk", format!("the disk did not open: {e}"))
    })?;
    // Its core first (a write sent to it finds it), then the placement.
    let mut next = (*layout).clone();
    next.disks.push(info);
    next.shard_core.insert(id, core);
    let candidate = podstore_engine::placement::Candidate { shard_id: id, weight };
    next.placement.push(candidate);
    shared.layout.store(Arc::new(next));
    let added = crate::route::AddedDisk {
        path: conf.path.clone(),
        tier: conf.tier,
        cache: conf.cache,
        require_mount_point: conf.require_mount_point,
    };
    let (sh, dir) = (shared.clone(), conf.path.clone());
    let placed = tokio::task::spawn_blocking(move || sh.routes.add(candidate, dir, added))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(e) = placed {
        shared.layout.store(layout); // as it was: the disk stays open on its core, unused
        return Err((StatusCode::INTERNAL_SERVER_ERROR, "placement_not_recorded", e));
    }
    shared.rebalance_wake.notify_waiters();
    Ok(serde_json::json!({
        "disk": id,
        "path": conf.path.display().to_string(),
        "core": core,
        "weight": weight,
        "recovered_records": report.map_or(0, |r| r.records_applied),
    }))
}

/// `POST /admin/recover?peer=NAME`: start an anti-entropy pass with that peer now.
fn start_recover(shared: &Shared, query: &str) -> Response<RespBody> {
    let err = |status, code: &str, msg: &str| {
        reply(status, "application/json", serde_json::json!({"error": code, "message": msg}).to_string())
    };
    let Some(peer) = query.split('&').find_map(|kv| kv.strip_prefix("peer=")) else {
        return err(StatusCode::BAD_REQUEST, "bad_request", "name the peer: /admin/recover?peer=NAME");
    };
    let Some(i) = shared.cfg().replication.as_ref().and_then(|r| r.peers.iter().position(|p| p.name == peer))
    else {
        return err(StatusCode::NOT_FOUND, "not_found", "no such peer in the replica set");
    };
    let ae = &shared.anti_entropy[i];
    let passes = ae.passes.load(Ordering::Relaxed);
    ae.requested.store(true, Ordering::Relaxed);
    ae.wake.notify_one();
    reply(
        StatusCode::ACCEPTED,
        "application/json",
        serde_json::json!({"peer": peer, "passes_before": passes}).to_string(),
    )
}

fn reply(status: StatusCode, ctype: &'static str, body: String) -> Response<RespBody> {
    Response::builder()
        .status(status)
        .header(header::SERVER, SERVER)
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CONTENT_LENGTH, body.len())
        .body(RespBody::full(body))
        .expect("static headers are valid")
}

async fn handle(shared: Arc<Shared>, handle: PrometheusHandle, req: Request<Incoming>) -> Response<RespBody> {
    if req.method() == Method::POST {
        let q = req.uri().query().unwrap_or("");
        match req.uri().path() {
            "/admin/recover" => return start_recover(&shared, q),
            "/admin/drain" => return start_drain(&shared, q).await,
            "/admin/disks" => return add_disk(&shared, q).await,
            "/admin/compact" => return job_request(&shared, crate::msg::JobKind::Compact, q).await,
            "/admin/scrub" => return job_request(&shared, crate::msg::JobKind::Scrub, q).await,
            "/admin/migrate" => return job_request(&shared, crate::msg::JobKind::Migrate, q).await,
            _ => {}
        }
    }
    if req.method() != Method::GET {
        let body = r#"{"error":"method_not_allowed","message":"the admin API is read-only but for POST /admin/disks, /admin/recover, /admin/drain, /admin/compact and /admin/scrub"}"#.to_string();
        return reply(StatusCode::METHOD_NOT_ALLOWED, "application/json", body);
    }
    let ready = shared.ready.load(Ordering::Relaxed) && !shared.draining.load(Ordering::Relaxed);
    match req.uri().path() {
        "/metrics" => {
            reply(StatusCode::OK, "text/plain; version=0.0.4", render_metrics(&shared, &handle).await)
        }
        "/health" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/ready" if ready => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        "/ready" => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n".into()),
        "/admin/disks" => reply(StatusCode::OK, "application/json", disks_json(&shared).await),
        "/admin/peers" => reply(StatusCode::OK, "application/json", peers_json(&shared).await),
        "/admin/jobs" => reply(StatusCode::OK, "application/json", jobs_json(&shared).await),
        "/admin/tiers" => reply(StatusCode::OK, "application/json", tiers_json(&shared).await),
        _ => reply(
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"error":"not_found","message":"no such endpoint"}"#.into(),
        ),
    }
}

/// Serves the admin port until shutdown.
pub async fn serve(
    shared: Arc<Shared>,
    handle: PrometheusHandle,
    listener: std::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener =
        match listener.set_nonblocking(true).and_then(|_| tokio::net::TcpListener::from_std(listener)) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("admin listener: {e}");
                return;
            }
        };
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("admin accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let (shared, handle) = (shared.clone(), handle.clone());
        tokio::task::spawn_local(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (shared, handle) = (shared.clone(), handle.clone());
                async move { Ok::<_, std::convert::Infallible>(self::handle(shared, handle, req).await) }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
            let _ = b.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
        });
    }
}

#[cfg(test)]
mod tests {
    /// Every metric name in the sources is described (a metric without help text fails
    /// `promtool check metrics`, and one that appears only sometimes would slip past a test
    /// of a live node).
    #[test]
    fn every_metric_name_used_is_described() {
        let own = include_str!("admin.rs");
        let start = own.find("pub fn describe_metrics").expect("the description function");
        let end = start + own[start..].find("\n}\n").expect("its end");
        let described = &own[start..end];
        // Every source file of the crate, read at test time (a list kept by hand drifts), each
        // without its tests (which name metrics only to read them).
        let mut sources = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir).expect("the crate's sources") {
                let path = e.expect("a directory entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&path).expect("a source file");
                    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default().to_string();
                    sources.push((path.display().to_string(), code));
                }
            }
        }
        assert!(sources.len() > 20, "{} source files found", sources.len());
        let mut seen = 0;
        for (file, text) in &sources {
            let mut rest = &text[..];
            while let Some(at) = rest.find("\"podstore_") {
                let tail = &rest[at + 1..];
                let end = tail.find('"').expect("a closing quote");
                let name = &tail[..end];
                assert!(described.contains(&format!("\"{name}\"")), "{file}: {name} has no description");
                seen += 1;
                rest = &tail[end..];
            }
        }
        assert!(seen > 40, "{seen} names found");
    }
}
