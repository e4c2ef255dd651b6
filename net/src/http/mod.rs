//! The data API over HTTP/1.1 (docs/api.md): the connections (`conn.rs`), the routing of a
//! request (the node endpoints, names, access keys) and the errors here, the object handlers
//! in `objects.rs`, bucket listings in `listing.rs`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::body::{RespBody, SERVER};
use crate::names::{parse_object_path, NameError};
use crate::service::{self, Objects};

mod conn;
mod listing;
mod objects;

pub use conn::{accept_loop, Connections, Front};

/// An API error: status, code and message (API.md: JSON error bodies).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

pub(super) fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError { status, code, message: message.into() }
}

pub(super) fn base_response(status: StatusCode) -> hyper::http::response::Builder {
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
        E::NamesUnavailable { shard, reason } => err(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("disk {shard} can't take part in listings: {reason}"),
        ),
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

pub(super) async fn handle(store: &Objects, req: Request<Incoming>) -> Response<RespBody> {
    let started = Instant::now();
    let op = op_name(req.method());
    let head = req.method() == Method::HEAD;
    let resp = match route(store, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(head),
    };
    note_request(op, resp.status().as_u16(), started.elapsed().as_secs_f64());
    resp
}

/// A request's count and duration. The handles are looked up once per thread and kind
/// (a lookup through the recorder hashes and allocates its labels, a cost on every small GET).
fn note_request(op: &'static str, status: u16, secs: f64) {
    type Handles = std::collections::HashMap<(&'static str, u16), (metrics::Counter, metrics::Histogram)>;
    thread_local! {
        static HANDLES: std::cell::RefCell<Handles> = Default::default();
    }
    HANDLES.with_borrow_mut(|h| {
        let (count, duration) = h.entry((op, status)).or_insert_with(|| {
            (
                metrics::counter!("podstore_http_requests_total", "op" => op, "status" => status.to_string()),
                metrics::histogram!("podstore_http_request_duration_seconds", "op" => op),
            )
        });
        count.increment(1);
        duration.record(secs);
    });
}

/// Bytes of object bodies sent (the same handle for every answer of this thread).
pub(super) fn note_sent(n: u64) {
    thread_local! {
        static SENT: metrics::Counter = metrics::counter!("podstore_http_sent_bytes_total");
    }
    SENT.with(|c| c.increment(n));
}

async fn route(store: &Objects, req: Request<Incoming>) -> Result<Response<RespBody>, ApiError> {
    let shared = &store.shared;
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
    let method = req.method().clone();
    if let Some(bucket) = listing::bucket_path(&path) {
        if !crate::names::valid_bucket(bucket) {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "invalid_name",
                "bucket names are 3-63 characters of a-z 0-9 . -",
            ));
        }
        if !matches!(method, Method::GET | Method::HEAD) {
            return Ok(not_allowed("GET, HEAD", "a bucket is listed with GET"));
        }
        if let Some(refusal) = authorize(store, &req, bucket, b"") {
            return Ok(refusal);
        }
        let list = listing::parse_query(bucket, req.uri().query())?;
        return listing::list(store, list, method == Method::HEAD).await;
    }
    let name = parse_object_path(&path, crate::names::KEY_BYTES_MAX)
        .map_err(|NameError::Invalid(m)| err(StatusCode::BAD_REQUEST, "invalid_name", m))?;
    if !matches!(method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE) {
        return Ok(not_allowed("GET, HEAD, PUT, DELETE", "use GET, HEAD, PUT or DELETE"));
    }
    if let Some(refusal) = authorize(store, &req, &name.bucket, &name.key) {
        return Ok(refusal);
    }
    match method {
        Method::PUT => objects::put(store, name, req).await,
        Method::DELETE => objects::delete(store, name, req.headers()).await,
        _ => objects::get(store, &name, req.headers(), method == Method::HEAD).await,
    }
}

/// A 405 naming the methods the path takes.
fn not_allowed(allow: &'static str, why: &'static str) -> Response<RespBody> {
    let mut r = err(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", why).into_response(false);
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// The access keys' verdict on a request for `bucket` and `key` (empty for a listing): None
/// when it may go on, else the refusal. Checked before anything looks at the disks, so a
/// refusal tells nothing about the objects.
fn authorize(
    store: &Objects,
    req: &Request<Incoming>,
    bucket: &str,
    key: &[u8],
) -> Option<Response<RespBody>> {
    let auth = store.shared.auth.load();
    let auth = auth.as_deref()?;
    let access = crate::auth::Access {
        method: req.method().as_str(),
        bucket,
        key,
        authorization: req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes()),
        query: req.uri().query(),
        now_s: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    };
    auth.check(&access).err().map(|denied| refused(denied, req.method() == Method::HEAD))
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
pub(super) fn copies(h: &HeaderMap, cfg: &crate::config::Config) -> Result<u32, ApiError> {
    crate::config::copies_wanted(h.get("x-copies").map(|v| v.as_bytes()), cfg)
        .map_err(|m| err(StatusCode::BAD_REQUEST, "bad_copies", m))
}

/// A native ETag: the content digest in hex; for a multipart object (written through S3) the
/// MD5 of its parts' MD5s and `-<parts>`, as S3 shows it.
pub(super) fn etag(meta_digest: &[u8; 16], parts: u16) -> String {
    match parts {
        0 => format!("\"{}\"", podstore_engine::hex(meta_digest)),
        n => format!("\"{}-{n}\"", podstore_engine::hex(meta_digest)),
    }
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
            E::BadDigest(_) => err(StatusCode::BAD_REQUEST, "bad_digest", message),
            E::CopiesUnavailable { .. } => {
                err(StatusCode::SERVICE_UNAVAILABLE, "copies_unavailable", message)
            }
            E::NotFound => err(StatusCode::NOT_FOUND, "not_found", message),
            E::Damaged(_) => err(StatusCode::INTERNAL_SERVER_ERROR, "damaged", message),
            E::Engine(e) => engine_error(e),
        }
    }
}
