//! The replication protocol and this node's side of it toward each peer: the frame format, the
//! authenticated handshake, outgoing peer links (and the stored writes sent over them), and
//! the per-peer progress the node reports. What uses it (the receiver, catch-up,
//! anti-entropy, the object service's copies) lives above, in `repl/` and `service`.

pub mod auth;
pub mod frame;
pub mod link;
pub mod progress;
