//! The network layer: HTTP data and admin APIs and replication (issues 3 and 4). Empty until the node lands.
#![forbid(unsafe_code)]
