//! Listing on the real binary (API.md "Listing (native)", issue 23): `GET /{bucket}` with
//! prefixes, delimiters, pages and start-after over three disks, exactly the acknowledged and
//! not deleted keys, after a SIGKILL too; errors for bad parameters; the same access rules as
//! a GET.

mod common;

use common::Node;
use serde_json::Value;

/// Every page of a listing, followed through `next`: (keys, prefixes, pages).
fn list_all(node: &Node, bucket: &str, query: &str) -> (Vec<String>, Vec<String>, usize) {
    let (mut keys, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
    let mut token: Option<String> = None;
    loop {
        let q = match &token {
            Some(t) => format!("{query}&token={t}"),
            None => query.to_string(),
        };
        let r = node.req("GET", &format!("/{bucket}?{q}"), &[], b"");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        pages += 1;
        for o in v["objects"].as_array().expect("objects") {
            keys.push(o["key"].as_str().expect("key").to_string());
        }
        for p in v["prefixes"].as_array().expect("prefixes") {
            prefixes.push(p.as_str().expect("prefix").to_string());
        }
        match v["next"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return (keys, prefixes, pages),
        }
    }
}

/// The path of a key, percent-encoded where it must be.
fn path(bucket: &str, key: &str) -> String {
    let mut p = format!("/{bucket}/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._".contains(&b) {
            p.push(b as char);
        } else {
            p.push_str(&format!("%{b:02X}"));
        }
    }
    p
}

#[test]
fn listings_show_exactly_the_stored_keys_in_byte_order_across_disks_and_restarts() {
    let mut node = Node::start("listing", "");
    let mut keys: Vec<String> = Vec::new();
    for d in ["2026/01", "2026/02", "2025/12"] {
        for i in 0..40 {
            keys.push(format!("{d}/img {i:03}.jpg"));
        }
    }
    keys.extend(["a", "z/й", "z/ü", "top+plus", "x%y"].map(String::from));
    for k in &keys {
        let r = node.req("PUT", &path("photos", k), &[("content-type", "image/jpeg")], k.as_bytes());
        assert_eq!(r.status, 201, "{k}");
    }
    assert_eq!(node.req("PUT", "/videos/2026/01/a", &[], b"v").status, 201);
    // Deleted keys and overwritten ones: listed never, and once.
    for i in (0..40).step_by(3) {
        assert_eq!(
            node.req("DELETE", &path("photos", &format!("2026/01/img {i:03}.jpg")), &[], b"").status,
            204
        );
    }
    assert_eq!(node.req("PUT", &path("photos", "a"), &[], b"longer body").status, 201);
    let mut want: Vec<String> = keys
        .iter()
        .filter(|k| !(k.starts_with("2026/01/") && k[12..15].parse::<u32>().expect("number") % 3 == 0))
        .cloned()
        .collect();
    want.sort(); // byte order (UTF-8 sorts as its bytes do)
    for round in 0..2 {
        let (got, prefixes, _) = list_all(&node, "photos", "");
        assert_eq!((got, prefixes), (want.clone(), vec![]), "round {round}");
        let (got, _, pages) = list_all(&node, "photos", "limit=7");
        assert_eq!(got, want, "pages of 7");
        assert_eq!(pages, want.len().div_ceil(7), "no empty last page");
        let (got, prefixes, _) = list_all(&node, "photos", "delimiter=/&limit=2");
        assert_eq!(got, vec!["a", "top+plus", "x%y"]);
        assert_eq!(prefixes, vec!["2025/", "2026/", "z/"]);
        let (got, prefixes, _) = list_all(&node, "photos", "prefix=2026/&delimiter=/");
        assert_eq!((got.len(), prefixes), (0, vec!["2026/01/".to_string(), "2026/02/".into()]));
        let (got, _, _) = list_all(&node, "photos", "prefix=2026%2F02%2Fimg+00&limit=3");
        assert_eq!(got.len(), 10);
        let (got, _, _) = list_all(&node, "photos", "prefix=2026/02/&start-after=2026/02/img+037.jpg");
        assert_eq!(got, vec!["2026/02/img 038.jpg", "2026/02/img 039.jpg"]);
        let (got, _, _) = list_all(&node, "videos", "");
        assert_eq!(got, vec!["2026/01/a"]);
        let (got, _, _) = list_all(&node, "nothing-here", "");
        assert!(got.is_empty());
        // What a listing shows of an object.
        let r = node.req("GET", "/photos/?prefix=a&limit=1", &[], b"");
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        let o = &v["objects"][0];
        assert_eq!((o["key"].as_str(), o["size"].as_u64()), (Some("a"), Some(11)));
        let head = node.req("HEAD", "/photos/a", &[], b"");
        assert_eq!(format!("\"{}\"", o["etag"].as_str().expect("etag")), head.header("etag").expect("etag"));
        assert!(o["last_modified"].as_str().expect("date").ends_with('Z'));
        assert_eq!(node.req("HEAD", "/photos?limit=1", &[], b"").status, 200);
        if round == 0 {
            node.kill();
            node.spawn(&[]);
        }
    }
    // The toolbox: `podstore ls`, a line per key (and per common prefix), every page.
    let server = node.data.to_string();
    let out = common::run_podstore(&[
        "ls".as_ref(),
        "photos/2026/0".as_ref(),
        "-r".as_ref(),
        "--server".as_ref(),
        server.as_ref(),
    ]);
    assert!(out.status.success(), "{}", common::stderr_text(&out));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let listed: Vec<&str> = text.lines().map(|l| l.split_once(" 2026/").map_or("", |(_, k)| k)).collect();
    let expect: Vec<String> =
        want.iter().filter(|k| k.starts_with("2026/0")).map(|k| k[5..].to_string()).collect();
    assert_eq!(listed, expect);
    let out = common::run_podstore(&["ls".as_ref(), "photos".as_ref(), "--server".as_ref(), server.as_ref()]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(text.lines().filter(|l| l.trim_start().starts_with("PRE ")).count(), 3, "{text}");
    assert!(text.lines().any(|l| l.ends_with(" top+plus")), "{text}");

    // Bad parameters, other methods.
    for q in ["limit=0", "limit=1001", "limit=ten", "prefix=%00", "token=%%", "delimiter=%FF"] {
        let r = node.req("GET", &format!("/photos?{q}"), &[], b"");
        assert_eq!(r.status, 400, "{q}");
        assert!(String::from_utf8_lossy(&r.body).contains("bad_parameter"), "{q}");
    }
    let r = node.req("POST", "/photos", &[], b"");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    assert_eq!(node.req("GET", "/Photos", &[], b"").status, 400);
    let disks: Value = serde_json::from_slice(&node.admin("/admin/disks").body).expect("json");
    for d in disks["disks"].as_array().expect("disks") {
        assert_eq!(d["names"]["ready"], true, "{d}");
    }
    assert_eq!(common::metric(&node, "podstore_names_ready{"), 3.0, "every disk's name index serves");
    assert!(common::metric(&node, "podstore_names_memory_bytes{") > 0.0);
}
