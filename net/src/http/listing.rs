//! `GET /{bucket}`: a page of the bucket's listing as JSON (docs/api.md "Listing"): the query
//! checked, the page from the object service (`list.rs`), rendered.

use base64::Engine as _;
use hyper::header;
use hyper::{Response, StatusCode};

use super::{base_response, err, ApiError};
use crate::body::RespBody;
use crate::list::{ListRequest, LIST_LIMIT_MAX};
use crate::names::{percent_decode, KEY_BYTES_MAX};
use crate::service::Objects;

/// Longest delimiter, bytes.
const DELIMITER_BYTES_MAX: usize = 255;
/// Longest continuation token as sent (a key of up to 1024 bytes in base64).
const TOKEN_CHARS_MAX: usize = 1400;

/// The bucket of a path that names a bucket and no key (`/photos` or `/photos/`).
pub(super) fn bucket_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let bucket = rest.strip_suffix('/').unwrap_or(rest);
    (!bucket.is_empty() && !bucket.contains('/')).then_some(bucket)
}

fn bad(what: impl Into<String>) -> ApiError {
    err(StatusCode::BAD_REQUEST, "bad_parameter", what)
}

/// A query value: percent-decoded, `+` as a space (as HTML forms and most clients send them).
fn decode(v: &str) -> Result<Vec<u8>, ApiError> {
    percent_decode(&v.replace('+', " ")).map_err(|_| bad("a query parameter has a malformed percent escape"))
}

/// Text that may be part of a key: UTF-8, no control characters, at most `max` bytes.
fn key_text(v: Vec<u8>, what: &str, max: usize) -> Result<Vec<u8>, ApiError> {
    if v.len() > max {
        return Err(bad(format!("{what} is longer than {max} bytes")));
    }
    match std::str::from_utf8(&v) {
        Ok(t) if !t.chars().any(char::is_control) => Ok(v),
        _ => Err(bad(format!("{what} is not UTF-8 text without control characters"))),
    }
}

/// The listing a query asks for (`prefix`, `delimiter`, `start-after`, `limit`, `token`;
/// other parameters, such as a presigned URL's, are not the listing's).
pub(super) fn parse_query(bucket: &str, query: Option<&str>) -> Result<ListRequest, ApiError> {
    let mut req = ListRequest {
        bucket: bucket.to_string(),
        prefix: Vec::new(),
        delimiter: None,
        from: Vec::new(),
        limit: LIST_LIMIT_MAX,
    };
    let mut start_after: Option<Vec<u8>> = None;
    let mut token: Option<Vec<u8>> = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "prefix" => req.prefix = key_text(decode(v)?, "prefix", KEY_BYTES_MAX)?,
            "delimiter" => {
                let d = key_text(decode(v)?, "delimiter", DELIMITER_BYTES_MAX)?;
                req.delimiter = (!d.is_empty()).then_some(d);
            }
            "start-after" => start_after = Some(key_text(decode(v)?, "start-after", KEY_BYTES_MAX)?),
            "limit" => {
                req.limit = std::str::from_utf8(&decode(v)?)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .filter(|n| (1..=LIST_LIMIT_MAX).contains(n))
                    .ok_or_else(|| bad(format!("limit must be a number from 1 to {LIST_LIMIT_MAX}")))?;
            }
            "token" => {
                let t = (v.len() <= TOKEN_CHARS_MAX)
                    .then(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v).ok())
                    .flatten()
                    .ok_or_else(|| bad("token is not one a listing gave"))?;
                // A token is a key of the bucket (and one NUL after a key listed last).
                let text = t.strip_suffix(b"\0").unwrap_or(&t);
                token = Some(key_text(text.to_vec(), "token", KEY_BYTES_MAX).map(|_| t)?);
            }
            _ => {}
        }
    }
    if let Some(s) = start_after {
        req.from = podstore_engine::names::successor(&s).into();
    }
    if let Some(t) = token {
        req.from = req.from.max(t);
    }
    Ok(req)
}

/// Runs the listing and renders its page.
pub(super) async fn list(
    objects: &Objects,
    req: ListRequest,
    head: bool,
) -> Result<Response<RespBody>, ApiError> {
    let page = objects.list(&req).await?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let body = serde_json::json!({
        "bucket": req.bucket,
        "prefix": text(&req.prefix),
        "objects": page.objects.iter().map(|o| serde_json::json!({
            "key": text(&o.key),
            "size": o.name.object_len,
            "etag": match o.name.parts {
                0 => podstore_engine::hex(&o.name.digest),
                n => format!("{}-{n}", podstore_engine::hex(&o.name.digest)),
            },
            "last_modified": crate::units::iso8601_ms(o.name.created_ms),
            "content_type": &*o.name.content_type,
        })).collect::<Vec<_>>(),
        "prefixes": page.prefixes.iter().map(|p| text(p)).collect::<Vec<_>>(),
        "next": page.next.as_ref().map(|n| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n)),
    })
    .to_string();
    metrics::counter!("podstore_list_keys_total")
        .increment(page.objects.len() as u64 + page.prefixes.len() as u64);
    Ok(base_response(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(if head { RespBody::Empty } else { RespBody::full(body) })
        .expect("static headers are valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries() {
        assert_eq!(bucket_path("/photos"), Some("photos"));
        assert_eq!(bucket_path("/photos/"), Some("photos"));
        assert_eq!(bucket_path("/photos/a"), None);
        assert_eq!(bucket_path("/"), None);
        let r = parse_query("photos", Some("prefix=2026%2F12+x&delimiter=%2F&limit=10&x-podstore-key=k"))
            .expect("ok");
        assert_eq!((r.prefix, r.delimiter, r.limit), (b"2026/12 x".to_vec(), Some(b"/".to_vec()), 10));
        let r = parse_query("photos", Some("start-after=a")).expect("ok");
        assert_eq!(r.from, b"a\0".to_vec());
        let tok = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"b\0");
        let r = parse_query("photos", Some(&format!("start-after=a&token={tok}"))).expect("ok");
        assert_eq!(r.from, b"b\0".to_vec());
        for bad in ["limit=0", "limit=1001", "limit=x", "prefix=%00", "prefix=%FF", "token=!!", "prefix=%4"] {
            assert!(parse_query("photos", Some(bad)).is_err(), "{bad}");
        }
        let long = format!("prefix={}", "k".repeat(KEY_BYTES_MAX + 1));
        assert!(parse_query("photos", Some(&long)).is_err());
    }
}
