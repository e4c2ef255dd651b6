//! Batched writes of whole objects from memory: [`Shard::put_batch`].
//!
//! Tiering moves many small objects to a capacity disk. Written one record at a time, each is
//! its own write on a disk that does a few hundred operations a second; a batch reserves its
//! records one after another in the open blob and writes each contiguous run with one write,
//! then waits for one group fdatasync, and only then changes the index: the same promise as a
//! single PUT (nothing is visible or acknowledged before it is durable), for many objects.

use std::rc::Rc;

use podstore_disks::{AlignedBuf, Io};

use crate::attrs::{Attrs, DigestKind};
use crate::index::Loc;
use crate::names::Name;
use crate::now_ms;
use crate::record::{self, DataSums, Header};
use crate::shard::{KeyLock, PutDone, Shard, Stamp};
use crate::{Error, Result};

/// One object of a batch: its bytes are all here.
#[derive(Debug, Clone)]
pub struct BatchItem {
    pub key: Vec<u8>,
    pub attrs: Attrs,
    pub data: Vec<u8>,
    pub stamp: Stamp,
    /// The content's digest (of `attrs.digest`'s kind) when the sender knows it (a copy): the object is stored only if
    /// the bytes match it.
    pub digest: Option<[u8; 16]>,
}

/// What became of one object of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    Stored(PutDone),
    /// The shard holds this version of the key or a newer one: nothing was written.
    Superseded,
}

/// Each item's answer, once it has one.
type Outcomes = Vec<Option<Result<BatchOutcome>>>;

/// An item whose key is locked and whose version is stamped, waiting for its place.
struct Ready {
    item: usize,
    fp: u64,
    record_len: u64,
    slot: crate::index::Slot,
    version: crate::Version,
    held: crate::shard::Held,
    sums: DataSums,
}

/// An object of the batch on its way to the disk.
struct Pending<I: Io> {
    item: usize,
    header: Header,
    slot: crate::index::Slot,
    fp: u64,
    held: crate::shard::Held,
    footer: Vec<u8>,
    digest: [u8; 16],
    blob: Rc<crate::blob::BlobFile<I>>,
}

impl<I: Io> Shard<I> {
    /// Stores whole objects from memory in as few writes as their places allow, then one
    /// group fdatasync per blob; each object is in the index (and answered `Stored`) only once
    /// it is durable. Items are independent: one that fails (bad name, too large, a digest
    /// that does not match, no room) fails alone; a failed write or sync fails every object of
    /// the batch not yet durable (and fences the shard, as for any write). Copies (`Given`,
    /// `Moved`) older than what the shard holds are `Superseded`. An item whose key (or key
    /// fingerprint) came earlier in the batch fails: send it again in another batch.
    ///
    /// Objects are limited to a quarter of a blob (larger ones are streamed with
    /// [`Shard::put_stamped`]).
    pub async fn put_batch(self: &Rc<Self>, items: &[BatchItem]) -> Result<Vec<Result<BatchOutcome>>> {
        self.check_writable()?;
        let mut out: Outcomes = items.iter().map(|_| None).collect();
        let order = self.admit(items, &mut out);
        let (locks, ready) = self.lock_and_stamp(items, order, &mut out).await;
        let _permit = self.write_slot().await;
        let pending = self.place(items, ready, &mut out).await;
        let written = self.write_runs(items, &pending, &out).await;
        self.settle(items, pending, written, &mut out);
        drop(locks);
        Ok(out.into_iter().map(|o| o.expect("every item has an outcome")).collect())
    }

    /// The items that may be written, as (item, fingerprint, record length); the others get
    /// their error.
    fn admit(&self, items: &[BatchItem], out: &mut Outcomes) -> Vec<(usize, u64, u64)> {
        let limit = self.cfg.object_size_max_bytes.min(self.cfg.blob_size_bytes / 4);
        let mut order = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            let len = it.data.len() as u64;
            let rec_len = record::record_len(it.key.len(), it.attrs.stored_len(), len);
            if let Err(e) = crate::validate(&it.key, &it.attrs.content_type) {
                out[i] = Some(Err(e));
            } else if rec_len > limit {
                out[i] = Some(Err(Error::TooLarge { len, max: limit }));
            } else {
                order.push((i, self.fp(&it.key), rec_len));
            }
        }
        order
    }

    /// Locks the admitted items' keys and stamps their versions. Keys are locked in
    /// fingerprint order, so two batches can't each hold a key the other waits for (the write
    /// slot is taken after the locks, as every writer takes them). An item superseded by what
    /// the shard holds is answered here.
    async fn lock_and_stamp(
        self: &Rc<Self>,
        items: &[BatchItem],
        mut order: Vec<(usize, u64, u64)>,
        out: &mut Outcomes,
    ) -> (Vec<KeyLock<I>>, Vec<Ready>) {
        order.sort_by_key(|o| o.1);
        let mut locks = Vec::with_capacity(order.len());
        let mut ready = Vec::with_capacity(order.len());
        let mut last_fp = None;
        for (i, fp, record_len) in order {
            let it = &items[i];
            if last_fp == Some(fp) {
                out[i] = Some(Err(Error::Invalid("a key (or its fingerprint) twice in one batch")));
                continue;
            }
            last_fp = Some(fp);
            let mut sums = DataSums::new(it.attrs.digest);
            sums.update(&it.data);
            locks.push(self.lock_key(fp).await);
            let r = async {
                let (slot, old, known) = self.resolve_for_write(fp, &it.key).await?;
                let (version, held) = self.stamp(it.stamp, &it.key, old, known).await?;
                Ok::<_, Error>((slot, version, held))
            }
            .await;
            match r {
                Err(e) => out[i] = Some(Err(e)),
                Ok((_, None, _)) => out[i] = Some(Ok(BatchOutcome::Superseded)),
                Ok((slot, Some(version), held)) => {
                    ready.push(Ready { item: i, fp, record_len, slot, version, held, sums })
                }
            }
        }
        (locks, ready)
    }

    /// Reserves the records' places one after another and builds their headers and footers.
    /// Items without a place get the reservation's error; an item whose bytes do not match
    /// the digest it came with keeps its place, written void like an abandoned PUT's.
    async fn place(&self, items: &[BatchItem], ready: Vec<Ready>, out: &mut Outcomes) -> Vec<Pending<I>> {
        let lens: Vec<u64> = ready.iter().map(|r| r.record_len).collect();
        let (places, reserve_err) =
            if lens.is_empty() { (Vec::new(), None) } else { self.reserve_all(&lens).await };
        let created_ms = now_ms();
        let mut pending: Vec<Pending<I>> = Vec::with_capacity(places.len());
        let mut rest = ready.into_iter();
        for ((blob, offset, seq), r) in places.into_iter().zip(rest.by_ref()) {
            let it = &items[r.item];
            let footer = r.sums.finish(seq);
            if it.digest.is_some_and(|d| d != footer.digest) {
                out[r.item] =
                    Some(Err(Error::Invalid("the content does not match the digest it was sent with")));
            }
            let header = Header {
                flags: if it.attrs.digest == DigestKind::Md5 { record::FLAG_MD5 } else { 0 },
                shard_id: self.id,
                blob_id: blob.id,
                offset,
                seq,
                created_ms,
                object_len: it.data.len() as u64,
                record_len: r.record_len,
                key_len: it.key.len() as u16,
                content_type_len: it.attrs.content_type.len() as u8,
                headers_len: it.attrs.encoded_headers().len() as u16,
                version: r.version,
            };
            pending.push(Pending {
                item: r.item,
                header,
                slot: r.slot,
                fp: r.fp,
                held: r.held,
                footer: footer.encode(),
                digest: footer.digest,
                blob,
            });
        }
        let err = reserve_err.unwrap_or(Error::NoSpace { shard: self.id });
        for r in rest {
            out[r.item] = Some(Err(err.again()));
        }
        pending
    }

    /// Writes the placed records, one write per contiguous run of one blob (an item already
    /// answered is written void), then one group sync per blob written.
    async fn write_runs(&self, items: &[BatchItem], pending: &[Pending<I>], out: &Outcomes) -> Result<()> {
        let mut start = 0;
        while start < pending.len() {
            let mut end = start + 1;
            while end < pending.len()
                && Rc::ptr_eq(&pending[end].blob, &pending[start].blob)
                && pending[end].header.offset
                    == pending[end - 1].header.offset + pending[end - 1].header.record_len
            {
                end += 1;
            }
            let run = &pending[start..end];
            let at = run[0].header.offset;
            let last = &run[run.len() - 1].header;
            let len = (last.offset + last.record_len - at) as usize;
            let mut buf = self.io.alloc_buf(len).await;
            buf.set_len(len);
            for p in run {
                let void = out[p.item].is_some();
                let rel = (p.header.offset - at) as usize;
                encode_record(&mut buf, rel, &p.header, &items[p.item], &p.footer, void, &self.record_key);
            }
            self.write_fenced(&run[0].blob, at, buf).await?;
            start = end;
        }
        let mut synced: Vec<u32> = Vec::new();
        for p in pending {
            if !synced.contains(&p.blob.id) {
                synced.push(p.blob.id);
                self.commit(&p.blob).await?;
            }
        }
        Ok(())
    }

    /// After the writes: each durable item goes into the index (and the digests and the peers'
    /// backlogs) and is answered `Stored`; the others' space is dead, and a failed write or
    /// sync is every unanswered item's answer.
    fn settle(&self, items: &[BatchItem], pending: Vec<Pending<I>>, written: Result<()>, out: &mut Outcomes) {
        for p in pending {
            p.blob.in_flight.borrow_mut().remove(&p.header.offset);
            let it = &items[p.item];
            if out[p.item].is_some() || written.is_err() {
                let mut c = self.counters.borrow_mut();
                c.aborted += 1;
                c.dead_bytes += p.header.record_len;
                drop(c);
                if let Err(e) = &written {
                    out[p.item].get_or_insert(Err(e.again()));
                }
                continue;
            }
            let h = &p.header;
            let loc = Loc::new(h.blob_id, h.offset, h.record_len, false);
            self.commit_index(p.slot, p.fp, &it.key, loc, h.record_len);
            self.digest_apply(&it.key, p.held, Some((h.version, false)));
            let name = Name::live(h.version, h.object_len, h.created_ms, p.digest, &it.attrs);
            self.names_apply(&it.key, name);
            if !matches!(it.stamp, Stamp::Moved(_)) {
                self.backlog_add(h);
            }
            self.counters.borrow_mut().puts += 1;
            out[p.item] = Some(Ok(BatchOutcome::Stored(PutDone {
                seq: h.seq,
                version: h.version,
                digest: p.digest,
                record_len: h.record_len,
            })));
        }
    }
}

/// Encodes one record at `at` in `buf` (zeroing its padding); a `void` record is written as
/// an abandoned one (its header flagged void: recovery skips it).
fn encode_record(
    buf: &mut AlignedBuf,
    at: usize,
    h: &Header,
    it: &BatchItem,
    footer: &[u8],
    void: bool,
    rk: &crate::record_key::RecordKey,
) {
    let region = &mut buf.as_mut_slice()[at..at + h.record_len as usize];
    region.fill(0);
    let mut h = h.clone();
    if void {
        h.flags |= record::FLAG_VOID;
    }
    let ds = h.data_start() as usize;
    h.encode(&it.key, &it.attrs, &mut region[..ds], rk);
    region[ds..ds + it.data.len()].copy_from_slice(&it.data);
    let f = ds + it.data.len();
    region[f..f + footer.len()].copy_from_slice(footer);
}
