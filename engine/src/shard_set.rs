//! The node's set of shards on one core, and the API the network layer calls: put (streaming),
//! get (with ranges), head, delete, key iteration and stats, each routed to the key's shard by
//! placement.

use std::path::PathBuf;
use std::rc::Rc;

use podstore_disks::Io;

use crate::index::fingerprint;
use crate::placement::{place, Candidate};
use crate::scan::{Found, Scanner};
use crate::shard::{ObjectMeta, ObjectReader, PutDone, PutWriter, Shard, ShardConfig, ShardStats};
use crate::{Error, RecoveryReport, Result};

/// One shard to open: its directory, disk id and placement weight.
#[derive(Debug, Clone)]
pub struct ShardSpec {
    pub id: u32,
    pub dir: PathBuf,
    pub weight: f64,
}

/// A key with its newest record's sequence, as iteration yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersion {
    pub key: Vec<u8>,
    pub seq: u64,
    /// The write's version, the same on every copy.
    pub version: crate::Version,
    pub tombstone: bool,
    pub object_len: u64,
    /// XXH3-128 of the content (zeros for a tombstone's empty content).
    pub digest: [u8; 16],
}

/// Shards of one core.
#[derive(Debug)]
pub struct ShardSet<I: Io> {
    shards: Vec<Rc<Shard<I>>>,
    candidates: Vec<Candidate>,
}

impl<I: Io> ShardSet<I> {
    /// Opens (recovers) every shard. A shard that fails to open is reported, not fatal: the
    /// others serve.
    pub async fn open(
        io: I,
        cfg: ShardConfig,
        specs: &[ShardSpec],
    ) -> (ShardSet<I>, Vec<(u32, Result<RecoveryReport>)>) {
        let mut shards = Vec::new();
        let mut candidates = Vec::new();
        let mut reports = Vec::new();
        for s in specs {
            match Shard::open(io.clone(), cfg.clone(), &s.dir, s.id).await {
                Ok((shard, report)) => {
                    shards.push(shard);
                    candidates.push(Candidate { shard_id: s.id, weight: s.weight });
                    reports.push((s.id, Ok(report)));
                }
                Err(e) => {
                    tracing::error!("shard {} ({}) failed to open: {e}", s.id, s.dir.display());
                    reports.push((s.id, Err(e)));
                }
            }
        }
        (ShardSet { shards, candidates }, reports)
    }

    /// The shards.
    pub fn shards(&self) -> &[Rc<Shard<I>>] {
        &self.shards
    }

    /// The shard a key belongs to.
    pub fn shard_for(&self, key: &[u8]) -> Result<&Rc<Shard<I>>> {
        let id = place(fingerprint(key), &self.candidates).ok_or(Error::NoShard)?;
        self.shards.iter().find(|s| s.id() == id).ok_or(Error::NoShard)
    }

    /// Starts a streaming PUT.
    pub async fn put(&self, key: &[u8], attrs: &crate::Attrs, object_len: u64) -> Result<PutWriter<I>> {
        self.shard_for(key)?.put(key, attrs, object_len).await
    }

    /// Stores a whole object from memory.
    pub async fn put_bytes(&self, key: &[u8], content_type: &str, data: &[u8]) -> Result<PutDone> {
        self.shard_for(key)?.put_bytes(key, content_type, data).await
    }

    /// Opens a verified reader (use `set_range` for a byte range).
    pub async fn get(&self, key: &[u8]) -> Result<Option<ObjectReader<I>>> {
        self.shard_for(key)?.get(key).await
    }

    /// Opens a verified reader of the key's newest version on any of the shards (the node
    /// keeps a key on several disks while it moves between them; the newest wins, and a
    /// tombstone means deleted).
    ///
    /// A move (copy to the new disk, then forget on the old) may finish between the looks at
    /// two disks, so that neither shows the key: when nothing is found and a move finished
    /// meanwhile, it looks again.
    pub async fn get_newest(&self, key: &[u8]) -> Result<Option<ObjectReader<I>>> {
        let forgets = || self.shards.iter().map(|s| s.forgets()).sum::<u64>();
        for _ in 0..8 {
            let before = forgets();
            let mut best: Option<(crate::Version, bool, &Rc<Shard<I>>)> = None;
            for s in &self.shards {
                if let Some((v, tomb)) = s.version_of(key).await? {
                    if best.as_ref().is_none_or(|b| v > b.0) {
                        best = Some((v, tomb, s));
                    }
                }
            }
            let r = match best {
                Some((_, false, s)) => s.get(key).await?,
                _ => None,
            };
            if r.is_some() || forgets() == before {
                return Ok(r);
            }
        }
        Ok(None)
    }

    /// Metadata of a key.
    pub async fn head(&self, key: &[u8]) -> Result<Option<ObjectMeta>> {
        self.shard_for(key)?.head(key).await
    }

    /// Deletes a key; returns whether it existed.
    pub async fn delete(&self, key: &[u8]) -> Result<bool> {
        self.shard_for(key)?.delete(key).await
    }

    /// Writes a checkpoint of every shard whose checkpoint is due (call it from the core's
    /// housekeeping loop).
    pub async fn checkpoint_due(&self) -> Vec<(u32, Result<Option<u64>>)> {
        let mut out = Vec::new();
        for s in self.shards.iter().filter(|s| s.checkpoint_due() && s.fenced().is_none()) {
            out.push((s.id(), s.checkpoint().await));
        }
        out
    }

    /// Writes a checkpoint of every shard.
    pub async fn checkpoint_all(&self) -> Vec<(u32, Result<Option<u64>>)> {
        let mut out = Vec::new();
        for s in &self.shards {
            out.push((s.id(), s.checkpoint().await));
        }
        out
    }

    /// Stats of every shard.
    pub fn stats(&self) -> Vec<ShardStats> {
        self.shards.iter().map(|s| s.stats()).collect()
    }

    /// Calls `f` with every current key and its version (tombstones included), by scanning
    /// each shard's blobs sequentially. Records the index no longer points to are skipped.
    pub async fn for_each_key(&self, mut f: impl FnMut(u32, KeyVersion)) -> Result<()> {
        for s in &self.shards {
            s.for_each_key(|kv| f(s.id(), kv)).await?;
        }
        Ok(())
    }
}

impl<I: Io> Shard<I> {
    /// Calls `f` with every current key of this shard (see [`ShardSet::for_each_key`]).
    pub async fn for_each_key(&self, mut f: impl FnMut(KeyVersion)) -> Result<()> {
        let blobs: Vec<_> = self.files.blobs.borrow().values().cloned().collect();
        for b in blobs {
            let file = self.blob_file(&b).await?;
            let mut sc = Scanner::new(
                &self.io,
                &file,
                self.id,
                &self.record_key,
                b.tail.get(),
                self.cfg.scan_window_bytes,
            );
            let scan = sc.scan(b.id, 0).await?;
            for found in scan.found {
                let Found::Record { offset, header, key, digest, .. } = found else {
                    continue;
                };
                let fp = self.fp(&key);
                let current = {
                    let ix = self.index.borrow();
                    ix.overflow_get(&key).or_else(|| ix.main_get(fp))
                };
                if current.is_some_and(|l| l.blob() == b.id && l.offset() == offset) {
                    f(KeyVersion {
                        key,
                        seq: header.seq,
                        version: header.version,
                        tombstone: header.is_tombstone(),
                        object_len: header.object_len,
                        digest,
                    });
                }
            }
        }
        Ok(())
    }
}
