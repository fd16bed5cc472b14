//! The reads of an [`Index`]: query, fetch, fetch by metadata, list, stats, namespaces and
//! indexing status. Each validates its request, read-locks one namespace (or the map) and
//! holds its answer to an [`AnswerBudget`]. Also [`Index::last_lsn`], how fresh a read is.

use std::{
    ops::Bound,
    sync::{Arc, atomic::Ordering},
};

use super::{Index, IndexingStatus, SharedStore, namespace_not_found, vector_not_found};
use crate::{
    AnswerBudget, JsonObject, Namespace, Result,
    answer::{self, Tally},
    locks::read_lock,
    namespace::search::SearchQuery,
    pagination::Cursor,
    requests::{
        FetchByMetadataRequest, FetchByMetadataResponse, FetchRequest, FetchResponse, IndexStats,
        ListNamespacesRequest, ListNamespacesResponse, ListRequest, ListResponse, NamespaceInfo,
        QueryRequest, QueryResponse, Record,
    },
    validate::{self, FetchByMetadata, Page, QueryTarget},
};

impl Index {
    /// The log sequence number (LSN) of the last change of this index (0: none yet).
    ///
    /// Every change that alters something (an upsert, update or delete that changes records,
    /// a namespace created or deleted) takes the next LSN, in the order the changes are
    /// applied to each namespace; a request that changes nothing (deleting ids that are not
    /// there, a dry run) takes none. In a durable index the LSN is the number of the change's
    /// record in the write-ahead log, so LSNs only grow, across flushes and restarts (see
    /// `wal`); in memory they are counted here. In a shared store it is the sequence number
    /// of the change's batch object instead (see `index/log.rs`): changes of one batch share
    /// it and numbers may be skipped (fences), but it still only grows.
    ///
    /// - Read after a change was acknowledged, it is at least that change's LSN.
    /// - Read before a read starts, every change with an LSN up to it is visible to that read:
    ///   a change takes its LSN while it holds its namespace's write lock and keeps the lock
    ///   until it is applied, so a read of that namespace waits for it.
    ///
    /// So a client that compares the LSN returned with a write (read after it) with one
    /// returned with a query (read before it) knows the write is in the answer when the
    /// query's is not lower; that is Pinecone's `x-pinecone-request-lsn` and
    /// `x-pinecone-max-indexed-lsn`.
    pub fn last_lsn(&self) -> u64 {
        match &self.durable {
            Some(durable) => durable.log.last_lsn(),
            None => self.memory_lsn.load(Ordering::Acquire),
        }
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
        let (dense, sparse) = match &query.target {
            QueryTarget::Vector(values) => (values.as_slice(), query.sparse.as_ref()),
            QueryTarget::Id(id) => match store.row_of(id.as_str()) {
                // A sparse index has nothing but the record's sparse values to compare.
                Some(row) if self.config.is_sparse() => {
                    (store.rows().dense(row), store.rows().sparse(row))
                }
                Some(row) => (store.rows().dense(row), query.sparse.as_ref()),
                None => return Err(vector_not_found(id, &query.namespace)),
            },
        };
        let search = SearchQuery::new(self.config.metric, dense, sparse, query.top_k);
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

    /// How far the ANN graphs have caught up with the writes.
    pub fn indexing_status(&self) -> Result<IndexingStatus> {
        let mut status = IndexingStatus::default();
        for (_, shared) in self.snapshot()? {
            let store = read_lock(&shared)?;
            status.records += store.len() as u64;
            // A sparse index builds no graph: nothing of it is ever pending.
            if store.len() >= self.ann_min_rows() && !self.config.is_sparse() {
                status.pending += store.ann().pending() as u64;
            }
            status.graph_nodes += store.ann().graph_nodes() as u64;
            status.index_bytes += store.index_bytes() as u64;
        }
        Ok(status)
    }
}

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

/// Where a page of keys with `prefix` starts: right after the token's key, or
/// at the prefix if there is no token (or the token lies before the prefix).
fn resume_bound<'a>(prefix: &'a str, after: Option<&'a str>) -> Bound<&'a str> {
    match after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    }
}
