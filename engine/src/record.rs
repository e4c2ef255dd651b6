//! The record: one object (or one tombstone) in a blob file.
//!
//! A record starts at a 4096-aligned offset of its blob and occupies a whole number of 4096-byte
//! blocks. It identifies itself (magic, version, shard, blob, offset, sequence, key), so a torn,
//! misdirected or stale write is detected rather than trusted. Its header carries a tag keyed
//! with the shard's secret record key (`podstore.record-key`, see `record_key.rs`), so bytes a
//! client sent as object data can never pass for a record: recovery scans block by block after
//! the checkpoint, and a power loss that kept a later block of a body but lost the block holding
//! its real header would otherwise show the scan whatever record the client had laid out there.
//!
//! ```text
//! record (4096-aligned, length a multiple of 4096)
//! +--------------------+-----+--------------+---------+-------------+--------+-------+
//! | header (128 bytes) | key | content type | headers | object data | footer | zeros |
//! +--------------------+-----+--------------+---------+-------------+--------+-------+
//!
//! header, little-endian
//! offset size field
//!      0    4 magic "PSR1"
//!      4    2 format version = 2
//!      6    2 flags: bit 0 tombstone, bit 1 void (abandoned before completion: skip
//!             record length bytes), bit 2 the content digest is MD5 (else XXH3-128);
//!             other bits zero
//!      8    4 shard id (the disk id)
//!     12    4 blob id
//!     16    8 offset of this record in its blob, bytes
//!     24    8 sequence: per shard, strictly increasing in reservation order
//!     32    8 created, milliseconds since the Unix epoch
//!     40    8 object length, bytes (0 for a tombstone)
//!     48    8 record length, bytes (multiple of 4096, everything above included)
//!     56    2 key length (1..=1152: bucket, `/`, key; see KEY_MAX_BYTES)
//!     58    1 content type length (0..=255)
//!     59    2 headers length (0..=2560: the content headers kept with the object, encoded
//!             as attrs.rs says)
//!     61    3 zero
//!     64    8 version: hybrid logical clock (ms << 16 | counter), see version.rs
//!     72    8 version: origin (the node that accepted the write)
//!     80   16 tag: SipHash-2-4-128 keyed with the shard's record key, of header bytes 0..80,
//!             then the key, the content type and the headers
//!     96   28 zero
//!    124    4 CRC32C of header bytes 0..124, then the key, the content type and the headers
//!
//! footer, directly after the data (unaligned), little-endian
//!      0    4 magic "PSF1"
//!      4    4 chunk count n = ceil(object length / 1 MiB)
//!      8    8 sequence (the header's: binds the footer to its record)
//!     16   16 content digest: XXH3-128 of the object data, or its MD5 when the header's
//!             flag bit 2 says so (the ETag)
//!     32  4*n CRC32C of each 1 MiB chunk of the data (the last may be shorter)
//!  32+4n    4 CRC32C of footer bytes 0..32+4n
//! ```
//!
//! A reader verifies the header CRC and tag before trusting any field, the footer CRC before
//! trusting a chunk CRC, and a chunk's CRC before returning any byte of it. A range read needs
//! only the chunks it covers. (The footer needs no tag: it is only ever read at the place an
//! authentic header names, and binds to it by the sequence.)
//!
//! Version history: 1 (first); 2 (the header tag; a shard of version 1 has no record key and is
//! refused at open). Within version 2, keys up to 1088 bytes since 2026-12 (1024 before: a
//! build older than that reads a record with a longer key as damaged, so downgrade only to a
//! build that has this limit), up to 1152 since late 2026-12 (the same rule); the headers length, the headers and the MD5 flag since 2026-12
//! too (a build before them reads such a record as damaged: the same rule).

use podstore_disks::le;

use crate::attrs::{self, Attrs, DigestKind, HEADERS_MAX_BYTES};
use crate::record_key::RecordKey;
use crate::Error;

pub(crate) const HEADER_MAGIC: u32 = u32::from_le_bytes(*b"PSR1");
pub(crate) const FOOTER_MAGIC: u32 = u32::from_le_bytes(*b"PSF1");
pub(crate) const FORMAT_VERSION: u16 = 2;
/// Size of the fixed header.
pub const HEADER_BYTES: usize = 128;
/// Fixed part of the footer (without chunk CRCs and the footer CRC).
pub(crate) const FOOTER_FIXED_BYTES: usize = 32;
/// Data chunk covered by one CRC.
pub const CHUNK_BYTES: u64 = 1 << 20;

/// Block in which the writer's two sums (XXH3-128, CRC32C) advance together.
const SUMS_BLOCK_BYTES: usize = 64 << 10;
/// Longest storage key: a bucket of up to 63 bytes, a slash and an API key of up to 1024 bytes
/// (API.md "Names"), and 64 more for the node's own names built from them (a multipart
/// upload's parts and state: a reserved bucket, the client's bucket and key, the upload's id).
/// Until 2026-12 it was 1024, then 1088. The longest header block still fits one 4 KiB read:
/// 128 + 1152 + 255 (content type) + 2560 (headers) = 4095.
pub const KEY_MAX_BYTES: usize = 63 + 1 + 1024 + 64;
const _: () =
    assert!(HEADER_BYTES + KEY_MAX_BYTES + CONTENT_TYPE_MAX_BYTES + HEADERS_MAX_BYTES <= BLOCK as usize);
pub use crate::attrs::CONTENT_TYPE_MAX_BYTES;
/// Block size of the format.
pub const BLOCK: u64 = 4096;

/// Header flag: the record is a tombstone (a delete).
pub const FLAG_TOMBSTONE: u16 = 1;
/// Header flag: the record was abandoned before completion; its space is dead.
pub const FLAG_VOID: u16 = 2;
/// Header flag: the footer's content digest is the data's MD5 (written through S3).
pub const FLAG_MD5: u16 = 4;

// The header's fields (the diagram above), each at its offset.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 4;
const H_FLAGS: usize = 6;
const H_SHARD: usize = 8;
const H_BLOB: usize = 12;
const H_OFFSET: usize = 16;
const H_SEQ: usize = 24;
const H_CREATED: usize = 32;
const H_OBJECT_LEN: usize = 40;
const H_RECORD_LEN: usize = 48;
const H_KEY_LEN: usize = 56;
const H_CT_LEN: usize = 58;
const H_HEADERS_LEN: usize = 59;
const H_ZERO_1: usize = 61;
const H_HLC: usize = 64;
const H_ORIGIN: usize = 72;
const H_TAG: usize = 80;
const H_ZERO_2: usize = 96;
const H_CRC: usize = 124;
const _: () = assert!(le::tiles(
    &[
        (H_MAGIC, 4),
        (H_VERSION, 2),
        (H_FLAGS, 2),
        (H_SHARD, 4),
        (H_BLOB, 4),
        (H_OFFSET, 8),
        (H_SEQ, 8),
        (H_CREATED, 8),
        (H_OBJECT_LEN, 8),
        (H_RECORD_LEN, 8),
        (H_KEY_LEN, 2),
        (H_CT_LEN, 1),
        (H_HEADERS_LEN, 2),
        (H_ZERO_1, 3),
        (H_HLC, 8),
        (H_ORIGIN, 8),
        (H_TAG, 16),
        (H_ZERO_2, 28),
        (H_CRC, 4),
    ],
    HEADER_BYTES
));

// The footer's fixed fields, then the chunk CRCs and the footer's CRC.
const F_MAGIC: usize = 0;
const F_CHUNKS: usize = 4;
const F_SEQ: usize = 8;
const F_DIGEST: usize = 16;
const _: () =
    assert!(le::tiles(&[(F_MAGIC, 4), (F_CHUNKS, 4), (F_SEQ, 8), (F_DIGEST, 16)], FOOTER_FIXED_BYTES));

/// The decoded fixed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub flags: u16,
    pub shard_id: u32,
    pub blob_id: u32,
    pub offset: u64,
    pub seq: u64,
    pub created_ms: u64,
    pub object_len: u64,
    pub record_len: u64,
    pub key_len: u16,
    pub content_type_len: u8,
    /// Bytes of the encoded headers after the content type.
    pub headers_len: u16,
    /// The write's version, the same on every copy.
    pub version: crate::Version,
}

/// Why bytes are not a valid record part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("too short")]
    Short,
    #[error("bad magic")]
    Magic,
    #[error("unsupported format version {0}")]
    Version(u16),
    #[error("header checksum mismatch")]
    HeaderChecksum,
    #[error("header tag mismatch (not written with this shard's record key)")]
    Tag,
    #[error("footer checksum mismatch")]
    FooterChecksum,
    #[error("data checksum mismatch in chunk {0}")]
    DataChecksum(u32),
    #[error("field {0} out of range")]
    Field(&'static str),
}

/// Number of data chunks of an object.
pub fn chunk_count(object_len: u64) -> u64 {
    object_len.div_ceil(CHUNK_BYTES)
}

/// Footer length for an object length.
pub fn footer_len(object_len: u64) -> u64 {
    FOOTER_FIXED_BYTES as u64 + 4 * chunk_count(object_len) + 4
}

/// Offset of the data from the record start, after the key and `attrs_len` bytes of
/// attributes (the content type and the headers: [`Attrs::stored_len`]).
pub fn data_start(key_len: usize, attrs_len: usize) -> u64 {
    (HEADER_BYTES + key_len + attrs_len) as u64
}

/// Total (aligned) record length.
pub fn record_len(key_len: usize, attrs_len: usize, object_len: u64) -> u64 {
    let raw = data_start(key_len, attrs_len) + object_len + footer_len(object_len);
    raw.div_ceil(BLOCK) * BLOCK
}

impl Header {
    /// Offset of the data from the record start.
    pub fn data_start(&self) -> u64 {
        data_start(self.key_len as usize, self.content_type_len as usize + self.headers_len as usize)
    }

    /// The algorithm of the footer's content digest.
    pub fn digest_kind(&self) -> DigestKind {
        if self.flags & FLAG_MD5 != 0 {
            DigestKind::Md5
        } else {
            DigestKind::Xxh3
        }
    }

    /// Offset of the footer from the record start.
    pub fn footer_start(&self) -> u64 {
        self.data_start() + self.object_len
    }

    /// Whether this record is a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.flags & FLAG_TOMBSTONE != 0
    }

    /// Whether this record was abandoned (its body is not to be read).
    pub fn is_void(&self) -> bool {
        self.flags & FLAG_VOID != 0
    }

    /// Encodes header, key and attributes into `out` (which must hold `data_start()` bytes),
    /// tagged with the shard's record key `rk`.
    pub fn encode(&self, key: &[u8], attrs: &Attrs, out: &mut [u8], rk: &RecordKey) {
        assert_eq!(key.len(), self.key_len as usize);
        assert_eq!(attrs.content_type.len(), self.content_type_len as usize);
        assert_eq!(attrs.encoded_headers().len(), self.headers_len as usize);
        assert_eq!(attrs.digest, self.digest_kind(), "the MD5 flag is the attributes' digest");
        let headers_at = HEADER_BYTES + key.len() + attrs.content_type.len();
        let ds = self.data_start() as usize;
        let b = &mut out[..ds];
        b[..HEADER_BYTES].fill(0);
        le::put(b, H_MAGIC, HEADER_MAGIC);
        le::put(b, H_VERSION, FORMAT_VERSION);
        le::put(b, H_FLAGS, self.flags);
        le::put(b, H_SHARD, self.shard_id);
        le::put(b, H_BLOB, self.blob_id);
        le::put(b, H_OFFSET, self.offset);
        le::put(b, H_SEQ, self.seq);
        le::put(b, H_CREATED, self.created_ms);
        le::put(b, H_OBJECT_LEN, self.object_len);
        le::put(b, H_RECORD_LEN, self.record_len);
        le::put(b, H_KEY_LEN, self.key_len);
        le::put(b, H_CT_LEN, self.content_type_len);
        le::put(b, H_HEADERS_LEN, self.headers_len);
        le::put(b, H_HLC, self.version.hlc);
        le::put(b, H_ORIGIN, self.version.origin);
        b[HEADER_BYTES..HEADER_BYTES + key.len()].copy_from_slice(key);
        b[HEADER_BYTES + key.len()..headers_at].copy_from_slice(attrs.content_type.as_bytes());
        b[headers_at..ds].copy_from_slice(attrs.encoded_headers());
        let tag = rk.tag(&b[0..H_TAG], &b[HEADER_BYTES..ds]);
        b[H_TAG..H_ZERO_2].copy_from_slice(&tag);
        let mut crc = podstore_disks::crc::crc32c(&b[0..H_CRC]);
        crc = podstore_disks::crc::crc32c_append(crc, &b[HEADER_BYTES..ds]);
        le::put(b, H_CRC, crc);
    }

    /// Decodes and verifies (checksum, then the tag with the shard's record key `rk`) a header
    /// with its key and content type from the start of `b`. Never panics. Returns the header;
    /// the key is `b[128..128+key_len]`.
    pub fn decode(b: &[u8], rk: &RecordKey) -> Result<Header, FormatError> {
        if b.len() < HEADER_BYTES {
            return Err(FormatError::Short);
        }
        if le::get::<u32>(b, H_MAGIC) != HEADER_MAGIC {
            return Err(FormatError::Magic);
        }
        let key_len: u16 = le::get(b, H_KEY_LEN);
        let ct_len: u8 = le::get(b, H_CT_LEN);
        let headers_len: u16 = le::get(b, H_HEADERS_LEN);
        let ds = data_start(key_len as usize, ct_len as usize + headers_len as usize) as usize;
        if key_len == 0 || key_len as usize > KEY_MAX_BYTES {
            return Err(FormatError::Field("key length"));
        }
        if headers_len as usize > HEADERS_MAX_BYTES {
            return Err(FormatError::Field("headers length"));
        }
        if b.len() < ds {
            return Err(FormatError::Short);
        }
        let mut crc = podstore_disks::crc::crc32c(&b[0..H_CRC]);
        crc = podstore_disks::crc::crc32c_append(crc, &b[HEADER_BYTES..ds]);
        if crc != le::get::<u32>(b, H_CRC) {
            return Err(FormatError::HeaderChecksum);
        }
        let version: u16 = le::get(b, H_VERSION);
        if version != FORMAT_VERSION {
            return Err(FormatError::Version(version));
        }
        let h = Header {
            flags: le::get(b, H_FLAGS),
            shard_id: le::get(b, H_SHARD),
            blob_id: le::get(b, H_BLOB),
            offset: le::get(b, H_OFFSET),
            seq: le::get(b, H_SEQ),
            created_ms: le::get(b, H_CREATED),
            object_len: le::get(b, H_OBJECT_LEN),
            record_len: le::get(b, H_RECORD_LEN),
            key_len,
            content_type_len: ct_len,
            headers_len,
            version: crate::Version { hlc: le::get(b, H_HLC), origin: le::get(b, H_ORIGIN) },
        };
        if b[H_ZERO_1..H_HLC].iter().chain(&b[H_ZERO_2..H_CRC]).any(|&x| x != 0) {
            return Err(FormatError::Field("reserved"));
        }
        if h.flags & !(FLAG_TOMBSTONE | FLAG_VOID | FLAG_MD5) != 0 {
            return Err(FormatError::Field("flags"));
        }
        if h.is_tombstone()
            && (h.object_len != 0 || h.flags & FLAG_MD5 != 0 || ds != HEADER_BYTES + key_len as usize)
        {
            return Err(FormatError::Field("tombstone"));
        }
        if attrs::check_encoding(&b[ds - headers_len as usize..ds]).is_err() {
            return Err(FormatError::Field("headers"));
        }
        if std::str::from_utf8(h.content_type(b)).is_err() {
            return Err(FormatError::Field("content type"));
        }
        if !h.offset.is_multiple_of(BLOCK) {
            return Err(FormatError::Field("offset"));
        }
        // Checked arithmetic: a corrupt length must not overflow.
        let expect = h.object_len.checked_add(ds as u64 + footer_len(h.object_len.min(u64::MAX / 2)));
        if expect.and_then(|raw| raw.div_ceil(BLOCK).checked_mul(BLOCK)) != Some(h.record_len) {
            return Err(FormatError::Field("record length"));
        }
        // Last: the costliest check, and the one only this shard's writes pass.
        if !rk.verify(&b[0..80], &b[HEADER_BYTES..ds], &b[80..96]) {
            return Err(FormatError::Tag);
        }
        Ok(h)
    }

    /// The key bytes that follow a decoded header in `b`.
    pub fn key<'a>(&self, b: &'a [u8]) -> &'a [u8] {
        &b[HEADER_BYTES..HEADER_BYTES + self.key_len as usize]
    }

    /// The content type that follows the key in `b`.
    pub fn content_type<'a>(&self, b: &'a [u8]) -> &'a [u8] {
        let s = HEADER_BYTES + self.key_len as usize;
        &b[s..s + self.content_type_len as usize]
    }

    /// The attributes that follow the key in `b` (of a header [`Header::decode`] took).
    pub fn attrs(&self, b: &[u8]) -> Attrs {
        let ct = String::from_utf8_lossy(self.content_type(b));
        let s = HEADER_BYTES + self.key_len as usize + self.content_type_len as usize;
        Attrs::from_record(&ct, &b[s..s + self.headers_len as usize], self.digest_kind())
    }
}

/// The decoded footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    pub seq: u64,
    pub digest: [u8; 16],
    pub chunk_crcs: Vec<u32>,
}

impl Footer {
    /// Encodes the footer (length `footer_len(object_len)`).
    pub fn encode(&self) -> Vec<u8> {
        let n = self.chunk_crcs.len();
        let mut b = Vec::with_capacity(FOOTER_FIXED_BYTES + 4 * n + 4);
        b.extend_from_slice(&FOOTER_MAGIC.to_le_bytes());
        b.extend_from_slice(&(n as u32).to_le_bytes());
        b.extend_from_slice(&self.seq.to_le_bytes());
        b.extend_from_slice(&self.digest);
        for c in &self.chunk_crcs {
            b.extend_from_slice(&c.to_le_bytes());
        }
        let crc = podstore_disks::crc::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies a footer for an object of `object_len` bytes with sequence `seq`.
    /// Never panics.
    pub fn decode(b: &[u8], object_len: u64, seq: u64) -> Result<Footer, FormatError> {
        let n = chunk_count(object_len);
        let len = footer_len(object_len);
        if (b.len() as u64) < len {
            return Err(FormatError::Short);
        }
        let len = len as usize;
        if le::get::<u32>(b, F_MAGIC) != FOOTER_MAGIC {
            return Err(FormatError::Magic);
        }
        if podstore_disks::crc::crc32c(&b[..len - 4]) != le::get::<u32>(b, len - 4) {
            return Err(FormatError::FooterChecksum);
        }
        if le::get::<u32>(b, F_CHUNKS) as u64 != n {
            return Err(FormatError::Field("chunk count"));
        }
        if le::get::<u64>(b, F_SEQ) != seq {
            return Err(FormatError::Field("footer sequence"));
        }
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&b[F_DIGEST..FOOTER_FIXED_BYTES]);
        let chunk_crcs = (0..n as usize).map(|i| le::get(b, FOOTER_FIXED_BYTES + 4 * i)).collect();
        Ok(Footer { seq, digest, chunk_crcs })
    }
}

/// Streaming checksums of object data as it is written: per-chunk CRC32C and the digest.
pub(crate) struct DataSums {
    crcs: Vec<u32>,
    current: u32,
    in_chunk: u64,
    /// None: the digest is not computed (a copy checked by its chunk CRCs takes it as given).
    digest: Option<Digester>,
    total: u64,
}

/// A content digest being computed.
pub enum Digester {
    Xxh3(Box<xxhash_rust::xxh3::Xxh3>),
    Md5(md5::Md5),
}

impl std::fmt::Debug for Digester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Digester::Xxh3(_) => "Digester(XXH3-128)",
            Digester::Md5(_) => "Digester(MD5)",
        })
    }
}

impl Digester {
    pub fn new(kind: DigestKind) -> Digester {
        match kind {
            DigestKind::Xxh3 => Digester::Xxh3(Box::default()),
            DigestKind::Md5 => Digester::Md5(md5::Md5::default()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Digester::Xxh3(h) => h.update(data),
            Digester::Md5(h) => md5::Digest::update(h, data),
        }
    }

    pub fn finish(self) -> [u8; 16] {
        match self {
            Digester::Xxh3(h) => h.digest128().to_le_bytes(),
            Digester::Md5(h) => md5::Digest::finalize(h).into(),
        }
    }
}

/// The content digest of `data` as a record of digest `kind` stores it.
pub fn digest_of(kind: DigestKind, data: &[u8]) -> [u8; 16] {
    let mut d = Digester::new(kind);
    d.update(data);
    d.finish()
}

impl std::fmt::Debug for DataSums {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataSums").field("total", &self.total).field("chunks", &self.crcs.len()).finish()
    }
}

impl DataSums {
    pub(crate) fn new(kind: DigestKind) -> DataSums {
        DataSums { crcs: Vec::new(), current: 0, in_chunk: 0, digest: Some(Digester::new(kind)), total: 0 }
    }

    /// The sums so far, leaving empty ones (no digest: nothing allocated) in their place.
    pub(crate) fn take(&mut self) -> DataSums {
        let empty = DataSums { crcs: Vec::new(), current: 0, in_chunk: 0, digest: None, total: 0 };
        std::mem::replace(self, empty)
    }

    /// Stops computing the whole object's digest (before any data): the chunk CRCs only.
    pub(crate) fn crcs_only(&mut self) {
        assert_eq!(self.total, 0, "the digest is given up before any data");
        self.digest = None;
    }

    /// Whether the digest is computed.
    pub(crate) fn hashing(&self) -> bool {
        self.digest.is_some()
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        // Both sums over each 64 KiB block in turn: the second pass reads what the first just
        // brought into the cache, rather than a whole megabyte from memory again.
        for block in data.chunks(SUMS_BLOCK_BYTES) {
            self.update_block(block);
        }
    }

    fn update_block(&mut self, mut data: &[u8]) {
        if let Some(d) = self.digest.as_mut() {
            d.update(data);
        }
        self.total += data.len() as u64;
        while !data.is_empty() {
            let room = (CHUNK_BYTES - self.in_chunk) as usize;
            let n = room.min(data.len());
            self.current = podstore_disks::crc::crc32c_append(self.current, &data[..n]);
            self.in_chunk += n as u64;
            data = &data[n..];
            if self.in_chunk == CHUNK_BYTES {
                self.crcs.push(self.current);
                self.current = 0;
                self.in_chunk = 0;
            }
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    pub(crate) fn finish(mut self, seq: u64) -> Footer {
        if self.in_chunk > 0 {
            self.crcs.push(self.current);
        }
        // (Zero when not computed: the caller stores the digest it was given instead.)
        let digest = self.digest.map_or([0; 16], Digester::finish);
        Footer { seq, digest, chunk_crcs: self.crcs }
    }
}

/// Verifies the data chunks `first..first+n` held contiguously in `data` (the last chunk of the
/// object may be short) against the footer.
pub(crate) fn verify_chunks(footer: &Footer, first: u64, data: &[u8]) -> Result<(), FormatError> {
    for (i, chunk) in data.chunks(CHUNK_BYTES as usize).enumerate() {
        let idx = first + i as u64;
        let want = footer.chunk_crcs.get(idx as usize).ok_or(FormatError::Field("chunk index"))?;
        if podstore_disks::crc::crc32c(chunk) != *want {
            return Err(FormatError::DataChecksum(idx as u32));
        }
    }
    Ok(())
}

/// Maps a format error of a stored record to the engine error.
pub(crate) fn corrupt(shard: u32, blob: u32, offset: u64, e: FormatError) -> Error {
    Error::Corrupt { shard, blob, offset, reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer's sums do not depend on how the body is cut into pieces: every cut gives a
    /// CRC32C per 1 MiB chunk and an XXH3-128 of the whole computed in one go.
    #[test]
    fn data_sums_are_the_same_however_the_body_is_cut() {
        let data: Vec<u8> = (0..(3 * CHUNK_BYTES as usize + 12_345)).map(|i| (i * 31 % 251) as u8).collect();
        let want_crcs: Vec<u32> =
            data.chunks(CHUNK_BYTES as usize).map(podstore_disks::crc::crc32c).collect();
        let want_digest = xxhash_rust::xxh3::xxh3_128(&data).to_le_bytes();
        for cut in [1usize, 4095, 65_536, 65_537, 1 << 20, (1 << 20) + 3, 3 << 20, data.len()] {
            let mut s = DataSums::new(DigestKind::Xxh3);
            for piece in data.chunks(cut) {
                s.update(piece);
            }
            assert_eq!(s.total(), data.len() as u64);
            let f = s.finish(9);
            assert_eq!(f.chunk_crcs, want_crcs, "cut {cut}");
            assert_eq!(f.digest, want_digest, "cut {cut}");
        }
    }

    fn attrs() -> Attrs {
        Attrs::new("image/jpeg", [("x-amz-meta-a", "1"), ("cache-control", "no-cache")], DigestKind::Md5)
            .expect("valid")
    }

    fn header(object_len: u64) -> Header {
        let a = attrs();
        Header {
            flags: FLAG_MD5,
            shard_id: 1,
            blob_id: 2,
            offset: 8192,
            seq: 42,
            created_ms: 1_700_000_000_000,
            object_len,
            record_len: record_len(3, a.stored_len(), object_len),
            key_len: 3,
            content_type_len: 10,
            headers_len: a.encoded_headers().len() as u16,
            version: crate::Version { hlc: 0x1234_5678_9abc, origin: 77 },
        }
    }

    #[test]
    fn header_round_trips_and_detects_any_flipped_bit() {
        let h = header(5000);
        let mut b = vec![0u8; 4096];
        let rk = RecordKey::from_bytes([9; 16]);
        h.encode(b"abc", &attrs(), &mut b, &rk);
        let d = Header::decode(&b, &rk).expect("valid");
        assert_eq!(d, h);
        assert_eq!(d.key(&b), b"abc");
        assert_eq!(d.content_type(&b), b"image/jpeg");
        assert_eq!(d.attrs(&b), attrs());
        assert_eq!(d.digest_kind(), DigestKind::Md5);
        for bit in 0..(h.data_start() as usize * 8) {
            let mut c = b.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::decode(&c, &rk).is_err(), "bit {bit} flip undetected");
        }
        // The same header under another shard's key (or one a client made up) is not a record,
        // though every checksum is right.
        assert_eq!(Header::decode(&b, &RecordKey::from_bytes([8; 16])), Err(FormatError::Tag));
        // A version-1 header (no tag) is refused by its version.
        let mut v1 = b.clone();
        v1[4..6].copy_from_slice(&1u16.to_le_bytes());
        v1[80..96].fill(0);
        let crc = podstore_disks::crc::crc32c_append(
            podstore_disks::crc::crc32c(&v1[0..124]),
            &v1[HEADER_BYTES..h.data_start() as usize],
        );
        v1[124..128].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Header::decode(&v1, &rk), Err(FormatError::Version(1)));
    }

    #[test]
    fn footer_round_trips_and_chunks_verify() {
        let data: Vec<u8> = (0..(CHUNK_BYTES as usize * 2 + 77)).map(|i| (i * 7 % 256) as u8).collect();
        let mut s = DataSums::new(DigestKind::Xxh3);
        for piece in data.chunks(333_333) {
            s.update(piece);
        }
        let f = s.finish(9);
        assert_eq!(f.chunk_crcs.len(), 3);
        let enc = f.encode();
        assert_eq!(enc.len() as u64, footer_len(data.len() as u64));
        assert_eq!(Footer::decode(&enc, data.len() as u64, 9).expect("valid"), f);
        assert_eq!(Footer::decode(&enc, data.len() as u64, 10), Err(FormatError::Field("footer sequence")));
        verify_chunks(&f, 0, &data).expect("all chunks");
        verify_chunks(&f, 1, &data[CHUNK_BYTES as usize..]).expect("tail chunks");
        let mut bad = data.clone();
        bad[CHUNK_BYTES as usize + 5] ^= 0x10;
        assert_eq!(verify_chunks(&f, 0, &bad), Err(FormatError::DataChecksum(1)));
    }

    #[test]
    fn decoders_survive_arbitrary_bytes() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let n = rng.usize(0..600);
            let mut b: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            if n >= 4 && rng.bool() {
                b[0..4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
            }
            let _ = Header::decode(&b, &RecordKey::from_bytes([3; 16]));
            let _ = Footer::decode(&b, rng.u64(..), rng.u64(..));
        }
    }
}
