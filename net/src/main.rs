//! `podstore`: the node and the operator's toolbox.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use podstore_net::config::Config;

#[derive(Parser, Debug)]
#[command(name = "podstore", version, about = "A storage appliance for dense-disk servers")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the node (on the embedded default without --config).
    Serve {
        /// The configuration file (TOML); see deploy/podstore.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the embedded default keeps its disks.
        #[arg(long, default_value = "./podstore-data")]
        data_dir: PathBuf,
    },
    /// Check a configuration file and print what it says.
    CheckConfig { config: PathBuf },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PODSTORE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Serve { config, data_dir } => serve(config, data_dir),
        Cmd::CheckConfig { config } => {
            Config::load(&config).map(|c| println!("{c:#?}")).map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podstore: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Option<PathBuf>, data_dir: PathBuf) -> Result<(), String> {
    let cfg = match config {
        Some(p) => Config::load(&p).map_err(|e| e.to_string())?,
        None => {
            let cfg = Config::embedded_default(&data_dir);
            for d in &cfg.disks {
                std::fs::create_dir_all(&d.path).map_err(|e| format!("{}: {e}", d.path.display()))?;
            }
            tracing::info!("no --config: embedded default, data under {}", data_dir.display());
            cfg
        }
    };
    podstore_net::node::run(cfg)
}
