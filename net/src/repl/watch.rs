//! This node's watch over its peers (core 0): once the node is ready it tells every peer it is
//! up (a peer holding a backlog for it resumes its catch-up at once instead of at the end of
//! its back-off), then keeps a connection open to each: whether it has one is whether the
//! peer is reachable now (`Shared::peer_up`, `podstore_repl_peer_up`).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::peer::link::Links;
use crate::shared::Shared;

/// How often the node checks that it holds a connection to every peer (and opens one if not).
const PEER_WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Longest pause between dials of a peer that can't be reached.
const PEER_DIAL_PAUSE_MAX: Duration = Duration::from_secs(8);

/// Runs until the task is aborted.
pub async fn run(shared: Arc<Shared>, links: Rc<Links>) {
    while !shared.ready.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A peer that can't be reached is dialled again after 1, 2, 4... seconds, at most
    // PEER_DIAL_PAUSE_MAX apart (a peer refusing our handshake logs each attempt).
    let n = links.peers.len();
    let (mut next_dial, mut pause) = (vec![Instant::now(); n], vec![PEER_WATCH_INTERVAL; n]);
    loop {
        for (i, l) in links.peers.iter().enumerate() {
            let up = l.reachable();
            if let Some(flag) = shared.peer_up.get(i) {
                flag.store(up, Ordering::Relaxed);
            }
            if up {
                pause[i] = PEER_WATCH_INTERVAL;
                continue;
            }
            if Instant::now() < next_dial[i] {
                continue;
            }
            next_dial[i] = Instant::now() + pause[i];
            pause[i] = (pause[i] * 2).min(PEER_DIAL_PAUSE_MAX);
            // (each on its own: a peer whose packets are dropped holds up only its own
            // dial)
            let l = l.clone();
            tokio::task::spawn_local(async move { l.announce().await });
        }
        tokio::time::sleep(PEER_WATCH_INTERVAL).await;
    }
}
