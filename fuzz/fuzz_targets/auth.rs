//! Client credentials: the bearer token and presigned URL checks never panic on any header
//! or query, and never let an unsigned write through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podstore_net::auth::{Access, Auth};

const SECRET: &[u8] = b"ZnV6ei1zZWNyZXQtZm9yLXRoZS1hdXRoLXRhcmdldA==";

fuzz_target!(|data: &[u8]| {
    let a = Auth::from_keys(&[("k", SECRET, &["photos"], false), ("r", SECRET, &[], true)], &["cdn-assets"]);
    // The first byte: how many of the rest are the Authorization header (the others: the query).
    let Some((&n, data)) = data.split_first() else { return };
    let (header, rest) = data.split_at((n as usize).min(data.len()));
    let query = std::str::from_utf8(rest).ok();
    for method in ["GET", "PUT", "DELETE"] {
        for bucket in ["photos", "cdn-assets", "other"] {
            let r = a.check(&Access {
                method,
                bucket,
                key: b"k",
                authorization: (!header.is_empty()).then_some(header),
                query,
                now_s: 1_000_000,
            });
            if r.is_ok() && method != "GET" {
                // A write needs the key's secret: in the header, or a signature under it.
                let has_secret = header.windows(SECRET.len()).any(|w| w == SECRET);
                assert!(has_secret || query.is_some_and(|q| q.contains("x-podstore-signature=")));
            }
        }
    }
});
