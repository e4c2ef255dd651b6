//! Client authentication on the data port (API.md "Authentication", issue 8).
//!
//! Access keys are named in the config (`[[auth.keys]]`: an id, a secret file readable by the
//! service only, optionally the buckets the key may use and `read_only`); `auth.public_buckets`
//! may be read by anyone. With keys configured, every PUT and DELETE, and every GET and HEAD
//! of a bucket that is not public, carries one of:
//!
//! - `Authorization: Bearer <id>.<secret>`;
//! - a presigned URL: `?x-podstore-key=<id>&x-podstore-expires=<unix seconds>&x-podstore-signature=<hex>`,
//!   the signature being HMAC-SHA256 under the key's secret over
//!   `podstore-presign-v1 \n METHOD \n bucket \n key \n expires` (the key's bytes as stored,
//!   percent-decoded), valid until `expires`, which may be at most 7 days ahead. A URL signed
//!   for GET also serves HEAD.
//!
//! No or unknown credentials: 401; credentials that don't allow the request (a bucket outside
//! the key's list, a write with a read-only key, a bad or expired signature): 403. The check
//! comes before anything looks at the disks, so neither answer tells whether an object
//! exists. Secrets are compared through HMAC tags, in constant time.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::config::AuthConf;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Shortest access key secret accepted.
pub const SECRET_MIN_BYTES: usize = 32;
/// How far ahead a presigned URL may expire.
pub const PRESIGN_MAX_S: u64 = 7 * 86_400;
/// Clock skew allowed between the signer and this node on the 7-day limit.
const SKEW_S: u64 = 300;

pub const QUERY_KEY: &str = "x-podstore-key";
pub const QUERY_EXPIRES: &str = "x-podstore-expires";
pub const QUERY_SIGNATURE: &str = "x-podstore-signature";

struct AccessKey {
    id: String,
    secret: Vec<u8>,
    /// Empty: every bucket.
    buckets: Vec<String>,
    read_only: bool,
}

/// The access keys and public buckets, loaded at start.
pub struct Auth {
    keys: Vec<AccessKey>,
    public_buckets: Vec<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Auth").field("keys", &ids).field("public_buckets", &self.public_buckets).finish()
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401: no credentials, or credentials of no configured key.
    Unauthorized(&'static str),
    /// 403: credentials that do not allow this request.
    Forbidden(&'static str),
}

/// What a request asks for, as far as authentication is concerned.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// `GET`, `HEAD`, `PUT` or `DELETE`.
    pub method: &'a str,
    pub bucket: &'a str,
    /// The key's bytes (percent-decoded).
    pub key: &'a [u8],
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a [u8]>,
    /// The URL's query, if any.
    pub query: Option<&'a str>,
    /// Now, in seconds since the epoch.
    pub now_s: u64,
}

/// Characters a secret may hold: those of a bearer token (RFC 6750 b64token), so that
/// `<id>.<secret>` can be sent as one.
fn token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c)
}

/// Reads an access key's secret file: private to its owner (no group or other permission
/// bits), at least `SECRET_MIN_BYTES` of bearer-token characters (surrounding whitespace
/// ignored; e.g. `head -c 33 /dev/urandom | base64`).
pub fn read_key_secret(id: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let what = format!("access key {id:?}: secret_file {}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| format!("{what}: {e}"))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!("{what} is readable by others (mode {:o}); chmod 600 it", mode & 0o777));
    }
    let raw = std::fs::read(path).map_err(|e| format!("{what}: {e}"))?;
    let s = raw.trim_ascii();
    if s.len() < SECRET_MIN_BYTES {
        return Err(format!("{what} holds {} bytes; at least {SECRET_MIN_BYTES} are needed", s.len()));
    }
    if !s.iter().all(|&c| token_char(c)) {
        return Err(format!("{what} may hold only A-Z a-z 0-9 - . _ ~ + / = (base64 is fine)"));
    }
    Ok(s.to_vec())
}

/// HMAC-SHA256 of `parts` under `secret` (each part length-prefixed: no two lists of parts
/// share a message).
fn mac(secret: &[u8], domain: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(domain);
    for p in parts {
        m.update(&(p.len() as u32).to_le_bytes());
        m.update(p);
    }
    m
}

/// The presigned URL signature for a request (hex).
pub fn signature(secret: &[u8], method: &str, bucket: &str, key: &[u8], expires: u64) -> String {
    let expires = expires.to_string();
    let tag =
        mac(secret, b"podstore-presign-v1", &[method.as_bytes(), bucket.as_bytes(), key, expires.as_bytes()])
            .finalize()
            .into_bytes();
    podstore_engine::hex(&tag)
}

/// The query string of a presigned URL (without the `?`).
pub fn presign_query(
    id: &str,
    secret: &[u8],
    method: &str,
    bucket: &str,
    key: &[u8],
    expires: u64,
) -> String {
    let sig = signature(secret, method, bucket, key, expires);
    format!("{QUERY_KEY}={id}&{QUERY_EXPIRES}={expires}&{QUERY_SIGNATURE}={sig}")
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

impl Auth {
    /// The configured keys with their secrets read; None when no keys are configured (then
    /// every request is allowed).
    pub fn load(conf: &AuthConf) -> Result<Option<Auth>, String> {
        if conf.keys.is_empty() {
            return Ok(None);
        }
        let mut keys = Vec::with_capacity(conf.keys.len());
        for k in &conf.keys {
            keys.push(AccessKey {
                id: k.id.clone(),
                secret: read_key_secret(&k.id, &k.secret_file)?,
                buckets: k.buckets.clone(),
                read_only: k.read_only,
            });
        }
        Ok(Some(Auth { keys, public_buckets: conf.public_buckets.clone() }))
    }

    /// An `Auth` from secrets in memory (tests, tools).
    pub fn from_keys(keys: &[(&str, &[u8], &[&str], bool)], public_buckets: &[&str]) -> Auth {
        Auth {
            keys: keys
                .iter()
                .map(|(id, secret, buckets, read_only)| AccessKey {
                    id: id.to_string(),
                    secret: secret.to_vec(),
                    buckets: buckets.iter().map(|b| b.to_string()).collect(),
                    read_only: *read_only,
                })
                .collect(),
            public_buckets: public_buckets.iter().map(|b| b.to_string()).collect(),
        }
    }

    /// Whether anyone may read `bucket`.
    pub fn is_public(&self, bucket: &str) -> bool {
        self.public_buckets.iter().any(|b| b == bucket)
    }

    /// Access key `id`'s secret (S3 signs with it as the secret access key).
    pub fn secret_of(&self, id: &str) -> Option<&str> {
        let k = self.keys.iter().find(|k| k.id == id)?;
        // Secrets are token characters (read_key_secret): always UTF-8.
        std::str::from_utf8(&k.secret).ok()
    }

    /// Whether access key `id` (known) may read, or write, `bucket`: the reason if not.
    pub fn allows(&self, id: &str, bucket: &str, read: bool) -> Result<(), &'static str> {
        let Some(key) = self.keys.iter().find(|k| k.id == id) else { return Err("unknown access key") };
        if !key.buckets.is_empty() && !key.buckets.iter().any(|b| b == bucket) {
            return Err("the access key may not use this bucket");
        }
        if key.read_only && !read {
            return Err("the access key is read-only");
        }
        Ok(())
    }

    /// Whether the request may go on.
    pub fn check(&self, a: &Access) -> Result<(), Denied> {
        let read = matches!(a.method, "GET" | "HEAD");
        let params = a.query.map(presign_params).unwrap_or_default();
        let (key, presigned) = if let Some(h) = a.authorization {
            (self.bearer(h)?, false)
        } else if let Some(id) = params.key {
            let k =
                self.keys.iter().find(|k| k.id == id).ok_or(Denied::Unauthorized("unknown access key"))?;
            (k, true)
        } else if read && self.public_buckets.iter().any(|b| b == a.bucket) {
            return Ok(());
        } else {
            return Err(Denied::Unauthorized(
                "this request needs an access key: Authorization: Bearer or a presigned URL",
            ));
        };
        if presigned {
            let expires: u64 = params
                .expires
                .and_then(|e| e.parse().ok())
                .ok_or(Denied::Forbidden("the presigned URL has no valid x-podstore-expires"))?;
            let got = params
                .signature
                .and_then(unhex)
                .ok_or(Denied::Forbidden("the presigned URL has no valid x-podstore-signature"))?;
            // HEAD is served by a URL signed for GET too.
            let ok = |method: &str| {
                let e = expires.to_string();
                mac(
                    &key.secret,
                    b"podstore-presign-v1",
                    &[method.as_bytes(), a.bucket.as_bytes(), a.key, e.as_bytes()],
                )
                .verify_slice(&got)
                .is_ok()
            };
            if !(ok(a.method) || (a.method == "HEAD" && ok("GET"))) {
                return Err(Denied::Forbidden("the presigned URL's signature does not match"));
            }
            if expires < a.now_s {
                return Err(Denied::Forbidden("the presigned URL has expired"));
            }
            if expires > a.now_s + PRESIGN_MAX_S + SKEW_S {
                return Err(Denied::Forbidden("a presigned URL may expire at most 7 days ahead"));
            }
        }
        if !key.buckets.is_empty() && !key.buckets.iter().any(|b| b == a.bucket) {
            return Err(Denied::Forbidden("the access key may not use this bucket"));
        }
        if key.read_only && !read {
            return Err(Denied::Forbidden("the access key is read-only"));
        }
        Ok(())
    }

    /// The key a bearer token names, if its secret matches (compared as HMAC tags, in
    /// constant time; an unknown id costs the same work).
    fn bearer(&self, header: &[u8]) -> Result<&AccessKey, Denied> {
        let bad = Denied::Unauthorized("the access key or its secret is not known here");
        let token = header
            .strip_prefix(b"Bearer ")
            .ok_or(Denied::Unauthorized("the Authorization header must be: Bearer <id>.<secret>"))?
            .trim_ascii();
        let dot = token.iter().position(|&c| c == b'.').ok_or(bad.clone())?;
        let (id, secret) = (&token[..dot], &token[dot + 1..]);
        let key = self.keys.iter().find(|k| k.id.as_bytes() == id);
        let expected: &[u8] = key.map(|k| k.secret.as_slice()).unwrap_or(b"no such key: the same work");
        let given = mac(secret, b"podstore-bearer-v1", &[]).finalize().into_bytes();
        let matches = mac(expected, b"podstore-bearer-v1", &[]).verify_slice(&given).is_ok();
        match key {
            Some(k) if matches => Ok(k),
            _ => Err(bad),
        }
    }
}

#[derive(Default)]
struct PresignParams<'a> {
    key: Option<&'a str>,
    expires: Option<&'a str>,
    signature: Option<&'a str>,
}

fn presign_params(query: &str) -> PresignParams<'_> {
    let mut p = PresignParams::default();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            QUERY_KEY => p.key = Some(v),
            QUERY_EXPIRES => p.expires = Some(v),
            QUERY_SIGNATURE => p.signature = Some(v),
            _ => {}
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &[u8] = b"c2VjcmV0LW9uZS1mb3ItdGhlLXVwbG9hZGVyLWtleQ==";
    const S2: &[u8] = b"c2VjcmV0LXR3by1mb3ItdGhlLXJlYWRlci1rZXktLQ==";

    fn auth() -> Auth {
        Auth::from_keys(&[("up", S1, &[], false), ("ro", S2, &["photos"], true)], &["cdn-assets"])
    }

    fn req<'a>(
        method: &'a str,
        bucket: &'a str,
        authorization: Option<&'a [u8]>,
        query: Option<&'a str>,
    ) -> Access<'a> {
        Access { method, bucket, key: b"a/b c.jpg", authorization, query, now_s: 1_000_000 }
    }

    #[test]
    fn bearer_tokens() {
        let a = auth();
        let up = [b"Bearer up.".as_slice(), S1].concat();
        let ro = [b"Bearer ro.".as_slice(), S2].concat();
        assert_eq!(a.check(&req("PUT", "photos", Some(&up), None)), Ok(()));
        assert_eq!(a.check(&req("DELETE", "music", Some(&up), None)), Ok(()));
        assert_eq!(a.check(&req("GET", "photos", Some(&ro), None)), Ok(()));
        assert!(matches!(a.check(&req("PUT", "photos", Some(&ro), None)), Err(Denied::Forbidden(_))));
        assert!(matches!(a.check(&req("GET", "music", Some(&ro), None)), Err(Denied::Forbidden(_))));
        // Wrong secret, someone else's secret, unknown id, no dot, another scheme, nothing.
        let mut wrong = up.clone();
        *wrong.last_mut().expect("byte") ^= 1;
        for bad in [
            &wrong[..],
            &[b"Bearer up.".as_slice(), S2].concat(),
            &[b"Bearer xx.".as_slice(), S1].concat(),
            b"Bearer up",
            b"Basic dXA6eA==",
        ] {
            assert!(
                matches!(a.check(&req("GET", "photos", Some(bad), None)), Err(Denied::Unauthorized(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(a.check(&req("GET", "photos", None, None)), Err(Denied::Unauthorized(_))));
        // A public bucket is readable by anyone, not writable.
        assert_eq!(a.check(&req("GET", "cdn-assets", None, None)), Ok(()));
        assert_eq!(a.check(&req("HEAD", "cdn-assets", None, None)), Ok(()));
        assert!(matches!(a.check(&req("PUT", "cdn-assets", None, None)), Err(Denied::Unauthorized(_))));
    }

    #[test]
    fn presigned_urls() {
        let a = auth();
        let now = 1_000_000;
        let q = presign_query("up", S1, "GET", "photos", b"a/b c.jpg", now + 3600);
        assert_eq!(a.check(&req("GET", "photos", None, Some(&q))), Ok(()));
        assert_eq!(a.check(&req("HEAD", "photos", None, Some(&q))), Ok(()), "a GET URL serves HEAD");
        for (what, r) in [
            ("another method", req("PUT", "photos", None, Some(&q))),
            ("another bucket", req("GET", "music", None, Some(&q))),
            ("another key", Access { key: b"a/b c.jpeg", ..req("GET", "photos", None, Some(&q)) }),
            ("expired", Access { now_s: now + 3601, ..req("GET", "photos", None, Some(&q)) }),
        ] {
            assert!(matches!(a.check(&r), Err(Denied::Forbidden(_))), "{what}");
        }
        // Tampered expiry, signature, or one beyond 7 days; another key's secret.
        let later = q.replace(&format!("={}&", now + 3600), &format!("={}&", now + 7200));
        let far = presign_query("up", S1, "GET", "photos", b"a/b c.jpg", now + 8 * 86_400);
        let other = presign_query("up", S2, "GET", "photos", b"a/b c.jpg", now + 60);
        let mut flipped = q.clone();
        let last = flipped.pop().expect("char");
        flipped.push(if last == '0' { '1' } else { '0' });
        for bad in [
            later,
            far,
            other,
            flipped,
            format!("{QUERY_KEY}=up"),
            format!("{QUERY_KEY}=up&{QUERY_EXPIRES}=x&{QUERY_SIGNATURE}=zz"),
        ] {
            assert!(
                matches!(a.check(&req("GET", "photos", None, Some(&bad))), Err(Denied::Forbidden(_))),
                "{bad}"
            );
        }
        let unknown = presign_query("nobody", S1, "GET", "photos", b"a/b c.jpg", now + 60);
        assert!(matches!(a.check(&req("GET", "photos", None, Some(&unknown))), Err(Denied::Unauthorized(_))));
        // A read-only key may sign reads of its bucket only.
        let ro_put = presign_query("ro", S2, "PUT", "photos", b"a/b c.jpg", now + 60);
        assert!(matches!(a.check(&req("PUT", "photos", None, Some(&ro_put))), Err(Denied::Forbidden(_))));
    }

    #[test]
    fn secret_files_must_be_private_long_and_token_safe() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("podstore-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("k");
        std::fs::write(&p, [S1, b"\n"].concat()).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(read_key_secret("k", &p).expect_err("group-readable").contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_key_secret("k", &p).expect("secret"), S1);
        std::fs::write(&p, "too-short").expect("write");
        assert!(read_key_secret("k", &p).expect_err("short").contains("at least"));
        std::fs::write(&p, "0123456789 0123456789 0123456789 0123").expect("write");
        assert!(read_key_secret("k", &p).expect_err("space").contains("may hold only"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
