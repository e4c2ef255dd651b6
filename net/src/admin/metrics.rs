//! The node's metrics: each described once (help text and unit), and rendered for `/metrics`
//! with the gauges read from the cores at each scrape.

use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics::Unit;
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

/// How a metric counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}
use Kind::{Counter, Gauge, Histogram};

/// A metric the node exports: its kind, name, unit and help text (the exposition's `# HELP`).
struct Described {
    kind: Kind,
    name: &'static str,
    unit: Option<metrics::Unit>,
    help: &'static str,
}

const fn m(kind: Kind, name: &'static str, unit: Option<metrics::Unit>, help: &'static str) -> Described {
    Described { kind, name, unit, help }
}

/// Every metric the node exports. A test checks that every name the sources use is here.
#[rustfmt::skip]
const METRICS: &[Described] = &[
    m(Gauge, "podstore_disk_state", None, "1 for the disk's state (online, read_only: fenced after a write error, failed, draining, drained)"),
    m(Gauge, "podstore_disk_capacity_bytes", Some(Unit::Bytes), "Size of the disk's filesystem (or the configured limit)"),
    m(Gauge, "podstore_disk_used_bytes", Some(Unit::Bytes), "Bytes of blob files and checkpoints on the disk"),
    m(Gauge, "podstore_disk_free_bytes", Some(Unit::Bytes), "Bytes still available to blob files"),
    m(Gauge, "podstore_disk_objects", None, "Live objects on the disk"),
    m(Counter, "podstore_tier_reads_total", None, "Object reads served, by tier: ram (the RAM cache), fast, capacity"),
    m(Counter, "podstore_disk_migrated_objects_total", None, "Objects moved from this fast disk to the capacity tier"),
    m(Counter, "podstore_tier_promoted_total", None, "Objects of the capacity tier read often and copied back to the fast tier"),
    m(Counter, "podstore_disk_migrated_bytes_total", Some(Unit::Bytes), "Bytes moved from this fast disk to the capacity tier"),
    m(Counter, "podstore_disk_migration_failures_total", None, "Objects of this fast disk that could not be moved to the capacity tier"),
    m(Gauge, "podstore_disk_migration_backlog_bytes", Some(Unit::Bytes), "Bytes this fast disk had to move to the capacity tier at its last look"),
    m(Counter, "podstore_ram_cache_hits_total", None, "GETs the RAM cache answered"),
    m(Counter, "podstore_ram_cache_misses_total", None, "GETs the RAM cache could not answer (read from disk)"),
    m(Counter, "podstore_ram_cache_offered_total", None, "Objects read from disk and offered to the RAM cache (admitted or not)"),
    m(Counter, "podstore_ram_cache_invalidated_total", None, "RAM cache entries dropped because their object was written, deleted or moved"),
    m(Gauge, "podstore_ram_cache_bytes", Some(Unit::Bytes), "Memory the RAM cache holds (objects, keys and entries)"),
    m(Gauge, "podstore_ram_cache_capacity_bytes", Some(Unit::Bytes), "Memory the RAM cache may hold (ram_cache.size_bytes)"),
    m(Gauge, "podstore_ram_cache_entries", None, "Objects in the RAM cache"),
    m(Gauge, "podstore_write_memory_bytes", Some(Unit::Bytes), "Bytes of full-size write buffers the node's writes hold"),
    m(Gauge, "podstore_write_memory_max_bytes", Some(Unit::Bytes), "Most bytes of full-size write buffers (engine.write_memory_bytes)"),
    m(Counter, "podstore_write_memory_refused_total", None, "Writes that found the write memory spent and went on with one small buffer"),
    m(Gauge, "podstore_disk_tombstones", None, "Tombstones (versioned deletes) on the disk"),
    m(Gauge, "podstore_disk_dead_bytes", Some(Unit::Bytes), "Bytes of overwritten or deleted records (reclaimed by compaction)"),
    m(Gauge, "podstore_disk_live_bytes", Some(Unit::Bytes), "Bytes of live records"),
    m(Gauge, "podstore_disk_quarantined", None, "Records set aside after failing their checksums"),
    m(Gauge, "podstore_index_memory_bytes", Some(Unit::Bytes), "Memory of the disk's in-memory index"),
    m(Gauge, "podstore_group_commit_last_batch_writers", None, "Writers that shared the disk's last fdatasync"),
    m(Gauge, "podstore_disk_reads_in_flight_max", None, "The disk's read limit (its measured queue depth, or the default)"),
    m(Gauge, "podstore_disk_reads_in_flight_peak", None, "The most reads the disk has had in flight at once"),
    m(Gauge, "podstore_disk_takes_writes", None, "1 if the disk takes new objects; 0 when full, fenced or failed (its keys' writes go to the next disks)"),
    m(Gauge, "podstore_disk_spilled", None, "1 if some of the disk's keys may live on the next disks of their order"),
    m(Counter, "podstore_disk_io_errors_total", None, "I/O errors on the disk since the node started"),
    m(Counter, "podstore_disk_checksum_errors_total", None, "Reads that failed their checksums since the node started"),
    m(Counter, "podstore_disk_fdatasyncs_total", None, "fdatasync calls (one per group commit) since the node started"),
    m(Gauge, "podstore_disk_open_blob_files", None, "Blob files the disk keeps open (engine.open_blob_files_max at most, after a trim)"),
    m(Counter, "podstore_disk_blob_reopens_total", None, "Blob files opened again after the open-file cache had closed them"),
    m(Counter, "podstore_disk_zeroed_ahead_bytes_total", None, "Bytes written with zeros ahead of the disk's write position (engine.zero_ahead_bytes)"),
    m(Counter, "podstore_disk_zero_ahead_waits_total", None, "Writes that caught up with a zeroing ahead and waited for it (that blob is then not zeroed further)"),
    m(Counter, "podstore_disk_checkpoints_total", None, "Index checkpoints written since the node started"),
    m(Gauge, "podstore_names_memory_bytes", Some(Unit::Bytes), "Memory of the disk's name index (its memtable and the first key of each block of its runs)"),
    m(Gauge, "podstore_names_runs", None, "Sorted run files of the disk's name index"),
    m(Gauge, "podstore_names_run_bytes", Some(Unit::Bytes), "Bytes of the disk's name index runs"),
    m(Gauge, "podstore_names_ready", None, "1 while the disk's name index serves listings; 0 after a run failed its checks (rebuilt at the next start)"),
    m(Counter, "podstore_names_flushes_total", None, "Name index memtables written as runs"),
    m(Counter, "podstore_names_merges_total", None, "Name index runs merged"),
    m(Counter, "podstore_names_written_bytes_total", Some(Unit::Bytes), "Bytes of name index runs written (flushes and merges)"),
    m(Gauge, "podstore_disk_background_budget_bytes_per_second", Some(Unit::Bytes), "The disk's background I/O budget (compaction and scrub share it)"),
    m(Counter, "podstore_disk_background_bytes_total", Some(Unit::Bytes), "Bytes background jobs read and wrote on the disk"),
    m(Counter, "podstore_disk_moved_away_total", None, "Keys moved from the disk to the disks that take their writes (rebalancing, draining)"),
    m(Counter, "podstore_disk_move_failures_total", None, "Keys that could not be moved off the disk (retried)"),
    m(Gauge, "podstore_disk_compaction_running", None, "1 while a compaction pass runs on the disk"),
    m(Gauge, "podstore_disk_compaction_paused", None, "1 while the disk's compaction is paused"),
    m(Gauge, "podstore_disk_compaction_progress_ratio", None, "Share of the live records of the blob being compacted moved so far"),
    m(Counter, "podstore_disk_compacted_blobs_total", None, "Blob files compacted and removed since the node started"),
    m(Counter, "podstore_disk_reclaimed_bytes_total", Some(Unit::Bytes), "Bytes of blob files compaction removed"),
    m(Counter, "podstore_disk_compaction_moved_bytes_total", Some(Unit::Bytes), "Bytes of live records compaction rewrote"),
    m(Counter, "podstore_disk_tombstones_dropped_total", None, "Tombstones past the horizon compaction dropped"),
    m(Counter, "podstore_disk_compaction_skipped_total", None, "Blobs compaction left in place because a record in them awaits repair"),
    m(Gauge, "podstore_disk_scrub_running", None, "1 while a scrub pass runs on the disk"),
    m(Gauge, "podstore_disk_scrub_paused", None, "1 while the disk's scrub is paused"),
    m(Gauge, "podstore_disk_scrub_progress_ratio", None, "Share of the disk the current scrub pass has read"),
    m(Gauge, "podstore_disk_scrub_last_pass_end_timestamp_seconds", Some(Unit::Seconds), "When the disk's last full scrub pass ended (Unix time; 0: never)"),
    m(Gauge, "podstore_disk_scrub_pass_start_timestamp_seconds", Some(Unit::Seconds), "When the current scrub pass started (Unix time; 0: none running)"),
    m(Gauge, "podstore_disk_scrub_period_seconds", Some(Unit::Seconds), "The configured period of a full scrub pass"),
    m(Counter, "podstore_disk_scrub_passes_total", None, "Full scrub passes of the disk (kept across restarts)"),
    m(Counter, "podstore_disk_scrub_records_total", None, "Records the scrub verified since the node started"),
    m(Counter, "podstore_disk_scrub_damaged_total", None, "Damaged records and regions the scrub found since the node started"),
    m(Counter, "podstore_repairs_total", None, "Quarantined objects the repair loop dealt with, by outcome (read_again: a record marked bad after a read error read whole again; repaired, not_repaired: asked of peers)"),
    m(Gauge, "podstore_node_ready", None, "1 once every shard recovered and the node serves data"),
    m(Gauge, "podstore_tombstone_horizon_seconds", Some(Unit::Seconds), "How long deletes are kept; a peer whose backlog is older needs anti-entropy"),
    m(Gauge, "podstore_recovery_duration_seconds", Some(Unit::Seconds), "How long the last start's recovery took"),
    m(Gauge, "podstore_http_open_connections", None, "Open client connections on the data port"),
    m(Counter, "podstore_http_requests_total", None, "Data requests by operation and status"),
    m(Histogram, "podstore_http_request_duration_seconds", Some(Unit::Seconds), "Data request latency by operation, until the response head"),
    m(Counter, "podstore_http_received_bytes_total", Some(Unit::Bytes), "Object bytes received from clients"),
    m(Counter, "podstore_list_keys_total", None, "Objects and common prefixes returned by listings"),
    m(Counter, "podstore_s3_requests_total", None, "Requests on the S3 port, by method and status"),
    m(Counter, "podstore_md5_hashed_bytes_total", Some(Unit::Bytes), "Body bytes hashed with MD5 (S3 PUTs' ETags), by kernel: lanes (beside other bodies, one SIMD lane each) or single (one body at a time)"),
    m(Counter, "podstore_md5_lane_pass_bytes_total", Some(Unit::Bytes), "Bytes of each lane of the MD5 vector passes: the lanes' bytes over this is how many bodies a pass hashed on average (of 8)"),
    m(Histogram, "podstore_s3_request_duration_seconds", Some(Unit::Seconds), "Time to the answer's headers of requests on the S3 port"),
    m(Counter, "podstore_s3_multipart_total", None, "S3 multipart operations done, by op: create, part, complete, abort"),
    m(Counter, "podstore_s3_copies_total", None, "S3 copies made inside the node, by op: object (CopyObject), part (UploadPartCopy)"),
    m(Counter, "podstore_multipart_read_failures_total", None, "Reads of a multipart object that stopped partway (a part missing or not the one completed)"),
    m(Counter, "podstore_multipart_sweeps_total", None, "Passes of the multipart sweep (expired uploads, parts no object names)"),
    m(Counter, "podstore_multipart_swept_total", None, "Records the multipart sweep forgot on this appliance, by what: upload (an expired upload's state), part"),
    m(Gauge, "podstore_multipart_open_uploads", None, "Multipart uploads open (not completed, aborted or expired) at the last sweep"),
    m(Counter, "podstore_http_sent_bytes_total", Some(Unit::Bytes), "Object bytes sent to clients"),
    m(Counter, "podstore_http_connections_refused_total", None, "Connections refused at the connection limit"),
    m(Counter, "podstore_test_faults_injected_total", None, "Test builds with PODSTORE_FAULTS only: disk faults injected, by kind"),
    m(Counter, "podstore_http_header_timeouts_total", None, "Connections closed because a request's headers did not arrive within limits.header_timeout_ms"),
    m(Counter, "podstore_disk_writes_refused_unfilled_total", None, "Writes refused (503 busy) because engine.unfilled_percent_max of the disk was reserved by writes whose bodies had not arrived"),
    m(Counter, "podstore_repl_copy_retries_total", None, "Failed copies a client waited for, sent again from the stored record on a fresh connection, by outcome"),
    m(Counter, "podstore_config_reloads_total", None, "Reloads of the configuration file (SIGHUP, podstore reload), by outcome (ok, failed)"),
    m(Counter, "podstore_http_unparsable_requests_total", None, "Requests the HTTP parser refused before any handler (431 headers beyond the limits, 414, 400), by status"),
    m(Gauge, "podstore_repl_backlog_objects", None, "Writes the peer has not confirmed yet (catch-up backlog)"),
    m(Gauge, "podstore_repl_backlog_bytes", Some(Unit::Bytes), "Bytes of the writes in the peer's backlog"),
    m(Gauge, "podstore_repl_backlog_age_seconds", Some(Unit::Seconds), "Age of the oldest write in the peer's backlog"),
    m(Gauge, "podstore_repl_backlog_overflowed", None, "1 if the peer's backlog overflowed its limit (anti-entropy completes it)"),
    m(Gauge, "podstore_repl_anti_entropy_running", None, "1 while an anti-entropy pass with the peer runs"),
    m(Gauge, "podstore_repl_anti_entropy_buckets_pending", None, "Differing digest buckets not yet compared in the current pass"),
    m(Gauge, "podstore_repl_anti_entropy_pushed", None, "Objects copied to the peer in the current or last pass"),
    m(Gauge, "podstore_repl_anti_entropy_pulled", None, "Objects copied from the peer in the current or last pass"),
    m(Counter, "podstore_repl_anti_entropy_passes_total", None, "Anti-entropy passes with the peer since the node started"),
    m(Counter, "podstore_repl_anti_entropy_errors_total", None, "Failed copies and passes of anti-entropy with the peer"),
    m(Gauge, "podstore_repl_peer_up", None, "1 while this node holds a connection to the peer that answers, else 0"),
    m(Gauge, "podstore_repl_anti_entropy_interval_seconds", Some(Unit::Seconds), "Configured time between anti-entropy passes with each peer (0: on demand only)"),
    m(Gauge, "podstore_repl_anti_entropy_last_end_timestamp_seconds", Some(Unit::Seconds), "When the last pass with the peer ended (Unix time)"),
    m(Counter, "podstore_repl_copies_total", None, "Copies of client writes sent to peers, by peer and outcome"),
    m(Counter, "podstore_repl_copy_failures_total", None, "Copies of client writes that failed, by peer and reason (cooling_down, dial, lost, protocol, peer_failed, local)"),
    m(Counter, "podstore_repl_catch_up_copies_total", None, "Backlogged writes delivered to the peer by catch-up"),
    m(Counter, "podstore_repl_catch_up_bytes_total", None, "Record bytes of the backlogged writes delivered to the peer by catch-up"),
    m(Counter, "podstore_repl_catch_up_woken_total", None, "Catch-up back-offs toward the peer cut short because the peer connected to this node"),
    m(Counter, "podstore_repl_connections_total", None, "Replication connections opened to peers"),
    m(Counter, "podstore_repl_handshake_failures_total", None, "Failed replication handshakes with peers"),
    m(Counter, "podstore_repl_refused_total", None, "Incoming replication connections refused, by reason"),
    m(Counter, "podstore_repl_read_repairs_total", None, "GETs served from a peer and repaired locally, by outcome"),
    m(Counter, "podstore_repl_sent_bytes_total", Some(Unit::Bytes), "Object bytes sent to the peer"),
    m(Counter, "podstore_repl_received_bytes_total", Some(Unit::Bytes), "Object bytes received from the peer"),
    m(Counter, "podstore_repl_received_direct_total", None, "Copies received straight into the owning core's write buffers"),
    m(Counter, "podstore_repl_received_forwarded_total", None, "Copies received on another core than their disk's and passed to it"),
    m(Counter, "podstore_repl_zero_copy_fallbacks_total", None, "Times zero-copy sends to the peer fell back to plain sends"),
];

/// Describes every metric to the recorder (help text and unit). Called once, after the
/// recorder is installed.
pub fn describe_metrics() {
    for d in METRICS {
        match (d.kind, d.unit) {
            (Counter, Some(u)) => metrics::describe_counter!(d.name, u, d.help),
            (Counter, None) => metrics::describe_counter!(d.name, d.help),
            (Gauge, Some(u)) => metrics::describe_gauge!(d.name, u, d.help),
            (Gauge, None) => metrics::describe_gauge!(d.name, d.help),
            (Histogram, Some(u)) => metrics::describe_histogram!(d.name, u, d.help),
            (Histogram, None) => metrics::describe_histogram!(d.name, d.help),
        }
    }
}

/// Sets the gauges that come from shard stats, then renders the exposition.
pub async fn render_metrics(shared: &Shared, handle: &PrometheusHandle) -> String {
    let stats = all_stats(shared).await;
    let layout = shared.layout.load_full();
    for d in &layout.disks {
        set_disk_gauges(shared, d, stats.iter().find(|s| s.shard_id == d.id));
    }
    set_peer_gauges(shared, &stats);
    set_node_gauges(shared);
    handle.render()
}

/// One disk's gauges and counters, from its shard's stats (its state alone when it has none).
fn set_disk_gauges(shared: &Shared, d: &crate::shared::DiskInfo, s: Option<&ShardStats>) {
    let disk = d.id.to_string();
    let tier = d.tier.to_string();
    for state in ["online", "read_only", "failed", "draining", "drained"] {
        let v = if disk_state(shared, d.id, s) == state { 1.0 } else { 0.0 };
        metrics::gauge!("podstore_disk_state", "disk" => disk.clone(), "tier" => tier.clone(), "state" => state).set(v);
    }
    let spilled = if shared.routes.is_spilled(d.id) { 1.0 } else { 0.0 };
    metrics::gauge!("podstore_disk_spilled", "disk" => disk.clone()).set(spilled);
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
        c("podstore_disk_zeroed_ahead_bytes_total", s.zeroed_ahead_bytes);
        c("podstore_disk_zero_ahead_waits_total", s.zero_ahead_waits);
        c("podstore_disk_checkpoints_total", s.checkpoints);
        let n = &s.names;
        g("podstore_names_memory_bytes", n.memory_bytes);
        g("podstore_names_runs", n.runs);
        g("podstore_names_run_bytes", n.run_bytes);
        g("podstore_names_ready", n.ready as u64);
        c("podstore_names_flushes_total", n.flushes);
        c("podstore_names_merges_total", n.merges);
        c("podstore_names_written_bytes_total", n.written_bytes);
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

/// Each peer's backlog (over every disk) and anti-entropy.
fn set_peer_gauges(shared: &Shared, stats: &[ShardStats]) {
    let now_ms = now_ms();
    for p in peer_totals(shared, stats) {
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
}

/// The node's own: tiers, RAM cache, connections, recovery, readiness.
fn set_node_gauges(shared: &Shared) {
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
    metrics::gauge!("podstore_write_memory_bytes").set(shared.write_memory.used() as f64);
    metrics::gauge!("podstore_write_memory_max_bytes").set(shared.write_memory.max() as f64);
    metrics::counter!("podstore_write_memory_refused_total").absolute(shared.write_memory.refused());
    let md5 = podstore_disks::md5_lanes::hashed();
    metrics::counter!("podstore_md5_hashed_bytes_total", "kernel" => "lanes").absolute(md5.lanes);
    metrics::counter!("podstore_md5_hashed_bytes_total", "kernel" => "single").absolute(md5.single);
    metrics::counter!("podstore_md5_lane_pass_bytes_total").absolute(md5.passes);
    metrics::gauge!("podstore_http_open_connections").set(shared.connections.load(Ordering::Relaxed) as f64);
    metrics::gauge!("podstore_recovery_duration_seconds")
        .set(shared.recovery_ms.load(Ordering::Relaxed) as f64 / 1000.0);
    metrics::gauge!("podstore_node_ready").set(if shared.ready.load(Ordering::Relaxed) { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    /// Every metric name in the sources is described (a metric without help text fails
    /// `promtool check metrics`, and one that appears only sometimes would slip past a test
    /// of a live node).
    #[test]
    fn every_metric_name_used_is_described() {
        let described: std::collections::HashSet<&str> = super::METRICS.iter().map(|d| d.name).collect();
        assert_eq!(described.len(), super::METRICS.len(), "a metric is described twice");
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
                assert!(described.contains(name), "{file}: {name} has no description");
                seen += 1;
                rest = &tail[end..];
            }
        }
        assert!(seen > 40, "{seen} names found");
    }
}
