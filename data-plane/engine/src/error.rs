//! The crate's error type and its class in the shared vocabulary ([`larch_model::Code`]).
//!
//! [`Error`] implements [`larch_model::Classified`]; the transports map it to their own
//! statuses in one place each (`larch_model::wire`) and never inspect messages.

use std::{io, path::PathBuf};

/// Shorthand for results whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The engine's name for [`larch_model::Code`], the error vocabulary every crate shares (kept
/// so code written against the engine's own class compiles unchanged).
pub use larch_model::Code as ErrorCode;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is invalid; `field` is the path as the client wrote it, e.g. `vectors[3].values`.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// Path of the offending field, e.g. `filter.genre.$in`.
        field: String,
        /// What is wrong with it, naming the limit where there is one.
        message: String,
    },
    /// The index, namespace or vector does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The index or namespace already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the current state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Internal state is unusable, e.g. a lock was poisoned by an earlier panic.
    #[error("{0}")]
    Internal(String),
    /// Storage refused an operation: disk full ([`ErrorCode::ResourceExhausted`]),
    /// a read-only or failing disk, or a write-ahead log that refuses writes
    /// after a failed fsync ([`ErrorCode::Unavailable`]). Reads keep working.
    #[error("{message}")]
    Storage {
        /// [`ErrorCode::ResourceExhausted`] or [`ErrorCode::Unavailable`].
        code: ErrorCode,
        /// What failed, for which index, and the operating system's reason.
        message: String,
    },
    /// Backpressure: the node cannot take this write now (memory budget reached, or flushes
    /// behind the writes); reads are still served. Nothing of the write was applied. The
    /// data plane also answers a key's query past its per-key cap with it.
    #[error("{message}")]
    Overloaded {
        /// What limit was hit and what frees it.
        message: String,
        /// How long the client should wait before retrying.
        retry_after: std::time::Duration,
    },
    /// Stored data is damaged or is not Larch's: recovery stops rather than
    /// serve partial data. The message is for operators, not clients.
    #[error("corrupt data in {}: at byte {offset}: {reason}", file.display())]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset in `file` where the damage starts.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
}

impl Error {
    /// The transport-neutral class of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Error::Internal(_) => ErrorCode::Internal,
            Error::Storage { code, .. } => *code,
            Error::Overloaded { .. } => ErrorCode::ResourceExhausted,
            Error::Corrupt { .. } => ErrorCode::Internal,
        }
    }

    /// How long the client should wait before retrying, for backpressure refusals
    /// ([`Error::Overloaded`]); transports send it as gRPC's `grpc-retry-pushback-ms` or
    /// HTTP's `Retry-After`.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Overloaded { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The offending field path of an [`Error::InvalidArgument`], for
    /// structured error details (e.g. gRPC `BadRequest`).
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::InvalidArgument { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Builds an [`Error::Storage`] from an IO error: `disk full: {what}: {err}`
    /// as [`ErrorCode::ResourceExhausted`] when the disk or quota is full,
    /// otherwise `{what}: {err}` as [`ErrorCode::Unavailable`].
    pub(crate) fn storage(what: impl std::fmt::Display, err: &io::Error) -> Self {
        let (code, message) = storage_failure(what, err);
        Error::Storage { code, message }
    }

    /// Builds an [`Error::Corrupt`].
    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::InvalidArgument`].
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl larch_model::Classified for Error {
    fn code(&self) -> ErrorCode {
        Error::code(self)
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        Error::retry_after(self)
    }

    fn field(&self) -> Option<&str> {
        Error::field(self)
    }
}

/// The code and message of an [`Error::Storage`] for `err` while doing `what`.
pub(crate) fn storage_failure(
    what: impl std::fmt::Display,
    err: &io::Error,
) -> (ErrorCode, String) {
    match ErrorCode::of_io(err) {
        ErrorCode::ResourceExhausted => (
            ErrorCode::ResourceExhausted,
            format!("disk full: {what}: {err}; free disk space and retry"),
        ),
        code => (code, format!("{what}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_displays_field_and_message() {
        let err = Error::invalid(
            "vectors[2].values",
            "has 3 values but the index dimension is 4",
        );
        assert_eq!(
            err.to_string(),
            "vectors[2].values: has 3 values but the index dimension is 4"
        );
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert_eq!(err.field(), Some("vectors[2].values"));
    }

    #[test]
    fn each_variant_has_its_code() {
        assert_eq!(Error::NotFound("x".into()).code(), ErrorCode::NotFound);
        assert_eq!(
            Error::AlreadyExists("x".into()).code(),
            ErrorCode::AlreadyExists
        );
        assert_eq!(
            Error::FailedPrecondition("x".into()).code(),
            ErrorCode::FailedPrecondition
        );
        assert_eq!(Error::Internal("x".into()).code(), ErrorCode::Internal);
        assert_eq!(Error::NotFound("x".into()).field(), None);
        let corrupt = Error::corrupt("/d/wal-000001.log", 42, "checksum mismatch");
        assert_eq!(corrupt.code(), ErrorCode::Internal);
        assert_eq!(
            corrupt.to_string(),
            "corrupt data in /d/wal-000001.log: at byte 42: checksum mismatch"
        );
    }

    #[test]
    fn storage_errors_tell_disk_full_from_unavailable() {
        let full = Error::storage(
            "cannot write the write-ahead log of index 'x'",
            &io::Error::from(io::ErrorKind::StorageFull),
        );
        assert_eq!(full.code(), ErrorCode::ResourceExhausted);
        assert!(
            full.to_string()
                .starts_with("disk full: cannot write the write-ahead log of index 'x': "),
            "{full}"
        );
        let read_only = Error::storage(
            "cannot write the write-ahead log of index 'x'",
            &io::Error::from(io::ErrorKind::ReadOnlyFilesystem),
        );
        assert_eq!(read_only.code(), ErrorCode::Unavailable);
        assert!(
            read_only
                .to_string()
                .starts_with("cannot write the write-ahead log of index 'x': "),
            "{read_only}"
        );
    }
}
