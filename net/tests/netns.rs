//! The whole system: three appliances, each in its own network namespace as its own
//! datacenter, replicating over a bridge; partitions (both directions and one direction) with
//! nft drop rules, SIGKILL of an appliance under writes, deletes while a peer is away,
//! concurrent overwrites, a flapping link under a bandwidth cap (tc tbf). Every operation goes into a history, and after the network heals the
//! final state of every appliance is checked against it (common/history.rs). Needs root, so
//! it runs only when asked (`cargo test -- --ignored`, which `.ci/run` runs as root).
//!
//! Background anti-entropy runs every 5 s here: an appliance that is wiped (the last phase)
//! loses the writes it had not yet sent, and only a comparison among the others converges
//! them, as it would in production (hourly by default).
//!
//! PODSTORE_NETNS_ROUNDS (default 1) repeats the partition and kill phases.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::history::{converge, op, value_bytes, value_of, Held, History, Op, Outcome};
use common::netns::{setup, Net};
use common::Node;

const NAMES: [&str; 3] = ["dc-a", "dc-b", "dc-c"];
const COPY_TIMEOUT_MS: u64 = 1500;

fn start_node(net: &Net, i: usize, secret: &std::path::Path) -> Node {
    let ip = net.ip(i);
    let mut extra = format!(
        "[limits]\ncopy_timeout_ms = {COPY_TIMEOUT_MS}\n\n[replication]\nlisten = \"{ip}:7071\"\ndatacenter = \"{}\"\nsecret_file = \"{}\"\nconnect_timeout_ms = 500\npeer_idle_ms = 1500\nanti_entropy_interval_s = 5\n\n",
        NAMES[i],
        secret.display()
    );
    for j in (0..net.size).filter(|&j| j != i) {
        extra.push_str(&format!(
            "[[replication.peers]]\nname = \"{}\"\ndatacenter = \"{}\"\naddress = \"{}:7071\"\n\n",
            NAMES[j],
            NAMES[j],
            net.ip(j)
        ));
    }
    let data: SocketAddr = (ip, 7070).into();
    let admin: SocketAddr = (ip, 7072).into();
    // Start inside the namespace: build the node without spawning, then spawn there.
    let dir = std::env::temp_dir().join(format!("podstore-it-netns-{}-{}", NAMES[i], std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for d in 0..3 {
        std::fs::create_dir_all(dir.join(format!("disk{d}"))).expect("mkdir");
    }
    let config = dir.join("podstore.toml");
    std::fs::write(&config, common::config_text_as(NAMES[i], &dir, data, admin, &extra)).expect("config");
    let log = dir.join("node.log");
    let mut n = Node { netns: Some(net.ns(i)), child: None, data, admin, dir, config, log };
    n.spawn(&[]);
    n
}

/// Writers hammering random keys on the given nodes until `stop`.
fn writers(h: &History, nodes: &[Node], on: &[usize], copies: &str, next: &AtomicU64, stop: &AtomicBool) {
    std::thread::scope(|s| {
        for (w, &i) in on.iter().enumerate() {
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(next.load(Ordering::Relaxed) + w as u64);
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("k{}", rng.usize(0..40));
                    let value =
                        if rng.u8(0..10) == 0 { None } else { Some(next.fetch_add(1, Ordering::Relaxed)) };
                    op(h, nodes, i, &key, value, copies);
                }
            });
        }
    });
}

fn run_for(d: Duration, stop: &AtomicBool) {
    std::thread::sleep(d);
    stop.store(true, Ordering::Relaxed);
}

#[test]
#[ignore = "needs root, ip, nft and tc: cargo test -- --ignored (.ci/run runs it as root)"]
fn three_datacenters_survive_partitions_kills_and_races() {
    let net = setup("three_datacenters_survive_partitions_kills_and_races", 3);
    let rounds: usize = std::env::var("PODSTORE_NETNS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let secret = std::env::temp_dir().join(format!("podstore-netns-secret-{}", std::process::id()));
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&secret, "netns-shared-secret-0123456789").expect("secret");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let mut nodes: Vec<Node> = (0..3).map(|i| start_node(&net, i, &secret)).collect();
    let h = History::default();
    let next = AtomicU64::new(1);

    // `all` writes are on every appliance when acknowledged; 5 copies of 3 is a client error.
    for i in 0..9 {
        let id = next.fetch_add(1, Ordering::Relaxed);
        assert_eq!(op(&h, &nodes, i % 3, &format!("all-{i}"), Some(id), "all"), Some(201));
        for n in &nodes {
            let g = n.req("GET", &format!("/photos/all-{i}"), &[], b"");
            assert_eq!(value_of(&g.body), Some(id), "an `all` write missing on {:?}", n.netns);
        }
    }
    assert_eq!(nodes[0].req("PUT", "/photos/five", &[("X-Copies", "5")], b"x").status, 400);

    for round in 0..rounds {
        // A partition in both directions: c is cut off from a and b during writes.
        net.partition(2, 0);
        net.partition(2, 1);
        let t = Instant::now();
        let id = next.fetch_add(1, Ordering::Relaxed);
        let st = op(&h, &nodes, 0, "cut-all", Some(id), "all");
        assert_eq!(st, Some(503), "an `all` write across a partition");
        assert!(t.elapsed() < Duration::from_millis(COPY_TIMEOUT_MS + 3000), "503 took {:?}", t.elapsed());
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| writers(&h, &nodes, &[0, 1, 2], "any", &next, &stop));
            run_for(Duration::from_secs(3), &stop);
        });
        let id = next.fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            op(&h, &nodes, 2, "cut-any", Some(id), "any"),
            Some(201),
            "`any` works on the cut-off side"
        );
        net.heal();

        // One direction only: a can't send to b (b still reaches a).
        net.drop_one_way(0, 1);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| writers(&h, &nodes, &[0, 1], "quorum", &next, &stop));
            run_for(Duration::from_secs(3), &stop);
        });
        net.heal();

        // SIGKILL of an appliance during writes, then a restart.
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            // Writers on the victim too: its in-flight and refused writes are "maybe".
            s.spawn(|| writers(&h, &nodes, &[0, 1, 2], "any", &next, &stop));
            std::thread::sleep(Duration::from_secs(1));
            common::signal(nodes[1].pid(), "KILL");
            run_for(Duration::from_secs(2), &stop);
        });
        nodes[1].kill(); // reap
        nodes[1].spawn(&[]);

        // A delete while a peer is away: it stays deleted everywhere after the peer returns.
        let key = format!("gone-{round}");
        let id = next.fetch_add(1, Ordering::Relaxed);
        assert_eq!(op(&h, &nodes, 0, &key, Some(id), "all"), Some(201));
        nodes[2].kill();
        assert_eq!(op(&h, &nodes, 1, &key, None, "quorum"), Some(204));
        nodes[2].spawn(&[]);

        // Concurrent overwrites of the same keys on two appliances.
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| writers(&h, &nodes, &[0, 1, 0, 1], "any", &next, &stop));
            run_for(Duration::from_secs(2), &stop);
        });

        // A flapping link (c and a cut off from each other and back every 250 ms) while c's
        // outgoing bandwidth is capped (tc tbf, 20 Mbit/s), under writes on every appliance.
        net.cap(2, "20mbit");
        let stop = AtomicBool::new(false);
        let flaps = AtomicU64::new(0);
        std::thread::scope(|s| {
            s.spawn(|| writers(&h, &nodes, &[0, 1, 2], "quorum", &next, &stop));
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    net.partition(2, 0);
                    std::thread::sleep(Duration::from_millis(250));
                    net.heal();
                    std::thread::sleep(Duration::from_millis(250));
                    flaps.fetch_add(1, Ordering::Relaxed);
                }
            });
            run_for(Duration::from_secs(4), &stop);
        });
        net.heal();
        net.uncap(2);
        println!("netns flapping: {} flaps under a 20 Mbit/s cap", flaps.load(Ordering::Relaxed));
    }

    // An emptied appliance (a replaced server) is refilled by `podstore recover`.
    nodes[2].kill();
    for d in 0..3 {
        let p = nodes[2].dir.join(format!("disk{d}"));
        std::fs::remove_dir_all(&p).expect("wipe");
        std::fs::create_dir_all(&p).expect("mkdir");
    }
    nodes[2].spawn(&[]);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &net.ns(2), env!("CARGO_BIN_EXE_podstore"), "recover", "--from", NAMES[0]])
        .args(["--admin", &nodes[2].admin.to_string()])
        .output()
        .expect("podstore recover");
    assert!(out.status.success(), "recover: {}", String::from_utf8_lossy(&out.stderr));
    println!("netns recover: {}", String::from_utf8_lossy(&out.stdout).trim());

    let held = converge(&h, &nodes, Duration::from_secs(90));
    match h.check(&held) {
        Ok(s) => println!(
            "netns history check: {} operations ({} ok, {} maybe, {} refused) over {} keys on 3 appliances: no lost acknowledged write, no resurrection, no divergence",
            s.ops, s.ok, s.maybe, s.failed, s.keys
        ),
        Err(problems) => {
            // The versions each appliance holds for the keys that went wrong.
            for p in &problems {
                let key = p.split(':').next().unwrap_or_default();
                let versions: Vec<String> = nodes
                    .iter()
                    .map(|n| {
                        let r = n.req("HEAD", &format!("/photos/{key}"), &[], b"");
                        format!("{} {}", r.status, r.header("x-podstore-version").unwrap_or("-"))
                    })
                    .collect();
                eprintln!("{key}: {versions:?}");
            }
            for n in &nodes {
                eprintln!("--- {:?}\n{}", n.netns, n.log_text().lines().rev().take(30).collect::<Vec<_>>().join("\n"));
            }
            panic!("history check failed:\n{}", problems.join("\n"));
        }
    }
    for n in nodes.iter_mut() {
        n.kill();
    }
    let _ = std::fs::remove_file(&secret);
}

/// The checker itself: it must fail on a lost acknowledged write, a resurrected delete,
/// divergence and bytes no one wrote.
#[test]
fn the_history_checker_catches_what_it_should() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let h = History::default();
    let w = |key: &str, value: Option<u64>, s: u64, e: u64, outcome| Op {
        node: 0,
        key: key.into(),
        value,
        start: at(s),
        end: at(e),
        outcome,
    };
    h.record(w("a", Some(1), 0, 10, Outcome::Ok));
    h.record(w("a", Some(2), 20, 30, Outcome::Ok));
    h.record(w("b", Some(3), 0, 10, Outcome::Ok));
    h.record(w("b", None, 20, 30, Outcome::Ok));
    h.record(w("c", Some(4), 0, 10, Outcome::Ok));
    h.record(w("c", Some(5), 5, 15, Outcome::Maybe));
    let state =
        |a, b, c| vec![BTreeMap::from([("a".to_string(), a), ("b".to_string(), b), ("c".to_string(), c)]); 3];
    let good = state(Held::Value(2), Held::Absent, Held::Value(5));
    assert!(h.check(&good).is_ok(), "{:?}", h.check(&good).err());
    assert!(
        h.check(&state(Held::Value(2), Held::Absent, Held::Value(4))).is_ok(),
        "either concurrent write may win"
    );
    let lost = state(Held::Value(1), Held::Absent, Held::Value(4));
    assert!(h.check(&lost).expect_err("lost write")[0].contains("a:"));
    let resurrected = state(Held::Value(2), Held::Value(3), Held::Value(4));
    assert!(h.check(&resurrected).expect_err("resurrection")[0].contains("b:"));
    let mut diverged = good.clone();
    diverged[1].insert("c".into(), Held::Value(4));
    assert!(h.check(&diverged).expect_err("divergence")[0].contains("diverge"));
    assert!(h.check(&state(Held::Value(2), Held::Absent, Held::Garbage)).is_err());
    assert_eq!(value_of(&value_bytes(77)), Some(77));
}
