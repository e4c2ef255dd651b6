//! Background work on each disk (issue 6): compaction, scrub, and repair of quarantined objects
//! from peers, driven per core for the core's own shards.
//!
//! Each disk has one I/O budget ([`IoBudget`]: the measured profile's background rate, else
//! `maintenance.background_mib_per_s`) that compaction and scrub share, so background work
//! never takes more than that from the foreground. Compaction looks for blobs past
//! `compact_dead_ratio` every `compact_interval_s`; scrub runs a pass whenever the last one ended
//! more than `scrub_period_s` ago (a new disk starts at once), paced to take about that period;
//! an operator's "now" lifts the pace (the budget still holds). The repair loop asks the peers,
//! in turn, for every quarantined key every `repair_interval_s`.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use podstore_disks::AnyIo;
use podstore_engine::budget::IoBudget;
use podstore_engine::Shard;
use tokio::sync::Notify;

use crate::core::Shared;

/// Slowest scrub pace, bytes per second (a nearly empty disk still finishes its pass).
const SCRUB_PACE_MIN: u64 = 256 << 10;
/// Quarantined keys one repair round asks peers for, per shard.
const REPAIRS_PER_ROUND: usize = 256;

/// A disk's background jobs.
#[derive(Debug)]
pub struct DiskJobs {
    pub budget: IoBudget,
    pub scrub_pace: IoBudget,
    pub compact_wake: Notify,
    pub scrub_wake: Notify,
    /// A compaction pass was asked for, with this dead-share threshold.
    pub compact_now: Cell<Option<f64>>,
    /// A scrub pass was asked for now (unpaced).
    pub scrub_now: Cell<bool>,
}

/// The jobs of a core's disks, by disk id.
pub type Jobs = Rc<std::cell::RefCell<HashMap<u32, Rc<DiskJobs>>>>;

/// The background budget of a disk, bytes per second.
pub fn budget_of(shared: &Shared, disk: u32) -> u64 {
    let profiled = shared
        .disks
        .iter()
        .find(|d| d.id == disk)
        .and_then(|d| d.profile)
        .map(|p| (p.background_mib_per_s * (1 << 20) as f64) as u64)
        .filter(|&b| b > 0);
    profiled.unwrap_or(shared.cfg.maintenance.background_mib_per_s << 20)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Starts a disk's background jobs; returns their handle.
pub fn start(shared: Arc<Shared>, shard: Rc<Shard<AnyIo>>) -> Rc<DiskJobs> {
    let jobs = Rc::new(DiskJobs {
        budget: IoBudget::new(budget_of(&shared, shard.id())),
        scrub_pace: IoBudget::new(SCRUB_PACE_MIN),
        compact_wake: Notify::new(),
        scrub_wake: Notify::new(),
        compact_now: Cell::new(None),
        scrub_now: Cell::new(false),
    });
    tokio::task::spawn_local(compaction(shared.clone(), shard.clone(), jobs.clone()));
    tokio::task::spawn_local(scrub(shared, shard, jobs.clone()));
    jobs
}

/// Waits `secs` seconds (forever if 0) or until woken.
async fn wait(secs: u64, wake: &Notify) {
    if secs == 0 {
        wake.notified().await;
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(secs), wake.notified()).await;
    }
}

async fn compaction(shared: Arc<Shared>, shard: Rc<Shard<AnyIo>>, jobs: Rc<DiskJobs>) {
    let m = &shared.cfg.maintenance;
    loop {
        wait(m.compact_interval_s, &jobs.compact_wake).await;
        let ratio = jobs.compact_now.take().unwrap_or(m.compact_dead_ratio);
        if shard.fenced().is_some() || shard.compact_ctl().is_paused() {
            continue;
        }
        match shard.compact(ratio, &jobs.budget).await {
            Ok(Some(n)) if n > 0 => tracing::info!("disk {}: compaction removed {n} blobs", shard.id()),
            Ok(_) => {}
            Err(e) => tracing::warn!("disk {}: compaction: {e}", shard.id()),
        }
    }
}

async fn scrub(shared: Arc<Shared>, shard: Rc<Shard<AnyIo>>, jobs: Rc<DiskJobs>) {
    let period_s = shared.cfg.maintenance.scrub_period_s;
    loop {
        let st = shard.scrub_stats().await;
        let now = jobs.scrub_now.get();
        let periodic = period_s > 0
            && (st.pass_started_ms > 0 || now_ms().saturating_sub(st.last_pass_end_ms) >= period_s * 1000);
        if !(now || periodic) || shard.scrub_ctl().is_paused() {
            // Look again within a minute (a pass falls due, or an operator asks).
            let _ = tokio::time::timeout(Duration::from_secs(60), jobs.scrub_wake.notified()).await;
            continue;
        }
        let bytes = shard.stats().used_bytes;
        let pace = if now { 0 } else { (bytes / period_s.max(1)).max(SCRUB_PACE_MIN) };
        jobs.scrub_pace.set_rate(pace);
        match shard.scrub(&jobs.budget, &jobs.scrub_pace).await {
            Ok(Some(end)) => {
                let st = shard.scrub_stats().await;
                tracing::info!(
                    "disk {}: scrub pass {:?}: {} records checked, {} damaged records, {} damaged regions",
                    shard.id(),
                    end,
                    st.records_checked,
                    st.bad_records,
                    st.bad_regions
                );
                jobs.scrub_now.set(false);
                if end == podstore_engine::scrub::ScrubEnd::Stopped {
                    // Stopped by the operator: wait to be asked again (or the next period).
                    let _ = tokio::time::timeout(Duration::from_secs(60), jobs.scrub_wake.notified()).await;
                }
            }
            Ok(None) => tokio::time::sleep(Duration::from_secs(1)).await,
            Err(e) => {
                tracing::warn!("disk {}: scrub: {e}", shard.id());
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }
}

/// Asks the peers for every quarantined key of this core's shards, in rounds.
pub async fn repair(shared: Arc<Shared>, shards: crate::core::Shards, links: Rc<crate::repl::link::Links>) {
    if links.peers.is_empty() {
        return;
    }
    let limit = Duration::from_millis(shared.cfg.limits.copy_timeout_ms);
    for outcome in ["repaired", "not_repaired"] {
        metrics::counter!("podstore_repairs_total", "outcome" => outcome).increment(0);
    }
    loop {
        tokio::time::sleep(Duration::from_secs(shared.cfg.maintenance.repair_interval_s)).await;
        let keys: Vec<Vec<u8>> = shards
            .borrow()
            .values()
            .flat_map(|s| s.quarantined().into_iter().filter_map(|q| q.key).take(REPAIRS_PER_ROUND))
            .collect();
        for key in keys {
            let mut repaired = false;
            for p in &links.peers {
                let r = tokio::time::timeout(limit, p.pull(&key)).await;
                repaired = matches!(r, Ok(Ok(crate::repl::frame::AckStatus::Stored)));
                if repaired {
                    break;
                }
            }
            let outcome = if repaired { "repaired" } else { "not_repaired" };
            metrics::counter!("podstore_repairs_total", "outcome" => outcome).increment(1);
        }
    }
}
