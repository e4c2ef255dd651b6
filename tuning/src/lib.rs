//! Host checks and disk measurement (issue 5). Empty until that issue lands.
#![forbid(unsafe_code)]
