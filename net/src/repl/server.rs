//! The receiving side: peers connect to the replication port, authenticate, and send copies
//! of their writes, which are stored with the version they carry (the newest wins) and
//! acknowledged once durable.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use podstore_engine::{CopyCheck, Stamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, watch};

use crate::msg::{BodyMsg, PutOutcome};
use crate::peer::auth::{self, Side};
use crate::peer::frame::{
    self, AckStatus, FrameHeader, Kind, MetaReader, MetaWriter, Trailer, WriteMeta, HEADER_BYTES,
    TRAILER_BYTES,
};
use crate::peer::link::{read_small_frame, tune_socket};
use crate::service::{CopyTarget, Objects};
use crate::shared::{Shared, PIECES_IN_FLIGHT_MAX};

/// Largest piece a copy's body is read in.
const PIECE_BYTES: usize = 1 << 20;

/// Answers gathered into one write at most (an answer that is larger goes alone).
const ANSWER_BATCH_BYTES: usize = 64 << 10;

/// The most a body's reader waits to have queued before it is woken (see [`BodyLowWater`]).
const BODY_LOWAT_MAX: usize = 512 << 10;

/// A body's reader is woken only once a good part of what is still owed has arrived
/// (`SO_RCVLOWAT`), not at every arriving segment: each wake-up costs the sending core a
/// cross-core wake and the receiving core an epoll round and a `recv` (measured: the
/// receiving appliance's CPU per GiB 0.15-0.16 -> 0.12-0.14 s, the drain 8-15% faster). The
/// mark is never more than the body's bytes still to come (the peer owes them; a mark above
/// them would wait for bytes that never come), nor more than a quarter of the receive buffer
/// (a larger one makes Linux grow the buffer and clamp the advertised window to the mark,
/// which a long-distance link would feel), and it is back at 1 before the trailer is read.
struct BodyLowWater {
    cap: usize,
    set: usize,
}

impl BodyLowWater {
    fn new(r: &OwnedReadHalf) -> Self {
        let buffer = socket2::SockRef::from(r.as_ref()).recv_buffer_size().unwrap_or(0);
        BodyLowWater { cap: (buffer / 4).min(BODY_LOWAT_MAX), set: 1 }
    }

    /// Before a read of the body, `left` bytes of it still to come.
    fn before_read(&mut self, r: &OwnedReadHalf, left: u64) -> Result<(), String> {
        let want = (left.min(self.cap as u64) as usize).max(1);
        if want == self.set {
            return Ok(());
        }
        match podstore_disks::set_recv_lowat(r.as_ref(), want) {
            Ok(()) => self.set = want,
            // A mark that can't be lowered would wait for bytes that never come.
            Err(e) if want < self.set => return Err(format!("SO_RCVLOWAT: {e}")),
            // One that can't be raised leaves the reader woken more often, nothing worse.
            Err(_) => {}
        }
        Ok(())
    }

    /// After the body: the mark back at 1, or the connection can't be read on (the frames
    /// after the body may be shorter than the mark).
    fn done(self, r: &OwnedReadHalf) -> Result<(), String> {
        if self.set == 1 {
            return Ok(());
        }
        podstore_disks::set_recv_lowat(r.as_ref(), 1).map_err(|e| format!("SO_RCVLOWAT: {e}"))
    }
}

thread_local! {
    /// How long a read of a frame's part may wait (three times `peer_idle_ms`, set when a
    /// connection starts; the config is the node's, so every connection agrees). A peer cut
    /// off mid-frame (a partition drops its packets and its FIN) must not keep a
    /// half-received copy, and the key lock its writer holds, forever.
    static FRAME_READ_TIMEOUT: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::from_secs(30)) };
}

/// A read of part of a frame, bounded by the frame read timeout.
async fn timed<T>(f: impl std::future::Future<Output = std::io::Result<T>>) -> Result<T, String> {
    let limit = FRAME_READ_TIMEOUT.with(|t| t.get());
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(|e| format!("read: {e}")),
        Err(_) => Err(format!("the peer sent nothing for {} ms in the middle of a frame", limit.as_millis())),
    }
}

fn refused(reason: &'static str) {
    metrics::counter!("podstore_repl_refused_total", "reason" => reason).increment(1);
}

/// Accepts peer connections until shutdown.
pub async fn accept_loop(
    core: usize,
    objects: Rc<Objects>,
    listener: std::net::TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    let what = format!("core {core}: replication");
    crate::accept::accept_each(&what, listener, shutdown.clone(), |stream, from| {
        let (objects, stop) = (objects.clone(), shutdown.clone());
        tokio::task::spawn_local(async move {
            if let Err(e) = serve_peer(objects, stream, stop, core).await {
                tracing::info!("replication connection from {from} closed: {e}");
            }
        });
    })
    .await;
}

async fn send_frame(out: &mpsc::Sender<Vec<u8>>, kind: Kind, request: u64, meta: &[u8]) {
    let _ = out.send(frame::small_frame(kind, request, meta)).await;
}

/// This node's placement as AUTH_OK tells it (see `frame::Placement`).
fn placement(shared: &Shared, core: usize) -> frame::Placement {
    let layout = shared.layout.load();
    let disks = layout
        .placement
        .iter()
        .filter_map(|c| {
            let owner = *layout.shard_core.get(&c.shard_id)?;
            Some(frame::PlacedDisk { shard_id: c.shard_id, weight: c.weight, core: owner as u16 })
        })
        .take(frame::PLACEMENT_DISKS_MAX)
        .collect();
    frame::Placement { accept_core: core as u16, disks }
}

/// Authenticates the initiator; returns its name.
async fn handshake(
    shared: &Shared,
    stream: &mut tokio::net::TcpStream,
    core: usize,
) -> Result<String, String> {
    let cfg = shared.cfg();
    let repl = cfg.replication.as_ref().ok_or("replication is not configured")?;
    let secret = shared.repl_secret.as_deref().ok_or("no secret")?;
    let refuse =
        |why: &str| frame::small_frame(Kind::Refused, 0, &MetaWriter::default().str16(why.as_bytes()).0);
    let (h, meta) = read_small_frame(stream).await.inspect_err(|_| refused("bad_hello"))?;
    if h.kind != Kind::Hello {
        refused("bad_hello");
        return Err(format!("expected HELLO, got {:?}", h.kind));
    }
    let hello = auth::Hello::decode(&meta).map_err(|e| {
        refused("bad_hello");
        format!("bad HELLO: {e}")
    })?;
    let (name, nonce_i) = (hello.name, hello.nonce);
    if !repl.peers.iter().any(|p| p.name == name) {
        refused("unknown_peer");
        let _ = stream.write_all(&refuse("not a member of this replica set")).await;
        return Err(format!("{name:?} is not a configured peer"));
    }
    let nonce_a = auth::nonce().map_err(|e| e.to_string())?;
    let mac_a = auth::sign(secret, Side::Acceptor, &nonce_i, &nonce_a, &name, &shared.cfg().node_id);
    let challenge = auth::Challenge {
        name: shared.cfg().node_id.clone(),
        datacenter: repl.datacenter.clone(),
        nonce: nonce_a,
        mac: mac_a,
    }
    .encode();
    stream.write_all(&frame::small_frame(Kind::Challenge, 0, &challenge)).await.map_err(|e| e.to_string())?;
    let (h, mac_i) = read_small_frame(stream).await?;
    if h.kind != Kind::Auth
        || !auth::verify(secret, Side::Initiator, &nonce_i, &nonce_a, &name, &shared.cfg().node_id, &mac_i)
    {
        refused("bad_auth");
        let _ = stream.write_all(&refuse("authentication failed")).await;
        return Err(format!("{name:?} failed authentication"));
    }
    let placed = placement(shared, core).encode();
    stream.write_all(&frame::small_frame(Kind::AuthOk, 0, &placed)).await.map_err(|e| e.to_string())?;
    Ok(name)
}

async fn serve_peer(
    objects: Rc<Objects>,
    mut stream: tokio::net::TcpStream,
    mut shutdown: watch::Receiver<bool>,
    core: usize,
) -> Result<(), String> {
    let shared = &objects.shared;
    let repl = shared.cfg().replication.clone().ok_or("replication is not configured")?;
    let idle = Duration::from_millis(repl.peer_idle_ms);
    FRAME_READ_TIMEOUT.with(|t| t.set(idle * 3));
    tune_socket(&stream, idle);
    let peer = tokio::time::timeout(
        Duration::from_millis(repl.connect_timeout_ms),
        handshake(shared, &mut stream, core),
    )
    .await
    .map_err(|_| {
        refused("handshake_timeout");
        "handshake timed out".to_string()
    })??;
    tracing::info!("replication: {peer} connected");
    if let Some(p) = repl.peers.iter().position(|p| p.name == peer).and_then(|i| shared.catch_up.get(i)) {
        p.peer_heard();
    }
    let (mut r, mut w) = stream.into_split();
    // One writer task sends every answer (acks finish out of order). The answers ready at the
    // same moment (a group commit completes several copies at once) go out in one write: each
    // send costs the receiving core a pass through both TCP stacks (on veth, the peer's too).
    let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    let writer = tokio::task::spawn_local(async move {
        while let Some(mut batch) = out_rx.recv().await {
            while batch.len() < ANSWER_BATCH_BYTES {
                match out_rx.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if w.write_all(&batch).await.is_err() {
                return;
            }
        }
    });
    let r = async {
        loop {
            let mut hb = [0u8; HEADER_BYTES];
            tokio::select! {
                x = tokio::time::timeout(idle, r.read_exact(&mut hb)) => match x {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(format!("read: {e}")),
                    Err(_) => return Err(format!("{peer}: silent for {} ms", idle.as_millis())),
                },
                _ = shutdown.changed() => return Ok(()),
            }
            let h = FrameHeader::decode(&hb, shared.cfg().limits.object_bytes_max)
                .map_err(|e| format!("bad frame: {e}"))?;
            let mut meta = vec![0u8; h.meta_len as usize];
            timed(r.read_exact(&mut meta)).await?;
            h.check_meta(&meta).map_err(|e| format!("bad frame: {e}"))?;
            match h.kind {
                Kind::Ping => send_frame(&out, Kind::Pong, 0, &[]).await,
                Kind::Put => receive_put(&objects, &peer, &h, &meta, &mut r, &out).await?,
                Kind::Delete => receive_delete(&objects, &h, &meta, &out).await?,
                Kind::DigestsReq | Kind::KeysReq | Kind::Pull => {
                    let (objects, out, peer) = (objects.clone(), out.clone(), peer.clone());
                    tokio::task::spawn_local(async move {
                        let answer = answer_request(&objects, &peer, &h, &meta).await;
                        let (kind, meta) =
                            answer.unwrap_or_else(|e| (Kind::Ack, frame::ack_meta(AckStatus::Failed, &e)));
                        let _ = out.send(frame::small_frame(kind, h.request, &meta)).await;
                    });
                }
                k => return Err(format!("unexpected {k:?} frame")),
            }
        }
    }
    .await;
    drop(out);
    let _ = writer.await;
    r
}

fn ack(request: u64, status: AckStatus, message: &str) -> Vec<u8> {
    frame::small_frame(Kind::Ack, request, &frame::ack_meta(status, message))
}

/// Answers an anti-entropy request from `peer`.
async fn answer_request(
    objects: &Objects,
    peer: &str,
    h: &FrameHeader,
    meta: &[u8],
) -> Result<(Kind, Vec<u8>), String> {
    let shared = &objects.shared;
    if !shared.ready.load(Ordering::Relaxed) {
        return Err("the node is recovering".into());
    }
    match h.kind {
        Kind::DigestsReq => {
            let d = super::anti_entropy::node_digests(shared).await?;
            Ok((Kind::Digests, frame::digests_meta(&d)))
        }
        Kind::KeysReq => {
            let (bucket, after) = frame::decode_keys_req(meta).map_err(|e| e.to_string())?;
            let keys = super::anti_entropy::node_bucket_keys(shared, bucket as usize).await?;
            let from = if after.is_empty() { 0 } else { keys.partition_point(|k| k.key <= after) };
            Ok((Kind::Keys, frame::keys_meta(&keys[from..]).0))
        }
        Kind::Pull => {
            let mut r = MetaReader::new(meta);
            let bucket =
                String::from_utf8(r.str8().map_err(|e| e.to_string())?.to_vec()).map_err(|_| "bad bucket")?;
            let key = r.str16().map_err(|e| e.to_string())?.to_vec();
            r.end().map_err(|e| e.to_string())?;
            crate::names::validate_copied_name(&bucket, &key, crate::names::KEY_BYTES_MAX)
                .map_err(|crate::names::NameError::Invalid(m)| m.to_string())?;
            let idx = shared
                .cfg()
                .replication
                .as_ref()
                .and_then(|r| r.peers.iter().position(|p| p.name == peer))
                .ok_or("not a configured peer")?;
            let name = crate::names::ObjectName { bucket, key };
            let status =
                objects.push_copy(name.storage_key(), idx, false).await.map_err(|e| e.to_string())?;
            Ok((Kind::Ack, frame::ack_meta(status, "")))
        }
        k => Err(format!("{k:?} is not a request")),
    }
}

#[allow(clippy::too_many_arguments)]
async fn receive_put(
    objects: &Objects,
    peer: &str,
    h: &FrameHeader,
    meta: &[u8],
    r: &mut OwnedReadHalf,
    out: &mpsc::Sender<Vec<u8>>,
) -> Result<(), String> {
    let key_max = crate::names::KEY_BYTES_MAX;
    let wm = WriteMeta::decode(meta, true, key_max).map_err(|e| format!("bad PUT: {e}"))?;
    let len = h.data_len;
    // The shard is on this core: receive straight into the writer's aligned buffers.
    let target = match objects.copy_target(&wm.storage_key()) {
        Ok(CopyTarget::Here(s)) => return receive_put_direct(&s, peer, h, &wm, r, out).await,
        Ok(CopyTarget::Core { shard, owner }) => Ok((shard, owner)),
        Err(e) => Err(e.to_string()),
    };
    let (tx, rx) = mpsc::channel(PIECES_IN_FLIGHT_MAX);
    let mut reply_rx = None;
    let mut to_core = None;
    if let Ok(at) = target {
        metrics::counter!("podstore_repl_received_forwarded_total", "peer" => peer.to_string()).increment(1);
        let (key, ct) = (wm.storage_key(), wm.attrs.clone());
        if let Ok(answer) = objects.forward_copy(at, key, ct, len, wm.version, rx).await {
            reply_rx = Some(answer);
            to_core = Some(tx);
        }
    }
    // Read the body whatever happens to it: the stream must stay in step.
    let mut left = len;
    let mut low = BodyLowWater::new(r);
    while left > 0 {
        let n = (left as usize).min(PIECE_BYTES);
        // Read into spare capacity (no zeroing first).
        let mut b = BytesMut::with_capacity(n);
        while b.len() < n {
            low.before_read(r, left - b.len() as u64)?;
            let mut lim = (&mut *r).take((n - b.len()) as u64);
            if timed(lim.read_buf(&mut b)).await? == 0 {
                return Err("the peer closed mid-copy".into());
            }
        }
        left -= n as u64;
        metrics::counter!("podstore_repl_received_bytes_total", "peer" => peer.to_string())
            .increment(n as u64);
        if let Some(t) = to_core.as_ref() {
            if t.send(BodyMsg::Data(b.freeze())).await.is_err() {
                to_core = None;
            }
        }
    }
    low.done(r)?;
    let mut tb = [0u8; TRAILER_BYTES];
    timed(r.read_exact(&mut tb)).await?;
    let trailer = Trailer::decode(&tb).map_err(|e| format!("bad trailer: {e}"))?;
    // (The owning core hashes what it receives from here: the CRCs are read to stay in step.)
    read_chunk_crcs(r, h).await?;
    if let Some(t) = to_core.take() {
        let end = if trailer.abort {
            BodyMsg::End { ok: false, digest: None }
        } else {
            BodyMsg::End { ok: true, digest: Some(trailer.digest) }
        };
        let _ = t.send(end).await;
    }
    let out = out.clone();
    let request = h.request;
    tokio::task::spawn_local(async move {
        let answer = match (target, reply_rx) {
            (Err(e), _) => Err(e),
            (Ok(_), None) => Err("the node is shutting down".to_string()),
            (Ok(_), Some(rx)) => rx.await.map_err(|_| "the write was interrupted".to_string()),
        };
        let (status, msg) = match answer {
            Err(e) => (AckStatus::Failed, e),
            Ok(Ok(PutOutcome::Stored(_))) => (AckStatus::Stored, String::new()),
            Ok(Ok(PutOutcome::Superseded)) => (AckStatus::Newer, String::new()),
            Ok(Ok(PutOutcome::Aborted)) => (AckStatus::Failed, "aborted by the sender".to_string()),
            Ok(Err(e)) => (AckStatus::Failed, e.to_string()),
        };
        let b = ack(request, status, &msg);
        let _ = out.send(b).await;
    });
    Ok(())
}

/// The chunk CRCs after a PUT's trailer, when its header says they follow.
async fn read_chunk_crcs(r: &mut OwnedReadHalf, h: &FrameHeader) -> Result<Option<Vec<u32>>, String> {
    if h.flags & frame::PUT_CHUNK_CRCS == 0 {
        return Ok(None);
    }
    // Bounded: the data length was checked against the largest object.
    let mut b = vec![0u8; frame::chunk_crcs_bytes(h.data_len)];
    timed(r.read_exact(&mut b)).await?;
    frame::decode_chunk_crcs(&b).map(Some).map_err(|e| format!("bad chunk CRCs: {e}"))
}

/// Reads and drops `n` bytes (a body nothing will store), keeping the stream in step.
async fn discard(r: &mut OwnedReadHalf, mut n: u64, scratch: &mut Vec<u8>) -> Result<(), String> {
    scratch.resize(64 << 10, 0);
    while n > 0 {
        let k = (n as usize).min(scratch.len());
        timed(r.read_exact(&mut scratch[..k])).await?;
        n -= k as u64;
    }
    Ok(())
}

/// A PUT copy for a shard on this core: the body goes from the socket straight into the
/// record's aligned write buffers (no intermediate copy), and is committed only if it
/// matches the chunk CRCs that follow the trailer (computed here anyway, for the record's
/// footer: one pass over each byte) or, without them, the digest in the trailer.
async fn receive_put_direct(
    shard: &std::rc::Rc<podstore_engine::Shard<podstore_disks::AnyIo>>,
    peer: &str,
    h: &FrameHeader,
    wm: &WriteMeta,
    r: &mut OwnedReadHalf,
    out: &mpsc::Sender<Vec<u8>>,
) -> Result<(), String> {
    let len = h.data_len;
    let mut scratch = Vec::new();
    let mut failure: Option<String> = None;
    let mut writer =
        match shard.put_stamped(&wm.storage_key(), &wm.attrs, len, Stamp::Given(wm.version)).await {
            Ok(w) => w,
            Err(e) => {
                failure = Some(e.to_string());
                None
            }
        };
    if let Some(w) = writer.as_mut().filter(|_| h.flags & frame::PUT_CHUNK_CRCS != 0) {
        w.check_chunks_only();
    }
    let mut left = len;
    let mut low = BodyLowWater::new(r);
    while left > 0 {
        match writer.as_mut() {
            Some(w) if failure.is_none() => {
                low.before_read(r, left)?;
                let room = w.spare();
                let want = room.len().min(left as usize);
                let n = timed(r.read(&mut room[..want])).await?;
                if n == 0 {
                    return Err("the peer closed mid-copy".into());
                }
                left -= n as u64;
                if let Err(e) = w.commit_spare(n).await {
                    failure = Some(e.to_string());
                }
            }
            _ => {
                // (the mark down first: `discard` reads the rest in pieces)
                low.before_read(r, 1)?;
                discard(r, left, &mut scratch).await?;
                left = 0;
            }
        }
    }
    low.done(r)?;
    metrics::counter!("podstore_repl_received_bytes_total", "peer" => peer.to_string()).increment(len);
    metrics::counter!("podstore_repl_received_direct_total", "peer" => peer.to_string()).increment(1);
    let mut tb = [0u8; TRAILER_BYTES];
    timed(r.read_exact(&mut tb)).await?;
    let trailer = Trailer::decode(&tb).map_err(|e| format!("bad trailer: {e}"))?;
    let crcs = read_chunk_crcs(r, h).await?;
    let (out, request) = (out.clone(), h.request);
    // Waiting for the group fdatasync must not hold up the next frame.
    tokio::task::spawn_local(async move {
        let (status, msg) = match (failure, writer) {
            (Some(e), _) => (AckStatus::Failed, e),
            (None, None) => (AckStatus::Newer, String::new()),
            (None, Some(w)) if trailer.abort => {
                let _ = w.abort().await;
                (AckStatus::Failed, "aborted by the sender".to_string())
            }
            (None, Some(w)) => match w
                .finish_copy(match crcs {
                    Some(crcs) => CopyCheck::Chunks { digest: trailer.digest, crcs },
                    None => CopyCheck::Digest(trailer.digest),
                })
                .await
            {
                Ok(_) => (AckStatus::Stored, String::new()),
                Err(e) => (AckStatus::Failed, e.to_string()),
            },
        };
        let _ = out.send(ack(request, status, &msg)).await;
    });
    Ok(())
}

async fn receive_delete(
    objects: &Objects,
    h: &FrameHeader,
    meta: &[u8],
    out: &mpsc::Sender<Vec<u8>>,
) -> Result<(), String> {
    let wm = WriteMeta::decode(meta, false, crate::names::KEY_BYTES_MAX)
        .map_err(|e| format!("bad DELETE: {e}"))?;
    let answer = objects.delete_copy(wm.storage_key(), wm.version).await.map_err(|e| e.to_string());
    let out = out.clone();
    let request = h.request;
    tokio::task::spawn_local(async move {
        let answer = match answer {
            Err(e) => Err(e),
            Ok(rx) => rx.await.map_err(|_| "the delete was interrupted".to_string()),
        };
        let (status, msg) = match answer {
            Err(e) => (AckStatus::Failed, e),
            Ok(Ok(d)) if d.version.is_some() => (AckStatus::Stored, String::new()),
            Ok(Ok(_)) => (AckStatus::Newer, String::new()),
            Ok(Err(e)) => (AckStatus::Failed, e.to_string()),
        };
        let b = ack(request, status, &msg);
        let _ = out.send(b).await;
    });
    Ok(())
}
