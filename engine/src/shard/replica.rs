use super::*;

/// A write to copy to a peer from the backlog.
#[derive(Debug)]
pub enum CopyItem<I: Io> {
    Put(Box<ObjectReader<I>>),
    Delete { key: Vec<u8>, version: Version },
}

impl<I: Io> Shard<I> {
    /// Digests are kept when the shard has peers to compare with.
    pub(crate) fn digests_on(&self) -> bool {
        !self.cfg.peers.is_empty()
    }

    /// Replaces a key's contribution to its bucket digest.
    pub(crate) fn digest_apply(&self, key: &[u8], old: Held, new: Held) {
        if !self.digests_on() {
            return;
        }
        let b = crate::digest::bucket_of(key);
        let mut d = self.replica.digests.borrow_mut();
        for (v, tomb) in old.into_iter().chain(new) {
            d[b] ^= crate::digest::entry_hash(key, v, tomb);
        }
    }

    /// The shard's bucket digests (all zero when digests are off).
    pub fn digests(&self) -> Vec<u64> {
        self.replica.digests.borrow().clone()
    }

    /// Every current key of a bucket with its version, read from the records' headers.
    pub async fn bucket_keys(&self, bucket: usize) -> Result<Vec<crate::digest::KeyState>> {
        let exact = self.cfg.fingerprint_mask == u64::MAX;
        let locs: Vec<Loc> = {
            let ix = self.index.borrow();
            ix.main_entries()
                .filter(|(fp, _)| !exact || (*fp >> 52) as usize == bucket)
                .map(|(_, l)| l)
                .chain(
                    ix.overflow_entries()
                        .filter(|(k, _)| crate::digest::bucket_of(k) == bucket)
                        .map(|(_, l)| l),
                )
                .collect()
        };
        let mut out = Vec::new();
        for l in locs {
            // A record whose blob compaction removed meanwhile was moved: its copy was listed
            // or is compared at the next pass.
            let r = match self.read_header(l).await {
                Err(Error::Damaged { .. }) if self.blob(l.blob()).is_none() => continue,
                r => r?,
            };
            if let Ok((h, key, _)) = r {
                if crate::digest::bucket_of(&key) == bucket {
                    out.push(crate::digest::KeyState {
                        key,
                        version: h.version,
                        tombstone: h.is_tombstone(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Adds a committed record of this appliance's own writes to every peer's backlog.
    pub(crate) fn backlog_add(&self, h: &Header) {
        if h.version.origin != self.cfg.clock.origin() {
            return; // a copy of another appliance's write: its origin sends it to the others
        }
        let e = BacklogEntry::of(h);
        for b in self.replica.backlogs.borrow_mut().iter_mut() {
            b.add(e, self.cfg.backlog_records_max);
        }
    }

    /// Peer `peer` (an index into `cfg.peers`) holds the write with this sequence durably.
    pub fn backlog_confirm(&self, peer: usize, seq: u64) {
        if let Some(b) = self.replica.backlogs.borrow_mut().get_mut(peer) {
            b.confirm(seq);
        }
    }

    /// Up to `max` unconfirmed writes for `peer`, oldest first, created at or before
    /// `before_ms`; each stays reserved for the caller until confirmed or released.
    pub fn backlog_take(&self, peer: usize, max: usize, before_ms: u64) -> Vec<BacklogEntry> {
        self.replica.backlogs.borrow_mut().get_mut(peer).map(|b| b.take(max, before_ms)).unwrap_or_default()
    }

    /// A taken entry could not be sent: it will be taken again.
    pub fn backlog_release(&self, peer: usize, seq: u64) {
        if let Some(b) = self.replica.backlogs.borrow_mut().get_mut(peer) {
            b.release(seq);
        }
    }

    /// What `peer`'s backlog on this shard holds.
    pub fn backlog_stats(&self, peer: usize) -> BacklogStats {
        self.replica.backlogs.borrow().get(peer).map(|b| b.stats()).unwrap_or_default()
    }

    /// The write a backlog entry stands for, if it is still the key's newest here: a reader
    /// of the object, or a tombstone's key and version. None if it was superseded (the newer
    /// write has its own entry, or came from another appliance that sends it).
    pub async fn backlog_item(
        self: &Rc<Self>,
        e: &BacklogEntry,
        check: ReadCheck,
    ) -> Result<Option<CopyItem<I>>> {
        // One read: the whole record when it is small enough (its length is in the entry), so
        // learning the key costs no read of its own.
        let loc_hint = Loc::new(e.blob, e.offset, e.record_len, false);
        let Some((blob, buf, whole)) = self.first_read(loc_hint).await? else { return Ok(None) };
        let h = match Header::decode(&buf, &self.record_key) {
            Ok(h) if h.shard_id == self.id && h.blob_id == e.blob && h.offset == e.offset => h,
            _ => return Ok(None),
        };
        let key = h.key(&buf).to_vec();
        let fp = self.fp(&key);
        let current = {
            let ix = self.index.borrow();
            ix.overflow_get(&key).or_else(|| ix.main_get(fp))
        };
        let Some(loc) = current.filter(|l| l.blob() == e.blob && l.offset() == e.offset) else {
            return Ok(None);
        };
        if loc.is_tombstone() {
            return Ok(Some(CopyItem::Delete { key, version: h.version }));
        }
        match self.reader_from(&key, loc, blob, buf, whole, check).await? {
            Opened::Reader(r) => Ok(Some(CopyItem::Put(r))),
            Opened::OtherKey => Ok(None),
            Opened::Bad(..) => {
                // Damaged (or a bad transfer): one more checked read, as a GET makes, then
                // quarantine.
                self.counters.borrow_mut().checksum_errors += 1;
                Ok(self.open_checked(&key, loc, 1).await?.ok().flatten().map(|r| CopyItem::Put(Box::new(r))))
            }
        }
    }

    /// The key's newest write here, to copy to a peer: a verified reader of the object or the
    /// tombstone's version. None if the shard has no record of the key.
    pub async fn copy_item(self: &Rc<Self>, key: &[u8], check: ReadCheck) -> Result<Option<CopyItem<I>>> {
        validate(key, "")?;
        let fp = self.fp(key);
        for _ in 0..2 {
            let (_, old) = match self.resolve_slot(fp, key).await {
                Err(Error::Damaged { .. }) => continue, // moved by compaction meanwhile
                r => r?,
            };
            let Some(loc) = old else { return Ok(None) };
            let e = BacklogEntry {
                seq: 0,
                blob: loc.blob(),
                offset: loc.offset(),
                record_len: loc.record_len().unwrap_or(BLOCK),
                created_ms: 0,
            };
            match self.backlog_item(&e, check).await? {
                // The record moved (compaction) between the lookup and the read: look again.
                None if self.blob(loc.blob()).is_none() => continue,
                item => return Ok(item),
            }
        }
        Ok(None)
    }
}
