//! Per-peer backlogs: the writes accepted on this appliance that a peer has not confirmed yet.
//!
//! The records themselves are the durable part: a write is added to every peer's backlog when
//! its record is committed, and removed when the peer confirms its copy (or a newer write
//! supersedes it). Checkpoints save the backlogs; recovery adds back every record of this
//! origin in the tail after the checkpoint, so a backlog survives a crash of either side
//! (a copy sent twice is harmless: the receiver keeps the newest version).
//!
//! A backlog is bounded: past `backlog_records_max` entries it is dropped and marked
//! overflowed, and only a full comparison with the peer (anti-entropy) can bring it back in
//! step.

use std::collections::BTreeMap;

/// A record a peer has not confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogEntry {
    pub seq: u64,
    pub blob: u32,
    pub offset: u64,
    pub record_len: u64,
    pub created_ms: u64,
}

impl BacklogEntry {
    /// The entry of a committed record.
    pub(crate) fn of(h: &crate::record::Header) -> BacklogEntry {
        BacklogEntry {
            seq: h.seq,
            blob: h.blob_id,
            offset: h.offset,
            record_len: h.record_len,
            created_ms: h.created_ms,
        }
    }
}

/// One peer's backlog on one shard.
#[derive(Debug, Default, Clone)]
pub struct Backlog {
    pub(crate) entries: BTreeMap<u64, BacklogEntry>,
    /// Entries handed out to a sender and not yet confirmed or released.
    pub(crate) in_flight: std::collections::HashSet<u64>,
    pub(crate) bytes: u64,
    /// Entries were dropped at the limit: only anti-entropy can tell what the peer lacks.
    pub(crate) overflowed: bool,
}

/// What a backlog holds, for metrics and `/admin/peers`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BacklogStats {
    pub objects: u64,
    pub bytes: u64,
    /// Creation time of the oldest entry (ms since the epoch), 0 if empty.
    pub oldest_created_ms: u64,
    pub overflowed: bool,
}

impl Backlog {
    pub(crate) fn add(&mut self, e: BacklogEntry, max: u64) {
        if self.overflowed {
            return;
        }
        if self.entries.len() as u64 >= max {
            self.entries.clear();
            self.in_flight.clear();
            self.bytes = 0;
            self.overflowed = true;
            return;
        }
        if self.entries.insert(e.seq, e).is_none() {
            self.bytes += e.record_len;
        }
    }

    pub(crate) fn confirm(&mut self, seq: u64) {
        self.in_flight.remove(&seq);
        if let Some(e) = self.entries.remove(&seq) {
            self.bytes -= e.record_len;
        }
    }

    /// Up to `max` entries not in flight, oldest first, created at or before `before_ms`;
    /// they are in flight until confirmed or released.
    pub(crate) fn take(&mut self, max: usize, before_ms: u64) -> Vec<BacklogEntry> {
        let picked: Vec<BacklogEntry> = self
            .entries
            .values()
            .filter(|e| !self.in_flight.contains(&e.seq) && e.created_ms <= before_ms)
            .take(max)
            .copied()
            .collect();
        self.in_flight.extend(picked.iter().map(|e| e.seq));
        picked
    }

    /// Compaction moved the record of entry `old_seq`: the entry now names the copy (a sender
    /// holding the old entry finds it superseded; the copy is sent instead).
    pub(crate) fn moved(&mut self, old_seq: u64, to: BacklogEntry) {
        if let Some(e) = self.entries.remove(&old_seq) {
            self.bytes -= e.record_len;
            self.in_flight.remove(&old_seq);
            self.add(BacklogEntry { created_ms: e.created_ms, ..to }, u64::MAX);
        }
    }

    /// Whether the entry with this sequence is in the backlog (or may be: an overflowed
    /// backlog no longer knows).
    pub(crate) fn may_hold(&self, seq: u64) -> bool {
        self.overflowed || self.entries.contains_key(&seq)
    }

    pub(crate) fn release(&mut self, seq: u64) {
        self.in_flight.remove(&seq);
    }

    pub(crate) fn stats(&self) -> BacklogStats {
        BacklogStats {
            objects: self.entries.len() as u64,
            bytes: self.bytes,
            oldest_created_ms: self.entries.values().map(|e| e.created_ms).min().unwrap_or(0),
            overflowed: self.overflowed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seq: u64, created_ms: u64) -> BacklogEntry {
        BacklogEntry { seq, blob: 0, offset: seq * 4096, record_len: 4096, created_ms }
    }

    #[test]
    fn take_confirm_release_and_overflow() {
        let mut b = Backlog::default();
        for s in 1..=5 {
            b.add(e(s, s * 10), 100);
        }
        assert_eq!(
            b.stats(),
            BacklogStats { objects: 5, bytes: 5 * 4096, oldest_created_ms: 10, overflowed: false }
        );
        let t = b.take(2, 1000);
        assert_eq!(t.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(b.take(10, 35).iter().map(|x| x.seq).collect::<Vec<_>>(), vec![3], "only old enough");
        b.confirm(1);
        b.release(2);
        assert_eq!(b.take(1, 1000)[0].seq, 2, "a released entry is taken again");
        assert_eq!(b.stats().objects, 4);
        for s in 6..200 {
            b.add(e(s, 0), 100);
        }
        assert!(b.stats().overflowed);
        assert_eq!(b.stats().objects, 0);
        b.add(e(500, 0), 100);
        assert_eq!(b.stats().objects, 0, "an overflowed backlog stays empty until anti-entropy");
    }
}
