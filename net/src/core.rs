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
use std::time::{Duration, Instant};

use bytes::Bytes;
use podstore_disks::{AnyIo, DiskSpec, UringConfig};
use podstore_engine::{ReadCheck, RecoveryReport, ShardSpec, Stamp};
use tokio::sync::{mpsc, watch};

use crate::msg::{BodyMsg, CoreMsg, GetStart, JobAction, JobKind, PutOutcome};
use crate::range::{self, RangeAnswer};
use crate::shared::{
    shard_config, spill, Shards, Shared, PIECES_IN_FLIGHT_MAX, TIER_CAPACITY, TIER_FAST, TIER_RAM,
};

/// How often core 0 checks that it holds a connection to every peer (and opens one if not).
const PEER_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest pause between dials of a peer that can't be reached.
const PEER_DIAL_PAUSE_MAX: std::time::Duration = std::time::Duration::from_secs(8);

/// What a core reports once its shards are open.
#[derive(Debug)]
pub struct CoreReady {
    pub core: usize,
    pub backend: podstore_disks::Backend,
    pub shards: Vec<(u32, Result<RecoveryReport, String>)>,
}

/// Everything a core thread needs.
pub struct CoreStart {
    pub index: usize,
    pub cpu: Option<usize>,
    pub shared: Arc<Shared>,
    pub disks: Vec<DiskSpec>,
    pub inbox: mpsc::Receiver<CoreMsg>,
    pub listener: std::net::TcpListener,
    /// This core's socket on the replication port (when replication is configured).
    pub repl_listener: Option<std::net::TcpListener>,
    pub ready_tx: std::sync::mpsc::Sender<CoreReady>,
    pub shutdown: watch::Receiver<bool>,
}

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
    let CoreStart {
        index, shared, disks, mut inbox, listener, repl_listener, ready_tx, mut shutdown, ..
    } = start;
    let cfg = &shared.cfg();
    let ucfg = UringConfig { pool_buf_count: cfg.engine.io_buffers_per_core, ..UringConfig::default() };
    let (io, driver, backend) = AnyIo::detect(ucfg, cfg.io_backend == "sync");
    let io = match &shared.faults {
        Some(plan) => io.with_faults(plan.clone(), index as u64 + 1),
        None => io,
    };
    if let Some(d) = driver {
        tokio::task::spawn_local(d.run());
    }
    // Serve health and readiness (and 503 for data) while the shards recover.
    let conns = Rc::new(crate::http::Connections::default());
    let links = Rc::new(match (&cfg.replication, &shared.repl_secret) {
        (Some(r), Some(secret)) => {
            let id = crate::peer::link::Identity {
                node: cfg.node_id.clone(),
                datacenter: r.datacenter.clone(),
                secret: secret.clone(),
            };
            let ring = io.uring().cloned();
            crate::peer::link::Links::new(r, Rc::new(id), ring)
        }
        _ => crate::peer::link::Links::default(),
    });
    let shards: Shards = Rc::new(RefCell::new(HashMap::new()));
    let objects = Rc::new(crate::service::Objects::new(shared.clone(), links.clone(), index, shards.clone()));
    let accept = tokio::task::spawn_local(crate::http::accept_loop(
        index,
        shared.clone(),
        listener,
        shutdown.clone(),
        conns.clone(),
        objects.clone(),
    ));
    let repl_accept = repl_listener.map(|l| {
        let server =
            crate::repl::server::accept_loop(index, objects.clone(), l, shutdown.clone(), shards.clone());
        tokio::task::spawn_local(server)
    });
    let mut reports = Vec::new();
    for spec in &disks {
        let profile = shared.disk(spec.id).and_then(|d| d.profile);
        reports.push((spec.id, open_shard(&io, &shared, spec, profile, &shards).await));
    }
    let _ = ready_tx.send(CoreReady { core: index, backend, shards: reports });

    let cache: Option<Rc<crate::cache::RamCache>> = {
        let c = &shared.cfg().ram_cache;
        let part = c.size_bytes / shared.inboxes.len().max(1) as u64;
        crate::cache::RamCache::new(part, c.object_size_max_bytes, shared.ram_cache[index].clone())
            .map(Rc::new)
    };
    let jobs: crate::maintenance::Jobs = Default::default();
    for s in shards.borrow().values() {
        let profile = shared.disk(s.id()).and_then(|d| d.profile);
        jobs.borrow_mut().insert(s.id(), crate::maintenance::start(shared.clone(), s.clone(), profile));
    }
    let hb = tokio::task::spawn_local(housekeeping(index, shared.clone(), shards.clone(), jobs.clone()));
    let repair =
        tokio::task::spawn_local(crate::maintenance::repair(shared.clone(), shards.clone(), links.clone()));
    let catch_up: Vec<_> = links
        .peers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            tokio::task::spawn_local(crate::repl::catchup::run(shared.clone(), shards.clone(), l.clone(), i))
        })
        .collect();
    // Core 0 tells every peer that this node is up once it is ready (a peer holding a backlog
    // for it resumes its catch-up at once instead of at the end of its back-off), then keeps
    // a connection open to each: whether it has one is whether the peer is reachable now.
    let announce = (index == 0).then(|| {
        let (shared, links) = (shared.clone(), links.clone());
        tokio::task::spawn_local(async move {
            while !shared.ready.load(Ordering::Relaxed) {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            // A peer that can't be reached is dialled again after 1, 2, 4... seconds, at most
            // PEER_DIAL_PAUSE_MAX apart (a peer refusing our handshake logs each attempt).
            let n = links.peers.len();
            let (mut next_dial, mut pause) = (vec![Instant::now(); n], vec![PEER_WATCH_INTERVAL; n]);
            loop {
                for (i, l) in links.peers.iter().enumerate() {
                    let up = l.reachable();
                    if let Some(flag) = shared.peer_up.get(i) {
                        flag.store(up, Ordering::Relaxed);
                    }
                    if up {
                        pause[i] = PEER_WATCH_INTERVAL;
                        continue;
                    }
                    if Instant::now() < next_dial[i] {
                        continue;
                    }
                    next_dial[i] = Instant::now() + pause[i];
                    pause[i] = (pause[i] * 2).min(PEER_DIAL_PAUSE_MAX);
                    // (each on its own: a peer whose packets are dropped holds up only its own
                    // dial)
                    let l = l.clone();
                    tokio::task::spawn_local(async move { l.announce().await });
                }
                tokio::time::sleep(PEER_WATCH_INTERVAL).await;
            }
        })
    });
    // Core 0 runs the anti-entropy passes (they reach every core through its inbox).
    let anti_entropy: Vec<_> = if index == 0 {
        (0..links.peers.len())
            .map(|i| tokio::task::spawn_local(crate::repl::anti_entropy::run(objects.clone(), i)))
            .collect()
    } else {
        Vec::new()
    };
    loop {
        tokio::select! {
            msg = inbox.recv() => match msg {
                Some(CoreMsg::AddDisk { spec, profile, reply }) => {
                    let (io, shared, shards, jobs) = (io.clone(), shared.clone(), shards.clone(), jobs.clone());
                    tokio::task::spawn_local(async move {
                        let r = if shards.borrow().contains_key(&spec.id) {
                            Ok(None) // opened by an earlier request whose placement failed
                        } else {
                            open_shard(&io, &shared, &spec, profile, &shards).await.map(Some)
                        };
                        if let Some(s) = shards.borrow().get(&spec.id) {
                            jobs.borrow_mut()
                                .entry(s.id())
                                .or_insert_with(|| crate::maintenance::start(shared.clone(), s.clone(), profile));
                        }
                        let _ = reply.send(r);
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
                    // A read the RAM cache answers needs no task of its own either.
                    let m = match (m, &cache) {
                        (CoreMsg::Get { shard, key, range, head, reply }, Some(c)) => {
                            match cached_get(c, &shared.tier_reads, &shards, shard, &key, range.as_deref(), head) {
                                Some(start) => {
                                    let _ = reply.send(Ok(Some(start)));
                                    continue;
                                }
                                None => CoreMsg::Get { shard, key, range, head, reply },
                            }
                        }
                        (m, _) => m,
                    };
                    tokio::task::spawn_local(execute(m, shared.clone(), shards.clone(), links.clone(), jobs.clone(), cache.clone()));
                }
                None => break,
            },
            _ = shutdown.changed() => break,
        }
    }
    // Drain: no new connections; in-flight requests finish or fail cleanly.
    let _ = accept.await;
    if let Some(r) = repl_accept {
        let _ = r.await;
    }
    conns.drain(Duration::from_secs(30)).await;
    // Serve any work still queued from other cores' last requests, then sync.
    while let Ok(m) = inbox.try_recv() {
        execute(m, shared.clone(), shards.clone(), links.clone(), jobs.clone(), cache.clone()).await;
    }
    hb.abort();
    repair.abort();
    if let Some(a) = announce {
        a.abort();
    }
    for c in catch_up.into_iter().chain(anti_entropy) {
        c.abort();
    }
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

/// The answer to a GET from the RAM cache, if it holds the key's current record (cache.rs).
fn cached_get(
    cache: &crate::cache::RamCache,
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
    // No pieces follow the first: the sender goes at once.
    let (_, body) = mpsc::channel(1);
    Some(GetStart { meta: hit.meta.clone(), range: answer, first, body })
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
) -> Result<RecoveryReport, String> {
    let one = [ShardSpec { id: spec.id, dir: spec.path.clone(), weight: 1.0 }];
    let mut sc = shard_config(&shared.cfg(), shared.clock.clone());
    sc.forgets_total = Some(shared.moves.clone());
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
        Some((_, r)) => r.map_err(|e| e.to_string()),
        None => Err("the shard did not open".into()),
    }
}

async fn housekeeping(index: usize, shared: Arc<Shared>, shards: Shards, jobs: crate::maintenance::Jobs) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let probing: Rc<RefCell<std::collections::HashSet<u32>>> = Default::default();
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
                if !probing.borrow_mut().insert(s.id()) {
                    continue; // the last probe has not come back
                }
                let (shared, shards, jobs, probing) =
                    (shared.clone(), shards.clone(), jobs.clone(), probing.clone());
                tokio::task::spawn_local(async move {
                    let limit = Duration::from_millis(shared.cfg().engine.disk_timeout_ms);
                    let why = match tokio::time::timeout(limit, s.probe()).await {
                        Err(_) => Some(format!("a read took longer than {} ms", limit.as_millis())),
                        Ok(Some(Err(e))) if !e.is_crash() => Some(format!("a read failed: {e}")),
                        _ => None,
                    };
                    if let Some(why) = why {
                        fail_disk(&shared, &shards, &jobs, s.id(), why).await;
                    }
                    probing.borrow_mut().remove(&s.id());
                });
            }
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
        // writes go on along their chains (route.rs).
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

async fn execute(
    msg: CoreMsg,
    shared: Arc<Shared>,
    shards: Shards,
    links: Rc<crate::peer::link::Links>,
    jobs: crate::maintenance::Jobs,
    cache: Option<Rc<crate::cache::RamCache>>,
) {
    match msg {
        // Handled by the core's loop; only the drain at shutdown gets here.
        CoreMsg::AddDisk { reply, .. } => {
            let _ = reply.send(Err("the node is shutting down".into()));
        }
        CoreMsg::Put { shard, key, content_type, len, stamp, mut body, reply } => {
            let Some(s) = shards.borrow().get(&shard).cloned() else {
                let _ = reply.send(Err(no_shard(shard)));
                return;
            };
            if let Some(c) = &cache {
                c.invalidate(&key);
            }
            let r = async {
                let Some(mut w) = s.put_stamped(&key, &content_type, len, stamp).await? else {
                    // Superseded: take the body (so the sender is not stuck) and store nothing.
                    while let Some(m) = body.recv().await {
                        if matches!(m, BodyMsg::End { .. }) {
                            break;
                        }
                    }
                    return Ok(PutOutcome::Superseded);
                };
                loop {
                    match body.recv().await {
                        Some(BodyMsg::Data(b)) => w.write(&b).await?,
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
                || shared.routes.is_writable(shard) && s.nearly_full(|| free_bytes(&shared, shard));
            if full {
                // Before the answer: a PUT that got NoSpace and looks for the next disk must
                // not be routed here again while the spilled mark is being written.
                shared.routes.stop_writes(shard);
            }
            let _ = reply.send(r);
            if full {
                spill(&shared, shard, "full").await;
            }
        }
        CoreMsg::Get { shard, key, range, head, reply } => {
            let Some(s) = shards.borrow().get(&shard).cloned() else {
                let _ = reply.send(Err(no_shard(shard)));
                return;
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
            let (tx, rx) = mpsc::channel(PIECES_IN_FLIGHT_MAX);
            let first = if head || answer == RangeAnswer::Unsatisfiable {
                None
            } else {
                match reader.next_chunk().await {
                    Ok(c) => c.map(|c| Bytes::copy_from_slice(&c)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
            };
            let fast = shared.routes.is_fast(shard);
            shared.tier_reads[if fast { TIER_FAST } else { TIER_CAPACITY }].fetch_add(1, Ordering::Relaxed);
            if !fast && shared.routes.has_fast_tier() {
                crate::maintenance::note_capacity_read(&shared, &s, &key);
            }
            if let (Some(c), Some(data)) = (&cache, &first) {
                if answer == RangeAnswer::Whole && c.takes(reader.meta.object_len) {
                    let object = crate::cache::Cached {
                        disk: shard,
                        loc: reader.loc(),
                        meta: reader.meta.clone(),
                        data: data.clone(),
                    };
                    c.offer(key.clone(), object);
                }
            }
            let more = first.is_some();
            let start = GetStart { meta: reader.meta.clone(), range: answer, first, body: rx };
            if reply.send(Ok(Some(start))).is_err() || !more {
                return;
            }
            loop {
                match reader.next_chunk().await {
                    Ok(Some(c)) => {
                        if tx.send(Ok(Bytes::copy_from_slice(&c))).await.is_err() {
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
        CoreMsg::Delete { shard, key, stamp, always, reply } => {
            let Some(s) = shards.borrow().get(&shard).cloned() else {
                let _ = reply.send(Err(no_shard(shard)));
                return;
            };
            if let Some(c) = &cache {
                c.invalidate(&key);
            }
            let _ = reply.send(s.delete_stamped(&key, stamp, always).await);
        }
        CoreMsg::PutBatch { shard, items, reply } => {
            let Some(s) = shards.borrow().get(&shard).cloned() else {
                let _ = reply.send(Err(no_shard(shard)));
                return;
            };
            if let Some(c) = &cache {
                for it in &items {
                    c.invalidate(&it.key);
                }
            }
            let _ = reply.send(s.put_batch(&items).await);
        }
        CoreMsg::Digests { reply } => {
            let mut d = vec![0u64; podstore_engine::digest::BUCKETS];
            for s in shards.borrow().values() {
                for (x, y) in d.iter_mut().zip(s.digests()) {
                    *x ^= y;
                }
            }
            let _ = reply.send(d);
        }
        CoreMsg::BucketKeys { bucket, reply } => {
            let list: Vec<_> = shards.borrow().values().cloned().collect();
            let mut out = Vec::new();
            for s in list {
                match s.bucket_keys(bucket).await {
                    Ok(k) => out.extend(k),
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                        return;
                    }
                }
            }
            let _ = reply.send(Ok(out));
        }
        CoreMsg::Deleted { shard, key, reply } => {
            let _ = reply.send(shards.borrow().get(&shard).is_some_and(|s| s.is_deleted(&key)));
        }
        CoreMsg::Push { shard, key, peer, insist, reply } => {
            let s = shards.borrow().get(&shard).cloned();
            let r = match (s, links.peers.get(peer)) {
                (Some(s), Some(link)) => {
                    if insist {
                        link.heard();
                    }
                    // Without chunk checksums first (the peer checks the digest); a refused
                    // copy is read again with them, which quarantines a damaged record.
                    let mut r = Err(String::new());
                    for check in [ReadCheck::ByPeer, ReadCheck::Verify] {
                        r = match s.copy_item(&key, check).await {
                            Ok(item) => crate::peer::link::send_item(link, item, None).await,
                            Err(e) => Err(e.to_string()),
                        };
                        if r.is_ok() {
                            break;
                        }
                    }
                    r
                }
                _ => Err("no such shard or peer here".into()),
            };
            let _ = reply.send(r);
        }
        CoreMsg::Confirm { shard, seq, peer } => {
            if let Some(s) = shards.borrow().get(&shard) {
                s.backlog_confirm(peer, seq);
            }
        }
        CoreMsg::Stats { reply } => {
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
        CoreMsg::Has { shard, key, reply } => {
            let has = shards.borrow().get(&shard).is_some_and(|s| s.has_entry(&key));
            let _ = reply.send(has);
        }
        CoreMsg::Version { shard, key, reply } => {
            let Some(s) = shards.borrow().get(&shard).cloned() else {
                let _ = reply.send(Err(no_shard(shard)));
                return;
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
        CoreMsg::Job { disk, job, action, ratio, idle_s, reply } => {
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
}
