//! Repair of damaged records from the peers: every `maintenance.repair_interval_s`, each
//! quarantined object is asked of the peers in turn (one that sends its copy supersedes the
//! damaged one, with no client involved), a record that failed to read is read again, and
//! damaged records whose key is unknown (their header was destroyed) are named by listing the
//! peers' keys of their digest bucket.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use podstore_disks::AnyIo;
use podstore_engine::Shard;

use crate::shared::Shared;

/// Quarantined keys one repair round asks peers for, per shard.
const REPAIRS_PER_ROUND: usize = 256;

/// Repairs the quarantined keys of this core's shards, in rounds: a record marked bad after a
/// read error is first read again (it is back in service if it reads whole); the others, and
/// those that still fail, are asked of the peers in turn.
pub async fn repair(shared: Arc<Shared>, shards: crate::shared::Shards, links: Rc<crate::peer::link::Links>) {
    use podstore_engine::checkpoint::QuarantineReason;
    let limit = Duration::from_millis(shared.cfg().limits.copy_timeout_ms);
    for outcome in ["read_again", "repaired", "not_repaired", "named", "not_named"] {
        metrics::counter!("podstore_repairs_total", "outcome" => outcome).increment(0);
    }
    loop {
        tokio::time::sleep(Duration::from_secs(shared.cfg().maintenance.repair_interval_s)).await;
        name_damaged(&shards, &links, limit).await;
        let todo: Vec<(Rc<Shard<AnyIo>>, Vec<u8>, QuarantineReason)> = shards
            .borrow()
            .values()
            .flat_map(|s| {
                let q = s.quarantined().into_iter().filter_map(|q| Some((s.clone(), q.key?, q.reason)));
                q.take(REPAIRS_PER_ROUND).collect::<Vec<_>>()
            })
            .collect();
        for (shard, key, reason) in todo {
            if reason == QuarantineReason::ReadError && matches!(shard.recheck(&key).await, Ok(true)) {
                metrics::counter!("podstore_repairs_total", "outcome" => "read_again").increment(1);
                continue;
            }
            if links.peers.is_empty() {
                continue;
            }
            let mut repaired = false;
            for p in &links.peers {
                let r = tokio::time::timeout(limit, p.pull(&key)).await;
                repaired = matches!(r, Ok(Ok(crate::peer::frame::AckStatus::Stored)));
                if repaired {
                    break;
                }
            }
            let outcome = if repaired { "repaired" } else { "not_repaired" };
            metrics::counter!("podstore_repairs_total", "outcome" => outcome).increment(1);
        }
    }
}

/// Damaged records known only by fingerprint (a fault destroyed the header holding the key;
/// the index keeps a fingerprint): each peer in turn lists the keys of the fingerprint's
/// anti-entropy bucket, and a key with that fingerprint that the index places there names the
/// record, which the repair round then fetches like any other quarantined key.
async fn name_damaged(shards: &crate::shared::Shards, links: &crate::peer::link::Links, limit: Duration) {
    type Unnamed = (Rc<Shard<AnyIo>>, u64, podstore_engine::index::Loc);
    let mut by_bucket: std::collections::BTreeMap<Option<usize>, Vec<Unnamed>> = Default::default();
    for s in shards.borrow().values() {
        for (fp, loc) in s.unnamed_damaged().into_iter().take(REPAIRS_PER_ROUND) {
            by_bucket.entry(s.digest_bucket_of(fp)).or_default().push((s.clone(), fp, loc));
        }
    }
    if links.peers.is_empty() {
        return;
    }
    for (bucket, mut left) in by_bucket {
        // Under a test's fingerprint mask the bucket is unknown: every bucket is listed.
        let buckets: Vec<usize> =
            bucket.map_or_else(|| (0..podstore_engine::digest::BUCKETS).collect(), |b| vec![b]);
        for p in &links.peers {
            for &b in &buckets {
                if left.is_empty() {
                    break;
                }
                let Ok(Ok(keys)) =
                    tokio::time::timeout(limit, super::anti_entropy::peer_bucket_keys(p, b)).await
                else {
                    break; // this peer can't answer now: the next one
                };
                for k in keys {
                    left.retain(|(s, fp, loc)| {
                        let named = s.fingerprint_matches(&k.key, *fp) && s.name_damaged(&k.key, *loc);
                        if named {
                            metrics::counter!("podstore_repairs_total", "outcome" => "named").increment(1);
                        }
                        !named
                    });
                }
            }
        }
        metrics::counter!("podstore_repairs_total", "outcome" => "not_named").increment(left.len() as u64);
    }
}
