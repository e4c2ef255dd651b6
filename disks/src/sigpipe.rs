//! Signals of the toolbox: closed output ends a command-line tool quietly, as it does any Unix
//! filter; `podstore reload` sends a node SIGHUP.
//!
//! Rust starts programs with SIGPIPE ignored, so a write to a closed pipe (`podstore
//! check-config ... | head`) returns EPIPE and `println!` panics with a backtrace. The
//! toolbox's subcommands restore the default action: the process ends, by the signal, the
//! moment its reader is gone. The node itself keeps SIGPIPE ignored: its sockets must fail a
//! write, not end the process.

/// Restores SIGPIPE's default action (end the process) for this process.
pub fn end_quietly_on_closed_output() {
    // SAFETY: signal(2) with SIG_DFL installs no handler of ours; it changes only what a
    // closed pipe does to this process, before any thread that writes to one exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Sends SIGHUP to process `pid` (`kill(2)`): a running node reloads its configuration.
pub fn send_hangup(pid: u32) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("no process {pid}")))?;
    // SAFETY: kill(2) with a positive pid signals that one process; no memory is involved.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
