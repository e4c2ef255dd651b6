//! S3's errors: a code, a status and a message, answered as the XML document S3 clients parse
//! (`<Error><Code>...`), with the request's id.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use quick_xml::escape::escape;

use crate::body::{RespBody, SERVER};

/// One S3 error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl S3Error {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> S3Error {
        S3Error { status, code, message: message.into() }
    }

    pub fn access_denied(why: impl Into<String>) -> S3Error {
        S3Error::new(StatusCode::FORBIDDEN, "AccessDenied", why)
    }

    pub fn not_implemented(what: &str) -> S3Error {
        S3Error::new(StatusCode::NOT_IMPLEMENTED, "NotImplemented", format!("{what} is not implemented"))
    }

    /// A signature (of a request, a chunk, a trailer) that the access key's secret does not
    /// make.
    pub fn signature_mismatch() -> S3Error {
        S3Error::new(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    }

    /// An access key id the node does not have.
    pub fn unknown_access_key() -> S3Error {
        S3Error::new(
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        )
    }

    pub fn invalid_argument(why: impl Into<String>) -> S3Error {
        S3Error::new(StatusCode::BAD_REQUEST, "InvalidArgument", why)
    }

    /// The answer: the XML document (none for HEAD), `x-amz-request-id`.
    pub fn into_response(self, resource: &str, request_id: &str, head: bool) -> Response<RespBody> {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>\
             <Resource>{}</Resource><RequestId>{}</RequestId></Error>",
            self.code,
            escape(&self.message),
            escape(resource),
            request_id
        );
        let mut r = Response::builder()
            .status(self.status)
            .header(header::SERVER, SERVER)
            .header("x-amz-request-id", request_id)
            .header(header::CONTENT_TYPE, "application/xml")
            .header(header::CONTENT_LENGTH, body.len())
            .body(if head { RespBody::Empty } else { RespBody::full(body) })
            .expect("static headers are valid");
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        r
    }
}

impl From<crate::service::Error> for S3Error {
    fn from(e: crate::service::Error) -> S3Error {
        use crate::service::Error as E;
        let message = e.to_string();
        match e {
            E::NotFound => {
                S3Error::new(StatusCode::NOT_FOUND, "NoSuchKey", "The specified key does not exist.")
            }
            E::NotReady | E::Unavailable(_) | E::CopiesUnavailable { .. } => {
                S3Error::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message)
            }
            E::NoDisk => S3Error::new(StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage", message),
            E::BadDigest("x-amz-content-sha256") => S3Error::new(
                StatusCode::BAD_REQUEST,
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ),
            E::BadDigest(header) => S3Error::new(
                StatusCode::BAD_REQUEST,
                "BadDigest",
                format!("The {header} you specified did not match what we received."),
            ),
            E::IncompleteBody(_) => S3Error::new(StatusCode::BAD_REQUEST, "IncompleteBody", message),
            E::Damaged(_) => S3Error::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message),
            E::Engine(e) => match e {
                podstore_engine::Error::Invalid(_) => S3Error::invalid_argument(e.to_string()),
                podstore_engine::Error::TooLarge { .. } => {
                    S3Error::new(StatusCode::BAD_REQUEST, "EntityTooLarge", e.to_string())
                }
                podstore_engine::Error::NamesUnavailable { shard, .. } => S3Error::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    format!("disk {shard} can't take part in listings until the node restarts"),
                ),
                // Disk errors, damage awaiting repair: never a path or a detail of the disk.
                _ => S3Error::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "a disk error; try again",
                ),
            },
        }
    }
}
