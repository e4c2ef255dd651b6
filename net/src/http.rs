//! The data API over HTTP/1.1 (API.md): accepting connections on the core's `SO_REUSEPORT`
//! listener, the limits and timeouts, and the handlers for PUT, GET, HEAD and DELETE.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use md5::Digest;
use podstore_engine::{ObjectMeta, Stamp};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::body::RespBody;
use crate::msg::{BodyMsg, CoreMsg, GetStart, PutOutcome};
use crate::names::{parse_object_path, NameError, ObjectName};
use crate::peer::link::{CopyResult, Links, Piece};
use crate::range::RangeAnswer;
use crate::shared::{Shared, PIECES_IN_FLIGHT_MAX};

/// Largest read buffer of one connection (unless the header limit needs more).
const READ_BUF_MAX_BYTES: usize = 64 << 10;

/// PUT bodies up to this size are read whole before they go to the owning core.
const SMALL_BODY_MAX_BYTES: u64 = 64 << 10;

/// The `Server` header.
pub const SERVER: &str = concat!("podstore/", env!("CARGO_PKG_VERSION"));

/// Connections of one core, for a graceful drain.
#[derive(Debug, Default)]
pub struct Connections {
    open: Cell<usize>,
    closed: Notify,
    stop: RefCell<Vec<watch::Sender<bool>>>,
}

impl Connections {
    /// Asks every connection to finish its request and close, and waits up to `grace`.
    pub async fn drain(&self, grace: Duration) {
        for s in self.stop.borrow().iter() {
            let _ = s.send(true);
        }
        let deadline = Instant::now() + grace;
        while self.open.get() > 0 {
            let n = self.closed.notified();
            if tokio::time::timeout_at(deadline.into(), n).await.is_err() {
                tracing::warn!("{} connections still open after the drain period", self.open.get());
                return;
            }
        }
    }
}

/// Accepts connections until shutdown.
pub async fn accept_loop(
    core: usize,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
    conns: Rc<Connections>,
    links: Rc<Links>,
) {
    let listener =
        match listener.set_nonblocking(true).and_then(|_| tokio::net::TcpListener::from_std(listener)) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("core {core}: listener: {e}");
                return;
            }
        };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, _peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("core {core}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let limit = shared.cfg().limits.connections_max;
        if shared.connections.fetch_add(1, Ordering::Relaxed) >= limit {
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!("podstore_http_connections_refused_total").increment(1);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (stop_tx, stop_rx) = watch::channel(false);
        conns.stop.borrow_mut().retain(|s| !s.is_closed());
        conns.stop.borrow_mut().push(stop_tx);
        conns.open.set(conns.open.get() + 1);
        let (shared, conns, links) = (shared.clone(), conns.clone(), links.clone());
        tokio::task::spawn_local(async move {
            serve_connection(shared.clone(), links, stream, stop_rx).await;
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            conns.open.set(conns.open.get() - 1);
            conns.closed.notify_waiters();
        });
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    links: Rc<Links>,
    stream: tokio::net::TcpStream,
    mut stop: watch::Receiver<bool>,
) {
    let limits = &shared.cfg().limits;
    let mut b = hyper::server::conn::http1::Builder::new();
    // The header timeout is ours (below), not hyper's: hyper's also runs while a kept-alive
    // connection waits for its next request, which would close idle connections at the header
    // timeout (10 s) instead of the idle one (60 s; proxies keep upstream connections 60 s).
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(limits.headers_max)
        .max_header_size(limits.header_bytes_max)
        // hyper's read buffer grows to this: keep it small so thousands of connections (and
        // hundreds of streaming PUTs) cost little memory; bodies flow through in pieces.
        .max_buf_size(limits.header_bytes_max.max(READ_BUF_MAX_BYTES))
        .keep_alive(true);
    // A new connection is waiting for its first request's headers from the start.
    let now = Instant::now();
    let watch = Rc::new(ConnWatch {
        last_active: Cell::new(now),
        header_since: Cell::new(Some(now)),
        armed: Cell::new(false),
        head_request: Cell::new(false),
    });
    let in_flight = Rc::new(Cell::new(0usize));
    let svc = {
        let (shared, watch, in_flight) = (shared.clone(), watch.clone(), in_flight.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (shared, links) = (shared.clone(), links.clone());
            let (watch, in_flight) = (watch.clone(), in_flight.clone());
            in_flight.set(in_flight.get() + 1);
            watch.header_since.set(None);
            watch.head_request.set(req.method() == hyper::Method::HEAD);
            async move {
                let resp = handle(&shared, &links, req).await;
                in_flight.set(in_flight.get() - 1);
                watch.last_active.set(Instant::now());
                // The next bytes read start the next request's headers.
                watch.armed.set(true);
                Ok::<_, std::convert::Infallible>(resp)
            }
        })
    };
    let io = Watched {
        inner: stream,
        watch: watch.clone(),
        framing: crate::parse_error::Framing::new(SERVER),
        replacing: None,
    };
    let conn = b.serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    tokio::pin!(conn);
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let header = Duration::from_millis(limits.header_timeout_ms);
    let tick = (limits.idle_timeout_ms.min(limits.header_timeout_ms) / 4).clamp(50, 1000);
    let mut check = tokio::time::interval(Duration::from_millis(tick));
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection closed: {e}");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = check.tick() => {
                if in_flight.get() > 0 {
                    continue;
                }
                if watch.header_since.get().is_some_and(|t| t.elapsed() >= header) {
                    // Headers begun (or a new connection silent) for too long: a slow or
                    // stalled client; nothing of its request was acted on.
                    metrics::counter!("podstore_http_header_timeouts_total").increment(1);
                    return;
                }
                if watch.header_since.get().is_none() && watch.last_active.get().elapsed() >= idle && !stopping {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// What a connection's reads tell its timeouts (one connection, one core).
#[derive(Debug)]
struct ConnWatch {
    /// When the last response was handed to hyper.
    last_active: Cell<Instant>,
    /// Since when the connection has been sending a request's headers (its first byte after
    /// the previous response; for a new connection, since it was accepted).
    header_since: Cell<Option<Instant>>,
    /// The next bytes read start a request's headers.
    armed: Cell<bool>,
    /// Whether the request being answered is a HEAD (its answer has no body).
    head_request: Cell<bool>,
}

/// The connection's socket, noting when a request's first bytes arrive (`ConnWatch`), and
/// giving hyper's own error answers the form every podstore error has (parse_error.rs).
struct Watched {
    inner: tokio::net::TcpStream,
    watch: Rc<ConnWatch>,
    /// Where the bytes hyper writes fall: heads, bodies.
    framing: crate::parse_error::Framing,
    /// An error answer being written in place of hyper's bare one, and how much of it is out.
    replacing: Option<(Vec<u8>, usize)>,
}

impl Watched {
    /// Writes the replacing answer on; once it is all out, says hyper's `claimed` bytes were.
    fn poll_replacing(
        &mut self,
        cx: &mut std::task::Context<'_>,
        claimed: usize,
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        use tokio::io::AsyncWrite;
        let Some((bytes, done)) = self.replacing.as_mut() else { return Poll::Ready(Ok(claimed)) };
        while *done < bytes.len() {
            match std::pin::Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // hyper closes the connection after its error answer; nothing more is followed.
        self.replacing = None;
        self.framing.stop();
        Poll::Ready(Ok(claimed))
    }
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && self.watch.armed.replace(false) {
            self.watch.header_since.set(Some(Instant::now()));
        }
        r
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.replacing.is_none() {
            self.replacing = self.framing.replacement(buf).map(|b| (b, 0));
        }
        if self.replacing.is_some() {
            return self.poll_replacing(cx, buf.len());
        }
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = r {
            let head_request = self.watch.head_request.get();
            self.framing.advance(&buf[..n], head_request);
        }
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.replacing.is_none() {
            let first = bufs.iter().find(|b| !b.is_empty());
            self.replacing = first.and_then(|b| self.framing.replacement(b)).map(|b| (b, 0));
        }
        if self.replacing.is_some() {
            return self.poll_replacing(cx, bufs.iter().map(|b| b.len()).sum());
        }
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let std::task::Poll::Ready(Ok(mut n)) = r {
            let head_request = self.watch.head_request.get();
            for b in bufs {
                let k = n.min(b.len());
                self.framing.advance(&b[..k], head_request);
                n -= k;
                if n == 0 {
                    break;
                }
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An API error: status, code and message (API.md: JSON error bodies).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError { status, code, message: message.into() }
}

fn base_response(status: StatusCode) -> hyper::http::response::Builder {
    Response::builder().status(status).header(header::SERVER, SERVER)
}

impl ApiError {
    fn into_response(self, head: bool) -> Response<RespBody> {
        let body = serde_json::json!({ "error": self.code, "message": self.message }).to_string();
        let mut r = base_response(self.status)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len())
            .body(if head { RespBody::Empty } else { RespBody::full(body) })
            .expect("static headers are valid");
        if self.status == StatusCode::SERVICE_UNAVAILABLE || self.status == StatusCode::INSUFFICIENT_STORAGE {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        r
    }
}

fn engine_error(e: podstore_engine::Error) -> ApiError {
    use podstore_engine::Error as E;
    match e {
        E::TooLarge { len, max } => {
            err(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("{len} bytes exceeds {max}"))
        }
        E::Invalid(what) => err(StatusCode::BAD_REQUEST, "invalid_name", format!("invalid {what}")),
        E::NoSpace { .. } | E::NoShard => {
            err(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", "no disk has room")
        }
        E::Busy { shard, .. } => {
            metrics::counter!("podstore_disk_writes_refused_unfilled_total", "disk" => shard.to_string())
                .increment(1);
            err(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too much of the disk is reserved by writes whose bodies have not arrived; try again",
            )
        }
        E::BodyLength { .. } => {
            err(StatusCode::BAD_REQUEST, "bad_length", "the body does not match Content-Length")
        }
        E::Quarantined { .. } | E::Corrupt { .. } => err(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the stored copy failed its checksum and awaits repair",
        ),
        E::Fenced { .. } => {
            err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the disk holding this object is read-only")
        }
        E::Disk { .. } | E::Damaged { .. } | E::Stopped => {
            err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "disk error")
        }
    }
}

fn op_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "get",
        Method::HEAD => "head",
        Method::PUT => "put",
        Method::DELETE => "delete",
        _ => "other",
    }
}

async fn handle(shared: &Arc<Shared>, links: &Links, req: Request<Incoming>) -> Response<RespBody> {
    let started = Instant::now();
    let op = op_name(req.method());
    let head = req.method() == Method::HEAD;
    let resp = match route(shared, links, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(head),
    };
    let status = resp.status().as_u16().to_string();
    metrics::counter!("podstore_http_requests_total", "op" => op, "status" => status).increment(1);
    metrics::histogram!("podstore_http_request_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    resp
}

async fn route(
    shared: &Arc<Shared>,
    links: &Links,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, ApiError> {
    let path = req.uri().path().to_string();
    if let Some(node) = path.strip_prefix("/_/") {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(err(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "node endpoints are GET or HEAD",
            ));
        }
        let head = req.method() == Method::HEAD;
        return match node {
            "health" => Ok(text(StatusCode::OK, "ok\n", head)),
            "ready" if shared.ready.load(Ordering::Relaxed) && !shared.draining.load(Ordering::Relaxed) => {
                Ok(text(StatusCode::OK, "ready\n", head))
            }
            "ready" => Err(err(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "recovering or draining")),
            _ => Err(err(StatusCode::NOT_FOUND, "not_found", "no such node endpoint")),
        };
    }
    let name = parse_object_path(&path, crate::names::KEY_BYTES_MAX)
        .map_err(|NameError::Invalid(m)| err(StatusCode::BAD_REQUEST, "invalid_name", m))?;
    let method = req.method().clone();
    if !matches!(method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE) {
        let mut r = err(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET, HEAD, PUT or DELETE")
            .into_response(false);
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, PUT, DELETE"));
        return Ok(r);
    }
    if let Some(auth) = shared.auth.load().as_deref() {
        // Before anything looks at the disks: a refusal tells nothing about the object.
        let access = crate::auth::Access {
            method: method.as_str(),
            bucket: &name.bucket,
            key: &name.key,
            authorization: req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes()),
            query: req.uri().query(),
            now_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        if let Err(denied) = auth.check(&access) {
            return Ok(refused(denied, method == Method::HEAD));
        }
    }
    if matches!(method, Method::PUT | Method::DELETE) {
        copies(req.headers(), &shared.cfg())?;
    }
    if !shared.ready.load(Ordering::Relaxed) {
        return Err(err(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the node is still recovering its disks",
        ));
    }
    let key = name.storage_key();
    let mut uncertain = false;
    // Read before the disks are asked where the key is: a move that completes after this
    // (its count goes up as the source forgets the key) makes a read that found nothing
    // look again (`get`). Read after, a move could finish between the look and the count.
    let moves_before = shared.moves.load(Ordering::SeqCst);
    let (shard, owner) = match method {
        Method::PUT => match large_object_route(shared, &key, req.headers()) {
            Some(r) => r,
            None => write_route_wait(shared, &key).await?,
        },
        Method::DELETE => delete_route(shared, &key).await?,
        _ => {
            let r = read_route(shared, &key).await?;
            uncertain = r.2;
            (r.0, r.1)
        }
    };
    match method {
        Method::PUT => put(shared, links, owner, shard, name, key, req).await,
        Method::DELETE => {
            let h = req.headers().clone();
            delete(shared, links, owner, shard, name, key, &h).await
        }
        _ => {
            let head = method == Method::HEAD;
            get(shared, links, (owner, shard, uncertain, moves_before), key, req.headers(), head).await
        }
    }
}

/// A 401 (with the scheme to use) or 403.
fn refused(denied: crate::auth::Denied, head: bool) -> Response<RespBody> {
    use crate::auth::Denied;
    let (status, code, why) = match denied {
        Denied::Unauthorized(why) => (StatusCode::UNAUTHORIZED, "unauthorized", why),
        Denied::Forbidden(why) => (StatusCode::FORBIDDEN, "forbidden", why),
    };
    let mut r = err(status, code, why).into_response(head);
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"podstore\""));
    }
    r
}

fn text(status: StatusCode, body: &'static str, head: bool) -> Response<RespBody> {
    base_response(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::CONTENT_LENGTH, body.len())
        .body(if head { RespBody::Empty } else { RespBody::full(body) })
        .expect("static headers are valid")
}

/// X-Copies on a single node: any, quorum, all and 1 all mean this node.
fn copies(h: &HeaderMap, cfg: &crate::config::Config) -> Result<u32, ApiError> {
    let v = match h.get("x-copies") {
        None => cfg.default_copies.as_str(),
        Some(v) => {
            v.to_str().map_err(|_| err(StatusCode::BAD_REQUEST, "bad_copies", "X-Copies is not text"))?
        }
    };
    let n = cfg.replica_set_size();
    crate::config::parse_copies(v.trim(), n).ok_or_else(|| {
        err(
            StatusCode::BAD_REQUEST,
            "bad_copies",
            format!("X-Copies must be any, quorum, all or a number of appliances no larger than the replica set ({n})"),
        )
    })
}

/// [`write_route`], waiting (up to 2 s) for a disk that just stopped taking writes to be
/// marked spilled, so its keys' writes can go on to the next disk instead of failing.
pub(crate) async fn write_route_wait(shared: &Shared, key: &[u8]) -> Result<(u32, usize), ApiError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match write_route(shared, key) {
            Err(e) if Instant::now() < deadline && spill_pending(shared, key) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            r => return r,
        }
    }
}

/// With two tiers, an object larger than `tiering.fast_object_size_max_bytes` goes straight to
/// the capacity tier (capacity disks read and write large objects sequentially at their best;
/// the fast tier's room is for the many small ones): the disk of its capacity chain that takes
/// writes. None: the usual route (no fast tier, a small object, or no capacity disk takes
/// writes).
fn large_object_route(shared: &Shared, key: &[u8], h: &HeaderMap) -> Option<(u32, usize)> {
    let max = shared.cfg().tiering.fast_object_size_max_bytes;
    if max == 0 || !shared.routes.has_fast_tier() {
        return None;
    }
    let len: u64 = h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()?;
    if len <= max {
        return None;
    }
    let target = shared.routes.capacity_target(podstore_engine::index::fingerprint(key))?;
    Some((target, shared.core_of(target)?))
}

/// The disk that takes a key's tombstone: the one that takes its writes, or on a full node the
/// first open disk of its chain (a full disk keeps room for tombstones).
async fn delete_route(shared: &Shared, key: &[u8]) -> Result<(u32, usize), ApiError> {
    match write_route_wait(shared, key).await {
        Ok(r) => Ok(r),
        Err(e) => shared
            .routes
            .chain(podstore_engine::index::fingerprint(key))
            .into_iter()
            .find_map(|id| shared.core_of(id).map(|core| (id, core)))
            .ok_or(e),
    }
}

/// Whether the key's chain ends at a disk that takes no writes but is not marked spilled yet.
fn spill_pending(shared: &Shared, key: &[u8]) -> bool {
    let chain = shared.routes.chain(podstore_engine::index::fingerprint(key));
    chain.last().is_some_and(|&id| !shared.routes.is_writable(id) && !shared.routes.is_spilled(id))
}

/// The disk (and its core) that takes a key's writes: the first of its chain that takes
/// writes (route.rs); 507 when none does.
pub(crate) fn write_route(shared: &Shared, key: &[u8]) -> Result<(u32, usize), ApiError> {
    let fp = podstore_engine::index::fingerprint(key);
    let shard = shared.routes.write_target(fp).ok_or_else(|| {
        err(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", "no disk can take this object")
    })?;
    let owner = shared
        .core_of(shard)
        .ok_or_else(|| err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "disk not available"))?;
    Ok((shard, owner))
}

/// The disk (and its core) to read a key from: its home, or, when the home is spilled, the
/// disk of its chain holding the newest version (a tombstone's disk answers 404); with no
/// version anywhere, the disk that takes its writes (where read repair stores a copy). The
/// flag says nothing was found but a disk of the chain failed or did not answer: "not found"
/// is then not known.
pub(crate) async fn read_route(shared: &Shared, key: &[u8]) -> Result<(u32, usize, bool), ApiError> {
    let fp = podstore_engine::index::fingerprint(key);
    let chain = shared.routes.chain(fp);
    let core_of = |id: u32| shared.core_of(id);
    if let [home] = chain[..] {
        if shared.routes.is_failed(home) {
            return Err(err(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the disk holding this object failed",
            ));
        }
        let owner = core_of(home)
            .ok_or_else(|| err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "disk not available"))?;
        return Ok((home, owner, false));
    }
    let mut best: Option<(podstore_engine::Version, u32, usize)> = None;
    let mut uncertain = false;
    // Which disks of the chain have an entry for the key (their indexes, in memory; every disk
    // asked at once). Usually one does: it is read with no version compared.
    let mut asked = Vec::with_capacity(chain.len());
    let mut holders = Vec::with_capacity(chain.len());
    for id in chain {
        // A failed disk is skipped: its copies come from peers (read repair).
        let Some(owner) = core_of(id).filter(|_| !shared.routes.is_failed(id)) else {
            uncertain = true;
            continue;
        };
        match crate::shared::local_has(owner, id, key) {
            Some(true) => holders.push((id, owner)),
            Some(false) => {}
            None => {
                let (tx, rx) = oneshot::channel();
                send(shared, owner, CoreMsg::Has { shard: id, key: key.to_vec(), reply: tx }).await?;
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
    if let [(id, owner)] = holders[..] {
        return Ok((id, owner, false));
    }
    // Several (a key being moved, or written on two disks of its chain): the newest wins.
    let mut asked = Vec::with_capacity(holders.len());
    for (id, owner) in holders {
        let (tx, rx) = oneshot::channel();
        send(shared, owner, CoreMsg::Version { shard: id, key: key.to_vec(), reply: tx }).await?;
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
        Some((_, id, owner)) => Ok((id, owner, false)),
        None => write_route(shared, key).map(|(id, owner)| (id, owner, uncertain)),
    }
}

async fn send(shared: &Shared, core: usize, msg: CoreMsg) -> Result<(), ApiError> {
    shared.inboxes[core]
        .send(msg)
        .await
        .map_err(|_| err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the node is shutting down"))
}

fn gone() -> ApiError {
    err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the request was interrupted")
}

fn etag(meta_digest: &[u8; 16]) -> String {
    let hex: String = meta_digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

async fn put(
    shared: &Arc<Shared>,
    links: &Links,
    mut owner: usize,
    mut shard: u32,
    name: ObjectName,
    key: Vec<u8>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, ApiError> {
    let h = req.headers();
    if h.contains_key(header::TRANSFER_ENCODING) {
        return Err(err(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "chunked bodies are not accepted; send Content-Length",
        ));
    }
    let len: u64 = h
        .get(header::CONTENT_LENGTH)
        .ok_or_else(|| err(StatusCode::LENGTH_REQUIRED, "length_required", "Content-Length is required"))?
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| err(StatusCode::BAD_REQUEST, "bad_length", "Content-Length is not a number"))?;
    let max = shared.cfg().limits.object_bytes_max;
    if len > max {
        return Err(err(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("objects are at most {max} bytes"),
        ));
    }
    let content_type = match h.get(header::CONTENT_TYPE) {
        None => "application/octet-stream".to_string(),
        Some(v) => v
            .to_str()
            .map_err(|_| err(StatusCode::BAD_REQUEST, "bad_content_type", "Content-Type is not text"))?
            .to_string(),
    };
    if content_type.len() > podstore_engine::record::CONTENT_TYPE_MAX_BYTES {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "bad_content_type",
            "Content-Type is longer than 255 bytes",
        ));
    }
    let want_md5: Option<[u8; 16]> = match h.get("content-md5") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s.trim()).ok())
                .and_then(|d| <[u8; 16]>::try_from(d).ok())
                .ok_or_else(|| {
                    err(StatusCode::BAD_REQUEST, "bad_digest", "Content-MD5 is not base64 of 16 bytes")
                })?,
        ),
    };
    let want = copies(h, &shared.cfg())?;
    let peers = &links.peers;
    // In a replica set every copy gets the version stamped here; a lone node lets the shard
    // stamp it.
    let version = (!peers.is_empty()).then(|| shared.clock.now());
    let stamp = version.map_or(Stamp::Local, Stamp::Given);
    // A small body is read whole first and handed over in one message (fewer cross-core
    // wake-ups); a large one streams to the owning core as it arrives.
    let small = len <= SMALL_BODY_MAX_BYTES;
    let (tx, rx) = mpsc::channel(if small { 2 } else { PIECES_IN_FLIGHT_MAX });
    let (reply_tx, reply_rx) = oneshot::channel();
    let mut reply_rx = Some(reply_rx);
    let mut msg = Some(CoreMsg::Put {
        shard,
        key,
        content_type: content_type.clone(),
        len,
        stamp,
        body: rx,
        reply: reply_tx,
    });
    if !small {
        send(shared, owner, msg.take().expect("not sent yet")).await?;
    }
    // Copies to peers stream beside the local write; each reports into `copies_rx`.
    let (copies_tx, copies_rx) = mpsc::channel::<PeerCopy>(peers.len().max(1));
    let mut to_peers: Vec<Option<mpsc::Sender<Piece>>> = Vec::new();
    if let Some(v) = version {
        for (i, p) in peers.iter().enumerate() {
            let (ptx, prx) = mpsc::channel(PEER_PIECES_MAX);
            let (p, ct, copies_tx, bucket, skey) =
                (p.clone(), content_type.clone(), copies_tx.clone(), name.bucket.clone(), name.key.clone());
            tokio::task::spawn_local(async move {
                let r = p.send_put(v, &bucket, &skey, &ct, len, None, prx).await;
                note_copy(&p.conf.name, "put", &r);
                let _ = copies_tx.send((i, r)).await;
            });
            to_peers.push(Some(ptx));
        }
    }
    drop(copies_tx);
    let mut hash = version.map(|_| xxhash_rust::xxh3::Xxh3::new());
    let stall = Duration::from_millis(shared.cfg().limits.copy_timeout_ms);
    let mut whole = if small { Some(Vec::with_capacity(len as usize)) } else { None };
    let mut small_outcome = None;
    let mut body = req.into_body();
    let mut md5 = want_md5.map(|_| md5::Md5::new());
    let mut received = 0u64;
    let limits = &shared.cfg().limits;
    let window = Duration::from_millis(limits.body_progress_timeout_ms);
    let mut window_end = Instant::now() + window;
    let mut window_bytes = 0u64;
    let mut failed = None;
    while received < len {
        // A core that gives up on the write (a disk full, fenced, or too much reserved and
        // unfilled) closes the body's channel: its answer goes out now, not when the body
        // comes (a client that never sends it would otherwise wait for the body timeout).
        let next = tokio::select! {
            f = tokio::time::timeout_at(window_end.into(), body.frame()) => f,
            _ = tx.closed(), if whole.is_none() => break,
        };
        let frame = match next {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => {
                failed = Some(format!("body: {e}"));
                break;
            }
            Ok(None) => {
                failed = Some("the body ended early".into());
                break;
            }
            Err(_) => {
                if window_bytes < limits.body_progress_bytes {
                    failed = Some("the body is too slow".into());
                    break;
                }
                window_end = Instant::now() + window;
                window_bytes = 0;
                continue;
            }
        };
        let Ok(data) = frame.into_data() else { continue };
        received += data.len() as u64;
        window_bytes += data.len() as u64;
        metrics::counter!("podstore_http_received_bytes_total").increment(data.len() as u64);
        if let Some(m) = md5.as_mut() {
            m.update(&data);
        }
        if let Some(hs) = hash.as_mut() {
            hs.update(&data);
        }
        for slot in to_peers.iter_mut() {
            feed_peer(slot, Piece::Data(data.clone()), stall).await;
        }
        if let Some(w) = whole.as_mut() {
            w.extend_from_slice(&data);
        } else if tx.send(BodyMsg::Data(data)).await.is_err() {
            break; // the core gave up (disk full, fenced...): its reply says why
        }
    }
    let complete = failed.is_none() && received == len;
    let digest_ok = match (md5, want_md5) {
        (Some(m), Some(want)) => m.finalize()[..] == want[..],
        _ => true,
    };
    let digest = hash.map(|h| h.digest128().to_le_bytes());
    for slot in to_peers.iter_mut() {
        feed_peer(slot, Piece::End(digest.filter(|_| complete && digest_ok)), stall).await;
    }
    drop(to_peers);
    if let Some(w) = whole {
        if !(complete && digest_ok) {
            return Err(match failed {
                Some(why) => err(StatusCode::BAD_REQUEST, "incomplete_body", why),
                None => err(
                    StatusCode::BAD_REQUEST,
                    "bad_digest",
                    "the body does not match Content-MD5; nothing was stored",
                ),
            });
        }
        let w = Bytes::from(w);
        // Room for both was made when the channel was created.
        let _ = tx.try_send(BodyMsg::Data(w.clone()));
        let _ = tx.try_send(BodyMsg::End { ok: true, digest: None });
        drop(tx);
        send(shared, owner, msg.take().expect("not sent yet")).await?;
        // A disk that ran out of room just now is marked spilled by its core: the body is
        // still here, so it goes to the next disk of the key's chain instead of a 507.
        let mut got = reply_rx.take().expect("not awaited yet").await.map_err(|_| gone())?;
        for _ in 0..3 {
            if !matches!(got, Err(podstore_engine::Error::NoSpace { .. })) {
                break;
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while !shared.routes.is_spilled(shard) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let Ok((next, next_owner)) = write_route_wait(shared, &name.storage_key()).await else { break };
            if next == shard {
                break;
            }
            let (tx2, rx2) = mpsc::channel(2);
            let _ = tx2.try_send(BodyMsg::Data(w.clone()));
            let _ = tx2.try_send(BodyMsg::End { ok: true, digest: None });
            let (reply2, rx_reply2) = oneshot::channel();
            let again = CoreMsg::Put {
                shard: next,
                key: name.storage_key(),
                content_type: content_type.clone(),
                len,
                stamp,
                body: rx2,
                reply: reply2,
            };
            send(shared, next_owner, again).await?;
            (shard, owner) = (next, next_owner);
            got = rx_reply2.await.map_err(|_| gone())?;
        }
        small_outcome = Some(got);
    } else {
        let _ = tx.send(BodyMsg::End { ok: complete && digest_ok, digest: None }).await;
        drop(tx);
    }
    let outcome = match small_outcome {
        Some(o) => o,
        None => reply_rx.take().expect("not awaited yet").await.map_err(|_| gone())?,
    };
    let outcome = outcome.map_err(engine_error)?;
    if let Some(why) = failed {
        return Err(err(StatusCode::BAD_REQUEST, "incomplete_body", why));
    }
    if !digest_ok {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "bad_digest",
            "the body does not match Content-MD5; nothing was stored",
        ));
    }
    let (etag_digest, seq) = match outcome {
        PutOutcome::Stored(done) => (done.digest, Some(done.seq)),
        // A newer write of the key won on this appliance; this one's content is still known.
        PutOutcome::Superseded => (digest.ok_or_else(gone)?, None),
        PutOutcome::Aborted => return Err(gone()),
    };
    let written = collect_copies(shared, (owner, shard, seq), &name.storage_key(), want, copies_rx).await?;
    Ok(base_response(StatusCode::CREATED)
        .header(header::ETAG, etag(&etag_digest))
        .header("x-copies-written", written)
        .header(header::CONTENT_LENGTH, 0)
        .body(RespBody::Empty)
        .expect("valid headers"))
}

/// Pieces of a body queued for one peer.
const PEER_PIECES_MAX: usize = 16;

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
        tracing::warn!("copy of a {op} to {peer} failed: {e}");
    }
}

/// A peer's answer about one copy, with the peer's index in the config.
type PeerCopy = (usize, CopyResult);

/// Tries of a failed copy a client is waiting for (sent again from the stored record).
const COPY_RETRIES_MAX: u32 = 4;
/// Pause before the first retry of a failed copy; each next one waits twice as long.
const COPY_RETRY_PAUSE_MS: u64 = 50;

/// Counts durable copies (the local one included, already made) until `want` are reached;
/// `503 copies_unavailable` if they are not within the copy timeout. A copy that failed (a
/// connection that went stale while the peer was paused, a dial refused a moment ago) is sent
/// again from the stored record (`key`, the engine key) on a fresh connection while time is
/// left, up to [`COPY_RETRIES_MAX`] times: while every peer answers, `all` is met. Every peer
/// that confirms (now or later) has the local record `seq` removed from its backlog on the
/// owning core.
async fn collect_copies(
    shared: &Arc<Shared>,
    (owner, shard, seq): (usize, u32, Option<u64>),
    key: &[u8],
    want: u32,
    mut rx: mpsc::Receiver<PeerCopy>,
) -> Result<u32, ApiError> {
    let confirm = {
        let shared = shared.clone();
        move |peer: usize| {
            if let Some(seq) = seq {
                // If the inbox is full the entry stays and is sent again later: harmless.
                let _ = shared.inboxes[owner].try_send(CoreMsg::Confirm { shard, seq, peer });
            }
        }
    };
    let peers = shared.cfg().replication.as_ref().map_or(0, |r| r.peers.len());
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
                let (shared, key, again_tx) = (shared.clone(), key.to_vec(), again_tx.clone());
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(pause).await;
                    let r = push_copy(&shared, key, peer, true).await;
                    metrics::counter!("podstore_repl_copy_retries_total", "outcome" => if r.is_ok() { "ok" } else { "failed" })
                        .increment(1);
                    let _ = again_tx.send((peer, r)).await;
                });
            }
            Some((_, Err(_))) => {}
            None if Instant::now() < deadline && (first_open || retrying > 0) => {}
            None => {
                outcome = Err(err(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "copies_unavailable",
                    format!("{written} of the {want} copies asked for were written in time; the write may exist on some appliances"),
                ));
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

/// Asks the core holding `key`'s newest write (an engine key) to send it to peer `peer` (its
/// index in the config). `insist`: a client waits for this copy, so a dial that failed a
/// moment ago does not hold it back (the client's copy timeout bounds the wait).
pub(crate) async fn push_copy(shared: &Shared, key: Vec<u8>, peer: usize, insist: bool) -> CopyResult {
    let (shard, owner, _) = read_route(shared, &key).await.map_err(|e| e.message)?;
    let (tx, rx) = oneshot::channel();
    shared.inboxes[owner]
        .send(CoreMsg::Push { shard, key, peer, insist, reply: tx })
        .await
        .map_err(|_| "shutting down")?;
    rx.await.map_err(|_| "the push was interrupted".to_string())?
}

async fn delete(
    shared: &Arc<Shared>,
    links: &Links,
    owner: usize,
    shard: u32,
    name: ObjectName,
    key: Vec<u8>,
    h: &HeaderMap,
) -> Result<Response<RespBody>, ApiError> {
    let want = copies(h, &shared.cfg())?;
    let version = (!links.peers.is_empty()).then(|| shared.clock.now());
    let stamp = version.map_or(Stamp::Local, Stamp::Given);
    let (copies_tx, copies_rx) = mpsc::channel::<PeerCopy>(links.peers.len().max(1));
    if let Some(v) = version {
        for (i, p) in links.peers.iter().enumerate() {
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
    // In a replica set the tombstone is written even if this appliance lacks the key: a peer
    // may hold it, and the tombstone keeps older copies from coming back.
    // So does a node whose chain for the key is longer than its home: an older copy on another
    // disk of the chain must be shadowed.
    let chained = shared.routes.chain(podstore_engine::index::fingerprint(&key)).len() > 1;
    let always = version.is_some() || chained;
    send(shared, owner, CoreMsg::Delete { shard, key, stamp, always, reply: reply_tx }).await?;
    let done = reply_rx.await.map_err(|_| gone())?.map_err(engine_error)?;
    let written =
        collect_copies(shared, (owner, shard, done.seq), &name.storage_key(), want, copies_rx).await?;
    Ok(base_response(StatusCode::NO_CONTENT)
        .header("x-copies-written", written)
        .body(RespBody::Empty)
        .expect("valid headers"))
}

fn last_modified(meta: &ObjectMeta) -> std::time::SystemTime {
    // HTTP dates have second granularity: compare and send whole seconds.
    std::time::UNIX_EPOCH + Duration::from_secs(meta.created_ms / 1000)
}

fn etag_matches(list: &str, tag: &str) -> bool {
    list.split(',').map(str::trim).any(|t| t == "*" || t == tag || t.strip_prefix("W/") == Some(tag))
}

/// Asks the owning core for an object.
async fn get_local(
    shared: &Shared,
    owner: usize,
    shard: u32,
    key: &[u8],
    range: &Option<String>,
    head: bool,
) -> Result<Result<Option<GetStart>, podstore_engine::Error>, ApiError> {
    let (reply_tx, reply_rx) = oneshot::channel();
    let msg = CoreMsg::Get { shard, key: key.to_vec(), range: range.clone(), head, reply: reply_tx };
    send(shared, owner, msg).await?;
    reply_rx.await.map_err(|_| gone())
}

/// Read repair: the object is missing here (and not deleted) or its copy is damaged; ask the
/// peers, in turn, to push their newest write of it here. True once one did.
async fn read_repair(
    shared: &Shared,
    links: &Links,
    owner: usize,
    shard: u32,
    key: &[u8],
    damaged: bool,
) -> bool {
    if links.peers.is_empty() {
        return false;
    }
    if !damaged {
        let (tx, rx) = oneshot::channel();
        if send(shared, owner, CoreMsg::Deleted { shard, key: key.to_vec(), reply: tx }).await.is_err()
            || rx.await.unwrap_or(true)
        {
            return false;
        }
    }
    let limit = Duration::from_millis(shared.cfg().limits.copy_timeout_ms);
    for p in &links.peers {
        let r = tokio::time::timeout(limit, p.pull(key)).await;
        let stored = matches!(r, Ok(Ok(crate::peer::frame::AckStatus::Stored)));
        metrics::counter!("podstore_repl_read_repairs_total", "peer" => p.conf.name.clone(), "outcome" => if stored { "repaired" } else { "not_found" }).increment(1);
        if stored {
            return true;
        }
    }
    false
}

#[allow(clippy::too_many_arguments)]
async fn get(
    shared: &Shared,
    links: &Links,
    (mut owner, mut shard, mut uncertain, mut moves_before): (usize, u32, bool, u64),
    key: Vec<u8>,
    h: &HeaderMap,
    head: bool,
) -> Result<Response<RespBody>, ApiError> {
    let range = h.get(header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut answer = get_local(shared, owner, shard, &key, &range, head).await?;
    // A move between two disks (copy, then forget) that finished while the disks were asked
    // can hide the key from both looks: look again (route.rs, maintenance.rs).
    for _ in 0..4 {
        let now = shared.moves.load(Ordering::SeqCst);
        if !matches!(answer, Ok(None)) || now == moves_before {
            break;
        }
        moves_before = now;
        (shard, owner, uncertain) = read_route(shared, &key).await?;
        answer = get_local(shared, owner, shard, &key, &range, head).await?;
    }
    let damaged = matches!(
        answer,
        Err(podstore_engine::Error::Quarantined { .. } | podstore_engine::Error::Corrupt { .. })
    );
    if (damaged || matches!(answer, Ok(None)))
        && read_repair(shared, links, owner, shard, &key, damaged).await
    {
        answer = get_local(shared, owner, shard, &key, &range, head).await?;
    }
    let start = answer.map_err(engine_error)?.ok_or_else(|| {
        if uncertain {
            // A disk of the key's chain failed or did not answer: the object may be there.
            err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the disk that may hold this object failed")
        } else {
            err(StatusCode::NOT_FOUND, "not_found", "no such object")
        }
    })?;
    let meta = &start.meta;
    let tag = etag(&meta.digest);
    let modified = last_modified(meta);
    let lm = httpdate::fmt_http_date(modified);
    // Conditional requests (API.md): If-Match, then If-None-Match, then If-Modified-Since.
    if let Some(v) = h.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        if !etag_matches(v, &tag) {
            return Err(err(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "If-Match does not match",
            ));
        }
    }
    let not_modified = match h.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        Some(v) => etag_matches(v, &tag),
        None => h
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| modified <= since),
    };
    if not_modified {
        return Ok(base_response(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, tag)
            .header(header::LAST_MODIFIED, lm)
            .body(RespBody::Empty)
            .expect("valid headers"));
    }
    let len = meta.object_len;
    let mut b = base_response(StatusCode::OK)
        .header(header::ETAG, &tag)
        .header("x-podstore-version", meta.version.to_text())
        .header(header::LAST_MODIFIED, &lm)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&meta.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        );
    let (status, send_len) = match start.range {
        RangeAnswer::Whole => (StatusCode::OK, len),
        RangeAnswer::Part { start: a, end } => {
            b = b.header(header::CONTENT_RANGE, format!("bytes {a}-{}/{len}", end - 1));
            (StatusCode::PARTIAL_CONTENT, end - a)
        }
        RangeAnswer::Unsatisfiable => {
            let body = serde_json::json!({"error": "range_not_satisfiable", "message": "the range starts past the end"}).to_string();
            return Ok(base_response(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, body.len())
                .body(if head { RespBody::Empty } else { RespBody::full(body) })
                .expect("valid headers"));
        }
    };
    let body = if head || send_len == 0 {
        RespBody::Empty
    } else {
        metrics::counter!("podstore_http_sent_bytes_total").increment(send_len);
        RespBody::Stream { first: start.first, rx: start.body, remaining: send_len }
    };
    b.status(status)
        .header(header::CONTENT_LENGTH, send_len)
        .body(body)
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}
