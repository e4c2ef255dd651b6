//! The digests a client may send with a body for the server to check before it stores it:
//! the native API's and S3's `Content-MD5`, S3's signed `x-amz-content-sha256`, and S3's
//! additional checksums (`x-amz-checksum-crc32`, `-crc32c`, `-crc64nvme`, `-sha1`,
//! `-sha256`). Each is computed as the body passes, on the connection's thread; a body that
//! does not match one of them is not stored.

use base64::Engine as _;
use bytes::Bytes;
use crc_fast::{CrcAlgorithm, Digest as CrcDigest};
use md5::Digest as _;
use podstore_disks::md5_lanes::Md5Stream;
use podstore_engine::record::Digester;
use podstore_engine::DigestKind;

/// What a digest is computed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha1,
    Sha256,
    Crc32,
    Crc32c,
    Crc64Nvme,
}

impl Algorithm {
    /// S3's additional checksum of a header name's suffix (`x-amz-checksum-<suffix>`).
    pub fn of_s3_checksum(suffix: &str) -> Option<Algorithm> {
        Some(match suffix {
            "crc32" => Algorithm::Crc32,
            "crc32c" => Algorithm::Crc32c,
            "crc64nvme" => Algorithm::Crc64Nvme,
            "sha1" => Algorithm::Sha1,
            "sha256" => Algorithm::Sha256,
            _ => return None,
        })
    }

    /// Bytes of the digest.
    pub fn digest_bytes(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Crc32 | Algorithm::Crc32c => 4,
            Algorithm::Crc64Nvme => 8,
        }
    }
}

/// A digest the body must have, and the header that named it (for the error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub algorithm: Algorithm,
    pub want: Vec<u8>,
    pub header: &'static str,
}

impl Check {
    /// A check from a header's base64 value (Content-MD5, x-amz-checksum-*): None if it is not
    /// the base64 of a digest of the algorithm's length.
    pub fn from_base64(algorithm: Algorithm, value: &str, header: &'static str) -> Option<Check> {
        let want = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
        (want.len() == algorithm.digest_bytes()).then_some(Check { algorithm, want, header })
    }

    /// The base64 of the wanted digest (an S3 answer names the checksum it checked).
    pub fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.want)
    }
}

/// A digest being computed.
pub enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Crc(Box<CrcDigest>),
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher")
    }
}

impl Hasher {
    pub fn new(a: Algorithm) -> Hasher {
        match a {
            Algorithm::Md5 => Hasher::Md5(md5::Md5::new()),
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Crc32 => Hasher::Crc(Box::new(CrcDigest::new(CrcAlgorithm::Crc32IsoHdlc))),
            Algorithm::Crc32c => Hasher::Crc(Box::new(CrcDigest::new(CrcAlgorithm::Crc32Iscsi))),
            Algorithm::Crc64Nvme => Hasher::Crc(Box::new(CrcDigest::new(CrcAlgorithm::Crc64Nvme))),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Crc(h) => h.update(data),
        }
    }

    /// The digest, big-endian for the CRCs (as S3 sends them).
    pub fn finish(self, a: Algorithm) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Crc(h) => {
                let v = h.finalize();
                if a == Algorithm::Crc64Nvme {
                    v.to_be_bytes().to_vec()
                } else {
                    (v as u32).to_be_bytes().to_vec()
                }
            }
        }
    }
}

/// A stored object's content digest, computed as its body passes (see `DigestKind`): an MD5
/// beside the other bodies its thread receives (`podstore_disks::md5_lanes`), or an XXH3.
#[derive(Debug)]
pub enum ContentHash {
    Md5(Md5Stream),
    Xxh3(Digester),
}

impl ContentHash {
    pub fn new(kind: DigestKind) -> ContentHash {
        match kind {
            DigestKind::Md5 => ContentHash::Md5(Md5Stream::new()),
            DigestKind::Xxh3 => ContentHash::Xxh3(Digester::new(kind)),
        }
    }

    pub fn update(&mut self, data: &Bytes) {
        match self {
            ContentHash::Md5(h) => h.update(data),
            ContentHash::Xxh3(h) => h.update(data),
        }
    }

    pub fn finish(self) -> [u8; 16] {
        match self {
            ContentHash::Md5(h) => h.finish(),
            ContentHash::Xxh3(h) => h.finish(),
        }
    }
}

/// Checks running over one body.
#[derive(Debug, Default)]
pub struct Running(Vec<(Check, Hasher)>);

impl Running {
    pub fn new(checks: Vec<Check>) -> Running {
        Running(
            checks
                .into_iter()
                .map(|c| {
                    let h = Hasher::new(c.algorithm);
                    (c, h)
                })
                .collect(),
        )
    }

    pub fn update(&mut self, data: &[u8]) {
        for (_, h) in &mut self.0 {
            h.update(data);
        }
    }

    /// The header of the first check the body failed, if any.
    pub fn failed(self) -> Option<&'static str> {
        self.0.into_iter().find_map(|(c, h)| (h.finish(c.algorithm) != c.want).then_some(c.header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(a: Algorithm, data: &[u8]) -> Vec<u8> {
        let mut h = Hasher::new(a);
        for piece in data.chunks(7) {
            h.update(piece);
        }
        h.finish(a)
    }

    #[test]
    fn known_values() {
        // The "123456789" check values of the CRC catalogue, and the FIPS 180 "abc" digests.
        assert_eq!(digest(Algorithm::Crc32, b"123456789"), 0xcbf4_3926u32.to_be_bytes());
        assert_eq!(digest(Algorithm::Crc32c, b"123456789"), 0xe306_9283u32.to_be_bytes());
        assert_eq!(digest(Algorithm::Crc64Nvme, b"123456789"), 0xae8b_1486_0a79_9888u64.to_be_bytes());
        assert_eq!(
            podstore_engine::hex(&digest(Algorithm::Sha1, b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            podstore_engine::hex(&digest(Algorithm::Sha256, b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(podstore_engine::hex(&digest(Algorithm::Md5, b"abc")), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn checks_pass_only_for_their_body() {
        let body = b"the quick brown fox";
        let c = Check::from_base64(
            Algorithm::Crc32,
            &base64::engine::general_purpose::STANDARD.encode(digest(Algorithm::Crc32, body)),
            "x-amz-checksum-crc32",
        )
        .expect("valid");
        let mut r = Running::new(vec![c.clone()]);
        r.update(body);
        assert_eq!(r.failed(), None);
        let mut r = Running::new(vec![c]);
        r.update(b"the quick brown fax");
        assert_eq!(r.failed(), Some("x-amz-checksum-crc32"));
        assert!(Check::from_base64(Algorithm::Sha1, "AAAA", "x").is_none(), "wrong length");
        assert!(Check::from_base64(Algorithm::Md5, "not base64!", "x").is_none());
    }
}
