//! The object handlers: PUT (the headers checked, the body handed to the object service as it
//! arrives), DELETE, and GET and HEAD (the object from the service, then the conditional
//! headers and the range).

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::{base_response, copies, err, etag, ApiError};
use crate::answer::{conditions, kept_headers, last_modified, Condition};
use crate::body::{RequestBody, RespBody};
use crate::checks::{Algorithm, Check};
use crate::names::ObjectName;
use crate::range::RangeAnswer;
use crate::service::{Objects, PutRequest};

/// PUT: the headers checked, the body handed to the object service as it arrives.
pub(super) async fn put(
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
    let mut checks = Vec::new();
    if let Some(v) = h.get("content-md5") {
        let c = v.to_str().ok().and_then(|s| Check::from_base64(Algorithm::Md5, s, "Content-MD5"));
        checks.push(c.ok_or_else(|| {
            err(StatusCode::BAD_REQUEST, "bad_digest", "Content-MD5 is not base64 of 16 bytes")
        })?);
    }
    let body = RequestBody::new(req.into_body(), &cfg.limits);
    let put = PutRequest { name, len, attrs: content_type.as_str().into(), checks, copies };
    let written = objects.put(put, body).await?;
    Ok(base_response(StatusCode::CREATED)
        .header(header::ETAG, etag(&written.digest, 0))
        .header("x-copies-written", written.copies)
        .header(header::CONTENT_LENGTH, 0)
        .body(RespBody::Empty)
        .expect("valid headers"))
}

pub(super) async fn delete(
    objects: &Objects,
    name: ObjectName,
    h: &HeaderMap,
) -> Result<Response<RespBody>, ApiError> {
    let want = copies(h, &objects.shared.cfg())?;
    let written = objects.delete(&name, want).await?;
    Ok(base_response(StatusCode::NO_CONTENT)
        .header("x-copies-written", written.copies)
        .body(RespBody::Empty)
        .expect("valid headers"))
}

/// GET and HEAD: the object from the service, then the conditional headers and the range.
pub(super) async fn get(
    objects: &Objects,
    name: &ObjectName,
    h: &HeaderMap,
    head: bool,
) -> Result<Response<RespBody>, ApiError> {
    let range = h.get(header::RANGE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let start = objects.get(&name.storage_key(), range, head).await?;
    let meta = &start.meta;
    let tag = etag(&meta.digest, meta.attrs.multipart().map_or(0, |m| m.parts));
    let modified = last_modified(meta);
    let lm = httpdate::fmt_http_date(modified);
    // Conditional requests (API.md): If-Match, If-Unmodified-Since, If-None-Match,
    // If-Modified-Since.
    let condition = conditions(h, &tag, modified);
    if condition == Condition::Failed {
        return Err(err(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "a precondition does not hold",
        ));
    }
    if condition == Condition::NotModified {
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
            HeaderValue::from_str(&meta.attrs.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        );
    if let Some(hs) = b.headers_mut() {
        kept_headers(hs, &meta.attrs);
    }
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
        super::note_sent(send_len);
        RespBody::Stream { first: start.first, rx: start.body, remaining: send_len }
    };
    b.status(status)
        .header(header::CONTENT_LENGTH, send_len)
        .body(body)
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}
