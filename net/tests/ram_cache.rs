//! The RAM cache of small hot objects (issue 7, engine/src/cache.rs), on the real binary: hot
//! objects are served from memory (counted per tier), ranges and HEAD too, large objects never;
//! an overwrite or delete is never answered from a stale entry, whether it came from a client
//! or from a peer over the replication channel (which writes to the disk without the core's
//! request path: only the entry's check of the record location stands between it and a stale
//! answer).

mod common;

use common::{cluster, metric, Node};

fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn tiers(node: &Node) -> serde_json::Value {
    let r = node.admin("/admin/tiers");
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_slice(&r.body).expect("json")
}

const CACHE: &str = "[ram_cache]\nsize_bytes = 67108864\nobject_size_max_bytes = 65536\n";

#[test]
fn hot_objects_come_from_memory_and_never_stale() {
    let node = Node::start("ramcache", CACHE);
    for i in 0..50u8 {
        let r =
            node.req("PUT", &format!("/cache/o-{i}"), &[("Content-Type", "text/x-test")], &body(10_000, i));
        assert_eq!(r.status, 201, "{r:?}");
    }
    let big = body(200_000, 7);
    assert_eq!(node.req("PUT", "/cache/big", &[], &big).status, 201);

    // The first read of each comes from its disk, the second from memory.
    for round in 0..2 {
        for i in 0..50u8 {
            let g = node.req("GET", &format!("/cache/o-{i}"), &[], b"");
            assert_eq!(g.status, 200);
            assert!(g.body == body(10_000, i), "o-{i}: wrong bytes in round {round}");
            assert_eq!(g.header("content-type"), Some("text/x-test"));
        }
    }
    assert_eq!(metric(&node, "podstore_ram_cache_hits_total"), 50.0);
    let t = tiers(&node);
    assert_eq!(t["ram_cache"]["reads"], 50, "{t}");
    assert_eq!(t["ram_cache"]["entries"], 50, "{t}");
    assert!(t["ram_cache"]["bytes"].as_u64().expect("bytes") >= 50 * 10_000, "{t}");
    let capacity = t["tiers"]
        .as_array()
        .expect("tiers")
        .iter()
        .find(|x| x["tier"] == "capacity")
        .expect("the capacity tier");
    assert_eq!(capacity["reads"], 50, "{t}");
    assert_eq!(capacity["objects"], 51, "{t}");

    // A large object is never cached.
    for _ in 0..3 {
        assert!(node.req("GET", "/cache/big", &[], b"").body == big);
    }
    assert_eq!(metric(&node, "podstore_ram_cache_hits_total"), 50.0);

    // Ranges and HEAD from memory.
    let r = node.req("GET", "/cache/o-1", &[("Range", "bytes=100-199")], b"");
    assert_eq!((r.status, r.body.as_slice()), (206, &body(10_000, 1)[100..200]));
    assert_eq!(r.header("content-range"), Some("bytes 100-199/10000"));
    let r = node.req("GET", "/cache/o-1", &[("Range", "bytes=20000-")], b"");
    assert_eq!(r.status, 416);
    let h = node.req("HEAD", "/cache/o-1", &[], b"");
    assert_eq!((h.status, h.header("content-length"), h.body.len()), (200, Some("10000"), 0));
    assert_eq!(metric(&node, "podstore_ram_cache_hits_total"), 53.0);

    // An overwrite is served at once, and then from memory again.
    let new = body(9_000, 200);
    assert_eq!(node.req("PUT", "/cache/o-2", &[], &new).status, 201);
    for _ in 0..3 {
        let g = node.req("GET", "/cache/o-2", &[], b"");
        assert!(g.status == 200 && g.body == new, "a stale o-2 was served");
        assert_eq!(g.header("content-length"), Some("9000"));
    }
    // A delete is a 404 at once.
    assert_eq!(node.req("DELETE", "/cache/o-3", &[], b"").status, 204);
    for _ in 0..3 {
        assert_eq!(node.req("GET", "/cache/o-3", &[], b"").status, 404, "a deleted object was served");
    }
    assert!(metric(&node, "podstore_ram_cache_invalidated_total") >= 2.0);
}

#[test]
fn a_copy_from_a_peer_replaces_what_the_cache_holds() {
    let m = cluster::members(2);
    let secret = cluster::secret_file("ramcache", "a-shared-secret-of-enough-length");
    let nodes = cluster::start_with("ramcache", &m, &secret, CACHE);
    let (a, b) = (&nodes[0], &nodes[1]);
    for i in 0..20u8 {
        let r = a.req("PUT", &format!("/peer/o-{i}"), &[("X-Copies", "all")], &body(4_000, i));
        assert_eq!(r.status, 201, "{r:?}");
    }
    // b reads each twice: in its cache.
    for _ in 0..2 {
        for i in 0..20u8 {
            assert!(b.req("GET", &format!("/peer/o-{i}"), &[], b"").body == body(4_000, i));
        }
    }
    assert_eq!(metric(b, "podstore_ram_cache_hits_total"), 20.0);
    // Overwrites and deletes made on a reach b over the replication channel.
    for i in 0..20u8 {
        let path = format!("/peer/o-{i}");
        let r = if i % 2 == 0 {
            a.req("PUT", &path, &[("X-Copies", "all")], &body(5_000, i + 100))
        } else {
            a.req("DELETE", &path, &[("X-Copies", "all")], b"")
        };
        assert!(r.status == 201 || r.status == 204, "{r:?}");
    }
    for _ in 0..2 {
        for i in 0..20u8 {
            let g = b.req("GET", &format!("/peer/o-{i}"), &[], b"");
            if i % 2 == 0 {
                assert!(g.status == 200 && g.body == body(5_000, i + 100), "o-{i}: stale bytes on b");
            } else {
                assert_eq!(g.status, 404, "o-{i}: a deleted object was served on b");
            }
        }
    }
}
