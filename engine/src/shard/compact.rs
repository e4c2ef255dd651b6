//! Compaction (eblob's merge, SeaweedFS's vacuum): a sealed blob whose dead share passed a
//! threshold is rewritten, live records only, into the shard's open blob, and then removed.
//!
//! The steps, each crash-safe:
//! 1. Every index entry that points into the blob is moved, one at a time, under its key's
//!    lock (so a PUT or DELETE of that key waits for the move, never the other way round, and
//!    a key's records stay in sequence order): the record is read and verified, written again
//!    as an ordinary record (same version, creation time, content type, bytes and digest; a new
//!    sequence, blob and offset), made durable by the group fdatasync, and only then does the
//!    index switch to the copy. A crash before the switch leaves a copy that recovery applies
//!    (same version: nothing changes) or a torn copy that recovery truncates.
//! 2. A tombstone is copied too, unless it is droppable: older than the tombstone horizon by its
//!    version's clock, in no peer's backlog (nor may be: an overflowed backlog), and no other
//!    blob can hold an older record of its key (every other blob's first record is newer), so
//!    no rescan can ever find an older object to resurrect.
//! 3. When nothing points into the blob any more, it leaves the shard's blob table, a checkpoint
//!    that no longer names it is made durable, and only then is the file removed. A crash
//!    before the removal leaves a file no checkpoint names: recovery scans it, applies nothing
//!    of it (its records are older than the checkpoint) and the next compaction removes it.
//!
//! A record that fails its checks is not copied: its key is quarantined (repaired from a peer)
//! and the blob stays until nothing damaged is left in it. Compaction reads and writes under
//! the disk's background budget ([`IoBudget`]) and can be paused and stopped between records.

use std::rc::Rc;

use podstore_disks::Io;

use crate::budget::IoBudget;
use crate::files::blob_name;
use crate::index::{Loc, Slot};
use crate::now_ms;
use crate::record::{Header, BLOCK};
use crate::shard::{Shard, WriterStart};
use crate::{Error, Result};

use futures_util::StreamExt;

/// Records one compaction copies at once.
const COMPACT_COPIES_IN_FLIGHT: usize = 8;

/// What one blob holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobUsage {
    pub id: u32,
    pub dedicated: bool,
    /// No new records will come (not the open blob).
    pub sealed: bool,
    pub size_bytes: u64,
    /// Bytes of records written or reserved.
    pub used_bytes: u64,
    /// Bytes of the objects and tombstones the index points to.
    pub live_bytes: u64,
}

impl BlobUsage {
    /// Bytes of records nothing points to.
    pub fn dead_bytes(&self) -> u64 {
        self.used_bytes.saturating_sub(self.live_bytes)
    }

    /// Dead share of the written part (0 for an empty blob).
    pub fn dead_ratio(&self) -> f64 {
        if self.used_bytes == 0 {
            0.0
        } else {
            self.dead_bytes() as f64 / self.used_bytes as f64
        }
    }
}

/// Compaction's progress and totals on one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Blobs rewritten and removed.
    pub blobs_compacted: u64,
    /// Bytes of blob files removed.
    pub bytes_reclaimed: u64,
    pub records_moved: u64,
    pub bytes_moved: u64,
    pub tombstones_dropped: u64,
    /// Blobs left in place because a record in them is damaged (awaiting repair).
    pub blobs_skipped: u64,
    /// The blob being compacted, with the bytes of live records moved of its total.
    pub current_blob: Option<u32>,
    pub current_done_bytes: u64,
    pub current_total_bytes: u64,
    /// Passes that ended (stopped or not).
    pub passes: u64,
    pub last_error: Option<String>,
}

/// What became of one index entry.
enum Moved {
    /// Copied; the index points to the copy.
    Copied(u64),
    /// Overwritten or deleted meanwhile: nothing to move.
    Gone,
    /// A tombstone past the horizon: removed from the index.
    Dropped,
    /// Unreadable or quarantined: left where it is, so the blob stays.
    Damaged,
}

impl<I: Io> Shard<I> {
    /// Every blob's size, use and live bytes (one walk of the index).
    pub fn blob_usage(&self) -> Vec<BlobUsage> {
        let blobs = self.files.blobs.borrow();
        let mut live: std::collections::HashMap<u32, u64> = Default::default();
        {
            let ix = self.index.borrow();
            for l in ix.main_entries().map(|(_, l)| l).chain(ix.overflow_entries().map(|(_, l)| l)) {
                let len = l.record_len().or_else(|| blobs.get(&l.blob()).map(|b| b.size_bytes)).unwrap_or(0);
                *live.entry(l.blob()).or_default() += len;
            }
        }
        let open = self.files.open_blob.get();
        blobs
            .values()
            .map(|b| BlobUsage {
                id: b.id,
                dedicated: b.dedicated,
                sealed: b.sealed.get() && Some(b.id) != open,
                size_bytes: b.size_bytes,
                used_bytes: if b.dedicated { b.size_bytes } else { b.tail.get() },
                live_bytes: live.get(&b.id).copied().unwrap_or(0),
            })
            .collect()
    }

    /// Sealed blobs whose dead share is at least `dead_ratio`, wholly dead ones first (they cost
    /// no writes, so they free room even on a full disk), then oldest first (so older records
    /// go before the tombstones that shadow them, and those can go in the same pass).
    pub fn compaction_candidates(&self, dead_ratio: f64) -> Vec<u32> {
        let mut c: Vec<BlobUsage> = self
            .blob_usage()
            .into_iter()
            .filter(|u| u.sealed && u.dead_bytes() > 0 && u.dead_ratio() >= dead_ratio)
            .filter(|u| self.blob(u.id).is_some_and(|b| b.in_flight.borrow().is_empty()))
            .collect();
        c.sort_by_key(|u| (u.live_bytes > 0, u.id));
        c.into_iter().map(|u| u.id).collect()
    }

    /// The compaction job's control (pause, resume, stop).
    pub fn compact_ctl(&self) -> &crate::budget::JobCtl {
        &self.jobs.compact_ctl
    }

    /// Compaction's progress and totals.
    pub fn compact_stats(&self) -> CompactStats {
        self.jobs.compact_stats.borrow().clone()
    }

    /// One compaction pass: compacts every candidate at `dead_ratio`, under `budget`. Returns
    /// the number of blobs removed, or None if a pass is already running.
    pub async fn compact(self: &Rc<Self>, dead_ratio: f64, budget: &IoBudget) -> Result<Option<u64>> {
        if !self.jobs.compact_ctl.begin() {
            return Ok(None);
        }
        let r = match self.finish_removals().await {
            Ok(()) => self.compact_candidates(dead_ratio, budget).await,
            Err(e) => Err(e),
        };
        self.jobs.compact_ctl.end();
        let mut st = self.jobs.compact_stats.borrow_mut();
        st.passes += 1;
        st.current_blob = None;
        match &r {
            Err(e) if !e.is_crash() => st.last_error = Some(e.to_string()),
            _ => {}
        }
        r.map(Some)
    }

    async fn compact_candidates(self: &Rc<Self>, dead_ratio: f64, budget: &IoBudget) -> Result<u64> {
        let mut removed = 0;
        for bid in self.compaction_candidates(dead_ratio) {
            if !self.jobs.compact_ctl.proceed().await || self.fenced().is_some() {
                break;
            }
            match self.compact_blob(bid, budget).await {
                Ok(true) => removed += 1,
                Ok(false) => {}
                // No room for the copies: wholly dead blobs came first; try the others later.
                Err(Error::NoSpace { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// The index entries that point into blob `bid`, in offset order.
    pub(crate) fn entries_in(&self, bid: u32) -> Vec<(Slot, u64, Option<Vec<u8>>, Loc)> {
        let ix = self.index.borrow();
        let mut v: Vec<_> = ix
            .main_entries()
            .filter(|(_, l)| l.blob() == bid)
            .map(|(fp, l)| (Slot::Main, fp, None, l))
            .chain(
                ix.overflow_entries()
                    .filter(|(_, l)| l.blob() == bid)
                    .map(|(k, l)| (Slot::Overflow, self.fp(k), Some(k.to_vec()), l)),
            )
            .collect();
        v.sort_by_key(|e| e.3.offset());
        v
    }

    /// The entry of `key` in `slot`.
    pub(crate) fn index_get(&self, slot: Slot, fp: u64, key: &[u8]) -> Option<Loc> {
        let ix = self.index.borrow();
        match slot {
            Slot::Main => ix.main_get(fp),
            Slot::Overflow => ix.overflow_get(key),
        }
    }

    /// Compacts one sealed blob; returns whether it was removed.
    async fn compact_blob(self: &Rc<Self>, bid: u32, budget: &IoBudget) -> Result<bool> {
        let Some(blob) = self.blob(bid) else { return Ok(false) };
        if Some(bid) == self.files.open_blob.get()
            || !blob.sealed.get()
            || !blob.in_flight.borrow().is_empty()
        {
            return Ok(false);
        }
        let entries = self.entries_in(bid);
        {
            let mut st = self.jobs.compact_stats.borrow_mut();
            st.current_blob = Some(bid);
            st.current_done_bytes = 0;
            st.current_total_bytes =
                entries.iter().map(|e| e.3.record_len().unwrap_or(blob.size_bytes)).sum();
        }
        let mut damaged = false;
        // Several records are copied at once, so their syncs share group commits; a copy that
        // began is always finished (a stop or an error only keeps new ones from starting).
        let stop = std::cell::Cell::new(false);
        let moves = futures_util::stream::iter(entries).map(|(slot, fp, key, loc)| {
            let stop = &stop;
            async move {
                if stop.get() || !self.jobs.compact_ctl.proceed().await {
                    stop.set(true);
                    return Ok(None);
                }
                let r = self.move_entry(slot, fp, key, loc, budget).await;
                if r.is_err() {
                    stop.set(true);
                }
                r.map(Some)
            }
        });
        let mut moves = std::pin::pin!(moves.buffer_unordered(COMPACT_COPIES_IN_FLIGHT));
        let mut failed = None;
        while let Some(r) = moves.next().await {
            let moved = match r {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    failed.get_or_insert(e);
                    continue;
                }
            };
            match moved {
                Moved::Copied(n) => {
                    let mut st = self.jobs.compact_stats.borrow_mut();
                    st.records_moved += 1;
                    st.bytes_moved += n;
                    st.current_done_bytes += n;
                }
                Moved::Gone => {}
                Moved::Dropped => self.jobs.compact_stats.borrow_mut().tombstones_dropped += 1,
                Moved::Damaged => damaged = true,
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if stop.get() {
            return Ok(false);
        }
        if damaged || self.fenced().is_some() || !self.entries_in(bid).is_empty() {
            self.jobs.compact_stats.borrow_mut().blobs_skipped += 1;
            return Ok(false);
        }
        // Nothing points into the blob: forget it, make that durable, then remove the file.
        // Its descriptor is cached first (and, out of the table, never closed by the cache):
        // a reader that found it in the table just before opens it from there, not by a path
        // about to be removed.
        self.blob_file(&blob).await?;
        self.files.blobs.borrow_mut().remove(&bid);
        self.damage.quarantine.borrow_mut().retain(|q| q.blob != bid || q.key.is_some());
        self.files.removals.borrow_mut().push((bid, blob.dedicated));
        let size = blob.size_bytes;
        drop(blob);
        self.finish_removals().await?;
        let mut st = self.jobs.compact_stats.borrow_mut();
        st.blobs_compacted += 1;
        st.bytes_reclaimed += size;
        drop(st);
        tracing::info!("shard {}: compacted blob {bid}, {size} bytes reclaimed", self.id);
        Ok(true)
    }

    /// Removes the files of blobs the shard has forgotten, once a checkpoint that no longer
    /// names them is durable. A failure leaves them listed for the next pass (and a restart's
    /// recovery finds such a file, applies nothing of it, and compaction removes it then).
    async fn finish_removals(&self) -> Result<()> {
        if self.files.removals.borrow().is_empty() {
            return Ok(());
        }
        loop {
            let done = self.jobs.checkpoint_done.notified();
            if self.checkpoint().await?.is_some() {
                break;
            }
            done.await; // another checkpoint (maybe snapshotted before the removal) was running
        }
        let gone: Vec<(u32, bool)> = self.files.removals.borrow().clone();
        for (bid, dedicated) in gone {
            let path = self.dir.join(blob_name(bid, dedicated));
            self.io.remove(&path).await.map_err(|e| self.disk_err(e))?;
            self.files.removals.borrow_mut().retain(|r| r.0 != bid);
        }
        self.io.sync_dir(&self.dir).await.map_err(|e| self.disk_err(e))?;
        self.recount_bytes();
        Ok(())
    }

    /// Moves one index entry out of its blob (see the module comment).
    async fn move_entry(
        self: &Rc<Self>,
        slot: Slot,
        fp: u64,
        key: Option<Vec<u8>>,
        loc: Loc,
        budget: &IoBudget,
    ) -> Result<Moved> {
        budget.take(BLOCK).await;
        // The key (main entries know only its fingerprint) and, for a tombstone, its header.
        let (key, header) = match key {
            Some(k) if !loc.is_tombstone() => (k, None),
            k => match self.read_header(loc).await? {
                Ok((h, hk, _)) if k.as_ref().is_none_or(|k| *k == hk) && self.fp(&hk) == fp => (hk, Some(h)),
                _ => {
                    // An entry whose record does not read back: a read of the key quarantines it.
                    self.counters.borrow_mut().checksum_errors += 1;
                    return Ok(Moved::Damaged);
                }
            },
        };
        // The key's lock before a write slot, as every writer takes them (shard.rs, put_stamped).
        let lock = self.lock_key(fp).await;
        let permit = self.write_slot().await;
        if self.index_get(slot, fp, &key) != Some(loc) {
            return Ok(Moved::Gone);
        }
        if self.damage.quarantined_keys.borrow().contains_key(&key[..]) {
            return Ok(Moved::Damaged);
        }
        if let Some(h) = header.filter(|h| h.is_tombstone()) {
            if self.tombstone_droppable(&h).await {
                self.index.borrow_mut().remove(slot, fp, &key);
                self.digest_apply(&key, Some((h.version, true)), None);
                self.names_apply(&key, crate::names::Name::gone());
                self.counters.borrow_mut().since_checkpoint_records += 1;
                return Ok(Moved::Dropped);
            }
            budget.take_ops(2, h.record_len).await;
            let copy = self.write_tombstone(&key, h.version, h.created_ms, true).await?;
            self.switch_moved(slot, fp, &key, loc, h.seq, &copy);
            drop(lock);
            drop(permit);
            return Ok(Moved::Copied(copy.record_len));
        }
        let mut r = match self.open_checked(&key, loc, 2).await? {
            Ok(Some(r)) => r,
            _ => return Ok(Moved::Damaged),
        };
        let len = loc.record_len().unwrap_or(BLOCK);
        budget.take_ops(2, 2 * len).await;
        let meta = r.meta.clone();
        let start = WriterStart {
            permit,
            lock,
            slot,
            held: None,
            version: meta.version,
            created_ms: meta.created_ms,
            moved_from: Some((loc, meta.seq)),
            backlog: false,
        };
        let mut w = self.start_writer(&key, &meta.attrs, meta.object_len, start).await?;
        loop {
            match r.next_chunk().await {
                Ok(Some(c)) => w.write(&c).await?,
                Ok(None) => break,
                Err(Error::Corrupt { .. }) => {
                    // Quarantined by the reader; the copy is abandoned.
                    let _ = w.abort().await;
                    return Ok(Moved::Damaged);
                }
                Err(e) => return Err(e),
            }
        }
        let done = w.finish_expecting(Some(meta.digest)).await?;
        Ok(Moved::Copied(done.record_len))
    }

    /// Whether a tombstone may leave the shard (see the module comment, step 2).
    async fn tombstone_droppable(&self, h: &Header) -> bool {
        if !self.jobs.tombstone_drop.get() {
            return false;
        }
        if now_ms().saturating_sub(h.version.millis()) < self.cfg.tombstone_horizon_ms {
            return false;
        }
        if self.replica.backlogs.borrow().iter().any(|b| b.may_hold(h.seq)) {
            return false;
        }
        let others: Vec<_> =
            self.files.blobs.borrow().values().filter(|b| b.id != h.blob_id).cloned().collect();
        for b in others {
            if b.tail.get() == 0 && !b.dedicated {
                continue; // holds nothing yet; what comes is newer
            }
            let first = match b.first_seq.get() {
                Some(s) => s,
                None => match self.read_header(Loc::new(b.id, 0, BLOCK, false)).await {
                    Ok(Ok((fh, _, _))) => {
                        b.first_seq.set(Some(fh.seq));
                        fh.seq
                    }
                    _ => return false, // unknown: keep the tombstone
                },
            };
            if first < h.seq {
                return false;
            }
        }
        true
    }

    /// After a moved copy is durable: points the index at it if the index still points at the
    /// record it copies (it must: the key's lock is held), and moves backlog entries along.
    pub(crate) fn switch_moved(&self, slot: Slot, fp: u64, key: &[u8], from: Loc, old_seq: u64, h: &Header) {
        let to = Loc::new(h.blob_id, h.offset, h.record_len, h.is_tombstone());
        let mut c = self.counters.borrow_mut();
        c.dead_bytes += h.record_len; // the old record, or the copy if it lost
        if self.index_get(slot, fp, key) != Some(from) {
            return;
        }
        self.index.borrow_mut().set(slot, fp, key, to);
        c.since_checkpoint_records += 1;
        c.since_checkpoint_bytes += h.record_len;
        drop(c);
        let entry = crate::backlog::BacklogEntry::of(h);
        for b in self.replica.backlogs.borrow_mut().iter_mut() {
            b.moved(old_seq, entry);
        }
    }
}
