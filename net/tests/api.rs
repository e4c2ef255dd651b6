//! The real binary held to API.md, clause by clause: names, objects, ranges, conditional
//! requests, errors, limits, node and admin endpoints.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use md5::Digest;

/// Every response carries Date and Server, and Content-Length unless it is 204 or 304.
fn has_common_headers(r: &Resp) {
    assert!(r.header("date").is_some(), "no Date: {r:?}");
    assert!(r.header("server").is_some_and(|s| s.starts_with("podstore/")), "no Server: {r:?}");
    if r.status != 204 && r.status != 304 {
        assert!(r.header("content-length").is_some(), "no Content-Length: {r:?}");
    }
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed)).collect()
}

#[test]
fn objects_ranges_conditionals_and_names() {
    let node = Node::start("api", "[limits]\nobject_bytes_max = 4194304\n");
    let data = body(100_000, 1);
    let r = node.req("PUT", "/photos/cats/tom.jpg", &[("Content-Type", "image/jpeg")], &data);
    assert_eq!(r.status, 201, "{r:?}");
    let etag = r.header("etag").expect("etag").to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    assert_eq!(r.header("x-copies-written"), Some("1"));
    has_common_headers(&r);

    // GET and HEAD.
    let g = node.req("GET", "/photos/cats/tom.jpg", &[], b"");
    assert_eq!(g.status, 200);
    assert_eq!(g.body, data);
    assert_eq!(g.header("content-type"), Some("image/jpeg"));
    assert_eq!(g.header("content-length"), Some("100000"));
    assert_eq!(g.header("etag"), Some(etag.as_str()));
    assert_eq!(g.header("accept-ranges"), Some("bytes"));
    let lm = g.header("last-modified").expect("last-modified").to_string();
    has_common_headers(&g);
    let h = node.req("HEAD", "/photos/cats/tom.jpg", &[], b"");
    has_common_headers(&h);
    assert_eq!((h.status, h.header("content-length"), h.body.len()), (200, Some("100000"), 0));
    assert_eq!(h.header("etag"), Some(etag.as_str()));

    // Same content, same ETag; other content, other ETag; default content type.
    let r2 = node.req("PUT", "/photos/copy", &[], &data);
    assert_eq!(r2.header("etag"), Some(etag.as_str()));
    assert_eq!(
        node.req("GET", "/photos/copy", &[], b"").header("content-type"),
        Some("application/octet-stream")
    );
    let r3 = node.req("PUT", "/photos/copy", &[], &body(100_000, 2));
    assert_ne!(r3.header("etag"), Some(etag.as_str()));

    // Ranges.
    let p = node.req("GET", "/photos/cats/tom.jpg", &[("Range", "bytes=10-19")], b"");
    assert_eq!((p.status, p.header("content-range")), (206, Some("bytes 10-19/100000")));
    assert_eq!(p.body, &data[10..20]);
    let p = node.req("GET", "/photos/cats/tom.jpg", &[("Range", "bytes=99990-")], b"");
    assert_eq!((p.status, &p.body[..]), (206, &data[99_990..]));
    let p = node.req("GET", "/photos/cats/tom.jpg", &[("Range", "bytes=-5")], b"");
    assert_eq!(
        (p.status, &p.body[..], p.header("content-range")),
        (206, &data[99_995..], Some("bytes 99995-99999/100000"))
    );
    let p = node.req("GET", "/photos/cats/tom.jpg", &[("Range", "bytes=100000-")], b"");
    assert_eq!((p.status, p.header("content-range")), (416, Some("bytes */100000")));
    let p = node.req("GET", "/photos/cats/tom.jpg", &[("Range", "bytes=0-1,5-6")], b"");
    assert_eq!((p.status, p.body.len()), (200, 100_000));
    let p = node.req("GET", "/photos/cats/tom.jpg", &[("Range", "bytes=oops")], b"");
    assert_eq!((p.status, p.body.len()), (200, 100_000));
    let p = node.req("HEAD", "/photos/cats/tom.jpg", &[("Range", "bytes=0-9")], b"");
    assert_eq!((p.status, p.header("content-length"), p.body.len()), (206, Some("10"), 0));

    // Conditional requests.
    for (hname, hval, want) in [
        ("If-None-Match", etag.as_str(), 304),
        ("If-None-Match", "*", 304),
        ("If-None-Match", "\"other\"", 200),
        ("If-Match", "\"other\"", 412),
        ("If-Match", etag.as_str(), 200),
        ("If-Modified-Since", lm.as_str(), 304),
        ("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT", 200),
    ] {
        let c = node.req("GET", "/photos/cats/tom.jpg", &[(hname, hval)], b"");
        assert_eq!(c.status, want, "{hname}: {hval}");
        has_common_headers(&c);
        if want == 304 {
            assert!(c.body.is_empty());
            assert_eq!(c.header("etag"), Some(etag.as_str()));
            assert_eq!(c.header("last-modified"), Some(lm.as_str()));
        }
    }

    // Missing, deleted, and DELETE of nothing.
    let m = node.req("GET", "/photos/nothing-here", &[], b"");
    assert_eq!((m.status, m.json_error()), (404, "not_found".into()));
    assert_eq!(m.header("content-type"), Some("application/json"));
    has_common_headers(&m);
    assert_eq!(node.req("DELETE", "/photos/cats/tom.jpg", &[], b"").status, 204);
    assert_eq!(node.req("GET", "/photos/cats/tom.jpg", &[], b"").status, 404);
    assert_eq!(node.req("DELETE", "/photos/cats/tom.jpg", &[], b"").status, 204);

    // Names: percent-encoding is the same key; bad names are 400 invalid_name.
    assert_eq!(node.req("PUT", "/photos/a%2Fb", &[], b"slash").status, 201);
    assert_eq!(node.req("GET", "/photos/a/b", &[], b"").body, b"slash");
    assert_eq!(node.req("PUT", "/photos/..%2F..%2Fetc%2Fpasswd", &[], b"just a key").status, 201);
    assert_eq!(node.req("GET", "/photos/../../etc/passwd", &[], b"").body, b"just a key");
    let long = format!("/photos/{}", "k".repeat(1025));
    for bad in
        ["/Photos/x", "/ph/x", "/Photos", "/ph/", "/photos/a%00b", "/photos/%FF", long.as_str(), "/-ab/x"]
    {
        let r = node.req("GET", bad, &[], b"");
        assert_eq!((r.status, r.json_error()), (400, "invalid_name".into()), "{bad}");
        let r = node.req("PUT", bad, &[], b"x");
        assert_eq!(r.status, 400, "PUT {bad}");
    }
    // A path without a key is the bucket's listing: GET and HEAD only.
    assert_eq!(node.req("GET", "/photos", &[], b"").status, 200);
    assert_eq!(node.req("GET", "/photos/", &[], b"").status, 200);
    let r = node.req("PUT", "/photos/", &[], b"x");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    // Methods.
    let r = node.req("POST", "/photos/x", &[], b"");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD, PUT, DELETE")));
    assert_eq!(node.req("PUT", "/_/health", &[], b"").status, 405);
    assert_eq!(node.req("GET", "/_/health", &[], b"").body, b"ok\n");
    assert_eq!(node.req("GET", "/_/ready", &[], b"").status, 200);

    // PUT rules: length required, chunked refused, too large before the body, Content-MD5.
    let r =
        request(node.data, "PUT", "/photos/x", &[("Transfer-Encoding", "chunked")], b"3\r\nabc\r\n0\r\n\r\n")
            .expect("req");
    assert_eq!((r.status, r.json_error()), (411, "length_required".into()));
    let r = node.req("PUT", "/photos/big", &[("Content-Length", "4194305")], b"");
    assert_eq!((r.status, r.json_error()), (413, "too_large".into()));
    let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b"checked"));
    assert_eq!(node.req("PUT", "/photos/md5", &[("Content-MD5", &md5)], b"checked").status, 201);
    let r = node.req("PUT", "/photos/md5bad", &[("Content-MD5", &md5)], b"tampered");
    assert_eq!((r.status, r.json_error()), (400, "bad_digest".into()));
    assert_eq!(node.req("GET", "/photos/md5bad", &[], b"").status, 404, "nothing stored after a bad digest");
    let r = node.req("PUT", "/photos/md5bad", &[("Content-MD5", "nonsense")], b"x");
    assert_eq!(r.status, 400);
    assert_eq!(node.req("GET", "/photos/md5bad", &[], b"").status, 404);

    // X-Copies on a single node.
    for ok in ["any", "quorum", "all", "1"] {
        assert_eq!(node.req("PUT", "/photos/copies", &[("X-Copies", ok)], b"c").status, 201, "{ok}");
    }
    for bad in ["2", "0", "many", "-1"] {
        let r = node.req("PUT", "/photos/copies2", &[("X-Copies", bad)], b"c");
        assert_eq!((r.status, r.json_error()), (400, "bad_copies".into()), "{bad}");
        assert_eq!(node.req("DELETE", "/photos/copies", &[("X-Copies", bad)], b"").status, 400);
    }
    assert_eq!(node.req("GET", "/photos/copies2", &[], b"").status, 404);
    assert_eq!(node.req("GET", "/photos/copies", &[], b"").status, 200, "a refused DELETE changed nothing");

    // Empty object.
    assert_eq!(node.req("PUT", "/photos/empty", &[], b"").status, 201);
    let e = node.req("GET", "/photos/empty", &[], b"");
    assert_eq!((e.status, e.header("content-length"), e.body.len()), (200, Some("0"), 0));
}

#[test]
fn limits_and_bad_clients() {
    let node = Node::start(
        "limits",
        "[limits]\nheader_timeout_ms = 1000\nbody_progress_bytes = 65536\nbody_progress_timeout_ms = 1000\nidle_timeout_ms = 1500\n",
    );
    // Too many headers, too large headers: 431, with Server and a JSON body like every error
    // (hyper's own bare answer is completed), also after answers on a kept-alive connection.
    let many: Vec<(String, String)> = (0..120).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let r = node.req("GET", "/photos/x", &many, b"");
    assert_eq!(r.status, 431);
    has_common_headers(&r);
    assert_eq!(r.json_error(), "header_too_large");
    let big = "v".repeat(20_000);
    let r = node.req("GET", "/photos/x", &[("X-Big", &big)], b"");
    assert_eq!(r.status, 431);
    has_common_headers(&r);
    assert_eq!(r.json_error(), "header_too_large");
    // An object whose bytes are exactly such a bare head is served as it is, after a HEAD and
    // a 304 on the same connection; then the same connection's oversized request gets the
    // full 431.
    let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 20:00:00 GMT\r\n\r\n";
    let put = node.req("PUT", "/photos/bare-431", &[], bare);
    assert_eq!(put.status, 201);
    let etag = put.header("etag").expect("etag").to_string();
    let mut s = TcpStream::connect(node.data).expect("connect");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    s.write_all(b"HEAD /photos/bare-431 HTTP/1.1\r\nHost: t\r\n\r\n").expect("write");
    assert_eq!(read_response(&mut r, true).expect("HEAD").status, 200);
    s.write_all(
        format!("GET /photos/bare-431 HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n").as_bytes(),
    )
    .expect("write");
    assert_eq!(read_response(&mut r, false).expect("304").status, 304);
    for _ in 0..3 {
        s.write_all(b"GET /photos/bare-431 HTTP/1.1\r\nHost: t\r\n\r\n").expect("write");
        let g = read_response(&mut r, false).expect("GET");
        assert!(g.status == 200 && g.body == bare, "{g:?}");
    }
    s.write_all(format!("GET /photos/x HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .expect("write");
    let g = read_response(&mut r, false).expect("431");
    assert_eq!(g.status, 431);
    has_common_headers(&g);
    assert_eq!(g.json_error(), "header_too_large");

    // A body shorter than Content-Length, then the client closes: nothing stored.
    let mut s = TcpStream::connect(node.data).expect("connect");
    s.write_all(b"PUT /photos/short HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n").expect("write");
    s.write_all(&[7u8; 5000]).expect("write");
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(node.req("GET", "/photos/short", &[], b"").status, 404);

    // Slow headers (slowloris) and slow bodies are closed by the node; others are served.
    let mut slow = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(node.data).expect("connect");
        if i % 2 == 0 {
            s.write_all(b"GET /photos/x HTTP/1.1\r\nHost: t\r\n").expect("partial headers");
        } else {
            s.write_all(b"PUT /photos/slowbody HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\nabc")
                .expect("partial body");
        }
        slow.push(s);
    }
    let t0 = Instant::now();
    assert_eq!(node.req("PUT", "/photos/fine", &[], b"served").status, 201);
    assert_eq!(node.req("GET", "/photos/fine", &[], b"").body, b"served");
    assert!(t0.elapsed() < Duration::from_secs(5), "a well-behaved client waited {:?}", t0.elapsed());
    std::thread::sleep(Duration::from_millis(2500));
    let mut closed = 0;
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => closed += 1,
            Ok(_) => closed += 1, // an error response, then close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            Err(_) => {}
        }
    }
    assert_eq!(closed, slow.len(), "the node left slow connections open");
    assert_eq!(node.req("GET", "/photos/slowbody", &[], b"").status, 404, "a slow body stored nothing");

    // Idle keep-alive connections are closed after the idle timeout, not the header timeout:
    // one idle longer than the header timeout (1 s) is still served.
    let mut s = TcpStream::connect(node.data).expect("connect");
    s.write_all(b"GET /_/health HTTP/1.1\r\nHost: t\r\n\r\n").expect("write");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    assert_eq!(read_response(&mut r, false).expect("response").status, 200);
    std::thread::sleep(Duration::from_millis(1_250));
    s.write_all(b"GET /_/health HTTP/1.1\r\nHost: t\r\n\r\n").expect("write after an idle wait");
    assert_eq!(read_response(&mut r, false).expect("served after 1.25 s idle").status, 200);
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    let n = r.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected a close");
    assert!(t0.elapsed() < Duration::from_secs(4), "idle connection closed after {:?}", t0.elapsed());
}

#[test]
fn admin_endpoints_and_metrics() {
    let node = Node::start("admin", "");
    assert_eq!(node.req("PUT", "/secret-bucket/secret-key", &[], b"hello").status, 201);
    assert_eq!(node.req("GET", "/secret-bucket/secret-key", &[], b"").status, 200);
    assert_eq!(node.admin("/health").status, 200);
    assert_eq!(node.admin("/ready").status, 200);
    let m = node.admin("/metrics");
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").is_some_and(|c| c.starts_with("text/plain")));
    let text = String::from_utf8(m.body).expect("utf8");
    for want in [
        "podstore_http_requests_total{",
        "podstore_http_request_duration_seconds_bucket{",
        "podstore_disk_objects{",
        "podstore_disk_used_bytes{",
        "podstore_disk_state{",
        "podstore_index_memory_bytes{",
        "podstore_http_open_connections",
        "podstore_recovery_duration_seconds",
        "podstore_http_received_bytes_total",
    ] {
        assert!(text.contains(want), "metrics lack {want}:\n{text}");
    }
    assert!(!text.contains("secret"), "a key or bucket name leaked into metrics");
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        assert!(
            name.starts_with("podstore_") || name.starts_with("process_"),
            "metric {name} is not podstore_*"
        );
    }
    let d = node.admin("/admin/disks");
    let v: serde_json::Value = serde_json::from_slice(&d.body).expect("json");
    let disks = v["disks"].as_array().expect("disks");
    assert_eq!(disks.len(), 3);
    for disk in disks {
        for f in [
            "id",
            "path",
            "tier",
            "state",
            "capacity_bytes",
            "used_bytes",
            "free_bytes",
            "objects",
            "dead_bytes",
            "io_errors",
        ] {
            assert!(!disk[f].is_null(), "disk lacks {f}: {disk}");
        }
        assert_eq!(disk["state"], "online");
    }
    assert_eq!(disks.iter().map(|d| d["objects"].as_u64().unwrap_or(0)).sum::<u64>(), 1);
}

#[test]
fn sigterm_drains_and_a_restart_keeps_everything() {
    let mut node = Node::start("restart", "");
    let mut rng = fastrand::Rng::with_seed(9);
    let mut expect = Vec::new();
    // Thousands of objects: mostly small, some empty, some past the one-read GET size and
    // some spanning several write buffers.
    const OBJECTS: usize = 3000;
    for i in 0..OBJECTS {
        let n = match i % 50 {
            0 => rng.usize(2_500_000..4_500_000),
            1..=3 => rng.usize(200_000..1_500_000),
            4 => 0,
            _ => rng.usize(1..20_000),
        };
        let v = body(n, i as u8);
        assert_eq!(node.req("PUT", &format!("/restart/obj-{i}"), &[], &v).status, 201);
        expect.push(Some(v));
    }
    for i in (0..OBJECTS).step_by(7) {
        assert_eq!(node.req("DELETE", &format!("/restart/obj-{i}"), &[], b"").status, 204);
        expect[i] = None;
    }
    // A fake NOTIFY_SOCKET sees the systemd protocol across a restart.
    let sock_path = node.dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let st = node.stop();
    assert!(st.success(), "exit status after SIGTERM: {st:?}\n{}", node.log_text());
    node.spawn(&[("NOTIFY_SOCKET", sock_path.to_str().expect("utf8"))]);
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    for (i, want) in expect.iter().enumerate() {
        let r = node.req("GET", &format!("/restart/obj-{i}"), &[], b"");
        match want {
            Some(v) => {
                assert!(r.status == 200 && &r.body == v, "obj-{i}: {} ({} bytes)", r.status, r.body.len())
            }
            None => assert_eq!(r.status, 404, "obj-{i} came back after its delete"),
        }
    }
    let st = node.stop();
    assert!(st.success());
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
}

#[test]
fn watchdog_pings_while_cores_turn() {
    let mut node = Node::start("watchdog", "");
    let sock_path = node.dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    assert!(node.stop().success());
    // WATCHDOG_USEC=400ms: the node must ping at least every 200 ms once ready.
    node.spawn(&[("NOTIFY_SOCKET", sock_path.to_str().expect("utf8")), ("WATCHDOG_USEC", "400000")]);
    let mut buf = [0u8; 512];
    let mut ready = false;
    let mut pings = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        let n = sock.recv(&mut buf).expect("a notification");
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        ready |= msg.contains("READY=1");
        if msg.contains("WATCHDOG=1") {
            assert!(ready, "a watchdog ping came before READY=1");
            pings += 1;
        }
    }
    assert!(pings >= 5, "only {pings} watchdog pings in 3 s");
    assert!(node.stop().success());
}

#[test]
fn connection_limit_refuses_new_connections_and_keeps_old_ones() {
    let node = Node::start("connlimit", "[limits]\nconnections_max = 20\n");
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(node.data).expect("connect");
        s.write_all(b"GET /_/health HTTP/1.1\r\nHost: t\r\n\r\n").expect("write");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        assert_eq!(read_response(&mut r, false).expect("response").status, 200);
        held.push((s, r));
    }
    // The 21st is accepted and closed at once.
    let extra = request(node.data, "GET", "/_/health", &[], b"");
    assert!(extra.is_err(), "the 21st connection was served: {extra:?}");
    // The held ones keep working.
    for (s, r) in held.iter_mut().take(5) {
        s.write_all(b"GET /_/health HTTP/1.1\r\nHost: t\r\n\r\n").expect("write");
        assert_eq!(read_response(r, false).expect("response").status, 200);
    }
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(node.req("GET", "/_/health", &[], b"").status, 200, "room again after closing");
}

#[test]
fn malformed_requests_get_an_error_or_a_close_and_change_nothing() {
    let node = Node::start("malformed", "");
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /photos/x HTTP/9.9\r\n\r\n",
        b"PUT /photos/x HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"PUT /photos/x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"GET /photos/x HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(node.data).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let _ = s.write_all(raw);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            out.is_empty() || text.starts_with("HTTP/1.1 4"),
            "{:?} got {text:?}",
            String::from_utf8_lossy(raw)
        );
    }
    assert_eq!(node.req("GET", "/photos/x", &[], b"").status, 404, "a malformed request stored something");
    assert_eq!(node.req("GET", "/_/health", &[], b"").status, 200);
}

#[test]
fn a_full_node_answers_507_and_still_deletes() {
    // Three disks of at most two 8 MiB blobs each.
    let node = Node::start("full", "[engine]\nblob_size_bytes = 8388608\ndisk_bytes_max = 16777216\n");
    // Pieces small enough to sit in the socket buffer whole, so the early 507 is always read.
    let piece = vec![5u8; 256 << 10];
    let mut stored = Vec::new();
    for i in 0..400 {
        let path = format!("/full/o{i}");
        let r = node.req("PUT", &path, &[], &piece);
        match r.status {
            201 => stored.push(path),
            507 => {
                assert_eq!(r.json_error(), "insufficient_storage");
                break;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!(!stored.is_empty() && stored.len() < 400, "stored {} objects", stored.len());
    // Fill every disk, then deletes still work and stay deleted.
    for i in 400..800 {
        let _ = request(node.data, "PUT", &format!("/full/o{i}"), &[], &piece);
    }
    for p in &stored {
        assert_eq!(node.req("DELETE", p, &[], b"").status, 204, "delete {p} on a full node");
        assert_eq!(node.req("GET", p, &[], b"").status, 404);
    }
}
