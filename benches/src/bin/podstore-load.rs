//! `podstore-load`: an HTTP/1.1 load generator for PUTs, with keep-alive connections, used to
//! fill podstore and nginx (WebDAV) with the same objects and to stream many large PUTs at
//! once; with `--get`, reads the same objects back and checks them. Prints requests/s, MiB/s
//! and latency percentiles.
//!
//! ```text
//! podstore-load --addr 127.0.0.1:7070 --prefix /bench/o --count 100000 --size 4096 --conns 64 \
//!     [--header 'X-Copies: all'] [--step 2 --first 1] [--seconds 5] [--size-max 31457280]
//! ```
//! With `--s3-key ID:SECRET` every request is signed with AWS Signature Version 4 (header
//! authorization, `x-amz-content-sha256: UNSIGNED-PAYLOAD`, as SDKs send over TLS): the same
//! load against the S3 port. `--list BUCKET` pages through a bucket's listing instead (1000
//! keys a page: ListObjectsV2 with `--s3-key`, the native listing without) and prints keys/s.
//! `--multipart PART_BYTES` (with `--s3-key`) sends each object as an S3 multipart upload,
//! `--conns` parts in flight, and prints its throughput. With `--rate R` the PUTs start at most R a second, all connections together (a steady
//! load beside another benchmark). With `--seconds S` the load stops after S seconds or `count` PUTs, whichever comes first
//! (`puts=` says how many were made: objects `first`, `first + step`, ... in that number).
//! The `n`th PUT writes object `i = first + n * step` (default: 0, 1, 2, ...; `--step 2`
//! overwrites every other object of an earlier load). Object `i` is `{prefix}-{i}`; its bytes depend only on `i` and the size, so two servers
//! loaded with the same arguments hold the same objects.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};

#[derive(Parser, Debug, Clone)]
#[command(name = "podstore-load", about = "PUT (or checked GET) load over HTTP/1.1 keep-alive connections")]
struct Args {
    /// The server, host:port.
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: SocketAddr,
    /// Object `i` is `{prefix}-{i}`.
    #[arg(long, default_value = "/bench/o")]
    prefix: String,
    /// PUTs to make (at most, with --seconds).
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Bytes of each object.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Objects of sizes spread evenly from `--size` to this, by object number (object `i`
    /// always has the same size, so two servers loaded alike hold the same objects).
    #[arg(long)]
    size_max: Option<usize>,
    /// Connections, each with one PUT in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    conns: u64,
    /// An extra request header, `Name: value` (repeatable).
    #[arg(long = "header", value_parser = header)]
    headers: Vec<(String, String)>,
    /// The `n`th PUT writes object `first + n * step`.
    #[arg(long, default_value_t = 0)]
    first: u64,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    step: u64,
    /// Stop after this many seconds (or `count` PUTs, whichever comes first).
    #[arg(long, value_parser = positive)]
    seconds: Option<f64>,
    /// PUTs started per second at most, all connections together.
    #[arg(long, value_parser = positive)]
    rate: Option<f64>,
    /// GET the objects instead (each once, in the same order), checking the status and every
    /// byte: a pass that warms a server's caches, or checks what an earlier load stored.
    #[arg(long)]
    get: bool,
    /// Sign every request as S3 access key `ID` with `SECRET` (SigV4, unsigned payload).
    #[arg(long, value_parser = s3_key)]
    s3_key: Option<(String, String)>,
    /// List BUCKET whole instead, in pages of 1000, and print the keys per second.
    #[arg(long)]
    list: Option<String>,
    /// With `--s3-key`: each object goes up as an S3 multipart upload of parts of this many
    /// bytes (the last shorter), `--conns` parts in flight, objects one after another.
    #[arg(long)]
    multipart: Option<usize>,
}

fn s3_key(v: &str) -> Result<(String, String), String> {
    let (id, secret) = v.split_once(':').ok_or("an S3 key is ID:SECRET")?;
    Ok((id.to_string(), secret.to_string()))
}

fn positive(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|x| *x > 0.0 && x.is_finite())
        .ok_or_else(|| format!("{v}: not a positive number"))
}

fn header(v: &str) -> Result<(String, String), String> {
    let (name, value) = v.split_once(':').ok_or("a header is `Name: value`")?;
    let name = name.trim();
    hyper::header::HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("{name}: {e}"))?;
    hyper::header::HeaderValue::from_str(value.trim()).map_err(|e| format!("{name}: {e}"))?;
    Ok((name.to_string(), value.trim().to_string()))
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

/// A request body of `left` bytes sent as repeats of one block (many large PUTs at once cost
/// the client little memory; each frame is a reference to the block, not a copy).
struct Repeat {
    block: Bytes,
    left: usize,
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 || self.block.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.block.len());
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(self.block.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left as u64)
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Repeat>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .map_err(|e| e.to_string())?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request on the connection (made anew if there is none or it closed), with the
/// `--header`s: the answer's status and body; Err when it could not be made.
async fn request(
    conn: &mut Option<Sender>,
    a: &Args,
    req: hyper::http::request::Builder,
    body: Repeat,
) -> Result<(hyper::StatusCode, Bytes), String> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(connect(a.addr).await?);
    }
    let sender = conn.as_mut().expect("connected");
    sender.ready().await.map_err(|e| e.to_string())?;
    let mut req = req.header(hyper::header::HOST, "bench");
    for (name, value) in &a.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    if let Some((id, secret)) = &a.s3_key {
        req = sign(req, id, secret);
    }
    let req = req.body(body).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, body))
}

/// Adds SigV4 headers to a request (its path and query as they will be sent).
fn sign(req: hyper::http::request::Builder, id: &str, secret: &str) -> hyper::http::request::Builder {
    use podstore_net::s3::sigv4;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let date = sigv4::amz_date(now_ms);
    let (method, uri) =
        (req.method_ref().cloned().unwrap_or_default(), req.uri_ref().cloned().unwrap_or_default());
    let decode = |s: &str| podstore_net::names::percent_decode(s).unwrap_or_else(|_| s.as_bytes().to_vec());
    let path = decode(uri.path());
    let query: Vec<(String, String)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                String::from_utf8_lossy(&decode(k)).into_owned(),
                String::from_utf8_lossy(&decode(v)).into_owned(),
            )
        })
        .collect();
    let headers = [
        ("host".to_string(), "bench".to_string()),
        ("x-amz-content-sha256".to_string(), sigv4::UNSIGNED_PAYLOAD.to_string()),
        ("x-amz-date".to_string(), date.clone()),
    ];
    let auth = sigv4::authorization(
        id,
        secret,
        &date,
        method.as_str(),
        &path,
        &query,
        &headers,
        sigv4::UNSIGNED_PAYLOAD,
    );
    req.header("x-amz-content-sha256", sigv4::UNSIGNED_PAYLOAD)
        .header("x-amz-date", date)
        .header("authorization", auth)
}

/// Pages through `bucket`'s listing, 1000 keys a page, one request at a time: keys, seconds.
async fn list_all(a: &Args, bucket: &str) -> Result<(u64, f64), String> {
    let mut conn = None;
    let start = Instant::now();
    let (mut keys, mut token): (u64, Option<String>) = (0, None);
    loop {
        let path = match (&a.s3_key, &token) {
            (Some(_), None) => format!("/{bucket}?list-type=2&max-keys=1000"),
            (Some(_), Some(t)) => format!("/{bucket}?list-type=2&max-keys=1000&continuation-token={t}"),
            (None, None) => format!("/{bucket}?limit=1000"),
            (None, Some(t)) => format!("/{bucket}?limit=1000&token={t}"),
        };
        let (status, body) =
            request(&mut conn, a, hyper::Request::get(&path), Repeat { block: Bytes::new(), left: 0 })
                .await?;
        if !status.is_success() {
            return Err(refused(status, &body));
        }
        let text = String::from_utf8_lossy(&body);
        let next = if a.s3_key.is_some() {
            keys += text.matches("<Key>").count() as u64;
            text.split_once("<NextContinuationToken>")
                .and_then(|(_, r)| r.split_once('<'))
                .map(|(t, _)| t.to_string())
        } else {
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            keys += v["objects"].as_array().map_or(0, |o| o.len() as u64);
            v["next"].as_str().map(str::to_string)
        };
        match next {
            Some(t) => token = Some(t),
            None => return Ok((keys, start.elapsed().as_secs_f64())),
        }
    }
}

/// What the server said, for the failure report.
fn refused(status: hyper::StatusCode, body: &[u8]) -> String {
    format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]))
}

/// One request whose answer's ETag matters (an S3 part): the status, the ETag, the body.
async fn request_etag(
    conn: &mut Option<Sender>,
    a: &Args,
    req: hyper::http::request::Builder,
    body: Repeat,
) -> Result<(hyper::StatusCode, String, Bytes), String> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(connect(a.addr).await?);
    }
    let sender = conn.as_mut().expect("connected");
    sender.ready().await.map_err(|e| e.to_string())?;
    let mut req = req.header(hyper::header::HOST, "bench");
    if let Some((id, secret)) = &a.s3_key {
        req = sign(req, id, secret);
    }
    let resp =
        sender.send_request(req.body(body).map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, etag, body))
}

/// One object as an S3 multipart upload: created, its parts sent `conns` at a time (each on a
/// connection of its own), completed. The seconds it took.
async fn multipart_put(
    a: Arc<Args>,
    path: String,
    size: usize,
    part: usize,
    block: Bytes,
) -> Result<f64, String> {
    let t = Instant::now();
    let mut conn = None;
    let empty = || Repeat { block: Bytes::new(), left: 0 };
    let (status, _, body) =
        request_etag(&mut conn, &a, hyper::Request::post(format!("{path}?uploads")), empty()).await?;
    if !status.is_success() {
        return Err(refused(status, &body));
    }
    let text = String::from_utf8_lossy(&body);
    let id =
        text.split("<UploadId>").nth(1).and_then(|x| x.split('<').next()).ok_or("no UploadId")?.to_string();
    let parts = size.div_ceil(part).max(1);
    let next = Arc::new(AtomicU64::new(1));
    let etags = Arc::new(Mutex::new(vec![String::new(); parts]));
    let tasks: Vec<_> = (0..a.conns.min(parts as u64))
        .map(|_| {
            let (a, path, id, block, next, etags) =
                (a.clone(), path.clone(), id.clone(), block.clone(), next.clone(), etags.clone());
            tokio::task::spawn_local(async move {
                let mut conn = None;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if n > parts {
                        return Ok::<(), String>(());
                    }
                    let len = part.min(size - (n - 1) * part);
                    let req = hyper::Request::put(format!("{path}?partNumber={n}&uploadId={id}"))
                        .header(hyper::header::CONTENT_LENGTH, len);
                    let (status, etag, body) =
                        request_etag(&mut conn, &a, req, Repeat { block: block.clone(), left: len }).await?;
                    if !status.is_success() {
                        return Err(refused(status, &body));
                    }
                    etags.lock().expect("etags")[n - 1] = etag;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let mut doc = String::from("<CompleteMultipartUpload>");
    for (i, e) in etags.lock().expect("etags").iter().enumerate() {
        doc.push_str(&format!("<Part><PartNumber>{}</PartNumber><ETag>{e}</ETag></Part>", i + 1));
    }
    doc.push_str("</CompleteMultipartUpload>");
    let len = doc.len();
    let req =
        hyper::Request::post(format!("{path}?uploadId={id}")).header(hyper::header::CONTENT_LENGTH, len);
    let (status, _, body) =
        request_etag(&mut conn, &a, req, Repeat { block: Bytes::from(doc), left: len }).await?;
    if !status.is_success() {
        return Err(refused(status, &body));
    }
    Ok(t.elapsed().as_secs_f64())
}

/// `--multipart`: the objects one after another, each a multipart upload; prints what they
/// took and the throughput.
fn multipart_main(args: Args, part: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let pool = pool();
    let a = Arc::new(args);
    let r: Result<(f64, u64), String> = tokio::task::LocalSet::new().block_on(&rt, async {
        let (mut secs, mut bytes) = (0.0, 0u64);
        let mut body = Vec::new();
        for n in 0..a.count {
            let i = a.first + n * a.step;
            let size = size_of(&a, i);
            object(&pool, i, size, &mut body);
            secs += multipart_put(
                a.clone(),
                format!("{}-{i}", a.prefix),
                size,
                part,
                Bytes::copy_from_slice(&body),
            )
            .await?;
            bytes += size as u64;
        }
        Ok((secs, bytes))
    });
    match r {
        Ok((secs, bytes)) => println!(
            "multipart_objects={} part_bytes={part} parts_in_flight={} seconds={secs:.2} mib_per_s={:.1}",
            a.count,
            a.conns,
            bytes as f64 / (1 << 20) as f64 / secs.max(1e-9)
        ),
        Err(e) => {
            eprintln!("multipart: {e}");
            std::process::exit(1);
        }
    }
}

/// One PUT; Err says what went wrong, the server's answer included.
async fn put(
    conn: &mut Option<Sender>,
    a: &Args,
    path: &str,
    size: usize,
    block: Bytes,
) -> Result<(), String> {
    let req = hyper::Request::put(path).header(hyper::header::CONTENT_LENGTH, size);
    let (status, body) = request(conn, a, req, Repeat { block, left: size }).await?;
    if !status.is_success() {
        return Err(refused(status, &body));
    }
    Ok(())
}

/// One GET; Err unless the answer is a 200 with exactly the bytes a PUT of the same object
/// sent (its block, repeated to its size).
async fn get(
    conn: &mut Option<Sender>,
    a: &Args,
    path: &str,
    size: usize,
    block: &[u8],
) -> Result<(), String> {
    let req = hyper::Request::get(path);
    let (status, body) = request(conn, a, req, Repeat { block: Bytes::new(), left: 0 }).await?;
    if status != hyper::StatusCode::OK {
        return Err(refused(status, &body));
    }
    if body.len() != size {
        return Err(format!("{} bytes, not {size}", body.len()));
    }
    if !block.is_empty() && !body.chunks(block.len()).all(|c| c == &block[..c.len()]) {
        return Err("the bytes differ from what was stored".into());
    }
    Ok(())
}

/// The size of object `i`: `--size`, or with `--size-max` one spread evenly over the range by
/// a hash of `i`.
fn size_of(a: &Args, i: u64) -> usize {
    match a.size_max {
        Some(max) if max > a.size => {
            let mut x = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^= x >> 31;
            a.size + (x % (max - a.size + 1) as u64) as usize
        }
        _ => a.size,
    }
}

/// Shared by the connections: the next PUT's number, the latencies, the failures.
struct Load {
    args: Args,
    pool: Vec<u8>,
    start: Instant,
    next: AtomicU64,
    failures: AtomicU64,
    /// Bytes of the PUTs that succeeded.
    bytes: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

/// One connection's PUTs, until `count` are taken (or the time is up).
async fn connection(load: Arc<Load>) {
    let a = &load.args;
    let deadline = a.seconds.map(|s| load.start + Duration::from_secs_f64(s));
    let mut conn = None;
    let mut mine = Vec::new();
    let mut body = Vec::new();
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let n = load.next.fetch_add(1, Ordering::Relaxed);
        if n >= a.count {
            break;
        }
        if let Some(r) = a.rate {
            // The n-th PUT starts no earlier than n / rate seconds in.
            let at = load.start + Duration::from_secs_f64(n as f64 / r);
            if deadline.is_some_and(|d| at >= d) {
                break;
            }
            tokio::time::sleep_until(at.into()).await;
        }
        let i = a.first + n * a.step;
        let size = size_of(a, i);
        object(&load.pool, i, size, &mut body);
        let path = format!("{}-{i}", a.prefix);
        let t = Instant::now();
        let done = if a.get {
            get(&mut conn, a, &path, size, &body).await
        } else {
            put(&mut conn, a, &path, size, Bytes::copy_from_slice(&body)).await
        };
        match done {
            Ok(()) => {
                mine.push(t.elapsed());
                load.bytes.fetch_add(size as u64, Ordering::Relaxed);
            }
            Err(e) => {
                // The first few failures say what went wrong; the count says the rest.
                if load.failures.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("{} {path}: {e}", if a.get { "GET" } else { "PUT" });
                }
                conn = None;
            }
        }
    }
    load.latencies.lock().expect("latencies").extend(mine);
}

fn main() {
    let args = Args::parse();
    if let Some(part) = args.multipart {
        if args.s3_key.is_none() {
            eprintln!("--multipart needs --s3-key");
            std::process::exit(2);
        }
        return multipart_main(args, part);
    }
    if let Some(bucket) = args.list.clone() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let r = tokio::task::LocalSet::new().block_on(&rt, async { list_all(&args, &bucket).await });
        match r {
            Ok((keys, secs)) => {
                println!("keys={keys} seconds={secs:.3} keys_per_s={:.0}", keys as f64 / secs.max(1e-9));
                return;
            }
            Err(e) => {
                eprintln!("list {bucket}: {e}");
                std::process::exit(1);
            }
        }
    }
    let load = Arc::new(Load {
        pool: pool(),
        start: Instant::now(),
        next: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        latencies: Mutex::new(Vec::with_capacity(args.count.min(10_000_000) as usize)),
        args,
    });
    // The connections on as many threads as the machine has cores (each a runtime of its own,
    // its connections as tasks), at most one thread per connection.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(load.args.conns as usize);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let load = load.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    let mine = (t as u64..load.args.conns).step_by(threads);
                    let tasks: Vec<_> =
                        mine.map(|_| tokio::task::spawn_local(connection(load.clone()))).collect();
                    for task in tasks {
                        task.await.expect("a connection");
                    }
                });
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let secs = load.start.elapsed().as_secs_f64();
    let mut l = load.latencies.lock().expect("latencies").clone();
    l.sort();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(Duration::ZERO)
    };
    let ok = l.len() as f64;
    let failures = load.failures.load(Ordering::Relaxed);
    println!(
        "{}={} failures={failures} seconds={secs:.2} req_per_s={:.0} mib_per_s={:.1} p50_ms={:.2} p99_ms={:.2}",
        if load.args.get { "gets" } else { "puts" },
        l.len(),
        ok / secs,
        load.bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64 / secs,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    if failures > 0 {
        std::process::exit(1);
    }
}
