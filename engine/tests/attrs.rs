//! What a record keeps beside an object's bytes (content type, content headers, an MD5 digest
//! for objects written through S3) is part of the write's promise: it reads back after a power
//! loss, after compaction moves the record, after the name index is rebuilt from the records,
//! and in batches; a digest handed to the writer is stored only when it is allowed to be.

use std::path::Path;
use std::rc::Rc;

mod common;

use common::{data, run, small_cfg as cfg};
use podstore_disks::{Io, SimDisk, SimFaults};
use podstore_engine::budget::IoBudget;
use podstore_engine::names::{parse_run_name, Kind};
use podstore_engine::record::digest_of;
use podstore_engine::{Attrs, BatchItem, BatchOutcome, CopyCheck, DigestKind, Shard, Stamp};

const DIR: &str = "/d";

fn key(i: usize) -> Vec<u8> {
    format!("media/{i:04}").into_bytes()
}

/// The attributes object `i` is written with: S3's (MD5, user metadata) for even `i`, the
/// native API's (XXH3, a content header) for odd.
fn attrs(i: usize) -> Attrs {
    let n = i.to_string();
    if i.is_multiple_of(2) {
        let h =
            [("x-amz-meta-index", n.as_str()), ("content-disposition", "attachment; filename=\"a b.mp4\"")];
        Attrs::new("video/mp4", h, DigestKind::Md5).expect("valid")
    } else {
        Attrs::new("image/png", [("cache-control", "public, max-age=86400")], DigestKind::Xxh3)
            .expect("valid")
    }
}

fn body(i: usize) -> Vec<u8> {
    data(1 + (i * 7_919) % 30_000, i as u8)
}

async fn put(shard: &Rc<Shard<SimDisk>>, i: usize) -> [u8; 16] {
    let (a, b) = (attrs(i), body(i));
    let mut w = shard.put(&key(i), &a, b.len() as u64).await.expect("put");
    for piece in b.chunks(3_001) {
        w.write(piece).await.expect("write");
    }
    w.finish().await.expect("finish").digest
}

/// Object `i` reads back whole with its attributes and the digest of its kind.
async fn check(shard: &Rc<Shard<SimDisk>>, i: usize) {
    let mut r = shard.get(&key(i)).await.expect("get").unwrap_or_else(|| panic!("object {i} is missing"));
    let got = r.read_all().await.expect("read");
    assert_eq!(got, body(i), "object {i}");
    assert_eq!(r.meta.attrs, attrs(i), "attributes of object {i}");
    assert_eq!(r.meta.digest, digest_of(attrs(i).digest, &got), "digest of object {i}");
}

async fn listed_kinds(shard: &Shard<SimDisk>) -> Vec<(Vec<u8>, DigestKind, Box<str>)> {
    let page = shard.list_names(b"", b"media/", 1000).await.expect("list");
    page.entries
        .into_iter()
        .filter(|(_, n)| n.kind == Kind::Live)
        .map(|(k, n)| (k.to_vec(), n.digest_kind, n.content_type))
        .collect()
}

#[test]
fn attributes_and_md5_survive_power_loss_compaction_and_a_rebuilt_name_index() {
    run(async {
        let disk = SimDisk::new(21, SimFaults::default());
        let dir = Path::new(DIR);
        let (shard, _) = Shard::open(disk.clone(), cfg(), dir, 0).await.expect("open");
        for i in 0..60 {
            let digest = put(&shard, i).await;
            assert_eq!(digest, digest_of(attrs(i).digest, &body(i)), "the answer's digest");
        }
        // The S3 objects' digests are their MD5s, as any MD5 tool computes them.
        let md5_of_0: [u8; 16] = <md5::Md5 as md5::Digest>::digest(body(0)).into();
        assert_eq!(digest_of(DigestKind::Md5, &body(0)), md5_of_0);
        // Make the early blobs mostly dead, so compaction moves the survivors.
        for i in (0..60).filter(|i| i % 4 == 1) {
            shard.delete(&key(i)).await.expect("delete");
        }
        for i in (0..60).filter(|i| i % 4 == 3) {
            shard.put_bytes(&format!("filler/{i}").into_bytes(), "", &data(40_000, 1)).await.expect("filler");
            shard.delete(&format!("filler/{i}").into_bytes()).await.expect("delete");
        }
        let live: Vec<usize> = (0..60).filter(|i| i % 4 != 1).collect();
        let moved = shard.compact(0.0, &IoBudget::new(0)).await.expect("compact").expect("not running");
        assert!(moved > 0, "compaction moved records");
        for &i in &live {
            check(&shard, i).await;
        }
        // A power loss: every acknowledged write comes back with its attributes.
        drop(shard);
        disk.crash();
        let (shard, _) = Shard::open(disk.clone(), cfg(), dir, 0).await.expect("reopen");
        for &i in &live {
            check(&shard, i).await;
        }
        let want: Vec<_> = live.iter().map(|&i| (key(i), attrs(i).digest, attrs(i).content_type)).collect();
        assert_eq!(listed_kinds(&shard).await, want, "listed with their digests' kinds");
        // The name index rebuilt from the records knows the kinds too.
        shard.checkpoint().await.expect("checkpoint");
        drop(shard);
        for f in disk.list_dir(dir).await.expect("list") {
            if parse_run_name(&f).is_some() {
                disk.remove(&dir.join(&f)).await.expect("remove");
            }
        }
        let (shard, report) = Shard::open(disk.clone(), cfg(), dir, 0).await.expect("reopen");
        assert!(report.names_rebuilt_why.is_some());
        assert_eq!(listed_kinds(&shard).await, want, "rebuilt");
        // A scrub checks every record against the digest of its kind.
        let free = IoBudget::new(0);
        shard.scrub(&free, &free).await.expect("scrub");
        assert_eq!(shard.scrub_stats().await.bad_records, 0);
    });
}

#[test]
fn a_given_digest_is_stored_only_when_the_writer_may_take_it() {
    run(async {
        let disk = SimDisk::new(22, SimFaults::default());
        let (shard, _) = Shard::open(disk.clone(), cfg(), Path::new(DIR), 0).await.expect("open");
        let (a, b) = (attrs(0), body(0));
        let md5 = digest_of(DigestKind::Md5, &b);
        // The front end hashed the body: the writer computes only its CRCs and stores the MD5.
        let mut w = shard.put(&key(0), &a, b.len() as u64).await.expect("put");
        w.check_chunks_only();
        w.write(&b).await.expect("write");
        assert_eq!(w.finish_copy(CopyCheck::Given(md5)).await.expect("finish").digest, md5);
        check(&shard, 0).await;
        // A writer that hashes checks a given digest: a wrong one stores nothing.
        let mut w = shard.put(&key(2), &attrs(2), body(2).len() as u64).await.expect("put");
        w.write(&body(2)).await.expect("write");
        assert!(w.finish_copy(CopyCheck::Given([9; 16])).await.is_err(), "a wrong digest is refused");
        assert!(shard.get(&key(2)).await.expect("get").is_none(), "nothing stored");
        // A batch item of MD5 kind whose digest does not match is refused; one that does is kept.
        let item = |i: usize, digest| BatchItem {
            key: key(i),
            attrs: attrs(i),
            data: body(i),
            stamp: Stamp::Local,
            digest,
        };
        let out = shard
            .put_batch(&[
                item(4, Some([1; 16])),
                item(6, Some(digest_of(DigestKind::Md5, &body(6)))),
                item(8, None),
            ])
            .await
            .expect("batch");
        assert!(out[0].is_err(), "{:?}", out[0]);
        assert!(matches!(out[1], Ok(BatchOutcome::Stored(_))), "{:?}", out[1]);
        assert!(matches!(out[2], Ok(BatchOutcome::Stored(_))), "{:?}", out[2]);
        assert!(shard.get(&key(4)).await.expect("get").is_none());
        check(&shard, 6).await;
        check(&shard, 8).await;
    });
}
