//! Multipart uploads: CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
//! AbortMultipartUpload, ListParts, ListMultipartUploads.
//!
//! An open upload is a record of the reserved bucket `.uploads` holding the object's content
//! type and headers; each part a record of `.parts` (`crate::manifest` names both), written,
//! checked and copied to peers as a PutObject is. Completing writes one record at the object's
//! key whose data is the manifest naming the parts (nothing written a second time), then
//! closes the upload; a GET streams the parts (`Objects::get`).

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header;
use hyper::{Response, StatusCode};
use podstore_engine::{Attrs, DigestKind, Multipart};
use quick_xml::escape::escape;

use super::bucket::NoBody;
use super::error::S3Error;
use super::write::{
    attrs_of, checked_name, copies, malformed_xml, read_small_body, written_response, xml_leaves,
};
use super::{xml, S3Request};
use crate::body::RespBody;
use crate::list::{ListRequest, LIST_LIMIT_MAX};
use crate::manifest::{self, Manifest, Part, PARTS_BUCKET, PARTS_MAX, UPLOADS_BUCKET};
use crate::names::ObjectName;
use crate::service::{Objects, PutRequest};

/// Smallest part but the last (S3's rule).
pub const PART_BYTES_MIN: u64 = 5 << 20;
/// Largest multipart object (S3's limit).
pub const MULTIPART_OBJECT_BYTES_MAX: u64 = 5 << 40;
/// Most two appliances' clocks may differ, for telling an object written before an upload
/// started from its completion.
const CLOCK_SKEW_MAX_MS: u64 = 3_600_000;
/// Largest CompleteMultipartUpload body: 10,000 parts with their checksums.
const COMPLETE_BODY_MAX_BYTES: usize = 8 << 20;
const NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

fn no_such_upload() -> S3Error {
    S3Error::new(
        StatusCode::NOT_FOUND,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
    )
}

fn invalid_part(why: impl Into<String>) -> S3Error {
    S3Error::new(StatusCode::BAD_REQUEST, "InvalidPart", why)
}

/// The upload id of a request (`uploadId`), checked.
fn upload_id<'a>(r: &'a S3Request<'_>) -> Result<&'a str, S3Error> {
    let id = r.param("uploadId").unwrap_or("");
    if manifest::valid_upload_id(id) {
        Ok(id)
    } else {
        Err(no_such_upload())
    }
}

/// The record of an open upload.
fn upload_name(bucket: &str, key: &[u8], id: &str) -> ObjectName {
    ObjectName { bucket: UPLOADS_BUCKET.into(), key: manifest::upload_key(bucket, key, id) }
}

/// The attributes of an open upload (the object's to be), or NoSuchUpload (none, or one older
/// than `maintenance.multipart_expiry_s`: the sweep removes those, and every appliance refuses
/// them alike).
async fn open_upload(objects: &Objects, bucket: &str, key: &[u8], id: &str) -> Result<Attrs, S3Error> {
    let expiry_ms = objects.shared.cfg().maintenance.multipart_expiry_s.saturating_mul(1000);
    let started = manifest::upload_started_ms(id).unwrap_or(0);
    if podstore_engine::now_ms().saturating_sub(started) > expiry_ms {
        return Err(no_such_upload());
    }
    let state = upload_name(bucket, key, id);
    let attrs = match objects.get(&state.storage_key(), None, true).await {
        Ok(start) => start.meta.attrs,
        Err(crate::service::Error::NotFound) => return Err(no_such_upload()),
        Err(e) => return Err(e.into()),
    };
    // A completion that wrote the object but was cut off (a crash) before it closed the
    // upload: the upload is completed, and a part sent now would replace one the object reads.
    if completed_as(objects, bucket, key, id).await?.is_some() {
        objects.delete(&state, 1).await?;
        return Err(no_such_upload());
    }
    Ok(attrs)
}

/// The object at the key, when it is the completion of this upload (its manifest names this
/// upload's parts).
async fn completed_as(
    objects: &Objects,
    bucket: &str,
    key: &[u8],
    id: &str,
) -> Result<Option<(podstore_engine::ObjectMeta, Manifest)>, S3Error> {
    let object = ObjectName { bucket: bucket.to_string(), key: key.to_vec() }.storage_key();
    // An object written before the upload started (by more than any clock skew between
    // appliances) is not its completion: its manifest is not read (every UploadPart asks).
    let started = manifest::upload_started_ms(id).unwrap_or(0);
    match objects.get(&object, None, true).await {
        Ok(start)
            if start.meta.attrs.multipart().is_some()
                && start.meta.created_ms + CLOCK_SKEW_MAX_MS >= started => {}
        Ok(_) | Err(crate::service::Error::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut base = format!("{PARTS_BUCKET}/").into_bytes();
    base.extend_from_slice(&manifest::parts_prefix(bucket, key, id));
    Ok(objects.manifest(&object).await?.filter(|(_, m)| m.base == base))
}

/// A body of one piece held in memory (a manifest).
struct OnePiece(Option<Bytes>);

impl crate::service::BodySource for OnePiece {
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        self.0.take().map(Ok)
    }
}

/// CreateMultipartUpload (`POST /bucket/key?uploads`): the object's content type and headers
/// are kept with the upload until it completes.
pub(super) async fn create(objects: &Objects, r: &S3Request<'_>) -> Result<Response<RespBody>, S3Error> {
    let name = checked_name(r.bucket, r.key.to_vec())?;
    let attrs = attrs_of(r.headers)?;
    let id = manifest::new_upload_id(podstore_engine::now_ms());
    let put = PutRequest {
        name: upload_name(&name.bucket, &name.key, &id),
        len: 0,
        attrs,
        checks: Vec::new(),
        copies: copies(objects, r.headers)?,
    };
    objects.put(put, NoBody).await?;
    metrics::counter!("podstore_s3_multipart_total", "op" => "create").increment(1);
    Ok(xml(format!(
        "<InitiateMultipartUploadResult xmlns=\"{NS}\"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{id}</UploadId></InitiateMultipartUploadResult>",
        escape(r.bucket),
        escape(String::from_utf8_lossy(r.key).as_ref()),
    )))
}

/// UploadPart (`PUT /bucket/key?partNumber=N&uploadId=ID`): checked and stored as a PutObject
/// is; its ETag is its MD5. A part sent again under the same number replaces the first.
pub(super) async fn upload_part(
    objects: &Objects,
    r: &S3Request<'_>,
    body: Incoming,
) -> Result<Response<RespBody>, S3Error> {
    let h = r.headers;
    let id = upload_id(r)?;
    let number: u16 = r
        .param("partNumber")
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=PARTS_MAX).contains(n))
        .ok_or_else(|| {
            S3Error::invalid_argument("Part number must be an integer between 1 and 10000, inclusive")
        })?;
    let name = checked_name(r.bucket, r.key.to_vec())?;
    open_upload(objects, &name.bucket, &name.key, id).await?;
    let prefix = manifest::parts_prefix(&name.bucket, &name.key, id);
    let part = ObjectName { bucket: PARTS_BUCKET.into(), key: manifest::part_key(&prefix, number) };
    let attrs = Attrs::new("application/octet-stream", [], DigestKind::Md5).expect("a valid content type");
    let response = match super::copy::source(h)? {
        Some(src) => upload_part_copy(objects, r, src, part, attrs).await?,
        None => super::write::store(objects, r, part, attrs, body, "part").await?,
    };
    metrics::counter!("podstore_s3_multipart_total", "op" => "part").increment(1);
    Ok(response)
}

/// UploadPartCopy: a part copied from an object (`x-amz-copy-source`), whole or a range of it
/// (`x-amz-copy-source-range`, inside the object), inside the node.
async fn upload_part_copy(
    objects: &Objects,
    r: &S3Request<'_>,
    src: super::copy::Source,
    part: ObjectName,
    attrs: Attrs,
) -> Result<Response<RespBody>, S3Error> {
    let h = r.headers;
    let want = copies(objects, h)?;
    let range = super::copy::copy_range(h)?;
    let start = super::copy::open_source(objects, r, &src, range.clone()).await?;
    let len = super::copy::source_len(&start)?;
    if let Some((a, b)) = range.as_deref().and_then(|v| v.strip_prefix("bytes=")?.split_once('-')) {
        let asked = b.parse::<u64>().unwrap_or(0) - a.parse::<u64>().unwrap_or(0) + 1;
        if asked != len || start.range == crate::range::RangeAnswer::Whole && asked != start.meta.object_len {
            return Err(S3Error::new(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "Range specified is not valid for source object",
            ));
        }
    }
    let max = objects.shared.cfg().limits.object_bytes_max;
    if len > max {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "EntityTooLarge",
            format!("Your proposed upload exceeds the maximum allowed part size ({max} bytes)."),
        ));
    }
    let put = PutRequest { name: part, len, attrs, checks: Vec::new(), copies: want };
    let written = objects.put(put, super::copy::SourceBody::new(start)).await?;
    metrics::counter!("podstore_s3_copies_total", "op" => "part").increment(1);
    let etag = format!("\"{}\"", podstore_engine::hex(&written.digest));
    Ok(super::copy::copied("CopyPartResult", &etag, written.copies))
}

/// Every stored part of an upload, in number order: (number, its listing entry).
async fn stored_parts(
    objects: &Objects,
    prefix: &[u8],
    after: u16,
    max: usize,
) -> Result<(Vec<(u16, podstore_engine::names::Name)>, bool), S3Error> {
    let mut out = Vec::new();
    let mut from = if after == 0 { prefix.to_vec() } else { manifest::part_key(prefix, after + 1) };
    loop {
        let req = ListRequest {
            bucket: PARTS_BUCKET.into(),
            prefix: prefix.to_vec(),
            delimiter: None,
            from: from.clone(),
            limit: LIST_LIMIT_MAX,
        };
        let page = objects.list(&req).await?;
        for o in page.objects {
            if out.len() == max {
                return Ok((out, true));
            }
            if let Some(n) = manifest::part_number(&o.key).filter(|_| o.key.len() == prefix.len() + 5) {
                out.push((n, o.name));
            }
        }
        match page.next {
            Some(n) => from = n,
            None => return Ok((out, false)),
        }
    }
}

/// The parts a CompleteMultipartUpload names: (number, ETag without quotes), as sent.
fn parse_complete(doc: &[u8]) -> Result<Vec<(u16, String)>, S3Error> {
    let mut parts: Vec<(u16, String)> = Vec::new();
    let (mut number, mut etag) = (None, None);
    xml_leaves(doc, |path, text| {
        match path {
            ["CompleteMultipartUpload", "Part", "PartNumber"] => {
                number = Some(text.trim().parse::<u16>().map_err(|_| malformed_xml())?);
            }
            ["CompleteMultipartUpload", "Part", "ETag"] => {
                etag = Some(text.trim().trim_matches('"').to_ascii_lowercase());
            }
            ["CompleteMultipartUpload", "Part"] => {
                let (Some(n), Some(e)) = (number.take(), etag.take()) else { return Err(malformed_xml()) };
                if parts.len() == PARTS_MAX as usize {
                    return Err(malformed_xml());
                }
                parts.push((n, e));
            }
            _ => {}
        }
        Ok(())
    })?;
    if parts.is_empty() {
        return Err(malformed_xml());
    }
    Ok(parts)
}

/// The answer to a completed upload.
fn completed(r: &S3Request<'_>, m: &Multipart, copies: u32) -> Response<RespBody> {
    let etag = super::object::etag(&m.etag, DigestKind::Md5, m.parts);
    let key = escape(String::from_utf8_lossy(r.key).as_ref()).into_owned();
    let mut resp = xml(format!(
        "<CompleteMultipartUploadResult xmlns=\"{NS}\"><Location>/{bucket}/{key}</Location><Bucket>{bucket}</Bucket><Key>{key}</Key><ETag>{}</ETag></CompleteMultipartUploadResult>",
        escape(&etag),
        bucket = escape(r.bucket),
    ));
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag.parse().expect("hex"));
    h.insert("x-podstore-copies-written", copies.into());
    resp
}

/// CompleteMultipartUpload (`POST /bucket/key?uploadId=ID`): the parts named (in ascending
/// order, each with its ETag, each but the last at least 5 MiB) become the object, a record
/// whose data is their manifest; parts uploaded but not named are deleted; then the upload is
/// closed. A completion sent again after it succeeded is answered as the first was.
pub(super) async fn complete(
    objects: &Objects,
    r: &S3Request<'_>,
    body: Incoming,
) -> Result<Response<RespBody>, S3Error> {
    let id = upload_id(r)?;
    let name = checked_name(r.bucket, r.key.to_vec())?;
    let want = copies(objects, r.headers)?;
    let doc = read_small_body(body, COMPLETE_BODY_MAX_BYTES).await?;
    let asked = parse_complete(&doc)?;
    let prefix = manifest::parts_prefix(&name.bucket, &name.key, id);
    let mut base = format!("{PARTS_BUCKET}/").into_bytes();
    base.extend_from_slice(&prefix);
    let attrs = match open_upload(objects, &name.bucket, &name.key, id).await {
        Ok(a) => a,
        Err(e) if e.code == "NoSuchUpload" => {
            // Completed already (the client did not get the answer): the same answer again.
            return match completed_as(objects, &name.bucket, &name.key, id).await? {
                Some((meta, _)) => Ok(completed(r, &meta.attrs.multipart().expect("a manifest's record"), 1)),
                None => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    if asked.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "InvalidPartOrder",
            "The list of parts was not in ascending order. Parts must be ordered by part number.",
        ));
    }
    let (stored, _) = stored_parts(objects, &prefix, 0, usize::MAX).await?;
    let mut parts = Vec::with_capacity(asked.len());
    for (i, (number, etag)) in asked.iter().enumerate() {
        let Some((_, n)) = stored.iter().find(|(s, _)| s == number) else {
            return Err(invalid_part(format!("Part {number} was not uploaded.")));
        };
        if podstore_engine::hex(&n.digest) != *etag {
            return Err(invalid_part(format!("Part {number}'s ETag does not match the one uploaded.")));
        }
        if n.object_len < PART_BYTES_MIN && i + 1 < asked.len() {
            return Err(S3Error::new(
                StatusCode::BAD_REQUEST,
                "EntityTooSmall",
                format!("Your proposed upload is smaller than the minimum allowed object size: part {number} has {} bytes; every part but the last needs at least {PART_BYTES_MIN}.", n.object_len),
            ));
        }
        parts.push(Part { number: *number, len: n.object_len, md5: n.digest, version: n.version });
    }
    let m = Manifest { base, parts };
    let whole = Multipart { object_len: m.object_len(), parts: m.parts.len() as u16, etag: m.etag() };
    if whole.object_len > MULTIPART_OBJECT_BYTES_MAX {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "EntityTooLarge",
            format!("Your proposed upload exceeds the maximum allowed object size ({MULTIPART_OBJECT_BYTES_MAX} bytes)."),
        ));
    }
    let mut attrs = attrs.with_multipart(whole).map_err(|e| S3Error::invalid_argument(e.to_string()))?;
    if let Some((algorithm, value)) = composite_checksum(objects, &m).await? {
        attrs =
            attrs.with_checksum(&algorithm, &value).map_err(|e| S3Error::invalid_argument(e.to_string()))?;
    }
    let data = Bytes::from(m.encode());
    let put =
        PutRequest { name: name.clone(), len: data.len() as u64, attrs, checks: Vec::new(), copies: want };
    let written = objects.put(put, OnePiece(Some(data))).await?;
    // The object is whole and durable: the upload is closed, and parts it does not name go.
    objects.delete(&upload_name(&name.bucket, &name.key, id), 1).await?;
    for (number, _) in stored.iter().filter(|(s, _)| !asked.iter().any(|(a, _)| a == s)) {
        let part = ObjectName { bucket: PARTS_BUCKET.into(), key: manifest::part_key(&prefix, *number) };
        objects.delete(&part, 1).await?;
    }
    metrics::counter!("podstore_s3_multipart_total", "op" => "complete").increment(1);
    Ok(completed(r, &whole, written.copies))
}

/// S3's composite checksum of a multipart object whose every part kept a checksum of one
/// algorithm: that algorithm over the parts' checksums one after another, with `-<parts>`.
async fn composite_checksum(objects: &Objects, m: &Manifest) -> Result<Option<(String, String)>, S3Error> {
    use base64::Engine as _;
    use futures_util::StreamExt;
    let sums: Vec<Result<Option<(String, String)>, crate::service::Error>> =
        futures_util::stream::iter(m.parts.iter().map(|p| m.part_storage_key(p)))
            .map(|key| async move {
                let start = objects.get(&key, None, true).await?;
                Ok(start.meta.attrs.checksum().map(|(a, v)| (a.to_string(), v.to_string())))
            })
            .buffered(32)
            .collect()
            .await;
    let mut raw = Vec::new();
    let mut algorithm: Option<String> = None;
    for s in sums {
        let Some((a, v)) = s? else { return Ok(None) };
        if algorithm.as_ref().is_some_and(|x| *x != a) {
            return Ok(None);
        }
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&v) else { return Ok(None) };
        raw.extend_from_slice(&bytes);
        algorithm = Some(a);
    }
    let Some(a) = algorithm else { return Ok(None) };
    let Some(alg) = crate::checks::Algorithm::of_s3_checksum(&a) else { return Ok(None) };
    let mut h = crate::checks::Hasher::new(alg);
    h.update(&raw);
    let sum = base64::engine::general_purpose::STANDARD.encode(h.finish(alg));
    Ok(Some((a, format!("{sum}-{}", m.parts.len()))))
}

/// AbortMultipartUpload (`DELETE /bucket/key?uploadId=ID`): the upload is closed, then its
/// parts are deleted.
pub(super) async fn abort(objects: &Objects, r: &S3Request<'_>) -> Result<Response<RespBody>, S3Error> {
    let id = upload_id(r)?;
    let name = checked_name(r.bucket, r.key.to_vec())?;
    let want = copies(objects, r.headers)?;
    open_upload(objects, &name.bucket, &name.key, id).await?;
    let written = objects.delete(&upload_name(&name.bucket, &name.key, id), want).await?;
    let prefix = manifest::parts_prefix(&name.bucket, &name.key, id);
    let (stored, _) = stored_parts(objects, &prefix, 0, usize::MAX).await?;
    for (number, _) in stored {
        let part = ObjectName { bucket: PARTS_BUCKET.into(), key: manifest::part_key(&prefix, number) };
        objects.delete(&part, want).await?;
    }
    metrics::counter!("podstore_s3_multipart_total", "op" => "abort").increment(1);
    Ok(written_response(StatusCode::NO_CONTENT, written.copies).body(RespBody::Empty).expect("valid headers"))
}

fn owner() -> &'static str {
    "<ID>podstore</ID><DisplayName>podstore</DisplayName>"
}

/// ListParts (`GET /bucket/key?uploadId=ID`): `part-number-marker`, `max-parts`.
pub(super) async fn list_parts(objects: &Objects, r: &S3Request<'_>) -> Result<Response<RespBody>, S3Error> {
    let id = upload_id(r)?;
    let name = checked_name(r.bucket, r.key.to_vec())?;
    open_upload(objects, &name.bucket, &name.key, id).await?;
    let number = |p: &str, default: usize| -> Result<usize, S3Error> {
        r.param(p).map_or(Ok(default), |v| {
            v.parse().map_err(|_| S3Error::invalid_argument(format!("{p} must be a number")))
        })
    };
    let marker = number("part-number-marker", 0)?.min(PARTS_MAX as usize) as u16;
    let max = number("max-parts", LIST_LIMIT_MAX)?.min(LIST_LIMIT_MAX);
    let prefix = manifest::parts_prefix(&name.bucket, &name.key, id);
    let (parts, truncated) = stored_parts(objects, &prefix, marker, max).await?;
    let mut x = format!(
        "<ListPartsResult xmlns=\"{NS}\"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{id}</UploadId>\
         <Initiator>{o}</Initiator><Owner>{o}</Owner><StorageClass>STANDARD</StorageClass>\
         <PartNumberMarker>{marker}</PartNumberMarker><MaxParts>{max}</MaxParts><IsTruncated>{truncated}</IsTruncated>",
        escape(r.bucket),
        escape(String::from_utf8_lossy(r.key).as_ref()),
        o = owner(),
    );
    if let Some((last, _)) = parts.last() {
        x.push_str(&format!("<NextPartNumberMarker>{last}</NextPartNumberMarker>"));
    }
    for (n, p) in &parts {
        x.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><LastModified>{}</LastModified><ETag>&quot;{}&quot;</ETag><Size>{}</Size></Part>",
            crate::units::iso8601_ms(p.created_ms),
            podstore_engine::hex(&p.digest),
            p.object_len
        ));
    }
    x.push_str("</ListPartsResult>");
    Ok(xml(x))
}

/// ListMultipartUploads (`GET /bucket?uploads`): the bucket's open uploads in key order, then
/// by when they started; `prefix`, `delimiter`, `key-marker`, `upload-id-marker`,
/// `max-uploads`.
pub(super) async fn list_uploads(
    objects: &Objects,
    r: &S3Request<'_>,
) -> Result<Response<RespBody>, S3Error> {
    let text = |p: &str| r.param(p).unwrap_or("");
    let (prefix, delimiter, key_marker, id_marker) =
        (text("prefix"), text("delimiter"), text("key-marker"), text("upload-id-marker"));
    for v in [prefix, delimiter, key_marker] {
        if v.len() > crate::names::KEY_BYTES_MAX || v.chars().any(char::is_control) {
            return Err(S3Error::invalid_argument("a key parameter is not a possible key"));
        }
    }
    let max = match r.param("max-uploads") {
        None => LIST_LIMIT_MAX,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| S3Error::invalid_argument("max-uploads must be a number"))?
            .min(LIST_LIMIT_MAX),
    };
    let mut bucket_prefix = format!("{}/", r.bucket).into_bytes();
    let strip = bucket_prefix.len();
    let mut from = bucket_prefix.clone();
    if !key_marker.is_empty() {
        // After every upload of the marker's key (or after the marker's upload id of it).
        from = manifest::upload_key(
            r.bucket,
            key_marker.as_bytes(),
            if id_marker.is_empty() { "\u{7f}" } else { id_marker },
        );
        from.push(0);
    }
    bucket_prefix.extend_from_slice(prefix.as_bytes());
    let mut req = ListRequest {
        bucket: UPLOADS_BUCKET.into(),
        prefix: bucket_prefix,
        delimiter: (!delimiter.is_empty()).then(|| delimiter.as_bytes().to_vec()),
        from,
        limit: max.max(1),
    };
    let (mut uploads, mut prefixes, mut truncated) = (Vec::new(), Vec::new(), false);
    while uploads.len() + prefixes.len() < max {
        req.limit = max - uploads.len() - prefixes.len();
        let page = objects.list(&req).await?;
        for o in page.objects {
            if let Some((_, key, id)) = manifest::split_upload_key(&o.key) {
                uploads.push((key.to_vec(), id.to_string(), o.name.created_ms));
            }
        }
        prefixes.extend(page.prefixes.into_iter().map(|p| p[strip..].to_vec()));
        match page.next {
            Some(n) => {
                truncated = true;
                req.from = n;
            }
            None => {
                truncated = false;
                break;
            }
        }
    }
    let lossy = |b: &[u8]| escape(String::from_utf8_lossy(b).as_ref()).into_owned();
    let mut x = format!(
        "<ListMultipartUploadsResult xmlns=\"{NS}\"><Bucket>{}</Bucket><KeyMarker>{}</KeyMarker><UploadIdMarker>{}</UploadIdMarker>\
         <Prefix>{}</Prefix><MaxUploads>{max}</MaxUploads><IsTruncated>{truncated}</IsTruncated>",
        escape(r.bucket),
        escape(key_marker),
        escape(id_marker),
        escape(prefix),
    );
    if !delimiter.is_empty() {
        x.push_str(&format!("<Delimiter>{}</Delimiter>", escape(delimiter)));
    }
    if let (true, Some((key, id, _))) = (truncated, uploads.last()) {
        x.push_str(&format!(
            "<NextKeyMarker>{}</NextKeyMarker><NextUploadIdMarker>{id}</NextUploadIdMarker>",
            lossy(key)
        ));
    }
    for (key, id, created) in &uploads {
        x.push_str(&format!(
            "<Upload><Key>{}</Key><UploadId>{id}</UploadId><Initiator>{o}</Initiator><Owner>{o}</Owner>\
             <StorageClass>STANDARD</StorageClass><Initiated>{}</Initiated></Upload>",
            lossy(key),
            crate::units::iso8601_ms(*created),
            o = owner(),
        ));
    }
    for p in &prefixes {
        x.push_str(&format!("<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>", lossy(p)));
    }
    x.push_str("</ListMultipartUploadsResult>");
    Ok(xml(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_parse_and_bad_ones_are_refused() {
        let doc = br#"<?xml version="1.0"?><CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
            <Part><ETag>"AB12"</ETag><PartNumber>1</PartNumber></Part>
            <Part><PartNumber>3</PartNumber><ETag>&quot;cd34&quot;</ETag><ChecksumCRC32>x</ChecksumCRC32></Part>
            </CompleteMultipartUpload>"#;
        assert_eq!(parse_complete(doc).expect("parses"), [(1, "ab12".to_string()), (3, "cd34".to_string())]);
        for bad in [
            &b"<CompleteMultipartUpload></CompleteMultipartUpload>"[..],
            b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
            b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>a</ETag></Part></CompleteMultipartUpload>",
            b"<CompleteMultipartUpload><Part>",
        ] {
            assert_eq!(parse_complete(bad).map_err(|e| e.code), Err("MalformedXML"), "{}", String::from_utf8_lossy(bad));
        }
    }
}
