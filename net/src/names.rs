//! Bucket and key names (API.md "Names"): parsing a request path into a validated bucket and
//! key. Keys are data, never paths: nothing here touches a filesystem.

/// Longest key of a name, in bytes after percent-decoding (API.md "Names").
pub const KEY_BYTES_MAX: usize = 1024;
/// Longest bucket name.
pub const BUCKET_BYTES_MAX: usize = 63;
// Every valid name fits the engine's storage key (bucket, a slash, the key).
const _: () = assert!(BUCKET_BYTES_MAX + 1 + KEY_BYTES_MAX <= podstore_engine::record::KEY_MAX_BYTES);

/// Why a path is not an object name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The path names no object (no key, or a bucket/key that breaks the rules).
    Invalid(&'static str),
}

/// A validated object name: the storage key is `bucket` + `/` + `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectName {
    pub bucket: String,
    pub key: Vec<u8>,
}

impl ObjectName {
    /// The engine key: bucket, a slash, the key bytes.
    pub fn storage_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.bucket.len() + 1 + self.key.len());
        k.extend_from_slice(self.bucket.as_bytes());
        k.push(b'/');
        k.extend_from_slice(&self.key);
        k
    }
}

/// Splits an engine key (`bucket/key`) back into bucket and key.
pub fn split_storage_key(storage_key: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = storage_key.iter().position(|&b| b == b'/')?;
    Some((&storage_key[..at], &storage_key[at + 1..]))
}

/// Checks a bucket name: 3–63 of `a-z 0-9 . -`, starting and ending with a letter or digit.
pub fn valid_bucket(b: &str) -> bool {
    let bytes = b.as_bytes();
    (3..=BUCKET_BYTES_MAX).contains(&bytes.len())
        && bytes.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes a path segment; a malformed escape is an error.
pub fn percent_decode(s: &str) -> Result<Vec<u8>, NameError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(h), Some(l)) = (b.get(i + 1).and_then(|&c| hex(c)), b.get(i + 2).and_then(|&c| hex(c)))
            else {
                return Err(NameError::Invalid("malformed percent escape"));
            };
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Parses `/{bucket}/{key}` (the path without the query). `key_bytes_max` bounds the key.
pub fn parse_object_path(path: &str, key_bytes_max: usize) -> Result<ObjectName, NameError> {
    let rest = path.strip_prefix('/').ok_or(NameError::Invalid("path must start with /"))?;
    let (bucket, key) = rest.split_once('/').ok_or(NameError::Invalid("no key in the path"))?;
    let key = percent_decode(key)?;
    validate_name(bucket, &key, key_bytes_max)?;
    Ok(ObjectName { bucket: bucket.to_string(), key })
}

/// Checks a bucket and a decoded key against API.md's rules (used for requests and for
/// writes copied from peers alike).
pub fn validate_name(bucket: &str, key: &[u8], key_bytes_max: usize) -> Result<(), NameError> {
    if !valid_bucket(bucket) {
        return Err(NameError::Invalid("bucket names are 3-63 characters of a-z 0-9 . -"));
    }
    if key.is_empty() {
        return Err(NameError::Invalid("empty key"));
    }
    if key.len() > key_bytes_max {
        return Err(NameError::Invalid("key too long"));
    }
    let text = std::str::from_utf8(key).map_err(|_| NameError::Invalid("key is not UTF-8"))?;
    if text.chars().any(char::is_control) {
        return Err(NameError::Invalid("key contains a control character"));
    }
    Ok(())
}

/// [`validate_name`] for a copied write, which may also be a bucket's own record (an empty
/// key: `bucket/`, written by S3's CreateBucket so every member knows the bucket) or a record
/// of the node's own reserved buckets (a multipart upload's state and parts, `manifest.rs`:
/// any key that fits the engine's).
pub fn validate_copied_name(bucket: &str, key: &[u8], key_bytes_max: usize) -> Result<(), NameError> {
    if key.is_empty() && valid_bucket(bucket) {
        return Ok(());
    }
    if crate::manifest::is_reserved_bucket(bucket.as_bytes()) {
        return match key.len() {
            0 => Err(NameError::Invalid("empty key")),
            n if bucket.len() + 1 + n > podstore_engine::record::KEY_MAX_BYTES => {
                Err(NameError::Invalid("key too long"))
            }
            _ => Ok(()),
        };
    }
    validate_name(bucket, key, key_bytes_max)
}

/// An access key id: 1-64 of `A-Z a-z 0-9 _ -` (no dot: the token splits at the first).
pub fn valid_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_key_ids() {
        assert!(valid_key_id("uploader-1") && !valid_key_id("a.b") && !valid_key_id(""));
        assert!(valid_key_id(&"k".repeat(64)) && !valid_key_id(&"k".repeat(65)));
    }

    fn key(path: &str) -> Result<Vec<u8>, NameError> {
        parse_object_path(path, 1024).map(|n| n.key)
    }

    #[test]
    fn names_follow_the_api() {
        assert_eq!(key("/photos/a/b.jpg"), Ok(b"a/b.jpg".to_vec()));
        assert_eq!(key("/photos/a%2Fb"), key("/photos/a/b"));
        assert_eq!(key("/photos/..%2Fx"), Ok(b"../x".to_vec()));
        assert_eq!(key("/photos/%2e%2e%2f"), Ok(b"../".to_vec()));
        assert_eq!(key("/photos/a//b"), Ok(b"a//b".to_vec()));
        assert_eq!(key("/photos/%D0%BA%D0%BB"), Ok("кл".as_bytes().to_vec()));
        assert!(key("/photos/").is_err());
        assert!(key("/photos").is_err());
        assert!(key("/Photos/a").is_err());
        assert!(key("/ph/a").is_err());
        assert!(key("/-photos/a").is_err());
        assert!(key("/_/health").is_err());
        assert!(key("/photos/a%00b").is_err());
        assert!(key("/photos/a%7Fb").is_err());
        assert!(key("/photos/a%C2%85b").is_err(), "C1 control");
        assert!(key("/photos/%FF").is_err(), "invalid UTF-8");
        assert!(key("/photos/%4").is_err());
        assert_eq!(parse_object_path(&format!("/photos/{}", "k".repeat(1024)), 1024).map(|_| ()), Ok(()));
        assert!(parse_object_path(&format!("/photos/{}", "k".repeat(1025)), 1024).is_err());
        assert!(valid_bucket("a.b-c") && !valid_bucket("ab.") && !valid_bucket(&"a".repeat(64)));
    }
}
