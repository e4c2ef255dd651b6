//! What the node reports of its replication with each peer (node-wide: every core adds to
//! it; `/admin/peers`, the metrics).

use std::sync::atomic::{AtomicBool, AtomicU64};

use tokio::sync::Notify;

/// Catch-up toward one peer, node-wide (every core's loop adds to it): for `/admin/peers`,
/// the metrics, and measuring a drain on the node's own clock.
#[derive(Debug, Default)]
pub struct CatchUp {
    /// Backlogged writes the peer confirmed, and their record bytes.
    pub copies: AtomicU64,
    pub bytes: AtomicU64,
    /// Unix milliseconds of the first and the latest confirmed copy since the node started
    /// (0: none yet).
    pub first_ms: AtomicU64,
    pub last_ms: AtomicU64,
    /// The peer was heard from: it connected to this node (a node announces itself to every
    /// peer when it starts). Counted up at each connection; `heard` wakes every core's loop
    /// backing off toward that peer, so a returning peer gets its backlog at once instead of
    /// after up to `BACKOFF_MAX`.
    pub heard_count: AtomicU64,
    pub heard: Notify,
}

impl CatchUp {
    /// The peer connected to this node.
    pub fn peer_heard(&self) {
        self.heard_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.heard.notify_waiters();
    }

    pub(crate) fn confirmed(&self, record_bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = podstore_engine::now_ms();
        let _ = self.first_ms.compare_exchange(0, now, Relaxed, Relaxed);
        self.last_ms.fetch_max(now, Relaxed);
        self.copies.fetch_add(1, Relaxed);
        self.bytes.fetch_add(record_bytes, Relaxed);
    }
}

/// Progress of anti-entropy with one peer (shared with the admin thread).
#[derive(Debug, Default)]
pub struct AntiEntropy {
    pub running: AtomicBool,
    /// A pass was asked for (admin endpoint).
    pub requested: AtomicBool,
    pub wake: Notify,
    pub passes: AtomicU64,
    pub buckets_differing: AtomicU64,
    pub buckets_done: AtomicU64,
    pub keys_compared: AtomicU64,
    pub pushed: AtomicU64,
    pub pulled: AtomicU64,
    pub errors: AtomicU64,
    /// Errors in the current (or last) pass.
    pub pass_errors: AtomicU64,
    /// Unix seconds when the last pass ended (0: never).
    pub last_end_s: AtomicU64,
    pub last_duration_ms: AtomicU64,
    pub last_error: std::sync::Mutex<Option<String>>,
}
