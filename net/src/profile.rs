//! A disk's measured profile (`podstore-tune measure` writes `podstore.disk-profile.toml` in
//! the disk's directory): the node bounds the disk's reads in flight by the measured queue
//! depth and keeps its background budget for the jobs that use one.

use std::path::Path;

pub use podstore_disks::label::PROFILE_FILE;

/// Reads in flight when a disk has no profile.
pub const DEFAULT_QUEUE_DEPTH: usize = 256;

/// What the node takes from a profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskProfile {
    /// Reads in flight past which random reads stopped gaining.
    pub queue_depth: usize,
    /// Bandwidth background work may use.
    pub background_mib_per_s: f64,
}

/// The disk's profile: None without a file; an error naming the file if it is unreadable or
/// its values are out of range.
pub fn read(dir: &Path) -> Result<Option<DiskProfile>, String> {
    let path = dir.join(PROFILE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let t: toml::Table = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let qd = t.get("queue_depth").and_then(|v| v.as_integer());
    let bg = t.get("background_mib_per_s").and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)));
    match (qd, bg) {
        (Some(q), Some(b)) if (1..=4096).contains(&q) && b.is_finite() && b >= 0.0 => {
            Ok(Some(DiskProfile { queue_depth: q as usize, background_mib_per_s: b }))
        }
        _ => Err(format!(
            "{}: queue_depth (1..=4096) and background_mib_per_s (>= 0) are needed; run podstore-tune measure again",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("podstore-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        assert_eq!(read(&dir), Ok(None));
        std::fs::write(
            dir.join(PROFILE_FILE),
            "queue_depth = 16\nbackground_mib_per_s = 120.5\n[[x]]\ny = 1\n",
        )
        .expect("write");
        assert_eq!(read(&dir), Ok(Some(DiskProfile { queue_depth: 16, background_mib_per_s: 120.5 })));
        std::fs::write(dir.join(PROFILE_FILE), "queue_depth = 0\nbackground_mib_per_s = 1\n").expect("write");
        assert!(read(&dir).expect_err("out of range").contains("queue_depth"));
        std::fs::write(dir.join(PROFILE_FILE), "not toml [").expect("write");
        assert!(read(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
