//! One index: its configuration and its namespaces.
//!
//! Each namespace sits behind its own `RwLock`, so namespaces never block one
//! another; the map of namespaces has a lock of its own that is held only to
//! look a namespace up, create or remove it.
//!
//! Every method validates the whole request first (see `validate`), so a
//! rejected request changes nothing. Record writes then go through
//! `Index::write`, which locks the namespace, lets the caller check the
//! request against stored data and build a [`WriteOp`](crate::record::WriteOp), and hands that to
//! `Index::commit`, the one place every record change passes through.
//!
//! # Durability
//!
//! A durable index has a write-ahead log ([`IndexLog`]: files in its
//! directory, or objects in a shared store). Every change (record writes in
//! `commit`, `create_namespace`, `delete_namespace`) is appended and made
//! durable *before* memory changes, while the namespace is write-locked: so
//! the log holds each namespace's changes in the order they were applied, a
//! reader never sees a change that is not durable, and a failed append
//! leaves memory untouched. Writers of different namespaces share syncs or
//! batch objects (group commit, see `wal` and `objlog`).
//!
//! Every logged change runs inside `Index::logged`, which holds the flush
//! gate shared from before its append until it is applied. A flush takes the
//! gate exclusively for a moment to cut the log and the memtable at the same
//! point (see `flush`), then writes segments with no index lock held; the
//! write that finds the log past the policy's threshold runs it, once its
//! own change is durable and applied.
//!
//! Lock order: the flush state, the flush gate, the namespace map, a
//! namespace; never the reverse.
//!
//! # Layout
//!
//! | File | What it owns |
//! |---|---|
//! | `index.rs` | the [`Index`] struct, its constructors and settings, namespace lookup |
//! | `index/read.rs` | the reads: query, fetch, fetch by metadata, list, stats, namespaces, indexing status |
//! | `index/write.rs` | the write path (`Index::write`, `Index::commit`), backpressure, namespace creation and deletion, the indexer's build steps |
//! | `index/durable.rs` | [`Durable`] (the log and segments), logged changes, the flush cut |
//! | `index/log.rs` | [`IndexLog`]: the log files of an index directory, or the object log of an index in a shared store (its writer, lease and fence) |

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc, OnceLock, RwLock,
        atomic::{AtomicU64, AtomicUsize},
    },
};

use crate::{
    Error, IndexConfig, Namespace, Result, SearchParams, VectorId,
    indexer::Signal,
    locks::read_lock,
    namespace::{NamespaceStore, ann::Ann},
    pressure::MemoryBudget,
};

mod durable;
mod follow;
mod log;
mod read;
mod write;

pub(crate) use durable::Durable;
pub(crate) use follow::Follower;
pub use follow::{CatchUp, FollowerStatus};
pub(crate) use log::{IndexLog, ObjectLog};

#[cfg(test)]
mod answer_tests;
#[cfg(test)]
mod lsn_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

/// A namespace store shared between the index's map and in-flight requests.
type SharedStore = Arc<RwLock<NamespaceStore>>;

fn vector_not_found(id: &VectorId, namespace: &Namespace) -> Error {
    Error::NotFound(format!(
        "vector '{id}' not found in namespace '{}'",
        namespace.label()
    ))
}

fn namespace_not_found(namespace: &Namespace) -> Error {
    Error::NotFound(format!("namespace '{}' not found", namespace.label()))
}

/// How far an index's ANN graphs have caught up (see [`Index::indexing_status`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexingStatus {
    /// Records in all namespaces.
    pub records: u64,
    /// Records not in a graph yet, in namespaces large enough to have one;
    /// zero means fully indexed (queries are exact over pending records).
    pub pending: u64,
    /// Nodes in the published graphs, including stale ones.
    pub graph_nodes: u64,
    /// Memory of the graphs, their row maps and the metadata indexes.
    pub index_bytes: u64,
}

/// One index: its config and its namespaces. All methods take `&self` and are
/// thread-safe (RwLock inside; one lock per namespace so namespaces do not
/// block each other).
pub struct Index {
    name: String,
    config: IndexConfig,
    /// ANN graph parameters; changeable at any time.
    search_params: RwLock<SearchParams>,
    /// Wakes the engine's indexer after writes; unset until registered.
    indexer: OnceLock<Arc<Signal>>,
    /// Namespaces with fewer records are searched exactly, without a graph.
    ann_min_rows: AtomicUsize,
    /// The engine's memory budget, if it has one (see `pressure`).
    memory: OnceLock<Arc<MemoryBudget>>,
    /// Sorted by name, so listing namespaces is a range scan.
    namespaces: RwLock<BTreeMap<Namespace, SharedStore>>,
    /// The log and segments; `None` for an in-memory index.
    durable: Option<Durable>,
    /// The LSN of the last change of an in-memory index, which has no log to number its
    /// changes (see [`Index::last_lsn`]); unused by a durable index.
    memory_lsn: AtomicU64,
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("durable", &self.durable.is_some())
            .finish_non_exhaustive()
    }
}

impl Index {
    /// An empty in-memory index.
    pub(crate) fn new(name: impl Into<String>, config: IndexConfig) -> Self {
        Index {
            name: name.into(),
            config,
            search_params: RwLock::new(SearchParams::default()),
            indexer: OnceLock::new(),
            ann_min_rows: AtomicUsize::new(Ann::MIN_ROWS),
            memory: OnceLock::new(),
            namespaces: RwLock::new(BTreeMap::new()),
            durable: None,
            memory_lsn: AtomicU64::new(0),
        }
    }

    /// A durable index holding `namespaces` (recovered, or empty), logging
    /// every change and flushing to segments.
    pub(crate) fn durable(
        name: impl Into<String>,
        config: IndexConfig,
        namespaces: BTreeMap<Namespace, NamespaceStore>,
        durable: Durable,
    ) -> Self {
        let namespaces = namespaces
            .into_iter()
            .map(|(name, store)| (name, Arc::new(RwLock::new(store))))
            .collect();
        Index {
            name: name.into(),
            config,
            search_params: RwLock::new(SearchParams::default()),
            indexer: OnceLock::new(),
            ann_min_rows: AtomicUsize::new(Ann::MIN_ROWS),
            memory: OnceLock::new(),
            namespaces: RwLock::new(namespaces),
            durable: Some(durable),
            memory_lsn: AtomicU64::new(0),
        }
    }

    /// The index name, as given to [`Engine::create_index`](crate::Engine::create_index).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dimension and metric, fixed at creation.
    pub fn config(&self) -> IndexConfig {
        self.config
    }

    /// The ANN graph parameters in force.
    pub fn search_params(&self) -> SearchParams {
        *self
            .search_params
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the ANN graph parameters: `ef_search` applies to the next
    /// query; a new `m` or `quantization` has the indexer rebuild the graphs
    /// in the background; `ef_construction` applies to graphs built from now on.
    /// The control plane owns (and persists) these settings and sets them
    /// whenever it attaches or reconfigures the index.
    pub fn set_search_params(&self, params: SearchParams) {
        let previous = std::mem::replace(
            &mut *self
                .search_params
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            params,
        );
        // A new degree or quantization means new graphs; the same parameters again (a split-mode
        // data plane re-applies them at every refresh) mean nothing to do.
        if previous != params
            && let Some(indexer) = self.indexer.get()
        {
            indexer.wake();
        }
    }

    /// An empty namespace store: tracking its changes for the next flush
    /// only in a durable index.
    fn new_store(&self, schema_fields: Option<Vec<String>>) -> NamespaceStore {
        let store = NamespaceStore::new(self.config, schema_fields);
        // A follower never flushes: the writer does.
        if self.durable.is_some() && self.follower().is_none() {
            store
        } else {
            store.untracked()
        }
    }

    /// The store of `namespace`, if it exists.
    fn existing(&self, namespace: &Namespace) -> Result<Option<SharedStore>> {
        Ok(read_lock(&self.namespaces)?.get(namespace).cloned())
    }

    /// All namespaces with their stores, sorted by name.
    fn snapshot(&self) -> Result<Vec<(Namespace, SharedStore)>> {
        let namespaces = read_lock(&self.namespaces)?;
        Ok(namespaces
            .iter()
            .map(|(name, shared)| (name.clone(), Arc::clone(shared)))
            .collect())
    }
}
