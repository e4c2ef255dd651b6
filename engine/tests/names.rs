//! The name index through a shard: listings show exactly the keys the shard holds, after a
//! power loss, on a disk written before the name index existed (rebuilt from the records), and
//! after a run was found damaged (rebuilt at the next start).

use std::path::Path;

mod common;

use common::{run, small_cfg as cfg};
use podstore_disks::{Io, SimDisk, SimFaults};
use podstore_engine::names::{parse_run_name, Kind};
use podstore_engine::{Error, Shard};

/// Every live key of the shard under `prefix`, with its size, paging `max` at a time.
async fn listed(shard: &Shard<SimDisk>, prefix: &[u8], max: usize) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut from: Box<[u8]> = Box::default();
    loop {
        let page = shard.list_names(&from, prefix, max).await.expect("list");
        for (k, n) in page.entries {
            if n.kind == Kind::Live {
                out.push((String::from_utf8(k.to_vec()).expect("utf-8"), n.object_len));
            }
        }
        match page.next {
            Some(n) => from = n,
            None => return out,
        }
    }
}

fn expected(range: std::ops::Range<u32>, skip_every: u32) -> Vec<(String, u64)> {
    range.filter(|i| i % skip_every != 0).map(|i| (format!("photos/{i:05}.jpg"), i as u64)).collect()
}

async fn fill(shard: &std::rc::Rc<Shard<SimDisk>>, n: u32) {
    for i in 0..n {
        shard
            .put_bytes(format!("photos/{i:05}.jpg").as_bytes(), "image/jpeg", &vec![7; i as usize])
            .await
            .expect("put");
        shard.put_bytes(format!("video/{i:05}").as_bytes(), "", b"v").await.expect("put");
    }
    for i in (0..n).step_by(7) {
        shard.delete(format!("photos/{i:05}.jpg").as_bytes()).await.expect("delete");
    }
}

#[test]
fn listings_survive_a_power_loss_and_are_rebuilt_when_lost() {
    run(async {
        let disk = SimDisk::new(11, SimFaults::default());
        let dir = Path::new("/d0");
        let mut c = cfg();
        c.names_memtable_bytes = 16 << 10; // runs and merges
        let (shard, _) = Shard::open(disk.clone(), c.clone(), dir, 0).await.expect("open");
        fill(&shard, 600).await;
        shard.names_maintain(None).await.expect("upkeep");
        assert_eq!(listed(&shard, b"photos/", 1000).await, expected(0..600, 7));
        assert_eq!(listed(&shard, b"photos/001", 7).await, expected(100..200, 7));
        assert!(shard.names_footprint().runs > 0, "{:?}", shard.names_footprint());
        // A power loss: every acknowledged write is listed after it, every delete stays.
        drop(shard);
        disk.crash();
        let (shard, report) = Shard::open(disk.clone(), c.clone(), dir, 0).await.expect("reopen");
        assert_eq!(report.names_rebuilt_why, None, "the runs and the records past them suffice");
        assert_eq!(listed(&shard, b"photos/", 50).await, expected(0..600, 7));
        // A disk written before the name index existed: the runs are gone, the checkpoint is not.
        shard.checkpoint().await.expect("checkpoint");
        drop(shard);
        for f in disk.list_dir(dir).await.expect("list") {
            if parse_run_name(&f).is_some() {
                disk.remove(&dir.join(&f)).await.expect("remove");
            }
        }
        let (shard, report) = Shard::open(disk.clone(), c.clone(), dir, 0).await.expect("reopen");
        assert!(report.names_rebuilt_why.is_some(), "rebuilt");
        assert_eq!(listed(&shard, b"photos/", 1000).await, expected(0..600, 7));
        assert_eq!(listed(&shard, b"video/", 1000).await.len(), 600);
        // A run damaged on the disk: found when read, out of service, rebuilt at the next start.
        let run = disk.list_dir(dir).await.expect("list").into_iter().find(|f| parse_run_name(f).is_some());
        let run = run.expect("a run after the rebuild");
        let file = disk.open(&dir.join(&run), podstore_disks::OpenMode::Existing).await.expect("open run");
        let mut buf = disk.alloc_buf(4096).await;
        buf.set_len(4096);
        let (r, mut buf) = disk.read_at(&file, 4096, buf).await;
        r.expect("read");
        buf.as_mut_slice()[64] ^= 0x10;
        let (r, _) = disk.write_at(&file, 4096, buf).await;
        r.expect("write");
        let e = shard.list_names(b"", b"", 1000).await.expect_err("damage found");
        assert!(matches!(e, Error::NamesUnavailable { .. }), "{e}");
        assert!(!shard.names_footprint().ready);
        shard.put_bytes(b"photos/new", "", b"n").await.expect("writes go on");
        drop(shard);
        let (shard, report) = Shard::open(disk.clone(), c.clone(), dir, 0).await.expect("reopen");
        assert!(report.names_rebuilt_why.is_some_and(|w| w.contains("failed its checks")));
        let mut want = expected(0..600, 7);
        want.push(("photos/new".into(), 1));
        assert_eq!(listed(&shard, b"photos/", 333).await, want);
        assert!(!disk
            .list_dir(dir)
            .await
            .expect("list")
            .iter()
            .any(|f| f == podstore_engine::files::NAMES_DAMAGED_FILE));
    });
}
