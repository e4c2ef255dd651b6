//! S3 PUTs received side by side: each body's MD5 (its ETag, and the record's stored digest)
//! is hashed beside the others its thread receives, in SIMD lanes, and must be exactly the
//! MD5 `md-5` computes. Every client sends a Content-MD5, so a lane that hashed wrong is a
//! refused write here; the bodies read back byte for byte; a wrong Content-MD5 among them
//! stores nothing. Needs no outside tool.

mod common;

use std::io::{BufReader, Write};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use base64::Engine as _;
use common::{free_addr, fresh_dir, metric, read_response, secret_file, Node};
use md5::Digest as _;
use podstore_net::s3::sigv4;

const SECRET: &str = "bGFuZXMtc2VjcmV0LWZvci10aGUtczMtcHV0LXRlc3Q=";

/// A signed S3 PUT of `body` sent in two halves, the clients meeting at `halfway` between
/// them (so every body is half received when the first ends): status, ETag, S3 error code.
fn put_in_halves(
    s3: std::net::SocketAddr,
    path: &str,
    body: &[u8],
    content_md5: &str,
    halfway: &Barrier,
) -> (u16, String, String) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let date = sigv4::amz_date(now_ms);
    let host = s3.to_string();
    let headers = [
        ("content-md5".to_string(), content_md5.to_string()),
        ("host".to_string(), host.clone()),
        ("x-amz-content-sha256".to_string(), sigv4::UNSIGNED_PAYLOAD.to_string()),
        ("x-amz-date".to_string(), date.clone()),
    ];
    let auth = sigv4::authorization(
        "lanes",
        SECRET,
        &date,
        "PUT",
        path.as_bytes(),
        &[],
        &headers,
        sigv4::UNSIGNED_PAYLOAD,
    );
    let mut s = std::net::TcpStream::connect_timeout(&s3, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nContent-MD5: {content_md5}\r\n\
         x-amz-content-sha256: {}\r\nx-amz-date: {date}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n",
        body.len(),
        sigv4::UNSIGNED_PAYLOAD
    );
    s.write_all(head.as_bytes()).expect("send head");
    let half = body.len() / 2;
    s.write_all(&body[..half]).expect("send the first half");
    halfway.wait();
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(&body[half..]).expect("send the second half");
    let r = read_response(&mut BufReader::new(s), false).expect("answer");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let code = text.split("<Code>").nth(1).and_then(|c| c.split('<').next()).unwrap_or("").to_string();
    (r.status, r.header("etag").unwrap_or("").to_string(), code)
}

#[test]
fn puts_side_by_side_have_the_md5_of_their_bodies() {
    let dir = fresh_dir("s3-put-lanes");
    let (data, admin, s3) = (free_addr(), free_addr(), free_addr());
    let mut text = common::config_text(&dir, data, admin, "");
    text = text.replacen("[listen]\n", &format!("[listen]\ns3 = \"{s3}\"\n"), 1);
    text.push_str(&format!(
        "\n[auth]\n\n[[auth.keys]]\nid = \"lanes\"\nsecret_file = \"{}\"\n",
        secret_file(&dir, "key", SECRET).display()
    ));
    let node = Node::start_with_config(dir.clone(), data, admin, text);
    let lanes_before = metric(&node, "podstore_md5_hashed_bytes_total{kernel=\"lanes\"}");

    // Bodies of every length class: under a block, odd lengths, whole blocks, up to 1.9 MB
    // (half of each stays under the 1 MiB a stream queues before it is hashed).
    let mut rng = fastrand::Rng::with_seed(23);
    let lens: Vec<usize> = (0..24)
        .map(|i| [0, 1, 63, 64, 65, 4096].get(i).copied().unwrap_or_else(|| rng.usize(70_000..1_900_000)))
        .collect();
    let bodies: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let mut r = fastrand::Rng::with_seed(i as u64);
            (0..n).map(|_| r.u8(..)).collect()
        })
        .collect();
    // Two of them claim a Content-MD5 that is not their body's.
    let wrong = [7usize, 15];
    let halfway = Arc::new(Barrier::new(bodies.len()));
    let answers: Vec<(u16, String, String)> = std::thread::scope(|sc| {
        let handles: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let halfway = halfway.clone();
                sc.spawn(move || {
                    let mut md5 = md5::Md5::digest(b).to_vec();
                    if wrong.contains(&i) {
                        md5[0] ^= 1;
                    }
                    let content_md5 = base64::engine::general_purpose::STANDARD.encode(&md5);
                    put_in_halves(s3, &format!("/lanes/body-{i}"), b, &content_md5, &halfway)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client")).collect()
    });

    let bearer = format!("Bearer lanes.{SECRET}");
    for (i, (b, (status, etag, code))) in bodies.iter().zip(&answers).enumerate() {
        let md5: String = md5::Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect();
        let got = node.req("GET", &format!("/lanes/body-{i}"), &[("Authorization", &bearer)], b"");
        if wrong.contains(&i) {
            assert_eq!((*status, code.as_str()), (400, "BadDigest"), "body {i}: a wrong Content-MD5");
            assert_eq!(got.status, 404, "body {i}: nothing stored after a BadDigest");
            continue;
        }
        assert_eq!(*status, 200, "body {i} ({} bytes): {code}", b.len());
        assert_eq!(etag, &format!("\"{md5}\""), "body {i} ({} bytes): its ETag is its MD5", b.len());
        assert_eq!(got.status, 200, "body {i}");
        assert!(got.body == *b, "body {i} reads back as written");
        assert_eq!(got.header("etag"), Some(format!("\"{md5}\"").as_str()), "body {i}: the stored digest");
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let lanes = metric(&node, "podstore_md5_hashed_bytes_total{kernel=\"lanes\"}") - lanes_before;
        assert!(lanes > 0.0, "24 bodies half received at once on 2 threads: some were hashed side by side");
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
