//! Starting, running and stopping the node: disks, cores, listeners, readiness, the systemd
//! protocol and the graceful drain.
//!
//! systemd (`Type=notify`): `READY=1` once every shard recovered or failed; `WATCHDOG=1` only
//! while every core's loop turns (each core bumps a heartbeat); `STOPPING=1` on SIGTERM or
//! SIGINT, then the drain: stop accepting, let in-flight requests finish (or fail cleanly),
//! checkpoint, exit 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use podstore_disks::DiskSpec;
use podstore_engine::placement::Candidate;
use sd_notify::NotifyState;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::core::{CoreReady, CoreStart};
use crate::shared::{DiskInfo, Shared, INBOX_MAX};

/// Binds a listener with `SO_REUSEPORT`, so every core accepts on its own socket and the
/// kernel spreads connections between them.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_cloexec(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!("sd_notify: {e}");
    }
}

/// Runs the node until SIGTERM or SIGINT. Errors are startup failures, described for humans.
pub fn run(cfg: Config, reload: crate::reload::Reload) -> Result<(), String> {
    // SIGHUP reloads the configuration (reload.rs) from the moment the node starts: without
    // a handler its default action would end the node.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let hup = {
        let _in_runtime = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(|e| e.to_string())?
    };
    // Before anything else: a node that would be open to anyone who reaches it does not start.
    let auth = crate::auth::Auth::load(&cfg.auth)?;
    cfg.check_exposure(auth.is_some())?;
    let faults = test_faults()?;
    let prom = install_metrics()?;

    let cpus = podstore_disks::allowed_cpus();
    let ncores = if cfg.cores == 0 { cpus.len().max(1) } else { cfg.cores };
    let mut disks = open_disks(&cfg, ncores)?;
    let mut ports = Ports::bind(&cfg, ncores)?;

    let mut inbox_rx = Vec::new();
    let mut inboxes = Vec::new();
    for _ in 0..ncores {
        let (tx, rx) = mpsc::channel(INBOX_MAX);
        inboxes.push(tx);
        inbox_rx.push(rx);
    }
    let specs = std::mem::take(&mut disks.specs);
    let shared = shared_state(&cfg, ncores, disks, inboxes, auth, faults, ports.repl_secret.take());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<CoreReady>();
    let started = Instant::now();
    let mut threads = Vec::new();
    for (index, ((((inbox, listener), s3_listener), repl_listener), disks)) in
        inbox_rx.into_iter().zip(ports.data).zip(ports.s3).zip(ports.repl).zip(specs).enumerate()
    {
        let start = CoreStart {
            index,
            cpu: cpus.get(index % cpus.len().max(1)).copied(),
            shared: shared.clone(),
            disks,
            inbox,
            ready_tx: ready_tx.clone(),
            shutdown: shutdown_rx.clone(),
            serve: crate::tasks::serve(listener, s3_listener, repl_listener),
            background: crate::tasks::background(),
        };
        let t = std::thread::Builder::new()
            .name(format!("podstore-core-{index}"))
            .spawn(move || crate::core::run(start))
            .map_err(|e| format!("core thread: {e}"))?;
        threads.push(t);
    }
    drop(ready_tx);
    let admin = {
        let (shared, prom, rx, listener) = (shared.clone(), prom.clone(), shutdown_rx.clone(), ports.admin);
        std::thread::Builder::new()
            .name("podstore-admin".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("admin runtime");
                tokio::task::LocalSet::new().block_on(&rt, crate::admin::serve(shared, prom, listener, rx));
            })
            .map_err(|e| format!("admin thread: {e}"))?
    };
    tracing::info!(
        "podstore {} node {:?}: {ncores} cores, data {} admin {}; recovering {} disks",
        env!("CARGO_PKG_VERSION"),
        cfg.node_id,
        cfg.listen.data,
        cfg.listen.admin,
        shared.layout.load().shard_core.len()
    );

    rt.block_on(supervise(&shared, ncores, ready_rx, started, hup, &reload))?;
    tracing::info!("stopping: draining connections");
    shared.draining.store(true, Ordering::Relaxed);
    notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    let _ = shutdown_tx.send(true);
    for t in threads {
        let _ = t.join();
    }
    let _ = admin.join();
    tracing::info!("stopped");
    Ok(())
}

/// Installs the Prometheus recorder behind the `metrics` facade and describes every metric;
/// returns the handle the admin thread renders.
fn install_metrics() -> Result<PrometheusHandle, String> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("seconds".into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                10.0,
            ],
        )
        .map_err(|e| e.to_string())?
        .build_recorder();
    let prom = recorder.handle();
    // The exporter is built on the `metrics` facade's one global recorder; the handle is
    // passed explicitly to the admin thread that renders it.
    let _ = metrics::set_global_recorder(recorder);
    crate::admin::describe_metrics();
    Ok(prom)
}

/// The node's disks as they were found at start.
struct OpenDisks {
    /// Every disk, configured or added at runtime, with its state.
    infos: Vec<DiskInfo>,
    /// Per core, the disks it opens.
    specs: Vec<Vec<DiskSpec>>,
    /// The disks that opened, with their weights.
    placement: Vec<Candidate>,
    shard_core: HashMap<u32, usize>,
    /// Every disk with a weight (a failed one keeps its keys' order), and its directory.
    route_candidates: Vec<(Candidate, PathBuf)>,
    fast: Vec<u32>,
    recorded: podstore_engine::route::PlacementState,
}

/// Checks every disk (configured, or added while the node ran) and spreads the healthy ones
/// over the cores: a disk that fails its checks is reported and left out; the others serve.
fn open_disks(cfg: &Config, ncores: usize) -> Result<OpenDisks, String> {
    // Every disk's weight as recorded (a failed disk keeps its keys' order); see engine/src/route.rs.
    let dirs: Vec<PathBuf> = cfg.disks.iter().map(|d| d.path.clone()).collect();
    let recorded = podstore_engine::route::PlacementState::load(&dirs).unwrap_or_default();
    // Disks added while the node ran (`podstore add-disk`) are opened too; the configuration
    // file wins where it names the same disk.
    let mut confs = cfg.disks.clone();
    for (id, a) in &recorded.added {
        if confs.iter().any(|d| d.id == *id || d.path == a.path) {
            continue;
        }
        tracing::info!(
            "disk {id} ({}) was added while the node ran; add it to the configuration file to keep it there",
            a.path.display()
        );
        confs.push(crate::config::DiskConf::added(*id, a));
    }
    let mut out = OpenDisks {
        infos: Vec::new(),
        specs: vec![Vec::new(); ncores],
        placement: Vec::new(),
        shard_core: HashMap::new(),
        route_candidates: Vec::new(),
        fast: confs.iter().filter(|d| d.tier == crate::config::TierConf::Fast).map(|d| d.id).collect(),
        recorded: Default::default(),
    };
    for d in &confs {
        let core = out.shard_core.len() % ncores;
        let known = recorded.disks.get(&d.id).map(|r| r.0);
        let (spec, info, weight) = crate::prepare::prepare_disk(d, &cfg.node_id, &cfg.engine, known, core)?;
        if info.failed.is_none() {
            let weight = weight.unwrap_or(1.0);
            out.placement.push(Candidate { shard_id: d.id, weight });
            out.route_candidates.push((Candidate { shard_id: d.id, weight }, d.path.clone()));
            out.shard_core.insert(d.id, core);
            out.specs[core].push(spec);
        } else if let Some(weight) = weight {
            // Its keys keep their order: reads look past it, writes go on along the chain.
            out.route_candidates.push((Candidate { shard_id: d.id, weight }, d.path.clone()));
        }
        out.infos.push(info);
    }
    if out.shard_core.is_empty() {
        return Err("no disk can be used; see the errors above".into());
    }
    out.recorded = recorded;
    Ok(out)
}

/// The node's sockets: one data-port and one replication-port socket per core
/// (`SO_REUSEPORT`), the admin port, and the replica set's secret.
struct Ports {
    data: Vec<std::net::TcpListener>,
    s3: Vec<Option<std::net::TcpListener>>,
    repl: Vec<Option<std::net::TcpListener>>,
    admin: std::net::TcpListener,
    repl_secret: Option<Vec<u8>>,
}

impl Ports {
    fn bind(cfg: &Config, ncores: usize) -> Result<Ports, String> {
        let mut data = Vec::new();
        for _ in 0..ncores {
            data.push(
                reuseport_listener(cfg.listen.data)
                    .map_err(|e| format!("data port {}: {e}", cfg.listen.data))?,
            );
        }
        let mut s3: Vec<Option<std::net::TcpListener>> = (0..ncores).map(|_| None).collect();
        if let Some(addr) = cfg.listen.s3 {
            for slot in s3.iter_mut() {
                *slot = Some(reuseport_listener(addr).map_err(|e| format!("S3 port {addr}: {e}"))?);
            }
        }
        let mut repl: Vec<Option<std::net::TcpListener>> = (0..ncores).map(|_| None).collect();
        let mut repl_secret = None;
        if let Some(r) = &cfg.replication {
            repl_secret = Some(crate::peer::auth::read_secret(&r.secret_file)?);
            for slot in repl.iter_mut() {
                *slot = Some(
                    reuseport_listener(r.listen)
                        .map_err(|e| format!("replication port {}: {e}", r.listen))?,
                );
            }
        }
        let admin = std::net::TcpListener::bind(cfg.listen.admin)
            .map_err(|e| format!("admin port {}: {e}", cfg.listen.admin))?;
        Ok(Ports { data, s3, repl, admin, repl_secret })
    }
}

/// What the cores and the admin thread share, with the routes over the disks that opened.
fn shared_state(
    cfg: &Config,
    ncores: usize,
    disks: OpenDisks,
    inboxes: Vec<mpsc::Sender<crate::msg::CoreMsg>>,
    auth: Option<crate::auth::Auth>,
    faults: Option<podstore_disks::FaultPlan>,
    repl_secret: Option<Vec<u8>>,
) -> Arc<Shared> {
    let OpenDisks { infos, placement, shard_core, route_candidates, fast, recorded, .. } = disks;
    let open_ids: Vec<u32> = placement.iter().map(|c| c.shard_id).collect();
    let (candidates, dirs): (Vec<Candidate>, Vec<PathBuf>) = route_candidates.into_iter().unzip();
    let routes =
        podstore_engine::route::Routes::new(candidates, recorded, dirs, &open_ids).with_fast_tier(fast);
    for d in &infos {
        if d.failed.is_some() && routes.knows(d.id) {
            routes.spill(d.id, "failed");
        }
    }
    routes.persist();
    let any_failed = infos.iter().any(|d| d.failed.is_some());
    let peers = cfg.replication.as_ref().map_or(0, |r| r.peers.len());
    let shared = Arc::new(Shared {
        config: arc_swap::ArcSwap::from_pointee(cfg.clone()),
        routes,
        rebalance_wake: tokio::sync::Notify::new(),
        moves: Default::default(),
        write_memory: Arc::new(podstore_engine::write_memory::WriteMemory::new(
            cfg.engine.write_memory_bytes,
        )),
        layout: arc_swap::ArcSwap::from_pointee(crate::shared::Layout {
            placement,
            shard_core,
            disks: infos,
        }),
        settled: Default::default(),
        fast_fill: Default::default(),
        promoted: Default::default(),
        moving: Default::default(),
        adding_disk: AtomicBool::new(false),
        inboxes,
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        connections: AtomicUsize::new(0),
        heartbeats: (0..ncores).map(|_| AtomicU64::new(0)).collect(),
        foreground_ops: (0..ncores).map(|_| AtomicU64::new(0)).collect(),
        ram_cache: (0..ncores).map(|_| Default::default()).collect(),
        tier_reads: Default::default(),
        recovery_ms: AtomicU64::new(0),
        clock: Arc::new(podstore_engine::Clock::new(podstore_engine::version::origin_of(&cfg.node_id))),
        repl_secret,
        auth: arc_swap::ArcSwapOption::from_pointee(auth),
        faults,
        anti_entropy: (0..peers).map(|_| Default::default()).collect(),
        catch_up: (0..peers).map(|_| Default::default()).collect(),
        peer_up: (0..peers).map(|_| AtomicBool::new(false)).collect(),
    });
    // A disk that could not be used: its objects are rebuilt from the peers onto the other
    // disks by an anti-entropy pass with each, at once.
    if any_failed {
        for p in &shared.anti_entropy {
            p.requested.store(true, Ordering::Relaxed);
        }
    }
    shared
}

/// The node's main loop until SIGTERM or SIGINT: readiness once every core has opened its
/// disks (systemd told), the watchdog fed while every core turns, SIGHUP's reloads.
async fn supervise(
    shared: &Arc<Shared>,
    ncores: usize,
    ready_rx: std::sync::mpsc::Receiver<CoreReady>,
    started: Instant,
    mut hup: tokio::signal::unix::Signal,
    reload: &crate::reload::Reload,
) -> Result<(), String> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| e.to_string())?;
    // Readiness: every core reports once its shards are open (recovered or failed).
    let (rtx, mut rrx) = mpsc::channel::<CoreReady>(ncores.max(1));
    std::thread::spawn(move || {
        while let Ok(r) = ready_rx.recv() {
            if rtx.blocking_send(r).is_err() {
                return;
            }
        }
    });
    let mut reported = 0;
    let watchdog = sd_notify::watchdog_enabled();
    let mut tick = tokio::time::interval(watchdog.map(|w| w / 2).unwrap_or(Duration::from_secs(1)));
    let mut last_beats: Vec<u64> = vec![0; ncores];
    loop {
        tokio::select! {
            r = rrx.recv(), if reported < ncores => {
                let Some(r) = r else {
                    return Err("a core thread stopped during startup; see the errors above".to_string());
                };
                reported += 1;
                log_recovery(&r);
                if reported == ncores {
                    shared.recovery_ms.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    shared.ready.store(true, Ordering::Relaxed);
                    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
                    tracing::info!("ready after {} ms", started.elapsed().as_millis());
                }
            }
            _ = tick.tick() => {
                let beats: Vec<u64> = shared.heartbeats.iter().map(|b| b.load(Ordering::Relaxed)).collect();
                let all_turning = beats.iter().zip(&last_beats).all(|(now, then)| now > then);
                last_beats = beats;
                if watchdog.is_some() && all_turning && reported == ncores {
                    notify(&[NotifyState::Watchdog]);
                }
            }
            // A few small files read: short enough for this loop, which feeds the watchdog.
            _ = hup.recv() => {
                let _ = reload.run(shared);
            }
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}

/// Logs what a core's recovery of its disks found.
fn log_recovery(r: &CoreReady) {
    if let Some(why) = &r.backend.fallback_reason {
        tracing::warn!("core {}: disk I/O through {} ({why})", r.core, r.backend.name);
    }
    for (id, rep) in &r.shards {
        match rep {
            Ok(rep) => tracing::info!(
                "disk {id}: recovered in {} ms ({} entries from checkpoint, {} records scanned in, {} torn-tail items, {} quarantined)",
                rep.duration_ms,
                rep.checkpoint_entries,
                rep.records_applied,
                rep.torn_tail_items,
                rep.quarantined_new
            ),
            Err(e) => tracing::error!("disk {id}: failed to recover: {e}"),
        }
    }
}

/// The disk-fault campaign's plan (`PODSTORE_FAULTS`, podstore_disks::FaultPlan): honoured
/// in test builds (debug assertions on) only; a release build refuses to start with it set.
fn test_faults() -> Result<Option<podstore_disks::FaultPlan>, String> {
    let Ok(spec) = std::env::var("PODSTORE_FAULTS") else { return Ok(None) };
    if !cfg!(debug_assertions) {
        return Err(
            "PODSTORE_FAULTS is set: fault injection exists in test builds only, and this is a release \
                    build; unset it"
                .into(),
        );
    }
    let plan = podstore_disks::FaultPlan::parse(&spec).map_err(|e| format!("PODSTORE_FAULTS: {e}"))?;
    tracing::warn!("TEST BUILD: injecting disk faults under {}: {:?}", plan.dir.display(), plan.rates);
    Ok(Some(plan))
}
