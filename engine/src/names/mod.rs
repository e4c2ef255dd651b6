//! The name index of one shard: every key the disk holds, in byte order, with what a listing
//! shows of it (size, created, digest, content type, version), so that a listing streams pages
//! from a seek instead of loading a bucket.
//!
//! It is a small log-structured merge tree. Changes go to a sorted map in RAM (the memtable);
//! a flush writes the memtable as a sorted, immutable run file ([`run`]); merges of runs keep
//! their number low. RAM holds the memtable and, per run, the first key of each 64 KiB block.
//!
//! It needs no log of its own: the blob files are the log. A run records the point of the
//! shard's record sequence it reflects (a [`Watermark`]). Every checkpoint flushes the
//! memtable first, in the same instant as its snapshot, so the runs are never behind the
//! checkpoint; recovery applies to the memtable every record it applies to the index (those
//! past the checkpoint), in the same order, so the two end alike for every key it touches.
//! (Not only those past the runs' watermark: a write that failed after its record reached the
//! disk was applied to neither, and recovery's index takes it.) A runs' watermark behind the
//! checkpoint means a run was lost: the name index is rebuilt.
//!
//! Changes that write no record (a key moved to another disk, a tombstone dropped by
//! compaction) become [`Kind::Gone`] entries; like the index, they are durable at the next
//! flush, and a crash before it brings the key back here as the index brings it back.
//! A listing shows a live entry only if the shard's index still holds the key live (the shard
//! checks), so the name index can never show more than the index.

pub mod entry;
pub mod run;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use podstore_disks::Io;

pub use entry::{Kind, Name};
pub use run::{parse_run_name, run_name, Run, RunWriter, Watermark};

use crate::budget::IoBudget;
use crate::{Error, Result};

/// Runs of one size tier that are merged into one.
pub const RUNS_PER_MERGE: usize = 4;
/// Most runs before the newest ones are merged whatever their sizes.
pub const RUNS_MAX: usize = 24;

type Map = BTreeMap<Box<[u8]>, Name>;
/// Entries in key order.
pub type Entries = Vec<(Box<[u8]>, Name)>;
/// Entries of one source, and whether it was cut short (it may hold more).
type Taken = (Entries, bool);

/// One shard's name index.
pub struct Names<I: Io> {
    io: I,
    dir: PathBuf,
    shard: u32,
    /// A flush is due past this much memtable memory, bytes.
    memtable_bytes_max: u64,
    mem: RefCell<Map>,
    mem_bytes: Cell<u64>,
    /// The memtable being written as a run (read by listings meanwhile).
    frozen: RefCell<Option<(Rc<Map>, u64)>>,
    /// Oldest first.
    runs: RefCell<Vec<Rc<Run<I::File>>>>,
    next_run: Cell<u64>,
    flush_lock: tokio::sync::Mutex<()>,
    merging: Cell<bool>,
    pub(crate) stats: RefCell<NamesStats>,
}

/// Counters of a name index.
#[derive(Debug, Clone, Default)]
pub struct NamesStats {
    pub flushes: u64,
    pub merges: u64,
    pub bytes_written: u64,
    pub entries_dropped: u64,
}

/// A page of one shard's names from a seek: entries in key order (every kind: the caller
/// filters), and where to continue if there may be more.
#[derive(Debug, Default)]
pub struct Listed {
    pub entries: Entries,
    /// The first key not yet looked at, if the range may hold more.
    pub next: Option<Box<[u8]>>,
}

/// The smallest key above `k` in byte order.
pub fn successor(k: &[u8]) -> Box<[u8]> {
    let mut v = Vec::with_capacity(k.len() + 1);
    v.extend_from_slice(k);
    v.push(0);
    v.into()
}

/// What opening found on the disk.
#[derive(Debug)]
pub enum Opened {
    /// Runs that agree, and the watermark of the newest.
    Runs(Watermark),
    /// No run at all.
    None,
    /// A run failed its checks (the reason): the index must be rebuilt from the blobs.
    Lost(String),
}

impl<I: Io> Names<I> {
    /// An empty name index for the shard in `dir`.
    pub fn new(io: I, dir: &Path, shard: u32, memtable_bytes_max: u64) -> Names<I> {
        Names {
            io,
            dir: dir.to_path_buf(),
            shard,
            memtable_bytes_max,
            mem: RefCell::new(Map::new()),
            mem_bytes: Cell::new(0),
            frozen: RefCell::new(None),
            runs: RefCell::new(Vec::new()),
            next_run: Cell::new(1),
            flush_lock: tokio::sync::Mutex::new(()),
            merging: Cell::new(false),
            stats: RefCell::new(NamesStats::default()),
        }
    }

    fn disk(&self, source: podstore_disks::Error) -> Error {
        Error::Disk { shard: self.shard, source }
    }

    /// Opens the runs among the directory's `files`. A run that a merged run covers (a merge
    /// interrupted before it removed its inputs) is removed unless `read_only`.
    pub async fn open(&self, files: &[String], read_only: bool) -> Result<Opened> {
        let mut found: Vec<(u64, u64, &String)> =
            files.iter().filter_map(|n| parse_run_name(n).map(|(lo, hi)| (lo, hi, n))).collect();
        found.sort_by_key(|&(lo, hi, _)| (hi, std::cmp::Reverse(lo)));
        let mut keep: Vec<(u64, u64, &String)> = Vec::new();
        for f in found.iter().rev() {
            if keep.iter().any(|k| k.0 <= f.0 && f.1 <= k.1) {
                if !read_only {
                    self.io.remove(&self.dir.join(f.2)).await.map_err(|e| self.disk(e))?;
                }
            } else {
                keep.push(*f);
            }
        }
        keep.reverse();
        let mut runs = Vec::with_capacity(keep.len());
        for (_, _, name) in &keep {
            match Run::open(&self.io, &self.dir, self.shard, name).await {
                Ok(r) => runs.push(Rc::new(r)),
                Err(e @ Error::Damaged { .. }) => return Ok(Opened::Lost(e.to_string())),
                Err(e) => return Err(e),
            }
        }
        if runs.windows(2).any(|w| w[0].hi >= w[1].lo) {
            return Ok(Opened::Lost("runs overlap".into()));
        }
        let Some(newest) = runs.last() else { return Ok(Opened::None) };
        let mark = newest.watermark.clone();
        self.next_run.set(newest.hi + 1);
        *self.runs.borrow_mut() = runs;
        Ok(Opened::Runs(mark))
    }

    /// Removes every run and forgets everything (before a rebuild from the blobs).
    pub async fn clear(&self, files: &[String]) -> Result<()> {
        let _g = self.flush_lock.lock().await;
        self.runs.borrow_mut().clear();
        self.mem.borrow_mut().clear();
        self.mem_bytes.set(0);
        for n in files.iter().filter(|n| parse_run_name(n).is_some()) {
            self.io.remove(&self.dir.join(n)).await.map_err(|e| self.disk(e))?;
        }
        self.io.sync_dir(&self.dir).await.map_err(|e| self.disk(e))
    }

    /// Forgets the memtable (the index is out of service and will be rebuilt).
    pub fn drop_memtable(&self) {
        self.mem.borrow_mut().clear();
        self.mem_bytes.set(0);
    }

    /// Records a key's new state on this disk.
    pub fn apply(&self, key: &[u8], name: Name) {
        let add = name.memory_bytes(key.len());
        let old = self.mem.borrow_mut().insert(key.into(), name);
        let sub = old.map_or(0, |o| o.memory_bytes(key.len()));
        self.mem_bytes.set(self.mem_bytes.get() + add - sub);
    }

    /// Whether the memtable is past its size: a flush is due.
    pub fn flush_due(&self) -> bool {
        self.mem_bytes.get() >= self.memtable_bytes_max
    }

    /// Memory held in RAM, bytes: the memtable (and one being flushed) and the runs' block
    /// indexes.
    pub fn memory_bytes(&self) -> u64 {
        let frozen = self.frozen.borrow().as_ref().map_or(0, |f| f.1);
        self.mem_bytes.get() + frozen + self.runs.borrow().iter().map(|r| r.memory_bytes()).sum::<u64>()
    }

    /// Entries in the runs (with repeats and gone entries) and runs.
    pub fn run_counts(&self) -> (u64, usize, u64) {
        let runs = self.runs.borrow();
        (runs.iter().map(|r| r.entries).sum(), runs.len(), runs.iter().map(|r| r.file_bytes()).sum())
    }

    /// Waits for any flush in progress; the guard lets its holder freeze and write the memtable.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.flush_lock.lock().await
    }

    /// Takes the memtable for a flush that reflects the records `mark` says. Call with the
    /// lock held, in the same instant (no await) as the watermark was taken.
    pub fn freeze(&self, _held: &tokio::sync::MutexGuard<'_, ()>, mark: Watermark) -> Frozen {
        let map = Rc::new(std::mem::take(&mut *self.mem.borrow_mut()));
        let bytes = self.mem_bytes.replace(0);
        *self.frozen.borrow_mut() = Some((map.clone(), bytes));
        let id = self.next_run.get();
        self.next_run.set(id + 1);
        Frozen { map, id, mark }
    }

    /// Writes a frozen memtable as a run (with the lock still held) and puts it in service.
    pub async fn write(&self, _held: &tokio::sync::MutexGuard<'_, ()>, f: Frozen) -> Result<()> {
        let r = self.write_run(&f).await;
        if r.is_err() {
            // Back into the memtable, under what was written since (which is newer).
            let mut mem = self.mem.borrow_mut();
            for (k, n) in f.map.iter() {
                if !mem.contains_key(k) {
                    mem.insert(k.clone(), n.clone());
                }
            }
            let bytes = self.frozen.borrow().as_ref().map_or(0, |x| x.1);
            self.mem_bytes.set(self.mem_bytes.get() + bytes);
        }
        *self.frozen.borrow_mut() = None;
        r
    }

    async fn write_run(&self, f: &Frozen) -> Result<()> {
        let mut w = RunWriter::create(&self.io, &self.dir, self.shard, f.id, f.id).await?;
        for (k, n) in f.map.iter() {
            w.push(k, n).await?;
        }
        let run = w.finish(f.mark.clone()).await?;
        let mut st = self.stats.borrow_mut();
        st.flushes += 1;
        st.bytes_written += run.file_bytes();
        drop(st);
        self.runs.borrow_mut().push(Rc::new(run));
        Ok(())
    }

    /// Flushes the memtable as a run reflecting `mark` (taken by the caller with no await since).
    pub async fn flush(&self, mark: impl FnOnce() -> Watermark) -> Result<()> {
        let g = self.lock().await;
        let f = self.freeze(&g, mark());
        self.write(&g, f).await
    }

    /// Up to `max` entries (`max` > 0) of keys that start with `prefix`, from `from` on (a
    /// `from` below the prefix starts at the prefix), newest state of each key on this disk.
    pub async fn list(&self, from: &[u8], prefix: &[u8], max: usize) -> Result<Listed> {
        assert!(max > 0);
        let from: &[u8] = if from < prefix { prefix } else { from };
        // Newest source first: the memtable, the one being flushed, then the runs.
        let mut sources: Vec<Taken> = Vec::new();
        sources.push(take_map(&self.mem.borrow(), from, prefix, max));
        let frozen = self.frozen.borrow().as_ref().map(|f| f.0.clone());
        if let Some(f) = frozen {
            sources.push(take_map(&f, from, prefix, max));
        }
        let runs: Vec<Rc<Run<I::File>>> = self.runs.borrow().iter().rev().cloned().collect();
        for run in runs {
            sources.push(self.take_run(&run, from, prefix, max).await?);
        }
        // Everything up to the lowest last key of a source cut short is complete.
        let bound: Option<Box<[u8]>> = sources
            .iter()
            .filter(|(v, cut)| *cut && !v.is_empty())
            .map(|(v, _)| v.last().expect("not empty").0.clone())
            .min();
        let mut merged = Map::new();
        for (entries, _) in sources.into_iter().rev() {
            for (k, n) in entries {
                if bound.as_ref().is_none_or(|b| k <= *b) {
                    merged.insert(k, n);
                }
            }
        }
        Ok(Listed { entries: merged.into_iter().collect(), next: bound.map(|b| successor(&b)) })
    }

    async fn take_run(&self, run: &Run<I::File>, from: &[u8], prefix: &[u8], max: usize) -> Result<Taken> {
        let mut out = Vec::new();
        let mut b = run.block_of(from);
        while b < run.blocks() {
            for (k, n) in run.read_block(&self.io, self.shard, b).await? {
                if &k[..] < from {
                    continue;
                }
                if !k.starts_with(prefix) {
                    return Ok((out, false));
                }
                out.push((k, n));
                if out.len() == max {
                    return Ok((out, true));
                }
            }
            b += 1;
        }
        Ok((out, false))
    }

    /// The runs a merge should take now (a range of indexes), if any: the newest
    /// [`RUNS_PER_MERGE`] when they are of one size tier, or when there are [`RUNS_MAX`].
    fn merge_pick(&self) -> Option<std::ops::Range<usize>> {
        let runs = self.runs.borrow();
        let n = runs.len();
        if n < RUNS_PER_MERGE {
            return None;
        }
        let unit = self.memtable_bytes_max.max(1);
        let tier = |r: &Run<I::File>| {
            let units = r.file_bytes() / unit;
            if units == 0 {
                0
            } else {
                units.ilog(4) + 1
            }
        };
        let last = &runs[n - RUNS_PER_MERGE..];
        let t = tier(&last[0]);
        (n >= RUNS_MAX || last.iter().all(|r| tier(r) == t)).then_some(n - RUNS_PER_MERGE..n)
    }

    /// Whether a merge is due.
    pub fn merge_due(&self) -> bool {
        !self.merging.get() && self.merge_pick().is_some()
    }

    /// Merges the runs [`Names::merge_due`] picks into one; returns whether it did. A merge
    /// that takes the oldest run drops gone entries (nothing older is left for them to hide).
    /// With a `budget` (the disk's background budget), every block it reads is charged twice
    /// (read, and its share of the writing) before it is read.
    pub async fn merge(&self, budget: Option<&IoBudget>) -> Result<bool> {
        if self.merging.replace(true) {
            return Ok(false);
        }
        let r = self.merge_runs(budget).await;
        self.merging.set(false);
        r
    }

    async fn merge_runs(&self, budget: Option<&IoBudget>) -> Result<bool> {
        let Some(range) = self.merge_pick() else { return Ok(false) };
        let bottom = range.start == 0;
        let inputs: Vec<Rc<Run<I::File>>> = self.runs.borrow()[range].to_vec();
        let (lo, hi) = (inputs[0].lo, inputs.last().expect("picked runs").hi);
        let mut w = RunWriter::create(&self.io, &self.dir, self.shard, lo, hi).await?;
        let mut cursors: Vec<Cursor<I::File>> = inputs.iter().map(|r| Cursor::new(r.clone())).collect();
        let mut dropped = 0u64;
        loop {
            for c in cursors.iter_mut() {
                c.fill(&self.io, self.shard, budget).await?;
            }
            // The lowest key; of the cursors at it, the newest run (the last) wins.
            let Some(min) = cursors.iter().filter_map(|c| c.peek()).min().map(Box::<[u8]>::from) else {
                break;
            };
            let mut won: Option<Name> = None;
            for c in cursors.iter_mut() {
                if c.peek() == Some(&min[..]) {
                    won = Some(c.take());
                }
            }
            let name = won.expect("a cursor holds the lowest key");
            if bottom && name.kind == Kind::Gone {
                dropped += 1;
                continue;
            }
            w.push(&min, &name).await?;
        }
        let run = Rc::new(w.finish(inputs.last().expect("picked runs").watermark.clone()).await?);
        {
            let mut runs = self.runs.borrow_mut();
            let at = runs.iter().position(|r| Rc::ptr_eq(r, &inputs[0])).expect("merged runs stay");
            assert!(
                inputs.iter().enumerate().all(|(i, r)| Rc::ptr_eq(&runs[at + i], r)),
                "runs changed in a merge"
            );
            runs.splice(at..at + inputs.len(), [run.clone()]);
        }
        for r in &inputs {
            self.io.remove(r.path()).await.map_err(|e| self.disk(e))?;
        }
        self.io.sync_dir(&self.dir).await.map_err(|e| self.disk(e))?;
        let mut st = self.stats.borrow_mut();
        st.merges += 1;
        st.bytes_written += run.file_bytes();
        st.entries_dropped += dropped;
        Ok(true)
    }
}

/// A memtable taken for a flush.
pub struct Frozen {
    map: Rc<Map>,
    id: u64,
    mark: Watermark,
}

impl std::fmt::Debug for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frozen(run {}, {} entries)", self.id, self.map.len())
    }
}

impl<I: Io> std::fmt::Debug for Names<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Names(shard {}, {} runs)", self.shard, self.runs.borrow().len())
    }
}

fn take_map(map: &Map, from: &[u8], prefix: &[u8], max: usize) -> Taken {
    let v: Vec<(Box<[u8]>, Name)> = map
        .range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(prefix))
        .take(max)
        .map(|(k, n)| (k.clone(), n.clone()))
        .collect();
    let cut = v.len() == max;
    (v, cut)
}

/// A merge's place in one input run.
struct Cursor<F> {
    run: Rc<Run<F>>,
    next_block: usize,
    entries: std::vec::IntoIter<(Box<[u8]>, Name)>,
    head: Option<(Box<[u8]>, Name)>,
}

impl<F: Clone> Cursor<F> {
    fn new(run: Rc<Run<F>>) -> Cursor<F> {
        Cursor { run, next_block: 0, entries: Vec::new().into_iter(), head: None }
    }

    async fn fill<I: Io<File = F>>(&mut self, io: &I, shard: u32, budget: Option<&IoBudget>) -> Result<()> {
        while self.head.is_none() {
            if let Some(e) = self.entries.next() {
                self.head = Some(e);
            } else if self.next_block < self.run.blocks() {
                if let Some(b) = budget {
                    b.take(2 * run::BLOCK_BYTES as u64).await;
                }
                self.entries = self.run.read_block(io, shard, self.next_block).await?.into_iter();
                self.next_block += 1;
            } else {
                break;
            }
        }
        Ok(())
    }

    fn peek(&self) -> Option<&[u8]> {
        self.head.as_ref().map(|(k, _)| &k[..])
    }

    fn take(&mut self) -> Name {
        self.head.take().expect("a head to take").1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Version;
    use podstore_disks::{SimDisk, SimFaults};

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime")
    }

    fn key(rng: &mut Rng) -> Vec<u8> {
        let bucket = ["photos", "photo", "video"][rng.below(3) as usize];
        let dir = ["a", "a/b", "b", "ab", "a.b"][rng.below(5) as usize];
        format!("{bucket}/{dir}/{:04}", rng.below(400)).into_bytes()
    }

    /// Every entry of the range, paging with `max` per call.
    async fn all(n: &Names<SimDisk>, from: &[u8], prefix: &[u8], max: usize) -> Vec<(Box<[u8]>, Name)> {
        let mut out = Vec::new();
        let mut at: Box<[u8]> = from.into();
        loop {
            let page = n.list(&at, prefix, max).await.expect("list");
            assert!(page.entries.len() <= max + 2 * (RUNS_MAX + 2) * max, "a page is bounded");
            for (k, v) in page.entries {
                assert!(out.last().is_none_or(|(p, _): &(Box<[u8]>, Name)| *p < k), "in order, once");
                out.push((k, v));
            }
            match page.next {
                Some(next) => at = next,
                None => return out,
            }
        }
    }

    fn expect(model: &BTreeMap<Vec<u8>, Name>, from: &[u8], prefix: &[u8]) -> Vec<(Vec<u8>, Name)> {
        model
            .range(from.to_vec()..)
            .filter(|(k, _)| k.starts_with(prefix) && k[..] >= *prefix)
            .filter(|(_, n)| n.kind != Kind::Gone)
            .map(|(k, n)| (k.clone(), n.clone()))
            .collect()
    }

    #[test]
    fn listings_match_a_model_through_flushes_merges_and_reopens() {
        for seed in 1..=12u64 {
            rt().block_on(async {
                let disk = SimDisk::new(seed, SimFaults::default());
                let dir = Path::new("/names");
                let mut names = Names::new(disk.clone(), dir, 7, 16 << 10);
                let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let mut model: BTreeMap<Vec<u8>, Name> = BTreeMap::new();
                let mut seq = 0u64;
                for step in 0..4000u64 {
                    let k = key(&mut rng);
                    let v = Version { hlc: (step + 1) << 16, origin: 1 };
                    let n = match rng.below(10) {
                        0..=5 => Name::live(
                            v,
                            rng.below(1 << 30),
                            step,
                            [(step % 251) as u8; 16],
                            &"image/jpeg".into(),
                        ),
                        6..=7 => Name::tombstone(v, step),
                        _ => Name::gone(),
                    };
                    seq += 1;
                    names.apply(&k, n.clone());
                    model.insert(k, n);
                    if names.flush_due() || rng.below(500) == 0 {
                        let s = seq;
                        names
                            .flush(|| Watermark { max_seq: s, in_flight: vec![s - 1] })
                            .await
                            .expect("flush");
                    }
                    while names.merge_due() {
                        assert!(names.merge(None).await.expect("merge"));
                    }
                    if rng.below(400) == 0 || step == 3999 {
                        let prefix: &[u8] = [&b""[..], b"photo", b"photos/", b"photos/a", b"video/a/b/"]
                            [rng.below(5) as usize];
                        let from = key(&mut rng);
                        let from: &[u8] = if rng.below(2) == 0 { &from } else { b"" };
                        let max = [1usize, 3, 50, 1000][rng.below(4) as usize];
                        let got = all(&names, from, prefix, max).await;
                        let got: Vec<(Vec<u8>, Name)> = got
                            .into_iter()
                            .filter(|(_, n)| n.kind != Kind::Gone)
                            .map(|(k, n)| (k.into(), n))
                            .collect();
                        assert_eq!(got, expect(&model, from, prefix), "seed {seed} step {step}");
                    }
                }
                let (_, runs, _) = names.run_counts();
                assert!(runs <= RUNS_MAX, "{runs} runs");
                assert!(names.stats.borrow().merges > 0, "seed {seed}: merges happened");
                // Reopened from its runs alone, after a last flush.
                names.flush(|| Watermark { max_seq: seq, in_flight: vec![] }).await.expect("flush");
                let files = disk.list_dir(dir).await.expect("list");
                names = Names::new(disk.clone(), dir, 7, 16 << 10);
                match names.open(&files, false).await.expect("open") {
                    Opened::Runs(m) => assert_eq!(m, Watermark { max_seq: seq, in_flight: vec![] }),
                    other => panic!("seed {seed}: {other:?}"),
                }
                let got: Vec<(Vec<u8>, Name)> = all(&names, b"", b"", 100)
                    .await
                    .into_iter()
                    .filter(|(_, n)| n.kind != Kind::Gone)
                    .map(|(k, n)| (k.into(), n))
                    .collect();
                assert_eq!(got, expect(&model, b"", b""), "seed {seed} after reopening");
            });
        }
    }

    #[test]
    fn a_damaged_run_is_reported_lost_and_a_merged_input_removed() {
        rt().block_on(async {
            let disk = SimDisk::new(5, SimFaults::default());
            let dir = Path::new("/names");
            let names = Names::new(disk.clone(), dir, 3, 1 << 20);
            for r in 0..RUNS_PER_MERGE as u32 {
                for i in 0..1000u32 {
                    let k = format!("bucket/key-{:05}", i * 4 + r);
                    names.apply(
                        k.as_bytes(),
                        Name::live(Version { hlc: 1, origin: 1 }, i as u64, 0, [1; 16], &"".into()),
                    );
                }
                names.flush(|| Watermark { max_seq: r as u64, in_flight: vec![] }).await.expect("flush");
            }
            assert!(names.merge(None).await.expect("merge"));
            let merged = run_name(1, RUNS_PER_MERGE as u64);
            let files = disk.list_dir(dir).await.expect("list");
            assert_eq!(files, vec![merged.clone()]);
            // An input the merge had not removed yet when the power went: removed at open,
            // unread (an empty file would fail every check).
            let leftover = dir.join(run_name(2, 2));
            drop(disk.open(&leftover, podstore_disks::OpenMode::CreateNew).await.expect("create"));
            let files = disk.list_dir(dir).await.expect("list");
            let reopened = Names::new(disk.clone(), dir, 3, 1 << 20);
            let opened = reopened.open(&files, false).await.expect("open");
            assert!(
                matches!(opened, Opened::Runs(ref m) if m.max_seq == RUNS_PER_MERGE as u64 - 1),
                "{opened:?}"
            );
            assert_eq!(disk.list_dir(dir).await.expect("list"), vec![merged.clone()]);
            assert_eq!(all(&reopened, b"", b"bucket/", 333).await.len(), 4000);
            // A run that is not a run is damage: the index must be rebuilt.
            drop(
                disk.open(&dir.join(run_name(9, 9)), podstore_disks::OpenMode::CreateNew)
                    .await
                    .expect("create"),
            );
            let files = disk.list_dir(dir).await.expect("list");
            let lost = Names::new(disk.clone(), dir, 3, 1 << 20);
            assert!(matches!(lost.open(&files, false).await.expect("open"), Opened::Lost(_)));
            // A flipped byte in a data block is found when the block is read.
            let file = disk.open(&dir.join(&merged), podstore_disks::OpenMode::Existing).await.expect("open");
            let mut buf = disk.alloc_buf(4096).await;
            buf.set_len(4096);
            let (r, mut buf) = disk.read_at(&file, 4096 + 4096, buf).await;
            r.expect("read");
            buf.as_mut_slice()[100] ^= 1;
            let (r, _) = disk.write_at(&file, 4096 + 4096, buf).await;
            r.expect("write");
            let e = reopened.list(b"", b"", 10).await.expect_err("damage is found");
            assert!(matches!(e, Error::Damaged { .. }), "{e}");
        });
    }
}
