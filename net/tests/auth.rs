//! Client authentication on the real binary (API.md "Authentication", issue 8): bearer tokens,
//! presigned URLs, public buckets and key scopes; refusals change nothing and tell nothing
//! about objects; a node open to anyone beyond loopback does not start without `--insecure`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{free_addr, secret_file, Node};

const UP: &str = "dXBsb2FkZXItc2VjcmV0LWZvci10aGUtYXV0aC10ZXN0cw==";
const RO: &str = "cmVhZGVyLXNlY3JldC1mb3ItdGhlLWF1dGgtdGVzdHMtLQ==";

fn keys_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("podstore-it-keys-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

fn auth_toml(dir: &Path) -> String {
    format!(
        "[auth]\npublic_buckets = [\"cdn-assets\"]\n\n\
         [[auth.keys]]\nid = \"uploader\"\nsecret_file = \"{}\"\n\n\
         [[auth.keys]]\nid = \"reader\"\nsecret_file = \"{}\"\nbuckets = [\"photos\"]\nread_only = true\n",
        secret_file(dir, "uploader", UP).display(),
        secret_file(dir, "reader", RO).display()
    )
}

fn bearer(id: &str, secret: &str) -> String {
    format!("Bearer {id}.{secret}")
}

fn podstore(args: &[&str], token: Option<&str>) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_podstore"));
    c.args(args);
    match token {
        Some(t) => c.env("PODSTORE_TOKEN", t),
        None => c.env_remove("PODSTORE_TOKEN"),
    };
    c.output().expect("run podstore")
}

#[test]
fn requests_need_a_key_that_allows_them_and_refusals_change_and_tell_nothing() {
    let keys = keys_dir("scopes");
    let node = Node::start("auth-scopes", &auth_toml(&keys));
    let up = bearer("uploader", UP);
    let ro = bearer("reader", RO);
    let with = |t: &str| vec![("authorization", t.to_string())];
    let req = |m: &str, p: &str, h: &[(&str, String)], b: &[u8]| {
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        node.req(m, p, &h, b)
    };

    // Writes need a key; a refused one stores nothing.
    let r = req("PUT", "/photos/cat.jpg", &[], b"meow");
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{:?}", r.headers);
    assert_eq!(req("GET", "/photos/cat.jpg", &with(&up), b"").status, 404);
    assert_eq!(req("PUT", "/photos/cat.jpg", &with(&up), b"meow").status, 201);
    assert_eq!(req("PUT", "/photos/cat.jpg", &with(&ro), b"woof").status, 403, "a read-only key");
    assert_eq!(req("PUT", "/photos/cat.jpg", &with(&bearer("uploader", RO)), b"woof").status, 401);
    assert_eq!(req("PUT", "/photos/cat.jpg", &with(&bearer("nobody", UP)), b"woof").status, 401);
    assert_eq!(req("DELETE", "/photos/cat.jpg", &[], b"").status, 401);
    assert_eq!(req("DELETE", "/photos/cat.jpg", &with(&ro), b"").status, 403);
    let r = req("GET", "/photos/cat.jpg", &with(&ro), b"");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"meow"[..]), "refused writes changed nothing");

    // Reads of a private bucket: the same answer whether the object exists or not.
    let there = req("GET", "/photos/cat.jpg", &[], b"");
    let absent = req("GET", "/photos/no-such.jpg", &[], b"");
    assert_eq!((there.status, &there.body), (absent.status, &absent.body));
    assert_eq!(there.status, 401);
    assert_eq!(req("HEAD", "/photos/cat.jpg", &[], b"").status, 401);
    // A key limited to other buckets: 403 for both too.
    assert_eq!(req("PUT", "/music/song.mp3", &with(&up), b"la").status, 201);
    let (a, b) =
        (req("GET", "/music/song.mp3", &with(&ro), b""), req("GET", "/music/nothing", &with(&ro), b""));
    assert_eq!((a.status, &a.body), (b.status, &b.body));
    assert_eq!(a.status, 403);

    // A public bucket: anyone reads, nobody writes without a key.
    assert_eq!(req("PUT", "/cdn-assets/logo.png", &with(&up), b"png").status, 201);
    assert_eq!(req("GET", "/cdn-assets/logo.png", &[], b"").body, b"png");
    assert_eq!(req("HEAD", "/cdn-assets/logo.png", &[], b"").status, 200);
    assert_eq!(req("PUT", "/cdn-assets/logo.png", &[], b"defaced").status, 401);
    assert_eq!(req("DELETE", "/cdn-assets/logo.png", &[], b"").status, 401);
    assert_eq!(req("GET", "/cdn-assets/logo.png", &[], b"").body, b"png");

    // Listings: the rules of a GET of the bucket (its keys are no one else's business).
    assert_eq!(req("GET", "/photos?limit=10", &[], b"").status, 401);
    let r = req("GET", "/photos?limit=10", &with(&ro), b"");
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("cat.jpg"));
    assert_eq!(req("GET", "/music", &with(&ro), b"").status, 403);
    assert_eq!(req("GET", "/music", &with(&up), b"").status, 200);
    assert_eq!(req("GET", "/cdn-assets/", &[], b"").status, 200, "a public bucket lists for anyone");

    // Node endpoints need no key.
    assert_eq!(req("GET", "/_/health", &[], b"").status, 200);

    // The toolbox takes the token from PODSTORE_TOKEN.
    let server = node.data.to_string();
    let src = keys.join("upload.bin");
    std::fs::write(&src, b"from the toolbox").expect("write");
    let src = src.to_str().expect("utf8");
    let out = podstore(&["put", "photos/tool.bin", src, "--server", &server], None);
    assert!(!out.status.success(), "a PUT without a token must fail");
    let token = format!("uploader.{UP}");
    let out = podstore(&["put", "photos/tool.bin", src, "--server", &server], Some(&token));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = podstore(&["get", "photos/tool.bin", "-", "--server", &server], Some(&format!("reader.{RO}")));
    assert_eq!(out.stdout, b"from the toolbox", "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&keys).ok();
}

#[test]
fn presigned_urls_allow_one_method_on_one_object_until_they_expire() {
    let keys = keys_dir("presign");
    let node = Node::start("auth-presign", &auth_toml(&keys));
    let up = [("authorization", bearer("uploader", UP))];
    let h: Vec<(&str, &str)> = up.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(node.req("PUT", "/photos/a%20b.jpg", &h, b"spaced").status, 201);
    let presign = |method: &str, name: &str, secs: &str, id: &str| -> String {
        let out = podstore(
            &[
                "presign",
                name,
                "--key-id",
                id,
                "--secret-file",
                keys.join(id).to_str().expect("utf8"),
                "--method",
                method,
                "--expires-in",
                secs,
                "--server",
                &node.data.to_string(),
            ],
            None,
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let url = String::from_utf8(out.stdout).expect("utf8").trim().to_string();
        url.split_once(&node.data.to_string()).expect("the server in the URL").1.to_string()
    };
    let get = presign("GET", "photos/a b.jpg", "600", "reader");
    let r = node.req("GET", &get, &[], b"");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"spaced"[..]));
    assert_eq!(node.req("HEAD", &get, &[], b"").status, 200);
    // Not for another method, another object, or once tampered with.
    assert_eq!(node.req("DELETE", &get, &[], b"").status, 403);
    assert_eq!(node.req("GET", &get.replace("a%20b.jpg", "a%20c.jpg"), &[], b"").status, 403);
    let tampered = get.replace("x-podstore-expires=", "x-podstore-expires=1");
    assert_eq!(node.req("GET", &tampered, &[], b"").status, 403);
    // Expired (signed with the key's secret, a minute in the past).
    let past =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() - 60;
    let q = podstore_net::auth::presign_query("reader", RO.as_bytes(), "GET", "photos", b"a b.jpg", past);
    assert_eq!(node.req("GET", &format!("/photos/a%20b.jpg?{q}"), &[], b"").status, 403);
    // A read-only key's PUT URL is refused; the uploader's works, once per its method.
    let put_ro = presign("PUT", "photos/new.jpg", "60", "reader");
    assert_eq!(node.req("PUT", &put_ro, &[], b"x").status, 403);
    let put = presign("PUT", "photos/new.jpg", "60", "uploader");
    assert_eq!(node.req("PUT", &put, &[], b"uploaded by URL").status, 201);
    assert_eq!(node.req("GET", "/photos/new.jpg", &h, b"").body, b"uploaded by URL");
    // More than 7 days is refused by the tool.
    let out = podstore(
        &[
            "presign",
            "photos/x",
            "--key-id",
            "reader",
            "--secret-file",
            keys.join("reader").to_str().expect("utf8"),
            "--expires-in",
            "700000",
        ],
        None,
    );
    assert!(!out.status.success());
    std::fs::remove_dir_all(&keys).ok();
}

/// Runs `podstore serve` on a config and returns whether it stayed up (killed then) and its
/// stderr.
fn serve(name: &str, data: &str, admin: &str, extra: &str, insecure: bool) -> (bool, String) {
    let dir = common::fresh_dir(name);
    let text = common::config_text(&dir, data.parse().expect("addr"), admin.parse().expect("addr"), extra);
    let config = dir.join("podstore.toml");
    std::fs::write(&config, text).expect("config");
    let log = std::fs::File::create(dir.join("log")).expect("log");
    let mut c = Command::new(env!("CARGO_BIN_EXE_podstore"));
    c.args(["serve", "--config"]).arg(&config).stderr(log);
    if insecure {
        c.arg("--insecure");
    }
    let mut child = c.spawn().expect("spawn");
    let mut up = true;
    for _ in 0..60 {
        if child.try_wait().expect("wait").is_some() {
            up = false;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    std::fs::remove_dir_all(&dir).ok();
    (up, text)
}

#[test]
fn a_node_open_beyond_loopback_without_keys_needs_insecure() {
    let any = |a: std::net::SocketAddr| format!("0.0.0.0:{}", a.port());
    let (data, admin) = (free_addr(), free_addr());
    let (up, log) = serve("auth-open", &any(data), &admin.to_string(), "", false);
    assert!(!up && log.contains("--insecure") && log.contains("no access keys"), "{log}");
    let (up, log) = serve("auth-open-ok", &any(free_addr()), &free_addr().to_string(), "", true);
    assert!(up, "{log}");
    let keys = keys_dir("open");
    let (up, log) = serve("auth-keys", &any(free_addr()), &free_addr().to_string(), &auth_toml(&keys), false);
    assert!(up, "with keys it starts: {log}");
    let (up, log) =
        serve("auth-admin", &free_addr().to_string(), &any(free_addr()), &auth_toml(&keys), false);
    assert!(!up && log.contains("admin port"), "{log}");
    // A secret file others can read is refused.
    use std::os::unix::fs::PermissionsExt;
    let text = auth_toml(&keys);
    std::fs::set_permissions(keys.join("reader"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (up, log) = serve("auth-mode", &free_addr().to_string(), &free_addr().to_string(), &text, false);
    assert!(!up && log.contains("chmod 600"), "{log}");
    std::fs::remove_dir_all(&keys).ok();
}
