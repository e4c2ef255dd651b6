//! The same operations through every `Io` backend: io_uring and the fallback on real files in a
//! temp directory (O_DIRECT when the filesystem allows it), and the simulated disk, including
//! its crash model.

use std::path::{Path, PathBuf};

use podstore_disks::{
    probe_direct_io, AlignedBuf, CacheMode, Io, OpenMode, SimDisk, SimFaults, SyncIo, Uring, UringConfig,
    ALIGN,
};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("podstore-io-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn cache_for(dir: &Path) -> CacheMode {
    match probe_direct_io(dir) {
        Ok(_) => CacheMode::Direct,
        Err(e) => {
            eprintln!("note: {e}; testing buffered mode");
            CacheMode::Buffered
        }
    }
}

async fn exercise<I: Io>(io: &I, dir: &Path) {
    let path = dir.join("blob-0");
    let f = io.open(&path, OpenMode::CreateNew).await.expect("create");
    io.allocate(&f, 64 * 1024).await.expect("allocate");
    assert_eq!(io.file_size(&f).await.expect("size"), 64 * 1024);
    let mut buf = io.alloc_buf(8192).await;
    buf.clear();
    for i in 0..8192u32 {
        buf.extend_from(&[(i % 251) as u8]);
    }
    let (r, buf) = io.write_at(&f, 4096, buf).await;
    r.expect("write");
    io.sync_data(&f).await.expect("sync");
    io.sync_dir(dir).await.expect("sync dir");
    drop(buf);
    let (r, back) = io.read_at(&f, 4096, full(8192)).await;
    r.expect("read");
    assert_eq!(back.len(), 8192);
    assert!(back.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    // Reading past the end returns what is there.
    let (r, tail) = io.read_at(&f, 60 * 1024, full(8192)).await;
    r.expect("read at end");
    assert_eq!(tail.len(), 4096);
    io.truncate(&f, 4096).await.expect("truncate");
    assert_eq!(io.file_size(&f).await.expect("size"), 4096);
    io.rename(&path, &dir.join("blob-1")).await.expect("rename");
    assert_eq!(io.list_dir(dir).await.expect("list"), vec!["blob-1".to_string()]);
    io.remove(&dir.join("blob-1")).await.expect("remove");
    assert!(io.list_dir(dir).await.expect("list").is_empty());
    let err = io.open(&dir.join("missing"), OpenMode::Existing).await.expect_err("missing file");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
}

fn full(n: usize) -> AlignedBuf {
    let mut b = AlignedBuf::new(n);
    b.set_len(n);
    b
}

fn local_rt() -> (tokio::runtime::Runtime, tokio::task::LocalSet) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    (rt, tokio::task::LocalSet::new())
}

#[test]
fn uring_backend_does_every_operation() {
    let dir = temp_dir("uring");
    let (rt, local) = local_rt();
    local.block_on(&rt, async {
        let cfg = UringConfig { cache: cache_for(&dir), pool_buf_count: 4, ..UringConfig::default() };
        let (io, driver) = Uring::new(cfg).expect("io_uring is available on this kernel");
        tokio::task::spawn_local(driver.run());
        exercise(&io, &dir).await;
        assert!(io.stats().submit_calls > 0);
        assert_eq!(io.in_flight(), 0);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn uring_batches_concurrent_operations_into_few_submissions() {
    let dir = temp_dir("uring-batch");
    let (rt, local) = local_rt();
    local.block_on(&rt, async {
        let cfg = UringConfig { cache: cache_for(&dir), pool_buf_count: 4, ..UringConfig::default() };
        let (io, driver) = Uring::new(cfg).expect("io_uring");
        tokio::task::spawn_local(driver.run());
        let f = io.open(&dir.join("f"), OpenMode::CreateNew).await.expect("create");
        io.allocate(&f, 64 * ALIGN as u64).await.expect("allocate");
        let before = io.stats();
        let mut tasks = Vec::new();
        for i in 0..64u64 {
            let (io, f) = (io.clone(), f.clone());
            tasks.push(tokio::task::spawn_local(async move {
                let mut b = AlignedBuf::new(ALIGN);
                b.extend_from(&[i as u8; ALIGN]);
                let (r, _) = io.write_at(&f, i * ALIGN as u64, b).await;
                r.expect("write");
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let after = io.stats();
        let ops = after.ops_submitted - before.ops_submitted;
        let calls = after.submit_calls - before.submit_calls;
        assert_eq!(ops, 64);
        assert!(calls < 64, "64 concurrent writes took {calls} submit calls: not batched");
        for i in 0..64u64 {
            let (r, b) = io.read_at(&f, i * ALIGN as u64, AlignedBuf::new(ALIGN)).await;
            r.expect("read");
            assert!(b.iter().all(|&x| x == i as u8));
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_dropped_read_keeps_its_buffer_until_the_kernel_is_done() {
    let dir = temp_dir("uring-drop");
    let (rt, local) = local_rt();
    local.block_on(&rt, async {
        let cfg = UringConfig { cache: cache_for(&dir), pool_buf_count: 2, ..UringConfig::default() };
        let (io, driver) = Uring::new(cfg).expect("io_uring");
        tokio::task::spawn_local(driver.run());
        let f = io.open(&dir.join("f"), OpenMode::CreateNew).await.expect("create");
        io.allocate(&f, 1 << 20).await.expect("allocate");
        for _ in 0..50 {
            let mut buf = io.alloc_buf(1 << 20).await;
            buf.set_len(1 << 20);
            let fut = io.read_at(&f, 0, buf);
            // Poll once (submits), then drop the future while the read is in flight.
            let mut fut = Box::pin(fut);
            let _ = futures_poll_once(fut.as_mut()).await;
            drop(fut);
        }
        // Every pool buffer comes back once the kernel has completed the orphaned reads.
        for _ in 0..1000 {
            if io.pool().free_count() == io.pool().count() && io.in_flight() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(io.pool().free_count(), io.pool().count());
        assert_eq!(io.in_flight(), 0);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

async fn futures_poll_once<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut f).poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

#[test]
fn sync_fallback_does_every_operation() {
    let dir = temp_dir("sync");
    let (rt, local) = local_rt();
    local.block_on(&rt, async {
        let io = SyncIo::new(cache_for(&dir));
        exercise(&io, &dir).await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sim_disk_does_every_operation() {
    let (rt, local) = local_rt();
    local.block_on(&rt, async {
        let io = SimDisk::new(1, SimFaults::default());
        exercise(&io, Path::new("/sim")).await;
    });
}

#[test]
fn sim_crash_loses_unsynced_data_and_names_but_keeps_synced() {
    let (rt, local) = local_rt();
    local.block_on(&rt, async {
        let mut lost_some = false;
        for seed in 0..40 {
            let io = SimDisk::new(seed, SimFaults::default());
            let dir = Path::new("/d");
            let f = io.open(&dir.join("a"), OpenMode::CreateNew).await.expect("create");
            io.allocate(&f, 16 * 4096).await.expect("alloc");
            let mut b = AlignedBuf::new(4096);
            b.extend_from(&[1u8; 4096]);
            let (r, b) = io.write_at(&f, 0, b).await;
            r.expect("write");
            io.sync_data(&f).await.expect("sync");
            io.sync_dir(dir).await.expect("sync dir");
            let mut b2 = AlignedBuf::new(8192);
            b2.extend_from(&[2u8; 8192]);
            let (r, _) = io.write_at(&f, 4096, b2).await;
            r.expect("write 2");
            let _g = io.open(&dir.join("ghost"), OpenMode::CreateNew).await.expect("create ghost");
            drop(b);
            io.crash();
            assert!(io.read_at(&f, 0, full(4096)).await.0.is_err(), "old handle fails");
            let f = io.open(&dir.join("a"), OpenMode::Existing).await.expect("synced name survives");
            assert!(io.open(&dir.join("ghost"), OpenMode::Existing).await.is_err(), "unsynced name lost");
            let data = io.file_bytes(&dir.join("a")).expect("file");
            assert!(data[..4096].iter().all(|&x| x == 1), "synced data survives");
            // The unsynced write persisted as a sector prefix: 2s then the old zeros.
            let second = &data[4096..12288];
            let twos = second.iter().take_while(|&&x| x == 2).count();
            assert_eq!(twos % 512, 0);
            assert!(second[twos..].iter().all(|&x| x == 0));
            lost_some |= twos < 8192;
            drop(f);
        }
        assert!(lost_some, "the crash model never lost an unsynced write in 40 seeds");
    });
}

#[test]
fn backend_detection_prefers_io_uring_and_says_why_it_falls_back() {
    let (rt, local) = local_rt();
    local.block_on(&rt, async {
        let cfg = UringConfig { pool_buf_count: 2, ..UringConfig::default() };
        let (io, driver, backend) = podstore_disks::AnyIo::detect(cfg.clone(), false);
        match podstore_disks::io_uring_disabled_sysctl() {
            Some(0) | None => {
                assert_eq!(backend.name, "io_uring", "{backend:?}");
                assert!(driver.is_some() && backend.fallback_reason.is_none());
                assert!(matches!(io, podstore_disks::AnyIo::Uring(_)));
            }
            Some(v) => eprintln!("note: kernel.io_uring_disabled = {v}: {backend:?}"),
        }
        let (io, driver, backend) = podstore_disks::AnyIo::detect(cfg, true);
        assert_eq!(backend.name, "sync");
        assert!(driver.is_none());
        assert!(backend.fallback_reason.as_deref().is_some_and(|r| r.contains("configured")), "{backend:?}");
        // The fallback does real I/O too.
        let dir = temp_dir("detect");
        exercise(&io, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn zero_copy_sends_deliver_every_byte_and_keep_the_data_until_notified() {
    use std::io::Read;
    let (rt, local) = local_rt();
    local.block_on(&rt, async {
        let (io, driver) = Uring::new(UringConfig::default()).expect("io_uring");
        tokio::task::spawn_local(driver.run());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let total = 8 << 20;
        let reader = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("read");
            got
        });
        let sock = std::net::TcpStream::connect(addr).expect("connect");
        let want: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
        // Sent in 1 MiB pieces, each owned by the ring until its notification; the caller's
        // copy is dropped at once after each send returns.
        for piece in want.chunks(1 << 20) {
            let data = bytes_of(piece);
            let mut off = 0;
            while off < data.0.len() {
                let n = io.send_zc(&sock, data.clone(), off).await.expect("send_zc");
                assert!(n > 0);
                off += n;
            }
        }
        drop(sock);
        let got = reader.join().expect("reader");
        assert!(got == want, "the receiver got {} bytes, not the {} sent", got.len(), want.len());
        // Every notification arrives; the slots (and the data) are released.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while io.in_flight() > 0 && std::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        assert_eq!(io.in_flight(), 0, "data released after the notifications");
        let st = io.stats();
        assert!(st.zc_notified >= 8, "{st:?}");
        // Over loopback the kernel reports that it copied.
        println!("zero-copy sends: {} notified, {} copied by the kernel", st.zc_notified, st.zc_copied);
    });
}

#[derive(Clone)]
struct Piece(std::rc::Rc<Vec<u8>>);

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn bytes_of(s: &[u8]) -> Piece {
    Piece(std::rc::Rc::new(s.to_vec()))
}
