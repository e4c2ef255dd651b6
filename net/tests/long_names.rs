//! The longest names API.md allows (a 63-byte bucket, keys of 1024 bytes of UTF-8, multibyte
//! included) round trip through PUT, GET, HEAD and DELETE, replication, compaction, migration
//! between tiers, a restart's recovery and `podstore recover`; a 1025-byte key is refused.

mod common;

use std::process::Command;

use common::cluster::{members, repl_config, secret_file};
use common::{config_text_tiered, fresh_dir, Node};

fn percent_encode(key: &str) -> String {
    key.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed)).collect()
}

/// Keys of exactly 1024 bytes, in 1-, 2-, 3- and 4-byte UTF-8, and a few shorter ones.
fn keys() -> Vec<String> {
    let mut k = vec![
        "k".repeat(1024),
        "ж".repeat(512),
        format!("{}a", "€".repeat(341)),
        "😀".repeat(256),
        format!("dir/{}/{}", "ü".repeat(200), "x".repeat(619)),
    ];
    for (i, key) in k.clone().iter().enumerate() {
        assert_eq!(key.len(), 1024, "key {i}");
    }
    k.push("a".into());
    k.push("ключ/short".into());
    k
}

fn podstore(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_podstore")).args(args).output().expect("run podstore");
    assert!(
        out.status.success(),
        "podstore {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check(node: &Node, want: &[(String, Option<Vec<u8>>)], when: &str) {
    for (path, v) in want {
        let g = node.req("GET", path, &[], b"");
        match v {
            Some(v) => {
                assert!(g.status == 200 && g.body == *v, "{when}: GET {:.60}…: {}", path, g.status);
                let h = node.req("HEAD", path, &[], b"");
                assert_eq!(h.status, 200, "{when}: HEAD");
                assert_eq!(h.header("content-length"), Some(v.len().to_string().as_str()));
            }
            None => assert_eq!(g.status, 404, "{when}: {:.60}… was deleted", path),
        }
    }
}

fn objects(node: &Node, tier: Option<&str>) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&node.admin("/admin/disks").body).expect("json");
    v["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .filter(|d| tier.is_none_or(|t| d["tier"] == t))
        .map(|d| d["objects"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn the_longest_names_round_trip_through_every_path() {
    let m = members(2);
    let secret = secret_file("longnames", "long-names-shared-secret-0123456789");
    // 1 MiB blobs: the writes fill and seal a few, which migration moves.
    let extra = "[engine]\nblob_size_bytes = 1048576\n\n[ram_cache]\nsize_bytes = 0\n\n[maintenance]\ncompact_interval_s = 0\nscrub_period_s = 0\n\n\
                 [tiering]\nmigrate_idle_s = 0\nmigrate_interval_s = 3600\n";
    let start = |i: usize| {
        let (me, peer) = (&m[i], &m[1 - i]);
        let dir = fresh_dir(&format!("longnames-{}", me.name));
        let text = config_text_tiered(
            &me.name,
            &dir,
            me.data,
            me.admin,
            &format!("{extra}\n{}", repl_config(me, &[peer], &secret)),
            &[0],
        );
        Node::start_with_config(dir, me.data, me.admin, text)
    };
    let mut a = start(0);
    let mut b = start(1);

    let bucket = format!("b{}z", "0123456789.-".repeat(6).get(..61).expect("61 bytes"));
    assert_eq!(bucket.len(), 63);
    let mut want: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    for (i, key) in keys().iter().enumerate() {
        for (j, bkt) in [bucket.as_str(), "abc"].into_iter().enumerate() {
            let path = format!("/{bkt}/{}", percent_encode(key));
            let v = body(100_000 + i * 5000 + j, (i * 2 + j) as u8);
            let r = a.req("PUT", &path, &[("X-Copies", "all")], &v);
            assert_eq!(r.status, 201, "PUT {:.60}…: {}", path, String::from_utf8_lossy(&r.body));
            want.push((path, Some(v)));
        }
    }
    // One byte more is refused, as API.md says, and nothing is stored.
    let too_long = format!("/{bucket}/{}", "k".repeat(1025));
    let r = a.req("PUT", &too_long, &[], b"x");
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("invalid_name"));
    // Overwrites and deletes leave dead records for compaction, and travel to the peer.
    for n in [0, 3, 6] {
        let v = body(777 + n, 99);
        assert_eq!(a.req("PUT", &want[n].0, &[("X-Copies", "all")], &v).status, 201);
        want[n].1 = Some(v);
    }
    for n in [1, 8] {
        assert_eq!(a.req("DELETE", &want[n].0, &[("X-Copies", "all")], b"").status, 204);
        want[n].1 = None;
    }
    check(&a, &want, "written");
    check(&b, &want, "replicated");

    let admin = a.admin.to_string();
    podstore(&["compact", "--ratio", "0", "--admin", &admin]);
    check(&a, &want, "after compaction");
    let on_fast = objects(&a, Some("fast"));
    assert!(on_fast > 0, "the fast tier took the writes");
    podstore(&["migrate", "--idle-s", "0", "--admin", &admin]);
    assert!(objects(&a, Some("capacity")) > 0, "migration moved objects");
    check(&a, &want, "after migration");
    a.kill();
    a.spawn(&[]);
    check(&a, &want, "after a restart (recovery from the blobs and checkpoints)");

    // B loses its disks and is refilled from A by anti-entropy.
    b.kill();
    for d in 0..3 {
        let p = b.dir.join(format!("disk{d}"));
        std::fs::remove_dir_all(&p).expect("wipe");
        std::fs::create_dir_all(&p).expect("mkdir");
    }
    b.spawn(&[]);
    let out = podstore(&["recover", "--from", "pod-a", "--admin", &b.admin.to_string()]);
    assert!(out.contains("recovered from pod-a"), "{out}");
    let live = want.iter().filter(|w| w.1.is_some()).count() as u64;
    assert_eq!(objects(&b, None), live, "every live object came over: {out}");
    check(&b, &want, "after podstore recover");
}
