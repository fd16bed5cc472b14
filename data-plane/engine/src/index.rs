//! One index: its configuration and its namespaces.
//!
//! Each namespace sits behind its own `RwLock`, so namespaces never block one
//! another; the map of namespaces has a lock of its own that is held only to
//! look a namespace up, create or remove it.
//!
//! Every method validates the whole request first (see `validate`), so a
//! rejected request changes nothing. Record writes then go through
//! `Index::write`, which locks the namespace, lets the caller check the
//! request against stored data and build a [`WriteOp`], and hands that to
//! `Index::commit`, the one place every record change passes through.
//!
//! # Durability
//!
//! A durable index has a write-ahead log. Every change (record writes in
//! `commit`, `create_namespace`, `delete_namespace`) is appended and synced
//! to it *before* memory changes, while the namespace is write-locked: so the
//! log holds each namespace's changes in the order they were applied, a
//! reader never sees a change that is not durable, and a failed append
//! leaves memory untouched. Writers of different namespaces share syncs
//! (group commit, see `wal`).
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

use std::{
    collections::BTreeMap,
    fmt, mem,
    ops::Bound,
    sync::{
        Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicUsize, Ordering},
    },
};

use crate::{
    AnswerBudget, Error, IndexConfig, JsonObject, Metadata, Namespace, Result, SearchParams,
    VectorId,
    ann::{self, Ann},
    answer::{self, Tally},
    codec,
    flush::{Pending, Segments, State, StorageStats},
    indexer::Signal,
    limits, metadata,
    namespace::{NamespaceStore, WriteOp},
    pagination::Cursor,
    pressure::{self, MemoryBudget},
    requests::{
        DeleteRequest, FetchByMetadataRequest, FetchByMetadataResponse, FetchRequest,
        FetchResponse, IndexStats, ListNamespacesRequest, ListNamespacesResponse, ListRequest,
        ListResponse, NamespaceInfo, QueryRequest, QueryResponse, Record, UpdateRequest,
        UpsertRequest,
    },
    search::SearchQuery,
    validate::{self, DeleteTarget, FetchByMetadata, Page, QueryTarget, Update, UpdateTarget},
    wal::{self, Wal},
};

#[cfg(test)]
mod answer_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

/// A namespace store shared between the index's map and in-flight requests.
type SharedStore = Arc<RwLock<NamespaceStore>>;

/// Read-locks `lock`; a lock poisoned by an earlier panic is an internal error.
pub(crate) fn read_lock<T>(lock: &RwLock<T>) -> Result<RwLockReadGuard<'_, T>> {
    lock.read().map_err(|_| poisoned())
}

/// Write-locks `lock`; a lock poisoned by an earlier panic is an internal error.
pub(crate) fn write_lock<T>(lock: &RwLock<T>) -> Result<RwLockWriteGuard<'_, T>> {
    lock.write().map_err(|_| poisoned())
}

fn poisoned() -> Error {
    Error::Internal("engine state is unavailable after an earlier panic".to_owned())
}

fn vector_not_found(id: &VectorId, namespace: &Namespace) -> Error {
    Error::NotFound(format!(
        "vector '{id}' not found in namespace '{}'",
        namespace.label()
    ))
}

fn namespace_not_found(namespace: &Namespace) -> Error {
    Error::NotFound(format!("namespace '{}' not found", namespace.label()))
}

/// What a durable index has beyond its memory: its log, its segments, and
/// what the next flush needs to know.
pub(crate) struct Durable {
    wal: Wal,
    segments: Segments,
    /// Held shared by every logged change from before its append until it
    /// is applied, and exclusively by a flush while it cuts.
    gate: RwLock<()>,
    /// Namespaces deleted since the last cut.
    dropped: Mutex<Vec<Namespace>>,
    /// Log files this process rotated away from, with their bytes of records: until a
    /// manifest starts replay after them, they are backlog too (a failed flush rotates but
    /// deletes nothing).
    rotated: Mutex<Vec<(u64, u64)>>,
}

impl Durable {
    /// `dropped`: namespaces deleted since the segments were written (by
    /// the replayed log).
    pub(crate) fn new(wal: Wal, segments: Segments, dropped: Vec<Namespace>) -> Self {
        Durable {
            wal,
            segments,
            gate: RwLock::new(()),
            dropped: Mutex::new(dropped),
            rotated: Mutex::new(Vec::new()),
        }
    }

    /// Bytes of logged records no manifest covers yet: the active file's and those of the
    /// rotated files replay would still start from.
    fn log_backlog(&self) -> Result<u64> {
        let active = self.wal.len().saturating_sub(wal::HEADER_LEN);
        let number = self.wal.number();
        let files = self.segments.stats(&self.wal).wal_files;
        let replay_start = (number + 1).saturating_sub(files);
        let mut rotated = lock(&self.rotated)?;
        rotated.retain(|&(file, _)| file >= replay_start);
        Ok(active + rotated.iter().map(|&(_, bytes)| bytes).sum::<u64>())
    }

    /// The segments (and graph files).
    pub(crate) fn segments(&self) -> &Segments {
        &self.segments
    }
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

    /// Inserts or replaces records, creating the namespace if needed; returns
    /// the number of vectors in the request.
    pub fn upsert(&self, request: UpsertRequest) -> Result<u32> {
        let (namespace, records) = validate::upsert(request, self.config)?;
        let count = u32::try_from(records.len()).expect("an upsert holds at most 1000 vectors");
        let payload: usize = records
            .iter()
            .map(|record| {
                record.id.as_str().len()
                    + record.values.len() * 4
                    + record.sparse.as_ref().map_or(0, |s| s.len() * 8)
                    + record
                        .metadata
                        .as_ref()
                        .map_or(0, metadata::estimated_bytes)
            })
            .sum();
        self.admit_write(records.len(), payload)?;
        self.logged(|| {
            self.write(&namespace, true, |_| {
                Ok((Some(WriteOp::Upsert(records)), ()))
            })
        })?;
        Ok(count)
    }

    /// The `top_k` records most similar to a vector or a stored record, best
    /// first (ties by id), among those matching the filter; the answer is held to the default
    /// [`AnswerBudget`] (see [`Index::query_within`]).
    pub fn query(&self, request: QueryRequest) -> Result<QueryResponse> {
        self.query_within(request, AnswerBudget::default())
    }

    /// [`Index::query`] with an answer of at most `budget`: matches are counted as they are
    /// built, and the query is refused (naming `top_k`) at the first one past the budget.
    pub fn query_within(
        &self,
        request: QueryRequest,
        budget: AnswerBudget,
    ) -> Result<QueryResponse> {
        let query = validate::query(request, self.config)?;
        let mut response = QueryResponse {
            namespace: query.namespace.as_str().to_owned(),
            matches: Vec::new(),
        };
        let Some(shared) = self.existing(&query.namespace)? else {
            return Ok(response);
        };
        let store = read_lock(&shared)?;
        let dense = match &query.target {
            QueryTarget::Vector(values) => values.as_slice(),
            QueryTarget::Id(id) => match store.row_of(id.as_str()) {
                Some(row) => store.rows().dense(row),
                None => return Err(vector_not_found(id, &query.namespace)),
            },
        };
        let search = SearchQuery::new(
            self.config.metric,
            dense,
            query.sparse.as_ref(),
            query.top_k,
        );
        let hits = store.search(&search, query.filter.as_ref(), &self.search_params());
        let mut tally = Tally::new(
            budget,
            "top_k",
            "lower top_k, or set include_values or include_metadata to false",
        );
        response.matches = Vec::with_capacity(hits.len());
        for hit in hits {
            let scored = store.scored(hit, query.include_values, query.include_metadata);
            tally.charge(answer::record_bytes(
                &scored.id,
                &scored.values,
                scored.sparse_values.as_ref(),
                scored.metadata.as_ref(),
            ))?;
            response.matches.push(scored);
        }
        Ok(response)
    }

    /// Records by id, in request order; missing ids are absent. The answer is held to the
    /// default [`AnswerBudget`] (see [`Index::fetch_within`]).
    pub fn fetch(&self, request: FetchRequest) -> Result<FetchResponse> {
        self.fetch_within(request, AnswerBudget::default())
    }

    /// [`Index::fetch`] with an answer of at most `budget`, refused (naming `ids`) at the
    /// first record past it.
    pub fn fetch_within(
        &self,
        request: FetchRequest,
        budget: AnswerBudget,
    ) -> Result<FetchResponse> {
        let (namespace, ids) = validate::fetch(request)?;
        let mut response = FetchResponse {
            namespace: namespace.as_str().to_owned(),
            vectors: Vec::new(),
        };
        if let Some(shared) = self.existing(&namespace)? {
            let store = read_lock(&shared)?;
            let mut tally = Tally::new(budget, "ids", "fetch fewer ids per request");
            for row in ids.iter().filter_map(|id| store.row_of(id.as_str())) {
                response
                    .vectors
                    .push(charged(&mut tally, store.record(row))?);
            }
        }
        Ok(response)
    }

    /// One page of the records matching a filter, ordered by id. The answer is held to the
    /// default [`AnswerBudget`] (see [`Index::fetch_by_metadata_within`]).
    pub fn fetch_by_metadata(
        &self,
        request: FetchByMetadataRequest,
    ) -> Result<FetchByMetadataResponse> {
        self.fetch_by_metadata_within(request, AnswerBudget::default())
    }

    /// [`Index::fetch_by_metadata`] with an answer of at most `budget`, refused (naming
    /// `limit`) at the first record past it.
    pub fn fetch_by_metadata_within(
        &self,
        request: FetchByMetadataRequest,
        budget: AnswerBudget,
    ) -> Result<FetchByMetadataResponse> {
        let FetchByMetadata {
            namespace,
            filter,
            limit,
            after,
        } = validate::fetch_by_metadata(request)?;
        let mut response = FetchByMetadataResponse {
            namespace: namespace.as_str().to_owned(),
            vectors: Vec::new(),
            next: None,
        };
        let Some(shared) = self.existing(&namespace)? else {
            return Ok(response);
        };
        let store = read_lock(&shared)?;
        let start = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut matching = store
            .ids_from(start)
            .filter(|(_, row)| store.row_matches(*row, Some(&filter)));
        let page: Vec<_> = matching.by_ref().take(limit).collect();
        if matching.next().is_some() {
            response.next = page
                .last()
                .map(|(id, _)| Cursor::Metadata.encode(id.as_str()));
        }
        let mut tally = Tally::new(
            budget,
            "limit",
            "lower limit and read the rest page by page with the pagination token",
        );
        response.vectors = Vec::with_capacity(page.len());
        for (_, row) in page {
            response
                .vectors
                .push(charged(&mut tally, store.record(row))?);
        }
        Ok(response)
    }

    /// Deletes records by ids, all of them, or by filter. Missing ids and
    /// namespaces are not an error; the namespace itself stays.
    pub fn delete(&self, request: DeleteRequest) -> Result<()> {
        let (namespace, target) = validate::delete(request)?;
        self.logged(|| self.delete_in(&namespace, target))
    }

    fn delete_in(&self, namespace: &Namespace, target: DeleteTarget) -> Result<()> {
        self.write(namespace, false, |store| {
            let ids: Vec<VectorId> = match target {
                DeleteTarget::All => return Ok((Some(WriteOp::DeleteAll), ())),
                DeleteTarget::Ids(ids) => ids
                    .into_iter()
                    .filter(|id| store.row_of(id.as_str()).is_some())
                    .collect(),
                DeleteTarget::Filter(filter) => {
                    store.matching(&filter).map(|(id, _)| id.clone()).collect()
                }
            };
            Ok(((!ids.is_empty()).then_some(WriteOp::Delete(ids)), ()))
        })?;
        Ok(())
    }

    /// Updates one record by id (returns 1) or the metadata of every record
    /// matching a filter (returns how many matched). With `dry_run` nothing
    /// changes, but the count and all checks are the same.
    pub fn update(&self, request: UpdateRequest) -> Result<u32> {
        let update = validate::update(request, self.config)?;
        // By id it may replace a vector (and its graph node); by filter it merges metadata
        // into records it has not matched yet, so only the patch itself is counted.
        let (rows, payload) = match &update.target {
            UpdateTarget::Id {
                values,
                sparse,
                patch,
                ..
            } => (
                usize::from(values.is_some()),
                values.as_ref().map_or(0, |v| v.len() * 4)
                    + sparse.as_ref().map_or(0, |s| s.len() * 8)
                    + patch.as_ref().map_or(0, metadata::estimated_bytes),
            ),
            UpdateTarget::Filter { patch, .. } => (0, metadata::estimated_bytes(patch)),
        };
        if !update.dry_run {
            self.admit_write(rows, payload)?;
        }
        self.logged(|| self.update_in(update))
    }

    /// Backpressure before a write that adds data: `rows` new or replaced vectors and
    /// `payload` bytes of values, ids and metadata (see `pressure`). Refused writes leave
    /// nothing behind.
    fn admit_write(&self, rows: usize, payload: usize) -> Result<()> {
        if let Some(durable) = &self.durable {
            let limit = pressure::log_backlog_limit(durable.segments.policy().wal_bytes);
            if durable.log_backlog()? >= limit {
                // Refused writes trigger no flush, so try one here: the last may have failed
                // (a full disk since freed); this gives up at once if one is running.
                if let Err(err) = self.flush_segments(false) {
                    tracing::warn!(index = %self.name, error = %err, "flushing the write-ahead log backlog failed; writes that add data are refused meanwhile");
                }
            }
            let backlog = durable.log_backlog()?;
            if backlog >= limit {
                return Err(Error::Overloaded {
                    message: format!(
                        "index '{}' is writing faster than it can flush: its write-ahead log                          holds {} KiB of changes not yet flushed (the limit is {} KiB: {}x the \
                         flush threshold); retry shortly (reads are served)",
                        self.name,
                        backlog / 1024,
                        limit / 1024,
                        pressure::LOG_BACKLOG_FACTOR
                    ),
                    retry_after: pressure::LOG_RETRY,
                });
            }
        }
        if let Some(memory) = self.memory.get() {
            memory.admit(pressure::write_bytes(self, rows as u64, payload as u64))?;
        }
        Ok(())
    }

    /// Holds writes of this index to the engine's memory budget from now on.
    pub(crate) fn attach_memory_budget(&self, memory: Arc<MemoryBudget>) {
        let _ = self.memory.set(memory);
    }

    fn update_in(&self, update: Update) -> Result<u32> {
        let Update {
            namespace,
            target,
            dry_run,
        } = update;
        match target {
            UpdateTarget::Id {
                id,
                values,
                sparse,
                patch,
            } => {
                let updated = self.write(&namespace, false, |store| {
                    let Some(row) = store.row_of(id.as_str()) else {
                        return Err(vector_not_found(&id, &namespace));
                    };
                    if let Some(patch) = &patch {
                        check_merged_size(&id, store.rows().metadata(row), patch)?;
                    }
                    let op = (!dry_run).then(|| WriteOp::Update {
                        id: id.clone(),
                        values,
                        sparse,
                        patch,
                    });
                    Ok((op, 1))
                })?;
                updated.ok_or_else(|| vector_not_found(&id, &namespace))
            }
            UpdateTarget::Filter { filter, patch } => {
                let matched = self.write(&namespace, false, |store| {
                    let mut ids = Vec::new();
                    for (id, row) in store.matching(&filter) {
                        check_merged_size(id, store.rows().metadata(row), &patch)?;
                        ids.push(id.clone());
                    }
                    let count = u32::try_from(ids.len()).unwrap_or(u32::MAX);
                    let op = (!dry_run && !ids.is_empty())
                        .then_some(WriteOp::MergeMetadata { ids, patch });
                    Ok((op, count))
                })?;
                Ok(matched.unwrap_or(0))
            }
        }
    }

    /// One page of record ids in ascending byte order. The answer is held to the default
    /// [`AnswerBudget`] (see [`Index::list_within`]).
    pub fn list(&self, request: ListRequest) -> Result<ListResponse> {
        self.list_within(request, AnswerBudget::default())
    }

    /// [`Index::list`] with an answer of at most `budget`, refused (naming `limit`) at the
    /// first id past it.
    pub fn list_within(&self, request: ListRequest, budget: AnswerBudget) -> Result<ListResponse> {
        let (
            namespace,
            Page {
                prefix,
                limit,
                after,
            },
        ) = validate::list(request)?;
        let mut response = ListResponse {
            namespace: namespace.as_str().to_owned(),
            ids: Vec::new(),
            next: None,
        };
        let Some(shared) = self.existing(&namespace)? else {
            return Ok(response);
        };
        let store = read_lock(&shared)?;
        let mut ids = store
            .ids_from(resume_bound(&prefix, after.as_deref()))
            .map(|(id, _)| id.as_str())
            .take_while(|id| id.starts_with(prefix.as_str()));
        let mut tally = Tally::new(
            budget,
            "limit",
            "lower limit and read the rest page by page with the pagination token",
        );
        for id in ids.by_ref().take(limit) {
            tally.charge(answer::id_bytes(id))?;
            response.ids.push(id.to_owned());
        }
        if ids.next().is_some() {
            response.next = response.ids.last().map(|id| Cursor::Ids.encode(id));
        }
        Ok(response)
    }

    /// Record counts per namespace. A non-empty filter counts only the
    /// matching records; an empty one is no filter.
    pub fn describe_stats(&self, filter: Option<JsonObject>) -> Result<IndexStats> {
        let filter = validate::optional_filter(filter)?;
        let mut namespaces = Vec::new();
        for (name, shared) in self.snapshot()? {
            let count = read_lock(&shared)?.count_matching(filter.as_ref());
            namespaces.push((name.as_str().to_owned(), count));
        }
        let total_vector_count = namespaces.iter().map(|(_, count)| count).sum();
        Ok(IndexStats {
            dimension: self.config.dimension,
            metric: self.config.metric,
            namespaces,
            total_vector_count,
        })
    }

    /// Creates an empty namespace. The name must be non-empty and not
    /// `__default__`; `schema_fields` names the metadata fields to index.
    pub fn create_namespace(
        &self,
        name: &str,
        schema_fields: Option<Vec<String>>,
    ) -> Result<NamespaceInfo> {
        let namespace = validate::new_namespace(name)?;
        let schema_fields = validate::schema_fields(schema_fields)?;
        self.logged(|| self.create_namespace_in(name, namespace, schema_fields))
    }

    fn create_namespace_in(
        &self,
        name: &str,
        namespace: Namespace,
        schema_fields: Option<Vec<String>>,
    ) -> Result<NamespaceInfo> {
        let mut namespaces = write_lock(&self.namespaces)?;
        if namespaces.contains_key(&namespace) {
            return Err(Error::AlreadyExists(format!(
                "namespace '{name}' already exists"
            )));
        }
        if let Some(durable) = &self.durable {
            durable.wal.append(&codec::encode_create_namespace(
                &namespace,
                schema_fields.as_deref(),
            ))?;
        }
        let store = self.new_store(schema_fields);
        let info = store.info(&namespace);
        namespaces.insert(namespace, Arc::new(RwLock::new(store)));
        Ok(info)
    }

    /// Counts and size of one namespace.
    pub fn describe_namespace(&self, name: &str) -> Result<NamespaceInfo> {
        let namespace = Namespace::parse("namespace", name)?;
        let shared = self
            .existing(&namespace)?
            .ok_or_else(|| namespace_not_found(&namespace))?;
        let info = read_lock(&shared)?.info(&namespace);
        Ok(info)
    }

    /// One page of namespaces sorted by name, with the total matching the prefix.
    pub fn list_namespaces(
        &self,
        request: ListNamespacesRequest,
    ) -> Result<ListNamespacesResponse> {
        let Page {
            prefix,
            limit,
            after,
        } = validate::list_namespaces(request)?;
        let (total, page, more) = {
            let namespaces = read_lock(&self.namespaces)?;
            let with_prefix = || {
                namespaces
                    .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                    .take_while(|(name, _)| name.as_str().starts_with(prefix.as_str()))
            };
            let total = with_prefix().count();
            let mut rest = namespaces
                .range::<str, _>((resume_bound(&prefix, after.as_deref()), Bound::Unbounded))
                .take_while(|(name, _)| name.as_str().starts_with(prefix.as_str()));
            let page: Vec<(Namespace, SharedStore)> = rest
                .by_ref()
                .take(limit)
                .map(|(name, shared)| (name.clone(), Arc::clone(shared)))
                .collect();
            (total, page, rest.next().is_some())
        };
        let next = if more {
            page.last()
                .map(|(name, _)| Cursor::Namespaces.encode(name.as_str()))
        } else {
            None
        };
        let namespaces = page
            .iter()
            .map(|(name, shared)| Ok(read_lock(shared)?.info(name)))
            .collect::<Result<Vec<_>>>()?;
        Ok(ListNamespacesResponse {
            namespaces,
            next,
            total_count: u32::try_from(total).unwrap_or(u32::MAX),
        })
    }

    /// Deletes a namespace and all its records.
    pub fn delete_namespace(&self, name: &str) -> Result<()> {
        let namespace = Namespace::parse("namespace", name)?;
        self.logged(|| self.delete_namespace_in(namespace))
    }

    fn delete_namespace_in(&self, namespace: Namespace) -> Result<()> {
        let mut namespaces = write_lock(&self.namespaces)?;
        let shared = namespaces
            .get(&namespace)
            .cloned()
            .ok_or_else(|| namespace_not_found(&namespace))?;
        // Waits for a write in flight, so the removal is logged after it (the
        // map stays locked meanwhile: deleting a namespace is rare).
        let mut store = write_lock(&shared)?;
        debug_assert!(!store.is_dropped(), "a dropped store is not in the map");
        if let Some(durable) = &self.durable {
            durable
                .wal
                .append(&codec::encode_delete_namespace(&namespace))?;
            lock(&durable.dropped)?.push(namespace.clone());
        }
        namespaces.remove(&namespace);
        drop(namespaces);
        // Writers that looked the namespace up before its removal see the mark
        // and look it up again (see `write`), so no write is lost in a dead store.
        store.mark_dropped();
        Ok(())
    }

    /// An empty namespace store: tracking its changes for the next flush
    /// only in a durable index.
    fn new_store(&self, schema_fields: Option<Vec<String>>) -> NamespaceStore {
        let store = NamespaceStore::new(self.config, schema_fields);
        if self.durable.is_some() {
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

    /// The write path of every record change. Write-locks `namespace`
    /// (creating it if `create`), lets `plan` check the validated request
    /// against stored data and build the mutation, and commits it. Returns
    /// `None` without calling `plan` if the namespace does not exist and
    /// `create` is false.
    fn write<T>(
        &self,
        namespace: &Namespace,
        create: bool,
        plan: impl FnOnce(&NamespaceStore) -> Result<(Option<WriteOp>, T)>,
    ) -> Result<Option<T>> {
        loop {
            let shared = match self.existing(namespace)? {
                Some(shared) => shared,
                None if !create => return Ok(None),
                None => {
                    let mut namespaces = write_lock(&self.namespaces)?;
                    match namespaces.get(namespace) {
                        // Another writer created it meanwhile.
                        Some(shared) => Arc::clone(shared),
                        None => {
                            // A new namespace appears only once its first write
                            // is durable, so the map stays locked through the
                            // append: namespace creation is rare, and the
                            // writers of other namespaces that are already
                            // committing do not need the map.
                            let mut store = self.new_store(None);
                            let (op, output) = plan(&store)?;
                            if let Some(op) = op {
                                self.commit(namespace, &mut store, op)?;
                                let store = Arc::new(RwLock::new(store));
                                namespaces.insert(namespace.clone(), store);
                            }
                            return Ok(Some(output));
                        }
                    }
                }
            };
            let mut store = write_lock(&shared)?;
            if store.is_dropped() {
                // `delete_namespace` removed this store after we looked it up; look again.
                continue;
            }
            let (op, output) = plan(&store)?;
            if let Some(op) = op {
                self.commit(namespace, &mut store, op)?;
            }
            return Ok(Some(output));
        }
    }

    /// Logs a validated mutation of a locked namespace, then applies it.
    /// Every record change passes through here. If the log append fails,
    /// memory stays untouched.
    fn commit(&self, namespace: &Namespace, store: &mut NamespaceStore, op: WriteOp) -> Result<()> {
        if let Some(durable) = &self.durable {
            durable.wal.append(&codec::encode_write(namespace, &op))?;
        }
        store.apply(op);
        if let Some(indexer) = self.indexer.get()
            && store.ann().pending() > 0
            && store.len() >= self.ann_min_rows()
        {
            indexer.wake();
        }
        Ok(())
    }

    fn ann_min_rows(&self) -> usize {
        self.ann_min_rows.load(Ordering::Relaxed)
    }

    /// Lets the engine's indexer keep this index's graphs up to date;
    /// namespaces below `min_rows` records are left to exact search. Wakes
    /// the indexer for what a recovered index already holds.
    pub(crate) fn attach_indexer(&self, signal: Arc<Signal>, min_rows: usize) {
        self.ann_min_rows.store(min_rows, Ordering::Relaxed);
        let signal = self.indexer.get_or_init(|| signal);
        signal.wake();
    }

    /// One build step for every namespace with graph work (see `ann`);
    /// returns whether any namespace had some. Errors are logged: the
    /// namespace stays exact-searched until a later step succeeds.
    pub(crate) fn build_step(&self) -> bool {
        let Ok(namespaces) = self.snapshot() else {
            return false;
        };
        let params = self.search_params();
        let min_rows = self.ann_min_rows();
        let mut worked = false;
        for (name, shared) in namespaces {
            let segments = self.durable.as_ref().map(Durable::segments);
            match ann::build_step(
                &self.name,
                &name,
                &shared,
                self.config,
                &params,
                min_rows,
                segments,
            ) {
                Ok(did) => worked |= did,
                Err(err) => {
                    tracing::warn!(index = %self.name, namespace = name.as_str(), error = %err, "building the ANN graph failed; the namespace is searched exactly meanwhile");
                }
            }
        }
        worked
    }

    /// Runs build steps until no namespace has graph work left (tests).
    #[cfg(test)]
    pub(crate) fn build_pending(&self) {
        while self.build_step() {}
    }

    /// How far the ANN graphs have caught up with the writes.
    pub fn indexing_status(&self) -> Result<IndexingStatus> {
        let mut status = IndexingStatus::default();
        for (_, shared) in self.snapshot()? {
            let store = read_lock(&shared)?;
            status.records += store.len() as u64;
            if store.len() >= self.ann_min_rows() {
                status.pending += store.ann().pending() as u64;
            }
            status.graph_nodes += store.ann().graph_nodes() as u64;
            status.index_bytes += store.index_bytes() as u64;
        }
        Ok(status)
    }

    /// Runs `change`, which may log changes, holding the flush gate shared
    /// so that a flush never cuts between a change's append and its apply;
    /// then, with no lock held, flushes if the log has grown past the
    /// threshold.
    fn logged<T>(&self, change: impl FnOnce() -> Result<T>) -> Result<T> {
        let Some(durable) = &self.durable else {
            return change();
        };
        let output = {
            let _gate = read_lock(&durable.gate)?;
            change()?
        };
        if durable.wal.len() >= durable.segments.policy().wal_bytes
            && let Err(err) = self.flush_segments(false)
        {
            // The change is durable in the log, which keeps everything until a flush succeeds.
            tracing::warn!(index = %self.name, error = %err, "flushing or compacting segments failed; the write-ahead log keeps every change and the flush is retried");
        }
        Ok(output)
    }

    /// Flushes every change logged so far to segments and swaps the
    /// manifest (then compacts if a namespace has too many segments), even
    /// below the flush threshold. Returns whether anything was written;
    /// `false` for an in-memory index. Writes continue meanwhile, except
    /// for the moment of the cut (see the crate's `# Durability`).
    pub fn flush(&self) -> Result<bool> {
        self.flush_segments(true)
    }

    /// Segment and log figures of a durable index; `None` in memory.
    pub fn storage_stats(&self) -> Option<StorageStats> {
        let durable = self.durable.as_ref()?;
        Some(durable.segments.stats(&durable.wal))
    }

    /// Stops writing files for good, once a flush in progress is done: the
    /// index is being dropped and its directory removed.
    pub(crate) fn close(&self) {
        if let Some(durable) = &self.durable {
            durable.segments.close();
        }
    }

    /// The log and segments, for tests.
    #[cfg(test)]
    pub(crate) fn durable_parts(&self) -> Option<&Durable> {
        self.durable.as_ref()
    }

    /// A flush (see `flush`). `force`: wait for a flush in progress, and
    /// flush whatever there is; otherwise give up if another flush runs,
    /// the last one failed moments ago, or the log is below the threshold.
    fn flush_segments(&self, force: bool) -> Result<bool> {
        let Some(durable) = &self.durable else {
            return Ok(false);
        };
        let Some(mut state) = durable.segments.begin(force)? else {
            return Ok(false);
        };
        let started = std::time::Instant::now();
        let (wal_start, cut) = match self.cut(durable, &state, force) {
            Ok(Some(cut)) => cut,
            Ok(None) => return Ok(false),
            Err(err) => {
                state.back_off();
                return Err(err);
            }
        };
        durable
            .segments
            .write(&mut state, wal_start, cut, started)?;
        Ok(true)
    }

    /// Step 1 of a flush (see `flush`): with writers paused, starts the next
    /// log file and takes every change since the last cut. Returns the
    /// number of the new file (where replay will start) and the changes;
    /// `None` if there is nothing to flush (or, unless `force`, the log is
    /// below the threshold after all). A failure before the new file exists
    /// takes nothing; after it, nothing can fail.
    fn cut(
        &self,
        durable: &Durable,
        state: &State,
        force: bool,
    ) -> Result<Option<(u64, Vec<Pending>)>> {
        let _gate = write_lock(&durable.gate)?;
        let wal = &durable.wal;
        if !force && wal.len() < durable.segments.policy().wal_bytes {
            // Another flush got there first.
            return Ok(None);
        }
        let empty_log = wal.len() <= wal::HEADER_LEN;
        if empty_log && wal.number() == state.wal_start() && !state.has_pending() {
            return Ok(None);
        }
        // Take every lock first, so the cut cannot stop halfway.
        let namespaces = read_lock(&self.namespaces)?;
        let stores = namespaces
            .iter()
            .map(|(name, shared)| Ok((name, read_lock(shared)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut dropped = lock(&durable.dropped)?;
        let mut rotated = lock(&durable.rotated)?;
        let wal_start = if empty_log {
            wal.number()
        } else {
            let (file, bytes) = (wal.number(), wal.len().saturating_sub(wal::HEADER_LEN));
            let next = wal.rotate()?;
            rotated.push((file, bytes));
            next
        };
        let mut cut: Vec<Pending> = mem::take(&mut *dropped)
            .into_iter()
            .map(Pending::Dropped)
            .collect();
        for (name, store) in &stores {
            if let Some((bytes, cleared)) = store.take_changes(name) {
                cut.push(Pending::Segment {
                    namespace: (*name).clone(),
                    cleared,
                    bytes,
                    written: None,
                });
            }
        }
        Ok(Some((wal_start, cut)))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    mutex.lock().map_err(|_| poisoned())
}

/// Where a page of keys with `prefix` starts: right after the token's key, or
/// at the prefix if there is no token (or the token lies before the prefix).
/// `record`, once counted in `tally` (an error if it passes the answer budget).
fn charged(tally: &mut Tally, record: Record) -> Result<Record> {
    tally.charge(answer::record_bytes(
        &record.id,
        &record.values,
        record.sparse_values.as_ref(),
        record.metadata.as_ref(),
    ))?;
    Ok(record)
}

fn resume_bound<'a>(prefix: &'a str, after: Option<&'a str>) -> Bound<&'a str> {
    match after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    }
}

/// Rejects an update whose metadata, merged into the record's, exceeds 40 KB.
fn check_merged_size(id: &VectorId, current: Option<&Metadata>, patch: &Metadata) -> Result<()> {
    let size = metadata::metadata_json_size(&metadata::merged(current, patch));
    if size > limits::MAX_METADATA_BYTES {
        return Err(Error::invalid(
            "set_metadata",
            format!(
                "merged into the metadata of vector '{id}' it would be {size} bytes as JSON; the limit is {} bytes (40 KB)",
                limits::MAX_METADATA_BYTES
            ),
        ));
    }
    Ok(())
}
