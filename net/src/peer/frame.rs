//! The replication protocol's frames: versioned, length-prefixed, checksummed.
//!
//! Every frame starts with a fixed header; a metadata part follows (its length and CRC are in
//! the header); a PUT's object bytes follow the metadata and end with a trailer that carries
//! the content digest, so a sender can stream a body it is still receiving.
//!
//! ```text
//! header (40 bytes), little-endian
//! offset size field
//!      0    4 magic "PSRP"
//!      4    1 protocol version = 1
//!      5    1 type (Kind)
//!      6    1 flags: bit 0 (PUT only) the trailer is followed by the data's chunk CRC32Cs
//!      7    1 zero
//!      8    8 request id (chosen by the sender of a request; an ACK carries it back)
//!     16    4 metadata length, bytes (at most META_MAX_BYTES)
//!     20    4 CRC32C of the metadata
//!     24    8 data length, bytes (PUT: the object's length; every other kind: 0)
//!     32    4 zero
//!     36    4 CRC32C of header bytes 0..36
//!
//! metadata by kind (strings are a u16 length then UTF-8 bytes; names as API.md allows)
//!   HELLO      node name, datacenter, nonce [32]
//!   CHALLENGE  node name, datacenter, nonce [32], mac [32]
//!   AUTH       mac [32]
//!   AUTH_OK    the acceptor's placement (may be empty): accepting core u16, disk count u16,
//!              count × (disk id u32, placement weight f64 bits u64, owning core u16); a
//!              sender puts each copy on a connection the owning core accepted, where it is
//!              read straight into the record's write buffers
//!   PUT        hlc u64, origin u64, bucket (u8 length), key (u16 length), content type
//!              (u8 length), digest kind u8 (0 XXH3-128, 1 MD5: the trailer's digest is of
//!              this kind), headers (u16 length; kept with the object, encoded as the
//!              engine's attrs.rs says)
//!   DELETE     hlc u64, origin u64, bucket (u8 length), key (u16 length)
//!   ACK        status u8 (0 stored, 1 a newer or the same version was already stored,
//!              2 failed), message string
//!   PING, PONG (empty)
//!   REFUSED    message string (the handshake failed; the connection closes)
//!   DIGESTS_REQ (empty): asks for the appliance's bucket digests
//!   DIGESTS    BUCKETS × u64 (digest.rs in the engine)
//!   KEYS_REQ   bucket u32, after (u16 length; the last key of the previous page, empty at
//!              first)
//!   KEYS       count u32, count × (storage key (u16 length), hlc u64, origin u64,
//!              tombstone u8), more u8 (1: ask again after the last key)
//!   PULL       bucket (u8 length), key (u16 length): send me your newest write of this key
//!              (answered with an ACK once the copy is stored here, "newer" if there is none)
//!
//! PUT trailer (28 bytes), after the data
//!      0    4 magic "PSRT"
//!      4    4 flags: bit 0 abort (the sender could not complete the body: store nothing)
//!      8   16 the data's digest of the PUT's kind (the ETag)
//!     24    4 CRC32C of trailer bytes 0..24
//!
//! PUT chunk CRCs (when the header's flag bit 0 is set), after the trailer: one CRC32C per
//! 1 MiB chunk of the data as the sender's record stores them (u32 each, as many as the data
//! length makes chunks), then a CRC32C of those bytes. The receiver checks the chunks it
//! receives against them (and takes the trailer's digest as given) instead of hashing the
//! data a second time; a receiver that does not know the flag refuses the frame.
//! ```
//!
//! Decoders never panic and never allocate more than the limits allow, whatever the bytes.
//!
//! ## Version history
//!
//! The version byte has been 1 since the protocol began; each change below was added under
//! it, in this order. A decoder refuses a kind or a flag it does not know rather than guess at
//! it, and the appliances of one replica set are upgraded together (they run one build).
//!
//! 1. The first protocol: HELLO, CHALLENGE, AUTH, AUTH_OK, PUT with its trailer, DELETE,
//!    ACK, PING, PONG, REFUSED.
//! 2. Anti-entropy and read repair: DIGESTS_REQ, DIGESTS, KEYS_REQ, KEYS, PULL.
//! 3. AUTH_OK carries the acceptor's placement, so copies go to the core that writes them.
//! 4. PUT flag bit 0: the chunk CRC32Cs after the trailer (catch-up sends a stored record's).
//! 5. PUT metadata ends with the digest kind and the headers (a decoder before it refuses the
//!    longer metadata).
//!
//! A change that a decoder of the build before would misread, not refuse, takes version 2.

use podstore_disks::le;
use podstore_engine::{Attrs, DigestKind, Version};

pub const MAGIC: u32 = u32::from_le_bytes(*b"PSRP");
pub const TRAILER_MAGIC: u32 = u32::from_le_bytes(*b"PSRT");
pub const PROTOCOL_VERSION: u8 = 1;
pub const HEADER_BYTES: usize = 40;
pub const TRAILER_BYTES: usize = 28;
/// Largest metadata part (a page of keys, or every bucket digest).
pub const META_MAX_BYTES: usize = 64 << 10;
/// A KEYS page is cut before its metadata passes this.
pub const KEYS_PAGE_BYTES: usize = 48 << 10;
/// Length of handshake nonces and MACs.
pub const NONCE_BYTES: usize = 32;

/// Frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    Challenge = 2,
    Auth = 3,
    AuthOk = 4,
    Put = 5,
    Delete = 6,
    Ack = 7,
    Ping = 8,
    Pong = 9,
    Refused = 10,
    DigestsReq = 11,
    Digests = 12,
    KeysReq = 13,
    Keys = 14,
    Pull = 15,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Hello,
            2 => Kind::Challenge,
            3 => Kind::Auth,
            4 => Kind::AuthOk,
            5 => Kind::Put,
            6 => Kind::Delete,
            7 => Kind::Ack,
            8 => Kind::Ping,
            9 => Kind::Pong,
            10 => Kind::Refused,
            11 => Kind::DigestsReq,
            12 => Kind::Digests,
            13 => Kind::KeysReq,
            14 => Kind::Keys,
            15 => Kind::Pull,
            _ => return None,
        })
    }
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic")]
    Magic,
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("unknown frame type {0}")]
    Kind(u8),
    #[error("header checksum mismatch")]
    HeaderChecksum,
    #[error("metadata checksum mismatch")]
    MetaChecksum,
    #[error("trailer checksum mismatch")]
    TrailerChecksum,
    #[error("{0}")]
    Field(&'static str),
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: Kind,
    /// `PUT_CHUNK_CRCS` or 0.
    pub flags: u8,
    pub request: u64,
    pub meta_len: u32,
    pub meta_crc: u32,
    pub data_len: u64,
}

// The header's fields (the diagram above), each at its offset.
const F_MAGIC: usize = 0;
const F_VERSION: usize = 4;
const F_KIND: usize = 5;
const F_FLAGS: usize = 6;
const F_ZERO_1: usize = 7;
const F_REQUEST: usize = 8;
const F_META_LEN: usize = 16;
const F_META_CRC: usize = 20;
const F_DATA_LEN: usize = 24;
const F_ZERO_2: usize = 32;
const F_CRC: usize = 36;
const _: () = assert!(le::tiles(
    &[
        (F_MAGIC, 4),
        (F_VERSION, 1),
        (F_KIND, 1),
        (F_FLAGS, 1),
        (F_ZERO_1, 1),
        (F_REQUEST, 8),
        (F_META_LEN, 4),
        (F_META_CRC, 4),
        (F_DATA_LEN, 8),
        (F_ZERO_2, 4),
        (F_CRC, 4),
    ],
    HEADER_BYTES
));

impl FrameHeader {
    /// Encodes the header for `kind` with this metadata.
    pub fn encode(kind: Kind, request: u64, meta: &[u8], data_len: u64) -> [u8; HEADER_BYTES] {
        Self::encode_flagged(kind, 0, request, meta, data_len)
    }

    /// [`FrameHeader::encode`] with flags (`PUT_CHUNK_CRCS` on a PUT).
    pub fn encode_flagged(
        kind: Kind,
        flags: u8,
        request: u64,
        meta: &[u8],
        data_len: u64,
    ) -> [u8; HEADER_BYTES] {
        assert!(meta.len() <= META_MAX_BYTES, "metadata too long");
        assert!(kind == Kind::Put || data_len == 0);
        assert!(flags & !PUT_CHUNK_CRCS == 0 && (flags == 0 || kind == Kind::Put), "flags");
        let mut b = [0u8; HEADER_BYTES];
        le::put(&mut b, F_MAGIC, MAGIC);
        le::put(&mut b, F_VERSION, PROTOCOL_VERSION);
        le::put(&mut b, F_KIND, kind as u8);
        le::put(&mut b, F_FLAGS, flags);
        le::put(&mut b, F_REQUEST, request);
        le::put(&mut b, F_META_LEN, meta.len() as u32);
        le::put(&mut b, F_META_CRC, podstore_disks::crc::crc32c(meta));
        le::put(&mut b, F_DATA_LEN, data_len);
        let crc = podstore_disks::crc::crc32c(&b[0..F_CRC]);
        le::put(&mut b, F_CRC, crc);
        b
    }

    /// Decodes and checks a header. `data_max` bounds a PUT's data length.
    pub fn decode(b: &[u8; HEADER_BYTES], data_max: u64) -> Result<FrameHeader, FrameError> {
        if le::get::<u32>(b, F_MAGIC) != MAGIC {
            return Err(FrameError::Magic);
        }
        if podstore_disks::crc::crc32c(&b[0..F_CRC]) != le::get::<u32>(b, F_CRC) {
            return Err(FrameError::HeaderChecksum);
        }
        if b[F_VERSION] != PROTOCOL_VERSION {
            return Err(FrameError::Version(b[F_VERSION]));
        }
        let kind = Kind::from_u8(b[F_KIND]).ok_or(FrameError::Kind(b[F_KIND]))?;
        if b[F_ZERO_1] != 0 || b[F_ZERO_2..F_CRC].iter().any(|&x| x != 0) {
            return Err(FrameError::Field("reserved header bytes are not zero"));
        }
        let flags = b[F_FLAGS];
        if flags & !PUT_CHUNK_CRCS != 0 || (flags != 0 && kind != Kind::Put) {
            return Err(FrameError::Field("unknown header flags"));
        }
        let h = FrameHeader {
            kind,
            flags,
            request: le::get::<u64>(b, F_REQUEST),
            meta_len: le::get::<u32>(b, F_META_LEN),
            meta_crc: le::get::<u32>(b, F_META_CRC),
            data_len: le::get::<u64>(b, F_DATA_LEN),
        };
        if h.meta_len as usize > META_MAX_BYTES {
            return Err(FrameError::Field("metadata too long"));
        }
        if h.kind != Kind::Put && h.data_len != 0 {
            return Err(FrameError::Field("data on a frame that carries none"));
        }
        if h.data_len > data_max {
            return Err(FrameError::Field("object too large"));
        }
        Ok(h)
    }

    /// Checks the metadata against the header's CRC.
    pub fn check_meta(&self, meta: &[u8]) -> Result<(), FrameError> {
        if meta.len() != self.meta_len as usize {
            return Err(FrameError::Field("metadata length"));
        }
        if podstore_disks::crc::crc32c(meta) != self.meta_crc {
            return Err(FrameError::MetaChecksum);
        }
        Ok(())
    }
}

/// A whole frame without data (header and metadata), ready to write.
pub fn small_frame(kind: Kind, request: u64, meta: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_BYTES + meta.len());
    b.extend_from_slice(&FrameHeader::encode(kind, request, meta, 0));
    b.extend_from_slice(meta);
    b
}

/// The end of a PUT's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub abort: bool,
    pub digest: [u8; 16],
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_BYTES] {
        let mut b = [0u8; TRAILER_BYTES];
        b[0..4].copy_from_slice(&TRAILER_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&u32::from(self.abort).to_le_bytes());
        b[8..24].copy_from_slice(&self.digest);
        let crc = podstore_disks::crc::crc32c(&b[0..24]);
        b[24..28].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; TRAILER_BYTES]) -> Result<Trailer, FrameError> {
        if le::get::<u32>(b, 0) != TRAILER_MAGIC {
            return Err(FrameError::Magic);
        }
        if podstore_disks::crc::crc32c(&b[0..24]) != le::get::<u32>(b, 24) {
            return Err(FrameError::TrailerChecksum);
        }
        let flags = le::get::<u32>(b, 4);
        if flags & !1 != 0 {
            return Err(FrameError::Field("unknown trailer flags"));
        }
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&b[8..24]);
        Ok(Trailer { abort: flags & 1 == 1, digest })
    }
}

/// Header flag: the PUT's trailer is followed by its data's chunk CRC32Cs.
pub const PUT_CHUNK_CRCS: u8 = 1;

/// Bytes of the chunk CRCs that follow the trailer of a PUT of `data_len` bytes.
pub fn chunk_crcs_bytes(data_len: u64) -> usize {
    4 * podstore_engine::record::chunk_count(data_len) as usize + 4
}

/// Encodes chunk CRCs (then a CRC32C of them).
pub fn encode_chunk_crcs(crcs: &[u32]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 * crcs.len() + 4);
    for c in crcs {
        b.extend_from_slice(&c.to_le_bytes());
    }
    let crc = podstore_disks::crc::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes chunk CRCs (exactly `chunk_crcs_bytes` of the data length).
pub fn decode_chunk_crcs(b: &[u8]) -> Result<Vec<u32>, FrameError> {
    if b.len() < 4 || !b.len().is_multiple_of(4) {
        return Err(FrameError::Field("chunk CRCs length"));
    }
    let end = b.len() - 4;
    if podstore_disks::crc::crc32c(&b[..end]) != le::get::<u32>(b, end) {
        return Err(FrameError::TrailerChecksum);
    }
    Ok(b[..end].chunks_exact(4).map(|c| le::get::<u32>(c, 0)).collect())
}

/// A write copied to a peer: what PUT and DELETE metadata say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteMeta {
    pub version: Version,
    pub bucket: String,
    pub key: Vec<u8>,
    /// PUT only: content type, headers, digest kind.
    pub attrs: Attrs,
}

/// How a peer answered a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AckStatus {
    /// The copy is durable.
    Stored = 0,
    /// The peer already held this version or a newer one (durably).
    Newer = 1,
    /// The peer could not store it.
    Failed = 2,
}

/// Metadata builder.
#[derive(Debug, Default)]
pub struct MetaWriter(pub Vec<u8>);

impl MetaWriter {
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    /// A string or byte string with a u16 length (longer ones are cut to fit).
    pub fn str16(mut self, v: &[u8]) -> Self {
        let v = &v[..v.len().min(u16::MAX as usize)];
        self.0.extend_from_slice(&(v.len() as u16).to_le_bytes());
        self.0.extend_from_slice(v);
        self
    }
    /// A byte string of at most 255 bytes with a u8 length.
    pub fn str8(mut self, v: &[u8]) -> Self {
        let v = &v[..v.len().min(u8::MAX as usize)];
        self.0.push(v.len() as u8);
        self.0.extend_from_slice(v);
        self
    }
}

/// Metadata reader; every read is bounds-checked.
#[derive(Debug)]
pub struct MetaReader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> MetaReader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        MetaReader { b, at: 0 }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(FrameError::Field("metadata short"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    pub fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(le::get::<u64>(self.take(8)?, 0))
    }
    pub fn str16(&mut self) -> Result<&'a [u8], FrameError> {
        let n = self.take(2)?;
        let n = u16::from_le_bytes([n[0], n[1]]) as usize;
        self.take(n)
    }
    pub fn str8(&mut self) -> Result<&'a [u8], FrameError> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    /// Fails if bytes are left over.
    pub fn end(self) -> Result<(), FrameError> {
        if self.at == self.b.len() {
            Ok(())
        } else {
            Err(FrameError::Field("metadata has trailing bytes"))
        }
    }
}

fn text(b: &[u8], what: &'static str) -> Result<String, FrameError> {
    String::from_utf8(b.to_vec()).map_err(|_| FrameError::Field(what))
}

impl WriteMeta {
    /// Encodes PUT (`put`) or DELETE metadata.
    pub fn encode(&self, put: bool) -> Vec<u8> {
        let w = MetaWriter::default()
            .u64(self.version.hlc)
            .u64(self.version.origin)
            .str8(self.bucket.as_bytes())
            .str16(&self.key);
        if put {
            let kind = match self.attrs.digest {
                DigestKind::Xxh3 => 0,
                DigestKind::Md5 => 1,
            };
            w.str8(self.attrs.content_type.as_bytes()).u8(kind).str16(self.attrs.encoded_headers()).0
        } else {
            w.0
        }
    }

    /// Decodes and validates PUT or DELETE metadata like a client's request: the bucket and
    /// key follow API.md's rules, the content type is text, the version is real.
    pub fn decode(meta: &[u8], put: bool, key_bytes_max: usize) -> Result<WriteMeta, FrameError> {
        let mut r = MetaReader::new(meta);
        let version = Version { hlc: r.u64()?, origin: r.u64()? };
        let bucket = text(r.str8()?, "bucket is not UTF-8")?;
        let key = r.str16()?.to_vec();
        let attrs = if put {
            let ct = text(r.str8()?, "content type is not UTF-8")?;
            let digest = match r.u8()? {
                0 => DigestKind::Xxh3,
                1 => DigestKind::Md5,
                _ => return Err(FrameError::Field("digest kind")),
            };
            let headers = r.str16()?;
            Attrs::from_stored(&ct, headers, digest)
                .map_err(|_| FrameError::Field("content type or headers"))?
        } else {
            Attrs::default()
        };
        r.end()?;
        if version.hlc == 0 || version.origin == 0 {
            return Err(FrameError::Field("a copied write needs a version"));
        }
        crate::names::validate_copied_name(&bucket, &key, key_bytes_max)
            .map_err(|crate::names::NameError::Invalid(m)| FrameError::Field(m))?;
        Ok(WriteMeta { version, bucket, key, attrs })
    }

    /// The engine's key (`bucket/key`).
    pub fn storage_key(&self) -> Vec<u8> {
        crate::names::ObjectName { bucket: self.bucket.clone(), key: self.key.clone() }.storage_key()
    }
}

/// Encodes ACK metadata.
pub fn ack_meta(status: AckStatus, message: &str) -> Vec<u8> {
    MetaWriter::default().u8(status as u8).str16(message.as_bytes()).0
}

/// Decodes ACK metadata.
pub fn decode_ack(meta: &[u8]) -> Result<(AckStatus, String), FrameError> {
    let mut r = MetaReader::new(meta);
    let status = match r.u8()? {
        0 => AckStatus::Stored,
        1 => AckStatus::Newer,
        2 => AckStatus::Failed,
        _ => return Err(FrameError::Field("unknown ack status")),
    };
    let msg = String::from_utf8_lossy(r.str16()?).into_owned();
    r.end()?;
    Ok((status, msg))
}

/// Encodes bucket digests.
pub fn digests_meta(d: &[u64]) -> Vec<u8> {
    d.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decodes bucket digests (exactly `BUCKETS` of them).
pub fn decode_digests(meta: &[u8]) -> Result<Vec<u64>, FrameError> {
    if meta.len() != podstore_engine::digest::BUCKETS * 8 {
        return Err(FrameError::Field("digest count"));
    }
    Ok(meta.chunks_exact(8).map(|c| le::get::<u64>(c, 0)).collect())
}

/// One key as a KEYS page lists it.
pub type KeyEntry = podstore_engine::digest::KeyState;

/// Encodes a KEYS_REQ.
pub fn keys_req_meta(bucket: u32, after: &[u8]) -> Vec<u8> {
    MetaWriter(bucket.to_le_bytes().to_vec()).str16(after).0
}

/// Decodes a KEYS_REQ.
pub fn decode_keys_req(meta: &[u8]) -> Result<(u32, Vec<u8>), FrameError> {
    let mut r = MetaReader::new(meta);
    let b = r.array::<4>()?;
    let bucket = u32::from_le_bytes(b);
    if bucket as usize >= podstore_engine::digest::BUCKETS {
        return Err(FrameError::Field("bucket out of range"));
    }
    let after = r.str16()?.to_vec();
    r.end()?;
    Ok((bucket, after))
}

/// Encodes a KEYS page: entries in key order, cut at `KEYS_PAGE_BYTES`; returns the
/// metadata and how many entries it holds.
pub fn keys_meta(entries: &[KeyEntry]) -> (Vec<u8>, usize) {
    let mut body = Vec::new();
    let mut n = 0usize;
    for e in entries {
        if body.len() + e.key.len() + 19 > KEYS_PAGE_BYTES {
            break;
        }
        body = MetaWriter(body)
            .str16(&e.key)
            .u64(e.version.hlc)
            .u64(e.version.origin)
            .u8(u8::from(e.tombstone))
            .0;
        n += 1;
    }
    let mut out = (n as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out.push(u8::from(n < entries.len()));
    (out, n)
}

/// Decodes a KEYS page: the entries and whether more follow.
pub fn decode_keys(meta: &[u8]) -> Result<(Vec<KeyEntry>, bool), FrameError> {
    let mut r = MetaReader::new(meta);
    let n = u32::from_le_bytes(r.array::<4>()?) as usize;
    if n > meta.len() / 19 {
        return Err(FrameError::Field("key count"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let key = r.str16()?.to_vec();
        let version = Version { hlc: r.u64()?, origin: r.u64()? };
        let tombstone = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(FrameError::Field("tombstone flag")),
        };
        out.push(KeyEntry { key, version, tombstone });
    }
    let more = r.u8()? == 1;
    r.end()?;
    Ok((out, more))
}

/// One disk of a peer's placement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlacedDisk {
    pub shard_id: u32,
    pub weight: f64,
    pub core: u16,
}

/// What an acceptor tells in AUTH_OK: which of its cores accepted the connection, and which
/// core owns each of its disks. The sender places a key the way the acceptor does
/// (`podstore_engine::placement`) to find the core that will write it.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub accept_core: u16,
    pub disks: Vec<PlacedDisk>,
}

/// Most disks a placement may name.
pub const PLACEMENT_DISKS_MAX: usize = 4096;

impl Placement {
    /// The AUTH_OK metadata.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = MetaWriter(self.accept_core.to_le_bytes().to_vec());
        w.0.extend_from_slice(&(self.disks.len() as u16).to_le_bytes());
        for d in &self.disks {
            w.0.extend_from_slice(&d.shard_id.to_le_bytes());
            w = w.u64(d.weight.to_bits());
            w.0.extend_from_slice(&d.core.to_le_bytes());
        }
        w.0
    }

    /// Decodes AUTH_OK metadata: None when empty (a peer that says nothing).
    pub fn decode(meta: &[u8]) -> Result<Option<Placement>, FrameError> {
        if meta.is_empty() {
            return Ok(None);
        }
        let mut r = MetaReader::new(meta);
        let accept_core = u16::from_le_bytes(r.array::<2>()?);
        let n = u16::from_le_bytes(r.array::<2>()?) as usize;
        if n > PLACEMENT_DISKS_MAX {
            return Err(FrameError::Field("placement disk count"));
        }
        let mut disks = Vec::with_capacity(n);
        for _ in 0..n {
            let shard_id = u32::from_le_bytes(r.array::<4>()?);
            let weight = f64::from_bits(r.u64()?);
            if !(weight.is_finite() && weight > 0.0) {
                return Err(FrameError::Field("placement weight"));
            }
            let core = u16::from_le_bytes(r.array::<2>()?);
            disks.push(PlacedDisk { shard_id, weight, core });
        }
        r.end()?;
        Ok(Some(Placement { accept_core, disks }))
    }

    /// The core of this placement that owns `storage_key` (None without disks).
    pub fn owner_core(&self, storage_key: &[u8]) -> Option<u16> {
        let fp = podstore_engine::index::fingerprint(storage_key);
        let cands: Vec<podstore_engine::placement::Candidate> = self
            .disks
            .iter()
            .map(|d| podstore_engine::placement::Candidate { shard_id: d.shard_id, weight: d.weight })
            .collect();
        let shard = podstore_engine::placement::place(fp, &cands)?;
        self.disks.iter().find(|d| d.shard_id == shard).map(|d| d.core)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_round_trip_and_place_keys_like_the_acceptor() {
        let p = Placement {
            accept_core: 1,
            disks: (0..60u32)
                .map(|i| PlacedDisk { shard_id: i * 3, weight: 1.0 + i as f64, core: (i % 4) as u16 })
                .collect(),
        };
        let meta = p.encode();
        assert_eq!(Placement::decode(&meta), Ok(Some(p.clone())));
        assert_eq!(Placement::decode(&[]), Ok(None));
        for cut in [1, 3, 4, 10, meta.len() - 1] {
            assert!(Placement::decode(&meta[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = meta.clone();
        bad[4 + 4..4 + 12].copy_from_slice(&f64::NAN.to_bits().to_le_bytes());
        assert!(Placement::decode(&bad).is_err(), "a NaN weight");
        // The sender's answer is the acceptor's: the same placement function over the same disks.
        let cands: Vec<podstore_engine::placement::Candidate> = p
            .disks
            .iter()
            .map(|d| podstore_engine::placement::Candidate { shard_id: d.shard_id, weight: d.weight })
            .collect();
        for k in 0..500u32 {
            let key = format!("photos/k{k}").into_bytes();
            let shard = podstore_engine::placement::place(podstore_engine::index::fingerprint(&key), &cands)
                .expect("a disk");
            let core = p.disks.iter().find(|d| d.shard_id == shard).map(|d| d.core);
            assert_eq!(p.owner_core(&key), core);
        }
        assert_eq!(Placement { accept_core: 0, disks: vec![] }.owner_core(b"x"), None);
    }

    #[test]
    fn header_round_trips_and_detects_any_flipped_bit() {
        let meta = b"some metadata";
        let h = FrameHeader::encode(Kind::Put, 77, meta, 1 << 20);
        let d = FrameHeader::decode(&h, 5 << 30).expect("decode");
        assert_eq!((d.kind, d.request, d.meta_len, d.data_len), (Kind::Put, 77, meta.len() as u32, 1 << 20));
        d.check_meta(meta).expect("meta");
        assert_eq!(d.check_meta(b"some metadatA"), Err(FrameError::MetaChecksum));
        for bit in 0..HEADER_BYTES * 8 {
            let mut b = h;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(FrameHeader::decode(&b, 5 << 30).is_err(), "bit {bit}");
        }
        assert_eq!(FrameHeader::decode(&h, 1000), Err(FrameError::Field("object too large")));
        // The chunk-CRC flag: on a PUT only; no other flag.
        let f = FrameHeader::encode_flagged(Kind::Put, PUT_CHUNK_CRCS, 78, meta, 3 << 20);
        assert_eq!(FrameHeader::decode(&f, 5 << 30).expect("flagged").flags, PUT_CHUNK_CRCS);
        assert_eq!(d.flags, 0);
        let forged = |kind: Kind, flags: u8| {
            let mut b = FrameHeader::encode(kind, 1, b"", 0);
            b[6] = flags;
            let crc = podstore_disks::crc::crc32c(&b[0..36]);
            b[36..40].copy_from_slice(&crc.to_le_bytes());
            FrameHeader::decode(&b, 5 << 30)
        };
        assert_eq!(forged(Kind::Ping, PUT_CHUNK_CRCS), Err(FrameError::Field("unknown header flags")));
        assert_eq!(forged(Kind::Put, 2), Err(FrameError::Field("unknown header flags")));
        assert!(forged(Kind::Put, PUT_CHUNK_CRCS).is_ok());
    }

    #[test]
    fn chunk_crcs_round_trip_and_are_checked() {
        let crcs = vec![1u32, 0xdead_beef, 7];
        let b = encode_chunk_crcs(&crcs);
        assert_eq!(b.len(), chunk_crcs_bytes(2 * (1 << 20) + 1));
        assert_eq!(decode_chunk_crcs(&b), Ok(crcs));
        assert_eq!(decode_chunk_crcs(&encode_chunk_crcs(&[])), Ok(vec![]));
        assert_eq!(chunk_crcs_bytes(0), 4);
        for bit in 0..b.len() * 8 {
            let mut x = b.clone();
            x[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_chunk_crcs(&x).is_err(), "bit {bit}");
        }
        assert!(decode_chunk_crcs(&b[..7]).is_err() && decode_chunk_crcs(&[]).is_err());
    }

    #[test]
    fn trailer_and_metadata_round_trip() {
        let t = Trailer { abort: false, digest: [9; 16] };
        assert_eq!(Trailer::decode(&t.encode()), Ok(t));
        let mut b = t.encode();
        b[10] ^= 4;
        assert_eq!(Trailer::decode(&b), Err(FrameError::TrailerChecksum));
        let m = WriteMeta {
            version: Version { hlc: 5 << 16, origin: 3 },
            bucket: "photos".into(),
            key: "a/b c.jpg".into(),
            attrs: Attrs::new(
                "image/jpeg",
                [("x-amz-meta-k", "v"), ("cache-control", "no-store")],
                DigestKind::Md5,
            )
            .expect("valid"),
        };
        assert_eq!(WriteMeta::decode(&m.encode(true), true, 1024), Ok(m.clone()));
        // A digest kind it does not know, or headers that are not an encoding, are refused.
        let mut e = m.encode(true);
        let kind_at = 8 + 8 + 1 + 6 + 2 + 9 + 1 + 10;
        e[kind_at] = 7;
        assert_eq!(WriteMeta::decode(&e, true, 1024), Err(FrameError::Field("digest kind")));
        let mut e = m.encode(true);
        e[kind_at + 3] = 0;
        assert!(WriteMeta::decode(&e, true, 1024).is_err());
        let mut d = m.clone();
        d.attrs = Attrs::default();
        assert_eq!(WriteMeta::decode(&m.encode(false), false, 1024), Ok(d));
        // Names are checked like a client's.
        let bad = WriteMeta { bucket: "A".into(), ..m.clone() };
        assert!(WriteMeta::decode(&bad.encode(true), true, 1024).is_err());
        let bad = WriteMeta { key: b"\x00".to_vec(), ..m.clone() };
        assert!(WriteMeta::decode(&bad.encode(true), true, 1024).is_err());
        let bad = WriteMeta { version: Version::NONE, ..m };
        assert!(WriteMeta::decode(&bad.encode(true), true, 1024).is_err());
        assert_eq!(decode_ack(&ack_meta(AckStatus::Newer, "x")), Ok((AckStatus::Newer, "x".into())));
    }

    #[test]
    fn anti_entropy_pages_round_trip_and_are_bounded() {
        let d: Vec<u64> = (0..podstore_engine::digest::BUCKETS as u64).collect();
        assert_eq!(decode_digests(&digests_meta(&d)), Ok(d));
        assert!(decode_digests(&[0u8; 16]).is_err());
        assert_eq!(decode_keys_req(&keys_req_meta(7, b"after")), Ok((7, b"after".to_vec())));
        assert!(decode_keys_req(&keys_req_meta(1 << 20, b"")).is_err());
        let entries: Vec<KeyEntry> = (0..5000)
            .map(|i| KeyEntry {
                key: format!("photos/{i:05}").into_bytes(),
                version: Version { hlc: i, origin: 1 },
                tombstone: i % 3 == 0,
            })
            .collect();
        let (meta, n) = keys_meta(&entries);
        assert!(meta.len() <= META_MAX_BYTES && n < entries.len());
        let (got, more) = decode_keys(&meta).expect("decode");
        assert!(more);
        assert_eq!(got, entries[..n].to_vec());
        let (meta, n) = keys_meta(&entries[..10]);
        assert_eq!((decode_keys(&meta).expect("decode").1, n), (false, 10));
    }

    #[test]
    fn decoders_survive_arbitrary_bytes() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..20_000 {
            let mut h = [0u8; HEADER_BYTES];
            rng.fill(&mut h);
            let _ = FrameHeader::decode(&h, u64::MAX);
            let mut t = [0u8; TRAILER_BYTES];
            rng.fill(&mut t);
            let _ = Trailer::decode(&t);
            let n = rng.usize(0..64);
            let m: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            let _ = WriteMeta::decode(&m, rng.bool(), 1024);
            let _ = decode_ack(&m);
            let _ = decode_keys(&m);
            let _ = decode_keys_req(&m);
            let _ = decode_digests(&m);
        }
    }
}
