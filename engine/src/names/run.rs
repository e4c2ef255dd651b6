//! A run: one sorted, immutable file of name entries, written by a flush of the memtable or
//! by a merge of older runs, and read a block at a time.
//!
//! A run is `names-<lo as 16 hex digits>-<hi as 16 hex digits>.run`: a flushed run has
//! `lo == hi` (its number), a merged one the range of the runs it replaced. The newest run
//! (highest `hi`) wins where runs disagree about a key. The file is written as `.tmp`, synced,
//! renamed and the directory synced; a merge removes its inputs only after that.
//!
//! ```text
//! block 0 (4096 bytes), little-endian
//! offset size field
//!      0    8 magic "PSNAMES1"
//!      8    4 format version = 1
//!     12    4 shard id
//!     16    8 lo: the oldest flushed run this run holds
//!     24    8 hi: the newest flushed run this run holds
//!     32    8 max_seq: every record with a lower or equal sequence, except those in flight,
//!             is reflected in this run and the ones before it
//!     40    8 entry count
//!     48    4 data block count N
//!     52    4 in-flight count F: records reserved before max_seq, not yet durable
//!     56    8 tail length, bytes (T, before padding)
//!     64    4 CRC32C of the tail
//!     68   56 zero
//!    124    4 CRC32C of bytes 0..124
//!   128 3968 zero
//! N data blocks from offset 4096, 65536 bytes each
//!      0    4 entry count n
//!      4    4 bytes used by the entries (u)
//!      8    u n entries in strictly increasing key order (byte order; see entry.rs)
//!    8+u      zero
//!  65532    4 CRC32C of bytes 0..65532
//! tail from offset 4096 + N * 65536, padded with zeros to a multiple of 4096
//!   F × in-flight sequence u64
//!   N × first key of the block: key length u16, key
//! ```
//! Version history: 1 (first).

use std::path::{Path, PathBuf};

use podstore_disks::crc::crc32c;
use podstore_disks::{le, AlignedBuf, Io, OpenMode};

use super::entry::{Name, ENTRY_MAX_BYTES};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"PSNAMES1";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 4096;
/// A data block.
pub const BLOCK_BYTES: usize = 64 << 10;
const BLOCK_ROOM: usize = BLOCK_BYTES - 8 - 4;
const _: () = assert!(ENTRY_MAX_BYTES <= BLOCK_ROOM);
/// Bytes of data blocks gathered before one write.
const WRITE_BYTES: usize = 16 * BLOCK_BYTES;

const R_MAGIC: usize = 0;
const R_VERSION: usize = 8;
const R_SHARD: usize = 12;
const R_LO: usize = 16;
const R_HI: usize = 24;
const R_MAX_SEQ: usize = 32;
const R_ENTRIES: usize = 40;
const R_BLOCKS: usize = 48;
const R_IN_FLIGHT: usize = 52;
const R_TAIL_LEN: usize = 56;
const R_TAIL_CRC: usize = 64;
const R_ZERO: usize = 68;
const R_CRC: usize = 124;
const _: () = assert!(le::tiles(
    &[
        (R_MAGIC, 8),
        (R_VERSION, 4),
        (R_SHARD, 4),
        (R_LO, 8),
        (R_HI, 8),
        (R_MAX_SEQ, 8),
        (R_ENTRIES, 8),
        (R_BLOCKS, 4),
        (R_IN_FLIGHT, 4),
        (R_TAIL_LEN, 8),
        (R_TAIL_CRC, 4),
        (R_ZERO, 56),
        (R_CRC, 4)
    ],
    128
));

/// File name of a run.
pub fn run_name(lo: u64, hi: u64) -> String {
    format!("names-{lo:016x}-{hi:016x}.run")
}

/// Parses a run file name: (lo, hi).
pub fn parse_run_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("names-")?.strip_suffix(".run")?;
    let (lo, hi) = rest.split_once('-')?;
    if lo.len() != 16 || hi.len() != 16 {
        return None;
    }
    let (lo, hi) = (u64::from_str_radix(lo, 16).ok()?, u64::from_str_radix(hi, 16).ok()?);
    (lo <= hi).then_some((lo, hi))
}

/// What the records of the shard a set of runs reflects: every sequence up to `max_seq` except
/// those in flight when it was taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watermark {
    pub max_seq: u64,
    pub in_flight: Vec<u64>,
}

/// One open run.
#[derive(Debug)]
pub struct Run<F> {
    pub lo: u64,
    pub hi: u64,
    pub watermark: Watermark,
    pub entries: u64,
    file: F,
    path: PathBuf,
    /// The first key of every data block (the run's part of the index in RAM).
    first_keys: Vec<Box<[u8]>>,
}

fn damaged(shard: u32, path: &Path, why: &str) -> Error {
    Error::Damaged { shard, reason: format!("name index run {}: {why}", path.display()) }
}

impl<F: Clone> Run<F> {
    /// Data blocks.
    pub fn blocks(&self) -> usize {
        self.first_keys.len()
    }

    /// File size, bytes.
    pub fn file_bytes(&self) -> u64 {
        (HEADER_BYTES + self.blocks() * BLOCK_BYTES) as u64 + self.tail_len_padded()
    }

    fn tail_len_padded(&self) -> u64 {
        let t: usize =
            self.watermark.in_flight.len() * 8 + self.first_keys.iter().map(|k| 2 + k.len()).sum::<usize>();
        podstore_disks::align_up(t as u64)
    }

    /// Memory the run holds in RAM, bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.first_keys.iter().map(|k| k.len() as u64 + 16 + 16).sum::<u64>()
            + self.watermark.in_flight.len() as u64 * 8
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The block that holds `key` if any does: the last whose first key is not above it.
    pub fn block_of(&self, key: &[u8]) -> usize {
        self.first_keys.partition_point(|k| &k[..] <= key).saturating_sub(1)
    }

    /// Reads and checks data block `i`; returns its entries in order.
    pub async fn read_block<I: Io<File = F>>(
        &self,
        io: &I,
        shard: u32,
        i: usize,
    ) -> Result<Vec<(Box<[u8]>, Name)>> {
        assert!(i < self.blocks(), "block {i} of {}", self.blocks());
        let mut buf = io.alloc_buf(BLOCK_BYTES).await;
        buf.set_len(BLOCK_BYTES);
        let (r, buf) = io.read_at(&self.file, (HEADER_BYTES + i * BLOCK_BYTES) as u64, buf).await;
        r.map_err(|source| Error::Disk { shard, source })?;
        let b = buf.as_slice();
        if b.len() != BLOCK_BYTES {
            return Err(damaged(shard, &self.path, &format!("block {i} is short")));
        }
        if crc32c(&b[..BLOCK_BYTES - 4]) != le::get::<u32>(b, BLOCK_BYTES - 4) {
            return Err(damaged(shard, &self.path, &format!("block {i} fails its checksum")));
        }
        let n = le::get::<u32>(b, 0) as usize;
        let used = le::get::<u32>(b, 4) as usize;
        if used > BLOCK_ROOM {
            return Err(damaged(shard, &self.path, &format!("block {i} claims {used} bytes")));
        }
        let mut out = Vec::with_capacity(n);
        let mut rest = &b[8..8 + used];
        for _ in 0..n {
            let Some((k, name, len)) = Name::decode(rest) else {
                return Err(damaged(shard, &self.path, &format!("block {i} holds a bad entry")));
            };
            if out.last().is_some_and(|(p, _): &(Box<[u8]>, Name)| &p[..] >= k) {
                return Err(damaged(shard, &self.path, &format!("block {i} is out of order")));
            }
            out.push((k.into(), name));
            rest = &rest[len..];
        }
        if !rest.is_empty() || out.first().is_some_and(|(k, _)| *k != self.first_keys[i]) {
            return Err(damaged(shard, &self.path, &format!("block {i} does not match the run's index")));
        }
        Ok(out)
    }

    /// Opens and checks a run (its header and tail; blocks are checked as they are read).
    pub async fn open<I: Io<File = F>>(io: &I, dir: &Path, shard: u32, name: &str) -> Result<Run<F>> {
        let path = dir.join(name);
        let (lo, hi) = parse_run_name(name).ok_or_else(|| damaged(shard, &path, "not a run's name"))?;
        let disk = |source| Error::Disk { shard, source };
        let file = io.open(&path, OpenMode::ReadOnly).await.map_err(disk)?;
        let size = io.file_size(&file).await.map_err(disk)?;
        let mut buf = io.alloc_buf(HEADER_BYTES).await;
        buf.set_len(HEADER_BYTES);
        let (r, buf) = io.read_at(&file, 0, buf).await;
        r.map_err(disk)?;
        let h = buf.as_slice();
        if h.len() < HEADER_BYTES || &h[..8] != MAGIC {
            return Err(damaged(shard, &path, "bad magic"));
        }
        if crc32c(&h[..R_CRC]) != le::get::<u32>(h, R_CRC) {
            return Err(damaged(shard, &path, "header fails its checksum"));
        }
        if le::get::<u32>(h, R_VERSION) != VERSION {
            return Err(damaged(shard, &path, "unsupported version"));
        }
        if le::get::<u32>(h, R_SHARD) != shard
            || (le::get::<u64>(h, R_LO), le::get::<u64>(h, R_HI)) != (lo, hi)
        {
            return Err(damaged(shard, &path, "belongs to another shard or run"));
        }
        let blocks = le::get::<u32>(h, R_BLOCKS) as usize;
        let in_flight = le::get::<u32>(h, R_IN_FLIGHT) as usize;
        let tail_len = le::get::<u64>(h, R_TAIL_LEN);
        let tail_at = (HEADER_BYTES + blocks * BLOCK_BYTES) as u64;
        if tail_at + podstore_disks::align_up(tail_len) != size || tail_len > (64 << 20) {
            return Err(damaged(shard, &path, &format!("{size} bytes do not match its header")));
        }
        let padded = podstore_disks::align_up(tail_len) as usize;
        let mut tb = io.alloc_buf(padded).await;
        tb.set_len(padded);
        if padded > 0 {
            let (r, b) = io.read_at(&file, tail_at, tb).await;
            r.map_err(disk)?;
            tb = b;
        }
        let tail =
            tb.as_slice().get(..tail_len as usize).ok_or_else(|| damaged(shard, &path, "short tail"))?;
        if crc32c(tail) != le::get::<u32>(h, R_TAIL_CRC) {
            return Err(damaged(shard, &path, "tail fails its checksum"));
        }
        let mut rd = le::Reader::new(tail);
        let short = || damaged(shard, &path, "tail is short");
        let mut seqs = Vec::with_capacity(in_flight.min(1 << 20));
        for _ in 0..in_flight {
            seqs.push(rd.int::<u64>().ok_or_else(short)?);
        }
        let mut first_keys = Vec::with_capacity(blocks);
        for _ in 0..blocks {
            let n = rd.int::<u16>().ok_or_else(short)? as usize;
            first_keys.push(Box::<[u8]>::from(rd.bytes(n).ok_or_else(short)?));
        }
        if !rd.rest().is_empty() || first_keys.windows(2).any(|w| w[0] >= w[1]) {
            return Err(damaged(shard, &path, "tail does not hold the index of its blocks"));
        }
        Ok(Run {
            lo,
            hi,
            watermark: Watermark { max_seq: le::get(h, R_MAX_SEQ), in_flight: seqs },
            entries: le::get(h, R_ENTRIES),
            file,
            path,
            first_keys,
        })
    }
}

/// Writes a run from entries given in strictly increasing key order.
pub struct RunWriter<I: Io> {
    io: I,
    shard: u32,
    dir: PathBuf,
    lo: u64,
    hi: u64,
    file: I::File,
    tmp: PathBuf,
    block: Vec<u8>,
    block_entries: u32,
    pending: AlignedBuf,
    written_bytes: u64,
    first_keys: Vec<Box<[u8]>>,
    last_key: Vec<u8>,
    entries: u64,
}

impl<I: Io> std::fmt::Debug for RunWriter<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RunWriter({}, {} entries)", self.tmp.display(), self.entries)
    }
}

impl<I: Io> RunWriter<I> {
    /// Starts run `lo..=hi` in `dir` (as a temporary file).
    pub async fn create(io: &I, dir: &Path, shard: u32, lo: u64, hi: u64) -> Result<RunWriter<I>> {
        let tmp = dir.join(format!("{}.tmp", run_name(lo, hi)));
        let disk = |source| Error::Disk { shard, source };
        let _ = io.remove(&tmp).await;
        let file = io.open(&tmp, OpenMode::CreateNew).await.map_err(disk)?;
        let pending = io.alloc_buf(WRITE_BYTES).await;
        Ok(RunWriter {
            io: io.clone(),
            shard,
            dir: dir.to_path_buf(),
            lo,
            hi,
            file,
            tmp,
            block: Vec::with_capacity(BLOCK_BYTES),
            block_entries: 0,
            pending,
            written_bytes: HEADER_BYTES as u64,
            first_keys: Vec::new(),
            last_key: Vec::new(),
            entries: 0,
        })
    }

    /// Appends an entry; keys must come in strictly increasing order.
    pub async fn push(&mut self, key: &[u8], name: &Name) -> Result<()> {
        assert!(self.entries == 0 || key > &self.last_key[..], "run entries out of order");
        if self.block.len() + name.encoded_len(key.len()) > BLOCK_ROOM {
            self.end_block().await?;
        }
        if self.block_entries == 0 {
            self.first_keys.push(key.into());
        }
        name.encode(key, &mut self.block);
        self.block_entries += 1;
        self.entries += 1;
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        Ok(())
    }

    async fn end_block(&mut self) -> Result<()> {
        if self.block_entries == 0 {
            return Ok(());
        }
        let mut b = vec![0u8; BLOCK_BYTES];
        le::put(&mut b, 0, self.block_entries);
        le::put(&mut b, 4, self.block.len() as u32);
        b[8..8 + self.block.len()].copy_from_slice(&self.block);
        let crc = crc32c(&b[..BLOCK_BYTES - 4]);
        le::put(&mut b, BLOCK_BYTES - 4, crc);
        self.block.clear();
        self.block_entries = 0;
        if self.pending.capacity() - self.pending.len() < BLOCK_BYTES {
            self.write_pending().await?;
        }
        self.pending.extend_from(&b);
        Ok(())
    }

    async fn write_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let len = self.pending.len() as u64;
        let cap = self.pending.capacity();
        let buf = std::mem::replace(&mut self.pending, AlignedBuf::new(4096));
        let (r, mut buf) = self.io.write_at(&self.file, self.written_bytes, buf).await;
        r.map_err(|source| Error::Disk { shard: self.shard, source })?;
        self.written_bytes += len;
        buf.clear();
        debug_assert_eq!(buf.capacity(), cap);
        self.pending = buf;
        Ok(())
    }

    /// Entries pushed so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Writes the tail and the header, makes the run durable under its name and opens it.
    pub async fn finish(mut self, watermark: Watermark) -> Result<Run<I::File>> {
        self.end_block().await?;
        self.write_pending().await?;
        let blocks = self.first_keys.len();
        let mut tail = Vec::with_capacity(watermark.in_flight.len() * 8 + blocks * 40);
        for s in &watermark.in_flight {
            tail.extend_from_slice(&s.to_le_bytes());
        }
        for k in &self.first_keys {
            tail.extend_from_slice(&(k.len() as u16).to_le_bytes());
            tail.extend_from_slice(k);
        }
        let disk = |source| Error::Disk { shard: self.shard, source };
        let padded = podstore_disks::align_up(tail.len() as u64) as usize;
        if padded > 0 {
            let mut tb = self.io.alloc_buf(padded).await;
            tb.clear();
            tb.extend_from(&tail);
            tb.pad_to_alignment();
            let (r, _) = self.io.write_at(&self.file, self.written_bytes, tb).await;
            r.map_err(disk)?;
        }
        let mut h = vec![0u8; HEADER_BYTES];
        h[..8].copy_from_slice(MAGIC);
        le::put(&mut h, R_VERSION, VERSION);
        le::put(&mut h, R_SHARD, self.shard);
        le::put(&mut h, R_LO, self.lo);
        le::put(&mut h, R_HI, self.hi);
        le::put(&mut h, R_MAX_SEQ, watermark.max_seq);
        le::put(&mut h, R_ENTRIES, self.entries);
        le::put(&mut h, R_BLOCKS, blocks as u32);
        le::put(&mut h, R_IN_FLIGHT, watermark.in_flight.len() as u32);
        le::put(&mut h, R_TAIL_LEN, tail.len() as u64);
        le::put(&mut h, R_TAIL_CRC, crc32c(&tail));
        let crc = crc32c(&h[..R_CRC]);
        le::put(&mut h, R_CRC, crc);
        let mut hb = self.io.alloc_buf(HEADER_BYTES).await;
        hb.clear();
        hb.extend_from(&h);
        let (r, _) = self.io.write_at(&self.file, 0, hb).await;
        r.map_err(disk)?;
        self.io.sync_data(&self.file).await.map_err(disk)?;
        let name = run_name(self.lo, self.hi);
        let path = self.dir.join(&name);
        self.io.rename(&self.tmp, &path).await.map_err(disk)?;
        self.io.sync_dir(&self.dir).await.map_err(disk)?;
        Ok(Run {
            lo: self.lo,
            hi: self.hi,
            watermark,
            entries: self.entries,
            file: self.file,
            path,
            first_keys: self.first_keys,
        })
    }
}
