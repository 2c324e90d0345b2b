//! The engine's error type. Every variant carries the data a caller needs to
//! act on it; client mistakes (bad timestamps, sizes, schemas) are told
//! apart from faults of the medium (`Io`, `Corrupted`).

use std::io;
use std::path::PathBuf;

use super::schema::SchemaError;

/// Result of a store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration asked for is not valid.
    #[error("invalid store configuration: {reason}")]
    InvalidConfig { reason: String },
    /// The store name is not usable as a directory name.
    #[error("invalid store name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// A store already exists at this path.
    #[error("store already exists: {}", path.display())]
    AlreadyExists { path: PathBuf },
    /// No store exists at this path.
    #[error("store not found: {}", path.display())]
    NotFound { path: PathBuf },
    /// Timestamps are positive Unix nanoseconds.
    #[error("invalid timestamp {timestamp}: timestamps must be positive Unix nanoseconds")]
    InvalidTimestamp { timestamp: i64 },
    /// Timestamps must strictly increase.
    #[error("timestamp out of order: {timestamp} is not after the newest timestamp {newest}")]
    TimestampOutOfOrder { timestamp: i64, newest: i64 },
    /// The object cannot fit in the store even when it is empty.
    #[error(
        "object of {size} bytes is too large: the store holds at most {max} bytes in one object"
    )]
    ObjectTooLarge { size: u64, max: u64 },
    /// No live object has this timestamp.
    #[error("timestamp not found: {timestamp}")]
    TimestampNotFound { timestamp: i64 },
    /// The handle does not name a live object (overwritten, deleted or never valid).
    #[error("object not found")]
    ObjectNotFound,
    /// A time range whose start is after its end.
    #[error("invalid time range: start {start} is after end {end}")]
    InvalidRange { start: i64, end: i64 },
    /// The operation needs another data type.
    #[error("operation needs a {expected} store, this store holds {actual}")]
    WrongDataType {
        expected: &'static str,
        actual: &'static str,
    },
    /// Data that is not valid for the store's data type.
    #[error("invalid data: {reason}")]
    InvalidData { reason: String },
    /// A schema error (schema stores).
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// On-disk state that fails validation and cannot be recovered around.
    #[error("store is corrupted{}: {reason}", block.map(|b| format!(" at block {b}")).unwrap_or_default())]
    Corrupted { block: Option<u32>, reason: String },
    /// The store was closed.
    #[error("store is closed")]
    Closed,
    /// An earlier write or sync failed; the store refuses further writes so
    /// that nothing acknowledged is silently lost. Reopen it.
    #[error("store is read-only after an I/O failure: {reason}")]
    Poisoned { reason: String },
    /// The operating system reported an I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    pub(crate) fn corrupted(block: Option<u32>, reason: impl Into<String>) -> Error {
        Error::Corrupted {
            block,
            reason: reason.into(),
        }
    }

    /// True for errors caused by the caller's input rather than the store
    /// or the machine (the server maps these to 4xx).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Error::InvalidConfig { .. }
                | Error::InvalidName { .. }
                | Error::AlreadyExists { .. }
                | Error::NotFound { .. }
                | Error::InvalidTimestamp { .. }
                | Error::TimestampOutOfOrder { .. }
                | Error::ObjectTooLarge { .. }
                | Error::TimestampNotFound { .. }
                | Error::ObjectNotFound
                | Error::InvalidRange { .. }
                | Error::WrongDataType { .. }
                | Error::InvalidData { .. }
                | Error::Schema(_)
        )
    }
}
