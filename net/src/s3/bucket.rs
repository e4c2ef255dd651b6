//! Buckets: CreateBucket, HeadBucket, DeleteBucket (only when empty), ListBuckets.
//!
//! A bucket created through S3 is a record of its own, `bucket/` (the bucket and an empty
//! key), written like any object: durable before the answer, copied to every member of the
//! replica set, kept by compaction and moves, hidden from object listings. A bucket the native
//! API wrote objects into, without that record, is a bucket too: it exists while it holds
//! objects. DeleteBucket removes the record (a tombstone, copied like any delete) once the
//! bucket holds no object.

use hyper::header;
use hyper::{Response, StatusCode};

use super::error::S3Error;
use super::{xml, S3Request};
use crate::body::{RespBody, SERVER};
use crate::list::ListRequest;
use crate::names::ObjectName;
use crate::service::{Objects, PutRequest};

/// Most buckets ListBuckets shows.
const BUCKETS_MAX: usize = 10_000;

fn marker(bucket: &str) -> ObjectName {
    ObjectName { bucket: bucket.to_string(), key: Vec::new() }
}

pub(super) fn no_such_bucket() -> S3Error {
    S3Error::new(StatusCode::NOT_FOUND, "NoSuchBucket", "The specified bucket does not exist")
}

/// When the bucket was created (its record's time; 0 for a bucket that exists only by
/// holding objects), or None if it does not exist.
pub(super) async fn created(objects: &Objects, bucket: &str) -> Result<Option<u64>, S3Error> {
    match objects.get(&marker(bucket).storage_key(), None, true).await {
        Ok(start) => return Ok(Some(start.meta.created_ms)),
        Err(crate::service::Error::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    Ok((!holds_nothing(objects, bucket).await?).then_some(0))
}

/// Whether the bucket holds no object.
async fn holds_nothing(objects: &Objects, bucket: &str) -> Result<bool, S3Error> {
    let req = ListRequest {
        bucket: bucket.to_string(),
        prefix: Vec::new(),
        delimiter: None,
        from: Vec::new(),
        limit: 1,
    };
    Ok(objects.list(&req).await?.objects.is_empty())
}

fn empty(status: StatusCode) -> hyper::http::response::Builder {
    Response::builder().status(status).header(header::SERVER, SERVER)
}

/// CreateBucket (a location constraint in the body is ignored: one region).
pub(super) async fn create(objects: &Objects, r: &S3Request<'_>) -> Result<Response<RespBody>, S3Error> {
    if created(objects, r.bucket).await?.is_some() {
        return Err(S3Error::new(
            StatusCode::CONFLICT,
            "BucketAlreadyOwnedByYou",
            "Your previous request to create the named bucket succeeded and you already own it.",
        ));
    }
    let copies = super::write::copies(objects, r.headers)?;
    let put =
        PutRequest { name: marker(r.bucket), len: 0, attrs: Default::default(), checks: Vec::new(), copies };
    let written = objects.put(put, NoBody).await?;
    Ok(empty(StatusCode::OK)
        .header(header::LOCATION, format!("/{}", r.bucket))
        .header("x-podstore-copies-written", written.copies)
        .header(header::CONTENT_LENGTH, 0)
        .body(RespBody::Empty)
        .expect("valid headers"))
}

/// HeadBucket: 200 if the bucket exists, else 404.
pub(super) async fn head(objects: &Objects, r: &S3Request<'_>) -> Result<Response<RespBody>, S3Error> {
    match created(objects, r.bucket).await? {
        Some(_) => Ok(empty(StatusCode::OK)
            .header("x-amz-bucket-region", super::REGION)
            .header(header::CONTENT_LENGTH, 0)
            .body(RespBody::Empty)
            .expect("valid headers")),
        None => Err(no_such_bucket()),
    }
}

/// DeleteBucket: only an empty bucket (`BucketNotEmpty` otherwise).
pub(super) async fn delete(objects: &Objects, r: &S3Request<'_>) -> Result<Response<RespBody>, S3Error> {
    if created(objects, r.bucket).await?.is_none() {
        return Err(no_such_bucket());
    }
    if !holds_nothing(objects, r.bucket).await? {
        return Err(S3Error::new(
            StatusCode::CONFLICT,
            "BucketNotEmpty",
            "The bucket you tried to delete is not empty",
        ));
    }
    let want = super::write::copies(objects, r.headers)?;
    let written = objects.delete(&marker(r.bucket), want).await?;
    Ok(empty(StatusCode::NO_CONTENT)
        .header("x-podstore-copies-written", written.copies)
        .body(RespBody::Empty)
        .expect("valid headers"))
}

/// ListBuckets: every bucket (created, or holding an object), those the signing key may use,
/// with the time it was created (the epoch for a bucket the native API made by writing).
pub(super) async fn list(objects: &Objects, signer: Option<&str>) -> Result<Response<RespBody>, S3Error> {
    let auth = objects.shared.auth.load();
    let names = objects.buckets(BUCKETS_MAX).await?;
    let mut x = String::from(
        "<ListAllMyBucketsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Owner><ID>podstore</ID><DisplayName>podstore</DisplayName></Owner><Buckets>",
    );
    for b in names {
        let allowed = match (auth.as_deref(), signer) {
            (Some(a), Some(id)) => a.allows(id, &b, true).is_ok(),
            _ => true,
        };
        if allowed {
            let at = match objects.get(&marker(&b).storage_key(), None, true).await {
                Ok(start) => start.meta.created_ms,
                Err(_) => 0,
            };
            x.push_str(&format!(
                "<Bucket><Name>{b}</Name><CreationDate>{}</CreationDate></Bucket>",
                crate::units::iso8601_ms(at)
            ));
        }
    }
    x.push_str("</Buckets></ListAllMyBucketsResult>");
    Ok(xml(x))
}

/// The empty body of a record with no data (a bucket's, an open upload's).
pub(super) struct NoBody;

impl crate::service::BodySource for NoBody {
    async fn next(&mut self) -> Option<Result<bytes::Bytes, String>> {
        None
    }
}
