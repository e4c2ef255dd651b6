//! `podstore-bench`: the storage engine's benchmarks beside fio on the same filesystem, in one
//! run, printed as ratios against the issue's targets.
//!
//! ```text
//! podstore-bench [--dir DIR] [--quick]
//! ```
//! `DIR` (default `./target/bench-data`) should be on the disk to measure; it is emptied.
//! `--quick` runs everything at a small size (a minute instead of several).

use std::path::{Path, PathBuf};
use std::process::Command;

use podstore_benches::*;

struct Fio {
    iops: f64,
    mib_s: f64,
}

fn fio(dir: &Path, name: &str, args: &[&str]) -> Option<Fio> {
    let file = dir.join(format!("fio-{name}.dat"));
    let out = Command::new("fio")
        .arg(format!("--name={name}"))
        .arg(format!("--filename={}", file.display()))
        .args(["--ioengine=io_uring", "--direct=1", "--output-format=json", "--group_reporting"])
        .args(args)
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&file);
    if !out.status.success() {
        eprintln!("fio {name} failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let job = &v["jobs"][0];
    let side = if job["write"]["io_bytes"].as_u64().unwrap_or(0) > 0 { &job["write"] } else { &job["read"] };
    Some(Fio { iops: side["iops"].as_f64()?, mib_s: side["bw_bytes"].as_f64()? / (1 << 20) as f64 })
}

fn machine(dir: &Path) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let df = Command::new("df")
        .args(["--output=source,fstype,size", &dir.display().to_string()])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {kernel}, disk: {df}")
}

fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio >= target {
        "meets"
    } else {
        "below"
    }
}

fn main() {
    let mut dir = PathBuf::from("target/bench-data");
    let mut quick = false;
    let mut names_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = PathBuf::from(args.next().expect("--dir needs a value")),
            "--quick" => quick = true,
            "--names" => names_only = true,
            "-h" | "--help" => {
                println!(
                    "usage: podstore-bench [--dir DIR] [--quick] [--names (the name index's rows only)]"
                );
                return;
            }
            other => {
                eprintln!("unknown argument {other:?}; try --help");
                std::process::exit(2);
            }
        }
    }
    std::fs::create_dir_all(&dir).expect("create bench dir");
    let scale: u64 = if quick { 1 } else { 4 };
    println!("# podstore engine benchmarks");
    println!("machine: {}", machine(&dir));
    println!("mode: {}", if quick { "quick" } else { "full" });
    println!();
    println!("| benchmark | podstore | machine limit (fio, same run) | ratio | target | |");
    println!("|---|---|---|---|---|---|");
    if names_only {
        names_rows(&dir, quick);
        return;
    }

    // Each comparison alternates podstore and fio `REPS` times on fresh files and reports the
    // medians: the disks of shared machines are noisy.
    // 1. Durable sequential append of 1 MiB objects (16 writers, every put acknowledged after
    //    its fdatasync) vs fio sequential 1 MiB writes at QD16 without fsync.
    let total = 256u64 << 20 << (scale / 2);
    let size = format!("--size={total}");
    let (ours, theirs) = repeat(|| {
        let r = durable_puts(&fresh_dir(&dir, "seq"), 1 << 20, 16, total);
        let f = fio(&dir, "seqwrite", &["--rw=write", "--bs=1M", "--iodepth=16", &size]);
        (r.mib_per_s(), f.map(|f| f.mib_s))
    });
    row(
        "durable 1 MiB appends, 16 writers",
        format!("{ours:.0} MiB/s"),
        theirs,
        ours,
        "MiB/s (write, bs=1M, QD16, no fsync)",
        0.8,
    );

    // 2. 4 KiB durable puts from 64 writers vs fio 4 KiB write + fdatasync at QD1.
    let runtime = format!("--runtime={}", 2 * scale);
    let (ours, theirs) = repeat(|| {
        let r = durable_puts(&fresh_dir(&dir, "small"), 4096, 64, 16u64 << 20 << (scale / 2));
        let f = fio(
            &dir,
            "syncwrite",
            &[
                "--rw=write",
                "--bs=4k",
                "--iodepth=1",
                "--fdatasync=1",
                "--size=256M",
                "--time_based",
                &runtime,
            ],
        );
        (r.ops_per_s(), f.map(|f| f.iops))
    });
    row(
        "4 KiB durable puts, 64 writers",
        format!("{ours:.0} puts/s"),
        theirs,
        ours,
        "IOPS (write+fdatasync, QD1)",
        3.0,
    );

    // 3. Random GETs of stored objects, 32 readers, vs fio random reads at QD32 of the same
    //    size: 3,800-byte objects are one 4 KiB record (header, key, data and footer), so a GET
    //    is one 4 KiB read; 4,096-byte objects need an 8 KiB record.
    let objects = 32_768 * scale;
    for (object, record) in [(3800usize, "4k"), (4096, "8k")] {
        let rsize = format!("--size={}", objects * 8192);
        let bs = format!("--bs={record}");
        let (ours, theirs) = repeat(|| {
            let r = random_reads(&fresh_dir(&dir, "reads"), object, objects, 32, 50_000 * scale);
            let f = fio(
                &dir,
                "randread",
                &["--rw=randread", &bs, "--iodepth=32", &rsize, "--time_based", &runtime],
            );
            (r.ops_per_s(), f.map(|f| f.iops))
        });
        let name = format!("{object}-byte object GETs ({record} record), 32 readers");
        row(
            &name,
            format!("{ours:.0} GETs/s"),
            theirs,
            ours,
            &format!("IOPS (randread {record}, QD32)"),
            0.8,
        );
    }

    // 4. Index memory per object at 10 million objects.
    let n = 10_000_000;
    let b = index_bytes_per_object(n);
    println!(
        "| index memory, {n} objects | {b:.1} bytes/object | - | - | at most 32 | {} |",
        if b <= 32.0 { "meets" } else { "above" }
    );

    // 4b. The name index (listings).
    names_rows(&dir, quick);

    // 5. Startup from a checkpoint, and the tail scan vs fio sequential reads.
    let (loaded, took) = startup_from_checkpoint(&fresh_dir(&dir, "startup"), n);
    let per_s = loaded as f64 / took.as_secs_f64();
    println!("| startup from checkpoint, {loaded} objects | {:.2} M objects/s ({} ms) | - | - | at least 2 M/s | {} |", per_s / 1e6, took.as_millis(), if per_s >= 2e6 { "meets" } else { "below" });
    let tail = 256u64 << 20 << (scale / 2);
    let tsize = format!("--size={tail}");
    let (ours, theirs) = repeat(|| {
        let (scanned, took) = tail_scan(&fresh_dir(&dir, "tail"), tail);
        let f = fio(&dir, "seqread", &["--rw=read", "--bs=1M", "--iodepth=8", &tsize]);
        (scanned as f64 / (1 << 20) as f64 / took.as_secs_f64(), f.map(|f| f.mib_s))
    });
    row(
        "startup tail scan (verifies every record)",
        format!("{ours:.0} MiB/s"),
        theirs,
        ours,
        "MiB/s (read, bs=1M, QD8)",
        0.5,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The name index (listings) at 10^7 names on one disk (10^6 in a quick run): RAM per name, the
/// first page of a prefix from a cold seek, a full listing's rate.
fn names_rows(dir: &std::path::Path, quick: bool) {
    let count = if quick { 1_000_000 } else { 10_000_000 };
    let s = names_at_scale(&fresh_dir(dir, "names"), count, 200);
    println!(
        "| name index, {count} names: RAM | {:.2} bytes/name ({} runs, {:.0} bytes/name on disk, built in {:.0} s) | - | - | at most 16 | {} |",
        s.ram_bytes_per_name,
        s.runs,
        s.disk_bytes_per_name,
        s.build.as_secs_f64(),
        if s.ram_bytes_per_name <= 16.0 { "meets" } else { "above" }
    );
    let first_ms = s.first_page_median.as_secs_f64() * 1e3;
    println!(
        "| name index: first page (1000) of a prefix, cold | {first_ms:.2} ms median, {:.2} ms worst | - | - | at most 50 ms | {} |",
        s.first_page_max.as_secs_f64() * 1e3,
        if first_ms <= 50.0 { "meets" } else { "above" }
    );
    println!(
        "| name index: listing rate, pages of 1000 | {:.0} names/s | - | - | at least 100000 | {} |",
        s.list_per_s,
        if s.list_per_s >= 100_000.0 { "meets" } else { "below" }
    );
    assert_eq!(s.names, count, "a full listing holds every name once");
}

/// Times each comparison is repeated.
const REPS: usize = 3;

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// Runs a (podstore, fio) pair `REPS` times; returns the medians.
fn repeat(mut f: impl FnMut() -> (f64, Option<f64>)) -> (f64, Option<f64>) {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..REPS {
        let (o, t) = f();
        ours.push(o);
        theirs.extend(t);
    }
    (median(ours).unwrap_or(0.0), median(theirs))
}

fn row(name: &str, ours_text: String, fio: Option<f64>, ours: f64, fio_what: &str, target: f64) {
    match fio {
        Some(limit) => {
            let ratio = ours / limit;
            println!(
                "| {name} | {ours_text} | {limit:.0} {fio_what} | {ratio:.2} | at least {target} | {} |",
                verdict(ratio, target)
            )
        }
        None => println!("| {name} | {ours_text} | fio unavailable | - | at least {target} | not compared |"),
    }
}
