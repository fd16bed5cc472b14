//! The crate's one error type.
//!
//! No variant carries key material: a presented or configured key is never part of an
//! error message, so errors can be logged and returned to callers as they are. The
//! mapping to gRPC statuses lives in [`crate::grpc`] (one exhaustive `match`).

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while checking or storing API keys.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request carried no API key (or an empty one).
    #[error("missing api key")]
    MissingKey,

    /// The presented key is unknown, revoked or wrong. Deliberately says nothing about
    /// *why*, so a caller cannot probe which key ids exist.
    #[error("invalid api key")]
    InvalidKey,

    /// A string is not an API key of the expected shape; the reason names the rule
    /// that failed, never the string itself.
    #[error("malformed api key: {0}")]
    Malformed(&'static str),

    /// A role name that is not one of Pinecone's role names.
    #[error(
        "unknown role '{0}': expected one of ProjectEditor, ProjectViewer, ControlPlaneEditor, ControlPlaneViewer, DataPlaneEditor, DataPlaneViewer"
    )]
    UnknownRole(String),

    /// Reading or writing a key file failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What we were doing, e.g. "read" or "rename into place".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A key file exists but cannot be understood. Nothing is overwritten in that case:
    /// the operator decides whether to delete it or to configure a key explicitly.
    #[error("key file {} is not valid: {reason}", path.display())]
    InvalidKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (key files hold hashes only, so this is safe to show).
        reason: String,
    },
}

impl Error {
    /// Builds a closure for `map_err` that wraps an [`std::io::Error`] with its context.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
