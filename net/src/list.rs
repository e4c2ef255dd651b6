//! Listing: a bucket's keys in byte order, merged from every disk's name index
//! (`engine/src/names/`), with prefixes, a delimiter's common prefixes and pages.
//!
//! Each disk streams its names from a seek (pages of `batch` names, fetched as the merge needs
//! them); where disks disagree about a key (a key moved between disks, a tombstone on one
//! and an older copy on another) the newest version wins, as it does for a GET, and a key is
//! listed only if that version is an object. A page holds at most `limit` objects and common
//! prefixes together, and says where the next one starts (`next`, a key of the bucket to
//! resume at) only when there is more to list. Nothing here knows HTTP or S3: front ends
//! parse their parameters into a [`ListRequest`] and render the [`ListPage`].

use std::collections::VecDeque;
use std::future::Future;

use podstore_engine::names::{successor, Kind, Listed, Name};

/// Most objects and common prefixes in one page.
pub const LIST_LIMIT_MAX: usize = 1000;
/// Most names asked of one disk at a time.
const BATCH_MAX: usize = 1000;
/// Fewest names asked of one disk at a time.
const BATCH_MIN: usize = 16;

/// A listing as a front end asks for it. Keys are the bucket's (without the bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub bucket: String,
    pub prefix: Vec<u8>,
    /// Keys with the delimiter after the prefix are rolled up into common prefixes.
    pub delimiter: Option<Vec<u8>>,
    /// The first key that may be listed (from `start-after` or a continuation).
    pub from: Vec<u8>,
    /// 1..=[`LIST_LIMIT_MAX`].
    pub limit: usize,
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: Vec<u8>,
    pub name: Name,
}

/// A page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ListedObject>,
    /// Common prefixes (each ends with the delimiter), in order.
    pub prefixes: Vec<Vec<u8>>,
    /// Where the next page starts (a key of the bucket), when there is more.
    pub next: Option<Vec<u8>>,
}

/// One disk's stream of names.
struct Cursor {
    disk: u32,
    buf: VecDeque<(Box<[u8]>, Name)>,
    /// Where the disk's next page starts; None when it has no more.
    next: Option<Box<[u8]>>,
    batch: usize,
}

/// The smallest key above every key that starts with `p` (None: no such key).
pub fn prefix_end(p: &[u8]) -> Option<Box<[u8]>> {
    let mut v = p.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xFF {
            v.push(last + 1);
            return Some(v.into());
        }
    }
    None
}

/// What the merge found next.
enum Item {
    Object(ListedObject),
    Prefix(Vec<u8>),
}

/// Lists `req` over `disks`; `fetch(disk, from, prefix, max)` reads one page of a disk's
/// names (storage keys: `bucket/key`).
pub async fn list<F, Fut, E>(req: &ListRequest, disks: &[u32], fetch: F) -> Result<ListPage, E>
where
    F: Fn(u32, Box<[u8]>, Box<[u8]>, usize) -> Fut,
    Fut: Future<Output = Result<Listed, E>>,
{
    assert!((1..=LIST_LIMIT_MAX).contains(&req.limit), "limit {}", req.limit);
    // An empty bucket lists the storage keys themselves (`bucket/key`): with the delimiter
    // `/`, the buckets ([`buckets`]).
    let bucket_prefix_len = if req.bucket.is_empty() { 0 } else { req.bucket.len() + 1 };
    let storage = |k: &[u8]| -> Box<[u8]> {
        let mut v = Vec::with_capacity(bucket_prefix_len + k.len());
        if !req.bucket.is_empty() {
            v.extend_from_slice(req.bucket.as_bytes());
            v.push(b'/');
        }
        v.extend_from_slice(k);
        v.into()
    };
    let prefix = storage(&req.prefix);
    let start = storage(if req.from > req.prefix { &req.from } else { &req.prefix });
    let batch = (req.limit * 2 / disks.len().max(1) + BATCH_MIN).clamp(BATCH_MIN, BATCH_MAX);
    let mut cursors: Vec<Cursor> = disks
        .iter()
        .map(|&disk| Cursor { disk, buf: VecDeque::new(), next: Some(start.clone()), batch })
        .collect();
    let mut page = ListPage::default();
    let mut last_prefix: Option<Vec<u8>> = None;
    loop {
        let Some(item) =
            next_item(&mut cursors, &prefix, req, bucket_prefix_len, &fetch, &mut last_prefix).await?
        else {
            return Ok(page);
        };
        if page.objects.len() + page.prefixes.len() == req.limit {
            // There is more: the next page starts after the last item of this one.
            page.next = Some(match (page.prefixes.last(), page.objects.last()) {
                (Some(p), Some(o)) if *p > o.key => resume_after_prefix(p),
                (Some(p), None) => resume_after_prefix(p),
                (_, Some(o)) => successor(&o.key).into(),
                (None, None) => unreachable!("a full page holds an item"),
            });
            return Ok(page);
        }
        match item {
            Item::Object(o) => page.objects.push(o),
            Item::Prefix(p) => page.prefixes.push(p),
        }
    }
}

/// Every bucket that holds at least one object, in byte order, at most `max` of them: the
/// common prefixes of the storage keys at `/`, one seek per bucket and disk.
pub async fn buckets<F, Fut, E>(disks: &[u32], max: usize, fetch: F) -> Result<Vec<String>, E>
where
    F: Fn(u32, Box<[u8]>, Box<[u8]>, usize) -> Fut,
    Fut: Future<Output = Result<Listed, E>>,
{
    let mut out = Vec::new();
    let mut req = ListRequest {
        bucket: String::new(),
        prefix: Vec::new(),
        delimiter: Some(b"/".to_vec()),
        from: Vec::new(),
        limit: LIST_LIMIT_MAX,
    };
    loop {
        let page = list(&req, disks, &fetch).await?;
        for p in page.prefixes {
            if out.len() == max {
                return Ok(out);
            }
            // The node's own buckets (a multipart upload's parts and state) start with a dot,
            // which no client's may.
            if p.first() == Some(&b'.') {
                continue;
            }
            // Storage keys are `bucket/key` with a valid bucket: the prefix is `bucket/`.
            out.push(String::from_utf8_lossy(&p[..p.len() - 1]).into_owned());
        }
        match page.next {
            Some(n) => req.from = n,
            None => return Ok(out),
        }
    }
}

/// Where a listing goes on after a common prefix: past every key under it.
fn resume_after_prefix(p: &[u8]) -> Vec<u8> {
    prefix_end(p).map(Vec::from).unwrap_or_else(|| successor(p).into())
}

/// The next object or common prefix of the merged streams (None at the end).
async fn next_item<F, Fut, E>(
    cursors: &mut [Cursor],
    prefix: &[u8],
    req: &ListRequest,
    bucket_prefix_len: usize,
    fetch: &F,
    last_prefix: &mut Option<Vec<u8>>,
) -> Result<Option<Item>, E>
where
    F: Fn(u32, Box<[u8]>, Box<[u8]>, usize) -> Fut,
    Fut: Future<Output = Result<Listed, E>>,
{
    loop {
        refill(cursors, prefix, fetch).await?;
        let Some(min) = cursors.iter().filter_map(|c| c.buf.front().map(|(k, _)| k.clone())).min() else {
            return Ok(None);
        };
        // The newest version of the key among the disks.
        let mut won: Option<Name> = None;
        for c in cursors.iter_mut() {
            if c.buf.front().is_some_and(|(k, _)| *k == min) {
                let (_, n) = c.buf.pop_front().expect("a head");
                if won.as_ref().is_none_or(|w| n.version > w.version) {
                    won = Some(n);
                }
            }
        }
        let name = won.expect("a cursor held the lowest key");
        if name.kind != Kind::Live {
            continue;
        }
        let key = &min[bucket_prefix_len..];
        if key.is_empty() && bucket_prefix_len > 0 {
            // The bucket's own record (`bucket/`, made by S3's CreateBucket): not an object.
            continue;
        }
        if let Some(d) = req.delimiter.as_deref() {
            let rest = &key[req.prefix.len()..];
            if let Some(at) = memchr::memmem::find(rest, d) {
                let common = key[..req.prefix.len() + at + d.len()].to_vec();
                skip_under(cursors, &min[..bucket_prefix_len + common.len()]);
                if last_prefix.as_ref() == Some(&common) {
                    continue;
                }
                *last_prefix = Some(common.clone());
                return Ok(Some(Item::Prefix(common)));
            }
        }
        return Ok(Some(Item::Object(ListedObject { key: key.to_vec(), name })));
    }
}

/// Fetches the next page of every disk whose buffered names ran out (all at once).
async fn refill<F, Fut, E>(cursors: &mut [Cursor], prefix: &[u8], fetch: &F) -> Result<(), E>
where
    F: Fn(u32, Box<[u8]>, Box<[u8]>, usize) -> Fut,
    Fut: Future<Output = Result<Listed, E>>,
{
    loop {
        // (A page may come back empty and still go on: its names were all dead.)
        let due: Vec<usize> =
            (0..cursors.len()).filter(|&i| cursors[i].buf.is_empty() && cursors[i].next.is_some()).collect();
        if due.is_empty() {
            return Ok(());
        }
        let pages = futures_util::future::join_all(due.iter().map(|&i| {
            let c = &cursors[i];
            fetch(c.disk, c.next.clone().expect("due cursors go on"), prefix.into(), c.batch)
        }))
        .await;
        for (i, page) in due.into_iter().zip(pages) {
            let page = page?;
            let c = &mut cursors[i];
            c.buf.extend(page.entries);
            c.next = page.next;
            // A disk asked again and again holds most of the range: ask it for more at once.
            c.batch = (c.batch * 2).min(BATCH_MAX);
        }
    }
}

/// Drops every buffered name under the storage prefix `p` and moves each disk's next seek
/// past them.
fn skip_under(cursors: &mut [Cursor], p: &[u8]) {
    let end = prefix_end(p);
    for c in cursors.iter_mut() {
        while c.buf.front().is_some_and(|(k, _)| k.starts_with(p)) {
            c.buf.pop_front();
        }
        if c.buf.is_empty() {
            if let Some(n) = &c.next {
                if &n[..] >= p && end.as_ref().is_none_or(|e| n < e) {
                    c.next = end.clone();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podstore_engine::Version;
    use std::collections::BTreeMap;

    type Disks = Vec<BTreeMap<Vec<u8>, Name>>;

    fn live(v: u64, len: u64) -> Name {
        Name::live(Version { hlc: v, origin: 1 }, len, 0, [0; 16], &"".into())
    }

    /// One disk's page as the engine gives it (in order, from `from`, at most `max`; names
    /// the engine filtered out, here those of length 7777, leave a page short or empty).
    async fn fetch(
        disks: &Disks,
        d: u32,
        from: Box<[u8]>,
        prefix: Box<[u8]>,
        max: usize,
    ) -> Result<Listed, ()> {
        let entries: Vec<(Box<[u8]>, Name)> = disks[d as usize]
            .range(from.to_vec()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .take(max)
            .map(|(k, n)| (Box::<[u8]>::from(&k[..]), n.clone()))
            .collect();
        let next = (entries.len() == max).then(|| successor(&entries[max - 1].0));
        let entries = entries.into_iter().filter(|(_, n)| n.object_len != 7777).collect();
        Ok(Listed { entries, next })
    }

    async fn all(
        disks: &Disks,
        prefix: &str,
        delim: Option<&str>,
        limit: usize,
    ) -> (Vec<String>, Vec<String>) {
        let ids: Vec<u32> = (0..disks.len() as u32).collect();
        let mut req = ListRequest {
            bucket: "bkt".into(),
            prefix: prefix.into(),
            delimiter: delim.map(|d| d.into()),
            from: Vec::new(),
            limit,
        };
        let (mut objects, mut prefixes) = (Vec::new(), Vec::new());
        loop {
            let page = list(&req, &ids, |d, f, p, m| fetch(disks, d, f, p, m)).await.expect("list");
            assert!(page.objects.len() + page.prefixes.len() <= limit);
            objects.extend(page.objects.into_iter().map(|o| String::from_utf8(o.key).expect("utf-8")));
            prefixes.extend(page.prefixes.into_iter().map(|p| String::from_utf8(p).expect("utf-8")));
            match page.next {
                Some(n) => req.from = n,
                None => return (objects, prefixes),
            }
        }
    }

    fn run<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn merges_disks_newest_version_first_with_prefixes_and_pages() {
        let mut disks: Disks = vec![BTreeMap::new(); 3];
        let keys = ["a/1", "a/2", "a/b/1", "a/b/2", "a/c", "b", "c/x/y", "ca", "d/"];
        for (i, k) in keys.iter().enumerate() {
            disks[i % 3].insert(format!("bkt/{k}").into_bytes(), live(10, i as u64));
        }
        // "a/2" moved: an older copy on disk 2 and the newer on disk 1 (listed once).
        disks[2].insert(b"bkt/a/2".to_vec(), live(5, 99));
        // "ca" deleted on another disk with a newer version: not listed.
        disks[0].insert(b"bkt/ca".to_vec(), Name::tombstone(Version { hlc: 20, origin: 1 }, 0));
        // Names the disk filters out (dead): a run of them leaves whole pages empty.
        for i in 0..40 {
            disks[0].insert(format!("bkt/a/d{i:02}").into_bytes(), live(10, 7777));
        }
        // The bucket's own record (S3's CreateBucket): never listed as an object.
        disks[1].insert(b"bkt/".to_vec(), live(1, 0));
        // Another bucket, and a bucket whose name extends this one's.
        disks[1].insert(b"bkt2/a".to_vec(), live(1, 1));
        disks[2].insert(b"bk/a".to_vec(), live(1, 1));
        let want: Vec<String> =
            ["a/1", "a/2", "a/b/1", "a/b/2", "a/c", "b", "c/x/y", "d/"].map(String::from).to_vec();
        for limit in [1, 2, 3, 1000] {
            run(async {
                assert_eq!(all(&disks, "", None, limit).await, (want.clone(), vec![]), "limit {limit}");
                let (o, p) = all(&disks, "", Some("/"), limit).await;
                assert_eq!(
                    (o, p),
                    (vec!["b".into()], vec!["a/".into(), "c/".into(), "d/".into()]),
                    "limit {limit}"
                );
                let (o, p) = all(&disks, "a/", Some("/"), limit).await;
                assert_eq!((o, p), (vec!["a/1".into(), "a/2".into(), "a/c".into()], vec!["a/b/".into()]));
                let (o, _) = all(&disks, "a/b", None, limit).await;
                assert_eq!(o, vec!["a/b/1".to_string(), "a/b/2".into()]);
                assert_eq!(all(&disks, "zz", Some("/"), limit).await, (vec![], vec![]));
            });
        }
        // The buckets: every one with a live object, none holding only tombstones ("gone").
        disks[1].insert(b"gone/x".to_vec(), Name::tombstone(Version { hlc: 3, origin: 1 }, 0));
        run(async {
            let ids = [0u32, 1, 2];
            let b = buckets(&ids, 100, |d, f, p, m| fetch(&disks, d, f, p, m)).await.expect("buckets");
            assert_eq!(b, vec!["bk", "bkt", "bkt2"]);
            let b = buckets(&ids, 2, |d, f, p, m| fetch(&disks, d, f, p, m)).await.expect("buckets");
            assert_eq!(b, vec!["bk", "bkt"]);
        });
        // A delimiter of several bytes, and a start inside the range.
        run(async {
            let (o, p) = all(&disks, "", Some("/b/"), 2).await;
            assert_eq!(p, vec!["a/b/".to_string()]);
            assert_eq!(o.len(), 6);
            let ids = [0u32, 1, 2];
            let req = ListRequest {
                bucket: "bkt".into(),
                prefix: vec![],
                delimiter: None,
                from: b"a/c".to_vec(),
                limit: 2,
            };
            let page = list(&req, &ids, |d, f, p, m| fetch(&disks, d, f, p, m)).await.expect("list");
            let got: Vec<&[u8]> = page.objects.iter().map(|o| &o.key[..]).collect();
            assert_eq!(got, vec![&b"a/c"[..], b"b"]);
            assert_eq!(page.next.as_deref(), Some(&b"b\0"[..]));
        });
    }
}
