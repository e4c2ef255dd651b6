//! Starting the real `podstore` binary for tests, and a raw HTTP/1.1 client (raw, so tests can
//! also send what no well-behaved client would).

#![allow(dead_code)]

pub mod cluster;
pub mod history;
pub mod netns;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Writes an access key's secret file (mode 0600, as the node requires) and returns its path.
pub fn secret_file(dir: &Path, name: &str, secret: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("{secret}\n")).expect("write secret");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

/// Runs the binary with `args` to its end, output captured; killed (and the test failed) if it
/// has not ended within 60 s (a node that should have refused to start, say).
pub fn run_podstore(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let child = Command::new(env!("CARGO_BIN_EXE_podstore"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run podstore");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            signal(pid, "KILL");
            panic!("podstore {args:?} did not end within 60 s");
        }
    }
}

/// What a finished command wrote to stderr.
pub fn stderr_text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits until `f` holds (copies sent in the background arrive soon, not at once).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("never happened: {what}");
}

pub fn metric(node: &Node, prefix: &str) -> f64 {
    let text = String::from_utf8(node.admin("/metrics").body).expect("utf8");
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A free TCP port on loopback (bound and released), never the same one twice in a test
/// process: the tests run in parallel, and the kernel may hand a released port out again
/// before the node it was chosen for has bound it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

/// A free loopback address.
pub fn free_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().expect("addr")
}

pub struct Node {
    /// The network namespace the node runs in (None: the test's own).
    pub netns: Option<String>,
    pub child: Option<Child>,
    pub data: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// A fresh directory for a test node, with `disk0`..`disk2` in it.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("podstore-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for i in 0..3 {
        std::fs::create_dir_all(dir.join(format!("disk{i}"))).expect("mkdir disk");
    }
    dir
}

/// Extra TOML for the node's config (limits and so on), put after the fixed part.
pub fn config_text(dir: &Path, data: SocketAddr, admin: SocketAddr, extra: &str) -> String {
    config_text_as("test-node", dir, data, admin, extra)
}

/// [`config_text`] for a node with its own node_id.
pub fn config_text_as(node_id: &str, dir: &Path, data: SocketAddr, admin: SocketAddr, extra: &str) -> String {
    config_text_tiered(node_id, dir, data, admin, extra, &[])
}

/// [`config_text_as`] with disks `fast` of the fast tier (the others capacity).
pub fn config_text_tiered(
    node_id: &str,
    dir: &Path,
    data: SocketAddr,
    admin: SocketAddr,
    extra: &str,
    fast: &[u32],
) -> String {
    let mut disks = String::new();
    for i in 0..3 {
        let tier = if fast.contains(&i) { "fast" } else { "capacity" };
        disks.push_str(&format!(
            "[[disks]]\nid = {i}\npath = \"{}\"\ntier = \"{tier}\"\nrequire_mount_point = false\nweight = 1.0\n\n",
            dir.join(format!("disk{i}")).display()
        ));
    }
    // Small blobs, unless the extra text sets its own [engine] table.
    let engine = if extra.contains("[engine]") { "" } else { "[engine]\nblob_size_bytes = 8388608\n" };
    format!("node_id = \"{node_id}\"\n\n[listen]\ndata = \"{data}\"\nadmin = \"{admin}\"\n\n{engine}\n{extra}\n\n{disks}")
}

impl Node {
    /// Starts a node on three directory disks under a fresh temp directory.
    pub fn start(name: &str, extra: &str) -> Node {
        Node::start_as(name, "test-node", extra)
    }

    /// [`Node::start`] with a node_id.
    pub fn start_as(name: &str, node_id: &str, extra: &str) -> Node {
        Node::start_on(name, node_id, free_addr(), free_addr(), extra)
    }

    /// [`Node::start`] with a node_id and ports chosen by the caller.
    pub fn start_on(name: &str, node_id: &str, data: SocketAddr, admin: SocketAddr, extra: &str) -> Node {
        Node::start_in(fresh_dir(name), node_id, data, admin, extra)
    }

    /// [`Node::start`] with disks `fast` of the fast tier.
    pub fn start_tiered(name: &str, fast: &[u32], extra: &str) -> Node {
        let (dir, data, admin) = (fresh_dir(name), free_addr(), free_addr());
        let text = config_text_tiered("test-node", &dir, data, admin, extra, fast);
        Node::start_with_config(dir, data, admin, text)
    }

    /// Starts a node whose directory (with `disk0`..`disk2` in it) the caller prepared.
    pub fn start_in(dir: PathBuf, node_id: &str, data: SocketAddr, admin: SocketAddr, extra: &str) -> Node {
        let text = config_text_as(node_id, &dir, data, admin, extra);
        Node::start_with_config(dir, data, admin, text)
    }

    /// Starts a node on the config `text` (written to `dir/podstore.toml`).
    pub fn start_with_config(dir: PathBuf, data: SocketAddr, admin: SocketAddr, text: String) -> Node {
        let config = dir.join("podstore.toml");
        std::fs::write(&config, text).expect("write config");
        let log = dir.join("node.log");
        let mut n = Node { netns: None, child: None, data, admin, dir, config, log };
        n.spawn(&[]);
        n
    }

    /// Starts (or restarts) the process with extra environment variables.
    pub fn spawn(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        let mut cmd = match &self.netns {
            None => Command::new(env!("CARGO_BIN_EXE_podstore")),
            Some(ns) => {
                // `ip netns exec` enters the namespace and execs podstore (same pid).
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_podstore")]);
                c
            }
        };
        cmd.args(["serve", "--config"]).arg(&self.config).stdout(Stdio::null()).stderr(log);
        if !self.data.ip().is_loopback() || !self.admin.ip().is_loopback() {
            // A namespace's own addresses (the replication tests): not what they test.
            cmd.arg("--insecure");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start podstore"));
        self.wait_ready();
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("podstore exited during startup: {st:?}\n{}", self.log_text());
            }
            if let Ok(r) = self.try_req("GET", "/_/ready", &[], b"") {
                if r.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("podstore did not become ready\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// SIGTERM and wait: returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        signal(c.id() as i32, "TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("podstore did not stop within 60 s after SIGTERM\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.try_req(method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A request on the data port; an error if the node can't be reached or answered badly.
    pub fn try_req(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        request_on(self.connect(self.data)?, method, path, headers, body)
    }

    pub fn admin(&self, path: &str) -> Resp {
        self.connect(self.admin)
            .and_then(|s| request_on(s, "GET", path, &[], b""))
            .unwrap_or_else(|e| panic!("admin {path}: {e}"))
    }

    /// A connection to one of the node's ports, from inside its namespace if it has one.
    pub fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        match &self.netns {
            None => TcpStream::connect_timeout(&addr, Duration::from_secs(5)),
            Some(ns) => netns_connect(ns, addr),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn signal(pid: i32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json_error(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&self.body)));
        v["error"].as_str().expect("error code").to_string()
    }
}

/// One request on a fresh connection; reads the whole response (by Content-Length).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    request_on(TcpStream::connect_timeout(&addr, Duration::from_secs(5))?, method, path, headers, body)
}

/// A TCP connection made from inside the network namespace `ns` (`/run/netns/<ns>`): a thread
/// enters the namespace, connects and leaves; the socket stays in the namespace.
pub fn netns_connect(ns: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let f = std::fs::File::open(&path)?;
            // SAFETY: setns on a valid namespace fd changes only this thread's network
            // namespace; the thread ends right after connecting.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        })
        .join()
        .map_err(|_| std::io::Error::other("connect thread panicked"))?
    })
}

/// One request on a connected stream; reads the whole response (by Content-Length).
pub fn request_on(
    mut s: TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    let has_len = headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    });
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len && (method == "PUT" || !body.is_empty()) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    read_response(&mut BufReader::new(s), method == "HEAD")
}

pub fn read_response<R: Read>(r: &mut BufReader<R>, head: bool) -> std::io::Result<Resp> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l)?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; if head || status == 304 || status == 204 { 0 } else { len }];
    r.read_exact(&mut body)?;
    Ok(Resp { status, headers, body })
}
