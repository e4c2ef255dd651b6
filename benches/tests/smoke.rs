//! Every benchmark at a tiny size, so the code the README's figures come from keeps working.
//! No timing is asserted here: the machines are shared and noisy.

use podstore_benches::*;

#[test]
fn benchmarks_run_at_a_tiny_size() {
    let root = std::env::temp_dir().join(format!("podstore-bench-smoke-{}", std::process::id()));
    let r = durable_puts(&fresh_dir(&root, "seq"), 1 << 20, 2, 4 << 20);
    assert_eq!(r.ops, 4);
    let r = durable_puts(&fresh_dir(&root, "small"), 4096, 64, 256 << 10);
    assert_eq!(r.ops, 64);
    let r = random_reads(&fresh_dir(&root, "reads"), 4096, 200, 32, 320);
    assert_eq!((r.ops, r.bytes), (320, 320 * 4096));
    let b = index_bytes_per_object(100_000);
    assert!(b > 16.0 && b < 64.0, "{b}");
    let (n, _) = startup_from_checkpoint(&fresh_dir(&root, "ckpt"), 50_000);
    assert_eq!(n, 50_000);
    let (scanned, _) = tail_scan(&fresh_dir(&root, "tail"), 8 << 20);
    assert!(scanned >= 8 << 20);
    let n = names_at_scale(&fresh_dir(&root, "names"), 20_000, 5);
    assert_eq!(n.names, 20_000, "every name listed once");
    assert!(n.ram_bytes_per_name > 0.0 && n.disk_bytes_per_name > 50.0, "{n:?}");
    let _ = std::fs::remove_dir_all(&root);
}
