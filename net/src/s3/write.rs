//! PutObject, DeleteObject and DeleteObjects: writes through the object service, with
//! `X-Copies` as on the native API (how many appliances hold the write durably before the
//! answer) and `x-podstore-copies-written` in the answer.
//!
//! A PutObject's body is checked as it passes: against `Content-MD5` and the signed
//! `x-amz-content-sha256` (nothing is stored on a mismatch). Its MD5 is computed once, on the
//! connection's thread, and is the object's ETag. The standard content headers and
//! `x-amz-meta-*` are kept with the object and returned by GET and HEAD.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Response, StatusCode};
use podstore_engine::{Attrs, AttrsError, DigestKind};
use quick_xml::escape::escape;
use quick_xml::events::Event;

use super::chunked::{ChunkedBody, Streaming};
use super::error::S3Error;
use super::{xml, S3Request};
use crate::body::{RequestBody, RespBody, SERVER};
use crate::checks::{Algorithm, Check};
use crate::names::ObjectName;
use crate::service::BodySource;
use crate::service::{Objects, PutRequest};

/// The content headers S3 keeps with an object besides `x-amz-meta-*`.
const KEPT: [&str; 5] =
    ["cache-control", "content-disposition", "content-encoding", "content-language", "expires"];
/// S3's limit on user metadata (`x-amz-meta-*` names and values), bytes.
const USER_METADATA_MAX_BYTES: usize = 2048;
/// Most keys one DeleteObjects names (S3's limit).
const DELETE_KEYS_MAX: usize = 1000;
/// Largest DeleteObjects request body: 1000 keys of 1024 bytes, escaped, with their tags.
const DELETE_BODY_MAX_BYTES: usize = 8 << 20;
/// Deletes of one DeleteObjects in flight at once.
const DELETES_IN_FLIGHT: usize = 32;

fn name_of(r: &S3Request<'_>) -> ObjectName {
    ObjectName { bucket: r.bucket.to_string(), key: r.key.to_vec() }
}

/// The name of a key in the request's bucket, checked as the native API checks names.
pub(super) fn checked_name(bucket: &str, key: Vec<u8>) -> Result<ObjectName, S3Error> {
    let name = ObjectName { bucket: bucket.to_string(), key };
    crate::names::validate_name(&name.bucket, &name.key, crate::names::KEY_BYTES_MAX)
        .map_err(|crate::names::NameError::Invalid(m)| S3Error::invalid_argument(m))?;
    Ok(name)
}

pub(super) fn header_text<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, S3Error> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| S3Error::invalid_argument(format!("the {name} header is not text"))),
    }
}

/// The copies a write waits for (`X-Copies`, else the configured default).
pub(super) fn copies(objects: &Objects, h: &HeaderMap) -> Result<u32, S3Error> {
    crate::config::copies_wanted(h.get("x-copies").map(|v| v.as_bytes()), &objects.shared.cfg())
        .map_err(S3Error::invalid_argument)
}

/// The digests a body must have: Content-MD5, the signed payload hash, an additional
/// checksum (`x-amz-checksum-*`, at most one, as S3 allows).
pub(super) fn checks_of(h: &HeaderMap) -> Result<Vec<Check>, S3Error> {
    let mut checks = Vec::new();
    if let Some(v) = header_text(h, "content-md5")? {
        checks.push(Check::from_base64(Algorithm::Md5, v, "Content-MD5").ok_or_else(|| {
            S3Error::new(
                StatusCode::BAD_REQUEST,
                "InvalidDigest",
                "The Content-MD5 you specified was invalid.",
            )
        })?);
    }
    if let Some(s) = payload_sha256(h)? {
        checks.push(Check { algorithm: Algorithm::Sha256, want: s.to_vec(), header: "x-amz-content-sha256" });
    }
    let mut extra = None;
    for (name, value) in h {
        let Some(suffix) = name.as_str().strip_prefix("x-amz-checksum-") else { continue };
        if suffix == "type" || suffix == "mode" {
            continue;
        }
        let header = checksum_header(suffix);
        let (Some(algorithm), Some(header)) = (Algorithm::of_s3_checksum(suffix), header) else {
            return Err(S3Error::invalid_argument(format!("unknown checksum header {name}")));
        };
        if extra.is_some() {
            return Err(S3Error::invalid_argument("Expecting a single x-amz-checksum- header"));
        }
        let c = value.to_str().ok().and_then(|v| Check::from_base64(algorithm, v, header));
        extra =
            Some(c.ok_or_else(|| S3Error::invalid_argument(format!("Value for {name} header is invalid.")))?);
    }
    checks.extend(extra);
    Ok(checks)
}

/// S3's additional checksums: header suffix and header name.
const CHECKSUM_HEADERS: [(&str, &str); 5] = [
    ("crc32", "x-amz-checksum-crc32"),
    ("crc32c", "x-amz-checksum-crc32c"),
    ("crc64nvme", "x-amz-checksum-crc64nvme"),
    ("sha1", "x-amz-checksum-sha1"),
    ("sha256", "x-amz-checksum-sha256"),
];

/// The header of an S3 checksum's suffix (`crc32` → `x-amz-checksum-crc32`).
pub(super) fn checksum_header(suffix: &str) -> Option<&'static str> {
    CHECKSUM_HEADERS.iter().find(|(s, _)| *s == suffix).map(|(_, n)| *n)
}

/// The signed payload hash, when the client gave one (not `UNSIGNED-PAYLOAD`).
fn payload_sha256(h: &HeaderMap) -> Result<Option<[u8; 32]>, S3Error> {
    let Some(v) = header_text(h, "x-amz-content-sha256")? else { return Ok(None) };
    // An aws-chunked body is checked by its decoder (chunk signatures, a trailer).
    if v == super::sigv4::UNSIGNED_PAYLOAD || v.starts_with("STREAMING-") {
        return Ok(None);
    }
    let mut out = [0u8; 32];
    if v.len() != 64
        || v.as_bytes().chunks(2).zip(out.iter_mut()).any(|(hex, o)| {
            let parsed = std::str::from_utf8(hex).ok().and_then(|t| u8::from_str_radix(t, 16).ok());
            parsed.map(|b| *o = b).is_none()
        })
    {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or the hex SHA-256 of the body",
        ));
    }
    Ok(Some(out))
}

/// The attributes a PutObject keeps: its content type (S3's default `binary/octet-stream`),
/// the standard content headers, `x-amz-meta-*` (a header given twice keeps its values
/// joined by commas, as S3 does), and MD5 as the digest.
pub(super) fn attrs_of(h: &HeaderMap) -> Result<Attrs, S3Error> {
    let content_type = header_text(h, "content-type")?.unwrap_or("binary/octet-stream");
    let mut kept: Vec<(&str, String)> = Vec::new();
    let mut user_bytes = 0;
    for name in h.keys() {
        let n = name.as_str();
        let user = n.starts_with("x-amz-meta-");
        if !user && !KEPT.contains(&n) {
            continue;
        }
        let values: Result<Vec<&str>, _> = h.get_all(name).iter().map(|v| v.to_str()).collect();
        let mut value =
            values.map_err(|_| S3Error::invalid_argument(format!("the {n} header is not text")))?.join(",");
        if n == "content-encoding" {
            // aws-chunked is how the body came, not what the object is (S3 drops it too).
            let kept: Vec<&str> = value.split(',').map(str::trim).filter(|e| *e != "aws-chunked").collect();
            value = kept.join(",");
            if value.is_empty() {
                continue;
            }
        }
        if user {
            user_bytes += n.len() - "x-amz-meta-".len() + value.len();
        }
        kept.push((n, value));
    }
    if user_bytes > USER_METADATA_MAX_BYTES {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "MetadataTooLarge",
            format!("Your metadata headers exceed the maximum allowed metadata size ({USER_METADATA_MAX_BYTES} bytes)."),
        ));
    }
    Attrs::new(content_type, kept.iter().map(|(n, v)| (*n, v.as_str())), DigestKind::Md5).map_err(|e| match e
    {
        AttrsError::TooLarge(_) => S3Error::new(
            StatusCode::BAD_REQUEST,
            "MetadataTooLarge",
            "Your metadata headers exceed the maximum allowed metadata size.",
        ),
        e => S3Error::invalid_argument(e.to_string()),
    })
}

pub(super) fn written_response(status: StatusCode, copies: u32) -> hyper::http::response::Builder {
    Response::builder()
        .status(status)
        .header(header::SERVER, SERVER)
        .header("x-podstore-copies-written", copies)
}

/// A write's Content-Length (required).
pub(super) fn content_length(h: &HeaderMap) -> Result<u64, S3Error> {
    match header_text(h, "content-length")? {
        None => Err(S3Error::new(
            StatusCode::LENGTH_REQUIRED,
            "MissingContentLength",
            "You must provide the Content-Length HTTP header.",
        )),
        Some(v) => v.trim().parse().map_err(|_| S3Error::invalid_argument("Content-Length is not a number")),
    }
}

/// PutObject.
pub(super) async fn put(
    objects: &Objects,
    r: &S3Request<'_>,
    body: Incoming,
) -> Result<Response<RespBody>, S3Error> {
    let name = checked_name(r.bucket, r.key.to_vec())?;
    store(objects, r, name, attrs_of(r.headers)?, body, "object").await
}

/// Stores a request's body under `name` (a PutObject's object, an UploadPart's part): its
/// length (the decoded one of an aws-chunked body) within the largest object, checked against
/// the digests the request names, copied as `X-Copies` says. The answer: the MD5 as ETag, the
/// additional checksum checked (a header's or an aws-chunked trailer's).
pub(super) async fn store(
    objects: &Objects,
    r: &S3Request<'_>,
    name: ObjectName,
    attrs: Attrs,
    body: Incoming,
    what: &str,
) -> Result<Response<RespBody>, S3Error> {
    let h = r.headers;
    let streaming = match header_text(h, "x-amz-content-sha256")? {
        Some(p) => Streaming::of(p)?,
        None => None,
    };
    let chunked_encoding =
        header_text(h, "content-encoding")?.is_some_and(|v| v.split(',').any(|e| e.trim() == "aws-chunked"));
    if chunked_encoding && streaming.is_none() {
        return Err(S3Error::not_implemented("aws-chunked bodies without a STREAMING- x-amz-content-sha256"));
    }
    let len = match streaming {
        None => content_length(h)?,
        Some(_) => match header_text(h, "x-amz-decoded-content-length")? {
            None => {
                return Err(S3Error::new(
                    StatusCode::LENGTH_REQUIRED,
                    "MissingContentLength",
                    "You must provide the x-amz-decoded-content-length header with an aws-chunked body.",
                ))
            }
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| S3Error::invalid_argument("x-amz-decoded-content-length is not a number"))?,
        },
    };
    let cfg = objects.shared.cfg();
    let max = cfg.limits.object_bytes_max;
    if len > max {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "EntityTooLarge",
            format!("Your proposed upload exceeds the maximum allowed {what} size ({max} bytes)."),
        ));
    }
    let mut put = PutRequest { name, len, attrs, checks: checks_of(h)?, copies: copies(objects, h)? };
    // The answer names the additional checksum it checked; one sent as a header is kept with
    // the object (GetObject and HeadObject return it with x-amz-checksum-mode: ENABLED).
    let mut checked =
        put.checks.iter().find(|c| c.header.starts_with("x-amz-checksum-")).map(|c| (c.header, c.base64()));
    if let Some((header, value)) = &checked {
        let algorithm = header.trim_start_matches("x-amz-checksum-");
        put.attrs = put
            .attrs
            .with_checksum(algorithm, value)
            .map_err(|e| S3Error::invalid_argument(e.to_string()))?;
    }
    let plain = RequestBody::new(body, &cfg.limits);
    let (written, outcome) = match streaming {
        None => (objects.put(put, plain).await, None),
        Some(mode) => {
            let signer = r.chunk_signer.take();
            if mode.signed() && signer.is_none() && objects.shared.auth.load().is_some() {
                return Err(S3Error::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequest",
                    "a signed aws-chunked body needs a request signed in its Authorization header",
                ));
            }
            let (mut chunked, outcome) =
                ChunkedBody::new(plain, mode, signer, header_text(h, "x-amz-trailer")?, len)?;
            if len == 0 {
                // The service reads nothing of an empty body: its end is checked here.
                if let Some(Err(why)) = chunked.next().await {
                    return Err(outcome
                        .borrow_mut()
                        .failure
                        .take()
                        .unwrap_or_else(|| S3Error::invalid_argument(why)));
                }
            }
            (objects.put(put, chunked).await, Some(outcome))
        }
    };
    let written = match written {
        Ok(w) => w,
        // What the decoder found (a signature, a trailer's checksum) says more than "the body
        // ended".
        Err(e) => {
            return Err(outcome.and_then(|o| o.borrow_mut().failure.take()).unwrap_or_else(|| e.into()))
        }
    };
    if let Some(o) = outcome {
        checked = checked.or_else(|| o.borrow_mut().checked.take());
    }
    let mut b = written_response(StatusCode::OK, written.copies)
        .header(header::ETAG, format!("\"{}\"", podstore_engine::hex(&written.digest)))
        .header(header::CONTENT_LENGTH, 0);
    if let Some((name, value)) = checked {
        b = b.header(name, value);
    }
    Ok(b.body(RespBody::Empty).expect("valid headers"))
}

/// DeleteObject: 204 whether or not the key existed.
pub(super) async fn delete(objects: &Objects, r: &S3Request<'_>) -> Result<Response<RespBody>, S3Error> {
    let want = copies(objects, r.headers)?;
    let written = objects.delete(&name_of(r), want).await?;
    Ok(written_response(StatusCode::NO_CONTENT, written.copies).body(RespBody::Empty).expect("valid headers"))
}

pub(super) fn malformed_xml() -> S3Error {
    S3Error::new(
        StatusCode::BAD_REQUEST,
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema.",
    )
}

/// Walks a request's XML document: `leaf` gets each element's path (local names from the
/// root) and its text, entities resolved, when the element ends. A document that is not
/// well-formed is `MalformedXML`.
pub(super) fn xml_leaves(
    doc: &[u8],
    mut leaf: impl FnMut(&[&str], String) -> Result<(), S3Error>,
) -> Result<(), S3Error> {
    let mut reader = quick_xml::Reader::from_reader(doc);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    loop {
        match reader.read_event().map_err(|_| malformed_xml())? {
            Event::Start(e) => {
                path.push(AsRef::<str>::as_ref(&e.local_name()).to_string());
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::GeneralRef(g) => {
                // Entities (&amp; &#38; ...) arrive on their own: resolved here.
                let entity = format!("&{};", g.into_inner());
                text.push_str(&quick_xml::escape::unescape(&entity).map_err(|_| malformed_xml())?);
            }
            Event::CData(c) => text.push_str(&c.into_inner()),
            Event::End(_) => {
                let p: Vec<&str> = path.iter().map(|s| s.as_str()).collect();
                leaf(&p, std::mem::take(&mut text))?;
                path.pop();
            }
            Event::Empty(_) | Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if !path.is_empty() {
        return Err(malformed_xml());
    }
    Ok(())
}

/// The keys of a DeleteObjects request and whether it is quiet.
fn parse_delete(doc: &[u8]) -> Result<(Vec<Vec<u8>>, bool), S3Error> {
    let (mut keys, mut quiet) = (Vec::new(), false);
    xml_leaves(doc, |path, text| {
        match path {
            ["Delete", "Object", "Key"] => {
                if keys.len() == DELETE_KEYS_MAX {
                    return Err(malformed_xml());
                }
                keys.push(text.into_bytes());
            }
            ["Delete", "Quiet"] => quiet = text.trim() == "true",
            _ => {}
        }
        Ok(())
    })?;
    if keys.is_empty() {
        return Err(malformed_xml());
    }
    Ok((keys, quiet))
}

/// DeleteObjects (`POST /bucket?delete`): up to 1000 keys, deleted concurrently; the answer
/// lists each key deleted (unless quiet) and each that failed with why.
pub(super) async fn delete_many(
    objects: &Objects,
    r: &S3Request<'_>,
    body: Incoming,
) -> Result<Response<RespBody>, S3Error> {
    use futures_util::StreamExt;
    let h = r.headers;
    let want = copies(objects, h)?;
    let mut checks = crate::checks::Running::new(checks_of(h)?);
    let doc = read_small_body(body, DELETE_BODY_MAX_BYTES).await?;
    checks.update(&doc);
    if let Some(header) = checks.failed() {
        return Err(S3Error::from(crate::service::Error::BadDigest(header)));
    }
    let (keys, quiet) = parse_delete(&doc)?;
    let results: Vec<(Vec<u8>, Result<(), S3Error>)> = futures_util::stream::iter(keys)
        .map(|key| async move {
            let r = match checked_name(r.bucket, key.clone()) {
                Ok(name) => objects.delete(&name, want).await.map(|_| ()).map_err(S3Error::from),
                Err(e) => Err(e),
            };
            (key, r)
        })
        .buffered(DELETES_IN_FLIGHT)
        .collect()
        .await;
    let mut x = String::from("<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (key, r) in results {
        let key = String::from_utf8_lossy(&key);
        match r {
            Ok(()) if quiet => {}
            Ok(()) => x.push_str(&format!("<Deleted><Key>{}</Key></Deleted>", escape(&*key))),
            Err(e) => x.push_str(&format!(
                "<Error><Key>{}</Key><Code>{}</Code><Message>{}</Message></Error>",
                escape(&*key),
                e.code,
                escape(&e.message)
            )),
        }
    }
    x.push_str("</DeleteResult>");
    Ok(xml(x))
}

/// A request body read whole, at most `max` bytes.
pub(super) async fn read_small_body(mut body: Incoming, max: usize) -> Result<Bytes, S3Error> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| S3Error::new(StatusCode::BAD_REQUEST, "IncompleteBody", e.to_string()))?;
        if let Ok(d) = frame.into_data() {
            if out.len() + d.len() > max {
                return Err(S3Error::new(
                    StatusCode::BAD_REQUEST,
                    "MaxMessageLengthExceeded",
                    "Your request was too big.",
                ));
            }
            out.extend_from_slice(&d);
        }
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_requests_parse_with_escapes_and_limits() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet>
<Object><Key>a &amp; b.jpg</Key><VersionId>null</VersionId></Object><Object><Key><![CDATA[c<d]]></Key></Object>
<Object><Key>e&#38;f</Key></Object></Delete>"#;
        let (keys, quiet) = parse_delete(doc).expect("parses");
        assert!(quiet);
        assert_eq!(keys, vec![b"a & b.jpg".to_vec(), b"c<d".to_vec(), b"e&f".to_vec()]);
        assert!(parse_delete(b"<Delete></Delete>").is_err(), "no keys");
        assert!(parse_delete(b"<Delete><Object><Key>a</Key></Object>").is_err(), "unclosed");
        assert!(parse_delete(b"<Delete><Object><Key>a</Obj></Delete>").is_err(), "mismatched tags");
        let many: String = (0..1001).map(|i| format!("<Object><Key>k{i}</Key></Object>")).collect();
        assert!(parse_delete(format!("<Delete>{many}</Delete>").as_bytes()).is_err(), "more than 1000 keys");
    }

    #[test]
    fn kept_headers_and_their_limits() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "image/jpeg".parse().expect("v"));
        h.insert("cache-control", "max-age=60".parse().expect("v"));
        h.append("x-amz-meta-tag", "a".parse().expect("v"));
        h.append("x-amz-meta-tag", "b".parse().expect("v"));
        h.insert("x-amz-date", "20261207T000000Z".parse().expect("v"));
        let a = attrs_of(&h).expect("valid");
        assert_eq!(&*a.content_type, "image/jpeg");
        assert_eq!(a.digest, DigestKind::Md5);
        let mut kept: Vec<_> = a.headers().collect();
        kept.sort();
        assert_eq!(kept, vec![("cache-control", "max-age=60"), ("x-amz-meta-tag", "a,b")]);
        h.insert("x-amz-meta-big", "v".repeat(2040).parse().expect("v"));
        assert_eq!(attrs_of(&h).map_err(|e| e.code), Err("MetadataTooLarge"));
        assert_eq!(&*attrs_of(&HeaderMap::new()).expect("valid").content_type, "binary/octet-stream");
    }
}
