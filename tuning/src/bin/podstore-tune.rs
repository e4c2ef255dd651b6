//! `podstore-tune`: checks and applies the host settings a storage pod wants.
//!
//!   podstore-tune check [--root DIR] [--strict]   every setting: current, recommended, why
//!   podstore-tune apply [--root DIR] [--dry-run]  writes the ones that differ (idempotent)
//!   podstore-tune measure --disk DIR [--seconds S] [--file-mib M] [--depths 1,4,16,64]
//!                                                 a disk's profile, written to DIR
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use podstore_tuning::measure::{measure, Plan, PROFILE_FILE};
use podstore_tuning::{apply, check, Change};

#[derive(Parser, Debug)]
#[command(name = "podstore-tune", version, about = "host settings for a podstore storage pod")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Reports every setting with its current value, the recommended one and why.
    Check {
        /// The root of the tree holding /sys and /proc (a fixture in tests).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Exit 1 when a setting `apply` would change differs.
        #[arg(long)]
        strict: bool,
    },
    /// Writes every setting that differs from its recommendation.
    Apply {
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Say what would be written, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Measures a disk through podstore's own I/O path and writes its profile
    /// (DIR/podstore.disk-profile.toml), which the node reads at start.
    Measure {
        /// The disk's directory (a [[disks]] path).
        #[arg(long)]
        disk: PathBuf,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Size of the test file, MiB.
        #[arg(long, default_value_t = 1024)]
        file_mib: u64,
        /// Queue depths to try.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
        depths: Vec<usize>,
        /// Where to write the profile (default: in the disk's directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Check { root, strict } => {
            let all = check(&root);
            for s in &all {
                println!("{s}");
            }
            let differ = all.iter().filter(|s| !s.ok() && s.writable).count();
            let notes = all.iter().filter(|s| !s.ok() && !s.writable).count();
            println!(
                "{} settings: {differ} to change (podstore-tune apply), {notes} to review by hand",
                all.len()
            );
            if strict && differ > 0 {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Cmd::Measure { disk, seconds, file_mib, depths, out } => {
            if !(0.1..=600.0).contains(&seconds)
                || depths.is_empty()
                || depths.iter().any(|&d| d == 0 || d > 256)
            {
                eprintln!("podstore-tune: --seconds must be 0.1..600 and --depths 1..256");
                return ExitCode::FAILURE;
            }
            // A disk a node holds is not measured: the test would compete with the node's I/O
            // (and measure that), and write into a disk in use.
            let _lock = match podstore_disks::DiskLock::exclusive(&disk) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("podstore-tune: {e}; measure a disk while its node is stopped");
                    return ExitCode::FAILURE;
                }
            };
            let plan = Plan { file_bytes: file_mib << 20, seconds, depths };
            let mut progress = |what: &str| eprintln!("measuring {}: {what}", disk.display());
            match measure(&disk, &plan, &mut progress) {
                Ok(p) => {
                    let text = match p.to_toml() {
                        Ok(t) => t,
                        Err(e) => {
                            eprintln!("podstore-tune: {e}");
                            return ExitCode::FAILURE;
                        }
                    };
                    let out = out.unwrap_or_else(|| disk.join(PROFILE_FILE));
                    if let Err(e) = std::fs::write(&out, &text) {
                        eprintln!("podstore-tune: {}: {e}", out.display());
                        return ExitCode::FAILURE;
                    }
                    print!("{text}");
                    eprintln!("profile written to {}", out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("podstore-tune: measuring {}: {e}", disk.display());
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Apply { root, dry_run } => {
            let changes = apply(&root, dry_run);
            let mut failed = false;
            for c in &changes {
                match c {
                    Change::Set { name, from, to } => println!(
                        "{} {name}: {} -> {to}",
                        if dry_run { "would set" } else { "set" },
                        from.as_deref().unwrap_or("(unreadable)")
                    ),
                    Change::Failed { name, error } => {
                        failed = true;
                        eprintln!("podstore-tune: {name}: {error}");
                    }
                }
            }
            if changes.is_empty() {
                println!("nothing to change");
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
