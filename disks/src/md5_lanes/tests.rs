use super::*;
use md5::Digest as _;

fn reference(data: &[u8]) -> [u8; 16] {
    md5::Md5::digest(data).into()
}

fn body(len: usize, seed: u64) -> Bytes {
    let mut rng = fastrand::Rng::with_seed(seed);
    Bytes::from((0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>())
}

#[test]
fn known_values() {
    // RFC 1321 A.5.
    for (text, want) in [
        ("", "d41d8cd98f00b204e9800998ecf8427e"),
        ("a", "0cc175b9c0f1b6a831c399e269772661"),
        ("abc", "900150983cd24fb0d6963f7d28e17f72"),
        ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
        (
            "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
            "57edf4a22be3c955ac49da2e2107b67a",
        ),
    ] {
        let mut s = Md5Stream::new();
        s.update(&Bytes::from(text));
        let got: String = s.finish().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want, "{text:?}");
    }
}

/// Streams of random lengths given in random pieces, interleaved at random, against `md-5`
/// over the same bytes: with each kernel this CPU has, and with one to forty streams at once
/// (fewer and more than each kernel's lanes).
#[test]
fn many_streams_in_random_pieces_match_md5() {
    let mut kernels = vec![Kernel::Single];
    if Kernel::detect() >= Kernel::X8 {
        kernels.push(Kernel::X8);
    }
    let before = hashed();
    for kernel in kernels.iter().copied() {
        limit_kernel(kernel);
        for seed in 0..60u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let count = [1, 2, 3, 7, 8, 9, 12, 16, 17, 40][seed as usize % 10];
            let bodies: Vec<Bytes> = (0..count)
                .map(|i| {
                    let len = match rng.u8(..4) {
                        0 => rng.usize(..200),
                        1 => rng.usize(..70_000),
                        _ => rng.usize(..1_200_000),
                    };
                    body(len, seed * 1000 + i as u64)
                })
                .collect();
            let mut streams: Vec<Option<(Md5Stream, usize)>> =
                bodies.iter().map(|_| Some((Md5Stream::new(), 0))).collect();
            let mut left = count;
            while left > 0 {
                let i = rng.usize(..count);
                let Some((s, at)) = streams[i].as_mut() else { continue };
                let b = &bodies[i];
                let piece = match rng.u8(..5) {
                    0 => rng.usize(..=65),
                    1 => 64 * rng.usize(1..=4),
                    _ => rng.usize(..=96_000),
                }
                .min(b.len() - *at);
                s.update(&b.slice(*at..*at + piece));
                *at += piece;
                if *at == b.len() {
                    let (s, _) = streams[i].take().expect("unfinished");
                    assert_eq!(s.finish(), reference(b), "kernel {kernel:?}, seed {seed}, stream {i}");
                    left -= 1;
                }
            }
            POOL.with_borrow(|p| assert_eq!(p.queued, 0, "nothing left queued"));
        }
    }
    let after = hashed();
    if kernels.len() > 1 {
        assert!(after.lanes > before.lanes, "the vector kernel hashed something");
        assert!(after.passes > before.passes && after.passes - before.passes < after.lanes - before.lanes);
    }
    assert!(after.single > before.single);
}

/// A stream dropped unfinished (a body that failed) leaves the others' digests right and its
/// queued bytes uncounted; its slot is used again.
#[test]
fn a_dropped_stream_leaves_the_others_right() {
    let max = STREAM_QUEUED_MAX;
    let a_body = body(2 * max + 1000, 1);
    let b_body = body(max / 2 + 77, 2);
    let mut a = Md5Stream::new();
    let mut b = Md5Stream::new();
    a.update(&a_body.slice(..max + 100));
    b.update(&b_body.slice(..max / 2));
    drop(b);
    // a, alone when it passed STREAM_QUEUED_MAX, holds its whole blocks for a round beside
    // another stream (under STREAM_HELD_MAX); b's are no longer counted.
    POOL.with_borrow(|p| assert_eq!(p.queued, (max + 100) / 64 * 64, "a's bytes held, b's dropped"));
    let mut c = Md5Stream::new();
    a.update(&a_body.slice(max + 100..));
    c.update(&b_body);
    assert_eq!(a.finish(), reference(&a_body));
    assert_eq!(c.finish(), reference(&b_body));
}

/// Bodies held for hashing are bounded per thread, however many streams there are.
#[test]
fn queued_bytes_are_bounded() {
    let data = body(200_000, 3);
    let mut streams: Vec<Md5Stream> = (0..200).map(|_| Md5Stream::new()).collect();
    for s in streams.iter_mut() {
        s.update(&data);
        POOL.with_borrow(|p| assert!(p.queued < THREAD_QUEUED_MAX + 200_000, "{}", p.queued));
    }
    let want = reference(&data);
    for s in streams {
        assert_eq!(s.finish(), want);
    }
}
