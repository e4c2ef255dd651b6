//! `podstore-tune measure` on a real directory, through io_uring: a profile with every
//! measurement, which the node's reader accepts; the test file is gone afterwards.

use std::process::Command;

#[test]
fn measure_writes_a_profile_the_node_reads() {
    let dir = std::env::temp_dir().join(format!("podstore-measure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let out = Command::new(env!("CARGO_BIN_EXE_podstore-tune"))
        .args(["measure", "--disk"])
        .arg(&dir)
        .args(["--seconds", "0.2", "--file-mib", "64", "--depths", "1,4"])
        .output()
        .expect("run podstore-tune measure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("random 4 KiB reads at queue depth 4"), "progress is shown: {err}");
    let text = std::fs::read_to_string(dir.join("podstore.disk-profile.toml")).expect("profile");
    for section in ["[[random_read_4k]]", "[[seq_read_1m]]", "[[seq_write_1m]]"] {
        assert_eq!(text.matches(section).count(), 2, "{section} at two depths:\n{text}");
    }
    let t: toml::Table = toml::from_str(&text).expect("valid TOML");
    for p in t["random_read_4k"].as_array().expect("points") {
        assert!(p["ops_per_s"].as_integer().expect("ops") > 0, "{text}");
        assert!(p["p99_us"].as_integer().expect("p99") >= p["p50_us"].as_integer().expect("p50"));
    }
    let p = podstore_net::profile::read(&dir).expect("the node reads it").expect("a profile");
    assert!([1, 4].contains(&p.queue_depth), "{p:?}");
    assert!(p.background_mib_per_s > 0.0);
    let mut left: Vec<_> = std::fs::read_dir(&dir).expect("ls").flatten().map(|e| e.file_name()).collect();
    left.sort();
    assert_eq!(
        left,
        ["podstore.disk-profile.toml", "podstore.lock"],
        "only the profile and the lock are left"
    );
    // A disk measured before its first start is taken by the node (what measuring left is
    // podstore's own, not another program's data).
    let spec = podstore_disks::DiskSpec {
        id: 0,
        path: dir.clone(),
        tier: podstore_disks::Tier::Capacity,
        require_mount_point: false,
        cache: podstore_disks::CacheMode::Buffered,
    };
    let disk = podstore_disks::open_disk(&spec, "measured").expect("a measured fresh disk is labelled");
    // While a process holds the disk (here this one, through the disk just opened), measure
    // refuses, naming the holder.
    let held = Command::new(env!("CARGO_BIN_EXE_podstore-tune"))
        .args(["measure", "--disk"])
        .arg(&dir)
        .args(["--seconds", "0.2", "--file-mib", "64", "--depths", "1"])
        .output()
        .expect("run podstore-tune measure");
    let err = String::from_utf8_lossy(&held.stderr);
    assert!(!held.status.success(), "measured a disk in use: {err}");
    assert!(err.contains(&format!("locked by PID {}", std::process::id())), "{err}");
    drop(disk);
    // Bad arguments are refused before anything runs.
    let bad = Command::new(env!("CARGO_BIN_EXE_podstore-tune"))
        .args(["measure", "--disk"])
        .arg(&dir)
        .args(["--depths", "0"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
