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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use podstore_disks::AnyIo;
use podstore_engine::budget::IoBudget;
use podstore_engine::Shard;
use tokio::sync::Notify;

use crate::shared::Shared;

/// Slowest scrub pace, bytes per second (a nearly empty disk still finishes its pass).
const SCRUB_PACE_MIN: u64 = 256 << 10;
/// A disk's background jobs.
#[derive(Debug)]
pub struct DiskJobs {
    pub budget: IoBudget,
    /// The disk's measured profile, whose background rate wins over the configured one.
    pub profile: Option<crate::profile::DiskProfile>,
    pub scrub_pace: IoBudget,
    pub compact_wake: Notify,
    pub scrub_wake: Notify,
    /// A compaction pass was asked for, with this dead-share threshold.
    pub compact_now: Cell<Option<f64>>,
    /// A scrub pass was asked for now (unpaced).
    pub scrub_now: Cell<bool>,
    /// Keys moved to other disks by rebalancing, and moves that failed.
    pub rebalance_moved: Cell<u64>,
    pub rebalance_failed: Cell<u64>,
    /// Tiering's migration of a fast disk: its control, a pass asked for now (moving every
    /// sealed blob no GET read for this many seconds, and down to the low watermark), its
    /// wake-up, and its counts.
    pub migrate_ctl: podstore_engine::budget::JobCtl,
    pub migrate_now: Cell<Option<u64>>,
    pub migrate_wake: Notify,
    pub migrated_objects: Cell<u64>,
    pub migrated_bytes: Cell<u64>,
    pub migration_failures: Cell<u64>,
    pub migration_backlog: Cell<u64>,
    /// Passes that ended (a pass asked for counts even when it found nothing to move).
    pub migration_passes: Cell<u64>,
    /// Why the last object that could not be moved could not.
    pub migration_last_error: std::cell::RefCell<Option<String>>,
}

/// The jobs of a core's disks, by disk id.
pub type Jobs = Rc<std::cell::RefCell<HashMap<u32, Rc<DiskJobs>>>>;

/// The background budget of a disk with this measured profile, bytes per second.
pub fn budget_of(shared: &Shared, profile: Option<crate::profile::DiskProfile>) -> u64 {
    let profiled = profile.map(|p| (p.background_mib_per_s * (1 << 20) as f64) as u64).filter(|&b| b > 0);
    profiled.unwrap_or(shared.cfg().maintenance.background_mib_per_s << 20)
}

use podstore_engine::now_ms;

/// Starts a disk's background jobs; returns their handle.
pub fn start(
    shared: Arc<Shared>,
    shard: Rc<Shard<AnyIo>>,
    profile: Option<crate::profile::DiskProfile>,
) -> Rc<DiskJobs> {
    let budget = IoBudget::new(budget_of(&shared, profile));
    budget.set_op_cost(shared.cfg().maintenance.op_cost_kib << 10);
    let jobs = Rc::new(DiskJobs {
        budget,
        profile,
        scrub_pace: IoBudget::new(SCRUB_PACE_MIN),
        compact_wake: Notify::new(),
        scrub_wake: Notify::new(),
        compact_now: Cell::new(None),
        scrub_now: Cell::new(false),
        rebalance_moved: Cell::new(0),
        rebalance_failed: Cell::new(0),
        migrate_ctl: Default::default(),
        migrate_now: Cell::new(None),
        migrate_wake: Notify::new(),
        migrated_objects: Cell::new(0),
        migrated_bytes: Cell::new(0),
        migration_failures: Cell::new(0),
        migration_backlog: Cell::new(0),
        migration_passes: Cell::new(0),
        migration_last_error: Default::default(),
    });
    tokio::task::spawn_local(compaction(shared.clone(), shard.clone(), jobs.clone()));
    tokio::task::spawn_local(rebalance(shared.clone(), shard.clone(), jobs.clone()));
    tokio::task::spawn_local(migrate(shared.clone(), shard.clone(), jobs.clone()));
    tokio::task::spawn_local(scrub(shared, shard, jobs.clone()));
    jobs
}

/// Sets the budgets of a core's disks from its foreground load (`ops_per_s` object requests
/// served in the last moment): at `maintenance.busy_ops_per_s` or more, background work gets
/// `maintenance.busy_share` of its budget; below, all of it. The budget and the cost of an
/// operation follow the configuration in force (SIGHUP may change them).
pub fn yield_to_foreground(shared: &Shared, jobs: &Jobs, ops_per_s: u64) {
    let cfg = shared.cfg();
    let m = &cfg.maintenance;
    let busy = m.busy_ops_per_s > 0 && ops_per_s >= m.busy_ops_per_s;
    for j in jobs.borrow().values() {
        let full_rate = budget_of(shared, j.profile);
        let rate = if busy { ((full_rate as f64 * m.busy_share) as u64).max(1) } else { full_rate };
        if j.budget.rate() != rate {
            j.budget.set_rate(rate);
        }
        j.budget.set_op_cost(m.op_cost_kib << 10);
    }
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
    let m = &shared.cfg().maintenance;
    loop {
        wait(m.compact_interval_s, &jobs.compact_wake).await;
        let ratio = jobs.compact_now.take().unwrap_or(m.compact_dead_ratio);
        if shared.routes.is_failed(shard.id()) {
            return; // a failed disk is left alone
        }
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
    let period_s = shared.cfg().maintenance.scrub_period_s;
    loop {
        if shared.routes.is_failed(shard.id()) {
            return; // a failed disk is left alone
        }
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

/// Most waiting between rebalance passes that found nothing to move.
const REBALANCE_IDLE_MAX: Duration = Duration::from_secs(60);

/// Moves keys off a draining disk, and keys that spilled past their home back towards it once
/// a disk before this one in their order takes writes again (engine/src/route.rs), to the disk that takes
/// their writes, under the disk's background budget: each key's newest record is copied there
/// with its version, then forgotten here. Runs while any disk is spilled; a pass that moved
/// something is followed by another at once, an idle one waits longer each time.
pub async fn rebalance(shared: Arc<Shared>, shard: Rc<Shard<AnyIo>>, jobs: Rc<DiskJobs>) {
    let mut idle = Duration::from_secs(2);
    // The routing state of the last pass that found everything in place: nothing can be
    // misplaced until it changes (writes go where they belong when they are made).
    let mut settled: Option<u64> = None;
    loop {
        let _ = tokio::time::timeout(idle, shared.rebalance_wake.notified()).await;
        let epoch = shared.routes.epoch();
        if shared.routes.spilled().is_empty() || shared.routes.is_failed(shard.id()) || settled == Some(epoch)
        {
            continue;
        }
        let (moved, failed) = rebalance_pass(&shared, &shard, &jobs).await;
        if moved == 0 && failed == 0 && shared.routes.epoch() == epoch {
            settled = Some(epoch);
            settle(&shared, shard.id(), epoch).await;
        }
        if moved > 0 {
            tracing::info!("disk {}: moved {moved} keys to the disks that take their writes", shard.id());
            if let Err(e) = shard.checkpoint().await {
                tracing::warn!("disk {}: checkpoint after moving keys: {e}", shard.id());
            }
            idle = Duration::from_secs(1);
        } else {
            idle = (idle * 2).min(REBALANCE_IDLE_MAX);
        }
    }
}

/// Tiering (issue 7): moves a fast disk's coldest objects to the capacity tier. When the disk
/// is fuller than `tiering.fast_high_watermark`, the objects of its coldest blobs (least
/// recently read by a GET, from the disk or the RAM cache; then oldest) until it is down to
/// `fast_low_watermark`; at any fill, the blobs no GET has read for `migrate_idle_s`. Blob by
/// blob, each one's records in their order on disk (the blob is read front to back), eight
/// objects at a time (the capacity disks' group commits share their syncs), each copied to its
/// capacity home with its version and forgotten here only after the copy is durable
/// (`move_key`: an object is never absent from both tiers, and an older copy already on the
/// capacity tier is replaced). A blob left with nothing in it is then removed by compaction.
/// Under the disk's background budget, like every job.
async fn migrate(shared: Arc<Shared>, shard: Rc<Shard<AnyIo>>, jobs: Rc<DiskJobs>) {
    let t = &shared.cfg().tiering;
    loop {
        let interval = Duration::from_secs(t.migrate_interval_s);
        let _ = tokio::time::timeout(interval, jobs.migrate_wake.notified()).await;
        let asked = jobs.migrate_now.take();
        if shared.routes.is_failed(shard.id()) {
            return;
        }
        let pass_done = || {
            if asked.is_some() {
                jobs.migration_passes.set(jobs.migration_passes.get() + 1);
            }
        };
        if !shared.routes.is_fast(shard.id()) || shard.fenced().is_some() || jobs.migrate_ctl.is_paused() {
            jobs.migration_backlog.set(0);
            pass_done();
            continue;
        }
        let capacity = shared.usable_bytes(shard.id());
        let used = shard.stats().blob_bytes;
        if capacity > 0 {
            let mut fill = shared.fast_fill.lock().unwrap_or_else(|e| e.into_inner());
            fill.insert(shard.id(), used as f64 / capacity as f64);
        }
        let at = |share: f64| (capacity as f64 * share) as u64;
        // A disk that stopped taking writes because it is full counts as over the high
        // watermark (with large blobs on a small disk it may fill before reaching it).
        let full = !shared.routes.is_writable(shard.id()) && !shared.routes.is_draining(shard.id());
        let mut over = if used >= at(t.fast_high_watermark) || full || asked.is_some() {
            used.saturating_sub(at(t.fast_low_watermark))
        } else {
            0
        };
        if full {
            // At least a blob's worth, whatever the watermarks say.
            over = over.max(shared.cfg().engine.blob_size_bytes);
        }
        let idle_s = asked.or((t.migrate_idle_s > 0).then_some(t.migrate_idle_s));
        let idle_before = idle_s.map(|s| now_ms().saturating_sub(s.saturating_mul(1000)));
        let any_idle =
            shard.sealed_blob_reads().iter().any(|b| idle_before.is_some_and(|before| b.1 <= before));
        if over == 0 && !any_idle {
            // Nothing to move (known without walking the index).
            jobs.migration_backlog.set(0);
            pass_done();
            continue;
        }
        let blobs = shard.coldest_blobs();
        let idle_bytes: u64 =
            blobs.iter().filter(|b| idle_before.is_some_and(|before| b.1 <= before)).map(|b| b.2).sum();
        jobs.migration_backlog.set(over.max(idle_bytes));
        if over == 0 && idle_bytes == 0 || !jobs.migrate_ctl.begin() {
            pass_done();
            continue;
        }
        let mut emptied = 0;
        for (bid, last_read, live) in blobs {
            let idle = idle_before.is_some_and(|before| last_read <= before);
            if over == 0 && !idle {
                break; // coldest first: none after it is idle either
            }
            if !jobs.migrate_ctl.proceed().await {
                break;
            }
            match migrate_blob(&shared, &shard, &jobs, bid).await {
                Ok(()) => {
                    emptied += 1;
                    over = over.saturating_sub(shared.cfg().engine.blob_size_bytes.max(live));
                    let left = jobs.migration_backlog.get().saturating_sub(live);
                    jobs.migration_backlog.set(left);
                }
                Err(e) => {
                    tracing::warn!("disk {}: moving blob {bid} to the capacity tier: {e}", shard.id());
                    break;
                }
            }
        }
        jobs.migrate_ctl.end();
        jobs.migration_passes.set(jobs.migration_passes.get() + 1);
        if emptied > 0 {
            tracing::info!("disk {}: moved {emptied} blobs' objects to the capacity tier", shard.id());
            if let Err(e) = shard.checkpoint().await {
                tracing::warn!("disk {}: checkpoint after moving objects: {e}", shard.id());
            }
            // The emptied blobs go (they are wholly dead).
            jobs.compact_now.set(Some(0.99));
            jobs.compact_wake.notify_one();
        }
    }
}

/// Reads of capacity-tier objects in the current window, per key: one per core, kept by the
/// core (`core.rs`) and handed to [`note_capacity_read`].
#[derive(Debug, Default)]
pub struct Promoter {
    window_start: Option<std::time::Instant>,
    reads: HashMap<Vec<u8>, u32>,
    promoted: u32,
    in_flight: u32,
}

/// Keys counted per core and window at most (later keys wait for the next window).
const PROMOTE_KEYS_MAX: usize = 65_536;
/// Promotions in flight per core at most.
const PROMOTE_IN_FLIGHT_MAX: u32 = 4;

impl Promoter {
    /// Counts a read of `key`; true when it is to be promoted now (within the window's and
    /// the in-flight bounds), which counts it as in flight.
    fn count(&mut self, key: &[u8], t: &crate::config::Tiering) -> bool {
        let p = self;
        let now = std::time::Instant::now();
        if p.window_start.is_none_or(|s| now.duration_since(s) >= Duration::from_secs(t.promote_window_s)) {
            p.window_start = Some(now);
            p.reads.clear();
            p.promoted = 0;
        }
        if p.promoted >= t.promotions_per_window_max || p.in_flight >= PROMOTE_IN_FLIGHT_MAX {
            return false;
        }
        if !p.reads.contains_key(key) && p.reads.len() >= PROMOTE_KEYS_MAX {
            return false;
        }
        let n = p.reads.entry(key.to_vec()).or_insert(0);
        *n += 1;
        if *n < t.promote_reads {
            return false;
        }
        p.reads.remove(key);
        p.promoted += 1;
        p.in_flight += 1;
        true
    }
}

/// A core's promoter (its promotions in flight end on its tasks).
pub type Promoters = Rc<std::cell::RefCell<Promoter>>;

/// A GET read `key` from capacity disk `shard` (issue 7): counted, and once it was read
/// `tiering.promote_reads` times within `promote_window_s`, copied to its fast home with its
/// version and forgotten here after the copy is durable (`move_key`), if that fast disk takes
/// writes and is below its high watermark (else it would move straight back). Bounded per core:
/// `promotions_per_window_max` a window, four at a time, `PROMOTE_KEYS_MAX` keys counted.
pub fn note_capacity_read(shared: &Arc<Shared>, promoter: &Promoters, shard: &Rc<Shard<AnyIo>>, key: &[u8]) {
    let t = &shared.cfg().tiering;
    if t.promote_reads == 0 {
        return;
    }
    let go = promoter.borrow_mut().count(key, t);
    if !go {
        return;
    }
    let (shared, promoter, shard, key) = (shared.clone(), promoter.clone(), shard.clone(), key.to_vec());
    tokio::task::spawn_local(async move {
        let fp = podstore_engine::index::fingerprint(&key);
        let target = shared.routes.write_target(fp).filter(|&id| shared.routes.is_fast(id));
        let room = |id: u32| {
            let fill = shared.fast_fill.lock().unwrap_or_else(|e| e.into_inner());
            fill.get(&id).is_none_or(|&f| f < shared.cfg().tiering.fast_high_watermark)
        };
        if let Some((target, owner)) =
            target.filter(|&id| room(id)).and_then(|id| shared.core_of(id).map(|c| (id, c)))
        {
            match move_key(&shared, &shard, &key, target, owner).await {
                Ok(true) => {
                    shared.promoted.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {}
                Err(e) => tracing::debug!("disk {}: promoting an object to disk {target}: {e}", shard.id()),
            }
        }
        promoter.borrow_mut().in_flight -= 1;
    });
}

/// Moves every object of fast-disk blob `bid` to the capacity tier (see `migrate`). An
/// object that can't be moved is counted and left (the blob stays); Err when nothing more can
/// move (no capacity disk takes writes, or the disk is no longer a serving fast disk).
///
/// Objects go to their capacity disks in batches (`CoreMsg::PutBatch`: one write per
/// contiguous run, one sync), one stream per capacity disk, `MIGRATE_TARGETS_AT_ONCE` disks at
/// a time; each is forgotten here only once its copy is durable. Tombstones and objects too
/// large for a batch are moved one by one (`move_key`).
async fn migrate_blob(
    shared: &Arc<Shared>,
    shard: &Rc<Shard<AnyIo>>,
    jobs: &DiskJobs,
    bid: u32,
) -> Result<(), String> {
    use futures_util::StreamExt;
    let mut by_target: std::collections::BTreeMap<u32, Vec<_>> = Default::default();
    for (fp, key, loc) in shard.entries_of_blob(bid) {
        let target = shared.routes.capacity_target(fp).ok_or("no capacity disk takes writes")?;
        by_target.entry(target).or_default().push((fp, key, loc));
    }
    let streams =
        by_target.into_iter().map(|(target, entries)| migrate_to(shared, shard, jobs, target, entries));
    let mut streams = futures_util::stream::iter(streams).buffer_unordered(MIGRATE_TARGETS_AT_ONCE);
    while let Some(r) = streams.next().await {
        r?;
    }
    Ok(())
}

/// Capacity disks one fast disk's migration writes to at once.
const MIGRATE_TARGETS_AT_ONCE: usize = 4;
/// Bytes of objects per batch at most (held in memory until written).
const MIGRATE_BATCH_BYTES: u64 = 4 << 20;
/// Objects read at once for a batch.
const MIGRATE_READS_IN_FLIGHT: usize = 8;

/// One object read for a batch, marked as moving until its batch is done.
struct Staged<'a> {
    item: podstore_engine::BatchItem,
    version: podstore_engine::Version,
    /// Its record's length here.
    len: u64,
    moving: Moving<'a>,
}

/// What reading one entry for migration came to.
enum Read<'a> {
    /// Read whole, for the batch.
    Staged(Staged<'a>),
    /// Moved on its own (a tombstone, a large object), or found gone: the outcome.
    Alone(Result<Option<u64>, String>),
}

/// [`migrate_blob`]'s stream to one capacity disk.
async fn migrate_to(
    shared: &Arc<Shared>,
    shard: &Rc<Shard<AnyIo>>,
    jobs: &DiskJobs,
    target: u32,
    entries: Vec<(u64, Option<Vec<u8>>, podstore_engine::index::Loc)>,
) -> Result<(), String> {
    use futures_util::StreamExt;
    let owner = shared.core_of(target).ok_or("the capacity disk is not open")?;
    let batch_object_max = (shared.cfg().engine.blob_size_bytes / 4).min(MIGRATE_BATCH_BYTES);
    let count = |r: Result<Option<u64>, String>| match r {
        Ok(Some(len)) => {
            jobs.migrated_objects.set(jobs.migrated_objects.get() + 1);
            jobs.migrated_bytes.set(jobs.migrated_bytes.get() + len);
        }
        Ok(None) => {}
        Err(e) => {
            jobs.migration_failures.set(jobs.migration_failures.get() + 1);
            tracing::debug!("disk {}: moving an object to the capacity tier: {e}", shard.id());
            *jobs.migration_last_error.borrow_mut() = Some(e);
        }
    };
    let reads = futures_util::stream::iter(entries.into_iter().map(|(fp, key, loc)| async move {
        if shared.routes.is_failed(shard.id()) || !shared.routes.is_fast(shard.id()) {
            return Err("the disk is no longer a serving fast disk".to_string());
        }
        let len = loc.record_len().unwrap_or(4096);
        // A read here and an index change here; the write is the batch's.
        jobs.budget.take_ops(2, 2 * len).await;
        let key = match key {
            Some(k) => k,
            None => match shard.key_at(loc).await {
                Ok(Some(k)) => k,
                Ok(None) => return Ok(Read::Alone(Ok(None))), // gone meanwhile
                Err(e) => return Ok(Read::Alone(Err(e.to_string()))),
            },
        };
        if loc.is_tombstone() || len > batch_object_max {
            let r = move_key(shared, shard, &key, target, owner).await;
            return Ok(Read::Alone(r.map(|moved| moved.then_some(len))));
        }
        let Some(moving) = Moving::claim(shared, fp) else {
            return Ok(Read::Alone(Err("another move of the key is under way".into())));
        };
        use podstore_engine::{CopyItem, ReadCheck, Stamp};
        let r = match shard.copy_item(&key, ReadCheck::Verify).await {
            Ok(Some(CopyItem::Put(mut r))) => r.read_all().await.map(|data| (r.meta.clone(), data)),
            // Overwritten or deleted meanwhile: moved on its own.
            Ok(Some(CopyItem::Delete { .. })) => {
                drop(moving);
                let r = move_key(shared, shard, &key, target, owner).await;
                return Ok(Read::Alone(r.map(|moved| moved.then_some(len))));
            }
            Ok(None) => return Ok(Read::Alone(Ok(None))),
            Err(e) => Err(e),
        };
        let (meta, data) = match r {
            Ok(x) => x,
            Err(e) => return Ok(Read::Alone(Err(e.to_string()))),
        };
        // Still owed to a peer: the copy joins the peers' backlogs on its new disk.
        let stamp =
            if shard.in_backlog(meta.seq) { Stamp::Given(meta.version) } else { Stamp::Moved(meta.version) };
        let item = podstore_engine::BatchItem {
            key,
            attrs: meta.attrs.clone(),
            data,
            stamp,
            digest: Some(meta.digest),
        };
        Ok(Read::Staged(Staged { item, version: meta.version, len, moving }))
    }))
    .buffered(MIGRATE_READS_IN_FLIGHT);
    futures_util::pin_mut!(reads);
    let mut batch: Vec<Staged> = Vec::new();
    let mut bytes = 0u64;
    loop {
        let next = reads.next().await;
        let end = next.is_none();
        match next {
            Some(Err(e)) => {
                // Those read so far still go.
                for r in write_batch(shared, shard, owner, target, std::mem::take(&mut batch)).await {
                    count(r);
                }
                return Err(e);
            }
            Some(Ok(Read::Alone(r))) => count(r),
            Some(Ok(Read::Staged(st))) => {
                bytes += st.item.data.len() as u64;
                batch.push(st);
            }
            None => {}
        }
        if !batch.is_empty() && (end || bytes >= MIGRATE_BATCH_BYTES) {
            jobs.budget.take_ops(1, 0).await;
            for r in write_batch(shared, shard, owner, target, std::mem::take(&mut batch)).await {
                count(r);
            }
            bytes = 0;
        }
        if end {
            return Ok(());
        }
    }
}

/// Writes a batch to capacity disk `target` (on core `owner`) and forgets each object here
/// whose copy is durable there (or that disk holds it or something newer already). One
/// outcome per object: the bytes moved, or why not.
async fn write_batch(
    shared: &Shared,
    shard: &Rc<Shard<AnyIo>>,
    owner: usize,
    target: u32,
    batch: Vec<Staged<'_>>,
) -> Vec<Result<Option<u64>, String>> {
    if batch.is_empty() {
        return Vec::new();
    }
    let n = batch.len();
    let mut items = Vec::with_capacity(n);
    let mut kept = Vec::with_capacity(n);
    for st in batch {
        kept.push((st.item.key.clone(), st.version, st.len, st.moving));
        items.push(st.item);
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let msg = crate::msg::CoreMsg::PutBatch { shard: target, items, reply: tx };
    let answer = match shared.inboxes[owner].send(msg).await {
        Ok(()) => rx.await.map_err(|_| "interrupted".to_string()),
        Err(_) => Err("shutting down".to_string()),
    };
    let outcomes = match answer.and_then(|r| r.map_err(|e| e.to_string())) {
        Ok(o) => o,
        Err(e) => return vec![Err(e); n],
    };
    let mut out = Vec::with_capacity(n);
    for (r, (key, version, len, _moving)) in outcomes.into_iter().zip(kept) {
        out.push(match r {
            // The shard counts the key's going in `shared.moves` as the entry goes (see
            // move_key).
            Ok(_) => {
                shard.forget(&key, version).await.map(|moved| moved.then_some(len)).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        });
    }
    out
}

/// Disk `disk`'s mover found every key in place through a whole pass in routing epoch
/// `epoch`. Once every disk of the placement has (a failed or missing disk that is not being
/// drained may hold keys nobody can look at: nothing is cleared while there is one), every key
/// sits on the first disk of its order that takes writes, so the disks that take writes need
/// not be looked past any more: their spilled marks are cleared (`Routes::clear_spills`, which
/// does nothing if the routing changed meanwhile).
async fn settle(shared: &Arc<Shared>, disk: u32, epoch: u64) {
    let all = {
        let mut settled = shared.settled.lock().unwrap_or_else(|e| e.into_inner());
        settled.insert(disk, epoch);
        let layout = shared.layout.load();
        shared.routes.candidates().iter().all(|c| {
            let id = c.shard_id;
            match (layout.shard_core.contains_key(&id) && !shared.routes.is_failed(id), settled.get(&id)) {
                (true, Some(&e)) => e == epoch,
                (true, None) => false,
                (false, _) => shared.routes.is_draining(id),
            }
        })
    };
    if all {
        let sh = shared.clone();
        let _ = tokio::task::spawn_blocking(move || sh.routes.clear_spills(epoch)).await;
    }
}

/// One pass over the disk's index; returns (keys moved, keys that could not be).
async fn rebalance_pass(shared: &Arc<Shared>, shard: &Rc<Shard<AnyIo>>, jobs: &DiskJobs) -> (u64, u64) {
    let (mut moved, mut failed) = (0, 0);
    for (i, (fp, key, loc)) in shard.entries().into_iter().enumerate() {
        if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
        let Some(target) = shared.routes.move_target(fp, shard.id()) else { continue };
        if target == shard.id() || shared.routes.is_failed(shard.id()) {
            continue;
        }
        // Keys leave a draining disk; otherwise they only move closer to their home (back
        // from a spill), never away from it (a full disk keeps what it holds).
        if !shared.routes.is_draining(shard.id()) {
            let order = shared.routes.order_in_tier_of(fp, shard.id());
            let at = |id: u32| order.iter().position(|&x| x == id).unwrap_or(usize::MAX);
            if at(target) >= at(shard.id()) {
                continue;
            }
        }
        let Some(owner) = shared.core_of(target) else {
            failed += 1; // not open (yet): the pass is not a settled one
            continue;
        };
        // A read here, a write there, an index change here.
        jobs.budget.take_ops(3, 2 * loc.record_len().unwrap_or(4096)).await;
        let key = match key {
            Some(k) => k,
            None => match shard.key_at(loc).await {
                Ok(Some(k)) => k,
                Ok(None) => continue, // gone meanwhile
                Err(_) => {
                    failed += 1;
                    continue;
                }
            },
        };
        // Counted as they happen: the metrics show a long pass's progress.
        match move_key(shared, shard, &key, target, owner).await {
            Ok(true) => {
                moved += 1;
                jobs.rebalance_moved.set(jobs.rebalance_moved.get() + 1);
            }
            Ok(false) => {}
            Err(e) => {
                failed += 1;
                jobs.rebalance_failed.set(jobs.rebalance_failed.get() + 1);
                tracing::debug!("disk {}: moving a key to disk {target}: {e}", shard.id());
            }
        }
    }
    (moved, failed)
}

/// A key being moved (`Shared::moving`); the mark goes when this does.
struct Moving<'a> {
    shared: &'a Shared,
    fp: u64,
}

impl<'a> Moving<'a> {
    /// Marks the key as moving, if no other move of it is under way.
    fn claim(shared: &'a Shared, fp: u64) -> Option<Moving<'a>> {
        // The lock is released at the end of this statement, and the mark is made only when the
        // key was not moving: `then_some(Moving { .. })` built one either way and dropped it
        // while the lock was still held (a deadlock of the core, seen in the tiering benchmark),
        // and its drop would have cleared the other move's mark.
        let claimed = shared.moving.lock().unwrap_or_else(|e| e.into_inner()).insert(fp);
        claimed.then(|| Moving { shared, fp })
    }
}

impl Drop for Moving<'_> {
    fn drop(&mut self) {
        self.shared.moving.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.fp);
    }
}

/// Copies the key's newest record here to disk `target` (on core `owner`) with its version,
/// then forgets it here. Ok(false): nothing to move (gone meanwhile). Err if another move of the
/// key is under way (one at a time, see `Shared::moving`): the caller tries again later.
async fn move_key(
    shared: &Shared,
    shard: &Rc<Shard<AnyIo>>,
    key: &[u8],
    target: u32,
    owner: usize,
) -> Result<bool, String> {
    let fp = podstore_engine::index::fingerprint(key);
    let Some(_moving) = Moving::claim(shared, fp) else {
        return Err("another move of the key is under way".into());
    };
    use crate::msg::{BodyMsg, CoreMsg, PutOutcome};
    use podstore_engine::{CopyItem, ReadCheck, Stamp};
    let item = shard.copy_item(key, ReadCheck::Verify).await.map_err(|e| e.to_string())?;
    let inbox = &shared.inboxes[owner];
    let version = match item {
        None => return Ok(false),
        Some(CopyItem::Delete { key: k, version }) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let stamp = Stamp::Moved(version);
            let msg = CoreMsg::Delete { shard: target, key: k, stamp, always: true, reply: tx };
            inbox.send(msg).await.map_err(|_| "shutting down")?;
            rx.await.map_err(|_| "interrupted")?.map_err(|e| e.to_string())?;
            version
        }
        Some(CopyItem::Put(mut r)) => {
            let meta = r.meta.clone();
            // Still owed to a peer: the copy joins the peers' backlogs on its new disk.
            let stamp = if shard.in_backlog(meta.seq) {
                Stamp::Given(meta.version)
            } else {
                Stamp::Moved(meta.version)
            };
            let (body_tx, body_rx) = tokio::sync::mpsc::channel(crate::shared::PIECES_IN_FLIGHT_MAX);
            let (tx, rx) = tokio::sync::oneshot::channel();
            let msg = CoreMsg::Put {
                shard: target,
                key: key.to_vec(),
                attrs: meta.attrs.clone(),
                len: meta.object_len,
                stamp,
                digest_given: false,
                body: body_rx,
                reply: tx,
            };
            inbox.send(msg).await.map_err(|_| "shutting down")?;
            let mut ok = true;
            loop {
                match r.next_chunk().await {
                    Ok(Some(c)) => {
                        if body_tx.send(BodyMsg::Data(c.into_bytes())).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            let _ = body_tx.send(BodyMsg::End { ok, digest: Some(meta.digest) }).await;
            drop(body_tx);
            match rx.await.map_err(|_| "interrupted")?.map_err(|e| e.to_string())? {
                PutOutcome::Stored(_) | PutOutcome::Superseded => {}
                PutOutcome::Aborted => return Err("the copy was abandoned".into()),
            }
            meta.version
        }
    };
    // The shard counts the key's going in `shared.moves` (ShardConfig::forgets_total) as the
    // entry goes: a read that found it nowhere while that changed looks again.
    shard.forget(key, version).await.map_err(|e| e.to_string())
}
