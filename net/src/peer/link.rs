//! Outgoing links: each core keeps its own authenticated connections to each peer and sends
//! the writes it accepted over them; acknowledgements come back out of order, matched by
//! request id.
//!
//! A connection carries one frame at a time in each direction (a PUT's data is contiguous), so
//! a core keeps up to `connections_per_peer` connections to a peer and picks an idle one. A
//! connection with no traffic is pinged; one that hears nothing for `peer_idle_ms` is closed
//! and every write waiting on it fails (the caller counts that copy as missing). The kernel
//! gives up on unacknowledged sends after the same time (`TCP_USER_TIMEOUT`), so a writer is
//! never stuck on a partitioned peer.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use podstore_disks::AnyIo;
use podstore_engine::{CopyItem, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

use super::auth::{self, Side};
use super::frame::{
    self, AckStatus, FrameHeader, Kind, MetaReader, MetaWriter, Trailer, WriteMeta, HEADER_BYTES,
};
use crate::config::{PeerConf, Replication};

/// What a peer said about one write: Ok(stored or newer) or why the copy is missing.
pub type CopyResult = Result<AckStatus, CopyError>;

/// A peer's answer to a request: the frame kind and its metadata.
pub type Answer = Result<(Kind, Vec<u8>), CopyError>;

/// Why a copy to a peer, or a request to it, has no answer. Every kind is worth another try
/// later (catch-up and anti-entropy retry them all); `reason` names the kind for the metrics.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CopyError {
    /// A dial to the peer failed a moment ago; the next one waits a little.
    #[error("peer {0}: unreachable (retrying soon)")]
    CoolingDown(String),
    /// No connection: the connect or the handshake failed (the message names the peer).
    #[error("{0}")]
    Dial(String),
    /// The connection failed, closed or went silent while the request was on it.
    #[error("peer {peer}: {why}")]
    Lost { peer: String, why: String },
    /// The peer answered against the protocol.
    #[error("peer {peer}: {why}")]
    Protocol { peer: String, why: String },
    /// The peer could not store the copy, and said why.
    #[error("{0}")]
    Failed(String),
    /// The copy could not be read or sent from this side (a failed read, a body that ended
    /// early, a key without a bucket, a node shutting down).
    #[error("{0}")]
    Local(String),
}

impl CopyError {
    /// The kind, as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            CopyError::CoolingDown(_) => "cooling_down",
            CopyError::Dial(_) => "dial",
            CopyError::Lost { .. } => "lost",
            CopyError::Protocol { .. } => "protocol",
            CopyError::Failed(_) => "peer_failed",
            CopyError::Local(_) => "local",
        }
    }

    /// A failure on this side.
    pub fn local(why: impl std::fmt::Display) -> CopyError {
        CopyError::Local(why.to_string())
    }
}

/// Reads an ACK answer as the outcome of a copy.
fn copy_result(peer: &str, a: Answer) -> CopyResult {
    let (kind, meta) = a?;
    let protocol = |why: String| CopyError::Protocol { peer: peer.to_string(), why };
    if kind != Kind::Ack {
        return Err(protocol(format!("expected an ACK, got {kind:?}")));
    }
    match frame::decode_ack(&meta).map_err(|e| protocol(format!("bad ack: {e}")))? {
        (AckStatus::Failed, msg) => Err(CopyError::Failed(msg)),
        (status, _) => Ok(status),
    }
}

/// The node's identity on the replication channel.
#[derive(Debug)]
pub struct Identity {
    pub node: String,
    pub datacenter: String,
    pub secret: Vec<u8>,
}

/// One core's links to every peer.
#[derive(Debug, Default)]
pub struct Links {
    pub peers: Vec<Rc<PeerLink>>,
}

/// Pieces at least this large go out with zero-copy sends (when the core has a ring).
const ZC_MIN_BYTES: usize = 64 << 10;
/// Zero-copy sends a link makes before judging whether the kernel really avoids the copy.
const ZC_PROBE_SENDS: u64 = 8;
/// How long a link that found the kernel copying sends plainly before trying again.
const ZC_RETRY: Duration = Duration::from_secs(60);

/// Whether a link sends large pieces with `SEND_ZC`.
#[derive(Debug)]
struct ZeroCopy {
    ring: Option<podstore_disks::Uring>,
    /// Plain sends until then (the kernel was copying).
    off_until: Cell<Option<std::time::Instant>>,
    /// The ring's (notified, copied) counts when the current probe began, and sends since.
    probe_start: Cell<(u64, u64)>,
    probe_sends: Cell<u64>,
}

impl ZeroCopy {
    fn usable(&self, len: usize) -> Option<&podstore_disks::Uring> {
        let ring = self.ring.as_ref()?;
        if len < ZC_MIN_BYTES || self.off_until.get().is_some_and(|t| std::time::Instant::now() < t) {
            return None;
        }
        Some(ring)
    }

    /// After a zero-copy send: when the kernel copied most of the probe's sends (loopback,
    /// veth, a NIC without support), go back to plain sends for a while.
    fn judge(&self, peer: &str) {
        let Some(ring) = &self.ring else { return };
        let n = self.probe_sends.get() + 1;
        self.probe_sends.set(n);
        if n < ZC_PROBE_SENDS {
            return;
        }
        let st = ring.stats();
        let (n0, c0) = self.probe_start.get();
        let (notified, copied) = (st.zc_notified - n0, st.zc_copied - c0);
        if notified > 0 && copied * 2 > notified {
            tracing::info!("replication to {peer}: the kernel copies zero-copy sends ({copied} of {notified}); sending plainly");
            metrics::counter!("podstore_repl_zero_copy_fallbacks_total", "peer" => peer.to_string())
                .increment(1);
            self.off_until.set(Some(std::time::Instant::now() + ZC_RETRY));
        }
        self.probe_sends.set(0);
        self.probe_start.set((st.zc_notified, st.zc_copied));
    }
}

impl Links {
    /// Links to the configured peers (no connection is made until a write needs one).
    pub fn new(cfg: &Replication, id: Rc<Identity>, ring: Option<podstore_disks::Uring>) -> Links {
        Links {
            peers: cfg
                .peers
                .iter()
                .map(|p| {
                    Rc::new(PeerLink {
                        conf: p.clone(),
                        id: id.clone(),
                        max_conns: cfg.connections_per_peer,
                        connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
                        idle: Duration::from_millis(cfg.peer_idle_ms),
                        conns: RefCell::new(Vec::new()),
                        connecting: Cell::new(0),
                        down_until: Cell::new(None),
                        placement: RefCell::new(None),
                        zc: ZeroCopy {
                            ring: ring.clone(),
                            off_until: Cell::new(None),
                            probe_start: Cell::new(
                                ring.as_ref()
                                    .map_or((0, 0), |r| (r.stats().zc_notified, r.stats().zc_copied)),
                            ),
                            probe_sends: Cell::new(0),
                        },
                    })
                })
                .collect(),
        }
    }
}

/// Why a connection to a peer could not be made.
#[derive(Debug)]
struct DialError {
    message: String,
    /// The connect was refused (nothing listens on the peer's address).
    refused: bool,
}

impl From<String> for DialError {
    fn from(message: String) -> Self {
        DialError { message, refused: false }
    }
}

/// Connections of one core to one peer.
#[derive(Debug)]
pub struct PeerLink {
    pub conf: PeerConf,
    id: Rc<Identity>,
    max_conns: usize,
    connect_timeout: Duration,
    idle: Duration,
    conns: RefCell<Vec<Rc<Conn>>>,
    connecting: Cell<usize>,
    /// After a failed connect, further attempts fail at once until then (a partitioned peer
    /// must not make every request wait out a connect timeout).
    down_until: Cell<Option<std::time::Instant>>,
    zc: ZeroCopy,
    /// The peer's placement, from its latest AUTH_OK: which of its cores writes a key.
    placement: RefCell<Option<Rc<frame::Placement>>>,
}

#[derive(Debug)]
struct Conn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Answer>>>,
    /// Writes holding or waiting for the writer.
    busy: Cell<usize>,
    dead: Cell<bool>,
    next_request: Cell<u64>,
    /// Last time data was written: a long PUT keeps the connection alive while the peer,
    /// busy reading it, has nothing to say.
    wrote: Cell<std::time::Instant>,
    /// The peer's core that accepted this connection (from AUTH_OK), when it said.
    core: Option<u16>,
    /// The peer's name, for errors.
    peer: String,
}

impl Conn {
    /// A request id whose answer goes to `tx`.
    fn register(&self, tx: oneshot::Sender<Answer>) -> u64 {
        let req = self.next_request.get();
        self.next_request.set(req + 1);
        self.pending.borrow_mut().insert(req, tx);
        req
    }

    fn fail_all(&self, why: &str) {
        self.dead.set(true);
        for (_, tx) in self.pending.borrow_mut().drain() {
            let _ = tx.send(Err(CopyError::Lost { peer: self.peer.clone(), why: why.to_string() }));
        }
    }
}

/// Marks a connection busy while a write uses it.
struct Busy(Rc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.set(self.0.busy.get() - 1);
    }
}

/// A write's body on its way to one peer.
#[derive(Debug)]
pub enum Piece {
    Data(Bytes),
    /// A verified piece of a stored object (catch-up, anti-entropy), sent from the buffer it
    /// was read into.
    Stored(podstore_engine::Chunk),
    /// The body is complete: its XXH3-128, or None if it must not be stored.
    End(Option<[u8; 16]>),
}

async fn write_frame(w: &mut OwnedWriteHalf, kind: Kind, request: u64, meta: &[u8]) -> std::io::Result<()> {
    w.write_all(&frame::small_frame(kind, request, meta)).await
}

/// Reads one frame header and its metadata (frames without data only).
pub(crate) async fn read_small_frame<R: AsyncReadExt + Unpin>(
    r: &mut R,
) -> Result<(FrameHeader, Vec<u8>), String> {
    let mut hb = [0u8; HEADER_BYTES];
    r.read_exact(&mut hb).await.map_err(|e| format!("read: {e}"))?;
    let h = FrameHeader::decode(&hb, 0).map_err(|e| format!("bad frame: {e}"))?;
    let mut meta = vec![0u8; h.meta_len as usize];
    r.read_exact(&mut meta).await.map_err(|e| format!("read: {e}"))?;
    h.check_meta(&meta).map_err(|e| format!("bad frame: {e}"))?;
    Ok((h, meta))
}

/// Sets TCP_NODELAY and TCP_USER_TIMEOUT on a replication socket.
pub(crate) fn tune_socket(s: &tokio::net::TcpStream, idle: Duration) {
    let _ = s.set_nodelay(true);
    let _ = socket2::SockRef::from(s).set_tcp_user_timeout(Some(idle));
}

impl PeerLink {
    /// The peer connected to this node (it is reachable again), or a client waits for a copy
    /// (http.rs `push_copy`): the next dial goes ahead, whatever a failed dial said a moment
    /// ago.
    pub(crate) fn heard(&self) {
        self.down_until.set(None);
    }

    /// Whether a connection to the peer is open and answering (pings close one that a peer
    /// stops answering within `peer_idle_ms`).
    pub(crate) fn reachable(&self) -> bool {
        self.conns.borrow().iter().any(|c| !c.dead.get())
    }

    /// Opens a connection to the peer unless one is open (a peer that is away is no error):
    /// the peer learns that this node is up and resumes its catch-up toward it at once.
    pub(crate) async fn announce(&self) {
        if self.conns.borrow().iter().any(|c| !c.dead.get()) || self.connecting.get() > 0 {
            return;
        }
        // A failed announcement (the peer is not up yet) must not hold up the copies that
        // follow it: it does not mark the peer unreachable the way a failed dial does.
        if let Err(e) = self.dial_then(false).await {
            tracing::debug!("announcing this node to {}: {e}", self.conf.name);
        }
    }

    /// A connection to use now: an idle one, a new one while under the limit, else the least
    /// busy.
    async fn conn(&self) -> Result<Rc<Conn>, CopyError> {
        self.conn_for(None).await
    }

    /// A connection for a copy that core `want` of the peer will write: preferably one that
    /// core accepted (the copy is then read straight into the record's buffers there). Up to
    /// `connections_per_peer` connections, and as many again while fewer than that reach the
    /// wanted core (where a connection lands is the peer kernel's choice).
    async fn conn_for(&self, want: Option<u16>) -> Result<Rc<Conn>, CopyError> {
        self.conns.borrow_mut().retain(|c| !c.dead.get());
        let pick = {
            let conns = self.conns.borrow();
            let fits = |c: &&Rc<Conn>| want.is_none() || c.core == want;
            let idle = conns.iter().filter(fits).find(|c| c.busy.get() == 0).cloned();
            // The least busy that fits, else the least busy of all.
            let least = conns
                .iter()
                .filter(fits)
                .min_by_key(|c| c.busy.get())
                .or_else(|| conns.iter().min_by_key(|c| c.busy.get()))
                .cloned();
            let fitting = conns.iter().filter(fits).count();
            let limit = if fitting < self.max_conns { 2 * self.max_conns } else { self.max_conns };
            (idle, least, conns.len() + self.connecting.get() < limit)
        };
        match pick {
            (Some(c), _, _) => Ok(c),
            (None, Some(c), false) => Ok(c),
            (None, _, _) => self.dial().await,
        }
    }

    /// A new connection, unless the peer failed to answer a moment ago.
    async fn dial(&self) -> Result<Rc<Conn>, CopyError> {
        self.dial_then(true).await
    }

    /// [`PeerLink::dial`]; `mark_down`: a failure makes the next dials wait a moment.
    async fn dial_then(&self, mark_down: bool) -> Result<Rc<Conn>, CopyError> {
        if self.down_until.get().is_some_and(|t| std::time::Instant::now() < t) {
            return Err(CopyError::CoolingDown(self.conf.name.clone()));
        }
        self.connecting.set(self.connecting.get() + 1);
        let r = tokio::time::timeout(self.connect_timeout, self.connect()).await;
        self.connecting.set(self.connecting.get() - 1);
        let r = r
            .map_err(|_| DialError::from(format!("peer {}: connect timed out", self.conf.name)))
            .and_then(|r| r);
        // A refused connect (the peer's host answered at once: nothing listens yet) cost
        // nothing and says nothing about the next one, which may find the peer restarted: only
        // other failures make the next dials wait.
        if r.as_ref().is_err_and(|e| !e.refused) && mark_down {
            self.down_until
                .set(Some(std::time::Instant::now() + self.connect_timeout.min(Duration::from_secs(1))));
        }
        let c = r.map_err(|e| CopyError::Dial(e.message))?;
        self.conns.borrow_mut().push(c.clone());
        Ok(c)
    }

    async fn connect(&self) -> Result<Rc<Conn>, DialError> {
        let name = &self.conf.name;
        let s = tokio::net::TcpStream::connect(self.conf.address).await.map_err(|e| DialError {
            message: format!("peer {name}: connect to {}: {e}", self.conf.address),
            refused: e.kind() == std::io::ErrorKind::ConnectionRefused,
        })?;
        tune_socket(&s, self.idle);
        let (mut r, mut w) = s.into_split();
        let nonce_i = auth::nonce().map_err(|e| format!("nonce: {e}"))?;
        let hello = auth::Hello {
            name: self.id.node.clone(),
            datacenter: self.id.datacenter.clone(),
            nonce: nonce_i,
        }
        .encode();
        write_frame(&mut w, Kind::Hello, 0, &hello).await.map_err(|e| format!("peer {name}: {e}"))?;
        let (h, meta) = read_small_frame(&mut r).await.map_err(|e| format!("peer {name}: {e}"))?;
        match h.kind {
            Kind::Challenge => {}
            Kind::Refused => {
                let mut m = MetaReader::new(&meta);
                let why = m.str16().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                metrics::counter!("podstore_repl_handshake_failures_total", "peer" => name.clone())
                    .increment(1);
                return Err(DialError::from(format!("peer {name} refused us: {why}")));
            }
            k => return Err(DialError::from(format!("peer {name}: expected a challenge, got {k:?}"))),
        }
        let ch = auth::Challenge::decode(&meta).map_err(|e| format!("peer {name}: bad challenge: {e}"))?;
        let (their_name, nonce_a, mac_a) = (ch.name, ch.nonce, ch.mac);
        let genuine = auth::verify(
            &self.id.secret,
            Side::Acceptor,
            &nonce_i,
            &nonce_a,
            &self.id.node,
            &their_name,
            &mac_a,
        );
        if !genuine || their_name != *name {
            metrics::counter!("podstore_repl_handshake_failures_total", "peer" => name.clone()).increment(1);
            let _ = write_frame(
                &mut w,
                Kind::Refused,
                0,
                &MetaWriter::default().str16(b"authentication failed").0,
            )
            .await;
            return Err(DialError::from(format!(
                "peer {name} at {} failed authentication (answered as {their_name:?})",
                self.conf.address
            )));
        }
        let mac_i = auth::sign(&self.id.secret, Side::Initiator, &nonce_i, &nonce_a, &self.id.node, name);
        write_frame(&mut w, Kind::Auth, 0, &mac_i).await.map_err(|e| format!("peer {name}: {e}"))?;
        let (h, placed) = read_small_frame(&mut r).await.map_err(|e| format!("peer {name}: {e}"))?;
        if h.kind != Kind::AuthOk {
            metrics::counter!("podstore_repl_handshake_failures_total", "peer" => name.clone()).increment(1);
            return Err(DialError::from(format!("peer {name} did not accept our authentication")));
        }
        let placed =
            frame::Placement::decode(&placed).map_err(|e| format!("peer {name}: bad AUTH_OK: {e}"))?;
        let core = placed.as_ref().map(|p| p.accept_core);
        if let Some(p) = placed {
            *self.placement.borrow_mut() = Some(Rc::new(p));
        }
        let conn = Rc::new(Conn {
            writer: tokio::sync::Mutex::new(w),
            pending: RefCell::new(HashMap::new()),
            busy: Cell::new(0),
            dead: Cell::new(false),
            next_request: Cell::new(1),
            wrote: Cell::new(std::time::Instant::now()),
            core,
            peer: name.clone(),
        });
        tokio::task::spawn_local(read_acks(conn.clone(), r, self.idle, name.clone()));
        tokio::task::spawn_local(ping(Rc::downgrade(&conn), self.idle));
        metrics::counter!("podstore_repl_connections_total", "peer" => name.clone()).increment(1);
        Ok(conn)
    }

    /// Sends a copy of a PUT: `body` yields the object's bytes (exactly `len`) and then an
    /// end marker. Returns when the peer has answered, or the connection failed. `crcs`: the
    /// chunk CRC32Cs the record stores (a stored write's copy), which the peer then checks the
    /// data by instead of hashing it again.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_put(
        &self,
        version: Version,
        bucket: &str,
        key: &[u8],
        attrs: &podstore_engine::Attrs,
        len: u64,
        crcs: Option<Vec<u32>>,
        mut body: mpsc::Receiver<Piece>,
    ) -> CopyResult {
        let want = self.placement.borrow().clone().and_then(|p| {
            p.owner_core(&crate::names::ObjectName { bucket: bucket.into(), key: key.into() }.storage_key())
        });
        let conn = self.conn_for(want).await?;
        conn.busy.set(conn.busy.get() + 1);
        let _busy = Busy(conn.clone());
        let meta =
            WriteMeta { version, bucket: bucket.into(), key: key.into(), attrs: attrs.clone() }.encode(true);
        let (tx, rx) = oneshot::channel();
        {
            let mut w = conn.writer.lock().await;
            if conn.dead.get() {
                return Err(self.lost("connection lost"));
            }
            let req = conn.register(tx);
            let r: Result<(), String> = async {
                let mut head = Vec::with_capacity(HEADER_BYTES + meta.len());
                let flags = if crcs.is_some() { super::frame::PUT_CHUNK_CRCS } else { 0 };
                head.extend_from_slice(&FrameHeader::encode_flagged(Kind::Put, flags, req, &meta, len));
                head.extend_from_slice(&meta);
                // The header goes out with the body's first bytes, not as a packet of its own.
                if len > 0 { write_more(&w, &head).await } else { w.write_all(&head).await }
                    .map_err(|e| e.to_string())?;
                let mut sent = 0u64;
                let digest = loop {
                    match body.recv().await {
                        Some(Piece::Data(b)) => {
                            if sent + b.len() as u64 > len {
                                break None;
                            }
                            let n = b.len();
                            self.send_piece(&mut w, b, sent + n as u64 == len).await?;
                            conn.wrote.set(std::time::Instant::now());
                            sent += n as u64;
                        }
                        Some(Piece::Stored(c)) => {
                            if sent + c.len() as u64 > len {
                                break None;
                            }
                            let n = c.len();
                            self.send_piece(&mut w, c, sent + n as u64 == len).await?;
                            conn.wrote.set(std::time::Instant::now());
                            sent += n as u64;
                        }
                        Some(Piece::End(d)) => break d.filter(|_| sent == len),
                        None => break None,
                    }
                };
                if digest.is_none() && sent < len {
                    // The frame's length can't be met: closing is the only way to end it.
                    return Err("the body ended early; copy abandoned".into());
                }
                let t = Trailer { abort: digest.is_none(), digest: digest.unwrap_or_default() };
                let mut tail = t.encode().to_vec();
                if let Some(mut c) = crcs {
                    // Exactly as many as the length makes chunks, whatever the record said: a
                    // wrong list fails the peer's check, not the framing.
                    c.resize(podstore_engine::record::chunk_count(len) as usize, 0);
                    tail.extend_from_slice(&super::frame::encode_chunk_crcs(&c));
                }
                w.write_all(&tail).await.map_err(|e| e.to_string())
            }
            .await;
            if let Err(e) = r {
                let _ = w.shutdown().await;
                conn.fail_all(&e);
                return Err(self.lost(e));
            }
        }
        // The body is sent: closing its channel tells the feeder (which may be holding a
        // read-ahead permit) while the peer's acknowledgement is awaited.
        drop(body);
        copy_result(&self.conf.name, rx.await.unwrap_or_else(|_| Err(self.lost("connection lost"))))
    }

    /// The connection to the peer failed, as an error.
    fn lost(&self, why: impl std::fmt::Display) -> CopyError {
        CopyError::Lost { peer: self.conf.name.clone(), why: why.to_string() }
    }

    /// Writes one piece of a body: large pieces with a zero-copy send from the buffer they
    /// are in (kept alive until the kernel is done with it), others with a plain send. A
    /// body's `last` piece sent plainly waits in the kernel for the trailer written after it.
    async fn send_piece<T: AsRef<[u8]> + Clone + 'static>(
        &self,
        w: &mut OwnedWriteHalf,
        piece: T,
        last: bool,
    ) -> Result<(), String> {
        let len = piece.as_ref().len();
        match self.zc.usable(len) {
            Some(ring) => {
                let mut off = 0;
                while off < len {
                    let n = ring.send_zc(w.as_ref(), piece.clone(), off).await.map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Err("the connection closed".into());
                    }
                    off += n;
                }
                self.zc.judge(&self.conf.name);
            }
            None if last => write_more(w, piece.as_ref()).await.map_err(|e| e.to_string())?,
            None => w.write_all(piece.as_ref()).await.map_err(|e| e.to_string())?,
        }
        metrics::counter!("podstore_repl_sent_bytes_total", "peer" => self.conf.name.clone())
            .increment(len as u64);
        Ok(())
    }

    /// Sends a copy of a DELETE.
    pub async fn send_delete(&self, version: Version, bucket: &str, key: &[u8]) -> CopyResult {
        let meta = WriteMeta { version, bucket: bucket.into(), key: key.into(), attrs: Default::default() }
            .encode(false);
        copy_result(&self.conf.name, self.request(Kind::Delete, &meta).await)
    }

    /// Asks the peer to push its newest write of `key` (an engine key) here; Stored once the
    /// copy is durable here, Newer if the peer has nothing newer to send.
    pub async fn pull(&self, key: &[u8]) -> CopyResult {
        let (bucket, k) = crate::names::split_storage_key(key).ok_or(CopyError::local(NO_BUCKET))?;
        copy_result(
            &self.conf.name,
            self.request(Kind::Pull, &MetaWriter::default().str8(bucket).str16(k).0).await,
        )
    }

    /// Sends a frame without data and waits for the peer's answer to it.
    pub async fn request(&self, kind: Kind, meta: &[u8]) -> Answer {
        let conn = self.conn().await?;
        conn.busy.set(conn.busy.get() + 1);
        let _busy = Busy(conn.clone());
        let (tx, rx) = oneshot::channel();
        {
            let mut w = conn.writer.lock().await;
            if conn.dead.get() {
                return Err(self.lost("connection lost"));
            }
            let req = conn.register(tx);
            if let Err(e) = write_frame(&mut w, kind, req, meta).await {
                conn.fail_all(&e.to_string());
                return Err(self.lost(e));
            }
        }
        rx.await.unwrap_or_else(|_| Err(self.lost("connection lost")))
    }
}

/// Reads acknowledgements until the connection fails or stays silent too long.
async fn read_acks(conn: Rc<Conn>, mut r: OwnedReadHalf, idle: Duration, peer: String) {
    let why = loop {
        let frame = match tokio::time::timeout(idle, read_small_frame(&mut r)).await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => break e,
            Err(_) if conn.wrote.get().elapsed() < idle => continue,
            Err(_) => break format!("no answer for {} ms", idle.as_millis()),
        };
        match frame.0.kind {
            Kind::Ack | Kind::Digests | Kind::Keys => {
                if let Some(tx) = conn.pending.borrow_mut().remove(&frame.0.request) {
                    let _ = tx.send(Ok((frame.0.kind, frame.1)));
                }
            }
            Kind::Pong => {}
            k => break format!("unexpected {k:?} frame"),
        }
    };
    tracing::info!("replication link to {peer} closed: {why}");
    conn.fail_all(&why);
}

/// Pings an idle connection often enough that a live peer's pongs keep it open.
async fn ping(conn: std::rc::Weak<Conn>, idle: Duration) {
    let mut tick = tokio::time::interval(idle / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(c) = conn.upgrade() else { return };
        if c.dead.get() {
            return;
        }
        // A busy connection is being written to; its acks or the write itself show liveness.
        let guard = c.writer.try_lock();
        let failed = match guard {
            Ok(mut w) => write_frame(&mut w, Kind::Ping, 0, &[]).await.is_err(),
            Err(_) => false,
        };
        if failed {
            c.fail_all("ping failed");
            return;
        }
    }
}

/// Writes all of `buf` flagged `MSG_MORE`: the kernel keeps it to go out with what the
/// connection writes next (a frame's header with its body's first bytes, a body's last bytes
/// with its trailer) instead of as a packet of its own. The next plain write sends it, so
/// every caller writes again at once (or closes the connection).
async fn write_more(w: &OwnedWriteHalf, mut buf: &[u8]) -> std::io::Result<()> {
    let s: &tokio::net::TcpStream = w.as_ref();
    while !buf.is_empty() {
        s.writable().await?;
        let sent = s.try_io(tokio::io::Interest::WRITABLE, || {
            socket2::SockRef::from(s).send_with_flags(buf, libc::MSG_MORE | libc::MSG_NOSIGNAL)
        });
        match sent {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

const NO_BUCKET: &str = "a stored key without a bucket";

/// Splits an engine key `bucket/key`.
fn split(storage_key: &[u8]) -> Option<(String, Vec<u8>)> {
    let (bucket, key) = crate::names::split_storage_key(storage_key)?;
    Some((std::str::from_utf8(bucket).ok()?.to_string(), key.to_vec()))
}

/// Sends a stored write (an object streamed from its verified reader, or a tombstone) to a
/// peer. None: nothing to send. `hold` is dropped once the body has been sent.
pub async fn send_item(
    link: &PeerLink,
    item: Option<CopyItem<AnyIo>>,
    hold: Option<tokio::sync::OwnedSemaphorePermit>,
) -> CopyResult {
    match item {
        // Superseded here (the newer write has its own entry or its own origin), or a record
        // that no longer reads back (quarantined, repaired from a peer): nothing to send.
        None => Ok(crate::peer::frame::AckStatus::Newer),
        Some(CopyItem::Delete { key, version }) => {
            let (bucket, k) = split(&key).ok_or(CopyError::local(NO_BUCKET))?;
            link.send_delete(version, &bucket, &k).await
        }
        Some(CopyItem::Put(mut r)) => {
            let (bucket, k) = split(r.key()).ok_or(CopyError::local(NO_BUCKET))?;
            let (tx, rx) = mpsc::channel(4);
            let meta = r.meta.clone();
            let crcs = Some(r.chunk_crcs().to_vec());
            let feed = async move {
                loop {
                    match r.next_chunk().await {
                        Ok(Some(c)) => {
                            if tx.send(Piece::Stored(c)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            if tx.send(Piece::End(Some(meta.digest))).await.is_ok() {
                                tx.closed().await; // the link has sent the body
                            }
                            drop(hold);
                            return;
                        }
                        // Dropping the sender abandons the copy.
                        Err(e) => {
                            tracing::warn!("catch-up read failed: {e}");
                            return;
                        }
                    }
                }
            };
            let send = link.send_put(meta.version, &bucket, &k, &meta.attrs, meta.object_len, crcs, rx);
            let ((), r) = tokio::join!(feed, send);
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{copy_result, CopyError};
    use crate::peer::frame::{ack_meta, AckStatus, Kind};

    /// A peer's answer reads as the copy's outcome: a stored or newer ACK is a copy, a failed
    /// one carries the peer's reason, anything else is a protocol error naming the peer, and a
    /// lost connection stays what it was.
    #[test]
    fn a_peer_answer_reads_as_a_typed_outcome() {
        let ack = |st, why| Ok((Kind::Ack, ack_meta(st, why)));
        assert_eq!(copy_result("b", ack(AckStatus::Stored, "")), Ok(AckStatus::Stored));
        assert_eq!(copy_result("b", ack(AckStatus::Newer, "")), Ok(AckStatus::Newer));
        let failed = copy_result("b", ack(AckStatus::Failed, "disk full"));
        assert_eq!(failed, Err(CopyError::Failed("disk full".into())));
        assert_eq!(failed.expect_err("failed").reason(), "peer_failed");
        let odd = copy_result("b", Ok((Kind::Keys, Vec::new()))).expect_err("not an ACK");
        assert!(matches!(&odd, CopyError::Protocol { peer, .. } if peer == "b"), "{odd:?}");
        assert_eq!(odd.to_string(), "peer b: expected an ACK, got Keys");
        let lost = CopyError::Lost { peer: "b".into(), why: "connection lost".into() };
        assert_eq!(copy_result("b", Err(lost.clone())), Err(lost));
        let garbled = copy_result("b", Ok((Kind::Ack, vec![9]))).expect_err("garbled");
        assert_eq!(garbled.reason(), "protocol");
    }

    /// A short write flagged `MSG_MORE` stays in the kernel until the next plain write, which
    /// sends both: a frame's header travels with its body's first bytes (on a connection set
    /// up as the peer links are, `TCP_NODELAY`).
    #[tokio::test]
    async fn a_write_flagged_more_goes_out_with_the_next_plain_write() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (c, a) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
        let (c, (mut s, _)) = (c.expect("connect"), a.expect("accept"));
        c.set_nodelay(true).expect("nodelay");
        let (_r, mut w) = c.into_split();
        super::write_more(&w, b"header").await.expect("write");
        let mut buf = [0u8; 64];
        // (Linux sends held bytes by itself only with its probe timer, 200 ms at the least.)
        let early = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await;
        assert!(early.is_err(), "the flagged write went out alone: {early:?}");
        w.write_all(b"body").await.expect("write");
        let mut got = Vec::new();
        while got.len() < 10 {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"headerbody");
    }
}
