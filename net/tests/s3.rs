//! The S3 port with a real client (the AWS CLI): listings (`aws s3 ls`, ListObjectsV2 and v1
//! with prefixes, delimiters and pages), downloads, presigned URLs, and Signature Version 4
//! with the access keys of `[[auth.keys]]`: a wrong secret, a key limited to other buckets and
//! an unsigned request are refused with S3's error codes. Writes: `aws s3 cp` (single part,
//! with metadata and the CLI's CRC32 checksum), a tree up and back, `aws s3 rm --recursive`
//! (DeleteObjects), a wrong Content-MD5 storing nothing, and one namespace with the native API.
//! Multipart: `aws s3 cp` of a 200 MiB file both ways, `aws s3 sync` of a tree with large
//! files and back, and the `aws s3api` multipart calls by hand (list-parts, list uploads,
//! abort, complete).
//! Needs the AWS CLI and curl: it runs when asked (`cargo test -- --ignored`; `.ci/run`
//! installs both and runs it).

mod common;

use std::process::Command;

use common::{free_addr, fresh_dir, request, secret_file, Node};

const UP: &str = "dXBsb2FkZXItc2VjcmV0LWZvci10aGUtczMtdGVzdHMtLQ==";
const RO: &str = "cmVhZGVyLXNlY3JldC1mb3ItdGhlLXMzLXRlc3RzLS0tLQ==";

/// The CLI's configuration: Signature Version 4 for presigned URLs too (version 1 of the CLI
/// presigns with version 2, which comes later). Multipart uploads at the CLI's defaults (files
/// from 8 MiB, in parts of 8 MiB, 10 at a time).
fn aws_config() -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("podstore-it-aws-config-{}", std::process::id()));
    std::fs::write(&p, "[default]\ns3 =\n    signature_version = s3v4\n").expect("write aws config");
    p
}

/// Runs `aws` against the node's S3 port as access key `id`.
fn aws(s3: std::net::SocketAddr, id: &str, secret: &str, args: &[&str]) -> std::process::Output {
    let t = std::time::Instant::now();
    let o = aws_run(s3, id, secret, args);
    eprintln!("aws {args:?}: {:?}", t.elapsed());
    o
}

fn aws_run(s3: std::net::SocketAddr, id: &str, secret: &str, args: &[&str]) -> std::process::Output {
    Command::new("aws")
        .arg("--endpoint-url")
        .arg(format!("http://{s3}"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", aws_config())
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run aws")
}

fn ok(o: std::process::Output) -> String {
    assert!(
        o.status.success(),
        "aws failed: {}{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout).expect("utf-8")
}

fn json(o: std::process::Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).expect("json")
}

#[test]
#[ignore = "needs the AWS CLI and curl (apt-get install awscli curl): cargo test -- --ignored (.ci/run runs it)"]
fn the_aws_cli_lists_and_reads_with_signed_requests() {
    assert!(
        Command::new("aws").arg("--version").output().is_ok(),
        "the AWS CLI is not installed (apt-get install awscli)"
    );
    let dir = fresh_dir("s3");
    let (data, admin, s3) = (free_addr(), free_addr(), free_addr());
    let mut text = common::config_text(&dir, data, admin, "");
    text = text.replacen("[listen]\n", &format!("[listen]\ns3 = \"{s3}\"\n"), 1);
    text.push_str(&format!(
        "\n[auth]\n\n[[auth.keys]]\nid = \"uploader\"\nsecret_file = \"{}\"\n\n\
         [[auth.keys]]\nid = \"reader\"\nsecret_file = \"{}\"\nbuckets = [\"photos\"]\nread_only = true\n",
        secret_file(&dir, "up", UP).display(),
        secret_file(&dir, "ro", RO).display()
    ));
    let node = Node::start_with_config(dir.clone(), data, admin, text);
    let bearer = format!("Bearer uploader.{UP}");
    let mut keys: Vec<String> = (0..30).map(|i| format!("2026/12/{i:02}.jpg")).collect();
    keys.extend(["a b+c.jpg", "ключ/файл", "top"].map(String::from));
    for k in &keys {
        let path = format!("/photos/{}", k.bytes().map(|b| format!("%{b:02X}")).collect::<String>());
        let r = node.req(
            "PUT",
            &path,
            &[("authorization", &bearer), ("content-type", "image/jpeg")],
            k.as_bytes(),
        );
        assert_eq!(r.status, 201, "{k}");
    }
    assert_eq!(node.req("PUT", "/videos/v1", &[("authorization", &bearer)], b"video").status, 201);
    keys.sort();

    // aws s3 ls: the buckets (those the key may use), the first level, then everything.
    let buckets = ok(aws(s3, "uploader", UP, &["s3", "ls"]));
    let names: Vec<&str> = buckets.lines().filter_map(|l| l.split_whitespace().last()).collect();
    assert_eq!(names, vec!["photos", "videos"], "{buckets}");
    let buckets = ok(aws(s3, "reader", RO, &["s3", "ls"]));
    assert_eq!(
        buckets.lines().filter_map(|l| l.split_whitespace().last()).collect::<Vec<_>>(),
        vec!["photos"]
    );
    let top = ok(aws(s3, "reader", RO, &["s3", "ls", "s3://photos/"]));
    assert!(top.contains("PRE 2026/") && top.contains("PRE ключ/"), "{top}");
    assert!(
        top.lines().any(|l| l.ends_with(" top")) && top.lines().any(|l| l.ends_with(" a b+c.jpg")),
        "{top}"
    );
    let all = ok(aws(s3, "reader", RO, &["s3", "ls", "s3://photos/", "--recursive"]));
    let listed: Vec<&str> =
        all.lines().map(|l| l.splitn(4, char::is_whitespace).last().unwrap_or("").trim_start()).collect();
    assert_eq!(listed.len(), keys.len(), "{all}");
    // Pages of 7 through ListObjectsV2's continuation tokens (the CLI follows them), and v1's
    // markers, with a delimiter.
    let v2 =
        json(aws(s3, "reader", RO, &["s3api", "list-objects-v2", "--bucket", "photos", "--page-size", "7"]));
    let got: Vec<&str> = v2["Contents"]
        .as_array()
        .expect("contents")
        .iter()
        .map(|o| o["Key"].as_str().expect("key"))
        .collect();
    assert_eq!(got, keys.iter().map(String::as_str).collect::<Vec<_>>());
    let v1 = json(aws(
        s3,
        "reader",
        RO,
        &["s3api", "list-objects", "--bucket", "photos", "--delimiter", "/", "--page-size", "1"],
    ));
    let prefixes: Vec<&str> = v1["CommonPrefixes"]
        .as_array()
        .expect("prefixes")
        .iter()
        .map(|p| p["Prefix"].as_str().expect("p"))
        .collect();
    assert_eq!(prefixes, vec!["2026/", "ключ/"]);
    let objs: Vec<&str> = v1["Contents"]
        .as_array()
        .expect("contents")
        .iter()
        .map(|o| o["Key"].as_str().expect("key"))
        .collect();
    assert_eq!(objs, vec!["a b+c.jpg", "top"]);
    let one = json(aws(
        s3,
        "reader",
        RO,
        &["s3api", "list-objects-v2", "--bucket", "photos", "--prefix", "2026/12/1", "--no-paginate"],
    ));
    assert_eq!((one["KeyCount"].as_u64(), one["IsTruncated"].as_bool()), (Some(10), Some(false)));
    let etag = one["Contents"][0]["ETag"].as_str().expect("etag");
    assert!(etag.ends_with("-1\""), "a native object's ETag is not an MD5: {etag}");

    // Downloads: whole, and the object's headers.
    let out = ok(aws(s3, "reader", RO, &["s3", "cp", "s3://photos/ключ/файл", "-"]));
    assert_eq!(out, "ключ/файл");
    let head = json(aws(s3, "reader", RO, &["s3api", "head-object", "--bucket", "photos", "--key", "top"]));
    assert_eq!((head["ContentLength"].as_u64(), head["ContentType"].as_str()), (Some(3), Some("image/jpeg")));

    // Refusals: a wrong secret, a bucket outside the key's list, an unsigned request, a key
    // that does not exist.
    let bad = aws(s3, "reader", UP, &["s3", "ls", "s3://photos/"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("SignatureDoesNotMatch"));
    let other = aws(s3, "reader", RO, &["s3", "ls", "s3://videos/"]);
    assert!(!other.status.success() && String::from_utf8_lossy(&other.stderr).contains("AccessDenied"));
    let nobody = aws(s3, "nobody", RO, &["s3", "ls", "s3://photos/"]);
    assert!(
        !nobody.status.success() && String::from_utf8_lossy(&nobody.stderr).contains("InvalidAccessKeyId")
    );
    let r = request(s3, "GET", "/photos/top", &[], b"").expect("request");
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("<Code>AccessDenied</Code>"));
    let r = request(s3, "GET", "/photos/missing", &[], b"").expect("request");
    assert_eq!(r.status, 403, "an unsigned request learns nothing of what exists");

    // A presigned URL (the host it was signed for is part of it): the object for anyone
    // holding it, nothing else.
    let url = ok(aws(s3, "reader", RO, &["s3", "presign", "s3://photos/top", "--expires-in", "300"]));
    let curl = |u: &str| {
        let o = Command::new("curl").args(["-s", "-w", "\n%{http_code}", u]).output().expect("curl");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(curl(url.trim()), "top\n200");
    let tampered = url.trim().replace("/photos/top", "/photos/a%20b%2Bc.jpg");
    assert!(curl(&tampered).ends_with("\n403"), "a URL signed for another object");

    // What S3 does not do here yet answers 501, never a wrong success.
    let put = aws(s3, "uploader", UP, &["s3api", "put-bucket-acl", "--bucket", "photos", "--acl", "private"]);
    assert!(!put.status.success() && String::from_utf8_lossy(&put.stderr).contains("NotImplemented"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A request signed by curl's own Signature Version 4 as the uploader: the final answer's
/// status (after any 100 Continue), and its headers and body as text.
fn curl_signed(s3: std::net::SocketAddr, args: &[&str], path: &str) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-s", "-i", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", &format!("uploader:{UP}")])
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .args(args)
        .arg(if path.starts_with("http") { path.to_string() } else { format!("http://{s3}{path}") })
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let last = text.rsplit("HTTP/1.1 ").next().unwrap_or("").to_string();
    (last.get(..3).and_then(|s| s.parse().ok()).unwrap_or(0), last)
}

fn md5_hex(b: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
#[ignore = "needs the AWS CLI (apt-get install awscli): cargo test -- --ignored (.ci/run runs it)"]
fn the_aws_cli_writes_and_deletes_in_one_namespace_with_the_native_api() {
    let dir = fresh_dir("s3-writes");
    let (data, admin, s3) = (free_addr(), free_addr(), free_addr());
    let mut text = common::config_text(&dir, data, admin, "");
    text = text.replacen("[listen]\n", &format!("[listen]\ns3 = \"{s3}\"\ns3_domain = \"s3.test\"\n"), 1);
    text.push_str(&format!(
        "\n[auth]\n\n[[auth.keys]]\nid = \"uploader\"\nsecret_file = \"{}\"\n\n\
         [[auth.keys]]\nid = \"reader\"\nsecret_file = \"{}\"\nread_only = true\n",
        secret_file(&dir, "up", UP).display(),
        secret_file(&dir, "ro", RO).display()
    ));
    let node = Node::start_with_config(dir.clone(), data, admin, text);
    let bearer = format!("Bearer uploader.{UP}");

    // One object through the CLI: its MD5 is its ETag, its metadata and content headers come
    // back through S3 and through the native API.
    let file = dir.join("clip.mp4");
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&file, &body).expect("write file");
    let f = file.display().to_string();
    ok(aws(
        s3,
        "uploader",
        UP,
        &[
            "s3",
            "cp",
            &f,
            "s3://media/2026/clip.mp4",
            "--content-type",
            "video/mp4",
            "--metadata",
            "camera=z9,take=3",
            "--cache-control",
            "max-age=60",
        ],
    ));
    let head =
        json(aws(s3, "reader", RO, &["s3api", "head-object", "--bucket", "media", "--key", "2026/clip.mp4"]));
    assert_eq!(head["ETag"].as_str(), Some(format!("\"{}\"", md5_hex(&body)).as_str()), "{head}");
    assert_eq!(head["ContentType"].as_str(), Some("video/mp4"));
    assert_eq!(head["CacheControl"].as_str(), Some("max-age=60"));
    assert_eq!(head["Metadata"]["camera"].as_str(), Some("z9"));
    assert_eq!(head["Metadata"]["take"].as_str(), Some("3"));
    let native = node.req("GET", "/media/2026/clip.mp4", &[("authorization", &bearer)], b"");
    assert_eq!(native.status, 200);
    assert!(native.body == body, "the native API reads what S3 wrote");
    assert_eq!(native.header("x-amz-meta-camera"), Some("z9"));
    assert_eq!(native.header("cache-control"), Some("max-age=60"));
    let back = dir.join("back.mp4");
    ok(aws(s3, "reader", RO, &["s3", "cp", "s3://media/2026/clip.mp4", &back.display().to_string()]));
    assert!(std::fs::read(&back).expect("read back") == body);
    // Listed through both APIs with the same size; S3 shows the MD5.
    let listed = json(aws(s3, "reader", RO, &["s3api", "list-objects-v2", "--bucket", "media"]));
    assert_eq!(listed["Contents"][0]["ETag"].as_str(), Some(format!("\"{}\"", md5_hex(&body)).as_str()));
    let page = node.req("GET", "/media?prefix=2026/", &[("authorization", &bearer)], b"");
    assert!(
        String::from_utf8_lossy(&page.body).contains("\"size\":3000000"),
        "{}",
        String::from_utf8_lossy(&page.body)
    );

    // A tree up and back, then removed (DeleteObjects); the listing follows.
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sub dir")).expect("mkdir");
    for i in 0..12u32 {
        std::fs::write(tree.join(format!("f{i}")), vec![i as u8; 1000 * i as usize]).expect("write");
    }
    std::fs::write(tree.join("sub dir/a & b.txt"), "ampersand").expect("write");
    let t = tree.display().to_string();
    ok(aws(s3, "uploader", UP, &["s3", "cp", &t, "s3://media/tree/", "--recursive"]));
    let down = dir.join("down");
    ok(aws(s3, "reader", RO, &["s3", "cp", "s3://media/tree/", &down.display().to_string(), "--recursive"]));
    for i in 0..12u32 {
        assert_eq!(
            std::fs::read(down.join(format!("f{i}"))).expect("read"),
            vec![i as u8; 1000 * i as usize]
        );
    }
    assert_eq!(std::fs::read_to_string(down.join("sub dir/a & b.txt")).expect("read"), "ampersand");
    let all = ok(aws(s3, "reader", RO, &["s3", "ls", "s3://media/tree/", "--recursive"]));
    assert_eq!(all.lines().count(), 13, "{all}");
    // Each object is its one version ("null"), as tools that empty buckets expect.
    let versions = json(aws(
        s3,
        "reader",
        RO,
        &["s3api", "list-object-versions", "--bucket", "media", "--prefix", "tree/"],
    ));
    let v = versions["Versions"].as_array().expect("versions");
    assert_eq!(v.len(), 13, "{versions}");
    assert!(v.iter().all(|x| x["VersionId"] == "null" && x["IsLatest"] == true), "{versions}");
    ok(aws(
        s3,
        "uploader",
        UP,
        &["s3api", "delete-object", "--bucket", "media", "--key", "tree/f1", "--version-id", "null"],
    ));
    // Virtual-hosted addressing under the configured domain (the host names the bucket).
    let vh = format!("http://media.s3.test:{}/tree/f2", s3.port());
    let resolve = format!("media.s3.test:{}:127.0.0.1", s3.port());
    let (status, text) = curl_signed(s3, &["--resolve", &resolve], &vh);
    assert!(status == 200 && text.ends_with(&"\u{2}".repeat(2000)), "{}", &text[..text.len().min(300)]);
    ok(aws(s3, "uploader", UP, &["s3", "rm", "s3://media/tree/", "--recursive"]));
    let left =
        json(aws(s3, "reader", RO, &["s3api", "list-objects-v2", "--bucket", "media", "--prefix", "tree/"]));
    assert!(left.get("Contents").is_none(), "{left}");
    assert_eq!(node.req("GET", "/media/tree/f3", &[("authorization", &bearer)], b"").status, 404);

    // One namespace: written natively, read and deleted through S3; a quiet batch delete.
    let r = node.req(
        "PUT",
        "/media/native.txt",
        &[("authorization", &bearer), ("content-type", "text/plain")],
        b"native",
    );
    assert_eq!(r.status, 201);
    assert_eq!(ok(aws(s3, "reader", RO, &["s3", "cp", "s3://media/native.txt", "-"])), "native");
    ok(aws(s3, "uploader", UP, &["s3", "rm", "s3://media/native.txt"]));
    assert_eq!(node.req("GET", "/media/native.txt", &[("authorization", &bearer)], b"").status, 404);
    let quiet = ok(aws(
        s3,
        "uploader",
        UP,
        &[
            "s3api",
            "delete-objects",
            "--bucket",
            "media",
            "--delete",
            r#"{"Objects":[{"Key":"2026/clip.mp4"},{"Key":"never"}],"Quiet":true}"#,
        ],
    ));
    assert!(
        !quiet.contains("Deleted") && !quiet.contains("Errors"),
        "a quiet delete names no key it deleted: {quiet}"
    );
    assert_eq!(node.req("GET", "/media/2026/clip.mp4", &[("authorization", &bearer)], b"").status, 404);

    // Refusals store nothing: a Content-MD5 of other bytes, a read-only key, metadata too large.
    let wrong_md5 = "XUFAKrxLKna5cZ2REBfFkg=="; // MD5 of "hello"
    let bad = aws(
        s3,
        "uploader",
        UP,
        &[
            "s3api",
            "put-object",
            "--bucket",
            "media",
            "--key",
            "bad",
            "--body",
            &f,
            "--content-md5",
            wrong_md5,
        ],
    );
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("BadDigest"));
    let ro = aws(s3, "reader", RO, &["s3", "cp", &f, "s3://media/bad"]);
    assert!(!ro.status.success() && String::from_utf8_lossy(&ro.stderr).contains("AccessDenied"));
    let big = "v".repeat(2100);
    let meta = format!("big={big}");
    let large = aws(s3, "uploader", UP, &["s3", "cp", &f, "s3://media/bad", "--metadata", &meta]);
    assert!(!large.status.success() && String::from_utf8_lossy(&large.stderr).contains("MetadataTooLarge"));
    // Buckets: created (known to HeadBucket and ListBuckets), refused twice, deleted only when
    // empty; a listing of a bucket that does not exist is NoSuchBucket.
    ok(aws(s3, "uploader", UP, &["s3", "mb", "s3://fresh"]));
    let again = aws(s3, "uploader", UP, &["s3", "mb", "s3://fresh"]);
    assert!(
        !again.status.success() && String::from_utf8_lossy(&again.stderr).contains("BucketAlreadyOwnedByYou")
    );
    ok(aws(s3, "reader", RO, &["s3api", "head-bucket", "--bucket", "fresh"]));
    let buckets = ok(aws(s3, "uploader", UP, &["s3", "ls"]));
    assert!(buckets.lines().any(|l| l.ends_with(" fresh") && !l.starts_with("1970")), "{buckets}");
    ok(aws(s3, "uploader", UP, &["s3", "cp", &f, "s3://fresh/one"]));
    let full = aws(s3, "uploader", UP, &["s3", "rb", "s3://fresh"]);
    assert!(!full.status.success() && String::from_utf8_lossy(&full.stderr).contains("BucketNotEmpty"));
    ok(aws(s3, "uploader", UP, &["s3", "rm", "s3://fresh/one"]));
    ok(aws(s3, "uploader", UP, &["s3", "rb", "s3://fresh"]));
    assert!(!aws(s3, "reader", RO, &["s3api", "head-bucket", "--bucket", "fresh"]).status.success());
    let none = aws(s3, "reader", RO, &["s3", "ls", "s3://fresh"]);
    assert!(!none.status.success() && String::from_utf8_lossy(&none.stderr).contains("NoSuchBucket"));
    // Signed by curl: an additional checksum of other bytes stores nothing; X-Copies is
    // checked and answered as on the native API.
    let hello = dir.join("hello.txt");
    std::fs::write(&hello, "hello\n").expect("write");
    let up = hello.display().to_string();
    let (status, text) = curl_signed(s3, &["-T", &up, "-H", "x-amz-checksum-crc32: AAAAAA=="], "/media/bad");
    assert!(
        status == 400 && text.contains("<Code>BadDigest</Code>") && text.contains("x-amz-checksum-crc32"),
        "{text}"
    );
    let (status, text) = curl_signed(s3, &["-T", &up, "-H", "x-copies: 5"], "/media/bad");
    assert!(status == 400 && text.contains("X-Copies"), "{text}");
    let (status, text) = curl_signed(s3, &["-T", &up, "-H", "x-copies: all"], "/media/hello.txt");
    assert!(status == 200 && text.contains("x-podstore-copies-written: 1"), "{text}");
    let (status, text) = curl_signed(s3, &["-X", "DELETE", "-H", "x-copies: 1"], "/media/hello.txt");
    assert!(status == 204 && text.contains("x-podstore-copies-written: 1"), "{text}");
    assert_eq!(
        node.req("GET", "/media/bad", &[("authorization", &bearer)], b"").status,
        404,
        "nothing stored"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn md5_raw(b: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(b).into()
}

#[test]
#[ignore = "needs the AWS CLI (apt-get install awscli): cargo test -- --ignored (.ci/run runs it)"]
fn the_aws_cli_moves_large_files_in_parts() {
    let dir = fresh_dir("s3-multipart-cli");
    let (data, admin, s3) = (free_addr(), free_addr(), free_addr());
    let mut text = common::config_text(&dir, data, admin, "");
    text = text.replacen("[listen]\n", &format!("[listen]\ns3 = \"{s3}\"\n"), 1);
    text.push_str(&format!(
        "\n[auth]\n\n[[auth.keys]]\nid = \"uploader\"\nsecret_file = \"{}\"\n",
        secret_file(&dir, "up", UP).display()
    ));
    let node = Node::start_with_config(dir.clone(), data, admin, text);
    let up = |args: &[&str]| ok(aws(s3, "uploader", UP, args));

    // 200 MiB up in 25 parts of 8 MiB, and back.
    let big: Vec<u8> = (0..200u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let file = dir.join("video.bin");
    std::fs::write(&file, &big).expect("write");
    up(&["s3", "cp", &file.display().to_string(), "s3://media/video.bin"]);
    let head =
        json(aws(s3, "uploader", UP, &["s3api", "head-object", "--bucket", "media", "--key", "video.bin"]));
    assert_eq!(head["ContentLength"], 200u64 << 20, "{head}");
    let mut md5s = Vec::new();
    for chunk in big.chunks(8 << 20) {
        md5s.extend_from_slice(&md5_raw(chunk));
    }
    let etag = format!("\"{}-25\"", md5_hex(&md5s));
    assert_eq!(head["ETag"].as_str(), Some(etag.as_str()), "S3's multipart ETag");
    let back = dir.join("back.bin");
    up(&["s3", "cp", "s3://media/video.bin", &back.display().to_string()]);
    assert!(std::fs::read(&back).expect("read back") == big, "200 MiB back byte for byte");
    std::fs::remove_file(&back).expect("rm");
    // Nothing was written twice: the disks hold about 200 MiB for it, not 400.
    let used: f64 = common::metric(&node, "podstore_disk_used_bytes");
    assert!(used < 260.0 * (1 << 20) as f64, "{used} bytes used for a 200 MiB object");

    // A tree with large and small files, synced up and back.
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("clips")).expect("mkdir");
    let mut files = Vec::new();
    for i in 0..6u32 {
        let len = if i % 2 == 0 { (9 << 20) + i as usize * 4099 } else { 1000 * i as usize };
        let body: Vec<u8> = (0..len as u32).map(|b| (b.wrapping_mul(40_503) ^ i) as u8).collect();
        let name = format!("clips/c{i}.mp4");
        std::fs::write(tree.join(&name), &body).expect("write");
        files.push((name, body));
    }
    up(&["s3", "sync", &tree.display().to_string(), "s3://media/tree/"]);
    let down = dir.join("down");
    up(&["s3", "sync", "s3://media/tree/", &down.display().to_string()]);
    for (name, body) in &files {
        assert!(std::fs::read(down.join(name)).expect("read") == *body, "{name}");
    }
    // A second sync has nothing to do: sizes and times match.
    let again = up(&["s3", "sync", &tree.display().to_string(), "s3://media/tree/"]);
    assert!(again.trim().is_empty(), "{again}");

    // The multipart calls by hand.
    let created = json(aws(
        s3,
        "uploader",
        UP,
        &["s3api", "create-multipart-upload", "--bucket", "media", "--key", "hand.bin"],
    ));
    let id = created["UploadId"].as_str().expect("upload id").to_string();
    let part1 = dir.join("p1");
    let part2 = dir.join("p2");
    std::fs::write(&part1, vec![1u8; 5 << 20]).expect("write");
    std::fs::write(&part2, b"the last part").expect("write");
    let mut etags = Vec::new();
    for (n, p) in [("1", &part1), ("2", &part2)] {
        let r = json(aws(
            s3,
            "uploader",
            UP,
            &[
                "s3api",
                "upload-part",
                "--bucket",
                "media",
                "--key",
                "hand.bin",
                "--upload-id",
                &id,
                "--part-number",
                n,
                "--body",
                &p.display().to_string(),
            ],
        ));
        etags.push(r["ETag"].as_str().expect("etag").to_string());
    }
    let parts = json(aws(
        s3,
        "uploader",
        UP,
        &["s3api", "list-parts", "--bucket", "media", "--key", "hand.bin", "--upload-id", &id],
    ));
    assert_eq!(parts["Parts"].as_array().map(Vec::len), Some(2), "{parts}");
    assert_eq!(parts["Parts"][1]["Size"], 13);
    let uploads = json(aws(s3, "uploader", UP, &["s3api", "list-multipart-uploads", "--bucket", "media"]));
    assert_eq!(uploads["Uploads"][0]["UploadId"].as_str(), Some(id.as_str()), "{uploads}");
    let doc = serde_json::json!({"Parts": [
        {"PartNumber": 1, "ETag": etags[0]}, {"PartNumber": 2, "ETag": etags[1]}
    ]});
    let doc_file = dir.join("parts.json");
    std::fs::write(&doc_file, doc.to_string()).expect("write");
    let done = json(aws(
        s3,
        "uploader",
        UP,
        &[
            "s3api",
            "complete-multipart-upload",
            "--bucket",
            "media",
            "--key",
            "hand.bin",
            "--upload-id",
            &id,
            "--multipart-upload",
            &format!("file://{}", doc_file.display()),
        ],
    ));
    assert!(done["ETag"].as_str().is_some_and(|e| e.ends_with("-2\"")), "{done}");
    let got = dir.join("hand.out");
    up(&["s3", "cp", "s3://media/hand.bin", &got.display().to_string()]);
    let mut want = vec![1u8; 5 << 20];
    want.extend_from_slice(b"the last part");
    assert!(std::fs::read(&got).expect("read") == want);
    // An abort, then the upload is gone.
    let created = json(aws(
        s3,
        "uploader",
        UP,
        &["s3api", "create-multipart-upload", "--bucket", "media", "--key", "gone.bin"],
    ));
    let id = created["UploadId"].as_str().expect("upload id").to_string();
    up(&["s3api", "abort-multipart-upload", "--bucket", "media", "--key", "gone.bin", "--upload-id", &id]);
    let left = json(aws(s3, "uploader", UP, &["s3api", "list-multipart-uploads", "--bucket", "media"]));
    assert!(left.get("Uploads").is_none(), "{left}");
    let listed = aws(
        s3,
        "uploader",
        UP,
        &["s3api", "list-parts", "--bucket", "media", "--key", "gone.bin", "--upload-id", &id],
    );
    assert!(String::from_utf8_lossy(&listed.stderr).contains("NoSuchUpload"));
}
