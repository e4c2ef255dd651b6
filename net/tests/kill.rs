//! SIGKILL under load, through HTTP: writers PUT and DELETE while the node is killed at random
//! moments; after each restart every object that got a 2xx is byte-exact (or replaced by the
//! write that was in flight on its key), deleted ones stay deleted, nothing is ever partial,
//! and the bucket's listing holds exactly the keys that read back, with their sizes.
//!
//! Rounds: `PODSTORE_HTTP_KILL_ROUNDS` (default 4; `.ci/run` asks for 200: the crash campaign of
//! RELIABILITY.md). The time from restart to ready is recorded.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

fn value(key: usize, version: u64) -> Vec<u8> {
    let n = match (key as u64 + version) % 6 {
        0 => 0,
        1 => 600_000,
        _ => ((key as u64 * 7919 + version * 31) % 40_000) as usize,
    };
    (0..n).map(|i| (i as u64 ^ (key as u64 * 131 + version)).wrapping_mul(0x9E37) as u8).collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Absent,
    Version(u64),
}

/// Per key: the last acknowledged state, and the write in flight (if any).
type Model = HashMap<usize, (State, Option<State>)>;

/// Every key of `bucket` with its size, from its listing in pages of `limit`.
fn list_sizes(node: &Node, bucket: &str, limit: usize) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let mut token = String::new();
    loop {
        let r = node.req("GET", &format!("/{bucket}?limit={limit}{token}"), &[], b"");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        for o in v["objects"].as_array().expect("objects") {
            let key = o["key"].as_str().expect("key").to_string();
            assert!(out.insert(key, o["size"].as_u64().expect("size")).is_none(), "a key listed twice");
        }
        match v["next"].as_str() {
            Some(t) => token = format!("&token={t}"),
            None => return out,
        }
    }
}

#[test]
fn sigkill_under_http_load_loses_no_acknowledged_object() {
    let rounds: u64 =
        std::env::var("PODSTORE_HTTP_KILL_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let mut node = Node::start("kill", "");
    const WRITERS: usize = 6;
    const KEYS_PER_WRITER: usize = 12;
    let model: Arc<Mutex<Model>> = Arc::new(Mutex::new(HashMap::new()));
    let mut rng = fastrand::Rng::with_seed(0xBEEF);
    let mut acked_total = 0u64;
    let (mut ready_sum, mut ready_max) = (Duration::ZERO, Duration::ZERO);
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for w in 0..WRITERS {
            let (stop, model, addr) = (stop.clone(), model.clone(), node.data);
            threads.push(std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(round * 100 + w as u64);
                let mut acked = 0u64;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = w * KEYS_PER_WRITER + rng.usize(0..KEYS_PER_WRITER);
                    let version = round * 1_000_000 + w as u64 * 10_000 + n;
                    n += 1;
                    let target = if rng.u32(0..8) == 0 { State::Absent } else { State::Version(version) };
                    model.lock().expect("model").entry(key).or_insert((State::Absent, None)).1 = Some(target);
                    let path = format!("/killtest/key-{key}");
                    let r = match target {
                        State::Absent => request(addr, "DELETE", &path, &[], b""),
                        State::Version(v) => request(addr, "PUT", &path, &[], &value(key, v)),
                    };
                    match r {
                        Ok(resp) if resp.status == 201 || resp.status == 204 => {
                            let mut m = model.lock().expect("model");
                            let e = m.get_mut(&key).expect("entry");
                            *e = (target, None);
                            acked += 1;
                        }
                        // The node died under the request: the write stays "in flight".
                        _ => return acked,
                    }
                }
                acked
            }));
        }
        std::thread::sleep(Duration::from_millis(rng.u64(100..500)));
        node.kill();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            acked_total += t.join().expect("writer");
        }
        let restarted = std::time::Instant::now();
        node.spawn(&[]);
        let ready_in = restarted.elapsed();
        ready_max = ready_max.max(ready_in);
        ready_sum += ready_in;
        let mut m = model.lock().expect("model");
        let mut present: std::collections::BTreeMap<String, u64> = Default::default();
        for (key, (acked, in_flight)) in m.iter_mut() {
            let r = node.req("GET", &format!("/killtest/key-{key}"), &[], b"");
            let seen = match r.status {
                404 => State::Absent,
                200 => {
                    let v = [Some(*acked), *in_flight].into_iter().flatten().find_map(|s| match s {
                        State::Version(v) if value(*key, v) == r.body => Some(v),
                        _ => None,
                    });
                    match v {
                        Some(v) => State::Version(v),
                        None => panic!(
                            "round {round}: key-{key} holds {} bytes that are neither the acknowledged {acked:?} nor the in-flight {in_flight:?}",
                            r.body.len()
                        ),
                    }
                }
                s => panic!("round {round}: key-{key}: status {s}"),
            };
            assert!(
                seen == *acked || Some(seen) == *in_flight,
                "round {round}: key-{key} is {seen:?}; acknowledged {acked:?}, in flight {in_flight:?}"
            );
            if let State::Version(v) = seen {
                present.insert(format!("key-{key}"), value(*key, v).len() as u64);
            }
            *acked = seen;
            *in_flight = None;
        }
        // The listing after the restart: exactly the keys that read back, with their sizes.
        let limit = rng.usize(1..40);
        assert_eq!(
            list_sizes(&node, "killtest", limit),
            present,
            "round {round}: listing (pages of {limit})"
        );
    }
    println!(
        "http kill test: {rounds} SIGKILL rounds, {acked_total} acknowledged writes; every key checked after each restart; \
         restart to ready {:.0} ms on average, {:.0} ms at most",
        ready_sum.as_secs_f64() * 1e3 / rounds as f64,
        ready_max.as_secs_f64() * 1e3
    );
    assert!(acked_total > rounds * 10, "too few writes acknowledged: {acked_total}");
    let st = node.stop();
    assert!(st.success());
}
