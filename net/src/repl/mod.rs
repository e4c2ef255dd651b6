//! Replication's work on this node's objects: the receiving side (`server`), catch-up of the
//! peers' backlogs (`catchup`) and anti-entropy passes (`anti_entropy`). The protocol and the
//! links to peers are in `peer/`.

pub mod anti_entropy;
pub mod catchup;
pub mod repair;
pub mod server;
pub mod watch;
