use super::*;

impl<I: Io> Shard<I> {
    /// A consistent snapshot of the index and blob table for a checkpoint.
    pub(crate) fn snapshot(&self) -> Checkpoint {
        let blobs = self.files.blobs.borrow();
        let ix = self.index.borrow();
        Checkpoint {
            shard_id: self.id,
            max_seq: self.writes.next_seq.get() - 1,
            max_hlc: self.cfg.clock.last(),
            digests: if self.digests_on() { self.replica.digests.borrow().clone() } else { Vec::new() },
            backlogs: self
                .cfg
                .peers
                .iter()
                .zip(self.replica.backlogs.borrow().iter())
                .map(|(name, b)| crate::checkpoint::CkptBacklog {
                    peer: name.clone(),
                    overflowed: b.overflowed,
                    entries: b.entries.values().copied().collect(),
                })
                .collect(),
            blobs: blobs
                .values()
                .map(|b| CkptBlob {
                    id: b.id,
                    dedicated: b.dedicated,
                    size_bytes: b.size_bytes,
                    tail: b.tail.get(),
                    scan_from: {
                        let from = b.scan_from();
                        b.hold_tail_above(from);
                        from
                    },
                })
                .collect(),
            in_flight: blobs
                .values()
                .flat_map(|b| b.in_flight.borrow().values().copied().collect::<Vec<_>>())
                .collect(),
            main: ix.main_entries().map(|(f, l)| (f, l.to_raw())).collect(),
            overflow: ix.overflow_entries().map(|(k, l)| (k.to_vec(), l.to_raw())).collect(),
            quarantine: self.damage.quarantine.borrow().clone(),
        }
    }

    /// Writes a checkpoint of the index (temporary file, fdatasync, rename, directory fsync)
    /// and removes older ones. Returns the checkpoint's size in bytes, or None if another
    /// checkpoint of this shard is being written.
    pub async fn checkpoint(&self) -> Result<Option<u64>> {
        if self.jobs.checkpointing.replace(true) {
            return Ok(None);
        }
        let r = self.write_checkpoint().await;
        self.jobs.checkpointing.set(false);
        self.jobs.checkpoint_done.notify_waiters();
        r.map(Some)
    }

    /// Whether enough was written since the last checkpoint that the core should write one
    /// (`checkpoint_every_records` / `checkpoint_every_bytes`), keeping startup scans short.
    pub fn checkpoint_due(&self) -> bool {
        let c = self.counters.borrow();
        c.since_checkpoint_records >= self.cfg.checkpoint_every_records
            || c.since_checkpoint_bytes >= self.cfg.checkpoint_every_bytes
    }

    async fn write_checkpoint(&self) -> Result<u64> {
        // The name index's memtable is flushed in the same instant as the snapshot, and before
        // the checkpoint is written: the runs never reflect fewer records than the checkpoint,
        // so recovery's scan past the checkpoint covers the name index too.
        let names = self.names.lock().await;
        let snap = self.snapshot();
        if self.names_ready.get() {
            let frozen = self.names.freeze(&names, self.names_watermark());
            self.names.write(&names, frozen).await?;
        }
        drop(names);
        let (records_then, bytes_then) = {
            let c = self.counters.borrow();
            (c.since_checkpoint_records, c.since_checkpoint_bytes)
        };
        let bytes = snap.encode();
        let name = ckpt_name(snap.max_seq);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let path = self.dir.join(&name);
        let _ = self.io.remove(&tmp).await;
        let file = self.io.open(&tmp, OpenMode::CreateNew).await.map_err(|e| self.disk_err(e))?;
        self.io.allocate(&file, bytes.len() as u64).await.map_err(|e| self.disk_err(e))?;
        let mut off = 0usize;
        while off < bytes.len() {
            let n = (bytes.len() - off).min(self.cfg.write_buf_bytes);
            let mut buf = self.io.alloc_buf(n).await;
            buf.clear();
            buf.extend_from(&bytes[off..off + n]);
            let (r, _) = self.io.write_at(&file, off as u64, buf).await;
            r.map_err(|e| self.disk_err(e))?;
            off += n;
        }
        self.io.sync_data(&file).await.map_err(|e| self.disk_err(e))?;
        self.io.rename(&tmp, &path).await.map_err(|e| self.disk_err(e))?;
        self.io.sync_dir(&self.dir).await.map_err(|e| self.disk_err(e))?;
        for old in self.io.list_dir(&self.dir).await.map_err(|e| self.disk_err(e))? {
            if parse_ckpt_name(&old).is_some_and(|s| s < snap.max_seq) {
                let _ = self.io.remove(&self.dir.join(&old)).await;
            }
        }
        self.io.sync_dir(&self.dir).await.map_err(|e| self.disk_err(e))?;
        let mut c = self.counters.borrow_mut();
        c.checkpoints += 1;
        // Records committed while the checkpoint was written still count towards the next.
        c.since_checkpoint_records -= records_then;
        c.since_checkpoint_bytes -= bytes_then;
        Ok(bytes.len() as u64)
    }
}
