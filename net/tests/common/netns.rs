//! Appliances in their own network namespaces ("datacenters") joined by a bridge that lives in
//! a namespace of its own: 10.77.0.x addresses exist only inside our namespaces. Partitions
//! are nft drop rules inside a node's namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

pub struct Net {
    prefix: String,
    pub size: usize,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out =
        Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// Why the namespace tests can't run here, if they can't.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    for tool in ["ip", "nft", "tc"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("{tool} is not installed (apt-get install iproute2 nftables)"));
        }
    }
    None
}

/// The namespaces for `test` (which runs only when asked: a machine that can't make them
/// fails it).
pub fn setup(test: &str, size: usize) -> Net {
    if let Some(why) = unavailable() {
        panic!("{test}: can't run: {why}");
    }
    Net::setup(size).unwrap_or_else(|e| panic!("{test}: namespace setup failed: {e}"))
}

impl Net {
    /// `size` node namespaces and a bridge namespace.
    pub fn setup(size: usize) -> Result<Net, String> {
        let net = Net { prefix: format!("pst{}", std::process::id() % 100_000), size };
        let br = net.bridge();
        run(&["ip", "netns", "add", &br])?;
        run(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &br, "link", "set", "br0", "up"])?;
        for i in 0..size {
            let ns = net.ns(i);
            let peer = format!("b{i}");
            run(&["ip", "netns", "add", &ns])?;
            run(&[
                "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &peer, "netns", &br,
            ])?;
            run(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", net.ip(i)), "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            run(&["ip", "-n", &br, "link", "set", &peer, "master", "br0"])?;
            run(&["ip", "-n", &br, "link", "set", &peer, "up"])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("{}-br", self.prefix)
    }

    /// The namespace of node `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }

    /// Node `i`'s address.
    pub fn ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 77, 0, i as u8 + 1))
    }

    fn table(&self, i: usize) -> Result<(), String> {
        let ns = self.ns(i);
        if run(&["ip", "netns", "exec", &ns, "nft", "list", "table", "inet", "pst"]).is_ok() {
            return Ok(());
        }
        run(&["ip", "netns", "exec", &ns, "nft", "add", "table", "inet", "pst"])?;
        run(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "nft",
            "add chain inet pst in { type filter hook input priority 0; }",
        ])?;
        run(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "nft",
            "add chain inet pst out { type filter hook output priority 0; }",
        ])
    }

    /// Node `from` can no longer send to node `to` (packets dropped as they leave `from`).
    pub fn drop_one_way(&self, from: usize, to: usize) {
        self.table(from).expect("nft table");
        let rule = format!("add rule inet pst out ip daddr {} drop", self.ip(to));
        run(&["ip", "netns", "exec", &self.ns(from), "nft", &rule]).expect("nft rule");
    }

    /// Nodes `a` and `b` can't reach each other in either direction.
    pub fn partition(&self, a: usize, b: usize) {
        self.drop_one_way(a, b);
        self.drop_one_way(b, a);
    }

    /// Node `i`'s outgoing traffic capped at `rate` (tc tbf on its interface, e.g. "20mbit").
    pub fn cap(&self, i: usize, rate: &str) {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.ns(i),
            "tc",
            "qdisc",
            "replace",
            "dev",
            "eth0",
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            "64kb",
            "latency",
            "100ms",
        ])
        .expect("tc tbf");
    }

    /// Node `i`'s cap removed.
    pub fn uncap(&self, i: usize) {
        let _ = run(&["ip", "netns", "exec", &self.ns(i), "tc", "qdisc", "del", "dev", "eth0", "root"]);
    }

    /// Every drop rule removed.
    pub fn heal(&self) {
        for i in 0..self.size {
            let _ = run(&["ip", "netns", "exec", &self.ns(i), "nft", "flush", "ruleset"]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.size {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
        }
        let _ = run(&["ip", "netns", "del", &self.bridge()]);
    }
}
