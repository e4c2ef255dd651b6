//! The RAM cache of small hot objects (issue 7): O_DIRECT leaves the machine's memory unused by
//! the page cache, so the node keeps its own.
//!
//! One cache per core, for the disks that core owns (their reads, writes and moves all run on
//! it, so it needs no lock): mini-moka's single-threaded cache, bounded in bytes, with its
//! TinyLFU admission (a count-min sketch of how often each key was asked for, misses
//! included: a newcomer displaces the entries it would evict only if it was asked for more
//! often than they were), so a scan of cold objects passes through without flushing the hot
//! ones.
//!
//! An entry remembers the disk and the record location (blob, offset) its bytes were read
//! from, after the read verified them against the record's checksums. A hit is served only
//! while that disk's index still points at that record and the key is not quarantined: an
//! overwrite, a delete, a compaction move or a move to another disk changes the location (blob
//! ids are never reused while the node runs), so a stale entry can't be served even if an
//! invalidation were missed. Writes and deletes also drop the key's entry at once, to give its
//! memory back.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::index::Loc;
use crate::{ObjectMeta, Shard};
use bytes::Bytes;

/// What a cached object costs beyond its bytes and key (its entry, metadata, queues).
const ENTRY_OVERHEAD_BYTES: usize = 256;

/// One core's cache counters, read by the metrics without asking the core.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Objects offered after a disk read (admitted or not).
    pub offered: AtomicU64,
    /// Entries dropped because their key was written, deleted or found moved.
    pub invalidated: AtomicU64,
    pub bytes: AtomicU64,
    pub entries: AtomicU64,
}

/// Every core's counters added up.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CacheTotals {
    pub hits: u64,
    pub misses: u64,
    pub offered: u64,
    pub invalidated: u64,
    pub bytes: u64,
    pub entries: u64,
}

impl CacheTotals {
    /// The node's totals: the sum of every core's counters (`Shared::ram_cache`).
    pub fn of(cores: &[Arc<CacheCounters>]) -> CacheTotals {
        let mut t = CacheTotals::default();
        for c in cores {
            let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
            t.hits += l(&c.hits);
            t.misses += l(&c.misses);
            t.offered += l(&c.offered);
            t.invalidated += l(&c.invalidated);
            t.bytes += l(&c.bytes);
            t.entries += l(&c.entries);
        }
        t
    }
}

/// A cached object: its verified bytes and where they were read from.
#[derive(Debug)]
pub struct Cached {
    pub disk: u32,
    pub loc: Loc,
    pub meta: ObjectMeta,
    pub data: Bytes,
}

/// One core's cache (not `Send`: it lives on its core).
pub struct RamCache {
    cache: RefCell<mini_moka::unsync::Cache<Vec<u8>, Rc<Cached>>>,
    object_max: u64,
    counters: Arc<CacheCounters>,
}

impl std::fmt::Debug for RamCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RamCache")
            .field("object_max", &self.object_max)
            .field("counters", &self.counters)
            .finish()
    }
}

impl RamCache {
    /// A cache of at most `capacity_bytes` holding objects of at most `object_max` bytes;
    /// None when `capacity_bytes` is 0 (no cache).
    pub fn new(capacity_bytes: u64, object_max: u64, counters: Arc<CacheCounters>) -> Option<RamCache> {
        if capacity_bytes == 0 {
            return None;
        }
        let cache = mini_moka::unsync::Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|k: &Vec<u8>, v: &Rc<Cached>| {
                (k.len() + v.data.len() + v.meta.attrs.stored_len() + ENTRY_OVERHEAD_BYTES)
                    .min(u32::MAX as usize) as u32
            })
            .build();
        Some(RamCache { cache: RefCell::new(cache), object_max, counters })
    }

    /// Whether an object of `len` bytes may be cached.
    pub fn takes(&self, len: u64) -> bool {
        len <= self.object_max
    }

    /// The cached object for `key` on `shard`, if its record is still the one the index points
    /// at (see the module comment). Counts the look as a hit or a miss.
    pub fn lookup<I: podstore_disks::Io>(&self, shard: &Shard<I>, key: &Vec<u8>) -> Option<Rc<Cached>> {
        let found = self.cache.borrow_mut().get(key).cloned();
        let c = &self.counters;
        match found {
            Some(e) if e.disk == shard.id() && shard.servable_loc(key) == Some(e.loc) => {
                c.hits.fetch_add(1, Ordering::Relaxed);
                Some(e)
            }
            Some(_) => {
                self.invalidate(key);
                c.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => {
                c.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Offers an object just read (and verified) from disk; the admission policy decides.
    pub fn offer(&self, key: Vec<u8>, object: Cached) {
        if !self.takes(object.meta.object_len) || object.data.len() as u64 != object.meta.object_len {
            return;
        }
        self.counters.offered.fetch_add(1, Ordering::Relaxed);
        self.cache.borrow_mut().insert(key, Rc::new(object));
        self.publish();
    }

    /// Drops `key`'s entry (written, deleted or moved).
    pub fn invalidate(&self, key: &Vec<u8>) {
        let mut cache = self.cache.borrow_mut();
        if cache.contains_key(key) {
            cache.invalidate(key);
            self.counters.invalidated.fetch_add(1, Ordering::Relaxed);
        }
        drop(cache);
        self.publish();
    }

    fn publish(&self) {
        let cache = self.cache.borrow();
        self.counters.bytes.store(cache.weighted_size(), Ordering::Relaxed);
        self.counters.entries.store(cache.entry_count(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(disk: u32, loc: Loc, len: usize) -> Cached {
        Cached {
            disk,
            loc,
            meta: ObjectMeta {
                object_len: len as u64,
                attrs: crate::Attrs::default(),
                created_ms: 0,
                digest: [0; 16],
                seq: 0,
                version: Default::default(),
            },
            data: Bytes::from(vec![7u8; len]),
        }
    }

    #[test]
    fn the_cache_stays_within_its_bytes_and_keeps_hot_objects_through_a_scan() {
        let counters = Arc::new(CacheCounters::default());
        let cap = 1 << 20;
        let cache = RamCache::new(cap, 64 << 10, counters.clone()).expect("a cache");
        assert!(RamCache::new(0, 1, counters.clone()).is_none());
        let key = |i: u32| format!("/b/hot-{i}").into_bytes();
        // 32 hot objects of 16 KiB, asked for many times.
        for _ in 0..20 {
            for i in 0..32 {
                let k = key(i);
                if cache.cache.borrow_mut().get(&k).is_none() {
                    cache.offer(k, object(0, Loc::new(1, i as u64 * 4096, 20480, false), 16 << 10));
                }
            }
        }
        // A scan of 2,000 cold objects, each asked for once.
        for i in 0..2000u32 {
            let k = format!("/b/cold-{i}").into_bytes();
            let _ = cache.cache.borrow_mut().get(&k);
            cache.offer(k, object(0, Loc::new(2, i as u64 * 4096, 20480, false), 16 << 10));
        }
        let hot = (0..32).filter(|&i| cache.cache.borrow_mut().get(&key(i)).is_some()).count();
        assert!(hot >= 28, "the scan flushed the hot objects: {hot} of 32 left");
        assert!(cache.cache.borrow().weighted_size() <= cap, "over its bytes");
        // Objects over the size limit are not taken.
        cache.offer(b"/b/big".to_vec(), object(0, Loc::new(3, 0, 1 << 20, false), 100 << 10));
        assert!(cache.cache.borrow_mut().get(&b"/b/big".to_vec()).is_none());
        // Invalidation drops the entry.
        cache.invalidate(&key(0));
        assert!(cache.cache.borrow_mut().get(&key(0)).is_none());
        assert_eq!(counters.invalidated.load(Ordering::Relaxed), 1);
    }
}
