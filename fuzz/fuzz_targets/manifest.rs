//! A multipart object's manifest, as its record's data is read back: never a panic, and what
//! decodes encodes back to the same bytes (so nothing a decoder accepts is read two ways).
#![no_main]

use libfuzzer_sys::fuzz_target;
use podstore_net::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        assert_eq!(m.encode(), data);
        let _ = (m.object_len(), m.etag());
    }
});
