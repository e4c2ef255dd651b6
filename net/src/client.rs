//! The operator's toolbox: `podstore put|get|head|delete|stat|index-info`.
//!
//! `put`, `get`, `head` and `delete` are clients of the data API that stream files and
//! stdin/stdout (a PUT needs its length first, so stdin is spooled to a temporary file);
//! `stat` reads a running node's admin port; `index-info` inspects a stopped node's disk
//! offline, changing nothing. Long transfers show progress when stderr is a terminal.

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::{Request, StatusCode};

/// Percent-encodes an object name `bucket/key` for a URL path (keeps `/` and unreserved bytes).
pub fn url_path(name: &str) -> String {
    let mut out = String::from("/");
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The environment variable the data commands take an access token from (`<id>.<secret>`,
/// sent as `Authorization: Bearer`): not an argument, which other users could read in `ps`.
pub const TOKEN_ENV: &str = "PODSTORE_TOKEN";

/// A request to the data port for object `bucket/key`, with the token from `PODSTORE_TOKEN`
/// if it is set.
fn data_request(method: hyper::Method, server: SocketAddr, name: &str) -> hyper::http::request::Builder {
    let req = Request::builder().method(method).uri(url_path(name)).header("host", server.to_string());
    match std::env::var(TOKEN_ENV) {
        Ok(t) if !t.trim().is_empty() => req.header("authorization", format!("Bearer {}", t.trim())),
        _ => req,
    }
}

/// `podstore presign`: a URL for `method` on `bucket/key` valid for `expires_in_s`, signed
/// with access key `id`'s secret (read from its file, which must be private).
pub fn presign(
    server: &str,
    id: &str,
    secret_file: &Path,
    method: &str,
    name: &str,
    expires_in_s: u64,
) -> Result<(), String> {
    let method = method.to_ascii_uppercase();
    if !matches!(method.as_str(), "GET" | "HEAD" | "PUT" | "DELETE") {
        return Err(format!("{method}: a presigned URL is for GET, HEAD, PUT or DELETE"));
    }
    if expires_in_s == 0 || expires_in_s > crate::auth::PRESIGN_MAX_S {
        return Err(format!(
            "--expires-in {expires_in_s}: from 1 s to 7 days ({} s)",
            crate::auth::PRESIGN_MAX_S
        ));
    }
    let path = url_path(name);
    let parsed = crate::names::parse_object_path(&path, crate::names::KEY_BYTES_MAX)
        .map_err(|crate::names::NameError::Invalid(m)| format!("{name}: {m}"))?;
    let secret = crate::auth::read_key_secret(id, secret_file)?;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?;
    let expires = now.as_secs() + expires_in_s;
    let q = crate::auth::presign_query(id, &secret, &method, &parsed.bucket, &parsed.key, expires);
    println!("http://{server}{path}?{q}");
    Ok(())
}

struct Progress {
    total: Option<u64>,
    done: u64,
    started: Instant,
    last: Instant,
    show: bool,
}

impl Progress {
    fn new(total: Option<u64>) -> Progress {
        let now = Instant::now();
        Progress { total, done: 0, started: now, last: now, show: std::io::stderr().is_terminal() }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        if self.show && self.last.elapsed() > Duration::from_millis(250) {
            self.last = Instant::now();
            self.print(false);
        }
    }

    fn print(&self, end: bool) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / (1 << 20) as f64 / secs;
        let pct = self
            .total
            .filter(|&t| t > 0)
            .map(|t| format!(" {:.0}%", 100.0 * self.done as f64 / t as f64))
            .unwrap_or_default();
        show_line(true, &format!("{} bytes{pct} ({rate:.1} MiB/s)", self.done));
        if end {
            eprintln!();
        }
    }

    fn finish(&self) {
        if self.show && self.done > 0 {
            self.print(true);
        }
    }
}

/// A request body read from a file in 1 MiB pieces.
struct FileBody {
    file: std::fs::File,
    remaining: u64,
    progress: Progress,
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            self.progress.finish();
            return Poll::Ready(None);
        }
        let n = self.remaining.min(1 << 20) as usize;
        let mut buf = vec![0u8; n];
        // A CLI process: a blocking file read here holds up nothing else.
        if let Err(e) = self.file.read_exact(&mut buf) {
            return Poll::Ready(Some(Err(e)));
        }
        self.remaining -= n as u64;
        self.progress.add(n as u64);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

async fn send<B>(addr: SocketAddr, req: Request<B>) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    B: Body + 'static + Send,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tx.send_request(req).await.map_err(|e| format!("{addr}: {e}"))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())
}

async fn error_text(resp: hyper::Response<hyper::body::Incoming>) -> String {
    let status = resp.status();
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let msg = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
    format!("{status}: {msg}")
}

/// `podstore put`: uploads a file (or stdin, spooled first) to `bucket/key`.
pub fn put(
    server: SocketAddr,
    name: &str,
    source: &str,
    content_type: Option<&str>,
    copies: Option<&str>,
) -> Result<(), String> {
    let (file, _spool) = if source == "-" {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("podstore-put-{}.spool", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let _ = std::fs::remove_file(&path); // the open file stays readable
        std::io::copy(&mut std::io::stdin().lock(), &mut f).map_err(|e| format!("stdin: {e}"))?;
        std::io::Seek::rewind(&mut f).map_err(|e| e.to_string())?;
        (f, Some(path))
    } else {
        (std::fs::File::open(source).map_err(|e| format!("{source}: {e}"))?, None)
    };
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut req = data_request(hyper::Method::PUT, server, name).header("content-length", len);
    if let Some(t) = content_type {
        req = req.header("content-type", t);
    }
    if let Some(c) = copies {
        req = req.header("x-copies", c);
    }
    let req = req
        .body(FileBody { file, remaining: len, progress: Progress::new(Some(len)) })
        .map_err(|e| e.to_string())?;
    runtime()?.block_on(async {
        let resp = send(server, req).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(error_text(resp).await);
        }
        let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        println!("stored {name} ({len} bytes) etag {etag}");
        Ok(())
    })
}

/// `podstore get`: downloads `bucket/key` to a file or stdout.
pub fn get(server: SocketAddr, name: &str, dest: &str, range: Option<&str>) -> Result<(), String> {
    let mut req = data_request(hyper::Method::GET, server, name);
    if let Some(r) = range {
        req = req.header("range", format!("bytes={r}"));
    }
    let req = req.body(http_body_util::Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    runtime()?.block_on(async {
        let resp = send(server, req).await?;
        if !resp.status().is_success() {
            return Err(error_text(resp).await);
        }
        let total =
            resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let mut out: Box<dyn Write> = if dest == "-" {
            Box::new(std::io::stdout().lock())
        } else {
            Box::new(std::fs::File::create(dest).map_err(|e| format!("{dest}: {e}"))?)
        };
        let mut body = resp.into_body();
        let mut progress = Progress::new(total);
        let mut got = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("download interrupted after {got} bytes: {e}"))?;
            if let Ok(d) = frame.into_data() {
                out.write_all(&d).map_err(|e| format!("{dest}: {e}"))?;
                got += d.len() as u64;
                progress.add(d.len() as u64);
            }
        }
        out.flush().map_err(|e| e.to_string())?;
        progress.finish();
        if total.is_some_and(|t| t != got) {
            return Err(format!("download incomplete: {got} of {} bytes", total.unwrap_or(0)));
        }
        Ok(())
    })
}

/// `podstore head`: prints an object's headers.
pub fn head(server: SocketAddr, name: &str) -> Result<(), String> {
    let req = data_request(hyper::Method::HEAD, server, name)
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    runtime()?.block_on(async {
        let resp = send(server, req).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(format!("{name}: not found"));
        }
        if !resp.status().is_success() {
            return Err(format!("{name}: {}", resp.status()));
        }
        for (k, v) in resp.headers() {
            println!("{k}: {}", v.to_str().unwrap_or("?"));
        }
        Ok(())
    })
}

/// `podstore delete`.
pub fn delete(server: SocketAddr, name: &str, copies: Option<&str>) -> Result<(), String> {
    let mut req = data_request(hyper::Method::DELETE, server, name);
    if let Some(c) = copies {
        req = req.header("x-copies", c);
    }
    let req = req.body(http_body_util::Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    runtime()?.block_on(async {
        let resp = send(server, req).await?;
        if resp.status() != StatusCode::NO_CONTENT {
            return Err(error_text(resp).await);
        }
        println!("deleted {name}");
        Ok(())
    })
}

/// Percent-encodes a query parameter's value (everything but unreserved characters).
fn query_value(v: &[u8]) -> String {
    let mut out = String::with_capacity(v.len());
    for &b in v {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `podstore ls bucket[/prefix]`: the bucket's keys under the prefix, a page at a time as they
/// come (time, size, key; `PRE` for a common prefix). Without `recursive` keys are grouped at
/// the next `/` after the prefix, as directories.
pub fn ls(server: SocketAddr, target: &str, recursive: bool, raw_bytes: bool) -> Result<(), String> {
    let (bucket, prefix) = target.split_once('/').unwrap_or((target, ""));
    if !crate::names::valid_bucket(bucket) {
        return Err(format!("{bucket:?}: bucket names are 3-63 characters of a-z 0-9 . -"));
    }
    let mut query = format!("prefix={}", query_value(prefix.as_bytes()));
    if !recursive {
        query.push_str("&delimiter=%2F");
    }
    runtime()?.block_on(async {
        let mut token: Option<String> = None;
        let mut out = std::io::stdout().lock();
        loop {
            let q = match &token {
                Some(t) => format!("{query}&token={t}"),
                None => query.clone(),
            };
            let req = data_request(hyper::Method::GET, server, bucket);
            let uri = format!("{}?{q}", url_path(bucket));
            let req = req.uri(uri).body(http_body_util::Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
            let resp = send(server, req).await?;
            if !resp.status().is_success() {
                return Err(error_text(resp).await);
            }
            let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            let mut lines = String::new();
            for p in v["prefixes"].as_array().into_iter().flatten() {
                lines.push_str(&format!("{:>34} {}\n", "PRE", p.as_str().unwrap_or("?")));
            }
            for o in v["objects"].as_array().into_iter().flatten() {
                let when = o["last_modified"].as_str().unwrap_or("?");
                let when = when.get(..19).unwrap_or(when).replace('T', " ");
                let size = bytes_cell(&o["size"], raw_bytes);
                lines.push_str(&format!("{when} {size:>14} {}\n", o["key"].as_str().unwrap_or("?")));
            }
            if out.write_all(lines.as_bytes()).is_err() {
                return Ok(()); // the reader went away (| head)
            }
            match v["next"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => return Ok(()),
            }
        }
    })
}

/// `podstore stat`: a running node's disks, from its admin port.
pub fn stat(admin: SocketAddr, raw_bytes: bool) -> Result<(), String> {
    let req = Request::get("/admin/disks")
        .header("host", admin.to_string())
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    runtime()?.block_on(async {
        let resp = send(admin, req).await?;
        if !resp.status().is_success() {
            return Err(error_text(resp).await);
        }
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let size = |x: &serde_json::Value| bytes_cell(x, raw_bytes);
        let header = ["disk", "state", "tier", "objects", "used", "dead", "free", "io_errors", "path"]
            .map(String::from);
        let rows: Vec<[String; 9]> = v["disks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                [
                    d["id"].to_string(),
                    d["state"].as_str().unwrap_or("?").to_string(),
                    d["tier"].as_str().unwrap_or("?").to_string(),
                    d["objects"].to_string(),
                    size(&d["used_bytes"]),
                    size(&d["dead_bytes"]),
                    size(&d["free_bytes"]),
                    d["io_errors"].to_string(),
                    d["path"].as_str().unwrap_or("?").to_string(),
                ]
            })
            .collect();
        print!("{}", crate::config::table(&header, &rows, ""));
        Ok(())
    })
}

/// A byte count from the admin API as a table shows it: in binary units, or as the number
/// with `raw` (`--bytes`).
fn bytes_cell(x: &serde_json::Value, raw: bool) -> String {
    match x.as_u64() {
        Some(n) if !raw => crate::units::human_bytes(n),
        Some(n) => n.to_string(),
        None => "-".to_string(),
    }
}

/// `podstore tiers`: `/admin/tiers` as tables.
pub fn tiers(admin: SocketAddr, raw_bytes: bool) -> Result<(), String> {
    runtime()?.block_on(async {
        let v = admin_json(admin, hyper::Method::GET, "/admin/tiers").await?;
        let pct = |x: &serde_json::Value| format!("{:.1}%", x.as_f64().unwrap_or(0.0) * 100.0);
        let size = |x: &serde_json::Value| bytes_cell(x, raw_bytes);
        let header =
            ["tier", "disks", "objects", "used", "capacity", "fill", "gets", "of_gets"].map(String::from);
        let c = &v["ram_cache"];
        let mut rows = vec![[
            "ram".to_string(),
            "-".to_string(),
            c["entries"].to_string(),
            size(&c["bytes"]),
            size(&c["size_bytes"]),
            pct(&serde_json::json!(
                c["bytes"].as_f64().unwrap_or(0.0) / c["size_bytes"].as_f64().unwrap_or(0.0).max(1.0)
            )),
            c["reads"].to_string(),
            pct(&c["read_share"]),
        ]];
        for t in v["tiers"].as_array().into_iter().flatten() {
            let disks: Vec<String> =
                t["disks"].as_array().into_iter().flatten().map(|d| d.to_string()).collect();
            rows.push([
                t["tier"].as_str().unwrap_or("?").to_string(),
                if disks.is_empty() { "-".to_string() } else { disks.join(",") },
                t["objects"].to_string(),
                size(&t["used_bytes"]),
                size(&t["capacity_bytes"]),
                pct(&t["fill"]),
                t["reads"].to_string(),
                pct(&t["read_share"]),
            ]);
        }
        print!("{}", crate::config::table(&header, &rows, ""));
        println!(
            "ram cache: hit ratio {} ({} hits, {} misses), {} offered, {} invalidated; objects up to {}",
            pct(&c["hit_ratio"]),
            c["hits"],
            c["misses"],
            c["offered"],
            c["invalidated"],
            size(&c["object_size_max_bytes"]),
        );
        let m = &v["migration"];
        println!(
            "migration: {}, {} objects ({}) moved to the capacity tier, {} failed, {} to move",
            if m["running"] == true { "running" } else { "idle" },
            m["migrated_objects"],
            size(&m["migrated_bytes"]),
            m["failures"],
            size(&m["backlog_bytes"]),
        );
        println!("promotion: {} objects copied back to the fast tier", v["promoted"]);
        Ok(())
    })
}

async fn admin_json(
    admin: SocketAddr,
    method: hyper::Method,
    path: &str,
) -> Result<serde_json::Value, String> {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", admin.to_string())
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send(admin, req).await?;
    if !resp.status().is_success() {
        return Err(error_text(resp).await);
    }
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

/// Shows a progress line when it changed (see [`show_line`]).
fn progress(tty: bool, last: &mut String, line: String) {
    if line != *last {
        show_line(tty, &line);
        *last = line;
    }
}

/// The one way progress is shown: on a terminal, a line rewritten in place (the blanks after it
/// clear what a longer line left); otherwise, one line each time.
fn show_line(tty: bool, line: &str) {
    if tty {
        eprint!("\r{line}   ");
    } else {
        eprintln!("{line}");
    }
}

/// `podstore recover --from PEER`: starts an anti-entropy pass on the node and follows it to
/// the end, printing progress.
pub fn recover(admin: SocketAddr, peer: &str) -> Result<(), String> {
    runtime()?.block_on(async {
        let started = admin_json(admin, hyper::Method::POST, &format!("/admin/recover?peer={peer}")).await?;
        let before = started["passes_before"].as_u64().unwrap_or(0);
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut last = String::new();
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let v = admin_json(admin, hyper::Method::GET, "/admin/peers").await?;
            let p = v["peers"].as_array().into_iter().flatten().find(|p| p["name"] == peer).cloned();
            let ae = p.map(|p| p["anti_entropy"].clone()).ok_or("the peer vanished from /admin/peers")?;
            let line = format!(
                "recover from {peer}: buckets {}/{} differing done, {} keys compared, {} pulled, {} pushed, {} errors",
                ae["buckets_done"], ae["buckets_differing"], ae["keys_compared"], ae["pulled"], ae["pushed"], ae["pass_errors"]
            );
            progress(tty, &mut last, line);
            let passes = ae["passes"].as_u64().unwrap_or(0);
            if passes > before && ae["running"] == false {
                if tty {
                    eprintln!();
                }
                if ae["pass_errors"].as_u64().unwrap_or(0) > 0 {
                    let e = ae["last_error"].as_str().unwrap_or("?");
                    return Err(format!("recover from {peer} finished with errors; last: {e}"));
                }
                println!(
                    "recovered from {peer}: {} pulled, {} pushed in {} ms",
                    ae["pulled"], ae["pushed"], ae["last_duration_ms"]
                );
                return Ok(());
            }
        }
    })
}

/// `podstore compact` / `podstore scrub`: applies an action to the job on the node's disks;
/// `start` then follows the pass on each disk to its end, printing progress.
pub fn job(
    admin: SocketAddr,
    kind: &str,
    action: &str,
    disk: Option<u32>,
    param: Option<(&str, String)>,
) -> Result<(), String> {
    let key = match kind {
        "compact" => "compaction",
        "migrate" => "migration",
        _ => "scrub",
    };
    runtime()?.block_on(async {
        let before = admin_json(admin, hyper::Method::GET, "/admin/jobs").await?;
        let mut q = format!("/admin/{kind}?action={action}");
        if let Some(d) = disk {
            q.push_str(&format!("&disk={d}"));
        }
        if let Some((name, v)) = param {
            q.push_str(&format!("&{name}={v}"));
        }
        let applied = admin_json(admin, hyper::Method::POST, &q).await?;
        let disks: Vec<u64> = applied["disks"].as_array().into_iter().flatten().filter_map(|d| d.as_u64()).collect();
        if action != "start" {
            println!("{kind} {action}: disks {disks:?}");
            return Ok(());
        }
        // A pass ends when a disk's pass count grows past what it was (and, for compaction,
        // past the periodic pass that may have been running when the request came).
        let target = |d: u64| {
            let j = before["disks"].as_array().into_iter().flatten().find(|j| j["disk"] == d);
            let job = j.map(|j| j[key].clone()).unwrap_or_default();
            let passes = job["passes"].as_u64().unwrap_or(0);
            let busy = kind == "compact" && job["running"] == true;
            passes + 1 + busy as u64
        };
        let targets: Vec<(u64, u64)> = disks.iter().map(|&d| (d, target(d))).collect();
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut last = String::new();
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let now = admin_json(admin, hyper::Method::GET, "/admin/jobs").await?;
            let mut parts = Vec::new();
            let mut done = 0;
            for &(d, want) in &targets {
                let Some(j) = now["disks"].as_array().into_iter().flatten().find(|j| j["disk"] == d) else {
                    return Err(format!("disk {d} vanished from /admin/jobs"));
                };
                let job = &j[key];
                let finished = job["passes"].as_u64().unwrap_or(0) >= want && job["running"] == false;
                done += finished as usize;
                let state = if finished {
                    "done".to_string()
                } else if job["paused"] == true {
                    "paused".to_string()
                } else if kind == "compact" {
                    let (a, b) = (job["current_done_bytes"].as_u64().unwrap_or(0), job["current_total_bytes"].as_u64().unwrap_or(0));
                    format!("blob {} {}%", job["current_blob"], (a * 100).checked_div(b).unwrap_or(0))
                } else if kind == "migrate" {
                    format!("{} objects moved, {} MiB to go", job["migrated_objects"], job["backlog_bytes"].as_u64().unwrap_or(0) >> 20)
                } else {
                    let (a, b) = (job["pass_bytes_done"].as_u64().unwrap_or(0), job["pass_bytes_total"].as_u64().unwrap_or(0));
                    format!("{}%", (a * 100).checked_div(b).unwrap_or(0).min(100))
                };
                parts.push(format!("disk {d}: {state}"));
            }
            let line = format!("{kind}: {}", parts.join(", "));
            progress(tty, &mut last, line);
            if done == targets.len() {
                if tty {
                    eprintln!();
                }
                break;
            }
        }
        let after = admin_json(admin, hyper::Method::GET, "/admin/jobs").await?;
        let mut errors = Vec::new();
        for &(d, _) in &targets {
            let j = after["disks"].as_array().into_iter().flatten().find(|j| j["disk"] == d).cloned().unwrap_or_default();
            let job = &j[key];
            // This pass's figures: the scrub keeps its last pass's, the other jobs' totals
            // are taken against what they were before the request.
            let was = before["disks"].as_array().into_iter().flatten().find(|j| j["disk"] == d).map(|j| j[key].clone());
            let delta = |field: &str| {
                let then = was.as_ref().and_then(|w| w[field].as_u64()).unwrap_or(0);
                job[field].as_u64().unwrap_or(0).saturating_sub(then)
            };
            let size = |n: u64| crate::units::human_bytes(n);
            if kind == "migrate" {
                println!(
                    "disk {d}: {} objects ({}) moved to the capacity tier, {} failed, {} left to move",
                    delta("migrated_objects"),
                    size(delta("migrated_bytes")),
                    delta("failures"),
                    size(job["backlog_bytes"].as_u64().unwrap_or(0))
                );
            } else if kind == "compact" {
                println!(
                    "disk {d}: {} blobs compacted, {} reclaimed, {} records moved, {} tombstones dropped, {} blobs awaiting repair",
                    delta("blobs_compacted"),
                    size(delta("bytes_reclaimed")),
                    delta("records_moved"),
                    delta("tombstones_dropped"),
                    delta("blobs_skipped")
                );
            } else {
                let p = &job["last_pass"];
                println!(
                    "disk {d}: {} records checked, {} damaged records, {} damaged regions, {} read errors",
                    p["records_checked"], p["damaged_records"], p["damaged_regions"], p["read_errors"]
                );
            }
            let was_error = was.as_ref().map(|w| w["last_error"].clone());
            if let Some(e) = job["last_error"].as_str().filter(|_| was_error.as_ref() != Some(&job["last_error"])) {
                errors.push(format!("disk {d}: {e}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{kind} reported errors: {}", errors.join("; ")))
        }
    })
}

/// `podstore drain --disk N`: starts draining the disk and follows it until it is drained.
pub fn drain(admin: SocketAddr, disk: u32) -> Result<(), String> {
    runtime()?.block_on(async {
        admin_json(admin, hyper::Method::POST, &format!("/admin/drain?disk={disk}")).await?;
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut last = String::new();
        loop {
            let v = admin_json(admin, hyper::Method::GET, "/admin/disks").await?;
            let d = v["disks"].as_array().into_iter().flatten().find(|d| d["id"] == disk).cloned();
            let d = d.ok_or("the disk vanished from /admin/disks")?;
            let state = d["state"].as_str().unwrap_or("?").to_string();
            let line = format!("drain disk {disk}: {state}, {} objects left", d["objects"]);
            progress(tty, &mut last, line);
            match state.as_str() {
                "drained" => {
                    if tty {
                        eprintln!();
                    }
                    println!("disk {disk} is drained: safe to pull");
                    return Ok(());
                }
                "draining" => {}
                other => return Err(format!("disk {disk} is {other}, not draining")),
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    })
}

/// `podstore add-disk`: adds the disk (`query` holds everything but the path) and follows the
/// move of its share of the objects until the node no longer looks past it.
pub fn add_disk(admin: SocketAddr, disk: u32, path: &Path, query: &str, follow: bool) -> Result<(), String> {
    let path = path.canonicalize().map_err(|e| format!("{}: {e}", path.display()))?;
    let path = path.to_str().ok_or("the path is not UTF-8")?;
    let q = format!("{query}&path={}", &url_path(path)[1..]);
    runtime()?.block_on(async {
        let v = admin_json(admin, hyper::Method::POST, &format!("/admin/disks?{q}")).await?;
        println!("disk {disk} added at {} on core {}, weight {}", v["path"], v["core"], v["weight"]);
        if !follow {
            return Ok(());
        }
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut last = String::new();
        loop {
            let v = admin_json(admin, hyper::Method::GET, "/admin/disks").await?;
            let disks = v["disks"].as_array().cloned().unwrap_or_default();
            let d = disks.iter().find(|d| d["id"] == disk).ok_or("the disk vanished from /admin/disks")?;
            let total: u64 = disks.iter().filter_map(|d| d["objects"].as_u64()).sum();
            let mut line = format!("disk {disk}: {} of the node's {total} objects", d["objects"]);
            for f in disks.iter().filter(|d| d["state"] == "failed") {
                line.push_str(&format!(" (disk {} failed: the move ends once it is drained)", f["id"]));
            }
            progress(tty, &mut last, line);
            match d["state"].as_str() {
                Some("online") if d["spilled"] == false => {
                    if tty {
                        eprintln!();
                    }
                    println!("disk {disk} holds its share: {} objects", d["objects"]);
                    return Ok(());
                }
                Some("online") => {}
                other => return Err(format!("disk {disk} is {}, not online", other.unwrap_or("?"))),
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    })
}

/// `podstore index-info`: a stopped node's disk, inspected offline without changing it. It
/// opens everything read-only and holds a shared lock on the disk while it reads (lock.rs in
/// podstore-disks): refused while a node holds the disk, and a node can't start on it meanwhile.
pub fn index_info(dir: &Path) -> Result<(), String> {
    let _lock = podstore_disks::DiskLock::shared_if_present(dir).map_err(|e| match e {
        podstore_disks::Error::Locked { .. } => {
            format!("{e}. index-info reads a stopped node's disk; ask a running node with `podstore stat`")
        }
        e => e.to_string(),
    })?;
    let label_path: PathBuf = dir.join(podstore_disks::label::LABEL_FILE);
    let label_bytes = std::fs::read(&label_path)
        .map_err(|e| format!("{}: {e} (not a podstore disk?)", label_path.display()))?;
    let label = podstore_disks::label::Label::decode(&label_bytes)
        .map_err(|e| format!("{}: {e}", label_path.display()))?;
    let cfg = podstore_engine::ShardConfig { read_only: true, ..podstore_engine::ShardConfig::default() };
    let rt = runtime()?;
    let dir = dir.to_path_buf();
    tokio::task::LocalSet::new().block_on(&rt, async move {
        let io = podstore_disks::SyncIo::new(podstore_disks::CacheMode::Buffered);
        let (shard, report) =
            podstore_engine::Shard::open(io, cfg, &dir, label.disk_id).await.map_err(|e| e.to_string())?;
        let st = shard.stats();
        println!(
            "disk {} of node {:?} ({} tier), {} (opened read-only)",
            label.disk_id,
            label.node_id,
            label.tier,
            dir.display()
        );
        println!("blobs:            {} ({} bytes, {} used)", st.blobs, st.blob_bytes, st.used_bytes);
        println!("objects:          {}", st.objects);
        println!("deleted (tombstones): {}", st.tombstones);
        println!("live bytes:       {}", st.live_bytes);
        println!("dead bytes:       {}", st.dead_bytes);
        println!("quarantined:      {}", st.quarantined);
        println!("index memory:     {} bytes", st.index_bytes);
        match report.checkpoint_seq {
            Some(seq) => {
                println!("checkpoint:       up to sequence {seq} ({} entries)", report.checkpoint_entries)
            }
            None => println!("checkpoint:       none (index rebuilt from the blobs)"),
        }
        println!(
            "scanned:          {} bytes after the checkpoint, {} records",
            report.bytes_scanned, report.records_applied
        );
        println!(
            "torn tails:       {} items in {} blobs (a start would truncate them)",
            report.torn_tail_items, report.tails_truncated
        );
        for q in shard.quarantined() {
            println!(
                "quarantined:      blob {} offset {} length {} ({}){}",
                q.blob,
                q.offset,
                q.len_bytes,
                q.reason.as_str(),
                q.key.as_ref().map(|_| ", key known").unwrap_or("")
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_paths_keep_slashes_and_escape_the_rest() {
        assert_eq!(super::url_path("photos/a b/ключ?.jpg"), "/photos/a%20b/%D0%BA%D0%BB%D1%8E%D1%87%3F.jpg");
    }
}
