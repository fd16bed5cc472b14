//! The write path of an [`Index`]: every record change goes through `Index::write` (lock
//! the namespace, plan a [`WriteOp`]) and `Index::commit` (log it, apply it); before that,
//! backpressure (`pressure`) may refuse a write that adds data. Also namespace creation and
//! deletion, and the build steps the engine's indexer runs on the index's graphs.

use std::sync::{Arc, RwLock, atomic::Ordering};

use super::{Durable, Index, namespace_not_found, vector_not_found};
use crate::{
    Error, Metadata, Namespace, NamespaceInfo, Result, VectorId, codec,
    indexer::Signal,
    limits,
    locks::{lock, write_lock},
    metadata,
    namespace::{NamespaceStore, ann},
    pressure::{self, MemoryBudget},
    record::WriteOp,
    requests::{DeleteRequest, UpdateRequest, UpsertRequest},
    validate::{self, DeleteTarget, Update, UpdateTarget},
};

impl Index {
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
                    // The sparse values, and their entries in the namespace's inverted index.
                    + record.sparse.as_ref().map_or(0, |s| s.len() * 16)
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
                        "index '{}' is writing faster than it can flush: its write-ahead log \
                         holds {} KiB of changes not yet flushed (the limit is {} KiB: {}x the \
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
            memory.admit(pressure::write_bytes(
                self.config,
                self.search_params(),
                rows as u64,
                payload as u64,
            ))?;
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
        match &self.durable {
            Some(durable) => {
                durable.log.append(&codec::encode_create_namespace(
                    &namespace,
                    schema_fields.as_deref(),
                ))?;
            }
            None => self.number_in_memory(),
        }
        let store = self.new_store(schema_fields);
        let info = store.info(&namespace);
        namespaces.insert(namespace, Arc::new(RwLock::new(store)));
        Ok(info)
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
        match &self.durable {
            Some(durable) => {
                durable
                    .log
                    .append(&codec::encode_delete_namespace(&namespace))?;
                lock(&durable.dropped)?.push(namespace.clone());
            }
            None => self.number_in_memory(),
        }
        namespaces.remove(&namespace);
        drop(namespaces);
        // Writers that looked the namespace up before its removal see the mark
        // and look it up again (see `write`), so no write is lost in a dead store.
        store.mark_dropped();
        Ok(())
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
        match &self.durable {
            Some(durable) => {
                durable.log.append(&codec::encode_write(namespace, &op))?;
            }
            None => self.number_in_memory(),
        }
        self.apply(store, op);
        Ok(())
    }

    /// Applies a logged mutation to a locked namespace and wakes the indexer if the
    /// namespace now has rows for its graph (a writer's commit, a follower's batch).
    pub(super) fn apply(&self, store: &mut NamespaceStore, op: WriteOp) {
        store.apply(op);
        if let Some(indexer) = self.indexer.get()
            && store.ann().pending() > 0
            && store.len() >= self.ann_min_rows()
        {
            indexer.wake();
        }
    }

    /// Gives a change of an in-memory index the next LSN (a durable index's log numbers its
    /// records, see `wal`). Called, like an append, with the changed namespace locked and
    /// before the change is applied: see [`Index::last_lsn`] for why.
    fn number_in_memory(&self) {
        self.memory_lsn.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn ann_min_rows(&self) -> usize {
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
