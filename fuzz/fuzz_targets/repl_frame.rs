//! The replication decoders (frame header, trailer, chunk CRCs, write, ack and placement metadata) never panic on
//! bytes from a peer, and what they accept re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podstore_net::peer::frame::{
    ack_meta, decode_ack, decode_chunk_crcs, encode_chunk_crcs, FrameHeader, Placement, Trailer, WriteMeta, HEADER_BYTES, TRAILER_BYTES,
};

fuzz_target!(|data: &[u8]| {
    if let Some(h) = data.get(..HEADER_BYTES) {
        let h: [u8; HEADER_BYTES] = h.try_into().expect("length");
        if let Ok(d) = FrameHeader::decode(&h, 5 << 30) {
            let _ = d.check_meta(&data[HEADER_BYTES..]);
        }
    }
    if let Some(t) = data.get(..TRAILER_BYTES) {
        let t: [u8; TRAILER_BYTES] = t.try_into().expect("length");
        if let Ok(tr) = Trailer::decode(&t) {
            assert_eq!(Trailer::decode(&tr.encode()), Ok(tr));
        }
    }
    if let Ok(c) = decode_chunk_crcs(data) {
        assert_eq!(encode_chunk_crcs(&c), data);
    }
    for put in [true, false] {
        if let Ok(m) = WriteMeta::decode(data, put, 1024) {
            assert_eq!(WriteMeta::decode(&m.encode(put), put, 1024), Ok(m));
        }
    }
    if let Ok(Some(p)) = Placement::decode(data) {
        assert_eq!(Placement::decode(&p.encode()), Ok(Some(p.clone())));
        let _ = p.owner_core(data);
    }
    if let Ok((status, msg)) = decode_ack(data) {
        assert_eq!(decode_ack(&ack_meta(status, &msg)).map(|a| a.0), Ok(status));
    }
});
