//! GetObject and HeadObject: the object from the service, S3's conditional headers (If-Match,
//! If-None-Match, If-Modified-Since, If-Unmodified-Since), a range, `response-*` overrides.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::error::S3Error;
use super::S3Request;
use crate::body::{RespBody, SERVER};
use crate::range::RangeAnswer;
use crate::service::Objects;

/// The ETag S3 clients are shown of an object written through the native API: its XXH3-128
/// digest with a part-count suffix, which S3 clients read as "not the content's MD5" (as for
/// a multipart upload) and so never compare with an MD5 of their own.
pub(crate) fn etag(digest: &[u8; 16]) -> String {
    format!("\"{}-1\"", podstore_engine::hex(digest))
}

fn matches(list: &str, tag: &str) -> bool {
    list.split(',').map(str::trim).any(|t| t == "*" || t == tag || t.strip_prefix("W/") == Some(tag))
}

/// GET or HEAD of an object.
pub(super) async fn get(objects: &Objects, r: &S3Request<'_>) -> Result<Response<RespBody>, S3Error> {
    let head = r.method == hyper::Method::HEAD;
    let h = r.headers;
    let text = |n: header::HeaderName| h.get(n).and_then(|v| v.to_str().ok());
    let range = text(header::RANGE).map(str::to_string);
    let mut storage_key = Vec::with_capacity(r.bucket.len() + 1 + r.key.len());
    storage_key.extend_from_slice(r.bucket.as_bytes());
    storage_key.push(b'/');
    storage_key.extend_from_slice(r.key);
    let start = objects.get(&storage_key, range, head).await?;
    let meta = &start.meta;
    let tag = etag(&meta.digest);
    let modified = std::time::UNIX_EPOCH + std::time::Duration::from_secs(meta.created_ms / 1000);
    let date = |n| text(n).and_then(|v| httpdate::parse_http_date(v).ok());
    let failed = || {
        S3Error::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
        )
    };
    // S3's order: If-Match, then If-Unmodified-Since unless If-Match held; If-None-Match,
    // then If-Modified-Since unless If-None-Match was given.
    match text(header::IF_MATCH) {
        Some(v) if !matches(v, &tag) => return Err(failed()),
        Some(_) => {}
        None if date(header::IF_UNMODIFIED_SINCE).is_some_and(|since| modified > since) => {
            return Err(failed())
        }
        None => {}
    }
    let not_modified = match text(header::IF_NONE_MATCH) {
        Some(v) => matches(v, &tag),
        None => date(header::IF_MODIFIED_SINCE).is_some_and(|since| modified <= since),
    };
    let lm = httpdate::fmt_http_date(modified);
    let base = || {
        Response::builder()
            .header(header::SERVER, SERVER)
            .header(header::ETAG, &tag)
            .header(header::LAST_MODIFIED, &lm)
    };
    if not_modified {
        return Ok(base().status(StatusCode::NOT_MODIFIED).body(RespBody::Empty).expect("valid headers"));
    }
    let len = meta.object_len;
    let content_type = r.param("response-content-type").unwrap_or(&meta.content_type);
    let mut b = base().header(header::ACCEPT_RANGES, "bytes").header(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    for (param, name) in [
        ("response-content-disposition", header::CONTENT_DISPOSITION),
        ("response-cache-control", header::CACHE_CONTROL),
        ("response-content-encoding", header::CONTENT_ENCODING),
        ("response-content-language", header::CONTENT_LANGUAGE),
        ("response-expires", header::EXPIRES),
    ] {
        if let Some(v) = r.param(param).and_then(|v| HeaderValue::from_str(v).ok()) {
            b = b.header(name, v);
        }
    }
    let (status, send_len) = match start.range {
        RangeAnswer::Whole => (StatusCode::OK, len),
        RangeAnswer::Part { start: a, end } => {
            b = b.header(header::CONTENT_RANGE, format!("bytes {a}-{}/{len}", end - 1));
            (StatusCode::PARTIAL_CONTENT, end - a)
        }
        RangeAnswer::Unsatisfiable => {
            return Err(S3Error::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                "The requested range is not satisfiable",
            ));
        }
    };
    let body = if head || send_len == 0 {
        RespBody::Empty
    } else {
        RespBody::Stream { first: start.first, rx: start.body, remaining: send_len }
    };
    Ok(b.status(status).header(header::CONTENT_LENGTH, send_len).body(body).expect("valid headers"))
}
