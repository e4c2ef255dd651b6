//! `podstore`: the node and the operator's toolbox.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;

use podstore_net::client;
use podstore_net::config::Config;

/// mimalloc instead of glibc's malloc: per-thread free lists without arena locks, which cost
/// about a sixth of a small GET's CPU (buffers and bodies are freed on another core's thread
/// than the one that allocated them).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Start even though the data port listens beyond loopback with no access keys, or the
        /// admin port (which has no authentication) listens beyond loopback.
        #[arg(long)]
        insecure: bool,
    },
    /// Check a configuration file and print what it says.
    CheckConfig {
        config: PathBuf,
        /// For systemd's ExecCondition: exit 1 (the unit is skipped, not failed) when the file
        /// names no [[disks]] yet; 255 (a failure) when it is invalid.
        #[arg(long)]
        require_disks: bool,
    },
    /// Store a file (or stdin, with -) as BUCKET/KEY.
    Put {
        name: String,
        source: String,
        #[arg(long, default_value = "127.0.0.1:7070")]
        server: SocketAddr,
        #[arg(long)]
        content_type: Option<String>,
        #[arg(long)]
        copies: Option<String>,
    },
    /// Fetch BUCKET/KEY into a file (or stdout, with - or nothing).
    Get {
        name: String,
        #[arg(default_value = "-")]
        dest: String,
        #[arg(long, default_value = "127.0.0.1:7070")]
        server: SocketAddr,
        /// A byte range, as in `0-99`, `100-` or `-100`.
        #[arg(long)]
        range: Option<String>,
    },
    /// List BUCKET's keys under an optional prefix (BUCKET/PREFIX): time, size and key, and
    /// the next level of `/` as PRE lines unless --recursive.
    Ls {
        target: String,
        /// Every key under the prefix, not grouped at the next `/`.
        #[arg(long, short)]
        recursive: bool,
        #[arg(long, default_value = "127.0.0.1:7070")]
        server: SocketAddr,
        /// Sizes as numbers of bytes, not in binary units.
        #[arg(long)]
        bytes: bool,
    },
    /// Show BUCKET/KEY's headers.
    Head {
        name: String,
        #[arg(long, default_value = "127.0.0.1:7070")]
        server: SocketAddr,
    },
    /// Delete BUCKET/KEY.
    Delete {
        name: String,
        #[arg(long, default_value = "127.0.0.1:7070")]
        server: SocketAddr,
        #[arg(long)]
        copies: Option<String>,
    },
    /// A running node's disks (from its admin port).
    Stat {
        #[arg(long, default_value = "127.0.0.1:7072")]
        admin: SocketAddr,
        /// Sizes as numbers of bytes, not in binary units.
        #[arg(long)]
        bytes: bool,
    },
    /// Print a presigned URL: anyone holding it may do `--method` on the object until it
    /// expires (at most 7 days), without an access key of their own.
    Presign {
        /// The object, `bucket/key`.
        name: String,
        /// The access key that signs.
        #[arg(long)]
        key_id: String,
        /// That key's secret file (as named in the node's configuration).
        #[arg(long)]
        secret_file: PathBuf,
        #[arg(long, default_value = "GET")]
        method: String,
        /// Seconds until the URL expires.
        #[arg(long, default_value_t = 3600)]
        expires_in: u64,
        /// The node's data address as clients reach it (host:port).
        #[arg(long, default_value = "127.0.0.1:7070")]
        server: String,
    },
    /// A running node's tiers: per-tier objects, bytes, fill and share of GETs, the RAM
    /// cache, migration and promotion (from its admin port).
    Tiers {
        #[arg(long, default_value = "127.0.0.1:7072")]
        admin: SocketAddr,
        /// Sizes as numbers of bytes, not in binary units.
        #[arg(long)]
        bytes: bool,
    },
    /// Compare this node with a peer and copy what is missing or older, both ways (an
    /// anti-entropy pass, e.g. to refill a replacement appliance); shows progress.
    Recover {
        /// The peer's name (its node_id in the replica set).
        #[arg(long = "from")]
        from: String,
        #[arg(long, default_value = "127.0.0.1:7072")]
        admin: SocketAddr,
    },
    /// Compact a running node's disks now (rewrite blobs with dead records, live records only,
    /// then remove them) and follow the pass to its end; or pause, resume or stop compaction.
    Compact {
        #[command(flatten)]
        job: JobArgs,
        /// Compact blobs whose dead share is at least this (default: any dead record).
        #[arg(long)]
        ratio: Option<f64>,
    },
    /// Scrub a running node's disks now (verify every record's checksums, unpaced but within
    /// each disk's background budget) and follow the pass to its end; or pause, resume or stop
    /// the scrub.
    Scrub {
        #[command(flatten)]
        job: JobArgs,
    },
    /// Move objects of a running node's fast disks to the capacity tier now (those of the
    /// blobs no GET read for `--idle-s` seconds, default `tiering.migrate_idle_s`, and down to
    /// the low watermark) and follow the pass to its end; or pause, resume or stop migration.
    Migrate {
        #[command(flatten)]
        job: JobArgs,
        /// Move the blobs no GET read for this many seconds (0: every sealed blob).
        #[arg(long)]
        idle_s: Option<u64>,
    },
    /// Drain a disk of a running node: it takes no more writes and its objects move to the
    /// other disks; follows the move until the disk is safe to pull.
    Drain {
        #[arg(long)]
        disk: u32,
        #[arg(long, default_value = "127.0.0.1:7072")]
        admin: SocketAddr,
    },
    /// Add a disk to a running node: it is labelled, joins the placement with its weight and
    /// receives its share of the objects in a background move; follows the move to its end.
    /// The node records the disk on its other disks and opens it at every start.
    AddDisk {
        /// The new disk's id (unused on this node).
        #[arg(long)]
        id: u32,
        /// Its directory (a mounted, empty filesystem, or one labelled for this node and id).
        #[arg(long)]
        path: PathBuf,
        /// Placement weight (default: its filesystem's size, in the unit the node's disks use:
        /// beside configured disks of weight 1 on filesystems of its size, 1).
        #[arg(long)]
        weight: Option<f64>,
        /// fast or capacity.
        #[arg(long, default_value = "capacity")]
        tier: String,
        /// direct, or buffered (development only).
        #[arg(long, default_value = "direct")]
        cache: String,
        /// Accept a directory that is not a mount point (tests, development).
        #[arg(long)]
        any_directory: bool,
        /// Return once the disk has joined; do not follow the move.
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value = "127.0.0.1:7072")]
        admin: SocketAddr,
    },
    /// Tell a running node to read its configuration file again (SIGHUP to its PID; the
    /// unit's ExecReload). The node's log says what was reloaded.
    Reload {
        /// The node's process id.
        #[arg(long)]
        pid: u32,
    },
    /// Inspect a stopped node's disk offline (changes nothing).
    IndexInfo { disk_dir: PathBuf },
}

/// Which disks, and what to do with their background job.
#[derive(clap::Args, Debug)]
struct JobArgs {
    /// Only this disk (default: every disk).
    #[arg(long)]
    disk: Option<u32>,
    /// Pause the job where it is (it keeps its place).
    #[arg(long, conflicts_with_all = ["resume", "stop"])]
    pause: bool,
    /// Resume a paused job.
    #[arg(long, conflicts_with = "stop")]
    resume: bool,
    /// End the current pass at its next step.
    #[arg(long)]
    stop: bool,
    #[arg(long, default_value = "127.0.0.1:7072")]
    admin: SocketAddr,
}

impl JobArgs {
    fn action(&self) -> &'static str {
        match (self.pause, self.resume, self.stop) {
            (true, _, _) => "pause",
            (_, true, _) => "resume",
            (_, _, true) => "stop",
            _ => "start",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Serve { .. }) {
        podstore_disks::end_quietly_on_closed_output();
    }
    // Colour only on a terminal: journald and log files get plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PODSTORE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_filter_reloading();
    let handle = logs.reload_handle();
    logs.init();
    // The config's `log` applies unless PODSTORE_LOG is set.
    let set_log_filter: Option<podstore_net::reload::LogFilterSetter> =
        std::env::var_os("PODSTORE_LOG").is_none().then(|| {
            Box::new(move |directives: &str| {
                let filter = tracing_subscriber::EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
                handle.reload(filter).map_err(|e| e.to_string())
            }) as podstore_net::reload::LogFilterSetter
        });
    let result = match cli.cmd {
        Cmd::Serve { config, data_dir, insecure } => serve(config, data_dir, insecure, set_log_filter),
        Cmd::CheckConfig { config, require_disks } => {
            if require_disks {
                return check_for_service(&config);
            }
            Config::load(&config)
                .map(|c| print!("{}: valid\n{}", config.display(), c.summary()))
                .map_err(|e| e.to_string())
        }
        Cmd::Put { name, source, server, content_type, copies } => {
            client::put(server, &name, &source, content_type.as_deref(), copies.as_deref())
        }
        Cmd::Get { name, dest, server, range } => client::get(server, &name, &dest, range.as_deref()),
        Cmd::Head { name, server } => client::head(server, &name),
        Cmd::Ls { target, recursive, server, bytes } => client::ls(server, &target, recursive, bytes),
        Cmd::Delete { name, server, copies } => client::delete(server, &name, copies.as_deref()),
        Cmd::Stat { admin, bytes } => client::stat(admin, bytes),
        Cmd::Tiers { admin, bytes } => client::tiers(admin, bytes),
        Cmd::Presign { name, key_id, secret_file, method, expires_in, server } => {
            client::presign(&server, &key_id, &secret_file, &method, &name, expires_in)
        }
        Cmd::Recover { from, admin } => client::recover(admin, &from),
        Cmd::Compact { job, ratio } => {
            client::job(job.admin, "compact", job.action(), job.disk, ratio.map(|r| ("ratio", r.to_string())))
        }
        Cmd::Scrub { job } => client::job(job.admin, "scrub", job.action(), job.disk, None),
        Cmd::Migrate { job, idle_s } => client::job(
            job.admin,
            "migrate",
            job.action(),
            job.disk,
            idle_s.map(|s| ("idle_s", s.to_string())),
        ),
        Cmd::Drain { disk, admin } => client::drain(admin, disk),
        Cmd::AddDisk { id, path, weight, tier, cache, any_directory, no_wait, admin } => {
            let mut q = format!("id={id}&tier={tier}&cache={cache}");
            if let Some(w) = weight {
                q.push_str(&format!("&weight={w}"));
            }
            if any_directory {
                q.push_str("&require_mount_point=false");
            }
            client::add_disk(admin, id, &path, &q, !no_wait)
        }
        Cmd::IndexInfo { disk_dir } => client::index_info(&disk_dir),
        Cmd::Reload { pid } => {
            podstore_disks::send_hangup(pid).map_err(|e| format!("SIGHUP to process {pid}: {e}"))
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

/// `check-config --require-disks`: whether the service should start (0), is not configured
/// yet (1: no [[disks]] in the file, the state a fresh install is in), or has a broken
/// configuration (255).
fn check_for_service(path: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("podstore: {}: {e}", path.display());
            return ExitCode::from(255);
        }
    };
    let names_disks = match toml::from_str::<toml::Table>(&text) {
        Ok(t) => t.get("disks").is_some_and(|d| d.as_array().is_none_or(|a| !a.is_empty())),
        Err(_) => true, // unparsable: the full check says why
    };
    if !names_disks {
        eprintln!("podstore: {} names no [[disks]] yet; not starting", path.display());
        return ExitCode::from(1);
    }
    match Config::load(path) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podstore: {e}");
            ExitCode::from(255)
        }
    }
}

fn serve(
    config: Option<PathBuf>,
    data_dir: PathBuf,
    insecure: bool,
    set_log_filter: Option<podstore_net::reload::LogFilterSetter>,
) -> Result<(), String> {
    let mut cfg = match &config {
        Some(p) => {
            let cfg = Config::load(p).map_err(|e| e.to_string())?;
            if let (Some(set), Some(filter)) = (&set_log_filter, &cfg.log) {
                set(filter).map_err(|e| format!("log: {e}"))?;
            }
            cfg
        }
        None => {
            let mut cfg = Config::embedded_default(&data_dir);
            for d in &mut cfg.disks {
                std::fs::create_dir_all(&d.path).map_err(|e| format!("{}: {e}", d.path.display()))?;
                // The embedded default is for trying podstore out: where the filesystem has no
                // O_DIRECT, it runs buffered (development only) and says so.
                if let Err(e) = podstore_disks::probe_direct_io(&d.path) {
                    tracing::warn!("{e}; the embedded default uses buffered I/O there (development only)");
                    d.cache = podstore_net::config::CacheConf::Buffered;
                }
            }
            tracing::info!("no --config: embedded default, data under {}", data_dir.display());
            cfg
        }
    };
    cfg.insecure = insecure;
    podstore_net::node::run(cfg, podstore_net::reload::Reload { path: config, set_log_filter })
}
