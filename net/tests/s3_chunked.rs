//! aws-chunked uploads on a real node with access keys: a signed streaming PutObject
//! (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, each chunk's signature chained from the request's),
//! its signed-trailer form with a CRC32 trailer, and the unsigned-trailer form current AWS
//! SDKs send; a chunk changed in flight, a forged chunk signature and a wrong trailer checksum
//! each store nothing (the object keeps its earlier version); empty bodies. Needs no outside
//! tool.

mod common;

use std::io::{BufReader, Write};
use std::time::Duration;

use base64::Engine as _;
use common::{free_addr, fresh_dir, read_response, secret_file, Node, Resp};
use md5::Digest as _;
use podstore_net::s3::sigv4::{self, ChunkSigner, Claim};

const SECRET: &str = "Y2h1bmtlZC1zZWNyZXQtZm9yLXRoZS1zMy10ZXN0cy0t";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Signed,
    SignedTrailer,
    UnsignedTrailer,
}

impl Mode {
    fn payload(self) -> &'static str {
        match self {
            Mode::Signed => "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            Mode::SignedTrailer => "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
            Mode::UnsignedTrailer => "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        }
    }
}

fn crc32(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc32_table(data).to_be_bytes())
}

/// CRC-32 (ISO-HDLC, as S3's x-amz-checksum-crc32), bit by bit: independent of the node's.
fn crc32_table(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

/// Sends `data` as an aws-chunked PUT to `path` in chunks of `chunk` bytes; `tamper` changes
/// the encoded body before it goes (a byte in flight, a signature). The answer.
fn put(
    s3: std::net::SocketAddr,
    path: &str,
    data: &[u8],
    chunk: usize,
    mode: Mode,
    tamper: impl Fn(&mut Vec<u8>),
) -> Resp {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let date = sigv4::amz_date(now_ms);
    let host = s3.to_string();
    let mut headers = vec![
        ("content-encoding".to_string(), "aws-chunked".to_string()),
        ("host".to_string(), host.clone()),
        ("x-amz-content-sha256".to_string(), mode.payload().to_string()),
        ("x-amz-date".to_string(), date.clone()),
        ("x-amz-decoded-content-length".to_string(), data.len().to_string()),
    ];
    if mode != Mode::Signed {
        headers.push(("x-amz-trailer".to_string(), "x-amz-checksum-crc32".to_string()));
    }
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let query: Vec<(String, String)> = q
        .split('&')
        .filter(|x| !x.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let auth =
        sigv4::authorization("chunks", SECRET, &date, "PUT", p.as_bytes(), &query, &headers, mode.payload());
    let seed = auth.rsplit("Signature=").next().expect("a signature").to_string();
    let claim = Claim {
        access_key: "chunks".into(),
        date: date[..8].into(),
        region: "us-east-1".into(),
        service: "s3".into(),
        signed_headers: Vec::new(),
        signature: (0..32).map(|i| u8::from_str_radix(&seed[2 * i..2 * i + 2], 16).expect("hex")).collect(),
        amz_date: date.clone(),
        expires_s: None,
    };
    let mut signer = ChunkSigner::new(SECRET, &claim).expect("signer");
    let signed = mode != Mode::UnsignedTrailer;
    let mut body = Vec::new();
    let mut pieces: Vec<&[u8]> = data.chunks(chunk).collect();
    pieces.push(&[]);
    for piece in pieces {
        body.extend_from_slice(format!("{:x}", piece.len()).as_bytes());
        if signed {
            let sig = signer.next_chunk(&sha2::Sha256::digest(piece).into());
            body.extend_from_slice(format!(";chunk-signature={}", podstore_engine::hex(&sig)).as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        if !piece.is_empty() || mode == Mode::Signed {
            body.extend_from_slice(piece);
            body.extend_from_slice(b"\r\n");
        }
    }
    if mode != Mode::Signed {
        let line = format!("x-amz-checksum-crc32:{}", crc32(data));
        body.extend_from_slice(format!("{line}\r\n").as_bytes());
        if signed {
            let sig = signer.trailer(format!("{line}\n").as_bytes());
            body.extend_from_slice(
                format!("x-amz-trailer-signature:{}\r\n", podstore_engine::hex(&sig)).as_bytes(),
            );
        }
        body.extend_from_slice(b"\r\n");
    }
    tamper(&mut body);
    let mut s = std::net::TcpStream::connect_timeout(&s3, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut head = format!(
        "PUT {path} HTTP/1.1\r\nContent-Length: {}\r\nAuthorization: {auth}\r\nConnection: close\r\n",
        body.len()
    );
    for (n, v) in &headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(&body).expect("body");
    read_response(&mut BufReader::new(s), false).expect("answer")
}

fn code(r: &Resp) -> String {
    let t = String::from_utf8_lossy(&r.body);
    t.split("<Code>").nth(1).and_then(|c| c.split('<').next()).unwrap_or("").to_string()
}

#[test]
fn aws_chunked_bodies_are_stored_only_when_every_signature_and_checksum_holds() {
    assert_eq!(crc32_table(b"123456789"), 0xCBF4_3926, "the CRC-32 check value");
    let dir = fresh_dir("s3-chunked");
    let (data, admin, s3) = (free_addr(), free_addr(), free_addr());
    let mut text = common::config_text(&dir, data, admin, "");
    text = text.replacen("[listen]\n", &format!("[listen]\ns3 = \"{s3}\"\n"), 1);
    text.push_str(&format!(
        "\n[auth]\n\n[[auth.keys]]\nid = \"chunks\"\nsecret_file = \"{}\"\n",
        secret_file(&dir, "key", SECRET).display()
    ));
    let node = Node::start_with_config(dir.clone(), data, admin, text);
    let bearer = format!("Bearer chunks.{SECRET}");
    let get = |path: &str| node.req("GET", path, &[("Authorization", &bearer)], b"");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
    let md5: String = md5::Md5::digest(&body).iter().map(|x| format!("{x:02x}")).collect();

    for (i, mode) in [Mode::Signed, Mode::SignedTrailer, Mode::UnsignedTrailer].into_iter().enumerate() {
        let path = format!("/media/chunked-{i}");
        let r = put(s3, &path, &body, 65_536, mode, |_| {});
        assert_eq!(r.status, 200, "mode {i}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("etag"), Some(format!("\"{md5}\"").as_str()), "mode {i}");
        if mode != Mode::Signed {
            assert_eq!(
                r.header("x-amz-checksum-crc32"),
                Some(crc32(&body).as_str()),
                "mode {i}: the trailer checked"
            );
        }
        let got = get(&path);
        assert!(got.status == 200 && got.body == body, "mode {i} reads back decoded");
        assert_eq!(got.header("content-encoding"), None, "mode {i}: aws-chunked is not kept");

        // Whatever goes wrong, the object keeps its first version.
        let other: Vec<u8> = body.iter().map(|b| b ^ 0x5a).collect();
        let flipped = put(s3, &path, &other, 65_536, mode, |b| {
            let at = b.len() - 500;
            b[at] ^= 1;
        });
        let want = if mode == Mode::UnsignedTrailer { "BadDigest" } else { "SignatureDoesNotMatch" };
        assert_eq!(code(&flipped), want, "mode {i}: a byte changed in flight");
        if mode != Mode::UnsignedTrailer {
            let forged = put(s3, &path, &other, 65_536, mode, |b| {
                let at = b.windows(16).position(|w| w == b"chunk-signature=").expect("a signature") + 16;
                b[at] = if b[at] == b'0' { b'1' } else { b'0' };
            });
            assert_eq!(code(&forged), "SignatureDoesNotMatch", "mode {i}: a forged first chunk signature");
        } else {
            let wrong = put(s3, &path, &other, 65_536, mode, |b| {
                let at = b.windows(21).position(|w| w == b"x-amz-checksum-crc32:").expect("trailer") + 21;
                b[at] = if b[at] == b'A' { b'B' } else { b'A' };
            });
            assert_eq!(code(&wrong), "BadDigest", "mode {i}: a wrong trailer checksum");
        }
        assert!(get(&path).body == body, "mode {i}: nothing of the refused writes was stored");
    }
    // Empty bodies: their last chunk and trailer are checked too.
    for mode in [Mode::Signed, Mode::UnsignedTrailer] {
        assert_eq!(put(s3, "/media/empty", b"", 100, mode, |_| {}).status, 200);
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
