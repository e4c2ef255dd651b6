//! CopyObject and UploadPartCopy: an object (or a range of it) read from its disks and written
//! again under another name, all inside the node: the client sends no data. The source is read
//! through the object service like a GET (a multipart source streams its parts), checked with
//! the `x-amz-copy-source-if-*` conditions, and written like a PUT (copies to peers,
//! `X-Copies`, its MD5 the new ETag).

use bytes::Bytes;
use hyper::header::{self, HeaderMap};
use hyper::{Response, StatusCode};
use podstore_engine::DigestKind;
use tokio::sync::mpsc;

use super::error::S3Error;
use super::S3Request;
use crate::answer::{etag_matches, last_modified};
use crate::msg::GetStart;
use crate::names::{percent_decode, ObjectName};
use crate::range::RangeAnswer;
use crate::service::Objects;

/// A copy's source: its name, as `x-amz-copy-source` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Source {
    pub bucket: String,
    pub key: Vec<u8>,
}

/// Parses `x-amz-copy-source`: `[/]bucket/key[?versionId=null]`, percent-encoded.
pub(super) fn source(h: &HeaderMap) -> Result<Option<Source>, S3Error> {
    let Some(v) = h.get("x-amz-copy-source") else { return Ok(None) };
    let bad = || {
        S3Error::invalid_argument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
        )
    };
    let v = v.to_str().map_err(|_| bad())?;
    let (path, query) = v.split_once('?').unwrap_or((v, ""));
    match query.split_once('=') {
        None if query.is_empty() => {}
        Some(("versionId", "null")) => {}
        _ => return Err(S3Error::new(
            StatusCode::NOT_FOUND,
            "NoSuchVersion",
            "The specified version does not exist. (Buckets here are not versioned: only versionId=null.)",
        )),
    }
    let path = path.strip_prefix('/').unwrap_or(path);
    let (bucket, key) = path.split_once('/').ok_or_else(bad)?;
    let key = percent_decode(key).map_err(|_| bad())?;
    let bucket = String::from_utf8(percent_decode(bucket).map_err(|_| bad())?).map_err(|_| bad())?;
    crate::names::validate_name(&bucket, &key, crate::names::KEY_BYTES_MAX).map_err(|_| bad())?;
    Ok(Some(Source { bucket, key }))
}

/// Whether the request's signer may read the source's bucket (as a GET of it would need).
fn may_read(objects: &Objects, signer: Option<&str>, bucket: &str) -> Result<(), S3Error> {
    let auth = objects.shared.auth.load();
    match (auth.as_deref(), signer) {
        (None, _) => Ok(()),
        (Some(a), Some(id)) => a.allows(id, bucket, true).map_err(S3Error::access_denied),
        (Some(a), None) if a.is_public(bucket) => Ok(()),
        (Some(_), None) => Err(S3Error::access_denied("Anonymous access is forbidden for this operation")),
    }
}

fn precondition_failed() -> S3Error {
    S3Error::new(
        StatusCode::PRECONDITION_FAILED,
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold",
    )
}

/// The source object opened for reading (`range`: `x-amz-copy-source-range`), after its
/// conditions (`x-amz-copy-source-if-match`, `-if-none-match`, `-if-modified-since`,
/// `-if-unmodified-since`, each failing with 412 as S3 does).
pub(super) async fn open_source(
    objects: &Objects,
    r: &S3Request<'_>,
    src: &Source,
    range: Option<String>,
) -> Result<GetStart, S3Error> {
    may_read(objects, r.signer, &src.bucket)?;
    let name = ObjectName { bucket: src.bucket.clone(), key: src.key.clone() };
    let start = match objects.get(&name.storage_key(), range, false).await {
        Ok(s) => s,
        Err(crate::service::Error::NotFound) => {
            return Err(S3Error::new(StatusCode::NOT_FOUND, "NoSuchKey", "The specified key does not exist."))
        }
        Err(e) => return Err(e.into()),
    };
    let meta = &start.meta;
    let parts = meta.attrs.multipart().map_or(0, |m| m.parts);
    let tag = super::object::etag(&meta.digest, meta.attrs.digest, parts);
    let modified = last_modified(meta);
    let text = |n: &str| r.headers.get(n).and_then(|v| v.to_str().ok());
    let date = |n: &str| text(n).and_then(|v| httpdate::parse_http_date(v).ok());
    // S3's rules: if-match true and if-unmodified-since false still copies; if-none-match
    // false and if-modified-since true still refuses.
    match text("x-amz-copy-source-if-match") {
        Some(v) if !etag_matches(v, &tag) => return Err(precondition_failed()),
        Some(_) => {}
        None if date("x-amz-copy-source-if-unmodified-since").is_some_and(|d| modified > d) => {
            return Err(precondition_failed())
        }
        None => {}
    }
    match text("x-amz-copy-source-if-none-match") {
        Some(v) if etag_matches(v, &tag) => return Err(precondition_failed()),
        Some(_) => {}
        None if date("x-amz-copy-source-if-modified-since").is_some_and(|d| modified <= d) => {
            return Err(precondition_failed())
        }
        None => {}
    }
    Ok(start)
}

/// A source's bytes as a write's body.
pub(super) struct SourceBody {
    first: Option<Bytes>,
    rest: Option<mpsc::Receiver<crate::body::Piece>>,
}

impl SourceBody {
    pub(super) fn new(start: GetStart) -> SourceBody {
        SourceBody { first: start.first, rest: start.body }
    }
}

impl crate::service::BodySource for SourceBody {
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        if let Some(b) = self.first.take() {
            return Some(Ok(b));
        }
        match self.rest.as_mut()?.recv().await? {
            Ok(b) => Some(Ok(b)),
            Err(e) => Some(Err(format!("the copy's source could not be read: {e}"))),
        }
    }
}

/// The bytes a source's read answers with, and their count.
pub(super) fn source_len(start: &GetStart) -> Result<u64, S3Error> {
    match start.range {
        RangeAnswer::Whole => Ok(start.meta.object_len),
        RangeAnswer::Part { start, end } => Ok(end - start),
        RangeAnswer::Unsatisfiable => Err(S3Error::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidRange",
            "The requested range is not satisfiable",
        )),
    }
}

/// The answer to a copy: `CopyObjectResult` or `CopyPartResult`.
pub(super) fn copied(element: &str, etag: &str, copies: u32) -> Response<crate::body::RespBody> {
    let mut resp = super::xml(format!(
        "<{element} xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LastModified>{}</LastModified><ETag>{}</ETag></{element}>",
        crate::units::iso8601_ms(podstore_engine::now_ms()),
        quick_xml::escape::escape(etag),
    ));
    resp.headers_mut().insert("x-podstore-copies-written", copies.into());
    resp
}

/// CopyObject (`PUT /bucket/key` with `x-amz-copy-source`): the source's content type and
/// headers kept (`x-amz-metadata-directive: COPY`, the default) or the request's
/// (`REPLACE`); a copy onto itself must replace them, as S3 requires.
pub(super) async fn copy_object(
    objects: &Objects,
    r: &S3Request<'_>,
    src: Source,
) -> Result<Response<crate::body::RespBody>, S3Error> {
    let h = r.headers;
    let replace = match h.get("x-amz-metadata-directive").map(|v| v.as_bytes()) {
        None | Some(b"COPY") => false,
        Some(b"REPLACE") => true,
        Some(_) => return Err(S3Error::invalid_argument("Unknown metadata directive.")),
    };
    let name = super::write::checked_name(r.bucket, r.key.to_vec())?;
    if !replace && src.bucket == name.bucket && src.key == name.key {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    // The request's own attributes are checked before anything is read.
    let replaced = if replace { Some(super::write::attrs_of(h)?) } else { None };
    let want = super::write::copies(objects, h)?;
    let start = open_source(objects, r, &src, None).await?;
    let len = source_len(&start)?;
    let max = objects.shared.cfg().limits.object_bytes_max;
    if len > max {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            format!("The specified copy source is larger than the maximum allowable size for a copy source: {max}"),
        ));
    }
    let source = &start.meta.attrs;
    let mut attrs = match replaced {
        Some(a) => a,
        None => podstore_engine::Attrs::new(&source.content_type, source.headers(), DigestKind::Md5)
            .map_err(|e| S3Error::invalid_argument(e.to_string()))?,
    };
    // The same bytes: the source's checksum holds for the copy (not a multipart source's
    // composite one, which is of its parts).
    if let Some((algorithm, value)) = source.checksum().filter(|(_, v)| !v.contains('-')) {
        attrs =
            attrs.with_checksum(algorithm, value).map_err(|e| S3Error::invalid_argument(e.to_string()))?;
    }
    let put = crate::service::PutRequest { name, len, attrs, checks: Vec::new(), copies: want };
    let written = objects.put(put, SourceBody::new(start)).await?;
    metrics::counter!("podstore_s3_copies_total", "op" => "object").increment(1);
    let etag = format!("\"{}\"", podstore_engine::hex(&written.digest));
    let mut resp = copied("CopyObjectResult", &etag, written.copies);
    resp.headers_mut().insert(header::ETAG, etag.parse().expect("hex"));
    Ok(resp)
}

/// `x-amz-copy-source-range: bytes=a-b` (both given, inside the source), as a Range header.
pub(super) fn copy_range(h: &HeaderMap) -> Result<Option<String>, S3Error> {
    let Some(v) = h.get("x-amz-copy-source-range") else { return Ok(None) };
    let bad = || {
        S3Error::invalid_argument("The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy")
    };
    let v = v.to_str().map_err(|_| bad())?;
    let (a, b) = v.strip_prefix("bytes=").and_then(|s| s.split_once('-')).ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b {
        return Err(bad());
    }
    Ok(Some(format!("bytes={a}-{b}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.insert(*n, v.parse().expect("value"));
        }
        m
    }

    #[test]
    fn copy_sources_parse() {
        let s = |v: &str| source(&h(&[("x-amz-copy-source", v)]));
        let want = Source { bucket: "photos".into(), key: "a b/ключ".as_bytes().to_vec() };
        assert_eq!(s("/photos/a%20b/%D0%BA%D0%BB%D1%8E%D1%87").expect("parses"), Some(want.clone()));
        assert_eq!(s("photos/a%20b/%D0%BA%D0%BB%D1%8E%D1%87?versionId=null").expect("parses"), Some(want));
        assert_eq!(s("photos/k?versionId=3").map_err(|e| e.code), Err("NoSuchVersion"));
        for bad in ["photos", "/photos/", "Bad_Bucket/k", "photos/%zz"] {
            assert_eq!(s(bad).map_err(|e| e.code), Err("InvalidArgument"), "{bad}");
        }
        assert_eq!(source(&HeaderMap::new()).expect("none"), None);
    }

    #[test]
    fn copy_ranges_parse() {
        let r = |v: &str| copy_range(&h(&[("x-amz-copy-source-range", v)]));
        assert_eq!(r("bytes=0-99").expect("parses").as_deref(), Some("bytes=0-99"));
        for bad in ["bytes=5-1", "bytes=-5", "0-5", "bytes=a-b"] {
            assert!(r(bad).is_err(), "{bad}");
        }
    }
}
