//! Pinecone's `VectorService`: protobuf in, one [`IndexHandle`] call, protobuf out.
//!
//! Each handler decodes its message into the facade's domain request ([`FromProto`], in
//! [`crate::convert`]), calls the one [`IndexHandle`] method of its RPC with the [`Caller`]
//! (the key the auth layer attached, the API version the client sent), and returns the
//! answer, which the facade has already converted to protobuf. The REST twin
//! ([`crate::rest`]) calls the same methods with the same domain requests. Writes (upsert,
//! update, delete) and queries return the index's log sequence number in the response's
//! initial metadata, as Pinecone does ([`REQUEST_LSN_HEADER`], [`MAX_INDEXED_LSN_HEADER`]).

use std::sync::Arc;

use larch_engine::{Engine, Error};
use larch_proto::pinecone::{
    CreateNamespaceRequest, DeleteNamespaceRequest, DeleteRequest, DeleteResponse,
    DescribeIndexStatsRequest, DescribeIndexStatsResponse, DescribeNamespaceRequest,
    FetchByMetadataRequest, FetchByMetadataResponse, FetchRequest, FetchResponse,
    ListNamespacesRequest, ListNamespacesResponse, ListRequest, ListResponse, NamespaceDescription,
    QueryRequest, QueryResponse, UpdateRequest, UpdateResponse, UpsertRequest, UpsertResponse,
    vector_service_server::VectorService,
};
use tonic::{Request, Response, Status};

use crate::api::{
    API_VERSION_HEADER, Caller, IndexHandle, MAX_INDEXED_LSN_HEADER, REQUEST_LSN_HEADER, Sequenced,
};
use crate::convert::FromProto;

/// The gRPC face of one index.
pub struct VectorApi {
    index: IndexHandle,
}

impl VectorApi {
    /// Serves the index called `index` of `engine`.
    pub fn new(engine: Arc<Engine>, index: impl Into<String>) -> VectorApi {
        VectorApi::from(IndexHandle::new(engine, index))
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
        let (caller, request) = decode(request)?;
        let answer = self.index.upsert(&caller, request).await.map_err(status)?;
        Ok(with_lsn(REQUEST_LSN_HEADER, answer))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let (caller, request) = decode(request)?;
        let answer = self.index.delete(&caller, request).await.map_err(status)?;
        Ok(with_lsn(REQUEST_LSN_HEADER, answer))
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let (caller, request) = decode(request)?;
        let answer = self.index.fetch(&caller, request).await.map_err(status)?;
        Ok(Response::new(answer))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let (caller, request) = decode(request)?;
        let answer = self.index.list(&caller, request).await.map_err(status)?;
        Ok(Response::new(answer))
    }

    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<QueryResponse>, Status> {
        let (caller, request) = decode(request)?;
        let answer = self.index.query(&caller, request).await.map_err(status)?;
        Ok(with_lsn(MAX_INDEXED_LSN_HEADER, answer))
    }

    async fn update(
        &self,
        request: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let (caller, request) = decode(request)?;
        let answer = self.index.update(&caller, request).await.map_err(status)?;
        Ok(with_lsn(REQUEST_LSN_HEADER, answer))
    }

    async fn describe_index_stats(
        &self,
        request: Request<DescribeIndexStatsRequest>,
    ) -> Result<Response<DescribeIndexStatsResponse>, Status> {
        let (caller, request) = decode(request)?;
        let answer = self
            .index
            .describe_index_stats(&caller, request)
            .await
            .map_err(status)?;
        Ok(Response::new(answer))
    }

    async fn list_namespaces(
        &self,
        request: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let (caller, request) = decode(request)?;
        let answer = self
            .index
            .list_namespaces(&caller, request)
            .await
            .map_err(status)?;
        Ok(Response::new(answer))
    }

    async fn describe_namespace(
        &self,
        request: Request<DescribeNamespaceRequest>,
    ) -> Result<Response<NamespaceDescription>, Status> {
        let (caller, request) = decode(request)?;
        let answer = self
            .index
            .describe_namespace(&caller, request)
            .await
            .map_err(status)?;
        Ok(Response::new(answer))
    }

    async fn delete_namespace(
        &self,
        request: Request<DeleteNamespaceRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let (caller, request) = decode(request)?;
        let answer = self
            .index
            .delete_namespace(&caller, request)
            .await
            .map_err(status)?;
        Ok(Response::new(answer))
    }

    async fn create_namespace(
        &self,
        request: Request<CreateNamespaceRequest>,
    ) -> Result<Response<NamespaceDescription>, Status> {
        let (caller, request) = decode(request)?;
        let answer = self
            .index
            .create_namespace(&caller, request)
            .await
            .map_err(status)?;
        Ok(Response::new(answer))
    }

    async fn fetch_by_metadata(
        &self,
        request: Request<FetchByMetadataRequest>,
    ) -> Result<Response<FetchByMetadataResponse>, Status> {
        let (caller, request) = decode(request)?;
        let answer = self
            .index
            .fetch_by_metadata(&caller, request)
            .await
            .map_err(status)?;
        Ok(Response::new(answer))
    }
}

/// The caller of `request` (the principal the auth layer attached, the API version in its
/// metadata) and its message as the domain request `D`.
fn decode<P, D: FromProto<P>>(request: Request<P>) -> Result<(Caller, D), Status> {
    let caller = Caller::new(
        request.extensions().get::<larch_auth::Principal>(),
        request
            .metadata()
            .get(API_VERSION_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    Ok((caller, D::from_proto(request.into_inner())?))
}

/// The response carrying `answer`, with its LSN in the initial metadata `header`.
fn with_lsn<T>(header: &'static str, Sequenced { answer, lsn }: Sequenced<T>) -> Response<T> {
    let mut response = Response::new(answer);
    response.metadata_mut().insert(header, lsn.into());
    response
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
    fn the_caller_names_the_default_namespace_by_its_api_version() {
        let caller = |version: Option<&'static str>| {
            let mut request = Request::new(DescribeNamespaceRequest::default());
            if let Some(version) = version {
                request
                    .metadata_mut()
                    .insert("x-pinecone-api-version", version.parse().unwrap());
            }
            let (caller, _): (Caller, crate::api::DescribeNamespaceRequest) =
                decode(request).unwrap();
            caller.default_namespace()
        };
        assert_eq!(caller(None), "");
        assert_eq!(caller(Some("2025-01")), "");
        assert_eq!(caller(Some("2026-07")), "__default__");
    }
}
