//! GetObject and HeadObject: the object from the service, S3's conditional headers (If-Match,
//! If-None-Match, If-Modified-Since, If-Unmodified-Since), a range, `response-*` overrides.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::error::S3Error;
use super::S3Request;
use crate::answer::{conditions, kept_headers, last_modified, Condition};
use crate::body::{RespBody, SERVER};
use crate::range::RangeAnswer;
use crate::service::Objects;
use podstore_engine::DigestKind;

/// The ETag S3 clients are shown: the content's MD5 in hex for an object written through S3
/// in one piece; for a multipart object the MD5 of its parts' MD5s and `-<parts>` (S3's own
/// form); for one written through the native API its XXH3-128 digest with `-1`, which S3
/// clients read as "not the content's MD5" (as for a multipart upload) and so never compare
/// with an MD5 of their own.
pub(crate) fn etag(digest: &[u8; 16], kind: DigestKind, parts: u16) -> String {
    match kind {
        _ if parts > 0 => format!("\"{}-{parts}\"", podstore_engine::hex(digest)),
        DigestKind::Md5 => format!("\"{}\"", podstore_engine::hex(digest)),
        DigestKind::Xxh3 => format!("\"{}-1\"", podstore_engine::hex(digest)),
    }
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
    let start = match objects.get(&storage_key, range, head).await {
        Ok(s) => s,
        // A missing key of a missing bucket is NoSuchBucket, as S3 says (looked up only then).
        Err(crate::service::Error::NotFound)
            if !head && super::bucket::created(objects, r.bucket).await?.is_none() =>
        {
            return Err(super::bucket::no_such_bucket())
        }
        Err(e) => return Err(e.into()),
    };
    let meta = &start.meta;
    let parts = meta.attrs.multipart().map_or(0, |m| m.parts);
    let tag = etag(&meta.digest, meta.attrs.digest, parts);
    let modified = last_modified(meta);
    let condition = conditions(h, &tag, modified);
    if condition == Condition::Failed {
        return Err(S3Error::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
        ));
    }
    let not_modified = condition == Condition::NotModified;
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
    let content_type = r.param("response-content-type").unwrap_or(&meta.attrs.content_type);
    let mut b = base().header(header::ACCEPT_RANGES, "bytes").header(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Some(hs) = b.headers_mut() {
        kept_headers(hs, &meta.attrs);
    }
    for (param, name) in [
        ("response-content-disposition", header::CONTENT_DISPOSITION),
        ("response-cache-control", header::CACHE_CONTROL),
        ("response-content-encoding", header::CONTENT_ENCODING),
        ("response-content-language", header::CONTENT_LANGUAGE),
        ("response-expires", header::EXPIRES),
    ] {
        if let (Some(v), Some(hs)) =
            (r.param(param).and_then(|v| HeaderValue::from_str(v).ok()), b.headers_mut())
        {
            hs.insert(name, v);
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
    // The checksum the object was written with, when asked for (a whole answer's).
    let mode = h.get("x-amz-checksum-mode").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"ENABLED"));
    if let (true, RangeAnswer::Whole, Some((algorithm, value))) = (mode, start.range, meta.attrs.checksum()) {
        if let (Ok(n), Ok(v), Some(hs)) = (
            header::HeaderName::from_bytes(format!("x-amz-checksum-{algorithm}").as_bytes()),
            HeaderValue::from_str(value),
            b.headers_mut(),
        ) {
            hs.insert(n, v);
            let kind = if value.contains('-') { "COMPOSITE" } else { "FULL_OBJECT" };
            hs.insert("x-amz-checksum-type", HeaderValue::from_static(kind));
        }
    }
    let body = if head || send_len == 0 {
        RespBody::Empty
    } else {
        RespBody::Stream { first: start.first, rx: start.body, remaining: send_len }
    };
    Ok(b.status(status).header(header::CONTENT_LENGTH, send_len).body(body).expect("valid headers"))
}
