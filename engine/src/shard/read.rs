use super::*;
use crate::now_ms;

/// What a reader learns about an object before reading its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub object_len: u64,
    /// The content type, the content headers kept with the object, the digest's algorithm.
    pub attrs: Attrs,
    pub created_ms: u64,
    /// The content's digest (XXH3-128, or MD5 as `attrs.digest` says): the ETag.
    pub digest: [u8; 16],
    pub seq: u64,
    /// The write's version, the same on every copy.
    pub version: Version,
}

impl ObjectMeta {
    /// The digest as 32 hex digits.
    pub fn etag_hex(&self) -> String {
        crate::hex(&self.digest)
    }
}

/// A piece of object data: a window into an owned aligned buffer.
#[derive(Debug, Clone)]
pub struct Chunk {
    buf: Rc<AlignedBuf>,
    start: usize,
    end: usize,
}

impl Chunk {
    /// The chunk's bytes as [`bytes::Bytes`], which may go to another thread: without a copy
    /// when this chunk holds the only reference to a heap buffer (a large object's chunk, read
    /// for it alone), copied otherwise (a pool buffer belongs to its core's ring).
    pub fn into_bytes(self) -> bytes::Bytes {
        self.into_bytes_noting_copy().0
    }

    /// [`Chunk::into_bytes`], and whether the bytes were copied: a copy holds exactly the
    /// chunk's bytes (a cache may keep it as it is), an uncopied chunk keeps its whole read
    /// buffer alive (the record's header and footer, rounded up to blocks).
    pub fn into_bytes_noting_copy(self) -> (bytes::Bytes, bool) {
        let Chunk { buf, start, end } = self;
        match Rc::try_unwrap(buf).map(AlignedBuf::into_send) {
            Ok(Ok(sent)) => (bytes::Bytes::from_owner(sent).slice(start..end), false),
            Ok(Err(buf)) => (bytes::Bytes::copy_from_slice(&buf[start..end]), true),
            Err(shared) => (bytes::Bytes::copy_from_slice(&shared[start..end]), true),
        }
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

pub(crate) enum Opened<I: Io> {
    Reader(Box<ObjectReader<I>>),
    /// The fingerprint's record belongs to another key (a collision): this key is absent.
    OtherKey,
    Bad(FormatError, u64),
}

/// What a reader checks as it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadCheck {
    /// Every chunk's CRC32C before its bytes are handed out (GETs, and anything served).
    Verify,
    /// Nothing: the bytes go to a peer that checks the whole object against the XXH3-128
    /// digest from the record's footer (itself checksummed) before storing any of it. Saves a
    /// pass over cold memory per copied byte; a sender whose copy is refused reads again with
    /// [`ReadCheck::Verify`], which finds and quarantines a damaged record.
    ByPeer,
}

/// A verified reader of one object (or a byte range of it).
#[derive(Debug)]
pub struct ObjectReader<I: Io> {
    shard: Rc<Shard<I>>,
    file: I::File,
    key: Vec<u8>,
    loc: Loc,
    header: Header,
    footer: Footer,
    /// The whole record, for records read in one go (verified when `check` says so).
    mem: Option<Rc<AlignedBuf>>,
    check: ReadCheck,
    pos: u64,
    end: u64,
    /// What the object is.
    pub meta: ObjectMeta,
}

impl<I: Io> ObjectReader<I> {
    /// The CRC32C of each data chunk, as the record's footer stores them (a copy to a peer
    /// sends them: see [`PutWriter::check_chunks_only`]).
    pub fn chunk_crcs(&self) -> &[u32] {
        &self.footer.chunk_crcs
    }

    /// The key this reader reads.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Where the record read is.
    pub fn loc(&self) -> Loc {
        self.loc
    }

    /// Whether every byte of the range has been handed out (`next_chunk` has nothing more).
    pub fn is_done(&self) -> bool {
        self.pos >= self.end
    }

    /// Restricts the reader to bytes `[start, end)` of the object (before reading).
    pub fn set_range(&mut self, start: u64, end: u64) {
        assert!(
            start <= end && end <= self.meta.object_len,
            "range {start}..{end} of {}",
            self.meta.object_len
        );
        self.pos = start;
        self.end = end;
    }

    /// The next verified piece of the object, or None at the end of the range.
    pub async fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let ds = self.header.data_start();
        if let Some(mem) = self.mem.take() {
            // The rest of the range in one piece: the reader is done with the record.
            let c = Chunk { buf: mem, start: (ds + self.pos) as usize, end: (ds + self.end) as usize };
            self.pos = self.end;
            return Ok(Some(c));
        }
        // Large record: read the 1 MiB chunk holding `pos`, verify it, return its part.
        let ci = self.pos / CHUNK_BYTES;
        let c_start = ci * CHUNK_BYTES;
        let c_end = (c_start + CHUNK_BYTES).min(self.meta.object_len);
        let disk_start = self.loc.offset() + ds + c_start;
        let aligned = disk_start - disk_start % BLOCK;
        let disk_end = podstore_disks::align_up(self.loc.offset() + ds + c_end);
        let len = (disk_end - aligned) as usize;
        let mut buf = self.shard.read_buf(len).await;
        buf.set_len(len);
        let (mut r, mut buf) = self.shard.read_limited(&self.file, aligned, buf).await;
        if r.as_ref().is_err_and(|e| !matches!(e, podstore_disks::Error::Crashed)) {
            buf.set_len(len);
            (r, buf) = self.shard.read_limited(&self.file, aligned, buf).await;
            // once more
        }
        if let Err(e) = r {
            let e = self.shard.disk_err(e);
            if read_failed(&e) {
                self.shard.quarantine_read(&self.key, self.loc, self.header.seq, QuarantineReason::ReadError);
            }
            return Err(e);
        }
        let skip = (disk_start - aligned) as usize;
        let n = (c_end - c_start) as usize;
        let data = buf.get(skip..skip + n);
        let ok = data.map(|d| match self.check {
            ReadCheck::Verify => verify_chunks(&self.footer, ci, d),
            ReadCheck::ByPeer => Ok(()),
        });
        match ok {
            Some(Ok(())) => {}
            other => {
                let e = match other {
                    Some(Err(e)) => e,
                    _ => FormatError::Short,
                };
                self.shard.counters.borrow_mut().checksum_errors += 1;
                self.shard.quarantine_read(
                    &self.key,
                    self.loc,
                    self.header.seq,
                    QuarantineReason::ReadChecksum,
                );
                return Err(corrupt(self.shard.id, self.loc.blob(), self.loc.offset(), e));
            }
        }
        let from = (self.pos - c_start) as usize;
        let to = (self.end.min(c_end) - c_start) as usize;
        self.pos = self.end.min(c_end);
        Ok(Some(Chunk { buf: Rc::new(buf), start: skip + from, end: skip + to }))
    }

    /// Reads the rest of the range into memory (tests and small objects).
    pub async fn read_all(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity((self.end - self.pos) as usize);
        while let Some(c) = self.next_chunk().await? {
            out.extend_from_slice(&c);
        }
        Ok(out)
    }
}

/// Reads of object data at least this large go to heap buffers, not the core's registered
/// pool: their chunks then leave for the connection's thread without a copy
/// ([`Chunk::into_bytes`]), which costs less than the pinning a registered buffer saves.
const SENDABLE_READ_MIN_BYTES: usize = 64 << 10;

impl<I: Io> Shard<I> {
    /// A buffer for a read of `len` bytes of a record (see [`SENDABLE_READ_MIN_BYTES`]).
    async fn read_buf(&self, len: usize) -> AlignedBuf {
        if len >= SENDABLE_READ_MIN_BYTES {
            AlignedBuf::new(len)
        } else {
            self.io.alloc_buf(len).await
        }
    }

    /// A read of object data, within the disk's read limit (`reads_in_flight_max`).
    pub(crate) async fn read_limited(
        &self,
        file: &I::File,
        offset: u64,
        buf: podstore_disks::AlignedBuf,
    ) -> (podstore_disks::Result<()>, podstore_disks::AlignedBuf) {
        let _permit = self.reads.read_slots.acquire().await.expect("the read semaphore is never closed");
        let held = self.cfg.reads_in_flight_max - self.reads.read_slots.available_permits();
        if held > self.reads.reads_peak.get() {
            self.reads.reads_peak.set(held);
        }
        self.io.read_at(file, offset, buf).await
    }

    /// Reads one block at a record location and decodes its header and key.
    pub(crate) async fn read_header(
        &self,
        loc: Loc,
    ) -> Result<std::result::Result<(Header, Vec<u8>, Attrs), FormatError>> {
        let blob = self.blob(loc.blob()).ok_or_else(|| Error::Damaged {
            shard: self.id,
            reason: format!("index points to missing blob {}", loc.blob()),
        })?;
        let mut buf = self.io.alloc_buf(HEADER_READ_BYTES).await;
        buf.set_len(HEADER_READ_BYTES);
        let (r, buf) = self.read_limited(&self.blob_file(&blob).await?, loc.offset(), buf).await;
        r.map_err(|e| self.disk_err(e))?;
        let b = &buf[..buf.len().min(HEADER_READ_BYTES)];
        Ok(Header::decode(b, &self.record_key).and_then(|h| {
            if h.shard_id != self.id || h.blob_id != loc.blob() || h.offset != loc.offset() {
                return Err(FormatError::Field("identity"));
            }
            Ok((h.clone(), h.key(b).to_vec(), h.attrs(b)))
        }))
    }

    /// Whether the index has an entry for the key's fingerprint (or the key itself): a record
    /// may be here even when its header does not read back.
    pub fn has_entry(&self, key: &[u8]) -> bool {
        self.entry_of(key).is_some()
    }

    /// Where the index points for `key` (its overflow entry, else its fingerprint's).
    pub(crate) fn entry_of(&self, key: &[u8]) -> Option<Loc> {
        let ix = self.index.borrow();
        ix.overflow_get(key).or_else(|| ix.main_get(self.fp(key)))
    }

    /// Notes that the record at `loc` was read now (a GET, from disk or from the node's RAM
    /// cache): its blob is not cold.
    pub fn note_read(&self, loc: Loc) {
        if let Some(b) = self.blob(loc.blob()) {
            b.last_read_ms.set(now_ms());
        }
    }

    /// Where the index points for `key` when a read would serve that record (not a tombstone,
    /// not quarantined): the RAM cache serves its copy only while this is the record it was
    /// read from.
    pub fn servable_loc(&self, key: &[u8]) -> Option<Loc> {
        if self.damage.quarantined_keys.borrow().contains_key(key) {
            return None;
        }
        self.entry_of(key).filter(|l| !l.is_tombstone())
    }

    /// Whether the index says the key was deleted here (no disk read; a fingerprint shared with
    /// another key's tombstone also answers yes).
    pub fn is_deleted(&self, key: &[u8]) -> bool {
        self.entry_of(key).is_some_and(|l| l.is_tombstone())
    }

    /// The version of the key's newest record (object or tombstone), if the shard has one.
    /// Costs one header read.
    pub async fn version_of(&self, key: &[u8]) -> Result<Option<(Version, bool)>> {
        validate(key, "")?;
        let fp = self.fp(key);
        let mut again = true;
        loop {
            let r = async {
                let (_, old, known) = self.resolve(fp, key).await?;
                let Some(l) = old else { return Ok(None) };
                if let Some(held) = known {
                    return Ok(held);
                }
                Ok(self.read_header(l).await?.ok().map(|(h, _, _)| (h.version, h.is_tombstone())))
            }
            .await;
            match r {
                // Compaction moved the record and removed its blob meanwhile: look again.
                Err(Error::Damaged { .. }) if again => again = false,
                r => return r,
            }
        }
    }

    /// Looks a key up and opens a verified reader of its newest record, or None if it does not
    /// exist (or was deleted). A record that fails its checks is never returned: the key is
    /// quarantined and the call fails.
    pub async fn get(self: &Rc<Self>, key: &[u8]) -> Result<Option<ObjectReader<I>>> {
        validate(key, "")?;
        self.counters.borrow_mut().gets += 1;
        if self.damage.quarantined_keys.borrow().contains_key(key) {
            return Err(Error::Quarantined { shard: self.id });
        }
        let fp = self.fp(key);
        let mut again = true;
        loop {
            let loc = {
                let ix = self.index.borrow();
                ix.overflow_get(key).or_else(|| ix.main_get(fp))
            };
            let Some(loc) = loc else { return Ok(None) };
            if loc.is_tombstone() {
                return Ok(None);
            }
            return match self.open_checked(key, loc, 2).await {
                // Compaction moved the record and removed its blob between the lookup and the
                // read: look again.
                Err(Error::Damaged { .. }) if again && self.blob(loc.blob()).is_none() => {
                    again = false;
                    continue;
                }
                Err(e) => Err(e),
                Ok(Ok(r)) => {
                    self.note_read(loc);
                    Ok(r)
                }
                Ok(Err(e)) => Err(corrupt(self.id, loc.blob(), loc.offset(), e)),
            };
        }
    }

    /// A verified reader of `key`'s record at `loc` (None if the record is another key's),
    /// read up to `attempts` times: a checksum failure may be a bad transfer, not damage;
    /// after the last failure the record is quarantined and its error returned.
    pub(crate) async fn open_checked(
        self: &Rc<Self>,
        key: &[u8],
        loc: Loc,
        attempts: u32,
    ) -> Result<std::result::Result<Option<ObjectReader<I>>, FormatError>> {
        let mut last = None;
        for _ in 0..attempts {
            match self.open_reader(key, loc).await {
                Ok(Opened::Reader(r)) => return Ok(Ok(Some(*r))),
                Ok(Opened::OtherKey) => return Ok(Ok(None)),
                Ok(Opened::Bad(e, seq)) => {
                    self.counters.borrow_mut().checksum_errors += 1;
                    last = Some(Ok((e, seq)));
                }
                Err(e) if read_failed(&e) => last = Some(Err(e)),
                Err(e) => return Err(e),
            }
        }
        match last.expect("at least one attempt") {
            Ok((e, seq)) => {
                self.quarantine_read(key, loc, seq, QuarantineReason::ReadChecksum);
                Ok(Err(e))
            }
            // The device can't read it: marked bad too (a later check may find it readable).
            Err(e) => {
                self.quarantine_read(key, loc, 0, QuarantineReason::ReadError);
                Err(e)
            }
        }
    }

    /// The metadata of a key's newest record (reads and verifies like `get`).
    pub async fn head(self: &Rc<Self>, key: &[u8]) -> Result<Option<ObjectMeta>> {
        Ok(self.get(key).await?.map(|r| r.meta))
    }

    /// Takes `key`'s record at `loc` out of service until a newer write (a peer's copy: the
    /// repair) replaces it, or, for a read error, a later read finds it intact
    /// ([`Shard::recheck`]).
    pub(crate) fn quarantine_read(&self, key: &[u8], loc: Loc, seq: u64, reason: QuarantineReason) {
        if self.damage.quarantined_keys.borrow().contains_key(key) {
            return;
        }
        let what = match reason {
            QuarantineReason::ReadError => "could not be read",
            _ => "failed its checksums",
        };
        tracing::warn!(
            "shard {}: record at blob {} offset {} {what}; quarantined",
            self.id,
            loc.blob(),
            loc.offset()
        );
        self.damage.quarantined_keys.borrow_mut().insert(key.into(), seq);
        self.damage.quarantine.borrow_mut().push(Quarantined {
            blob: loc.blob(),
            offset: loc.offset(),
            len_bytes: loc.record_len().unwrap_or(BLOCK),
            seq,
            key: Some(key.to_vec()),
            reason,
        });
    }

    pub(crate) async fn open_reader(self: &Rc<Self>, key: &[u8], loc: Loc) -> Result<Opened<I>> {
        let Some((blob, buf, whole)) = self.first_read(loc).await? else {
            return Err(Error::Damaged {
                shard: self.id,
                reason: format!("index points to missing blob {}", loc.blob()),
            });
        };
        self.reader_from(key, loc, blob, buf, whole, ReadCheck::Verify).await
    }

    /// The first read of a record: all of it when it is at most `single_read_max_bytes`
    /// (Some(length)), its header block otherwise. None if the blob is gone.
    pub(super) async fn first_read(
        &self,
        loc: Loc,
    ) -> Result<Option<(Rc<BlobFile<I>>, AlignedBuf, Option<u64>)>> {
        let Some(blob) = self.blob(loc.blob()) else { return Ok(None) };
        let whole = loc.record_len().filter(|&l| l <= self.cfg.single_read_max_bytes);
        let first_read = whole.unwrap_or(HEADER_READ_BYTES as u64) as usize;
        let mut buf = self.read_buf(first_read).await;
        buf.set_len(first_read);
        let (r, buf) = self.read_limited(&self.blob_file(&blob).await?, loc.offset(), buf).await;
        r.map_err(|e| self.disk_err(e))?;
        Ok(Some((blob, buf, whole)))
    }

    /// A reader over a record whose first read is `buf` (see [`Shard::first_read`]).
    pub(super) async fn reader_from(
        self: &Rc<Self>,
        key: &[u8],
        loc: Loc,
        blob: Rc<BlobFile<I>>,
        buf: AlignedBuf,
        whole: Option<u64>,
        check: ReadCheck,
    ) -> Result<Opened<I>> {
        let h = match Header::decode(&buf, &self.record_key) {
            Ok(h) if h.shard_id == self.id && h.blob_id == loc.blob() && h.offset == loc.offset() => h,
            Ok(_) => return Ok(Opened::Bad(FormatError::Field("identity"), 0)),
            Err(e) => return Ok(Opened::Bad(e, 0)),
        };
        if h.key(&buf) != key {
            return Ok(Opened::OtherKey);
        }
        if h.is_tombstone() || h.is_void() || whole.is_some_and(|l| l != h.record_len) {
            return Ok(Opened::Bad(FormatError::Field("record kind"), h.seq));
        }
        let attrs = h.attrs(&buf);
        let footer;
        let mem;
        if whole.is_some() {
            let fs = h.footer_start() as usize;
            footer = match Footer::decode(&buf[fs..], h.object_len, h.seq) {
                Ok(f) => f,
                Err(e) => return Ok(Opened::Bad(e, h.seq)),
            };
            let ds = h.data_start() as usize;
            if check == ReadCheck::Verify {
                if let Err(e) = verify_chunks(&footer, 0, &buf[ds..fs]) {
                    return Ok(Opened::Bad(e, h.seq));
                }
            }
            mem = Some(Rc::new(buf));
        } else {
            footer = match self.read_footer(&blob, loc.offset(), &h).await? {
                Ok(f) => f,
                Err(e) => return Ok(Opened::Bad(e, h.seq)),
            };
            mem = None;
        }
        let meta = ObjectMeta {
            object_len: h.object_len,
            attrs,
            created_ms: h.created_ms,
            digest: footer.digest,
            seq: h.seq,
            version: h.version,
        };
        // The reader keeps its own descriptor: the blob's may be closed by the cache, and the
        // file removed by compaction once nothing points into it, while the reader still reads.
        let file = self.blob_file(&blob).await?;
        Ok(Opened::Reader(Box::new(ObjectReader {
            shard: self.clone(),
            file,
            key: key.to_vec(),
            loc,
            header: h,
            footer,
            mem,
            check,
            pos: 0,
            end: meta.object_len,
            meta,
        })))
    }

    pub(crate) async fn read_footer(
        &self,
        blob: &BlobFile<I>,
        rec_off: u64,
        h: &Header,
    ) -> Result<std::result::Result<Footer, FormatError>> {
        let fs = rec_off + h.footer_start();
        let start = fs - fs % BLOCK;
        let end = podstore_disks::align_up(fs + record::footer_len(h.object_len));
        let mut buf = self.io.alloc_buf((end - start) as usize).await;
        buf.set_len((end - start) as usize);
        let (r, buf) = self.read_limited(&self.blob_file(blob).await?, start, buf).await;
        r.map_err(|e| self.disk_err(e))?;
        let at = (fs - start) as usize;
        Ok(buf.get(at..).ok_or(FormatError::Short).and_then(|b| Footer::decode(b, h.object_len, h.seq)))
    }

    /// Damaged records and regions awaiting repair.
    pub fn quarantined(&self) -> Vec<Quarantined> {
        self.damage.quarantine.borrow().clone()
    }

    /// Reads `key`'s record again if it was quarantined after a read error (the device may
    /// have failed it once and read it now: a remapped sector, a cable): if the record reads
    /// whole and passes its checksums, it is back in service. Returns whether it is.
    pub async fn recheck(self: &Rc<Self>, key: &[u8]) -> Result<bool> {
        let q = self
            .damage
            .quarantine
            .borrow()
            .iter()
            .find(|q| q.key.as_deref() == Some(key) && q.reason == QuarantineReason::ReadError)
            .cloned();
        let Some(q) = q else { return Ok(false) };
        let Some(loc) = self.entry_of(key).filter(|l| l.blob() == q.blob && l.offset() == q.offset) else {
            return Ok(false);
        };
        // (whole, found corrupt): a record can have a bad sector and bad bytes both.
        let (whole, corrupt) = match self.open_reader(key, loc).await {
            Ok(Opened::Reader(mut r)) => loop {
                match r.next_chunk().await {
                    Ok(Some(_)) => {}
                    Ok(None) => break (true, false),
                    Err(e) if e.is_crash() => return Err(e),
                    Err(e) => break (false, matches!(e, Error::Corrupt { .. })),
                }
            },
            Ok(Opened::Bad(..)) => (false, true),
            Ok(Opened::OtherKey) => (false, false),
            Err(e) if e.is_crash() => return Err(e),
            Err(_) => (false, false),
        };
        // Still the record the index points to (a write may have replaced it meanwhile).
        let same = self.entry_of(key) == Some(loc);
        if corrupt && same {
            // Read now, it fails its checksums: not a passing read error but damage, which only
            // a repair (a newer copy) ends. The mark says so.
            for m in self.damage.quarantine.borrow_mut().iter_mut() {
                if m.key.as_deref() == Some(key) && m.reason == QuarantineReason::ReadError {
                    m.reason = QuarantineReason::ReadChecksum;
                }
            }
            tracing::warn!(
                "shard {}: the record at blob {} offset {}, quarantined after a read error, fails \
                 its checksums when read again; it awaits repair",
                self.id,
                loc.blob(),
                loc.offset()
            );
            return Ok(false);
        }
        if whole && same && self.damage.quarantined_keys.borrow_mut().remove(key).is_some() {
            self.damage.quarantine.borrow_mut().retain(|q| q.key.as_deref() != Some(key));
            tracing::info!(
                "shard {}: the quarantined record of a key reads whole again; back in service",
                self.id
            );
            return Ok(true);
        }
        Ok(false)
    }
}
