//! Key digests for anti-entropy: the key space is cut into `BUCKETS` buckets (by the top bits
//! of the key's XXH3-64), and each bucket's digest is the XOR of one 64-bit hash per current
//! key (key, version, tombstone or not). Digests are kept up to date on every write, saved in
//! checkpoints and combine by XOR across shards and cores, so two appliances compare their
//! whole contents by exchanging `BUCKETS` numbers and then list only the buckets that differ.

use crate::Version;

/// Buckets of the key space (the same on every appliance: part of the protocol).
pub const BUCKETS: usize = 4096;
pub(crate) const BUCKET_SHIFT: u32 = 64 - BUCKETS.trailing_zeros();

/// The bucket of a key.
pub fn bucket_of(key: &[u8]) -> usize {
    (crate::index::fingerprint(key) >> BUCKET_SHIFT) as usize
}

/// The hash a current key contributes to its bucket.
pub fn entry_hash(key: &[u8], version: Version, tombstone: bool) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(key);
    h.update(&version.hlc.to_le_bytes());
    h.update(&version.origin.to_le_bytes());
    h.update(&[u8::from(tombstone)]);
    h.digest()
}

/// A key's version as a digest sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    pub key: Vec<u8>,
    pub version: Version,
    pub tombstone: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_range_and_hashes_depend_on_every_field() {
        let v = Version { hlc: 9 << 16, origin: 2 };
        assert!((0..10_000).all(|i| bucket_of(format!("k{i}").as_bytes()) < BUCKETS));
        let h = entry_hash(b"k", v, false);
        assert_ne!(h, entry_hash(b"k", v, true));
        assert_ne!(h, entry_hash(b"j", v, false));
        assert_ne!(h, entry_hash(b"k", Version { hlc: 9 << 16, origin: 3 }, false));
    }
}
