//! Bodies: a request's as the object service reads it (with the limits on how slowly it may
//! come), and responses' (empty, whole, or streamed from the core that reads the object).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::mpsc;

/// The `Server` header of every HTTP answer (data and admin ports).
pub const SERVER: &str = concat!("podstore/", env!("CARGO_PKG_VERSION"));

/// A write's body as its front end receives it: pieces in order, `None` at its end (an error
/// says why it stopped: the front end's own limits, such as a body too slow, included).
pub trait BodySource {
    fn next(&mut self) -> impl std::future::Future<Output = Option<Result<Bytes, String>>>;
}

/// A request's body as the object service reads it: its data frames, with the limits of
/// `[limits]` on how slowly it may come (`body_progress_bytes` per
/// `body_progress_timeout_ms`).
#[derive(Debug)]
pub struct RequestBody {
    body: Incoming,
    window: Duration,
    window_end: Instant,
    window_bytes: u64,
    progress_bytes: u64,
}

impl RequestBody {
    pub fn new(body: Incoming, limits: &crate::config::Limits) -> RequestBody {
        let window = Duration::from_millis(limits.body_progress_timeout_ms);
        RequestBody {
            body,
            window,
            window_end: Instant::now() + window,
            window_bytes: 0,
            progress_bytes: limits.body_progress_bytes,
        }
    }
}

impl BodySource for RequestBody {
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

/// A piece of a streamed object, or why the stream stopped early.
pub type Piece = Result<Bytes, String>;

/// The body of a response.
#[derive(Debug)]
pub enum RespBody {
    Empty,
    Full(Option<Bytes>),
    /// A first piece, then streamed pieces, with the exact total length.
    Stream {
        first: Option<Bytes>,
        /// None when the first piece is all there is.
        rx: Option<mpsc::Receiver<Piece>>,
        remaining: u64,
    },
}

/// A streamed body that ended before its length: the connection is closed, so the client
/// sees a truncated response, never wrong bytes.
#[derive(Debug, thiserror::Error)]
#[error("object stream failed: {0}")]
pub struct StreamError(pub String);

impl RespBody {
    pub fn full(b: impl Into<Bytes>) -> RespBody {
        RespBody::Full(Some(b.into()))
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        match &mut *self {
            RespBody::Empty => Poll::Ready(None),
            RespBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Stream { first, rx, remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let next = match (first.take(), rx) {
                    (Some(b), _) => Poll::Ready(Some(Ok(b))),
                    (None, Some(rx)) => rx.poll_recv(cx),
                    (None, None) => Poll::Ready(None),
                };
                match next {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Ok(b))) => {
                        if b.len() as u64 > *remaining {
                            return Poll::Ready(Some(Err(StreamError("more bytes than announced".into()))));
                        }
                        *remaining -= b.len() as u64;
                        Poll::Ready(Some(Ok(Frame::data(b))))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(StreamError(e)))),
                    Poll::Ready(None) => Poll::Ready(Some(Err(StreamError("reader stopped early".into())))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Empty => true,
            RespBody::Full(b) => b.is_none(),
            RespBody::Stream { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Empty => SizeHint::with_exact(0),
            RespBody::Full(b) => SizeHint::with_exact(b.as_ref().map(|b| b.len() as u64).unwrap_or(0)),
            RespBody::Stream { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}
