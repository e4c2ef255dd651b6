//! What the engine's tests on the simulated disk share: small shard settings, a runtime for
//! one core, object bodies, and reading an object whole.

#![allow(dead_code)]

use std::rc::Rc;

use podstore_disks::SimDisk;
use podstore_engine::{Shard, ShardConfig};

/// Settings of a small shard: blobs of 256 KiB, so tests fill, seal and compact them quickly.
pub fn small_cfg() -> ShardConfig {
    ShardConfig {
        blob_size_bytes: 256 << 10,
        write_buf_bytes: 16 << 10,
        scan_window_bytes: 64 << 10,
        object_size_max_bytes: 8 << 20,
        tombstone_reserve_bytes: 16 << 10,
        ..ShardConfig::default()
    }
}

/// Runs `f` on a current-thread runtime with a local task set (the shard is not `Send`).
pub fn run<F: std::future::Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    tokio::task::LocalSet::new().block_on(&rt, f);
}

/// `n` bytes that depend on `seed`.
pub fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// The object's bytes, or None if the shard does not have it.
pub async fn get(shard: &Rc<Shard<SimDisk>>, key: &[u8]) -> Option<Vec<u8>> {
    let mut r = shard.get(key).await.expect("get")?;
    Some(r.read_all().await.expect("read"))
}
