//! Sequential scans of blob files: what recovery reads after the checkpoint, and what key
//! iteration walks.
//!
//! A scan reads a blob from a starting offset to its end in large windows and classifies every
//! 4096-aligned position: a fully valid record (header, footer, every data chunk and the digest
//! check out, and the record names this shard, blob and offset), a void record (abandoned, skip
//! it), a record whose header is valid but whose body is not (incomplete or damaged), a zero
//! block (never written), or a block of garbage.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use podstore_disks::{AlignedBuf, Io};

use crate::attrs::Attrs;
use crate::budget::{IoBudget, JobCtl};
use crate::record::{DataSums, Footer, Header, BLOCK, HEADER_BYTES};
use crate::{Error, Result};

/// What a scan found at one position.
#[derive(Debug, Clone)]
pub(crate) enum Found {
    /// A complete, verified record (or a void one, which has no verified body).
    Record { offset: u64, header: Header, key: Vec<u8>, attrs: Attrs, digest: [u8; 16] },
    /// A valid header without a valid footer: the record was never completed (the footer is
    /// written last, after every data block), so it was never acknowledged.
    Incomplete { header: Header, key: Vec<u8> },
    /// A valid header and footer whose data fails its checks: damage.
    BadBody { offset: u64, header: Header, key: Vec<u8> },
    /// A block of non-zero bytes that is not a valid header.
    Garbage { offset: u64 },
}

enum Body {
    Ok([u8; 16]),
    Incomplete,
    Bad,
}

/// Result of scanning one blob.
#[derive(Debug, Default)]
pub(crate) struct BlobScan {
    pub(crate) found: Vec<Found>,
    /// End of the last valid (or void) record, or the start offset if there was none.
    pub(crate) end_valid: u64,
    /// Bytes read.
    pub(crate) bytes_read: u64,
    /// Valid records found (kept in `found` or not).
    pub(crate) records: u64,
    /// Where the scan found no record header, in order, contiguous blocks merged: zero blocks
    /// and garbage. A record the index expects in one of these has lost its header (the scrub
    /// checks the index against them).
    pub(crate) headerless: Vec<(u64, u64)>,
}

impl BlobScan {
    fn note_headerless(&mut self, at: u64) {
        match self.headerless.last_mut() {
            Some((_, end)) if *end == at => *end = at + BLOCK,
            _ => self.headerless.push((at, at + BLOCK)),
        }
    }
}

/// Whether `offset` lies in one of `ranges` (sorted, not overlapping).
pub(crate) fn in_ranges(ranges: &[(u64, u64)], offset: u64) -> bool {
    let i = ranges.partition_point(|&(_, end)| end <= offset);
    ranges.get(i).is_some_and(|&(start, _)| start <= offset)
}

struct Window {
    buf: AlignedBuf,
    start: u64,
}

impl Window {
    fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    fn covers(&self, pos: u64, n: u64) -> bool {
        pos >= self.start && pos + n <= self.end()
    }

    fn slice(&self, pos: u64, n: u64) -> &[u8] {
        let s = (pos - self.start) as usize;
        &self.buf[s..s + n as usize]
    }
}

type ReadFuture<'a> = Pin<Box<dyn Future<Output = (podstore_disks::Result<()>, AlignedBuf)> + 'a>>;

/// Polls an I/O future once, so that its operation is submitted now rather than when it is
/// first awaited (a read ahead, a write overlapping the next buffer's filling).
pub(crate) fn submit_now<'a, T: 'a>(
    mut fut: Pin<Box<dyn Future<Output = T> + 'a>>,
) -> Pin<Box<dyn Future<Output = T> + 'a>> {
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(done) => Box::pin(std::future::ready(done)),
        Poll::Pending => fut,
    }
}

/// How a background scan (scrub) goes: under the disk's budget and its own pace, stopping or
/// pausing between windows, counting what it read.
#[derive(Clone, Copy)]
pub(crate) struct Pace<'a> {
    pub(crate) budgets: [&'a IoBudget; 2],
    pub(crate) ctl: &'a JobCtl,
    pub(crate) done: &'a std::cell::Cell<u64>,
}

/// Reads a blob sequentially through windows of `window_bytes`, with the next window's read
/// already in flight while the current one is checked (read-ahead), so the disk streams while
/// the CPU verifies checksums.
pub(crate) struct Scanner<'a, I: Io> {
    io: &'a I,
    file: &'a I::File,
    shard: u32,
    record_key: &'a crate::record_key::RecordKey,
    size: u64,
    win: Option<Window>,
    ahead: Option<(u64, ReadFuture<'a>)>,
    spare: Option<AlignedBuf>,
    window_bytes: usize,
    pub(crate) bytes_read: u64,
    pace: Option<Pace<'a>>,
    /// Keep valid records in the result (recovery, iteration); a scrub wants only the bad.
    keep_valid: bool,
}

impl<'a, I: Io> Scanner<'a, I> {
    pub(crate) fn new(
        io: &'a I,
        file: &'a I::File,
        shard: u32,
        record_key: &'a crate::record_key::RecordKey,
        size: u64,
        window_bytes: usize,
    ) -> Self {
        Scanner {
            io,
            file,
            shard,
            record_key,
            size,
            win: None,
            ahead: None,
            spare: None,
            window_bytes,
            bytes_read: 0,
            pace: None,
            keep_valid: true,
        }
    }

    /// A paced scan that keeps only what is not a valid record.
    pub(crate) fn paced(mut self, pace: Pace<'a>) -> Self {
        self.pace = Some(pace);
        self.keep_valid = false;
        self
    }

    fn read(&mut self, start: u64) -> ReadFuture<'a> {
        let mut buf = self.spare.take().unwrap_or_else(|| AlignedBuf::new(self.window_bytes));
        let len = (self.size.saturating_sub(start)).min(self.window_bytes as u64);
        buf.set_len(podstore_disks::align_up(len) as usize);
        let (io, file, pace) = (self.io, self.file, self.pace);
        Box::pin(async move {
            if let Some(p) = pace {
                for b in p.budgets {
                    b.take(buf.len() as u64).await;
                }
                p.done.set(p.done.get() + buf.len() as u64);
            }
            io.read_at(file, start, buf).await
        })
    }

    /// Makes the window holding `pos` current; returns whether `[pos, pos+n)` is in it.
    async fn ensure(&mut self, pos: u64, n: u64) -> Result<bool> {
        if self.win.as_ref().is_some_and(|w| w.covers(pos, n)) {
            return Ok(true);
        }
        if let Some(p) = self.pace {
            if !p.ctl.proceed().await {
                return Err(Error::Stopped);
            }
            // Background work: let the core serve what is waiting before the next window's
            // records are checked (a window's checksums take the thread for a while).
            tokio::task::yield_now().await;
        }
        if let Some(old) = self.win.take() {
            self.spare = Some(old.buf);
        }
        let fut = match self.ahead.take() {
            Some((start, fut)) if start == pos - pos % BLOCK => (start, fut),
            _ => {
                let start = pos - pos % BLOCK;
                (start, self.read(start))
            }
        };
        let (start, fut) = fut;
        let (r, buf) = fut.await;
        r.map_err(|source| Error::Disk { shard: self.shard, source })?;
        self.bytes_read += buf.len() as u64;
        let w = Window { buf, start };
        let next = w.end();
        let ok = w.covers(pos, n);
        let full = w.buf.len() == self.window_bytes;
        self.win = Some(w);
        if full && next < self.size {
            // Start the next window's read now.
            self.ahead = Some((next, submit_now(self.read(next))));
        }
        Ok(ok)
    }

    /// Streams `[pos, pos+len)` to `f`, one window at a time.
    async fn feed(&mut self, mut pos: u64, len: u64, mut f: impl FnMut(&[u8])) -> Result<bool> {
        let end = pos + len;
        while pos < end {
            if !self.ensure(pos, 1).await? {
                return Ok(false);
            }
            let w = self.win.as_ref().expect("ensured");
            let n = (end - pos).min(w.end() - pos);
            f(w.slice(pos, n));
            pos += n;
        }
        Ok(true)
    }

    /// Decodes the header at `pos` if one is there: returns it with its key and content type.
    async fn header_at(&mut self, pos: u64, blob: u32) -> Result<Option<(Header, Vec<u8>, Attrs)>> {
        if !self.ensure(pos, BLOCK).await? {
            return Ok(None);
        }
        let w = self.win.as_ref().expect("ensured");
        let b = w.slice(pos, BLOCK);
        let Ok(h) = Header::decode(b, self.record_key) else {
            return Ok(None);
        };
        if h.shard_id != self.shard || h.blob_id != blob || h.offset != pos || pos + h.record_len > self.size
        {
            return Ok(None);
        }
        let key = h.key(b).to_vec();
        let attrs = h.attrs(b);
        Ok(Some((h, key, attrs)))
    }

    async fn block_is_zero(&mut self, pos: u64) -> Result<bool> {
        if !self.ensure(pos, BLOCK).await? {
            return Ok(true);
        }
        Ok(self.win.as_ref().expect("ensured").slice(pos, BLOCK).iter().all(|&b| b == 0))
    }

    /// Verifies a record's body (data chunks, digest, footer) by streaming it.
    async fn check_body(&mut self, pos: u64, h: &Header) -> Result<Body> {
        let mut sums = DataSums::new(h.digest_kind());
        let data_read = self.feed(pos + h.data_start(), h.object_len, |d| sums.update(d)).await?;
        let flen = crate::record::footer_len(h.object_len);
        let mut fbytes = Vec::with_capacity(flen as usize);
        if !self.feed(pos + h.footer_start(), flen, |d| fbytes.extend_from_slice(d)).await? {
            return Ok(Body::Incomplete);
        }
        let Ok(footer) = Footer::decode(&fbytes, h.object_len, h.seq) else {
            return Ok(Body::Incomplete);
        };
        let computed = sums.finish(h.seq);
        if !data_read || computed.chunk_crcs != footer.chunk_crcs || computed.digest != footer.digest {
            return Ok(Body::Bad);
        }
        Ok(Body::Ok(footer.digest))
    }

    /// Scans `[from, size)` of blob `blob`.
    pub(crate) async fn scan(&mut self, blob: u32, from: u64) -> Result<BlobScan> {
        let mut out = BlobScan { end_valid: from, ..Default::default() };
        let mut pos = from;
        while pos + BLOCK <= self.size {
            match self.header_at(pos, blob).await? {
                Some((h, ..)) if h.is_void() => {
                    pos += h.record_len;
                    out.end_valid = pos;
                }
                Some((h, key, attrs)) => {
                    let len = h.record_len;
                    match self.check_body(pos, &h).await? {
                        Body::Ok(digest) => {
                            if self.keep_valid {
                                out.found.push(Found::Record { offset: pos, header: h, key, attrs, digest });
                            }
                            out.records += 1;
                            out.end_valid = pos + len;
                        }
                        Body::Incomplete => out.found.push(Found::Incomplete { header: h, key }),
                        Body::Bad => out.found.push(Found::BadBody { offset: pos, header: h, key }),
                    }
                    // The header gives the extent; a valid record may follow it.
                    pos += len;
                }
                None => {
                    if !self.block_is_zero(pos).await? {
                        out.found.push(Found::Garbage { offset: pos });
                    }
                    out.note_headerless(pos);
                    pos += BLOCK;
                }
            }
        }
        out.bytes_read = self.bytes_read;
        Ok(out)
    }
}

/// Size of a header read: the header with the longest key and content type fits one block.
pub(crate) const HEADER_READ_BYTES: usize = BLOCK as usize;
const _: () = assert!(
    HEADER_BYTES + crate::record::KEY_MAX_BYTES + crate::record::CONTENT_TYPE_MAX_BYTES <= HEADER_READ_BYTES
);
