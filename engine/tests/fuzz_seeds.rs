//! The fuzzers' seed corpus (`fuzz/seeds/`) holds valid encodings of every format, made by the
//! current encoders: this test fails when a format changes and the seeds were not regenerated
//! (`PODSTORE_WRITE_SEEDS=1 cargo test -p podstore-engine --test fuzz_seeds`).

use std::path::PathBuf;

use podstore_disks::label::Label;
use podstore_disks::Tier;
use podstore_engine::checkpoint::{Checkpoint, CkptBlob, QuarantineReason, Quarantined};
use podstore_engine::record::{record_len, Footer, Header, FLAG_TOMBSTONE};
use podstore_engine::{Attrs, DigestKind};

fn record(key: &[u8], ct: &str, data_len: u64, tombstone: bool) -> Vec<u8> {
    // A tombstone has no attributes; an object here carries a header kept with it.
    let attrs = if tombstone {
        Attrs::default()
    } else {
        Attrs::new(ct, [("cache-control", "max-age=60")], DigestKind::Xxh3).expect("valid")
    };
    let h = Header {
        flags: if tombstone { FLAG_TOMBSTONE } else { 0 },
        shard_id: 3,
        blob_id: 9,
        offset: 8192,
        seq: 77,
        created_ms: 1_764_000_000_000,
        object_len: data_len,
        record_len: record_len(key.len(), attrs.stored_len(), data_len),
        key_len: key.len() as u16,
        content_type_len: attrs.content_type.len() as u8,
        headers_len: attrs.encoded_headers().len() as u16,
        version: podstore_engine::Version { hlc: 1_764_000_000_000 << 16 | 3, origin: 0xabcd },
    };
    let mut b = vec![0u8; h.data_start() as usize];
    h.encode(key, &attrs, &mut b, &podstore_engine::record_key::FUZZ_KEY);
    b.extend((0..data_len).map(|i| i as u8));
    let crcs =
        if data_len == 0 { vec![] } else { vec![podstore_disks::crc::crc32c(&b[h.data_start() as usize..])] };
    b.extend(Footer { seq: 77, digest: [7; 16], chunk_crcs: crcs }.encode());
    b
}

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let ck = Checkpoint {
        shard_id: 3,
        max_seq: 500,
        max_hlc: 1_764_000_000_000 << 16,
        blobs: vec![CkptBlob { id: 0, dedicated: false, size_bytes: 1 << 20, tail: 65536, scan_from: 32768 }],
        in_flight: vec![499],
        main: vec![(0xdead_beef, 0x1234_5678), (42, 0x10_0000_0001)],
        overflow: vec![(b"collided/key".to_vec(), 0x20_0000_0002)],
        quarantine: vec![Quarantined {
            blob: 0,
            offset: 4096,
            len_bytes: 8192,
            seq: 12,
            key: Some(b"bad".to_vec()),
            reason: QuarantineReason::BadBody,
        }],
        backlogs: vec![podstore_engine::checkpoint::CkptBacklog {
            peer: "pod-b".into(),
            overflowed: false,
            entries: vec![podstore_engine::backlog::BacklogEntry {
                seq: 499,
                blob: 0,
                offset: 61440,
                record_len: 4096,
                created_ms: 1_764_000_000_000,
            }],
        }],
        digests: (0..podstore_engine::digest::BUCKETS as u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect(),
    };
    let label =
        Label { disk_id: 5, tier: Tier::Capacity, node_id: "pod-01".into(), created_unix_s: 1_764_000_000 };
    vec![
        ("record", "object", record(b"photos/cat.jpg", "image/jpeg", 300, false)),
        ("record", "tombstone", record(b"photos/cat.jpg", "", 0, true)),
        ("checkpoint", "small", ck.encode()),
        ("checkpoint", "empty", Checkpoint::default().encode()),
        ("label", "capacity", label.encode()),
    ]
}

#[test]
fn fuzz_seed_corpus_is_current() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let write = std::env::var_os("PODSTORE_WRITE_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        let p = root.join(target).join(name);
        if write {
            std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
            std::fs::write(&p, &bytes).expect("write seed");
        }
        let on_disk =
            std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}; regenerate the seeds", p.display()));
        assert!(on_disk == bytes, "{} is stale; regenerate the seeds", p.display());
    }
}
