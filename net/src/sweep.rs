//! The multipart sweep: multipart uploads' records that nothing will read any more go, so no
//! part of a dead object is kept forever and no part of a live one is dropped.
//!
//! Every `maintenance.multipart_sweep_interval_s`, core 0 walks the reserved buckets
//! (`manifest.rs`):
//!
//! - an open upload older than `maintenance.multipart_expiry_s` (its id says when it started)
//!   is expired: its state and its parts go (UploadPart and CompleteMultipartUpload refuse it
//!   from then on, here and on every appliance, whose clocks agree on its age), all but the
//!   parts a completion cut off by a crash before it closed the upload made the object from;
//! - the parts of an upload that is no longer open are kept only while the object at its key
//!   is a multipart object whose manifest names them (the same parts prefix, the same
//!   versions); the others go: parts never named in the completion, and every part of an
//!   object written again or deleted since.
//!
//! An upload's parts younger than `maintenance.multipart_sweep_grace_s` are never looked at: a
//! completion may be between its manifest and the close of its state.
//!
//! What goes is forgotten on this appliance alone, with no tombstone and nothing sent to the
//! peers (`Shard::forget`): each appliance judges from what it holds. One that is behind (the
//! manifest not here yet, after a partition) may forget parts that are live elsewhere; the
//! appliance that holds the manifest keeps them, and a read here, or anti-entropy, brings them
//! back from it. A tombstone would instead have deleted them everywhere. The deletes a client
//! asks for (AbortMultipartUpload, parts left out of a completion) are tombstones as usual.

use std::time::Duration;

use podstore_engine::names::Name;

use crate::list::{ListRequest, LIST_LIMIT_MAX};
use crate::manifest::{self, PARTS_BUCKET, UPLOADS_BUCKET};
use crate::service::{Error, Objects};

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Open uploads left open.
    pub open: u64,
    /// Expired uploads removed.
    pub expired: u64,
    /// Parts forgotten.
    pub parts: u64,
}

/// Runs the sweep on this core every configured interval, for as long as the core runs.
pub async fn run(objects: std::rc::Rc<Objects>) {
    loop {
        let every = objects.shared.cfg().maintenance.multipart_sweep_interval_s;
        tokio::time::sleep(Duration::from_secs(every)).await;
        if !objects.shared.ready.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        match pass(&objects, podstore_engine::now_ms()).await {
            Ok(s) => {
                metrics::counter!("podstore_multipart_sweeps_total").increment(1);
                metrics::gauge!("podstore_multipart_open_uploads").set(s.open as f64);
                if s.expired > 0 || s.parts > 0 {
                    tracing::info!(
                        "multipart sweep: {} expired uploads and {} parts removed",
                        s.expired,
                        s.parts
                    );
                }
            }
            Err(e) => tracing::warn!("multipart sweep stopped: {e}"),
        }
    }
}

fn storage_key(bucket: &str, key: &[u8]) -> Vec<u8> {
    [bucket.as_bytes(), b"/", key].concat()
}

/// Forgets here the parts under an upload's parts prefix that `keep` does not keep; how many.
async fn forget_parts(
    objects: &Objects,
    prefix: &[u8],
    keep: impl Fn(u16, &Name) -> bool,
) -> Result<u64, Error> {
    let mut gone = 0;
    let mut from = prefix.to_vec();
    loop {
        let (names, next) = page(objects, PARTS_BUCKET, prefix, from).await?;
        for (key, name) in names {
            let Some(number) = manifest::part_number(&key).filter(|_| key.len() == prefix.len() + 5) else {
                continue;
            };
            if keep(number, &name) {
                continue;
            }
            if objects.forget_here(&storage_key(PARTS_BUCKET, &key), name.version).await? {
                gone += 1;
                metrics::counter!("podstore_multipart_swept_total", "what" => "part").increment(1);
            }
        }
        match next {
            Some(n) => from = n,
            None => return Ok(gone),
        }
    }
}

/// A page of a reserved bucket's names under `prefix` from `from`: the names and where the next
/// page starts.
async fn page(
    objects: &Objects,
    bucket: &str,
    prefix: &[u8],
    from: Vec<u8>,
) -> Result<(Vec<(Vec<u8>, Name)>, Option<Vec<u8>>), Error> {
    let req = ListRequest {
        bucket: bucket.into(),
        prefix: prefix.to_vec(),
        delimiter: None,
        from,
        limit: LIST_LIMIT_MAX,
    };
    let p = objects.list(&req).await?;
    Ok((p.objects.into_iter().map(|o| (o.key, o.name)).collect(), p.next))
}

/// One pass at `now_ms`, a page of names at a time (what it holds in memory is bounded).
pub async fn pass(objects: &Objects, now_ms: u64) -> Result<Swept, Error> {
    let cfg = objects.shared.cfg();
    let expiry_ms = cfg.maintenance.multipart_expiry_s.saturating_mul(1000);
    let grace_ms = cfg.maintenance.multipart_sweep_grace_s.saturating_mul(1000);
    drop(cfg);
    let mut swept = Swept::default();
    // Open uploads: expired ones go with their parts.
    let mut from = Vec::new();
    loop {
        let (names, next) = page(objects, UPLOADS_BUCKET, b"", from).await?;
        for (key, name) in names {
            let Some((_, _, id)) = manifest::split_upload_key(&key) else { continue };
            let started = manifest::upload_started_ms(id).unwrap_or(0);
            if now_ms.saturating_sub(started) <= expiry_ms {
                swept.open += 1;
                continue;
            }
            if objects.forget_here(&storage_key(UPLOADS_BUCKET, &key), name.version).await? {
                swept.expired += 1;
                metrics::counter!("podstore_multipart_swept_total", "what" => "upload").increment(1);
            }
            // Its parts go unless a completion cut off before it closed the upload wrote the
            // object from them.
            let mut prefix = key.clone();
            prefix.push(b'/');
            swept.parts += forget_unnamed(objects, &prefix).await?;
        }
        match next {
            Some(n) => from = n,
            None => break,
        }
        tokio::task::yield_now().await;
    }
    // Parts of uploads no longer open: kept only while their object's manifest names them.
    // Each page's uploads (their parts prefixes) are judged whole; one that may go on in the
    // next page is left to it.
    let mut from = Vec::new();
    loop {
        let (names, next) = page(objects, PARTS_BUCKET, b"", from).await?;
        let mut groups: Vec<Vec<u8>> = Vec::new();
        for (k, _) in &names {
            let Some(cut) = k.len().checked_sub(5) else { continue };
            if groups.last().is_none_or(|g| g[..] != k[..cut]) {
                groups.push(k[..cut].to_vec());
            }
        }
        if next.is_some() && groups.len() > 1 {
            groups.pop();
        }
        for prefix in &groups {
            swept.parts += judge_parts(objects, prefix, now_ms, grace_ms).await?;
        }
        match (next, groups.last().and_then(|g| crate::list::prefix_end(g))) {
            (Some(_), Some(after)) => from = after.into_vec(),
            _ => break,
        }
        tokio::task::yield_now().await;
    }
    Ok(swept)
}

/// The parts under one upload's prefix: forgotten unless the upload is open, or young, or
/// the object at its key is a multipart object whose manifest names them.
async fn judge_parts(objects: &Objects, prefix: &[u8], now_ms: u64, grace_ms: u64) -> Result<u64, Error> {
    let Some(upload) = prefix.strip_suffix(b"/") else { return Ok(0) };
    let Some((_, _, id)) = manifest::split_upload_key(upload) else { return Ok(0) };
    let started = manifest::upload_started_ms(id).unwrap_or(0);
    if now_ms.saturating_sub(started) < grace_ms {
        return Ok(0);
    }
    match objects.get(&storage_key(UPLOADS_BUCKET, upload), None, true).await {
        Ok(_) => return Ok(0), // open (an expired one went in the first half of the pass)
        Err(Error::NotFound) => {}
        Err(e) => return Err(e),
    }
    forget_unnamed(objects, prefix).await
}

/// Forgets the parts under an upload's parts prefix that the object at its key (when it is a
/// multipart object completed from this upload) does not name.
async fn forget_unnamed(objects: &Objects, prefix: &[u8]) -> Result<u64, Error> {
    let Some((bucket, key, _)) = prefix.strip_suffix(b"/").and_then(manifest::split_upload_key) else {
        return Ok(0);
    };
    let base = storage_key(PARTS_BUCKET, prefix);
    let object = [bucket, b"/", key].concat();
    let named = match objects.manifest(&object).await? {
        Some((_, m)) if m.base == base => m.parts,
        _ => Vec::new(),
    };
    forget_parts(objects, prefix, |number, name| {
        named.iter().any(|p| p.number == number && p.version == name.version)
    })
    .await
}
