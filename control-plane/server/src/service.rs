//! `larch.control.v1.IndexService`: protobuf in, one [`Indexes`] call, protobuf out.

use std::sync::Arc;

use larch_catalog::{Catalog, ConfigureIndex, CreateIndex, IndexRecord, SearchSettings};
use larch_engine::ErrorCode;
use larch_proto::control::{
    ConfigureIndexRequest, CreateIndexRequest, DeleteIndexRequest, DeleteIndexResponse,
    DescribeIndexRequest, IndexModel, IndexSpec, IndexStatus, ListIndexesRequest,
    ListIndexesResponse, SearchParams, ServerlessSpec, index_service_server::IndexService,
};
use tonic::{Request, Response, Status};

use crate::indexes::{Failure, Indexes};

/// The gRPC face of the catalog. Clones share the same catalog slot.
#[derive(Clone)]
pub struct IndexApi {
    indexes: Indexes,
}

impl IndexApi {
    /// Serves `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> IndexApi {
        IndexApi::from(Indexes::new(catalog))
    }

    /// An API that answers UNAVAILABLE until [`IndexApi::set_ready`].
    pub fn recovering() -> IndexApi {
        IndexApi::from(Indexes::recovering())
    }

    /// Starts serving `catalog` (once; later calls are ignored).
    pub fn set_ready(&self, catalog: Arc<Catalog>) {
        self.indexes.set_ready(catalog);
    }
}

impl From<Indexes> for IndexApi {
    /// The gRPC face of `indexes` (sharing its catalog slot with every other transport).
    fn from(indexes: Indexes) -> IndexApi {
        IndexApi { indexes }
    }
}

#[tonic::async_trait]
impl IndexService for IndexApi {
    async fn create_index(
        &self,
        request: Request<CreateIndexRequest>,
    ) -> Result<Response<IndexModel>, Status> {
        let CreateIndexRequest {
            name,
            dimension,
            metric,
            spec,
            deletion_protection,
            tags,
            vector_type,
            search,
        } = request.into_inner();
        let (cloud, region) = match spec.and_then(|IndexSpec { serverless }| serverless) {
            Some(ServerlessSpec { cloud, region }) => (non_empty(cloud), non_empty(region)),
            None => (None, None),
        };
        let request = CreateIndex {
            name,
            dimension: dimension.map(i64::from),
            metric,
            cloud,
            region,
            deletion_protection,
            tags: tags.into_iter().collect(),
            vector_type,
            search: search_settings(search),
        };
        let record = self.indexes.create(request).await.map_err(status)?;
        Ok(Response::new(index_model(record)))
    }

    async fn list_indexes(
        &self,
        request: Request<ListIndexesRequest>,
    ) -> Result<Response<ListIndexesResponse>, Status> {
        let ListIndexesRequest {} = request.into_inner();
        let indexes = self
            .indexes
            .list()
            .map_err(status)?
            .into_iter()
            .map(index_model)
            .collect();
        Ok(Response::new(ListIndexesResponse { indexes }))
    }

    async fn describe_index(
        &self,
        request: Request<DescribeIndexRequest>,
    ) -> Result<Response<IndexModel>, Status> {
        let DescribeIndexRequest { name } = request.into_inner();
        let record = self.indexes.describe(&name).map_err(status)?;
        Ok(Response::new(index_model(record)))
    }

    async fn configure_index(
        &self,
        request: Request<ConfigureIndexRequest>,
    ) -> Result<Response<IndexModel>, Status> {
        let ConfigureIndexRequest {
            name,
            deletion_protection,
            tags,
            search,
        } = request.into_inner();
        let request = ConfigureIndex {
            name,
            deletion_protection,
            tags: tags.into_iter().collect(),
            search: search_settings(search),
        };
        let record = self.indexes.configure(request).await.map_err(status)?;
        Ok(Response::new(index_model(record)))
    }

    async fn delete_index(
        &self,
        request: Request<DeleteIndexRequest>,
    ) -> Result<Response<DeleteIndexResponse>, Status> {
        let DeleteIndexRequest { name } = request.into_inner();
        self.indexes.delete(name).await.map_err(status)?;
        Ok(Response::new(DeleteIndexResponse {}))
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The raw ANN parameters of a request; an absent message changes (or sets) nothing.
fn search_settings(search: Option<SearchParams>) -> SearchSettings {
    let SearchParams {
        m,
        ef_construction,
        ef_search,
        quantization,
    } = search.unwrap_or_default();
    SearchSettings {
        m,
        ef_construction,
        ef_search,
        quantization,
    }
}

fn index_model(record: IndexRecord) -> IndexModel {
    let IndexRecord {
        name,
        config,
        vector_type,
        cloud,
        region,
        deletion_protection,
        tags,
        search,
        state,
        host,
    } = record;
    IndexModel {
        name: name.to_string(),
        dimension: i32::try_from(config.dimension.get()).ok(),
        metric: config.metric.to_string(),
        host,
        spec: Some(IndexSpec {
            serverless: Some(ServerlessSpec {
                cloud: cloud.as_str().to_owned(),
                region,
            }),
        }),
        status: Some(IndexStatus {
            ready: state.is_ready(),
            state: state.as_str().to_owned(),
        }),
        deletion_protection: deletion_protection.as_str().to_owned(),
        tags: tags.into_iter().collect(),
        vector_type: vector_type.as_str().to_owned(),
        search: Some(SearchParams {
            m: Some(search.m()),
            ef_construction: Some(search.ef_construction()),
            ef_search: Some(search.ef_search()),
            quantization: Some(search.quantization().as_str().to_owned()),
        }),
    }
}

/// The one place control-plane failures become gRPC statuses.
fn status(err: Failure) -> Status {
    let message = err.to_string();
    match err.code() {
        ErrorCode::InvalidArgument => Status::invalid_argument(message),
        ErrorCode::NotFound => Status::not_found(message),
        ErrorCode::AlreadyExists => Status::already_exists(message),
        ErrorCode::FailedPrecondition => Status::failed_precondition(message),
        ErrorCode::ResourceExhausted => Status::resource_exhausted(message),
        ErrorCode::Unavailable => Status::unavailable(message),
        ErrorCode::Internal => {
            tracing::error!(error = %message, "control-plane request failed");
            Status::internal("internal error; see the server log")
        }
    }
}
