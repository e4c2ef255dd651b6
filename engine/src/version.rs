//! Versions that every copy of an object agrees on: a hybrid logical clock plus the origin.
//!
//! A write is stamped once, by the appliance that accepted it, and the stamp travels with every
//! copy. Any two versions compare the same way on every appliance (clock first, then origin),
//! so the newest write wins everywhere whatever order copies arrive in, and a tombstone with a
//! newer version than an old copy keeps that copy from coming back.
//!
//! The clock is a hybrid logical clock (Kulkarni et al., 2014) packed in 64 bits: the top 48
//! bits are milliseconds since the Unix epoch, the low 16 a counter that orders stamps taken in
//! the same millisecond or while the wall clock lags behind a stamp already seen. A node's
//! clock is never behind any stamp it has issued, received or found on its disks, so a local
//! write is always newer than every version the node knows of.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of the logical counter.
const LOGICAL_BITS: u32 = 16;

/// The version of one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// Hybrid logical clock: milliseconds << 16 | counter.
    pub hlc: u64,
    /// The appliance that accepted the write (a hash of its node id).
    pub origin: u64,
}

impl Version {
    /// No version: older than every real one (records of format 1 written before versions).
    pub const NONE: Version = Version { hlc: 0, origin: 0 };

    /// Milliseconds since the Unix epoch of the stamp's clock part.
    pub fn millis(self) -> u64 {
        self.hlc >> LOGICAL_BITS
    }

    /// Text form, `<hlc hex>-<origin hex>`, stable for logs and tools.
    pub fn to_text(self) -> String {
        format!("{:016x}-{:016x}", self.hlc, self.origin)
    }

    /// Parses [`Version::to_text`].
    pub fn from_text(s: &str) -> Option<Version> {
        let (a, b) = s.split_once('-')?;
        if a.len() != 16 || b.len() != 16 {
            return None;
        }
        Some(Version { hlc: u64::from_str_radix(a, 16).ok()?, origin: u64::from_str_radix(b, 16).ok()? })
    }
}

/// The origin number of a node id (XXH3-64 of its name, never 0).
pub fn origin_of(node_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(node_id.as_bytes()).max(1)
}

/// A node's hybrid logical clock, shared by its cores (one atomic, no lock).
#[derive(Debug)]
pub struct Clock {
    origin: u64,
    last: AtomicU64,
    /// Wall clock in milliseconds; replaceable for tests.
    wall: fn() -> u64,
}

/// Milliseconds since the Unix epoch on the system's wall clock (0 if it is set before 1970):
/// the one wall clock of podstore's code.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Clock {
    /// A clock for the node with this origin number, on the system's wall clock.
    pub fn new(origin: u64) -> Clock {
        Clock::with_wall(origin, now_ms)
    }

    /// A clock on another wall clock (tests skew and freeze it).
    pub fn with_wall(origin: u64, wall: fn() -> u64) -> Clock {
        Clock { origin, last: AtomicU64::new(0), wall }
    }

    /// This node's origin number.
    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// A new stamp, newer than every stamp this clock issued or observed.
    pub fn now(&self) -> Version {
        let physical = (self.wall)() << LOGICAL_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = physical.max(last + 1);
            match self.last.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Version { hlc: next, origin: self.origin },
                Err(v) => last = v,
            }
        }
    }

    /// Takes note of a stamp seen elsewhere (a peer's write, a record on disk), so later
    /// stamps are newer.
    pub fn observe(&self, hlc: u64) {
        self.last.fetch_max(hlc, Ordering::Relaxed);
    }

    /// The newest stamp issued or observed.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frozen() -> u64 {
        1_700_000_000_000
    }

    #[test]
    fn stamps_increase_even_with_a_frozen_wall_clock() {
        let c = Clock::with_wall(7, frozen);
        let a = c.now();
        let b = c.now();
        assert!(b > a);
        assert_eq!(a.millis(), frozen());
        assert_eq!(b.hlc, a.hlc + 1);
    }

    #[test]
    fn an_observed_future_stamp_keeps_later_ones_newer() {
        let c = Clock::with_wall(7, frozen);
        let far = (frozen() + 60_000) << LOGICAL_BITS;
        c.observe(far);
        assert!(c.now().hlc > far);
        // Observing an older stamp changes nothing.
        let before = c.last();
        c.observe(5);
        assert_eq!(c.last(), before);
    }

    #[test]
    fn ties_on_the_clock_are_broken_by_origin_the_same_way_everywhere() {
        let a = Version { hlc: 10, origin: 1 };
        let b = Version { hlc: 10, origin: 2 };
        assert!(b > a);
        assert!(Version::NONE < a);
        assert_eq!(Version::from_text(&b.to_text()), Some(b));
        assert_eq!(Version::from_text("zz"), None);
        assert_ne!(origin_of("a"), origin_of("b"));
    }
}
