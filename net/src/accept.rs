//! The accept loop every listener of the node runs (data, admin, replication).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;

/// Accepts connections on `listener` and hands each to `on` until `shutdown` changes. A failed
/// accept (EMFILE and friends) is logged and retried after a short pause instead of spinning.
/// `what` names the listener in the log.
pub async fn accept_each(
    what: &str,
    listener: std::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
    mut on: impl FnMut(TcpStream, SocketAddr),
) {
    let listener =
        match listener.set_nonblocking(true).and_then(|_| tokio::net::TcpListener::from_std(listener)) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{what} listener: {e}");
                return;
            }
        };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, from)) => on(stream, from),
            Err(e) => {
                tracing::warn!("{what} accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
