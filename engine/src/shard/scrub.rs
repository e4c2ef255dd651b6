//! Scrub: continuous verification of every record on a disk, so damage is found and repaired
//! from a peer before a reader (or the last other copy) needs it.
//!
//! A pass reads every blob sequentially (the recovery scanner: headers, footers, every chunk's
//! CRC32C and the whole object's XXH3-128), under the disk's background budget and its own pace
//! (the caller sets it so a pass spans the configured period: bytes on the disk / period). Only
//! the committed part of a blob is read (below its tail and its lowest in-flight reservation),
//! so a record being written is never mistaken for damage. A damaged record the index points to
//! is quarantined under its key (GETs answer from a peer and repair it; the node's repair loop
//! asks peers for every quarantined key); a damaged block where the index expects a record's
//! header is quarantined as a region.
//!
//! The pass's place (the next blob) and the end of the last full pass are kept in
//! `scrub.state` beside the blobs (written like a checkpoint: temporary file, fdatasync,
//! rename), so a restart resumes the pass instead of starting a 30-day pass over.
//!
//! ## `scrub.state`, format 1
//!
//! One 4096-byte block: UTF-8 text, then zero bytes to the end of the block. A file that fails
//! a check is ignored (the pass starts over: a lost state only repeats work).
//!
//! ```text
//! podstore scrub state 1                    magic and format version
//! passes=<u64>                              full passes completed
//! last_pass_end_ms=<u64>                    Unix ms at the end of the last full pass (0: none)
//! pass_started_ms=<u64>                     Unix ms the current pass started (0: none)
//! next_blob=<u32>                           the blob the current pass goes on with
//! crc=<crc32c of every byte before "crc=", 8 lowercase hex digits>
//! 00 00 ... 00                              padding to 4096 bytes
//! ```
//!
//! An unknown key makes the file unreadable. Format 1 is the only one so far.

use std::rc::Rc;

use podstore_disks::{AlignedBuf, Io, OpenMode};

use crate::budget::IoBudget;
use crate::checkpoint::{QuarantineReason, Quarantined};
use crate::index::Loc;
use crate::now_ms;
use crate::record::BLOCK;
use crate::scan::{in_ranges, Found, Pace, Scanner};
use crate::shard::{read_failed, Shard};
use crate::{Error, Result};

/// Largest read of the scrub.
const SCRUB_WINDOW_BYTES_MAX: usize = 1 << 20;

/// File name of the scrub state.
pub const STATE_FILE: &str = "scrub.state";
const STATE_MAGIC: &str = "podstore scrub state 1\n";

/// Scrub's progress and totals on one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubStats {
    /// Full passes ended (persisted).
    pub passes: u64,
    /// When the last full pass ended, ms since the epoch (0: never; persisted).
    pub last_pass_end_ms: u64,
    /// When the current pass started (0: none in progress; persisted).
    pub pass_started_ms: u64,
    /// The blob the current pass is at (persisted: a restart resumes there).
    pub next_blob: u32,
    /// Bytes of the current pass read so far (this process), and the bytes it covers.
    pub pass_bytes_done: u64,
    pub pass_bytes_total: u64,
    pub records_checked: u64,
    /// Damaged records and regions found (and quarantined).
    pub bad_records: u64,
    pub bad_regions: u64,
    /// Blobs a pass could not read (disk errors).
    pub read_errors: u64,
    pub last_error: Option<String>,
    /// What the last pass that ended in this process found (a pass resumed after a restart
    /// counts from the restart).
    pub last_pass: ScrubCounts,
    /// The totals when the current pass started in this process (or was first resumed here
    /// after a restart).
    pub(crate) at_pass_start: Option<ScrubCounts>,
    /// The persisted part was loaded.
    pub(crate) loaded: bool,
}

/// What scrubbing found: records verified, damage, unreadable blobs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScrubCounts {
    pub records_checked: u64,
    pub bad_records: u64,
    pub bad_regions: u64,
    pub read_errors: u64,
}

impl ScrubStats {
    /// The running totals as counts.
    pub fn totals(&self) -> ScrubCounts {
        ScrubCounts {
            records_checked: self.records_checked,
            bad_records: self.bad_records,
            bad_regions: self.bad_regions,
            read_errors: self.read_errors,
        }
    }
}

impl ScrubCounts {
    fn since(self, start: ScrubCounts) -> ScrubCounts {
        ScrubCounts {
            records_checked: self.records_checked.saturating_sub(start.records_checked),
            bad_records: self.bad_records.saturating_sub(start.bad_records),
            bad_regions: self.bad_regions.saturating_sub(start.bad_regions),
            read_errors: self.read_errors.saturating_sub(start.read_errors),
        }
    }
}

/// How a scrub pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrubEnd {
    /// Every blob was read.
    Complete,
    /// Stopped on request; the next pass resumes where this one stopped.
    Stopped,
}

impl ScrubStats {
    fn encode(&self) -> String {
        let body = format!(
            "{STATE_MAGIC}passes={}\nlast_pass_end_ms={}\npass_started_ms={}\nnext_blob={}\n",
            self.passes, self.last_pass_end_ms, self.pass_started_ms, self.next_blob
        );
        format!("{body}crc={:08x}\n", podstore_disks::crc::crc32c(body.as_bytes()))
    }

    /// Decodes a state file (None if it fails its checks).
    fn decode(b: &[u8]) -> Option<ScrubStats> {
        let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
        let text = std::str::from_utf8(&b[..end]).ok()?;
        let at = text.find("crc=")?;
        let (body, crc) = text.split_at(at);
        let crc = u32::from_str_radix(crc.strip_prefix("crc=")?.trim_end(), 16).ok()?;
        if podstore_disks::crc::crc32c(body.as_bytes()) != crc || !body.starts_with(STATE_MAGIC) {
            return None;
        }
        let mut st = ScrubStats { loaded: true, ..Default::default() };
        for line in body[STATE_MAGIC.len()..].lines() {
            let (k, v) = line.split_once('=')?;
            match k {
                "passes" => st.passes = v.parse().ok()?,
                "last_pass_end_ms" => st.last_pass_end_ms = v.parse().ok()?,
                "pass_started_ms" => st.pass_started_ms = v.parse().ok()?,
                "next_blob" => st.next_blob = v.parse().ok()?,
                _ => return None,
            }
        }
        Some(st)
    }
}

impl<I: Io> Shard<I> {
    /// The scrub job's control (pause, resume, stop).
    pub fn scrub_ctl(&self) -> &crate::budget::JobCtl {
        &self.jobs.scrub_ctl
    }

    /// Scrub's progress and totals (loads the persisted state on first use).
    pub async fn scrub_stats(&self) -> ScrubStats {
        self.load_scrub_state().await;
        let mut st = self.jobs.scrub_stats.borrow().clone();
        st.pass_bytes_done = self.jobs.scrub_done.get();
        st
    }

    async fn load_scrub_state(&self) {
        if self.jobs.scrub_stats.borrow().loaded {
            return;
        }
        let read = async {
            let file = self.io.open(&self.dir.join(STATE_FILE), OpenMode::ReadOnly).await.ok()?;
            let mut buf = AlignedBuf::new(BLOCK as usize);
            buf.set_len(BLOCK as usize);
            let (r, buf) = self.io.read_at(&file, 0, buf).await;
            r.ok()?;
            ScrubStats::decode(&buf)
        };
        let found = read.await;
        let mut st = self.jobs.scrub_stats.borrow_mut();
        if let Some(f) = found {
            st.passes = f.passes;
            st.last_pass_end_ms = f.last_pass_end_ms;
            st.pass_started_ms = f.pass_started_ms;
            st.next_blob = f.next_blob;
        }
        st.loaded = true;
    }

    /// Saves the persisted part of the state (best effort: a lost state only repeats work).
    async fn save_scrub_state(&self) {
        if self.cfg.read_only {
            return;
        }
        let text = self.jobs.scrub_stats.borrow().encode();
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let path = self.dir.join(STATE_FILE);
        let r: podstore_disks::Result<()> = async {
            let _ = self.io.remove(&tmp).await;
            let file = self.io.open(&tmp, OpenMode::CreateNew).await?;
            self.io.allocate(&file, BLOCK).await?;
            let mut buf = self.io.alloc_buf(BLOCK as usize).await;
            buf.clear();
            buf.extend_from(text.as_bytes());
            buf.pad_to_alignment();
            let (r, _) = self.io.write_at(&file, 0, buf).await;
            r?;
            self.io.sync_data(&file).await?;
            self.io.rename(&tmp, &path).await?;
            self.io.sync_dir(&self.dir).await
        }
        .await;
        if let Err(e) = r {
            if !matches!(e, podstore_disks::Error::Crashed) {
                tracing::warn!("shard {}: scrub state not saved: {e}", self.id);
            }
        }
    }

    /// Runs (or resumes) a scrub pass to its end, reading under `budget` (the disk's) and `pace`
    /// (the pass's own rate; change it with [`IoBudget::set_rate`] while the pass runs). None
    /// if a pass is already running.
    pub async fn scrub(self: &Rc<Self>, budget: &IoBudget, pace: &IoBudget) -> Result<Option<ScrubEnd>> {
        if !self.jobs.scrub_ctl.begin() {
            return Ok(None);
        }
        let r = self.scrub_pass(budget, pace).await;
        self.jobs.scrub_ctl.end();
        if let Err(e) = &r {
            if !e.is_crash() {
                self.jobs.scrub_stats.borrow_mut().last_error = Some(e.to_string());
            }
        }
        r.map(Some)
    }

    async fn scrub_pass(self: &Rc<Self>, budget: &IoBudget, pace: &IoBudget) -> Result<ScrubEnd> {
        self.load_scrub_state().await;
        let used = |b: &crate::blob::BlobFile<I>| if b.dedicated { b.size_bytes } else { b.tail.get() };
        {
            let mut st = self.jobs.scrub_stats.borrow_mut();
            if st.pass_started_ms == 0 {
                st.pass_started_ms = now_ms();
                st.next_blob = 0;
                st.at_pass_start = None;
            }
            if st.at_pass_start.is_none() {
                st.at_pass_start = Some(st.totals());
            }
            st.pass_bytes_total = self.files.blobs.borrow().values().map(|b| used(b)).sum();
        }
        self.jobs.scrub_done.set(0);
        loop {
            let next = self.jobs.scrub_stats.borrow().next_blob;
            let Some(blob) = self.files.blobs.borrow().range(next..).next().map(|(_, b)| b.clone()) else {
                break;
            };
            // The committed part only: below the tail and the lowest reservation in flight.
            let limit = blob.in_flight.borrow().keys().next().copied().unwrap_or(u64::MAX).min(used(&blob));
            // What it reads is never given back to new writes under it (shard.rs, rewind).
            blob.hold_tail_above(limit);
            let pace_of =
                Pace { budgets: [budget, pace], ctl: &self.jobs.scrub_ctl, done: &self.jobs.scrub_done };
            // Smaller windows than recovery's: the scrub shares the disk and the core with
            // foreground requests, which wait behind each window's read and checks.
            let window = self.cfg.scan_window_bytes.min(SCRUB_WINDOW_BYTES_MAX);
            let file = self.blob_file(&blob).await?;
            let scanner = Scanner::new(&self.io, &file, self.id, &self.record_key, limit, window);
            // The records to check one by one, each alone.
            let alone = match scanner.paced(pace_of).scan(blob.id, 0).await {
                Err(Error::Stopped) => {
                    self.save_scrub_state().await;
                    return Ok(ScrubEnd::Stopped);
                }
                Err(e) if e.is_crash() => return Err(e),
                Err(e) => {
                    self.counters.borrow_mut().io_errors += 1;
                    let mut st = self.jobs.scrub_stats.borrow_mut();
                    st.read_errors += 1;
                    st.last_error = Some(e.to_string());
                    // The blob could not be read through: every record of it the index points
                    // to, and those that can't be read are marked bad.
                    self.indexed_in(blob.id, u64::MAX, &[(0, u64::MAX)])
                }
                Ok(scan) => {
                    self.jobs.scrub_stats.borrow_mut().records_checked += scan.records;
                    let mut headerless = scan.headerless;
                    for f in scan.found {
                        headerless.extend(self.scrub_judge(blob.id, f));
                    }
                    // Those the index expects where the scan found no header of their own (a
                    // zero block, garbage, or inside another record's extent): the header was
                    // destroyed, and each is quarantined.
                    self.indexed_in(blob.id, limit, &merged(headerless))
                }
            };
            match self.scrub_records(alone, budget).await {
                Err(Error::Stopped) => {
                    self.save_scrub_state().await;
                    return Ok(ScrubEnd::Stopped);
                }
                Err(e) if e.is_crash() => return Err(e),
                Err(e) => self.jobs.scrub_stats.borrow_mut().last_error = Some(e.to_string()),
                Ok(()) => {}
            }
            self.jobs.scrub_stats.borrow_mut().next_blob = blob.id + 1;
            self.save_scrub_state().await;
        }
        {
            let mut st = self.jobs.scrub_stats.borrow_mut();
            st.passes += 1;
            st.last_pass = st.totals().since(st.at_pass_start.take().unwrap_or_default());
            st.last_pass_end_ms = now_ms();
            st.pass_started_ms = 0;
            st.next_blob = 0;
        }
        self.save_scrub_state().await;
        Ok(ScrubEnd::Complete)
    }

    /// The index entries pointing into blob `bid` below `limit` at an offset inside one of
    /// `ranges` (sorted, not overlapping): one pass over the index, and only when there are
    /// ranges (a healthy blob has none).
    fn indexed_in(&self, bid: u32, limit: u64, ranges: &[(u64, u64)]) -> Vec<(Indexed, Loc)> {
        if ranges.is_empty() {
            return Vec::new();
        }
        let inside = |l: Loc| l.blob() == bid && l.offset() < limit && in_ranges(ranges, l.offset());
        let ix = self.index.borrow();
        let main = ix.main_entries().filter(|(_, l)| inside(*l)).map(|(fp, l)| (Indexed::Fp(fp), l));
        let over =
            ix.overflow_entries().filter(|(_, l)| inside(*l)).map(|(k, l)| (Indexed::Key(k.to_vec()), l));
        main.chain(over).collect()
    }

    /// Verifies, one by one, records of blob `bid` the index points to (after a read error
    /// stopped the scan of the blob, or where the scan found no header of theirs): a record
    /// the device can't read, or that fails its checksums, is quarantined under its key, or as
    /// a damaged record known by fingerprint when not even its header reads (the repair loop
    /// learns its key from a peer).
    async fn scrub_records(self: &Rc<Self>, locs: Vec<(Indexed, Loc)>, budget: &IoBudget) -> Result<()> {
        for (indexed, loc) in locs {
            if !self.jobs.scrub_ctl.proceed().await {
                return Err(Error::Stopped);
            }
            budget.take(loc.record_len().unwrap_or(BLOCK)).await;
            let key = match indexed {
                Indexed::Key(k) => k,
                Indexed::Fp(fp) => match self.read_header(loc).await {
                    // Another record's header where this one's should be is damage too.
                    Ok(Ok((_, k, _))) if self.fp(&k) == fp => k,
                    Ok(_) => {
                        self.quarantine_headerless(loc);
                        continue;
                    }
                    Err(e) if read_failed(&e) => {
                        self.quarantine_headerless(loc);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let now = self.entry_of(&key);
            if now != Some(loc)
                || loc.is_tombstone()
                || self.damage.quarantined_keys.borrow().contains_key(&key[..])
            {
                continue; // moved meanwhile, a tombstone (its header read), or known bad
            }
            self.jobs.scrub_stats.borrow_mut().records_checked += 1;
            let r = match self.open_checked(&key, loc, 2).await {
                Ok(Ok(Some(mut r))) => loop {
                    match r.next_chunk().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                },
                // Another key's header where the index expects this key's record.
                Ok(Ok(None)) => {
                    self.counters.borrow_mut().checksum_errors += 1;
                    self.quarantine_read(&key, loc, 0, QuarantineReason::ReadChecksum);
                    Err(Error::Invalid("another record's header"))
                }
                Ok(Err(_)) => Err(Error::Invalid("a damaged record")),
                Err(e) => Err(e),
            };
            match r {
                Err(e) if e.is_crash() => return Err(e),
                // Quarantined where it failed (open_checked, next_chunk).
                Err(_) => self.jobs.scrub_stats.borrow_mut().bad_records += 1,
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// Quarantines what a scan found damaged, if the index points to it. Returns the extent of
    /// a header the index does not point to that is not a valid record (another record's
    /// header written here by a misdirected write, or a write never completed): the scan
    /// skipped that extent, so records the index expects inside it are checked alone.
    fn scrub_judge(&self, bid: u32, f: Found) -> Option<(u64, u64)> {
        let (offset, key, header) = match f {
            Found::Record { .. } | Found::Garbage { .. } => return None,
            Found::BadBody { offset, header, key } => (offset, key, header),
            Found::Incomplete { header, key } => (header.offset, key, header),
        };
        let extent = Some((offset, offset.saturating_add(header.record_len.max(BLOCK))));
        let Some(loc) = self.entry_of(&key).filter(|l| l.blob() == bid && l.offset() == offset) else {
            return extent;
        };
        if self.damage.quarantined_keys.borrow().contains_key(&key[..]) {
            return None;
        }
        self.counters.borrow_mut().checksum_errors += 1;
        self.jobs.scrub_stats.borrow_mut().bad_records += 1;
        self.quarantine_read(&key, loc, header.seq, QuarantineReason::ReadChecksum);
        None
    }

    /// Quarantines a record the index points to whose header is destroyed: its key is unknown
    /// here (the index keeps a fingerprint), so it is kept as a damaged region until a peer
    /// names the key ([`Shard::name_damaged`]).
    fn quarantine_headerless(&self, loc: Loc) {
        let (bid, offset) = (loc.blob(), loc.offset());
        if self.damage.quarantine.borrow().iter().any(|q| q.blob == bid && q.offset == offset) {
            return;
        }
        tracing::warn!(
            "shard {}: scrub found blob {bid} offset {offset} unreadable where a record should be; quarantined",
            self.id
        );
        self.counters.borrow_mut().checksum_errors += 1;
        self.jobs.scrub_stats.borrow_mut().bad_regions += 1;
        self.damage.quarantine.borrow_mut().push(Quarantined {
            blob: bid,
            offset,
            len_bytes: loc.record_len().unwrap_or(BLOCK),
            seq: 0,
            key: None,
            reason: QuarantineReason::BadRegion,
        });
    }
}

impl<I: Io> Shard<I> {
    /// Damaged records known only by fingerprint (quarantined as regions where the index
    /// points): each one's location and the fingerprint the index keeps for it. One pass over
    /// the index, and only when such regions exist.
    pub fn unnamed_damaged(&self) -> Vec<(u64, Loc)> {
        let regions: std::collections::HashSet<(u32, u64)> = self
            .damage
            .quarantine
            .borrow()
            .iter()
            .filter(|q| q.key.is_none())
            .map(|q| (q.blob, q.offset))
            .collect();
        if regions.is_empty() {
            return Vec::new();
        }
        let ix = self.index.borrow();
        ix.main_entries().filter(|(_, l)| regions.contains(&(l.blob(), l.offset()))).collect()
    }

    /// Whether a key could be the one the index keeps as `fp` (a test mask may shorten
    /// fingerprints).
    pub fn fingerprint_matches(&self, key: &[u8], fp: u64) -> bool {
        self.fp(key) == fp
    }

    /// The anti-entropy bucket of the keys with index fingerprint `fp` (digest.rs), when the
    /// fingerprint keeps the bits that choose it (None under a test's shortening mask: any
    /// bucket).
    pub fn digest_bucket_of(&self, fp: u64) -> Option<usize> {
        let shift = crate::digest::BUCKET_SHIFT;
        (self.cfg.fingerprint_mask >> shift == u64::MAX >> shift).then_some((fp >> shift) as usize)
    }

    /// Gives a damaged record known by fingerprint its key, learnt from a peer: if the index
    /// points `key` at `loc` and a keyless quarantine entry is there, the entry becomes the
    /// key's (the repair loop then fetches the key's copy like any other). False if `key` is
    /// not the record at `loc`.
    pub fn name_damaged(&self, key: &[u8], loc: Loc) -> bool {
        if self.entry_of(key) != Some(loc) {
            return false;
        }
        let region = |q: &Quarantined| q.key.is_none() && q.blob == loc.blob() && q.offset == loc.offset();
        let was = self.damage.quarantine.borrow().iter().position(region);
        let Some(at) = was else { return false };
        self.damage.quarantine.borrow_mut().remove(at);
        self.quarantine_read(key, loc, 0, QuarantineReason::ReadChecksum);
        true
    }
}

/// How the index knows a record: by key (overflow entries) or by fingerprint.
enum Indexed {
    Key(Vec<u8>),
    Fp(u64),
}

/// Sorts ranges and merges those that overlap or touch.
fn merged(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some((_, e)) if start <= *e => *e = (*e).max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_and_rejects_damage() {
        let st = ScrubStats {
            passes: 3,
            last_pass_end_ms: 17,
            pass_started_ms: 99,
            next_blob: 12,
            ..Default::default()
        };
        let mut b = st.encode().into_bytes();
        b.resize(4096, 0);
        let back = ScrubStats::decode(&b).expect("decodes");
        assert_eq!(
            (back.passes, back.last_pass_end_ms, back.pass_started_ms, back.next_blob),
            (3, 17, 99, 12)
        );
        let at = b.iter().position(|&x| x == b'9').expect("a digit");
        b[at] = b'8';
        assert_eq!(ScrubStats::decode(&b), None, "a changed byte fails the CRC");
        assert_eq!(ScrubStats::decode(&[0u8; 4096]), None);
    }

    #[test]
    fn ranges_merge_and_contain() {
        let r = merged(vec![(8192, 12288), (0, 4096), (4096, 8192), (20480, 24576), (16384, 65536)]);
        assert_eq!(r, vec![(0, 12288), (16384, 65536)]);
        let inside: Vec<u64> = [0, 4095, 12287, 12288, 16384, 65535, 65536, 1 << 40]
            .into_iter()
            .filter(|&o| in_ranges(&r, o))
            .collect();
        assert_eq!(inside, vec![0, 4095, 12287, 16384, 65535]);
        assert!(!in_ranges(&[], 0));
    }
}
