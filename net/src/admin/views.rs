//! The admin port's views: JSON of the node's disks, peers, background jobs and tiers.

use std::sync::atomic::Ordering;

use podstore_engine::{now_ms, ShardStats};

use super::metrics::{all_stats, disk_state, peer_totals};
use crate::shared::Shared;

pub(super) async fn peers_json(shared: &Shared) -> String {
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

pub(super) async fn disks_json(shared: &Shared) -> String {
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
                // The name index listings read: whether it serves them, its runs and memory.
                "names": s.map(|s| serde_json::json!({
                    "ready": s.names.ready,
                    "runs": s.names.runs,
                    "run_bytes": s.names.run_bytes,
                    "memory_bytes": s.names.memory_bytes,
                })),
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
pub(super) async fn tiers_json(shared: &Shared) -> String {
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
    let c = podstore_engine::cache::CacheTotals::of(&shared.ram_cache);
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

pub(super) async fn jobs_json(shared: &Shared) -> String {
    let mut stats = all_stats(shared).await;
    stats.sort_by_key(|s| s.shard_id);
    serde_json::json!({ "disks": stats.iter().map(jobs_of).collect::<Vec<_>>() }).to_string()
}
