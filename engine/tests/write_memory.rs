//! The node's write memory budget: writes take full buffers while it has room, past it one
//! small buffer each (and still store every byte, across a restart), and every writer gives
//! its share back however it ends (finished, aborted, dropped).

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

mod common;

use common::{data, get, run};
use podstore_disks::{SimDisk, SimFaults};
use podstore_engine::write_memory::WriteMemory;
use podstore_engine::{Shard, ShardConfig};

const DIR: &str = "/d";
const BUF: usize = 256 << 10;
const LEN: usize = 1 << 20;

fn cfg(memory: &Arc<WriteMemory>) -> ShardConfig {
    ShardConfig {
        blob_size_bytes: 16 << 20,
        write_buf_bytes: BUF,
        scan_window_bytes: 256 << 10,
        object_size_max_bytes: 8 << 20,
        tombstone_reserve_bytes: 64 << 10,
        write_memory: Some(memory.clone()),
        ..ShardConfig::default()
    }
}

/// Sends `body` in uneven pieces.
async fn send(w: &mut podstore_engine::PutWriter<SimDisk>, body: &[u8]) {
    for piece in body.chunks(100_003) {
        w.write(piece).await.expect("body");
    }
}

#[test]
fn writes_past_the_budget_use_one_small_buffer_and_every_writer_gives_its_share_back() {
    run(async {
        // Room for two full buffers, not three.
        let memory = Arc::new(WriteMemory::new(2 * BUF as u64 + BUF as u64 / 2));
        let disk = SimDisk::new(5, SimFaults::default());
        let (shard, _) = Shard::open(disk.clone(), cfg(&memory), Path::new(DIR), 0).await.expect("open");
        let (a, b) = (data(LEN, 1), data(LEN, 2));

        // A takes its first buffer, and its second once the first is written.
        let mut wa = shard.put(b"k/a", &"".into(), LEN as u64).await.expect("start a");
        assert_eq!(memory.used(), BUF as u64);
        wa.write(&a[..BUF + 10]).await.expect("a's first buffer");
        assert_eq!((memory.used(), memory.refused()), (2 * BUF as u64, 0));

        // B finds no room: it writes its whole body through one small buffer.
        let mut wb = shard.put(b"k/b", &"".into(), LEN as u64).await.expect("start b");
        assert_eq!((memory.used(), memory.refused()), (2 * BUF as u64, 1), "b's buffer is not counted");
        send(&mut wb, &b).await;
        wb.finish().await.expect("finish b");
        assert_eq!(memory.used(), 2 * BUF as u64, "b held nothing of the budget");

        send(&mut wa, &a[BUF + 10..]).await;
        wa.finish().await.expect("finish a");
        assert_eq!(memory.used(), 0, "a gave its buffers back");

        // Aborted and dropped writers give theirs back too.
        let mut wc = shard.put(b"k/c", &"".into(), LEN as u64).await.expect("start c");
        wc.write(&data(BUF + 1, 3)).await.expect("c's first buffer");
        assert_eq!(memory.used(), 2 * BUF as u64);
        wc.abort().await.expect("abort c");
        assert_eq!(memory.used(), 0, "an aborted writer gives its buffers back");
        let mut wd = shard.put(b"k/d", &"".into(), LEN as u64).await.expect("start d");
        wd.write(&data(BUF + 1, 4)).await.expect("d's first buffer");
        drop(wd);
        assert_eq!(memory.used(), 0, "a dropped writer gives its buffers back");

        // Small objects take buffers their own size, never counted.
        let small = data(3000, 5);
        shard.put_bytes(b"k/small", "", &small).await.expect("small");
        assert_eq!((memory.used(), memory.refused()), (0, 1));

        // Every byte of both writes is there, before and after a power loss.
        for (k, v) in [(&b"k/a"[..], &a), (b"k/b", &b), (b"k/small", &small)] {
            assert_eq!(get(&shard, k).await.as_ref(), Some(v), "{}", String::from_utf8_lossy(k));
        }
        drop(shard);
        disk.crash(); // power loss: what was acknowledged must be durable
        let (shard, _) = Shard::open(disk.clone(), cfg(&memory), Path::new(DIR), 0).await.expect("reopen");
        let shard: Rc<Shard<SimDisk>> = shard;
        for (k, v) in [(&b"k/a"[..], &a), (b"k/b", &b), (b"k/small", &small)] {
            assert_eq!(
                get(&shard, k).await.as_ref(),
                Some(v),
                "{} after recovery",
                String::from_utf8_lossy(k)
            );
        }
        assert_eq!(get(&shard, b"k/c").await, None);
        assert_eq!(get(&shard, b"k/d").await, None);
    });
}
