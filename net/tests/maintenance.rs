//! Disk maintenance on the real binary: compaction and scrub started from the CLI and the admin
//! API, what they reclaim and find, metrics, a restart; and the repair of a record the scrub
//! found damaged, from a peer, with no client asking for it.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::cluster::{members, secret_file, start_with};
use common::{eventually, metric, Node};

/// On demand only: the tests start the passes.
const MAINTENANCE: &str = "[engine]\nblob_size_bytes = 1048576\n\n[maintenance]\ncompact_interval_s = 0\nscrub_period_s = 0\nrepair_interval_s = 1\n";

fn podstore(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podstore")).args(args).output().expect("run podstore")
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

fn value(i: usize, gen: usize) -> Vec<u8> {
    (0..20_000 + i).map(|j| (j * 7 + i * 13 + gen * 101) as u8).collect()
}

fn blob_files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for d in 0..3 {
        for e in std::fs::read_dir(dir.join(format!("disk{d}"))).expect("disk dir").flatten() {
            if e.file_name().to_string_lossy().starts_with("blob-") {
                v.push(e.path());
            }
        }
    }
    v
}

/// Flips a byte of object data 500 bytes past the only place the key is stored; returns the
/// file. (The node reads with O_DIRECT: the test's write is synced first.)
fn damage(dir: &Path, key: &str) -> PathBuf {
    let mut hits = Vec::new();
    for f in blob_files(dir) {
        let bytes = std::fs::read(&f).expect("read blob");
        let k = key.as_bytes();
        let mut at = 0;
        while let Some(p) = bytes[at..].windows(k.len()).position(|w| w == k) {
            hits.push((f.clone(), (at + p) as u64, bytes[at + p + k.len() + 500]));
            at += p + 1;
        }
    }
    assert_eq!(hits.len(), 1, "{key} is stored once: {hits:?}");
    let (f, pos, old) = hits.pop().expect("one");
    let mut file = std::fs::OpenOptions::new().write(true).open(&f).expect("open blob");
    file.seek(SeekFrom::Start(pos + key.len() as u64 + 500)).expect("seek");
    file.write_all(&[old ^ 0x20]).expect("write");
    file.sync_all().expect("sync");
    f
}

#[test]
fn compaction_and_scrub_from_the_cli_reclaim_space_and_find_damage() {
    let mut node = Node::start("maint", MAINTENANCE);
    let admin = node.admin.to_string();
    let n = 240;
    let mut want: Vec<Option<Vec<u8>>> = Vec::new();
    for i in 0..n {
        let r = node.req("PUT", &format!("/photos/p{i:04}"), &[], &value(i, 0));
        assert_eq!(r.status, 201);
        want.push(Some(value(i, 0)));
    }
    for i in (0..n).filter(|i| i % 4 != 0) {
        let r = node.req("PUT", &format!("/photos/p{i:04}"), &[], &value(i, 1));
        assert_eq!(r.status, 201);
        want[i] = Some(value(i, 1));
    }
    for i in (0..n).filter(|i| i % 8 == 2) {
        assert_eq!(node.req("DELETE", &format!("/photos/p{i:04}"), &[], b"").status, 204);
        want[i] = None;
    }
    let files_before = blob_files(&node.dir).len();
    let dead_before = metric(&node, "podstore_disk_dead_bytes{");
    assert!(dead_before > 3e6, "dead bytes to reclaim: {dead_before}");

    let out = ok(&podstore(&["compact", "--admin", &admin]));
    assert_eq!(out.matches("blobs compacted").count(), 3, "{out}");
    let files_after = blob_files(&node.dir).len();
    assert!(files_after < files_before, "{files_before} -> {files_after} blob files");
    let reclaimed = metric(&node, "podstore_disk_reclaimed_bytes_total{");
    assert!(reclaimed >= 3.0 * 1048576.0, "reclaimed {reclaimed}");
    assert!(metric(&node, "podstore_disk_dead_bytes{") < dead_before / 2.0);
    assert!(metric(&node, "podstore_disk_background_bytes_total{") > 0.0);
    let check = |node: &Node| {
        for (i, w) in want.iter().enumerate() {
            let r = node.req("GET", &format!("/photos/p{i:04}"), &[], b"");
            match w {
                Some(v) => assert!(r.status == 200 && r.body == *v, "p{i:04}: {}", r.status),
                None => assert_eq!(r.status, 404, "p{i:04} was deleted"),
            }
        }
    };
    check(&node);
    // Pause and resume answer, and a bad action is refused with a message.
    ok(&podstore(&["compact", "--pause", "--admin", &admin]));
    let jobs = String::from_utf8(node.admin("/admin/jobs").body).expect("utf8");
    assert!(jobs.contains("\"paused\":true"), "{jobs}");
    ok(&podstore(&["compact", "--resume", "--admin", &admin]));
    let bad = podstore(&["compact", "--disk", "9", "--admin", &admin]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("no disk"));

    // A restart finds the same objects.
    assert!(node.stop().success());
    node.spawn(&[]);
    check(&node);

    // Scrub: damage one never-overwritten object on disk; a pass finds it, the key is
    // quarantined (503: no peer to repair it from), everything else still reads.
    let victim = "photos/p0004";
    damage(&node.dir, victim);
    let out = ok(&podstore(&["scrub", "--admin", &admin]));
    assert!(out.contains("1 damaged records"), "{out}");
    assert_eq!(metric(&node, "podstore_disk_scrub_damaged_total{"), 1.0);
    assert_eq!(metric(&node, "podstore_disk_quarantined{"), 1.0);
    assert!(metric(&node, "podstore_disk_scrub_last_pass_end_timestamp_seconds{") > 1.7e9);
    assert_eq!(metric(&node, "podstore_disk_scrub_passes_total{"), 3.0, "one pass on each disk");
    assert_eq!(node.req("GET", &format!("/{victim}"), &[], b"").status, 503);
    want[4] = None;
    for (i, w) in want.iter().enumerate() {
        if let Some(v) = w {
            let r = node.req("GET", &format!("/photos/p{i:04}"), &[], b"");
            assert!(r.status == 200 && r.body == *v, "p{i:04}");
        }
    }
    // The scrub's place survives a restart (a full pass ended: nothing in progress).
    assert!(node.stop().success());
    node.spawn(&[]);
    assert_eq!(metric(&node, "podstore_disk_scrub_passes_total{"), 3.0, "passes are kept on disk");
}

#[test]
fn a_record_the_scrub_finds_damaged_is_repaired_from_a_peer_with_no_client_asking() {
    let m = members(2);
    let secret = secret_file("maint-repair", "a-shared-secret-of-enough-length");
    let nodes = start_with("maint-repair", &m, &secret, MAINTENANCE);
    let (a, b) = (&nodes[0], &nodes[1]);
    let v = value(7, 0);
    let r = a.req("PUT", "/photos/precious", &[("X-Copies", "all")], &v);
    assert_eq!(r.status, 201);
    damage(&a.dir, "photos/precious");
    let scrub = a.connect(a.admin).and_then(|s| common::request_on(s, "POST", "/admin/scrub", &[], b""));
    assert_eq!(scrub.expect("scrub").status, 202);
    eventually("the scrub quarantines the damaged record", || {
        metric(a, "podstore_disk_scrub_damaged_total{") == 1.0
    });
    // The repair loop asks the peer, which sends its copy back: no GET involved.
    eventually("the repair loop restores it from the peer", || {
        metric(a, "podstore_disk_quarantined{") == 0.0
    });
    assert!(metric(a, "podstore_repairs_total{outcome=\"repaired\"") >= 1.0);
    assert_eq!(metric(a, "podstore_repl_read_repairs_total"), 0.0, "no read repair was needed");
    let g = a.req("GET", "/photos/precious", &[], b"");
    assert!(g.status == 200 && g.body == v);
    assert_eq!(b.req("GET", "/photos/precious", &[], b"").body, v);
}

fn json(node: &Node, path: &str) -> serde_json::Value {
    serde_json::from_slice(&node.admin(path).body).expect("json")
}

#[test]
fn a_full_disk_sends_writes_to_the_others_and_507_comes_only_when_every_disk_is_full() {
    // 3 disks of at most 4 blobs of 1 MiB each.
    let extra = MAINTENANCE.replace("[maintenance]", "disk_bytes_max = 4194304\n\n[maintenance]");
    let mut node = Node::start("maint-full", &extra);
    let admin = node.admin.to_string();
    let mut stored = Vec::new();
    let mut refused = 0;
    let mut run_of_507 = 0;
    let mut i = 0;
    while run_of_507 < 25 {
        assert!(i < 1000, "the node never filled up");
        let r = node.req("PUT", &format!("/photos/f{i:05}"), &[], &value(i, 0));
        match r.status {
            201 => {
                stored.push(i);
                run_of_507 = 0;
            }
            507 => {
                refused += 1;
                run_of_507 += 1;
            }
            s => panic!("PUT f{i:05}: {s} {}", String::from_utf8_lossy(&r.body)),
        }
        i += 1;
    }
    // A disk that filled between two looks may have refused a write or two; no more.
    assert!(refused - 25 <= 3, "{} writes refused before the node was full", refused - 25);
    // About 2.4 MiB of objects fit each disk (4 MiB, less a blob kept for compaction, the
    // tombstone reserve and the last eighth of a blob): 20 KB objects take 5 blocks.
    assert!(stored.len() >= 140, "only {} objects stored", stored.len());
    let disks = json(&node, "/admin/disks");
    for d in disks["disks"].as_array().expect("disks") {
        assert_eq!(d["takes_writes"], false, "{d}");
        assert_eq!(d["spilled"], true, "{d}");
    }
    assert_eq!(metric(&node, "podstore_disk_takes_writes{"), 0.0);
    for &i in &stored {
        let r = node.req("GET", &format!("/photos/f{i:05}"), &[], b"");
        assert!(r.status == 200 && r.body == value(i, 0), "f{i:05}: {}", r.status);
    }
    // Deletes still work on a full node, and compaction frees the space again.
    let gone: Vec<usize> = stored.iter().copied().filter(|i| i % 2 == 0).collect();
    for &i in &gone {
        assert_eq!(node.req("DELETE", &format!("/photos/f{i:05}"), &[], b"").status, 204, "f{i:05}");
    }
    ok(&podstore(&["compact", "--admin", &admin]));
    eventually("disks take writes again after compaction", || {
        metric(&node, "podstore_disk_takes_writes{") >= 1.0
    });
    let r = node.req("PUT", "/photos/after-compaction", &[], &value(1, 9));
    assert_eq!(r.status, 201);
    // Keys written past their full home move back to it now that it takes writes.
    eventually("spilled keys move back home", || metric(&node, "podstore_disk_moved_away_total{") > 0.0);
    // Everything reads the same after a restart (the spilled marks are on the disks).
    assert!(node.stop().success());
    node.spawn(&[]);
    for &i in &stored {
        let r = node.req("GET", &format!("/photos/f{i:05}"), &[], b"");
        if gone.contains(&i) {
            assert_eq!(r.status, 404, "f{i:05} was deleted");
        } else {
            assert!(r.status == 200 && r.body == value(i, 0), "f{i:05}: {}", r.status);
        }
    }
    assert_eq!(node.req("GET", "/photos/after-compaction", &[], b"").body, value(1, 9));
}

#[test]
fn a_disk_missing_at_start_neither_stops_the_node_nor_serves_stale_data_when_it_returns() {
    let mut node = Node::start("maint-missing", MAINTENANCE);
    let n = 90;
    for i in 0..n {
        assert_eq!(node.req("PUT", &format!("/photos/m{i:03}"), &[], &value(i, 0)).status, 201);
    }
    assert!(node.stop().success());
    // Disk 1 goes missing (a file where its directory was: it fails its checks).
    let d1 = node.dir.join("disk1");
    let away = node.dir.join("disk1.away");
    std::fs::rename(&d1, &away).expect("move disk1");
    std::fs::write(&d1, b"not a disk").expect("placeholder");
    node.spawn(&[]);
    let disks = json(&node, "/admin/disks");
    let one =
        disks["disks"].as_array().expect("disks").iter().find(|d| d["id"] == 1).cloned().expect("disk 1");
    assert_eq!(one["state"], "failed", "{one}");
    // Every key takes a new value, those of disk 1 included (they go on along their chains);
    // some are deleted.
    for i in 0..n {
        let r = node.req("PUT", &format!("/photos/m{i:03}"), &[], &value(i, 1));
        assert_eq!(r.status, 201, "m{i:03}: {}", String::from_utf8_lossy(&r.body));
    }
    for i in (0..n).step_by(9) {
        assert_eq!(node.req("DELETE", &format!("/photos/m{i:03}"), &[], b"").status, 204);
    }
    let check = |node: &Node, when: &str| {
        for i in 0..n {
            let r = node.req("GET", &format!("/photos/m{i:03}"), &[], b"");
            if i % 9 == 0 {
                assert_eq!(r.status, 404, "m{i:03} {when}");
            } else {
                assert!(r.status == 200 && r.body == value(i, 1), "m{i:03} {when}: {} (stale?)", r.status);
            }
        }
    };
    check(&node, "while disk 1 is missing");
    // Disk 1 comes back with its old data: no GET may see it.
    assert!(node.stop().success());
    std::fs::remove_file(&d1).expect("remove placeholder");
    std::fs::rename(&away, &d1).expect("restore disk1");
    node.spawn(&[]);
    let disks = json(&node, "/admin/disks");
    let one =
        disks["disks"].as_array().expect("disks").iter().find(|d| d["id"] == 1).cloned().expect("disk 1");
    assert_eq!((one["state"].as_str(), one["spilled"].as_bool()), (Some("online"), Some(true)), "{one}");
    check(&node, "after disk 1 returned with old data");
}

fn disk(node: &Node, id: u64) -> serde_json::Value {
    json(node, "/admin/disks")["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .find(|d| d["id"] == id)
        .cloned()
        .expect("disk")
}

#[test]
fn a_drained_disk_ends_empty_with_every_object_readable_and_takes_no_more_writes() {
    let mut node = Node::start("maint-drain", MAINTENANCE);
    let admin = node.admin.to_string();
    let n = 150;
    for i in 0..n {
        assert_eq!(node.req("PUT", &format!("/photos/r{i:03}"), &[], &value(i, 0)).status, 201);
    }
    for i in (0..n).step_by(10) {
        assert_eq!(node.req("DELETE", &format!("/photos/r{i:03}"), &[], b"").status, 204);
    }
    let on_disk1 = disk(&node, 1)["objects"].as_u64().expect("objects");
    assert!(on_disk1 > 20, "{on_disk1} objects on disk 1");
    let out = ok(&podstore(&["drain", "--disk", "1", "--admin", &admin]));
    assert!(out.contains("safe to pull"), "{out}");
    let d1 = disk(&node, 1);
    assert_eq!(
        (d1["state"].as_str(), d1["objects"].as_u64(), d1["takes_writes"].as_bool()),
        (Some("drained"), Some(0), Some(false)),
        "{d1}"
    );
    assert!(metric(&node, "podstore_disk_moved_away_total{disk=\"1\"}") >= on_disk1 as f64);
    let check = |node: &Node| {
        for i in 0..n {
            let r = node.req("GET", &format!("/photos/r{i:03}"), &[], b"");
            if i % 10 == 0 {
                assert_eq!(r.status, 404, "r{i:03} was deleted");
            } else {
                assert!(r.status == 200 && r.body == value(i, 0), "r{i:03}: {}", r.status);
            }
        }
    };
    check(&node);
    for i in 0..40 {
        assert_eq!(node.req("PUT", &format!("/photos/new{i}"), &[], &value(i, 3)).status, 201);
    }
    assert_eq!(disk(&node, 1)["objects"], 0, "a drained disk takes no new objects");
    // Still drained after a restart, everything readable.
    assert!(node.stop().success());
    node.spawn(&[]);
    assert_eq!(disk(&node, 1)["state"], "drained");
    check(&node);
    for i in 0..40 {
        assert_eq!(node.req("GET", &format!("/photos/new{i}"), &[], b"").body, value(i, 3));
    }
    let bad = podstore(&["drain", "--disk", "7", "--admin", &admin]);
    assert!(!bad.status.success());
}

#[test]
fn a_hot_added_disk_receives_its_share_and_every_object_reads_throughout() {
    let mut node = Node::start("maint-add", MAINTENANCE);
    let admin = node.admin.to_string();
    let n = 400;
    for i in 0..n {
        assert_eq!(node.req("PUT", &format!("/photos/h{i:03}"), &[], &value(i, 0)).status, 201);
    }
    for i in (0..n).step_by(10) {
        assert_eq!(node.req("DELETE", &format!("/photos/h{i:03}"), &[], b"").status, 204);
    }
    // gen[i]: the value key i holds (None: deleted).
    let mut gen: Vec<Option<usize>> = (0..n).map(|i| (i % 10 != 0).then_some(0)).collect();
    let new_dir = node.dir.join("disk3");
    std::fs::create_dir_all(&new_dir).expect("mkdir disk3");
    let dir = new_dir.to_str().expect("utf-8");
    // Refused: an id in use, a path in use, a directory that does not exist, bad values.
    for args in [
        vec!["--id", "1", "--path", dir],
        vec!["--id", "3", "--path", node.dir.join("disk0").to_str().expect("utf-8")],
        vec!["--id", "3", "--path", "/nonexistent/podstore-disk"],
        vec!["--id", "3", "--path", dir, "--weight", "-1"],
        vec!["--id", "3", "--path", dir, "--tier", "warm"],
    ] {
        let mut a = vec!["add-disk", "--no-wait", "--any-directory", "--admin", &admin];
        a.extend(args.iter().copied());
        let o = podstore(&a);
        assert!(!o.status.success(), "{args:?} was accepted");
    }
    assert_eq!(json(&node, "/admin/disks")["disks"].as_array().expect("disks").len(), 3);
    // The disk joins while clients read every object and overwrite some.
    let mut add = Command::new(env!("CARGO_BIN_EXE_podstore"))
        .args(["add-disk", "--id", "3", "--path", dir, "--weight", "1", "--any-directory", "--admin", &admin])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("add-disk");
    let check = |node: &Node, gen: &[Option<usize>], when: &str| {
        for (i, g) in gen.iter().enumerate() {
            let r = node.req("GET", &format!("/photos/h{i:03}"), &[], b"");
            match g {
                None => assert_eq!(r.status, 404, "h{i:03} was deleted ({when})"),
                Some(g) => assert!(r.status == 200 && r.body == value(i, *g), "h{i:03} {when}: {}", r.status),
            }
        }
    };
    let mut rounds = 0;
    let status = loop {
        if let Some(st) = add.try_wait().expect("wait") {
            break st;
        }
        assert!(rounds < 600, "the move never ended\n{}", node.log_text());
        let i = (rounds * 37) % n;
        assert_eq!(node.req("PUT", &format!("/photos/h{i:03}"), &[], &value(i, rounds + 1)).status, 201);
        gen[i] = Some(rounds + 1);
        check(&node, &gen, "during the move");
        rounds += 1;
    };
    let mut out = String::new();
    std::io::Read::read_to_string(add.stdout.as_mut().expect("stdout"), &mut out).expect("read");
    assert!(status.success() && out.contains("holds its share"), "{status:?} {out}\n{}", node.log_text());
    check(&node, &gen, "after the move");
    let live = gen.iter().filter(|g| g.is_some()).count() as u64;
    let per_disk = |node: &Node| -> Vec<u64> {
        let v = json(node, "/admin/disks");
        v["disks"]
            .as_array()
            .expect("disks")
            .iter()
            .map(|d| d["objects"].as_u64().expect("objects"))
            .collect()
    };
    let counts = per_disk(&node);
    eprintln!("objects per disk after the move: {counts:?}; {rounds} rounds of reads during it");
    assert_eq!(counts.len(), 4);
    assert_eq!(counts.iter().sum::<u64>(), live, "every object once, none left behind twice: {counts:?}");
    assert!(
        (live * 15 / 100..=live * 35 / 100).contains(&counts[3]),
        "the new disk's share of {live} objects (weights 1:1:1:1): {counts:?}"
    );
    let d3 = disk(&node, 3);
    assert_eq!((d3["state"].as_str(), d3["spilled"].as_bool()), (Some("online"), Some(false)), "{d3}");
    assert!(metric(&node, "podstore_disk_moved_away_total{") > 0.0);
    // Writes of its keys go to it; it is opened at every start though the configuration file
    // does not name it.
    for i in 0..40 {
        assert_eq!(node.req("PUT", &format!("/photos/later{i}"), &[], &value(i, 7)).status, 201);
    }
    assert!(disk(&node, 3)["objects"].as_u64().expect("objects") > counts[3], "new keys land on it");
    assert!(node.stop().success());
    node.spawn(&[]);
    assert_eq!(disk(&node, 3)["state"], "online");
    check(&node, &gen, "after a restart");
    for i in 0..40 {
        assert_eq!(node.req("GET", &format!("/photos/later{i}"), &[], b"").body, value(i, 7));
    }
}

#[test]
fn a_disk_lost_at_start_is_rebuilt_from_a_peer_and_its_objects_still_read() {
    let m = members(2);
    let secret = secret_file("maint-rebuild", "a-shared-secret-of-enough-length");
    let mut nodes = start_with("maint-rebuild", &m, &secret, MAINTENANCE);
    let n = 60;
    for i in 0..n {
        let r = nodes[0].req("PUT", &format!("/photos/b{i:03}"), &[("X-Copies", "all")], &value(i, 0));
        assert_eq!(r.status, 201);
    }
    let a = &mut nodes[0];
    let on_disk1 = disk(a, 1)["objects"].as_u64().expect("objects");
    assert!(on_disk1 > 5, "{on_disk1} objects on disk 1");
    assert!(a.stop().success());
    // Disk 1 of pod-a is lost (replaced by something that is not a disk).
    let d1 = a.dir.join("disk1");
    std::fs::remove_dir_all(&d1).expect("remove disk1");
    std::fs::write(&d1, b"not a disk").expect("placeholder");
    a.spawn(&[]);
    assert_eq!(disk(a, 1)["state"], "failed");
    // The pass started at once copies the lost objects back from pod-b onto the other disks.
    eventually("an anti-entropy pass rebuilds the lost objects", || {
        let peers = json(a, "/admin/peers");
        let ae = &peers["peers"][0]["anti_entropy"];
        ae["passes"].as_u64().unwrap_or(0) >= 1 && ae["running"] == false
    });
    let peers = json(a, "/admin/peers");
    assert!(peers["peers"][0]["anti_entropy"]["pulled"].as_u64().unwrap_or(0) >= on_disk1, "{peers}");
    let repairs_before = metric(a, "podstore_repl_read_repairs_total");
    for i in 0..n {
        let r = a.req("GET", &format!("/photos/b{i:03}"), &[], b"");
        assert!(r.status == 200 && r.body == value(i, 0), "b{i:03}: {}", r.status);
    }
    assert_eq!(
        metric(a, "podstore_repl_read_repairs_total"),
        repairs_before,
        "served from the rebuilt copies"
    );
}

#[test]
fn background_budgets_shrink_while_the_foreground_is_busy_and_come_back_after() {
    // Busy from 100 object requests a second per core: a few client threads reach it.
    let extra =
        MAINTENANCE.replace("[maintenance]", "[maintenance]\nbusy_ops_per_s = 100\nbusy_share = 0.25");
    let node = Node::start("maint-yield", &extra);
    for i in 0..40 {
        assert_eq!(node.req("PUT", &format!("/photos/y{i:03}"), &[], &value(i, 0)).status, 201);
    }
    let full = 64.0 * 1048576.0;
    let rate = |node: &Node| metric(node, "podstore_disk_background_budget_bytes_per_second{");
    assert_eq!(rate(&node), 3.0 * full, "three disks at their whole budget while quiet");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|t| {
            let (stop, data) = (stop.clone(), node.data);
            std::thread::spawn(move || {
                let mut i = t;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = common::request(data, "GET", &format!("/photos/y{:03}", i % 40), &[], b"");
                    assert_eq!(r.map(|r| r.status).ok(), Some(200));
                    i += 4;
                }
            })
        })
        .collect();
    eventually("the budgets drop to a quarter under load", || rate(&node) == 3.0 * full * 0.25);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in load {
        t.join().expect("load thread");
    }
    eventually("the budgets come back once the load stops", || rate(&node) == 3.0 * full);
}
