//! The in-memory index of one shard: key fingerprint → packed record location.
//!
//! The main table maps a 64-bit fingerprint (XXH3 of the key) to a [`Loc`] packed in a `u64`,
//! 16 bytes of payload per object in a hashbrown table (about 17 bytes per bucket). The full key
//! lives only in the record header. When two different keys share a fingerprint, the one that
//! came second lives in a small overflow map keyed by the full key; telling them apart takes a
//! read of the first one's header (see `Shard::resolve_slot`). A GET compares the key in the
//! record it read with the one asked for, so a collision never returns another key's bytes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A record's place on the shard, packed in 64 bits:
///
/// ```text
/// bits 63..44  blob id (20 bits: 1,048,576 blobs per shard)
/// bits 43..20  offset in the blob, in 4096-byte blocks (24 bits: blobs up to 64 GiB)
/// bits 19..0   record length in blocks: 0 = tombstone (one block), 0xFFFFF = 4 GiB or more
///              (read the header for the length), otherwise the exact length
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Loc(u64);

/// Most blobs per shard.
pub const BLOB_ID_MAX: u32 = (1 << 20) - 1;
/// Largest blob file (the offset field's reach).
pub const BLOB_SIZE_MAX_BYTES: u64 = (1 << 24) * 4096;
const LEN_LARGE: u64 = 0xF_FFFF;

impl Loc {
    /// Packs a location. `record_len` is in bytes (a multiple of 4096).
    pub fn new(blob: u32, offset: u64, record_len: u64, tombstone: bool) -> Loc {
        assert!(blob <= BLOB_ID_MAX, "blob id {blob} beyond {BLOB_ID_MAX}");
        assert!(offset.is_multiple_of(4096) && offset < BLOB_SIZE_MAX_BYTES, "offset {offset}");
        assert!(record_len.is_multiple_of(4096) && record_len > 0, "record length {record_len}");
        let len_field = if tombstone {
            assert_eq!(record_len, 4096, "a tombstone is one block");
            0
        } else {
            (record_len / 4096).min(LEN_LARGE)
        };
        Loc(((blob as u64) << 44) | ((offset / 4096) << 20) | len_field)
    }

    /// The blob id.
    pub fn blob(self) -> u32 {
        (self.0 >> 44) as u32
    }

    /// Offset of the record in its blob, bytes.
    pub fn offset(self) -> u64 {
        ((self.0 >> 20) & 0xFF_FFFF) * 4096
    }

    /// Whether the record is a tombstone.
    pub fn is_tombstone(self) -> bool {
        self.0 & LEN_LARGE == 0
    }

    /// The record length in bytes, if the location knows it (None for records of 4 GiB or more).
    pub fn record_len(self) -> Option<u64> {
        match self.0 & LEN_LARGE {
            0 => Some(4096),
            LEN_LARGE => None,
            n => Some(n * 4096),
        }
    }

    /// The raw packed value (for checkpoints).
    pub fn to_raw(self) -> u64 {
        self.0
    }

    /// Unpacks a raw value read from a checkpoint.
    pub fn from_raw(raw: u64) -> Loc {
        Loc(raw)
    }
}

/// The fingerprint of a key.
pub fn fingerprint(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Fingerprints are already uniform hashes: use them as they are.
#[derive(Default, Clone, Copy, Debug)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type FpMap = HashMap<u64, Loc, BuildHasherDefault<IdentityHasher>>;

/// Where a key's entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Main,
    Overflow,
}

/// One shard's index.
#[derive(Debug, Default)]
pub struct Index {
    main: FpMap,
    overflow: HashMap<Box<[u8]>, Loc>,
    live_objects: u64,
    tombstones: u64,
}

impl Index {
    /// An index with room for `n` entries.
    pub fn with_capacity(n: usize) -> Index {
        Index { main: FpMap::with_capacity_and_hasher(n, Default::default()), ..Default::default() }
    }

    /// The main-table entry for a fingerprint.
    pub fn main_get(&self, fp: u64) -> Option<Loc> {
        self.main.get(&fp).copied()
    }

    /// The overflow entry for a full key.
    pub fn overflow_get(&self, key: &[u8]) -> Option<Loc> {
        if self.overflow.is_empty() {
            return None;
        }
        self.overflow.get(key).copied()
    }

    fn count(&mut self, old: Option<Loc>, new: Option<Loc>) {
        for (l, sign) in [(old, -1i64), (new, 1)] {
            if let Some(l) = l {
                let c = if l.is_tombstone() { &mut self.tombstones } else { &mut self.live_objects };
                *c = c.wrapping_add_signed(sign);
            }
        }
    }

    /// Sets a key's entry; returns the entry it replaced.
    pub fn set(&mut self, slot: Slot, fp: u64, key: &[u8], loc: Loc) -> Option<Loc> {
        let old = match slot {
            Slot::Main => self.main.insert(fp, loc),
            Slot::Overflow => self.overflow.insert(key.into(), loc),
        };
        self.count(old, Some(loc));
        old
    }

    /// Removes a key's entry.
    pub fn remove(&mut self, slot: Slot, fp: u64, key: &[u8]) -> Option<Loc> {
        let old = match slot {
            Slot::Main => self.main.remove(&fp),
            Slot::Overflow => self.overflow.remove(key),
        };
        self.count(old, None);
        old
    }

    /// Objects (not tombstones) in the index.
    pub fn live_objects(&self) -> u64 {
        self.live_objects
    }

    /// Tombstones in the index.
    pub fn tombstones(&self) -> u64 {
        self.tombstones
    }

    /// Entries of both tables.
    pub fn len(&self) -> usize {
        self.main.len() + self.overflow.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory held by the tables, bytes (buckets, control bytes and overflow keys).
    pub fn memory_bytes(&self) -> u64 {
        let bucket = std::mem::size_of::<(u64, Loc)>() as u64 + 1;
        let main = if self.main.capacity() == 0 {
            0
        } else {
            (self.main.capacity() as u64 * 8 / 7).next_power_of_two() * bucket
        };
        let over: u64 = self.overflow.keys().map(|k| k.len() as u64 + 40).sum();
        main + over
    }

    /// Every main-table entry.
    pub fn main_entries(&self) -> impl Iterator<Item = (u64, Loc)> + '_ {
        self.main.iter().map(|(f, l)| (*f, *l))
    }

    /// Every overflow entry.
    pub fn overflow_entries(&self) -> impl Iterator<Item = (&[u8], Loc)> + '_ {
        self.overflow.iter().map(|(k, l)| (&k[..], *l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loc_packs_and_unpacks() {
        let l = Loc::new(BLOB_ID_MAX, BLOB_SIZE_MAX_BYTES - 4096, 8192, false);
        assert_eq!(
            (l.blob(), l.offset(), l.record_len(), l.is_tombstone()),
            (BLOB_ID_MAX, BLOB_SIZE_MAX_BYTES - 4096, Some(8192), false)
        );
        let t = Loc::new(3, 4096, 4096, true);
        assert!(t.is_tombstone());
        assert_eq!(t.record_len(), Some(4096));
        let big = Loc::new(1, 0, 5 << 30, false);
        assert_eq!(big.record_len(), None);
        assert!(!big.is_tombstone());
        assert_eq!(Loc::from_raw(big.to_raw()), big);
    }

    #[test]
    fn counts_follow_sets_and_removes() {
        let mut ix = Index::default();
        ix.set(Slot::Main, 1, b"a", Loc::new(0, 0, 4096, false));
        ix.set(Slot::Overflow, 1, b"b", Loc::new(0, 4096, 4096, false));
        assert_eq!(ix.live_objects(), 2);
        ix.set(Slot::Main, 1, b"a", Loc::new(0, 8192, 4096, true));
        assert_eq!((ix.live_objects(), ix.tombstones()), (1, 1));
        assert_eq!(ix.overflow_get(b"b"), Some(Loc::new(0, 4096, 4096, false)));
        ix.remove(Slot::Overflow, 1, b"b");
        assert_eq!((ix.live_objects(), ix.len()), (0, 1));
    }
}
