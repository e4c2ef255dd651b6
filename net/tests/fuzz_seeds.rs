//! The network layer's fuzz seeds (`fuzz/seeds/{handshake,names,range,config,auth,manifest}`): valid
//! inputs made by the current encoders and accepted by the decoders, so each fuzzer starts
//! from the accepting paths. Fails when a format changes and the seeds were not regenerated
//! (`PODSTORE_WRITE_SEEDS=1 cargo test -p podstore-net --test fuzz_seeds`).

use std::path::PathBuf;

use podstore_net::auth::{presign_query, Access, Auth};
use podstore_net::peer::auth::{Challenge, Hello};

const SECRET: &[u8] = b"ZnV6ei1zZWNyZXQtZm9yLXRoZS1hdXRoLXRhcmdldA==";

fn manifest() -> Vec<u8> {
    use podstore_net::manifest::{part_key, parts_prefix, Manifest, Part};
    let base =
        [b".parts/".as_slice(), &parts_prefix("photos", b"clip.mp4", "0190000000001234567890abcdef0123")]
            .concat();
    assert_eq!(part_key(&base, 1).len(), base.len() + 5);
    let parts = (1..=3u16)
        .map(|n| Part {
            number: n,
            len: 5 << 20,
            md5: [n as u8; 16],
            version: podstore_engine::Version { hlc: u64::from(n) << 16, origin: 9 },
        })
        .collect();
    Manifest { base, parts }.encode()
}

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let hello = Hello { name: "pod-01".into(), datacenter: "dc1".into(), nonce: [5; 32] };
    let challenge =
        Challenge { name: "pod-02".into(), datacenter: "dc2".into(), nonce: [6; 32], mac: [7; 32] };
    let range = |len: u64, h: &str| [len.to_le_bytes().as_slice(), h.as_bytes()].concat();
    let bearer = [b"Bearer k.".as_slice(), SECRET].concat();
    let query = presign_query("k", SECRET, "PUT", "photos", b"k", 1_000_600);
    let config =
        "node_id = \"pod-01\"\n\n[listen]\ndata = \"127.0.0.1:7070\"\nadmin = \"127.0.0.1:7072\"\n\n\
                  [[auth.keys]]\nid = \"app\"\nsecret_file = \"/etc/podstore/keys/app\"\n\n\
                  [[disks]]\nid = 0\npath = \"/srv/podstore/disk0\"\ntier = \"fast\"\n\n\
                  [[disks]]\nid = 1\npath = \"/srv/podstore/disk1\"\ntier = \"capacity\"\n";
    vec![
        ("handshake", "hello", hello.encode()),
        ("handshake", "challenge", challenge.encode()),
        ("names", "object", b"/photos/cats/tom%20cat.jpg".to_vec()),
        ("range", "first-100", range(4096, "bytes=0-99")),
        ("range", "suffix", range(10, "bytes=-3")),
        ("config", "two-tiers", config.as_bytes().to_vec()),
        ("auth", "bearer", [[bearer.len() as u8].as_slice(), &bearer].concat()),
        ("auth", "presigned", [[0u8].as_slice(), query.as_bytes()].concat()),
        ("manifest", "three-parts", manifest()),
    ]
}

#[test]
fn fuzz_seed_corpus_is_current_and_accepted() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let write = std::env::var_os("PODSTORE_WRITE_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        let p = root.join(target).join(name);
        if write {
            std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
            std::fs::write(&p, &bytes).expect("write seed");
        }
        let on_disk =
            std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}; regenerate the seeds", p.display()));
        assert!(on_disk == bytes, "{} is stale; regenerate the seeds", p.display());
        // Each seed takes its decoder's accepting path.
        let ok = match target {
            "handshake" => Hello::decode(&bytes).is_ok() || Challenge::decode(&bytes).is_ok(),
            "names" => {
                podstore_net::names::parse_object_path(std::str::from_utf8(&bytes).expect("utf8"), 1024)
                    .is_ok()
            }
            "range" => matches!(
                podstore_net::range::resolve(Some(std::str::from_utf8(&bytes[8..]).expect("utf8")), 4096),
                podstore_net::range::RangeAnswer::Part { .. }
            ),
            "config" => podstore_net::config::Config::parse(
                std::str::from_utf8(&bytes).expect("utf8"),
                "s.toml".as_ref(),
            )
            .is_ok(),
            "manifest" => podstore_net::manifest::Manifest::decode(&bytes).is_ok(),
            "auth" => {
                let a = Auth::from_keys(&[("k", SECRET, &["photos"], false)], &[]);
                let split = bytes[0] as usize;
                let (h, q) = bytes[1..].split_at(split);
                a.check(&Access {
                    method: "PUT",
                    bucket: "photos",
                    key: b"k",
                    authorization: (!h.is_empty()).then_some(h),
                    query: std::str::from_utf8(q).ok(),
                    now_s: 1_000_000,
                })
                .is_ok()
            }
            _ => unreachable!(),
        };
        assert!(ok, "{} is not accepted by its decoder", p.display());
    }
}
