//! Placement inside the node: which shard holds a key.
//!
//! Weighted rendezvous hashing (highest random weight): every shard scores the key with a hash
//! of (key fingerprint, shard id), scaled by the shard's weight as `-weight / ln(u)` with `u`
//! uniform in (0, 1); the best score wins. Adding or removing a shard moves only the keys that
//! shard wins or held, and a shard's share is proportional to its weight (its capacity).

/// A shard that can take keys, with its weight (capacity, in any unit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub shard_id: u32,
    pub weight: f64,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finalizer: a fast, well-distributed 64-bit mix.
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The score of a key fingerprint on a shard.
pub fn score(fp: u64, c: &Candidate) -> f64 {
    let h = mix(fp ^ mix(c.shard_id as u64));
    // u in (0, 1): 53 random bits, never 0.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -c.weight / u.ln()
}

/// The shard for a key fingerprint, or None if there are no candidates with positive weight.
pub fn place(fp: u64, candidates: &[Candidate]) -> Option<u32> {
    candidates
        .iter()
        .filter(|c| c.weight > 0.0)
        .map(|c| (score(fp, c), c.shard_id))
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::fingerprint;

    fn shards(weights: &[f64]) -> Vec<Candidate> {
        weights.iter().enumerate().map(|(i, &w)| Candidate { shard_id: i as u32, weight: w }).collect()
    }

    #[test]
    fn shares_follow_weights() {
        let set = shards(&[1.0, 1.0, 2.0, 4.0]);
        let mut counts = [0u32; 4];
        let n = 80_000;
        for i in 0..n {
            let fp = fingerprint(format!("key-{i}").as_bytes());
            counts[place(fp, &set).expect("placed") as usize] += 1;
        }
        let total_w = 8.0;
        for (i, c) in counts.iter().enumerate() {
            let want = n as f64 * set[i].weight / total_w;
            let err = (*c as f64 - want).abs() / want;
            assert!(err < 0.05, "shard {i}: {c} keys, expected about {want}");
        }
    }

    #[test]
    fn adding_a_shard_moves_only_its_share() {
        let before = shards(&[1.0; 6]);
        let mut after = before.clone();
        after.push(Candidate { shard_id: 6, weight: 1.0 });
        let n = 60_000;
        let mut moved = 0;
        for i in 0..n {
            let fp = fingerprint(format!("obj/{i}").as_bytes());
            let a = place(fp, &before).expect("placed");
            let b = place(fp, &after).expect("placed");
            if a != b {
                assert_eq!(b, 6, "a key moved between two old shards");
                moved += 1;
            }
        }
        let share = moved as f64 / n as f64;
        assert!((share - 1.0 / 7.0).abs() < 0.02, "moved {share}");
        // Removing a shard moves only the keys it held.
        let removed: Vec<Candidate> = before.iter().copied().filter(|c| c.shard_id != 2).collect();
        for i in 0..n {
            let fp = fingerprint(format!("obj/{i}").as_bytes());
            let a = place(fp, &before).expect("placed");
            let b = place(fp, &removed).expect("placed");
            assert!(a == b || a == 2);
        }
        assert_eq!(place(1, &[]), None);
    }
}
