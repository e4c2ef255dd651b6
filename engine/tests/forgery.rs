//! Bytes a client sent as object data never pass for a record (record_key.rs).
//!
//! Recovery scans the blobs block by block after the checkpoint. A client lays out a perfect
//! record (header for another key, data, footer, every checksum right) at a block boundary of
//! its body; a power loss keeps that block but loses the one with the real header (a drive that
//! reorders its cache). The scan must not index the client's record: it fails the header tag,
//! which only the shard's secret key makes. The control: the same layout made with the shard's
//! real key is indexed, so the test does reach the scan it means to check.

use std::path::Path;
use std::rc::Rc;

use podstore_disks::{SimDisk, SimFaults};
use podstore_engine::record::{record_len, Footer, Header, BLOCK, HEADER_BYTES};
use podstore_engine::record_key::{RecordKey, KEY_FILE};
use podstore_engine::{Shard, ShardConfig, Version};

fn run<F: std::future::Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    tokio::task::LocalSet::new().block_on(&rt, f);
}

fn cfg() -> ShardConfig {
    ShardConfig {
        blob_size_bytes: 1 << 20,
        write_buf_bytes: 16 << 10,
        tombstone_reserve_bytes: 16 << 10,
        ..ShardConfig::default()
    }
}

const ATTACKER_KEY: &[u8] = b"attacker";
const VICTIM_KEY: &[u8] = b"victim";
const FORGED_DATA: &[u8] = b"forged bytes that must never be served as the victim's object";

/// A complete record for `VICTIM_KEY`, claiming to sit at `offset` of blob 0 of shard 0, made
/// with key `rk`.
fn forged_record(offset: u64, rk: &RecordKey) -> Vec<u8> {
    let n = FORGED_DATA.len() as u64;
    let h = Header {
        flags: 0,
        shard_id: 0,
        blob_id: 0,
        offset,
        seq: 1 << 40,
        created_ms: 1_764_000_000_000,
        object_len: n,
        record_len: record_len(VICTIM_KEY.len(), 0, n),
        key_len: VICTIM_KEY.len() as u16,
        content_type_len: 0,
        headers_len: 0,
        version: Version { hlc: u64::MAX >> 1, origin: 1 },
    };
    let mut b = vec![0u8; h.data_start() as usize];
    h.encode(VICTIM_KEY, &Default::default(), &mut b, rk);
    b.extend_from_slice(FORGED_DATA);
    let digest = xxhash_rust::xxh3::xxh3_128(FORGED_DATA).to_le_bytes();
    b.extend(
        Footer { seq: h.seq, digest, chunk_crcs: vec![podstore_disks::crc::crc32c(FORGED_DATA)] }.encode(),
    );
    b.resize(h.record_len as usize, 0);
    b
}

/// Puts the attacker's object (its record at blob 0, offset 0: the shard's first write) with a
/// forged record at the body offset that lands on the record's second block, loses the first
/// block, reopens, and returns what the shard then holds under the victim's key.
async fn victim_after_power_loss(forge_key: Option<RecordKey>) -> Option<Vec<u8>> {
    let disk = SimDisk::new(1, SimFaults::default());
    let dir = Path::new("/f");
    let (shard, _) = Shard::open(disk.clone(), cfg(), dir, 0).await.expect("open");
    let real_key = {
        let b = disk.file_bytes(&dir.join(KEY_FILE)).expect("the first open writes the key file");
        RecordKey::from_bytes(b[16..32].try_into().expect("16 bytes"))
    };
    let rk = forge_key.unwrap_or(real_key);
    let data_start = HEADER_BYTES + ATTACKER_KEY.len();
    let mut body = vec![0x5au8; BLOCK as usize - data_start];
    body.extend(forged_record(BLOCK, &rk));
    body.extend(vec![0x33u8; 3 * BLOCK as usize]);
    shard.put_bytes(ATTACKER_KEY, "", &body).await.expect("put");
    let blob = dir.join("blob-0000000.psb");
    let bytes = disk.file_bytes(&blob).expect("blob 0");
    assert_eq!(&bytes[0..4], b"PSR1", "the attacker's record is the first in blob 0");
    drop(shard);
    // The power loss kept every block of the body but the first one of the record.
    assert!(disk.overwrite_at(&blob, 0, &[0u8; BLOCK as usize]));
    let (shard, report) = Shard::open(disk.clone(), cfg(), dir, 0).await.expect("reopen");
    assert!(report.blobs_scanned >= 1, "the record lies after the checkpoint, so it is scanned");
    assert_eq!(get(&shard, ATTACKER_KEY).await, None, "the attacker's own record lost its header");
    get(&shard, VICTIM_KEY).await
}

async fn get(shard: &Rc<Shard<SimDisk>>, key: &[u8]) -> Option<Vec<u8>> {
    let mut r = shard.get(key).await.expect("get")?;
    Some(r.read_all().await.expect("read"))
}

#[test]
fn a_record_forged_in_a_body_is_not_indexed_after_a_power_loss() {
    run(async {
        // A client does not know the shard's key: whatever it guesses, nothing is indexed.
        for guess in [[0u8; 16], *b"podstore fuzzing", [0xff; 16]] {
            assert_eq!(victim_after_power_loss(Some(RecordKey::from_bytes(guess))).await, None);
        }
        // Control: made with the shard's own key the same bytes are a record, found by the scan.
        assert_eq!(victim_after_power_loss(None).await.as_deref(), Some(FORGED_DATA));
    });
}

#[test]
fn a_shard_with_blobs_but_no_key_file_is_refused() {
    run(async {
        let disk = SimDisk::new(2, SimFaults::default());
        let dir = Path::new("/k");
        let (shard, _) = Shard::open(disk.clone(), cfg(), dir, 0).await.expect("open");
        shard.put_bytes(b"a", "", b"x").await.expect("put");
        drop(shard);
        use podstore_disks::Io;
        disk.remove(&dir.join(KEY_FILE)).await.expect("remove the key file");
        disk.sync_dir(dir).await.expect("sync");
        let err = Shard::open(disk.clone(), cfg(), dir, 0).await.map(|_| ()).expect_err("refused");
        assert!(err.to_string().contains(KEY_FILE), "{err}");
        // The blob is untouched by the refusal.
        assert!(disk.file_bytes(&dir.join("blob-0000000.psb")).is_some_and(|b| &b[0..4] == b"PSR1"));
    });
}
