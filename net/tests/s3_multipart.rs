//! Multipart uploads on a real node, by hand over HTTP (a node with no access keys, on
//! loopback, takes unsigned S3 requests): parts uploaded, one sent again, one never named;
//! ListParts and ListMultipartUploads; completions refused for their order, an ETag, a small
//! part; the completed object read whole, by ranges across parts, through HEAD, the native
//! API and the listings, with S3's multipart ETag; a completion sent again; an abort; an
//! upload that outlives a SIGKILL of the node. The parts are never written twice: the node's
//! object count says what it holds after each step. Needs no outside tool.

mod common;

use common::{eventually, free_addr, fresh_dir, metric, request, Node, Resp};
use md5::Digest as _;

fn s3_node(name: &str) -> (Node, std::net::SocketAddr) {
    s3_node_with(name, "")
}

fn s3_node_with(name: &str, extra: &str) -> (Node, std::net::SocketAddr) {
    let dir = fresh_dir(name);
    let (data, admin, s3) = (free_addr(), free_addr(), free_addr());
    let text = common::config_text(&dir, data, admin, extra).replacen(
        "[listen]\n",
        &format!("[listen]\ns3 = \"{s3}\"\n"),
        1,
    );
    (Node::start_with_config(dir, data, admin, text), s3)
}

fn s3(addr: std::net::SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    request(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn element<'a>(doc: &'a str, name: &str) -> &'a str {
    let open = format!("<{name}>");
    let at = doc.find(&open).unwrap_or_else(|| panic!("no {name} in {doc}")) + open.len();
    &doc[at..at + doc[at..].find('<').expect("closed")]
}

fn code(r: &Resp) -> String {
    element(&text(r), "Code").to_string()
}

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed).rotate_left(7) as u8).collect()
}

fn md5(b: &[u8]) -> [u8; 16] {
    md5::Md5::digest(b).into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn create(addr: std::net::SocketAddr, path: &str) -> String {
    let r = s3(
        addr,
        "POST",
        &format!("{path}?uploads"),
        &[("content-type", "video/mp4"), ("x-amz-meta-camera", "z9")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    element(&text(&r), "UploadId").to_string()
}

fn part(addr: std::net::SocketAddr, path: &str, id: &str, n: u16, body: &[u8]) -> Resp {
    s3(addr, "PUT", &format!("{path}?partNumber={n}&uploadId={id}"), &[], body)
}

fn completion(parts: &[(u16, &[u8])]) -> String {
    let mut x = String::from("<CompleteMultipartUpload>");
    for (n, b) in parts {
        x.push_str(&format!("<Part><PartNumber>{n}</PartNumber><ETag>\"{}\"</ETag></Part>", hex(&md5(b))));
    }
    x + "</CompleteMultipartUpload>"
}

fn objects(node: &Node) -> f64 {
    metric(node, "podstore_disk_objects")
}

#[test]
fn multipart_uploads_complete_into_one_object_without_a_second_write() {
    let (node, addr) = s3_node("s3-multipart");
    let path = "/media/2026/clip.mp4";
    let id = create(addr, path);
    let p1 = data((5 << 20) + 1, 1);
    let p2_first = data(6 << 20, 99);
    let p2 = data(6 << 20, 2);
    let p3 = data(100_000, 3);
    let p7 = data(10, 7);
    for (n, b) in [(1, &p1), (2, &p2_first), (2, &p2), (3, &p3), (7, &p7)] {
        let r = part(addr, path, &id, n, b);
        assert_eq!(r.status, 200, "part {n}: {}", text(&r));
        assert_eq!(r.header("etag"), Some(format!("\"{}\"", hex(&md5(b))).as_str()), "part {n}");
    }
    assert_eq!(part(addr, path, &id, 0, b"x").status, 400, "part numbers start at 1");
    assert_eq!(code(&part(addr, path, "00000000000000000000000000000000", 1, b"x")), "NoSuchUpload");
    // The upload's record and four parts (part 2's first body replaced).
    eventually("five objects", || objects(&node) == 5.0);

    let listed = text(&s3(addr, "GET", &format!("{path}?uploadId={id}"), &[], b""));
    let numbers: Vec<&str> =
        listed.split("<PartNumber>").skip(1).map(|s| &s[..s.find('<').expect("end")]).collect();
    assert_eq!(numbers, ["1", "2", "3", "7"], "{listed}");
    assert!(listed.contains(&format!("<Size>{}</Size>", 6 << 20)), "{listed}");
    let page =
        text(&s3(addr, "GET", &format!("{path}?uploadId={id}&max-parts=2&part-number-marker=1"), &[], b""));
    assert!(
        page.contains("<IsTruncated>true</IsTruncated>") && page.contains("<NextPartNumberMarker>3<"),
        "{page}"
    );
    let uploads = text(&s3(addr, "GET", "/media?uploads", &[], b""));
    assert_eq!(element(&uploads, "UploadId"), id);
    assert_eq!(element(&uploads, "Key"), "2026/clip.mp4");
    assert!(!text(&s3(addr, "GET", "/media?uploads&prefix=other", &[], b"")).contains("<Upload>"));
    // The upload's bucket is not a bucket anyone lists.
    assert!(!text(&s3(addr, "GET", "/", &[], b"")).contains(".uploads"));

    let complete = |doc: &str| s3(addr, "POST", &format!("{path}?uploadId={id}"), &[], doc.as_bytes());
    let order = complete(&completion(&[(2, &p2), (1, &p1)]));
    assert_eq!((order.status, code(&order)), (400, "InvalidPartOrder".into()));
    let stale = complete(&completion(&[(1, &p1), (2, &p2_first)]));
    assert_eq!((stale.status, code(&stale)), (400, "InvalidPart".into()), "part 2's first body was replaced");
    let missing = complete(&completion(&[(1, &p1), (4, &p3)]));
    assert_eq!(code(&missing), "InvalidPart");
    let small = complete(&completion(&[(3, &p3), (7, &p7)]));
    assert_eq!(code(&small), "EntityTooSmall");
    assert_eq!(code(&complete("<CompleteMultipartUpload/>")), "MalformedXML");

    let done = complete(&completion(&[(1, &p1), (2, &p2), (3, &p3)]));
    assert_eq!(done.status, 200, "{}", text(&done));
    let mut md5s = Vec::new();
    for b in [&p1, &p2, &p3] {
        md5s.extend_from_slice(&md5(b));
    }
    let etag = format!("\"{}-3\"", hex(&md5(&md5s)));
    assert_eq!(element(&text(&done), "ETag"), etag.replace('"', "&quot;"));
    let whole: Vec<u8> = [&p1[..], &p2, &p3].concat();
    // The manifest, the three parts named; the upload's record and part 7 are gone.
    eventually("four objects", || objects(&node) == 4.0);

    let got = s3(addr, "GET", path, &[], b"");
    assert_eq!(got.status, 200);
    assert!(got.body == whole, "the object reads whole");
    assert_eq!(got.header("etag"), Some(etag.as_str()));
    assert_eq!(got.header("content-type"), Some("video/mp4"));
    assert_eq!(got.header("x-amz-meta-camera"), Some("z9"));
    let head = s3(addr, "HEAD", path, &[], b"");
    assert_eq!(head.header("content-length"), Some(whole.len().to_string().as_str()));
    assert_eq!(head.header("etag"), Some(etag.as_str()));
    // Ranges inside a part, across each boundary, to the end, from the end.
    let b1 = p1.len();
    let b2 = b1 + p2.len();
    for (a, z) in [(10, 20), (b1 - 5, b1 + 5), (b1 - 1, b2 + 1), (0, whole.len() - 1), (b2, whole.len() - 1)]
    {
        let r = s3(addr, "GET", path, &[("range", &format!("bytes={a}-{z}"))], b"");
        assert_eq!(r.status, 206, "{a}-{z}");
        assert!(r.body == whole[a..=z], "bytes {a}-{z}");
        assert_eq!(r.header("content-range"), Some(format!("bytes {a}-{z}/{}", whole.len()).as_str()));
    }
    let tail = s3(addr, "GET", path, &[("range", "bytes=-7")], b"");
    assert!(tail.body == whole[whole.len() - 7..]);
    assert_eq!(s3(addr, "GET", path, &[("range", &format!("bytes={}-", whole.len()))], b"").status, 416);
    // One namespace: the native API reads it whole, and both listings show the whole size.
    let native = node.req("GET", path, &[], b"");
    assert!(native.status == 200 && native.body == whole);
    assert_eq!(native.header("etag"), Some(etag.as_str()));
    let ranged = node.req("GET", path, &[("range", &format!("bytes={}-{}", b1 - 3, b1 + 2))], b"");
    assert!(ranged.status == 206 && ranged.body == whole[b1 - 3..b1 + 3]);
    let native_list: serde_json::Value =
        serde_json::from_slice(&node.req("GET", "/media", &[], b"").body).expect("json");
    assert_eq!(native_list["objects"][0]["size"], whole.len() as u64);
    let list = text(&s3(addr, "GET", "/media?list-type=2", &[], b""));
    assert_eq!(element(&list, "Size"), whole.len().to_string());
    assert_eq!(element(&list, "ETag"), etag.replace('"', "&quot;"));

    // A completion sent again is answered as the first; the upload takes no more parts.
    let again = complete(&completion(&[(1, &p1), (2, &p2), (3, &p3)]));
    assert_eq!((again.status, element(&text(&again), "ETag")), (200, etag.replace('"', "&quot;").as_str()));
    assert_eq!(code(&part(addr, path, &id, 4, b"late")), "NoSuchUpload");
    assert_eq!(code(&s3(addr, "GET", &format!("{path}?uploadId={id}"), &[], b"")), "NoSuchUpload");
    assert!(!text(&s3(addr, "GET", "/media?uploads", &[], b"")).contains("<Upload>"));

    // An abort: the upload and its parts go.
    let id2 = create(addr, "/media/aborted");
    assert_eq!(part(addr, "/media/aborted", &id2, 1, &p3).status, 200);
    eventually("six objects", || objects(&node) == 6.0);
    let aborted = s3(addr, "DELETE", &format!("/media/aborted?uploadId={id2}"), &[], b"");
    assert_eq!(aborted.status, 204, "{}", text(&aborted));
    assert_eq!(
        code(&s3(addr, "DELETE", &format!("/media/aborted?uploadId={id2}"), &[], b"")),
        "NoSuchUpload"
    );
    assert_eq!(code(&part(addr, "/media/aborted", &id2, 2, &p3)), "NoSuchUpload");
    eventually("four objects again", || objects(&node) == 4.0);
    assert_eq!(s3(addr, "GET", "/media/aborted", &[], b"").status, 404);

    // Deleting the object: a GET finds nothing.
    assert_eq!(s3(addr, "DELETE", path, &[], b"").status, 204);
    assert_eq!(s3(addr, "GET", path, &[], b"").status, 404);
}

#[test]
fn an_upload_outlives_a_sigkill_of_the_node() {
    let (mut node, addr) = s3_node("s3-multipart-kill");
    let path = "/media/long.bin";
    let id = create(addr, path);
    let p1 = data(5 << 20, 11);
    let p2 = data(3 << 20, 12);
    assert_eq!(part(addr, path, &id, 1, &p1).status, 200);
    node.kill();
    node.spawn(&[]);
    node.wait_ready();
    // The upload is still open and its acknowledged part still there.
    let listed = text(&s3(addr, "GET", &format!("{path}?uploadId={id}"), &[], b""));
    assert!(listed.contains("<PartNumber>1</PartNumber>"), "{listed}");
    assert_eq!(part(addr, path, &id, 2, &p2).status, 200);
    let done =
        s3(addr, "POST", &format!("{path}?uploadId={id}"), &[], completion(&[(1, &p1), (2, &p2)]).as_bytes());
    assert_eq!(done.status, 200, "{}", text(&done));
    node.kill();
    node.spawn(&[]);
    node.wait_ready();
    let got = s3(addr, "GET", path, &[], b"");
    assert!(
        got.status == 200 && got.body == [&p1[..], &p2].concat(),
        "the completed object is whole after a SIGKILL"
    );
}

#[test]
fn objects_and_parts_are_copied_inside_the_node() {
    let (node, addr) = s3_node("s3-copy");
    let small = data(300_000, 21);
    let r = s3(
        addr,
        "PUT",
        "/src/small.jpg",
        &[("content-type", "image/jpeg"), ("x-amz-meta-who", "me")],
        &small,
    );
    assert_eq!(r.status, 200);
    let small_etag = format!("\"{}\"", hex(&md5(&small)));
    // A multipart source of two parts.
    let (p1, p2) = (data(5 << 20, 22), data(2 << 20, 23));
    let id = create(addr, "/src/big.bin");
    assert_eq!(part(addr, "/src/big.bin", &id, 1, &p1).status, 200);
    assert_eq!(part(addr, "/src/big.bin", &id, 2, &p2).status, 200);
    let done = s3(
        addr,
        "POST",
        &format!("/src/big.bin?uploadId={id}"),
        &[],
        completion(&[(1, &p1), (2, &p2)]).as_bytes(),
    );
    assert_eq!(done.status, 200);
    let big: Vec<u8> = [&p1[..], &p2].concat();

    // CopyObject keeps the source's content type and metadata (COPY), or takes the request's
    // (REPLACE); the copy's ETag is its MD5, across buckets too.
    let copy = |to: &str, headers: &[(&str, &str)]| s3(addr, "PUT", to, headers, b"");
    let c = copy("/src/copy.jpg", &[("x-amz-copy-source", "/src/small.jpg")]);
    assert_eq!(c.status, 200, "{}", text(&c));
    assert_eq!(element(&text(&c), "ETag"), small_etag.replace('"', "&quot;"));
    let got = s3(addr, "GET", "/src/copy.jpg", &[], b"");
    assert!(got.body == small);
    assert_eq!((got.header("content-type"), got.header("x-amz-meta-who")), (Some("image/jpeg"), Some("me")));
    let c = copy(
        "/dst/renamed.jpg",
        &[
            ("x-amz-copy-source", "src/small.jpg"),
            ("x-amz-metadata-directive", "REPLACE"),
            ("content-type", "text/plain"),
        ],
    );
    assert_eq!(c.status, 200, "{}", text(&c));
    let got = s3(addr, "GET", "/dst/renamed.jpg", &[], b"");
    assert!(got.body == small);
    assert_eq!((got.header("content-type"), got.header("x-amz-meta-who")), (Some("text/plain"), None));
    // A multipart source is copied whole into one record.
    let c = copy("/dst/big-copy.bin", &[("x-amz-copy-source", "/src/big.bin")]);
    assert_eq!(c.status, 200, "{}", text(&c));
    let got = s3(addr, "GET", "/dst/big-copy.bin", &[], b"");
    assert!(got.body == big);
    assert_eq!(got.header("etag"), Some(format!("\"{}\"", hex(&md5(&big))).as_str()));
    // The conditions, a copy onto itself, a source that does not exist.
    let failed =
        copy("/dst/x", &[("x-amz-copy-source", "/src/small.jpg"), ("x-amz-copy-source-if-match", "\"0\"")]);
    assert_eq!((failed.status, code(&failed)), (412, "PreconditionFailed".into()));
    let failed = copy(
        "/dst/x",
        &[("x-amz-copy-source", "/src/small.jpg"), ("x-amz-copy-source-if-none-match", &small_etag)],
    );
    assert_eq!(failed.status, 412);
    let held = copy(
        "/dst/x",
        &[("x-amz-copy-source", "/src/small.jpg"), ("x-amz-copy-source-if-match", &small_etag)],
    );
    assert_eq!(held.status, 200);
    assert_eq!(code(&copy("/src/small.jpg", &[("x-amz-copy-source", "/src/small.jpg")])), "InvalidRequest");
    let itself = copy(
        "/src/small.jpg",
        &[
            ("x-amz-copy-source", "/src/small.jpg"),
            ("x-amz-metadata-directive", "REPLACE"),
            ("content-type", "image/png"),
        ],
    );
    assert_eq!(itself.status, 200, "metadata replaced in place");
    assert_eq!(s3(addr, "HEAD", "/src/small.jpg", &[], b"").header("content-type"), Some("image/png"));
    assert_eq!(code(&copy("/dst/x", &[("x-amz-copy-source", "/src/none")])), "NoSuchKey");
    assert_eq!(s3(addr, "GET", "/dst/x", &[], b"").body, small, "only the copy whose condition held");

    // UploadPartCopy: a new object from ranges of the multipart one (across its parts) and
    // the whole small one.
    let id = create(addr, "/dst/assembled.bin");
    let cut = (5 << 20) - 100;
    let pc = |n: u16, src: &str, range: Option<&str>| {
        let mut h = vec![("x-amz-copy-source", src)];
        if let Some(r) = range {
            h.push(("x-amz-copy-source-range", r));
        }
        s3(addr, "PUT", &format!("/dst/assembled.bin?partNumber={n}&uploadId={id}"), &h, b"")
    };
    let r1 = pc(1, "/src/big.bin", Some(&format!("bytes=100-{}", 100 + cut + 5_000 - 1)));
    assert_eq!(r1.status, 200, "{}", text(&r1));
    let piece1 = &big[100..100 + cut + 5_000];
    assert_eq!(element(&text(&r1), "ETag"), format!("&quot;{}&quot;", hex(&md5(piece1))));
    let r2 = pc(2, "/src/copy.jpg", None);
    assert_eq!(r2.status, 200, "{}", text(&r2));
    assert_eq!(code(&pc(3, "/src/copy.jpg", Some("bytes=0-300000"))), "InvalidArgument", "past the end");
    assert_eq!(code(&pc(3, "/src/copy.jpg", Some("bytes=400000-400001"))), "InvalidRange");
    let done = s3(
        addr,
        "POST",
        &format!("/dst/assembled.bin?uploadId={id}"),
        &[],
        completion(&[(1, piece1), (2, &small)]).as_bytes(),
    );
    assert_eq!(done.status, 200, "{}", text(&done));
    let got = s3(addr, "GET", "/dst/assembled.bin", &[], b"");
    assert!(got.body == [piece1, &small[..]].concat(), "assembled from copied parts");
    drop(node);
}

#[test]
fn the_sweep_removes_expired_uploads_and_parts_no_object_names() {
    let (node, addr) = s3_node_with(
        "s3-sweep",
        "[engine]\nblob_size_bytes = 4194304\n\n[maintenance]\ncompact_interval_s = 0\nmultipart_expiry_s = 6\n\
         multipart_sweep_interval_s = 1\nmultipart_sweep_grace_s = 0\n",
    );
    let (p1, p2) = (data(5 << 20, 31), data(1000, 32));
    let upload = |path: &str| {
        let id = create(addr, path);
        assert_eq!(part(addr, path, &id, 1, &p1).status, 200);
        assert_eq!(part(addr, path, &id, 2, &p2).status, 200);
        id
    };
    let complete = |path: &str, id: &str| {
        let r = s3(
            addr,
            "POST",
            &format!("{path}?uploadId={id}"),
            &[],
            completion(&[(1, &p1), (2, &p2)]).as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", text(&r));
    };
    // kept: completed and left alone; rewritten: completed, then written again in one piece;
    // deleted: completed, then deleted; open: never completed (it expires).
    for path in ["/media/kept", "/media/rewritten", "/media/deleted"] {
        let id = upload(path);
        complete(path, &id);
    }
    assert_eq!(s3(addr, "PUT", "/media/rewritten", &[], b"one piece now").status, 200);
    assert_eq!(s3(addr, "DELETE", "/media/deleted", &[], b"").status, 204);
    let open = upload("/media/open");
    // The kept object (its manifest and two parts) and the rewritten one's single record stay.
    eventually("the sweep leaves four records", || objects(&node) == 4.0);
    assert!(metric(&node, "podstore_multipart_swept_total") >= 7.0, "six parts and an upload's state");
    assert_eq!(code(&s3(addr, "GET", &format!("/media/open?uploadId={open}"), &[], b"")), "NoSuchUpload");
    assert_eq!(
        code(&part(addr, "/media/open", &open, 3, b"late")),
        "NoSuchUpload",
        "an expired upload takes no part"
    );
    let kept = s3(addr, "GET", "/media/kept", &[], b"");
    assert!(
        kept.status == 200 && kept.body == [&p1[..], &p2].concat(),
        "a live object's parts are never swept"
    );
    assert_eq!(s3(addr, "GET", "/media/rewritten", &[], b"").body, b"one piece now");
    // More sweeps change nothing.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(objects(&node), 4.0);
    assert!(s3(addr, "GET", "/media/kept", &[], b"").body == [&p1[..], &p2].concat());
    // What the sweep let go is dead space that compaction returns; the live object's parts
    // are moved, not dropped.
    let dead = metric(&node, "podstore_disk_dead_bytes{");
    assert!(dead > 15e6, "the swept parts are dead space: {dead}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_podstore"))
        .args(["compact", "--admin", &node.admin.to_string()])
        .output()
        .expect("podstore compact");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reclaimed = metric(&node, "podstore_disk_reclaimed_bytes_total{");
    assert!(reclaimed > 10e6, "compaction returned the swept parts' space: {reclaimed} of {dead}");
    assert_eq!(objects(&node), 4.0);
    let kept = s3(addr, "GET", "/media/kept", &[], b"");
    assert!(kept.status == 200 && kept.body == [&p1[..], &p2].concat(), "whole after compaction");
    let listed = text(&s3(addr, "GET", "/media?list-type=2", &[], b""));
    assert!(listed.contains(&format!("<Size>{}</Size>", p1.len() + p2.len())), "{listed}");
}

#[test]
fn checksums_are_kept_and_returned_when_asked() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let (_node, addr) = s3_node("s3-checksums");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let sha = |b: &[u8]| -> Vec<u8> { sha2::Sha256::digest(b).to_vec() };
    let body = data(100_000, 41);
    let sum = b64(&sha(&body));
    let r = s3(addr, "PUT", "/sums/one", &[("x-amz-checksum-sha256", &sum)], &body);
    assert_eq!((r.status, r.header("x-amz-checksum-sha256")), (200, Some(sum.as_str())));
    let mode = [("x-amz-checksum-mode", "ENABLED")];
    for method in ["GET", "HEAD"] {
        let r = s3(addr, method, "/sums/one", &mode, b"");
        assert_eq!(r.header("x-amz-checksum-sha256"), Some(sum.as_str()), "{method}");
        assert_eq!(r.header("x-amz-checksum-type"), Some("FULL_OBJECT"), "{method}");
        assert_eq!(
            s3(addr, method, "/sums/one", &[], b"").header("x-amz-checksum-sha256"),
            None,
            "not asked"
        );
    }
    let ranged = s3(addr, "GET", "/sums/one", &[mode[0], ("range", "bytes=0-9")], b"");
    assert_eq!((ranged.status, ranged.header("x-amz-checksum-sha256")), (206, None), "not a range's");
    // A copy has the same bytes and keeps it.
    assert_eq!(s3(addr, "PUT", "/sums/copy", &[("x-amz-copy-source", "/sums/one")], b"").status, 200);
    assert_eq!(
        s3(addr, "HEAD", "/sums/copy", &mode, b"").header("x-amz-checksum-sha256"),
        Some(sum.as_str())
    );
    // A wrong one stores nothing.
    let wrong = s3(addr, "PUT", "/sums/wrong", &[("x-amz-checksum-sha256", &b64(&sha(b"x")))], &body);
    assert_eq!((wrong.status, code(&wrong)), (400, "BadDigest".into()));
    assert_eq!(s3(addr, "HEAD", "/sums/wrong", &[], b"").status, 404);
    // A multipart object whose parts kept theirs: S3's composite checksum.
    let (p1, p2) = (data(5 << 20, 42), data(77, 43));
    let id = create(addr, "/sums/parts");
    for (n, p) in [(1, &p1), (2, &p2)] {
        let r = s3(
            addr,
            "PUT",
            &format!("/sums/parts?partNumber={n}&uploadId={id}"),
            &[("x-amz-checksum-sha256", &b64(&sha(p)))],
            p,
        );
        assert_eq!(r.status, 200);
    }
    let done = s3(
        addr,
        "POST",
        &format!("/sums/parts?uploadId={id}"),
        &[],
        completion(&[(1, &p1), (2, &p2)]).as_bytes(),
    );
    assert_eq!(done.status, 200);
    let composite = format!("{}-2", b64(&sha(&[sha(&p1), sha(&p2)].concat())));
    let r = s3(addr, "HEAD", "/sums/parts", &mode, b"");
    assert_eq!(r.header("x-amz-checksum-sha256"), Some(composite.as_str()));
    assert_eq!(r.header("x-amz-checksum-type"), Some("COMPOSITE"));
}
