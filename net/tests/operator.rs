//! What an operator meets in the first hour, on the real binary: disks too small for the
//! blob size, the config check, closed pipes, SIGHUP, logs without colour on a file, host
//! names in listen addresses, the toolbox's tables.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// Runs the binary with `args` to its end (killed after 60 s).
fn podstore(args: &[&std::ffi::OsStr], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_podstore"));
    c.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    let child = c.spawn().expect("run podstore");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            signal(pid, "KILL");
            panic!("podstore {args:?} did not end within 60 s");
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_disk_too_small_for_the_blob_size_is_refused_saying_what_fits() {
    let dir = fresh_dir("small-disks");
    // 64 MiB of blob space per disk (as a 64 MiB filesystem would give) with 1 GiB blobs.
    let text = config_text(
        &dir,
        free_addr(),
        free_addr(),
        "[engine]\nblob_size_bytes = 1073741824\ndisk_bytes_max = 67108864\n",
    );
    let config = dir.join("podstore.toml");
    std::fs::write(&config, text).expect("write config");
    let o = podstore(&["serve".as_ref(), "--config".as_ref(), config.as_os_str()], &[]);
    let err = stderr(&o);
    assert!(!o.status.success(), "a node started on disks that hold no blob:\n{err}");
    assert!(
        err.contains("engine.blob_size_bytes = 1073741824 (1 GiB)")
            && err.contains("set engine.blob_size_bytes to at most 33554432 (32 MiB)"),
        "{err}"
    );
    assert!(err.contains("no disk can be used"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
