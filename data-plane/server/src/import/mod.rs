//! Bulk import: Pinecone's `/bulk/imports` API over Parquet files in Pinecone's import layout.
//!
//! `POST /bulk/imports` with a `file://` URI of a directory under the operator's
//! `--import-root`, or an `s3://bucket/prefix` URI when the operator allows it
//! (`--import-allow-s3`), starts a job ([`job::Imports::start`]) that upserts the records of every
//! namespace directory's Parquet files in the background; `GET /bulk/imports[/{id}]`
//! describes jobs, `DELETE /bulk/imports/{id}` cancels one. The REST handlers
//! ([`crate::rest`]) only decode, call [`job::Imports`] and encode ([`wire`]).
//!
//! # Layout
//! - [`parquet`]: one Parquet file's rows as engine upsert records ([`parquet::ParquetRecords`],
//!   bad rows named by file and row), the namespace directories of an import
//!   ([`parquet::namespaces`]), and a writer of such files ([`parquet::write`]). Shared with the
//!   `larch vectors upsert --file x.parquet` CLI.
//! - `source`: where the files come from, a directory or a bucket prefix: listing, row
//!   counts, and opening a file (an object is downloaded to a scratch file first).
//! - [`job`]: the jobs — settings, start, the background run through the engine's upsert,
//!   persisted state and resume after a restart, cancel, list and describe.
//! - [`wire`]: Pinecone's JSON shapes of the import API.

use std::path::PathBuf;

use larch_model::{Classified, Code};

pub mod job;
pub mod parquet;
mod source;
pub mod wire;

pub use job::{ErrorMode, ImportSettings, ImportState, Imports, Status};

/// Why an import (or a read of its files) failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file or directory that cannot be read as Pinecone's import layout: missing, not
    /// Parquet, corrupt, or with columns of the wrong names or types.
    #[error("{}: {message}", file.display())]
    Unreadable {
        /// The file or directory.
        file: PathBuf,
        /// What is wrong, lowercase.
        message: String,
    },
    /// The server was started without `--import-root`.
    #[error(
        "bulk import is off on this server: start larch serve (or larch data-plane) with \
         --import-root DIR (LARCH_IMPORT_ROOT) to allow file:// imports of directories under DIR"
    )]
    Off,
    /// An `s3://` URI on a server started without `--import-allow-s3`.
    #[error(
        "bulk import from s3:// is off on this server: it reads buckets with the server's own \
         AWS_* credentials, so the operator must allow it with --import-allow-s3 \
         (LARCH_IMPORT_ALLOW_S3=true); or copy the files under the server's --import-root and \
         give a file:// URI"
    )]
    S3Off,
    /// A URI that is not a readable `file://` directory under the import root, nor a bucket
    /// prefix that can be listed and holds the layout.
    #[error("{0}")]
    BadUri(String),
    /// A `limit` out of range or a `paginationToken` this server did not give.
    #[error("{message}")]
    BadPage {
        /// `limit` or `paginationToken`.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No import of that id on this index.
    #[error("import {0} not found on this index")]
    NotFound(String),
    /// A cancel of an import that has already ended.
    #[error(
        "import {id} has already ended ({status:?}); only a Pending or InProgress import can be cancelled"
    )]
    Finished {
        /// The import.
        id: String,
        /// How it ended.
        status: Status,
    },
    /// The index is gone or the engine refused.
    #[error(transparent)]
    Engine(#[from] larch_engine::Error),
    /// A job state could not be written (or the import root read).
    #[error("cannot write import state {}: {source}", file.display())]
    State {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// This module's results.
pub type Result<T> = std::result::Result<T, ImportError>;

impl Classified for ImportError {
    fn code(&self) -> Code {
        match self {
            ImportError::Unreadable { .. }
            | ImportError::BadUri(_)
            | ImportError::BadPage { .. } => Code::InvalidArgument,
            ImportError::Off | ImportError::S3Off | ImportError::Finished { .. } => {
                Code::FailedPrecondition
            }
            ImportError::NotFound(_) => Code::NotFound,
            ImportError::Engine(err) => err.code(),
            ImportError::State { .. } => Code::Internal,
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ImportError::Engine(err) => err.retry_after(),
            _ => None,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ImportError::Unreadable { .. } | ImportError::BadUri(_) => Some("uri"),
            ImportError::BadPage { field, .. } => Some(field),
            ImportError::Engine(err) => err.field(),
            _ => None,
        }
    }
}
