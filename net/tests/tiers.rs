//! Tiers (issue 7) on the real binary: with a fast disk, new objects land on it; once it is
//! full they go to the capacity disks; a key held on both tiers answers its newest version (an
//! overwrite or a delete made while the fast tier was full shadows the older copy left on it),
//! and so after a restart.

mod common;

use common::Node;

fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed)).collect()
}

fn tiers(node: &Node) -> serde_json::Value {
    let r = node.admin("/admin/tiers");
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_slice(&r.body).expect("json")
}

/// Every object reads as `want` says: its bytes, or 404 (None).
fn check_all<'a>(node: &Node, want: impl IntoIterator<Item = (&'a String, &'a Option<Vec<u8>>)>) {
    for (path, v) in want {
        let g = node.req("GET", path, &[], b"");
        match v {
            Some(v) => assert!(g.status == 200 && g.body == *v, "{path}: {} or wrong bytes", g.status),
            None => assert_eq!(g.status, 404, "{path}: a deleted object answered"),
        }
    }
}

/// (objects on the fast tier, objects on the capacity tier).
fn objects(node: &Node) -> (u64, u64) {
    let t = tiers(node);
    let of = |name: &str| {
        t["tiers"].as_array().expect("tiers").iter().find(|x| x["tier"] == name).expect("the tier")["objects"]
            .as_u64()
            .expect("objects")
    };
    (of("fast"), of("capacity"))
}

#[test]
fn writes_land_on_the_fast_tier_and_reads_find_the_newest_copy_on_either() {
    // Disk 0 fast, 1 and 2 capacity; 32 MiB of blobs per disk; no RAM cache (reads go to the
    // disks).
    // No migration here (a full fast disk would move objects to the capacity tier).
    let extra =
        "[engine]\nblob_size_bytes = 8388608\ndisk_bytes_max = 33554432\n\n[ram_cache]\nsize_bytes = 0\n\n\
                 [tiering]\nmigrate_interval_s = 86400\n";
    let mut node = Node::start_tiered("tiers", &[0], extra);
    let mut want: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    for i in 0..100u8 {
        let (path, v) = (format!("/tiers/s-{i}"), body(4_000, i));
        assert_eq!(node.req("PUT", &path, &[], &v).status, 201);
        want.push((path, Some(v)));
    }
    assert_eq!(objects(&node), (100, 0), "new objects land on the fast tier");
    let t = tiers(&node);
    assert_eq!(t["tiers"][0]["disks"], serde_json::json!([0]), "{t}");

    // Fill the fast disk: later objects go to the capacity tier.
    for i in 0..36u8 {
        let (path, v) = (format!("/tiers/big-{i}"), body(1 << 20, i));
        let r = node.req("PUT", &path, &[], &v);
        assert_eq!(r.status, 201, "{r:?}");
        want.push((path, Some(v)));
    }
    let (fast, capacity) = objects(&node);
    assert!(fast > 100 && capacity > 0 && fast + capacity == 136, "fast {fast}, capacity {capacity}");
    let disks: serde_json::Value = serde_json::from_slice(&node.admin("/admin/disks").body).expect("json");
    assert_eq!(disks["disks"][0]["takes_writes"], false, "{disks}");

    // Overwrites and a delete made now land on the capacity tier; the older copies left on the
    // fast tier must never answer again.
    for i in [1u8, 5, 9] {
        let v = body(3_000, 200 + i);
        assert_eq!(node.req("PUT", &format!("/tiers/s-{i}"), &[], &v).status, 201);
        want[i as usize].1 = Some(v);
    }
    assert_eq!(node.req("DELETE", "/tiers/s-2", &[], b"").status, 204);
    want[2].1 = None;
    let (fast_now, capacity_now) = objects(&node);
    assert_eq!(fast_now, fast, "the fast tier took nothing more");
    assert!(capacity_now > capacity, "the overwrites went to the capacity tier");

    check_all(&node, want.iter().map(|(p, v)| (p, v)));
    assert!(node.stop().success());
    node.spawn(&[]);
    check_all(&node, want.iter().map(|(p, v)| (p, v)));
}

/// A delete of an object held on the capacity tier is a tombstone on the fast tier: compaction
/// of the fast disk must keep it (dropped, the capacity copy would answer again).
#[test]
fn a_fast_tier_tombstone_outlives_compaction_while_the_capacity_tier_holds_the_object() {
    let extra = "[engine]\nblob_size_bytes = 8388608\n\n[ram_cache]\nsize_bytes = 0\n\n\
                 [maintenance]\ncompact_interval_s = 0\nscrub_period_s = 0\ntombstone_horizon_s = 0\n";
    // Written with every disk of the capacity tier, read again with disk 0 made the fast tier:
    // the objects on disks 1 and 2 are on the capacity tier.
    let mut node = Node::start("tiers-tomb", extra);
    let paths: Vec<String> = (0..60).map(|i| format!("/tiers/t-{i}")).collect();
    for (i, p) in paths.iter().enumerate() {
        assert_eq!(node.req("PUT", p, &[], &body(4_000, i as u8)).status, 201);
    }
    assert!(node.stop().success());
    let text = common::config_text_tiered("test-node", &node.dir, node.data, node.admin, extra, &[0]);
    std::fs::write(&node.config, text).expect("config");
    node.spawn(&[]);
    let (_, capacity) = objects(&node);
    assert!(capacity >= 20, "{capacity} objects on the capacity tier");
    for (i, p) in paths.iter().enumerate() {
        assert!(node.req("GET", p, &[], b"").body == body(4_000, i as u8));
        assert_eq!(node.req("DELETE", p, &[], b"").status, 204);
    }
    // Seal the fast disk's first blob with objects, then overwrite them: it is mostly dead.
    for round in 0..2u8 {
        for i in 0..8 {
            assert_eq!(node.req("PUT", &format!("/tiers/fill-{i}"), &[], &body(1 << 20, round)).status, 201);
        }
    }
    let admin = node.admin.to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_podstore"))
        .args(["compact", "--disk", "0", "--ratio", "0.3", "--admin", &admin])
        .output()
        .expect("podstore compact");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let jobs: serde_json::Value = serde_json::from_slice(&node.admin("/admin/jobs").body).expect("json");
    let d0 = jobs["disks"].as_array().expect("disks").iter().find(|d| d["disk"] == 0).expect("disk 0");
    assert!(d0["compaction"]["blobs_compacted"].as_u64() >= Some(1), "nothing compacted: {d0}");
    assert_eq!(d0["compaction"]["tombstones_dropped"], 0, "{d0}");
    for p in &paths {
        assert_eq!(node.req("GET", p, &[], b"").status, 404, "{p}: a deleted object answered again");
    }
}

/// `podstore migrate` moves the fast disk's sealed blobs' objects to the capacity tier while
/// clients overwrite and delete some of them: every object reads right during and after, the
/// emptied blobs go, and so after a restart.
#[test]
fn migration_moves_objects_to_the_capacity_tier_and_loses_nothing() {
    let extra = "[engine]\nblob_size_bytes = 8388608\n\n[ram_cache]\nsize_bytes = 0\n\n\
                 [maintenance]\ncompact_interval_s = 0\nscrub_period_s = 0\n\n\
                 [tiering]\nmigrate_idle_s = 0\nmigrate_interval_s = 1\n";
    let mut node = Node::start_tiered("tiers-migrate", &[0], extra);
    let mut want: std::collections::BTreeMap<String, Option<Vec<u8>>> = Default::default();
    for i in 0..120u32 {
        let (path, v) = (format!("/tiers/m-{i}"), body(if i % 6 == 0 { 700_000 } else { 30_000 }, i as u8));
        assert_eq!(node.req("PUT", &path, &[], &v).status, 201);
        want.insert(path, Some(v));
    }
    assert_eq!(objects(&node), (120, 0));
    let used_before = disk_used(&node, 0);
    let capacity_syncs = |node: &Node| {
        common::metric(node, "podstore_disk_fdatasyncs_total{disk=\"1\"}")
            + common::metric(node, "podstore_disk_fdatasyncs_total{disk=\"2\"}")
    };
    let syncs_before = capacity_syncs(&node);
    // Overwrites and deletes while the pass runs.
    let (data, admin) = (node.data, node.admin.to_string());
    let writer = std::thread::spawn(move || {
        let mut changed = Vec::new();
        for i in (0..120u32).step_by(7) {
            let path = format!("/tiers/m-{i}");
            let r = if i % 2 == 0 {
                let v = body(20_000, 100 + i as u8);
                let r = common::request(data, "PUT", &path, &[], &v).expect("put");
                (r.status, Some(v))
            } else {
                (common::request(data, "DELETE", &path, &[], b"").expect("delete").status, None)
            };
            assert!(r.0 == 201 || r.0 == 204, "{path}: {}", r.0);
            changed.push((path, r.1));
        }
        changed
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_podstore"))
        .args(["migrate", "--idle-s", "0", "--admin", &admin])
        .output()
        .expect("podstore migrate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (path, v) in writer.join().expect("writer") {
        want.insert(path, v);
    }
    let t = tiers(&node);
    assert!(t["migration"]["migrated_objects"].as_u64() >= Some(60), "{t}");
    assert_eq!(t["migration"]["failures"], 0, "{t}");
    // Written in batches: a sync per batch, not per object.
    let syncs = capacity_syncs(&node) - syncs_before;
    let migrated = t["migration"]["migrated_objects"].as_u64().unwrap_or(0) as f64;
    assert!(
        syncs > 0.0 && syncs * 4.0 <= migrated,
        "{syncs} capacity-tier syncs for {migrated} objects moved"
    );
    let (fast, capacity) = objects(&node);
    assert!(capacity >= 60 && fast < 60, "fast {fast}, capacity {capacity}");
    check_all(&node, &want);
    // `podstore tiers` shows the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_podstore"))
        .args(["tiers", "--admin", &admin])
        .output()
        .expect("podstore tiers");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let row = |tier: &str| -> Vec<String> {
        let line =
            text.lines().find(|l| l.starts_with(&format!("{tier} "))).unwrap_or_else(|| panic!("{text}"));
        line.split_whitespace().map(str::to_string).collect()
    };
    assert_eq!(row("fast")[1..3], ["0".to_string(), fast.to_string()], "{text}");
    assert_eq!(row("capacity")[1..3], ["1,2".to_string(), capacity.to_string()], "{text}");
    assert!(text.contains("migration: idle, ") && text.contains("promotion: "), "{text}");
    // The emptied blobs are removed (compaction, woken by the migration).
    common::eventually("the fast disk's emptied blobs are removed", || disk_used(&node, 0) < used_before);
    assert!(node.stop().success());
    node.spawn(&[]);
    check_all(&node, &want);
}

fn disk_used(node: &Node, id: u64) -> u64 {
    let d: serde_json::Value = serde_json::from_slice(&node.admin("/admin/disks").body).expect("json");
    let disk =
        d["disks"].as_array().expect("disks").iter().find(|x| x["id"] == id).expect("the disk").clone();
    disk["used_bytes"].as_u64().expect("used_bytes")
}

/// An object of the capacity tier read often comes back to the fast tier; a scan that reads
/// every object once promotes nothing.
#[test]
fn hot_capacity_objects_are_promoted_and_a_scan_promotes_nothing() {
    let extra = "[engine]\nblob_size_bytes = 8388608\n\n[ram_cache]\nsize_bytes = 0\n\n\
                 [maintenance]\ncompact_interval_s = 0\nscrub_period_s = 0\n\n\
                 [tiering]\nmigrate_idle_s = 0\npromote_reads = 3\npromote_window_s = 600\n";
    let node = Node::start_tiered("tiers-promote", &[0], extra);
    for i in 0..80u32 {
        assert_eq!(node.req("PUT", &format!("/tiers/p-{i}"), &[], &body(150_000, i as u8)).status, 201);
    }
    let admin = node.admin.to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_podstore"))
        .args(["migrate", "--idle-s", "0", "--admin", &admin])
        .output()
        .expect("podstore migrate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (fast, capacity) = objects(&node);
    assert!(capacity >= 40, "fast {fast}, capacity {capacity}");
    // A scan: every object once.
    for i in 0..80u32 {
        assert!(node.req("GET", &format!("/tiers/p-{i}"), &[], b"").body == body(150_000, i as u8));
    }
    assert_eq!(tiers(&node)["promoted"], 0, "a scan promoted objects");
    // Two objects read three times each (the scan's read counts): they come back.
    for _ in 0..2 {
        for i in [3u32, 7] {
            assert!(node.req("GET", &format!("/tiers/p-{i}"), &[], b"").body == body(150_000, i as u8));
        }
    }
    common::eventually("two objects promoted", || tiers(&node)["promoted"].as_u64() >= Some(2));
    let promoted = tiers(&node)["promoted"].as_u64().expect("promoted");
    assert_eq!(promoted, 2);
    let (fast_after, _) = objects(&node);
    assert_eq!(fast_after, fast + promoted, "the promoted objects are on the fast tier");
    for i in 0..80u32 {
        assert!(node.req("GET", &format!("/tiers/p-{i}"), &[], b"").body == body(150_000, i as u8));
    }
}

/// A fast disk that fills up moves its coldest objects to the capacity tier by itself and takes
/// writes again; nothing is lost.
#[test]
fn a_full_fast_disk_migrates_by_itself_and_takes_writes_again() {
    let extra = "[engine]\nblob_size_bytes = 8388608\ndisk_bytes_max = 33554432\n\n[ram_cache]\nsize_bytes = 0\n\n\
                 [maintenance]\ncompact_interval_s = 1\n\n[tiering]\nmigrate_idle_s = 0\nmigrate_interval_s = 1\n";
    let node = Node::start_tiered("tiers-full", &[0], extra);
    for i in 0..30u8 {
        assert_eq!(node.req("PUT", &format!("/tiers/f-{i}"), &[], &body(1 << 20, i)).status, 201);
    }
    common::eventually("the fast disk moved objects away and takes writes again", || {
        let d: serde_json::Value = serde_json::from_slice(&node.admin("/admin/disks").body).expect("json");
        let moved = tiers(&node)["migration"]["migrated_objects"].as_u64().unwrap_or(0);
        d["disks"][0]["takes_writes"] == true && moved > 0
    });
    for i in 0..30u8 {
        assert!(node.req("GET", &format!("/tiers/f-{i}"), &[], b"").body == body(1 << 20, i), "f-{i}");
    }
    assert_eq!(node.req("PUT", "/tiers/after", &[], b"new").status, 201);
    let (fast, capacity) = objects(&node);
    assert!(capacity > 0 && fast + capacity == 31, "fast {fast}, capacity {capacity}");
}

/// Objects over `tiering.fast_object_size_max_bytes` go straight to the capacity tier; a
/// later small overwrite lands on the fast tier and answers.
#[test]
fn large_objects_go_straight_to_the_capacity_tier() {
    let extra = "[ram_cache]\nsize_bytes = 0\n\n[tiering]\nfast_object_size_max_bytes = 100000\n";
    let node = Node::start_tiered("tiers-large", &[0], extra);
    let (big, small) = (body(200_000, 1), body(50_000, 2));
    assert_eq!(node.req("PUT", "/tiers/big", &[], &big).status, 201);
    assert_eq!(objects(&node), (0, 1), "the large object went to the capacity tier");
    assert_eq!(node.req("PUT", "/tiers/small", &[], &small).status, 201);
    assert_eq!(objects(&node), (1, 1));
    assert!(node.req("GET", "/tiers/big", &[], b"").body == big);
    assert!(node.req("GET", "/tiers/small", &[], b"").body == small);
    let v = body(1_000, 3);
    assert_eq!(node.req("PUT", "/tiers/big", &[], &v).status, 201);
    assert!(node.req("GET", "/tiers/big", &[], b"").body == v, "the newer small copy answers");
    assert_eq!(node.req("DELETE", "/tiers/big", &[], b"").status, 204);
    assert_eq!(node.req("GET", "/tiers/big", &[], b"").status, 404);
}
