//! Background work on a disk: an I/O budget shared by every background job of the disk
//! (compaction, scrub, and later rebuild and rebalance), and the pause/resume control of one job.
//!
//! The budget is a token bucket in bytes per second. A job takes what it is about to read or
//! write before it does; when the bucket is in debt the job sleeps the debt off, so foreground
//! requests keep the disk's remaining bandwidth. A rate of zero means no limit (the simulator,
//! and an operator's "run it now").
//!
//! Each operation also costs a fixed number of bytes (`op_cost`, `maintenance.op_cost_kib`):
//! moving a 4 KiB object costs a read, a write and an index change, not 8 KiB of transfer, and
//! a budget in bytes alone let thousands of small moves a second take the CPU and the disk's
//! queue from the foreground.

use std::cell::Cell;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A per-disk budget for background I/O (one core's thread; not `Send`).
#[derive(Debug)]
pub struct IoBudget {
    /// Bytes per second; 0 = unlimited.
    rate: Cell<u64>,
    tokens: Cell<f64>,
    last: Cell<Instant>,
    /// Bytes taken so far (all jobs).
    used: Cell<u64>,
    /// Bytes each operation is charged on top of what it transfers.
    op_cost: Cell<u64>,
}

/// Most a budget saves up while idle: a quarter second of its rate.
const BURST_SECONDS: f64 = 0.25;

impl IoBudget {
    /// A budget of `bytes_per_s` (0 = unlimited).
    pub fn new(bytes_per_s: u64) -> IoBudget {
        IoBudget {
            rate: Cell::new(bytes_per_s),
            tokens: Cell::new(0.0),
            last: Cell::new(Instant::now()),
            used: Cell::new(0),
            op_cost: Cell::new(0),
        }
    }

    /// Charges every operation `bytes` on top of what it transfers (see the module comment).
    pub fn set_op_cost(&self, bytes: u64) {
        self.op_cost.set(bytes);
    }

    /// The rate, bytes per second (0 = unlimited).
    pub fn rate(&self) -> u64 {
        self.rate.get()
    }

    /// Changes the rate.
    pub fn set_rate(&self, bytes_per_s: u64) {
        self.refill();
        self.rate.set(bytes_per_s);
    }

    /// Bytes taken by every job so far.
    pub fn used(&self) -> u64 {
        self.used.get()
    }

    fn refill(&self) {
        let now = Instant::now();
        let rate = self.rate.get() as f64;
        let dt = now.duration_since(self.last.get()).as_secs_f64();
        self.last.set(now);
        self.tokens.set((self.tokens.get() + dt * rate).min(rate * BURST_SECONDS));
    }

    /// How long a job must wait after `ops` operations transferring `bytes` now (zero when
    /// within budget).
    fn debit(&self, ops: u64, bytes: u64) -> Duration {
        self.used.set(self.used.get() + bytes);
        let rate = self.rate.get();
        if rate == 0 {
            return Duration::ZERO;
        }
        self.refill();
        let charge = bytes.saturating_add(ops.saturating_mul(self.op_cost.get()));
        let t = self.tokens.get() - charge as f64;
        self.tokens.set(t);
        if t >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-t / rate as f64)
        }
    }

    /// Takes `bytes` from the budget, sleeping off any debt (needs a runtime with a timer
    /// unless the budget is unlimited).
    pub async fn take(&self, bytes: u64) {
        self.take_ops(1, bytes).await
    }

    /// Takes `ops` operations moving `bytes` in all (each operation also costs `op_cost`).
    pub async fn take_ops(&self, ops: u64, bytes: u64) {
        let wait = self.debit(ops, bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Pause, resume and stop of one background job, and whether it runs.
#[derive(Debug, Default)]
pub struct JobCtl {
    paused: Cell<bool>,
    stop: Cell<bool>,
    running: Cell<bool>,
    changed: Notify,
}

impl JobCtl {
    /// Pauses the job at its next step (it keeps its place).
    pub fn pause(&self) {
        self.paused.set(true);
    }

    /// Resumes a paused job.
    pub fn resume(&self) {
        self.paused.set(false);
        self.changed.notify_waiters();
    }

    /// Asks the job to stop at its next step (a stopped job leaves nothing half-done).
    pub fn stop(&self) {
        self.stop.set(true);
        self.changed.notify_waiters();
    }

    /// Whether the job is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.get()
    }

    /// Whether a pass of the job is running.
    pub fn is_running(&self) -> bool {
        self.running.get()
    }

    /// Marks a pass as started; false if one already runs.
    pub fn begin(&self) -> bool {
        !self.running.replace(true)
    }

    /// Marks the pass as ended (a stop request is consumed).
    pub fn end(&self) {
        self.running.set(false);
        self.stop.set(false);
    }

    /// Waits while paused; returns false if the job should stop.
    pub async fn proceed(&self) -> bool {
        loop {
            if self.stop.get() {
                return false;
            }
            if !self.paused.get() {
                return true;
            }
            let wake = self.changed.notified();
            if self.stop.get() || !self.paused.get() {
                continue;
            }
            wake.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_charges_debt_at_its_rate() {
        let b = IoBudget::new(1 << 20);
        assert!(b.debit(0, 0).is_zero());
        let w = b.debit(1, 2 << 20);
        assert!(w >= Duration::from_millis(1900) && w <= Duration::from_millis(2100), "{w:?}");
        assert_eq!(b.used(), 2 << 20);
        let free = IoBudget::new(0);
        assert!(free.debit(1, u64::MAX / 2).is_zero());
        // Operations cost their op_cost on top of their bytes; used() counts bytes only.
        let b = IoBudget::new(1 << 20);
        b.set_op_cost(64 << 10);
        let w = b.debit(16, 0);
        assert!(w >= Duration::from_millis(900) && w <= Duration::from_millis(1100), "{w:?}");
        let w = b.debit(8, 512 << 10);
        assert!(w >= Duration::from_millis(1900) && w <= Duration::from_millis(2100), "{w:?}");
        assert_eq!(b.used(), 512 << 10);
    }

    #[test]
    fn a_paused_job_waits_and_a_stopped_one_ends() {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(async {
            let c = std::rc::Rc::new(JobCtl::default());
            assert!(c.proceed().await);
            c.pause();
            let c2 = c.clone();
            let waiter = async move { c2.proceed().await };
            let resumer = async {
                tokio::task::yield_now().await;
                c.resume();
            };
            let (go, ()) = tokio::join!(waiter, resumer);
            assert!(go);
            c.stop();
            assert!(!c.proceed().await);
            c.end();
            assert!(c.proceed().await, "a stop request ends with the pass");
        });
    }
}
