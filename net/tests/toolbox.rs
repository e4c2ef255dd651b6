//! The operator's toolbox in the same binary: put/get/head/delete against a running node,
//! files and stdin/stdout, `stat` from the admin port, `index-info` on a stopped node's disk.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::*;

fn podstore(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_podstore"));
    c.args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("run podstore");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input).expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn put_get_head_delete_stat_and_index_info() {
    let mut node = Node::start("toolbox", "");
    let server = node.data.to_string();
    let admin = node.admin.to_string();
    let file = node.dir.join("in.bin");
    let data: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).expect("write");

    let out = ok(&podstore(
        &[
            "put",
            "videos/clip one.mp4",
            file.to_str().expect("utf8"),
            "--server",
            &server,
            "--content-type",
            "video/mp4",
        ],
        None,
    ));
    assert!(out.contains("stored"), "{out}");
    let back = node.dir.join("out.bin");
    ok(&podstore(&["get", "videos/clip one.mp4", back.to_str().expect("utf8"), "--server", &server], None));
    assert_eq!(std::fs::read(&back).expect("read"), data);
    let part = podstore(&["get", "videos/clip one.mp4", "-", "--server", &server, "--range", "10-19"], None);
    ok(&part);
    assert_eq!(part.stdout, &data[10..20]);

    ok(&podstore(&["put", "notes/from-stdin", "-", "--server", &server], Some(b"piped bytes")));
    assert_eq!(podstore(&["get", "notes/from-stdin", "--server", &server], None).stdout, b"piped bytes");
    let h = ok(&podstore(&["head", "videos/clip one.mp4", "--server", &server], None));
    assert!(h.contains("content-length: 2500000") && h.contains("video/mp4"), "{h}");

    let st = ok(&podstore(&["stat", "--admin", &admin], None));
    assert_eq!(st.lines().filter(|l| l.contains("online")).count(), 3, "{st}");

    ok(&podstore(&["delete", "notes/from-stdin", "--server", &server], None));
    let gone = podstore(&["get", "notes/from-stdin", "--server", &server], None);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
    let bad = podstore(&["put", "x/y", "/nonexistent/file", "--server", &server], None);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("/nonexistent/file"));

    // Offline: the disk that holds the clip reports it, and nothing on the disk changes.
    assert!(node.stop().success());
    let mut objects = 0;
    let mut tombstones = 0;
    for i in 0..3 {
        let disk = node.dir.join(format!("disk{i}"));
        let listing = |d: &std::path::Path| {
            let mut v: Vec<_> =
                std::fs::read_dir(d).expect("ls").map(|e| e.expect("entry").file_name()).collect();
            v.sort();
            v
        };
        let before = listing(&disk);
        let info = ok(&podstore(&["index-info", disk.to_str().expect("utf8")], None));
        assert_eq!(listing(&disk), before, "index-info changed the disk");
        for l in info.lines() {
            if let Some(n) = l.strip_prefix("objects:") {
                objects += n.trim().parse::<u64>().expect("count");
            }
            if let Some(n) = l.strip_prefix("deleted (tombstones):") {
                tombstones += n.trim().parse::<u64>().expect("count");
            }
        }
    }
    assert_eq!((objects, tombstones), (1, 1));
    let not_a_disk = podstore(&["index-info", node.dir.to_str().expect("utf8")], None);
    assert!(!not_a_disk.status.success());
}

/// The systemd unit's start condition: 0 to start, 1 (skipped, not failed) while the config
/// names no disks (a fresh install), 255 (failed) for a broken config.
#[test]
fn check_config_tells_the_service_whether_to_start() {
    let dir = std::env::temp_dir().join(format!("podstore-it-checkconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let example = include_str!("../../deploy/podstore.toml");
    let code = |text: &str| {
        let p = dir.join("podstore.toml");
        std::fs::write(&p, text).expect("write config");
        let o = podstore(&["check-config", "--require-disks", p.to_str().expect("utf8")], None);
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (c, err) = code(example);
    assert_eq!(c, Some(1), "the example as shipped names no disks: {err}");
    assert!(err.contains("names no [[disks]]"), "{err}");
    let disk = dir.join("disk0");
    std::fs::create_dir_all(&disk).expect("mkdir");
    let with_disk = format!(
        "{example}\n[[disks]]\nid = 0\npath = \"{}\"\ntier = \"capacity\"\nrequire_mount_point = false\n",
        disk.display()
    );
    assert_eq!(code(&with_disk).0, Some(0));
    let (c, err) = code(&with_disk.replace("[limits]", "[limits]\nno_such_key = 1"));
    assert_eq!(c, Some(255), "a broken config fails the unit: {err}");
    assert_eq!(code("this is not toml [").0, Some(255));
    let o = podstore(&["check-config", "--require-disks", "/nonexistent/podstore.toml"], None);
    assert_eq!(o.status.code(), Some(255));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A disk's measured profile (`podstore-tune measure` writes it into the disk's directory)
/// sets that disk's read limit; a broken profile is reported and the defaults kept; both show
/// in /admin/disks and the metrics.
#[test]
fn a_disks_measured_profile_sets_its_read_limit() {
    let mut n = Node::start("profile", "");
    n.stop();
    std::fs::write(
        n.dir.join("disk0/podstore.disk-profile.toml"),
        "queue_depth = 3\nbackground_mib_per_s = 40.0\n",
    )
    .expect("profile");
    std::fs::write(n.dir.join("disk1/podstore.disk-profile.toml"), "queue_depth = -1\n")
        .expect("bad profile");
    n.spawn(&[]);
    let v: serde_json::Value = serde_json::from_slice(&n.admin("/admin/disks").body).expect("json");
    let disk =
        |id: u64| v["disks"].as_array().expect("disks").iter().find(|d| d["id"] == id).expect("disk").clone();
    assert_eq!(disk(0)["reads_in_flight_max"], 3, "{v}");
    assert_eq!(disk(0)["profile"]["queue_depth"], 3);
    assert_eq!(disk(0)["profile"]["background_mib_per_s"], 40.0);
    assert_eq!(disk(1)["reads_in_flight_max"], 256, "a broken profile leaves the default: {v}");
    assert!(disk(1)["profile"].is_null());
    assert!(n.log_text().contains("disk 1: ") && n.log_text().contains("queue_depth (1..=4096)"));
    let text = String::from_utf8(n.admin("/metrics").body).expect("utf8");
    assert!(text.lines().any(|l| l.starts_with("podstore_disk_reads_in_flight_max{disk=\"0\"} 3")), "{text}");
    // Data still flows under the limit.
    let body: Vec<u8> = (0..500_000u32).map(|i| i as u8).collect();
    for i in 0..12 {
        assert_eq!(n.req("PUT", &format!("/photos/p{i}"), &[], &body).status, 201);
    }
    for i in 0..12 {
        let g = n.req("GET", &format!("/photos/p{i}"), &[], b"");
        assert!(g.status == 200 && g.body == body);
    }
}
