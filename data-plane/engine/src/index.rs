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
//! Lock order: the namespace map before a namespace, never the reverse.

use std::{
    collections::BTreeMap,
    fmt,
    ops::Bound,
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use crate::{
    Error, IndexConfig, JsonObject, Metadata, Namespace, Result, VectorId, codec, limits, metadata,
    namespace::{NamespaceStore, WriteOp},
    pagination::Cursor,
    requests::{
        DeleteRequest, FetchByMetadataRequest, FetchByMetadataResponse, FetchRequest,
        FetchResponse, IndexStats, ListNamespacesRequest, ListNamespacesResponse, ListRequest,
        ListResponse, NamespaceInfo, QueryRequest, QueryResponse, UpdateRequest, UpsertRequest,
    },
    search::SearchQuery,
    validate::{self, DeleteTarget, FetchByMetadata, Page, QueryTarget, Update, UpdateTarget},
    wal::Wal,
};

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

/// One index: its config and its namespaces. All methods take `&self` and are
/// thread-safe (RwLock inside; one lock per namespace so namespaces do not
/// block each other).
pub struct Index {
    name: String,
    config: IndexConfig,
    /// Sorted by name, so listing namespaces is a range scan.
    namespaces: RwLock<BTreeMap<Namespace, SharedStore>>,
    /// The write-ahead log; `None` for an in-memory index.
    wal: Option<Wal>,
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("durable", &self.wal.is_some())
            .finish_non_exhaustive()
    }
}

impl Index {
    /// An empty in-memory index.
    pub(crate) fn new(name: impl Into<String>, config: IndexConfig) -> Self {
        Index {
            name: name.into(),
            config,
            namespaces: RwLock::new(BTreeMap::new()),
            wal: None,
        }
    }

    /// A durable index holding `namespaces` (recovered from `wal`, or empty),
    /// logging every change to `wal`.
    pub(crate) fn durable(
        name: impl Into<String>,
        config: IndexConfig,
        namespaces: BTreeMap<Namespace, NamespaceStore>,
        wal: Wal,
    ) -> Self {
        let namespaces = namespaces
            .into_iter()
            .map(|(name, store)| (name, Arc::new(RwLock::new(store))))
            .collect();
        Index {
            name: name.into(),
            config,
            namespaces: RwLock::new(namespaces),
            wal: Some(wal),
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

    /// Inserts or replaces records, creating the namespace if needed; returns
    /// the number of vectors in the request.
    pub fn upsert(&self, request: UpsertRequest) -> Result<u32> {
        let (namespace, records) = validate::upsert(request, self.config)?;
        let count = u32::try_from(records.len()).expect("an upsert holds at most 1000 vectors");
        self.write(&namespace, true, |_| {
            Ok((Some(WriteOp::Upsert(records)), ()))
        })?;
        Ok(count)
    }

    /// The `top_k` records most similar to a vector or a stored record, best
    /// first (ties by id), among those matching the filter.
    pub fn query(&self, request: QueryRequest) -> Result<QueryResponse> {
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
        response.matches = store
            .search(&search, query.filter.as_ref())
            .into_iter()
            .map(|hit| store.scored(hit, query.include_values, query.include_metadata))
            .collect();
        Ok(response)
    }

    /// Records by id, in request order; missing ids are absent.
    pub fn fetch(&self, request: FetchRequest) -> Result<FetchResponse> {
        let (namespace, ids) = validate::fetch(request)?;
        let mut response = FetchResponse {
            namespace: namespace.as_str().to_owned(),
            vectors: Vec::new(),
        };
        if let Some(shared) = self.existing(&namespace)? {
            let store = read_lock(&shared)?;
            response.vectors = ids
                .iter()
                .filter_map(|id| store.row_of(id.as_str()))
                .map(|row| store.record(row))
                .collect();
        }
        Ok(response)
    }

    /// One page of the records matching a filter, ordered by id.
    pub fn fetch_by_metadata(
        &self,
        request: FetchByMetadataRequest,
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
        response.vectors = page.into_iter().map(|(_, row)| store.record(row)).collect();
        Ok(response)
    }

    /// Deletes records by ids, all of them, or by filter. Missing ids and
    /// namespaces are not an error; the namespace itself stays.
    pub fn delete(&self, request: DeleteRequest) -> Result<()> {
        let (namespace, target) = validate::delete(request)?;
        self.write(&namespace, false, |store| {
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
        let Update {
            namespace,
            target,
            dry_run,
        } = validate::update(request, self.config)?;
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

    /// One page of record ids in ascending byte order.
    pub fn list(&self, request: ListRequest) -> Result<ListResponse> {
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
        response.ids = ids.by_ref().take(limit).map(str::to_owned).collect();
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
        let mut namespaces = write_lock(&self.namespaces)?;
        if namespaces.contains_key(&namespace) {
            return Err(Error::AlreadyExists(format!(
                "namespace '{name}' already exists"
            )));
        }
        if let Some(wal) = &self.wal {
            wal.append(&codec::encode_create_namespace(
                &namespace,
                schema_fields.as_deref(),
            ))?;
        }
        let store = NamespaceStore::new(self.config, schema_fields);
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
        let mut namespaces = write_lock(&self.namespaces)?;
        let shared = namespaces
            .get(&namespace)
            .cloned()
            .ok_or_else(|| namespace_not_found(&namespace))?;
        // Waits for a write in flight, so the removal is logged after it (the
        // map stays locked meanwhile: deleting a namespace is rare).
        let mut store = write_lock(&shared)?;
        debug_assert!(!store.is_dropped(), "a dropped store is not in the map");
        if let Some(wal) = &self.wal {
            wal.append(&codec::encode_delete_namespace(&namespace))?;
        }
        namespaces.remove(&namespace);
        drop(namespaces);
        // Writers that looked the namespace up before its removal see the mark
        // and look it up again (see `write`), so no write is lost in a dead store.
        store.mark_dropped();
        Ok(())
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
                            let mut store = NamespaceStore::new(self.config, None);
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
        if let Some(wal) = &self.wal {
            wal.append(&codec::encode_write(namespace, &op))?;
        }
        store.apply(op);
        Ok(())
    }
}

/// Where a page of keys with `prefix` starts: right after the token's key, or
/// at the prefix if there is no token (or the token lies before the prefix).
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
