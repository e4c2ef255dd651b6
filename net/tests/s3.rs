//! The S3 port with a real client (the AWS CLI): listings (`aws s3 ls`, ListObjectsV2 and v1
//! with prefixes, delimiters and pages), downloads, presigned URLs, and Signature Version 4
//! with the access keys of `[[auth.keys]]`: a wrong secret, a key limited to other buckets and
//! an unsigned request are refused with S3's error codes. Needs the AWS CLI and curl: it runs
//! when asked (`cargo test -- --ignored`; `.ci/run` installs both and runs it).

mod common;

use std::path::Path;
use std::process::Command;

use common::{free_addr, fresh_dir, request, Node};

const UP: &str = "dXBsb2FkZXItc2VjcmV0LWZvci10aGUtczMtdGVzdHMtLQ==";
const RO: &str = "cmVhZGVyLXNlY3JldC1mb3ItdGhlLXMzLXRlc3RzLS0tLQ==";

fn secret_file(dir: &Path, name: &str, secret: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("{secret}\n")).expect("write secret");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p.display().to_string()
}

/// The CLI's configuration: Signature Version 4 for presigned URLs too (version 1 of the CLI
/// presigns with version 2, which comes later).
fn aws_config() -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("podstore-it-aws-config-{}", std::process::id()));
    std::fs::write(&p, "[default]\ns3 =\n    signature_version = s3v4\n").expect("write aws config");
    p
}

/// Runs `aws` against the node's S3 port as access key `id`.
fn aws(s3: std::net::SocketAddr, id: &str, secret: &str, args: &[&str]) -> std::process::Output {
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
    assert!(o.status.success(), "aws failed: {}", String::from_utf8_lossy(&o.stderr));
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
        secret_file(&dir, "up", UP),
        secret_file(&dir, "ro", RO)
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
