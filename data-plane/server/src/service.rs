//! Pinecone's `VectorService`: protobuf in, one [`IndexHandle`] call, protobuf out.
//!
//! Handlers destructure every request field (a new proto field breaks the build instead of
//! being silently ignored) and hand raw values to the engine, which validates them; the REST
//! twin ([`crate::rest`]) makes the same calls with the same engine request structs.

use std::sync::Arc;

use larch_engine::{
    DeleteRequest as EngineDelete, Engine, Error, FetchByMetadataRequest as EngineFetchByMeta,
    FetchRequest as EngineFetch, ListNamespacesRequest as EngineListNamespaces,
    ListRequest as EngineList, NamespaceInfo, QueryRequest as EngineQuery, Record,
    UpdateRequest as EngineUpdate, UpsertRequest as EngineUpsert, VectorInput,
};
use larch_proto::pinecone::{
    CreateNamespaceRequest, DeleteNamespaceRequest, DeleteRequest, DeleteResponse,
    DescribeIndexStatsRequest, DescribeIndexStatsResponse, DescribeNamespaceRequest,
    FetchByMetadataRequest, FetchByMetadataResponse, FetchRequest, FetchResponse, IndexedFields,
    ListItem, ListNamespacesRequest, ListNamespacesResponse, ListRequest, ListResponse,
    MetadataFieldProperties, MetadataSchema, NamespaceDescription, NamespaceSummary, Pagination,
    QueryRequest, QueryResponse, ScoredVector, UpdateRequest, UpdateResponse, UpsertRequest,
    UpsertResponse, Vector, vector_service_server::VectorService,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::api::{
    API_VERSION_HEADER, IndexHandle, VECTOR_TYPE, declared_fields, display_namespace,
    refuse_batch_queries,
};
use crate::convert::{
    metadata_to_struct, optional_json, sparse_input, sparse_values, struct_to_json,
};

/// The gRPC face of one index.
pub struct VectorApi {
    index: IndexHandle,
}

impl VectorApi {
    /// Serves the index called `index` of `engine`.
    pub fn new(engine: Arc<Engine>, index: impl Into<String>) -> VectorApi {
        VectorApi::from(IndexHandle::new(engine, index))
    }

    /// Runs `op` on the index (see [`IndexHandle::run`]).
    async fn run<T, F>(&self, op: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&larch_engine::Index) -> larch_engine::Result<T> + Send + 'static,
    {
        self.index.run(op).await.map_err(status)
    }

    /// Runs the read `op` on the index (see [`IndexHandle::read`]).
    async fn read<T, F>(&self, op: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&larch_engine::Index) -> larch_engine::Result<T> + Send + 'static,
    {
        self.index.read(op).await.map_err(status)
    }

    /// Runs the query `op` of the request's key under the per-key cap (see
    /// [`IndexHandle::query`]).
    async fn query_of<T, F>(&self, key_id: Option<&str>, op: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&larch_engine::Index) -> larch_engine::Result<T> + Send + 'static,
    {
        self.index.query(key_id, op).await.map_err(status)
    }
}

impl From<IndexHandle> for VectorApi {
    /// The gRPC face of `index`.
    fn from(index: IndexHandle) -> VectorApi {
        VectorApi { index }
    }
}

#[tonic::async_trait]
impl VectorService for VectorApi {
    async fn upsert(
        &self,
        request: Request<UpsertRequest>,
    ) -> Result<Response<UpsertResponse>, Status> {
        let UpsertRequest { vectors, namespace } = request.into_inner();
        let vectors = vectors
            .into_iter()
            .enumerate()
            .map(|(i, vector)| {
                let Vector {
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
            .collect::<Result<Vec<_>, Status>>()?;
        let upserted_count = self
            .run(move |index| index.upsert(EngineUpsert { namespace, vectors }))
            .await?;
        Ok(Response::new(UpsertResponse { upserted_count }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let DeleteRequest {
            ids,
            delete_all,
            namespace,
            filter,
        } = request.into_inner();
        let filter = optional_json(filter, "filter")?;
        self.run(move |index| {
            index.delete(EngineDelete {
                namespace,
                ids,
                delete_all,
                filter,
            })
        })
        .await?;
        Ok(Response::new(DeleteResponse {}))
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let FetchRequest { ids, namespace } = request.into_inner();
        let budget = self.index.answer_budget();
        let response = self
            .read(move |index| index.fetch_within(EngineFetch { namespace, ids }, budget))
            .await?;
        Ok(Response::new(FetchResponse {
            vectors: vector_map(response.vectors),
            namespace: response.namespace,
            usage: None,
        }))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let ListRequest {
            prefix,
            limit,
            pagination_token,
            namespace,
        } = request.into_inner();
        let budget = self.index.answer_budget();
        let response = self
            .read(move |index| {
                index.list_within(
                    EngineList {
                        namespace,
                        prefix,
                        limit,
                        pagination_token,
                    },
                    budget,
                )
            })
            .await?;
        Ok(Response::new(ListResponse {
            vectors: response.ids.into_iter().map(|id| ListItem { id }).collect(),
            pagination: pagination(response.next),
            namespace: response.namespace,
            usage: None,
        }))
    }

    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<QueryResponse>, Status> {
        let key_id = key_id(&request);
        #[allow(deprecated)]
        let QueryRequest {
            namespace,
            top_k,
            filter,
            include_values,
            include_metadata,
            queries,
            vector,
            sparse_vector,
            id,
            // Tuning knobs of Pinecone's dedicated read nodes; the HNSW graph has its own (ef_search, set per index).
            scan_factor: _,
            max_candidates: _,
        } = request.into_inner();
        refuse_batch_queries(queries.len()).map_err(status)?;
        let filter = optional_json(filter, "filter")?;
        let budget = self.index.answer_budget();
        let response = self
            .query_of(key_id.as_deref(), move |index| {
                index.query_within(
                    EngineQuery {
                        namespace,
                        top_k,
                        filter,
                        include_values,
                        include_metadata,
                        vector,
                        sparse_vector: sparse_input(sparse_vector),
                        id,
                    },
                    budget,
                )
            })
            .await?;
        let matches = response
            .matches
            .into_iter()
            .map(|m| ScoredVector {
                id: m.id,
                score: m.score,
                values: m.values,
                sparse_values: sparse_values(m.sparse_values),
                metadata: m.metadata.map(metadata_to_struct),
            })
            .collect();
        #[allow(deprecated)]
        Ok(Response::new(QueryResponse {
            results: Vec::new(),
            matches,
            namespace: response.namespace,
            usage: None,
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let UpdateRequest {
            id,
            values,
            sparse_values,
            set_metadata,
            namespace,
            filter,
            dry_run,
        } = request.into_inner();
        let set_metadata = optional_json(set_metadata, "set_metadata")?;
        let filter = optional_json(filter, "filter")?;
        let matched = self
            .run(move |index| {
                index.update(EngineUpdate {
                    namespace,
                    id,
                    values,
                    sparse_values: sparse_input(sparse_values),
                    set_metadata,
                    filter,
                    dry_run: dry_run.unwrap_or(false),
                })
            })
            .await?;
        Ok(Response::new(UpdateResponse {
            matched_records: Some(i32::try_from(matched).unwrap_or(i32::MAX)),
        }))
    }

    async fn describe_index_stats(
        &self,
        request: Request<DescribeIndexStatsRequest>,
    ) -> Result<Response<DescribeIndexStatsResponse>, Status> {
        let default_name = default_namespace_name(request.metadata());
        let DescribeIndexStatsRequest { filter } = request.into_inner();
        let filter = optional_json(filter, "filter")?;
        let stats = self.read(move |index| index.describe_stats(filter)).await?;
        let namespaces = stats
            .namespaces
            .into_iter()
            .map(|(name, count)| {
                (
                    display_namespace(name, default_name),
                    NamespaceSummary {
                        vector_count: saturating_u32(count),
                    },
                )
            })
            .collect();
        Ok(Response::new(DescribeIndexStatsResponse {
            namespaces,
            dimension: Some(stats.dimension.get()),
            index_fullness: 0.0,
            total_vector_count: saturating_u32(stats.total_vector_count),
            metric: Some(stats.metric.to_string()),
            vector_type: Some(VECTOR_TYPE.to_owned()),
            memory_fullness: None,
            storage_fullness: None,
        }))
    }

    async fn list_namespaces(
        &self,
        request: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let default_name = default_namespace_name(request.metadata());
        let ListNamespacesRequest {
            pagination_token,
            limit,
            prefix,
        } = request.into_inner();
        let response = self
            .read(move |index| {
                index.list_namespaces(EngineListNamespaces {
                    prefix,
                    limit,
                    pagination_token,
                })
            })
            .await?;
        Ok(Response::new(ListNamespacesResponse {
            namespaces: response
                .namespaces
                .into_iter()
                .map(|info| namespace_description(info, default_name))
                .collect(),
            pagination: pagination(response.next),
            total_count: i32::try_from(response.total_count).unwrap_or(i32::MAX),
        }))
    }

    async fn describe_namespace(
        &self,
        request: Request<DescribeNamespaceRequest>,
    ) -> Result<Response<NamespaceDescription>, Status> {
        let default_name = default_namespace_name(request.metadata());
        let DescribeNamespaceRequest { namespace } = request.into_inner();
        let info = self
            .read(move |index| index.describe_namespace(&namespace))
            .await?;
        Ok(Response::new(namespace_description(info, default_name)))
    }

    async fn delete_namespace(
        &self,
        request: Request<DeleteNamespaceRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let DeleteNamespaceRequest { namespace } = request.into_inner();
        self.run(move |index| index.delete_namespace(&namespace))
            .await?;
        Ok(Response::new(DeleteResponse {}))
    }

    async fn create_namespace(
        &self,
        request: Request<CreateNamespaceRequest>,
    ) -> Result<Response<NamespaceDescription>, Status> {
        let default_name = default_namespace_name(request.metadata());
        let CreateNamespaceRequest { name, schema } = request.into_inner();
        let fields = schema
            .map(|MetadataSchema { fields }| {
                declared_fields(
                    fields
                        .into_iter()
                        .map(|(field, MetadataFieldProperties { filterable })| (field, filterable)),
                )
            })
            .transpose()
            .map_err(status)?;
        let info = self
            .run(move |index| index.create_namespace(&name, fields))
            .await?;
        Ok(Response::new(namespace_description(info, default_name)))
    }

    async fn fetch_by_metadata(
        &self,
        request: Request<FetchByMetadataRequest>,
    ) -> Result<Response<FetchByMetadataResponse>, Status> {
        let key_id = key_id(&request);
        let FetchByMetadataRequest {
            namespace,
            filter,
            limit,
            pagination_token,
        } = request.into_inner();
        let filter = filter.map(|f| struct_to_json(f, "filter")).transpose()?;
        let budget = self.index.answer_budget();
        let response = self
            .query_of(key_id.as_deref(), move |index| {
                index.fetch_by_metadata_within(
                    EngineFetchByMeta {
                        namespace,
                        filter,
                        limit,
                        pagination_token,
                    },
                    budget,
                )
            })
            .await?;
        Ok(Response::new(FetchByMetadataResponse {
            vectors: vector_map(response.vectors),
            namespace: response.namespace,
            usage: None,
            pagination: pagination(response.next),
        }))
    }
}

/// Fetched records keyed by id, as Pinecone's responses carry them.
fn vector_map(records: Vec<Record>) -> std::collections::HashMap<String, Vector> {
    records
        .into_iter()
        .map(|record| {
            let Record {
                id,
                values,
                sparse_values: sparse,
                metadata,
            } = record;
            let vector = Vector {
                id: id.clone(),
                values,
                sparse_values: sparse_values(sparse),
                metadata: metadata.map(metadata_to_struct),
            };
            (id, vector)
        })
        .collect()
}

fn pagination(next: Option<String>) -> Option<Pagination> {
    next.map(|next| Pagination { next })
}

fn saturating_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn namespace_description(info: NamespaceInfo, default_name: &str) -> NamespaceDescription {
    let NamespaceInfo {
        name,
        record_count,
        size_bytes,
        schema_fields,
    } = info;
    NamespaceDescription {
        name: display_namespace(name, default_name),
        record_count,
        schema: schema_fields.as_ref().map(|fields| MetadataSchema {
            fields: fields
                .iter()
                .map(|f| (f.clone(), MetadataFieldProperties { filterable: true }))
                .collect(),
        }),
        indexed_fields: schema_fields.map(|fields| IndexedFields { fields }),
        size_bytes,
    }
}

/// The id of the API key that authenticated `request` (attached by the auth layer).
fn key_id<T>(request: &Request<T>) -> Option<String> {
    request
        .extensions()
        .get::<larch_auth::Principal>()
        .map(|principal| principal.key_id.clone())
}

/// How the default namespace is named for the caller (see
/// [`crate::api::default_namespace_name`]).
fn default_namespace_name(metadata: &MetadataMap) -> &'static str {
    crate::api::default_namespace_name(
        metadata
            .get(API_VERSION_HEADER)
            .and_then(|v| v.to_str().ok()),
    )
}

/// The one place engine errors become gRPC statuses. Backpressure refusals carry
/// `grpc-retry-pushback-ms`, which Pinecone's clients honour before retrying.
pub fn status(err: Error) -> Status {
    larch_model::wire::grpc_status(&err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_namespace_is_named_by_api_version() {
        let mut md = MetadataMap::new();
        assert_eq!(default_namespace_name(&md), "");
        md.insert("x-pinecone-api-version", "2025-01".parse().unwrap());
        assert_eq!(default_namespace_name(&md), "");
        md.insert("x-pinecone-api-version", "2026-07".parse().unwrap());
        assert_eq!(default_namespace_name(&md), "__default__");
    }
}
