//! Zeroing ahead of the open blob's tail.
//!
//! Blob files are reserved with `fallocate`, which gives the file blocks the filesystem marks
//! unwritten. The first write into such blocks makes the next fdatasync commit their
//! conversion to written extents through the filesystem's journal: on this project's test
//! machine an fdatasync after an 8 KiB write cost 358 us into unwritten blocks and 114 us into
//! written ones on XFS (518 and 107 on ext4). Small PUTs are bound by that sync (group commit
//! shares it, but a PUT still waits for one). So a background step writes zeros over the
//! region ahead of the tail, and syncs them, before records land there.
//!
//! A zeroing never touches reserved space: it starts at least a quarter of
//! `zero_ahead_bytes` past the tail, and while it is in flight no reservation may reach past
//! its start (one that would waits for it, and the blob is then not zeroed further: writes
//! that catch up with the zeroing, large ones, gain nothing from it). What it writes is what
//! the filesystem returns for unwritten blocks anyway (zeros), so recovery reads a zeroed
//! region exactly as one never written.

use super::*;

impl<I: Io> Shard<I> {
    /// The open blob, when a zeroing step has something to do there: the zeroed region ends
    /// less than `zero_ahead_bytes` past the tail, and writes have not caught up with it.
    fn zero_target(&self) -> Option<(Rc<BlobFile<I>>, u64, u64)> {
        let ahead = self.cfg.zero_ahead_bytes;
        if ahead == 0 || self.cfg.read_only || self.check_writable().is_err() {
            return None;
        }
        let blob = self.files.open_blob.get().and_then(|id| self.blob(id))?;
        if blob.sealed.get() || blob.zero_stopped.get() || blob.zeroing.get().is_some() {
            return None;
        }
        let tail = blob.tail.get();
        let start = blob.zeroed.get().max(tail + ahead / 4);
        let end = (start + ahead / 4).min(blob.size_bytes);
        (start < tail + ahead && start < end).then_some((blob, start, end))
    }

    /// Whether [`Shard::zero_ahead`] has a step to take now.
    pub fn zero_ahead_due(&self) -> bool {
        self.zero_target().is_some()
    }

    /// One step of zeroing ahead of the open blob's tail (a quarter of `zero_ahead_bytes`,
    /// written and synced). Returns whether it zeroed anything; Err after a failed write or
    /// sync (the shard is then fenced, like after any failed write).
    pub async fn zero_ahead(&self) -> Result<bool> {
        let (blob, start, end) = {
            let _g = self.writes.reserve_lock.lock().await;
            let Some((blob, start, end)) = self.zero_target() else { return Ok(false) };
            assert!(start >= blob.tail.get(), "zeroing reserved space");
            blob.zeroing.set(Some(start));
            (blob, start, end)
        };
        // However this ends (done, failed, or the future dropped), waiting reservations go on.
        struct Done<'a, I: Io>(&'a BlobFile<I>);
        impl<I: Io> Drop for Done<'_, I> {
            fn drop(&mut self) {
                self.0.zeroing.set(None);
                self.0.zero_done.notify_waiters();
            }
        }
        let _done = Done(&blob);
        // One buffer of zeros, written again and again (a write leaves its bytes as they are).
        let piece = (end - start).min(1 << 20) as usize;
        let mut buf = self.io.alloc_buf(piece).await;
        buf.clear();
        buf.set_len(piece);
        buf.as_mut_slice().fill(0);
        let mut at = start;
        while at < end {
            buf.set_len(((end - at) as usize).min(piece));
            let n = buf.len() as u64;
            buf = self.write_any(&blob, at, buf).await?;
            at += n;
        }
        let file = self.blob_file(&blob).await?;
        if let Err(e) = self.io.sync_data(&file).await {
            return Err(self.fence(format!("fdatasync of zeros ahead of the tail failed: {e}")));
        }
        blob.zeroed.set(end);
        self.counters.borrow_mut().zeroed_ahead_bytes += end - start;
        Ok(true)
    }
}
