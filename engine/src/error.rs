//! The engine's error type: what failed, on which shard, and why.

/// Errors of the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A disk operation failed.
    #[error("shard {shard}: {source}")]
    Disk {
        shard: u32,
        #[source]
        source: podstore_disks::Error,
    },
    /// The shard stopped taking writes after a failed write or fdatasync (DESIGN.md §4.5).
    #[error("shard {shard} is fenced read-only: {reason}")]
    Fenced { shard: u32, reason: String },
    /// A stored record failed its checks; it is not served.
    #[error("shard {shard}: record at blob {blob} offset {offset} is corrupt: {reason}")]
    Corrupt { shard: u32, blob: u32, offset: u64, reason: String },
    /// The key's newest record is quarantined (damaged, awaiting repair): no copy is served.
    #[error("shard {shard}: the object's newest record is quarantined awaiting repair")]
    Quarantined { shard: u32 },
    /// The object is larger than the configured maximum.
    #[error("object of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: u64, max: u64 },
    /// The key is empty or too long, or the content type too long.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The writer received a different number of bytes than announced.
    #[error("object body was {got} bytes, {expected} were announced")]
    BodyLength { expected: u64, got: u64 },
    /// Too much of the shard is reserved by writes whose bodies have not arrived: try later.
    #[error("shard {shard} is busy: {what}")]
    Busy { shard: u32, what: String },
    /// The shard's name index is out of service (damaged, rebuilt at the next start): the
    /// disk can't take part in listings.
    #[error("shard {shard} can't list: {reason}")]
    NamesUnavailable { shard: u32, reason: String },
    /// No room for the record on this shard.
    #[error("shard {shard} is full")]
    NoSpace { shard: u32 },
    /// A shard's files are inconsistent in a way recovery can't settle alone.
    #[error("shard {shard} is damaged: {reason}")]
    Damaged { shard: u32, reason: String },
    /// A background job was asked to stop.
    #[error("stopped")]
    Stopped,
    /// No shard can take the request.
    #[error("no shard available")]
    NoShard,
}

impl Error {
    /// Whether the error came from a simulated crash (tests stop the world on it).
    pub fn is_crash(&self) -> bool {
        matches!(self, Error::Disk { source: podstore_disks::Error::Crashed, .. })
    }

    /// The same error again, for each of several operations it stopped (errors carrying an OS
    /// error are not `Clone`: the copy keeps its code and text).
    pub(crate) fn again(&self) -> Error {
        use podstore_disks::Error as D;
        match self {
            Error::NoSpace { shard } => Error::NoSpace { shard: *shard },
            Error::Busy { shard, what } => Error::Busy { shard: *shard, what: what.clone() },
            Error::NamesUnavailable { shard, reason } => {
                Error::NamesUnavailable { shard: *shard, reason: reason.clone() }
            }
            Error::Fenced { shard, reason } => Error::Fenced { shard: *shard, reason: reason.clone() },
            Error::Disk { shard, source: D::Crashed } => Error::Disk { shard: *shard, source: D::Crashed },
            Error::Disk { shard, source: D::Io { op, path, offset, source } } => Error::Disk {
                shard: *shard,
                source: D::Io {
                    op: *op,
                    path: path.clone(),
                    offset: *offset,
                    source: match source.raw_os_error() {
                        Some(code) => std::io::Error::from_raw_os_error(code),
                        None => std::io::Error::new(source.kind(), source.to_string()),
                    },
                },
            },
            Error::Damaged { shard, reason } => Error::Damaged { shard: *shard, reason: reason.clone() },
            Error::Invalid(what) => Error::Invalid(what),
            Error::Stopped => Error::Stopped,
            Error::NoShard => Error::NoShard,
            Error::TooLarge { len, max } => Error::TooLarge { len: *len, max: *max },
            Error::BodyLength { expected, got } => Error::BodyLength { expected: *expected, got: *got },
            Error::Quarantined { shard } => Error::Quarantined { shard: *shard },
            Error::Corrupt { shard, blob, offset, reason } => {
                Error::Corrupt { shard: *shard, blob: *blob, offset: *offset, reason: reason.clone() }
            }
            Error::Disk { shard, source } => Error::Damaged { shard: *shard, reason: source.to_string() },
        }
    }
}

/// Result of the engine.
pub type Result<T> = std::result::Result<T, Error>;
