//! The per-namespace store: records in columnar rows, a sorted id map, and the
//! typed write operations it applies.
//!
//! Dense values of all records live row-major in chunks of about 1 MiB
//! (`dim` floats per row; [`DenseRows`]), so a scan streams through memory
//! and a growing namespace never copies its values (one `Vec` doubling its
//! capacity would, briefly holding both copies); cosine norms are kept per
//! row. The id map is a `BTreeMap`, which makes listing ids in
//! order and paginating a range scan. Removing a record moves the last row
//! into its place, keeping rows dense.
//!
//! Every change goes through [`NamespaceStore::apply`] with a [`WriteOp`]
//! built from already validated values, so applying never fails and the
//! operation itself is what a write-ahead log will record.
//!
//! The store also remembers what changed since the last flush (see
//! `flush`): the ids written or deleted, and whether everything older was
//! cleared. [`NamespaceStore::take_changes`] turns that into a segment.
//!
//! # Layout
//!
//! The store's search machinery lives in children, part of this module
//! because it and the store are made of each other: `ann` (the graph state a
//! store holds, and the build steps that lock a store to extend it), `sparse`
//! (the inverted index over sparse dimensions) and `search` (a query scoring
//! the store's [`Rows`], and the top-k heap).
//!
//! # Sparse and hybrid queries
//!
//! A query with sparse values scores only the rows its dimensions reach in the
//! inverted index, exactly (dense part plus sparse dot product). In a sparse
//! index that is the whole answer (rows scoring zero are dropped, as Pinecone
//! does). In a dense dotproduct index (hybrid search) every other row's sparse
//! part is zero, so its score is its dense score alone: the dense search (the
//! graph, or a scan) over the rows the sparse part did not reach supplies the
//! best of them. The merged answer is exact wherever the dense search is, so in
//! namespaces too small for a graph; with a graph, it misses only what the graph
//! walk misses among the rows without sparse overlap.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Bound,
    sync::{Mutex, PoisonError},
};

use std::sync::Arc;

use roaring::RoaringBitmap;

use crate::{
    Filter, IndexConfig, Metadata, Namespace, NamespaceInfo, Record, ScoredRecord, SearchParams,
    SparseVector, VectorId,
    bitmap::MetadataIndex,
    distance,
    hnsw::{Graph, Node},
    metadata,
    record::{NewRecord, WriteOp},
    segment::{self, RecordRef},
};

pub(crate) mod ann;
pub(crate) mod search;
pub(crate) mod sparse;

use ann::{Ann, Candidates};
use search::{Hit, SearchQuery};
use sparse::SparseIndex;

/// Bytes of dense values per chunk of [`DenseRows`] (at least one row).
const CHUNK_BYTES: usize = 1 << 20;

/// Dense values, `dim` floats per row, in chunks of at most [`CHUNK_BYTES`] (a power of two
/// of rows, so finding a row is a shift and a mask on the scan path): appending
/// fills the last chunk or starts a new one, so what is stored is never copied
/// to make room (with an allocator that cannot grow a block in place, a `Vec`
/// doubling its capacity briefly holds the old and the new copy: twice the
/// namespace's values in resident memory).
#[derive(Debug)]
struct DenseRows {
    dim: usize,
    /// Rows per chunk: `1 << shift`.
    per_chunk: usize,
    shift: u32,
    chunks: Vec<Vec<f32>>,
    len: usize,
}

impl DenseRows {
    fn new(dim: usize) -> Self {
        let fit = (CHUNK_BYTES / (dim.max(1) * size_of::<f32>())).max(1);
        DenseRows::with_rows_per_chunk(dim, fit.ilog2())
    }

    /// `1 << shift` rows per chunk.
    fn with_rows_per_chunk(dim: usize, shift: u32) -> Self {
        DenseRows {
            dim,
            per_chunk: 1 << shift,
            shift,
            chunks: Vec::new(),
            len: 0,
        }
    }

    /// The chunk holding `row` and where its values start in it.
    fn locate(&self, row: usize) -> (usize, usize) {
        (row >> self.shift, (row & (self.per_chunk - 1)) * self.dim)
    }

    fn get(&self, row: usize) -> &[f32] {
        let (chunk, start) = self.locate(row);
        &self.chunks[chunk][start..start + self.dim]
    }

    fn get_mut(&mut self, row: usize) -> &mut [f32] {
        let (chunk, start) = self.locate(row);
        &mut self.chunks[chunk][start..start + self.dim]
    }

    fn push(&mut self, values: &[f32]) {
        if self.len == self.chunks.len() * self.per_chunk {
            // The first chunk grows with the namespace (small namespaces stay small); later
            // ones are allocated whole.
            let capacity = if self.chunks.is_empty() {
                0
            } else {
                self.per_chunk * self.dim
            };
            self.chunks.push(Vec::with_capacity(capacity));
        }
        self.chunks
            .last_mut()
            .expect("a chunk was just ensured")
            .extend_from_slice(values);
        self.len += 1;
    }

    /// Moves the last row into `row` and drops the last row.
    fn swap_remove(&mut self, row: usize) {
        let last = self.len - 1;
        if row != last {
            let ((to, to_start), (from, from_start)) = (self.locate(row), self.locate(last));
            if to == from {
                self.chunks[to].copy_within(from_start..from_start + self.dim, to_start);
            } else {
                let (head, tail) = self.chunks.split_at_mut(from);
                head[to][to_start..to_start + self.dim]
                    .copy_from_slice(&tail[0][from_start..from_start + self.dim]);
            }
        }
        let chunk = self.chunks.last_mut().expect("a row to remove");
        chunk.truncate(chunk.len() - self.dim);
        self.len -= 1;
        // Drop the last chunk once it holds no row, counted by rows: without dense values (a
        // sparse index) every chunk is an empty `Vec`.
        if self.chunks.len() > 1 && self.len == (self.chunks.len() - 1) * self.per_chunk {
            self.chunks.pop();
        }
    }
}

/// The records of one namespace, column by column; row `i` of every column
/// belongs to the same record.
#[derive(Debug)]
pub(crate) struct Rows {
    dim: usize,
    /// Row-major dense values, `dim` per row.
    values: DenseRows,
    /// Euclidean norm of each row, for cosine.
    norms: Vec<f32>,
    ids: Vec<VectorId>,
    sparse: Vec<Option<SparseVector>>,
    metadata: Vec<Option<Metadata>>,
}

impl Rows {
    fn new(dim: usize) -> Self {
        Rows {
            dim,
            values: DenseRows::new(dim),
            norms: Vec::new(),
            ids: Vec::new(),
            sparse: Vec::new(),
            metadata: Vec::new(),
        }
    }

    /// Number of rows.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Dense values of `row`.
    pub(crate) fn dense(&self, row: usize) -> &[f32] {
        self.values.get(row)
    }

    /// Norm of `row`'s dense values.
    pub(crate) fn norm(&self, row: usize) -> f32 {
        self.norms[row]
    }

    /// Id of `row`.
    pub(crate) fn id(&self, row: usize) -> &VectorId {
        &self.ids[row]
    }

    /// Sparse values of `row`.
    pub(crate) fn sparse(&self, row: usize) -> Option<&SparseVector> {
        self.sparse[row].as_ref()
    }

    /// Metadata of `row`.
    pub(crate) fn metadata(&self, row: usize) -> Option<&Metadata> {
        self.metadata[row].as_ref()
    }

    fn push(&mut self, record: NewRecord) -> usize {
        debug_assert_eq!(record.values.len(), self.dim);
        self.norms.push(distance::norm(&record.values));
        self.values.push(&record.values);
        self.ids.push(record.id);
        self.sparse.push(record.sparse);
        self.metadata.push(record.metadata);
        self.len() - 1
    }

    fn set_dense(&mut self, row: usize, values: &[f32]) {
        debug_assert_eq!(values.len(), self.dim);
        self.values.get_mut(row).copy_from_slice(values);
        self.norms[row] = distance::norm(values);
    }

    /// Removes `row` by moving the last row into it; returns the old position
    /// of the moved row, if one moved.
    fn swap_remove(&mut self, row: usize) -> Option<usize> {
        let last = self.len() - 1;
        self.values.swap_remove(row);
        self.norms.swap_remove(row);
        self.ids.swap_remove(row);
        self.sparse.swap_remove(row);
        self.metadata.swap_remove(row);
        (row != last).then_some(last)
    }

    fn clear(&mut self) {
        *self = Rows::new(self.dim);
    }

    /// Bytes of `row` beyond its dense values: id, sparse values and metadata.
    fn payload_bytes(&self, row: usize) -> u64 {
        let sparse = self.sparse(row).map_or(0, |s| s.len() * 8);
        let metadata = self.metadata(row).map_or(0, metadata::estimated_bytes);
        (self.ids[row].as_str().len() + sparse + metadata) as u64
    }
}

/// The sparse indices of `row` (none without sparse values), for the sparse index.
fn sparse_indices(rows: &Rows, row: usize) -> &[u32] {
    rows.sparse(row).map_or(&[], |sparse| &sparse.indices)
}

/// What changed in a namespace since the last flush.
#[derive(Debug)]
struct Changes {
    /// Off in an in-memory index, which never flushes.
    tracking: bool,
    /// Nothing older than this store survives: it was created (or
    /// re-created) or emptied by `delete_all` since the last flush.
    cleared: bool,
    /// Ids written or deleted since the last flush (or since `cleared`).
    dirty: BTreeSet<VectorId>,
}

/// One namespace: its records, id map and search structure.
#[derive(Debug)]
pub(crate) struct NamespaceStore {
    /// Id → row, sorted so listing and pagination are range scans.
    by_id: BTreeMap<VectorId, usize>,
    rows: Rows,
    /// The ANN graph over the rows and which rows it covers.
    ann: Ann,
    /// Metadata value → rows, answering filters without visiting every row.
    metadata_index: MetadataIndex,
    /// Sparse dimension → rows, so sparse and hybrid queries visit only the rows they reach.
    sparse_index: SparseIndex,
    /// Metadata fields declared by `create_namespace`; informational for now.
    schema_fields: Option<Vec<String>>,
    /// Sum of [`Rows::payload_bytes`] over all rows, kept current by `apply`.
    payload_bytes: u64,
    /// Set when `delete_namespace` removed this store from its index; a writer
    /// that locked it afterwards must look the namespace up again.
    dropped: bool,
    /// What changed since the last flush. Writers update it through `&mut
    /// self` (no locking); a flush takes it under a *read* lock of the
    /// store while no writer runs (the index's flush gate), so readers are
    /// not held up.
    changes: Mutex<Changes>,
}

impl NamespaceStore {
    /// An empty namespace of an index with `config`.
    pub(crate) fn new(config: IndexConfig, schema_fields: Option<Vec<String>>) -> Self {
        NamespaceStore {
            by_id: BTreeMap::new(),
            rows: Rows::new(config.dimension.len()),
            ann: Ann::new(),
            metadata_index: MetadataIndex::new(),
            sparse_index: SparseIndex::new(),
            schema_fields,
            payload_bytes: 0,
            dropped: false,
            changes: Mutex::new(Changes {
                tracking: true,
                cleared: true,
                dirty: BTreeSet::new(),
            }),
        }
    }

    /// This store without change tracking, for an index that never flushes.
    pub(crate) fn untracked(mut self) -> Self {
        let changes = self.changes();
        changes.tracking = false;
        changes.cleared = false;
        self
    }

    fn changes(&mut self) -> &mut Changes {
        self.changes
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the changes since the last flush: for a store just loaded
    /// from segments, which hold all of it.
    pub(crate) fn mark_clean(&mut self) {
        let changes = self.changes();
        changes.cleared = false;
        changes.dirty.clear();
    }

    /// Sets the declared metadata fields, as a loaded segment says.
    pub(crate) fn restore_schema(&mut self, schema_fields: Option<Vec<String>>) {
        self.schema_fields = schema_fields;
    }

    /// If anything changed since the last flush, the segment of namespace
    /// `name` holding it (the current state of every changed id, a
    /// tombstone for each deleted one) and whether it clears everything
    /// older; the store then counts as flushed. The caller makes sure no
    /// writer runs meanwhile.
    pub(crate) fn take_changes(&self, name: &Namespace) -> Option<(Vec<u8>, bool)> {
        let mut changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        if !changes.cleared && changes.dirty.is_empty() {
            return None;
        }
        let mut records = Vec::new();
        let mut tombstones = Vec::new();
        for id in &changes.dirty {
            match self.row_of(id.as_str()) {
                Some(row) => records.push(RecordRef {
                    id,
                    values: self.rows.dense(row),
                    sparse: self.rows.sparse(row),
                    metadata: self.rows.metadata(row),
                }),
                // After a clear there is nothing older for a tombstone to hide.
                None if !changes.cleared => tombstones.push(id),
                None => {}
            }
        }
        let header = segment::Header {
            namespace: name.clone(),
            cleared: changes.cleared,
            schema_fields: self.schema_fields.clone(),
        };
        let bytes = segment::encode(&header, self.rows.dim, &records, &tombstones);
        let cleared = changes.cleared;
        changes.cleared = false;
        changes.dirty.clear();
        Some((bytes, cleared))
    }

    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// The record rows.
    pub(crate) fn rows(&self) -> &Rows {
        &self.rows
    }

    /// The row of record `id`, if it exists.
    pub(crate) fn row_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// Ids and rows in ascending id order, starting at `start`.
    pub(crate) fn ids_from<'a>(
        &'a self,
        start: Bound<&str>,
    ) -> impl Iterator<Item = (&'a VectorId, usize)> + use<'a> {
        self.by_id
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(id, row)| (id, *row))
    }

    /// Whether row `row` satisfies `filter` (no filter: every row does).
    pub(crate) fn row_matches(&self, row: usize, filter: Option<&Filter>) -> bool {
        filter.is_none_or(|f| f.matches_record(self.rows.metadata(row)))
    }

    /// Ids and rows of the records matching `filter`, in ascending id order.
    pub(crate) fn matching<'a>(
        &'a self,
        filter: &'a Filter,
    ) -> impl Iterator<Item = (&'a VectorId, usize)> {
        self.by_id
            .iter()
            .map(|(id, row)| (id, *row))
            .filter(|(_, row)| self.row_matches(*row, Some(filter)))
    }

    /// Number of records matching `filter`.
    pub(crate) fn count_matching(&self, filter: Option<&Filter>) -> u64 {
        match filter {
            None => self.len() as u64,
            Some(filter) => self
                .metadata_index
                .matching(filter, self.len() as u32)
                .len(),
        }
    }

    /// The best rows for `query` among those matching `filter`.
    pub(crate) fn search(
        &self,
        query: &SearchQuery<'_>,
        filter: Option<&Filter>,
        params: &SearchParams,
    ) -> Vec<Hit> {
        let allowed = filter.map(|filter| self.metadata_index.matching(filter, self.len() as u32));
        if let Some(sparse) = query.sparse() {
            return self.search_sparse(query, sparse, allowed.as_ref(), params);
        }
        let candidates = Candidates {
            rows: &self.rows,
            allowed: allowed.as_ref(),
        };
        self.ann.search(&candidates, query, params)
    }

    /// A query with a sparse part: the rows its dimensions reach, scored exactly, and in a
    /// dense index the dense search's best among the others (see the module docs).
    fn search_sparse(
        &self,
        query: &SearchQuery<'_>,
        sparse: &SparseVector,
        allowed: Option<&RoaringBitmap>,
        params: &SearchParams,
    ) -> Vec<Hit> {
        let rows = &self.rows;
        let sparse_only = rows.dim == 0;
        let dots = self.sparse_index.dot_products(sparse);
        let mut top = query.ranking(rows);
        for (row, dot) in dots.iter() {
            if allowed.is_some_and(|allowed| !allowed.contains(row as u32)) {
                continue;
            }
            let score = query.score_with_sparse(rows, row, dot);
            if sparse_only && score == 0.0 {
                continue;
            }
            top.push(rows.id(row).as_str(), Hit { row, score });
        }
        if !sparse_only {
            let rest = if dots.len() == 0 {
                allowed.cloned()
            } else {
                let mut rest = allowed.cloned().unwrap_or_else(|| {
                    let mut all = RoaringBitmap::new();
                    all.insert_range(0..rows.len() as u32);
                    all
                });
                for (row, _) in dots.iter() {
                    rest.remove(row as u32);
                }
                Some(rest)
            };
            let candidates = Candidates {
                rows,
                allowed: rest.as_ref(),
            };
            for hit in self.ann.search(&candidates, &query.dense_only(), params) {
                top.push(rows.id(hit.row).as_str(), hit);
            }
        }
        top.into_hits()
    }

    /// The ANN state, for the indexer.
    pub(crate) fn ann(&self) -> &Ann {
        &self.ann
    }

    /// Memory held by the ANN graph, the metadata index and the sparse index.
    pub(crate) fn index_bytes(&self) -> usize {
        self.ann.memory_bytes()
            + self.metadata_index.memory_bytes()
            + self.sparse_index.memory_bytes()
    }

    /// Swaps in a graph the indexer built (see `ann::build_step`).
    pub(crate) fn publish_graph(
        &mut self,
        epoch: u64,
        rebuild: bool,
        published: Arc<Graph>,
        working: Graph,
        inserted: &[(Node, VectorId, u64)],
    ) -> (usize, usize) {
        let by_id = &self.by_id;
        self.ann
            .publish(epoch, rebuild, published, working, inserted, |id| {
                by_id.get(id).copied()
            })
    }

    /// The whole record at `row`.
    pub(crate) fn record(&self, row: usize) -> Record {
        Record {
            id: self.rows.id(row).to_string(),
            values: self.rows.dense(row).to_vec(),
            sparse_values: self.rows.sparse(row).cloned(),
            metadata: self.rows.metadata(row).cloned(),
        }
    }

    /// A query match, carrying values and metadata only when asked for.
    pub(crate) fn scored(
        &self,
        hit: Hit,
        include_values: bool,
        include_metadata: bool,
    ) -> ScoredRecord {
        let row = hit.row;
        ScoredRecord {
            id: self.rows.id(row).to_string(),
            score: hit.score,
            values: if include_values {
                self.rows.dense(row).to_vec()
            } else {
                Vec::new()
            },
            sparse_values: if include_values {
                self.rows.sparse(row).cloned()
            } else {
                None
            },
            metadata: if include_metadata {
                self.rows.metadata(row).cloned()
            } else {
                None
            },
        }
    }

    /// Counts and size of this namespace, reported under `name`.
    pub(crate) fn info(&self, name: &Namespace) -> NamespaceInfo {
        let per_row = (self.rows.dim * size_of::<f32>() + size_of::<f32>()) as u64;
        NamespaceInfo {
            name: name.as_str().to_owned(),
            record_count: self.len() as u64,
            size_bytes: self.len() as u64 * per_row + self.payload_bytes,
            schema_fields: self.schema_fields.clone(),
        }
    }

    /// Whether `delete_namespace` has removed this store.
    pub(crate) fn is_dropped(&self) -> bool {
        self.dropped
    }

    /// Marks this store as removed from its index and frees its records.
    pub(crate) fn mark_dropped(&mut self) {
        self.apply(WriteOp::DeleteAll);
        self.dropped = true;
    }

    /// Applies one validated mutation, remembering it for the next flush.
    pub(crate) fn apply(&mut self, op: WriteOp) {
        self.track(&op);
        self.restore(op);
    }

    /// Applies a mutation read back from a segment: it is already flushed.
    pub(crate) fn restore(&mut self, op: WriteOp) {
        match op {
            WriteOp::Upsert(records) => records.into_iter().for_each(|record| self.put(record)),
            WriteOp::Delete(ids) => ids.iter().for_each(|id| self.remove(id)),
            WriteOp::DeleteAll => {
                self.by_id.clear();
                self.rows.clear();
                self.payload_bytes = 0;
                self.ann.cleared();
                self.metadata_index.clear();
                self.sparse_index.clear();
            }
            WriteOp::Update {
                id,
                values,
                sparse,
                patch,
            } => {
                let Some(row) = self.row_of(id.as_str()) else {
                    return;
                };
                self.payload_bytes -= self.rows.payload_bytes(row);
                if let Some(values) = values {
                    self.rows.set_dense(row, &values);
                    self.ann.row_changed(row);
                }
                if let Some(sparse) = sparse {
                    self.set_sparse(row, Some(sparse));
                }
                if let Some(patch) = patch {
                    self.merge_metadata(row, &patch);
                }
                self.payload_bytes += self.rows.payload_bytes(row);
            }
            WriteOp::MergeMetadata { ids, patch } => {
                for id in &ids {
                    if let Some(row) = self.row_of(id.as_str()) {
                        self.payload_bytes -= self.rows.payload_bytes(row);
                        self.merge_metadata(row, &patch);
                        self.payload_bytes += self.rows.payload_bytes(row);
                    }
                }
            }
        }
    }

    /// Remembers which ids `op` is about to change, for the next flush.
    fn track(&mut self, op: &WriteOp) {
        if !self.changes().tracking {
            return;
        }
        let existing: Vec<VectorId> = match op {
            WriteOp::Upsert(records) => {
                let ids = records.iter().map(|r| r.id.clone());
                self.changes().dirty.extend(ids);
                return;
            }
            WriteOp::DeleteAll => {
                let changes = self.changes();
                changes.cleared = true;
                changes.dirty.clear();
                return;
            }
            WriteOp::Delete(ids) | WriteOp::MergeMetadata { ids, .. } => ids
                .iter()
                .filter(|id| self.by_id.contains_key(id.as_str()))
                .cloned()
                .collect(),
            WriteOp::Update { id, .. } => self
                .by_id
                .contains_key(id.as_str())
                .then(|| id.clone())
                .into_iter()
                .collect(),
        };
        self.changes().dirty.extend(existing);
    }

    fn put(&mut self, record: NewRecord) {
        if let Some(row) = self.row_of(record.id.as_str()) {
            self.payload_bytes -= self.rows.payload_bytes(row);
            self.metadata_index
                .remove(row as u32, self.rows.metadata[row].as_ref());
            self.rows.set_dense(row, &record.values);
            self.set_sparse(row, record.sparse);
            self.rows.metadata[row] = record.metadata;
            self.metadata_index
                .insert(row as u32, self.rows.metadata[row].as_ref());
            self.payload_bytes += self.rows.payload_bytes(row);
            self.ann.row_changed(row);
        } else {
            let id = record.id.clone();
            let row = self.rows.push(record);
            if let Some(sparse) = self.rows.sparse(row) {
                self.sparse_index.insert(row, sparse);
            }
            self.by_id.insert(id, row);
            self.payload_bytes += self.rows.payload_bytes(row);
            self.metadata_index
                .insert(row as u32, self.rows.metadata[row].as_ref());
            self.ann.row_added();
        }
    }

    fn remove(&mut self, id: &VectorId) {
        let Some(row) = self.by_id.remove(id.as_str()) else {
            return;
        };
        self.payload_bytes -= self.rows.payload_bytes(row);
        self.metadata_index
            .remove(row as u32, self.rows.metadata[row].as_ref());
        if let Some(sparse) = self.rows.sparse(row) {
            let rows = &self.rows;
            self.sparse_index
                .remove(row, sparse, |other| sparse_indices(rows, other));
        }
        let moved_from = self.rows.swap_remove(row);
        if let Some(last) = moved_from {
            self.metadata_index
                .move_row(last as u32, row as u32, self.rows.metadata[row].as_ref());
            if let Some(sparse) = self.rows.sparse(row) {
                self.sparse_index.move_row(last, row, sparse);
            }
        }
        if moved_from.is_some() {
            let moved = self.by_id.get_mut(self.rows.ids[row].as_str());
            debug_assert!(moved.is_some(), "every row's id is in the id map");
            if let Some(slot) = moved {
                *slot = row;
            }
        }
        self.ann.row_removed(row, moved_from);
    }

    /// Replaces the sparse values of `row`, keeping the sparse index in step.
    fn set_sparse(&mut self, row: usize, sparse: Option<SparseVector>) {
        if let Some(old) = self.rows.sparse(row) {
            let rows = &self.rows;
            self.sparse_index
                .remove(row, old, |other| sparse_indices(rows, other));
        }
        if let Some(new) = &sparse {
            self.sparse_index.insert(row, new);
        }
        self.rows.sparse[row] = sparse;
    }

    fn merge_metadata(&mut self, row: usize, patch: &Metadata) {
        if patch.is_empty() {
            return;
        }
        self.metadata_index
            .remove(row as u32, self.rows.metadata[row].as_ref());
        let metadata = self.rows.metadata[row].get_or_insert_with(Metadata::new);
        metadata.extend(patch.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.metadata_index
            .insert(row as u32, self.rows.metadata[row].as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dimension, MetadataValue, Metric};

    fn store() -> NamespaceStore {
        NamespaceStore::new(
            IndexConfig {
                dimension: Dimension::new(2).unwrap(),
                metric: Metric::Cosine,
            },
            None,
        )
    }

    fn record(id: &str, values: [f32; 2]) -> NewRecord {
        NewRecord {
            id: VectorId::parse("id", id).unwrap(),
            values: values.to_vec(),
            sparse: None,
            metadata: None,
        }
    }

    fn id(s: &str) -> VectorId {
        VectorId::parse("id", s).unwrap()
    }

    #[test]
    fn dense_rows_span_chunks_and_swap_remove_across_them() {
        // 4 rows per chunk, so 8 rows fill 2 chunks; a model `Vec` says what each row holds.
        let mut rows = DenseRows::with_rows_per_chunk(2, 2);
        let mut model: Vec<[f32; 2]> = Vec::new();
        let check = |rows: &DenseRows, model: &Vec<[f32; 2]>| {
            assert_eq!(rows.len, model.len());
            assert_eq!(rows.chunks.len(), model.len().div_ceil(4).max(1));
            for (row, values) in model.iter().enumerate() {
                assert_eq!(rows.get(row), values, "row {row}");
            }
        };
        for i in 0..8 {
            let values = [i as f32, -(i as f32)];
            rows.push(&values);
            model.push(values);
        }
        check(&rows, &model);
        // Across chunks (the last chunk then emptied), the last row itself, within one chunk.
        for row in [1, 6, 0, 4, 0, 1, 0, 0] {
            rows.swap_remove(row);
            model.swap_remove(row);
            check(&rows, &model);
        }
        // Empty again: pushing starts over in the kept first chunk.
        rows.push(&[9.0, 9.0]);
        model.push([9.0, 9.0]);
        check(&rows, &model);
        rows.get_mut(0).copy_from_slice(&[1.0, 2.0]);
        assert_eq!(rows.get(0), [1.0, 2.0]);
    }

    #[test]
    fn rows_without_dense_values_still_count_their_chunks() {
        // A sparse index: no floats at all, so chunks are counted by rows alone.
        let mut rows = DenseRows::with_rows_per_chunk(0, 2);
        for _ in 0..9 {
            rows.push(&[]);
        }
        assert_eq!((rows.len, rows.chunks.len()), (9, 3));
        for row in [8, 0, 3, 1, 0] {
            rows.swap_remove(row);
            assert_eq!(rows.chunks.len(), rows.len.div_ceil(4).max(1));
            for row in 0..rows.len {
                assert!(rows.get(row).is_empty());
            }
        }
    }

    /// Every id maps to the row holding it, and the columns agree in length.
    fn assert_consistent(store: &NamespaceStore) {
        assert_eq!(store.by_id.len(), store.rows.len());
        assert_eq!(store.rows.values.len, store.rows.len());
        let stored: usize = store.rows.values.chunks.iter().map(Vec::len).sum();
        assert_eq!(stored, store.rows.len() * store.rows.dim);
        assert_eq!(store.rows.norms.len(), store.rows.len());
        for (id, row) in &store.by_id {
            assert_eq!(store.rows.id(*row), id);
        }
        let payload: u64 = (0..store.len())
            .map(|row| store.rows.payload_bytes(row))
            .sum();
        assert_eq!(payload, store.payload_bytes);
    }

    /// The segment a flush would take now, decoded: (cleared, records, tombstones).
    fn taken(store: &NamespaceStore) -> Option<(bool, Vec<String>, Vec<String>)> {
        let (bytes, cleared) = store.take_changes(&Namespace::default())?;
        let segment = segment::decode(&bytes, 2).unwrap();
        assert_eq!(segment.header.cleared, cleared);
        let names = |ids: Vec<&VectorId>| ids.into_iter().map(|id| id.to_string()).collect();
        Some((
            cleared,
            names(segment.records.iter().map(|r| &r.id).collect()),
            names(segment.tombstones.iter().collect()),
        ))
    }

    #[test]
    fn changes_since_the_last_flush_become_one_segment() {
        let mut store = store();
        assert_eq!(
            taken(&store),
            Some((true, vec![], vec![])),
            "a new namespace"
        );
        assert_eq!(taken(&store), None, "nothing changed since");
        store.apply(WriteOp::Upsert(vec![
            record("b", [1.0, 0.0]),
            record("a", [0.0, 1.0]),
        ]));
        assert_eq!(
            taken(&store),
            Some((false, vec!["a".into(), "b".into()], vec![]))
        );
        store.apply(WriteOp::Delete(vec![id("a"), id("never")]));
        store.apply(WriteOp::Update {
            id: id("b"),
            values: Some(vec![2.0, 2.0]),
            sparse: None,
            patch: None,
        });
        store.apply(WriteOp::Upsert(vec![record("c", [1.0, 1.0])]));
        store.apply(WriteOp::Delete(vec![id("c")]));
        assert_eq!(
            taken(&store),
            Some((false, vec!["b".into()], vec!["a".into(), "c".into()]))
        );
        // After a clear, nothing older survives: no tombstones are needed.
        store.apply(WriteOp::Upsert(vec![record("d", [1.0, 1.0])]));
        store.apply(WriteOp::DeleteAll);
        store.apply(WriteOp::Upsert(vec![record("e", [1.0, 1.0])]));
        store.apply(WriteOp::Delete(vec![id("e")]));
        assert_eq!(taken(&store), Some((true, vec![], vec![])));

        // An in-memory index keeps no record of changes.
        let mut untracked = self::store().untracked();
        untracked.apply(WriteOp::Upsert(vec![record("a", [1.0, 0.0])]));
        untracked.apply(WriteOp::DeleteAll);
        assert_eq!(taken(&untracked), None);
    }

    #[test]
    fn removal_moves_the_last_row_into_the_hole() {
        let mut store = store();
        store.apply(WriteOp::Upsert(vec![
            record("a", [1.0, 0.0]),
            record("b", [0.0, 2.0]),
            record("c", [3.0, 4.0]),
        ]));
        store.apply(WriteOp::Delete(vec![id("a"), id("missing")]));
        assert_consistent(&store);
        let row = store.row_of("c").unwrap();
        assert_eq!(row, 0);
        assert_eq!(store.rows.dense(row), [3.0, 4.0]);
        assert_eq!(store.rows.norm(row), 5.0);
        store.apply(WriteOp::Delete(vec![id("c"), id("b")]));
        assert_eq!(store.len(), 0);
        assert_consistent(&store);
    }

    #[test]
    fn upsert_overwrites_in_place_and_updates_merge() {
        let mut store = store();
        store.apply(WriteOp::Upsert(vec![
            record("a", [1.0, 0.0]),
            record("a", [0.0, 3.0]),
        ]));
        assert_eq!(store.len(), 1);
        assert_eq!(store.rows.dense(0), [0.0, 3.0]);
        assert_eq!(store.rows.norm(0), 3.0);
        let patch = Metadata::from([("k".to_owned(), MetadataValue::Bool(true))]);
        store.apply(WriteOp::Update {
            id: id("a"),
            values: Some(vec![6.0, 8.0]),
            sparse: None,
            patch: Some(patch.clone()),
        });
        assert_eq!(store.rows.norm(0), 10.0);
        assert_eq!(store.rows.metadata(0), Some(&patch));
        assert_consistent(&store);
        store.apply(WriteOp::DeleteAll);
        assert_eq!(store.len(), 0);
        assert_consistent(&store);
        assert_eq!(store.info(&Namespace::default()).size_bytes, 0);
    }

    /// What the inverted index must agree with: every row scored by [`SearchQuery::score`]
    /// (ties by id), rows scoring zero dropped in a sparse index.
    fn brute_force(
        store: &NamespaceStore,
        query: &SearchQuery<'_>,
        filter: Option<&Filter>,
    ) -> Vec<(String, f32)> {
        let rows = store.rows();
        let mut scored: Vec<(String, f32)> = (0..rows.len())
            .filter(|row| store.row_matches(*row, filter))
            .map(|row| (rows.id(row).to_string(), query.score(rows, row)))
            .filter(|(_, score)| rows.dim > 0 || *score != 0.0)
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        scored.truncate(query.top_k());
        scored
    }

    fn searched(
        store: &NamespaceStore,
        query: &SearchQuery<'_>,
        filter: Option<&Filter>,
    ) -> Vec<(String, f32)> {
        store
            .search(query, filter, &SearchParams::default())
            .into_iter()
            .map(|hit| (store.rows().id(hit.row).to_string(), hit.score))
            .collect()
    }

    fn sparse_vector(entries: &[(u32, f32)]) -> SparseVector {
        let mut entries = entries.to_vec();
        entries.sort_by_key(|e| e.0);
        entries.dedup_by_key(|e| e.0);
        SparseVector {
            indices: entries.iter().map(|e| e.0).collect(),
            values: entries.iter().map(|e| e.1).collect(),
        }
    }

    #[test]
    fn sparse_queries_reach_only_overlapping_rows_and_drop_zero_scores() {
        let mut store = NamespaceStore::new(IndexConfig::sparse(), None);
        let record = |id: &str, entries: &[(u32, f32)]| NewRecord {
            id: VectorId::parse("id", id).unwrap(),
            values: Vec::new(),
            sparse: Some(sparse_vector(entries)),
            metadata: None,
        };
        store.apply(WriteOp::Upsert(vec![
            record("a", &[(1, 1.0), (5, 2.0)]),
            record("b", &[(5, 1.0)]),
            record("c", &[(9, 4.0)]),
            record("d", &[(1, 2.0), (5, -1.0)]),
        ]));
        let query = sparse_vector(&[(1, 1.0), (5, 2.0)]);
        let search = SearchQuery::new(Metric::DotProduct, &[], Some(&query), 10);
        // d scores 2 - 2 = 0 and c shares no dimension: both dropped.
        assert_eq!(
            searched(&store, &search, None),
            [("a".to_owned(), 5.0), ("b".to_owned(), 2.0)]
        );
        // Updating and deleting keep the posting lists in step.
        store.apply(WriteOp::Update {
            id: id("c"),
            values: None,
            sparse: Some(sparse_vector(&[(5, 10.0)])),
            patch: None,
        });
        store.apply(WriteOp::Delete(vec![id("a")]));
        assert_eq!(
            searched(&store, &search, None),
            [("c".to_owned(), 20.0), ("b".to_owned(), 2.0)]
        );
        assert!(store.index_bytes() > 0);
        store.apply(WriteOp::DeleteAll);
        assert_eq!(searched(&store, &search, None), []);
    }

    /// A generated record: dense values (for hybrid stores), sparse entries, a group for filters.
    type Generated = ([f32; 2], Option<Vec<(u32, f32)>>, u8);

    fn generated() -> impl proptest::strategy::Strategy<Value = Generated> {
        use proptest::prelude::*;
        let value = prop_oneof![(-4i8..=4).prop_map(|v| f32::from(v) / 2.0), -2.0f32..2.0];
        let entries = prop::collection::vec((0u32..24, value.clone()), 1..6);
        (
            [value.clone(), value],
            prop::option::weighted(0.8, entries),
            0u8..3,
        )
    }

    proptest::proptest! {
        /// Through upserts, overwrites, sparse updates and deletes, a query through the
        /// inverted index returns what a scan of every row does: same ids, order and scores,
        /// for sparse stores and for hybrid (dotproduct) ones, with and without a filter.
        #[test]
        fn sparse_and_hybrid_search_equal_a_brute_force_scan(
            sparse_only in proptest::bool::ANY,
            records in proptest::collection::vec((0usize..40, generated()), 1..80),
            updates in proptest::collection::vec((0usize..40, generated()), 0..10),
            deletes in proptest::collection::vec(0usize..40, 0..15),
            query in proptest::collection::vec((0u32..24, -2.0f32..2.0), 1..6),
            dense_query in [-2.0f32..2.0, -2.0f32..2.0],
            group in proptest::option::of(0u8..3),
            top_k in 1usize..30,
        ) {
            let config = if sparse_only {
                IndexConfig::sparse()
            } else {
                IndexConfig { dimension: Dimension::new(2).unwrap(), metric: Metric::DotProduct }
            };
            let mut store = NamespaceStore::new(config, None);
            let new_record = |i: usize, (values, entries, group): Generated| NewRecord {
                id: id(&format!("r{i}")),
                values: if sparse_only { Vec::new() } else { values.to_vec() },
                sparse: match entries {
                    None if sparse_only => Some(sparse_vector(&[(0, 1.0)])),
                    entries => entries.map(|e| sparse_vector(&e)),
                },
                metadata: Some(Metadata::from([(
                    "g".to_owned(),
                    MetadataValue::Number(f64::from(group)),
                )])),
            };
            store.apply(WriteOp::Upsert(
                records.into_iter().map(|(i, r)| new_record(i, r)).collect(),
            ));
            for (i, generated) in updates {
                let record = new_record(i, generated);
                store.apply(WriteOp::Update {
                    id: record.id,
                    values: None,
                    sparse: record.sparse,
                    patch: None,
                });
            }
            store.apply(WriteOp::Delete(deletes.into_iter().map(|i| id(&format!("r{i}"))).collect()));

            let query = sparse_vector(&query);
            let dense: &[f32] = if sparse_only { &[] } else { &dense_query };
            let search = SearchQuery::new(Metric::DotProduct, dense, Some(&query), top_k);
            let filter = group.map(|g| {
                Filter::parse(&crate::test_support::object(serde_json::json!({"g": g}))).unwrap()
            });
            proptest::prop_assert_eq!(
                searched(&store, &search, filter.as_ref()),
                brute_force(&store, &search, filter.as_ref())
            );
        }
    }
}
