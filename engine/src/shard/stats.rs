use super::*;

/// Counters of one shard (monotonic unless noted).
#[derive(Debug, Clone, Default)]
pub struct ShardStats {
    pub shard_id: u32,
    /// Objects (not tombstones) in the index (gauge).
    pub objects: u64,
    /// Tombstones in the index (gauge).
    pub tombstones: u64,
    /// Bytes of records the index points to (gauge).
    pub live_bytes: u64,
    /// Bytes of records nothing points to any more (gauge).
    pub dead_bytes: u64,
    /// Bytes of blob files (gauge).
    pub blob_bytes: u64,
    /// Bytes appended or reserved in blobs (gauge).
    pub used_bytes: u64,
    /// Index memory (gauge).
    pub index_bytes: u64,
    pub blobs: u64,
    pub puts: u64,
    pub deletes: u64,
    pub gets: u64,
    pub aborted_writes: u64,
    pub io_errors: u64,
    pub checksum_errors: u64,
    /// Damaged records and regions awaiting repair (gauge).
    pub quarantined: u64,
    pub syncs: u64,
    /// Blob files open now (gauge), and reopened after the cache closed them.
    pub open_blob_files: u64,
    pub blob_reopens: u64,
    /// Writers covered by the most recent fdatasync (gauge).
    pub last_sync_batch: u64,
    /// The disk's read limit, and the most reads it has had in flight at once.
    pub reads_in_flight_max: u64,
    pub reads_in_flight_peak: u64,
    pub checkpoints: u64,
    /// Why the shard is fenced, if it is.
    pub fenced: Option<String>,
    /// Each peer's backlog on this shard.
    pub backlogs: Vec<(String, BacklogStats)>,
    /// Compaction's progress and totals, and whether it runs or is paused.
    pub compact: super::compact::CompactStats,
    pub compact_running: bool,
    pub compact_paused: bool,
    /// Scrub's progress and totals, and whether it runs or is paused.
    pub scrub: super::scrub::ScrubStats,
    pub scrub_running: bool,
    pub scrub_paused: bool,
    /// The disk's background I/O budget and what background jobs took of it (set by the node,
    /// which owns the budget; zero here).
    pub background_bytes_per_s: u64,
    pub background_bytes: u64,
    /// Keys the node moved from this disk to others (rebalancing, draining), and moves that
    /// failed (set by the node).
    pub moved_away: u64,
    pub move_failures: u64,
    /// Tiering (set by the node): objects and bytes moved from this fast disk to the capacity
    /// tier, moves that failed, bytes still to move at the last look, and whether it runs.
    pub migrated_objects: u64,
    pub migrated_bytes: u64,
    pub migration_failures: u64,
    pub migration_backlog_bytes: u64,
    pub migration_running: bool,
    pub migration_paused: bool,
    pub migration_passes: u64,
    pub migration_last_error: Option<String>,
    /// Bytes written with zeros ahead of the open blob's tail, and reservations that waited
    /// for a zeroing (after which that blob is not zeroed further).
    pub zeroed_ahead_bytes: u64,
    pub zero_ahead_waits: u64,
    /// The name index: its memory, runs and work.
    pub names: super::NamesFootprint,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) puts: u64,
    pub(crate) deletes: u64,
    pub(crate) gets: u64,
    pub(crate) aborted: u64,
    pub(crate) io_errors: u64,
    pub(crate) checksum_errors: u64,
    pub(crate) checkpoints: u64,
    pub(crate) live_bytes: u64,
    pub(crate) dead_bytes: u64,
    pub(crate) since_checkpoint_records: u64,
    pub(crate) since_checkpoint_bytes: u64,
    pub(crate) blob_reopens: u64,
    pub(crate) zeroed_ahead_bytes: u64,
    pub(crate) zero_ahead_waits: u64,
}

impl<I: Io> Shard<I> {
    /// Counters and gauges of the shard.
    pub fn stats(&self) -> ShardStats {
        let ix = self.index.borrow();
        let blobs = self.files.blobs.borrow();
        let c = self.counters.borrow();
        let (syncs, last_batch) =
            blobs.values().fold((0, 0), |(s, l), b| (s + b.commit.syncs(), l.max(b.commit.last_batch())));
        let used: u64 = blobs.values().map(|b| b.tail.get()).sum();
        ShardStats {
            shard_id: self.id,
            objects: ix.live_objects(),
            tombstones: ix.tombstones(),
            live_bytes: c.live_bytes,
            dead_bytes: c.dead_bytes,
            blob_bytes: blobs.values().map(|b| b.size_bytes).sum(),
            used_bytes: used,
            index_bytes: ix.memory_bytes(),
            blobs: blobs.len() as u64,
            puts: c.puts,
            deletes: c.deletes,
            gets: c.gets,
            aborted_writes: c.aborted,
            io_errors: c.io_errors,
            checksum_errors: c.checksum_errors,
            quarantined: self.damage.quarantine.borrow().len() as u64,
            syncs,
            open_blob_files: blobs.values().filter(|b| b.file.borrow().is_some()).count() as u64,
            blob_reopens: c.blob_reopens,
            zeroed_ahead_bytes: c.zeroed_ahead_bytes,
            zero_ahead_waits: c.zero_ahead_waits,
            last_sync_batch: last_batch,
            reads_in_flight_max: self.cfg.reads_in_flight_max as u64,
            reads_in_flight_peak: self.reads.reads_peak.get() as u64,
            checkpoints: c.checkpoints,
            fenced: self.fenced.borrow().clone(),
            backlogs: self
                .cfg
                .peers
                .iter()
                .cloned()
                .zip(self.replica.backlogs.borrow().iter().map(|b| b.stats()))
                .collect(),
            compact: self.jobs.compact_stats.borrow().clone(),
            compact_running: self.jobs.compact_ctl.is_running(),
            compact_paused: self.jobs.compact_ctl.is_paused(),
            scrub: {
                let mut st = self.jobs.scrub_stats.borrow().clone();
                st.pass_bytes_done = self.jobs.scrub_done.get();
                st
            },
            scrub_running: self.jobs.scrub_ctl.is_running(),
            scrub_paused: self.jobs.scrub_ctl.is_paused(),
            background_bytes_per_s: 0,
            background_bytes: 0,
            moved_away: 0,
            move_failures: 0,
            migrated_objects: 0,
            migrated_bytes: 0,
            migration_failures: 0,
            migration_backlog_bytes: 0,
            migration_running: false,
            migration_paused: false,
            migration_passes: 0,
            migration_last_error: None,
            names: self.names_footprint(),
        }
    }
}
