//! The catalog's error type.

use larch_engine::ErrorCode;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a catalog operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is invalid; `field` names it as the client wrote it.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The offending field, e.g. `dimension`.
        field: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// No index has this name.
    #[error("index '{0}' not found")]
    NotFound(String),
    /// An index with this name exists already.
    #[error("index '{0}' already exists")]
    AlreadyExists(String),
    /// The index exists but the operation is not allowed in its current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Every data-plane port of the configured range is taken.
    #[error("no free data-plane port in {0}: delete an index or widen --data-ports")]
    NoFreePort(String),
    /// The catalog file could not be read or written.
    #[error("catalog storage: {0}")]
    Storage(String),
    /// The data plane could not open or drop the index.
    #[error("data plane: {0}")]
    DataPlane(String),
    /// The data plane did not answer in time or could not be reached; nothing was changed.
    #[error("data plane unavailable, retry later: {0}")]
    DataPlaneUnavailable(String),
}

impl Error {
    /// The transport-neutral class of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Error::NoFreePort(_) => ErrorCode::ResourceExhausted,
            Error::Storage(_) => ErrorCode::Unavailable,
            Error::DataPlane(_) => ErrorCode::Internal,
            Error::DataPlaneUnavailable(_) => ErrorCode::Unavailable,
        }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field,
            message: message.into(),
        }
    }
}
