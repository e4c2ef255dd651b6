//! Which disk holds a key, and which takes its writes, when disks fill up, fail or are fenced.
//!
//! Every key has an order over the node's disks: weighted rendezvous hashing
//! (`podstore_engine::placement`), best score first. Its **home** is the first disk. A disk that
//! can no longer take writes (full, fenced read-only after a write error, failed) is marked
//! **spilled**: the writes of its keys go to the next disk in their order that takes writes.
//! So a key lives somewhere along its **chain**: its home, then the next disks for as long as
//! the one before is spilled. A read asks every readable disk of the chain and the newest
//! version wins (a tombstone included), which also keeps a disk that comes back with old data
//! (it was missing for a while, and its keys were written elsewhere) from serving stale bytes.
//!
//! The spilled set and every disk's placement weight are kept in `podstore.placement` on every
//! disk (written to a temporary file, fsynced, renamed, directory fsynced) before any write is
//! sent past a newly spilled disk; at startup the copy with the highest generation wins. A disk
//! stays spilled until it is drained or rebalanced back (later work): its chains cost a few
//! extra in-memory index lookups per read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use podstore_engine::placement::{score, Candidate};

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
        let crc = crc32c::crc32c(s.as_bytes());
        s.push_str(&format!("crc {crc:08x}\n"));
        s
    }

    /// Decodes a placement file (None if it fails its checks).
    pub fn decode(text: &str) -> Option<PlacementState> {
        let at = text.rfind("crc ")?;
        let (body, crc) = text.split_at(at);
        let crc = u32::from_str_radix(crc.strip_prefix("crc ")?.trim_end(), 16).ok()?;
        if crc32c::crc32c(body.as_bytes()) != crc {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let generation = lines.next()?.strip_prefix("generation ")?.parse().ok()?;
        let mut disks = BTreeMap::new();
        let mut draining = std::collections::BTreeSet::new();
        for l in lines {
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
        Some(PlacementState { generation, disks, draining })
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

/// The node's routing state (shared by every core).
#[derive(Debug)]
pub struct Routes {
    /// Every configured disk, failed ones included (their keys keep their order).
    pub candidates: Vec<Candidate>,
    /// Disks marked spilled (durably), by id.
    spilled: BTreeMap<u32, AtomicBool>,
    /// Disks that take writes now (not full, fenced or failed), by id.
    writable: BTreeMap<u32, AtomicBool>,
    /// Disks that failed while the node ran (stopped answering, or reads fail): nothing is
    /// sent to them any more.
    failed: BTreeMap<u32, AtomicBool>,
    /// Disks being drained: never writable again; their keys move to the other disks.
    draining: BTreeMap<u32, AtomicBool>,
    /// The durable state and the directories it is kept in; the lock serializes updates.
    state: Mutex<(PlacementState, Vec<PathBuf>)>,
    /// Counts changes of where keys' writes go (a disk spilled, failed, drained, or takes
    /// writes again): a mover that found nothing to move waits for the next change.
    epoch: std::sync::atomic::AtomicU64,
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
        let spilled = candidates
            .iter()
            .map(|c| (c.shard_id, AtomicBool::new(state.disks.get(&c.shard_id).is_some_and(|d| d.1))))
            .collect();
        let w: BTreeMap<u32, AtomicBool> = candidates
            .iter()
            .map(|c| (c.shard_id, AtomicBool::new(writable.contains(&c.shard_id))))
            .collect();
        let failed = candidates.iter().map(|c| (c.shard_id, AtomicBool::new(false))).collect();
        let draining: BTreeMap<u32, AtomicBool> = candidates
            .iter()
            .map(|c| (c.shard_id, AtomicBool::new(state.draining.contains(&c.shard_id))))
            .collect();
        for (id, d) in &draining {
            if d.load(Ordering::Relaxed) {
                if let Some(x) = w.get(id) {
                    x.store(false, Ordering::Relaxed);
                }
            }
        }
        Routes {
            candidates,
            spilled,
            writable: w,
            failed,
            draining,
            state: Mutex::new((state, dirs)),
            epoch: std::sync::atomic::AtomicU64::new(0),
        }
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
        self.spilled.get(&id).is_some_and(|s| s.load(Ordering::Acquire))
    }

    /// Whether disk `id` failed while the node ran.
    pub fn is_failed(&self, id: u32) -> bool {
        self.failed.get(&id).is_some_and(|s| s.load(Ordering::Acquire))
    }

    /// Disk `id` failed: no more requests go to it; its keys' writes go on along their chains
    /// and their reads to the other disks of the chain (and to peers). Blocking file I/O.
    pub fn fail(&self, id: u32, why: &str) {
        // No write goes to it from now on (before it shows as failed).
        if let Some(w) = self.writable.get(&id) {
            w.store(false, Ordering::Release);
        }
        if let Some(f) = self.failed.get(&id) {
            if !f.swap(true, Ordering::AcqRel) {
                tracing::error!(
                    "disk {id} failed: {why}; its requests fail fast, its objects come from peers"
                );
            }
        }
        self.spill(id, why);
    }

    /// Whether disk `id` is being drained (or was).
    pub fn is_draining(&self, id: u32) -> bool {
        self.draining.get(&id).is_some_and(|s| s.load(Ordering::Acquire))
    }

    /// Starts draining disk `id`: it takes no more writes, ever, and the movers send its keys
    /// to the other disks. Blocking file I/O. False if it is not a disk of this node.
    pub fn drain(&self, id: u32) -> bool {
        let Some(d) = self.draining.get(&id) else { return false };
        {
            let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
            g.0.draining.insert(id);
        }
        d.store(true, Ordering::Release);
        if self.is_spilled(id) {
            // Already spilled: record the draining mark too.
            if let Some(w) = self.writable.get(&id) {
                w.store(false, Ordering::Release);
            }
            self.save_now();
        } else {
            self.spill(id, "draining");
        }
        self.changed();
        true
    }

    fn save_now(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (state, dirs) = &mut *g;
        state.generation += 1;
        let targets: Vec<PathBuf> = self
            .candidates
            .iter()
            .zip(dirs.iter())
            .filter(|(c, _)| !self.is_failed(c.shard_id))
            .map(|(_, d)| d.clone())
            .collect();
        state.save(&targets);
    }

    /// Whether disk `id` takes writes.
    pub fn is_writable(&self, id: u32) -> bool {
        self.writable.get(&id).is_some_and(|s| s.load(Ordering::Acquire))
    }

    /// The disks marked spilled.
    pub fn spilled(&self) -> Vec<u32> {
        self.spilled.iter().filter(|(_, s)| s.load(Ordering::Acquire)).map(|(id, _)| *id).collect()
    }

    /// The key's disks, best first.
    pub fn order(&self, fp: u64) -> Vec<u32> {
        let mut v: Vec<(f64, u32)> =
            self.candidates.iter().filter(|c| c.weight > 0.0).map(|c| (score(fp, c), c.shard_id)).collect();
        v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// The disks where the key may be: its home, then the next ones while the one before is
    /// spilled.
    pub fn chain(&self, fp: u64) -> Vec<u32> {
        let home = podstore_engine::placement::place(fp, &self.candidates);
        match home {
            None => Vec::new(),
            Some(h) if !self.is_spilled(h) => vec![h],
            Some(_) => {
                let mut out = Vec::new();
                for id in self.order(fp) {
                    out.push(id);
                    if !self.is_spilled(id) {
                        break;
                    }
                }
                out
            }
        }
    }

    /// The disk that takes the key's writes: the first of its chain that takes writes (None:
    /// none does, the node is full for this key).
    pub fn write_target(&self, fp: u64) -> Option<u32> {
        self.chain(fp).into_iter().find(|&id| self.is_writable(id))
    }

    /// Disk `id` stopped taking writes (full, fenced or failed). Once the placement file marks
    /// it spilled on the disks that take writes, its keys' writes go on along their chains.
    /// Blocking file I/O: call it off the cores' threads.
    pub fn spill(&self, id: u32, why: &str) {
        if let Some(w) = self.writable.get(&id) {
            w.store(false, Ordering::Release);
        }
        if self.is_spilled(id) {
            return;
        }
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_spilled(id) {
            return; // marked while this call waited for the lock
        }
        let (state, dirs) = &mut *g;
        state.generation += 1;
        for c in &self.candidates {
            let e = state.disks.entry(c.shard_id).or_insert((c.weight, false));
            if c.shard_id == id {
                e.1 = true;
            }
        }
        let targets: Vec<PathBuf> = self
            .candidates
            .iter()
            .zip(dirs.iter())
            .filter(|(c, _)| self.is_writable(c.shard_id) || c.shard_id == id)
            .map(|(_, d)| d.clone())
            .collect();
        let saved = state.save(&targets);
        if saved == 0 {
            tracing::error!(
                "disk {id} ({why}) could not be marked spilled on any disk: its keys' writes fail"
            );
            return;
        }
        tracing::warn!("disk {id} takes no more writes ({why}); its keys' writes go to the next disks");
        if let Some(s) = self.spilled.get(&id) {
            s.store(true, Ordering::Release);
        }
        self.changed();
    }

    /// Disk `id` takes writes again (room was freed): it stays spilled (its keys may still be
    /// on the next disks of their chains), but its keys' writes come home.
    pub fn unfill(&self, id: u32) {
        if self.is_failed(id) || self.is_draining(id) {
            return;
        }
        if let Some(w) = self.writable.get(&id) {
            if !w.swap(true, Ordering::AcqRel) {
                tracing::info!("disk {id} takes writes again");
                self.changed();
            }
        }
    }

    /// Records the weights (and spilled marks) of the current disks, at startup.
    pub fn persist(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (state, dirs) = &mut *g;
        let mut next = PlacementState {
            generation: state.generation + 1,
            disks: BTreeMap::new(),
            draining: state.draining.clone(),
        };
        for c in &self.candidates {
            next.disks.insert(c.shard_id, (c.weight, self.is_spilled(c.shard_id)));
        }
        if next.disks == state.disks {
            return;
        }
        let targets: Vec<PathBuf> = self
            .candidates
            .iter()
            .zip(dirs.iter())
            .filter(|(c, _)| self.is_writable(c.shard_id))
            .map(|(_, d)| d.clone())
            .collect();
        next.save(&targets);
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
