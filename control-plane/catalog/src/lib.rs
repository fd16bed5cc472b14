//! The control plane's model of indexes: what exists, with which settings, served where.
//!
//! The catalog validates index settings (Pinecone's naming and limits), keeps one
//! [`IndexRecord`] per index, hands each index a data-plane port, and tells the data plane
//! to open, reconfigure or drop the index through the [`DataPlaneHost`] trait. It knows
//! nothing of gRPC: the control-plane server translates its requests into [`CreateIndex`] /
//! [`ConfigureIndex`] and its records back into protobuf.
//!
//! # Layout
//! - [`error`]: the crate's [`Error`] and its [`larch_engine::ErrorCode`] class.
//! - [`record`]: typed index settings ([`IndexName`], [`Cloud`], [`DeletionProtection`], ...),
//!   the raw [`SearchSettings`] of a request (validated into [`larch_engine::SearchParams`])
//!   and the validated [`IndexRecord`].
//! - [`catalog`]: the [`Catalog`] itself, the [`DataPlaneHost`] trait and [`PortPolicy`].
//! - `store`: the catalog file, written atomically.
//!
//! A catalog made with [`Catalog::open`] persists every change to `catalog.json` (atomic
//! replace) before acknowledging it, and recovers every index at start-up.

pub mod catalog;
pub mod error;
pub mod record;
mod store;

pub use catalog::{AttachError, AttachMode, Catalog, DataPlaneHost, PortPolicy};
pub use error::{Error, Result};
pub use record::{
    Cloud, ConfigureIndex, CreateIndex, DeletionProtection, IndexName, IndexRecord, IndexState,
    SearchSettings, VectorType,
};
pub use store::CATALOG_FILE;
