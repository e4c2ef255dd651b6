//! A writer process killed with SIGKILL at random moments, many rounds; after each kill the
//! shard is recovered and every acknowledged object is verified byte-exact.
//!
//! The test binary runs itself as the writer: the same test, started with the
//! `PODSTORE_CRASH_CHILD` variable, is the writer instead of the checker (so no second test
//! exists that would pass, doing nothing, in every normal run). The writer prints `B key version op` before an operation
//! and `A key version` after it was acknowledged; the parent kills it after a random delay and
//! checks, for every key, that what the shard holds is the last acknowledged value, or one of
//! the writes that were in flight after it: never anything else, never a part.
//!
//! Rounds: `PODSTORE_CRASH_ROUNDS` (default 12; `.ci/run` asks for 200).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use podstore_disks::{probe_direct_io, CacheMode, Uring, UringConfig};
use podstore_engine::{Shard, ShardConfig};

const KEYS: u64 = 40;

fn cfg() -> ShardConfig {
    ShardConfig {
        blob_size_bytes: 2 << 20,
        object_size_max_bytes: 16 << 20,
        tombstone_reserve_bytes: 64 << 10,
        ..ShardConfig::default()
    }
}

fn value(key: u64, version: u64) -> Vec<u8> {
    let n = match (key * 31 + version) % 9 {
        0 => 0,
        1 => 1_500_000,
        2 => 300_000,
        _ => ((key * 7919 + version * 104_729) % 30_000) as usize,
    };
    let seed = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version;
    (0..n).map(|i| (seed.rotate_left((i % 61) as u32) as u8) ^ (i as u8)).collect()
}

fn runtime<F: std::future::Future<Output = ()>>(dir: &Path, f: impl FnOnce(Uring) -> F) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    let cache = if probe_direct_io(dir).is_ok() { CacheMode::Direct } else { CacheMode::Buffered };
    local.block_on(&rt, async move {
        let (io, driver) =
            Uring::new(UringConfig { cache, pool_buf_count: 8, ..UringConfig::default() }).expect("io_uring");
        tokio::task::spawn_local(driver.run());
        f(io).await;
    });
}

/// The writer: runs until killed.
fn writer(dir: std::ffi::OsString) {
    let round: u64 = std::env::var("PODSTORE_CRASH_ROUND").ok().and_then(|v| v.parse().ok()).expect("round");
    let dir = PathBuf::from(dir);
    runtime(&dir.clone(), |io| async move {
        let (shard, _) = Shard::open(io, cfg(), &dir, 1).await.expect("child open");
        let out = std::rc::Rc::new(std::cell::RefCell::new(std::io::stdout()));
        // The test harness has printed "test <name> ... " without a newline: end it.
        out.borrow_mut().write_all(b"\n").expect("stdout");
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let (shard, out) = (shard.clone(), out.clone());
            tasks.push(tokio::task::spawn_local(async move {
                let mut rng = fastrand::Rng::with_seed(round * 100 + w);
                for n in 0.. {
                    let key = rng.u64(0..KEYS);
                    let version = round * 1_000_000 + w * 100_000 + n;
                    let delete = rng.u32(0..10) == 0;
                    let line = format!("B {key} {version} {}\n", if delete { 'D' } else { 'P' });
                    out.borrow_mut().write_all(line.as_bytes()).expect("stdout");
                    let k = format!("key-{key}");
                    let ok = if delete {
                        shard.delete(k.as_bytes()).await.is_ok()
                    } else {
                        shard.put_bytes(k.as_bytes(), "", &value(key, version)).await.is_ok()
                    };
                    assert!(ok, "write failed in the child");
                    {
                        let mut o = out.borrow_mut();
                        o.write_all(format!("A {key} {version}\n").as_bytes()).expect("stdout");
                        o.flush().expect("flush");
                    }
                    if rng.u32(0..50) == 0 {
                        shard.checkpoint().await.expect("checkpoint");
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
    });
}

#[derive(Default, Clone)]
struct KeyLog {
    /// Last acknowledged version (None: never written; Some((v, deleted))).
    acked: Option<(u64, bool)>,
    /// Begun and not acknowledged: version → deleted.
    pending: HashMap<u64, bool>,
}

#[test]
fn sigkill_during_writes_loses_no_acknowledged_object() {
    if let Some(dir) = std::env::var_os("PODSTORE_CRASH_CHILD") {
        writer(dir);
        unreachable!("the writer runs until it is killed");
    }
    let rounds: u64 = std::env::var("PODSTORE_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let dir = std::env::temp_dir().join(format!("podstore-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = fastrand::Rng::with_seed(0xC4A5);
    let mut log: HashMap<u64, KeyLog> = HashMap::new();
    let (mut acks, mut verified, mut recovery_ms_max) = (0u64, 0u64, 0u64);
    for round in 1..=rounds {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "sigkill_during_writes_loses_no_acknowledged_object",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PODSTORE_CRASH_CHILD", &dir)
            .env("PODSTORE_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            // Only whole lines count: the kill may cut the last one short.
            let mut lines = Vec::new();
            let mut r = BufReader::new(stdout);
            loop {
                let mut l = String::new();
                match r.read_line(&mut l) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if l.ends_with('\n') => lines.push(l.trim_end().to_string()),
                    Ok(_) => break,
                }
            }
            lines
        });
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(rng.u64(30..400)));
        // SAFETY: kill(2) on the pid of our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().expect("wait");
        assert!(
            status.code().is_none(),
            "the writer exited by itself: {status:?} after {:?}",
            started.elapsed()
        );
        for l in reader.join().expect("reader") {
            let f: Vec<&str> = l.split(' ').collect();
            match f.as_slice() {
                ["B", k, v, op] => {
                    let e = log.entry(k.parse().expect("key")).or_default();
                    e.pending.insert(v.parse().expect("version"), *op == "D");
                }
                ["A", k, v] => {
                    let e = log.entry(k.parse().expect("key")).or_default();
                    let v: u64 = v.parse().expect("version");
                    let Some(del) = e.pending.remove(&v) else {
                        panic!("acknowledged without a begin: {l:?} pending {:?}", e.pending)
                    };
                    e.acked = Some((v, del));
                    acks += 1;
                }
                _ => {}
            }
        }
        // Recover in this process and check every key.
        let snapshot = log.clone();
        let mut outcome: HashMap<u64, Option<u64>> = HashMap::new();
        let t0 = Instant::now();
        let d = dir.clone();
        let mut rec_ms = 0;
        runtime(&d.clone(), |io| async {
            let (shard, report) = Shard::open(io, cfg(), &d, 1).await.expect("recover");
            rec_ms = t0.elapsed().as_millis() as u64;
            assert!(
                shard.quarantined().is_empty(),
                "round {round}: quarantine after SIGKILL: {:?}",
                shard.quarantined()
            );
            let _ = report;
            for (key, kl) in &snapshot {
                let got = match shard.get(format!("key-{key}").as_bytes()).await.expect("get") {
                    Some(mut r) => Some(r.read_all().await.expect("read")),
                    None => None,
                };
                let mut candidates: Vec<(Option<u64>, bool)> =
                    vec![(kl.acked.map(|a| a.0), kl.acked.is_none_or(|a| a.1))];
                candidates.extend(kl.pending.iter().map(|(v, d)| (Some(*v), *d)));
                let hit = candidates.iter().find(|(v, deleted)| match (&got, v) {
                    (None, _) => *deleted,
                    (Some(b), Some(v)) => !*deleted && *b == value(*key, *v),
                    (Some(_), None) => false,
                });
                let Some(&(v, _)) = hit else {
                    panic!(
                        "round {round}: key-{key} holds {:?} bytes, which is neither the acknowledged version {:?} nor an in-flight one {:?}",
                        got.as_ref().map(|b| b.len()),
                        kl.acked,
                        kl.pending
                    );
                };
                outcome.insert(*key, v);
                verified += 1;
            }
        });
        recovery_ms_max = recovery_ms_max.max(rec_ms);
        // What recovery settled on is now the acknowledged state.
        for (key, v) in outcome {
            let e = log.get_mut(&key).expect("logged");
            let deleted = match v {
                Some(v) if Some(v) == e.acked.map(|a| a.0) => e.acked.is_some_and(|a| a.1),
                Some(v) => e.pending.get(&v).copied().unwrap_or(true),
                None => true,
            };
            e.acked = v.map(|v| (v, deleted)).or(e.acked);
            e.pending.clear();
        }
    }
    println!("crash test: {rounds} SIGKILL rounds, {acks} acknowledged writes, {verified} key checks, slowest recovery {recovery_ms_max} ms");
    assert!(acks > rounds, "the writer acknowledged almost nothing: {acks} writes in {rounds} rounds");
    let _ = std::fs::remove_dir_all(&dir);
}
