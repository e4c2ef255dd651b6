//! Request paths from clients: the name parser never panics, and what it accepts is a valid
//! bucket and a key within the limit that maps to a storage key and back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podstore_net::names::{parse_object_path, split_storage_key, valid_bucket};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    for max in [16, 1024] {
        if let Ok(n) = parse_object_path(path, max) {
            assert!(valid_bucket(&n.bucket));
            assert!(!n.key.is_empty() && n.key.len() <= max);
            let k = n.storage_key();
            let (b, key) = split_storage_key(&k).expect("a storage key splits");
            assert_eq!((b, key), (n.bucket.as_bytes(), n.key.as_slice()));
        }
    }
});
