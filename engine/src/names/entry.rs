//! One entry of a shard's name index: what a listing shows of a key on this disk, and how it
//! is laid out in a run file's data block.
//!
//! ```text
//! entry, little-endian (52 bytes, then the key, then the content type)
//! offset size field
//!      0    2 key length (1..=KEY_MAX_BYTES)
//!      2    1 kind: 1 live object, 2 tombstone, 3 gone (the disk no longer holds the key);
//!             bit 7 set (live only): the digest is the content's MD5, not its XXH3-128;
//!             bit 6 set (live MD5 only): a multipart object (the length and the digest are
//!             the whole object's and its ETag's; its part count follows the content type)
//!      3    1 content type length (0..=255; 0 unless live)
//!      4    8 version: hybrid logical clock
//!     12    8 version: origin
//!     20    8 object length, bytes
//!     28    8 created, milliseconds since the Unix epoch (a listing's last-modified)
//!     36   16 content digest (the ETag)
//!     52    k key
//!   52+k    c content type
//! 52+k+c    2 part count (bit 6 of the kind only)
//! ```
//! Version history: 1 (first), with run format 1; within it, bit 7 of the kind since 2026-12
//! and bit 6 since late 2026-12 (a build before either finds such a run damaged and rebuilds
//! the name index from the records).

use podstore_disks::le;

use crate::attrs::{Attrs, DigestKind};
use crate::record::{CONTENT_TYPE_MAX_BYTES, KEY_MAX_BYTES};
use crate::Version;

/// Fixed part of an encoded entry.
pub const ENTRY_FIXED_BYTES: usize = 52;
/// Longest encoded entry.
pub const ENTRY_MAX_BYTES: usize = ENTRY_FIXED_BYTES + KEY_MAX_BYTES + CONTENT_TYPE_MAX_BYTES + 2;

const E_KEY_LEN: usize = 0;
const E_KIND: usize = 2;
const E_CT_LEN: usize = 3;
const E_HLC: usize = 4;
const E_ORIGIN: usize = 12;
const E_LEN: usize = 20;
const E_CREATED: usize = 28;
const E_DIGEST: usize = 36;
/// The kind byte's bit that marks an MD5 digest.
const KIND_MD5: u8 = 0x80;
/// The kind byte's bit that marks a multipart object.
const KIND_MULTIPART: u8 = 0x40;
const _: () = assert!(le::tiles(
    &[
        (E_KEY_LEN, 2),
        (E_KIND, 1),
        (E_CT_LEN, 1),
        (E_HLC, 8),
        (E_ORIGIN, 8),
        (E_LEN, 8),
        (E_CREATED, 8),
        (E_DIGEST, 16)
    ],
    ENTRY_FIXED_BYTES
));

/// What the disk holds for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An object: listed.
    Live = 1,
    /// A tombstone: not listed, but its version hides older copies on other disks.
    Tombstone = 2,
    /// Nothing any more (moved to another disk, or its tombstone was dropped): not listed;
    /// kept only to hide older entries of the key in older runs.
    Gone = 3,
}

/// A key's state on one disk, as its name index holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub kind: Kind,
    pub version: Version,
    pub object_len: u64,
    pub created_ms: u64,
    pub digest: [u8; 16],
    /// The digest's algorithm (what an S3 listing shows as the ETag depends on it).
    pub digest_kind: DigestKind,
    pub content_type: Box<str>,
    /// A multipart object's part count (its ETag is the digest with `-<parts>`); 0 for any
    /// other.
    pub parts: u16,
}

impl Name {
    /// A live object: its record's length and digest, or for a multipart object's record
    /// (a manifest) the whole object's length and its ETag's digest.
    pub fn live(version: Version, object_len: u64, created_ms: u64, digest: [u8; 16], attrs: &Attrs) -> Name {
        let ct = &attrs.content_type;
        assert!(ct.len() <= CONTENT_TYPE_MAX_BYTES, "content type of {} bytes", ct.len());
        let (object_len, digest, parts) = match attrs.multipart() {
            Some(m) if attrs.digest == DigestKind::Md5 => (m.object_len, m.etag, m.parts),
            _ => (object_len, digest, 0),
        };
        Name {
            kind: Kind::Live,
            version,
            object_len,
            created_ms,
            digest,
            digest_kind: attrs.digest,
            content_type: ct.clone(),
            parts,
        }
    }

    /// A tombstone written at `created_ms`.
    pub fn tombstone(version: Version, created_ms: u64) -> Name {
        Name {
            kind: Kind::Tombstone,
            version,
            object_len: 0,
            created_ms,
            digest: [0; 16],
            digest_kind: DigestKind::Xxh3,
            content_type: "".into(),
            parts: 0,
        }
    }

    /// The key is no longer on this disk.
    pub fn gone() -> Name {
        Name {
            kind: Kind::Gone,
            version: Version::NONE,
            object_len: 0,
            created_ms: 0,
            digest: [0; 16],
            digest_kind: DigestKind::Xxh3,
            content_type: "".into(),
            parts: 0,
        }
    }

    /// Bytes of the encoded entry with a key of `key_len` bytes.
    pub fn encoded_len(&self, key_len: usize) -> usize {
        ENTRY_FIXED_BYTES + key_len + self.content_type.len() + if self.parts > 0 { 2 } else { 0 }
    }

    /// Appends the encoded entry to `out`.
    pub fn encode(&self, key: &[u8], out: &mut Vec<u8>) {
        assert!(!key.is_empty() && key.len() <= KEY_MAX_BYTES, "key of {} bytes", key.len());
        let start = out.len();
        out.resize(start + ENTRY_FIXED_BYTES, 0);
        let b = &mut out[start..];
        le::put(b, E_KEY_LEN, key.len() as u16);
        let md5 = if self.digest_kind == DigestKind::Md5 { KIND_MD5 } else { 0 };
        let multipart = if self.parts > 0 { KIND_MULTIPART } else { 0 };
        le::put(b, E_KIND, self.kind as u8 | md5 | multipart);
        le::put(b, E_CT_LEN, self.content_type.len() as u8);
        le::put(b, E_HLC, self.version.hlc);
        le::put(b, E_ORIGIN, self.version.origin);
        le::put(b, E_LEN, self.object_len);
        le::put(b, E_CREATED, self.created_ms);
        b[E_DIGEST..E_DIGEST + 16].copy_from_slice(&self.digest);
        out.extend_from_slice(key);
        out.extend_from_slice(self.content_type.as_bytes());
        if self.parts > 0 {
            out.extend_from_slice(&self.parts.to_le_bytes());
        }
    }

    /// Decodes the entry at the start of `b`: the key, the name and the bytes it took. None if
    /// the bytes are not a valid entry.
    pub fn decode(b: &[u8]) -> Option<(&[u8], Name, usize)> {
        let fixed = b.get(..ENTRY_FIXED_BYTES)?;
        let key_len = le::get::<u16>(fixed, E_KEY_LEN) as usize;
        let ct_len = le::get::<u8>(fixed, E_CT_LEN) as usize;
        if key_len == 0 || key_len > KEY_MAX_BYTES {
            return None;
        }
        let (kind, digest_kind, multipart) = match le::get::<u8>(fixed, E_KIND) {
            1 => (Kind::Live, DigestKind::Xxh3, false),
            0x81 => (Kind::Live, DigestKind::Md5, false),
            0xC1 => (Kind::Live, DigestKind::Md5, true),
            2 => (Kind::Tombstone, DigestKind::Xxh3, false),
            3 => (Kind::Gone, DigestKind::Xxh3, false),
            _ => return None,
        };
        let ct_end = ENTRY_FIXED_BYTES + key_len + ct_len;
        let key = b.get(ENTRY_FIXED_BYTES..ENTRY_FIXED_BYTES + key_len)?;
        let ct = std::str::from_utf8(b.get(ENTRY_FIXED_BYTES + key_len..ct_end)?).ok()?;
        let (parts, len) = if multipart {
            let parts = u16::from_le_bytes(b.get(ct_end..ct_end + 2)?.try_into().ok()?);
            if parts == 0 {
                return None;
            }
            (parts, ct_end + 2)
        } else {
            (0, ct_end)
        };
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&fixed[E_DIGEST..E_DIGEST + 16]);
        let name = Name {
            kind,
            version: Version { hlc: le::get(fixed, E_HLC), origin: le::get(fixed, E_ORIGIN) },
            object_len: le::get(fixed, E_LEN),
            created_ms: le::get(fixed, E_CREATED),
            digest,
            digest_kind,
            content_type: ct.into(),
            parts,
        };
        Some((key, name, len))
    }

    /// Memory an entry of this name under a key of `key_len` bytes holds in a memtable, bytes
    /// (the key and content type on the heap, the value, and the tree's share per entry).
    pub fn memory_bytes(&self, key_len: usize) -> u64 {
        (key_len + self.content_type.len() + std::mem::size_of::<Name>() + 48) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_reject_garbage() {
        let v = Version { hlc: 7 << 16, origin: 3 };
        let names = [
            Name::live(v, 12345, 1_700_000_000_000, [9; 16], &"image/jpeg".into()),
            Name::live(v, 1, 2, [8; 16], &Attrs::new("text/plain", [], DigestKind::Md5).expect("valid")),
            Name::live(
                v,
                420,
                2,
                [8; 16],
                &Attrs::new("video/mp4", [], DigestKind::Md5)
                    .and_then(|a| {
                        a.with_multipart(crate::Multipart { object_len: 9 << 30, parts: 1000, etag: [5; 16] })
                    })
                    .expect("valid"),
            ),
            Name::tombstone(v, 5),
            Name::gone(),
        ];
        let key = b"photos/2026/a.jpg";
        for n in names {
            let mut out = vec![1, 2, 3];
            n.encode(key, &mut out);
            assert_eq!(out.len(), 3 + n.encoded_len(key.len()));
            let (k, d, used) = Name::decode(&out[3..]).expect("decodes");
            assert_eq!((k, &d, used), (&key[..], &n, n.encoded_len(key.len())));
            if n.parts > 0 {
                assert_eq!((d.object_len, d.digest, d.parts), (9 << 30, [5; 16], 1000), "the whole object's");
            }
            // Every truncation fails cleanly.
            for cut in 0..used {
                assert!(Name::decode(&out[3..3 + cut]).is_none(), "cut at {cut}");
            }
        }
        let mut bad = Vec::new();
        Name::gone().encode(b"k", &mut bad);
        bad[E_KIND] = 9;
        assert!(Name::decode(&bad).is_none());
        bad[E_KIND] = 3;
        bad[E_KEY_LEN] = 0;
        bad[E_KEY_LEN + 1] = 0;
        assert!(Name::decode(&bad).is_none());
    }
}
