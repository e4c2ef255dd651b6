//! Moving a key's newest record to another disk of the node (rebalancing after disks filled
//! up or failed, draining a disk): the node copies it there with its version
//! ([`crate::Stamp::Moved`]), then this disk forgets it.
//!
//! Forgetting writes nothing: the index entry goes and the record becomes dead space that
//! compaction reclaims. A recovery that finds the entry again (from a checkpoint older than the
//! forgetting) finds the same version on the other disk too, and the node's reads take the
//! newest version among the disks of a key's chain; the mover checkpoints the disk after a
//! pass that forgot anything, so that window stays short.

use std::rc::Rc;

use podstore_disks::Io;

use crate::index::Loc;
use crate::shard::Shard;
use crate::{Result, Version};

impl<I: Io> Shard<I> {
    /// Every index entry: the key's fingerprint, the key when the overflow map holds it (a
    /// main-table entry's key is in its record header), and the location.
    pub fn entries(&self) -> Vec<(u64, Option<Vec<u8>>, Loc)> {
        let ix = self.index.borrow();
        ix.main_entries()
            .map(|(fp, l)| (fp, None, l))
            .chain(ix.overflow_entries().map(|(k, l)| (self.fp(k), Some(k.to_vec()), l)))
            .collect()
    }

    /// The index entries pointing into blob `bid`, in the order of their records on disk (a
    /// walk of them reads the blob front to back).
    pub fn entries_of_blob(&self, bid: u32) -> Vec<(u64, Option<Vec<u8>>, Loc)> {
        self.entries_in(bid).into_iter().map(|(_, fp, k, l)| (fp, k, l)).collect()
    }

    /// When a GET last read each sealed blob (ms since the epoch), without a walk of the index.
    pub fn sealed_blob_reads(&self) -> Vec<(u32, u64)> {
        let open = self.files.open_blob.get();
        self.files
            .blobs
            .borrow()
            .values()
            .filter(|b| b.sealed.get() && Some(b.id) != open)
            .map(|b| (b.id, b.last_read_ms.get()))
            .collect()
    }

    /// The sealed blobs with live records, coldest first (least recently read, then oldest):
    /// (blob, when a GET last read it in ms since the epoch, its live bytes).
    pub fn coldest_blobs(&self) -> Vec<(u32, u64, u64)> {
        let mut v: Vec<(u32, u64, u64)> = self
            .blob_usage()
            .into_iter()
            .filter(|u| u.sealed && u.live_bytes > 0)
            .filter_map(|u| self.blob(u.id).map(|b| (u.id, b.last_read_ms.get(), u.live_bytes)))
            .collect();
        v.sort_by_key(|&(id, last, _)| (last, id));
        v
    }

    /// The key of the record at `loc` (one header read; None if it does not read back, or if
    /// its blob is gone: compaction moved the record and removed the blob since `loc` was
    /// taken from the index).
    pub async fn key_at(&self, loc: Loc) -> Result<Option<Vec<u8>>> {
        if self.blob(loc.blob()).is_none() {
            return Ok(None);
        }
        Ok(self.read_header(loc).await?.ok().map(|(_, k, _)| k))
    }

    /// How many times `forget` was called on this shard.
    pub fn forgets(&self) -> u64 {
        self.jobs.forgets.get()
    }

    /// Whether a peer's backlog holds (or, overflowed, may hold) the write with this sequence.
    pub fn in_backlog(&self, seq: u64) -> bool {
        self.replica.backlogs.borrow().iter().any(|b| b.may_hold(seq))
    }

    /// Forgets `key` here if its newest record still has `version` (the node holds it on
    /// another disk now). Returns whether it did.
    pub async fn forget(self: &Rc<Self>, key: &[u8], version: Version) -> Result<bool> {
        crate::validate(key, "")?;
        let fp = self.fp(key);
        let _lock = self.lock_key(fp).await;
        let _permit = self.write_slot().await;
        let (slot, old) = self.resolve_slot(fp, key).await?;
        let Some(loc) = old else { return Ok(false) };
        let Ok((h, k, _)) = self.read_header(loc).await? else { return Ok(false) };
        if k != key || h.version != version {
            return Ok(false);
        }
        // Counted as the entry goes, with no await between: a reader that saw the count
        // unchanged from before its look at every disk to after it saw the key on one of them.
        // (Counted earlier, before the awaits above, a reader could take its first count after
        // it and still find the entry gone by the time it read: a 404 for a key being moved.)
        self.jobs.forgets.set(self.jobs.forgets.get() + 1);
        if let Some(total) = &self.cfg.forgets_total {
            total.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.index.borrow_mut().remove(slot, fp, key);
        self.digest_apply(key, Some((h.version, h.is_tombstone())), None);
        self.names_apply(key, crate::names::Name::gone());
        let mut c = self.counters.borrow_mut();
        if !h.is_tombstone() {
            c.live_bytes = c.live_bytes.saturating_sub(h.record_len);
            c.dead_bytes += h.record_len;
        }
        c.since_checkpoint_records += 1;
        Ok(true)
    }
}
