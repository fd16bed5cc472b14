//! The crate's one error type.
//!
//! No variant carries key material: a presented or configured key is never part of an
//! error message, so errors can be logged and returned to callers as they are. The
//! mapping to gRPC statuses lives in [`crate::grpc`] (one exhaustive `match`).

use std::fmt;
use std::path::PathBuf;

use larch_model::{Classified, Code};

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

    /// The key was valid but its `expires_at` has passed. Only said to a caller who holds
    /// the whole key, so it reveals nothing to a guesser.
    #[error("api key expired at {0}; ask an admin for a new one")]
    ExpiredKey(crate::Timestamp),

    /// The key is valid but may not do this (role or index allow-list).
    #[error("{0}")]
    Denied(#[from] crate::Denied),

    /// The index is not one of the key's project; said exactly as for an index that does
    /// not exist, so names do not leak across projects.
    #[error("index '{0}' not found")]
    IndexNotFound(String),

    /// The key sent more requests than its rate limit allows.
    #[error(
        "rate limit exceeded: API key {key_id} may send {per_second} requests per second; retry in {} ms",
        retry_after.as_millis()
    )]
    RateLimited {
        /// The key (its id, not secret).
        key_id: String,
        /// The configured limit.
        per_second: u32,
        /// When a request will be accepted again.
        retry_after: std::time::Duration,
    },

    /// A key or project named in an admin request does not exist.
    #[error("{what} '{id}' not found")]
    NotFound {
        /// "api key" or "project".
        what: &'static str,
        /// The id asked for.
        id: String,
    },

    /// A project with this name exists already.
    #[error("{what} '{name}' already exists")]
    AlreadyExists {
        /// "project".
        what: &'static str,
        /// The name asked for.
        name: String,
    },

    /// A field of an admin request is not acceptable; the reason says what would be.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, e.g. `expires_at`.
        field: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },

    /// The request is well-formed but the current state forbids it (e.g. deleting a project
    /// that still has indexes).
    #[error("{0}")]
    FailedPrecondition(String),

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

    /// The access state shared by several control-plane replicas cannot be read or written
    /// now (the store's message says why), or the outcome of a change is unknown (see
    /// [`larch_state::Error::Unknown`]). Retrying later may succeed.
    #[error(transparent)]
    SharedState(#[from] larch_state::Error),

    /// Other control-plane replicas changed the shared access state first every time this
    /// one tried to make a change; nothing was changed, so retrying is safe.
    #[error(
        "access state not changed: other control-plane replicas changed it first {attempts} times in a row; retry"
    )]
    Contended {
        /// How many times the change was tried.
        attempts: u32,
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

impl Classified for Error {
    fn code(&self) -> Code {
        match self {
            Error::MissingKey | Error::InvalidKey | Error::Malformed(_) | Error::ExpiredKey(_) => {
                Code::Unauthenticated
            }
            Error::Denied(_) => Code::PermissionDenied,
            Error::IndexNotFound(_) | Error::NotFound { .. } => Code::NotFound,
            Error::RateLimited { .. } => Code::ResourceExhausted,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::Invalid { .. } | Error::UnknownRole(_) => Code::InvalidArgument,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::SharedState(err) => err.code(),
            Error::Contended { .. } => Code::Unavailable,
            // A full disk is the operator's to fix and the client's to retry; any other
            // failure of the access file is the server's.
            Error::Io { source, .. } => match Code::of_io(source) {
                Code::ResourceExhausted => Code::ResourceExhausted,
                _ => Code::Internal,
            },
            Error::InvalidKeyFile { .. } => Code::Internal,
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            Error::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl Error {
    /// The gRPC code name of the status this error becomes (`UNAUTHENTICATED`, …), for logs.
    pub fn code_name(&self) -> &'static str {
        self.code().name()
    }

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

/// An [`Error`] as a client sees it, for the transports' maps (`larch_model::wire`): never the
/// key nor which part of it was wrong, and a missing key names where to send one (the gRPC
/// metadata or the REST header). Everything else reads as the error itself.
#[derive(Debug)]
pub struct ForClient<'a> {
    error: &'a Error,
    missing_key: &'static str,
}

impl<'a> ForClient<'a> {
    /// `error` for a client who sends keys where `missing_key` says.
    pub fn new(error: &'a Error, missing_key: &'static str) -> ForClient<'a> {
        if error.code() == Code::Unavailable {
            tracing::warn!(error = %error, "shared access state unavailable");
        }
        ForClient { error, missing_key }
    }
}

impl fmt::Display for ForClient<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error {
            Error::MissingKey => f.write_str(self.missing_key),
            Error::InvalidKey | Error::Malformed(_) => f.write_str("invalid api key"),
            error => error.fmt(f),
        }
    }
}

impl std::error::Error for ForClient<'_> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self.error)
    }
}

impl Classified for ForClient<'_> {
    fn code(&self) -> Code {
        self.error.code()
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        self.error.retry_after()
    }

    fn field(&self) -> Option<&str> {
        self.error.field()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use larch_model::wire::{HttpError, INTERNAL_MESSAGE, grpc_status};

    use super::*;

    #[test]
    fn clients_see_neither_the_key_nor_what_was_wrong_with_it() {
        let malformed = Error::Malformed("bad checksum");
        let status = grpc_status(&ForClient::new(&malformed, "send a key"));
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(status.message(), "invalid api key");
        // A missing key names where this transport wants it.
        let missing = HttpError::of(&ForClient::new(&Error::MissingKey, "send it in 'Api-Key'"));
        assert_eq!(missing.status, http::StatusCode::UNAUTHORIZED);
        assert_eq!(missing.code, Code::Unauthenticated);
        assert_eq!(missing.message, "send it in 'Api-Key'");
    }

    #[test]
    fn each_refusal_has_its_class_and_hint() {
        let limited = Error::RateLimited {
            key_id: "k".into(),
            per_second: 1,
            retry_after: Duration::from_millis(300),
        };
        let refused = HttpError::of(&ForClient::new(&limited, "x"));
        assert_eq!(refused.status, http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(Duration::from_millis(300)));
        assert_eq!(
            Error::FailedPrecondition("x".into()).code(),
            Code::FailedPrecondition
        );
        let io = Error::Io {
            action: "read",
            path: "/keys/access.json".into(),
            source: std::io::Error::other("boom"),
        };
        let refused = HttpError::of(&ForClient::new(&io, "x"));
        assert_eq!(refused.status, http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(refused.message, INTERNAL_MESSAGE);
        assert_eq!(io.code_name(), "INTERNAL");
        let full = Error::Io {
            action: "create",
            path: "/keys/access.json.tmp".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        };
        assert_eq!(full.code(), Code::ResourceExhausted);
        let shared_full = Error::SharedState(larch_state::Error::Io {
            action: "write",
            path: "/shared/access".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        });
        assert_eq!(shared_full.code(), Code::ResourceExhausted);
    }
}
