//! Range headers from clients: never a panic, and a part is always inside the object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podstore_net::range::{resolve, RangeAnswer};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let len = u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) >> (data[0] % 64);
    let Ok(h) = std::str::from_utf8(&data[8..]) else { return };
    match resolve(Some(h), len) {
        RangeAnswer::Part { start, end } => assert!(start < end && end <= len, "{h:?} {len}: {start}..{end}"),
        RangeAnswer::Whole | RangeAnswer::Unsatisfiable => {}
    }
});
