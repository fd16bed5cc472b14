//! Bulk import: Pinecone's Parquet import layout read into upserts.
//!
//! # Layout
//! - [`parquet`]: one Parquet file's rows as engine upsert records ([`parquet::ParquetRecords`],
//!   bad rows named by file and row), the namespace directories of an import
//!   ([`parquet::namespaces`]), and a writer of such files ([`parquet::write`]). Shared with the
//!   `larch vectors upsert --file x.parquet` CLI.

use std::path::PathBuf;

use larch_model::{Classified, Code};

pub mod parquet;

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
}

/// This module's results.
pub type Result<T> = std::result::Result<T, ImportError>;

impl Classified for ImportError {
    fn code(&self) -> Code {
        match self {
            ImportError::Unreadable { .. } => Code::InvalidArgument,
        }
    }
}
