//! The shard's side of its name index ([`crate::names`]): kept in step with the index at every
//! change of a key, flushed with every checkpoint and when its memtable is full, rebuilt from
//! the records when it was lost, and read by listings through the index (a name is shown live
//! only while the index holds the key live).

use super::*;
use crate::files::NAMES_DAMAGED_FILE as DAMAGED_FILE;
use crate::names::{Kind, Listed, Name, Watermark};

impl<I: Io> Shard<I> {
    /// Records a key's new state in the name index (nothing while it is out of service).
    pub(crate) fn names_apply(&self, key: &[u8], name: Name) {
        if self.names_ready.get() {
            self.names.apply(key, name);
        }
    }

    /// Takes the name index out of service after a run failed its checks, and leaves a mark
    /// ([`DAMAGED_FILE`]) so the next start rebuilds it from the records (before the node is
    /// ready). Returns the listing's error.
    async fn names_damaged(&self, e: Error) -> Error {
        tracing::error!("shard {}: name index out of service until the next start: {e}", self.id);
        self.names_ready.set(false);
        self.names.drop_memtable();
        if !self.cfg.read_only {
            let path = self.dir.join(DAMAGED_FILE);
            if let Ok(f) = self.io.open(&path, OpenMode::CreateNew).await {
                drop(f);
                let _ = self.io.sync_dir(&self.dir).await;
            }
        }
        Error::NamesUnavailable {
            shard: self.id,
            reason: "its name index failed its checks and is rebuilt at the next start".into(),
        }
    }

    /// What the records reflect now: every sequence reserved so far but those in flight.
    pub(crate) fn names_watermark(&self) -> Watermark {
        let blobs = self.files.blobs.borrow();
        Watermark {
            max_seq: self.writes.next_seq.get() - 1,
            in_flight: blobs
                .values()
                .flat_map(|b| b.in_flight.borrow().values().copied().collect::<Vec<_>>())
                .collect(),
        }
    }

    /// Whether [`Shard::names_maintain`] has work to do.
    pub fn names_due(&self) -> bool {
        self.names_ready.get()
            && !self.cfg.read_only
            && self.fenced.borrow().is_none()
            && (self.names.flush_due() || self.names.merge_due())
    }

    /// Background upkeep of the name index: writes the memtable as a run when it is full and
    /// merges runs when they are due, the merges within the disk's background `budget` (a
    /// flush is a few MiB, part of bounding the memtable's memory: not paced). Returns whether
    /// it did anything.
    pub async fn names_maintain(&self, budget: Option<&crate::budget::IoBudget>) -> Result<bool> {
        if !self.names_ready.get() || self.cfg.read_only || self.fenced.borrow().is_some() {
            return Ok(false);
        }
        let mut did = false;
        if self.names.flush_due() {
            self.names.flush(|| self.names_watermark()).await?;
            did = true;
        }
        if self.names.merge_due() {
            did |= self.names.merge(budget).await?;
        }
        Ok(did)
    }

    /// Up to `max` (> 0) of the keys this disk holds that start with `prefix`, from `from` on,
    /// in byte order: live objects with what a listing shows, and tombstones (their version
    /// hides an older copy of the key on another disk). `next` is where to go on from.
    pub async fn list_names(&self, from: &[u8], prefix: &[u8], max: usize) -> Result<Listed> {
        if !self.names_ready.get() {
            return Err(Error::Busy {
                shard: self.id,
                what:
                    "listing: the disk's name index is out of service until it is rebuilt at the next start"
                        .into(),
            });
        }
        let mut page = match self.names.list(from, prefix, max).await {
            Ok(p) => p,
            Err(e @ Error::Damaged { .. }) => return Err(self.names_damaged(e).await),
            Err(e) => return Err(e),
        };
        // A name is listed live only while the index holds the key live. A tombstone whose
        // key the index holds live is stale (its record was damaged and quarantined after the
        // run that holds the tombstone was written, and the index kept the older record): the
        // index wins, read from the record it points to, and the name index is repaired.
        let mut stale = Vec::new();
        {
            let ix = self.index.borrow();
            page.entries.retain(|(k, n)| {
                let held = ix.overflow_get(k).or_else(|| ix.main_get(self.fp(k)));
                match n.kind {
                    Kind::Gone => false,
                    Kind::Tombstone => {
                        if let Some(l) = held.filter(|l| !l.is_tombstone()) {
                            stale.push((k.clone(), l));
                        }
                        true
                    }
                    Kind::Live => held.is_some_and(|l| !l.is_tombstone()),
                }
            });
        }
        for (key, loc) in stale {
            let Some((k, name)) = self.name_at(loc).await? else { continue };
            if k[..] != key[..] {
                continue; // another key of the same fingerprint: the tombstone stands
            }
            self.names_apply(&key, name.clone());
            if let Some(e) = page.entries.iter_mut().find(|(ek, _)| *ek == key) {
                e.1 = name;
            }
        }
        Ok(page)
    }

    /// The name index's memory in RAM (bytes), its runs, the entries and bytes they hold.
    pub fn names_footprint(&self) -> NamesFootprint {
        let (entries, runs, bytes) = self.names.run_counts();
        let st = self.names.stats.borrow();
        NamesFootprint {
            memory_bytes: self.names.memory_bytes(),
            runs: runs as u64,
            run_entries: entries,
            run_bytes: bytes,
            flushes: st.flushes,
            merges: st.merges,
            written_bytes: st.bytes_written,
            ready: self.names_ready.get(),
        }
    }

    /// Builds the name index again from the index and the records it points to (a header
    /// read, and a footer read for an object's digest), in the order of the records on disk.
    /// Runs written on the way claim no records, so a crash before the end rebuilds again;
    /// the last run claims them all. Returns the names written.
    pub(crate) async fn names_rebuild(&self, files: &[String]) -> Result<u64> {
        self.names.clear(files).await?;
        let mut locs: Vec<Loc> = self.entries().into_iter().map(|(_, _, l)| l).collect();
        locs.sort_by_key(|l| (l.blob(), l.offset()));
        let (mut done, total) = (0u64, locs.len());
        let mut said = std::time::Instant::now();
        for (i, loc) in locs.into_iter().enumerate() {
            if said.elapsed() >= std::time::Duration::from_secs(10) {
                tracing::info!("shard {}: rebuilding the name index: {i} of {total} records read", self.id);
                said = std::time::Instant::now();
            }
            let Some((key, name)) = self.name_at(loc).await? else { continue };
            self.names.apply(&key, name);
            done += 1;
            if self.names.flush_due() {
                self.names.flush(Watermark::default).await?;
            }
        }
        self.names.flush(|| self.names_watermark()).await?;
        while self.names.merge_due() {
            self.names.merge(None).await?;
        }
        if files.iter().any(|f| f == DAMAGED_FILE) {
            self.io.remove(&self.dir.join(DAMAGED_FILE)).await.map_err(|e| self.disk_err(e))?;
            self.io.sync_dir(&self.dir).await.map_err(|e| self.disk_err(e))?;
        }
        Ok(done)
    }

    /// The key and name of the record at `loc` (None if it does not read back: the scrub and
    /// reads deal with that record).
    async fn name_at(&self, loc: Loc) -> Result<Option<(Vec<u8>, Name)>> {
        let Ok((h, key, attrs)) = self.read_header(loc).await? else { return Ok(None) };
        if h.is_tombstone() {
            return Ok(Some((key, Name::tombstone(h.version, h.created_ms))));
        }
        let Some(blob) = self.blob(loc.blob()) else { return Ok(None) };
        let Ok(footer) = self.read_footer(&blob, loc.offset(), &h).await? else { return Ok(None) };
        Ok(Some((key, Name::live(h.version, h.object_len, h.created_ms, footer.digest, &attrs))))
    }
}

/// The name index's size and work, for stats and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamesFootprint {
    pub memory_bytes: u64,
    pub runs: u64,
    pub run_entries: u64,
    pub run_bytes: u64,
    pub flushes: u64,
    pub merges: u64,
    pub written_bytes: u64,
    pub ready: bool,
}
