//! One core: a pinned thread with its own runtime, io_uring ring, shards and listener.
//!
//! A request is parsed on the core that accepted it; the work on the object runs on the core
//! that owns the key's shard, reached through that core's inbox with a message that owns its
//! buffers (`Bytes` and channels). Nothing on the data path is shared between cores but the
//! read-only placement table and a few atomics (readiness, counters).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use podstore_disks::{AnyIo, DiskSpec, UringConfig};
use podstore_engine::{
    CopyCheck, DeleteDone, ReadCheck, RecoveryReport, Shard, ShardSpec, ShardStats, Stamp,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::msg::{BodyMsg, CoreMsg, GetStart, JobAction, JobKind, PutBatchResult, PutOutcome};
use crate::range::{self, RangeAnswer};
use crate::shared::{
    shard_config, spill, Shards, Shared, PIECES_IN_FLIGHT_MAX, TIER_CAPACITY, TIER_FAST, TIER_RAM,
};

/// What a core reports once its shards are open.
#[derive(Debug)]
pub struct CoreReady {
    pub core: usize,
    pub backend: podstore_disks::Backend,
    pub shards: Vec<(u32, Result<RecoveryReport, podstore_engine::Error>)>,
}

/// Everything a core thread needs.
pub struct CoreStart {
    pub index: usize,
    pub cpu: Option<usize>,
    pub shared: Arc<Shared>,
    pub disks: Vec<DiskSpec>,
    pub inbox: mpsc::Receiver<CoreMsg>,
    pub ready_tx: std::sync::mpsc::Sender<CoreReady>,
    pub shutdown: watch::Receiver<bool>,
    /// The tasks that serve requests on this core (the front ends), started before its disks
    /// recover (health and readiness answer meanwhile); awaited at shutdown, when they have
    /// stopped taking connections and drained the ones they had.
    pub serve: Spawn,
    /// Tasks started once the disks are open (replication's); aborted at shutdown, after
    /// the work queued in the inbox is done.
    pub background: Spawn,
}

/// What a core's tasks get to work with: this core's index, the node's shared state, its
/// shards, its links to the peers and the shutdown signal.
#[derive(Debug)]
pub struct CoreCtx {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub shards: Shards,
    pub links: Rc<crate::peer::link::Links>,
    pub shutdown: watch::Receiver<bool>,
}

/// Starts tasks on a core (on its thread, in its local task set); the node supplies them, so
/// the runtime imports none of the front ends.
pub type Spawn = Box<dyn FnOnce(&CoreCtx) -> Vec<tokio::task::JoinHandle<()>> + Send>;

impl std::fmt::Debug for CoreStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreStart").field("index", &self.index).field("cpu", &self.cpu).finish()
    }
}

/// The body of a core thread.
pub fn run(start: CoreStart) {
    if let Some(cpu) = start.cpu {
        if let Err(e) = podstore_disks::pin_current_thread(cpu) {
            tracing::warn!("core {}: could not pin to cpu {cpu}: {e}", start.index);
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("core {}: no runtime: {e}", start.index);
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, core_main(start));
}

async fn core_main(start: CoreStart) {
    let CoreStart { index, shared, disks, mut inbox, ready_tx, mut shutdown, serve, background, .. } = start;
    let io = core_io(index, &shared);
    let links = Rc::new(peer_links(&shared, &io));
    let shards: Shards = Rc::new(RefCell::new(HashMap::new()));
    let ctx = CoreCtx {
        index,
        shared: shared.clone(),
        shards: shards.clone(),
        links: links.clone(),
        shutdown: shutdown.clone(),
    };
    // Serve health and readiness (and 503 for data) while the shards recover.
    let serving = serve(&ctx);
    let mut reports = Vec::new();
    for spec in &disks {
        let profile = shared.disk(spec.id).and_then(|d| d.profile);
        reports.push((spec.id, open_shard(&io.io, &shared, spec, profile, &shards).await));
    }
    let _ = ready_tx.send(CoreReady { core: index, backend: io.backend, shards: reports });

    let cache = ram_cache(&shared, index);
    let jobs: crate::maintenance::Jobs = Default::default();
    for s in shards.borrow().values() {
        let profile = shared.disk(s.id()).and_then(|d| d.profile);
        jobs.borrow_mut().insert(s.id(), crate::maintenance::start(shared.clone(), s.clone(), profile));
    }
    let exec = Rc::new(Exec {
        shared: shared.clone(),
        shards: shards.clone(),
        links: links.clone(),
        jobs: jobs.clone(),
        cache: cache.clone(),
        promoter: Default::default(),
    });
    let hb = tokio::task::spawn_local(housekeeping(index, shared.clone(), shards.clone(), jobs.clone()));
    let background = background(&ctx);
    loop {
        tokio::select! {
            msg = inbox.recv() => match msg {
                Some(CoreMsg::AddDisk { spec, profile, reply }) => {
                    let (io, shared, shards, jobs) = (io.io.clone(), shared.clone(), shards.clone(), jobs.clone());
                    tokio::task::spawn_local(async move {
                        let _ = reply.send(add_disk(&io, &shared, &shards, &jobs, &spec, profile).await);
                    });
                }
                // Answered here: an index lookup in memory needs no task of its own.
                Some(CoreMsg::Has { shard, key, reply }) => {
                    let _ = reply.send(shards.borrow().get(&shard).is_some_and(|s| s.has_entry(&key)));
                }
                Some(m) => {
                    if is_foreground(&m) {
                        shared.foreground_ops[index].fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(m) = exec.answer_from_cache(m) {
                        tokio::task::spawn_local(exec.clone().run(m));
                    }
                }
                None => break,
            },
            _ = shutdown.changed() => break,
        }
    }
    // Drain: no new connections; in-flight requests finish or fail cleanly.
    for s in serving {
        let _ = s.await;
    }
    // Serve any work still queued from other cores' last requests, then sync.
    while let Ok(m) = inbox.try_recv() {
        exec.clone().run(m).await;
    }
    hb.abort();
    for b in background {
        b.abort();
    }
    stop_shards(index, &shards).await;
}

/// A core's disk I/O: io_uring (or the synchronous fallback), with the test fault plan.
struct CoreIo {
    io: AnyIo,
    backend: podstore_disks::Backend,
}

/// Sets up the core's I/O and starts its io_uring driver.
fn core_io(index: usize, shared: &Shared) -> CoreIo {
    let cfg = shared.cfg();
    let ucfg = UringConfig { pool_buf_count: cfg.engine.io_buffers_per_core, ..UringConfig::default() };
    let (io, driver, backend) = AnyIo::detect(ucfg, cfg.io_backend == "sync");
    let io = match &shared.faults {
        Some(plan) => io.with_faults(plan.clone(), index as u64 + 1),
        None => io,
    };
    if let Some(d) = driver {
        tokio::task::spawn_local(d.run());
    }
    CoreIo { io, backend }
}

/// The core's links to its peers (none without replication); sends may use its ring.
fn peer_links(shared: &Shared, io: &CoreIo) -> crate::peer::link::Links {
    let cfg = shared.cfg();
    match (&cfg.replication, &shared.repl_secret) {
        (Some(r), Some(secret)) => {
            let id = crate::peer::link::Identity {
                node: cfg.node_id.clone(),
                datacenter: r.datacenter.clone(),
                secret: secret.clone(),
            };
            crate::peer::link::Links::new(r, Rc::new(id), io.io.uring().cloned())
        }
        _ => crate::peer::link::Links::default(),
    }
}

/// The core's share of the RAM cache, if there is one.
fn ram_cache(shared: &Shared, index: usize) -> Option<Rc<podstore_engine::cache::RamCache>> {
    let c = &shared.cfg().ram_cache;
    let part = c.size_bytes / shared.inboxes.len().max(1) as u64;
    podstore_engine::cache::RamCache::new(part, c.object_size_max_bytes, shared.ram_cache[index].clone())
        .map(Rc::new)
}

/// Opens a disk added while the node runs and starts its background jobs. None: it was
/// opened by an earlier request whose placement failed.
async fn add_disk(
    io: &AnyIo,
    shared: &Arc<Shared>,
    shards: &Shards,
    jobs: &crate::maintenance::Jobs,
    spec: &DiskSpec,
    profile: Option<crate::profile::DiskProfile>,
) -> Result<Option<RecoveryReport>, podstore_engine::Error> {
    let r = if shards.borrow().contains_key(&spec.id) {
        Ok(None)
    } else {
        open_shard(io, shared, spec, profile, shards).await.map(Some)
    };
    if let Some(s) = shards.borrow().get(&spec.id) {
        jobs.borrow_mut()
            .entry(s.id())
            .or_insert_with(|| crate::maintenance::start(shared.clone(), s.clone(), profile));
    }
    r
}

/// At shutdown: stops the shards' background jobs and checkpoints every shard that takes
/// writes.
async fn stop_shards(index: usize, shards: &Shards) {
    let all: Vec<_> = shards.borrow().values().cloned().collect();
    for s in &all {
        s.compact_ctl().stop();
        s.scrub_ctl().stop();
    }
    for s in all {
        if s.fenced().is_none() {
            if let Err(e) = s.checkpoint().await {
                tracing::warn!("core {index}: shard {} checkpoint at shutdown failed: {e}", s.id());
            }
        }
    }
}

/// The answer to a GET from the RAM cache, if it holds the key's current record (engine/src/cache.rs).
fn cached_get(
    cache: &podstore_engine::cache::RamCache,
    tier_reads: &[AtomicU64; 3],
    shards: &Shards,
    shard: u32,
    key: &Vec<u8>,
    range: Option<&str>,
    head: bool,
) -> Option<GetStart> {
    let s = shards.borrow().get(&shard).cloned()?;
    let hit = cache.lookup(&s, key)?;
    s.note_read(hit.loc);
    tier_reads[TIER_RAM].fetch_add(1, Ordering::Relaxed);
    let answer = range::resolve(range, hit.meta.object_len);
    let first = match answer {
        _ if head => None,
        RangeAnswer::Whole => Some(hit.data.clone()),
        RangeAnswer::Part { start, end } => Some(hit.data.slice(start as usize..end as usize)),
        RangeAnswer::Unsatisfiable => None,
    }
    .filter(|b| !b.is_empty());
    // No pieces follow the first.
    Some(GetStart { meta: hit.meta.clone(), range: answer, first, body: None })
}

/// Whether a message is a client's or a peer's work on an object (not a move between disks).
fn is_foreground(m: &CoreMsg) -> bool {
    match m {
        CoreMsg::Put { stamp, .. } | CoreMsg::Delete { stamp, .. } => !matches!(stamp, Stamp::Moved(_)),
        CoreMsg::Get { .. } => true,
        _ => false,
    }
}

/// Opens (recovers) one disk's shard and adds it to the core's shards.
async fn open_shard(
    io: &AnyIo,
    shared: &Shared,
    spec: &DiskSpec,
    profile: Option<crate::profile::DiskProfile>,
    shards: &Shards,
) -> Result<RecoveryReport, podstore_engine::Error> {
    let one = [ShardSpec { id: spec.id, dir: spec.path.clone(), weight: 1.0 }];
    let mut sc = shard_config(&shared.cfg(), shared.clock.clone());
    sc.forgets_total = Some(shared.moves.clone());
    sc.write_memory = Some(shared.write_memory.clone());
    let usable = shared.usable_bytes(spec.id);
    if usable > 0 {
        sc.unfilled_bytes_max = (usable / 100).saturating_mul(shared.cfg().engine.unfilled_percent_max);
    }
    if let Some(p) = profile {
        sc.reads_in_flight_max = p.queue_depth;
    }
    let (set, mut rep) = podstore_engine::ShardSet::open(io.clone(), sc, &one).await;
    if let Some(s) = set.shards().first() {
        shards.borrow_mut().insert(s.id(), s.clone());
    }
    match rep.pop() {
        Some((_, r)) => r,
        None => Err(podstore_engine::Error::NoShard),
    }
}

/// The disks a kind of background task runs for (one task per disk at most).
type Running = Rc<RefCell<std::collections::HashSet<u32>>>;

/// Runs `work` for disk `id` in a task of its own, unless one of its kind runs for the disk.
fn spawn_per_disk(running: &Running, id: u32, work: impl std::future::Future<Output = ()> + 'static) {
    if !running.borrow_mut().insert(id) {
        return;
    }
    let running = running.clone();
    tokio::task::spawn_local(async move {
        work.await;
        running.borrow_mut().remove(&id);
    });
}

async fn housekeeping(index: usize, shared: Arc<Shared>, shards: Shards, jobs: crate::maintenance::Jobs) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let probing: Running = Default::default();
    let zeroing: Running = Default::default();
    let naming: Running = Default::default();
    let mut ticks = 0u64;
    let mut ops_before = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        shared.heartbeats[index].fetch_add(1, Ordering::Relaxed);
        // Background work yields to a busy foreground: its disks' budgets drop to a share.
        let ops = shared.foreground_ops[index].load(Ordering::Relaxed);
        let per_s = (ops - ops_before) * 5;
        ops_before = ops;
        crate::maintenance::yield_to_foreground(&shared, &jobs, per_s);
        // Once a second, each disk answers a one-block read within disk_timeout_ms, or fails.
        if ticks.is_multiple_of(5) {
            let all: Vec<_> = shards.borrow().values().cloned().collect();
            for s in all {
                // (A disk whose last probe has not come back is not probed again.)
                let (shared, shards, jobs) = (shared.clone(), shards.clone(), jobs.clone());
                spawn_per_disk(&probing, s.id(), async move {
                    let limit = Duration::from_millis(shared.cfg().engine.disk_timeout_ms);
                    let why = match tokio::time::timeout(limit, s.probe()).await {
                        Err(_) => Some(format!("a read took longer than {} ms", limit.as_millis())),
                        Ok(Some(Err(e))) if !e.is_crash() => Some(format!("a read failed: {e}")),
                        _ => None,
                    };
                    if let Some(why) = why {
                        fail_disk(&shared, &shards, &jobs, s.id(), why).await;
                    }
                });
            }
        }
        // Zeros ahead of each disk's write position, a step at a time while one is due (one
        // task per disk at most; it ends when the disk leaves the core or is far enough ahead).
        let all: Vec<_> = shards.borrow().values().filter(|s| s.zero_ahead_due()).cloned().collect();
        for s in all {
            let shards = shards.clone();
            spawn_per_disk(&zeroing, s.id(), async move {
                while shards.borrow().contains_key(&s.id()) {
                    match s.zero_ahead().await {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => {
                            tracing::warn!("shard {}: zeroing ahead failed: {e}", s.id());
                            break;
                        }
                    }
                }
            });
        }
        // The name index's upkeep: a full memtable written as a run, runs merged.
        let all: Vec<_> = shards.borrow().values().filter(|s| s.names_due()).cloned().collect();
        for s in all {
            // Merges within the disk's background budget, like every background job.
            let j = jobs.borrow().get(&s.id()).cloned();
            spawn_per_disk(&naming, s.id(), async move {
                if let Err(e) = s.names_maintain(j.as_ref().map(|j| &j.budget)).await {
                    tracing::warn!("shard {}: name index upkeep failed: {e}", s.id());
                }
            });
        }
        let due: Vec<_> = shards
            .borrow()
            .values()
            .filter(|s| s.checkpoint_due() && s.fenced().is_none())
            .cloned()
            .collect();
        for s in due {
            if let Err(e) = s.checkpoint().await {
                tracing::warn!("shard {}: checkpoint failed: {e}", s.id());
            }
        }
        // A disk that can take no more objects (fenced, or nearly full) is spilled: its keys'
        // writes go on along their chains (engine/src/route.rs).
        // One that has room again (compaction, deletes) takes its keys' writes back.
        let all: Vec<_> = shards.borrow().values().cloned().collect();
        // With two tiers a key may be on both (a tombstone on the fast tier shadows an older
        // copy on the capacity tier): tombstones stay.
        let one_disk_per_key = shared.routes.spilled().is_empty() && !shared.routes.has_fast_tier();
        for s in all {
            s.set_tombstone_drop(one_disk_per_key);
            let writable = shared.routes.is_writable(s.id());
            if s.fenced().is_some() {
                if writable {
                    spill(&shared, s.id(), "fenced read-only").await;
                }
            } else if s.nearly_full(|| free_bytes(&shared, s.id())) {
                if writable {
                    spill(&shared, s.id(), "full").await;
                }
            } else if !writable && shared.routes.is_spilled(s.id()) {
                shared.routes.unfill(s.id());
            }
        }
    }
}

/// A disk failed while the node runs: it leaves the core's shards (its requests fail fast), its
/// background jobs stop, routing skips it, and an anti-entropy pass with every peer rebuilds
/// its objects on the other disks.
async fn fail_disk(
    shared: &Arc<Shared>,
    shards: &Shards,
    jobs: &crate::maintenance::Jobs,
    id: u32,
    why: String,
) {
    let Some(s) = shards.borrow_mut().remove(&id) else { return };
    s.compact_ctl().stop();
    s.scrub_ctl().stop();
    jobs.borrow_mut().remove(&id);
    let sh = shared.clone();
    let _ = tokio::task::spawn_blocking(move || sh.routes.fail(id, &why)).await;
    for p in &shared.anti_entropy {
        p.requested.store(true, Ordering::Relaxed);
        p.wake.notify_one();
    }
}

/// What the filesystem of disk `id` has free (u64::MAX if unknown).
fn free_bytes(shared: &Shared, id: u32) -> u64 {
    shared.disk(id).and_then(|d| podstore_disks::fs_space(&d.path).ok()).map_or(u64::MAX, |(_, free)| free)
}

fn no_shard(id: u32) -> podstore_engine::Error {
    podstore_engine::Error::Damaged { shard: id, reason: "the shard is not open on this node".into() }
}

/// What a core executes its messages against: the node's shared state, this core's shards,
/// its links to the peers, its disks' background jobs and its RAM cache. One method per
/// message.
struct Exec {
    shared: Arc<Shared>,
    shards: Shards,
    links: Rc<crate::peer::link::Links>,
    jobs: crate::maintenance::Jobs,
    cache: Option<Rc<podstore_engine::cache::RamCache>>,
    /// Counts reads of capacity-tier objects and promotes the hot ones (maintenance.rs).
    promoter: crate::maintenance::Promoters,
}

impl Exec {
    /// Answers a GET from the RAM cache when it holds the key's current record (no task of
    /// its own needed); otherwise gives the message back to be run.
    fn answer_from_cache(&self, m: CoreMsg) -> Option<CoreMsg> {
        let Some(c) = &self.cache else { return Some(m) };
        match m {
            CoreMsg::Get { shard, key, range, head, reply } => {
                match cached_get(
                    c,
                    &self.shared.tier_reads,
                    &self.shards,
                    shard,
                    &key,
                    range.as_deref(),
                    head,
                ) {
                    Some(start) => {
                        let _ = reply.send(Ok(Some(start)));
                        None
                    }
                    None => Some(CoreMsg::Get { shard, key, range, head, reply }),
                }
            }
            m => Some(m),
        }
    }

    /// This core's shard `id` (an error the sender can answer with when the disk is not open
    /// here).
    fn shard(&self, id: u32) -> Result<Rc<Shard<AnyIo>>, podstore_engine::Error> {
        self.shards.borrow().get(&id).cloned().ok_or_else(|| no_shard(id))
    }

    /// Runs one message (each in a task of its own on the core).
    async fn run(self: Rc<Self>, msg: CoreMsg) {
        match msg {
            CoreMsg::AddDisk { reply, .. } => self.shutting_down_add_disk(reply).await,
            CoreMsg::Put { shard, key, attrs, len, stamp, digest_given, body, reply } => {
                self.put(shard, key, attrs, (len, digest_given), stamp, body, reply).await
            }
            CoreMsg::Get { shard, key, range, head, reply } => self.get(shard, key, range, head, reply).await,
            CoreMsg::Delete { shard, key, stamp, always, reply } => {
                self.delete(shard, key, stamp, always, reply).await
            }
            CoreMsg::PutBatch { shard, items, reply } => self.put_batch(shard, items, reply).await,
            CoreMsg::Digests { reply } => self.digests(reply).await,
            CoreMsg::BucketKeys { bucket, reply } => self.bucket_keys(bucket, reply).await,
            CoreMsg::Deleted { shard, key, reply } => self.deleted(shard, key, reply).await,
            CoreMsg::Push { shard, key, peer, insist, reply } => {
                self.push(shard, key, peer, insist, reply).await
            }
            CoreMsg::Confirm { shard, seq, peer } => self.confirm(shard, seq, peer).await,
            CoreMsg::Stats { reply } => self.stats(reply).await,
            CoreMsg::Has { shard, key, reply } => self.has(shard, key, reply).await,
            CoreMsg::Version { shard, key, reply } => self.version(shard, key, reply).await,
            CoreMsg::ListNames { shard, from, prefix, max, reply } => {
                let r = match self.shard(shard) {
                    Ok(s) => s.list_names(&from, &prefix, max).await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            CoreMsg::Forget { shard, key, version, reply } => {
                let r = match self.shard(shard) {
                    Ok(s) => s.forget(&key, version).await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            CoreMsg::Job { disk, job, action, ratio, idle_s, reply } => {
                self.job(disk, job, action, ratio, idle_s, reply).await
            }
        }
    }

    /// (Handled by the core's loop; only the drain at shutdown gets here.)
    async fn shutting_down_add_disk(
        &self,
        reply: oneshot::Sender<Result<Option<RecoveryReport>, podstore_engine::Error>>,
    ) {
        let _ = reply.send(Err(podstore_engine::Error::Stopped));
    }

    /// Stores an object on one of this core's disks as its body arrives; a disk that is full
    /// (or nearly) stops taking writes and is spilled (engine/src/route.rs).
    #[allow(clippy::too_many_arguments)]
    async fn put(
        &self,
        shard: u32,
        key: Vec<u8>,
        attrs: podstore_engine::Attrs,
        (len, digest_given): (u64, bool),
        stamp: Stamp,
        mut body: mpsc::Receiver<BodyMsg>,
        reply: oneshot::Sender<Result<PutOutcome, podstore_engine::Error>>,
    ) {
        let Exec { shared, cache, .. } = self;
        let s = match self.shard(shard) {
            Ok(s) => s,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if let Some(c) = &cache {
            c.invalidate(&key);
        }
        let r = async {
            let Some(mut w) = s.put_stamped(&key, &attrs, len, stamp).await? else {
                // Superseded: take the body (so the sender is not stuck) and store nothing.
                while let Some(m) = body.recv().await {
                    if matches!(m, BodyMsg::End { .. }) {
                        break;
                    }
                }
                return Ok(PutOutcome::Superseded);
            };
            if digest_given {
                w.check_chunks_only();
            }
            loop {
                match body.recv().await {
                    Some(BodyMsg::Data(b)) => w.write(&b).await?,
                    Some(BodyMsg::End { ok: true, digest: Some(d) }) if digest_given => {
                        return w.finish_copy(CopyCheck::Given(d)).await.map(PutOutcome::Stored)
                    }
                    Some(BodyMsg::End { ok: true, digest }) => {
                        return w.finish_expecting(digest).await.map(PutOutcome::Stored)
                    }
                    Some(BodyMsg::End { ok: false, .. }) | None => {
                        w.abort().await?;
                        return Ok(PutOutcome::Aborted);
                    }
                }
            }
        }
        .await;
        // Out of room, or nearly: later writes of its keys go to the next disks.
        let full = matches!(r, Err(podstore_engine::Error::NoSpace { .. }))
            || shared.routes.is_writable(shard) && s.nearly_full(|| free_bytes(shared, shard));
        if full {
            // Before the answer: a PUT that got NoSpace and looks for the next disk must
            // not be routed here again while the spilled mark is being written.
            shared.routes.stop_writes(shard);
        }
        let _ = reply.send(r);
        if full {
            spill(shared, shard, "full").await;
        }
    }

    /// Reads an object (or a range of it) and streams it: the first verified piece with the
    /// answer, the rest through a channel; fills the RAM cache and counts reads per tier.
    async fn get(
        &self,
        shard: u32,
        key: Vec<u8>,
        range: Option<String>,
        head: bool,
        reply: oneshot::Sender<Result<Option<GetStart>, podstore_engine::Error>>,
    ) {
        let Exec { shared, cache, promoter, .. } = self;
        let s = match self.shard(shard) {
            Ok(s) => s,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let mut reader = match s.get(&key).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                let _ = reply.send(Ok(None));
                return;
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let answer = range::resolve(range.as_deref(), reader.meta.object_len);
        if let RangeAnswer::Part { start, end } = answer {
            reader.set_range(start, end);
        }
        let (first, copied) = if head || answer == RangeAnswer::Unsatisfiable {
            (None, false)
        } else {
            match reader.next_chunk().await {
                Ok(Some(c)) => {
                    let (b, copied) = c.into_bytes_noting_copy();
                    (Some(b), copied)
                }
                Ok(None) => (None, false),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        };
        let fast = shared.routes.is_fast(shard);
        shared.tier_reads[if fast { TIER_FAST } else { TIER_CAPACITY }].fetch_add(1, Ordering::Relaxed);
        if !fast && shared.routes.has_fast_tier() {
            crate::maintenance::note_capacity_read(shared, promoter, &s, &key);
        }
        if let (Some(c), Some(data)) = (&cache, &first) {
            if answer == RangeAnswer::Whole && c.takes(reader.meta.object_len) {
                // The piece itself when it was copied out of its read buffer; otherwise a copy
                // of its own: the piece sent keeps its whole read buffer (the record's header
                // and footer, rounded up) alive, which the cache must not hold.
                let data = if copied { data.clone() } else { Bytes::copy_from_slice(data) };
                let object = podstore_engine::cache::Cached {
                    disk: shard,
                    loc: reader.loc(),
                    meta: reader.meta.clone(),
                    data,
                };
                c.offer(key.clone(), object);
            }
        }
        // Pieces follow the first only when it was not the whole range (a channel otherwise
        // costs an allocation and a wake-up for nothing).
        let more = first.is_some() && !reader.is_done();
        let (tx, rx) = if more {
            let (tx, rx) = mpsc::channel(PIECES_IN_FLIGHT_MAX);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let start = GetStart { meta: reader.meta.clone(), range: answer, first, body: rx };
        if reply.send(Ok(Some(start))).is_err() {
            return;
        }
        let Some(tx) = tx else { return };
        loop {
            match reader.next_chunk().await {
                Ok(Some(c)) => {
                    if tx.send(Ok(c.into_bytes())).await.is_err() {
                        return; // the client went away (or a 304 needed no body)
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("shard {shard}: read failed mid-stream: {e}");
                    let _ = tx.send(Err(e.to_string())).await;
                    return;
                }
            }
        }
    }

    /// Writes a tombstone.
    async fn delete(
        &self,
        shard: u32,
        key: Vec<u8>,
        stamp: Stamp,
        always: bool,
        reply: oneshot::Sender<Result<DeleteDone, podstore_engine::Error>>,
    ) {
        let Exec { cache, .. } = self;
        let s = match self.shard(shard) {
            Ok(s) => s,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if let Some(c) = &cache {
            c.invalidate(&key);
        }
        let _ = reply.send(s.delete_stamped(&key, stamp, always).await);
    }

    /// Writes objects in memory to one disk in as few writes as their places allow (migration).
    async fn put_batch(
        &self,
        shard: u32,
        items: Vec<podstore_engine::BatchItem>,
        reply: oneshot::Sender<PutBatchResult>,
    ) {
        let Exec { cache, .. } = self;
        let s = match self.shard(shard) {
            Ok(s) => s,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if let Some(c) = &cache {
            for it in &items {
                c.invalidate(&it.key);
            }
        }
        let _ = reply.send(s.put_batch(&items).await);
    }

    /// The XOR of this core's shards' bucket digests.
    async fn digests(&self, reply: oneshot::Sender<Vec<u64>>) {
        let Exec { shards, .. } = self;
        let mut d = vec![0u64; podstore_engine::digest::BUCKETS];
        for s in shards.borrow().values() {
            for (x, y) in d.iter_mut().zip(s.digests()) {
                *x ^= y;
            }
        }
        let _ = reply.send(d);
    }

    /// Every current key of one digest bucket on this core's shards.
    async fn bucket_keys(
        &self,
        bucket: usize,
        reply: oneshot::Sender<Result<Vec<podstore_engine::digest::KeyState>, podstore_engine::Error>>,
    ) {
        let Exec { shards, .. } = self;
        let list: Vec<_> = shards.borrow().values().cloned().collect();
        let mut out = Vec::new();
        for s in list {
            match s.bucket_keys(bucket).await {
                Ok(k) => out.extend(k),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        let _ = reply.send(Ok(out));
    }

    /// Whether the key was deleted here.
    async fn deleted(&self, shard: u32, key: Vec<u8>, reply: oneshot::Sender<bool>) {
        let Exec { shards, .. } = self;
        let _ = reply.send(shards.borrow().get(&shard).is_some_and(|s| s.is_deleted(&key)));
    }

    /// Sends the key's newest write here to a peer (a retried copy, anti-entropy, a pull).
    async fn push(
        &self,
        shard: u32,
        key: Vec<u8>,
        peer: usize,
        insist: bool,
        reply: oneshot::Sender<crate::peer::link::CopyResult>,
    ) {
        let Exec { shards, links, .. } = self;
        let s = shards.borrow().get(&shard).cloned();
        let r = match (s, links.peers.get(peer)) {
            (Some(s), Some(link)) => {
                if insist {
                    link.heard();
                }
                // Without chunk checksums first (the peer checks the digest); a refused
                // copy is read again with them, which quarantines a damaged record.
                let mut r = Err(crate::peer::link::CopyError::local("not tried"));
                for check in [ReadCheck::ByPeer, ReadCheck::Verify] {
                    r = match s.copy_item(&key, check).await {
                        Ok(item) => crate::peer::link::send_item(link, item, None).await,
                        Err(e) => Err(crate::peer::link::CopyError::local(e)),
                    };
                    if r.is_ok() {
                        break;
                    }
                }
                r
            }
            _ => Err(crate::peer::link::CopyError::local("no such shard or peer here")),
        };
        let _ = reply.send(r);
    }

    /// A peer confirmed a write: it leaves that peer's backlog.
    async fn confirm(&self, shard: u32, seq: u64, peer: usize) {
        let Exec { shards, .. } = self;
        if let Some(s) = shards.borrow().get(&shard) {
            s.backlog_confirm(peer, seq);
        }
    }

    /// Every shard's statistics, with its background jobs' figures.
    async fn stats(&self, reply: oneshot::Sender<Vec<ShardStats>>) {
        let Exec { shards, jobs, .. } = self;
        let jobs = jobs.borrow();
        let stats = shards
            .borrow()
            .values()
            .map(|s| {
                let mut st = s.stats();
                if let Some(j) = jobs.get(&s.id()) {
                    st.background_bytes_per_s = j.budget.rate();
                    st.background_bytes = j.budget.used();
                    st.moved_away = j.rebalance_moved.get();
                    st.move_failures = j.rebalance_failed.get();
                    st.migrated_objects = j.migrated_objects.get();
                    st.migrated_bytes = j.migrated_bytes.get();
                    st.migration_failures = j.migration_failures.get();
                    st.migration_backlog_bytes = j.migration_backlog.get();
                    st.migration_running = j.migrate_ctl.is_running();
                    st.migration_paused = j.migrate_ctl.is_paused();
                    st.migration_passes = j.migration_passes.get();
                    st.migration_last_error = j.migration_last_error.borrow().clone();
                }
                st
            })
            .collect();
        let _ = reply.send(stats);
    }

    /// Whether a disk's index has an entry for the key.
    async fn has(&self, shard: u32, key: Vec<u8>, reply: oneshot::Sender<bool>) {
        let Exec { shards, .. } = self;
        let has = shards.borrow().get(&shard).is_some_and(|s| s.has_entry(&key));
        let _ = reply.send(has);
    }

    /// The version of the key's newest record on a disk.
    async fn version(
        &self,
        shard: u32,
        key: Vec<u8>,
        reply: oneshot::Sender<Result<Option<(podstore_engine::Version, bool)>, podstore_engine::Error>>,
    ) {
        let s = match self.shard(shard) {
            Ok(s) => s,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        // An entry whose header does not read back (a failing disk) is not "absent".
        let r = match s.version_of(&key).await {
            Ok(None) if s.has_entry(&key) => Err(podstore_engine::Error::Damaged {
                shard,
                reason: "the key's record does not read back".into(),
            }),
            r => r,
        };
        let _ = reply.send(r);
    }

    /// Starts, pauses, resumes or stops a background job on one disk (or all) of this core.
    async fn job(
        &self,
        disk: Option<u32>,
        job: JobKind,
        action: JobAction,
        ratio: Option<f64>,
        idle_s: Option<u64>,
        reply: oneshot::Sender<Vec<u32>>,
    ) {
        let Exec { shared, shards, jobs, .. } = self;
        let mut done = Vec::new();
        let targets: Vec<_> =
            shards.borrow().values().filter(|s| disk.is_none_or(|d| d == s.id())).cloned().collect();
        for s in targets {
            let Some(j) = jobs.borrow().get(&s.id()).cloned() else { continue };
            if job == JobKind::Migrate && !shared.routes.is_fast(s.id()) {
                continue; // only fast disks migrate
            }
            let ctl = match job {
                JobKind::Compact => s.compact_ctl(),
                JobKind::Scrub => s.scrub_ctl(),
                JobKind::Migrate => &j.migrate_ctl,
            };
            match (action, job) {
                (JobAction::Pause, _) => ctl.pause(),
                (JobAction::Resume, _) => {
                    ctl.resume();
                    j.compact_wake.notify_one();
                    j.scrub_wake.notify_one();
                    j.migrate_wake.notify_one();
                }
                (JobAction::Start, JobKind::Migrate) => {
                    ctl.resume();
                    j.migrate_now.set(Some(idle_s.unwrap_or(shared.cfg().tiering.migrate_idle_s)));
                    j.migrate_wake.notify_one();
                }
                (JobAction::Stop, _) => ctl.stop(),
                (JobAction::Start, JobKind::Compact) => {
                    ctl.resume();
                    j.compact_now.set(Some(ratio.unwrap_or(0.0)));
                    j.compact_wake.notify_one();
                }
                (JobAction::Start, JobKind::Scrub) => {
                    ctl.resume();
                    j.scrub_now.set(true);
                    // A pass already running goes on unpaced.
                    j.scrub_pace.set_rate(0);
                    j.scrub_wake.notify_one();
                }
            }
            done.push(s.id());
        }
        let _ = reply.send(done);
    }
}
