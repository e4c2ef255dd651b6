//! The simulation: seeded runs of concurrent put/get/delete/abort/checkpoint workloads over the
//! simulated disk, with crashes (during the workload and during recovery), torn and lost
//! writes, EIO, misdirected writes and bit flips, checked against a model of what was
//! acknowledged. Odd seeds move keys between their two disks both ways (tiering: a migration
//! to the capacity tier and a promotion back, one move of a key at a time, as the node does).
//!
//! What is checked, after every crash and recovery:
//! - every acknowledged PUT is readable byte-exact, unless a later write to the same key was in
//!   flight (then the old or the new value, or "quarantined", may be seen) or the seed injects
//!   silent corruption (then an error may be seen, never wrong bytes);
//! - nothing unacknowledged is ever read in part: any bytes returned equal some value that was
//!   written whole;
//! - an acknowledged DELETE stays deleted;
//! - no bad byte is ever served, in any mode. Under silent corruption (bit flips, misdirected
//!   writes) an acknowledged value may be lost on this node (its peers hold it): then an error,
//!   an older whole value or "not found" may be seen, never bytes that were not written whole.
//!
//! Seeds: `PODSTORE_SIM_SEEDS` (default 400 here; `.ci/run` asks for more), starting at
//! `PODSTORE_SIM_FIRST_SEED`. A failing seed prints itself; `PODSTORE_SIM_SEED=N` replays it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;

use podstore_disks::{Io, SimDisk, SimFaults};
use podstore_engine::budget::IoBudget;
use podstore_engine::checkpoint::QuarantineReason;
use podstore_engine::names::{Kind, Name};
use podstore_engine::record::digest_of;
use podstore_engine::{
    Attrs, BatchItem, BatchOutcome, CopyItem, DigestKind, Error, ReadCheck, Shard, ShardConfig, ShardSet,
    ShardSpec, Stamp,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Crashes only: torn and lost unsynced writes.
    Crash,
    /// Crashes plus EIO on read, write and fdatasync.
    Eio,
    /// Everything, plus silent corruption: misdirected writes and bit flips.
    Corrupt,
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Val {
    Absent,
    Bytes(Rc<Vec<u8>>),
}

#[derive(Clone, Debug)]
enum Attempt {
    Put(Rc<Vec<u8>>),
    Delete,
    /// An abandoned PUT: never visible, but its incomplete record may quarantine the key.
    Aborted,
}

#[derive(Default, Debug)]
struct KeyModel {
    acked: Option<Val>,
    history: Vec<Val>,
    attempts: HashMap<u64, Attempt>,
    quarantined: bool,
    /// Every value ever written whole (for the corruption mode, where a damaged newest record
    /// may leave an older whole value visible: stale, never torn).
    ever: Vec<Rc<Vec<u8>>>,
}

impl KeyModel {
    fn acked(&self) -> Val {
        self.acked.clone().unwrap_or(Val::Absent)
    }
}

#[derive(Default)]
struct Model {
    keys: HashMap<Vec<u8>, KeyModel>,
    next_attempt: u64,
}

#[derive(Default, Debug, Clone)]
struct Totals {
    seeds: u64,
    rounds: u64,
    ops: u64,
    acked_puts: u64,
    acked_deletes: u64,
    verified_exact: u64,
    quarantined_seen: u64,
    recovery_crashes: u64,
    torn_tail_items: u64,
    fenced: u64,
    faults: u64,
    no_space: u64,
    /// Compaction: blobs removed, records moved, tombstones dropped (in the workload and the
    /// final full compaction).
    blobs_compacted: u64,
    records_moved: u64,
    tombstones_dropped: u64,
    /// Scrub: records verified.
    scrubbed_records: u64,
    /// Blob files opened again after the open-file cache closed them.
    blob_reopens: u64,
    /// Keys moved between the two disks of a seed (rebalancing, draining).
    moves: u64,
    /// Records marked bad after read errors, read whole again at the end.
    read_errors_rechecked: u64,
    /// ... and those that turned out to hold flipped bits as well (marked damaged instead).
    read_errors_found_corrupt: u64,
    /// Copies from disk 1 to disk 0 as a peer sends them to rebuild a lost disk.
    rebuilds: u64,
    /// Tiering seeds (odd ones): moves from disk 0 to disk 1 (a migration to the capacity
    /// tier), the others being promotions back.
    migrations: u64,
    batched_migrations: u64,
    /// Zeroing ahead of the tail: bytes zeroed, and reservations that waited for a zeroing.
    zeroed_ahead_bytes: u64,
    zero_ahead_waits: u64,
    /// Listings of every shard checked against the reads, and those a damaged run stopped.
    listings_checked: u64,
    listings_damaged: u64,
}

struct Seed {
    seed: u64,
    mode: Mode,
    rng: RefCell<fastrand::Rng>,
    model: RefCell<Model>,
    totals: RefCell<Totals>,
    /// Keys being moved: one move of a key at a time, as the node does (`Shared::moving`):
    /// a migration and a promotion of one key at once would each forget the other's copy.
    moving: RefCell<std::collections::HashSet<Vec<u8>>>,
    /// The shards' `open_blob_files_max`.
    open_max: usize,
}

fn value_for(rng: &mut fastrand::Rng, large_ok: bool) -> Vec<u8> {
    let n = match rng.u32(0..100) {
        0..=59 => rng.usize(0..3000),
        60..=84 => rng.usize(3000..40_000),
        85..=96 => rng.usize(40_000..300_000),
        _ if large_ok => rng.usize(1_000_000..2_600_000),
        _ => rng.usize(0..100),
    };
    let base = rng.u8(..);
    let step = rng.u8(1..);
    (0..n).map(|i| base.wrapping_add((i as u8).wrapping_mul(step)) ^ (i >> 12) as u8).collect()
}

impl Seed {
    fn fail(&self, what: String) -> ! {
        panic!(
            "simulation seed {} ({:?}) failed: {what}\nreplay: PODSTORE_SIM_SEED={} cargo test -p podstore-engine --test sim -- --nocapture",
            self.seed, self.mode, self.seed
        )
    }

    fn begin(&self, key: &[u8], a: Attempt) -> u64 {
        let mut m = self.model.borrow_mut();
        let id = m.next_attempt;
        m.next_attempt += 1;
        let k = m.keys.entry(key.to_vec()).or_default();
        if let Attempt::Put(v) = &a {
            k.ever.push(v.clone());
        }
        k.attempts.insert(id, a);
        id
    }

    fn ack(&self, key: &[u8], id: u64) {
        let mut m = self.model.borrow_mut();
        let k = m.keys.get_mut(key).expect("key begun");
        let a = k.attempts.remove(&id).expect("attempt begun");
        let v = match a {
            Attempt::Put(v) => Val::Bytes(v),
            Attempt::Delete => Val::Absent,
            Attempt::Aborted => unreachable!("aborted puts are never acknowledged"),
        };
        k.acked = Some(v.clone());
        k.history.push(v);
        k.quarantined = false;
        // Attempts that already failed can never surface after a later acknowledgement on the
        // same key (a failure fences the shard or stops the machine); pending ones may.
    }

    /// Checks a read against the model: `hist_from` is the history length when the read began.
    fn check_read(
        &self,
        key: &[u8],
        hist_from: usize,
        got: &Result<Option<Vec<u8>>, Error>,
        during_workload: bool,
    ) {
        let m = self.model.borrow();
        let empty = KeyModel::default();
        let k = m.keys.get(key).unwrap_or(&empty);
        let mut allowed: Vec<Val> = k.history.get(hist_from.saturating_sub(1)..).unwrap_or(&[]).to_vec();
        allowed.push(k.acked());
        if self.mode == Mode::Corrupt {
            allowed.push(Val::Absent);
            allowed.extend(k.ever.iter().cloned().map(Val::Bytes));
        }
        for a in k.attempts.values() {
            match a {
                Attempt::Put(v) => allowed.push(Val::Bytes(v.clone())),
                Attempt::Delete => allowed.push(Val::Absent),
                Attempt::Aborted => {}
            }
        }
        match got {
            Ok(Some(b)) => {
                if !allowed.iter().any(|v| matches!(v, Val::Bytes(x) if x[..] == b[..])) {
                    self.fail(format!(
                        "key {:?}: read {} bytes that match no written value (acked {:?}); pending {}",
                        String::from_utf8_lossy(key),
                        b.len(),
                        describe(&k.acked()),
                        k.attempts.len()
                    ));
                }
            }
            Ok(None) => {
                if !allowed.contains(&Val::Absent) {
                    self.fail(format!(
                        "key {:?}: not found, but acknowledged {:?} (pending attempts {})",
                        String::from_utf8_lossy(key),
                        describe(&k.acked()),
                        k.attempts.len()
                    ));
                }
            }
            Err(Error::Quarantined { .. }) | Err(Error::Corrupt { .. }) => {
                // Read errors mark records bad too (read_error): while faults are on, a key may
                // answer "quarantined"; at the end every such record is read again and must be
                // back (final_compaction_and_scrub).
                let excused = self.mode == Mode::Corrupt
                    || (self.mode == Mode::Eio && during_workload)
                    || k.quarantined
                    || !k.attempts.is_empty();
                if !excused {
                    self.fail(format!(
                        "key {:?}: {} with no fault that could explain it (acked {:?})",
                        String::from_utf8_lossy(key),
                        got.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
                        describe(&k.acked())
                    ));
                }
            }
            Err(e) if e.is_crash() && during_workload => {}
            Err(Error::Disk { .. }) if during_workload && self.mode != Mode::Crash => {}
            Err(e) => self.fail(format!("key {:?}: unexpected error {e}", String::from_utf8_lossy(key))),
        }
    }
}

fn describe(v: &Val) -> String {
    match v {
        Val::Absent => "absent".into(),
        Val::Bytes(b) => format!("{} bytes", b.len()),
    }
}

/// The attributes a write of `v` carries (a function of the value, so a read checks that the
/// attributes it got are its bytes' own): by length, no headers and XXH3, headers and MD5 (as
/// S3 writes), or headers and XXH3.
fn attrs_for(len: usize) -> Attrs {
    let text = len.to_string();
    let headers = [("x-amz-meta-len", text.as_str()), ("cache-control", "max-age=60")];
    match len % 3 {
        0 => Attrs::from("application/octet-stream"),
        1 => Attrs::new("image/jpeg", headers, DigestKind::Md5).expect("valid"),
        _ => Attrs::new("video/mp4", headers, DigestKind::Xxh3).expect("valid"),
    }
}

/// A read's attributes and digest must be those its bytes were written with.
fn check_attrs(meta: &podstore_engine::ObjectMeta, whole: &[u8]) {
    let want = attrs_for(whole.len());
    assert_eq!(meta.attrs, want, "attributes of a {}-byte object", whole.len());
    assert_eq!(meta.digest, digest_of(want.digest, whole), "digest of a {}-byte object", whole.len());
}

async fn read_key(set: &ShardSet<SimDisk>, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    match set.get_newest(key).await? {
        None => Ok(None),
        Some(mut r) => {
            if r.meta.object_len > 0 && fastrand::bool() {
                // Exercise ranges too: the range must be the same bytes as the whole.
                let len = r.meta.object_len;
                let a = len / 3;
                r.set_range(a, len);
                let tail = r.read_all().await?;
                // (Sequence numbers are per disk; with a key on two disks the version tells
                // whether the two reads found the same write.)
                let version = r.meta.version;
                let Some(mut r2) = set.get_newest(key).await? else {
                    return Ok(None);
                };
                let whole = r2.read_all().await?;
                check_attrs(&r2.meta, &whole);
                // A concurrent write may have replaced the object between the two reads.
                if r2.meta.version == version {
                    assert_eq!(&whole[a as usize..], &tail[..], "range read differs from whole read");
                }
                Ok(Some(whole))
            } else {
                let whole = r.read_all().await?;
                check_attrs(&r.meta, &whole);
                Ok(Some(whole))
            }
        }
    }
}

/// Lists every shard's names (pages of a random size, merged across shards by version as the
/// node does) and checks the listing against what the reads just found: every key read whole
/// is listed with its size, every key read absent is not.
async fn check_listing(s: &Seed, set: &ShardSet<SimDisk>, read: &HashMap<Vec<u8>, Option<usize>>) {
    let mut newest: BTreeMap<Vec<u8>, Name> = BTreeMap::new();
    for sh in set.shards() {
        let max = [1usize, 2, 5, 1000][fastrand::usize(0..4)];
        let mut from: Box<[u8]> = Box::default();
        loop {
            let page = match sh.list_names(&from, b"", max).await {
                Ok(p) => p,
                // A flipped bit in a run: out of service until the next start rebuilds it.
                Err(Error::NamesUnavailable { .. }) if s.mode == Mode::Corrupt => {
                    s.totals.borrow_mut().listings_damaged += 1;
                    return;
                }
                Err(e) => s.fail(format!("seed {}: listing shard {} failed: {e}", s.seed, sh.id())),
            };
            for (k, n) in page.entries {
                assert!(k[..] >= from[..], "seed {}: a listing went back", s.seed);
                match newest.get(&k[..]) {
                    Some(held) if held.version >= n.version => {}
                    _ => {
                        newest.insert(k.to_vec(), n);
                    }
                }
            }
            match page.next {
                Some(n) => from = n,
                None => break,
            }
        }
    }
    for (key, got) in read {
        let listed = newest.get(key).filter(|n| n.kind == Kind::Live);
        match (got, listed) {
            (Some(len), Some(n)) if n.object_len == *len as u64 => {
                let want = attrs_for(*len);
                assert_eq!(
                    (&n.content_type, n.digest_kind),
                    (&want.content_type, want.digest),
                    "listed attributes"
                );
            }
            (None, None) => {}
            // A damaged record may read as absent or as an older whole value (the index still
            // points at it): it is listed as the index holds it. A key read whole is listed.
            (_, Some(_)) if s.mode == Mode::Corrupt => {}
            (got, listed) => s.fail(format!(
                "seed {}: key {:?} read as {got:?} (length) but listed as {listed:?}",
                s.seed,
                String::from_utf8_lossy(&key[..key.len().min(40)])
            )),
        }
    }
    s.totals.borrow_mut().listings_checked += 1;
}

fn keys() -> Vec<Vec<u8>> {
    let mut k: Vec<Vec<u8>> = (0..10).map(|i| format!("bucket/k{i}").into_bytes()).collect();
    k.push(vec![b'L'; 1024]);
    k.push("photos/ü/ключ".as_bytes().to_vec());
    k
}

async fn worker(s: Rc<Seed>, set: Rc<ShardSet<SimDisk>>, ops: u32, large_ok: bool) {
    let keys = keys();
    for _ in 0..ops {
        let (key, op, val, pieces) = {
            let mut rng = s.rng.borrow_mut();
            let key = keys[rng.usize(0..keys.len())].clone();
            let op = rng.u32(0..100);
            let val = value_for(&mut rng, large_ok);
            let pieces = rng.usize(1..65_536);
            (key, op, val, pieces)
        };
        s.totals.borrow_mut().ops += 1;
        match op {
            0..=47 => {
                let v = Rc::new(val);
                let id = s.begin(&key, Attempt::Put(v.clone()));
                let r = async {
                    let mut w = set.put(&key, &attrs_for(v.len()), v.len() as u64).await?;
                    for piece in v.chunks(pieces) {
                        w.write(piece).await?;
                    }
                    w.finish().await
                }
                .await;
                match r {
                    Ok(_) => {
                        s.ack(&key, id);
                        s.totals.borrow_mut().acked_puts += 1;
                    }
                    Err(e) if e.is_crash() => return,
                    Err(Error::NoSpace { .. }) => s.totals.borrow_mut().no_space += 1,
                    Err(_) => {}
                }
            }
            48..=77 => {
                let from = s.model.borrow().keys.get(&key).map(|k| k.history.len()).unwrap_or(0);
                let r = read_key(&set, &key).await;
                if matches!(&r, Err(e) if e.is_crash()) {
                    return;
                }
                s.check_read(&key, from, &r, true);
            }
            78..=89 => {
                let id = s.begin(&key, Attempt::Delete);
                // With two disks a key may also live on the other one (moved there): the
                // tombstone is written even where the key is absent, as the node does.
                let home = set.shard_for(&key).expect("a shard").clone();
                match home.delete_stamped(&key, Stamp::Local, set.shards().len() > 1).await {
                    Ok(_) => {
                        s.ack(&key, id);
                        s.totals.borrow_mut().acked_deletes += 1;
                    }
                    Err(e) if e.is_crash() => return,
                    Err(_) => {}
                }
            }
            90..=94 => {
                let _id = s.begin(&key, Attempt::Aborted);
                let r = async {
                    let mut w = set.put(&key, &"".into(), val.len() as u64 + 1).await?;
                    w.write(&val[..val.len() / 2]).await?;
                    if fastrand::bool() {
                        w.abort().await
                    } else {
                        drop(w);
                        Ok(())
                    }
                }
                .await;
                if matches!(&r, Err(e) if e.is_crash()) {
                    return;
                }
            }
            95 if set.shards().len() > 1 => {
                // A move between the two disks (rebalancing, draining): copy the newest
                // record with its version, then forget it where it was. Always from disk 1 to
                // disk 0, as the node's moves only go towards a key's home in its fixed order
                // or off a draining disk that takes nothing back: two opposite moves of one
                // key at once would both forget it.
                // One time in three it is a rebuild instead: the copy a peer sends to rebuild a
                // lost disk's objects (stamped with its version, as a peer's copy is), and the
                // record it copies stays where it is (reads take the newest of the two).
                // On a tiering seed (odd), moves go both ways: disk 0 is the fast tier, a move
                // to disk 1 a migration, one back a promotion; one move of a key at a time.
                let tiering = s.seed % 2 == 1;
                let migrate = tiering && fastrand::bool();
                let (from, to) = if migrate {
                    (set.shards()[0].clone(), set.shards()[1].clone())
                } else {
                    (set.shards()[1].clone(), set.shards()[0].clone())
                };
                let rebuild = !tiering && fastrand::u32(0..3) == 0;
                // Half the migrations move several keys in one batch (Shard::put_batch), as
                // the node's migration does.
                if migrate && fastrand::bool() {
                    let batch: Vec<Vec<u8>> = (0..fastrand::usize(1..8))
                        .map(|_| keys[fastrand::usize(0..keys.len())].clone())
                        .filter(|k| s.moving.borrow_mut().insert(k.clone()))
                        .collect();
                    let r = migrate_batch(&from, &to, &batch).await;
                    for k in &batch {
                        s.moving.borrow_mut().remove(k);
                    }
                    match r {
                        Err(e) if e.is_crash() => return,
                        Err(_) => {}
                        Ok(n) => s.totals.borrow_mut().batched_migrations += n,
                    }
                    continue;
                }
                if tiering && !s.moving.borrow_mut().insert(key.clone()) {
                    continue;
                }
                let r = move_key(&from, &to, &key, rebuild).await;
                if tiering {
                    s.moving.borrow_mut().remove(&key);
                }
                if let Err(e) = r {
                    if e.is_crash() {
                        return;
                    }
                }
                let mut t = s.totals.borrow_mut();
                if rebuild {
                    t.rebuilds += 1;
                } else if migrate {
                    t.migrations += 1;
                } else {
                    t.moves += 1;
                }
            }
            96 => {
                // Compaction of one shard, concurrent with everything else (and crashes).
                let shards = set.shards();
                let sh = &shards[fastrand::usize(0..shards.len())];
                let ratio = [0.0, 0.3, 0.7][fastrand::usize(0..3)];
                if let Err(e) = sh.compact(ratio, &IoBudget::new(0)).await {
                    if e.is_crash() {
                        return;
                    }
                }
            }
            97 => {
                let shards = set.shards();
                let sh = &shards[fastrand::usize(0..shards.len())];
                if let Err(e) = sh.scrub(&IoBudget::new(0), &IoBudget::new(0)).await {
                    if e.is_crash() {
                        return;
                    }
                }
            }
            95 => {
                // Zeroing ahead of one shard's tail, a few steps, concurrent with everything.
                let shards = set.shards();
                let sh = &shards[fastrand::usize(0..shards.len())];
                for _ in 0..4 {
                    match sh.zero_ahead().await {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) if e.is_crash() => return,
                        Err(_) => break, // a write error: the shard is fenced, as after any
                    }
                }
            }
            _ => {
                // The name index's upkeep (memtable flushes, run merges) beside the checkpoints.
                for sh in set.shards() {
                    if matches!(sh.names_maintain(None).await, Err(e) if e.is_crash()) {
                        return;
                    }
                }
                let all =
                    if fastrand::bool() { set.checkpoint_all().await } else { set.checkpoint_due().await };
                for (_, r) in all {
                    if matches!(&r, Err(e) if e.is_crash()) {
                        return;
                    }
                }
            }
        }
    }
}

/// Moves a key's newest record on `from` to `to` (as the node's mover does), or with
/// `rebuild` copies it as a peer's copy (`Stamp::Given`) and leaves it on `from`.
async fn move_key(
    from: &Rc<Shard<SimDisk>>,
    to: &Rc<Shard<SimDisk>>,
    key: &[u8],
    rebuild: bool,
) -> Result<(), Error> {
    let stamp = |v| if rebuild { Stamp::Given(v) } else { Stamp::Moved(v) };
    let version = match from.copy_item(key, ReadCheck::Verify).await? {
        None => return Ok(()),
        Some(CopyItem::Delete { version, .. }) => {
            to.delete_stamped(key, stamp(version), true).await?;
            version
        }
        Some(CopyItem::Put(mut r)) => {
            let meta = r.meta.clone();
            let w = to.put_stamped(key, &meta.attrs, meta.object_len, stamp(meta.version)).await?;
            if let Some(mut w) = w {
                while let Some(c) = r.next_chunk().await? {
                    w.write(&c).await?;
                }
                w.finish_expecting(Some(meta.digest)).await?;
            }
            meta.version
        }
    };
    if rebuild {
        return Ok(());
    }
    from.forget(key, version).await.map(|_| ())
}

/// Moves the newest records of `keys` from `from` to `to` as the node's migration does: the
/// objects copied in one batch (`put_batch`, one write per contiguous run and one sync), each
/// forgotten on `from` once its copy is durable (or `to` already holds it or something newer);
/// tombstones one at a time. Returns how many keys moved in the batch.
async fn migrate_batch(
    from: &Rc<Shard<SimDisk>>,
    to: &Rc<Shard<SimDisk>>,
    keys: &[Vec<u8>],
) -> Result<u64, Error> {
    let mut items = Vec::new();
    for key in keys {
        match from.copy_item(key, ReadCheck::Verify).await {
            Ok(None) => {}
            Ok(Some(CopyItem::Delete { version, .. })) => {
                to.delete_stamped(key, Stamp::Moved(version), true).await?;
                from.forget(key, version).await?;
            }
            Ok(Some(CopyItem::Put(mut r))) => {
                let meta = r.meta.clone();
                let data = r.read_all().await?;
                items.push(BatchItem {
                    key: key.clone(),
                    attrs: meta.attrs.clone(),
                    data,
                    stamp: Stamp::Moved(meta.version),
                    digest: Some(meta.digest),
                });
            }
            Err(e) if e.is_crash() => return Err(e),
            Err(_) => {} // unreadable here: it stays (a peer repairs it)
        }
    }
    let mut moved = 0;
    for (it, r) in items.iter().zip(to.put_batch(&items).await?) {
        match r {
            Ok(BatchOutcome::Stored(_) | BatchOutcome::Superseded) => {
                let Stamp::Moved(v) = it.stamp else { unreachable!("moved stamps only") };
                from.forget(&it.key, v).await?;
                moved += 1;
            }
            Err(e) if e.is_crash() => return Err(e),
            Err(_) => {} // too large for a batch, or no room: it stays where it is
        }
    }
    Ok(moved)
}

/// Reads every record marked bad after a read error again, as the node's repair loop does: with
/// the faults off each must read whole and be back in service.
async fn recheck_read_errors(s: &Seed, set: &ShardSet<SimDisk>) {
    for sh in set.shards() {
        let bad = sh.quarantined().into_iter().filter(|q| q.reason == QuarantineReason::ReadError);
        for key in bad.filter_map(|q| q.key).collect::<Vec<_>>() {
            match sh.recheck(&key).await {
                Ok(true) => s.totals.borrow_mut().read_errors_rechecked += 1,
                // Replaced by a newer write meanwhile (a crash may have kept the mark).
                Ok(false) if !sh.quarantined().iter().any(|q| q.key.as_deref() == Some(&key[..])) => {}
                // Bits flipped on the disk (Corrupt mode) in a record that also had a read error:
                // damage, now marked as such, awaiting a repair.
                Ok(false)
                    if s.mode == Mode::Corrupt
                        && sh.quarantined().iter().any(|q| {
                            q.key.as_deref() == Some(&key[..]) && q.reason == QuarantineReason::ReadChecksum
                        }) =>
                {
                    s.totals.borrow_mut().read_errors_found_corrupt += 1
                }
                other => s.fail(format!(
                    "seed {}: a record marked bad after a read error still fails: {other:?}",
                    s.seed
                )),
            }
        }
    }
}

/// After the last round's workload: compact every shard fully, scrub it, and check that
/// nothing was lost or leaked: every key reads as the model says, no blob holds dead bytes
/// (unless damage keeps it), the disk holds no file the shard does not know, and (without
/// silent corruption) the scrub finds nothing.
async fn final_compaction_and_scrub(s: &Seed, disk: &SimDisk, set: &ShardSet<SimDisk>) {
    disk.set_faults(SimFaults::default());
    let seed = s.seed;
    recheck_read_errors(s, set).await;
    for sh in set.shards() {
        if sh.fenced().is_some() {
            continue;
        }
        let moved_before = sh.compact_stats().records_moved;
        for _ in 0..4 {
            if let Err(e) = sh.compact(0.0, &IoBudget::new(0)).await {
                if !matches!(e, Error::NoSpace { .. }) {
                    s.fail(format!("final compaction failed: {e}"));
                }
            }
        }
        s.totals.borrow_mut().records_moved += sh.compact_stats().records_moved - moved_before;
        let damaged = !sh.quarantined().is_empty();
        if s.mode == Mode::Crash && !damaged && sh.fenced().is_none() {
            let left: Vec<_> =
                sh.blob_usage().into_iter().filter(|u| u.sealed && u.dead_bytes() > 0).collect();
            // A shard out of room can't copy live records out of a partly dead blob.
            if !left.is_empty() && left.iter().any(|u| u.live_bytes == 0) {
                s.fail(format!("seed {seed}: wholly dead blobs left after compaction: {left:?}"));
            }
        }
        let names = disk.list_dir(sh.dir()).await.expect("list");
        let known: Vec<String> = sh
            .blob_usage()
            .iter()
            .map(|u| format!("blob-{:07}.{}", u.id, if u.dedicated { "psl" } else { "psb" }))
            .collect();
        for n in &names {
            // (A temporary file of a failed checkpoint is removed by the next recovery.)
            let ok = n.ends_with(".ckpt")
                || n.ends_with(".tmp")
                || n == "scrub.state"
                || podstore_engine::names::parse_run_name(n).is_some()
                || n == podstore_engine::files::NAMES_DAMAGED_FILE
                || n == podstore_engine::record_key::KEY_FILE
                || known.contains(n);
            if !ok {
                s.fail(format!("seed {seed}: file {n} left on shard {} after compaction", sh.id()));
            }
        }
        let bad_before = sh.quarantined().len();
        match sh.scrub(&IoBudget::new(0), &IoBudget::new(0)).await {
            Ok(Some(_)) => {}
            other => s.fail(format!("final scrub: {other:?}")),
        }
        let st = sh.scrub_stats().await;
        s.totals.borrow_mut().scrubbed_records += st.records_checked;
        let stats = sh.stats();
        s.totals.borrow_mut().blob_reopens += stats.blob_reopens;
        s.totals.borrow_mut().zeroed_ahead_bytes += stats.zeroed_ahead_bytes;
        s.totals.borrow_mut().zero_ahead_waits += stats.zero_ahead_waits;
        // Past the limit only the open blob and the one just asked for stay open.
        if stats.open_blob_files > s.open_max as u64 + 2 {
            s.fail(format!(
                "seed {seed}: {} blob files open, the limit is {}",
                stats.open_blob_files, s.open_max
            ));
        }
        if s.mode != Mode::Corrupt && sh.quarantined().len() != bad_before {
            s.fail(format!(
                "seed {seed}: scrub quarantined a record with no fault to explain it: {:?}",
                sh.quarantined()
            ));
        }
    }
    for key in keys() {
        let r = read_key(set, &key).await;
        s.check_read(&key, usize::MAX, &r, false);
    }
}

fn faults_for(mode: Mode, rng: &mut fastrand::Rng) -> SimFaults {
    let latency_yields_max = rng.u32(0..4);
    match mode {
        Mode::Crash => SimFaults { latency_yields_max, ..Default::default() },
        Mode::Eio => SimFaults {
            read_eio_ppm: rng.u32(0..3000),
            write_eio_ppm: rng.u32(0..3000),
            sync_eio_ppm: rng.u32(0..5000),
            latency_yields_max,
            ..Default::default()
        },
        Mode::Corrupt => SimFaults {
            read_eio_ppm: rng.u32(0..2000),
            write_eio_ppm: rng.u32(0..2000),
            sync_eio_ppm: rng.u32(0..2000),
            misdirect_write_ppm: rng.u32(0..4000),
            read_flip_ppm: rng.u32(0..4000),
            latency_yields_max,
        },
    }
}

fn run_seed(seed: u64) -> Totals {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mode = match seed % 3 {
        0 => Mode::Crash,
        1 => Mode::Eio,
        _ => Mode::Corrupt,
    };
    let faults = faults_for(mode, &mut rng);
    let disk = SimDisk::new(seed ^ 0x5eed, faults.clone());
    let blob_size_bytes = [64 << 10, 256 << 10, 1 << 20][rng.usize(0..3)];
    let cfg = ShardConfig {
        blob_size_bytes,
        tombstone_reserve_bytes: blob_size_bytes / 8,
        // A quarter of the seeds force fingerprint collisions (4 distinct fingerprints for 12
        // keys), so the overflow map and its checkpoint section are exercised.
        fingerprint_mask: if rng.u32(0..4) == 0 { 0x3 } else { u64::MAX },
        // A quarter of the seeds run out of space: puts fail with NoSpace, deletes still work.
        shard_size_max_bytes: if rng.u32(0..4) == 0 { blob_size_bytes * rng.u64(3..12) } else { u64::MAX },
        checkpoint_every_records: rng.u64(5..200),
        write_buf_bytes: [4 << 10, 8 << 10, 64 << 10][rng.usize(0..3)],
        single_read_max_bytes: [8 << 10, 64 << 10, 2 << 20][rng.usize(0..3)],
        scan_window_bytes: [8 << 10, 64 << 10][rng.usize(0..2)],
        object_size_max_bytes: 4 << 20,
        writes_in_flight_max: rng.usize(1..64),
        // Half the seeds let compaction drop tombstones as soon as nothing older can be found.
        tombstone_horizon_ms: if rng.bool() { 0 } else { u64::MAX },
        // Half the seeds keep at most 2-5 blob files open: every other read opens one again,
        // under crashes, compaction and moves.
        open_blob_files_max: if rng.bool() { rng.usize(2..6) } else { 4096 },
        // Half the seeds zero ahead of the open blob's tail (steps of a quarter of it), beside
        // the writers, under crashes and write errors.
        zero_ahead_bytes: if rng.bool() { [16 << 10, 64 << 10][rng.usize(0..2)] } else { 0 },
        // Most seeds flush the name index's memtable every few changes, so runs and their
        // merges are under the crashes too.
        names_memtable_bytes: [512, 2048, 4 << 20][rng.usize(0..3)],
        ..ShardConfig::default()
    };
    let nshards = rng.u32(1..=2);
    let specs: Vec<ShardSpec> = (0..nshards)
        .map(|i| ShardSpec { id: i, dir: PathBuf::from(format!("/disk{i}")), weight: 1.0 })
        .collect();
    let large_ok = rng.u32(0..4) == 0;
    let rounds = rng.u32(2..6);
    let s = Rc::new(Seed {
        seed,
        mode,
        rng: RefCell::new(fastrand::Rng::with_seed(seed.wrapping_mul(7919))),
        model: RefCell::new(Model::default()),
        totals: RefCell::new(Totals { seeds: 1, ..Default::default() }),
        moving: Default::default(),
        open_max: cfg.open_blob_files_max,
    });
    fastrand::seed(seed);
    for round in 0..rounds {
        s.totals.borrow_mut().rounds += 1;
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let local = tokio::task::LocalSet::new();
        let last = round + 1 == rounds;
        local.block_on(&rt, async {
            // Recover, possibly crashing during recovery itself.
            disk.set_faults(SimFaults::default());
            let set = loop {
                if rng.u32(0..4) == 0 {
                    disk.crash_at_op(Some(disk.ops() + rng.u64(1..80)));
                }
                let (set, reports) = ShardSet::open(disk.clone(), cfg.clone(), &specs).await;
                if disk.has_crashed() {
                    disk.crash();
                    s.totals.borrow_mut().recovery_crashes += 1;
                    continue;
                }
                disk.crash_at_op(None);
                for (id, r) in reports {
                    match r {
                        Ok(rep) => s.totals.borrow_mut().torn_tail_items += rep.torn_tail_items,
                        Err(e) => s.fail(format!("shard {id} failed to recover: {e}")),
                    }
                }
                // With two disks keys move between them: a tombstone on one shadows an older
                // copy on the other, so none is dropped (as the node does while disks spill).
                if set.shards().len() > 1 {
                    for sh in set.shards() {
                        sh.set_tombstone_drop(false);
                    }
                }
                break Rc::new(set);
            };
            recheck_read_errors(&s, &set).await;
            // Verify every key against the model, then collapse the model to what is there.
            let mut read: HashMap<Vec<u8>, Option<usize>> = HashMap::new();
            for key in keys() {
                let r = read_key(&set, &key).await;
                if let Ok(v) = &r {
                    read.insert(key.clone(), v.as_ref().map(|b| b.len()));
                }
                s.check_read(&key, usize::MAX, &r, false);
                let mut m = s.model.borrow_mut();
                let k = m.keys.entry(key.clone()).or_default();
                let strict = k.attempts.is_empty() && !k.quarantined && s.mode != Mode::Corrupt;
                match r {
                    Ok(v) => {
                        let v = v.map(|b| Val::Bytes(Rc::new(b))).unwrap_or(Val::Absent);
                        if strict {
                            assert_eq!(v, k.acked(), "seed {seed}: strict check");
                            s.totals.borrow_mut().verified_exact += 1;
                        }
                        k.acked = Some(v.clone());
                        k.history = vec![v];
                        k.quarantined = false;
                    }
                    Err(_) => {
                        k.quarantined = true;
                        k.history.clear();
                        s.totals.borrow_mut().quarantined_seen += 1;
                    }
                }
                k.attempts.clear();
            }
            check_listing(&s, &set, &read).await;
            // The workload, with faults on and a crash somewhere.
            disk.set_faults(faults.clone());
            if !last {
                disk.crash_at_op(Some(disk.ops() + rng.u64(20..3000)));
            }
            let workers = rng.u32(1..6);
            let ops = rng.u32(10..80);
            let tasks: Vec<_> = (0..workers)
                .map(|_| tokio::task::spawn_local(worker(s.clone(), set.clone(), ops, large_ok)))
                .collect();
            for t in tasks {
                t.await.expect("worker panicked");
            }
            if set.shards().iter().any(|sh| sh.fenced().is_some()) {
                s.totals.borrow_mut().fenced += 1;
            }
            for sh in set.shards() {
                let c = sh.compact_stats();
                let mut t = s.totals.borrow_mut();
                t.blobs_compacted += c.blobs_compacted;
                t.records_moved += c.records_moved;
                t.tombstones_dropped += c.tombstones_dropped;
            }
            if last {
                final_compaction_and_scrub(&s, &disk, &set).await;
            }
        });
        drop(local);
        drop(rt);
        if mode == Mode::Corrupt && rng.bool() {
            for i in 0..nshards {
                disk.flip_random_bit(&PathBuf::from(format!("/disk{i}")));
            }
        }
        disk.crash();
    }
    let st = disk.stats();
    let mut t = s.totals.borrow().clone();
    t.faults = st.read_eio
        + st.write_eio
        + st.sync_eio
        + st.misdirected_writes
        + st.read_flips
        + st.bit_flips
        + st.writes_torn_at_crash
        + st.writes_lost_at_crash;
    t
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn simulation_keeps_every_promise() {
    let seeds: Vec<u64> = match std::env::var("PODSTORE_SIM_SEED").ok().and_then(|v| v.parse().ok()) {
        Some(one) => vec![one],
        None => {
            let first = env_u64("PODSTORE_SIM_FIRST_SEED", 0);
            (first..first + env_u64("PODSTORE_SIM_SEEDS", 400)).collect()
        }
    };
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(4);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let totals = std::sync::Mutex::new(Totals::default());
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { break };
                let t = run_seed(seed);
                let mut all = totals.lock().expect("totals");
                all.seeds += t.seeds;
                all.rounds += t.rounds;
                all.ops += t.ops;
                all.acked_puts += t.acked_puts;
                all.acked_deletes += t.acked_deletes;
                all.verified_exact += t.verified_exact;
                all.quarantined_seen += t.quarantined_seen;
                all.recovery_crashes += t.recovery_crashes;
                all.torn_tail_items += t.torn_tail_items;
                all.fenced += t.fenced;
                all.faults += t.faults;
                all.no_space += t.no_space;
                all.blobs_compacted += t.blobs_compacted;
                all.records_moved += t.records_moved;
                all.tombstones_dropped += t.tombstones_dropped;
                all.scrubbed_records += t.scrubbed_records;
                all.blob_reopens += t.blob_reopens;
                all.zeroed_ahead_bytes += t.zeroed_ahead_bytes;
                all.zero_ahead_waits += t.zero_ahead_waits;
                all.listings_checked += t.listings_checked;
                all.listings_damaged += t.listings_damaged;
                all.moves += t.moves;
                all.read_errors_rechecked += t.read_errors_rechecked;
                all.read_errors_found_corrupt += t.read_errors_found_corrupt;
                all.rebuilds += t.rebuilds;
                all.migrations += t.migrations;
                all.batched_migrations += t.batched_migrations;
            });
        }
    });
    let t = totals.into_inner().expect("totals");
    println!("simulation: {t:?}");
    assert_eq!(t.seeds as usize, seeds.len());
    assert!(t.acked_puts > 0 && t.verified_exact > 0, "the simulation verified nothing: {t:?}");
    assert!(t.listings_checked > t.seeds, "the simulation checked few listings: {t:?}");
    if seeds.len() >= 50 {
        assert!(
            t.blobs_compacted > 0
                && t.records_moved > 0
                && t.scrubbed_records > 0
                && t.blob_reopens > 0
                && t.migrations > 0
                && t.batched_migrations > 0
                && t.zeroed_ahead_bytes > 0,
            "compaction, scrub, tier moves or zeroing ahead never ran: {t:?}"
        );
    }
}
