//! `podstore-tune`: checks and applies the host settings a storage pod wants.
//!
//!   podstore-tune check [--root DIR] [--strict]   every setting: current, recommended, why
//!   podstore-tune apply [--root DIR] [--dry-run]  writes the ones that differ (idempotent)
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
