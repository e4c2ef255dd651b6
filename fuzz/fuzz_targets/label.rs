//! The disk label decoder never panics, and what it accepts re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podstore_disks::label::Label;

fuzz_target!(|data: &[u8]| {
    if let Ok(l) = Label::decode(data) {
        assert_eq!(Label::decode(&l.encode()), Ok(l));
    }
});
