//! Debian's nginx in front of two real appliances of one replica set, with the shipped
//! `deploy/nginx/podstore.conf` (only its upstream addresses and listen port replaced): the
//! data API through nginx, a 1 GiB object streamed both ways, and GETs that keep working when
//! one appliance is killed.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{members, secret_file, start};
use common::{free_addr, request, signal, Resp};

const SHIPPED: &str = include_str!("../../deploy/nginx/podstore.conf");

/// The shipped config with our appliances as upstreams and our listen address.
fn site_config(listen: SocketAddr, upstreams: &[SocketAddr]) -> String {
    let mut out = String::new();
    let mut servers_written = false;
    let mut listen_written = false;
    for line in SHIPPED.lines() {
        if line.contains("# podstore-upstream") {
            if !servers_written {
                for u in upstreams {
                    out.push_str(&format!("    server {u} max_fails=2 fail_timeout=5s;\n"));
                }
                servers_written = true;
            }
        } else if line.contains("# podstore-listen") {
            out.push_str(&format!("    listen {listen};\n"));
            listen_written = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(servers_written && listen_written, "the shipped config's marked lines are gone");
    out
}

struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    /// Stops nginx the way it is meant to be stopped: SIGQUIT to the master (workers finish and
    /// exit, then the master), SIGTERM if that takes more than 5 s, and only then SIGKILL of the
    /// master and of the workers it had (a SIGKILLed master leaves its workers running, still
    /// listening). Returns the processes that were still there at the end (none, normally).
    fn stop(&mut self) -> Vec<i32> {
        let master = self.child.id() as i32;
        let workers = children(master);
        let exited_within = |child: &mut Child, limit: Duration| {
            let t0 = Instant::now();
            while t0.elapsed() < limit {
                if let Ok(Some(_)) = child.try_wait() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        };
        if self.child.try_wait().ok().flatten().is_none() {
            signal(master, "QUIT");
            if !exited_within(&mut self.child, Duration::from_secs(5)) {
                signal(master, "TERM");
                if !exited_within(&mut self.child, Duration::from_secs(5)) {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                }
            }
        }
        let alive = |pid: &i32| Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(*pid);
        let t0 = Instant::now();
        while workers.iter().any(alive) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left: Vec<i32> = workers.into_iter().filter(alive).collect();
        for pid in &left {
            signal(*pid, "KILL");
        }
        left
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The child processes of `pid` (its threads' children lists, procfs).
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut out = Vec::new();
    for t in tasks.filter_map(|t| t.ok()) {
        let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    out
}

fn is_zombie(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"].iter().map(PathBuf::from).find(|p| p.exists())
}

fn start_nginx(bin: &Path, upstreams: &[SocketAddr]) -> Nginx {
    let dir = std::env::temp_dir().join(format!("podstore-nginx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tmp")).expect("mkdir");
    let addr = free_addr();
    std::fs::write(dir.join("podstore.conf"), site_config(addr, upstreams)).expect("site config");
    let d = dir.display();
    let main = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
         fastcgi_temp_path {d}/tmp/fcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
         include {d}/podstore.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).expect("main config");
    let conf = dir.join("nginx.conf");
    let t = Command::new(bin)
        .args(["-t", "-p", &d.to_string(), "-e", &format!("{d}/error.log"), "-c"])
        .arg(&conf)
        .output()
        .expect("nginx -t");
    assert!(t.status.success(), "nginx -t: {}", String::from_utf8_lossy(&t.stderr));
    let child = Command::new(bin)
        .args(["-p", &d.to_string(), "-e", &format!("{d}/error.log"), "-g", "daemon off;", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let n = Nginx { child, addr, dir };
    let t0 = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "nginx did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    n
}

fn header<'a>(r: &'a Resp, name: &str) -> Option<&'a str> {
    r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// A deterministic pseudo-random stream of bytes (never held whole in memory).
struct Pattern(u64);
impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let b = self.0.to_le_bytes();
            c.copy_from_slice(&b[..c.len()]);
        }
    }
}

/// Reads a response head; returns the status and headers.
fn read_head<R: BufRead>(r: &mut R) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        let l = line.trim_end();
        if l.is_empty() {
            return (status, headers);
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
}

/// PUTs `len` pattern bytes, streamed; returns the status, the ETag and the XXH3-128 we sent.
fn put_streamed(addr: SocketAddr, path: &str, len: u64, seed: u64) -> (u16, String, u128) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
    write!(s, "PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\nX-Copies: all\r\n\r\n")
        .expect("head");
    let mut p = Pattern(seed);
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        p.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        s.write_all(&buf[..n]).expect("body");
        left -= n as u64;
    }
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r);
    let etag = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("etag")).map(|(_, v)| v.clone());
    (status, etag.unwrap_or_default(), h.digest128())
}

/// GETs `path`, streamed; returns the status, the length and the XXH3-128 of the body.
fn get_streamed(addr: SocketAddr, path: &str) -> (u16, u64, u128) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").expect("head");
    let mut r = BufReader::new(s);
    let (status, _) = read_head(&mut r);
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).expect("body");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    (status, total, h.digest128())
}

#[test]
#[ignore = "needs nginx (apt-get install nginx): cargo test -- --ignored (.ci/run runs it)"]
fn the_data_api_through_nginx_with_one_appliance_killed() {
    let bin = nginx_binary().expect("nginx is not installed (apt-get install nginx)");
    let m = members(2);
    let secret = secret_file("nginx", "nginx-shared-secret-0123456789");
    let mut nodes = start("nginx", &m, &secret);
    let ngx = start_nginx(&bin, &[m[0].data, m[1].data]);
    let via = |method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        request(ngx.addr, method, path, headers, body).expect("request through nginx")
    };

    // PUT, GET, Range, HEAD, conditional GET, DELETE.
    let v: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    let put = via("PUT", "/photos/through-nginx", &[("X-Copies", "all"), ("Content-Type", "image/jpeg")], &v);
    assert_eq!(put.status, 201);
    assert_eq!(header(&put, "X-Copies-Written"), Some("2"));
    let etag = header(&put, "ETag").expect("etag").to_string();
    let get = via("GET", "/photos/through-nginx", &[], b"");
    assert_eq!((get.status, get.body == v), (200, true));
    assert_eq!(header(&get, "Content-Type"), Some("image/jpeg"));
    assert_eq!(header(&get, "ETag"), Some(etag.as_str()));
    let range = via("GET", "/photos/through-nginx", &[("Range", "bytes=1000-1999")], b"");
    assert_eq!((range.status, range.body.as_slice()), (206, &v[1000..2000]));
    assert_eq!(header(&range, "Content-Range"), Some("bytes 1000-1999/200000"));
    let head = via("HEAD", "/photos/through-nginx", &[], b"");
    assert_eq!((head.status, header(&head, "Content-Length")), (200, Some("200000")));
    assert!(head.body.is_empty());
    assert_eq!(via("GET", "/photos/through-nginx", &[("If-None-Match", &etag)], b"").status, 304);
    assert_eq!(via("DELETE", "/photos/through-nginx", &[("X-Copies", "all")], b"").status, 204);
    assert_eq!(via("GET", "/photos/through-nginx", &[], b"").status, 404);
    assert_eq!(via("GET", "/_/ready", &[], b"").status, 200);

    // A 1 GiB object, streamed in and out (neither nginx nor the client holds it).
    let len = 1u64 << 30;
    let (status, put_etag, sent) = put_streamed(ngx.addr, "/videos/one-gib", len, 42);
    assert_eq!(status, 201);
    let (status, got_len, got) = get_streamed(ngx.addr, "/videos/one-gib");
    assert_eq!((status, got_len), (200, len));
    assert_eq!(got, sent, "the 1 GiB object came back byte for byte");
    let hex: String = sent.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(put_etag, format!("\"{hex}\""), "the ETag is the content's XXH3-128");

    // Objects on both appliances; one is killed; every GET still answers, from the other.
    let mut objects = Vec::new();
    for i in 0..20u32 {
        let b: Vec<u8> = (0..(5_000 + i * 300)).map(|j| (j ^ i) as u8).collect();
        let path = format!("/photos/both-{i}");
        assert_eq!(via("PUT", &path, &[("X-Copies", "all")], &b).status, 201);
        objects.push((path, b));
    }
    nodes[0].kill();
    for round in 0..3 {
        for (path, b) in &objects {
            let g = via("GET", path, &[], b"");
            assert!(g.status == 200 && g.body == *b, "round {round}: GET {path} through nginx: {}", g.status);
        }
    }
    let r = via("GET", "/videos/one-gib", &[("Range", "bytes=0-9")], b"");
    assert_eq!(r.status, 206, "the surviving appliance serves the big object too");
    for n in nodes.iter_mut() {
        n.kill();
    }
    // nginx leaves nothing behind: no worker, nothing listening.
    let mut ngx = ngx;
    let workers = children(ngx.child.id() as i32);
    assert!(!workers.is_empty(), "nginx's workers are its children");
    let left = ngx.stop();
    assert!(left.is_empty(), "nginx workers outlived the master: {left:?}");
    assert!(TcpStream::connect(ngx.addr).is_err(), "something still listens on nginx's port");
}
