//! The admin port's actions: background jobs started and controlled, a disk drained or added
//! while the node runs, an anti-entropy pass with a peer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::{Response, StatusCode};
use tokio::sync::oneshot;

use super::{error, reply};
use crate::body::RespBody;
use crate::msg::CoreMsg;
use crate::shared::Shared;

/// `POST /admin/compact` and `POST /admin/scrub` with `?action=start|pause|resume|stop`
/// (default start), `&disk=N` (default every disk) and, for compaction, `&ratio=R` (the dead
/// share a blob needs; default any dead byte).
pub(super) async fn job_request(
    shared: &Shared,
    job: crate::msg::JobKind,
    query: &str,
) -> Response<RespBody> {
    use crate::msg::JobAction;
    let err = |status, code: &str, msg: String| error(status, code, &msg);
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
pub(super) async fn start_drain(shared: &Arc<Shared>, query: &str) -> Response<RespBody> {
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
pub(super) async fn add_disk(shared: &Arc<Shared>, query: &str) -> Response<RespBody> {
    use crate::config::{CacheConf, DiskConf, TierConf};
    let err = |status, code: &str, msg: String| error(status, code, &msg);
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
    let added = podstore_engine::route::AddedDisk {
        path: conf.path.clone(),
        tier: conf.tier.into(),
        cache: conf.cache.into(),
        require_mount_point: conf.require_mount_point,
    };
    let (sh, dir) = (shared.clone(), conf.path.clone());
    let placed = tokio::task::spawn_blocking(move || sh.routes.add(candidate, dir, added))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
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
pub(super) fn start_recover(shared: &Shared, query: &str) -> Response<RespBody> {
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
