//! `podstore-load`: an HTTP/1.1 load generator for PUTs, with keep-alive connections, used to
//! fill podstore and nginx (WebDAV) with the same objects and to stream many large PUTs at
//! once. Prints requests/s, MiB/s and latency percentiles.
//!
//! ```text
//! podstore-load --addr 127.0.0.1:7070 --prefix /bench/o --count 100000 --size 4096 --conns 64 \
//!     [--header 'X-Copies: all'] [--step 2 --first 1] [--seconds 5]
//! ```
//! With `--rate R` the PUTs start at most R a second, all connections together (a steady
//! load beside another benchmark). With `--seconds S` the load stops after S seconds or `count` PUTs, whichever comes first
//! (`puts=` says how many were made: objects `first`, `first + step`, ... in that number).
//! The `n`th PUT writes object `i = first + n * step` (default: 0, 1, 2, ...; `--step 2`
//! overwrites every other object of an earlier load). Object `i` is `{prefix}-{i}`; its bytes depend only on `i` and the size, so two servers
//! loaded with the same arguments hold the same objects.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    addr: SocketAddr,
    prefix: String,
    count: u64,
    size: usize,
    conns: usize,
    /// Extra request headers ("Name: value").
    headers: Vec<String>,
    /// The `n`th PUT writes object `first + n * step`.
    first: u64,
    step: u64,
    /// Stop after this long (or `count` PUTs, whichever comes first).
    seconds: Option<f64>,
    /// PUTs started per second at most.
    rate: Option<f64>,
}

fn parse() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:7070".parse().expect("addr"),
        prefix: "/bench/o".into(),
        count: 1000,
        size: 4096,
        conns: 16,
        headers: Vec::new(),
        first: 0,
        step: 1,
        seconds: None,
        rate: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--addr" => a.addr = v.parse().expect("--addr host:port"),
            "--prefix" => a.prefix = v,
            "--count" => a.count = v.parse().expect("--count"),
            "--size" => a.size = v.parse().expect("--size"),
            "--conns" => a.conns = v.parse().expect("--conns"),
            "--first" => a.first = v.parse().expect("--first"),
            "--seconds" => {
                a.seconds =
                    Some(v.parse().ok().filter(|&s: &f64| s > 0.0).expect("--seconds: a positive number"))
            }
            "--rate" => {
                a.rate = Some(v.parse().ok().filter(|&r: &f64| r > 0.0).expect("--rate: a positive number"))
            }
            "--step" => a.step = v.parse().ok().filter(|&s| s > 0).expect("--step: a positive number"),
            "--header" => {
                assert!(v.contains(':') && !v.contains('\r') && !v.contains('\n'), "--header 'Name: value'");
                a.headers.push(v)
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Bodies larger than this repeat their first block.
const BLOCK_MAX: usize = 4 << 20;

/// Random bytes that object bodies are cut from: generating each body byte by byte would cost
/// the client more CPU than the server spends storing it, on the same machine.
fn pool() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..(2 * BLOCK_MAX) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// The first `size` bytes (at most `BLOCK_MAX`) of object `i`: a slice of the pool chosen by
/// `i`, starting with `i` itself so no two objects are equal.
fn object(pool: &[u8], i: u64, size: usize, out: &mut Vec<u8>) {
    let n = size.min(BLOCK_MAX);
    let off = (i.wrapping_mul(4099) as usize) % BLOCK_MAX;
    out.clear();
    out.extend_from_slice(&pool[off..off + n]);
    let tag = i.to_le_bytes();
    let t = n.min(tag.len());
    out[..t].copy_from_slice(&tag[..t]);
}

fn put(
    conn: &mut Option<(TcpStream, BufReader<TcpStream>)>,
    addr: SocketAddr,
    path: &str,
    body: &[u8],
    total: usize,
    headers: &[String],
) -> std::io::Result<u16> {
    if conn.is_none() {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        let r = BufReader::new(s.try_clone()?);
        *conn = Some((s, r));
    }
    let (s, r) = conn.as_mut().expect("connected");
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let head = format!("PUT {path} HTTP/1.1\r\nHost: bench\r\n{extra}Content-Length: {total}\r\n\r\n");
    s.write_all(head.as_bytes())?;
    // Large bodies are streamed by repeating one block, so many large PUTs at once cost the
    // client little memory.
    let mut left = total;
    while left > 0 {
        let n = left.min(body.len());
        s.write_all(&body[..n])?;
        left -= n;
    }
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut len = 0usize;
    let mut close = false;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let t = h.trim_end();
        if t.is_empty() {
            break;
        }
        let lower = t.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        close |= lower.starts_with("connection:") && lower.contains("close");
    }
    let mut sink = vec![0u8; len];
    r.read_exact(&mut sink)?;
    if close {
        *conn = None;
    }
    if !(200..300).contains(&status) {
        // What the server said, for the failure report.
        let said = String::from_utf8_lossy(&sink[..len.min(300)]).into_owned();
        return Err(std::io::Error::other(format!("HTTP {status}: {said}")));
    }
    Ok(status)
}

fn main() {
    let a = parse();
    let next = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Mutex::new(Vec::with_capacity(a.count as usize)));
    let failures = Arc::new(AtomicU64::new(0));
    let pool = Arc::new(pool());
    let start = Instant::now();
    let threads: Vec<_> = (0..a.conns)
        .map(|_| {
            let (next, lat, failures, prefix, pool, headers) = (
                next.clone(),
                lat.clone(),
                failures.clone(),
                a.prefix.clone(),
                pool.clone(),
                a.headers.clone(),
            );
            let (addr, size, count, first, step) = (a.addr, a.size, a.count, a.first, a.step);
            let deadline = a.seconds.map(|s| start + Duration::from_secs_f64(s));
            let rate = a.rate;
            std::thread::spawn(move || {
                let mut conn = None;
                let mut mine = Vec::new();
                let mut body = Vec::new();
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    if let Some(r) = rate {
                        // The i-th PUT starts no earlier than i / rate seconds in.
                        let at = start + Duration::from_secs_f64(i as f64 / r);
                        if deadline.is_some_and(|d| at >= d) {
                            break;
                        }
                        std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    }
                    let i = first + i * step;
                    object(&pool, i, size, &mut body);
                    let t = Instant::now();
                    match put(&mut conn, addr, &format!("{prefix}-{i}"), &body, size, &headers) {
                        Ok(s) if (200..300).contains(&s) => mine.push(t.elapsed()),
                        r => {
                            // The first few failures say what went wrong; the count says the rest.
                            if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("PUT {prefix}-{i}: {r:?}");
                            }
                            conn = None;
                        }
                    }
                }
                lat.lock().expect("lat").extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker");
    }
    let secs = start.elapsed().as_secs_f64();
    let mut l = lat.lock().expect("lat").clone();
    l.sort();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(Duration::ZERO)
    };
    let ok = l.len() as f64;
    println!(
        "puts={} failures={} seconds={secs:.2} req_per_s={:.0} mib_per_s={:.1} p50_ms={:.2} p99_ms={:.2}",
        l.len(),
        failures.load(Ordering::Relaxed),
        ok / secs,
        ok * a.size as f64 / (1 << 20) as f64 / secs,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    if failures.load(Ordering::Relaxed) > 0 {
        std::process::exit(1);
    }
}
