use super::*;
use crate::now_ms;
use crate::write_memory::SMALL_WRITE_BUF_BYTES;

/// What a writer needs besides the record's shape: the slots and lock it holds, the index
/// slot, the key's previous state, the version and creation time it writes, and (for a move by
/// compaction) the record it copies.
pub(crate) struct WriterStart<I: Io> {
    pub(crate) permit: OwnedSemaphorePermit,
    pub(crate) lock: KeyLock<I>,
    pub(crate) slot: Slot,
    pub(crate) held: Held,
    pub(crate) version: Version,
    pub(crate) created_ms: u64,
    pub(crate) moved_from: Option<(Loc, u64)>,
    /// Whether the write joins the peers' backlogs (not for a move between disks).
    pub(crate) backlog: bool,
}

/// `ENOSPC` on Linux.
const ENOSPC: i32 = 28;

/// How a write is stamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// A write accepted here: a new version of this node's clock.
    Local,
    /// A copy of a write accepted elsewhere, with that write's version.
    Given(Version),
    /// A write moved here from another disk of this node (rebalancing, draining): like
    /// `Given`, but it joins no peer backlog (the peers were sent it when it was written, or
    /// the disk it came from still says they were not).
    Moved(Version),
}

/// The result of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteDone {
    /// An object existed before.
    pub existed: bool,
    /// The tombstone's version, if one was written.
    pub version: Option<Version>,
    /// The tombstone's sequence, if one was written.
    pub seq: Option<u64>,
}

/// The result of a committed PUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutDone {
    pub seq: u64,
    /// The write's version.
    pub version: Version,
    /// XXH3-128 of the content (the ETag).
    pub digest: [u8; 16],
    pub record_len: u64,
}

/// A PUT in progress. Dropping it without `finish` abandons the write: the object is not
/// stored and the reserved space is dead (recovery sees a record without a footer). Data
/// blocks are written strictly in order and the footer last, each write waiting for the one
/// before, which is what lets recovery tell an incomplete record from a damaged one.
/// [`PutWriter::abort`] also marks the space void on disk.
#[derive(Debug)]
pub struct PutWriter<I: Io> {
    shard: Rc<Shard<I>>,
    _permit: OwnedSemaphorePermit,
    _lock: KeyLock<I>,
    blob: Rc<BlobFile<I>>,
    header: Header,
    key: Vec<u8>,
    attrs: Attrs,
    fp: u64,
    slot: Slot,
    /// What the key held before (version, tombstone), when known: its digest is replaced.
    held: Held,
    /// A move by compaction: the record this one copies (location, sequence).
    moved_from: Option<(Loc, u64)>,
    /// Whether the write joins the peers' backlogs.
    backlog: bool,
    buf: Option<AlignedBuf>,
    /// The previous buffer's write, submitted and not yet awaited: the next buffer fills while
    /// it is written (one write in flight at most; its buffer comes back as the next spare).
    pending: Option<PendingWrite>,
    written: u64,
    sums: DataSums,
    finished: bool,
    broken: bool,
    /// Bytes of the reservation this writer still counts in `Shard::unfilled`.
    unfilled: u64,
    /// The abandoned reservation's space was given back (no dead bytes left behind).
    given_back: bool,
    /// Bytes of the node's write memory budget this writer's buffers hold.
    memory: u64,
    /// The budget was spent when this writer asked for a buffer (counted once).
    squeezed: bool,
}

/// How a copy from elsewhere (a peer, a compaction move) is checked before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyCheck {
    /// The whole object's XXH3-128, computed here over every byte.
    Digest([u8; 16]),
    /// The chunk CRC32Cs the sender stored (see [`PutWriter::check_chunks_only`]), and the
    /// digest to store with them.
    Chunks { digest: [u8; 16], crcs: Vec<u32> },
    /// The digest the caller computed over the very bytes it wrote (a front end hashes the
    /// body as it passes, on its own thread): stored as it is. With
    /// [`PutWriter::check_chunks_only`] the writer computes only the chunk CRCs; without it,
    /// the digest is checked like [`CopyCheck::Digest`].
    Given([u8; 16]),
}

/// A buffer's write in flight (see `PutWriter::flush`).
struct PendingWrite(WriteFuture);

type WriteFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<AlignedBuf>>>>;

impl std::fmt::Debug for PendingWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingWrite")
    }
}

impl<I: Io> PutWriter<I> {
    /// Submits the full buffer's write and returns with an empty buffer to fill, once the
    /// previous write (if any) is done: at most one write in flight, whose failure the next
    /// call (or `settle`) reports. `last`: no more data follows (no buffer is needed).
    async fn flush(&mut self, last: bool) -> Result<()> {
        let buf = self.buf.take().expect("writer holds its buffer");
        let n = buf.len() as u64;
        let at = self.header.offset + self.written;
        assert!(self.written + n <= self.header.record_len, "write past the reservation");
        let spare = self.settle().await?;
        let (shard, blob) = (self.shard.clone(), self.blob.clone());
        let write: WriteFuture = Box::pin(async move { shard.write_fenced(&blob, at, buf).await });
        self.pending = Some(PendingWrite(crate::scan::submit_now(write)));
        self.written += n;
        self.release_unfilled(n);
        if !last {
            // A second buffer no larger than what is left of the record (a 1 MiB object
            // leaves only its footer after its first buffer).
            let rest = (self.header.record_len - self.written).max(BLOCK) as usize;
            let mut next = match spare {
                Some(b) => b,
                None => match self.shard.write_buf_room(self.shard.cfg.write_buf_bytes.min(rest), false) {
                    Some((size, counted)) => {
                        self.memory += counted;
                        self.shard.io.alloc_buf(size).await
                    }
                    // Past the node's write memory: no second buffer; the one just submitted
                    // comes back when its write is done.
                    None => {
                        if !std::mem::replace(&mut self.squeezed, true) {
                            self.shard.cfg.write_memory.as_ref().expect("a budget refused").note_refused();
                        }
                        self.settle().await?.expect("a write was just submitted")
                    }
                },
            };
            next.clear();
            self.buf = Some(next);
        }
        Ok(())
    }

    /// Stops counting `n` bytes of the reservation as unfilled.
    fn release_unfilled(&mut self, n: u64) {
        let n = n.min(self.unfilled);
        self.unfilled -= n;
        self.shard.writes.unfilled.set(self.shard.writes.unfilled.get().saturating_sub(n));
    }

    /// Waits for the write in flight, if any; returns its buffer.
    async fn settle(&mut self) -> Result<Option<AlignedBuf>> {
        match self.pending.take() {
            Some(w) => w.0.await.map(Some),
            None => Ok(None),
        }
    }

    async fn append(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let buf = self.buf.as_mut().expect("writer holds its buffer");
            let n = buf.extend_from(data);
            data = &data[n..];
            if buf.len() == buf.capacity() {
                self.flush(false).await?;
            }
        }
        Ok(())
    }

    /// Appends body bytes. Fails (and the PUT is abandoned) if more than the announced length
    /// arrives or the disk fails.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.usable()?;
        let got = self.sums.total() + data.len() as u64;
        if got > self.header.object_len {
            self.broken = true;
            return Err(Error::BodyLength { expected: self.header.object_len, got });
        }
        self.sums.update(data);
        let r = self.append(data).await;
        self.broken |= r.is_err();
        r
    }

    /// Room for body bytes in the writer's aligned buffer, at most what the object still
    /// needs: a reader can receive straight into it (then [`PutWriter::commit_spare`]) and
    /// save a copy. Empty when the object is complete.
    pub fn spare(&mut self) -> &mut [u8] {
        let left = self.header.object_len - self.sums.total();
        let buf = self.buf.as_mut().expect("writer holds its buffer");
        let start = buf.len();
        let n = ((buf.capacity() - start) as u64).min(left) as usize;
        &mut buf.spare_all()[start..start + n]
    }

    /// Takes the first `n` bytes of [`PutWriter::spare`] as body bytes (checksummed like
    /// [`PutWriter::write`]), writing the buffer out when it is full.
    pub async fn commit_spare(&mut self, n: usize) -> Result<()> {
        self.usable()?;
        let buf = self.buf.as_mut().expect("writer holds its buffer");
        let start = buf.len();
        assert!(start + n <= buf.capacity(), "commit beyond the spare room");
        assert!(self.sums.total() + n as u64 <= self.header.object_len, "commit beyond the object");
        self.sums.update(&buf.spare_all()[start..start + n]);
        buf.set_len(start + n);
        if buf.len() == buf.capacity() {
            let r = self.flush(false).await;
            self.broken |= r.is_err();
            r?;
        }
        Ok(())
    }

    /// After a failed write the record can't be completed: every later call fails too.
    fn usable(&self) -> Result<()> {
        if !self.broken {
            return Ok(());
        }
        self.shard.check_writable()?;
        Err(Error::Invalid("continuation of a failed write"))
    }

    /// Bytes of body received so far.
    pub fn received(&self) -> u64 {
        self.sums.total()
    }

    /// Completes the record, waits until it is durable, and makes it visible.
    pub async fn finish(self) -> Result<PutDone> {
        self.finish_expecting(None).await
    }

    /// Like [`PutWriter::finish`], but when `digest` is given (a copy from a peer names the
    /// content's XXH3-128), the record is completed only if the bytes received match it; on a
    /// mismatch nothing is stored and the call fails.
    pub async fn finish_expecting(self, digest: Option<[u8; 16]>) -> Result<PutDone> {
        self.finish_checked(digest.map(CopyCheck::Digest)).await
    }

    /// Checks a copy by the chunk CRC32Cs its sender stored with it instead of the whole
    /// object's digest (call before any data): the CRCs are computed here anyway, for the
    /// footer, so each byte is passed over once instead of twice. Finish with
    /// [`PutWriter::finish_copy`] and [`CopyCheck::Chunks`]: the digest is then taken as given
    /// once every chunk matches, which is what a GET checks of every chunk it serves (and a
    /// scrub checks the digest too).
    pub fn check_chunks_only(&mut self) {
        self.sums.crcs_only();
    }

    /// Completes a copy only if its content matches `check`; on a mismatch nothing is stored
    /// and the call fails.
    pub async fn finish_copy(self, check: CopyCheck) -> Result<PutDone> {
        self.finish_checked(Some(check)).await
    }

    async fn finish_checked(mut self, check: Option<CopyCheck>) -> Result<PutDone> {
        self.usable()?;
        if self.sums.total() != self.header.object_len {
            return Err(Error::BodyLength { expected: self.header.object_len, got: self.sums.total() });
        }
        let sums = self.sums.take();
        let hashed = sums.hashing();
        let mut footer = sums.finish(self.header.seq);
        let matches = match &check {
            None => hashed,
            Some(CopyCheck::Digest(d)) => hashed && *d == footer.digest,
            Some(CopyCheck::Given(d)) => !hashed || *d == footer.digest,
            Some(CopyCheck::Chunks { digest, crcs }) => {
                *crcs == footer.chunk_crcs && (!hashed || *digest == footer.digest)
            }
        };
        if !matches {
            self.broken = true;
            return Err(Error::Invalid("the content does not match the checksums it was sent with"));
        }
        if let Some(CopyCheck::Chunks { digest, .. } | CopyCheck::Given(digest)) = check {
            footer.digest = digest;
        }
        self.append(&footer.encode()).await?;
        if let Some(b) = self.buf.as_mut() {
            if !b.is_empty() {
                b.pad_to_alignment();
                self.flush(true).await?;
            }
        }
        // Every write done (the footer's last) before the sync that makes them durable.
        self.settle().await?;
        assert_eq!(self.written, self.header.record_len, "record length mismatch");
        self.shard.commit(&self.blob).await?;
        self.blob.in_flight.borrow_mut().remove(&self.header.offset);
        self.finished = true;
        self.release_unfilled(u64::MAX);
        let loc = Loc::new(self.blob.id, self.header.offset, self.header.record_len, false);
        if let Some((from, old_seq)) = self.moved_from {
            self.shard.switch_moved(self.slot, self.fp, &self.key, from, old_seq, &self.header);
            return Ok(PutDone {
                seq: self.header.seq,
                version: self.header.version,
                digest: footer.digest,
                record_len: self.header.record_len,
            });
        }
        self.shard.commit_index(self.slot, self.fp, &self.key, loc, self.header.record_len);
        self.shard.digest_apply(&self.key, self.held, Some((self.header.version, false)));
        let h = &self.header;
        let name = Name::live(h.version, h.object_len, h.created_ms, footer.digest, &self.attrs);
        self.shard.names_apply(&self.key, name);
        if self.backlog {
            self.shard.backlog_add(&self.header);
        }
        self.shard.counters.borrow_mut().puts += 1;
        Ok(PutDone {
            seq: self.header.seq,
            version: self.header.version,
            digest: footer.digest,
            record_len: self.header.record_len,
        })
    }

    /// Abandons the write. Its space is given back when it can be (a dedicated blob is
    /// removed; a reservation at the open blob's tail is reused, `Shard::give_back`), else
    /// marked void on disk (best effort: if the mark is lost in a crash, recovery reports the
    /// incomplete record instead) for compaction, or for the tail to come back over it.
    pub async fn abort(mut self) -> Result<()> {
        // The void mark must land after the header write it overrides, never before it; and
        // no write of this record may still be in flight when its space is given back.
        let spare = self.settle().await;
        if spare.is_ok() && self.shard.give_back(&self.blob, &self.header).await? {
            self.given_back = true;
            return Ok(());
        }
        let mut h = self.header.clone();
        h.flags |= FLAG_VOID;
        let mut buf = match (self.buf.take(), spare) {
            (Some(b), _) | (None, Ok(Some(b))) => b,
            _ => AlignedBuf::new(BLOCK as usize),
        };
        buf.clear();
        buf.set_len(h.data_start() as usize);
        h.encode(&self.key, &self.attrs, buf.as_mut_slice(), &self.shard.record_key);
        buf.pad_to_alignment();
        buf.set_len(BLOCK as usize);
        let r = self.shard.write_fenced(&self.blob, h.offset, buf).await;
        if r.is_ok() && !self.blob.dedicated {
            self.blob.voided.borrow_mut().insert(h.offset, h.record_len);
        }
        r.map(|_| ())
    }
}

impl<I: Io> Drop for PutWriter<I> {
    fn drop(&mut self) {
        if let Some(m) = &self.shard.cfg.write_memory {
            m.give(std::mem::take(&mut self.memory));
        }
        if self.finished {
            return;
        }
        self.blob.in_flight.borrow_mut().remove(&self.header.offset);
        self.release_unfilled(u64::MAX);
        let mut c = self.shard.counters.borrow_mut();
        c.aborted += 1;
        if !self.given_back {
            c.dead_bytes += self.header.record_len;
        }
    }
}

impl<I: Io> Shard<I> {
    /// Where `key`'s entry lives and what it is now. A fingerprint already in the main table
    /// for a different key sends this key to the overflow map; telling them apart costs one
    /// header read, on overwrites only.
    pub(crate) async fn resolve_slot(&self, fp: u64, key: &[u8]) -> Result<(Slot, Option<Loc>)> {
        self.resolve(fp, key).await.map(|(slot, old, _)| (slot, old))
    }

    /// [`Shard::resolve_slot`], plus what the header it had to read says (Some(held) when it
    /// read one: the version and tombstone flag, None if unreadable), so writers need not
    /// read it again.
    pub(super) async fn resolve(&self, fp: u64, key: &[u8]) -> Result<(Slot, Option<Loc>, Option<Held>)> {
        if let Some(l) = self.index.borrow().overflow_get(key) {
            return Ok((Slot::Overflow, Some(l), None));
        }
        let Some(l) = self.index.borrow().main_get(fp) else {
            return Ok((Slot::Main, None, None));
        };
        let mut header = self.read_header(l).await;
        if header.as_ref().is_err_and(read_failed) {
            header = self.read_header(l).await; // once more: it may have been the transfer
        }
        match header? {
            Ok((_, k, _)) if k != key => Ok((Slot::Overflow, None, None)),
            Ok((h, _, _)) => Ok((Slot::Main, Some(l), Some(Some((h.version, h.is_tombstone()))))),
            // An unreadable record we can't attribute: replace it.
            Err(_) => Ok((Slot::Main, Some(l), Some(None))),
        }
    }

    /// [`Shard::resolve`] for a write: when the device can't read the record the key's
    /// fingerprint maps to, whose it is is not known. A key already marked bad there replaces
    /// it (its repair); any other key goes to the overflow map, which lookups ask first: another
    /// key's entry is never touched because its record can't be read at the moment.
    pub(crate) async fn resolve_for_write(
        &self,
        fp: u64,
        key: &[u8],
    ) -> Result<(Slot, Option<Loc>, Option<Held>)> {
        match self.resolve(fp, key).await {
            Err(e) if read_failed(&e) => {
                let Some(l) = self.index.borrow().main_get(fp) else { return Err(e) };
                let ours =
                    self.damage.quarantine.borrow().iter().any(|q| {
                        q.key.as_deref() == Some(key) && q.blob == l.blob() && q.offset == l.offset()
                    });
                Ok(if ours { (Slot::Main, Some(l), Some(None)) } else { (Slot::Overflow, None, None) })
            }
            r => r,
        }
    }

    /// Reserves `len` bytes for a record: in the open blob, a new blob, or a dedicated one.
    ///
    /// The last `tombstone_reserve_bytes` of the open blob are kept for tombstones, so deletes
    /// still work when the shard has no room for another blob.
    ///
    /// One blob's worth of the shard's room is kept for compaction (`compacting`): it needs
    /// somewhere to copy live records before it can free a blob, so writes stop short of it.
    pub(crate) async fn reserve(
        &self,
        len: u64,
        tombstone: bool,
        compacting: bool,
    ) -> Result<(Rc<BlobFile<I>>, u64, u64)> {
        let _g = self.writes.reserve_lock.lock().await;
        self.reserve_held(len, tombstone, compacting).await
    }

    /// Reserves records of `lens` one after another, with no other reservation between them:
    /// records that land in one blob are contiguous (a new blob starts where the open one has
    /// no room). Stops at the first that fails: the reservations made so far, and its error.
    pub(crate) async fn reserve_all(
        &self,
        lens: &[u64],
    ) -> (Vec<(Rc<BlobFile<I>>, u64, u64)>, Option<Error>) {
        let _g = self.writes.reserve_lock.lock().await;
        let mut out = Vec::with_capacity(lens.len());
        for &len in lens {
            match self.reserve_held(len, false, false).await {
                Ok(r) => out.push(r),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    /// [`Shard::reserve`] with `reserve_lock` held.
    async fn reserve_held(
        &self,
        len: u64,
        tombstone: bool,
        compacting: bool,
    ) -> Result<(Rc<BlobFile<I>>, u64, u64)> {
        self.check_writable()?;
        let open = self.files.open_blob.get().and_then(|id| self.blob(id));
        let keep = if tombstone { 0 } else { self.cfg.tombstone_reserve_bytes };
        let blob = match open {
            Some(b) if b.room() >= len + keep => b,
            _ if len > self.cfg.blob_size_bytes / 4 => self.create_blob(len, true, compacting).await?,
            open => match self.create_blob(self.cfg.blob_size_bytes, false, compacting).await {
                Ok(b) => {
                    if let Some(old) = self.files.open_blob.replace(Some(b.id)).and_then(|id| self.blob(id)) {
                        old.sealed.set(true);
                    }
                    b
                }
                Err(Error::NoSpace { .. }) if tombstone && open.as_ref().is_some_and(|b| b.room() >= len) => {
                    open.expect("checked")
                }
                Err(e) => return Err(e),
            },
        };
        // Not into a region being zeroed (shard/zero_ahead.rs): wait for it, and zero no more
        // of this blob (writes go faster there than zeroing helps them).
        // (One thread: nothing runs between the check and the wait's registration.)
        while blob.zeroing.get().is_some_and(|start| blob.tail.get() + len > start) {
            blob.zero_stopped.set(true);
            self.counters.borrow_mut().zero_ahead_waits += 1;
            blob.zero_done.notified().await;
            self.check_writable()?;
        }
        let offset = blob.tail.get();
        blob.tail.set(offset + len);
        let seq = self.writes.next_seq.get();
        self.writes.next_seq.set(seq + 1);
        blob.in_flight.borrow_mut().insert(offset, seq);
        Ok((blob, offset, seq))
    }

    /// Gives the space of an abandoned reservation (its record `h`, no write of it in flight)
    /// back, if it can: a dedicated blob's file is removed (a crash first leaves it to
    /// recovery, which removes a dedicated blob whose one record never completed); a
    /// reservation that ends at the open blob's tail lowers the tail to its start, then over
    /// the abandoned ones before it (`BlobFile::voided`), never below `rewind_floor` (what a
    /// checkpoint told recovery to rescan from, what a scrub reads). Each region given back has
    /// its first block zeroed before anything can be reserved there: recovery then reads it as
    /// space never written, not as the abandoned record (whose length would carry its scan
    /// past records written there since). Returns whether the space was given back.
    pub(crate) async fn give_back(&self, blob: &Rc<BlobFile<I>>, h: &Header) -> Result<bool> {
        // A fenced shard writes nothing more: its abandoned space stays as it is.
        if self.cfg.read_only || self.check_writable().is_err() {
            return Ok(false);
        }
        let _g = self.writes.reserve_lock.lock().await;
        if blob.dedicated {
            if h.offset != 0 || self.files.blobs.borrow().get(&blob.id).is_none() {
                return Ok(false);
            }
            blob.in_flight.borrow_mut().remove(&0);
            self.files.blobs.borrow_mut().remove(&blob.id);
            blob.file.borrow_mut().take();
            self.io.remove(&blob.path).await.map_err(|e| self.disk_err(e))?;
            return Ok(true);
        }
        let open = self.files.open_blob.get() == Some(blob.id) && !blob.sealed.get();
        if !open || blob.tail.get() != h.offset + h.record_len || h.offset < blob.rewind_floor.get() {
            return Ok(false);
        }
        // The tail first (a checkpoint snapshot taken while the block is zeroed then tells
        // recovery to scan from here), then the block; no reservation can come in between.
        blob.in_flight.borrow_mut().remove(&h.offset);
        blob.tail.set(h.offset);
        self.zero_block(blob, h.offset).await?;
        loop {
            let last = blob.voided.borrow().iter().next_back().map(|(&o, &l)| (o, l));
            let Some((o, l)) =
                last.filter(|&(o, l)| o + l == blob.tail.get() && o >= blob.rewind_floor.get())
            else {
                break;
            };
            blob.voided.borrow_mut().remove(&o);
            blob.tail.set(o);
            self.zero_block(blob, o).await?;
            let mut c = self.counters.borrow_mut();
            c.dead_bytes = c.dead_bytes.saturating_sub(l);
        }
        if blob.tail.get() == 0 {
            blob.first_seq.set(None);
        }
        Ok(true)
    }

    /// Writes a block of zeros at `offset` of `blob`.
    async fn zero_block(&self, blob: &BlobFile<I>, offset: u64) -> Result<()> {
        let mut buf = self.io.alloc_buf(BLOCK as usize).await;
        buf.clear();
        buf.set_len(BLOCK as usize);
        buf.as_mut_slice().fill(0);
        self.write_fenced(blob, offset, buf).await.map(|_| ())
    }

    async fn create_blob(&self, size: u64, dedicated: bool, compacting: bool) -> Result<Rc<BlobFile<I>>> {
        let id = self.files.next_blob_id.get();
        if id > BLOB_ID_MAX {
            return Err(Error::NoSpace { shard: self.id });
        }
        let used: u64 = self.files.blobs.borrow().values().map(|b| b.size_bytes).sum();
        let headroom = if compacting { 0 } else { self.compaction_headroom() };
        if used.saturating_add(size).saturating_add(headroom) > self.cfg.shard_size_max_bytes {
            return Err(Error::NoSpace { shard: self.id });
        }
        self.files.next_blob_id.set(id + 1);
        let path = self.dir.join(blob_name(id, dedicated));
        let file = self.io.open(&path, OpenMode::CreateNew).await.map_err(|e| self.disk_err(e))?;
        if let Err(e) = self.io.allocate(&file, size).await {
            let _ = self.io.remove(&path).await;
            return Err(match e.raw_os_error() {
                Some(ENOSPC) => Error::NoSpace { shard: self.id },
                _ => self.disk_err(e),
            });
        }
        // The blob's size and name must be durable before any record in it is acknowledged.
        if let Err(e) = self.io.sync_data(&file).await {
            return Err(self.fence(format!("fdatasync of new blob {id}: {e}")));
        }
        if let Err(e) = self.io.sync_dir(&self.dir).await {
            return Err(self.fence(format!("fsync of shard directory: {e}")));
        }
        let blob = Rc::new(BlobFile::new(id, file, path, size, dedicated, 0));
        self.files.blobs.borrow_mut().insert(id, blob.clone());
        self.note_opened();
        self.trim_open_files(id);
        Ok(blob)
    }

    /// Room kept for compaction: one regular blob, unless the shard is too small to spare it
    /// (fewer than four blobs' room).
    pub(crate) fn compaction_headroom(&self) -> u64 {
        let size = self.cfg.blob_size_bytes;
        if self.cfg.shard_size_max_bytes / size >= 4 {
            size
        } else {
            0
        }
    }

    /// Starts a streaming PUT of `object_len` bytes, stamped with a new version of this
    /// node's clock. Write the body with [`PutWriter::write`], then [`PutWriter::finish`]; the
    /// object exists only after `finish` returns Ok.
    pub async fn put(self: &Rc<Self>, key: &[u8], attrs: &Attrs, object_len: u64) -> Result<PutWriter<I>> {
        Ok(self.put_stamped(key, attrs, object_len, Stamp::Local).await?.expect("a local stamp is newest"))
    }

    /// Starts a streaming PUT with a given stamp. With [`Stamp::Given`] (a copy of another
    /// appliance's write) it returns `None`, writing nothing, when the shard already holds
    /// this version of the key or a newer one (an object or a tombstone): the newest write
    /// wins whatever order copies arrive in.
    pub async fn put_stamped(
        self: &Rc<Self>,
        key: &[u8],
        attrs: &Attrs,
        object_len: u64,
        stamp: Stamp,
    ) -> Result<Option<PutWriter<I>>> {
        validate(key, &attrs.content_type)?;
        if object_len > self.cfg.object_size_max_bytes {
            return Err(Error::TooLarge { len: object_len, max: self.cfg.object_size_max_bytes });
        }
        self.check_writable()?;
        // The key's lock first, then a write slot (every writer takes them in this order, so
        // none waits for a lock while holding a slot): writes queued behind one key (a slow
        // body holds its key's lock until it is complete) do not take the disk's slots from
        // writes of other keys.
        let fp = self.fp(key);
        let lock = self.lock_key(fp).await;
        let permit = self.write_slot().await;
        let (slot, old, known) = self.resolve_for_write(fp, key).await?;
        let (Some(version), held) = self.stamp(stamp, key, old, known).await? else {
            return Ok(None);
        };
        let backlog = !matches!(stamp, Stamp::Moved(_));
        let w = WriterStart {
            permit,
            lock,
            slot,
            held,
            version,
            created_ms: now_ms(),
            moved_from: None,
            backlog,
        };
        self.start_writer(key, attrs, object_len, w).await.map(Some)
    }

    /// Reserves a record and starts its writer (a PUT, or a move by compaction).
    pub(crate) async fn start_writer(
        self: &Rc<Self>,
        key: &[u8],
        attrs: &Attrs,
        object_len: u64,
        w: WriterStart<I>,
    ) -> Result<PutWriter<I>> {
        let rec_len = record::record_len(key.len(), attrs.stored_len(), object_len);
        // A client's write (not a move) counts against the bytes reserved and not yet filled.
        let counted = if w.moved_from.is_none() { rec_len } else { 0 };
        let unfilled = self.writes.unfilled.get();
        if counted > 0 && unfilled.saturating_add(counted) > self.cfg.unfilled_bytes_max {
            return Err(Error::Busy {
                shard: self.id,
                what: format!(
                    "{unfilled} bytes are reserved by writes whose bodies have not arrived (at most {})",
                    self.cfg.unfilled_bytes_max
                ),
            });
        }
        // Counted before the reservation's wait, so writes starting together can't all pass.
        self.writes.unfilled.set(unfilled + counted);
        let reserved = self.reserve(rec_len, false, w.moved_from.is_some()).await;
        let (blob, offset, seq) = reserved.inspect_err(|_| {
            self.writes.unfilled.set(self.writes.unfilled.get().saturating_sub(counted));
        })?;
        let header = Header {
            flags: if attrs.digest == DigestKind::Md5 { FLAG_MD5 } else { 0 },
            shard_id: self.id,
            blob_id: blob.id,
            offset,
            seq,
            created_ms: w.created_ms,
            object_len,
            record_len: rec_len,
            key_len: key.len() as u16,
            content_type_len: attrs.content_type.len() as u8,
            headers_len: attrs.encoded_headers().len() as u16,
            version: w.version,
        };
        // No larger than the record (a 4 KiB object needs 8 KiB, not a full buffer).
        let want = self.cfg.write_buf_bytes.min(rec_len.next_multiple_of(BLOCK) as usize);
        let (size, memory) = self.write_buf_room(want, true).expect("a first buffer is never refused");
        let squeezed = size < want;
        let mut buf = self.io.alloc_buf(size).await;
        buf.clear();
        let ds = header.data_start() as usize;
        buf.set_len(ds);
        header.encode(key, attrs, buf.as_mut_slice(), &self.record_key);
        Ok(PutWriter {
            shard: self.clone(),
            _permit: w.permit,
            _lock: w.lock,
            blob,
            header,
            key: key.to_vec(),
            attrs: attrs.clone(),
            fp: self.fp(key),
            slot: w.slot,
            held: w.held,
            moved_from: w.moved_from,
            backlog: w.backlog,
            buf: Some(buf),
            pending: None,
            written: 0,
            sums: DataSums::new(attrs.digest),
            finished: false,
            broken: false,
            unfilled: counted,
            given_back: false,
            memory,
            squeezed,
        })
    }

    /// The size of a write buffer to allocate for `want` bytes and the bytes of the node's
    /// write memory it takes: the full size within the budget; past it a small buffer for a
    /// write's `first` (counted as refused), and None for its second (the writer reuses its
    /// one buffer).
    pub(crate) fn write_buf_room(&self, want: usize, first: bool) -> Option<(usize, u64)> {
        let Some(m) = &self.cfg.write_memory else { return Some((want, 0)) };
        if want <= SMALL_WRITE_BUF_BYTES {
            return Some((want, 0));
        }
        if m.try_take(want as u64) {
            return Some((want, want as u64));
        }
        if !first {
            return None;
        }
        m.note_refused();
        Some((SMALL_WRITE_BUF_BYTES, 0))
    }

    /// The version a write gets: a new stamp for a local write; for a copy, its own stamp if
    /// it is newer than what the shard holds for the key (`old`), else None. Also returns what
    /// the shard holds (read when it is needed: for a copy, or to keep digests).
    pub(crate) async fn stamp(
        &self,
        stamp: Stamp,
        key: &[u8],
        old: Option<Loc>,
        known: Option<Held>,
    ) -> Result<(Option<Version>, Held)> {
        let need_old = !matches!(stamp, Stamp::Local) || self.digests_on();
        let held = match (known, old) {
            (Some(h), _) => h,
            (None, Some(l)) if need_old => {
                self.read_header(l).await?.ok().map(|(h, _, _)| (h.version, h.is_tombstone()))
            }
            (None, _) => None,
        };
        match stamp {
            Stamp::Local => Ok((Some(self.cfg.clock.now()), held)),
            Stamp::Given(v) | Stamp::Moved(v) => {
                self.cfg.clock.observe(v.hlc);
                // An unreadable or corrupt record holds nothing worth keeping over a good copy,
                // even an older one: that is how a damaged record is repaired. One marked bad
                // after a read error whose header reads keeps its version (the error may have
                // passed: an older copy must not replace it; one of the same version repairs it).
                let quarantined = self.damage.quarantined_keys.borrow().contains_key(key);
                let corrupt =
                    quarantined
                        && self.damage.quarantine.borrow().iter().any(|q| {
                            q.key.as_deref() == Some(key) && q.reason != QuarantineReason::ReadError
                        });
                // A copy of the same version repairs a record marked bad.
                let take = match held {
                    Some(h) if !corrupt => v > h.0 || (quarantined && v == h.0),
                    _ => v > Version::NONE,
                };
                Ok((take.then_some(v), held))
            }
        }
    }

    /// Stores a whole object from memory (a convenience over [`Shard::put`]).
    pub async fn put_bytes(self: &Rc<Self>, key: &[u8], content_type: &str, data: &[u8]) -> Result<PutDone> {
        let mut w = self.put(key, &Attrs::from(content_type), data.len() as u64).await?;
        w.write(data).await?;
        w.finish().await
    }

    /// Applies a committed record to the index and the counters.
    pub(crate) fn commit_index(&self, slot: Slot, fp: u64, key: &[u8], loc: Loc, rec_len: u64) {
        {
            let mut c = self.counters.borrow_mut();
            c.since_checkpoint_records += 1;
            c.since_checkpoint_bytes += rec_len;
        }
        let old = self.index.borrow_mut().set(slot, fp, key, loc);
        let mut c = self.counters.borrow_mut();
        if !loc.is_tombstone() {
            c.live_bytes += rec_len;
        } else {
            c.dead_bytes += rec_len;
        }
        if let Some(o) = old {
            let olen = o.record_len().unwrap_or(4 << 30);
            if !o.is_tombstone() {
                c.live_bytes = c.live_bytes.saturating_sub(olen);
                c.dead_bytes += olen;
            }
        }
        drop(c);
        if self.damage.quarantined_keys.borrow_mut().remove(key).is_some() {
            // A newer record supersedes the damaged one: nothing of it needs repair any more.
            self.damage.quarantine.borrow_mut().retain(|q| q.key.as_deref() != Some(key));
        }
    }

    /// Deletes a key with a tombstone record. Returns whether an object existed.
    pub async fn delete(self: &Rc<Self>, key: &[u8]) -> Result<bool> {
        Ok(self.delete_stamped(key, Stamp::Local, false).await?.existed)
    }

    /// Deletes a key with a tombstone stamped as `stamp` says. A local delete of a key the
    /// shard does not hold writes a tombstone only if `always` (a replica set needs it, so the
    /// delete reaches peers that hold the key); a copy of another appliance's delete writes
    /// one whenever it is newer than what the shard holds, so an older copy arriving later
    /// can't resurrect the object.
    pub async fn delete_stamped(
        self: &Rc<Self>,
        key: &[u8],
        stamp: Stamp,
        always: bool,
    ) -> Result<DeleteDone> {
        validate(key, "")?;
        self.check_writable()?;
        let fp = self.fp(key);
        let _lock = self.lock_key(fp).await;
        let _permit = self.write_slot().await;
        // A delete whose key's record can't be read fails (the caller retries): whether the
        // key exists, and so whether a tombstone must shadow it, is not known.
        let (slot, old, known) = self.resolve(fp, key).await?;
        let quarantined = self.damage.quarantined_keys.borrow().contains_key(key);
        let existed = old.is_some_and(|l| !l.is_tombstone());
        let local = matches!(stamp, Stamp::Local);
        if local && !existed && !quarantined && !always {
            return Ok(DeleteDone { existed, version: None, seq: None });
        }
        let (Some(version), held) = self.stamp(stamp, key, old, known).await? else {
            return Ok(DeleteDone { existed, version: None, seq: None });
        };
        let header = self.write_tombstone(key, version, now_ms(), false).await?;
        let rec_len = header.record_len;
        self.commit_index(slot, fp, key, Loc::new(header.blob_id, header.offset, rec_len, true), rec_len);
        self.digest_apply(key, held, Some((version, true)));
        self.names_apply(key, Name::tombstone(version, header.created_ms));
        if !matches!(stamp, Stamp::Moved(_)) {
            self.backlog_add(&header);
        }
        self.counters.borrow_mut().deletes += 1;
        Ok(DeleteDone { existed, version: Some(version), seq: Some(header.seq) })
    }

    /// Writes a durable tombstone record (the caller holds the key's lock and changes the
    /// index); returns its header.
    pub(crate) async fn write_tombstone(
        &self,
        key: &[u8],
        version: Version,
        created_ms: u64,
        compacting: bool,
    ) -> Result<Header> {
        let rec_len = record::record_len(key.len(), 0, 0);
        let (blob, offset, seq) = self.reserve(rec_len, true, compacting).await?;
        let header = Header {
            flags: FLAG_TOMBSTONE,
            shard_id: self.id,
            blob_id: blob.id,
            offset,
            seq,
            created_ms,
            object_len: 0,
            record_len: rec_len,
            key_len: key.len() as u16,
            content_type_len: 0,
            headers_len: 0,
            version,
        };
        let mut buf = self.io.alloc_buf(rec_len as usize).await;
        buf.clear();
        let ds = header.data_start() as usize;
        buf.set_len(ds);
        header.encode(key, &Attrs::default(), buf.as_mut_slice(), &self.record_key);
        buf.extend_from(&DataSums::new(DigestKind::Xxh3).finish(seq).encode());
        buf.pad_to_alignment();
        let r = self.write_and_commit(&blob, offset, buf).await;
        blob.in_flight.borrow_mut().remove(&offset);
        r?;
        Ok(header)
    }

    /// Writes a buffer of records (never into a region being zeroed ahead), fencing on failure.
    pub(crate) async fn write_fenced(
        &self,
        blob: &BlobFile<I>,
        offset: u64,
        buf: AlignedBuf,
    ) -> Result<AlignedBuf> {
        assert!(
            blob.zeroing.get().is_none_or(|start| offset + buf.len() as u64 <= start),
            "a write at {offset} reaches into the region being zeroed from {:?}",
            blob.zeroing.get()
        );
        self.write_any(blob, offset, buf).await
    }

    /// Writes a buffer anywhere in `blob` (the zeroing ahead's own writes), fencing on failure.
    pub(crate) async fn write_any(
        &self,
        blob: &BlobFile<I>,
        offset: u64,
        buf: AlignedBuf,
    ) -> Result<AlignedBuf> {
        let file = self.blob_file(blob).await?;
        let (r, buf) = self.io.write_at(&file, offset, buf).await;
        match r {
            Ok(()) => Ok(buf),
            Err(e) => {
                if !matches!(e, podstore_disks::Error::Crashed) {
                    self.counters.borrow_mut().io_errors += 1;
                }
                Err(self.fence(format!("write failed: {e}")))
            }
        }
    }

    /// Waits for a group fdatasync covering everything written to `blob` so far.
    pub(crate) async fn commit(&self, blob: &BlobFile<I>) -> Result<()> {
        let io = &self.io;
        let file = &self.blob_file(blob).await?;
        match blob.commit.sync(|| async move { io.sync_data(file).await.map_err(|e| e.to_string()) }).await {
            Synced::Durable => Ok(()),
            Synced::Failed(e) => {
                self.counters.borrow_mut().io_errors += 1;
                Err(self.fence(format!("fdatasync failed: {e}")))
            }
        }
    }

    async fn write_and_commit(&self, blob: &BlobFile<I>, offset: u64, buf: AlignedBuf) -> Result<()> {
        self.write_fenced(blob, offset, buf).await?;
        self.commit(blob).await
    }
}
