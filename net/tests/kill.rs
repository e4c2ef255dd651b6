//! SIGKILL under load, through HTTP: writers PUT and DELETE while the node is killed at random
//! moments; after each restart every object that got a 2xx is byte-exact (or replaced by the
//! write that was in flight on its key), deleted ones stay deleted, nothing is ever partial,
//! and the bucket's listing holds exactly the keys that read back, with their sizes. Beside
//! them an S3 writer makes multipart uploads of its own keys (one part, or two with a 5 MiB
//! first) and completes or aborts them: a completed object is whole after any crash (or the
//! one being completed), an aborted one changes nothing, and an upload the kill left open
//! still lists every part it acknowledged, with its ETag.
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

/// Multipart uploads completed, and open ones checked after a restart, over the whole test.
static MP_COMPLETED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static MP_OPEN_CHECKED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The multipart writer's keys start here.
const MP_KEY_BASE: usize = 1000;
const MP_KEYS: usize = 4;

/// The bytes of multipart object `key` version `version`: one part of 100,000 bytes, or (one
/// in four) a 5 MiB part and a last of 30,000.
fn mp_value(key: usize, version: u64) -> Vec<u8> {
    let n = if (key as u64 + version).is_multiple_of(4) { (5 << 20) + 30_000 } else { 100_000 };
    (0..n).map(|i| ((i as u64 * 7) ^ (key as u64 * 977 + version)).wrapping_mul(0x9E37) as u8).collect()
}

/// What a key holds at a version: the HTTP writers' objects or the multipart writer's.
fn body_of(key: usize, version: u64) -> Vec<u8> {
    if key >= MP_KEY_BASE {
        mp_value(key, version)
    } else {
        value(key, version)
    }
}

fn md5_hex(b: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// An upload the multipart writer left open: its object's key, its id, the parts acknowledged
/// (number, ETag), and whether its completion or its abort was on its way.
#[derive(Debug, Clone, Default)]
struct Open {
    key: String,
    id: String,
    parts: Vec<(usize, String)>,
    completing: bool,
    aborting: bool,
}

/// The multipart writer of one round: uploads on its keys, completed or (one in four) aborted,
/// until the node dies; the writes it had acknowledged.
fn multipart_writer(
    s3: std::net::SocketAddr,
    round: u64,
    stop: Arc<AtomicBool>,
    model: Arc<Mutex<Model>>,
    open: Arc<Mutex<Option<Open>>>,
) -> u64 {
    let mut rng = fastrand::Rng::with_seed(round * 7 + 5);
    let mut acked = 0;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = MP_KEY_BASE + rng.usize(0..MP_KEYS);
        let version = round * 1_000_000 + 900_000 + n;
        n += 1;
        let path = format!("/killtest/key-{key}");
        let Ok(r) = request(s3, "POST", &format!("{path}?uploads"), &[], b"") else { return acked };
        if r.status != 200 {
            return acked;
        }
        let doc = String::from_utf8_lossy(&r.body).into_owned();
        let id =
            doc.split("<UploadId>").nth(1).and_then(|x| x.split('<').next()).expect("upload id").to_string();
        *open.lock().expect("open") = Some(Open { key: path.clone(), id: id.clone(), ..Open::default() });
        let body = mp_value(key, version);
        let cut = if body.len() > 5 << 20 { vec![0, 5 << 20, body.len()] } else { vec![0, body.len()] };
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (i, w) in cut.windows(2).enumerate() {
            let part = &body[w[0]..w[1]];
            let Ok(r) = request(s3, "PUT", &format!("{path}?partNumber={}&uploadId={id}", i + 1), &[], part)
            else {
                return acked;
            };
            if r.status != 200 {
                return acked;
            }
            let etag = r.header("etag").expect("an ETag").to_string();
            assert_eq!(etag, format!("\"{}\"", md5_hex(part)), "a part's ETag is its MD5");
            xml.push_str(&format!("<Part><PartNumber>{}</PartNumber><ETag>{etag}</ETag></Part>", i + 1));
            open.lock().expect("open").as_mut().expect("open").parts.push((i + 1, etag));
            acked += 1;
        }
        xml.push_str("</CompleteMultipartUpload>");
        if rng.u32(0..4) == 0 {
            open.lock().expect("open").as_mut().expect("open").aborting = true;
            match request(s3, "DELETE", &format!("{path}?uploadId={id}"), &[], b"") {
                Ok(r) if r.status == 204 => {
                    *open.lock().expect("open") = None;
                    acked += 1;
                }
                _ => return acked,
            }
            continue;
        }
        model.lock().expect("model").entry(key).or_insert((State::Absent, None)).1 =
            Some(State::Version(version));
        open.lock().expect("open").as_mut().expect("open").completing = true;
        match request(s3, "POST", &format!("{path}?uploadId={id}"), &[], xml.as_bytes()) {
            Ok(r) if r.status == 200 => {
                *model.lock().expect("model").get_mut(&key).expect("entry") = (State::Version(version), None);
                *open.lock().expect("open") = None;
                acked += 1;
                MP_COMPLETED.fetch_add(1, Ordering::Relaxed);
            }
            _ => return acked,
        }
    }
    acked
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
    let dir = fresh_dir("kill");
    let (data, admin, s3) = (free_addr(), free_addr(), free_addr());
    let text =
        config_text(&dir, data, admin, "").replacen("[listen]\n", &format!("[listen]\ns3 = \"{s3}\"\n"), 1);
    let mut node = Node::start_with_config(dir, data, admin, text);
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
        let open: Arc<Mutex<Option<Open>>> = Arc::new(Mutex::new(None));
        {
            let (stop, model, open) = (stop.clone(), model.clone(), open.clone());
            threads.push(std::thread::spawn(move || multipart_writer(s3, round, stop, model, open)));
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
                        State::Version(v) if body_of(*key, v) == r.body => Some(v),
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
                present.insert(format!("key-{key}"), body_of(*key, v).len() as u64);
            }
            *acked = seen;
            *in_flight = None;
        }
        drop(m);
        // An upload the kill left open lists every part it acknowledged, with its ETag (unless
        // its completion was on its way and closed it); then it is aborted.
        if let Some(o) = open.lock().expect("open").take() {
            let listed =
                request(s3, "GET", &format!("{}?uploadId={}", o.key, o.id), &[], b"").expect("list parts");
            let text = String::from_utf8_lossy(&listed.body).into_owned();
            if listed.status == 200 {
                for (n, etag) in &o.parts {
                    let want = format!("<PartNumber>{n}</PartNumber>");
                    let at = text.find(&want).unwrap_or_else(|| {
                        panic!("round {round}: acknowledged part {n} of {o:?} is not listed: {text}")
                    });
                    let quoted = etag.replace('"', "&quot;");
                    assert!(text[at..].contains(&quoted), "round {round}: part {n}'s ETag: {text}");
                }
                let a =
                    request(s3, "DELETE", &format!("{}?uploadId={}", o.key, o.id), &[], b"").expect("abort");
                assert_eq!(a.status, 204, "round {round}: the open upload aborts");
                MP_OPEN_CHECKED.fetch_add(1, Ordering::Relaxed);
            } else {
                assert!(text.contains("NoSuchUpload"), "round {round}: {o:?}: {text}");
                assert!(
                    o.completing || o.aborting,
                    "round {round}: an upload neither completed nor aborted is gone: {o:?}"
                );
            }
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
    let (completed, checked) =
        (MP_COMPLETED.load(Ordering::Relaxed), MP_OPEN_CHECKED.load(Ordering::Relaxed));
    println!(
        "multipart: {completed} uploads completed, {checked} left open by a kill and their parts checked"
    );
    assert!(completed >= rounds, "too few multipart uploads completed: {completed}");
    assert!(rounds < 10 || checked > 0, "no kill left an upload open in {rounds} rounds");
    let st = node.stop();
    assert!(st.success());
}
