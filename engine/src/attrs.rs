//! What a record keeps about its object beside the bytes: the content type, the content
//! headers a client set (`Cache-Control`, `Content-Disposition`, `Content-Encoding`,
//! `Content-Language`, `Expires`, S3's `x-amz-meta-*`), and which digest its footer holds.
//!
//! The headers are stored after the content type in the record's header block (covered by its
//! checksum and tag), so a GET learns them from the one read it makes anyway. Their encoding:
//!
//! ```text
//! headers: pairs one after another, no count (the record header holds the length)
//!   name length u8 (1..=255), name (lower-case HTTP token characters),
//!   value length u16 LE, value (UTF-8 without control characters but tab)
//! ```
//!
//! At most [`HEADERS_MAX_BYTES`] encoded, so that a record's header block (128 bytes, the
//! longest key, the longest content type and these) stays within one 4 KiB read.
//!
//! Names starting with `x-podstore-` are the node's own, never a client's (`Attrs::new`
//! refuses them; `Attrs::headers` leaves them out). One so far: `x-podstore-multipart`, on the
//! record of a multipart object, whose data is then the manifest naming its parts (the net
//! crate's format): its value is the whole object's length, its part count and its ETag's
//! digest (MD5 of the parts' MD5s) as 32 hex digits, separated by spaces ([`Multipart`]).

/// Longest content type.
pub const CONTENT_TYPE_MAX_BYTES: usize = 255;
/// Longest encoded headers section. S3 allows 2 KiB of user metadata (names and values); this
/// leaves room for the standard content headers and the encoding's lengths.
pub const HEADERS_MAX_BYTES: usize = 2560;

/// The algorithm of a record's content digest (its footer's 16 bytes, the ETag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DigestKind {
    /// XXH3-128: the native API's (fast; shown to S3 clients with a `-1` suffix, never as an
    /// MD5).
    #[default]
    Xxh3,
    /// MD5: written through S3, whose clients compare the ETag with their own MD5.
    Md5,
}

/// Prefix of the header names that are the node's own.
const RESERVED_PREFIX: &str = "x-podstore-";
/// The header that marks a multipart object's manifest record.
const MULTIPART_HEADER: &str = "x-podstore-multipart";
/// The header that keeps the additional checksum (S3's `x-amz-checksum-*`) a write was
/// checked against: `<algorithm> <base64>`, the base64 with `-<parts>` for a multipart
/// object's composite checksum.
const CHECKSUM_HEADER: &str = "x-podstore-checksum";
/// The algorithms a kept checksum may name (the suffixes of S3's checksum headers).
pub const CHECKSUM_ALGORITHMS: [&str; 5] = ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];

fn checksum_ok(v: &str) -> bool {
    let Some((algorithm, value)) = v.split_once(' ') else { return false };
    let (b64, parts) = match value.split_once('-') {
        Some((b, n)) => (b, Some(n)),
        None => (value, None),
    };
    CHECKSUM_ALGORITHMS.contains(&algorithm)
        && (4..=88).contains(&b64.len())
        && b64.bytes().all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
        && parts.is_none_or(|n| n.parse::<u16>().is_ok_and(|n| n > 0))
}

/// What a multipart object's record says of the whole object (its data is the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Multipart {
    /// The whole object's length (its parts' lengths added up).
    pub object_len: u64,
    /// How many parts it has (1..=10,000).
    pub parts: u16,
    /// The MD5 of the parts' MD5s: with `-<parts>`, its ETag.
    pub etag: [u8; 16],
}

impl Multipart {
    fn encode(&self) -> String {
        let hex: String = self.etag.iter().map(|b| format!("{b:02x}")).collect();
        format!("{} {} {hex}", self.object_len, self.parts)
    }

    fn parse(v: &str) -> Option<Multipart> {
        let mut it = v.split(' ');
        let object_len = it.next()?.parse().ok()?;
        let parts: u16 = it.next()?.parse().ok()?;
        let hex = it.next()?.as_bytes();
        if it.next().is_some() || hex.len() != 32 || parts == 0 {
            return None;
        }
        let mut etag = [0u8; 16];
        for (o, pair) in etag.iter_mut().zip(hex.chunks(2)) {
            *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(Multipart { object_len, parts, etag })
    }
}

/// Why attributes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttrsError {
    #[error("content type longer than {CONTENT_TYPE_MAX_BYTES} bytes")]
    ContentTypeLength,
    #[error("content type contains a control character")]
    ContentTypeText,
    #[error("header name {0:?} is not a lower-case HTTP token of 1 to 255 bytes")]
    Name(String),
    #[error("the value of header {0} is longer than 65535 bytes or holds a control character")]
    Value(String),
    #[error("header {0} is given twice")]
    Twice(String),
    #[error("the headers kept with an object take {0} bytes, more than {HEADERS_MAX_BYTES}")]
    TooLarge(usize),
    #[error("the stored headers are not a valid encoding")]
    Encoding,
    #[error("header {0} is reserved for the node's own use")]
    Reserved(String),
}

/// A record's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attrs {
    pub content_type: Box<str>,
    /// The headers, encoded (see the module comment); valid by construction.
    headers: Box<[u8]>,
    pub digest: DigestKind,
}

impl From<&str> for Attrs {
    /// Only a content type (checked when the write starts).
    fn from(content_type: &str) -> Attrs {
        Attrs { content_type: content_type.into(), headers: Box::default(), digest: DigestKind::Xxh3 }
    }
}

fn token_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn value_ok(v: &str) -> bool {
    v.len() <= u16::MAX as usize && !v.chars().any(|c| c.is_control() && c != '\t')
}

impl Attrs {
    /// Attributes from a content type, headers (name, value) and a digest kind. Names must be
    /// lower case; each may appear once.
    pub fn new<'a>(
        content_type: &str,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        digest: DigestKind,
    ) -> Result<Attrs, AttrsError> {
        check_content_type(content_type)?;
        let mut enc = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in headers {
            if name.is_empty() || name.len() > 255 || !name.bytes().all(token_char) {
                return Err(AttrsError::Name(name.to_string()));
            }
            if name.starts_with(RESERVED_PREFIX) {
                return Err(AttrsError::Reserved(name.to_string()));
            }
            if !value_ok(value) {
                return Err(AttrsError::Value(name.to_string()));
            }
            if seen.contains(&name) {
                return Err(AttrsError::Twice(name.to_string()));
            }
            seen.push(name);
            push_pair(&mut enc, name, value);
            if enc.len() > HEADERS_MAX_BYTES {
                return Err(AttrsError::TooLarge(enc.len()));
            }
        }
        Ok(Attrs { content_type: content_type.into(), headers: enc.into(), digest })
    }

    /// Attributes from their stored form (a record, a replication frame): the encoded headers
    /// are checked.
    pub fn from_stored(content_type: &str, headers: &[u8], digest: DigestKind) -> Result<Attrs, AttrsError> {
        check_content_type(content_type)?;
        check_encoding(headers)?;
        Ok(Attrs { content_type: content_type.into(), headers: headers.into(), digest })
    }

    /// Attributes read from a record whose header decoded (its headers were checked then).
    pub(crate) fn from_record(content_type: &str, headers: &[u8], digest: DigestKind) -> Attrs {
        debug_assert!(check_encoding(headers).is_ok());
        Attrs { content_type: content_type.into(), headers: headers.into(), digest }
    }

    /// The encoded headers.
    pub fn encoded_headers(&self) -> &[u8] {
        &self.headers
    }

    /// The headers a client gave, in their order (the node's own left out).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.all_headers().filter(|(n, _)| !n.starts_with(RESERVED_PREFIX))
    }

    fn all_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        Pairs(&self.headers).map(|r| r.expect("headers are valid by construction"))
    }

    /// What a multipart object's record says of the whole object; None for any other record.
    pub fn multipart(&self) -> Option<Multipart> {
        let (_, v) = self.all_headers().find(|(n, _)| *n == MULTIPART_HEADER)?;
        Some(Multipart::parse(v).expect("checked when the attributes were made"))
    }

    /// These attributes on a multipart object's record (its data the manifest of its parts).
    pub fn with_multipart(self, m: Multipart) -> Result<Attrs, AttrsError> {
        self.with_reserved(MULTIPART_HEADER, &m.encode())
    }

    /// The additional checksum the write was checked against: its algorithm (`crc32`, ...)
    /// and base64 value (with `-<parts>` for a multipart object's composite checksum).
    pub fn checksum(&self) -> Option<(&str, &str)> {
        let (_, v) = self.all_headers().find(|(n, _)| *n == CHECKSUM_HEADER)?;
        v.split_once(' ')
    }

    /// These attributes keeping the checksum `value` (base64, `-<parts>` for a composite one)
    /// of `algorithm` (one of [`CHECKSUM_ALGORITHMS`]).
    pub fn with_checksum(self, algorithm: &str, value: &str) -> Result<Attrs, AttrsError> {
        let v = format!("{algorithm} {value}");
        if !checksum_ok(&v) {
            return Err(AttrsError::Value(CHECKSUM_HEADER.to_string()));
        }
        self.with_reserved(CHECKSUM_HEADER, &v)
    }

    /// These attributes without their kept checksum.
    pub fn without_checksum(self) -> Attrs {
        let mut enc = Vec::with_capacity(self.headers.len());
        for (n, v) in self.all_headers().filter(|(n, _)| *n != CHECKSUM_HEADER) {
            push_pair(&mut enc, n, v);
        }
        Attrs { headers: enc.into(), ..self }
    }

    fn with_reserved(mut self, name: &str, value: &str) -> Result<Attrs, AttrsError> {
        if self.all_headers().any(|(n, _)| n == name) {
            return Err(AttrsError::Twice(name.to_string()));
        }
        let mut enc = self.headers.to_vec();
        push_pair(&mut enc, name, value);
        if enc.len() > HEADERS_MAX_BYTES {
            return Err(AttrsError::TooLarge(enc.len()));
        }
        self.headers = enc.into();
        Ok(self)
    }

    /// Bytes the attributes take in a record after the key: the content type and the headers.
    pub fn stored_len(&self) -> usize {
        self.content_type.len() + self.headers.len()
    }
}

/// Appends one encoded pair.
fn push_pair(enc: &mut Vec<u8>, name: &str, value: &str) {
    enc.push(name.len() as u8);
    enc.extend_from_slice(name.as_bytes());
    enc.extend_from_slice(&(value.len() as u16).to_le_bytes());
    enc.extend_from_slice(value.as_bytes());
}

fn check_content_type(ct: &str) -> Result<(), AttrsError> {
    if ct.len() > CONTENT_TYPE_MAX_BYTES {
        return Err(AttrsError::ContentTypeLength);
    }
    if ct.chars().any(char::is_control) {
        return Err(AttrsError::ContentTypeText);
    }
    Ok(())
}

/// Checks an encoded headers section.
pub(crate) fn check_encoding(b: &[u8]) -> Result<(), AttrsError> {
    if b.len() > HEADERS_MAX_BYTES {
        return Err(AttrsError::TooLarge(b.len()));
    }
    let mut names: Vec<&str> = Vec::new();
    for p in Pairs(b) {
        let (name, value) = p.ok_or(AttrsError::Encoding)?;
        if name.is_empty() || !name.bytes().all(token_char) || !value_ok(value) || names.contains(&name) {
            return Err(AttrsError::Encoding);
        }
        let reserved_ok = match name {
            MULTIPART_HEADER => Multipart::parse(value).is_some(),
            CHECKSUM_HEADER => checksum_ok(value),
            _ => false,
        };
        if name.starts_with(RESERVED_PREFIX) && !reserved_ok {
            return Err(AttrsError::Encoding);
        }
        names.push(name);
    }
    Ok(())
}

/// The pairs of an encoded section; None for a pair that does not decode (then nothing more).
struct Pairs<'a>(&'a [u8]);

impl<'a> Iterator for Pairs<'a> {
    type Item = Option<(&'a str, &'a str)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let b = self.0;
        let pair = (|| {
            let nl = *b.first()? as usize;
            let name = std::str::from_utf8(b.get(1..1 + nl)?).ok()?;
            let vl = u16::from_le_bytes(b.get(1 + nl..3 + nl)?.try_into().ok()?) as usize;
            let value = std::str::from_utf8(b.get(3 + nl..3 + nl + vl)?).ok()?;
            Some(((name, value), 3 + nl + vl))
        })();
        match pair {
            Some((p, used)) => {
                self.0 = &b[used..];
                Some(Some(p))
            }
            None => {
                self.0 = &[];
                Some(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_ones_are_refused() {
        let h = [("cache-control", "max-age=60"), ("x-amz-meta-camera", "Nikon Z9\tf/2.8"), ("expires", "")];
        let a = Attrs::new("image/jpeg", h, DigestKind::Md5).expect("valid");
        assert_eq!(a.headers().collect::<Vec<_>>(), h);
        let b = Attrs::from_stored(&a.content_type, a.encoded_headers(), DigestKind::Md5).expect("decodes");
        assert_eq!(a, b);
        assert_eq!(a.stored_len(), "image/jpeg".len() + a.encoded_headers().len());

        assert!(matches!(
            Attrs::new("", [("Cache-Control", "x")], DigestKind::Xxh3),
            Err(AttrsError::Name(_))
        ));
        assert!(matches!(Attrs::new("", [("a b", "x")], DigestKind::Xxh3), Err(AttrsError::Name(_))));
        assert!(matches!(Attrs::new("", [("a", "x\r\ny")], DigestKind::Xxh3), Err(AttrsError::Value(_))));
        assert!(matches!(
            Attrs::new("", [("a", "1"), ("a", "2")], DigestKind::Xxh3),
            Err(AttrsError::Twice(_))
        ));
        assert_eq!(Attrs::new("a\nb", [], DigestKind::Xxh3), Err(AttrsError::ContentTypeText));
        let big = "v".repeat(2000);
        assert!(matches!(
            Attrs::new(
                "",
                [("x-amz-meta-a", big.as_str()), ("x-amz-meta-b", big.as_str())],
                DigestKind::Xxh3
            ),
            Err(AttrsError::TooLarge(_))
        ));
        // Every truncation of a valid encoding is refused (or, cut between pairs, fewer pairs).
        let enc = a.encoded_headers();
        for cut in 0..enc.len() {
            if let Ok(short) = Attrs::from_stored("", &enc[..cut], DigestKind::Xxh3) {
                assert!(short.headers().count() < 3, "cut {cut}");
            }
        }
        let mut bad = enc.to_vec();
        bad[1] = b'C';
        assert_eq!(Attrs::from_stored("", &bad, DigestKind::Xxh3), Err(AttrsError::Encoding));
    }

    #[test]
    fn a_multipart_record_says_so_and_clients_cannot() {
        let m = Multipart { object_len: 5 << 30, parts: 10_000, etag: [0xab; 16] };
        let a = Attrs::new("video/mp4", [("x-amz-meta-a", "1")], DigestKind::Md5).expect("valid");
        assert_eq!(a.multipart(), None);
        let b = a.clone().with_multipart(m).expect("fits");
        assert_eq!(b.multipart(), Some(m));
        assert_eq!(b.headers().collect::<Vec<_>>(), [("x-amz-meta-a", "1")], "not a client's header");
        let c = Attrs::from_stored(&b.content_type, b.encoded_headers(), DigestKind::Md5).expect("decodes");
        assert_eq!(c.multipart(), Some(m));
        assert!(matches!(b.clone().with_multipart(m), Err(AttrsError::Twice(_))));
        // A kept checksum, composite or not; nothing else passes for one.
        let c = b.with_checksum("crc32", "AAAAAA==-3").expect("a composite checksum");
        assert_eq!(c.checksum(), Some(("crc32", "AAAAAA==-3")));
        assert_eq!(c.multipart(), Some(m));
        let d = Attrs::from_stored(&c.content_type, c.encoded_headers(), DigestKind::Md5).expect("decodes");
        assert_eq!(d.checksum(), Some(("crc32", "AAAAAA==-3")));
        assert_eq!(d.clone().without_checksum().checksum(), None);
        assert_eq!(d.without_checksum().multipart(), Some(m));
        for (alg, v) in [("md5", "AAAAAA=="), ("crc32", "AA AA"), ("crc32", "AAAAAA==-0"), ("sha1", "")] {
            assert!(a.clone().with_checksum(alg, v).is_err(), "{alg} {v}");
        }
        assert!(matches!(
            Attrs::new("", [("x-podstore-multipart", "1 1 00")], DigestKind::Md5),
            Err(AttrsError::Reserved(_))
        ));
        // A stored value that is not a manifest's description is refused, as is any other
        // reserved name.
        for (n, v) in [("x-podstore-multipart", "1 0 ab"), ("x-podstore-other", "x")] {
            let mut enc = vec![n.len() as u8];
            enc.extend_from_slice(n.as_bytes());
            enc.extend_from_slice(&(v.len() as u16).to_le_bytes());
            enc.extend_from_slice(v.as_bytes());
            assert_eq!(Attrs::from_stored("", &enc, DigestKind::Md5), Err(AttrsError::Encoding), "{n}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..20_000 {
            let n = rng.usize(0..64);
            let b: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            if let Ok(a) = Attrs::from_stored("", &b, DigestKind::Xxh3) {
                let _ = a.headers().count();
            }
        }
    }
}
