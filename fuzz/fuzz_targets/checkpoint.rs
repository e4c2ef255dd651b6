//! The index checkpoint decoder never panics, and what it accepts re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podstore_engine::checkpoint::Checkpoint;

fuzz_target!(|data: &[u8]| {
    let _ = Checkpoint::body_len(data);
    if let Ok(c) = Checkpoint::decode(data) {
        let again = c.encode();
        assert_eq!(Checkpoint::decode(&again).as_ref(), Ok(&c));
    }
});
