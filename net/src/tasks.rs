//! What runs on each core beside its runtime (`core.rs`): the front ends, which take requests
//! and hand them to the object service (the HTTP data API, the replication receiver), and
//! replication's background tasks (catch-up, repair from peers, the watch over the peers,
//! anti-entropy). The node (node.rs) hands these to every core it starts; the runtime knows
//! them only as tasks to start and stop.

use std::rc::Rc;
use std::time::Duration;

use crate::core::{CoreCtx, Spawn};
use crate::service::Objects;

/// The longest a core waits at shutdown for its open HTTP connections to finish their
/// requests.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// The object service of a core.
fn objects(ctx: &CoreCtx) -> Rc<Objects> {
    Rc::new(Objects::new(ctx.shared.clone(), ctx.links.clone(), ctx.index, ctx.shards.clone()))
}

/// The front ends of one core: HTTP on its data-port socket, S3 on its S3-port socket (when
/// one is configured), and the replication receiver on its replication-port socket (when
/// replication is configured). Each ends at shutdown; HTTP then drains its connections.
pub fn serve(
    listener: std::net::TcpListener,
    s3_listener: Option<std::net::TcpListener>,
    repl_listener: Option<std::net::TcpListener>,
) -> Spawn {
    Box::new(move |ctx: &CoreCtx| {
        let objects = objects(ctx);
        let mut tasks = Vec::new();
        let fronts = [(Some(listener), crate::http::Front::Data), (s3_listener, crate::http::Front::S3)];
        for (listener, front) in fronts {
            let Some(listener) = listener else { continue };
            let conns = Rc::new(crate::http::Connections::default());
            let accept = crate::http::accept_loop(
                ctx.index,
                ctx.shared.clone(),
                listener,
                ctx.shutdown.clone(),
                conns.clone(),
                objects.clone(),
                front,
            );
            tasks.push(tokio::task::spawn_local(async move {
                accept.await;
                conns.drain(DRAIN_GRACE).await;
            }));
        }
        if let Some(l) = repl_listener {
            let server = crate::repl::server::accept_loop(ctx.index, objects, l, ctx.shutdown.clone());
            tasks.push(tokio::task::spawn_local(server));
        }
        tasks
    })
}

/// Replication's tasks on one core: catch-up toward each peer and repair of this core's
/// damaged records; on core 0 also the watch over the peers, the anti-entropy passes (which
/// reach every core through its inbox) and the multipart sweep (`sweep.rs`).
pub fn background() -> Spawn {
    Box::new(|ctx: &CoreCtx| {
        let (shared, shards, links) = (&ctx.shared, &ctx.shards, &ctx.links);
        let mut tasks = vec![tokio::task::spawn_local(crate::repl::repair::repair(
            shared.clone(),
            shards.clone(),
            links.clone(),
        ))];
        for (i, l) in links.peers.iter().enumerate() {
            let run = crate::repl::catchup::run(shared.clone(), shards.clone(), l.clone(), i);
            tasks.push(tokio::task::spawn_local(run));
        }
        if ctx.index == 0 {
            tasks.push(tokio::task::spawn_local(crate::repl::watch::run(shared.clone(), links.clone())));
            let objects = objects(ctx);
            tasks.push(tokio::task::spawn_local(crate::sweep::run(objects.clone())));
            for i in 0..links.peers.len() {
                tasks.push(tokio::task::spawn_local(crate::repl::anti_entropy::run(objects.clone(), i)));
            }
        }
        tasks
    })
}
