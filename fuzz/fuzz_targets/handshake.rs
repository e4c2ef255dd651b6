//! The replication handshake's messages from a peer not yet authenticated: HELLO and CHALLENGE
//! decoders never panic, what they accept re-encodes to itself, and a MAC check of any bytes
//! answers without panicking (and never accepts bytes that are not the MAC).
#![no_main]

use libfuzzer_sys::fuzz_target;
use podstore_net::peer::auth::{sign, verify, Challenge, Hello, Side};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Hello::decode(data) {
        assert_eq!(h.encode(), data);
    }
    if let Ok(c) = Challenge::decode(data) {
        assert_eq!(c.encode(), data);
    }
    let secret = b"fuzz-secret-0123456789";
    let (ni, na) = ([1u8; 32], [2u8; 32]);
    let good = sign(secret, Side::Initiator, &ni, &na, "a", "b");
    assert_eq!(verify(secret, Side::Initiator, &ni, &na, "a", "b", data), data == good);
});
