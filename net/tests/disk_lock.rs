//! A disk belongs to one process: a second `podstore serve` on the same disk directories is
//! refused (other ports, or the same config twice), offline tools are refused while a node
//! holds a disk, `add-disk` refuses a disk another process holds, and a SIGKILLed holder's
//! disks are taken at once by the next start.

mod common;

use std::process::Output;
use std::time::Instant;

use common::run_podstore as podstore;
use common::stderr_text as stderr;
use common::*;

fn serve(config: &std::path::Path) -> Output {
    podstore(&["serve".as_ref(), "--config".as_ref(), config.as_os_str()])
}

/// A refused second process: it failed, named a disk, its directory and the holder's PID, and
/// never answered on its ports.
fn assert_refused(o: &Output, node: &Node, holder_pid: i32) {
    let err = stderr(o);
    assert!(!o.status.success(), "a second process started on the same disks:\n{err}");
    let disk0 = node.dir.join("disk0");
    assert!(
        err.contains(&format!("disk 0 ({})", disk0.display()))
            && err.contains(&format!("locked by PID {holder_pid}")),
        "the refusal does not name the disk, its path and the holder's PID:\n{err}"
    );
    assert!(!err.contains("ready after"), "the second process became ready:\n{err}");
}

#[test]
fn a_second_node_on_the_same_disks_is_refused_and_a_killed_holder_frees_them_at_once() {
    let mut node = Node::start("disklock", "");
    let objects: Vec<(String, Vec<u8>)> = (0..30)
        .map(|i| (format!("/photos/lock-{i:02}"), format!("value {i}").repeat(100).into_bytes()))
        .collect();
    for (k, v) in &objects {
        assert_eq!(node.req("PUT", k, &[], v).status, 201, "{k}");
    }
    let pid = node.pid();

    // Same node id and disks, other ports: refused, naming the disk, its path and the PID.
    let other = node.dir.join("other-ports.toml");
    std::fs::write(&other, config_text(&node.dir, free_addr(), free_addr(), "")).expect("write config");
    assert_refused(&serve(&other), &node, pid);
    // The same config file twice: refused for the disks, not for the ports it can't bind.
    let twice = serve(&node.config);
    assert_refused(&twice, &node, pid);
    assert!(!stderr(&twice).contains("Address already in use"), "{}", stderr(&twice));

    // The offline toolbox does not read a disk a node holds.
    let disk0 = node.dir.join("disk0");
    let info = podstore(&["index-info".as_ref(), disk0.as_os_str()]);
    assert!(!info.status.success(), "index-info read a disk a running node holds");
    assert!(stderr(&info).contains(&format!("locked by PID {pid}")), "{}", stderr(&info));

    // The node still serves everything it acknowledged.
    for (k, v) in &objects {
        let r = node.req("GET", k, &[], b"");
        assert!(r.status == 200 && &r.body == v, "{k}: {}", r.status);
    }

    // A SIGKILLed holder's locks die with it: the next start takes the disks at once.
    node.kill();
    let started = Instant::now();
    node.spawn(&[]);
    eprintln!("restart after SIGKILL ready in {} ms", started.elapsed().as_millis());
    for (k, v) in &objects {
        let r = node.req("GET", k, &[], b"");
        assert!(r.status == 200 && &r.body == v, "{k} after SIGKILL: {}", r.status);
    }

    // A stopped node's disks are the toolbox's: index-info reads them read-only.
    assert!(node.stop().success());
    let info = podstore(&["index-info".as_ref(), disk0.as_os_str()]);
    assert!(info.status.success(), "{}", stderr(&info));
    assert!(String::from_utf8_lossy(&info.stdout).contains("read-only"));
}

#[test]
fn add_disk_refuses_a_disk_that_another_process_holds() {
    let node = Node::start("disklock-add", "");
    // A second process of the same node id holds, as its disk 3, the directory the first is
    // asked to add as disk 3: the label would fit, the lock does not.
    let dir = fresh_dir("disklock-holder");
    let held = dir.join("disk3");
    std::fs::create_dir_all(&held).expect("mkdir");
    let (data, admin) = (free_addr(), free_addr());
    let text = format!(
        "node_id = \"test-node\"\n[listen]\ndata = \"{data}\"\nadmin = \"{admin}\"\n[engine]\nblob_size_bytes = 8388608\n\
         [[disks]]\nid = 3\npath = \"{}\"\ntier = \"capacity\"\nrequire_mount_point = false\nweight = 1.0\n",
        held.display()
    );
    let holder = Node::start_with_config(dir, data, admin, text);
    let admin = node.admin.to_string();
    let o = podstore(&[
        "add-disk".as_ref(),
        "--no-wait".as_ref(),
        "--any-directory".as_ref(),
        "--id".as_ref(),
        "3".as_ref(),
        "--path".as_ref(),
        held.as_os_str(),
        "--admin".as_ref(),
        admin.as_ref(),
    ]);
    let err = stderr(&o);
    assert!(!o.status.success(), "a disk another process holds was added");
    assert!(err.contains(&format!("locked by PID {}", holder.pid())), "{err}");
    let disks = node.admin("/admin/disks");
    let text = String::from_utf8_lossy(&disks.body);
    assert!(!text.contains(held.to_str().expect("utf-8")), "the held disk joined: {text}");
}
