//! Group commit: writers to one file share `fdatasync` calls.
//!
//! A writer whose data write has completed takes a ticket and waits until a sync that started
//! after its ticket was issued has succeeded. One sync per file runs at a time; every writer
//! that finished its write while it ran is covered by the next one, so N concurrent writers
//! cost about two syncs, not N. A failed sync fails every waiter it would have covered and all
//! later ones: the shard is fenced, and nothing is retried (DESIGN.md §4.5).

use std::cell::{Cell, RefCell};

use tokio::sync::Notify;

/// Sync state of one file.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    issued: Cell<u64>,
    durable: Cell<u64>,
    syncing: Cell<bool>,
    failed: RefCell<Option<String>>,
    done: Notify,
    /// Tickets covered by each completed sync, for the batch-size metric.
    last_batch: Cell<u64>,
    syncs: Cell<u64>,
}

struct LeaderGuard<'a>(&'a GroupCommit);

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        self.0.syncing.set(false);
        self.0.done.notify_waiters();
    }
}

/// Outcome of a group sync.
pub(crate) enum Synced {
    /// Everything the caller wrote before asking is durable.
    Durable,
    /// A sync failed; the message says how.
    Failed(String),
}

impl GroupCommit {
    /// Waits until everything written before this call is durable, running the sync itself
    /// when no sync is in flight. `sync` performs one fdatasync.
    pub(crate) async fn sync<F, Fut>(&self, sync: F) -> Synced
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let ticket = self.issued.get() + 1;
        self.issued.set(ticket);
        loop {
            if let Some(e) = self.failed.borrow().clone() {
                return Synced::Failed(e);
            }
            if self.durable.get() >= ticket {
                return Synced::Durable;
            }
            if self.syncing.get() {
                let notified = self.done.notified();
                if self.syncing.get() {
                    notified.await;
                }
                continue;
            }
            self.syncing.set(true);
            let target = self.issued.get();
            // If this future is dropped mid-sync, the guard lets the next waiter lead.
            let guard = LeaderGuard(self);
            let r = sync().await;
            std::mem::forget(guard);
            self.syncing.set(false);
            match r {
                Ok(()) => {
                    self.last_batch.set(target - self.durable.get());
                    self.syncs.set(self.syncs.get() + 1);
                    self.durable.set(target);
                }
                Err(e) => *self.failed.borrow_mut() = Some(e),
            }
            self.done.notify_waiters();
        }
    }

    /// Writers covered by the most recent sync.
    pub(crate) fn last_batch(&self) -> u64 {
        self.last_batch.get()
    }

    /// Syncs completed.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.get()
    }
}
