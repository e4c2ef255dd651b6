//! Multipart objects: the names the node gives an upload's state and parts, and the manifest a
//! completed upload's record holds instead of the object's bytes.
//!
//! An upload's parts are records of their own, written (and copied to peers, compacted,
//! scrubbed, moved) like any object, under the reserved bucket `.parts`; its state (the
//! object's content type and headers, while the upload is open) under `.uploads`. Neither is a
//! bucket a client can name (a bucket name starts with a letter or digit). Completing an upload
//! writes one record at the object's key whose data is the manifest below and whose attributes
//! say so (`podstore_engine::Multipart`): the parts are never written a second time, and a GET
//! streams them in turn from wherever they are.
//!
//! ```text
//! manifest, little-endian
//! offset size field
//!      0    4 magic "PSM1"
//!      4    2 format version = 1
//!      6    2 zero
//!      8    4 part count n (1..=10,000)
//!     12    2 base length b: the parts' storage keys are the base, then the part number in
//!             five decimal digits
//!     14    b base
//!   14+b  48n parts, in order: number u16, zero u16, zero u32, length u64, MD5 [16] (the
//!             part record's digest), version hlc u64, version origin u64
//!  14+b+48n 4 CRC32C of everything before
//! ```

use podstore_disks::le;
use podstore_engine::Version;

/// The reserved bucket of upload parts.
pub const PARTS_BUCKET: &str = ".parts";
/// The reserved bucket of open uploads' state.
pub const UPLOADS_BUCKET: &str = ".uploads";
/// Most parts of one upload (S3's limit).
pub const PARTS_MAX: u16 = 10_000;
/// Hex digits of an upload id: 12 of its start (ms since the epoch), 20 random.
pub const UPLOAD_ID_LEN: usize = 32;

const MAGIC: u32 = u32::from_le_bytes(*b"PSM1");
const VERSION: u16 = 1;
const FIXED: usize = 14;
const PART_BYTES: usize = 48;

/// Whether a bucket is one of the node's own (never a client's).
pub fn is_reserved_bucket(b: &[u8]) -> bool {
    b == PARTS_BUCKET.as_bytes() || b == UPLOADS_BUCKET.as_bytes()
}

/// A new upload id: its start in ms (so an upload's age is known from its id) and 80 random
/// bits.
pub fn new_upload_id(now_ms: u64) -> String {
    format!("{:012x}{:020x}", now_ms & 0xFFFF_FFFF_FFFF, fastrand::u128(..) >> 48)
}

/// Whether `id` is an upload id this node could have made.
pub fn valid_upload_id(id: &str) -> bool {
    id.len() == UPLOAD_ID_LEN && id.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// When an upload started (ms since the epoch), from its id.
pub fn upload_started_ms(id: &str) -> Option<u64> {
    u64::from_str_radix(id.get(..12)?, 16).ok()
}

/// The key (in [`UPLOADS_BUCKET`]) of an open upload's state: the client's bucket, a slash, its
/// key, a zero byte (below every character a key may hold, so a listing of uploads is in key
/// order), the upload id.
pub fn upload_key(bucket: &str, key: &[u8], id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + key.len() + 2 + id.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(b'/');
    k.extend_from_slice(key);
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Splits a key of [`UPLOADS_BUCKET`] (without its bucket) into the client's bucket, key and
/// upload id.
pub fn split_upload_key(k: &[u8]) -> Option<(&[u8], &[u8], &str)> {
    let slash = k.iter().position(|&c| c == b'/')?;
    let zero = k.iter().rposition(|&c| c == 0)?;
    let id = std::str::from_utf8(k.get(zero + 1..)?).ok()?;
    (zero > slash && valid_upload_id(id)).then(|| (&k[..slash], &k[slash + 1..zero], id))
}

/// The key (in [`PARTS_BUCKET`]) under which an upload's parts are: its state's key and a
/// slash; a part's key is this and its number in five digits.
pub fn parts_prefix(bucket: &str, key: &[u8], id: &str) -> Vec<u8> {
    let mut k = upload_key(bucket, key, id);
    k.push(b'/');
    k
}

/// A part's key in [`PARTS_BUCKET`].
pub fn part_key(prefix: &[u8], number: u16) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("{number:05}").as_bytes());
    k
}

/// The part number a key of [`PARTS_BUCKET`] ends with.
pub fn part_number(key: &[u8]) -> Option<u16> {
    let digits = key.get(key.len().checked_sub(5)?..)?;
    std::str::from_utf8(digits).ok()?.parse().ok().filter(|n| (1..=PARTS_MAX).contains(n))
}

/// One part as a manifest names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub number: u16,
    pub len: u64,
    /// The part's MD5 (its record's digest, its ETag).
    pub md5: [u8; 16],
    /// The part record's version: a part written again under the same number is not this one.
    pub version: Version,
}

/// A completed upload: where its parts are, and each in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The storage key prefix of the parts (the reserved bucket, a slash, [`parts_prefix`]).
    pub base: Vec<u8>,
    pub parts: Vec<Part>,
}

/// Why bytes are not a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid manifest: {0}")]
pub struct ManifestError(&'static str);

impl Manifest {
    /// The whole object's length.
    pub fn object_len(&self) -> u64 {
        self.parts.iter().map(|p| p.len).sum()
    }

    /// S3's ETag digest of a multipart object: the MD5 of its parts' MD5s.
    pub fn etag(&self) -> [u8; 16] {
        let mut all = Vec::with_capacity(16 * self.parts.len());
        for p in &self.parts {
            all.extend_from_slice(&p.md5);
        }
        use md5::Digest;
        md5::Md5::digest(&all).into()
    }

    /// The storage key of a part.
    pub fn part_storage_key(&self, p: &Part) -> Vec<u8> {
        part_key(&self.base, p.number)
    }

    pub fn encode(&self) -> Vec<u8> {
        assert!(!self.parts.is_empty() && self.parts.len() <= PARTS_MAX as usize);
        let mut b = vec![0u8; FIXED];
        le::put(&mut b, 0, MAGIC);
        le::put(&mut b, 4, VERSION);
        le::put(&mut b, 8, self.parts.len() as u32);
        le::put(&mut b, 12, u16::try_from(self.base.len()).expect("a storage key prefix"));
        b.extend_from_slice(&self.base);
        for p in &self.parts {
            let at = b.len();
            b.resize(at + PART_BYTES, 0);
            let e = &mut b[at..];
            le::put(e, 0, p.number);
            le::put(e, 8, p.len);
            e[16..32].copy_from_slice(&p.md5);
            le::put(e, 32, p.version.hlc);
            le::put(e, 40, p.version.origin);
        }
        let crc = podstore_disks::crc::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a manifest; never panics, whatever the bytes.
    pub fn decode(b: &[u8]) -> Result<Manifest, ManifestError> {
        let bad = ManifestError;
        if b.len() < FIXED + 4 {
            return Err(bad("too short"));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if podstore_disks::crc::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(bad("checksum"));
        }
        if le::get::<u32>(body, 0) != MAGIC
            || le::get::<u16>(body, 4) != VERSION
            || le::get::<u16>(body, 6) != 0
        {
            return Err(bad("magic or version"));
        }
        let n = le::get::<u32>(body, 8) as usize;
        let base_len = le::get::<u16>(body, 12) as usize;
        if n == 0 || n > PARTS_MAX as usize || body.len() != FIXED + base_len + n * PART_BYTES {
            return Err(bad("lengths"));
        }
        let base = body[FIXED..FIXED + base_len].to_vec();
        let mut parts = Vec::with_capacity(n);
        for e in body[FIXED + base_len..].chunks_exact(PART_BYTES) {
            let number: u16 = le::get(e, 0);
            if number == 0 || number > PARTS_MAX || parts.last().is_some_and(|l: &Part| l.number >= number) {
                return Err(bad("part numbers"));
            }
            let mut md5 = [0u8; 16];
            md5.copy_from_slice(&e[16..32]);
            parts.push(Part {
                number,
                len: le::get(e, 8),
                md5,
                version: Version { hlc: le::get(e, 32), origin: le::get(e, 40) },
            });
        }
        Ok(Manifest { base, parts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut base = b".parts/".to_vec();
        base.extend_from_slice(&parts_prefix("photos", b"video.mp4", &new_upload_id(1_765_000_000_000)));
        let parts = (1..=3)
            .map(|i| Part {
                number: i * 2,
                len: 5 << 20 | u64::from(i),
                md5: [i as u8; 16],
                version: Version { hlc: u64::from(i) << 16, origin: 7 },
            })
            .collect();
        Manifest { base, parts }
    }

    #[test]
    fn manifests_round_trip_and_garbage_is_refused() {
        let m = sample();
        let b = m.encode();
        assert_eq!(Manifest::decode(&b), Ok(m.clone()));
        assert_eq!(m.object_len(), 3 * (5 << 20) + 6);
        for cut in 0..b.len() {
            assert!(Manifest::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x10;
            assert!(Manifest::decode(&bad).is_err(), "flipped byte {i}");
        }
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..10_000 {
            let n = rng.usize(0..200);
            let junk: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            let _ = Manifest::decode(&junk);
        }
    }

    #[test]
    fn the_etag_is_the_md5_of_the_part_md5s() {
        // S3's rule, checked against a value computed apart: md5(0x01*16 ++ 0x02*16 ++ 0x03*16).
        let m = sample();
        let mut all = Vec::new();
        for i in 1..=3u8 {
            all.extend_from_slice(&[i; 16]);
        }
        use md5::Digest;
        let want: [u8; 16] = md5::Md5::digest(&all).into();
        assert_eq!(m.etag(), want);
        assert_ne!(m.etag(), [0; 16]);
    }

    #[test]
    fn upload_names_split_back() {
        let id = new_upload_id(1_765_000_000_123);
        assert!(valid_upload_id(&id), "{id}");
        assert_eq!(upload_started_ms(&id), Some(1_765_000_000_123));
        let k = upload_key("photos", b"a/b.mp4", &id);
        assert_eq!(split_upload_key(&k), Some((&b"photos"[..], &b"a/b.mp4"[..], id.as_str())));
        // Uploads of a key sort before those of a longer key it is a prefix of.
        assert!(upload_key("b", b"a", &id) < upload_key("b", b"a/", &id));
        let p = part_key(&parts_prefix("photos", b"k", &id), 42);
        assert_eq!(part_number(&p), Some(42));
        assert_eq!(part_number(b"00000"), None);
        assert!(!valid_upload_id("xyz"));
        // The longest names fit the engine's keys.
        let long = vec![b'k'; crate::names::KEY_BYTES_MAX];
        let bucket = "b".repeat(crate::names::BUCKET_BYTES_MAX);
        let longest = PARTS_BUCKET.len() + 1 + part_key(&parts_prefix(&bucket, &long, &id), 10_000).len();
        assert!(longest <= podstore_engine::record::KEY_MAX_BYTES, "{longest}");
    }
}
