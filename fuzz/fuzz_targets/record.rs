//! Record header and footer decoders never panic, and what they accept re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podstore_engine::record::{footer_len, Footer, Header};
use podstore_engine::record_key::FUZZ_KEY;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::decode(data, &FUZZ_KEY) {
        let ds = h.data_start() as usize;
        let mut out = vec![0u8; ds];
        h.encode(h.key(data), &h.attrs(data), &mut out, &FUZZ_KEY);
        assert_eq!(&out[..], &data[..ds]);
        if let Some(rest) = data.get(ds..) {
            // A footer for an object of at most the remaining length.
            let len = (rest.len() as u64).min(h.object_len);
            if let Ok(f) = Footer::decode(rest, len, h.seq) {
                assert_eq!(f.encode().len() as u64, footer_len(len));
            }
        }
    }
    if data.len() >= 16 {
        let len = u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) >> 40;
        let seq = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
        if let Ok(f) = Footer::decode(&data[16..], len, seq) {
            assert_eq!(&f.encode()[..], &data[16..16 + footer_len(len) as usize]);
        }
    }
});
