//! Opening a shard: load the newest valid checkpoint, scan what was written after it, settle
//! torn tails and damage, and write a fresh checkpoint.
//!
//! The rules (DESIGN.md §4.3–4.4):
//! - Records found after a blob's `scan_from` are applied to the index in sequence order, but
//!   only those the checkpoint does not already reflect (sequence above its `max_seq`, or listed
//!   as in flight when it was taken).
//! - Invalid data after the last valid record of a blob is a torn tail: nothing there was ever
//!   acknowledged (an acknowledged record is complete on disk, and everything before it in the
//!   same file was synced with it). It is counted and zeroed (truncate, then re-preallocate).
//! - Invalid data before a valid record is never truncated. A record whose footer is missing
//!   was never completed (the footer is the last thing written, after every data block had
//!   completed), hence never acknowledged: its space is dead and the key keeps its previous
//!   value. A record with a valid header and footer but bad data is damage: it is quarantined
//!   under its key (the key answers "quarantined" until a newer write or a repair supersedes
//!   it, so an older copy is never served in its place). Garbage blocks are quarantined as a
//!   region.
//! - A dedicated blob whose only record is invalid is a torn tail as a whole and is removed.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use podstore_disks::{AlignedBuf, Io, OpenMode};

use crate::blob::BlobFile;
use crate::checkpoint::{Checkpoint, CkptError, QuarantineReason, Quarantined, CKPT_HEADER_BYTES};
use crate::files::{blob_name, parse_blob_name, parse_ckpt_name};
use crate::index::{Index, Loc, Slot};
use crate::names::{Name, Opened, Watermark};
use crate::record::Header;
use crate::scan::{Found, Scanner};
use crate::shard::{Shard, ShardConfig};
use crate::{Error, Result};

/// What recovery did, for logs, metrics and tests.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Max sequence of the checkpoint loaded, if one was.
    pub checkpoint_seq: Option<u64>,
    /// Index entries loaded from the checkpoint.
    pub checkpoint_entries: u64,
    /// Checkpoints that failed their checks (name, reason).
    pub checkpoints_rejected: Vec<(String, String)>,
    pub blobs: u64,
    pub blobs_scanned: u64,
    pub bytes_scanned: u64,
    /// Records from the scan applied to the index.
    pub records_applied: u64,
    /// Invalid records or blocks after the last valid record of a blob (unacknowledged).
    pub torn_tail_items: u64,
    /// Keys whose unacknowledged record was in a torn tail (first 100).
    pub torn_tail_keys: Vec<Vec<u8>>,
    /// Blobs whose torn tail was zeroed.
    pub tails_truncated: u64,
    /// Dedicated blobs removed because their only record was torn.
    pub dedicated_removed: u64,
    /// Newly quarantined records and regions.
    pub quarantined_new: u64,
    /// Records never completed (no valid footer) found before valid records: dead space.
    pub incomplete_records: u64,
    /// Why the name index was rebuilt from the records (None: its runs were used).
    pub names_rebuilt_why: Option<String>,
    pub duration_ms: u64,
}

enum TailItem {
    Valid {
        blob: u32,
        offset: u64,
        record_len: u64,
        tombstone: bool,
        key: Vec<u8>,
        header: Header,
        attrs: crate::Attrs,
        digest: [u8; 16],
    },
    Bad {
        blob: u32,
        offset: u64,
        record_len: u64,
        key: Vec<u8>,
        version: crate::Version,
    },
}

impl<I: Io> Shard<I> {
    /// Opens (recovering) the shard whose files are in `dir`, creating nothing until the first
    /// write. `id` is the disk id the records must carry.
    pub async fn open(
        io: I,
        cfg: ShardConfig,
        dir: &Path,
        id: u32,
    ) -> Result<(Rc<Shard<I>>, RecoveryReport)> {
        let started = Instant::now();
        let disk = |source| Error::Disk { shard: id, source };
        let names = io.list_dir(dir).await.map_err(disk)?;
        let read_only = cfg.read_only;
        let removed_tmp = !read_only && remove_temp_files(&io, dir, &names).await.map_err(disk)?;
        // The key first: nothing on the disk is read as a record without it.
        let record_key = crate::record_key::load_or_create(&io, dir, id, &names, read_only).await?;
        let shard = Rc::new(Shard::new_empty(io, cfg, dir, id, record_key));
        let mut report = RecoveryReport::default();
        let ck = newest_checkpoint(&shard.io, dir, id, &names, &mut report).await?;
        report.checkpoint_seq = (ck.max_seq > 0 || !ck.blobs.is_empty()).then_some(ck.max_seq);
        report.checkpoint_entries = shard.load_checkpoint(&ck);
        let opened = if names.iter().any(|n| n == crate::files::NAMES_DAMAGED_FILE) {
            Opened::Lost("a run failed its checks when it was read".into())
        } else {
            shard.names.open(&names, read_only).await?
        };
        let names_mark = match opened {
            Opened::Runs(mark) if mark.max_seq >= ck.max_seq => Some(mark),
            Opened::None if ck.max_seq == 0 && ck.blobs.is_empty() => Some(Watermark::default()),
            Opened::Runs(mark) => {
                report.names_rebuilt_why = Some(format!(
                    "its runs reflect records up to {}, the checkpoint up to {}",
                    mark.max_seq, ck.max_seq
                ));
                None
            }
            Opened::None => {
                report.names_rebuilt_why = Some("the disk has no name index yet".into());
                None
            }
            Opened::Lost(why) => {
                report.names_rebuilt_why = Some(why);
                None
            }
        };

        // Blobs on disk, checked against the checkpoint, then scanned past it.
        let mut on_disk: Vec<(u32, bool)> = names.iter().filter_map(|n| parse_blob_name(n)).collect();
        on_disk.sort_unstable();
        check_blobs_present(id, &ck, &on_disk)?;
        shard.cfg.clock.observe(ck.max_hlc);
        let mut r = Recovery {
            shard: &shard,
            dir,
            report,
            items: Vec::new(),
            max_seq: ck.max_seq,
            changed: removed_tmp,
            names_mark,
        };
        let ck_blobs: HashMap<u32, u64> = ck.blobs.iter().map(|b| (b.id, b.scan_from)).collect();
        for (bid, dedicated) in on_disk {
            r.blob(bid, dedicated, ck_blobs.get(&bid).copied().unwrap_or(0)).await?;
        }
        // Apply what the checkpoint does not reflect, oldest first.
        r.apply(&ck).await?;
        let Recovery { mut report, max_seq, changed, .. } = r;

        shard.writes.next_seq.set(max_seq + 1);
        let open = shard.files.blobs.borrow().values().filter(|b| !b.dedicated).map(|b| b.id).max();
        for b in shard.files.blobs.borrow().values() {
            b.sealed.set(b.dedicated || Some(b.id) != open);
        }
        shard.files.open_blob.set(open);
        shard.recount_bytes();
        if let Some(why) = &report.names_rebuilt_why {
            if read_only {
                tracing::warn!("shard {id}: no listing from this disk while it is open read-only: {why}");
                shard.names_ready.set(false);
            } else {
                tracing::warn!("shard {id}: rebuilding the name index from the records: {why}");
                let n = shard.names_rebuild(&names).await?;
                tracing::info!("shard {id}: name index rebuilt: {n} names");
            }
        }
        if read_only {
            *shard.fenced.borrow_mut() = Some("opened read-only".into());
        } else if changed || report.checkpoint_seq.is_none() && report.blobs > 0 {
            shard.checkpoint().await?;
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok((shard, report))
    }

    /// Takes the checkpoint's state: the index, quarantine, digests and backlogs. Returns the
    /// number of index entries.
    fn load_checkpoint(&self, ck: &Checkpoint) -> u64 {
        let mut ix = Index::with_capacity(ck.main.len());
        for (fp, raw) in &ck.main {
            ix.set(Slot::Main, *fp, &[], Loc::from_raw(*raw));
        }
        for (key, raw) in &ck.overflow {
            ix.set(Slot::Overflow, self.fp(key), key, Loc::from_raw(*raw));
        }
        let entries = ix.len() as u64;
        *self.index.borrow_mut() = ix;
        *self.damage.quarantine.borrow_mut() = ck.quarantine.clone();
        if ck.digests.len() == crate::digest::BUCKETS {
            *self.replica.digests.borrow_mut() = ck.digests.clone();
        }
        let mut backlogs = self.replica.backlogs.borrow_mut();
        for b in &ck.backlogs {
            // A peer no longer configured is dropped; a new one starts empty.
            if let Some(i) = self.cfg.peers.iter().position(|p| *p == b.peer) {
                let bl = &mut backlogs[i];
                bl.overflowed = b.overflowed;
                for e in &b.entries {
                    bl.add(*e, u64::MAX);
                }
            }
        }
        for q in &ck.quarantine {
            if let (
                Some(k),
                QuarantineReason::BadBody | QuarantineReason::ReadChecksum | QuarantineReason::ReadError,
            ) = (&q.key, q.reason)
            {
                self.damage.quarantined_keys.borrow_mut().insert(k.clone().into(), q.seq);
            }
        }
        entries
    }

    /// Recomputes live and dead bytes from the index and the blob tails.
    pub(crate) fn recount_bytes(&self) {
        let ix = self.index.borrow();
        let len_of = |l: Loc| l.record_len().unwrap_or(4 << 30);
        let live: u64 = ix
            .main_entries()
            .chain(ix.overflow_entries().map(|(_, l)| (0, l)))
            .filter(|(_, l)| !l.is_tombstone())
            .map(|(_, l)| len_of(l))
            .sum();
        let used: u64 = self.files.blobs.borrow().values().map(|b| b.tail.get()).sum();
        let mut c = self.counters.borrow_mut();
        c.live_bytes = live;
        c.dead_bytes = used.saturating_sub(live);
    }
}

/// Removes the temporary files a crash left (a checkpoint or key file never renamed into
/// place); true if there were any.
async fn remove_temp_files<I: Io>(io: &I, dir: &Path, names: &[String]) -> podstore_disks::Result<bool> {
    let mut removed = false;
    for n in names.iter().filter(|n| n.ends_with(".tmp")) {
        io.remove(&dir.join(n)).await?;
        removed = true;
    }
    if removed {
        io.sync_dir(dir).await?;
    }
    Ok(removed)
}

/// The newest checkpoint that passes its checks (an empty one if none does); the rejected
/// ones go to the report and the log.
async fn newest_checkpoint<I: Io>(
    io: &I,
    dir: &Path,
    id: u32,
    names: &[String],
    report: &mut RecoveryReport,
) -> Result<Checkpoint> {
    let mut ckpts: Vec<(u64, &String)> =
        names.iter().filter_map(|n| parse_ckpt_name(n).map(|s| (s, n))).collect();
    ckpts.sort_by_key(|c| std::cmp::Reverse(c.0));
    let mut found = None;
    for (_, name) in ckpts {
        match read_checkpoint(io, &dir.join(name), id).await {
            Ok(Ok(c)) if c.shard_id == id => {
                found = Some(c);
                break;
            }
            Ok(Ok(c)) => {
                report.checkpoints_rejected.push((name.clone(), format!("belongs to shard {}", c.shard_id)))
            }
            Ok(Err(e)) => report.checkpoints_rejected.push((name.clone(), e.to_string())),
            Err(e) if e.is_crash() => return Err(e),
            Err(e) => report.checkpoints_rejected.push((name.clone(), e.to_string())),
        }
    }
    for (name, why) in &report.checkpoints_rejected {
        tracing::warn!("shard {id}: checkpoint {name} rejected: {why}");
    }
    Ok(found.unwrap_or_default())
}

/// Every blob the checkpoint names is on the disk. A dedicated blob whose only record never
/// completed is removed by recovery, possibly before a newer checkpoint forgets it: that one
/// may be missing. Any other may not.
fn check_blobs_present(id: u32, ck: &Checkpoint, on_disk: &[(u32, bool)]) -> Result<()> {
    let disk_ids: HashSet<u32> = on_disk.iter().map(|b| b.0).collect();
    match ck.blobs.iter().find(|b| !(disk_ids.contains(&b.id) || b.dedicated && b.scan_from == 0)) {
        Some(missing) => Err(Error::Damaged {
            shard: id,
            reason: format!("blob {} named by the checkpoint is missing", missing.id),
        }),
        None => Ok(()),
    }
}

/// Recovery's state while it scans the blobs and applies what it found.
struct Recovery<'a, I: Io> {
    shard: &'a Rc<Shard<I>>,
    dir: &'a Path,
    report: RecoveryReport,
    /// Records found past the checkpoint, with their sequence numbers.
    items: Vec<(u64, TailItem)>,
    max_seq: u64,
    /// Something on disk changed, or the index did: a fresh checkpoint is written.
    changed: bool,
    /// What the name index's runs reflect (records past it are applied to it), or None when
    /// it is rebuilt after the scan.
    names_mark: Option<Watermark>,
}

impl<I: Io> Recovery<'_, I> {
    /// Opens blob `bid`, scans it from `from` (its checkpoint's `scan_from`), settles its torn
    /// tail and adds it to the shard.
    async fn blob(&mut self, bid: u32, dedicated: bool, from: u64) -> Result<()> {
        let (shard, id) = (self.shard, self.shard.id());
        let io = &shard.io;
        let read_only = shard.cfg.read_only;
        self.report.blobs += 1;
        let path = self.dir.join(blob_name(bid, dedicated));
        let mode = if read_only { OpenMode::ReadOnly } else { OpenMode::Existing };
        let file = io.open(&path, mode).await.map_err(|e| shard.disk_err(e))?;
        let size = io.file_size(&file).await.map_err(|e| shard.disk_err(e))?;
        if size % 4096 != 0 || from > size {
            return Err(Error::Damaged {
                shard: id,
                reason: format!("blob {bid} is {size} bytes, expected at least {from}"),
            });
        }
        let mut tail_dirty = false;
        let end = if from < size {
            let scan = Scanner::new(io, &file, id, &shard.record_key, size, shard.cfg.scan_window_bytes)
                .scan(bid, from)
                .await?;
            self.report.blobs_scanned += 1;
            self.report.bytes_scanned += scan.bytes_read;
            for f in scan.found {
                tail_dirty |= self.found(bid, scan.end_valid, f);
            }
            scan.end_valid
        } else {
            size
        };
        if dedicated && end == 0 && size > 0 && from == 0 {
            // The one record of a dedicated blob never completed.
            self.report.dedicated_removed += 1;
            if !read_only {
                drop(file);
                io.remove(&path).await.map_err(|e| shard.disk_err(e))?;
                io.sync_dir(self.dir).await.map_err(|e| shard.disk_err(e))?;
                shard.files.next_blob_id.set(shard.files.next_blob_id.get().max(bid + 1));
                self.changed = true;
            }
            return Ok(());
        }
        if tail_dirty && read_only {
            self.report.tails_truncated += 1; // would be; nothing is changed in read-only mode
        } else if tail_dirty {
            // Zero the torn tail: cut the file at the last valid record, preallocate again.
            io.truncate(&file, end).await.map_err(|e| shard.disk_err(e))?;
            io.allocate(&file, size).await.map_err(|e| shard.disk_err(e))?;
            io.sync_data(&file).await.map_err(|e| shard.disk_err(e))?;
            self.report.tails_truncated += 1;
            self.changed = true;
        }
        let tail = if dedicated { size } else { end };
        let blob = Rc::new(BlobFile::new(bid, file, path, size, dedicated, tail));
        // Past the open-file limit the descriptor is not kept: it is opened when needed.
        if shard.files.open_files.get() < shard.cfg.open_blob_files_max {
            shard.note_opened();
        } else {
            *blob.file.borrow_mut() = None;
        }
        shard.files.blobs.borrow_mut().insert(bid, blob);
        shard.files.next_blob_id.set(shard.files.next_blob_id.get().max(bid + 1));
        Ok(())
    }

    /// Takes one thing the scan of blob `bid` found before or after `end` (the end of its last
    /// valid record). True if it belongs to a torn tail.
    fn found(&mut self, bid: u32, end: u64, f: Found) -> bool {
        let clock = &self.shard.cfg.clock;
        match f {
            Found::Record { offset, header, key, attrs, digest } => {
                self.max_seq = self.max_seq.max(header.seq);
                clock.observe(header.version.hlc);
                let (seq, record_len, tombstone) = (header.seq, header.record_len, header.is_tombstone());
                let item =
                    TailItem::Valid { blob: bid, offset, record_len, tombstone, key, header, attrs, digest };
                self.items.push((seq, item));
            }
            Found::BadBody { offset, header, key } if offset < end => {
                self.max_seq = self.max_seq.max(header.seq);
                clock.observe(header.version.hlc);
                let item = TailItem::Bad {
                    blob: bid,
                    offset,
                    record_len: header.record_len,
                    key,
                    version: header.version,
                };
                self.items.push((header.seq, item));
            }
            Found::Incomplete { header, .. } if header.offset < end => {
                // Never completed, so never acknowledged: dead space, nothing to repair.
                self.max_seq = self.max_seq.max(header.seq);
                self.report.incomplete_records += 1;
            }
            Found::Garbage { offset } if offset < end => {
                self.quarantine_region(bid, offset);
                self.changed = true;
            }
            Found::BadBody { header, key, .. } | Found::Incomplete { header, key, .. } => {
                self.max_seq = self.max_seq.max(header.seq);
                self.report.torn_tail_items += 1;
                if self.report.torn_tail_keys.len() < 100 {
                    self.report.torn_tail_keys.push(key);
                }
                return true;
            }
            Found::Garbage { .. } => {
                self.report.torn_tail_items += 1;
                return true;
            }
        }
        false
    }

    /// Quarantines a garbage block before valid records, growing the last region when it
    /// continues it.
    fn quarantine_region(&mut self, bid: u32, offset: u64) {
        let mut q = self.shard.damage.quarantine.borrow_mut();
        match q.last_mut() {
            Some(last)
                if last.reason == QuarantineReason::BadRegion
                    && last.blob == bid
                    && last.offset + last.len_bytes == offset =>
            {
                last.len_bytes += 4096;
            }
            _ => {
                q.push(Quarantined {
                    blob: bid,
                    offset,
                    len_bytes: 4096,
                    seq: 0,
                    key: None,
                    reason: QuarantineReason::BadRegion,
                });
                self.report.quarantined_new += 1;
            }
        }
    }

    /// Applies the records the checkpoint does not reflect (sequence above its `max_seq`, or in
    /// flight when it was taken), oldest first.
    async fn apply(&mut self, ck: &Checkpoint) -> Result<()> {
        let ck_in_flight: HashSet<u64> = ck.in_flight.iter().copied().collect();
        let mut items = std::mem::take(&mut self.items);
        items.sort_by_key(|(seq, _)| *seq);
        let mut tail_keys: HashMap<u64, Vec<u8>> = HashMap::new();
        for (seq, item) in items {
            if seq <= ck.max_seq && !ck_in_flight.contains(&seq) {
                continue;
            }
            // The name index takes every record the index takes, in the same order, though its
            // runs may reflect some already (they are never behind the checkpoint): a record
            // whose write failed after it reached the disk was never applied to either, and
            // the index takes it now; applying a record again leaves a name as it was.
            if let (Some(_), TailItem::Valid { key, header, attrs, digest, .. }) = (&self.names_mark, &item) {
                let name = if header.is_tombstone() {
                    Name::tombstone(header.version, header.created_ms)
                } else {
                    Name::live(header.version, header.object_len, header.created_ms, *digest, attrs)
                };
                self.shard.names_apply(key, name);
            }
            self.changed = true;
            match item {
                TailItem::Valid { blob, offset, record_len, tombstone, key, header, .. } => {
                    let loc = Loc::new(blob, offset, record_len, tombstone);
                    self.apply_valid(&mut tail_keys, loc, key, &header).await?;
                }
                TailItem::Bad { blob, offset, record_len, key, version } => {
                    self.apply_bad(seq, blob, offset, record_len, key, version).await;
                }
            }
        }
        Ok(())
    }

    /// A valid record found past the checkpoint goes into the index (and the digests and the
    /// peers' backlogs); it supersedes a quarantine of its key.
    async fn apply_valid(
        &mut self,
        tail_keys: &mut HashMap<u64, Vec<u8>>,
        loc: Loc,
        key: Vec<u8>,
        header: &Header,
    ) -> Result<()> {
        let shard = self.shard;
        let fp = shard.fp(&key);
        let slot = match tail_keys.get(&fp) {
            Some(k) if *k == key => Slot::Main,
            Some(_) => Slot::Overflow,
            None => {
                let (slot, _) = shard.resolve_slot(fp, &key).await?;
                if slot == Slot::Main {
                    tail_keys.insert(fp, key.clone());
                }
                slot
            }
        };
        let prev = shard.index.borrow_mut().set(slot, fp, &key, loc);
        if shard.digests_on() {
            let held = match prev {
                Some(p) => match shard.read_header(p).await? {
                    Ok((h, k, _)) if k == key => Some((h.version, h.is_tombstone())),
                    _ => None,
                },
                None => None,
            };
            shard.digest_apply(&key, held, Some((header.version, header.is_tombstone())));
        }
        if shard.damage.quarantined_keys.borrow_mut().remove(&key[..]).is_some() {
            shard.damage.quarantine.borrow_mut().retain(|q| q.key.as_deref() != Some(&key[..]));
        }
        // Not in the checkpoint's backlogs: no peer can have confirmed it yet.
        shard.backlog_add(header);
        self.report.records_applied += 1;
        Ok(())
    }

    /// A record with a valid header and footer but bad data, before valid records: damage,
    /// quarantined under its key, unless the same record is intact where the index points.
    async fn apply_bad(
        &mut self,
        seq: u64,
        blob: u32,
        offset: u64,
        record_len: u64,
        key: Vec<u8>,
        version: crate::Version,
    ) {
        let (shard, id) = (self.shard, self.shard.id());
        // A copy of a record that is intact where the index points (compaction copies several
        // records at once: one left incomplete by the crash may lie before one that
        // completed): nothing is lost, nothing to quarantine.
        let intact = match shard.entry_of(&key) {
            Some(l) if !l.is_tombstone() => matches!(
                shard.read_header(l).await,
                Ok(Ok((h, k, _))) if k == key && h.version == version
            ),
            _ => false,
        };
        if intact {
            tracing::info!("shard {id}: an incomplete copy at blob {blob} offset {offset} of a record intact elsewhere; left for compaction");
            return;
        }
        tracing::warn!(
            "shard {id}: record at blob {blob} offset {offset} is damaged before valid records; quarantined"
        );
        shard.damage.quarantined_keys.borrow_mut().insert(key.clone().into(), seq);
        shard.damage.quarantine.borrow_mut().push(Quarantined {
            blob,
            offset,
            len_bytes: record_len,
            seq,
            key: Some(key),
            reason: QuarantineReason::BadBody,
        });
        self.report.quarantined_new += 1;
    }
}

/// Reads and decodes one checkpoint file. The outer error is an I/O failure, the inner one a
/// checkpoint that fails its checks.
async fn read_checkpoint<I: Io>(
    io: &I,
    path: &Path,
    shard: u32,
) -> Result<std::result::Result<Checkpoint, CkptError>> {
    let disk = |e| Error::Disk { shard, source: e };
    let file = io.open(path, OpenMode::ReadOnly).await.map_err(disk)?;
    let size = io.file_size(&file).await.map_err(disk)?;
    if size < CKPT_HEADER_BYTES as u64 || size % 4096 != 0 {
        return Ok(Err(CkptError::Short));
    }
    let mut hb = AlignedBuf::new(CKPT_HEADER_BYTES);
    hb.set_len(CKPT_HEADER_BYTES);
    let (r, hb) = io.read_at(&file, 0, hb).await;
    r.map_err(disk)?;
    let body = match Checkpoint::body_len(&hb) {
        Ok(n) => n,
        Err(e) => return Ok(Err(e)),
    };
    let total = podstore_disks::align_up(CKPT_HEADER_BYTES as u64 + body);
    if total > size {
        return Ok(Err(CkptError::Short));
    }
    let mut all = Vec::with_capacity(total as usize);
    let chunk = 8 << 20;
    let mut off = 0u64;
    while off < total {
        let n = (total - off).min(chunk) as usize;
        let mut b = AlignedBuf::new(n);
        b.set_len(n);
        let (r, b) = io.read_at(&file, off, b).await;
        r.map_err(disk)?;
        if b.len() < n {
            return Ok(Err(CkptError::Short));
        }
        all.extend_from_slice(&b);
        off += n as u64;
    }
    Ok(Checkpoint::decode(&all))
}
