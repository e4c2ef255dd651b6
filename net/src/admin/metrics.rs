//! The node's metrics: each described once (help text and unit), and rendered for `/metrics`
//! with the gauges read from the cores at each scrape.

use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use podstore_engine::{now_ms, ShardStats};
use tokio::sync::oneshot;

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

pub(super) fn disk_state(shared: &Shared, id: u32, stats: Option<&ShardStats>) -> &'static str {
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

/// One peer's backlog over every disk.
#[derive(Debug, Default)]
pub(super) struct PeerTotals {
    pub(super) name: String,
    pub(super) objects: u64,
    pub(super) bytes: u64,
    pub(super) oldest_created_ms: u64,
    pub(super) overflowed: bool,
}

impl PeerTotals {
    pub(super) fn age_seconds(&self, now_ms: u64) -> f64 {
        if self.objects == 0 {
            0.0
        } else {
            now_ms.saturating_sub(self.oldest_created_ms) as f64 / 1000.0
        }
    }
}

pub(super) fn peer_totals(shared: &Shared, stats: &[ShardStats]) -> Vec<PeerTotals> {
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
    c!(
        "podstore_repl_copy_failures_total",
        "Copies of client writes that failed, by peer and reason (cooling_down, dial, lost, protocol, peer_failed, local)"
    );
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
    let cache = podstore_engine::cache::CacheTotals::of(&shared.ram_cache);
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

#[cfg(test)]
mod tests {
    /// Every metric name in the sources is described (a metric without help text fails
    /// `promtool check metrics`, and one that appears only sometimes would slip past a test
    /// of a live node).
    #[test]
    fn every_metric_name_used_is_described() {
        let own = include_str!("metrics.rs");
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
