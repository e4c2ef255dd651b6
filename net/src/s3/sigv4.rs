//! AWS Signature Version 4 as an S3 server checks it: in the `Authorization` header and in
//! presigned query strings. The client's request is put in canonical form again here (path
//! and query decoded and encoded the AWS way, the signed headers trimmed, sorted by name),
//! signed with the access key's secret, and compared in constant time.
//!
//! Reference: "Authenticating Requests: Using the Authorization Header (AWS Signature
//! Version 4)" and "... Using Query Parameters" in the Amazon S3 API reference; the tests use
//! the examples published there.

use hmac::{Hmac, KeyInit, Mac};
use podstore_engine::{hex, hex_into};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The algorithm name in headers and query strings.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The payload hash of a request whose body is not signed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// Longest a presigned URL may be valid (7 days), seconds.
pub const PRESIGN_MAX_S: u64 = 7 * 86_400;

/// The header or query is not a SigV4 signature we can read, and why
/// (`AuthorizationHeaderMalformed` / `AuthorizationQueryParametersError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// The request is signed, but not by the secret of its access key (`SignatureDoesNotMatch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch;

/// What a request's signature claims: who signed, when, for which scope and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub access_key: String,
    /// `YYYYMMDD` of the scope.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lowercase header names, in the order given (sorted, as signers send them).
    pub signed_headers: Vec<String>,
    pub signature: Vec<u8>,
    /// `YYYYMMDDTHHMMSSZ`: `x-amz-date` (header) or `X-Amz-Date` (query).
    pub amz_date: String,
    /// Presigned: seconds the URL is valid for (`X-Amz-Expires`).
    pub expires_s: Option<u64>,
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// `Credential=AKID/20130524/us-east-1/s3/aws4_request`'s value: (key, date, region, service).
fn credential(v: &str) -> Result<(String, String, String, String), Malformed> {
    let bad = Malformed("the credential is not access-key/date/region/service/aws4_request");
    let mut it = v.rsplitn(5, '/');
    let (Some("aws4_request"), Some(service), Some(region), Some(date), Some(key)) =
        (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return Err(bad);
    };
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) || key.is_empty() {
        return Err(bad);
    }
    Ok((key.into(), date.into(), region.into(), service.into()))
}

fn signed_header_list(v: &str) -> Result<Vec<String>, Malformed> {
    let names: Vec<String> = v.split(';').map(str::to_string).collect();
    if names.iter().any(|n| n.is_empty() || n.bytes().any(|b| b.is_ascii_uppercase() || b == b' '))
        || !names.iter().any(|n| n == "host")
    {
        return Err(Malformed("SignedHeaders must be lowercase names and include host"));
    }
    Ok(names)
}

fn check_amz_date(d: &str) -> Result<(), Malformed> {
    let b = d.as_bytes();
    let ok = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(|c| c.is_ascii_digit());
    ok.then_some(()).ok_or(Malformed("the request's date is not YYYYMMDDTHHMMSSZ"))
}

/// Reads an `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`
/// header; `amz_date` is the request's `x-amz-date` (or `Date`, which S3 also takes: then in
/// the signature's form already converted by the caller).
pub fn parse_header(value: &str, amz_date: &str) -> Result<Claim, Malformed> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or(Malformed("only AWS4-HMAC-SHA256 signatures are accepted"))?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(Malformed("a part of Authorization has no ="))?;
        match k {
            "Credential" => cred = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => sig = Some(v),
            _ => return Err(Malformed("Authorization has an unknown part")),
        }
    }
    let (Some(cred), Some(signed), Some(sig)) = (cred, signed, sig) else {
        return Err(Malformed("Authorization needs Credential, SignedHeaders and Signature"));
    };
    check_amz_date(amz_date)?;
    let (access_key, date, region, service) = credential(cred)?;
    let signature =
        unhex(sig).filter(|s| s.len() == 32).ok_or(Malformed("the signature is not 64 hex digits"))?;
    Ok(Claim {
        access_key,
        date,
        region,
        service,
        signed_headers: signed_header_list(signed)?,
        signature,
        amz_date: amz_date.into(),
        expires_s: None,
    })
}

/// Reads a presigned URL's `X-Amz-*` parameters (decoded); None if the query has no
/// `X-Amz-Signature` (not presigned).
pub fn parse_query(params: &[(String, String)]) -> Option<Result<Claim, Malformed>> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let sig = get("X-Amz-Signature")?;
    Some((|| {
        if get("X-Amz-Algorithm") != Some(ALGORITHM) {
            return Err(Malformed("X-Amz-Algorithm must be AWS4-HMAC-SHA256"));
        }
        let missing = Malformed("a presigned URL needs X-Amz-Credential, -Date, -Expires and -SignedHeaders");
        let (cred, date, expires, signed) = match (
            get("X-Amz-Credential"),
            get("X-Amz-Date"),
            get("X-Amz-Expires"),
            get("X-Amz-SignedHeaders"),
        ) {
            (Some(c), Some(d), Some(e), Some(s)) => (c, d, e, s),
            _ => return Err(missing),
        };
        check_amz_date(date)?;
        let expires_s = expires
            .parse::<u64>()
            .ok()
            .filter(|e| (1..=PRESIGN_MAX_S).contains(e))
            .ok_or(Malformed("X-Amz-Expires must be 1 to 604800 seconds"))?;
        let (access_key, day, region, service) = credential(cred)?;
        let signature =
            unhex(sig).filter(|s| s.len() == 32).ok_or(Malformed("the signature is not 64 hex digits"))?;
        Ok(Claim {
            access_key,
            date: day,
            region,
            service,
            signed_headers: signed_header_list(signed)?,
            signature,
            amz_date: date.into(),
            expires_s: Some(expires_s),
        })
    })())
}

/// Percent-encodes as SigV4 wants: everything but `A-Z a-z 0-9 - . _ ~` (and `/` when
/// `keep_slash`), upper-case hex.
pub fn uri_encode(b: &[u8], keep_slash: bool, out: &mut String) {
    for &c in b {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) || (keep_slash && c == b'/') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
}

/// What of a request the signature covers. `path` is decoded (the object's path as the
/// client meant it); `query` decoded pairs in the order sent; `headers` (lowercase name,
/// value) as received.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a [u8],
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    /// `x-amz-content-sha256` as sent, or `UNSIGNED-PAYLOAD` for a presigned URL.
    pub payload_hash: &'a str,
}

/// The canonical request of `r` for `claim` (presigned: without `X-Amz-Signature`).
pub fn canonical_request(r: &Request<'_>, claim: &Claim) -> String {
    let mut out = String::with_capacity(256 + r.path.len() * 3);
    out.push_str(r.method);
    out.push('\n');
    uri_encode(r.path, true, &mut out);
    out.push('\n');
    let mut q: Vec<(String, String)> = r
        .query
        .iter()
        .filter(|(k, _)| !(claim.expires_s.is_some() && k == "X-Amz-Signature"))
        .map(|(k, v)| {
            let (mut ek, mut ev) = (String::new(), String::new());
            uri_encode(k.as_bytes(), false, &mut ek);
            uri_encode(v.as_bytes(), false, &mut ev);
            (ek, ev)
        })
        .collect();
    q.sort();
    for (i, (k, v)) in q.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out.push('\n');
    for name in &claim.signed_headers {
        out.push_str(name);
        out.push(':');
        // Each value trimmed, inner runs of spaces as one; several values joined by commas.
        for (i, (_, v)) in r.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).enumerate() {
            if i > 0 {
                out.push(',');
            }
            for (j, word) in v.split_whitespace().enumerate() {
                if j > 0 {
                    out.push(' ');
                }
                out.push_str(word);
            }
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&claim.signed_headers.join(";"));
    out.push('\n');
    out.push_str(r.payload_hash);
    out
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// The string to sign of a canonical request, and the key that signs it (derived from the
/// secret for the claim's date, region and service).
fn string_and_key(secret: &str, claim: &Claim, canonical: &str) -> (String, [u8; 32]) {
    // Built in place at their final sizes (format! grew them, a reallocation or two each,
    // on every signed request).
    let mut scope = String::with_capacity(claim.date.len() + claim.region.len() + claim.service.len() + 15);
    for part in [&claim.date, &claim.region, &claim.service] {
        scope.push_str(part);
        scope.push('/');
    }
    scope.push_str("aws4_request");
    let digest = Sha256::digest(canonical.as_bytes());
    let mut to_sign = String::with_capacity(ALGORITHM.len() + claim.amz_date.len() + scope.len() + 67);
    for part in [ALGORITHM, &claim.amz_date, &scope] {
        to_sign.push_str(part);
        to_sign.push('\n');
    }
    hex_into(&digest, &mut to_sign);
    (to_sign, signing_key(secret, &scope))
}

/// Signing keys derived lately on this thread: (secret, scope, key). A key serves every
/// request of its secret for a day, and deriving it costs four HMACs per request otherwise.
type DerivedKeys = Vec<(String, String, [u8; 32])>;

thread_local! {
    static SIGNING_KEYS: std::cell::RefCell<DerivedKeys> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How many signing keys a thread keeps (the access keys in use, each for today and perhaps
/// yesterday).
const SIGNING_KEYS_KEPT: usize = 16;

/// The key that signs requests of `scope` (`date/region/service/aws4_request`) with `secret`.
fn signing_key(secret: &str, scope: &str) -> [u8; 32] {
    // The secret is compared without an early exit, so the time taken says nothing of it.
    let same_secret = |a: &str| {
        a.len() == secret.len() && a.bytes().zip(secret.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    };
    let cached = SIGNING_KEYS
        .with_borrow(|keys| keys.iter().find(|(s, sc, _)| sc == scope && same_secret(s)).map(|k| k.2));
    if let Some(k) = cached {
        return k;
    }
    let mut k = hmac(format!("AWS4{secret}").as_bytes(), scope.split('/').next().unwrap_or("").as_bytes());
    for part in scope.split('/').skip(1) {
        k = hmac(&k, part.as_bytes());
    }
    SIGNING_KEYS.with_borrow_mut(|keys| {
        if keys.len() == SIGNING_KEYS_KEPT {
            keys.remove(0);
        }
        keys.push((secret.to_string(), scope.to_string(), k));
    });
    k
}

/// The signature of a canonical request with `secret`, for the claim's date and scope.
pub fn signature(secret: &str, claim: &Claim, canonical: &str) -> [u8; 32] {
    let (to_sign, key) = string_and_key(secret, claim, canonical);
    hmac(&key, to_sign.as_bytes())
}

/// Checks `claim`'s signature of `r` with `secret` (constant time).
pub fn verify(secret: &str, claim: &Claim, r: &Request<'_>) -> Result<(), Mismatch> {
    let (to_sign, key) = string_and_key(secret, claim, &canonical_request(r, claim));
    let mut m = HmacSha256::new_from_slice(&key).expect("HMAC takes any key length");
    m.update(to_sign.as_bytes());
    m.verify_slice(&claim.signature).map_err(|_| Mismatch)
}

/// Signs a request as an S3 client does: the `Authorization` header's value for `headers`
/// (lowercase name, value; all of them signed: `host`, `x-amz-date` = `amz_date` and
/// `x-amz-content-sha256` = `payload_hash` among them), scope `us-east-1`/`s3`. For load
/// generators and tests that speak S3 without an SDK.
#[allow(clippy::too_many_arguments)]
pub fn authorization(
    access_key: &str,
    secret: &str,
    amz_date: &str,
    method: &str,
    path: &[u8],
    query: &[(String, String)],
    headers: &[(String, String)],
    payload_hash: &str,
) -> String {
    let mut names: Vec<String> = headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    let claim = Claim {
        access_key: access_key.into(),
        date: amz_date.get(..8).unwrap_or("").into(),
        region: "us-east-1".into(),
        service: "s3".into(),
        signed_headers: names,
        signature: Vec::new(),
        amz_date: amz_date.into(),
        expires_s: None,
    };
    let r = Request { method, path, query, headers, payload_hash };
    let sig = signature(secret, &claim, &canonical_request(&r, &claim));
    format!(
        "{ALGORITHM} Credential={access_key}/{}/us-east-1/s3/aws4_request, SignedHeaders={}, Signature={}",
        claim.date,
        claim.signed_headers.join(";"),
        hex(&sig)
    )
}

/// The SHA-256 of nothing, in hex (a chunk's string to sign holds it).
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The signatures of an aws-chunked body (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, and its
/// `-TRAILER` form): each chunk is signed with the one before's signature, the first with the
/// request's own ("Signature Calculations ... Transferring Payload in Multiple Chunks" in the
/// S3 API reference, whose example the tests check).
#[derive(Debug, Clone)]
pub struct ChunkSigner {
    key: [u8; 32],
    /// `AWS4-HMAC-SHA256-PAYLOAD`'s lines after the algorithm: the date and the scope.
    date_scope: String,
    previous: [u8; 32],
}

impl ChunkSigner {
    /// The signer of a body whose request `claim` (signed with `secret`) was verified.
    pub fn new(secret: &str, claim: &Claim) -> Option<ChunkSigner> {
        let scope = format!("{}/{}/{}/aws4_request", claim.date, claim.region, claim.service);
        let previous = claim.signature.as_slice().try_into().ok()?;
        Some(ChunkSigner {
            key: signing_key(secret, &scope),
            date_scope: format!("{}\n{scope}\n", claim.amz_date),
            previous,
        })
    }

    fn sign(&self, algorithm: &str, tail: &str) -> [u8; 32] {
        let mut to_sign =
            String::with_capacity(algorithm.len() + self.date_scope.len() + 64 + 2 + tail.len());
        to_sign.push_str(algorithm);
        to_sign.push('\n');
        to_sign.push_str(&self.date_scope);
        hex_into(&self.previous, &mut to_sign);
        to_sign.push('\n');
        to_sign.push_str(tail);
        hmac(&self.key, to_sign.as_bytes())
    }

    /// The signature of the next chunk, whose data has SHA-256 `data_sha256`; it becomes the
    /// one the chunk after is signed with.
    pub fn next_chunk(&mut self, data_sha256: &[u8; 32]) -> [u8; 32] {
        let mut tail = String::with_capacity(EMPTY_SHA256.len() + 65);
        tail.push_str(EMPTY_SHA256);
        tail.push('\n');
        hex_into(data_sha256, &mut tail);
        self.previous = self.sign("AWS4-HMAC-SHA256-PAYLOAD", &tail);
        self.previous
    }

    /// The signature of the trailer (its lines, each `name:value\n`), after the last chunk.
    pub fn trailer(&mut self, lines: &[u8]) -> [u8; 32] {
        let mut tail = String::with_capacity(64);
        hex_into(&Sha256::digest(lines), &mut tail);
        self.previous = self.sign("AWS4-HMAC-SHA256-TRAILER", &tail);
        self.previous
    }
}

/// Compares a signature with the hex a client sent, in constant time.
pub fn same_signature(want: &[u8; 32], sent_hex: &[u8]) -> bool {
    let mut wanted = String::with_capacity(64);
    hex_into(want, &mut wanted);
    wanted.len() == sent_hex.len()
        && wanted.bytes().zip(sent_hex).fold(0u8, |d, (a, b)| d | (a ^ b.to_ascii_lowercase())) == 0
}

/// `YYYYMMDDTHHMMSSZ` of a time in milliseconds since the epoch (`x-amz-date`).
pub fn amz_date(ms: u64) -> String {
    let iso = crate::units::iso8601_ms(ms); // 2026-12-07T20:12:00.000Z
    iso.get(..19).unwrap_or("").replace(['-', ':'], "") + "Z"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_signatures_are_the_published_example() {
        // S3 API reference, "Example: PUT Object" of "Transferring Payload in Multiple
        // Chunks": 65536 and 1024 bytes of 'a', then the empty last chunk.
        let claim = Claim {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            date: "20130524".into(),
            region: "us-east-1".into(),
            service: "s3".into(),
            signed_headers: Vec::new(),
            signature: unhex("4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9")
                .expect("hex"),
            amz_date: "20130524T000000Z".into(),
            expires_s: None,
        };
        let mut s = ChunkSigner::new(SECRET, &claim).expect("a signature of 32 bytes");
        let sha = |b: &[u8]| -> [u8; 32] { Sha256::digest(b).into() };
        let c1 = s.next_chunk(&sha(&[b'a'; 65536]));
        assert_eq!(hex(&c1), "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648");
        let c2 = s.next_chunk(&sha(&[b'a'; 1024]));
        assert_eq!(hex(&c2), "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497");
        let c3 = s.next_chunk(&sha(b""));
        assert_eq!(hex(&c3), "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9");
        assert!(same_signature(&c3, b"B6C6EA8A5354EAF15B3CB7646744F4275B71EA724FED81CEB9323E279D449DF9"));
        assert!(!same_signature(&c3, b"b6c6"));
        assert!(!same_signature(&c2, c3.as_slice()));
    }

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// A header-signed request from the S3 API reference's examples: its signature must be
    /// the published one, and any change to what it covers must break it.
    fn header_case(
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        payload: &str,
        auth: &str,
        want: &str,
    ) {
        let claim = parse_header(auth, "20130524T000000Z").expect("parses");
        assert_eq!(hex(&claim.signature), want);
        let (query, headers) = (h(query), h(headers));
        let r = Request {
            method,
            path: path.as_bytes(),
            query: &query,
            headers: &headers,
            payload_hash: payload,
        };
        assert_eq!(hex(&signature(SECRET, &claim, &canonical_request(&r, &claim))), want, "{path}");
        assert_eq!(verify(SECRET, &claim, &r), Ok(()));
        assert_eq!(verify("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEz", &claim, &r), Err(Mismatch));
        let r2 = Request { method: "DELETE", ..r };
        assert_eq!(verify(SECRET, &claim, &r2), Err(Mismatch));
    }

    #[test]
    fn the_published_examples_verify() {
        header_case(
            "GET",
            "/test.txt",
            &[],
            &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY),
                ("x-amz-date", "20130524T000000Z"),
            ],
            EMPTY,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        );
        let put_hash = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
        header_case(
            "PUT",
            "/test$file.text",
            &[],
            &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("date", "Fri, 24 May 2013 00:00:00 GMT"),
                ("x-amz-date", "20130524T000000Z"),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                ("x-amz-content-sha256", put_hash),
            ],
            put_hash,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, \
             Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
        );
        let hdrs = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", EMPTY),
            ("x-amz-date", "20130524T000000Z"),
        ];
        header_case(
            "GET",
            "/",
            &[("lifecycle", "")],
            &hdrs,
            EMPTY,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
             Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        );
        // The query's order as sent does not matter: it is sorted.
        header_case(
            "GET",
            "/",
            &[("prefix", "J"), ("max-keys", "2")],
            &hdrs,
            EMPTY,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
             Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        );
    }

    #[test]
    fn a_client_signature_is_the_published_one() {
        let headers: Vec<(String, String)> = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY),
            ("x-amz-date", "20130524T000000Z"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        let got = authorization(
            "AKIAIOSFODNN7EXAMPLE",
            SECRET,
            "20130524T000000Z",
            "GET",
            b"/test.txt",
            &[],
            &headers,
            EMPTY,
        );
        assert_eq!(
            got,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_369_353_600_000), "20130524T000000Z");
    }

    #[test]
    fn the_published_presigned_url_verifies() {
        let q = h(&[
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"),
            ("X-Amz-Date", "20130524T000000Z"),
            ("X-Amz-Expires", "86400"),
            ("X-Amz-SignedHeaders", "host"),
            ("X-Amz-Signature", "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"),
        ]);
        let claim = parse_query(&q).expect("presigned").expect("parses");
        assert_eq!(claim.expires_s, Some(86_400));
        let headers = h(&[("host", "examplebucket.s3.amazonaws.com")]);
        let r = Request {
            method: "GET",
            path: b"/test.txt",
            query: &q,
            headers: &headers,
            payload_hash: UNSIGNED_PAYLOAD,
        };
        assert_eq!(verify(SECRET, &claim, &r), Ok(()));
        let r = Request { path: b"/test.txu", ..r };
        assert_eq!(verify(SECRET, &claim, &r), Err(Mismatch));
        let mut long = q.clone();
        long[3].1 = "604801".into();
        assert!(matches!(parse_query(&long), Some(Err(Malformed(_)))));
        assert!(parse_query(&h(&[("prefix", "a")])).is_none());
    }

    #[test]
    fn malformed_signatures_are_refused_not_misread() {
        let d = "20130524T000000Z";
        for bad in [
            "AWS4-HMAC-SHA1 Credential=A/20130524/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=A/2013052/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=",
            "AWS4-HMAC-SHA256 Credential=A/20130524/us-east-1/s3/aws4_request, SignedHeaders=range, Signature=",
            "AWS4-HMAC-SHA256 Credential=A/20130524/us-east-1/s3, SignedHeaders=host, Signature=",
            "AWS4-HMAC-SHA256 Credential=A/20130524/us-east-1/s3/aws4_request, SignedHeaders=Host, Signature=",
            "AWS4-HMAC-SHA256 Credential=A/20130524/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=zz",
            "AWS4-HMAC-SHA256 Credential=A/20130524/us-east-1/s3/aws4_request",
            "AWS4-HMAC-SHA256Credential=A/20130524/us-east-1/s3/aws4_request",
        ] {
            assert!(matches!(parse_header(bad, d), Err(Malformed(_))), "{bad}");
        }
        let ok = format!(
            "AWS4-HMAC-SHA256 Credential=A/20130524/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={}",
            "0".repeat(64)
        );
        assert!(parse_header(&ok, d).is_ok());
        assert!(parse_header(&ok, "2013-05-24T00:00:00Z").is_err());
    }

    #[test]
    fn paths_and_queries_are_encoded_the_aws_way() {
        let mut s = String::new();
        uri_encode("a b/ключ+~*".as_bytes(), true, &mut s);
        assert_eq!(s, "a%20b/%D0%BA%D0%BB%D1%8E%D1%87%2B~%2A");
        s.clear();
        uri_encode(b"a/b=c", false, &mut s);
        assert_eq!(s, "a%2Fb%3Dc");
    }
}
