//! AWS Signature Version 2 in presigned URLs (`?AWSAccessKeyId=...&Expires=...&Signature=...`),
//! which boto3's `generate_presigned_url` makes by default: the signature is the base64 of the
//! HMAC-SHA1, with the access key's secret, of
//!
//! ```text
//! <method>\n<Content-MD5>\n<Content-Type>\n<Expires>\n<x-amz-* headers, name:value\n each>
//! <resource: /bucket/key as sent, then its subresources in name order>
//! ```
//!
//! ("Query string request authentication alternative" in the Amazon S3 developer guide, whose
//! example the tests check). Only presigned URLs: SigV2 in the Authorization header is
//! refused like any unreadable signature.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};

use super::sigv4::Malformed;

type HmacSha1 = Hmac<sha1::Sha1>;

/// What a SigV2 presigned URL claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub access_key: String,
    /// When the URL stops being valid, seconds since the epoch.
    pub expires_s: u64,
    pub signature: Vec<u8>,
}

/// The query parameters a signed resource names (S3's list; `response-*` overrides among them).
const SUBRESOURCES: [&str; 30] = [
    "acl",
    "cors",
    "delete",
    "lifecycle",
    "location",
    "logging",
    "notification",
    "partNumber",
    "policy",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
    "accelerate",
    "replication",
    "object-lock",
    "select",
    "select-type",
];

/// Reads a SigV2 presigned URL's parameters (decoded); None when the query has no
/// `Signature` and `AWSAccessKeyId` (not one).
pub fn parse_query(params: &[(String, String)]) -> Option<Result<Claim, Malformed>> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let (key, sig) = (get("AWSAccessKeyId")?, get("Signature")?);
    Some((|| {
        let expires_s = get("Expires")
            .and_then(|e| e.parse().ok())
            .ok_or(Malformed("a presigned URL needs Expires (seconds since the epoch)"))?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(sig.trim())
            .ok()
            .filter(|s| s.len() == 20)
            .ok_or(Malformed("the signature is not the base64 of 20 bytes"))?;
        Ok(Claim { access_key: key.to_string(), expires_s, signature })
    })())
}

/// The string a SigV2 presigned URL signs. `resource`: the path as sent (still
/// percent-encoded), `/bucket` before it for a virtual-hosted request; `headers`: the
/// request's (lower-case names).
pub fn string_to_sign(
    method: &str,
    resource: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    expires_s: u64,
) -> String {
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map_or("", |(_, v)| v.trim());
    let mut s = format!("{method}\n{}\n{}\n{expires_s}\n", header("content-md5"), header("content-type"));
    let mut amz: Vec<(&str, String)> = Vec::new();
    for (n, v) in headers.iter().filter(|(n, _)| n.starts_with("x-amz-")) {
        match amz.iter_mut().find(|(k, _)| k == n) {
            Some((_, all)) => {
                all.push(',');
                all.push_str(v.trim());
            }
            None => amz.push((n, v.trim().to_string())),
        }
    }
    amz.sort();
    for (n, v) in amz {
        s.push_str(&format!("{n}:{v}\n"));
    }
    s.push_str(resource);
    let mut subs: Vec<&(String, String)> =
        query.iter().filter(|(k, _)| SUBRESOURCES.contains(&k.as_str())).collect();
    subs.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (k, v)) in subs.into_iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(k);
        if !v.is_empty() {
            s.push('=');
            s.push_str(v);
        }
    }
    s
}

/// The signature of a string to sign with `secret`.
pub fn sign(secret: &str, to_sign: &str) -> [u8; 20] {
    let mut m = HmacSha1::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(to_sign.as_bytes());
    m.finalize().into_bytes().into()
}

/// Checks `claim`'s signature of `to_sign` with `secret` (constant time).
pub fn verify(secret: &str, claim: &Claim, to_sign: &str) -> Result<(), super::sigv4::Mismatch> {
    let mut m = HmacSha1::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(to_sign.as_bytes());
    m.verify_slice(&claim.signature).map_err(|_| super::sigv4::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    #[test]
    fn the_published_example_verifies_and_changes_break_it() {
        // The S3 developer guide's query-string authentication example.
        let params = vec![
            ("AWSAccessKeyId".to_string(), "AKIAIOSFODNN7EXAMPLE".to_string()),
            ("Expires".to_string(), "1175139620".to_string()),
            ("Signature".to_string(), "NpgCjnDzrM+WFzoENXmpNDUsSn8=".to_string()),
        ];
        let claim = parse_query(&params).expect("a SigV2 URL").expect("readable");
        assert_eq!(claim.expires_s, 1_175_139_620);
        let s = string_to_sign("GET", "/johnsmith/photos/puppy.jpg", &params, &[], claim.expires_s);
        assert_eq!(s, "GET\n\n\n1175139620\n/johnsmith/photos/puppy.jpg");
        assert!(verify(SECRET, &claim, &s).is_ok());
        for other in [
            string_to_sign("PUT", "/johnsmith/photos/puppy.jpg", &params, &[], claim.expires_s),
            string_to_sign("GET", "/johnsmith/photos/kitten.jpg", &params, &[], claim.expires_s),
            string_to_sign("GET", "/johnsmith/photos/puppy.jpg", &params, &[], claim.expires_s + 1),
        ] {
            assert!(verify(SECRET, &claim, &other).is_err(), "{other:?}");
        }
        assert!(verify("another secret", &claim, &s).is_err());
    }

    #[test]
    fn subresources_and_amz_headers_are_signed_in_order() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let query = q(&[("uploadId", "abc"), ("partNumber", "2"), ("Expires", "9"), ("x-id", "UploadPart")]);
        let headers = q(&[("x-amz-meta-b", "2"), ("content-type", "text/plain"), ("x-amz-meta-a", " 1 ")]);
        assert_eq!(
            string_to_sign("PUT", "/b/k", &query, &headers, 9),
            "PUT\n\ntext/plain\n9\nx-amz-meta-a:1\nx-amz-meta-b:2\n/b/k?partNumber=2&uploadId=abc"
        );
        assert!(parse_query(&q(&[("Signature", "x")])).is_none(), "no access key: not SigV2");
        assert!(parse_query(&q(&[("AWSAccessKeyId", "k"), ("Signature", "AAAA")])).expect("v2").is_err());
    }
}
