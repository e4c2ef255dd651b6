//! The names of the files a shard keeps in its directory (blob files, index checkpoints, the
//! name index's damage mark),
//! made and recognized in one place.

/// Left in a shard's directory when a run of its name index failed its checks: the next start
/// rebuilds the name index from the records, then removes it. (The runs' own names are made
/// in `names/run.rs`.)
pub const NAMES_DAMAGED_FILE: &str = "names.damaged";

/// File name of a blob.
pub fn blob_name(id: u32, dedicated: bool) -> String {
    format!("blob-{id:07}.{}", if dedicated { "psl" } else { "psb" })
}

/// Parses a blob file name: (id, dedicated).
pub fn parse_blob_name(name: &str) -> Option<(u32, bool)> {
    let rest = name.strip_prefix("blob-")?;
    let (num, ext) = rest.split_once('.')?;
    if num.len() != 7 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let dedicated = match ext {
        "psb" => false,
        "psl" => true,
        _ => return None,
    };
    Some((num.parse().ok()?, dedicated))
}

/// Checkpoint file name for a max sequence.
pub fn ckpt_name(max_seq: u64) -> String {
    format!("index-{max_seq:016x}.ckpt")
}

/// Parses a checkpoint file name.
pub fn parse_ckpt_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("index-")?.strip_suffix(".ckpt")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_names_round_trip() {
        assert_eq!(parse_blob_name(&blob_name(12, false)), Some((12, false)));
        assert_eq!(parse_blob_name(&blob_name(1_048_575, true)), Some((1_048_575, true)));
        for bad in ["blob-12.psb", "blob-000001x.psb", "blob-0000001.tmp", "index-1.ckpt", "blob-0000001"] {
            assert_eq!(parse_blob_name(bad), None, "{bad}");
        }
    }
}
