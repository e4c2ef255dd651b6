//! The shard's record key: a secret that tags every record header it writes.
//!
//! Recovery finds the records written after the last checkpoint by scanning block by block. An
//! object's data is whatever a client sent, and a client can lay out a perfect record (header,
//! key, data, footer, every checksum right) at each block boundary of its body. If a power loss
//! reorders the drive's writes so that a later block of that body survives but the block with the
//! real header does not, the scan would meet the client's record first and index it: under any
//! key, with any version. The header tag (SipHash-2-4-128, a keyed pseudo-random function made
//! for short inputs) is computed with a 128-bit key the client never sees, so forged bytes fail
//! it (a blind guess succeeds once in 2^128).
//!
//! The key lives in `podstore.record-key` in the shard's directory, created (temporary file,
//! fdatasync, rename, directory fsync) by the first open of an empty directory, before any
//! record is written; read at every open. A directory with blob files or checkpoints but no key
//! file is refused: its records cannot be authenticated (written by a build before record format
//! 2, or the file was lost).
//!
//! ```text
//! podstore.record-key, two identical 4096-byte blocks (either one suffices), little-endian
//! offset size field
//!      0    8 magic "PSRECKEY"
//!      8    4 format version = 1
//!     12    4 shard id (the disk id)
//!     16   16 key
//!     32    8 created, seconds since the Unix epoch
//!     40    4 CRC32C of bytes 0..40
//!     44 4052 zero
//! ```
//! Version history: 1 (first).

use std::hash::Hasher;
use std::path::Path;

use podstore_disks::{AlignedBuf, Io, OpenMode};
use siphasher::sip128::{Hash128, Hasher128, SipHasher24};

use crate::{Error, Result};

/// Name of the key file in a shard's directory.
pub const KEY_FILE: &str = "podstore.record-key";
const MAGIC: &[u8; 8] = b"PSRECKEY";
const VERSION: u32 = 1;
const COPY_BYTES: usize = 4096;
const FILE_BYTES: usize = 2 * COPY_BYTES;

/// The secret that tags a shard's record headers.
#[derive(Clone, Copy)]
pub struct RecordKey([u8; 16]);

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordKey(..)")
    }
}

/// A fixed key for the fuzzers and their seed files (`fuzz/`); never a shard's.
pub const FUZZ_KEY: RecordKey = RecordKey(*b"podstore fuzzing");

impl RecordKey {
    /// A key from its bytes (tests and tools; a shard reads its own from its key file).
    pub fn from_bytes(b: [u8; 16]) -> RecordKey {
        RecordKey(b)
    }

    /// A new random key from the operating system's generator.
    pub fn generate() -> std::io::Result<RecordKey> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(std::io::Error::other)?;
        Ok(RecordKey(b))
    }

    fn hash(&self, fixed: &[u8], rest: &[u8]) -> Hash128 {
        let mut h = SipHasher24::new_with_key(&self.0);
        h.write(fixed);
        h.write(rest);
        h.finish128()
    }

    /// The tag of a header: its fixed bytes, then its key and content type.
    pub fn tag(&self, fixed: &[u8], rest: &[u8]) -> [u8; 16] {
        u128::from(self.hash(fixed, rest)).to_le_bytes()
    }

    /// Whether `tag` is the tag of these bytes (compared in constant time).
    pub fn verify(&self, fixed: &[u8], rest: &[u8], tag: &[u8]) -> bool {
        let Ok(t) = <[u8; 16]>::try_from(tag) else { return false };
        self.hash(fixed, rest) == Hash128::from(u128::from_le_bytes(t))
    }

    fn encode(&self, shard: u32, created_unix_s: u64) -> Vec<u8> {
        let mut b = vec![0u8; FILE_BYTES];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&shard.to_le_bytes());
        b[16..32].copy_from_slice(&self.0);
        b[32..40].copy_from_slice(&created_unix_s.to_le_bytes());
        let crc = podstore_disks::crc::crc32c(&b[0..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        b.copy_within(0..COPY_BYTES, COPY_BYTES);
        b
    }

    /// Decodes the key file of shard `shard`: the first valid copy. Never panics.
    fn decode(b: &[u8], shard: u32) -> std::result::Result<RecordKey, String> {
        let mut why = String::from("too short");
        for copy in b.chunks_exact(COPY_BYTES).take(2) {
            let u32_at = |at: usize| u32::from_le_bytes([copy[at], copy[at + 1], copy[at + 2], copy[at + 3]]);
            if &copy[0..8] != MAGIC {
                why = "bad magic".into();
            } else if podstore_disks::crc::crc32c(&copy[0..40]) != u32_at(40) {
                why = "checksum mismatch".into();
            } else if u32_at(8) != VERSION {
                why = format!("format version {} is not supported (this build reads {VERSION})", u32_at(8));
            } else if u32_at(12) != shard {
                why = format!("belongs to shard {}, not {shard}", u32_at(12));
            } else {
                let mut k = [0u8; 16];
                k.copy_from_slice(&copy[16..32]);
                return Ok(RecordKey(k));
            }
        }
        Err(why)
    }
}

/// The record key of the shard in `dir` (whose file names are `names`): read from its key file,
/// or created for a shard that has written nothing yet. A read-only open of an empty shard gets a
/// key that is never stored (it writes nothing and has nothing to read).
pub(crate) async fn load_or_create<I: Io>(
    io: &I,
    dir: &Path,
    shard: u32,
    names: &[String],
    read_only: bool,
) -> Result<RecordKey> {
    let disk = |e| Error::Disk { shard, source: e };
    let damaged = |reason: String| Error::Damaged { shard, reason };
    let path = dir.join(KEY_FILE);
    if names.iter().any(|n| n == KEY_FILE) {
        let file = io.open(&path, OpenMode::ReadOnly).await.map_err(disk)?;
        let mut buf = AlignedBuf::new(FILE_BYTES);
        buf.set_len(FILE_BYTES);
        let (r, buf) = io.read_at(&file, 0, buf).await;
        r.map_err(disk)?;
        return RecordKey::decode(&buf, shard)
            .map_err(|why| damaged(format!("{KEY_FILE} is unusable: {why}")));
    }
    let written = names
        .iter()
        .any(|n| crate::files::parse_blob_name(n).is_some() || crate::files::parse_ckpt_name(n).is_some());
    if written {
        return Err(damaged(format!(
            "the shard has blob files but no {KEY_FILE}: its records can't be authenticated \
             (written by a build before record format 2, or the file was lost); refill this disk \
             from a peer (`podstore recover`) after moving its files away"
        )));
    }
    let key = RecordKey::generate().map_err(|e| damaged(format!("can't draw a record key: {e}")))?;
    if read_only {
        return Ok(key);
    }
    let created =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let bytes = key.encode(shard, created);
    let tmp = dir.join(format!("{KEY_FILE}.tmp"));
    let _ = io.remove(&tmp).await;
    let file = io.open(&tmp, OpenMode::CreateNew).await.map_err(disk)?;
    let mut buf = io.alloc_buf(FILE_BYTES).await;
    buf.clear();
    buf.extend_from(&bytes);
    let (r, _) = io.write_at(&file, 0, buf).await;
    r.map_err(disk)?;
    io.sync_data(&file).await.map_err(disk)?;
    drop(file);
    io.rename(&tmp, &path).await.map_err(disk)?;
    io.sync_dir(dir).await.map_err(disk)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_and_survives_one_damaged_copy() {
        let k = RecordKey::generate().expect("urandom");
        let mut b = k.encode(4, 1_700_000_000);
        assert_eq!(RecordKey::decode(&b, 4).expect("valid").0, k.0);
        assert!(RecordKey::decode(&b, 5).is_err_and(|w| w.contains("shard 4")));
        b[20] ^= 1;
        assert_eq!(RecordKey::decode(&b, 4).expect("second copy").0, k.0);
        b[COPY_BYTES + 20] ^= 1;
        assert!(RecordKey::decode(&b, 4).is_err_and(|w| w.contains("checksum")));
        assert!(RecordKey::decode(&b[..100], 4).is_err());
    }

    #[test]
    fn tags_depend_on_key_and_every_byte() {
        let a = RecordKey::from_bytes([1; 16]);
        let b = RecordKey::from_bytes([2; 16]);
        let t = a.tag(b"fixed", b"key");
        assert!(a.verify(b"fixed", b"key", &t));
        assert!(!b.verify(b"fixed", b"key", &t));
        assert!(!a.verify(b"fixeD", b"key", &t));
        assert!(!a.verify(b"fixed", b"kez", &t));
        assert!(!a.verify(b"fixed", b"key", &t[..15]));
    }
}
