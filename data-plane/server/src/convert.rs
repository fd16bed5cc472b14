//! Conversions between protobuf messages and the facade's domain requests and answers.
//!
//! Requests decode through [`FromProto`] (every field named, so a new proto field breaks the
//! build instead of being silently dropped) and answers encode through
//! [`FromAnswer`](crate::api::FromAnswer); traits of this crate because the orphan rule
//! forbids `From` between the proto crate's and the engine's types. The shapes both
//! transports share (records keyed by id, default namespace names, saturating counts) come
//! from [`crate::api`]; only the protobuf spelling is here.
//!
//! Metadata and filters travel as `google.protobuf.Struct`; the engine validates them as JSON
//! objects (the shape the REST twin receives too), so both transports share one set of rules.
//! A request without a filter or metadata does no `Struct`/JSON work, and an answer whose
//! matches carry no metadata (`include_metadata` false) or values (`include_values` false)
//! converts none: the engine leaves those fields empty and they are moved, not copied.

use larch_engine::{
    DeleteRequest, FetchByMetadataRequest, FetchByMetadataResponse, FetchRequest, FetchResponse,
    JsonObject, ListNamespacesRequest, ListRequest, ListResponse, Metadata, MetadataValue,
    QueryRequest, QueryResponse, Record, ScoredRecord, SparseInput, SparseVector, UpdateRequest,
    UpsertRequest, VectorInput,
};
use larch_proto::pinecone::{self as pb, SparseValues};
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use tonic::Status;

use crate::api::{
    CreateNamespaceRequest, DeleteNamespaceRequest, Deleted, DescribeIndexStatsRequest,
    DescribeNamespaceRequest, FromAnswer, IndexStats, NamespaceDescription, NamespacePage, Updated,
    Upserted, keyed_by_id, refuse_batch_queries, saturating_i32, saturating_u32,
};
use crate::service::status;

/// A protobuf request as the facade's domain request.
pub trait FromProto<P>: Sized {
    /// `message` as the domain request.
    ///
    /// # Errors
    ///
    /// INVALID_ARGUMENT naming the field, for what cannot be represented (a non-finite number
    /// in a `Struct`, the deprecated batch query); everything else is the engine's to check.
    fn from_proto(message: P) -> Result<Self, Status>;
}

impl FromProto<pb::UpsertRequest> for UpsertRequest {
    fn from_proto(message: pb::UpsertRequest) -> Result<Self, Status> {
        let pb::UpsertRequest { vectors, namespace } = message;
        let vectors = vectors
            .into_iter()
            .enumerate()
            .map(|(i, vector)| {
                let pb::Vector {
                    id,
                    values,
                    sparse_values,
                    metadata,
                } = vector;
                Ok(VectorInput {
                    id,
                    values,
                    sparse_values: sparse_input(sparse_values),
                    metadata: optional_json(metadata, &format!("vectors[{i}].metadata"))?,
                })
            })
            .collect::<Result<_, Status>>()?;
        Ok(UpsertRequest { namespace, vectors })
    }
}

impl FromProto<pb::DeleteRequest> for DeleteRequest {
    fn from_proto(message: pb::DeleteRequest) -> Result<Self, Status> {
        let pb::DeleteRequest {
            ids,
            delete_all,
            namespace,
            filter,
        } = message;
        Ok(DeleteRequest {
            namespace,
            ids,
            delete_all,
            filter: optional_json(filter, "filter")?,
        })
    }
}

impl FromProto<pb::FetchRequest> for FetchRequest {
    fn from_proto(message: pb::FetchRequest) -> Result<Self, Status> {
        let pb::FetchRequest { ids, namespace } = message;
        Ok(FetchRequest { namespace, ids })
    }
}

impl FromProto<pb::ListRequest> for ListRequest {
    fn from_proto(message: pb::ListRequest) -> Result<Self, Status> {
        let pb::ListRequest {
            prefix,
            limit,
            pagination_token,
            namespace,
        } = message;
        Ok(ListRequest {
            namespace,
            prefix,
            limit,
            pagination_token,
        })
    }
}

impl FromProto<pb::QueryRequest> for QueryRequest {
    fn from_proto(message: pb::QueryRequest) -> Result<Self, Status> {
        #[allow(deprecated)]
        let pb::QueryRequest {
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
        } = message;
        refuse_batch_queries(queries.len()).map_err(status)?;
        Ok(QueryRequest {
            namespace,
            top_k,
            // No filter, no Struct/JSON work.
            filter: optional_json(filter, "filter")?,
            include_values,
            include_metadata,
            vector,
            sparse_vector: sparse_input(sparse_vector),
            id,
        })
    }
}

impl FromProto<pb::UpdateRequest> for UpdateRequest {
    fn from_proto(message: pb::UpdateRequest) -> Result<Self, Status> {
        let pb::UpdateRequest {
            id,
            values,
            sparse_values,
            set_metadata,
            namespace,
            filter,
            dry_run,
        } = message;
        Ok(UpdateRequest {
            namespace,
            id,
            values,
            sparse_values: sparse_input(sparse_values),
            set_metadata: optional_json(set_metadata, "set_metadata")?,
            filter: optional_json(filter, "filter")?,
            dry_run: dry_run.unwrap_or(false),
        })
    }
}

impl FromProto<pb::FetchByMetadataRequest> for FetchByMetadataRequest {
    fn from_proto(message: pb::FetchByMetadataRequest) -> Result<Self, Status> {
        let pb::FetchByMetadataRequest {
            namespace,
            filter,
            limit,
            pagination_token,
        } = message;
        Ok(FetchByMetadataRequest {
            namespace,
            filter: optional_json(filter, "filter")?,
            limit,
            pagination_token,
        })
    }
}

impl FromProto<pb::DescribeIndexStatsRequest> for DescribeIndexStatsRequest {
    fn from_proto(message: pb::DescribeIndexStatsRequest) -> Result<Self, Status> {
        let pb::DescribeIndexStatsRequest { filter } = message;
        Ok(DescribeIndexStatsRequest {
            filter: optional_json(filter, "filter")?,
        })
    }
}

impl FromProto<pb::ListNamespacesRequest> for ListNamespacesRequest {
    fn from_proto(message: pb::ListNamespacesRequest) -> Result<Self, Status> {
        let pb::ListNamespacesRequest {
            pagination_token,
            limit,
            prefix,
        } = message;
        Ok(ListNamespacesRequest {
            prefix,
            limit,
            pagination_token,
        })
    }
}

impl FromProto<pb::DescribeNamespaceRequest> for DescribeNamespaceRequest {
    fn from_proto(message: pb::DescribeNamespaceRequest) -> Result<Self, Status> {
        let pb::DescribeNamespaceRequest { namespace } = message;
        Ok(DescribeNamespaceRequest { namespace })
    }
}

impl FromProto<pb::DeleteNamespaceRequest> for DeleteNamespaceRequest {
    fn from_proto(message: pb::DeleteNamespaceRequest) -> Result<Self, Status> {
        let pb::DeleteNamespaceRequest { namespace } = message;
        Ok(DeleteNamespaceRequest { namespace })
    }
}

impl FromProto<pb::CreateNamespaceRequest> for CreateNamespaceRequest {
    fn from_proto(message: pb::CreateNamespaceRequest) -> Result<Self, Status> {
        let pb::CreateNamespaceRequest { name, schema } = message;
        let schema = schema.map(|pb::MetadataSchema { fields }| {
            fields
                .into_iter()
                .map(|(field, pb::MetadataFieldProperties { filterable })| (field, filterable))
                .collect()
        });
        Ok(CreateNamespaceRequest { name, schema })
    }
}

impl FromAnswer<Upserted> for pb::UpsertResponse {
    fn from_answer(answer: Upserted) -> larch_engine::Result<Self> {
        let Upserted { upserted_count } = answer;
        Ok(pb::UpsertResponse { upserted_count })
    }
}

impl FromAnswer<Deleted> for pb::DeleteResponse {
    fn from_answer(Deleted: Deleted) -> larch_engine::Result<Self> {
        Ok(pb::DeleteResponse {})
    }
}

impl FromAnswer<Updated> for pb::UpdateResponse {
    fn from_answer(answer: Updated) -> larch_engine::Result<Self> {
        let Updated { matched_records } = answer;
        Ok(pb::UpdateResponse {
            matched_records: Some(saturating_i32(matched_records)),
        })
    }
}

impl FromAnswer<FetchResponse> for pb::FetchResponse {
    fn from_answer(answer: FetchResponse) -> larch_engine::Result<Self> {
        let FetchResponse { namespace, vectors } = answer;
        Ok(pb::FetchResponse {
            vectors: keyed_by_id(vectors, vector),
            namespace,
            usage: None,
        })
    }
}

impl FromAnswer<ListResponse> for pb::ListResponse {
    fn from_answer(answer: ListResponse) -> larch_engine::Result<Self> {
        let ListResponse {
            namespace,
            ids,
            next,
        } = answer;
        Ok(pb::ListResponse {
            vectors: ids.into_iter().map(|id| pb::ListItem { id }).collect(),
            pagination: pagination(next),
            namespace,
            usage: None,
        })
    }
}

impl FromAnswer<QueryResponse> for pb::QueryResponse {
    fn from_answer(answer: QueryResponse) -> larch_engine::Result<Self> {
        let QueryResponse { namespace, matches } = answer;
        let matches = matches
            .into_iter()
            .map(|scored| {
                let ScoredRecord {
                    id,
                    score,
                    values,
                    sparse_values: sparse,
                    metadata,
                } = scored;
                pb::ScoredVector {
                    id,
                    score,
                    // Moved: empty unless the query asked for values.
                    values,
                    sparse_values: sparse_values(sparse),
                    // `None` unless the query asked for metadata: no Struct is built.
                    metadata: metadata.map(metadata_to_struct),
                }
            })
            .collect();
        #[allow(deprecated)]
        Ok(pb::QueryResponse {
            results: Vec::new(),
            matches,
            namespace,
            usage: None,
        })
    }
}

impl FromAnswer<FetchByMetadataResponse> for pb::FetchByMetadataResponse {
    fn from_answer(answer: FetchByMetadataResponse) -> larch_engine::Result<Self> {
        let FetchByMetadataResponse {
            namespace,
            vectors,
            next,
        } = answer;
        Ok(pb::FetchByMetadataResponse {
            vectors: keyed_by_id(vectors, vector),
            namespace,
            usage: None,
            pagination: pagination(next),
        })
    }
}

impl FromAnswer<IndexStats> for pb::DescribeIndexStatsResponse {
    fn from_answer(answer: IndexStats) -> larch_engine::Result<Self> {
        let IndexStats {
            namespaces,
            dimension,
            metric,
            vector_type,
            total_vector_count,
        } = answer;
        let namespaces = namespaces
            .into_iter()
            .map(|(name, count)| {
                let summary = pb::NamespaceSummary {
                    vector_count: saturating_u32(count),
                };
                (name, summary)
            })
            .collect();
        Ok(pb::DescribeIndexStatsResponse {
            namespaces,
            dimension,
            index_fullness: 0.0,
            total_vector_count: saturating_u32(total_vector_count),
            metric: Some(metric),
            vector_type: Some(vector_type.to_owned()),
            memory_fullness: None,
            storage_fullness: None,
        })
    }
}

impl FromAnswer<NamespacePage> for pb::ListNamespacesResponse {
    fn from_answer(answer: NamespacePage) -> larch_engine::Result<Self> {
        let NamespacePage {
            namespaces,
            next,
            total_count,
        } = answer;
        Ok(pb::ListNamespacesResponse {
            namespaces: namespaces.into_iter().map(namespace_description).collect(),
            pagination: pagination(next),
            total_count: saturating_i32(total_count),
        })
    }
}

impl FromAnswer<NamespaceDescription> for pb::NamespaceDescription {
    fn from_answer(answer: NamespaceDescription) -> larch_engine::Result<Self> {
        Ok(namespace_description(answer))
    }
}

/// A stored record in protobuf.
fn vector(record: Record) -> pb::Vector {
    let Record {
        id,
        values,
        sparse_values: sparse,
        metadata,
    } = record;
    pb::Vector {
        id,
        values,
        sparse_values: sparse_values(sparse),
        metadata: metadata.map(metadata_to_struct),
    }
}

fn pagination(next: Option<String>) -> Option<pb::Pagination> {
    next.map(|next| pb::Pagination { next })
}

fn namespace_description(description: NamespaceDescription) -> pb::NamespaceDescription {
    let NamespaceDescription {
        name,
        record_count,
        size_bytes,
        schema_fields,
    } = description;
    pb::NamespaceDescription {
        name,
        record_count,
        schema: schema_fields.as_ref().map(|fields| pb::MetadataSchema {
            fields: fields
                .iter()
                .map(|f| (f.clone(), pb::MetadataFieldProperties { filterable: true }))
                .collect(),
        }),
        indexed_fields: schema_fields.map(|fields| pb::IndexedFields { fields }),
        size_bytes,
    }
}

/// A protobuf `Struct` as a JSON object. `field` names the request field in errors.
pub fn struct_to_json(value: Struct, field: &str) -> Result<JsonObject, Status> {
    value
        .fields
        .into_iter()
        .map(|(key, value)| {
            let json = value_to_json(value, &format!("{field}.{key}"))?;
            Ok((key, json))
        })
        .collect()
}

fn value_to_json(value: Value, field: &str) -> Result<serde_json::Value, Status> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(n)
            .map(serde_json::Value::Number)
            .ok_or_else(|| {
                status(larch_engine::Error::InvalidArgument {
                    field: field.to_owned(),
                    message: format!("numbers must be finite, got {n}"),
                })
            })?,
        Some(Kind::ListValue(ListValue { values })) => serde_json::Value::Array(
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| value_to_json(v, &format!("{field}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_to_json(s, field)?),
    })
}

/// Stored metadata as a protobuf `Struct`.
pub fn metadata_to_struct(metadata: Metadata) -> Struct {
    let fields = metadata
        .into_iter()
        .map(|(key, value)| {
            let kind = match value {
                MetadataValue::String(s) => Kind::StringValue(s),
                MetadataValue::Number(n) => Kind::NumberValue(n),
                MetadataValue::Bool(b) => Kind::BoolValue(b),
                MetadataValue::StringList(items) => Kind::ListValue(ListValue {
                    values: items
                        .into_iter()
                        .map(|s| Value {
                            kind: Some(Kind::StringValue(s)),
                        })
                        .collect(),
                }),
            };
            (key, Value { kind: Some(kind) })
        })
        .collect();
    Struct { fields }
}

/// Optional protobuf `Struct` → optional JSON object.
pub fn optional_json(value: Option<Struct>, field: &str) -> Result<Option<JsonObject>, Status> {
    value.map(|s| struct_to_json(s, field)).transpose()
}

/// Protobuf sparse values → engine input (validated by the engine).
pub fn sparse_input(value: Option<SparseValues>) -> Option<SparseInput> {
    value.map(|SparseValues { indices, values }| SparseInput { indices, values })
}

/// Stored sparse values → protobuf.
pub fn sparse_values(value: Option<SparseVector>) -> Option<SparseValues> {
    value.map(|SparseVector { indices, values }| SparseValues { indices, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    #[test]
    fn struct_round_trips_through_json() {
        let s = Struct {
            fields: [
                ("genre".to_owned(), value(Kind::StringValue("drama".into()))),
                ("year".to_owned(), value(Kind::NumberValue(2001.0))),
                (
                    "tags".to_owned(),
                    value(Kind::ListValue(ListValue {
                        values: vec![value(Kind::StringValue("a".into()))],
                    })),
                ),
                ("nothing".to_owned(), value(Kind::NullValue(0))),
            ]
            .into_iter()
            .collect(),
        };
        let json = struct_to_json(s, "metadata").unwrap();
        assert_eq!(
            serde_json::Value::Object(json),
            serde_json::json!({"genre": "drama", "year": 2001.0, "tags": ["a"], "nothing": null})
        );
    }

    #[test]
    fn non_finite_numbers_are_rejected_with_their_path() {
        let s = Struct {
            fields: [("x".to_owned(), value(Kind::NumberValue(f64::NAN)))]
                .into_iter()
                .collect(),
        };
        let err = struct_to_json(s, "filter").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("filter.x: "), "{}", err.message());
    }

    #[tokio::test]
    async fn a_query_without_values_or_metadata_carries_neither_to_the_wire() {
        use std::sync::Arc;
        let engine = Arc::new(larch_engine::Engine::new());
        let config = larch_engine::IndexConfig {
            dimension: larch_engine::Dimension::new(2).expect("dimension"),
            metric: larch_engine::Metric::Cosine,
        };
        engine.create_index("q", config).expect("index");
        let handle = crate::api::IndexHandle::new(engine, "q");
        let caller = crate::api::Caller::default();
        let upsert = UpsertRequest::from_proto(pb::UpsertRequest {
            vectors: vec![pb::Vector {
                id: "v".into(),
                values: vec![1.0, 0.5],
                sparse_values: None,
                metadata: Some(Struct {
                    fields: [("genre".to_owned(), value(Kind::StringValue("drama".into())))]
                        .into_iter()
                        .collect(),
                }),
            }],
            namespace: String::new(),
        })
        .expect("upsert");
        let _: pb::UpsertResponse = handle
            .upsert(&caller, upsert)
            .await
            .expect("upserted")
            .answer;
        let query = |include: bool| pb::QueryRequest {
            top_k: 1,
            vector: vec![1.0, 0.5],
            include_values: include,
            include_metadata: include,
            ..Default::default()
        };
        let lean = QueryRequest::from_proto(query(false)).expect("query");
        assert_eq!(lean.filter, None, "no filter, no JSON object");
        let answer: pb::QueryResponse = handle.query(&caller, lean).await.expect("answer").answer;
        let matched = &answer.matches[0];
        assert_eq!(matched.id, "v");
        assert!(matched.values.is_empty() && matched.values.capacity() == 0);
        assert_eq!((&matched.sparse_values, &matched.metadata), (&None, &None));
        // The same query asking for both gets both: the lean answer left them out on purpose.
        let full = QueryRequest::from_proto(query(true)).expect("query");
        let answer: pb::QueryResponse = handle.query(&caller, full).await.expect("answer").answer;
        assert_eq!(answer.matches[0].values, [1.0, 0.5]);
        assert!(answer.matches[0].metadata.is_some());
    }

    #[test]
    fn metadata_becomes_struct() {
        let metadata = Metadata::from([
            ("b".to_owned(), MetadataValue::Bool(true)),
            (
                "l".to_owned(),
                MetadataValue::StringList(vec!["x".into(), "y".into()]),
            ),
        ]);
        let s = metadata_to_struct(metadata);
        assert_eq!(s.fields["b"].kind, Some(Kind::BoolValue(true)));
        let Some(Kind::ListValue(list)) = &s.fields["l"].kind else {
            panic!("list expected")
        };
        assert_eq!(list.values.len(), 2);
    }
}
