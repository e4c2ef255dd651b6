//! podstore's hardware layer: disks and how to talk to them.
//!
//! - [`Io`]: every disk operation of the engine, with three implementations: [`Uring`] (the
//!   per-core io_uring driver), [`SyncIo`] (the `pread`/`pwrite` fallback) and [`SimDisk`] (in
//!   memory, seeded faults). [`AnyIo`] chooses between the first two at startup.
//! - [`AlignedBuf`] and [`BufPool`]: 4096-aligned buffers for O_DIRECT, pooled per core.
//! - [`open_disk`]: checks a configured directory (label, O_DIRECT, alignment) before use, and
//!   locks it for this process ([`DiskLock`]).
//!
//! This crate imports nothing of podstore's; the engine builds on it.

mod any;
mod buf;
mod cpu;
pub mod crc;
mod disk;
mod error;
mod faulty;
mod fd;
mod io;
pub mod label;
pub mod le;
mod lock;
pub mod md5_lanes;
mod sigpipe;
mod sim;
mod sock;
mod sync_io;
mod uring;

pub use any::{io_uring_disabled_sysctl, AnyIo, Backend};
pub use buf::{align_up, is_aligned, AlignedBuf, BufPool, SendBuf, ALIGN, POOL_BUFFERS_MAX};
pub use cpu::{allowed_cpus, pin_current_thread};
pub use disk::{fs_space, open_disk, probe_direct_io, Disk, DiskSpec, Tier, MEASURE_FILE};
pub use error::{Error, Op, Result};
pub use faulty::{FaultPlan, FaultRates, FaultStats, Faulty};
pub use fd::FdFile;
pub use io::{CacheMode, Io, OpenMode};
pub use lock::{DiskLock, LOCK_FILE};
pub use sigpipe::{end_quietly_on_closed_output, send_hangup};
pub use sim::{SimDisk, SimFaults, SimFile, SimStats, SIM_SECTOR};
pub use sock::set_recv_lowat;
pub use sync_io::SyncIo;
pub use uring::{Uring, UringConfig, UringDriver, UringStats};
