//! A disk that stops answering (rather than failing), on the real binary (root; `.ci/run` runs
//! it): disk 2 is a FUSE filesystem (`tests/support/hangfs.py`, a passthrough whose reads can
//! be made to block) and its reads stop returning while clients write and read. The node's
//! probe notices within `engine.disk_timeout_ms`, marks the disk failed, and from then on its
//! keys' requests fail at once (503) instead of piling up, the other disks serve everything
//! byte for byte, and new writes of the hung disk's keys go to the next disks of their chains.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_addr, Node};

/// The FUSE filesystem and its directories, undone on drop (only ours).
struct HangFs {
    child: Child,
    mnt: PathBuf,
    flag: PathBuf,
    top: PathBuf,
}

impl Drop for HangFs {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.flag); // blocked reads return first
        std::thread::sleep(Duration::from_millis(100));
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.top);
    }
}

fn value(i: usize, gen: usize) -> Vec<u8> {
    (0..20_000 + i * 3).map(|j| (j * 13 + i * 5 + gen * 31) as u8).collect()
}

fn mounted(mnt: &std::path::Path) -> bool {
    let m = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    m.lines().any(|l| l.split(' ').nth(1) == mnt.to_str())
}

fn disk2(node: &Node) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&node.admin("/admin/disks").body).expect("json");
    v["disks"].as_array().expect("disks").iter().find(|d| d["id"] == 2).cloned().expect("disk 2")
}

#[test]
fn a_disk_that_stops_answering_is_marked_failed_and_its_requests_fail_fast() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let fuse = std::path::Path::new("/dev/fuse").exists()
        && Command::new("python3").args(["-c", "import mfusepy"]).status().is_ok_and(|s| s.success());
    if !(root && fuse) {
        assert!(
            std::env::var_os("PODSTORE_REQUIRE_ROOT_TESTS").is_none(),
            "the disk-hang test needs root, /dev/fuse and python3 with mfusepy (pip install mfusepy)"
        );
        eprintln!(
            "skipped: the disk-hang test needs root, /dev/fuse and python3 with mfusepy (run by .ci/run)"
        );
        return;
    }
    let top = std::env::temp_dir().join(format!("podstore-hangfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&top);
    let (backing, mnt, flag) = (top.join("backing"), top.join("mnt"), top.join("hang"));
    for d in [&backing, &mnt] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/hangfs.py");
    let log = std::fs::File::create(top.join("hangfs.log")).expect("log");
    let child = Command::new("python3")
        .arg(script)
        .args([&backing, &mnt, &flag])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start hangfs.py");
    let fs = HangFs { child, mnt: mnt.clone(), flag: flag.clone(), top: top.clone() };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mounted(&mnt) {
        assert!(
            Instant::now() < deadline,
            "hangfs did not mount: {}",
            std::fs::read_to_string(top.join("hangfs.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Disks 0 and 1 are plain directories; disk 2 is the FUSE filesystem (a link to it, so the
    // node's directory is removed without descending into the mount).
    let dir = std::env::temp_dir().join(format!("podstore-it-diskhang-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for i in 0..2 {
        std::fs::create_dir_all(dir.join(format!("disk{i}"))).expect("mkdir");
    }
    std::os::unix::fs::symlink(&mnt, dir.join("disk2")).expect("link disk2");
    let extra = "[engine]\nblob_size_bytes = 1048576\ndisk_timeout_ms = 1000\n";
    let mut node = Node::start_in(dir, "diskhang", free_addr(), free_addr(), extra);
    let n = 120;
    for i in 0..n {
        assert_eq!(node.req("PUT", &format!("/photos/h{i:03}"), &[], &value(i, 0)).status, 201);
    }
    let on_disk2 = disk2(&node)["objects"].as_u64().expect("objects");
    assert!(on_disk2 >= 20, "{on_disk2} objects on the FUSE disk");

    // The device stops answering reads.
    std::fs::write(&flag, b"").expect("hang");
    let hung_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if disk2(&node)["state"] == "failed" {
            break;
        }
        assert!(Instant::now() < deadline, "disk 2 was never marked failed\n{}", node.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let detected = hung_at.elapsed();
    eprintln!("a disk that stopped answering was marked failed after {} ms", detected.as_millis());
    // The probe runs every second and waits disk_timeout_ms (1 s) for its read.
    assert!(detected < Duration::from_secs(4), "detected after {detected:?}");

    // Every object: byte-exact from the other disks, 503 at once for the hung disk's own.
    let mut unavailable = 0;
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let t = Instant::now();
        let r = node.req("GET", &format!("/photos/h{i:03}"), &[], b"");
        slowest = slowest.max(t.elapsed());
        match r.status {
            200 => assert_eq!(r.body, value(i, 0), "h{i:03}"),
            503 => unavailable += 1,
            s => panic!("h{i:03}: {s} {}", String::from_utf8_lossy(&r.body)),
        }
    }
    assert_eq!(unavailable, on_disk2, "exactly the hung disk's objects are unavailable (no peer here)");
    assert!(slowest < Duration::from_millis(500), "a request waited {slowest:?}: requests must fail fast");
    // New writes, the hung disk's keys included, go on along their chains and read back.
    for i in 0..n {
        let r = node.req("PUT", &format!("/photos/h{i:03}"), &[], &value(i, 1));
        assert_eq!(r.status, 201, "h{i:03}: {}", String::from_utf8_lossy(&r.body));
    }
    for i in 0..n {
        assert_eq!(node.req("GET", &format!("/photos/h{i:03}"), &[], b"").body, value(i, 1), "h{i:03}");
    }
    node.kill();
    drop(fs);
}
