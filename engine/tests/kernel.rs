//! The engine on the real kernel: io_uring with O_DIRECT on files in a temp directory, and
//! (as root) on ext4 and XFS filesystems on loop devices of our own, unmounted and mounted
//! again between writing and verifying.
//!
//! Loop devices are shared on this machine: this test attaches its own with
//! `losetup -f --show --direct-io=on` and detaches only that one.

use std::path::{Path, PathBuf};
use std::process::Command;

use podstore_disks::{probe_direct_io, CacheMode, Uring, UringConfig};
use podstore_engine::{Shard, ShardConfig};

fn cfg() -> ShardConfig {
    ShardConfig {
        blob_size_bytes: 4 << 20,
        object_size_max_bytes: 64 << 20,
        tombstone_reserve_bytes: 64 << 10,
        // Few blob files kept open: reads open cold blobs again through io_uring.
        open_blob_files_max: 2,
        ..ShardConfig::default()
    }
}

fn value(i: u32, n: usize) -> Vec<u8> {
    (0..n).map(|j| (j as u32).wrapping_mul(2654435761).wrapping_add(i) as u8 ^ (j >> 11) as u8).collect()
}

fn size_of(i: u32) -> usize {
    match i % 7 {
        0 => 0,
        1 => 4000,
        2 => 70_000,
        3 => 1 << 20,
        4 => 3_500_000,
        _ => (i as usize * 977) % 20_000,
    }
}

fn with_uring<F: std::future::Future<Output = ()>>(dir: &Path, f: impl FnOnce(Uring) -> F) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    let cache = match probe_direct_io(dir) {
        Ok(_) => CacheMode::Direct,
        Err(e) => panic!("{} can't do O_DIRECT: {e}", dir.display()),
    };
    local.block_on(&rt, async move {
        let (io, driver) =
            Uring::new(UringConfig { cache, pool_buf_count: 8, ..UringConfig::default() }).expect("io_uring");
        tokio::task::spawn_local(driver.run());
        f(io).await;
    });
}

/// Writes, overwrites and deletes objects; reads them back.
fn write_phase(dir: &Path, n: u32) {
    with_uring(dir, |io| async move {
        let (shard, _) = Shard::open(io, cfg(), dir, 7).await.expect("open");
        let mut tasks = Vec::new();
        for i in 0..n {
            let s = shard.clone();
            tasks.push(tokio::task::spawn_local(async move {
                let v = value(i, size_of(i));
                s.put_bytes(format!("obj/{i}").as_bytes(), "video/mp4", &v).await.expect("put");
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        for i in (0..n).step_by(5) {
            assert!(shard.delete(format!("obj/{i}").as_bytes()).await.expect("delete"));
        }
        for i in (1..n).step_by(5) {
            shard
                .put_bytes(format!("obj/{i}").as_bytes(), "", &value(i + 1000, 5000))
                .await
                .expect("overwrite");
        }
        if n > 10 {
            shard.checkpoint().await.expect("checkpoint");
            // A little after the checkpoint, so recovery scans a tail too.
            shard.put_bytes(b"tail", "", &value(99, 12345)).await.expect("tail put");
        }
        verify(&shard, n).await;
        let st = shard.stats();
        assert!(st.syncs > 0 && st.io_errors == 0 && st.fenced.is_none(), "{st:?}");
    });
}

async fn verify<I: podstore_disks::Io>(shard: &std::rc::Rc<Shard<I>>, n: u32) {
    for i in 0..n {
        let got = match shard.get(format!("obj/{i}").as_bytes()).await.expect("get") {
            Some(mut r) => Some(r.read_all().await.expect("read")),
            None => None,
        };
        let want = match i % 5 {
            0 => None,
            1 => Some(value(i + 1000, 5000)),
            _ => Some(value(i, size_of(i))),
        };
        assert_eq!(got.as_ref().map(|v| v.len()), want.as_ref().map(|v| v.len()), "obj/{i}");
        assert!(got == want, "obj/{i} differs");
    }
}

fn reopen_and_verify(dir: &Path, n: u32) {
    with_uring(dir, |io| async move {
        let (shard, report) = Shard::open(io, cfg(), dir, 7).await.expect("reopen");
        assert!(report.checkpoint_seq.is_some(), "{report:?}");
        assert_eq!(report.torn_tail_items, 0, "{report:?}");
        verify(&shard, n).await;
        if n > 10 {
            let mut r = shard.get(b"tail").await.expect("get").expect("tail exists");
            assert_eq!(r.read_all().await.expect("read"), value(99, 12345));
        }
        // At most two descriptors cached (the open blob and the last one read may be above).
        let st = shard.stats();
        assert!(st.open_blob_files <= 4, "{} blob files open", st.open_blob_files);
        if st.blobs > 4 {
            assert!(st.blob_reopens > 0, "{} blobs read with 2 kept open: none opened again", st.blobs);
        }
    });
}

#[test]
fn engine_on_io_uring_with_temp_files() {
    let dir = std::env::temp_dir().join(format!("podstore-kernel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    write_phase(&dir, 40);
    reopen_and_verify(&dir, 40);
    let _ = std::fs::remove_dir_all(&dir);
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

struct LoopFs {
    image: PathBuf,
    mnt: PathBuf,
    dev: Option<String>,
    mounted: bool,
}

impl LoopFs {
    fn new(fs: &str) -> Result<LoopFs, String> {
        let base = std::env::temp_dir().join(format!("podstore-loop-{fs}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
        let image = base.join("disk.img");
        let mnt = base.join("mnt");
        std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
        let f = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        f.set_len(1 << 30).map_err(|e| e.to_string())?;
        let mut me = LoopFs { image, mnt, dev: None, mounted: false };
        let dev = sh("losetup", &["-f", "--show", "--direct-io=on", me.image.to_str().expect("utf8")])?;
        me.dev = Some(dev.clone());
        let mkfs = format!("mkfs.{fs}");
        let args: &[&str] = if fs == "xfs" { &["-q", "-f"] } else { &["-q", "-F"] };
        let mut a = args.to_vec();
        a.push(&dev);
        sh(&mkfs, &a)?;
        me.mount()?;
        Ok(me)
    }

    fn mount(&mut self) -> Result<(), String> {
        sh("mount", &[self.dev.as_deref().expect("attached"), self.mnt.to_str().expect("utf8")])?;
        self.mounted = true;
        Ok(())
    }

    fn umount(&mut self) -> Result<(), String> {
        sh("umount", &[self.mnt.to_str().expect("utf8")])?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = self.umount();
        }
        if let Some(dev) = &self.dev {
            let _ = sh("losetup", &["-d", dev]);
        }
        if let Some(base) = self.image.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

/// Runs only when asked (`cargo test -- --ignored`, which `.ci/run` runs as root): then a
/// missing requirement is a failure, never a silent pass.
fn loop_device_test(fs: &str) {
    assert!(is_root(), "the {fs} loop-device test needs root");
    if let Err(e) = sh("which", &[&format!("mkfs.{fs}")]) {
        panic!("mkfs.{fs} is not installed ({e}); .ci/run installs it");
    }
    let mut lfs = LoopFs::new(fs).unwrap_or_else(|e| panic!("loop device setup failed: {e}"));
    let dir = lfs.mnt.join("shard");
    std::fs::create_dir_all(&dir).expect("mkdir");
    write_phase(&dir, 60);
    lfs.umount().expect("umount");
    lfs.mount().expect("mount again");
    reopen_and_verify(&dir, 60);
}

#[test]
#[ignore = "needs root, losetup and mkfs.ext4: cargo test -- --ignored (.ci/run runs it as root)"]
fn engine_on_ext4_loop_device() {
    loop_device_test("ext4");
}

#[test]
#[ignore = "needs root, losetup and mkfs.xfs: cargo test -- --ignored (.ci/run runs it as root)"]
fn engine_on_xfs_loop_device() {
    loop_device_test("xfs");
}

fn big_byte(pos: u64) -> u8 {
    (pos.wrapping_mul(0x9E37_79B9) >> 13) as u8 ^ (pos >> 20) as u8
}

/// A 4.5 GiB object streamed through the engine on io_uring: larger than the index's exact
/// length field (4 GiB), so its length comes from its header. It writes 4.5 GiB to the temp
/// directory, so it runs only when asked.
#[test]
#[ignore = "streams 4.5 GiB through the temp directory: cargo test -- --ignored (.ci/run runs it)"]
fn a_five_gib_class_object_streams_in_and_out() {
    let dir = std::env::temp_dir().join(format!("podstore-big-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let len: u64 = (4 << 30) + (512 << 20) + 12_345;
    with_uring(&dir.clone(), |io| async move {
        let (shard, _) = Shard::open(io, ShardConfig::default(), &dir, 9).await.expect("open");
        let mut w = shard.put(b"movie.mkv", &"video/x-matroska".into(), len).await.expect("put");
        let mut piece = vec![0u8; 1 << 20];
        let mut pos = 0u64;
        let mut digest = xxhash_rust::xxh3::Xxh3::new();
        while pos < len {
            let n = (len - pos).min(piece.len() as u64) as usize;
            for (i, b) in piece[..n].iter_mut().enumerate() {
                *b = big_byte(pos + i as u64);
            }
            digest.update(&piece[..n]);
            w.write(&piece[..n]).await.expect("write");
            pos += n as u64;
        }
        let done = w.finish().await.expect("finish");
        assert_eq!(done.digest, digest.digest128().to_le_bytes());
        let st = shard.stats();
        assert_eq!(st.objects, 1);
        // Ranges: the start, across the 4 GiB mark, and the very end.
        for (a, b) in [(0u64, 3000u64), ((4 << 30) - 5000, (4 << 30) + 70_000), (len - 777, len)] {
            let mut r = shard.get(b"movie.mkv").await.expect("get").expect("exists");
            assert_eq!(r.meta.object_len, len);
            r.set_range(a, b);
            let got = r.read_all().await.expect("range");
            assert_eq!(got.len() as u64, b - a);
            assert!(got.iter().enumerate().all(|(i, &x)| x == big_byte(a + i as u64)), "range {a}..{b}");
        }
        // The whole object, verified chunk by chunk as it streams out.
        let mut r = shard.get(b"movie.mkv").await.expect("get").expect("exists");
        let mut check = xxhash_rust::xxh3::Xxh3::new();
        let mut total = 0u64;
        while let Some(c) = r.next_chunk().await.expect("chunk") {
            check.update(&c);
            total += c.len() as u64;
        }
        assert_eq!(total, len);
        assert_eq!(check.digest128().to_le_bytes(), done.digest);
    });
    let _ =
        std::fs::remove_dir_all(std::env::temp_dir().join(format!("podstore-big-{}", std::process::id())));
}

/// Reads of object data stay within the disk's read limit (`reads_in_flight_max`, which the
/// node takes from the disk's measured profile), however many GETs run at once; with a higher
/// limit the same load has more reads in flight, so the limit is what bounds them.
#[test]
fn reads_in_flight_stay_within_the_disks_limit() {
    let dir = std::env::temp_dir().join(format!("podstore-kernel-reads-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut peaks = Vec::new();
    for limit in [2usize, 64] {
        let sub = dir.join(format!("l{limit}"));
        std::fs::create_dir_all(&sub).expect("mkdir");
        let d = sub.clone();
        let peak = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let p = peak.clone();
        with_uring(&sub, |io| async move {
            let c = ShardConfig { reads_in_flight_max: limit, ..cfg() };
            let (shard, _) = Shard::open(io, c, &d, 3).await.expect("open");
            for i in 0..40u32 {
                shard.put_bytes(format!("k{i}").as_bytes(), "", &value(i, 300_000)).await.expect("put");
            }
            let mut tasks = Vec::new();
            for round in 0..3u32 {
                for i in 0..40u32 {
                    let s = shard.clone();
                    tasks.push(tokio::task::spawn_local(async move {
                        let mut r = s.get(format!("k{i}").as_bytes()).await.expect("get").expect("present");
                        assert_eq!(r.read_all().await.expect("read"), value(i, 300_000), "round {round}");
                    }));
                }
            }
            for t in tasks {
                t.await.expect("get task");
            }
            let st = shard.stats();
            assert_eq!(st.reads_in_flight_max, limit as u64);
            assert!(st.reads_in_flight_peak <= limit as u64, "peak {} over {limit}", st.reads_in_flight_peak);
            p.set(st.reads_in_flight_peak);
        });
        peaks.push(peak.get());
    }
    assert_eq!(peaks[0], 2, "120 concurrent GETs reach the limit of 2");
    assert!(peaks[1] > 2, "without a tight limit more reads are in flight: {peaks:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
