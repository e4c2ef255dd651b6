//! The node's budget for write buffers.
//!
//! A streaming write fills an aligned buffer (`ShardConfig::write_buf_bytes`, 1 MiB by default)
//! while the one before it is written: two buffers per write. With a thousand writes in flight
//! on a node that is gigabytes, held for as long as the slowest client takes to send its body.
//! The budget bounds it: a write takes its full-size buffers from the budget while there is
//! room; past it the write gets one small buffer ([`SMALL_WRITE_BUF_BYTES`]) and no second one
//! (each buffer's write is then awaited before the buffer fills again). Slower for that write,
//! never refused: the budget trades throughput for memory, not availability.

use std::sync::atomic::{AtomicU64, Ordering};

/// The buffer of a write past the budget, and the size up to which buffers are never counted
/// (a write needs one buffer at least; `writes_in_flight_max` bounds how many there are).
pub const SMALL_WRITE_BUF_BYTES: usize = 64 << 10;

/// Bytes of write buffers the node's writes hold, against a limit (shared by every core).
#[derive(Debug)]
pub struct WriteMemory {
    max: u64,
    used: AtomicU64,
    refused: AtomicU64,
}

impl WriteMemory {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> WriteMemory {
        WriteMemory { max, used: AtomicU64::new(0), refused: AtomicU64::new(0) }
    }

    /// Takes `n` bytes if they fit under the limit.
    pub fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= self.max)
            })
            .is_ok()
    }

    /// Counts a write that went on with less than its full buffers.
    pub fn note_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives back `n` bytes taken with [`WriteMemory::try_take`].
    pub fn give(&self, n: u64) {
        let before = self.used.fetch_sub(n, Ordering::AcqRel);
        debug_assert!(before >= n, "gave back more write memory than was taken");
    }

    /// Bytes taken now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Writes that found the budget spent (each went on with a small buffer, or with one
    /// buffer instead of two), since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_within_the_limit_only() {
        let m = WriteMemory::new(3 << 20);
        assert!(m.try_take(2 << 20));
        assert!(!m.try_take(2 << 20), "past the limit");
        assert_eq!(m.used(), 2 << 20);
        assert!(m.try_take(1 << 20), "up to the limit exactly");
        m.give(2 << 20);
        assert!(m.try_take(2 << 20));
        m.give(3 << 20);
        assert_eq!(m.used(), 0);
        assert!(!m.try_take(u64::MAX), "no overflow");
    }
}
