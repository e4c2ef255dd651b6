//! The admin port: `/metrics` (Prometheus text), `/health`, `/ready`, and the `/admin/...`
//! views and actions (docs/api.md lists them). It runs on its own thread, asks the cores for
//! their shards' stats by message, and never touches the data path.
//!
//! [`ROUTES`] is the one list of endpoints: the router, the `405` answer's `Allow` header and
//! its message are made from it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::body::{RespBody, SERVER};
use crate::msg::JobKind;
use crate::shared::Shared;

mod actions;
mod metrics;
mod views;

pub use metrics::{all_stats, describe_metrics, render_metrics};

/// What an endpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Metrics,
    Health,
    Ready,
    Disks,
    Peers,
    Jobs,
    Tiers,
    AddDisk,
    Drain,
    Recover,
    Job(JobKind),
}

/// Every endpoint of the admin port: method, path, what it does.
const ROUTES: &[(&str, &str, Endpoint)] = &[
    ("GET", "/metrics", Endpoint::Metrics),
    ("GET", "/health", Endpoint::Health),
    ("GET", "/ready", Endpoint::Ready),
    ("GET", "/admin/disks", Endpoint::Disks),
    ("GET", "/admin/peers", Endpoint::Peers),
    ("GET", "/admin/jobs", Endpoint::Jobs),
    ("GET", "/admin/tiers", Endpoint::Tiers),
    ("POST", "/admin/disks", Endpoint::AddDisk),
    ("POST", "/admin/drain", Endpoint::Drain),
    ("POST", "/admin/recover", Endpoint::Recover),
    ("POST", "/admin/compact", Endpoint::Job(JobKind::Compact)),
    ("POST", "/admin/scrub", Endpoint::Job(JobKind::Scrub)),
    ("POST", "/admin/migrate", Endpoint::Job(JobKind::Migrate)),
];

pub(crate) fn reply(status: StatusCode, ctype: &'static str, body: String) -> Response<RespBody> {
    Response::builder()
        .status(status)
        .header(header::SERVER, SERVER)
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CONTENT_LENGTH, body.len())
        .body(RespBody::full(body))
        .expect("static headers are valid")
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response<RespBody> {
    reply(status, "application/json", serde_json::json!({"error": code, "message": message}).to_string())
}

/// The endpoint for a request: `404` for a path the port does not have, `405` (with `Allow`)
/// for a method the path does not take.
fn route(method: &str, path: &str) -> Result<Endpoint, Box<Response<RespBody>>> {
    let at_path: Vec<_> = ROUTES.iter().filter(|r| r.1 == path).collect();
    if at_path.is_empty() {
        return Err(Box::new(error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")));
    }
    // HEAD is GET without a body (hyper leaves the body out).
    let method = if method == "HEAD" { "GET" } else { method };
    if let Some(r) = at_path.iter().find(|r| r.0 == method) {
        return Ok(r.2);
    }
    let allow: Vec<&str> = at_path.iter().map(|r| r.0).collect();
    let posts: Vec<&str> = ROUTES.iter().filter(|r| r.0 == "POST").map(|r| r.1).collect();
    let msg = format!(
        "{path} takes {}; the admin API is read-only but for POST to {}",
        allow.join(", "),
        posts.join(", ")
    );
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", &msg);
    if let Ok(v) = header::HeaderValue::from_str(&allow.join(", ")) {
        r.headers_mut().insert(header::ALLOW, v);
    }
    Err(Box::new(r))
}

async fn handle(shared: Arc<Shared>, handle: PrometheusHandle, req: Request<Incoming>) -> Response<RespBody> {
    let endpoint = match route(req.method().as_str(), req.uri().path()) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    let q = req.uri().query().unwrap_or("");
    let json = |body: String| reply(StatusCode::OK, "application/json", body);
    match endpoint {
        Endpoint::Metrics => {
            reply(StatusCode::OK, "text/plain; version=0.0.4", render_metrics(&shared, &handle).await)
        }
        Endpoint::Health => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        Endpoint::Ready
            if shared.ready.load(Ordering::Relaxed) && !shared.draining.load(Ordering::Relaxed) =>
        {
            reply(StatusCode::OK, "text/plain", "ready\n".into())
        }
        Endpoint::Ready => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n".into()),
        Endpoint::Disks => json(views::disks_json(&shared).await),
        Endpoint::Peers => json(views::peers_json(&shared).await),
        Endpoint::Jobs => json(views::jobs_json(&shared).await),
        Endpoint::Tiers => json(views::tiers_json(&shared).await),
        Endpoint::AddDisk => actions::add_disk(&shared, q).await,
        Endpoint::Drain => actions::start_drain(&shared, q).await,
        Endpoint::Recover => actions::start_recover(&shared, q),
        Endpoint::Job(kind) => actions::job_request(&shared, kind, q).await,
    }
}

/// Serves the admin port until shutdown.
pub async fn serve(
    shared: Arc<Shared>,
    handle: PrometheusHandle,
    listener: std::net::TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    crate::accept::accept_each("admin", listener, shutdown, |stream, _from| {
        let (shared, handle) = (shared.clone(), handle.clone());
        tokio::task::spawn_local(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (shared, handle) = (shared.clone(), handle.clone());
                async move { Ok::<_, std::convert::Infallible>(self::handle(shared, handle, req).await) }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
            let _ = b.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
        });
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_answers_from_the_one_table() {
        assert_eq!(route("GET", "/admin/disks").ok(), Some(Endpoint::Disks));
        assert_eq!(route("POST", "/admin/disks").ok(), Some(Endpoint::AddDisk));
        assert_eq!(route("POST", "/admin/migrate").ok(), Some(Endpoint::Job(JobKind::Migrate)));
        assert_eq!(route("HEAD", "/metrics").ok(), Some(Endpoint::Metrics));
        let nf = route("GET", "/nope").expect_err("404");
        assert_eq!(nf.status(), StatusCode::NOT_FOUND);
        let na = route("DELETE", "/admin/jobs").expect_err("405");
        assert_eq!(na.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(na.headers()[header::ALLOW], "GET");
        let na = route("GET", "/admin/recover").expect_err("405");
        assert_eq!(na.headers()[header::ALLOW], "POST");
    }
}
