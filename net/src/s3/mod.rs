//! The S3 front end (API.md "S3"): its own listener over the same object service as the
//! native API. So far: request signatures (`sigv4.rs`); the listener, the operations and the
//! XML come next (issue 23).

pub mod sigv4;
