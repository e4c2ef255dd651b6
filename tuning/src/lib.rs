//! Host checks and settings for a storage pod (`podstore-tune check|apply`), and the
//! measurement of each disk (`podstore-tune measure`, in [`measure`]).
//!
//! Every setting is read from, and written to, a tree rooted at `root` (`/` on a real host; a
//! fixture directory in tests), so nothing here needs the machine it runs on to be a pod. A
//! setting has a current value, a recommended value and the reason for it; `apply` writes
//! only the settings that differ and that podstore-tune may change (some are reported only,
//! e.g. the rotational flag or the memlock limit, which the systemd unit sets), so a second
//! run changes nothing.
#![forbid(unsafe_code)]

pub mod measure;

use std::fmt;
use std::path::{Path, PathBuf};

/// One setting of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// What it is, e.g. `sda queue/scheduler` or `net.core.rmem_max`.
    pub name: String,
    /// The file holding it, relative to the root.
    pub path: PathBuf,
    /// What the file says now (normalised), None if it can't be read.
    pub current: Option<String>,
    /// What a storage pod wants; None when nothing is recommended (reported only).
    pub recommended: Option<String>,
    /// Why.
    pub why: String,
    /// Whether `apply` writes it.
    pub writable: bool,
}

impl Setting {
    /// Whether the current value is the recommended one (or nothing is recommended).
    pub fn ok(&self) -> bool {
        match (&self.recommended, &self.current) {
            (None, _) => true,
            (Some(r), Some(c)) => normalise(r) == normalise(c),
            (Some(_), None) => false,
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok() {
            "ok  "
        } else if self.writable {
            "SET "
        } else {
            "NOTE"
        };
        write!(
            f,
            "{mark} {:<40} current: {:<24} recommended: {:<24} {}",
            self.name,
            self.current.as_deref().unwrap_or("(unreadable)"),
            self.recommended.as_deref().unwrap_or("-"),
            self.why
        )
    }
}

/// Whitespace-insensitive form of a value (`4096 87380 67108864` and tabs alike).
fn normalise(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn read(root: &Path, rel: &Path) -> Option<String> {
    std::fs::read_to_string(root.join(rel)).ok().map(|s| s.trim().to_string())
}

/// The selected entry of a sysfs choice list such as `[mq-deadline] kyber none`.
fn selected(v: &str) -> String {
    match (v.find('['), v.find(']')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].to_string(),
        _ => v.trim().to_string(),
    }
}

/// Block devices that hold data: physical disks, not loop, RAM, device-mapper or md devices.
fn data_disks(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root.join("sys/block"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    out.retain(|n| !["loop", "ram", "zram", "dm-", "md", "nbd", "sr"].iter().any(|p| n.starts_with(p)));
    out.sort();
    out
}

fn sysctl(root: &Path, key: &str, recommended: &str, why: &str) -> Setting {
    let path = PathBuf::from("proc/sys").join(key.replace('.', "/"));
    Setting {
        name: key.to_string(),
        current: read(root, &path),
        path,
        recommended: Some(recommended.to_string()),
        why: why.to_string(),
        writable: true,
    }
}

fn disk_settings(root: &Path, dev: &str) -> Vec<Setting> {
    let q = PathBuf::from("sys/block").join(dev).join("queue");
    let rotational = read(root, &q.join("rotational")).is_some_and(|v| v == "1");
    vec![
        Setting {
            name: format!("{dev} queue/rotational"),
            path: q.join("rotational"),
            current: read(root, &q.join("rotational")),
            recommended: None,
            why: format!(
                "{}: decides the rest (reported only)",
                if rotational { "a spinning disk" } else { "a solid-state device" }
            ),
            writable: false,
        },
        Setting {
            name: format!("{dev} queue/scheduler"),
            path: q.join("scheduler"),
            current: read(root, &q.join("scheduler")).map(|s| selected(&s)),
            recommended: Some(if rotational { "mq-deadline" } else { "none" }.to_string()),
            why: if rotational {
                "mq-deadline bounds the wait of reads behind podstore's long sequential writes".into()
            } else {
                "no scheduler: podstore bounds its own queue depth per disk".into()
            },
            writable: true,
        },
        Setting {
            name: format!("{dev} queue/read_ahead_kb"),
            path: q.join("read_ahead_kb"),
            current: read(root, &q.join("read_ahead_kb")),
            recommended: Some("0".into()),
            why: "podstore reads with O_DIRECT exactly what it needs; read-ahead only wastes the disk's time for anything else".into(),
            writable: true,
        },
        Setting {
            name: format!("{dev} queue/nr_requests"),
            path: q.join("nr_requests"),
            current: read(root, &q.join("nr_requests")),
            // A solid-state device's depth is its hardware's; a disk's is the scheduler's.
            recommended: rotational.then(|| "256".to_string()),
            why: if rotational {
                "deep enough for podstore's reads and group-committed writes in flight at once".into()
            } else {
                "set by the device (reported only)".into()
            },
            writable: rotational,
        },
        Setting {
            name: format!("{dev} queue/write_cache"),
            path: q.join("write_cache"),
            current: read(root, &q.join("write_cache")),
            recommended: Some("write back".into()),
            why: "podstore flushes with fdatasync before it answers, so the volatile cache is safe and fast".into(),
            writable: false,
        },
    ]
}

/// IRQs of storage adapters and NICs: their CPUs should be those of the device's NUMA node.
fn irq_settings(root: &Path) -> Vec<Setting> {
    let Some(text) = read(root, Path::new("proc/interrupts")) else { return Vec::new() };
    let numa_cpus =
        |node: &str| read(root, &PathBuf::from(format!("sys/devices/system/node/node{node}/cpulist")));
    // Each NIC's NUMA node, by interface name.
    let nics: Vec<(String, Option<String>)> = std::fs::read_dir(root.join("sys/class/net"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lo")
                .map(|n| {
                    let node = read(root, &PathBuf::from(format!("sys/class/net/{n}/device/numa_node")));
                    (n, node)
                })
                .collect()
        })
        .unwrap_or_default();
    const HBAS: [&str; 6] = ["mpt3sas", "megasas", "ahci", "nvme", "aacraid", "smartpqi"];
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let Some((irq, rest)) = line.trim_start().split_once(':') else { continue };
        if irq.parse::<u32>().is_err() {
            continue;
        }
        let name = rest.split_whitespace().last().unwrap_or("");
        let (what, node) = if let Some((nic, node)) = nics.iter().find(|(n, _)| name.starts_with(n.as_str()))
        {
            (format!("NIC {nic}"), node.clone())
        } else if let Some(h) = HBAS.iter().find(|h| name.starts_with(*h)) {
            (format!("storage adapter {h}"), None)
        } else {
            continue;
        };
        // A node of -1 (no NUMA) or an unknown one: spread over every CPU is fine.
        let recommended = node.filter(|n| n != "-1").and_then(|n| numa_cpus(&n));
        let path = PathBuf::from(format!("proc/irq/{irq}/smp_affinity_list"));
        out.push(Setting {
            name: format!("irq {irq} ({name}) smp_affinity_list"),
            current: read(root, &path),
            path,
            why: match &recommended {
                Some(_) => format!("{what}: on the CPUs of its own NUMA node"),
                None => format!("{what}: its NUMA node is unknown (reported only)"),
            },
            writable: recommended.is_some(),
            recommended,
        });
    }
    out
}

/// Every setting podstore-tune knows, read from the tree at `root`.
pub fn check(root: &Path) -> Vec<Setting> {
    let mut v = Vec::new();
    for d in data_disks(root) {
        v.extend(disk_settings(root, &d));
    }
    v.extend(irq_settings(root));
    let buf = "67108864";
    v.push(sysctl(
        root,
        "net.core.rmem_max",
        buf,
        "64 MiB socket buffers let one replication stream fill a long, fast link",
    ));
    v.push(sysctl(root, "net.core.wmem_max", buf, "as net.core.rmem_max, for sending"));
    v.push(sysctl(
        root,
        "net.ipv4.tcp_rmem",
        "4096 131072 67108864",
        "TCP autotuning may grow a receive buffer to 64 MiB",
    ));
    v.push(sysctl(
        root,
        "net.ipv4.tcp_wmem",
        "4096 65536 67108864",
        "TCP autotuning may grow a send buffer to 64 MiB",
    ));
    v.push(sysctl(
        root,
        "net.core.somaxconn",
        "4096",
        "the listen backlog podstore asks for (bursts of proxy connections)",
    ));
    v.push(sysctl(
        root,
        "net.core.netdev_max_backlog",
        "16384",
        "packets queued per CPU before the stack drops them at 10-25 Gbit/s",
    ));
    v.push(sysctl(
        root,
        "net.ipv4.tcp_max_syn_backlog",
        "8192",
        "half-open connections kept during connection bursts",
    ));
    v.push(sysctl(root, "vm.dirty_background_ratio", "5", "podstore writes with O_DIRECT; other writers' dirty pages start writeback early instead of stalling the disks in bursts"));
    v.push(sysctl(
        root,
        "vm.dirty_ratio",
        "10",
        "as vm.dirty_background_ratio: a bounded amount of dirty page cache",
    ));
    v.push(sysctl(root, "vm.swappiness", "10", "the index lives in memory: keep it out of swap"));
    v.push(sysctl(
        root,
        "kernel.io_uring_disabled",
        "0",
        "podstore's I/O goes through io_uring (1 or 2 would force the slower fallback)",
    ));
    v.push(sysctl(root, "fs.nr_open", "1048576", "at least the unit's LimitNOFILE"));
    let memlock = read(root, Path::new("proc/self/limits")).and_then(|t| {
        t.lines().find(|l| l.starts_with("Max locked memory")).map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(3).map(|s| s.to_string()).unwrap_or_default()
        })
    });
    v.push(Setting {
        name: "memlock (this process)".into(),
        path: PathBuf::from("proc/self/limits"),
        current: memlock,
        recommended: Some("unlimited".into()),
        why: "registered io_uring buffers are locked memory; podstore.service sets LimitMEMLOCK=infinity (reported only)".into(),
        writable: false,
    });
    v
}

/// What `apply` did to one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Written (or, in a dry run, would be).
    Set { name: String, from: Option<String>, to: String },
    /// The write failed.
    Failed { name: String, error: String },
}

/// Writes every writable setting that differs from its recommendation; with `dry_run`, only
/// says what it would write. Already-right settings are left alone, so a second run changes
/// nothing.
pub fn apply(root: &Path, dry_run: bool) -> Vec<Change> {
    let mut out = Vec::new();
    for s in check(root) {
        if s.ok() || !s.writable {
            continue;
        }
        let Some(to) = s.recommended.clone() else { continue };
        if !dry_run {
            if let Err(e) = std::fs::write(root.join(&s.path), format!("{to}\n")) {
                out.push(Change::Failed { name: s.name, error: format!("{}: {e}", s.path.display()) });
                continue;
            }
        }
        out.push(Change::Set { name: s.name, from: s.current, to });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selected_entry_of_a_choice_list() {
        assert_eq!(selected("[mq-deadline] kyber none"), "mq-deadline");
        assert_eq!(selected("none"), "none");
        assert_eq!(selected("mq-deadline [none]"), "none");
    }

    #[test]
    fn values_compare_without_regard_to_whitespace() {
        let s = Setting {
            name: "x".into(),
            path: "p".into(),
            current: Some("4096\t131072\t67108864".into()),
            recommended: Some("4096 131072 67108864".into()),
            why: String::new(),
            writable: true,
        };
        assert!(s.ok());
    }
}
