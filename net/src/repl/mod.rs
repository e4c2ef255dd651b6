//! Replication to peer appliances: the frame format, the authenticated handshake, outgoing
//! peer links and the receiving side.

pub mod anti_entropy;
pub mod auth;
pub mod catchup;
pub mod frame;
pub mod link;
pub mod server;
