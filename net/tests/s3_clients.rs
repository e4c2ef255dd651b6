//! The S3 clients people run, each doing its real job against a real node: a boto3 script of
//! every operation served (with bad signatures, an expired presigned URL and a key restricted
//! to other buckets; its default settings' multipart transfers, a Signature Version 2 URL), a
//! boto3 multipart upload interrupted by a SIGKILL of the node and resumed, restic (init,
//! backup, check --read-data, restore), s3fs (a FUSE mount: copy in, list, read, rename), a
//! container registry (Debian's docker-registry on the node, an image pushed and pulled by
//! skopeo), s3cmd (buckets, put, get, sync both ways, recursive delete) and rclone
//! (an S3 remote of provider Other: mkdir, copy, ls, lsf, check with and without downloading,
//! delete, rmdir). They need the clients installed: they run when asked
//! (`cargo test -- --ignored`; `.ci/run` installs python3-boto3, s3cmd and rclone and runs
//! them).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{free_addr, fresh_dir, secret_file, Node};

const UP: &str = "dXBsb2FkZXItc2VjcmV0LWZvci10aGUtY2xpZW50LXRlc3Rz";
const RO: &str = "cmVhZGVyLXNlY3JldC1mb3ItdGhlLWNsaWVudC10ZXN0cy0t";
const OTHER: &str = "b3RoZXItc2VjcmV0LWZvci10aGUtY2xpZW50LXRlc3RzLS0t";

/// A node with an S3 port and three keys: `uploader` (every bucket), `reader` (bucket
/// `photos`, read only), `other` (bucket `elsewhere`).
fn node(name: &str) -> (Node, SocketAddr, PathBuf) {
    let dir = fresh_dir(name);
    let (data, admin, s3) = (free_addr(), free_addr(), free_addr());
    let mut text = common::config_text(&dir, data, admin, "");
    text = text.replacen("[listen]\n", &format!("[listen]\ns3 = \"{s3}\"\n"), 1);
    text.push_str(&format!(
        "\n[auth]\n\n[[auth.keys]]\nid = \"uploader\"\nsecret_file = \"{}\"\n\n\
         [[auth.keys]]\nid = \"reader\"\nsecret_file = \"{}\"\nbuckets = [\"photos\"]\nread_only = true\n\n\
         [[auth.keys]]\nid = \"other\"\nsecret_file = \"{}\"\nbuckets = [\"elsewhere\"]\n",
        secret_file(&dir, "up", UP).display(),
        secret_file(&dir, "ro", RO).display(),
        secret_file(&dir, "other", OTHER).display()
    ));
    (Node::start_with_config(dir.clone(), data, admin, text), s3, dir)
}

fn run(what: &str, cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{what}: {e} (is it installed?)"));
    assert!(
        o.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A tree of files: large and small, nested, names with spaces and symbols.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let files: Vec<(String, Vec<u8>)> = (0..10u32)
        .map(|i| {
            let len = if i % 4 == 0 { 3_000_000 + i as usize * 1_001 } else { i as usize * 777 };
            let data: Vec<u8> =
                (0..len).map(|b| (b as u32).wrapping_mul(2_654_435_761).wrapping_add(i) as u8).collect();
            let name = match i % 3 {
                0 => format!("f{i}.bin"),
                1 => format!("sub dir/g {i} & more.txt"),
                _ => format!("a/b/c/h{i}"),
            };
            (name, data)
        })
        .collect();
    for (name, data) in &files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, data).expect("write");
    }
    files
}

fn same_tree(files: &[(String, Vec<u8>)], dir: &Path) {
    for (name, data) in files {
        let got = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(got == *data, "{name} differs");
    }
}

#[test]
#[ignore = "needs python3 with boto3: cargo test -- --ignored (.ci/run runs it)"]
fn boto3_does_every_operation_served() {
    let (_node, s3, _dir) = node("s3-boto3");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_clients/boto3_all.py");
    let out = run(
        "the boto3 script",
        Command::new("python3").arg(&script).arg(format!("http://{s3}")).args([UP, RO, OTHER]),
    );
    assert!(out.contains("all boto3 checks passed"), "{out}");
}

#[test]
#[ignore = "needs python3 with boto3: cargo test -- --ignored (.ci/run runs it)"]
fn a_boto3_multipart_upload_survives_a_sigkill_of_the_node() {
    let (mut node, s3, dir) = node("s3-boto3-resume");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_clients/boto3_resume.py");
    let state = dir.join("upload-state.json");
    let endpoint = format!("http://{s3}");
    let upload = Command::new("python3")
        .arg(&script)
        .args([endpoint.as_str(), UP, "upload"])
        .arg(&state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    // Killed once three parts are acknowledged, while the fourth is on its way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let done = std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["done"].as_object().map(|d| d.len()))
            .unwrap_or(0);
        if done >= 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the upload made no progress");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    node.kill();
    let out = upload.wait_with_output().expect("the upload phase");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    node.spawn(&[]);
    node.wait_ready();
    let out = run(
        "the resume phase",
        Command::new("python3").arg(&script).args([endpoint.as_str(), UP, "resume"]).arg(&state),
    );
    assert!(out.contains("resumed"), "{out}");
}

#[test]
#[ignore = "needs s3cmd (apt-get install s3cmd): cargo test -- --ignored (.ci/run runs it)"]
fn s3cmd_puts_syncs_and_removes() {
    let (node, s3, dir) = node("s3-s3cmd");
    let cfg = dir.join("s3cfg");
    std::fs::write(
        &cfg,
        format!(
            "[default]\naccess_key = uploader\nsecret_key = {UP}\nhost_base = {s3}\nhost_bucket = {s3}\n\
             use_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n"
        ),
    )
    .expect("write s3cfg");
    let s3cmd = |args: &[&str]| {
        run(
            &format!("s3cmd {args:?}"),
            Command::new("s3cmd").arg("-c").arg(&cfg).arg("--no-progress").args(args),
        )
    };
    s3cmd(&["mb", "s3://media"]);
    assert!(s3cmd(&["ls"]).contains("s3://media"));
    let src = dir.join("src");
    let files = tree(&src);
    let one = src.join("f0.bin").display().to_string();
    s3cmd(&["put", &one, "s3://media/one/f0.bin"]);
    let back = dir.join("one.bin").display().to_string();
    s3cmd(&["get", "s3://media/one/f0.bin", &back]);
    assert!(std::fs::read(&back).expect("read") == files[0].1);
    // sync up, then down into an empty directory; a second sync up sends nothing (MD5s match).
    s3cmd(&["sync", &format!("{}/", src.display()), "s3://media/tree/"]);
    let down = dir.join("down");
    s3cmd(&["sync", "s3://media/tree/", &format!("{}/", down.display())]);
    same_tree(&files, &down);
    let again = s3cmd(&["sync", &format!("{}/", src.display()), "s3://media/tree/"]);
    assert!(!again.contains("upload:"), "nothing to send again: {again}");
    let listed = s3cmd(&["ls", "--recursive", "s3://media/tree/"]);
    assert_eq!(listed.lines().count(), files.len(), "{listed}");
    // The native API reads what s3cmd wrote.
    let r =
        node.req("GET", "/media/tree/a/b/c/h2", &[("authorization", &format!("Bearer uploader.{UP}"))], b"");
    assert!(r.status == 200 && r.body == files[2].1);
    s3cmd(&["del", "--recursive", "--force", "s3://media/"]);
    s3cmd(&["rb", "s3://media"]);
    assert!(!s3cmd(&["ls"]).contains("s3://media"));
}

#[test]
#[ignore = "needs rclone (apt-get install rclone): cargo test -- --ignored (.ci/run runs it)"]
fn rclone_copies_lists_and_checks() {
    let (_node, s3, dir) = node("s3-rclone");
    // The remote from the environment (no file); a CA bundle set for other AWS tools would
    // make rclone refuse its own plain-HTTP transport.
    let cmd = |args: &[&str]| {
        let mut c = Command::new("rclone");
        c.args(args)
            .env_remove("AWS_CA_BUNDLE")
            .env("RCLONE_CONFIG", dir.join("rclone.conf"))
            .env("RCLONE_CONFIG_PS_TYPE", "s3")
            .env("RCLONE_CONFIG_PS_PROVIDER", "Other")
            .env("RCLONE_CONFIG_PS_ACCESS_KEY_ID", "uploader")
            .env("RCLONE_CONFIG_PS_SECRET_ACCESS_KEY", UP)
            .env("RCLONE_CONFIG_PS_ENDPOINT", format!("http://{s3}"))
            .env("RCLONE_CONFIG_PS_REGION", "us-east-1");
        c
    };
    let rclone = |args: &[&str]| run(&format!("rclone {args:?}"), &mut cmd(args));
    let src = dir.join("src");
    let files = tree(&src);
    let s = src.display().to_string();
    rclone(&["mkdir", "ps:backup"]);
    rclone(&["copy", &s, "ps:backup/tree"]);
    let ls = rclone(&["ls", "ps:backup"]);
    assert_eq!(ls.lines().count(), files.len(), "{ls}");
    let lsf = rclone(&["lsf", "ps:backup/tree"]);
    let mut top: Vec<&str> = lsf.lines().collect();
    top.sort();
    assert_eq!(top, vec!["a/", "f0.bin", "f3.bin", "f6.bin", "f9.bin", "sub dir/"], "{lsf}");
    // check compares sizes and the MD5s (the ETags); --download compares the bytes.
    rclone(&["check", &s, "ps:backup/tree"]);
    rclone(&["check", "--download", &s, "ps:backup/tree"]);
    let down = dir.join("down");
    rclone(&["copy", "ps:backup/tree", &down.display().to_string()]);
    same_tree(&files, &down);
    // A changed file is found by check, and copied again.
    std::fs::write(src.join("f3.bin"), b"changed").expect("write");
    let changed = cmd(&["check", &s, "ps:backup/tree"]).output().expect("rclone");
    assert!(!changed.status.success(), "check finds the changed file");
    rclone(&["copy", &s, "ps:backup/tree"]);
    rclone(&["check", &s, "ps:backup/tree"]);
    // sync with large files in parts (cutoff and chunk lowered from rclone's 200 MiB and
    // 5 MiB defaults to 8 MiB and 5 MiB), server-side moves (CopyObject), check both ways.
    let big = src.join("video");
    std::fs::create_dir_all(&big).expect("mkdir");
    for i in 0..3u32 {
        let body: Vec<u8> =
            (0..(12 << 20) + i * 1_000_003).map(|b| (b.wrapping_mul(2_246_822_519) >> 7) as u8).collect();
        std::fs::write(big.join(format!("clip{i}.mp4")), body).expect("write");
    }
    let parts = ["--s3-upload-cutoff", "8M", "--s3-chunk-size", "5M"];
    rclone(&[&["sync", &s, "ps:backup/tree"][..], &parts].concat());
    rclone(&["check", &s, "ps:backup/tree"]);
    rclone(&["check", "--download", &s, "ps:backup/tree"]);
    rclone(&["moveto", "ps:backup/tree/video/clip0.mp4", "ps:backup/tree/video/moved.mp4"]);
    let moved = dir.join("moved.mp4");
    rclone(&["copyto", "ps:backup/tree/video/moved.mp4", &moved.display().to_string()]);
    assert!(std::fs::read(&moved).expect("read") == std::fs::read(big.join("clip0.mp4")).expect("read"));
    let synced = dir.join("synced");
    rclone(&["sync", "ps:backup/tree", &synced.display().to_string()]);
    rclone(&["check", "--download", "ps:backup/tree", &synced.display().to_string()]);
    rclone(&["purge", "ps:backup"]);
    assert!(!rclone(&["lsd", "ps:"]).contains("backup"));
}

#[test]
#[ignore = "needs restic (apt-get install restic): cargo test -- --ignored (.ci/run runs it)"]
fn restic_backs_up_checks_and_restores() {
    let (_node, s3, dir) = node("s3-restic");
    let restic = |args: &[&str]| {
        run(
            &format!("restic {args:?}"),
            Command::new("restic")
                .args(args)
                .env("RESTIC_REPOSITORY", format!("s3:http://{s3}/backups/host1"))
                .env("RESTIC_PASSWORD", "restic-test-password")
                .env("AWS_ACCESS_KEY_ID", "uploader")
                .env("AWS_SECRET_ACCESS_KEY", UP)
                .env("AWS_DEFAULT_REGION", "us-east-1")
                .env("RESTIC_CACHE_DIR", dir.join("restic-cache"))
                .env_remove("AWS_CA_BUNDLE"),
        )
    };
    let src = dir.join("src");
    let mut files = tree(&src);
    // A large file: restic packs it into blobs of several MiB.
    let big: Vec<u8> = (0..40u32 << 20).map(|b| (b.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(src.join("big.bin"), &big).expect("write");
    files.push(("big.bin".into(), big));
    restic(&["init"]);
    restic(&["backup", &src.display().to_string()]);
    restic(&["check", "--read-data"]);
    let out = dir.join("restored");
    restic(&["restore", "latest", "--target", &out.display().to_string()]);
    // restore puts the tree under its absolute path.
    same_tree(&files, &out.join(src.strip_prefix("/").expect("absolute")));
    assert!(restic(&["snapshots"]).contains("1 snapshots"));
}

#[test]
#[ignore = "needs s3fs and /dev/fuse as root (apt-get install s3fs): cargo test -- --ignored (.ci/run runs it)"]
fn s3fs_mounts_a_bucket_and_renames_in_it() {
    let (node, s3, dir) = node("s3-s3fs");
    let bearer = format!("Bearer uploader.{UP}");
    assert_eq!(node.req("PUT", "/mounted/.keep", &[("authorization", &bearer)], b"").status, 201);
    let passwd = dir.join("passwd-s3fs");
    std::fs::write(&passwd, format!("uploader:{UP}\n")).expect("write");
    std::fs::set_permissions(&passwd, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let mut fs = Command::new("s3fs")
        .arg("mounted")
        .arg(&mnt)
        .arg("-f")
        .args(["-o", &format!("url=http://{s3}"), "-o", "use_path_request_style", "-o", "endpoint=us-east-1"])
        .args(["-o", &format!("passwd_file={}", passwd.display()), "-o", "sigv4", "-o", "multipart_size=5"])
        .args(["-o", "dbglevel=warn", "-o", "stat_cache_expire=1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("s3fs");
    let unmount = |mnt: &Path| {
        let _ = Command::new("fusermount").arg("-u").arg(mnt).status();
    };
    let mounted =
        || std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| m.contains(&mnt.display().to_string()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !mounted() {
        assert!(std::time::Instant::now() < deadline, "s3fs did not mount");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Copy a tree in (a 30 MiB file goes up in parts of 5 MiB), list it, read it back.
        let src = dir.join("src");
        let mut files = tree(&src);
        let big: Vec<u8> = (0..30u32 << 20).map(|b| (b.wrapping_mul(2_654_435_761) >> 5) as u8).collect();
        std::fs::write(src.join("big.bin"), &big).expect("write");
        files.push(("big.bin".into(), big.clone()));
        run("cp -r", Command::new("cp").arg("-r").arg(format!("{}/.", src.display())).arg(&mnt));
        let mut listed: Vec<String> = std::fs::read_dir(&mnt)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        listed.sort();
        for want in ["a", "big.bin", "f0.bin", "sub dir"] {
            assert!(listed.iter().any(|l| l == want), "{want} in {listed:?}");
        }
        same_tree(&files, &mnt);
        // Renames: a file (a copy inside the node, then a delete), a large file (copied in
        // parts), a directory.
        std::fs::rename(mnt.join("f0.bin"), mnt.join("renamed.bin")).expect("rename a file");
        std::fs::rename(mnt.join("big.bin"), mnt.join("big-renamed.bin")).expect("rename a large file");
        std::fs::rename(mnt.join("sub dir"), mnt.join("moved dir")).expect("rename a directory");
        assert!(std::fs::read(mnt.join("renamed.bin")).expect("read") == files[0].1);
        assert!(std::fs::read(mnt.join("big-renamed.bin")).expect("read") == big);
        assert!(!mnt.join("f0.bin").exists() && !mnt.join("sub dir").exists());
        assert!(std::fs::read(mnt.join("moved dir/g 1 & more.txt")).expect("read") == files[1].1);
    }));
    unmount(&mnt);
    let _ = fs.wait();
    if let Err(e) = outcome {
        let mut log = String::new();
        if let Some(mut err) = fs.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut log);
        }
        eprintln!("s3fs said:\n{log}");
        std::panic::resume_unwind(e);
    }
    // What s3fs wrote is there through the native API too.
    let r = node.req("GET", "/mounted/big-renamed.bin", &[("authorization", &bearer)], b"");
    assert_eq!((r.status, r.body.len()), (200, 30 << 20));
    assert_eq!(node.req("GET", "/mounted/big.bin", &[("authorization", &bearer)], b"").status, 404);
}

#[test]
#[ignore = "needs docker-registry and skopeo (apt-get install docker-registry skopeo): cargo test -- --ignored (.ci/run runs it)"]
fn a_container_registry_keeps_its_images_on_the_node() {
    let (node, s3, dir) = node("s3-registry");
    let bearer = format!("Bearer uploader.{UP}");
    assert_eq!(node.req("PUT", "/registry/.keep", &[("authorization", &bearer)], b"").status, 201);
    let registry_addr = common::free_addr();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  s3:\n    accesskey: uploader\n    secretkey: {UP}\n\
             \x20   region: us-east-1\n    regionendpoint: http://{s3}\n    bucket: registry\n    secure: false\n\
             \x20   v4auth: true\n    chunksize: 5242880\n    rootdirectory: /images\n  redirect:\n    disable: true\n\
             \x20 delete:\n    enabled: true\nhttp:\n  addr: {registry_addr}\n"
        ),
    )
    .expect("write registry config");
    struct Registry(std::process::Child);
    impl Drop for Registry {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _registry = Registry(
        Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            // A CA bundle set for other AWS tools makes the registry's SDK refuse plain HTTP.
            .env_remove("AWS_CA_BUNDLE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry"),
    );
    common::eventually("the registry answers", || std::net::TcpStream::connect(registry_addr).is_ok());
    let image = dir.join("image");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_clients/oci_image.py");
    let layers: Vec<String> =
        serde_json::from_str(&run("the image", Command::new("python3").arg(&script).arg(&image).arg("v1")))
            .expect("layer digests");
    let skopeo = |args: &[&str]| {
        run(&format!("skopeo {args:?}"), Command::new("skopeo").arg("--insecure-policy").args(args))
    };
    let remote = format!("docker://{registry_addr}/podstore/test:v1");
    skopeo(&["copy", "--dest-tls-verify=false", &format!("oci:{}:v1", image.display()), &remote]);
    let inspect: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &remote])).expect("inspect json");
    let listed: Vec<&str> =
        inspect["Layers"].as_array().expect("layers").iter().filter_map(|l| l.as_str()).collect();
    assert_eq!(listed, layers.iter().map(String::as_str).collect::<Vec<_>>(), "{inspect}");
    let pulled = dir.join("pulled");
    skopeo(&["copy", "--src-tls-verify=false", &remote, &format!("oci:{}:v1", pulled.display())]);
    for digest in &layers {
        let hex = digest.trim_start_matches("sha256:");
        let a = std::fs::read(image.join("blobs/sha256").join(hex)).expect("pushed layer");
        let b = std::fs::read(pulled.join("blobs/sha256").join(hex)).expect("pulled layer");
        assert!(a == b, "layer {digest} pulled as pushed");
    }
    // The registry's blobs are objects of the node.
    let listing = node.req(
        "GET",
        "/registry?prefix=images/docker/registry/v2/blobs/",
        &[("authorization", &bearer)],
        b"",
    );
    let text = String::from_utf8_lossy(&listing.body);
    assert!(text.contains(layers[0].trim_start_matches("sha256:")), "{text}");
}
