//! Index checkpoints: the index of a shard written beside its blobs, so startup loads it and
//! scans only what was written after.
//!
//! A checkpoint is `index-<max_seq as 16 hex digits>.ckpt`, written as `.tmp`, synced, renamed,
//! and the directory synced; older checkpoints are removed afterwards. Startup tries the newest
//! and falls back to older ones (and finally to a full scan) if one fails its checks.
//!
//! ```text
//! block 0 (4096 bytes), little-endian
//! offset size field
//!      0    8 magic "PSCKPT01"
//!      8    4 format version = 1
//!     12    4 shard id
//!     16    8 max_seq: highest sequence reserved when the snapshot was taken
//!     24    8 body length, bytes
//!     32    4 CRC32C of the body
//!     36    4 blob count B
//!     40    8 in-flight count F
//!     48    8 main entry count M
//!     56    8 overflow entry count O
//!     64    8 quarantine entry count Q
//!     72    8 clock: the node clock's newest stamp when the snapshot was taken (every
//!             version in the shard is at most this)
//!     80    4 backlog count P (one per peer)
//!     84    4 digest count D (0, or the number of digest buckets, see digest.rs)
//!     88   36 zero
//!    124    4 CRC32C of bytes 0..124
//!   128 3968 zero
//! body, from offset 4096, then zero padding to a multiple of 4096
//!   B × blob:       id u32, flags u32 (bit 0 dedicated), size u64, tail u64, scan_from u64
//!                   (scan_from is the size for a sealed blob with nothing in flight)
//!   F × in-flight:  sequence u64 (reserved before the snapshot, not yet durable)
//!   M × main:       fingerprint u64, packed location u64
//!   O × overflow:   packed location u64, key length u16, key
//!   Q × quarantine: blob u32, reason u32, offset u64, length u64, sequence u64,
//!                   key length u16 (0: unknown), key
//!   P × backlog:    peer name length u8, name, flags u8 (bit 0 overflowed), entry count E u64,
//!                   E × (sequence u64, blob u32, offset u64, record length u64, created ms u64)
//!   D × digest:     u64 (bucket digests in bucket order)
//! ```
//! Recovery applies a record found after `scan_from` only if its sequence is above `max_seq`
//! or listed in the in-flight section: every other record there is already in the snapshot.
//!
//! Version history: 1 (first).

const MAGIC: &[u8; 8] = b"PSCKPT01";
const VERSION: u32 = 1;
/// Size of the header block.
pub const CKPT_HEADER_BYTES: usize = 4096;
const BLOB_ENTRY: u64 = 32;

/// One blob as the checkpoint saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CkptBlob {
    pub id: u32,
    pub dedicated: bool,
    pub size_bytes: u64,
    pub tail: u64,
    pub scan_from: u64,
}

/// Why a record or region is quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineReason {
    /// The header is valid but the data or footer fails its checksums.
    BadBody = 1,
    /// Blocks between valid records with no valid header.
    BadRegion = 2,
    /// A read found the record corrupt.
    ReadChecksum = 3,
    /// The device failed to read the record (a bad sector): it may read again later.
    ReadError = 4,
}

impl QuarantineReason {
    fn from_u32(v: u32) -> Option<QuarantineReason> {
        match v {
            1 => Some(QuarantineReason::BadBody),
            2 => Some(QuarantineReason::BadRegion),
            3 => Some(QuarantineReason::ReadChecksum),
            4 => Some(QuarantineReason::ReadError),
            _ => None,
        }
    }

    /// A short name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineReason::BadBody => "bad_body",
            QuarantineReason::BadRegion => "bad_region",
            QuarantineReason::ReadChecksum => "read_checksum",
            QuarantineReason::ReadError => "read_error",
        }
    }
}

/// A damaged record or region, kept out of service until repaired from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub blob: u32,
    pub offset: u64,
    pub len_bytes: u64,
    /// Sequence of the record, 0 if unknown.
    pub seq: u64,
    pub key: Option<Vec<u8>>,
    pub reason: QuarantineReason,
}

/// Everything a checkpoint holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub shard_id: u32,
    pub max_seq: u64,
    /// Upper bound of the versions' clock part in the shard.
    pub max_hlc: u64,
    pub blobs: Vec<CkptBlob>,
    pub in_flight: Vec<u64>,
    pub main: Vec<(u64, u64)>,
    pub overflow: Vec<(Vec<u8>, u64)>,
    pub quarantine: Vec<Quarantined>,
    /// Each peer's unconfirmed writes (see backlog.rs).
    pub backlogs: Vec<CkptBacklog>,
    /// Bucket digests of the current keys (digest.rs); empty when not kept.
    pub digests: Vec<u64>,
}

/// One peer's backlog as the checkpoint saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CkptBacklog {
    pub peer: String,
    pub overflowed: bool,
    pub entries: Vec<crate::backlog::BacklogEntry>,
}

/// Bytes of one backlog entry.
const BACKLOG_ENTRY: u64 = 36;

/// Why bytes are not a valid checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CkptError {
    #[error("too short")]
    Short,
    #[error("bad magic")]
    Magic,
    #[error("header checksum mismatch")]
    HeaderChecksum,
    #[error("unsupported version {0}")]
    Version(u32),
    #[error("body checksum mismatch")]
    BodyChecksum,
    #[error("field {0} invalid")]
    Field(&'static str),
}

/// The checkpoint's fields in order, bounds-checked (podstore_disks::le).
struct Rd<'a>(podstore_disks::le::Reader<'a>);

impl<'a> Rd<'a> {
    /// Fields of `b` from offset `at` (past the end: every read is short).
    fn at(b: &'a [u8], at: usize) -> Rd<'a> {
        let mut r = podstore_disks::le::Reader::new(b);
        if r.bytes(at).is_none() {
            r = podstore_disks::le::Reader::new(&[]);
        }
        Rd(r)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CkptError> {
        self.0.bytes(n).ok_or(CkptError::Short)
    }
    fn u16(&mut self) -> Result<u16, CkptError> {
        self.0.int().ok_or(CkptError::Short)
    }
    fn u32(&mut self) -> Result<u32, CkptError> {
        self.0.int().ok_or(CkptError::Short)
    }
    fn u64(&mut self) -> Result<u64, CkptError> {
        self.0.int().ok_or(CkptError::Short)
    }
}

impl Checkpoint {
    /// Encodes the whole file (header block, body, padding to 4096).
    pub fn encode(&self) -> Vec<u8> {
        let mut body =
            Vec::with_capacity(self.blobs.len() * 32 + self.in_flight.len() * 8 + self.main.len() * 16);
        for b in &self.blobs {
            body.extend_from_slice(&b.id.to_le_bytes());
            body.extend_from_slice(&(b.dedicated as u32).to_le_bytes());
            body.extend_from_slice(&b.size_bytes.to_le_bytes());
            body.extend_from_slice(&b.tail.to_le_bytes());
            body.extend_from_slice(&b.scan_from.to_le_bytes());
        }
        for s in &self.in_flight {
            body.extend_from_slice(&s.to_le_bytes());
        }
        for (fp, loc) in &self.main {
            body.extend_from_slice(&fp.to_le_bytes());
            body.extend_from_slice(&loc.to_le_bytes());
        }
        for (key, loc) in &self.overflow {
            body.extend_from_slice(&loc.to_le_bytes());
            body.extend_from_slice(&(key.len() as u16).to_le_bytes());
            body.extend_from_slice(key);
        }
        for q in &self.quarantine {
            body.extend_from_slice(&q.blob.to_le_bytes());
            body.extend_from_slice(&(q.reason as u32).to_le_bytes());
            body.extend_from_slice(&q.offset.to_le_bytes());
            body.extend_from_slice(&q.len_bytes.to_le_bytes());
            body.extend_from_slice(&q.seq.to_le_bytes());
            let key = q.key.as_deref().unwrap_or(&[]);
            body.extend_from_slice(&(key.len() as u16).to_le_bytes());
            body.extend_from_slice(key);
        }
        for b in &self.backlogs {
            let name = &b.peer.as_bytes()[..b.peer.len().min(255)];
            body.push(name.len() as u8);
            body.extend_from_slice(name);
            body.push(u8::from(b.overflowed));
            body.extend_from_slice(&(b.entries.len() as u64).to_le_bytes());
            for e in &b.entries {
                body.extend_from_slice(&e.seq.to_le_bytes());
                body.extend_from_slice(&e.blob.to_le_bytes());
                body.extend_from_slice(&e.offset.to_le_bytes());
                body.extend_from_slice(&e.record_len.to_le_bytes());
                body.extend_from_slice(&e.created_ms.to_le_bytes());
            }
        }
        for d in &self.digests {
            body.extend_from_slice(&d.to_le_bytes());
        }
        let mut out = vec![0u8; CKPT_HEADER_BYTES];
        out[0..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.shard_id.to_le_bytes());
        out[16..24].copy_from_slice(&self.max_seq.to_le_bytes());
        out[24..32].copy_from_slice(&(body.len() as u64).to_le_bytes());
        out[32..36].copy_from_slice(&podstore_disks::crc::crc32c(&body).to_le_bytes());
        out[36..40].copy_from_slice(&(self.blobs.len() as u32).to_le_bytes());
        out[40..48].copy_from_slice(&(self.in_flight.len() as u64).to_le_bytes());
        out[48..56].copy_from_slice(&(self.main.len() as u64).to_le_bytes());
        out[56..64].copy_from_slice(&(self.overflow.len() as u64).to_le_bytes());
        out[64..72].copy_from_slice(&(self.quarantine.len() as u64).to_le_bytes());
        out[72..80].copy_from_slice(&self.max_hlc.to_le_bytes());
        out[80..84].copy_from_slice(&(self.backlogs.len() as u32).to_le_bytes());
        out[84..88].copy_from_slice(&(self.digests.len() as u32).to_le_bytes());
        let crc = podstore_disks::crc::crc32c(&out[0..124]);
        out[124..128].copy_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&body);
        out.resize(out.len().div_ceil(4096) * 4096, 0);
        out
    }

    /// The body length announced by a header block (to know how much to read); never panics.
    pub fn body_len(header: &[u8]) -> Result<u64, CkptError> {
        let mut r = Rd::at(header, 0);
        if r.take(8)? != MAGIC {
            return Err(CkptError::Magic);
        }
        if header.len() < 128 {
            return Err(CkptError::Short);
        }
        if podstore_disks::crc::crc32c(&header[0..124]) != podstore_disks::le::get::<u32>(header, 124) {
            return Err(CkptError::HeaderChecksum);
        }
        Rd::at(header, 24).u64()
    }

    /// Decodes and verifies a checkpoint file; never panics on any input.
    pub fn decode(b: &[u8]) -> Result<Checkpoint, CkptError> {
        let body_len = Self::body_len(b)?;
        let mut r = Rd::at(b, 8);
        let version = r.u32()?;
        if version != VERSION {
            return Err(CkptError::Version(version));
        }
        let shard_id = r.u32()?;
        let max_seq = r.u64()?;
        let _ = r.u64()?;
        let body_crc = r.u32()?;
        let nblobs = r.u32()? as u64;
        let nflight = r.u64()?;
        let nmain = r.u64()?;
        let nover = r.u64()?;
        let nquar = r.u64()?;
        let max_hlc = r.u64()?;
        let nbacklogs = r.u32()?;
        let ndigests = r.u32()? as usize;
        if ndigests != 0 && ndigests != crate::digest::BUCKETS {
            return Err(CkptError::Field("digest count"));
        }
        let body_end = (CKPT_HEADER_BYTES as u64).checked_add(body_len).ok_or(CkptError::Short)?;
        if (b.len() as u64) < body_end {
            return Err(CkptError::Short);
        }
        let body = &b[CKPT_HEADER_BYTES..body_end as usize];
        if podstore_disks::crc::crc32c(body) != body_crc {
            return Err(CkptError::BodyChecksum);
        }
        // The fixed-size sections must fit the body before anything is allocated for them.
        let fixed = nblobs
            .checked_mul(BLOB_ENTRY)
            .and_then(|x| x.checked_add(nflight.checked_mul(8)?))
            .and_then(|x| x.checked_add(nmain.checked_mul(16)?))
            .ok_or(CkptError::Field("counts"))?;
        if fixed > body_len || nover > body_len / 10 || nquar > body_len / 34 {
            return Err(CkptError::Field("counts"));
        }
        let mut r = Rd::at(body, 0);
        let mut ck = Checkpoint { shard_id, max_seq, max_hlc, ..Default::default() };
        ck.blobs.reserve(nblobs as usize);
        for _ in 0..nblobs {
            let id = r.u32()?;
            let flags = r.u32()?;
            let size_bytes = r.u64()?;
            let tail = r.u64()?;
            let scan_from = r.u64()?;
            if flags > 1
                || tail > size_bytes
                || scan_from > size_bytes
                || !tail.is_multiple_of(4096)
                || !scan_from.is_multiple_of(4096)
            {
                return Err(CkptError::Field("blob"));
            }
            ck.blobs.push(CkptBlob { id, dedicated: flags == 1, size_bytes, tail, scan_from });
        }
        ck.in_flight.reserve(nflight as usize);
        for _ in 0..nflight {
            ck.in_flight.push(r.u64()?);
        }
        ck.main.reserve(nmain as usize);
        for _ in 0..nmain {
            ck.main.push((r.u64()?, r.u64()?));
        }
        for _ in 0..nover {
            let loc = r.u64()?;
            let n = r.u16()? as usize;
            ck.overflow.push((r.take(n)?.to_vec(), loc));
        }
        for _ in 0..nquar {
            let blob = r.u32()?;
            let reason = QuarantineReason::from_u32(r.u32()?).ok_or(CkptError::Field("quarantine reason"))?;
            let offset = r.u64()?;
            let len_bytes = r.u64()?;
            let seq = r.u64()?;
            let n = r.u16()? as usize;
            let key = if n == 0 { None } else { Some(r.take(n)?.to_vec()) };
            ck.quarantine.push(Quarantined { blob, offset, len_bytes, seq, key, reason });
        }
        for _ in 0..nbacklogs {
            let n = r.take(1)?[0] as usize;
            let peer =
                String::from_utf8(r.take(n)?.to_vec()).map_err(|_| CkptError::Field("backlog peer"))?;
            let flags = r.take(1)?[0];
            if flags > 1 {
                return Err(CkptError::Field("backlog flags"));
            }
            let count = r.u64()?;
            // The entries must fit what is left before anything is allocated for them.
            if count.checked_mul(BACKLOG_ENTRY).is_none_or(|need| need > (body.len() - r.0.position()) as u64)
            {
                return Err(CkptError::Field("backlog count"));
            }
            let mut entries = Vec::with_capacity(count as usize);
            for _ in 0..count {
                entries.push(crate::backlog::BacklogEntry {
                    seq: r.u64()?,
                    blob: r.u32()?,
                    offset: r.u64()?,
                    record_len: r.u64()?,
                    created_ms: r.u64()?,
                });
            }
            ck.backlogs.push(CkptBacklog { peer, overflowed: flags == 1, entries });
        }
        ck.digests.reserve(ndigests);
        for _ in 0..ndigests {
            ck.digests.push(r.u64()?);
        }
        if r.0.position() != body.len() {
            return Err(CkptError::Field("body length"));
        }
        Ok(ck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::{ckpt_name, parse_ckpt_name};

    fn sample() -> Checkpoint {
        Checkpoint {
            shard_id: 4,
            max_seq: 99,
            max_hlc: 0x55_0000,
            backlogs: vec![
                CkptBacklog {
                    peer: "pod-b".into(),
                    overflowed: false,
                    entries: vec![crate::backlog::BacklogEntry {
                        seq: 98,
                        blob: 1,
                        offset: 8192,
                        record_len: 4096,
                        created_ms: 1_700_000_000_000,
                    }],
                },
                CkptBacklog { peer: "pod-c".into(), overflowed: true, entries: vec![] },
            ],
            digests: (0..crate::digest::BUCKETS as u64).map(|i| i * 0x9E37_79B9).collect(),
            blobs: vec![
                CkptBlob { id: 0, dedicated: false, size_bytes: 1 << 20, tail: 8192, scan_from: 4096 },
                // A sealed blob: nothing in flight, so recovery starts at its end.
                CkptBlob { id: 1, dedicated: false, size_bytes: 1 << 20, tail: 8192, scan_from: 1 << 20 },
            ],
            in_flight: vec![98],
            main: vec![(1, 2), (3, 4)],
            overflow: vec![(b"key".to_vec(), 5)],
            quarantine: vec![Quarantined {
                blob: 0,
                offset: 4096,
                len_bytes: 4096,
                seq: 97,
                key: Some(b"k".to_vec()),
                reason: QuarantineReason::BadBody,
            }],
        }
    }

    #[test]
    fn checkpoint_round_trips_and_rejects_damage() {
        let c = sample();
        let b = c.encode();
        assert_eq!(b.len() % 4096, 0);
        assert_eq!(Checkpoint::decode(&b), Ok(c));
        let mut d = b.clone();
        d[4096 + 3] ^= 1;
        assert_eq!(Checkpoint::decode(&d), Err(CkptError::BodyChecksum));
        let mut h = b.clone();
        h[20] ^= 1;
        assert_eq!(Checkpoint::decode(&h), Err(CkptError::HeaderChecksum));
        assert!(Checkpoint::decode(&b[..4200]).is_err());
        assert_eq!(parse_ckpt_name(&ckpt_name(0xabc)), Some(0xabc));
        assert_eq!(parse_ckpt_name("index-12.ckpt"), None);
    }

    #[test]
    fn decoder_survives_arbitrary_bytes() {
        let good = sample().encode();
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..5000 {
            let mut b = good.clone();
            for _ in 0..rng.usize(1..8) {
                let at = rng.usize(0..b.len());
                b[at] = rng.u8(..);
            }
            // Re-seal the header checksum sometimes so the body decoder is reached.
            if rng.bool() {
                let crc = podstore_disks::crc::crc32c(&b[0..124]);
                b[124..128].copy_from_slice(&crc.to_le_bytes());
            }
            let n = rng.usize(0..=b.len());
            let _ = Checkpoint::decode(&b[..n]);
        }
    }
}
