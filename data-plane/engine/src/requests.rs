//! The public request and response structs.
//!
//! Requests carry raw client values exactly as they arrived on the wire; the
//! engine validates them (see `validate`). Empty strings and empty lists mean
//! "not given", as in proto3.

use crate::{Dimension, JsonObject, Metadata, Metric, SparseInput, SparseVector};

/// One record of an upsert.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VectorInput {
    /// The record id, 1–512 characters.
    pub id: String,
    /// Dense values; exactly the index dimension.
    pub values: Vec<f32>,
    /// Optional sparse values (dotproduct indexes only); empty means none.
    pub sparse_values: Option<SparseInput>,
    /// Optional flat metadata object.
    pub metadata: Option<JsonObject>,
}

/// Insert or replace records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpsertRequest {
    /// Target namespace; `""` or `"__default__"` is the default namespace.
    pub namespace: String,
    /// 1–1000 records; a repeated id means the last one wins.
    pub vectors: Vec<VectorInput>,
}

/// Find the records most similar to a vector or to a stored record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryRequest {
    /// Namespace to search.
    pub namespace: String,
    /// How many matches to return, 1–10000.
    pub top_k: u32,
    /// Optional metadata filter; empty means none.
    pub filter: Option<JsonObject>,
    /// Whether matches carry their dense and sparse values.
    pub include_values: bool,
    /// Whether matches carry their metadata.
    pub include_metadata: bool,
    /// The query vector; give this or `id`.
    pub vector: Vec<f32>,
    /// Sparse part of a hybrid query (dotproduct indexes only).
    pub sparse_vector: Option<SparseInput>,
    /// Query with the dense values of this stored record; give this or `vector`.
    pub id: String,
}

/// Read records by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FetchRequest {
    /// Namespace to read.
    pub namespace: String,
    /// 1–1000 ids.
    pub ids: Vec<String>,
}

/// Read records whose metadata matches a filter, ordered by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FetchByMetadataRequest {
    /// Namespace to read.
    pub namespace: String,
    /// Required, non-empty filter.
    pub filter: Option<JsonObject>,
    /// Page size, 1–10000; 100 when absent.
    pub limit: Option<u32>,
    /// The `next` token of the previous page.
    pub pagination_token: Option<String>,
}

/// Delete records: give exactly one of `ids`, `delete_all` or `filter`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteRequest {
    /// Namespace to delete from.
    pub namespace: String,
    /// Up to 1000 ids to delete.
    pub ids: Vec<String>,
    /// Delete every record but keep the namespace.
    pub delete_all: bool,
    /// Delete the records matching this (non-empty) filter.
    pub filter: Option<JsonObject>,
}

/// Change one record by id, or the metadata of all records matching a filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateRequest {
    /// Namespace to update.
    pub namespace: String,
    /// Update this record; give this or `filter`.
    pub id: String,
    /// New dense values (by id only).
    pub values: Vec<f32>,
    /// New sparse values (by id only).
    pub sparse_values: Option<SparseInput>,
    /// Metadata merged into the existing metadata (keys overwrite).
    pub set_metadata: Option<JsonObject>,
    /// Update every record matching this filter; give this or `id`.
    pub filter: Option<JsonObject>,
    /// Only count the matched records; change nothing.
    pub dry_run: bool,
}

/// List record ids in ascending order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListRequest {
    /// Namespace to list.
    pub namespace: String,
    /// Only ids starting with this prefix.
    pub prefix: Option<String>,
    /// Page size, 1–100; 100 when absent.
    pub limit: Option<u32>,
    /// The `next` token of the previous page.
    pub pagination_token: Option<String>,
}

/// List namespaces by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListNamespacesRequest {
    /// Only namespaces whose name starts with this prefix.
    pub prefix: Option<String>,
    /// Page size, 1–100; 100 when absent.
    pub limit: Option<u32>,
    /// The `next` token of the previous page.
    pub pagination_token: Option<String>,
}

/// A stored record as returned by fetch.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The record id.
    pub id: String,
    /// Dense values.
    pub values: Vec<f32>,
    /// Sparse values, sorted by index.
    pub sparse_values: Option<SparseVector>,
    /// Metadata, if the record has any.
    pub metadata: Option<Metadata>,
}

/// One query match.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredRecord {
    /// The record id.
    pub id: String,
    /// Similarity score; for euclidean the squared distance (lower is better).
    pub score: f32,
    /// Dense values; empty unless `include_values`.
    pub values: Vec<f32>,
    /// Sparse values; only with `include_values`.
    pub sparse_values: Option<SparseVector>,
    /// Metadata; only with `include_metadata`.
    pub metadata: Option<Metadata>,
}

/// Query matches, best first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResponse {
    /// The namespace searched (`""` for the default namespace).
    pub namespace: String,
    /// At most `top_k` matches, best first; ties by id ascending.
    pub matches: Vec<ScoredRecord>,
}

/// Records by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FetchResponse {
    /// The namespace read (`""` for the default namespace).
    pub namespace: String,
    /// Found records in request order; missing ids are absent, repeated ids appear once.
    pub vectors: Vec<Record>,
}

/// One page of records matching a filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FetchByMetadataResponse {
    /// The namespace read (`""` for the default namespace).
    pub namespace: String,
    /// Matching records ordered by id.
    pub vectors: Vec<Record>,
    /// Token for the next page, if more records match.
    pub next: Option<String>,
}

/// One page of record ids.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListResponse {
    /// The namespace listed (`""` for the default namespace).
    pub namespace: String,
    /// Ids in ascending byte order.
    pub ids: Vec<String>,
    /// Token for the next page, if more ids remain.
    pub next: Option<String>,
}

/// What a namespace holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamespaceInfo {
    /// The name; `""` for the default namespace.
    pub name: String,
    /// Number of records.
    pub record_count: u64,
    /// Estimate of the stored bytes (vectors, ids, metadata).
    pub size_bytes: u64,
    /// The metadata fields declared at creation, if any.
    pub schema_fields: Option<Vec<String>>,
}

/// One page of namespaces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListNamespacesResponse {
    /// Namespaces sorted by name.
    pub namespaces: Vec<NamespaceInfo>,
    /// Token for the next page, if more namespaces remain.
    pub next: Option<String>,
    /// Number of namespaces matching the prefix, over all pages.
    pub total_count: u32,
}

/// Record counts of an index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexStats {
    /// The index dimension.
    pub dimension: Dimension,
    /// The index metric.
    pub metric: Metric,
    /// Record count per namespace, sorted by name (`""` for the default namespace).
    pub namespaces: Vec<(String, u64)>,
    /// Sum of the namespace counts.
    pub total_vector_count: u64,
}
