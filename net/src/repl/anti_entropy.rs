//! Anti-entropy: compare this appliance's contents with a peer's and copy what is missing or
//! older, in both directions.
//!
//! The two sides exchange their bucket digests (4096 numbers, engine/digest.rs), list the keys
//! and versions of the buckets that differ, and for each key that differs either push the
//! newer local write to the peer or ask the peer to push its newer one here. The same pass
//! refills an empty replacement appliance (every bucket differs) and repairs anything the
//! backlogs could not (an overflowed backlog, a write whose origin died before sending it).
//! It runs in the background every `anti_entropy_interval_s`, and on demand
//! (`POST /admin/recover?peer=NAME`, `podstore recover --from NAME`), paced by
//! `anti_entropy_objects_per_s`.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use podstore_engine::digest::{KeyState, BUCKETS};
use tokio::sync::oneshot;

use crate::msg::CoreMsg;
use crate::peer::frame::{self, Kind};
use crate::peer::link::{CopyError, CopyResult, PeerLink};
use crate::service::Objects;
use crate::shared::Shared;

/// Copies a pass keeps in flight.
const WINDOW: usize = 8;

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Sends a message to every core and collects the answers.
async fn ask_all<T>(shared: &Shared, make: impl Fn(oneshot::Sender<T>) -> CoreMsg) -> Result<Vec<T>, String> {
    let mut rxs = Vec::new();
    for inbox in &shared.inboxes {
        let (tx, rx) = oneshot::channel();
        inbox.send(make(tx)).await.map_err(|_| "the node is shutting down")?;
        rxs.push(rx);
    }
    let mut out = Vec::new();
    for rx in rxs {
        out.push(rx.await.map_err(|_| "a core did not answer")?);
    }
    Ok(out)
}

/// The node's bucket digests: the XOR over every core's shards.
pub async fn node_digests(shared: &Shared) -> Result<Vec<u64>, String> {
    let mut d = vec![0u64; BUCKETS];
    for part in ask_all(shared, |reply| CoreMsg::Digests { reply }).await? {
        for (x, y) in d.iter_mut().zip(part) {
            *x ^= y;
        }
    }
    Ok(d)
}

/// Every current key of a bucket on this node, in key order.
pub async fn node_bucket_keys(shared: &Shared, bucket: usize) -> Result<Vec<KeyState>, String> {
    let mut all = Vec::new();
    for part in ask_all(shared, |reply| CoreMsg::BucketKeys { bucket, reply }).await? {
        all.extend(part.map_err(|e| e.to_string())?);
    }
    // A key on several disks of its chain (engine/src/route.rs) counts once, at its newest version.
    all.sort_by(|a, b| a.key.cmp(&b.key).then(b.version.cmp(&a.version)));
    all.dedup_by(|later, first| later.key == first.key);
    Ok(all)
}

/// Every current key of a bucket on a peer, in key order (paged).
pub(crate) async fn peer_bucket_keys(link: &PeerLink, bucket: usize) -> Result<Vec<KeyState>, String> {
    let mut out: Vec<KeyState> = Vec::new();
    loop {
        let after = out.last().map(|k| k.key.clone()).unwrap_or_default();
        let (kind, meta) = link
            .request(Kind::KeysReq, &frame::keys_req_meta(bucket as u32, &after))
            .await
            .map_err(|e| e.to_string())?;
        if kind != Kind::Keys {
            return Err(format!("expected KEYS, got {kind:?}"));
        }
        let (page, more) = frame::decode_keys(&meta).map_err(|e| format!("bad KEYS: {e}"))?;
        if page.first().is_some_and(|k| k.key <= after && !after.is_empty()) {
            return Err("KEYS page out of order".into());
        }
        let empty = page.is_empty();
        out.extend(page);
        if !more || empty {
            return Ok(out);
        }
    }
}

/// Tries per key copy in a pass (0.5 s, then 1 s apart).
const KEY_ATTEMPTS: u32 = 3;

/// One pass against peer `peer`.
pub async fn pass(
    objects: &Rc<Objects>,
    link: &Rc<PeerLink>,
    peer: usize,
    p: &crate::peer::progress::AntiEntropy,
) -> Result<(), String> {
    let shared = &objects.shared;
    let rate = shared.cfg().replication.as_ref().map_or(1000, |r| r.anti_entropy_objects_per_s).max(1);
    for c in [&p.buckets_differing, &p.buckets_done, &p.keys_compared, &p.pushed, &p.pulled, &p.pass_errors] {
        c.store(0, Ordering::Relaxed);
    }
    let mine = node_digests(shared).await?;
    let theirs = peer_digests(link).await?;
    let differing: Vec<usize> = (0..BUCKETS).filter(|&b| mine[b] != theirs[b]).collect();
    p.buckets_differing.store(differing.len() as u64, Ordering::Relaxed);
    let started = Instant::now();
    let mut done_ops = 0u64;
    for b in differing {
        let mine = node_bucket_keys(shared, b).await?;
        let theirs = peer_bucket_keys(link, b).await?;
        let horizon_ms = shared.cfg().maintenance.tombstone_horizon_s.saturating_mul(1000);
        let work = bucket_work(mine, theirs, now_s().saturating_mul(1000), horizon_ms);
        p.keys_compared.fetch_add(work.compared, Ordering::Relaxed);
        for chunk in work.copies.chunks(WINDOW) {
            let handles: Vec<_> = chunk
                .iter()
                .cloned()
                .map(|(push, key)| {
                    tokio::task::spawn_local(copy_key(objects.clone(), link.clone(), peer, push, key))
                })
                .collect();
            for h in handles {
                count(p, h.await);
            }
            // Pace: at most `rate` copies per second over the pass.
            done_ops += chunk.len() as u64;
            let due = Duration::from_secs_f64(done_ops as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        p.buckets_done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// The peer's bucket digests. A peer that just came back may still be in this node's dial
/// cool-down: tried for a few seconds.
async fn peer_digests(link: &PeerLink) -> Result<Vec<u64>, String> {
    let mut tries = 0;
    let (kind, meta) = loop {
        match link.request(Kind::DigestsReq, &[]).await {
            Ok(a) => break a,
            Err(e) if tries >= 5 => return Err(e.to_string()),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    if kind != Kind::Digests {
        return Err(format!("expected DIGESTS, got {kind:?}"));
    }
    frame::decode_digests(&meta).map_err(|e| format!("bad DIGESTS: {e}"))
}

/// What a differing bucket needs: the keys compared, and the copies to make, as (push, key):
/// a push where this node's version is newer or the peer lacks the key, a pull the other way.
#[derive(Debug, PartialEq)]
struct BucketWork {
    compared: u64,
    copies: Vec<(bool, Vec<u8>)>,
}

/// Compares both sides' current keys of one bucket. A tombstone past the horizon that one side
/// lacks was dropped there by compaction (or soon will be): copying it back would only be
/// dropped again.
fn bucket_work(mine: Vec<KeyState>, theirs: Vec<KeyState>, now_ms: u64, horizon_ms: u64) -> BucketWork {
    let mine: BTreeMap<Vec<u8>, KeyState> = mine.into_iter().map(|k| (k.key.clone(), k)).collect();
    let theirs: BTreeMap<Vec<u8>, KeyState> = theirs.into_iter().map(|k| (k.key.clone(), k)).collect();
    let expired = |k: &KeyState| k.tombstone && now_ms.saturating_sub(k.version.millis()) >= horizon_ms;
    let mut w = BucketWork { compared: 0, copies: Vec::new() };
    for (k, m) in &mine {
        w.compared += 1;
        match theirs.get(k) {
            Some(t) if t.version == m.version => {}
            Some(t) if t.version > m.version => w.copies.push((false, k.clone())),
            None if expired(m) => {}
            _ => w.copies.push((true, k.clone())),
        }
    }
    for (k, t) in theirs.iter().filter(|(k, _)| !mine.contains_key(*k)) {
        w.compared += 1;
        if !expired(t) {
            w.copies.push((false, k.clone()));
        }
    }
    w
}

/// Pushes `key` to the peer or pulls it from there. A transient failure (a connection lost,
/// the peer's dial cool-down) is retried a few times before it counts against the pass.
async fn copy_key(
    objects: Rc<Objects>,
    link: Rc<PeerLink>,
    peer: usize,
    push: bool,
    key: Vec<u8>,
) -> (bool, CopyResult) {
    let mut r = Err(CopyError::local("not tried"));
    for attempt in 0..KEY_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
        }
        r = if push { objects.push_copy(key.clone(), peer, false).await } else { link.pull(&key).await };
        if r.is_ok() {
            break;
        }
    }
    (push, r)
}

/// Counts one key's copy in the pass's progress.
fn count(p: &crate::peer::progress::AntiEntropy, done: Result<(bool, CopyResult), tokio::task::JoinError>) {
    match done {
        Ok((true, Ok(_))) => {
            p.pushed.fetch_add(1, Ordering::Relaxed);
        }
        Ok((false, Ok(_))) => {
            p.pulled.fetch_add(1, Ordering::Relaxed);
        }
        Ok((_, Err(e))) => {
            p.errors.fetch_add(1, Ordering::Relaxed);
            p.pass_errors.fetch_add(1, Ordering::Relaxed);
            *p.last_error.lock().expect("lock") = Some(e.to_string());
        }
        Err(_) => {
            p.pass_errors.fetch_add(1, Ordering::Relaxed);
            p.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs passes against one peer: when asked, and every `anti_entropy_interval_s` (0: only when
/// asked).
pub async fn run(objects: Rc<Objects>, peer: usize) {
    let shared = &objects.shared;
    let cfg = shared.cfg();
    let Some(repl) = cfg.replication.as_ref() else { return };
    let Some(link) = objects.links.peers.get(peer).cloned() else { return };
    let p = &shared.anti_entropy[peer];
    let interval = Duration::from_secs(repl.anti_entropy_interval_s);
    loop {
        if !p.requested.swap(false, Ordering::Relaxed) {
            if interval.is_zero() {
                p.wake.notified().await;
            } else {
                let _ = tokio::time::timeout(interval, p.wake.notified()).await;
            }
            p.requested.store(false, Ordering::Relaxed);
        }
        p.running.store(true, Ordering::Relaxed);
        let t = Instant::now();
        let r = pass(&objects, &link, peer, p).await;
        if let Err(e) = &r {
            p.errors.fetch_add(1, Ordering::Relaxed);
            p.pass_errors.fetch_add(1, Ordering::Relaxed);
            *p.last_error.lock().expect("lock") = Some(e.clone());
            tracing::warn!("anti-entropy with {}: {e}", link.conf.name);
        } else {
            tracing::info!(
                "anti-entropy with {}: {} buckets differed, {} keys compared, {} pushed, {} pulled, {} failed{} in {:?}",
                link.conf.name,
                p.buckets_differing.load(Ordering::Relaxed),
                p.keys_compared.load(Ordering::Relaxed),
                p.pushed.load(Ordering::Relaxed),
                p.pulled.load(Ordering::Relaxed),
                p.pass_errors.load(Ordering::Relaxed),
                p.last_error.lock().ok().and_then(|e| e.clone()).map(|e| format!(" (last: {e})")).unwrap_or_default(),
                t.elapsed()
            );
        }
        p.last_duration_ms.store(t.elapsed().as_millis() as u64, Ordering::Relaxed);
        p.last_end_s.store(now_s(), Ordering::Relaxed);
        p.passes.fetch_add(1, Ordering::Relaxed);
        p.running.store(false, Ordering::Relaxed);
        if r.is_err() {
            // Do not spin on an unreachable peer.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use podstore_engine::digest::KeyState;
    use podstore_engine::Version;

    use super::{bucket_work, BucketWork};

    fn at(key: &str, ms: u64, tombstone: bool) -> KeyState {
        KeyState { key: key.into(), version: Version { hlc: ms << 16, origin: 1 }, tombstone }
    }

    /// Newer here: pushed; newer there or only there: pulled; equal: nothing; a tombstone past
    /// the horizon on one side only: left to compaction.
    #[test]
    fn a_bucket_compares_into_pushes_and_pulls() {
        let (now, horizon) = (10_000, 1_000);
        let mine = vec![
            at("equal", 5, false),
            at("newer-here", 9, false),
            at("newer-there", 3, false),
            at("only-here", 4, false),
            at("old-tombstone-here", 100, true),
            at("fresh-tombstone-here", 9_500, true),
        ];
        let theirs = vec![
            at("equal", 5, false),
            at("newer-here", 8, false),
            at("newer-there", 7, false),
            at("only-there", 2, false),
            at("old-tombstone-there", 200, true),
        ];
        let w = bucket_work(mine, theirs, now, horizon);
        let k = |s: &str| s.as_bytes().to_vec();
        assert_eq!(
            w,
            BucketWork {
                compared: 8,
                copies: vec![
                    (true, k("fresh-tombstone-here")),
                    (true, k("newer-here")),
                    (false, k("newer-there")),
                    (true, k("only-here")),
                    (false, k("only-there")),
                ],
            }
        );
    }
}
