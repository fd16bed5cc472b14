//! The control plane's model of indexes: what exists, in which project, with which settings,
//! served where.
//!
//! The catalog validates index settings (Pinecone's naming and limits), keeps one
//! [`IndexRecord`] per index, hands each index a data-plane port, and tells the data plane
//! to open, reconfigure or drop the index through the [`DataPlaneHost`] trait.
//!
//! # Projects
//!
//! As in Pinecone, a project owns indexes (and API keys, which the auth crate keeps). An index
//! is identified by its [`IndexKey`] — project id and name — so names are unique per project:
//! two projects may each have an index `movies`, with separate data and ports. Every catalog
//! call names the caller's project and sees only that project's indexes; a name that exists only
//! in another project is NOT_FOUND, with nothing in the message to say otherwise. Indexes of the
//! [`DEFAULT_PROJECT`] keep their bare name as storage name ([`IndexKey::storage_name`]), so data
//! directories and `catalog.json` files written before projects existed load unchanged. It knows
//! nothing of gRPC: the control-plane server translates its requests into [`CreateIndex`] /
//! [`ConfigureIndex`] and its records back into protobuf.
//!
//! # Layout
//! - [`error`]: the crate's [`Error`] and its class in the shared vocabulary ([`larch_model::Code`]).
//! - [`record`]: typed index settings ([`Cloud`], [`DeletionProtection`], ...; [`IndexName`],
//!   [`IndexKey`] and [`DEFAULT_PROJECT`] are `larch_model`'s, re-exported, since the data plane
//!   shares them),
//!   the raw [`SearchSettings`] of a request (validated into [`larch_engine::SearchParams`])
//!   and the validated [`IndexRecord`].
//! - [`catalog`]: the [`Catalog`] itself, the [`DataPlaneHost`] trait and [`PortPolicy`]
//!   ([`AttachMode`], [`AttachError`] and [`HostError`] are `larch_model`'s, re-exported).
//! - [`backups`]: backups ([`BackupRecord`]) and restore jobs ([`RestoreJob`]) of every
//!   project, kept in the catalog document beside the indexes; the data plane keeps the data
//!   ([`DataPlaneHost::backup`], [`DataPlaneHost::restore`]).
//! - [`hosts`]: how an index's `host` is formed — its own port (embedded mode) or a host name
//!   from a [`HostTemplate`] on one shared data-plane address (split mode).
//! - `doc`: the catalog document (every index and tombstone) and every change to it, each
//!   written once as a function over the document.
//! - `store`: how the document is stored (`catalog.json`'s format, the same bytes in every
//!   store).
//!
//! Every change goes through one read-modify-write loop ([`larch_state::Versioned::change`])
//! over a [`larch_state::Store`]: a catalog made with [`Catalog::open`] persists every change
//! to `catalog.json` (atomic replace) before acknowledging it, and recovers every index at
//! start-up; one made with [`Catalog::open_shared`] (split mode) keeps the same document in a
//! [`SharedDocument`] that several control-plane replicas read and write side by side, a
//! change that another replica beat being redone on the newer document; [`Catalog::new`]
//! keeps it in memory.

pub mod backups;
pub mod catalog;
mod doc;
pub mod error;
pub mod hosts;
pub mod record;
mod store;

pub use backups::{BackupRecord, CreateBackup, CreateIndexFromBackup, RestoreJob, RestoreStatus};
pub use catalog::{AttachError, AttachMode, Catalog, DataPlaneHost, HostError, PortPolicy, Served};
pub use error::{Error, Result};
pub use hosts::{HostTemplate, Hosts};
/// Where several control-plane replicas share the catalog ([`Catalog::open_shared`]).
pub use larch_state::{SharedDocument, Written};
pub use record::{
    Cloud, ConfigureIndex, CreateIndex, DEFAULT_PROJECT, DeletionProtection, Incarnation, IndexKey,
    IndexName, IndexRecord, IndexState, SearchSettings, VectorType, check_project_id,
};
pub use store::CATALOG_FILE;
