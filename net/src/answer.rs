//! What both front ends (the native API and S3) answer about an object around its bytes: the
//! conditional headers (RFC 9110's order, which S3 follows), Last-Modified, and the content
//! headers kept with the object.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use podstore_engine::{Attrs, ObjectMeta};

/// What the conditional headers of a GET or HEAD decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Answer with the object.
    Proceed,
    /// 304: the client's copy is current.
    NotModified,
    /// 412: a precondition failed.
    Failed,
}

/// Whether an `If-Match`/`If-None-Match` list names `tag` (or is `*`); weak tags compare equal.
pub fn etag_matches(list: &str, tag: &str) -> bool {
    list.split(',').map(str::trim).any(|t| t == "*" || t == tag || t.strip_prefix("W/") == Some(tag))
}

/// The object's Last-Modified: HTTP dates have second granularity, so whole seconds are
/// compared and sent.
pub fn last_modified(meta: &ObjectMeta) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(meta.created_ms / 1000)
}

/// Evaluates If-Match, then If-Unmodified-Since unless If-Match was given; If-None-Match, then
/// If-Modified-Since unless If-None-Match was given (RFC 9110 section 13.2.2).
pub fn conditions(h: &HeaderMap, tag: &str, modified: SystemTime) -> Condition {
    let text = |n: HeaderName| h.get(n).and_then(|v| v.to_str().ok());
    let date = |n| text(n).and_then(|v| httpdate::parse_http_date(v).ok());
    match text(header::IF_MATCH) {
        Some(v) if !etag_matches(v, tag) => return Condition::Failed,
        Some(_) => {}
        None if date(header::IF_UNMODIFIED_SINCE).is_some_and(|since| modified > since) => {
            return Condition::Failed
        }
        None => {}
    }
    let not_modified = match text(header::IF_NONE_MATCH) {
        Some(v) => etag_matches(v, tag),
        None => date(header::IF_MODIFIED_SINCE).is_some_and(|since| modified <= since),
    };
    if not_modified {
        Condition::NotModified
    } else {
        Condition::Proceed
    }
}

/// Adds the content headers kept with the object (Cache-Control, Content-Disposition, ...,
/// `x-amz-meta-*`) to an answer, UTF-8 values as their bytes. (Every stored value was checked
/// to be header text when it was written; one that is not is left out rather than failing the
/// answer.)
pub fn kept_headers(headers: &mut HeaderMap, attrs: &Attrs) {
    for (name, value) in attrs.headers() {
        if let (Ok(n), Ok(v)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value.as_bytes()))
        {
            headers.insert(n, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_follow_rfc_9110_order() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let before = httpdate::fmt_http_date(t - Duration::from_secs(10));
        let at = httpdate::fmt_http_date(t);
        let h = |pairs: &[(&'static str, &str)]| {
            let mut m = HeaderMap::new();
            for (n, v) in pairs {
                m.insert(*n, v.parse().expect("value"));
            }
            m
        };
        let tag = "\"abc\"";
        assert_eq!(conditions(&h(&[]), tag, t), Condition::Proceed);
        assert_eq!(conditions(&h(&[("if-match", "\"x\"")]), tag, t), Condition::Failed);
        assert_eq!(conditions(&h(&[("if-match", "\"x\", W/\"abc\"")]), tag, t), Condition::Proceed);
        // If-Match holds: If-Unmodified-Since is not looked at.
        assert_eq!(
            conditions(&h(&[("if-match", "*"), ("if-unmodified-since", &before)]), tag, t),
            Condition::Proceed
        );
        assert_eq!(conditions(&h(&[("if-unmodified-since", &before)]), tag, t), Condition::Failed);
        assert_eq!(conditions(&h(&[("if-none-match", tag)]), tag, t), Condition::NotModified);
        // If-None-Match given and not matching: If-Modified-Since is not looked at.
        assert_eq!(
            conditions(&h(&[("if-none-match", "\"x\""), ("if-modified-since", &at)]), tag, t),
            Condition::Proceed
        );
        assert_eq!(conditions(&h(&[("if-modified-since", &at)]), tag, t), Condition::NotModified);
        assert_eq!(conditions(&h(&[("if-modified-since", &before)]), tag, t), Condition::Proceed);
    }
}
