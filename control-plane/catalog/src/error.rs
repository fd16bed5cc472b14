//! The catalog's error type and its class in the shared vocabulary ([`larch_model::Code`]).

use larch_model::{Cause, Classified, Code};

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
    /// No backup has this id (in the caller's project).
    #[error("backup '{0}' not found")]
    BackupNotFound(String),
    /// No restore job has this id (in the caller's project).
    #[error("restore job '{0}' not found")]
    RestoreJobNotFound(String),
    /// An index with this name exists already.
    #[error("index '{0}' already exists")]
    AlreadyExists(String),
    /// The index exists but the operation is not allowed in its current state: its deletion
    /// protection refuses deleting it ([`Code::Forbidden`], as Pinecone answers).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Every data-plane port of the configured range is taken.
    #[error("no free data-plane port in {0}: delete an index or widen --data-ports")]
    NoFreePort(String),
    /// The catalog file could not be read or written.
    #[error("catalog storage: {0}")]
    Storage(String),
    /// The catalog's store (its file, or the document shared by several control-plane
    /// replicas) cannot be read or written now; the store's own error, kept typed, so a full
    /// disk is RESOURCE_EXHAUSTED and anything else UNAVAILABLE (retrying later may succeed).
    #[error("catalog storage: {0}")]
    SharedState(#[from] larch_state::Error),
    /// The data plane could not open or drop the index.
    #[error("data plane: {0}")]
    DataPlane(String),
    /// The data plane did not answer in time or could not be reached; nothing was changed.
    #[error("data plane unavailable, retry later: {0}")]
    DataPlaneUnavailable(String),
    /// The data plane refused for a reason of its own (a full disk, a stored index it cannot
    /// open), which keeps its class: a full disk is RESOURCE_EXHAUSTED here too.
    #[error("data plane: {0}")]
    DataPlaneRefused(#[source] Cause),
}

impl Error {
    /// The class of this error in the shared vocabulary.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound(_) | Error::BackupNotFound(_) | Error::RestoreJobNotFound(_) => {
                Code::NotFound
            }
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::Forbidden,
            Error::NoFreePort(_) => Code::ResourceExhausted,
            Error::Storage(_) => Code::Unavailable,
            Error::SharedState(err) => err.code(),
            Error::DataPlane(_) => Code::Internal,
            Error::DataPlaneUnavailable(_) => Code::Unavailable,
            Error::DataPlaneRefused(cause) => cause.code(),
        }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field,
            message: message.into(),
        }
    }
}

impl From<larch_model::InvalidField> for Error {
    fn from(err: larch_model::InvalidField) -> Error {
        let larch_model::InvalidField { field, message } = err;
        Error::InvalidArgument { field, message }
    }
}

impl Classified for Error {
    fn code(&self) -> Code {
        Error::code(self)
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::DataPlaneRefused(cause) => cause.retry_after(),
            _ => None,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            Error::InvalidArgument { field, .. } => Some(field),
            Error::DataPlaneRefused(cause) => cause.field(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use larch_engine::{IndexConfig, SearchParams};
    use larch_model::wire::{Dialect, grpc_status, http_error};

    use super::*;
    use crate::{
        AttachError, AttachMode, Catalog, CreateIndex, DEFAULT_PROJECT, DataPlaneHost, HostError,
        IndexKey, PortPolicy,
    };

    /// A data plane whose disk is full: the engine's own storage error on every change.
    struct FullDisk;

    fn disk_full() -> larch_engine::Error {
        larch_engine::Error::Storage {
            code: Code::ResourceExhausted,
            message: "disk full: cannot create index 'movies': no space left on device; free disk space and retry".into(),
        }
    }

    impl DataPlaneHost for FullDisk {
        fn attach(
            &self,
            _: &IndexKey,
            _: IndexConfig,
            _: SearchParams,
            _: u16,
            _: AttachMode,
        ) -> Result<u16, AttachError> {
            Err(AttachError::Refused(Cause::new(disk_full())))
        }
        fn configure(&self, _: &IndexKey, _: SearchParams) -> Result<(), HostError> {
            Err(HostError::Refused(Cause::new(disk_full())))
        }
        fn detach(&self, _: &IndexKey) -> Result<(), HostError> {
            Err(HostError::Refused(Cause::new(disk_full())))
        }
    }

    #[test]
    fn a_full_disk_of_the_data_plane_stays_resource_exhausted_across_the_catalog() {
        let catalog = Catalog::new(Arc::new(FullDisk), PortPolicy::Ephemeral, "127.0.0.1");
        let err = catalog
            .create_index(
                DEFAULT_PROJECT,
                CreateIndex {
                    name: "movies".into(),
                    dimension: Some(4),
                    ..Default::default()
                },
            )
            .expect_err("the data plane cannot create the index");
        assert!(matches!(err, Error::DataPlaneRefused(_)), "{err:?}");
        assert_eq!(err.code(), Code::ResourceExhausted);
        // The engine's error is the source, typed, not a copy of its message.
        let source = std::error::Error::source(&err).expect("a source");
        assert!(source.to_string().starts_with("disk full: "), "{source}");

        let status = grpc_status(&err);
        // RESOURCE_EXHAUSTED is gRPC code 8.
        assert_eq!(status.code() as i32, 8, "{status:?}");
        assert!(status.message().contains("disk full"), "{status:?}");
        let (http, _, body) = http_error(Dialect::ControlPlane, &err);
        assert_eq!(http.as_u16(), 429);
        let body = String::from_utf8(body).expect("utf-8");
        assert!(body.contains("\"RESOURCE_EXHAUSTED\""), "{body}");
        assert!(body.contains("disk full"), "{body}");
    }

    #[test]
    fn deletion_protection_is_forbidden_and_the_rest_keeps_its_class() {
        let cases = [
            (
                Error::FailedPrecondition("protected".into()),
                Code::Forbidden,
            ),
            (Error::NotFound("x".into()), Code::NotFound),
            (
                Error::NoFreePort("5081-5081".into()),
                Code::ResourceExhausted,
            ),
            (Error::DataPlane("boom".into()), Code::Internal),
            (
                Error::DataPlaneUnavailable("timeout".into()),
                Code::Unavailable,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(Classified::code(&err), code, "{err}");
        }
    }

    #[test]
    fn a_full_disk_under_the_catalog_file_stays_resource_exhausted() {
        let full = |kind| {
            Error::from(larch_state::Error::Io {
                action: "write",
                path: "/data/catalog.json.tmp".into(),
                source: std::io::Error::from(kind),
            })
        };
        assert_eq!(
            Classified::code(&full(std::io::ErrorKind::StorageFull)),
            Code::ResourceExhausted
        );
        assert_eq!(
            Classified::code(&full(std::io::ErrorKind::PermissionDenied)),
            Code::Unavailable
        );
    }
}
