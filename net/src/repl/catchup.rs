//! Catch-up: each core sends its shards' backlogged writes to each peer, oldest first, a few
//! at a time, backing off while the peer is unreachable.
//!
//! An entry is only picked once it is older than the copy timeout, so the request that wrote
//! it has had its chance to deliver the copy itself; a copy that arrives twice is harmless
//! (the peer keeps the newest version and answers "newer").

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use podstore_disks::AnyIo;
use podstore_engine::backlog::BacklogEntry;
use podstore_engine::{now_ms, ReadCheck, Shard};

use crate::peer::link::{send_item, CopyError, CopyResult, PeerLink};
use crate::shared::{Shards, Shared};

const BACKOFF_MAX: Duration = Duration::from_secs(5);
const IDLE_POLL: Duration = Duration::from_millis(250);

/// Sends one backlogged write; Ok when the peer holds it (or it needs no copy). The record is
/// read only once a read-ahead permit is free, and the permit is held until its body has been
/// handed to the connection, so the copies waiting for acknowledgements hold no data.
///
/// The record is read without its chunk checksums (the peer checks the whole object's digest
/// before storing it) unless `check` asks for them: after a failed copy of the entry.
async fn send_one(
    shard: &Rc<Shard<AnyIo>>,
    link: &PeerLink,
    e: &BacklogEntry,
    read_ahead: &Arc<tokio::sync::Semaphore>,
    check: ReadCheck,
) -> CopyResult {
    let permit = read_ahead.clone().acquire_owned().await.map_err(CopyError::local)?;
    let item = shard.backlog_item(e, check).await.map_err(CopyError::local)?;
    send_item(link, item, Some(permit)).await
}

/// Runs one core's catch-up toward one peer until the task is aborted.
pub async fn run(shared: Arc<Shared>, shards: Shards, link: Rc<PeerLink>, peer: usize) {
    let Some(repl) = shared.cfg().replication.clone() else { return };
    let window = repl.catch_up_in_flight;
    let c = Rc::new(Sender {
        grace_ms: shared.cfg().limits.copy_timeout_ms + 1000,
        window,
        // Records read and not yet sent: enough to keep every connection busy, bounded so the
        // window (copies awaiting acknowledgement) costs no memory.
        read_ahead: Arc::new(tokio::sync::Semaphore::new(2 * repl.connections_per_peer)),
        // Copies in flight, refilled as each one finishes (no batch barrier).
        slots: Arc::new(tokio::sync::Semaphore::new(window)),
        failure: RefCell::new(None),
        suspects: RefCell::new(HashSet::new()),
        shared,
        shards,
        link,
        peer,
    });
    let mut backoff = IDLE_POLL;
    let mut heard_seen = c.heard_count();
    loop {
        let failed = c.failure.borrow_mut().take();
        if let Some(e) = failed {
            tracing::debug!("catch-up to {}: {e}; retrying in {:?}", c.link.conf.name, backoff);
            backoff = c.back_off(backoff, heard_seen).await;
            continue;
        }
        let free = c.slots.available_permits();
        if free == 0 {
            let _ = c.slots.acquire().await;
            continue;
        }
        let batch = c.take(free);
        if batch.is_empty() {
            // Nothing to take: wait for copies in flight, or poll again soon.
            tokio::time::sleep(IDLE_POLL.min(Duration::from_millis(if free < window { 5 } else { 250 })))
                .await;
            continue;
        }
        // The peer heard from until now is no news to a failure of the copies sent from here
        // on: only a connection after they were taken wakes the back-off.
        heard_seen = c.heard_count();
        for (s, e) in batch {
            let permit = c.slots.clone().try_acquire_owned().expect("counted free slots");
            tokio::task::spawn_local(c.clone().send(s, e, permit));
        }
        if c.failure.borrow().is_none() {
            backoff = IDLE_POLL;
        }
    }
}

/// One core's catch-up toward one peer.
struct Sender {
    shared: Arc<Shared>,
    shards: Shards,
    link: Rc<PeerLink>,
    peer: usize,
    /// Entries younger than this are left to the request that wrote them.
    grace_ms: u64,
    /// Copies in flight at most.
    window: usize,
    read_ahead: Arc<tokio::sync::Semaphore>,
    slots: Arc<tokio::sync::Semaphore>,
    /// The last copy that failed since the loop last looked.
    failure: RefCell<Option<CopyError>>,
    /// Entries whose copy failed: read with checksums next time (a damaged record is then
    /// found and quarantined instead of being refused by the peer again and again).
    suspects: RefCell<HashSet<(u32, u64)>>,
}

impl Sender {
    fn heard_count(&self) -> u64 {
        self.shared
            .catch_up
            .get(self.peer)
            .map_or(0, |p| p.heard_count.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Waits after failed copies: `backoff`, cut short when the peer connects to this node (it
    /// is back) after the copies that failed were taken (counted first, then waited on, so a
    /// connection between the two is not missed). Returns the next back-off.
    async fn back_off(&self, backoff: Duration, heard_seen: u64) -> Duration {
        let woken = match self.shared.catch_up.get(self.peer) {
            Some(p) => {
                let heard = p.heard.notified();
                tokio::pin!(heard);
                heard.as_mut().enable();
                self.heard_count() != heard_seen
                    || tokio::select! {
                        _ = tokio::time::sleep(backoff) => false,
                        _ = heard => true,
                    }
            }
            None => {
                tokio::time::sleep(backoff).await;
                false
            }
        };
        if !woken {
            return (backoff * 2).min(BACKOFF_MAX);
        }
        self.link.heard();
        metrics::counter!("podstore_repl_catch_up_woken_total", "peer" => self.link.conf.name.clone())
            .increment(1);
        IDLE_POLL
    }

    /// Up to `free` backlogged entries old enough to send, from the core's shards in turn.
    fn take(&self, free: usize) -> Vec<(Rc<Shard<AnyIo>>, BacklogEntry)> {
        let list: Vec<Rc<Shard<AnyIo>>> = self.shards.borrow().values().cloned().collect();
        let before = now_ms().saturating_sub(self.grace_ms);
        let mut batch = Vec::new();
        for s in &list {
            if batch.len() >= free {
                break;
            }
            for e in s.backlog_take(self.peer, free - batch.len(), before) {
                batch.push((s.clone(), e));
            }
        }
        batch
    }

    /// Sends one entry and settles it: confirmed when the peer holds it, released (and
    /// suspect) when the copy failed.
    async fn send(
        self: Rc<Self>,
        s: Rc<Shard<AnyIo>>,
        e: BacklogEntry,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let (peer, name) = (self.peer, &self.link.conf.name);
        let id = (s.id(), e.seq);
        let check = if self.suspects.borrow().contains(&id) { ReadCheck::Verify } else { ReadCheck::ByPeer };
        match send_one(&s, &self.link, &e, &self.read_ahead, check).await {
            Ok(_) => {
                self.suspects.borrow_mut().remove(&id);
                s.backlog_confirm(peer, e.seq);
                if let Some(p) = self.shared.catch_up.get(peer) {
                    p.confirmed(e.record_len);
                }
                metrics::counter!("podstore_repl_catch_up_copies_total", "peer" => name.clone()).increment(1);
                metrics::counter!("podstore_repl_catch_up_bytes_total", "peer" => name.clone())
                    .increment(e.record_len);
            }
            Err(err) => {
                // Bounded: an entry leaves the set when its copy succeeds; entries confirmed
                // some other way would stay, so a set grown past a few windows starts afresh
                // (forgetting costs one more refused copy).
                let mut set = self.suspects.borrow_mut();
                if set.len() >= 4 * self.window {
                    set.clear();
                }
                set.insert(id);
                drop(set);
                s.backlog_release(peer, e.seq);
                *self.failure.borrow_mut() = Some(err);
            }
        }
        drop(permit);
    }
}
