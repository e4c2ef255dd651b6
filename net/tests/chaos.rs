//! Network faults between appliances (issue 8): three appliances on loopback, every
//! replication connection through a chaos proxy of ours that delays, cuts, duplicates,
//! reorders and corrupts the bytes it forwards. Writers on every appliance PUT and DELETE with
//! `X-Copies` any, quorum and all; every operation goes into the history (common/history.rs).
//! Then the proxies heal, the appliances catch up, and the checker finds no lost acknowledged
//! write, no resurrection, no divergence, and no bytes anyone did not write (a corrupted copy
//! accepted would show as garbage or divergence).
//!
//! `PODSTORE_CHAOS_SECONDS` (default 8) sets how long the faults last.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{members, repl_config, secret_file, Member};
use common::history::{converge, op, History};
use common::Node;

/// What the proxies did.
#[derive(Default)]
struct Chaos {
    on: AtomicBool,
    chunks: AtomicU64,
    delayed: AtomicU64,
    corrupted: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    cut: AtomicU64,
}

/// Forwards `from` to `to`, doing harm while `chaos.on`.
fn pump(mut from: TcpStream, mut to: TcpStream, chaos: Arc<Chaos>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut buf = vec![0u8; 16 << 10];
    let mut held: Option<Vec<u8>> = None;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = buf[..n].to_vec();
        chaos.chunks.fetch_add(1, Ordering::Relaxed);
        let mut out: Vec<Vec<u8>> = Vec::new();
        if chaos.on.load(Ordering::Relaxed) {
            match rng.u32(0..1000) {
                0..=4 => {
                    chaos.cut.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                5..=14 => {
                    let bit = rng.usize(0..chunk.len() * 8);
                    chunk[bit / 8] ^= 1 << (bit % 8);
                    chaos.corrupted.fetch_add(1, Ordering::Relaxed);
                }
                15..=24 => {
                    out.push(chunk.clone());
                    chaos.duplicated.fetch_add(1, Ordering::Relaxed);
                }
                25..=34 if held.is_none() => {
                    // Sent after the next chunk.
                    held = Some(chunk);
                    chaos.reordered.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                35..=134 => {
                    std::thread::sleep(Duration::from_millis(rng.u64(1..40)));
                    chaos.delayed.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        out.push(chunk);
        out.extend(held.take());
        if out.iter().any(|c| to.write_all(c).is_err()) {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// A proxy on a free loopback port forwarding every connection to `target`.
fn proxy(target: SocketAddr, chaos: Arc<Chaos>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for (i, c) in l.incoming().enumerate() {
            let Ok(client) = c else { continue };
            let Ok(server) = TcpStream::connect(target) else { continue };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (c2, s2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
            let (ch1, ch2) = (chaos.clone(), chaos.clone());
            std::thread::spawn(move || pump(client, server, ch1, i as u64 * 2));
            std::thread::spawn(move || pump(s2, c2, ch2, i as u64 * 2 + 1));
        }
    });
    addr
}

#[test]
fn appliances_converge_through_a_network_that_delays_cuts_duplicates_reorders_and_corrupts() {
    let seconds: u64 = std::env::var("PODSTORE_CHAOS_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let m = members(3);
    let secret = secret_file("chaos", "chaos-test-shared-secret-0123456789");
    let chaos = Arc::new(Chaos::default());
    // Every appliance reaches peer p through p's proxy.
    let proxied: Vec<Member> = m
        .iter()
        .map(|p| Member {
            name: p.name.clone(),
            data: p.data,
            admin: p.admin,
            repl: proxy(p.repl, chaos.clone()),
        })
        .collect();
    let mut nodes: Vec<Node> = m
        .iter()
        .map(|me| {
            let peers: Vec<&Member> = proxied.iter().filter(|p| p.name != me.name).collect();
            Node::start_on(
                &format!("chaos-{}", me.name),
                &me.name,
                me.data,
                me.admin,
                &repl_config(me, &peers, &secret),
            )
        })
        .collect();

    let h = History::default();
    let next = AtomicU64::new(1);
    let stop = AtomicBool::new(false);
    chaos.on.store(true, Ordering::Relaxed);
    std::thread::scope(|s| {
        for w in 0..6usize {
            let (h, nodes, next, stop) = (&h, &nodes, &next, &stop);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(w as u64);
                let copies = ["any", "quorum", "all"][w % 3];
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("k{}", rng.usize(0..30));
                    let value =
                        if rng.u8(0..8) == 0 { None } else { Some(next.fetch_add(1, Ordering::Relaxed)) };
                    op(h, nodes, w % 3, &key, value, copies);
                }
            });
        }
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    chaos.on.store(false, Ordering::Relaxed);
    let healed = Instant::now();
    let held = converge(&h, &nodes, Duration::from_secs(90));
    let converged_in = healed.elapsed();
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    match h.check(&held) {
        Ok(s) => println!(
            "chaos history check: {} operations ({} ok, {} maybe, {} refused) over {} keys on 3 appliances through \
             proxies that forwarded {} chunks: {} delayed, {} corrupted, {} duplicated, {} reordered, {} connections cut; \
             converged {:.1} s after healing: no lost acknowledged write, no resurrection, no divergence, no garbage",
            s.ops,
            s.ok,
            s.maybe,
            s.failed,
            s.keys,
            c(&chaos.chunks),
            c(&chaos.delayed),
            c(&chaos.corrupted),
            c(&chaos.duplicated),
            c(&chaos.reordered),
            c(&chaos.cut),
            converged_in.as_secs_f64()
        ),
        Err(problems) => {
            for n in &nodes {
                eprintln!("--- {}\n{}", n.data, n.log_text().lines().rev().take(30).collect::<Vec<_>>().join("\n"));
            }
            panic!("history check failed:\n{}", problems.join("\n"));
        }
    }
    assert!(c(&chaos.corrupted) > 0 && c(&chaos.cut) > 0, "the proxies did no harm");
    for n in nodes.iter_mut() {
        n.kill();
    }
    let _ = std::fs::remove_file(&secret);
}
