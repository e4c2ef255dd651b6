//! ListObjectsV2, ListObjects (v1) and ListObjectVersions over the node's listing
//! (`crate::list`): the same keys in the same byte order as `GET /{bucket}`, rendered as S3's
//! `ListBucketResult`, or `ListVersionsResult` where each object is its one version, `null`
//! (buckets are not versioned; tools that empty a bucket list its versions).

use base64::Engine as _;
use hyper::Response;
use quick_xml::escape::escape;

use super::error::S3Error;
use super::{object::etag, xml, S3Request};
use crate::body::RespBody;
use crate::list::{ListRequest, LIST_LIMIT_MAX};
use crate::service::Objects;

/// How names appear in the answer: as they are, or URL-encoded (`encoding-type=url`, which
/// the AWS CLI asks for).
fn name_text(b: &[u8], url: bool) -> String {
    if url {
        let mut s = String::new();
        super::sigv4::uri_encode(b, true, &mut s);
        s
    } else {
        escape(String::from_utf8_lossy(b).as_ref()).into_owned()
    }
}

/// Text a key may hold, checked as the native API checks it.
fn key_param(v: Option<&str>, what: &str) -> Result<Vec<u8>, S3Error> {
    let v = v.unwrap_or("");
    if v.len() > crate::names::KEY_BYTES_MAX || v.chars().any(char::is_control) {
        return Err(S3Error::invalid_argument(format!("{what} is not a possible key")));
    }
    Ok(v.as_bytes().to_vec())
}

/// GET /bucket: ListObjectsV2 (`list-type=2`) or ListObjects.
pub(super) async fn list_objects(
    objects: &Objects,
    r: &S3Request<'_>,
) -> Result<Response<RespBody>, S3Error> {
    let versions = r.has("versions");
    let v2 = !versions && r.param("list-type") == Some("2");
    if versions && r.param("version-id-marker").is_some_and(|v| !v.is_empty() && v != "null") {
        return Err(S3Error::invalid_argument(
            "A version-id marker cannot be specified without a key marker.",
        ));
    }
    let url = match r.param("encoding-type") {
        None => false,
        Some("url") => true,
        Some(_) => return Err(S3Error::invalid_argument("Invalid Encoding Method specified in Request")),
    };
    let max_keys = match r.param("max-keys") {
        None => LIST_LIMIT_MAX,
        Some(m) => m
            .parse::<usize>()
            .map_err(|_| S3Error::invalid_argument("max-keys must be a number"))?
            .min(LIST_LIMIT_MAX),
    };
    let prefix = key_param(r.param("prefix"), "prefix")?;
    let delimiter = key_param(r.param("delimiter"), "delimiter")?;
    let delimiter = (!delimiter.is_empty()).then_some(delimiter);
    // Where to start: v2's continuation token (ours), else start-after; v1's marker.
    let mut from = Vec::new();
    let marker = match (versions, v2) {
        (true, _) => r.param("key-marker"),
        (false, true) => r.param("start-after"),
        (false, false) => r.param("marker"),
    };
    if let Some(m) = marker.filter(|m| !m.is_empty()) {
        let m = key_param(Some(m), "marker")?;
        // A marker that is a common prefix (it ends with the delimiter) skips all under it.
        from = match &delimiter {
            Some(d) if m.ends_with(d) && m.len() > prefix.len() => crate::list::prefix_end(&m)
                .map_or_else(|| podstore_engine::names::successor(&m).into(), Vec::from),
            _ => podstore_engine::names::successor(&m).into(),
        };
    }
    let token = r.param("continuation-token");
    if v2 {
        if let Some(t) = token {
            let t = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .map_err(|_| S3Error::invalid_argument("The continuation token provided is incorrect"))?;
            from = from.max(t);
        }
    }
    let page = if max_keys == 0 {
        crate::list::ListPage::default()
    } else {
        let req = ListRequest {
            bucket: r.bucket.to_string(),
            prefix: prefix.clone(),
            delimiter: delimiter.clone(),
            from,
            limit: max_keys,
        };
        objects.list(&req).await?
    };
    if page.objects.is_empty()
        && page.prefixes.is_empty()
        && super::bucket::created(objects, r.bucket).await?.is_none()
    {
        return Err(super::bucket::no_such_bucket());
    }
    let mut x = String::with_capacity(256 + page.objects.len() * 256);
    let root = if versions { "ListVersionsResult" } else { "ListBucketResult" };
    x.push_str(&format!("<{root} xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"));
    x.push_str(&format!("<Name>{}</Name><Prefix>{}</Prefix>", r.bucket, name_text(&prefix, url)));
    if v2 {
        x.push_str(&format!("<KeyCount>{}</KeyCount>", page.objects.len() + page.prefixes.len()));
        if let Some(t) = token {
            x.push_str(&format!("<ContinuationToken>{}</ContinuationToken>", escape(t)));
        }
        if let Some(n) = &page.next {
            let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n);
            x.push_str(&format!("<NextContinuationToken>{t}</NextContinuationToken>"));
        }
        if let Some(s) = r.param("start-after") {
            x.push_str(&format!("<StartAfter>{}</StartAfter>", name_text(s.as_bytes(), url)));
        }
    } else {
        let (this, next) = if versions { ("KeyMarker", "NextKeyMarker") } else { ("Marker", "NextMarker") };
        x.push_str(&format!("<{this}>{}</{this}>", name_text(marker.unwrap_or("").as_bytes(), url)));
        if versions {
            x.push_str(&format!(
                "<VersionIdMarker>{}</VersionIdMarker>",
                escape(r.param("version-id-marker").unwrap_or(""))
            ));
        }
        if page.next.is_some() {
            // The last key or common prefix of this page: the next page's marker.
            let last = match (page.objects.last(), page.prefixes.last()) {
                (Some(o), Some(p)) => std::cmp::max(&o.key, p),
                (Some(o), None) => &o.key,
                (None, Some(p)) => p,
                (None, None) => &prefix,
            };
            x.push_str(&format!("<{next}>{}</{next}>", name_text(last, url)));
            if versions {
                x.push_str("<NextVersionIdMarker>null</NextVersionIdMarker>");
            }
        }
    }
    x.push_str(&format!("<MaxKeys>{max_keys}</MaxKeys>"));
    if let Some(d) = &delimiter {
        x.push_str(&format!("<Delimiter>{}</Delimiter>", name_text(d, url)));
    }
    if url {
        x.push_str("<EncodingType>url</EncodingType>");
    }
    x.push_str(&format!("<IsTruncated>{}</IsTruncated>", page.next.is_some()));
    let owner = !v2 || r.param("fetch-owner") == Some("true");
    let (entry, version) = if versions {
        ("Version", "<VersionId>null</VersionId><IsLatest>true</IsLatest>")
    } else {
        ("Contents", "")
    };
    for o in &page.objects {
        x.push_str(&format!(
            "<{entry}><Key>{}</Key>{version}<LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size>{}\
             <StorageClass>STANDARD</StorageClass></{entry}>",
            name_text(&o.key, url),
            crate::units::iso8601_ms(o.name.created_ms),
            escape(etag(&o.name.digest, o.name.digest_kind, o.name.parts)),
            o.name.object_len,
            if owner { "<Owner><ID>podstore</ID><DisplayName>podstore</DisplayName></Owner>" } else { "" },
        ));
    }
    for p in &page.prefixes {
        x.push_str(&format!("<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>", name_text(p, url)));
    }
    x.push_str(&format!("</{root}>"));
    Ok(xml(x))
}
