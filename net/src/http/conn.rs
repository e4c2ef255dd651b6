//! The data port's connections: each core's `SO_REUSEPORT` listener, hyper's HTTP/1.1 on each
//! connection with our limits and timeouts (headers, idle keep-alive, the connection count),
//! the answers to requests hyper can't parse (parse_error.rs), and the drain at shutdown.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::Request;
use tokio::sync::{watch, Notify};

use crate::body::SERVER;
use crate::service::Objects;
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

/// Which API a listener serves (the connections' limits and timeouts are the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// The native data API (docs/api.md).
    Data,
    /// The S3 API (`s3/`).
    S3,
}

/// Accepts connections until shutdown, up to `limits.connections_max` open at once (the
/// data and S3 ports together).
pub async fn accept_loop(
    core: usize,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    shutdown: watch::Receiver<bool>,
    conns: Rc<Connections>,
    objects: Rc<Objects>,
    front: Front,
) {
    let what = format!("core {core}: {}", if front == Front::Data { "data" } else { "S3" });
    crate::accept::accept_each(&what, listener, shutdown, |stream, _from| {
        let limit = shared.cfg().limits.connections_max;
        if shared.connections.fetch_add(1, Ordering::Relaxed) >= limit {
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!("podstore_http_connections_refused_total").increment(1);
            return;
        }
        let _ = stream.set_nodelay(true);
        let (stop_tx, stop_rx) = watch::channel(false);
        conns.stop.borrow_mut().retain(|s| !s.is_closed());
        conns.stop.borrow_mut().push(stop_tx);
        conns.open.set(conns.open.get() + 1);
        let (shared, conns, objects) = (shared.clone(), conns.clone(), objects.clone());
        tokio::task::spawn_local(async move {
            serve_connection(shared.clone(), objects, stream, stop_rx, front).await;
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            conns.open.set(conns.open.get() - 1);
            conns.closed.notify_waiters();
        });
    })
    .await;
}

async fn serve_connection(
    shared: Arc<Shared>,
    objects: Rc<Objects>,
    stream: tokio::net::TcpStream,
    mut stop: watch::Receiver<bool>,
    front: Front,
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
                let resp = match front {
                    Front::Data => super::handle(&objects, req).await,
                    Front::S3 => crate::s3::handle(&objects, req).await,
                };
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
