//! A configured disk made ready for the node: opened (labelled on first use) and locked, its
//! size checked against the engine's settings, its measured profile read. Used at start
//! (node.rs) and by `disks add` (admin.rs).

use podstore_disks::{fs_space, open_disk, DiskSpec};

use crate::config::DiskConf;
use crate::shared::DiskInfo;

/// Checks (and on first use labels) a disk, blocking: its spec, what the node shows of it, and
/// its placement weight: the configured one, else the one recorded, else its size in GiB (None
/// for a disk that failed its checks and has no weight on record). `core` will own it. The
/// one error is a disk that another process holds: the node must not start (or take it).
pub(crate) fn prepare_disk(
    d: &DiskConf,
    node_id: &str,
    engine: &crate::config::Engine,
    recorded_weight: Option<f64>,
    core: usize,
) -> Result<(DiskSpec, DiskInfo, Option<f64>), String> {
    let spec = DiskSpec {
        id: d.id,
        path: d.path.clone(),
        tier: d.tier.into(),
        require_mount_point: d.require_mount_point,
        cache: d.cache.into(),
    };
    let (failed, capacity, lock) = match open_disk(&spec, node_id) {
        Ok(disk) => {
            let capacity = fs_space(&spec.path).map_or(0, |(cap, _)| cap);
            match too_small(capacity, engine) {
                Some(why) => {
                    tracing::error!("disk {} ({}) is not used: {why}", d.id, d.path.display());
                    (Some(why), 0, None)
                }
                None => (None, capacity, Some(disk.lock)),
            }
        }
        Err(e @ podstore_disks::Error::Locked { .. }) => {
            return Err(format!("disk {} ({}): {e}", d.id, d.path.display()));
        }
        Err(e) => {
            tracing::error!("disk {} ({}) is not used: {e}", d.id, d.path.display());
            (Some(e.to_string()), 0, None)
        }
    };
    let weight = match failed {
        None => {
            Some(d.weight.or(recorded_weight).unwrap_or((capacity as f64 / (1u64 << 30) as f64).max(1.0)))
        }
        Some(_) => d.weight.or(recorded_weight),
    };
    let profile = match crate::profile::read(&d.path) {
        Ok(Some(p)) => {
            tracing::info!(
                "disk {}: measured profile: {} reads in flight, background budget {:.0} MiB/s",
                d.id,
                p.queue_depth,
                p.background_mib_per_s
            );
            Some(p)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("disk {}: {e}; using the defaults", d.id);
            None
        }
    };
    let info = DiskInfo {
        id: d.id,
        path: d.path.clone(),
        tier: d.tier.into(),
        failed,
        capacity_bytes: capacity,
        core,
        profile,
        lock,
    };
    Ok((spec, info, weight))
}

/// Blobs a disk must hold at least: the one taking writes and one compaction writes into.
/// Below that a disk takes almost nothing (one blob of a 64 MiB disk with 1 GiB blobs: none).
pub const DISK_BLOBS_MIN: u64 = 2;

/// Why a disk of `capacity` bytes (its filesystem's size) can't be used with these engine
/// settings, if it can't: it must hold [`DISK_BLOBS_MIN`] blobs within `engine.disk_bytes_max`.
fn too_small(capacity: u64, engine: &crate::config::Engine) -> Option<String> {
    use crate::units::human_bytes;
    let usable = match engine.disk_bytes_max {
        0 => capacity,
        max => capacity.min(max),
    };
    let blob = engine.blob_size_bytes;
    if usable >= blob.saturating_mul(DISK_BLOBS_MIN) {
        return None;
    }
    // The largest blob size that fits: a whole number of MiB, the config's floor being 1 MiB.
    let fits = (usable / DISK_BLOBS_MIN) & !((1 << 20) - 1);
    let advice = if fits >= 1 << 20 {
        format!("set engine.blob_size_bytes to at most {fits} ({}), or use a larger disk", human_bytes(fits))
    } else {
        "no blob size fits (the smallest is 1 MiB); use a larger disk".to_string()
    };
    let within = if usable < capacity { " (engine.disk_bytes_max)" } else { "" };
    Some(format!(
        "{}{within} holds fewer than {DISK_BLOBS_MIN} blobs of engine.blob_size_bytes = {blob} ({}): \
         the disk would take almost nothing; {advice}",
        human_bytes(usable),
        human_bytes(blob)
    ))
}
