//! The object service: this appliance's objects, whatever front end asks for them.
//!
//! Every front end (the HTTP data API in `http.rs`, the replication receiver and anti-entropy
//! in `repl/`) translates its protocol to the calls here and imports no other front end. The
//! service owns what a request needs beyond one disk: which disk of which tier holds a key or
//! takes its writes (routing over `engine/src/route.rs`), the version stamped on a write, the copies to
//! peers and the count of durable copies a client asked for, spill to the next disk when one
//! fills up, a second look when a move between disks hid a key, and read repair from peers.
//! Below it, the runtime: the core that owns the disk (`core.rs`, reached through `msg.rs`),
//! its shard and the disk.
//!
//! One `Objects` per core (nothing here is `Send`): it holds the core's peer links and shards.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use podstore_engine::{DigestKind, Stamp};
use tokio::sync::{mpsc, oneshot};

pub use crate::body::BodySource;
use crate::checks::{Algorithm, Check, ContentHash, Running};
use crate::list::{ListPage, ListRequest};
use crate::manifest::Manifest;
use crate::msg::{BodyMsg, CoreMsg, GetStart, PutOutcome};
use crate::names::ObjectName;
use crate::peer::link::{CopyError, CopyResult, Links, Piece};
use crate::range::RangeAnswer;
use crate::shared::{Shards, Shared, PIECES_IN_FLIGHT_MAX};

/// PUT bodies up to this size are read whole before they go to the owning core (fewer
/// cross-core wake-ups; and a disk that fills up meanwhile is passed over with the body still
/// in hand).
const SMALL_BODY_MAX_BYTES: u64 = 64 << 10;
/// Pieces of a body queued for one peer.
const PEER_PIECES_MAX: usize = 16;
/// Tries of a failed copy a client is waiting for (sent again from the stored record).
const COPY_RETRIES_MAX: u32 = 4;
/// Pause before the first retry of a failed copy; each next one waits twice as long.
const COPY_RETRY_PAUSE_MS: u64 = 50;

/// Why the service could not do what was asked. Front ends map each to their protocol's
/// answer (`http.rs`: status, code, message).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the node is still recovering its disks")]
    NotReady,
    /// No disk takes writes for the key (507).
    #[error("no disk can take this object")]
    NoDisk,
    /// The disk, the core or the node can't serve this now (503).
    #[error("{0}")]
    Unavailable(&'static str),
    /// A write's body did not arrive whole: nothing was stored.
    #[error("{0}")]
    IncompleteBody(String),
    /// The body does not match a digest the client sent (which one: `Content-MD5` or
    /// `x-amz-content-sha256`): nothing was stored.
    #[error("the body does not match {0}; nothing was stored")]
    BadDigest(&'static str),
    /// Fewer durable copies than asked for within the copy timeout.
    #[error("{written} of the {want} copies asked for were written in time; the write may exist on some appliances")]
    CopiesUnavailable { written: u32, want: u32 },
    #[error("no such object")]
    NotFound,
    /// A multipart object's manifest or one of its parts is not what its completion wrote
    /// (damaged, or a part gone): the object can't be read whole.
    #[error("{0}")]
    Damaged(String),
    #[error(transparent)]
    Engine(#[from] podstore_engine::Error),
}

fn gone() -> Error {
    Error::Unavailable("the request was interrupted")
}

/// A PUT as the service takes it.
#[derive(Debug)]
pub struct PutRequest {
    pub name: ObjectName,
    pub len: u64,
    /// Content type, the content headers kept with the object, its digest's algorithm (MD5
    /// for S3, computed here as the body passes).
    pub attrs: podstore_engine::Attrs,
    /// Digests the body must have (Content-MD5, S3's signed payload hash and checksums):
    /// nothing is stored otherwise.
    pub checks: Vec<Check>,
    /// Durable copies to wait for, this appliance's included.
    pub copies: u32,
}

/// What a write did.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// The object's digest: XXH3-128, or MD5 when its attributes asked (a PUT; zero for a
    /// delete).
    pub digest: [u8; 16],
    /// Durable copies made before the answer, this appliance's included.
    pub copies: u32,
}

/// Where a peer's copy of a write is stored.
#[derive(Debug)]
pub enum CopyTarget {
    /// A shard of this core.
    Here(Rc<podstore_engine::Shard<podstore_disks::AnyIo>>),
    /// A disk of another core.
    Core { shard: u32, owner: usize },
}

/// Where a key is read from: a disk, its core, and whether "absent" there is certain (false:
/// a disk of the key's chain failed or did not answer).
#[derive(Debug, Clone, Copy)]
struct ReadAt {
    shard: u32,
    owner: usize,
    uncertain: bool,
}

/// The object service of one core.
#[derive(Debug)]
pub struct Objects {
    pub shared: Arc<Shared>,
    pub links: Rc<Links>,
    core: usize,
    shards: Shards,
}

impl Objects {
    pub fn new(shared: Arc<Shared>, links: Rc<Links>, core: usize, shards: Shards) -> Objects {
        Objects { shared, links, core, shards }
    }

    fn check_ready(&self) -> Result<(), Error> {
        if self.shared.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(Error::NotReady)
        }
    }

    async fn send(&self, core: usize, msg: CoreMsg) -> Result<(), Error> {
        self.shared.inboxes[core].send(msg).await.map_err(|_| Error::Unavailable("the node is shutting down"))
    }

    // ---- routing ----

    /// The disk (and its core) that takes a key's writes (an engine key): the first of its
    /// chain that takes writes (engine/src/route.rs).
    pub fn locate(&self, key: &[u8]) -> Result<(u32, usize), Error> {
        let shared = &self.shared;
        let fp = podstore_engine::index::fingerprint(key);
        let shard = shared.routes.write_target(fp).ok_or(Error::NoDisk)?;
        let owner = shared.core_of(shard).ok_or(Error::Unavailable("disk not available"))?;
        Ok((shard, owner))
    }

    /// [`Objects::locate`], waiting (up to 2 s) for a disk that just stopped taking writes to
    /// be marked spilled, so its keys' writes can go on to the next disk instead of failing.
    async fn locate_wait(&self, key: &[u8]) -> Result<(u32, usize), Error> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.locate(key) {
                Err(_) if Instant::now() < deadline && self.spill_pending(key) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                r => return r,
            }
        }
    }

    /// Whether the key's chain ends at a disk that takes no writes but is not marked spilled
    /// yet.
    fn spill_pending(&self, key: &[u8]) -> bool {
        let routes = &self.shared.routes;
        let chain = routes.chain(podstore_engine::index::fingerprint(key));
        chain.last().is_some_and(|&id| !routes.is_writable(id) && !routes.is_spilled(id))
    }

    /// With two tiers, an object larger than `tiering.fast_object_size_max_bytes` goes straight
    /// to the capacity tier (capacity disks read and write large objects sequentially at their
    /// best; the fast tier's room is for the many small ones): the disk of its capacity chain
    /// that takes writes. None: the usual route (no fast tier, a small object, or no capacity
    /// disk takes writes).
    fn large_object_route(&self, key: &[u8], len: u64) -> Option<(u32, usize)> {
        let shared = &self.shared;
        let max = shared.cfg().tiering.fast_object_size_max_bytes;
        if max == 0 || !shared.routes.has_fast_tier() || len <= max {
            return None;
        }
        let target = shared.routes.capacity_target(podstore_engine::index::fingerprint(key))?;
        Some((target, shared.core_of(target)?))
    }

    /// The disk that takes a key's tombstone: the one that takes its writes, or on a full node
    /// the first open disk of its chain (a full disk keeps room for tombstones).
    async fn delete_route(&self, key: &[u8]) -> Result<(u32, usize), Error> {
        match self.locate_wait(key).await {
            Ok(r) => Ok(r),
            Err(e) => self
                .shared
                .routes
                .chain(podstore_engine::index::fingerprint(key))
                .into_iter()
                .find_map(|id| self.shared.core_of(id).map(|core| (id, core)))
                .ok_or(e),
        }
    }

    /// Whether disk `shard` of core `owner` has an index entry for `key`, answered here when
    /// the disk is this core's (None: ask its core). The reads of a key being moved ask every
    /// disk of its chain; a message to one's own core costs as much as the answer many times
    /// over.
    fn has_here(&self, owner: usize, shard: u32, key: &[u8]) -> Option<bool> {
        (owner == self.core).then(|| self.shards.borrow().get(&shard).is_some_and(|s| s.has_entry(key)))
    }

    /// The disk (and its core) to read a key from: its home, or, when the home is spilled,
    /// the disk of its chain holding the newest version (a tombstone's disk answers 404); with
    /// no version anywhere, the disk that takes its writes (where read repair stores a copy).
    async fn read_route(&self, key: &[u8]) -> Result<ReadAt, Error> {
        let shared = &self.shared;
        let fp = podstore_engine::index::fingerprint(key);
        let chain = shared.routes.chain(fp);
        if let [home] = chain[..] {
            if shared.routes.is_failed(home) {
                return Err(Error::Unavailable("the disk holding this object failed"));
            }
            let owner = shared.core_of(home).ok_or(Error::Unavailable("disk not available"))?;
            return Ok(ReadAt { shard: home, owner, uncertain: false });
        }
        let mut best: Option<(podstore_engine::Version, u32, usize)> = None;
        let mut uncertain = false;
        // Which disks of the chain have an entry for the key (their indexes, in memory; every
        // disk asked at once). Usually one does: it is read with no version compared.
        let mut asked = Vec::with_capacity(chain.len());
        let mut holders = Vec::with_capacity(chain.len());
        for id in chain {
            // A failed disk is skipped: its copies come from peers (read repair).
            let Some(owner) = shared.core_of(id).filter(|_| !shared.routes.is_failed(id)) else {
                uncertain = true;
                continue;
            };
            match self.has_here(owner, id, key) {
                Some(true) => holders.push((id, owner)),
                Some(false) => {}
                None => {
                    let (tx, rx) = oneshot::channel();
                    self.send(owner, CoreMsg::Has { shard: id, key: key.to_vec(), reply: tx }).await?;
                    asked.push((id, owner, rx));
                }
            }
        }
        for (id, owner, rx) in asked {
            match rx.await {
                Ok(true) => holders.push((id, owner)),
                Ok(false) => {}
                Err(_) => uncertain = true,
            }
        }
        if let [(shard, owner)] = holders[..] {
            return Ok(ReadAt { shard, owner, uncertain: false });
        }
        // Several (a key being moved, or written on two disks of its chain): the newest wins.
        let mut asked = Vec::with_capacity(holders.len());
        for (id, owner) in holders {
            let (tx, rx) = oneshot::channel();
            self.send(owner, CoreMsg::Version { shard: id, key: key.to_vec(), reply: tx }).await?;
            asked.push((id, owner, rx));
        }
        for (id, owner, rx) in asked {
            match rx.await {
                Ok(Ok(Some((v, _)))) if best.is_none_or(|b| v > b.0) => best = Some((v, id, owner)),
                Ok(Ok(_)) => {}
                _ => uncertain = true,
            }
        }
        // A version found on a readable disk is served (a tombstone answers 404), even past a
        // failed disk: what that disk holds can't be asked.
        match best {
            Some((_, shard, owner)) => Ok(ReadAt { shard, owner, uncertain: false }),
            None => self.locate(key).map(|(shard, owner)| ReadAt { shard, owner, uncertain }),
        }
    }

    // ---- writes ----

    /// Stores an object: on the disk that takes its key's writes (or the next one, if that
    /// one fills up meanwhile), with a copy streamed to every peer beside it; answers once
    /// `req.copies` durable copies exist (or with what went wrong: then nothing was stored
    /// here, or the copies did not come in time).
    pub async fn put(&self, req: PutRequest, mut body: impl BodySource) -> Result<Written, Error> {
        self.check_ready()?;
        let shared = &self.shared;
        let PutRequest { name, len, attrs, checks, copies: want } = req;
        let (mut shard, mut owner) = match self.large_object_route(&name.storage_key(), len) {
            Some(r) => r,
            None => self.locate_wait(&name.storage_key()).await?,
        };
        let peers = &self.links.peers;
        // In a replica set every copy gets the version stamped here; a lone node lets the
        // shard stamp it.
        let version = (!peers.is_empty()).then(|| shared.clock.now());
        let stamp = version.map_or(Stamp::Local, Stamp::Given);
        // An MD5 is computed here, on the connection's thread (beside the other bodies the
        // thread receives: podstore_disks::md5_lanes), and handed to the writer (which then
        // computes only its chunk CRCs): once, whatever else needs it.
        let md5_kind = attrs.digest == DigestKind::Md5;
        // A small body is read whole first and handed over in one message (fewer cross-core
        // wake-ups); a large one streams to the owning core as it arrives.
        let small = len <= SMALL_BODY_MAX_BYTES;
        let (tx, rx) = mpsc::channel(if small { 2 } else { PIECES_IN_FLIGHT_MAX });
        let (reply_tx, reply_rx) = oneshot::channel();
        let mut msg = Some(CoreMsg::Put {
            shard,
            key: name.storage_key(),
            attrs: attrs.clone(),
            len,
            stamp,
            digest_given: md5_kind,
            body: rx,
            reply: reply_tx,
        });
        if !small {
            self.send(owner, msg.take().expect("not sent yet")).await?;
        }
        // Copies to peers stream beside the local write; each reports into `copies_rx`.
        let (to_peers, copies_rx) = self.start_copies(&name, &attrs, len, version);
        let (checks, md5_of_content) = split_checks(checks, md5_kind);
        let mut sinks = BodySinks {
            checks,
            md5_of_content,
            hash: (version.is_some() || md5_kind).then(|| ContentHash::new(attrs.digest)),
            to_peers,
            whole: small.then(|| Vec::with_capacity(len as usize)),
            stall: Duration::from_millis(shared.cfg().limits.copy_timeout_ms),
            received: 0,
        };
        let failed = sinks.receive(&mut body, len, &tx).await;
        let complete = failed.is_none() && sinks.received == len;
        let (whole, mismatch, digest) = sinks.end(complete).await;
        let digest_ok = mismatch.is_none();
        let outcome = if let Some(w) = whole {
            if !(complete && digest_ok) {
                return Err(match (failed, mismatch) {
                    (Some(why), _) => Error::IncompleteBody(why),
                    (None, m) => Error::BadDigest(m.unwrap_or("its length")),
                });
            }
            let w = Bytes::from(w);
            // Room for both was made when the channel was created.
            let _ = tx.try_send(BodyMsg::Data(w.clone()));
            let _ = tx.try_send(BodyMsg::End { ok: true, digest: digest.filter(|_| md5_kind) });
            drop(tx);
            self.send(owner, msg.take().expect("not sent yet")).await?;
            let got = reply_rx.await.map_err(|_| gone())?;
            let (got, at) = self.spill_on(got, (shard, owner), &name, &attrs, stamp, (w, digest)).await?;
            (shard, owner) = at;
            got
        } else {
            let end = BodyMsg::End { ok: complete && digest_ok, digest: digest.filter(|_| md5_kind) };
            let _ = tx.send(end).await;
            drop(tx);
            reply_rx.await.map_err(|_| gone())?
        }?;
        if let Some(why) = failed {
            return Err(Error::IncompleteBody(why));
        }
        if let Some(m) = mismatch {
            return Err(Error::BadDigest(m));
        }
        let (etag_digest, seq) = match outcome {
            PutOutcome::Stored(done) => (done.digest, Some(done.seq)),
            // A newer write of the key won on this appliance; this one's content is still known.
            PutOutcome::Superseded => (digest.ok_or_else(gone)?, None),
            PutOutcome::Aborted => return Err(gone()),
        };
        let copies = self.collect_copies((owner, shard, seq), &name.storage_key(), want, copies_rx).await?;
        Ok(Written { digest: etag_digest, copies })
    }

    /// Starts a copy of a PUT to every peer (when the write has a version: a replica set);
    /// returns the body's way to each and where their answers come.
    fn start_copies(
        &self,
        name: &ObjectName,
        attrs: &podstore_engine::Attrs,
        len: u64,
        version: Option<podstore_engine::Version>,
    ) -> (Vec<Option<mpsc::Sender<Piece>>>, mpsc::Receiver<PeerCopy>) {
        let peers = &self.links.peers;
        let (copies_tx, copies_rx) = mpsc::channel::<PeerCopy>(peers.len().max(1));
        let mut to_peers = Vec::new();
        if let Some(v) = version {
            for (i, p) in peers.iter().enumerate() {
                let (ptx, prx) = mpsc::channel(PEER_PIECES_MAX);
                let (p, attrs, copies_tx) = (p.clone(), attrs.clone(), copies_tx.clone());
                let (bucket, key) = (name.bucket.clone(), name.key.clone());
                tokio::task::spawn_local(async move {
                    let r = p.send_put(v, &bucket, &key, &attrs, len, None, prx).await;
                    note_copy(&p.conf.name, "put", &r);
                    let _ = copies_tx.send((i, r)).await;
                });
                to_peers.push(Some(ptx));
            }
        }
        (to_peers, copies_rx)
    }

    /// A small object's write that found its disk full: that disk is marked spilled by its
    /// core, and the body, still here, goes to the next disk of the key's chain (up to three
    /// times) instead of a 507. Returns the last answer and the disk (and core) it came from.
    async fn spill_on(
        &self,
        mut got: Result<PutOutcome, podstore_engine::Error>,
        (mut shard, mut owner): (u32, usize),
        name: &ObjectName,
        attrs: &podstore_engine::Attrs,
        stamp: Stamp,
        (body, digest): (Bytes, Option<[u8; 16]>),
    ) -> Result<(Result<PutOutcome, podstore_engine::Error>, (u32, usize)), Error> {
        for _ in 0..3 {
            if !matches!(got, Err(podstore_engine::Error::NoSpace { .. })) {
                break;
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while !self.shared.routes.is_spilled(shard) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let Ok((next, next_owner)) = self.locate_wait(&name.storage_key()).await else { break };
            if next == shard {
                break;
            }
            let (tx, rx) = mpsc::channel(2);
            let _ = tx.try_send(BodyMsg::Data(body.clone()));
            let md5_kind = attrs.digest == DigestKind::Md5;
            let _ = tx.try_send(BodyMsg::End { ok: true, digest: digest.filter(|_| md5_kind) });
            let (reply, answer) = oneshot::channel();
            let again = CoreMsg::Put {
                shard: next,
                key: name.storage_key(),
                attrs: attrs.clone(),
                len: body.len() as u64,
                stamp,
                digest_given: md5_kind,
                body: rx,
                reply,
            };
            self.send(next_owner, again).await?;
            (shard, owner) = (next, next_owner);
            got = answer.await.map_err(|_| gone())?;
        }
        Ok((got, (shard, owner)))
    }

    /// Deletes an object: a tombstone on the disk that takes the key's writes, and on every
    /// peer; answers once `want` durable copies of the tombstone exist.
    pub async fn delete(&self, name: &ObjectName, want: u32) -> Result<Written, Error> {
        self.check_ready()?;
        let shared = &self.shared;
        let key = name.storage_key();
        let (shard, owner) = self.delete_route(&key).await?;
        let peers = &self.links.peers;
        let version = (!peers.is_empty()).then(|| shared.clock.now());
        let stamp = version.map_or(Stamp::Local, Stamp::Given);
        let (copies_tx, copies_rx) = mpsc::channel::<PeerCopy>(peers.len().max(1));
        if let Some(v) = version {
            for (i, p) in peers.iter().enumerate() {
                let (p, copies_tx, bucket, skey) =
                    (p.clone(), copies_tx.clone(), name.bucket.clone(), name.key.clone());
                tokio::task::spawn_local(async move {
                    let r = p.send_delete(v, &bucket, &skey).await;
                    note_copy(&p.conf.name, "delete", &r);
                    let _ = copies_tx.send((i, r)).await;
                });
            }
        }
        drop(copies_tx);
        let (reply_tx, reply_rx) = oneshot::channel();
        // In a replica set the tombstone is written even if this appliance lacks the key: a
        // peer may hold it, and the tombstone keeps older copies from coming back.
        // So does a node whose chain for the key is longer than its home: an older copy on
        // another disk of the chain must be shadowed.
        let chained = shared.routes.chain(podstore_engine::index::fingerprint(&key)).len() > 1;
        let always = version.is_some() || chained;
        self.send(owner, CoreMsg::Delete { shard, key: key.clone(), stamp, always, reply: reply_tx }).await?;
        let done = reply_rx.await.map_err(|_| gone())??;
        let copies = self.collect_copies((owner, shard, done.seq), &key, want, copies_rx).await?;
        Ok(Written { digest: [0; 16], copies })
    }

    /// Counts durable copies (the local one included, already made) until `want` are
    /// reached; [`Error::CopiesUnavailable`] if they are not within the copy timeout. A copy
    /// that failed (a connection that went stale while the peer was paused, a dial refused a
    /// moment ago) is sent again from the stored record (`key`, the engine key) on a fresh
    /// connection while time is left, up to [`COPY_RETRIES_MAX`] times: while every peer
    /// answers, `all` is met. Every peer that confirms (now or later) has the local record
    /// `seq` removed from its backlog on the owning core.
    async fn collect_copies(
        &self,
        (owner, shard, seq): (usize, u32, Option<u64>),
        key: &[u8],
        want: u32,
        mut rx: mpsc::Receiver<PeerCopy>,
    ) -> Result<u32, Error> {
        let shared = &self.shared;
        let confirm = {
            let shared = shared.clone();
            move |peer: usize| {
                if let Some(seq) = seq {
                    // If the inbox is full the entry stays and is sent again later: harmless.
                    let _ = shared.inboxes[owner].try_send(CoreMsg::Confirm { shard, seq, peer });
                }
            }
        };
        let peers = self.links.peers.len();
        let (again_tx, mut again_rx) = mpsc::channel::<PeerCopy>(peers.max(1));
        let mut tries = vec![0u32; peers];
        let (mut first_open, mut retrying) = (true, 0usize);
        let mut written = 1u32;
        let deadline = Instant::now() + Duration::from_millis(shared.cfg().limits.copy_timeout_ms);
        let mut outcome = Ok(());
        while written < want {
            let next = tokio::select! {
                r = rx.recv(), if first_open => r.or_else(|| { first_open = false; None }),
                r = again_rx.recv(), if retrying > 0 => { retrying -= 1; r }
                _ = tokio::time::sleep_until(deadline.into()) => None,
            };
            match next {
                Some((peer, Ok(_))) => {
                    written += 1;
                    confirm(peer);
                }
                Some((peer, Err(_))) if tries.get(peer).is_some_and(|&t| t < COPY_RETRIES_MAX) => {
                    let pause = Duration::from_millis(COPY_RETRY_PAUSE_MS << tries[peer]);
                    tries[peer] += 1;
                    if Instant::now() + pause >= deadline {
                        continue;
                    }
                    retrying += 1;
                    let (svc, key, again_tx) = (self.detached(), key.to_vec(), again_tx.clone());
                    tokio::task::spawn_local(async move {
                        tokio::time::sleep(pause).await;
                        let r = svc.push_copy(key, peer, true).await;
                        metrics::counter!("podstore_repl_copy_retries_total", "outcome" => if r.is_ok() { "ok" } else { "failed" })
                            .increment(1);
                        let _ = again_tx.send((peer, r)).await;
                    });
                }
                Some((_, Err(_))) => {}
                None if Instant::now() < deadline && (first_open || retrying > 0) => {}
                None => {
                    outcome = Err(Error::CopiesUnavailable { written, want });
                    break;
                }
            }
        }
        drop(again_tx);
        // Copies still on their way (and retries) confirm when they land.
        tokio::task::spawn_local(async move {
            loop {
                let r = tokio::select! {
                    Some(r) = rx.recv() => r,
                    Some(r) = again_rx.recv() => r,
                    else => return,
                };
                if r.1.is_ok() {
                    confirm(r.0);
                }
            }
        });
        outcome.map(|()| written)
    }

    /// A handle on the same service for a task of its own.
    fn detached(&self) -> Objects {
        Objects {
            shared: self.shared.clone(),
            links: self.links.clone(),
            core: self.core,
            shards: self.shards.clone(),
        }
    }

    /// Asks the core holding `key`'s newest write (an engine key) to send it to peer `peer`
    /// (its index in the config). `insist`: a client waits for this copy, so a dial that
    /// failed a moment ago does not hold it back (the client's copy timeout bounds the wait).
    pub async fn push_copy(&self, key: Vec<u8>, peer: usize, insist: bool) -> CopyResult {
        let at = self.read_route(&key).await.map_err(CopyError::local)?;
        let (tx, rx) = oneshot::channel();
        self.shared.inboxes[at.owner]
            .send(CoreMsg::Push { shard: at.shard, key, peer, insist, reply: tx })
            .await
            .map_err(|_| CopyError::local("shutting down"))?;
        rx.await.map_err(|_| CopyError::local("the push was interrupted"))?
    }

    // ---- copies from peers ----

    /// Where a peer's copy of a write of `key` (an engine key) goes: a shard of this core (the
    /// receiver writes it straight into the record's buffers), or another core's disk.
    pub fn copy_target(&self, key: &[u8]) -> Result<CopyTarget, Error> {
        self.check_ready()?;
        let (shard, owner) = self.locate(key)?;
        Ok(match self.shards.borrow().get(&shard) {
            Some(s) if owner == self.core => CopyTarget::Here(s.clone()),
            _ => CopyTarget::Core { shard, owner },
        })
    }

    /// Sends a peer's copy of a PUT (its version, its body as it arrives on `body`) to the
    /// core that owns `shard`; the core's answer comes on the receiver.
    pub async fn forward_copy(
        &self,
        (shard, owner): (u32, usize),
        key: Vec<u8>,
        attrs: podstore_engine::Attrs,
        len: u64,
        version: podstore_engine::Version,
        body: mpsc::Receiver<BodyMsg>,
    ) -> Result<oneshot::Receiver<Result<PutOutcome, podstore_engine::Error>>, Error> {
        let (reply, answer) = oneshot::channel();
        let stamp = Stamp::Given(version);
        let msg = CoreMsg::Put { shard, key, attrs, len, stamp, digest_given: false, body, reply };
        self.send(owner, msg).await?;
        Ok(answer)
    }

    /// Stores a peer's tombstone (always, even where the key is absent: it keeps older copies
    /// from coming back); the core's answer comes on the receiver.
    pub async fn delete_copy(
        &self,
        key: Vec<u8>,
        version: podstore_engine::Version,
    ) -> Result<oneshot::Receiver<Result<podstore_engine::DeleteDone, podstore_engine::Error>>, Error> {
        self.check_ready()?;
        let (shard, owner) = self.locate(&key)?;
        let (reply, answer) = oneshot::channel();
        let stamp = Stamp::Given(version);
        self.send(owner, CoreMsg::Delete { shard, key, stamp, always: true, reply }).await?;
        Ok(answer)
    }

    // ---- reads ----

    /// Asks the owning core for an object.
    async fn get_at(
        &self,
        at: ReadAt,
        key: &[u8],
        range: &Option<String>,
        head: bool,
    ) -> Result<Result<Option<GetStart>, podstore_engine::Error>, Error> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let msg =
            CoreMsg::Get { shard: at.shard, key: key.to_vec(), range: range.clone(), head, reply: reply_tx };
        self.send(at.owner, msg).await?;
        reply_rx.await.map_err(|_| gone())
    }

    /// A page of a bucket's listing, merged from every open disk (`list.rs`). A disk that
    /// can't list (its name index out of service, the disk failing) fails the whole listing:
    /// a listing that silently missed a disk's keys would look complete.
    pub async fn list(&self, req: &ListRequest) -> Result<ListPage, Error> {
        self.check_ready()?;
        let layout = self.shared.layout.load_full();
        let mut disks: Vec<u32> = layout.shard_core.keys().copied().collect();
        disks.sort_unstable();
        crate::list::list(req, &disks, |shard, from, prefix, max| {
            self.list_disk(&layout, shard, from, prefix, max)
        })
        .await
    }

    /// The buckets holding at least one object (at most `max`), from every open disk's names.
    pub async fn buckets(&self, max: usize) -> Result<Vec<String>, Error> {
        self.check_ready()?;
        let layout = self.shared.layout.load_full();
        let mut disks: Vec<u32> = layout.shard_core.keys().copied().collect();
        disks.sort_unstable();
        crate::list::buckets(&disks, max, |shard, from, prefix, max| {
            self.list_disk(&layout, shard, from, prefix, max)
        })
        .await
    }

    /// One page of one disk's names (`CoreMsg::ListNames` to the disk's core).
    async fn list_disk(
        &self,
        layout: &crate::shared::Layout,
        shard: u32,
        from: Box<[u8]>,
        prefix: Box<[u8]>,
        max: usize,
    ) -> Result<podstore_engine::names::Listed, Error> {
        let owner = layout.shard_core.get(&shard).copied().ok_or(Error::Unavailable("disk not available"))?;
        let (reply, rx) = oneshot::channel();
        self.send(owner, CoreMsg::ListNames { shard, from, prefix, max, reply }).await?;
        Ok(rx.await.map_err(|_| gone())??)
    }

    /// Reads an object (`range`: the client's Range header; `head`: no body): one record, or
    /// a multipart object's parts in turn (`manifest.rs`), its meta then the whole object's
    /// (its length, its ETag's digest).
    pub async fn get(&self, key: &[u8], range: Option<String>, head: bool) -> Result<GetStart, Error> {
        let start = self.get_record(key, range.clone(), head).await?;
        match start.meta.attrs.multipart() {
            None => Ok(start),
            Some(m) => self.get_multipart(key, start, m, range, head).await,
        }
    }

    /// A multipart object: its manifest (the record's data, read whole: read again without
    /// the client's range when one was asked), then the parts that the range covers streamed
    /// in order, each checked to be the part the completion named (version, length, MD5).
    async fn get_multipart(
        &self,
        key: &[u8],
        start: GetStart,
        m: podstore_engine::Multipart,
        range: Option<String>,
        head: bool,
    ) -> Result<GetStart, Error> {
        let mut meta = start.meta.clone();
        meta.object_len = m.object_len;
        meta.digest = m.etag;
        let answer = crate::range::resolve(range.as_deref(), m.object_len);
        let (from, end) = match answer {
            RangeAnswer::Whole => (0, m.object_len),
            RangeAnswer::Part { start, end } => (start, end),
            RangeAnswer::Unsatisfiable => (0, 0),
        };
        if head || from == end {
            return Ok(GetStart { meta, range: answer, first: None, body: None });
        }
        let whole = if range.is_none() { start } else { self.get_record(key, None, false).await? };
        if whole.meta.version != meta.version {
            return Err(Error::Unavailable("the object was written again while it was read"));
        }
        let bytes = read_whole(whole).await?;
        let manifest = Manifest::decode(&bytes).map_err(|e| Error::Damaged(e.to_string()))?;
        if manifest.object_len() != m.object_len || manifest.parts.len() != m.parts as usize {
            return Err(Error::Damaged("the manifest does not match its record".into()));
        }
        let (tx, rx) = mpsc::channel(PIECES_IN_FLIGHT_MAX);
        let svc = self.detached();
        tokio::task::spawn_local(async move {
            if let Err(why) = svc.stream_parts(&manifest, (from, end), &tx).await {
                metrics::counter!("podstore_multipart_read_failures_total").increment(1);
                tracing::warn!("a multipart read stopped: {why}");
                let _ = tx.send(Err(why)).await;
            }
        });
        Ok(GetStart { meta, range: answer, first: None, body: Some(rx) })
    }

    /// The manifest of the multipart object at `key`, with its record's meta (None: the key
    /// holds no object, or one that is not a multipart object).
    pub async fn manifest(
        &self,
        key: &[u8],
    ) -> Result<Option<(podstore_engine::ObjectMeta, Manifest)>, Error> {
        let start = match self.get_record(key, None, false).await {
            Ok(s) => s,
            Err(Error::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        if start.meta.attrs.multipart().is_none() {
            return Ok(None);
        }
        let meta = start.meta.clone();
        let bytes = read_whole(start).await?;
        let manifest = Manifest::decode(&bytes).map_err(|e| Error::Damaged(e.to_string()))?;
        Ok(Some((meta, manifest)))
    }

    /// Forgets a key on this appliance alone (no tombstone, nothing sent to peers) if its
    /// newest record still has `version`: garbage this appliance judged dead (the multipart
    /// sweep, `sweep.rs`). True if it did.
    pub async fn forget_here(&self, key: &[u8], version: podstore_engine::Version) -> Result<bool, Error> {
        let at = self.read_route(key).await?;
        let (reply, rx) = oneshot::channel();
        self.send(at.owner, CoreMsg::Forget { shard: at.shard, key: key.to_vec(), version, reply }).await?;
        Ok(rx.await.map_err(|_| gone())??)
    }

    /// Sends bytes `from..end` of a multipart object, part after part, to `tx`.
    async fn stream_parts(
        &self,
        manifest: &Manifest,
        (from, end): (u64, u64),
        tx: &mpsc::Sender<crate::body::Piece>,
    ) -> Result<(), String> {
        let mut at = 0u64;
        for p in &manifest.parts {
            let (ps, pe) = (at, at + p.len);
            at = pe;
            if pe <= from || ps >= end {
                continue;
            }
            let (a, b) = (from.max(ps) - ps, end.min(pe) - ps);
            let range = (a > 0 || b < p.len).then(|| format!("bytes={a}-{}", b - 1));
            let key = manifest.part_storage_key(p);
            let got =
                self.get_record(&key, range, false).await.map_err(|e| format!("part {}: {e}", p.number))?;
            let meta = &got.meta;
            if meta.version != p.version || meta.object_len != p.len || meta.digest != p.md5 {
                return Err(format!("part {} is not the one the upload's completion named", p.number));
            }
            let mut sent = 0u64;
            let mut pieces = got.body;
            let mut next = got.first.map(Ok);
            loop {
                let piece = match next.take() {
                    Some(piece) => piece,
                    None => match pieces.as_mut() {
                        Some(rx) => match rx.recv().await {
                            Some(piece) => piece,
                            None => break,
                        },
                        None => break,
                    },
                };
                let data = piece.map_err(|e| format!("part {}: {e}", p.number))?;
                sent += data.len() as u64;
                if tx.send(Ok(data)).await.is_err() {
                    return Ok(()); // the client went away
                }
            }
            if sent != b - a {
                return Err(format!("part {} ended after {sent} of {} bytes", p.number, b - a));
            }
        }
        Ok(())
    }

    /// Reads one record (see [`Objects::get`]). A key that a move between disks hid is looked
    /// for again; one missing here (and not deleted) or damaged is asked of the peers first
    /// (read repair).
    async fn get_record(&self, key: &[u8], range: Option<String>, head: bool) -> Result<GetStart, Error> {
        self.check_ready()?;
        let shared = &self.shared;
        // Read before the disks are asked where the key is: a move that completes after this
        // (its count goes up as the source forgets the key) makes a read that found nothing
        // look again. Read after, a move could finish between the look and the count.
        let mut moves_before = shared.moves.load(Ordering::SeqCst);
        let mut at = self.read_route(key).await?;
        let mut answer = self.get_at(at, key, &range, head).await?;
        // A move between two disks (copy, then forget) that finished while the disks were
        // asked can hide the key from both looks: look again (engine/src/route.rs, maintenance.rs).
        for _ in 0..4 {
            let now = shared.moves.load(Ordering::SeqCst);
            if !matches!(answer, Ok(None)) || now == moves_before {
                break;
            }
            moves_before = now;
            at = self.read_route(key).await?;
            answer = self.get_at(at, key, &range, head).await?;
        }
        let damaged = matches!(
            answer,
            Err(podstore_engine::Error::Quarantined { .. } | podstore_engine::Error::Corrupt { .. })
        );
        if (damaged || matches!(answer, Ok(None))) && self.read_repair(at, key, damaged).await {
            answer = self.get_at(at, key, &range, head).await?;
        }
        answer?.ok_or({
            if at.uncertain {
                // A disk of the key's chain failed or did not answer: the object may be there.
                Error::Unavailable("the disk that may hold this object failed")
            } else {
                Error::NotFound
            }
        })
    }

    /// Read repair: the object is missing here (and not deleted) or its copy is damaged; ask
    /// the peers, in turn, to push their newest write of it here. True once one did.
    async fn read_repair(&self, at: ReadAt, key: &[u8], damaged: bool) -> bool {
        if self.links.peers.is_empty() {
            return false;
        }
        if !damaged {
            let (tx, rx) = oneshot::channel();
            let ask = CoreMsg::Deleted { shard: at.shard, key: key.to_vec(), reply: tx };
            if self.send(at.owner, ask).await.is_err() || rx.await.unwrap_or(true) {
                return false;
            }
        }
        let limit = Duration::from_millis(self.shared.cfg().limits.copy_timeout_ms);
        for p in &self.links.peers {
            let r = tokio::time::timeout(limit, p.pull(key)).await;
            let stored = matches!(r, Ok(Ok(crate::peer::frame::AckStatus::Stored)));
            metrics::counter!("podstore_repl_read_repairs_total", "peer" => p.conf.name.clone(), "outcome" => if stored { "repaired" } else { "not_found" }).increment(1);
            if stored {
                return true;
            }
        }
        false
    }
}

/// The whole data of a record read without a range (a manifest: at most about 480 KiB).
async fn read_whole(start: GetStart) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(start.meta.object_len as usize);
    out.extend_from_slice(start.first.as_deref().unwrap_or_default());
    if let Some(mut rx) = start.body {
        while let Some(piece) = rx.recv().await {
            out.extend_from_slice(
                &piece.map_err(|e| Error::Damaged(format!("a manifest's read failed: {e}")))?,
            );
        }
    }
    if out.len() as u64 != start.meta.object_len {
        return Err(Error::Damaged("a manifest's read ended early".into()));
    }
    Ok(out)
}

/// Where a PUT's body goes as it arrives: the client's MD5 check, the XXH3 the peers check
/// their copies by, each peer's copy, and (for a small body) the whole body kept to be handed
/// to its core in one message.
struct BodySinks {
    /// The client's digests to check (a Content-MD5 of an object whose content digest is an
    /// MD5 is not computed twice: see `md5_of_content`).
    checks: Running,
    /// A Content-MD5 compared with the content digest (the object's own MD5) at the end.
    md5_of_content: Option<Check>,
    /// The content digest of the object's kind: for the peers' trailers, and stored as it is
    /// when it is an MD5.
    hash: Option<ContentHash>,
    to_peers: Vec<Option<mpsc::Sender<Piece>>>,
    whole: Option<Vec<u8>>,
    /// How long a peer may take no piece before it is dropped from this write.
    stall: Duration,
    received: u64,
}

/// The client's digests to compute as the body passes, and apart from them a Content-MD5 of
/// an object whose content digest is its MD5 (`md5_kind`): compared with that digest instead
/// of being computed again.
fn split_checks(mut checks: Vec<Check>, md5_kind: bool) -> (Running, Option<Check>) {
    let at = checks.iter().position(|c| md5_kind && c.algorithm == Algorithm::Md5);
    let md5 = at.map(|at| checks.swap_remove(at));
    (Running::new(checks), md5)
}

impl BodySinks {
    /// Takes the body until `len` bytes came, it failed (the reason is returned), or the
    /// core writing it gave up. A large body streams to the core through `tx` as it comes.
    async fn receive(
        &mut self,
        body: &mut impl BodySource,
        len: u64,
        tx: &mpsc::Sender<BodyMsg>,
    ) -> Option<String> {
        while self.received < len {
            // A core that gives up on the write (a disk full, fenced, or too much reserved and
            // unfilled) closes the body's channel: its answer goes out now, not when the body
            // comes (a client that never sends it would otherwise wait for the body timeout).
            let next = tokio::select! {
                n = body.next() => n,
                _ = tx.closed(), if self.whole.is_none() => return None,
            };
            let data = match next {
                Some(Ok(data)) => data,
                Some(Err(why)) => return Some(why),
                None => return Some("the body ended early".into()),
            };
            self.received += data.len() as u64;
            self.checks.update(&data);
            if let Some(hs) = self.hash.as_mut() {
                hs.update(&data);
            }
            for slot in self.to_peers.iter_mut() {
                feed_peer(slot, Piece::Data(data.clone()), self.stall).await;
            }
            if let Some(w) = self.whole.as_mut() {
                w.extend_from_slice(&data);
            } else if tx.send(BodyMsg::Data(data)).await.is_err() {
                return None; // the core gave up (disk full, fenced...): its reply says why
            }
        }
        None
    }

    /// Ends the peers' copies (storable only if the body came whole and matched the client's
    /// digests); returns the small body, the digest it did not match (if any), and the body's
    /// content digest (when computed).
    async fn end(mut self, complete: bool) -> (Option<Vec<u8>>, Option<&'static str>, Option<[u8; 16]>) {
        let digest = self.hash.map(ContentHash::finish);
        let content_md5 = self.md5_of_content.filter(|c| digest.is_none_or(|d| d[..] != c.want[..]));
        let mismatch = content_md5.map(|c| c.header).or_else(|| self.checks.failed());
        let digest_ok = mismatch.is_none();
        for slot in self.to_peers.iter_mut() {
            feed_peer(slot, Piece::End(digest.filter(|_| complete && digest_ok)), self.stall).await;
        }
        (self.whole, mismatch, digest)
    }
}

/// A peer's answer about one copy, with the peer's index in the config.
type PeerCopy = (usize, CopyResult);

/// Hands a piece to a peer's copy; a peer that takes none for `stall` is dropped from this
/// write (its copy is completed later) so one slow peer does not hold up the client.
async fn feed_peer(slot: &mut Option<mpsc::Sender<Piece>>, piece: Piece, stall: Duration) {
    let Some(tx) = slot.as_ref() else { return };
    let ok = match tx.try_send(piece) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(p)) => {
            matches!(tokio::time::timeout(stall, tx.send(p)).await, Ok(Ok(())))
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    };
    if !ok {
        *slot = None;
    }
}

fn note_copy(peer: &str, op: &'static str, r: &CopyResult) {
    let outcome = if r.is_ok() { "ok" } else { "failed" };
    metrics::counter!("podstore_repl_copies_total", "peer" => peer.to_string(), "op" => op, "outcome" => outcome)
        .increment(1);
    if let Err(e) = r {
        metrics::counter!("podstore_repl_copy_failures_total", "peer" => peer.to_string(), "op" => op, "reason" => e.reason())
            .increment(1);
        tracing::warn!("copy of a {op} to {peer} failed: {e}");
    }
}
