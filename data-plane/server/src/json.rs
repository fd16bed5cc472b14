//! Pinecone's data-plane REST JSON: request and response bodies with Pinecone's keys.
//!
//! Vector operations use camelCase keys (`topK`, `includeMetadata`, `sparseValues`,
//! `setMetadata`, `deleteAll`, `paginationToken`, `upsertedCount`, `totalVectorCount`, …) and
//! namespace operations snake_case (`record_count`, `total_count`), exactly as Pinecone's REST
//! API documents them. Like Pinecone's gateway, requests also accept the proto field names
//! (`top_k`, …), ignore unknown keys, and read `null` as "not given". Metadata and filters stay
//! JSON objects: the engine validates them as it does for gRPC.

use std::collections::BTreeMap;

use larch_engine::{JsonObject, Metadata, SparseInput, SparseVector, metadata_to_json};
use serde::{Deserialize, Serialize};

/// Sparse values, in requests and responses.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct SparseValues {
    /// Positions of the non-zero values.
    #[serde(default)]
    pub indices: Vec<u32>,
    /// The values, one per index.
    #[serde(default)]
    pub values: Vec<f32>,
}

impl From<SparseValues> for SparseInput {
    fn from(SparseValues { indices, values }: SparseValues) -> SparseInput {
        SparseInput { indices, values }
    }
}

impl From<SparseVector> for SparseValues {
    fn from(SparseVector { indices, values }: SparseVector) -> SparseValues {
        SparseValues { indices, values }
    }
}

/// One record of an upsert.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VectorBody {
    /// The record id.
    pub id: Option<String>,
    /// Dense values.
    pub values: Option<Vec<f32>>,
    /// Sparse values.
    #[serde(alias = "sparse_values")]
    pub sparse_values: Option<SparseValues>,
    /// Flat metadata.
    pub metadata: Option<JsonObject>,
}

/// `POST /vectors/upsert`.
#[derive(Debug, Deserialize)]
pub struct UpsertBody {
    /// 1–1000 records.
    pub vectors: Option<Vec<VectorBody>>,
    /// Target namespace.
    pub namespace: Option<String>,
}

/// `POST /query`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryBody {
    /// Namespace to search.
    pub namespace: Option<String>,
    /// Number of matches.
    #[serde(alias = "top_k")]
    pub top_k: Option<u32>,
    /// Metadata filter.
    pub filter: Option<JsonObject>,
    /// Whether matches carry values.
    #[serde(alias = "include_values")]
    pub include_values: Option<bool>,
    /// Whether matches carry metadata.
    #[serde(alias = "include_metadata")]
    pub include_metadata: Option<bool>,
    /// The deprecated batch form (refused when non-empty).
    pub queries: Option<Vec<serde_json::Value>>,
    /// Query vector.
    pub vector: Option<Vec<f32>>,
    /// Sparse part of a hybrid query.
    #[serde(alias = "sparse_vector")]
    pub sparse_vector: Option<SparseValues>,
    /// Query by the values of this stored record.
    pub id: Option<String>,
    /// Tuning knob of Pinecone's dedicated read nodes; exact search needs none.
    #[serde(alias = "scan_factor")]
    pub scan_factor: Option<f32>,
    /// Tuning knob of Pinecone's dedicated read nodes; exact search needs none.
    #[serde(alias = "max_candidates")]
    pub max_candidates: Option<u32>,
}

/// `POST /vectors/delete`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteBody {
    /// Ids to delete.
    pub ids: Option<Vec<String>>,
    /// Delete every record of the namespace.
    #[serde(alias = "delete_all")]
    pub delete_all: Option<bool>,
    /// Namespace to delete from.
    pub namespace: Option<String>,
    /// Delete the records matching this filter.
    pub filter: Option<JsonObject>,
}

/// `POST /vectors/update`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateBody {
    /// Record to update.
    pub id: Option<String>,
    /// New dense values.
    pub values: Option<Vec<f32>>,
    /// New sparse values.
    #[serde(alias = "sparse_values")]
    pub sparse_values: Option<SparseValues>,
    /// Metadata to merge.
    #[serde(alias = "set_metadata")]
    pub set_metadata: Option<JsonObject>,
    /// Namespace to update.
    pub namespace: Option<String>,
    /// Update every record matching this filter.
    pub filter: Option<JsonObject>,
    /// Only count the matches.
    #[serde(alias = "dry_run")]
    pub dry_run: Option<bool>,
}

/// `POST /vectors/fetch_by_metadata`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchByMetadataBody {
    /// Namespace to read.
    pub namespace: Option<String>,
    /// Required filter.
    pub filter: Option<JsonObject>,
    /// Page size.
    pub limit: Option<u32>,
    /// Token of the previous page.
    #[serde(alias = "pagination_token")]
    pub pagination_token: Option<String>,
}

/// `POST /describe_index_stats`.
#[derive(Debug, Default, Deserialize)]
pub struct DescribeIndexStatsBody {
    /// Refused by the engine when non-empty, as on serverless Pinecone.
    pub filter: Option<JsonObject>,
}

/// `POST /namespaces`.
#[derive(Debug, Deserialize)]
pub struct CreateNamespaceBody {
    /// The new namespace.
    pub name: Option<String>,
    /// Metadata fields to index.
    pub schema: Option<NamespaceSchema>,
}

/// A namespace's declared metadata fields.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct NamespaceSchema {
    /// Field name → properties.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldProperties>,
}

/// Properties of one declared metadata field.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct FieldProperties {
    /// Only `true` is accepted.
    #[serde(default)]
    pub filterable: bool,
}

/// `{"upsertedCount":N}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpsertResponse {
    /// Records written.
    pub upserted_count: u32,
}

/// A stored record in fetch responses.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Vector {
    /// The record id.
    pub id: String,
    /// Dense values.
    pub values: Vec<f32>,
    /// Sparse values, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparse_values: Option<SparseValues>,
    /// Metadata, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonObject>,
}

/// One query match.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoredVector {
    /// The record id.
    pub id: String,
    /// Similarity score (squared distance for euclidean).
    pub score: f32,
    /// Dense values (empty unless asked for).
    pub values: Vec<f32>,
    /// Sparse values (only when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparse_values: Option<SparseValues>,
    /// Metadata (only when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonObject>,
}

/// `POST /query` response.
#[derive(Debug, Serialize)]
pub struct QueryResponse {
    /// Best first.
    pub matches: Vec<ScoredVector>,
    /// The namespace searched.
    pub namespace: String,
}

/// `GET /vectors/fetch` response.
#[derive(Debug, Serialize)]
pub struct FetchResponse {
    /// Found records by id.
    pub vectors: BTreeMap<String, Vector>,
    /// The namespace read.
    pub namespace: String,
}

/// `POST /vectors/fetch_by_metadata` response.
#[derive(Debug, Serialize)]
pub struct FetchByMetadataResponse {
    /// Matching records by id.
    pub vectors: BTreeMap<String, Vector>,
    /// The namespace read.
    pub namespace: String,
    /// The next page, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
}

/// A pagination token.
#[derive(Debug, Serialize)]
pub struct Pagination {
    /// Pass as `paginationToken` to get the next page.
    pub next: String,
}

/// One listed id.
#[derive(Debug, Serialize)]
pub struct ListItem {
    /// The record id.
    pub id: String,
}

/// `GET /vectors/list` response.
#[derive(Debug, Serialize)]
pub struct ListResponse {
    /// Ids in ascending order.
    pub vectors: Vec<ListItem>,
    /// The next page, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
    /// The namespace listed.
    pub namespace: String,
}

/// `POST /vectors/update` response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateResponse {
    /// Records matched (and changed, unless a dry run).
    pub matched_records: u32,
}

/// Record count of one namespace.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSummary {
    /// Records in the namespace.
    pub vector_count: u64,
}

/// `POST /describe_index_stats` response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeIndexStatsResponse {
    /// Per namespace.
    pub namespaces: BTreeMap<String, NamespaceSummary>,
    /// Index dimension.
    pub dimension: u32,
    /// Always 0 (serverless).
    pub index_fullness: f32,
    /// Sum over namespaces.
    pub total_vector_count: u64,
    /// Index metric.
    pub metric: String,
    /// Always `dense`.
    pub vector_type: &'static str,
}

/// A namespace (snake_case keys, as Pinecone's namespace API writes them).
#[derive(Debug, Serialize)]
pub struct NamespaceDescription {
    /// Its name (`__default__` for the default namespace on API ≥ 2025-04).
    pub name: String,
    /// Records in it.
    pub record_count: u64,
    /// Declared metadata fields, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<NamespaceSchema>,
    /// The same field names, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indexed_fields: Option<IndexedFields>,
    /// Estimated stored bytes.
    pub size_bytes: u64,
}

/// Names of the indexed metadata fields.
#[derive(Debug, Serialize)]
pub struct IndexedFields {
    /// Field names.
    pub fields: Vec<String>,
}

/// `GET /namespaces` response.
#[derive(Debug, Serialize)]
pub struct ListNamespacesResponse {
    /// This page.
    pub namespaces: Vec<NamespaceDescription>,
    /// The next page, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
    /// Matching namespaces over all pages.
    pub total_count: u32,
}

/// Stored metadata as a JSON object.
pub fn metadata(metadata: Option<Metadata>) -> Option<JsonObject> {
    metadata.as_ref().map(metadata_to_json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_read_camel_case_and_proto_names() {
        let camel: QueryBody = serde_json::from_value(json!({"topK": 3, "includeMetadata": true,
            "sparseVector": {"indices": [1], "values": [0.5]}, "filter": null}))
        .unwrap();
        let snake: QueryBody =
            serde_json::from_value(json!({"top_k": 3, "include_metadata": true})).unwrap();
        assert_eq!((camel.top_k, camel.include_metadata), (Some(3), Some(true)));
        assert_eq!((snake.top_k, snake.include_metadata), (Some(3), Some(true)));
        assert!(camel.filter.is_none());
        assert_eq!(camel.sparse_vector.unwrap().indices, [1]);
    }

    #[test]
    fn responses_use_pinecones_keys() {
        let stats = DescribeIndexStatsResponse {
            namespaces: BTreeMap::from([(
                "__default__".to_owned(),
                NamespaceSummary { vector_count: 2 },
            )]),
            dimension: 4,
            index_fullness: 0.0,
            total_vector_count: 2,
            metric: "cosine".into(),
            vector_type: "dense",
        };
        assert_eq!(
            serde_json::to_value(stats).unwrap(),
            json!({"namespaces":{"__default__":{"vectorCount":2}},"dimension":4,"indexFullness":0.0,
                "totalVectorCount":2,"metric":"cosine","vectorType":"dense"})
        );
        let ns = NamespaceDescription {
            name: "films".into(),
            record_count: 3,
            schema: None,
            indexed_fields: None,
            size_bytes: 10,
        };
        assert_eq!(
            serde_json::to_value(ns).unwrap(),
            json!({"name":"films","record_count":3,"size_bytes":10})
        );
        assert_eq!(
            serde_json::to_value(UpsertResponse { upserted_count: 1 }).unwrap(),
            json!({"upsertedCount":1})
        );
    }
}
