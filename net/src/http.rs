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
use podstore_engine::ObjectMeta;
use tokio::sync::{watch, Notify};

use crate::body::{RespBody, SERVER};
use crate::names::{parse_object_path, NameError, ObjectName};
use crate::range::RangeAnswer;
use crate::service::{self, Objects, PutRequest};
use crate::shared::Shared;

/// Largest read buffer of one connection (unless the header limit needs more).
const READ_BUF_MAX_BYTES: usize = 64 << 10;

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
    objects: Rc<Objects>,
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
        let (shared, conns, objects) = (shared.clone(), conns.clone(), objects.clone());
        tokio::task::spawn_local(async move {
            serve_connection(shared.clone(), objects, stream, stop_rx).await;
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            conns.open.set(conns.open.get() - 1);
            conns.closed.notify_waiters();
        });
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    objects: Rc<Objects>,
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
        let (watch, in_flight) = (watch.clone(), in_flight.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let objects = objects.clone();
            let (watch, in_flight) = (watch.clone(), in_flight.clone());
            in_flight.set(in_flight.get() + 1);
            watch.header_since.set(None);
            watch.head_request.set(req.method() == hyper::Method::HEAD);
            async move {
                let resp = handle(&objects, req).await;
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

async fn handle(objects: &Objects, req: Request<Incoming>) -> Response<RespBody> {
    let started = Instant::now();
    let op = op_name(req.method());
    let head = req.method() == Method::HEAD;
    let resp = match route(objects, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(head),
    };
    let status = resp.status().as_u16().to_string();
    metrics::counter!("podstore_http_requests_total", "op" => op, "status" => status).increment(1);
    metrics::histogram!("podstore_http_request_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    resp
}

async fn route(objects: &Objects, req: Request<Incoming>) -> Result<Response<RespBody>, ApiError> {
    let shared = &objects.shared;
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
    match method {
        Method::PUT => put(objects, name, req).await,
        Method::DELETE => delete(objects, name, req.headers()).await,
        _ => get(objects, &name, req.headers(), method == Method::HEAD).await,
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

fn etag(meta_digest: &[u8; 16]) -> String {
    format!("\"{}\"", podstore_engine::hex(meta_digest))
}

fn last_modified(meta: &ObjectMeta) -> std::time::SystemTime {
    // HTTP dates have second granularity: compare and send whole seconds.
    std::time::UNIX_EPOCH + Duration::from_secs(meta.created_ms / 1000)
}

fn etag_matches(list: &str, tag: &str) -> bool {
    list.split(',').map(str::trim).any(|t| t == "*" || t == tag || t.strip_prefix("W/") == Some(tag))
}

impl From<service::Error> for ApiError {
    fn from(e: service::Error) -> ApiError {
        use service::Error as E;
        let message = e.to_string();
        match e {
            E::NotReady => err(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message),
            E::NoDisk => err(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", message),
            E::Unavailable(_) => err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
            E::IncompleteBody(_) => err(StatusCode::BAD_REQUEST, "incomplete_body", message),
            E::BadDigest => err(StatusCode::BAD_REQUEST, "bad_digest", message),
            E::CopiesUnavailable { .. } => {
                err(StatusCode::SERVICE_UNAVAILABLE, "copies_unavailable", message)
            }
            E::NotFound => err(StatusCode::NOT_FOUND, "not_found", message),
            E::Engine(e) => engine_error(e),
        }
    }
}

/// A request's body as the object service reads it: its data frames, with the limits of
/// `[limits]` on how slowly it may come (`body_progress_bytes` per
/// `body_progress_timeout_ms`).
struct HttpBody {
    body: Incoming,
    window: Duration,
    window_end: Instant,
    window_bytes: u64,
    progress_bytes: u64,
}

impl HttpBody {
    fn new(body: Incoming, limits: &crate::config::Limits) -> HttpBody {
        let window = Duration::from_millis(limits.body_progress_timeout_ms);
        HttpBody {
            body,
            window,
            window_end: Instant::now() + window,
            window_bytes: 0,
            progress_bytes: limits.body_progress_bytes,
        }
    }
}

impl service::BodySource for HttpBody {
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            match tokio::time::timeout_at(self.window_end.into(), self.body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    self.window_bytes += data.len() as u64;
                    metrics::counter!("podstore_http_received_bytes_total").increment(data.len() as u64);
                    return Some(Ok(data));
                }
                Ok(Some(Err(e))) => return Some(Err(format!("body: {e}"))),
                Ok(None) => return None,
                Err(_) => {
                    if self.window_bytes < self.progress_bytes {
                        return Some(Err("the body is too slow".into()));
                    }
                    self.window_end = Instant::now() + self.window;
                    self.window_bytes = 0;
                }
            }
        }
    }
}

/// PUT: the headers checked, the body handed to the object service as it arrives.
async fn put(
    objects: &Objects,
    name: ObjectName,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, ApiError> {
    let cfg = objects.shared.cfg();
    let h = req.headers();
    let copies = copies(h, &cfg)?;
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
    let max = cfg.limits.object_bytes_max;
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
    let md5: Option<[u8; 16]> = match h.get("content-md5") {
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
    let body = HttpBody::new(req.into_body(), &cfg.limits);
    let put = PutRequest { name, len, content_type, md5, copies };
    let written = objects.put(put, body).await?;
    Ok(base_response(StatusCode::CREATED)
        .header(header::ETAG, etag(&written.digest))
        .header("x-copies-written", written.copies)
        .header(header::CONTENT_LENGTH, 0)
        .body(RespBody::Empty)
        .expect("valid headers"))
}

async fn delete(objects: &Objects, name: ObjectName, h: &HeaderMap) -> Result<Response<RespBody>, ApiError> {
    let want = copies(h, &objects.shared.cfg())?;
    let written = objects.delete(&name, want).await?;
    Ok(base_response(StatusCode::NO_CONTENT)
        .header("x-copies-written", written.copies)
        .body(RespBody::Empty)
        .expect("valid headers"))
}

/// GET and HEAD: the object from the service, then the conditional headers and the range.
async fn get(
    objects: &Objects,
    name: &ObjectName,
    h: &HeaderMap,
    head: bool,
) -> Result<Response<RespBody>, ApiError> {
    let range = h.get(header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let start = objects.get(&name.storage_key(), range, head).await?;
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
