//! `podstore-tune` against sysfs/procfs fixture trees (never the test machine's settings).

use std::path::Path;
use std::process::Command;

use podstore_tuning::{apply, check, Change};

fn put(root: &Path, rel: &str, value: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, format!("{value}\n")).expect("write");
}

fn get(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).expect("read").trim().to_string()
}

/// A pod in miniature: a spinning disk, an NVMe device, a loop device (not a data disk), a NIC
/// on NUMA node 1 with its IRQ on the wrong CPUs, an HBA, and untuned sysctls.
fn pod(root: &Path) {
    for (dev, rot, sched) in
        [("sda", "1", "[none] mq-deadline kyber bfq"), ("nvme0n1", "0", "[mq-deadline] none")]
    {
        put(root, &format!("sys/block/{dev}/queue/rotational"), rot);
        put(root, &format!("sys/block/{dev}/queue/scheduler"), sched);
        put(root, &format!("sys/block/{dev}/queue/read_ahead_kb"), "128");
        put(root, &format!("sys/block/{dev}/queue/nr_requests"), "64");
        put(root, &format!("sys/block/{dev}/queue/write_cache"), "write back");
    }
    put(root, "sys/block/loop0/queue/scheduler", "[none]");
    put(root, "sys/class/net/eth0/device/numa_node", "1");
    put(root, "sys/devices/system/node/node0/cpulist", "0-15");
    put(root, "sys/devices/system/node/node1/cpulist", "16-31");
    put(
        root,
        "proc/interrupts",
        "           CPU0       CPU1\n  24:   100   200   PCI-MSI 1048576-edge      eth0-TxRx-0\n  40:   5   6   PCI-MSI 2-edge      mpt3sas0-msix0\n  50:   1   1   IO-APIC   1-edge      i8042\nNMI:   0   0   Non-maskable interrupts\n",
    );
    put(root, "proc/irq/24/smp_affinity_list", "0-31");
    put(root, "proc/irq/40/smp_affinity_list", "0-31");
    for (k, v) in [
        ("net/core/rmem_max", "212992"),
        ("net/core/wmem_max", "212992"),
        ("net/ipv4/tcp_rmem", "4096\t131072\t6291456"),
        ("net/ipv4/tcp_wmem", "4096\t16384\t4194304"),
        ("net/core/somaxconn", "4096"),
        ("net/core/netdev_max_backlog", "1000"),
        ("net/ipv4/tcp_max_syn_backlog", "512"),
        ("vm/dirty_background_ratio", "10"),
        ("vm/dirty_ratio", "20"),
        ("vm/swappiness", "60"),
        ("kernel/io_uring_disabled", "2"),
        ("fs/nr_open", "1048576"),
    ] {
        put(root, &format!("proc/sys/{k}"), v);
    }
    put(root, "proc/self/limits", "Limit                     Soft Limit           Hard Limit           Units\nMax locked memory         8388608              8388608              bytes\n");
}

#[test]
fn check_reports_apply_fixes_and_a_second_apply_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("podstore-tune-fixture-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    pod(&dir);
    let all = check(&dir);
    let find =
        |name: &str| all.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name} in {all:#?}"));
    // Per disk, by kind; the loop device is not a data disk.
    assert_eq!(find("sda queue/scheduler").current.as_deref(), Some("none"));
    assert_eq!(find("sda queue/scheduler").recommended.as_deref(), Some("mq-deadline"));
    assert_eq!(find("nvme0n1 queue/scheduler").recommended.as_deref(), Some("none"));
    assert!(!find("nvme0n1 queue/nr_requests").writable, "an NVMe device's depth is its own");
    assert!(all.iter().all(|s| !s.name.starts_with("loop0")));
    assert!(find("sda queue/write_cache").ok());
    // The NIC's IRQ goes to its NUMA node's CPUs; the HBA's node is unknown: reported only.
    let nic = find("irq 24 (eth0-TxRx-0) smp_affinity_list");
    assert_eq!((nic.current.as_deref(), nic.recommended.as_deref()), (Some("0-31"), Some("16-31")));
    assert!(!find("irq 40 (mpt3sas0-msix0) smp_affinity_list").writable);
    assert!(all.iter().all(|s| !s.name.contains("i8042")), "only storage adapters and NICs");
    assert!(!find("memlock (this process)").ok() && !find("memlock (this process)").writable);
    assert!(find("net.core.somaxconn").ok());

    // A dry run says what it would write and writes nothing.
    let dry = apply(&dir, true);
    assert!(dry.len() >= 14, "{dry:#?}");
    assert_eq!(get(&dir, "sys/block/sda/queue/scheduler"), "[none] mq-deadline kyber bfq");
    assert_eq!(get(&dir, "proc/sys/kernel/io_uring_disabled"), "2");

    let done = apply(&dir, false);
    assert_eq!(done, dry, "apply writes what the dry run announced");
    assert!(done.iter().all(|c| matches!(c, Change::Set { .. })));
    assert_eq!(get(&dir, "sys/block/sda/queue/scheduler"), "mq-deadline");
    assert_eq!(get(&dir, "sys/block/nvme0n1/queue/scheduler"), "none");
    assert_eq!(get(&dir, "sys/block/sda/queue/read_ahead_kb"), "0");
    assert_eq!(get(&dir, "sys/block/sda/queue/nr_requests"), "256");
    assert_eq!(get(&dir, "sys/block/nvme0n1/queue/nr_requests"), "64", "reported only");
    assert_eq!(get(&dir, "proc/irq/24/smp_affinity_list"), "16-31");
    assert_eq!(get(&dir, "proc/irq/40/smp_affinity_list"), "0-31");
    assert_eq!(get(&dir, "proc/sys/net/ipv4/tcp_rmem"), "4096 131072 67108864");
    assert_eq!(get(&dir, "proc/sys/kernel/io_uring_disabled"), "0");
    assert_eq!(get(&dir, "proc/sys/net/core/somaxconn"), "4096", "already right: untouched");

    assert!(apply(&dir, false).is_empty(), "idempotent");
    assert!(check(&dir).iter().all(|s| s.ok() || !s.writable));

    // The binary: check --strict fails on an untuned tree and passes on a tuned one.
    let bin = env!("CARGO_BIN_EXE_podstore-tune");
    let root = dir.to_str().expect("utf8");
    let out = Command::new(bin).args(["check", "--strict", "--root", root]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 to change"));
    put(&dir, "proc/sys/vm/swappiness", "60");
    let out = Command::new(bin).args(["check", "--strict", "--root", root]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("vm.swappiness") && text.contains("1 to change"), "{text}");
    let out = Command::new(bin).args(["apply", "--dry-run", "--root", root]).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("would set vm.swappiness: 60 -> 10"));
    assert_eq!(get(&dir, "proc/sys/vm/swappiness"), "60");
    let out = Command::new(bin).args(["apply", "--root", root]).output().expect("run");
    assert!(out.status.success());
    assert_eq!(get(&dir, "proc/sys/vm/swappiness"), "10");
    let out = Command::new(bin).args(["apply", "--root", root]).output().expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "nothing to change");
    // A setting that can't be written is an error, and the others still get written.
    put(&dir, "proc/sys/vm/swappiness", "60");
    put(&dir, "proc/sys/vm/dirty_ratio", "20");
    std::fs::remove_dir_all(dir.join("proc/irq/24")).expect("rm");
    std::fs::create_dir_all(dir.join("proc/irq/24/smp_affinity_list"))
        .expect("a directory where the file was");
    let out = Command::new(bin).args(["apply", "--root", root]).output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(get(&dir, "proc/sys/vm/swappiness"), "10");
    assert_eq!(get(&dir, "proc/sys/vm/dirty_ratio"), "10");
    let _ = std::fs::remove_dir_all(&dir);
}
