//! Which disk holds a key, and which takes its writes, when disks fill up, fail or are fenced.
//!
//! Every key has an order over the node's disks: weighted rendezvous hashing
//! (`crate::placement`), best score first. Its **home** is the first disk. A disk that
//! can no longer take writes (full, fenced read-only after a write error, failed) is marked
//! **spilled**: the writes of its keys go to the next disk in their order that takes writes.
//! So a key lives somewhere along its **chain**: its home, then the next disks for as long as
//! the one before is spilled. A read asks every readable disk of the chain and the newest
//! version wins (a tombstone included), which also keeps a disk that comes back with old data
//! (it was missing for a while, and its keys were written elsewhere) from serving stale bytes.
//!
//! The spilled set and every disk's placement weight are kept in `podstore.placement` on every
//! disk (written to a temporary file, fsynced, renamed, directory fsynced) before any write is
//! sent past a newly spilled disk; at startup the copy with the highest generation wins. The
//! movers (podstore-net's maintenance.rs) bring spilled keys back towards their homes once a disk before them
//! takes writes again; when every disk's mover found every key in place, the spilled marks of
//! the disks that take writes are cleared. Until then a spilled disk's chains cost a few extra
//! in-memory index lookups per read.
//!
//! **Tiers.** When some disks are `fast`, each tier has its own order and chains: a key's
//! chain is its chain over the fast disks, then its chain over the capacity disks, so its
//! writes land on the fast tier (on the capacity tier only when no fast disk of its chain takes
//! writes), and its reads look at both, newest version first, wherever the key is (written on
//! the fast tier, or moved to the capacity tier later). The movers bring keys home within
//! their tier; moves between tiers are the tiering jobs' (a draining disk's keys go to its tier,
//! else anywhere). With no fast disk, there is one order over every disk, as before.
//!
//! A disk added while the node runs joins spilled and taking writes: the keys it becomes the
//! home of are written to it at once, read from it and from where they were, and moved to it in
//! the background; the placement file records it (path, tier, cache mode) so that it is opened
//! at every start even though the configuration file does not name it.
//!
//! ## `podstore.placement`, format 1
//!
//! UTF-8 text, one record per line (`\n`), fields separated by one space, on every disk of the
//! node; written whole to `podstore.placement.tmp`, fsynced, renamed over the old file, the
//! directory fsynced. A file that fails any check is ignored (another disk's copy is used).
//!
//! ```text
//! podstore placement 1                      line 1: magic and format version
//! generation <u64>                          line 2: bumped at every change; highest wins
//! disk <id u32> <weight f64 > 0> <spilled|normal>          one per disk in the placement
//! draining <id u32>                         one per disk being (or done being) drained
//! added <id> <fast|capacity> <direct|buffered> <mount|any> <path to end of line>
//!                                           one per disk added while the node ran
//! crc <crc32c of every byte before "crc", 8 lowercase hex digits>
//! ```
//!
//! A line of any other shape makes the file unreadable (it is not guessed at). Format 1 is
//! the only one so far; a change to a line's shape takes a new magic line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use podstore_disks::{CacheMode, Tier};

use crate::placement::{score, Candidate};

/// The placement file's name, on every disk.
pub const PLACEMENT_FILE: &str = "podstore.placement";
const MAGIC: &str = "podstore placement 1";

/// What the placement file records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlacementState {
    pub generation: u64,
    /// Disk id → (placement weight, spilled).
    pub disks: BTreeMap<u32, (f64, bool)>,
    /// Disks being drained (or drained): they take no writes and their keys move away.
    pub draining: std::collections::BTreeSet<u32>,
    /// Disks added while the node ran (not in the configuration file): opened at every start.
    pub added: BTreeMap<u32, AddedDisk>,
}

/// A disk added while the node ran, as the placement file records it.
#[derive(Debug, Clone, PartialEq)]
pub struct AddedDisk {
    pub path: PathBuf,
    pub tier: Tier,
    pub cache: CacheMode,
    pub require_mount_point: bool,
}

/// Why a disk could not join the placement.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("disk {0} already has a place in the node's placement")]
    Known(u32),
    #[error("the placement file could not be written to any disk")]
    NotRecorded,
}

impl PlacementState {
    pub fn encode(&self) -> String {
        let mut s = format!("{MAGIC}\ngeneration {}\n", self.generation);
        for (id, (w, spilled)) in &self.disks {
            s.push_str(&format!("disk {id} {w} {}\n", if *spilled { "spilled" } else { "normal" }));
        }
        for id in &self.draining {
            s.push_str(&format!("draining {id}\n"));
        }
        for (id, a) in &self.added {
            let tier = a.tier.as_str();
            let cache = match a.cache {
                CacheMode::Direct => "direct",
                CacheMode::Buffered => "buffered",
            };
            // The path last: it is the rest of the line (checked free of line breaks).
            let mount = if a.require_mount_point { "mount" } else { "any" };
            s.push_str(&format!("added {id} {tier} {cache} {mount} {}\n", a.path.display()));
        }
        let crc = podstore_disks::crc::crc32c(s.as_bytes());
        s.push_str(&format!("crc {crc:08x}\n"));
        s
    }

    /// Decodes a placement file (None if it fails its checks).
    pub fn decode(text: &str) -> Option<PlacementState> {
        let at = text.rfind("crc ")?;
        let (body, crc) = text.split_at(at);
        let crc = u32::from_str_radix(crc.strip_prefix("crc ")?.trim_end(), 16).ok()?;
        if podstore_disks::crc::crc32c(body.as_bytes()) != crc {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let generation = lines.next()?.strip_prefix("generation ")?.parse().ok()?;
        let mut disks = BTreeMap::new();
        let mut draining = std::collections::BTreeSet::new();
        let mut added = BTreeMap::new();
        for l in lines {
            if let Some(rest) = l.strip_prefix("added ") {
                let f: Vec<&str> = rest.splitn(5, ' ').collect();
                let [id, tier, cache, mount, path] = f[..] else { return None };
                let a = AddedDisk {
                    path: PathBuf::from(path),
                    tier: match tier {
                        "fast" => Tier::Fast,
                        "capacity" => Tier::Capacity,
                        _ => return None,
                    },
                    cache: match cache {
                        "direct" => CacheMode::Direct,
                        "buffered" => CacheMode::Buffered,
                        _ => return None,
                    },
                    require_mount_point: match mount {
                        "mount" => true,
                        "any" => false,
                        _ => return None,
                    },
                };
                added.insert(id.parse().ok()?, a);
                continue;
            }
            let f: Vec<&str> = l.split(' ').collect();
            match f[..] {
                ["draining", id] => {
                    draining.insert(id.parse().ok()?);
                }
                ["disk", id, w, state] => {
                    let w: f64 = w.parse().ok().filter(|w: &f64| *w > 0.0 && w.is_finite())?;
                    let spilled = match state {
                        "spilled" => true,
                        "normal" => false,
                        _ => return None,
                    };
                    disks.insert(id.parse().ok()?, (w, spilled));
                }
                _ => return None,
            }
        }
        Some(PlacementState { generation, disks, draining, added })
    }

    /// The newest readable placement file among the disks' directories.
    pub fn load(dirs: &[PathBuf]) -> Option<PlacementState> {
        dirs.iter()
            .filter_map(|d| std::fs::read_to_string(d.join(PLACEMENT_FILE)).ok())
            .filter_map(|t| PlacementState::decode(&t))
            .max_by_key(|p| p.generation)
    }

    /// Writes the file durably into each directory; returns how many took it.
    pub fn save(&self, dirs: &[PathBuf]) -> usize {
        let text = self.encode();
        dirs.iter().filter(|d| write_durably(d, &text).is_ok()).count()
    }
}

fn write_durably(dir: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{PLACEMENT_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(PLACEMENT_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// One disk's routing flags.
#[derive(Debug, Default)]
struct Flags {
    /// Marked spilled (durably).
    spilled: AtomicBool,
    /// Takes writes now (not full, fenced or failed).
    writable: AtomicBool,
    /// Failed while the node ran (stopped answering, or reads fail): nothing is sent to it.
    failed: AtomicBool,
    /// Being drained: never writable again; its keys move to the other disks.
    draining: AtomicBool,
}

/// The disks keys are placed on, swapped whole when a disk is added.
#[derive(Debug, Default)]
struct Table {
    /// Every disk of the node, failed ones included (their keys keep their order).
    candidates: Vec<Candidate>,
    flags: BTreeMap<u32, Arc<Flags>>,
    /// The disks of the fast tier (the others are capacity disks).
    fast: std::collections::BTreeSet<u32>,
}

impl Table {
    /// Whether disks `a` and `b` are of the same tier.
    fn same_tier(&self, a: u32, b: u32) -> bool {
        self.fast.contains(&a) == self.fast.contains(&b)
    }
}

/// The node's routing state (shared by every core).
#[derive(Debug)]
pub struct Routes {
    /// Read on every request, replaced only when a disk joins.
    table: ArcSwap<Table>,
    /// The durable state and the directories it is kept in (one per candidate, in the table's
    /// order); the lock serializes updates.
    state: Mutex<(PlacementState, Vec<PathBuf>)>,
    /// Counts changes of where keys' writes go (a disk spilled, failed, drained, added, or
    /// takes writes again): a mover that found nothing to move waits for the next change.
    epoch: AtomicU64,
}

impl Routes {
    /// Routing over `candidates`, with the state loaded at startup; `writable` says which disks
    /// opened (the others are marked spilled at once).
    pub fn new(
        candidates: Vec<Candidate>,
        state: PlacementState,
        dirs: Vec<PathBuf>,
        writable: &[u32],
    ) -> Routes {
        let flags = candidates
            .iter()
            .map(|c| {
                let id = c.shard_id;
                let draining = state.draining.contains(&id);
                let f = Flags {
                    spilled: AtomicBool::new(state.disks.get(&id).is_some_and(|d| d.1)),
                    writable: AtomicBool::new(writable.contains(&id) && !draining),
                    failed: AtomicBool::new(false),
                    draining: AtomicBool::new(draining),
                };
                (id, Arc::new(f))
            })
            .collect();
        Routes {
            table: ArcSwap::from_pointee(Table { candidates, flags, fast: Default::default() }),
            state: Mutex::new((state, dirs)),
            epoch: AtomicU64::new(0),
        }
    }

    /// Marks disks `fast` as the fast tier (at startup).
    pub fn with_fast_tier(self, fast: impl IntoIterator<Item = u32>) -> Routes {
        let t = self.table.load_full();
        let fast = fast.into_iter().collect();
        self.table.store(Arc::new(Table { candidates: t.candidates.clone(), flags: t.flags.clone(), fast }));
        self
    }

    /// Whether the node has fast disks (two tiers).
    pub fn has_fast_tier(&self) -> bool {
        !self.table.load().fast.is_empty()
    }

    /// Whether disk `id` is of the fast tier.
    pub fn is_fast(&self, id: u32) -> bool {
        self.table.load().fast.contains(&id)
    }

    fn flag(&self, id: u32, which: impl Fn(&Flags) -> &AtomicBool) -> bool {
        self.table.load().flags.get(&id).is_some_and(|f| which(f).load(Ordering::Acquire))
    }

    fn set(&self, id: u32, which: impl Fn(&Flags) -> &AtomicBool, v: bool) -> Option<bool> {
        self.table.load().flags.get(&id).map(|f| which(f).swap(v, Ordering::AcqRel))
    }

    /// Every disk of the node (failed ones included), with its placement weight.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.table.load().candidates.clone()
    }

    /// Whether disk `id` has a place in the node's placement.
    pub fn knows(&self, id: u32) -> bool {
        self.table.load().flags.contains_key(&id)
    }

    /// Changes of where keys' writes go so far.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether disk `id` is marked spilled.
    pub fn is_spilled(&self, id: u32) -> bool {
        self.flag(id, |f| &f.spilled)
    }

    /// Whether disk `id` failed while the node ran.
    pub fn is_failed(&self, id: u32) -> bool {
        self.flag(id, |f| &f.failed)
    }

    /// Whether disk `id` is being drained (or was).
    pub fn is_draining(&self, id: u32) -> bool {
        self.flag(id, |f| &f.draining)
    }

    /// Whether disk `id` takes writes.
    pub fn is_writable(&self, id: u32) -> bool {
        self.flag(id, |f| &f.writable)
    }

    /// Disk `id` failed: no more requests go to it; its keys' writes go on along their chains
    /// and their reads to the other disks of the chain (and to peers). Blocking file I/O.
    pub fn fail(&self, id: u32, why: &str) {
        // No write goes to it from now on (before it shows as failed).
        self.set(id, |f| &f.writable, false);
        if self.set(id, |f| &f.failed, true) == Some(false) {
            tracing::error!("disk {id} failed: {why}; its requests fail fast, its objects come from peers");
        }
        self.spill(id, why);
    }

    /// Starts draining disk `id`: it takes no more writes, ever, and the movers send its keys
    /// to the other disks. Blocking file I/O. False if it is not a disk of this node.
    pub fn drain(&self, id: u32) -> bool {
        if !self.knows(id) {
            return false;
        }
        {
            let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
            g.0.draining.insert(id);
        }
        self.set(id, |f| &f.draining, true);
        if self.is_spilled(id) {
            // Already spilled: record the draining mark too.
            self.set(id, |f| &f.writable, false);
            let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let (state, dirs) = &mut *g;
            state.generation += 1;
            state.save(&self.dirs_where(dirs, |id| !self.is_failed(id)));
        } else {
            self.spill(id, "draining");
        }
        self.changed();
        true
    }

    /// The directories of the disks `pick` chooses.
    fn dirs_where(&self, dirs: &[PathBuf], pick: impl Fn(u32) -> bool) -> Vec<PathBuf> {
        let t = self.table.load();
        t.candidates.iter().zip(dirs).filter(|(c, _)| pick(c.shard_id)).map(|(_, d)| d.clone()).collect()
    }

    /// The disks marked spilled.
    pub fn spilled(&self) -> Vec<u32> {
        let t = self.table.load();
        t.flags.iter().filter(|(_, f)| f.spilled.load(Ordering::Acquire)).map(|(id, _)| *id).collect()
    }

    /// The key's disks among those `pick` chooses, best first.
    fn order_among(t: &Table, fp: u64, pick: impl Fn(u32) -> bool) -> Vec<u32> {
        let mut v: Vec<(f64, u32)> = t
            .candidates
            .iter()
            .filter(|c| c.weight > 0.0 && pick(c.shard_id))
            .map(|c| (score(fp, c), c.shard_id))
            .collect();
        v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// The key's chain among the disks `pick` chooses: its home there, then the next ones
    /// while the one before is spilled.
    fn chain_among(&self, t: &Table, fp: u64, pick: impl Fn(u32) -> bool + Copy) -> Vec<u32> {
        // The home as `placement::place` finds it, without a list of the chosen disks.
        let home = t
            .candidates
            .iter()
            .filter(|c| c.weight > 0.0 && pick(c.shard_id))
            .map(|c| (score(fp, c), c.shard_id))
            .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
            .map(|(_, id)| id);
        match home {
            None => Vec::new(),
            Some(h) if !self.is_spilled(h) => vec![h],
            Some(_) => {
                let mut out = Vec::new();
                for id in Self::order_among(t, fp, pick) {
                    out.push(id);
                    if !self.is_spilled(id) {
                        break;
                    }
                }
                out
            }
        }
    }

    /// The key's disks, best first, whatever their tier (the tests' view of placement).
    #[cfg(test)]
    pub fn order(&self, fp: u64) -> Vec<u32> {
        Self::order_among(&self.table.load(), fp, |_| true)
    }

    /// The key's disks of the tier of disk `on`, best first (every disk without tiers).
    pub fn order_in_tier_of(&self, fp: u64, on: u32) -> Vec<u32> {
        let t = self.table.load();
        Self::order_among(&t, fp, |id| t.same_tier(id, on))
    }

    /// The disks where the key may be: its chain over the fast tier, then its chain over the
    /// capacity tier (one chain over every disk when there is no fast disk).
    pub fn chain(&self, fp: u64) -> Vec<u32> {
        let t = self.table.load();
        if t.fast.is_empty() {
            return self.chain_among(&t, fp, |_| true);
        }
        let mut c = self.chain_among(&t, fp, |id| t.fast.contains(&id));
        c.extend(self.chain_among(&t, fp, |id| !t.fast.contains(&id)));
        c
    }

    /// The disk that takes the key's writes: the first of its chain that takes writes (None:
    /// none does, the node is full for this key).
    pub fn write_target(&self, fp: u64) -> Option<u32> {
        self.chain(fp).into_iter().find(|&id| self.is_writable(id))
    }

    /// The capacity-tier disk that takes the key's objects moved from the fast tier: the first
    /// of its capacity chain that takes writes.
    pub fn capacity_target(&self, fp: u64) -> Option<u32> {
        let t = self.table.load();
        self.chain_among(&t, fp, |id| !t.fast.contains(&id)).into_iter().find(|&id| self.is_writable(id))
    }

    /// Where a mover takes the key it found on disk `on`: the first disk of its chain in the
    /// tier of `on` that takes writes (a draining disk's keys go to the other tier when its
    /// own has none).
    pub fn move_target(&self, fp: u64, on: u32) -> Option<u32> {
        let t = self.table.load();
        let own =
            self.chain_among(&t, fp, |id| t.same_tier(id, on)).into_iter().find(|&id| self.is_writable(id));
        match own {
            None if self.is_draining(on) => self.write_target(fp),
            own => own,
        }
    }

    /// Disk `id` takes no more writes from now on (the first step of `spill`, which the caller
    /// runs next: no file I/O here).
    pub fn stop_writes(&self, id: u32) {
        self.set(id, |f| &f.writable, false);
    }

    /// Disk `id` stopped taking writes (full, fenced or failed). Once the placement file marks
    /// it spilled on the disks that take writes, its keys' writes go on along their chains.
    /// Blocking file I/O: call it off the cores' threads.
    pub fn spill(&self, id: u32, why: &str) {
        self.set(id, |f| &f.writable, false);
        if self.is_spilled(id) {
            return;
        }
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_spilled(id) {
            return; // marked while this call waited for the lock
        }
        let (state, dirs) = &mut *g;
        state.generation += 1;
        for c in &self.table.load().candidates {
            let e = state.disks.entry(c.shard_id).or_insert((c.weight, false));
            if c.shard_id == id {
                e.1 = true;
            }
        }
        let saved = state.save(&self.dirs_where(dirs, |d| self.is_writable(d) || d == id));
        if saved == 0 {
            tracing::error!(
                "disk {id} ({why}) could not be marked spilled on any disk: its keys' writes fail"
            );
            return;
        }
        tracing::warn!("disk {id} takes no more writes ({why}); its keys' writes go to the next disks");
        self.set(id, |f| &f.spilled, true);
        self.changed();
    }

    /// Disk `id` takes writes again (room was freed): it stays spilled (its keys may still be
    /// on the next disks of their chains), but its keys' writes come home.
    pub fn unfill(&self, id: u32) {
        if self.is_failed(id) || self.is_draining(id) {
            return;
        }
        if self.set(id, |f| &f.writable, true) == Some(false) {
            tracing::info!("disk {id} takes writes again");
            self.changed();
        }
    }

    /// Adds a disk while the node runs (blocking file I/O). It joins spilled and taking
    /// writes: the keys it becomes the home of are written to it from now on, and read from it
    /// and from the disks after it in their order, where they were, until the movers have
    /// brought them (`clear_spills`). The placement file records it, with what is needed to
    /// open it at every start, on every disk that takes writes and on the new one, before it
    /// takes a write.
    pub fn add(&self, c: Candidate, dir: PathBuf, added: AddedDisk) -> Result<(), AddError> {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let id = c.shard_id;
        let is_fast = added.tier == Tier::Fast;
        if self.knows(id) {
            return Err(AddError::Known(id));
        }
        let (state, dirs) = &mut *g;
        let mut next = state.clone();
        next.generation += 1;
        for c in &self.table.load().candidates {
            next.disks.entry(c.shard_id).or_insert((c.weight, self.is_spilled(c.shard_id)));
        }
        next.disks.insert(id, (c.weight, true));
        next.added.insert(id, added);
        let mut targets = self.dirs_where(dirs, |d| self.is_writable(d));
        targets.push(dir.clone());
        if next.save(&targets) == 0 {
            return Err(AddError::NotRecorded);
        }
        *state = next;
        dirs.push(dir);
        let old = self.table.load();
        let mut candidates = old.candidates.clone();
        candidates.push(c);
        let mut flags = old.flags.clone();
        let f = Flags { spilled: AtomicBool::new(true), writable: AtomicBool::new(true), ..Flags::default() };
        flags.insert(id, Arc::new(f));
        let mut fast = old.fast.clone();
        if is_fast {
            fast.insert(id);
        }
        self.table.store(Arc::new(Table { candidates, flags, fast }));
        self.changed();
        tracing::info!("disk {id} joined the placement with weight {}", c.weight);
        Ok(())
    }

    /// Clears the spilled marks of the disks that take writes, once every key sits on the
    /// disk that takes its writes (the movers found nothing to move at routing epoch `epoch`):
    /// their keys' chains end at them again. Nothing is cleared if the routing changed since.
    /// Blocking file I/O. Returns the disks cleared.
    pub fn clear_spills(&self, epoch: u64) -> Vec<u32> {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.epoch() != epoch {
            return Vec::new();
        }
        let clear: Vec<u32> = self
            .table
            .load()
            .flags
            .iter()
            .filter(|(_, f)| {
                let on = |a: &AtomicBool| a.load(Ordering::Acquire);
                on(&f.spilled) && on(&f.writable) && !on(&f.failed) && !on(&f.draining)
            })
            .map(|(id, _)| *id)
            .collect();
        if clear.is_empty() {
            return clear;
        }
        let (state, dirs) = &mut *g;
        let mut next = state.clone();
        next.generation += 1;
        for id in &clear {
            if let Some(d) = next.disks.get_mut(id) {
                d.1 = false;
            }
        }
        if next.save(&self.dirs_where(dirs, |d| self.is_writable(d))) == 0 {
            return Vec::new();
        }
        *state = next;
        for &id in &clear {
            self.set(id, |f| &f.spilled, false);
        }
        tracing::info!("disks {clear:?}: every key is where it belongs; no longer spilled");
        clear
    }

    /// Records the weights (and spilled marks) of the current disks, at startup.
    pub fn persist(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (state, dirs) = &mut *g;
        let mut next =
            PlacementState { generation: state.generation + 1, disks: BTreeMap::new(), ..state.clone() };
        for c in &self.table.load().candidates {
            next.disks.insert(c.shard_id, (c.weight, self.is_spilled(c.shard_id)));
        }
        if next.disks == state.disks {
            return;
        }
        next.save(&self.dirs_where(dirs, |d| self.is_writable(d)));
        *state = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(n: u32, spilled: &[u32], writable: &[u32]) -> Routes {
        let candidates: Vec<Candidate> = (0..n).map(|i| Candidate { shard_id: i, weight: 1.0 }).collect();
        let mut st = PlacementState::default();
        for c in &candidates {
            st.disks.insert(c.shard_id, (1.0, spilled.contains(&c.shard_id)));
        }
        Routes::new(
            candidates,
            st,
            (0..n).map(|i| PathBuf::from(format!("/nonexistent/{i}"))).collect(),
            writable,
        )
    }

    #[test]
    fn with_a_fast_tier_writes_land_on_it_and_reads_look_at_both_tiers() {
        let fps = || (0..6000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Disks 0 and 1 fast, 2 to 4 capacity.
        let r = routes(5, &[], &[0, 1, 2, 3, 4]).with_fast_tier([0, 1]);
        assert!(r.has_fast_tier() && r.is_fast(1) && !r.is_fast(2));
        let mut homes = [0u32; 5];
        for f in fps() {
            let chain = r.chain(f);
            assert!(chain.len() == 2 && r.is_fast(chain[0]) && !r.is_fast(chain[1]), "{chain:?}");
            assert_eq!(r.write_target(f), Some(chain[0]), "writes land on the fast tier");
            // Movers keep keys in their tier.
            assert_eq!(r.move_target(f, chain[1]), Some(chain[1]));
            assert_eq!(r.move_target(f, chain[0]), Some(chain[0]));
            assert_eq!(r.order_in_tier_of(f, chain[1])[0], chain[1]);
            homes[chain[0] as usize] += 1;
            homes[chain[1] as usize] += 1;
        }
        for (id, &n) in homes.iter().enumerate() {
            let want = if id < 2 { 3000.0 } else { 2000.0 };
            assert!((n as f64 - want).abs() < want * 0.1, "disk {id}: home of {n} keys");
        }
        // A fast disk that takes no writes: its keys' writes go to the other fast disk, and
        // reads look there too.
        let r = routes(5, &[0], &[1, 2, 3, 4]).with_fast_tier([0, 1]);
        for f in fps() {
            let chain = r.chain(f);
            if chain[0] == 0 {
                assert_eq!(chain[..2], [0, 1]);
                assert_eq!(r.write_target(f), Some(1));
                assert_eq!(r.move_target(f, 0), Some(1));
            }
            assert!(!r.is_fast(*chain.last().expect("a chain")));
        }
        // No fast disk takes writes: they go to the capacity tier.
        let r = routes(5, &[0, 1], &[2, 3, 4]).with_fast_tier([0, 1]);
        for f in fps() {
            let chain = r.chain(f);
            assert_eq!(chain.len(), 3, "{chain:?}");
            assert_eq!(r.write_target(f), Some(chain[2]));
            assert_eq!(r.move_target(f, chain[0]), None, "fast keys stay while the tier is full");
        }
        // Without fast disks, one chain over every disk as before.
        let r = routes(5, &[], &[0, 1, 2, 3, 4]);
        assert!(fps().all(|f| r.chain(f).len() == 1));
    }

    #[test]
    fn the_state_file_round_trips_and_rejects_damage() {
        let mut st = PlacementState { generation: 7, ..Default::default() };
        st.disks.insert(0, (931.5, false));
        st.disks.insert(3, (1.0, true));
        let t = st.encode();
        assert_eq!(PlacementState::decode(&t), Some(st));
        assert_eq!(PlacementState::decode(&t.replace("spilled", "spiLled")), None);
        assert_eq!(PlacementState::decode(""), None);
    }

    #[test]
    fn added_disks_are_recorded_and_round_trip() {
        let mut st = PlacementState { generation: 3, ..Default::default() };
        st.disks.insert(5, (2.0, true));
        let a = AddedDisk {
            path: PathBuf::from("/srv/podstore/disk 5"),
            tier: Tier::Fast,
            cache: CacheMode::Buffered,
            require_mount_point: false,
        };
        st.added.insert(5, a);
        let t = st.encode();
        assert_eq!(PlacementState::decode(&t), Some(st), "a path with a space survives");
        let bad = t.replace("added 5 fast", "added 5 warm");
        assert_eq!(PlacementState::decode(&bad), None, "an unknown tier is damage");
    }

    #[test]
    fn an_added_disk_joins_spilled_and_its_keys_chain_to_where_they_were() {
        let dir = std::env::temp_dir().join(format!("podstore-route-{}", std::process::id()));
        let dirs: Vec<PathBuf> = (0..3).map(|i| dir.join(i.to_string())).collect();
        for d in &dirs {
            std::fs::create_dir_all(d).expect("test setup");
        }
        let candidates: Vec<Candidate> = (0..2).map(|i| Candidate { shard_id: i, weight: 1.0 }).collect();
        let r = Routes::new(candidates, PlacementState::default(), dirs[..2].to_vec(), &[0, 1]);
        r.persist();
        let before: Vec<(u64, u32)> =
            (0..2000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).map(|f| (f, r.chain(f)[0])).collect();
        let e0 = r.epoch();
        let added = AddedDisk {
            path: dirs[2].clone(),
            tier: Tier::Capacity,
            cache: CacheMode::Direct,
            require_mount_point: true,
        };
        r.add(Candidate { shard_id: 2, weight: 1.0 }, dirs[2].clone(), added.clone()).expect("test setup");
        assert!(r.add(Candidate { shard_id: 2, weight: 1.0 }, dirs[2].clone(), added.clone()).is_err());
        assert!(r.epoch() > e0, "the movers look again");
        assert!(r.is_spilled(2) && r.is_writable(2));
        let mut homed = 0;
        for (f, old) in &before {
            let chain = r.chain(*f);
            if chain[0] == 2 {
                homed += 1;
                assert_eq!(chain, vec![2, *old], "a key homed on the new disk is still read where it was");
                assert_eq!(r.write_target(*f), Some(2));
            } else {
                assert_eq!(chain, vec![*old], "other keys stay where they are");
            }
        }
        assert!((500..830).contains(&homed), "about a third of the keys: {homed}");
        // Every disk records it, the new one included.
        for d in &dirs {
            let st = PlacementState::load(std::slice::from_ref(d)).expect("test setup");
            assert_eq!(st.added.get(&2), Some(&added));
            assert_eq!(st.disks.get(&2), Some(&(1.0, true)));
        }
        // Clearing waits for the epoch the movers settled in.
        assert!(r.clear_spills(e0).is_empty(), "a stale epoch clears nothing");
        assert_eq!(r.clear_spills(r.epoch()), vec![2]);
        assert!(!r.is_spilled(2));
        assert_eq!(PlacementState::load(&dirs).expect("test setup").disks.get(&2), Some(&(1.0, false)));
        let (f, _) = before.iter().find(|(f, _)| r.chain(*f)[0] == 2).expect("test setup");
        assert_eq!(r.chain(*f), vec![2]);
        std::fs::remove_dir_all(&dir).expect("test setup");
    }

    #[test]
    fn chains_run_past_spilled_disks_and_writes_go_to_the_first_that_takes_them() {
        let all: Vec<u32> = (0..4).collect();
        let r = routes(4, &[], &all);
        let fp = 0x1234_5678_9abc_def0;
        let order = r.order(fp);
        assert_eq!(r.chain(fp), vec![order[0]], "nothing spilled: the home alone");
        assert_eq!(r.write_target(fp), Some(order[0]));
        let r = routes(4, &[order[0], order[1]], &[order[1], order[2], order[3]]);
        assert_eq!(r.chain(fp), order[..3].to_vec());
        assert_eq!(
            r.write_target(fp),
            Some(order[1]),
            "a spilled disk that still takes writes (fenced later) is used"
        );
        let r = routes(4, &[order[0]], &[order[2], order[3]]);
        assert_eq!(r.write_target(fp), None, "the next disk is not spilled: writes wait for it to be marked");
        // Keys of other homes are not affected.
        let other =
            (0..1000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).find(|&f| r.order(f)[0] != order[0]);
        let f = other.expect("another home");
        assert_eq!(r.chain(f).len(), 1);
    }
}
