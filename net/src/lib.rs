//! podstore's network layer: the HTTP data API, the admin API and `/metrics`, the node's
//! cores and their messages, and replication to peer appliances. The `podstore` binary is `main.rs`.
#![forbid(unsafe_code)]

pub mod accept;
pub mod admin;
pub mod answer;
pub mod auth;
pub mod body;
pub mod checks;
pub mod client;
pub mod config;
pub mod core;
pub mod http;
pub mod list;
pub mod maintenance;
pub mod manifest;
pub mod msg;
pub mod names;
pub mod node;
pub mod peer;

mod parse_error;
mod prepare;
pub mod profile;
pub mod range;
pub mod reload;
pub mod repl;
pub mod s3;
pub mod service;
pub mod shared;
pub mod sweep;
pub mod tasks;
pub mod units;
