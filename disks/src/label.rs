//! The disk label: the file that makes a directory a podstore disk of one node.
//!
//! `podstore.label`, one 4096-byte block:
//!
//! ```text
//! offset size field
//!      0    8 magic "PODSTLBL"
//!      8    4 format version (u32 LE) = 1
//!     12    4 disk id (u32 LE)
//!     16    1 tier: 0 capacity, 1 fast
//!     17    1 node id length (1..=64)
//!     18    6 zero
//!     24   64 node id (UTF-8, zero padded)
//!     88    8 created, seconds since the Unix epoch (u64 LE)
//!     96    4 CRC32C of bytes 0..96 (u32 LE)
//!    100 3996 zero
//! ```
//! Version history: 1 (first).

use crate::Tier;

/// Name of the label file at the root of a disk.
pub const LABEL_FILE: &str = "podstore.label";

/// The disk's measured profile in its directory: written by `podstore-tune measure`, read by
/// the node at start.
pub const PROFILE_FILE: &str = "podstore.disk-profile.toml";
const MAGIC: &[u8; 8] = b"PODSTLBL";
const VERSION: u32 = 1;
/// Size of the label file.
pub const LABEL_SIZE: usize = 4096;
/// Longest node id.
pub const NODE_ID_MAX_BYTES: usize = 64;

/// What a label says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub disk_id: u32,
    pub tier: Tier,
    pub node_id: String,
    pub created_unix_s: u64,
}

/// Why bytes are not a valid label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("label is {0} bytes, expected {LABEL_SIZE}")]
    Size(usize),
    #[error("not a podstore label (bad magic)")]
    Magic,
    #[error("label format version {0} is not supported (this build reads version {VERSION})")]
    Version(u32),
    #[error("label checksum mismatch")]
    Checksum,
    #[error("label field {0} is invalid")]
    Field(&'static str),
}

impl Label {
    /// Encodes the label block.
    pub fn encode(&self) -> Vec<u8> {
        assert!(!self.node_id.is_empty() && self.node_id.len() <= NODE_ID_MAX_BYTES);
        let mut b = vec![0u8; LABEL_SIZE];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.disk_id.to_le_bytes());
        b[16] = match self.tier {
            Tier::Capacity => 0,
            Tier::Fast => 1,
        };
        b[17] = self.node_id.len() as u8;
        b[24..24 + self.node_id.len()].copy_from_slice(self.node_id.as_bytes());
        b[88..96].copy_from_slice(&self.created_unix_s.to_le_bytes());
        let crc = crate::crc::crc32c(&b[0..96]);
        b[96..100].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a label block; never panics.
    pub fn decode(b: &[u8]) -> Result<Label, LabelError> {
        if b.len() != LABEL_SIZE {
            return Err(LabelError::Size(b.len()));
        }
        if &b[0..8] != MAGIC {
            return Err(LabelError::Magic);
        }
        let crc = u32::from_le_bytes([b[96], b[97], b[98], b[99]]);
        if crate::crc::crc32c(&b[0..96]) != crc {
            return Err(LabelError::Checksum);
        }
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if version != VERSION {
            return Err(LabelError::Version(version));
        }
        let disk_id = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        let tier = match b[16] {
            0 => Tier::Capacity,
            1 => Tier::Fast,
            _ => return Err(LabelError::Field("tier")),
        };
        let n = b[17] as usize;
        if n == 0 || n > NODE_ID_MAX_BYTES {
            return Err(LabelError::Field("node id length"));
        }
        let node_id =
            std::str::from_utf8(&b[24..24 + n]).map_err(|_| LabelError::Field("node id"))?.to_string();
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[88..96]);
        Ok(Label { disk_id, tier, node_id, created_unix_s: u64::from_le_bytes(t) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_round_trips_and_rejects_damage() {
        let l =
            Label { disk_id: 7, tier: Tier::Fast, node_id: "pod-a".into(), created_unix_s: 1_700_000_000 };
        let mut b = l.encode();
        assert_eq!(Label::decode(&b), Ok(l));
        b[30] ^= 1;
        assert_eq!(Label::decode(&b), Err(LabelError::Checksum));
        assert_eq!(Label::decode(&b[..100]), Err(LabelError::Size(100)));
        let mut z = vec![0u8; LABEL_SIZE];
        assert_eq!(Label::decode(&z), Err(LabelError::Magic));
        z[0..8].copy_from_slice(MAGIC);
        assert_eq!(Label::decode(&z), Err(LabelError::Checksum));
    }
}
