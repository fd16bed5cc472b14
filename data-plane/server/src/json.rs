//! Pinecone's data-plane REST JSON: request and response bodies with Pinecone's keys.
//!
//! Vector operations use camelCase keys (`topK`, `includeMetadata`, `sparseValues`,
//! `setMetadata`, `deleteAll`, `paginationToken`, `upsertedCount`, `totalVectorCount`, …) and
//! namespace operations snake_case (`record_count`, `total_count`), exactly as Pinecone's REST
//! API documents them. Like Pinecone's gateway, requests also accept the proto field names
//! (`top_k`, …), ignore unknown keys, and read `null` as "not given". Metadata and filters stay
//! JSON objects: the engine validates them as it does for gRPC.
//!
//! Request bodies become the facade's domain requests through `From`/`TryFrom`, and its
//! answers become response bodies through `From` (the REST handlers encode them on the pool
//! thread, see [`crate::rest`]); the shapes both transports share (records keyed by id,
//! default namespace names) come from [`crate::api`], only the JSON spelling is here. A field
//! left out (or `null`) reads as the protobuf default, as on gRPC.

use std::collections::BTreeMap;

use larch_engine::{
    DeleteRequest, FetchByMetadataRequest, JsonObject, Metadata, QueryRequest, Record,
    ScoredRecord, SparseInput, SparseVector, UpdateRequest, UpsertRequest, VectorInput,
    metadata_to_json,
};
use serde::{Deserialize, Serialize};

use crate::api::{
    self, CreateNamespaceRequest, Deleted, DescribeIndexStatsRequest, IndexStats, NamespacePage,
    Updated, Upserted, keyed_by_id, refuse_batch_queries,
};

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
    /// Index dimension; absent for a sparse index ("not specified if `sparse` index").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimension: Option<u32>,
    /// Always 0 (serverless).
    pub index_fullness: f32,
    /// Sum over namespaces.
    pub total_vector_count: u64,
    /// Index metric.
    pub metric: String,
    /// `dense` or `sparse`.
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

/// The `{}` answer of deletes.
#[derive(Debug, Serialize)]
pub struct Empty {}

/// Stored metadata as a JSON object.
pub fn metadata(metadata: Option<Metadata>) -> Option<JsonObject> {
    metadata.as_ref().map(metadata_to_json)
}

impl From<UpsertBody> for UpsertRequest {
    fn from(body: UpsertBody) -> UpsertRequest {
        let UpsertBody { vectors, namespace } = body;
        let vectors = vectors
            .unwrap_or_default()
            .into_iter()
            .map(|vector| {
                let VectorBody {
                    id,
                    values,
                    sparse_values,
                    metadata,
                } = vector;
                VectorInput {
                    id: id.unwrap_or_default(),
                    values: values.unwrap_or_default(),
                    sparse_values: sparse_values.map(Into::into),
                    metadata,
                }
            })
            .collect();
        UpsertRequest {
            namespace: namespace.unwrap_or_default(),
            vectors,
        }
    }
}

impl TryFrom<QueryBody> for QueryRequest {
    type Error = larch_engine::Error;

    fn try_from(body: QueryBody) -> larch_engine::Result<QueryRequest> {
        let QueryBody {
            namespace,
            top_k,
            filter,
            include_values,
            include_metadata,
            queries,
            vector,
            sparse_vector,
            id,
            // Tuning knobs of Pinecone's dedicated read nodes; the HNSW graph has its own
            // (ef_search, set per index).
            scan_factor: _,
            max_candidates: _,
        } = body;
        refuse_batch_queries(queries.map_or(0, |q| q.len()))?;
        Ok(QueryRequest {
            namespace: namespace.unwrap_or_default(),
            top_k: top_k.unwrap_or_default(),
            filter,
            include_values: include_values.unwrap_or_default(),
            include_metadata: include_metadata.unwrap_or_default(),
            vector: vector.unwrap_or_default(),
            sparse_vector: sparse_vector.map(Into::into),
            id: id.unwrap_or_default(),
        })
    }
}

impl From<FetchByMetadataBody> for FetchByMetadataRequest {
    fn from(body: FetchByMetadataBody) -> FetchByMetadataRequest {
        let FetchByMetadataBody {
            namespace,
            filter,
            limit,
            pagination_token,
        } = body;
        FetchByMetadataRequest {
            namespace: namespace.unwrap_or_default(),
            filter,
            limit,
            pagination_token,
        }
    }
}

impl From<DeleteBody> for DeleteRequest {
    fn from(body: DeleteBody) -> DeleteRequest {
        let DeleteBody {
            ids,
            delete_all,
            namespace,
            filter,
        } = body;
        DeleteRequest {
            namespace: namespace.unwrap_or_default(),
            ids: ids.unwrap_or_default(),
            delete_all: delete_all.unwrap_or_default(),
            filter,
        }
    }
}

impl From<UpdateBody> for UpdateRequest {
    fn from(body: UpdateBody) -> UpdateRequest {
        let UpdateBody {
            id,
            values,
            sparse_values,
            set_metadata,
            namespace,
            filter,
            dry_run,
        } = body;
        UpdateRequest {
            namespace: namespace.unwrap_or_default(),
            id: id.unwrap_or_default(),
            values: values.unwrap_or_default(),
            sparse_values: sparse_values.map(Into::into),
            set_metadata,
            filter,
            dry_run: dry_run.unwrap_or_default(),
        }
    }
}

impl From<DescribeIndexStatsBody> for DescribeIndexStatsRequest {
    fn from(body: DescribeIndexStatsBody) -> DescribeIndexStatsRequest {
        let DescribeIndexStatsBody { filter } = body;
        DescribeIndexStatsRequest { filter }
    }
}

impl From<CreateNamespaceBody> for CreateNamespaceRequest {
    fn from(body: CreateNamespaceBody) -> CreateNamespaceRequest {
        let CreateNamespaceBody { name, schema } = body;
        let schema = schema.map(|NamespaceSchema { fields }| {
            fields
                .into_iter()
                .map(|(field, FieldProperties { filterable })| (field, filterable))
                .collect()
        });
        CreateNamespaceRequest {
            name: name.unwrap_or_default(),
            schema,
        }
    }
}

impl From<Upserted> for UpsertResponse {
    fn from(answer: Upserted) -> UpsertResponse {
        let Upserted { upserted_count } = answer;
        UpsertResponse { upserted_count }
    }
}

impl From<Updated> for UpdateResponse {
    fn from(answer: Updated) -> UpdateResponse {
        let Updated { matched_records } = answer;
        UpdateResponse { matched_records }
    }
}

impl From<Deleted> for Empty {
    fn from(Deleted: Deleted) -> Empty {
        Empty {}
    }
}

impl From<Record> for Vector {
    fn from(record: Record) -> Vector {
        let Record {
            id,
            values,
            sparse_values,
            metadata: stored,
        } = record;
        Vector {
            id,
            values,
            sparse_values: sparse_values.map(Into::into),
            metadata: metadata(stored),
        }
    }
}

impl From<ScoredRecord> for ScoredVector {
    fn from(scored: ScoredRecord) -> ScoredVector {
        let ScoredRecord {
            id,
            score,
            values,
            sparse_values,
            metadata: stored,
        } = scored;
        ScoredVector {
            id,
            score,
            values,
            sparse_values: sparse_values.map(Into::into),
            metadata: metadata(stored),
        }
    }
}

impl From<larch_engine::QueryResponse> for QueryResponse {
    fn from(answer: larch_engine::QueryResponse) -> QueryResponse {
        let larch_engine::QueryResponse { namespace, matches } = answer;
        QueryResponse {
            matches: matches.into_iter().map(Into::into).collect(),
            namespace,
        }
    }
}

impl From<larch_engine::FetchResponse> for FetchResponse {
    fn from(answer: larch_engine::FetchResponse) -> FetchResponse {
        let larch_engine::FetchResponse { namespace, vectors } = answer;
        FetchResponse {
            vectors: keyed_by_id(vectors, Vector::from),
            namespace,
        }
    }
}

impl From<larch_engine::FetchByMetadataResponse> for FetchByMetadataResponse {
    fn from(answer: larch_engine::FetchByMetadataResponse) -> FetchByMetadataResponse {
        let larch_engine::FetchByMetadataResponse {
            namespace,
            vectors,
            next,
        } = answer;
        FetchByMetadataResponse {
            vectors: keyed_by_id(vectors, Vector::from),
            namespace,
            pagination: pagination(next),
        }
    }
}

impl From<larch_engine::ListResponse> for ListResponse {
    fn from(answer: larch_engine::ListResponse) -> ListResponse {
        let larch_engine::ListResponse {
            namespace,
            ids,
            next,
        } = answer;
        ListResponse {
            vectors: ids.into_iter().map(|id| ListItem { id }).collect(),
            pagination: pagination(next),
            namespace,
        }
    }
}

impl From<IndexStats> for DescribeIndexStatsResponse {
    fn from(answer: IndexStats) -> DescribeIndexStatsResponse {
        let IndexStats {
            namespaces,
            dimension,
            metric,
            vector_type,
            total_vector_count,
        } = answer;
        DescribeIndexStatsResponse {
            namespaces: namespaces
                .into_iter()
                .map(|(name, vector_count)| (name, NamespaceSummary { vector_count }))
                .collect(),
            dimension,
            index_fullness: 0.0,
            total_vector_count,
            metric,
            vector_type,
        }
    }
}

impl From<NamespacePage> for ListNamespacesResponse {
    fn from(answer: NamespacePage) -> ListNamespacesResponse {
        let NamespacePage {
            namespaces,
            next,
            total_count,
        } = answer;
        ListNamespacesResponse {
            namespaces: namespaces.into_iter().map(Into::into).collect(),
            pagination: pagination(next),
            total_count,
        }
    }
}

impl From<api::NamespaceDescription> for NamespaceDescription {
    fn from(answer: api::NamespaceDescription) -> NamespaceDescription {
        let api::NamespaceDescription {
            name,
            record_count,
            size_bytes,
            schema_fields,
        } = answer;
        NamespaceDescription {
            name,
            record_count,
            schema: schema_fields.as_ref().map(|fields| NamespaceSchema {
                fields: fields
                    .iter()
                    .map(|f| (f.clone(), FieldProperties { filterable: true }))
                    .collect(),
            }),
            indexed_fields: schema_fields.map(|fields| IndexedFields { fields }),
            size_bytes,
        }
    }
}

fn pagination(next: Option<String>) -> Option<Pagination> {
    next.map(|next| Pagination { next })
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
            dimension: Some(4),
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
