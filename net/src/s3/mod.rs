//! The S3 front end (API.md "S3"): its own listener over the same object service as the
//! native API, path-style addressing (`/bucket/key`), AWS Signature Version 4 with the
//! access keys of `[[auth.keys]]` (`sigv4.rs`), errors as S3's XML (`error.rs`).
//!
//! Served so far: GetObject and HeadObject (ranges, the four conditional headers,
//! `response-*` overrides, the content headers kept with the object; `object.rs`), PutObject,
//! DeleteObject and DeleteObjects (`write.rs`), ListObjectsV2 and ListObjects (`list.rs`),
//! ListBuckets (the buckets holding objects), HeadBucket, GetBucketLocation and
//! GetBucketVersioning, multipart uploads (`multipart.rs`). Every other operation answers
//! `501 NotImplemented`.

mod bucket;
mod chunked;
mod copy;
pub mod error;
mod list;
mod multipart;
mod object;
pub mod sigv2;
pub mod sigv4;
mod write;

use std::time::{SystemTime, UNIX_EPOCH};

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::body::{RespBody, SERVER};
use crate::names::{percent_decode, valid_bucket, KEY_BYTES_MAX};
use crate::service::Objects;
use error::S3Error;

/// Most a signed request's clock may differ from this node's (as S3 allows), seconds.
const SKEW_MAX_S: u64 = 15 * 60;
/// The region GetBucketLocation names (signatures of any region are accepted: the region is
/// part of what is signed).
const REGION: &str = "us-east-1";

/// A request as the S3 operations see it.
pub(crate) struct S3Request<'a> {
    pub method: &'a Method,
    pub bucket: &'a str,
    /// The object's key (empty: the request is for the bucket).
    pub key: &'a [u8],
    /// Query parameters, decoded, in the order sent.
    pub query: &'a [(String, String)],
    pub headers: &'a hyper::HeaderMap,
    /// The access key that signed the request (None: no keys are configured, or an anonymous
    /// read of a public bucket).
    pub signer: Option<&'a str>,
    /// The signatures of an aws-chunked body's chunks, seeded with the request's (a signed
    /// streaming upload when access keys are configured); taken by the body's decoder.
    pub chunk_signer: std::cell::Cell<Option<sigv4::ChunkSigner>>,
}

impl S3Request<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }
}

/// Serves one request on the S3 port.
pub async fn handle(objects: &Objects, req: Request<Incoming>) -> Response<RespBody> {
    let request_id = format!("{:016x}", fastrand::u64(..));
    let head = req.method() == Method::HEAD;
    let resource = req.uri().path().to_string();
    let op = req.method().as_str().to_ascii_lowercase();
    let started = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let expects_continue =
        parts.headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let empty = parts.headers.get(header::CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0");
    let mut resp = match route(objects, &parts, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(&resource, &request_id, head),
    };
    // botocore (the AWS CLI, boto3) sends `Expect: 100-continue` with every PUT, and a final
    // answer that comes without an interim 100 (an empty body, which needs none, or an error
    // answered before the body) leaves its pooled connection parsing the next answer against
    // the stale status line: that request then hangs for its read timeout (botocore issues
    // 3755 and 3613). Closing such a connection makes the client open a fresh one.
    if expects_continue && (empty || !resp.status().is_success()) {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amz-request-id", v);
    }
    metrics::counter!("podstore_s3_requests_total", "op" => op, "status" => resp.status().as_u16().to_string())
        .increment(1);
    metrics::histogram!("podstore_s3_request_duration_seconds").record(started.elapsed().as_secs_f64());
    resp
}

/// Query parameters, decoded (`+` is a space only in form bodies, never in S3 queries).
fn query_pairs(q: Option<&str>) -> Result<Vec<(String, String)>, S3Error> {
    let bad = || S3Error::invalid_argument("a query parameter is not percent-encoded UTF-8");
    let mut out = Vec::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = String::from_utf8(percent_decode(k).map_err(|_| bad())?).map_err(|_| bad())?;
        let v = String::from_utf8(percent_decode(v).map_err(|_| bad())?).map_err(|_| bad())?;
        out.push((k, v));
    }
    Ok(out)
}

async fn route(
    objects: &Objects,
    req: &hyper::http::request::Parts,
    body: Incoming,
) -> Result<Response<RespBody>, S3Error> {
    let raw_path = req.uri.path();
    let path =
        percent_decode(raw_path).map_err(|_| S3Error::invalid_argument("the path is not percent-encoded"))?;
    let query = query_pairs(req.uri.query())?;
    let rest = path.strip_prefix(b"/").unwrap_or(&path);
    let host = req.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let domain = objects.shared.cfg().listen.s3_domain.clone();
    let (bucket, key) = match virtual_bucket(host, domain.as_deref()) {
        // Virtual-hosted: the bucket is the host's first label, the whole path the key.
        Some(b) => (b.as_bytes(), rest),
        None => match rest.iter().position(|&b| b == b'/') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &[][..]),
        },
    };
    let bucket = std::str::from_utf8(bucket).map_err(|_| S3Error::invalid_argument("bucket name"))?;
    // The resource a Signature Version 2 URL signs: the path as sent, the bucket first.
    let resource = match virtual_bucket(host, domain.as_deref()) {
        Some(b) => format!("/{b}{raw_path}"),
        None => raw_path.to_string(),
    };
    let (signer, chunk_signer) = authorize(objects, req, (&path, &resource), &query, bucket)?;
    if bucket.is_empty() {
        return match req.method {
            Method::GET => bucket::list(objects, signer.as_deref()).await,
            _ => Err(S3Error::not_implemented(&format!("{} /", req.method))),
        };
    }
    if !valid_bucket(bucket) {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "InvalidBucketName",
            "The specified bucket is not valid.",
        ));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(S3Error::new(StatusCode::BAD_REQUEST, "KeyTooLongError", "Your key is too long"));
    }
    let r = S3Request {
        method: &req.method,
        bucket,
        key,
        query: &query,
        headers: &req.headers,
        signer: signer.as_deref(),
        chunk_signer: std::cell::Cell::new(chunk_signer),
    };
    match (&req.method, key.is_empty()) {
        (&Method::POST, false) if r.has("uploads") => multipart::create(objects, &r).await,
        (&Method::POST, false) if r.has("uploadId") => multipart::complete(objects, &r, body).await,
        (&Method::PUT, false) if r.has("uploadId") && r.has("partNumber") => {
            multipart::upload_part(objects, &r, body).await
        }
        (&Method::DELETE, false) if r.has("uploadId") => multipart::abort(objects, &r).await,
        (&Method::GET, false) if r.has("uploadId") => multipart::list_parts(objects, &r).await,
        (&Method::GET, true) if r.has("uploads") => multipart::list_uploads(objects, &r).await,
        (&Method::GET | &Method::HEAD, false) if object_subresource(&r).is_none() => object::get(objects, &r).await,
        (&Method::PUT, false) if object_subresource(&r).is_none() => match copy::source(r.headers)? {
            Some(src) => copy::copy_object(objects, &r, src).await,
            None => write::put(objects, &r, body).await,
        },
        (&Method::DELETE, false) if object_subresource(&r).is_none() => write::delete(objects, &r).await,
        (&Method::POST, true) if r.has("delete") => write::delete_many(objects, &r, body).await,
        (&Method::HEAD, true) => bucket::head(objects, &r).await,
        (&Method::PUT, true) if bucket_subresource(&r).is_none() => bucket::create(objects, &r).await,
        (&Method::DELETE, true) if bucket_subresource(&r).is_none() => bucket::delete(objects, &r).await,
        (&Method::GET, true) if r.has("location") => Ok(xml(format!(
            "<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{REGION}</LocationConstraint>"
        ))),
        (&Method::GET, true) if r.has("versioning") => {
            Ok(xml("<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>".into()))
        }
        (&Method::GET, true) if bucket_subresource(&r).is_none() => list::list_objects(objects, &r).await,
        (&Method::GET, true) => Err(S3Error::not_implemented(bucket_subresource(&r).unwrap_or("this request"))),
        (m, _) => Err(S3Error::not_implemented(&format!("{m} here"))),
    }
}

/// The bucket a virtual-hosted request names: `bucket.<domain>` (any port), with `domain`
/// configured (`[listen] s3_domain`).
fn virtual_bucket<'a>(host: &'a str, domain: Option<&str>) -> Option<&'a str> {
    let domain = domain?;
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|c| c.is_ascii_digit()) => n,
        _ => host,
    };
    let bucket = name.strip_suffix(domain)?.strip_suffix('.')?;
    (!bucket.is_empty()).then_some(bucket)
}

/// The object subresource a request asks for (tagging, acl, uploads, ...), if any.
fn object_subresource<'a>(r: &'a S3Request<'_>) -> Option<&'a str> {
    r.query
        .iter()
        .find(|(k, v)| {
            !k.starts_with("X-Amz-")
                && !k.starts_with("x-id")
                && !k.starts_with("response-")
                && !is_null_version(k, v)
                && !is_v2_presign(k)
        })
        .map(|(k, _)| k.as_str())
}

/// A Signature Version 2 presigned URL's own parameters.
fn is_v2_presign(k: &str) -> bool {
    matches!(k, "AWSAccessKeyId" | "Expires" | "Signature")
}

/// `versionId=null`: the one version of an object of an unversioned bucket (the object).
fn is_null_version(k: &str, v: &str) -> bool {
    k == "versionId" && v == "null"
}

/// The bucket subresource a GET asks for (acl, policy, cors, ...), if any.
fn bucket_subresource<'a>(r: &'a S3Request<'_>) -> Option<&'a str> {
    const LISTING: [&str; 11] = [
        "versions",
        "key-marker",
        "version-id-marker",
        "list-type",
        "prefix",
        "delimiter",
        "max-keys",
        "continuation-token",
        "start-after",
        "encoding-type",
        "fetch-owner",
    ];
    r.query.iter().map(|(k, _)| k.as_str()).find(|k| {
        !LISTING.contains(k)
            && *k != "marker"
            && !k.starts_with("X-Amz-")
            && !k.starts_with("x-id")
            && !is_v2_presign(k)
    })
}

/// A 200 with an XML document.
pub(crate) fn xml(doc: String) -> Response<RespBody> {
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{doc}");
    Response::builder()
        .status(StatusCode::OK)
        .header(header::SERVER, SERVER)
        .header(header::CONTENT_TYPE, "application/xml")
        .header(header::CONTENT_LENGTH, body.len())
        .body(RespBody::full(body))
        .expect("static headers are valid")
}

/// `YYYYMMDDTHHMMSSZ` as seconds since the epoch.
fn amz_seconds(d: &str) -> Option<u64> {
    let n = |a: usize, b: usize| d.get(a..b)?.parse::<i64>().ok();
    let (y, mo, da, h, mi, s) = (n(0, 4)?, n(4, 6)?, n(6, 8)?, n(9, 11)?, n(11, 13)?, n(13, 15)?);
    // Days from the civil date (H. Hinnant's algorithm, the inverse of units::iso8601_ms).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + s).ok()
}

/// The access keys' verdict (before anything looks at the disks): with no keys configured
/// every request is served (loopback only, see `Config::check_exposure`); otherwise a valid
/// SigV4 signature of a key that may use the bucket, or a read of a public bucket. Returns the
/// signing key's id (None: no keys, or an anonymous read of a public bucket), and for a signed
/// aws-chunked body the signer of its chunks.
fn authorize(
    objects: &Objects,
    req: &hyper::http::request::Parts,
    (path, resource): (&[u8], &str),
    query: &[(String, String)],
    bucket: &str,
) -> Result<(Option<String>, Option<sigv4::ChunkSigner>), S3Error> {
    let auth = objects.shared.auth.load();
    let Some(auth) = auth.as_deref() else { return Ok((None, None)) };
    let read = matches!(req.method, Method::GET | Method::HEAD);
    let header_value = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
    let malformed =
        |why: &'static str| S3Error::new(StatusCode::BAD_REQUEST, "AuthorizationHeaderMalformed", why);
    let claim = match header_value("authorization") {
        Some(a) => {
            sigv4::parse_header(a, header_value("x-amz-date").unwrap_or("")).map_err(|e| malformed(e.0))?
        }
        None => match sigv4::parse_query(query) {
            Some(c) => c.map_err(|e| {
                S3Error::new(StatusCode::BAD_REQUEST, "AuthorizationQueryParametersError", e.0)
            })?,
            None => match sigv2::parse_query(query) {
                Some(c) => {
                    let c = c.map_err(|e| {
                        S3Error::new(StatusCode::BAD_REQUEST, "AuthorizationQueryParametersError", e.0)
                    })?;
                    return authorize_v2(auth, req, resource, query, bucket, c).map(|id| (Some(id), None));
                }
                None if read && auth.is_public(bucket) && !bucket.is_empty() => return Ok((None, None)),
                None => {
                    return Err(S3Error::access_denied("Anonymous access is forbidden for this operation"))
                }
            },
        },
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let signed_at =
        amz_seconds(&claim.amz_date).ok_or_else(|| malformed("the request's date is not valid"))?;
    match claim.expires_s {
        None if signed_at.abs_diff(now) > SKEW_MAX_S => {
            return Err(S3Error::new(
                StatusCode::FORBIDDEN,
                "RequestTimeTooSkewed",
                "The difference between the request time and the server's time is too large.",
            ))
        }
        Some(e) if signed_at > now + SKEW_MAX_S || signed_at + e < now => {
            return Err(S3Error::access_denied("Request has expired"))
        }
        _ => {}
    }
    let Some(secret) = auth.secret_of(&claim.access_key) else {
        return Err(S3Error::unknown_access_key());
    };
    // Only the signed headers go into the canonical request.
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(n, _)| claim.signed_headers.iter().any(|s| s == n.as_str()))
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let payload = match claim.expires_s {
        Some(_) => sigv4::UNSIGNED_PAYLOAD,
        None => header_value("x-amz-content-sha256").ok_or_else(|| {
            S3Error::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "Missing required header for this request: x-amz-content-sha256",
            )
        })?,
    };
    let r =
        sigv4::Request { method: req.method.as_str(), path, query, headers: &headers, payload_hash: payload };
    sigv4::verify(secret, &claim, &r).map_err(|_| S3Error::signature_mismatch())?;
    if !bucket.is_empty() {
        auth.allows(&claim.access_key, bucket, read).map_err(S3Error::access_denied)?;
    }
    let chunks = payload.starts_with("STREAMING-AWS4-HMAC-SHA256-PAYLOAD") && claim.expires_s.is_none();
    let chunk_signer = if chunks { sigv4::ChunkSigner::new(secret, &claim) } else { None };
    Ok((Some(claim.access_key), chunk_signer))
}

/// The verdict on a Signature Version 2 presigned URL (`sigv2.rs`): not expired (and not
/// valid for more than 7 days, as a SigV4 URL may not be), signed by a known key that may use
/// the bucket. Returns the key's id.
fn authorize_v2(
    auth: &crate::auth::Auth,
    req: &hyper::http::request::Parts,
    resource: &str,
    query: &[(String, String)],
    bucket: &str,
    claim: sigv2::Claim,
) -> Result<String, S3Error> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if claim.expires_s < now {
        return Err(S3Error::access_denied("Request has expired"));
    }
    if claim.expires_s > now + sigv4::PRESIGN_MAX_S + SKEW_MAX_S {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "AuthorizationQueryParametersError",
            "Expires must be less than a week (604800 seconds) in the future",
        ));
    }
    let Some(secret) = auth.secret_of(&claim.access_key) else {
        return Err(S3Error::unknown_access_key());
    };
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(n, _)| {
            matches!(n.as_str(), "content-md5" | "content-type") || n.as_str().starts_with("x-amz-")
        })
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let to_sign = sigv2::string_to_sign(req.method.as_str(), resource, query, &headers, claim.expires_s);
    sigv2::verify(secret, &claim, &to_sign).map_err(|_| S3Error::signature_mismatch())?;
    if !bucket.is_empty() {
        let read = matches!(req.method, Method::GET | Method::HEAD);
        auth.allows(&claim.access_key, bucket, read).map_err(S3Error::access_denied)?;
    }
    Ok(claim.access_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosted_buckets_come_from_the_host() {
        let d = Some("s3.example.com");
        assert_eq!(virtual_bucket("photos.s3.example.com", d), Some("photos"));
        assert_eq!(virtual_bucket("my.photos.s3.example.com:7073", d), Some("my.photos"));
        assert_eq!(virtual_bucket("s3.example.com:7073", d), None, "path-style on the domain itself");
        assert_eq!(virtual_bucket("photos.other.com", d), None);
        assert_eq!(virtual_bucket("xs3.example.com", d), None, "a label must end before the domain");
        assert_eq!(virtual_bucket("photos.s3.example.com", None), None, "not configured");
        assert_eq!(virtual_bucket("127.0.0.1:7073", d), None);
    }
}
