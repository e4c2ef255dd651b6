//! What an operator meets in the first hour, on the real binary: disks too small for the
//! blob size, the config check, closed pipes, SIGHUP, logs without colour on a file, host
//! names in listen addresses, the toolbox's tables.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

use common::run_podstore as podstore;
use common::stderr_text as stderr;

#[test]
fn a_disk_too_small_for_the_blob_size_is_refused_saying_what_fits() {
    let dir = fresh_dir("small-disks");
    // 64 MiB of blob space per disk (as a 64 MiB filesystem would give) with 1 GiB blobs.
    let text = config_text(
        &dir,
        free_addr(),
        free_addr(),
        "[engine]\nblob_size_bytes = 1073741824\ndisk_bytes_max = 67108864\n",
    );
    let config = dir.join("podstore.toml");
    std::fs::write(&config, text).expect("write config");
    let o = podstore(&["serve".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let err = stderr(&o);
    assert!(!o.status.success(), "a node started on disks that hold no blob:\n{err}");
    assert!(
        err.contains("engine.blob_size_bytes = 1073741824 (1 GiB)")
            && err.contains("set engine.blob_size_bytes to at most 33554432 (32 MiB)"),
        "{err}"
    );
    assert!(err.contains("no disk can be used"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_says_plainly_what_is_missing_and_summarises_a_valid_file() {
    let dir = fresh_dir("checkconfig-summary");
    let example = include_str!("../../deploy/podstore.toml");
    let shipped = dir.join("shipped.toml");
    std::fs::write(&shipped, example).expect("write");
    let o = podstore(&["check-config".as_ref(), shipped.as_os_str()]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("no disk is configured yet") && !err.contains("missing field"), "{err}");
    // `tier` may be left out (capacity), host names resolve, IPv6 works.
    let text = format!(
        "{}\n[[disks]]\nid = 0\npath = \"{}\"\nrequire_mount_point = false\n\n[[disks]]\nid = 7\npath = \"{}\"\ntier = \"fast\"\nweight = 2.5\n",
        example.replace("data = \"127.0.0.1:7070\"", "data = \"localhost:7070\"").replace(
            "admin = \"127.0.0.1:7072\"",
            "admin = \"[::1]:7072\""
        ),
        dir.join("disk0").display(),
        dir.join("not-there").display()
    );
    let config = dir.join("podstore.toml");
    std::fs::write(&config, text).expect("write");
    let o = podstore(&["check-config".as_ref(), config.as_os_str()]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.contains("Config {") && !out.contains("DiskConf"), "a Debug dump: {out}");
    assert!(out.contains("node pod-01") && out.contains("admin port [::1]:7072"), "{out}");
    assert!(out.contains("data port 127.0.0.1:7070"), "localhost resolved: {out}");
    let lines: Vec<&str> = out.lines().collect();
    let header = lines.iter().position(|l| l.trim_start().starts_with("id ")).expect("disk table");
    let col = |l: &str, name: &str| lines[header].find(name).map(|at| l.get(at..).unwrap_or("").to_string());
    let disk0 = lines[header + 1];
    assert!(col(disk0, "tier").is_some_and(|c| c.starts_with("capacity")), "{out}");
    assert!(col(disk0, "size").is_some_and(|c| c.contains("iB")), "sizes in human units: {out}");
    let disk7 = lines[header + 2];
    assert!(col(disk7, "tier").is_some_and(|c| c.starts_with("fast")), "{out}");
    assert!(col(disk7, "size").is_some_and(|c| c.starts_with("missing")), "{out}");
    assert!(col(disk7, "weight").is_some_and(|c| c.starts_with("2.5")), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn toolbox_output_into_a_closed_pipe_ends_quietly() {
    let node = Node::start("closed-pipe", "");
    let big: Vec<u8> = (0..4_000_000u32).map(|i| i as u8).collect();
    assert_eq!(node.req("PUT", "/photos/big", &[], &big).status, 201);
    let mut child = Command::new(env!("CARGO_BIN_EXE_podstore"))
        .args(["get", "photos/big", "-", "--server", &node.data.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run podstore get");
    let mut first = [0u8; 10];
    std::io::Read::read_exact(child.stdout.as_mut().expect("stdout"), &mut first).expect("read");
    drop(child.stdout.take()); // what `| head -c 10` does
    let out = child.wait_with_output().expect("wait");
    let err = stderr(&out);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    assert!(err.is_empty(), "nothing on stderr: {err}");
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_a_file() {
    let mut node = Node::start("plain-logs", "");
    assert!(node.stop().success());
    let log = node.log_text();
    assert!(log.contains("ready after"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in a log file: {log:.300}");
}

#[test]
fn migrate_on_a_node_without_a_fast_tier_says_so() {
    let node = Node::start("no-fast-tier", "");
    let o = podstore(&["migrate".as_ref(), "--admin".as_ref(), node.admin.to_string().as_ref()]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("no fast tier"), "{err}");
}

#[test]
fn add_disk_without_a_weight_weighs_the_disk_in_the_unit_of_the_others() {
    // Three configured disks of weight 1 on one filesystem; the new disk is on the same one.
    let node = Node::start("add-weight", "");
    let new_dir = node.dir.join("disk3");
    std::fs::create_dir_all(&new_dir).expect("mkdir");
    let admin = node.admin.to_string();
    let o = podstore(&[
        "add-disk".as_ref(),
        "--id".as_ref(),
        "3".as_ref(),
        "--path".as_ref(),
        new_dir.as_os_str(),
        "--any-directory".as_ref(),
        "--no-wait".as_ref(),
        "--admin".as_ref(),
        admin.as_ref(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    let weight: f64 = out
        .split("weight ")
        .nth(1)
        .and_then(|w| w.trim().parse().ok())
        .unwrap_or_else(|| panic!("no weight in {out:?}"));
    assert!((weight - 1.0).abs() < 1e-9, "the new disk weighs {weight}, the others 1: {out}");
}

/// Whether every row's cell starts where its header does (columns under their headers).
fn aligned(table: &str, columns: &[&str]) -> bool {
    let mut lines = table.lines();
    let Some(header) = lines.next() else { return false };
    let starts: Vec<usize> = columns.iter().map(|c| header.find(c).expect("column")).collect();
    lines.all(|l| {
        starts.iter().all(|&at| {
            let (before, after) = (l.get(..at).unwrap_or(""), l.get(at..).unwrap_or(""));
            (at == 0 || before.ends_with(' ')) && !after.starts_with(' ') && !after.is_empty()
        })
    })
}

#[test]
fn stat_and_tiers_line_up_in_human_units_and_scrub_reports_its_own_pass() {
    let node = Node::start("stat-columns", "");
    for i in 0..40 {
        let v = vec![i as u8; 3000 + i * 1000];
        assert_eq!(node.req("PUT", &format!("/photos/s-{i}"), &[], &v).status, 201);
    }
    let admin = node.admin.to_string();
    let run = |args: &[&str]| {
        let mut a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_ref()).collect();
        a.extend(["--admin".as_ref(), admin.as_ref() as &std::ffi::OsStr]);
        let o = podstore(&a);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let stat = run(&["stat"]);
    assert!(
        aligned(&stat, &["disk", "state", "tier", "objects", "used", "dead", "free", "io_errors", "path"]),
        "{stat}"
    );
    assert!(stat.lines().skip(1).all(|l| l.contains("iB")), "sizes in binary units: {stat}");
    let raw = run(&["stat", "--bytes"]);
    assert!(aligned(&raw, &["disk", "used", "free", "path"]) && !raw.contains("iB"), "{raw}");
    let tiers = run(&["tiers"]);
    let table: String =
        tiers.lines().take_while(|l| !l.starts_with("ram cache:")).map(|l| format!("{l}\n")).collect();
    assert!(aligned(&table, &["tier", "disks", "objects", "used", "capacity", "fill", "gets"]), "{tiers}");
    // Two scrubs of one disk each report that disk's records, not a running total.
    let records = |out: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix("disk 0: ")?.split(" records checked").next()?.parse().ok())
            .unwrap_or_else(|| panic!("no count in {out}"))
    };
    let first = records(&run(&["scrub", "--disk", "0"]));
    let second = records(&run(&["scrub", "--disk", "0"]));
    let v: serde_json::Value = serde_json::from_slice(&node.admin("/admin/disks").body).expect("json");
    let on_disk0 = v["disks"].as_array().expect("disks").iter().find(|d| d["id"] == 0).expect("disk 0")
        ["objects"]
        .as_u64()
        .expect("objects");
    assert!(on_disk0 > 0);
    assert_eq!((first, second), (on_disk0, on_disk0), "each pass reports its own records");
}

fn write_secret(path: &std::path::Path, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{secret}\n")).expect("write secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn metric_line(node: &Node, name: &str) -> f64 {
    common::metric(node, name)
}

#[test]
fn sighup_reloads_what_can_change_and_a_bad_file_changes_nothing() {
    const OLD: &str = "b2xkLXNlY3JldC1mb3ItdGhlLXNpZ2h1cC10ZXN0LTAxMjM=";
    const NEW: &str = "bmV3LXNlY3JldC1mb3ItdGhlLXNpZ2h1cC10ZXN0LTQ1Njc=";
    let dir = fresh_dir("sighup");
    let secret = dir.join("uploader.secret");
    write_secret(&secret, OLD);
    let (data, admin) = (free_addr(), free_addr());
    let text = |extra: &str| {
        config_text(
            &dir,
            data,
            admin,
            &format!(
                "{extra}\n[auth]\npublic_buckets = []\n\n[[auth.keys]]\nid = \"uploader\"\nsecret_file = \"{}\"\n",
                secret.display()
            ),
        )
    };
    let node =
        Node::start_with_config(dir.clone(), data, admin, text("[maintenance]\nbackground_mib_per_s = 64\n"));
    let pid = node.pid();
    let token = |s: &str| format!("Bearer uploader.{s}");
    let put =
        |tok: &str, path: &str, body: &[u8]| node.req("PUT", path, &[("authorization", tok)], body).status;
    assert_eq!(put(&token(OLD), "/photos/a", b"one"), 201);
    let budget = |node: &Node| -> u64 {
        let v: serde_json::Value = serde_json::from_slice(&node.admin("/admin/jobs").body).expect("json");
        v["disks"][0]["background_bytes_per_s"].as_u64().expect("budget")
    };
    assert_eq!(budget(&node), 64 << 20);

    // A rotated secret, a public bucket, a smaller object limit, a new background budget and
    // log level: in force after SIGHUP. A new blob size needs a restart: kept, and said so.
    write_secret(&secret, NEW);
    let reloaded = text("[maintenance]\nbackground_mib_per_s = 32\n\n[limits]\nobject_bytes_max = 1000\n\n[engine]\nblob_size_bytes = 16777216\n")
        .replace("public_buckets = []", "public_buckets = [\"cdn\"]")
        .replace("node_id = ", "log = \"info,podstore_net=debug\"\nnode_id = ");
    std::fs::write(&node.config, reloaded).expect("write config");
    signal(pid, "HUP");
    eventually("the reload is logged", || node.log_text().contains("configuration reloaded"));
    assert_eq!(put(&token(OLD), "/photos/b", b"two"), 401, "the old secret still works");
    assert_eq!(put(&token(NEW), "/photos/b", b"two"), 201);
    assert_eq!(node.req("GET", "/cdn/nothing-here", &[], b"").status, 404, "cdn is public now");
    assert_eq!(put(&token(NEW), "/photos/big", &[7u8; 2000]), 413);
    eventually("the background budget follows", || budget(&node) == 32 << 20);
    let log = node.log_text();
    let line = log.lines().find(|l| l.contains("configuration reloaded")).expect("line");
    assert!(line.contains("auth") && line.contains("limits") && line.contains("maintenance"), "{line}");
    assert!(line.contains("needs a restart: engine"), "{line}");
    assert_eq!(metric_line(&node, "podstore_config_reloads_total{outcome=\"ok\"}"), 1.0);

    // A file that does not parse: the node keeps serving on what it has, and says why.
    std::fs::write(&node.config, "this is [not toml").expect("write config");
    // (as the unit's ExecReload does it)
    let o = podstore(&["reload".as_ref(), "--pid".as_ref(), pid.to_string().as_ref()]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually("the failed reload is logged", || node.log_text().contains("configuration not reloaded"));
    assert_eq!(put(&token(NEW), "/photos/c", b"three"), 201);
    assert_eq!(put(&token(NEW), "/photos/big", &[7u8; 2000]), 413);
    assert_eq!(metric_line(&node, "podstore_config_reloads_total{outcome=\"failed\"}"), 1.0);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "SIGHUP ended the node");
}

/// RELIABILITY.md's open item: clients that start large PUTs and never send the bodies. The
/// space they reserve is bounded while they wait (beyond `engine.unfilled_percent_max` of a
/// disk: 503 busy), normal writes go on meanwhile, and once they are gone the space is back.
#[test]
fn a_flood_of_abandoned_puts_leaves_the_disks_able_to_take_writes() {
    use std::io::{Read, Write};
    // Three disks of 64 MiB of blob space: at most 16 MiB each reserved and unfilled.
    let node =
        Node::start("abandoned-flood", "[engine]\nblob_size_bytes = 8388608\ndisk_bytes_max = 67108864\n");
    let disks =
        || -> serde_json::Value { serde_json::from_slice(&node.admin("/admin/disks").body).expect("json") };
    let sum = |v: &serde_json::Value, field: &str| -> u64 {
        v["disks"].as_array().expect("disks").iter().map(|d| d[field].as_u64().unwrap_or(0)).sum()
    };
    // 200 PUTs of 1 MiB (200 MiB, more than the disks hold) send 4 KiB of body and stall.
    let mut flood = Vec::new();
    for i in 0..200 {
        let mut s = std::net::TcpStream::connect(node.data).expect("connect");
        s.write_all(
            format!("PUT /photos/flood-{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n")
                .as_bytes(),
        )
        .expect("headers");
        s.write_all(&[0x5a; 4096]).expect("some body");
        flood.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut busy = 0;
    for s in &mut flood {
        s.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        let mut buf = [0u8; 512];
        if let Ok(n) = s.read(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(n == 0 || text.starts_with("HTTP/1.1 503"), "{text}\n{}", disks());
            busy += usize::from(text.contains("\"busy\""));
        }
    }
    assert!(busy > 0, "no PUT was refused while 200 MiB were reserved");
    // Normal writes are served meanwhile.
    let v = vec![7u8; 300_000];
    for i in 0..10 {
        assert_eq!(node.req("PUT", &format!("/photos/during-{i}"), &[], &v).status, 201, "during the flood");
    }
    drop(flood);
    let bound = 3 * (16u64 << 20);
    eventually("the abandoned writes' space is given back", || sum(&disks(), "dead_bytes") <= bound);
    // The disks take normal writes again: 60 MiB of them.
    let mb: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    for i in 0..60 {
        let r = node.req("PUT", &format!("/photos/after-{i}"), &[], &mb);
        assert_eq!(r.status, 201, "write {i} after the flood: {}", String::from_utf8_lossy(&r.body));
    }
    let after = disks();
    eprintln!(
        "abandoned PUTs: {busy} of 200 refused busy; after the flood {} dead bytes, {} used",
        sum(&after, "dead_bytes"),
        sum(&after, "used_bytes")
    );
    assert!(common::metric(&node, "podstore_disk_writes_refused_unfilled_total") >= busy as f64);
}
