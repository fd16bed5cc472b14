//! `larch.control.v1.IndexService`: protobuf in, one [`Indexes`] call, protobuf out.
//!
//! Each handler reads the caller's [`Principal`] (put in the request by the auth layer),
//! decodes the message, calls the facade (which authorizes, picks the pool and asks the
//! catalog) and encodes the answer. The protobuf ⇄ catalog conversions are the `From` impls
//! at the end of this module, through [`Proto`] (both sides are other crates' types).

use std::sync::Arc;

use larch_auth::Principal;
use larch_catalog::{Catalog, ConfigureIndex, CreateIndex, IndexRecord, SearchSettings};
use larch_proto::control::{
    ConfigureIndexRequest, CreateIndexRequest, DeleteIndexRequest, DeleteIndexResponse,
    DescribeIndexRequest, IndexModel, IndexSpec, IndexStatus, ListIndexesRequest,
    ListIndexesResponse, SearchParams, ServerlessSpec, index_service_server::IndexService,
};
use tonic::{Request, Response, Status};

use crate::indexes::{ApiVersion, Failure, Indexes, NamesIndex};

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
        let (principal, request) = decode(request)?;
        let record = self.indexes.create(&principal, Proto(request)).await;
        encode(record)
    }

    async fn list_indexes(
        &self,
        request: Request<ListIndexesRequest>,
    ) -> Result<Response<ListIndexesResponse>, Status> {
        let (principal, ListIndexesRequest {}) = decode(request)?;
        encode(self.indexes.list(&principal).await)
    }

    async fn describe_index(
        &self,
        request: Request<DescribeIndexRequest>,
    ) -> Result<Response<IndexModel>, Status> {
        let (principal, DescribeIndexRequest { name }) = decode(request)?;
        encode(self.indexes.describe(&principal, &name).await)
    }

    async fn configure_index(
        &self,
        request: Request<ConfigureIndexRequest>,
    ) -> Result<Response<IndexModel>, Status> {
        let (principal, request) = decode(request)?;
        let record = self.indexes.configure(&principal, Proto(request)).await;
        encode(record)
    }

    async fn delete_index(
        &self,
        request: Request<DeleteIndexRequest>,
    ) -> Result<Response<DeleteIndexResponse>, Status> {
        let (principal, DeleteIndexRequest { name }) = decode(request)?;
        encode(self.indexes.delete(&principal, &name).await)
    }
}

/// The caller (UNAUTHENTICATED without one: the route is not behind the auth layer) and the
/// message of `request`.
pub(crate) fn decode<T>(request: Request<T>) -> Result<(Principal, T), Status> {
    let principal = larch_auth::grpc::principal(&request)?.clone();
    Ok((principal, request.into_inner()))
}

/// The facade's answer as a gRPC response.
fn encode<T, M>(answer: Result<T, Failure>) -> Result<Response<M>, Status>
where
    M: From<Proto<T>>,
{
    answer
        .map(|value| Response::new(M::from(Proto(value))))
        .map_err(status)
}

/// A protobuf message or a catalog value crossing between the two. Both are other crates'
/// types, so the conversions between them are written as `From` impls on this wrapper.
pub struct Proto<T>(pub T);

impl NamesIndex for Proto<CreateIndexRequest> {
    fn index_name(&self) -> &str {
        &self.0.name
    }
}

impl From<Proto<CreateIndexRequest>> for CreateIndex {
    fn from(Proto(request): Proto<CreateIndexRequest>) -> CreateIndex {
        let CreateIndexRequest {
            name,
            dimension,
            metric,
            spec,
            deletion_protection,
            tags,
            vector_type,
            search,
        } = request;
        // proto3 strings have no presence: an empty cloud or region is one not given.
        let (cloud, region) = match spec.and_then(|IndexSpec { serverless }| serverless) {
            Some(ServerlessSpec { cloud, region }) => (non_empty(cloud), non_empty(region)),
            None => (None, None),
        };
        CreateIndex {
            name,
            dimension: dimension.map(i64::from),
            metric,
            cloud,
            region,
            deletion_protection,
            tags: tags.into_iter().collect(),
            vector_type,
            search: Proto(search).into(),
        }
    }
}

impl NamesIndex for Proto<ConfigureIndexRequest> {
    fn index_name(&self) -> &str {
        &self.0.name
    }
}

impl From<Proto<ConfigureIndexRequest>> for ConfigureIndex {
    fn from(Proto(request): Proto<ConfigureIndexRequest>) -> ConfigureIndex {
        let ConfigureIndexRequest {
            name,
            deletion_protection,
            tags,
            search,
        } = request;
        ConfigureIndex {
            name,
            deletion_protection,
            tags: tags.into_iter().collect(),
            search: Proto(search).into(),
        }
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The raw ANN parameters of a request; an absent message changes (or sets) nothing.
impl From<Proto<Option<SearchParams>>> for SearchSettings {
    fn from(Proto(search): Proto<Option<SearchParams>>) -> SearchSettings {
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
}

impl From<Proto<IndexRecord>> for IndexModel {
    fn from(Proto(record): Proto<IndexRecord>) -> IndexModel {
        // gRPC callers dial the data plane as pre-2026-07 REST clients do: a bare host:port.
        let host = ApiVersion::Classic.host(&record);
        let IndexRecord {
            // The caller's own project: not part of Pinecone's IndexModel.
            project_id: _,
            name,
            config,
            vector_type,
            cloud,
            region,
            deletion_protection,
            tags,
            search,
            state,
            host: _,
        } = record;
        IndexModel {
            name: name.to_string(),
            // A sparse index has no dimension.
            dimension: (!config.is_sparse())
                .then(|| i32::try_from(config.dimension.get()).ok())
                .flatten(),
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
}

impl From<Proto<Vec<IndexRecord>>> for ListIndexesResponse {
    fn from(Proto(records): Proto<Vec<IndexRecord>>) -> ListIndexesResponse {
        ListIndexesResponse {
            indexes: records.into_iter().map(|r| Proto(r).into()).collect(),
        }
    }
}

impl From<Proto<()>> for DeleteIndexResponse {
    fn from(Proto(()): Proto<()>) -> DeleteIndexResponse {
        DeleteIndexResponse {}
    }
}

/// Control-plane failures through the shared gRPC map.
fn status(err: Failure) -> Status {
    larch_model::wire::grpc_status(&err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indexes::testing::{OTHER, caller, indexes};
    use larch_auth::{Grant, Principal};
    use tonic::Code;

    fn as_caller<T>(principal: &Principal, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.extensions_mut().insert(principal.clone());
        request
    }

    fn create(name: &str, dimension: i32) -> CreateIndexRequest {
        CreateIndexRequest {
            name: name.into(),
            dimension: Some(dimension),
            ..Default::default()
        }
    }

    fn names(response: ListIndexesResponse) -> Vec<String> {
        response
            .indexes
            .into_iter()
            .map(|model| model.name)
            .collect()
    }

    #[tokio::test]
    async fn each_key_works_in_its_own_project() {
        let api = IndexApi::from(indexes());
        let (mine, theirs) = (caller(Grant::DEFAULT_PROJECT, None), caller(OTHER, None));
        api.create_index(as_caller(&mine, create("movies", 4)))
            .await
            .unwrap();
        api.create_index(as_caller(&theirs, create("movies", 8)))
            .await
            .unwrap();
        api.create_index(as_caller(&theirs, create("books", 8)))
            .await
            .unwrap();
        let listed =
            |principal: &Principal| api.list_indexes(as_caller(principal, ListIndexesRequest {}));
        assert_eq!(names(listed(&mine).await.unwrap().into_inner()), ["movies"]);
        assert_eq!(
            names(listed(&theirs).await.unwrap().into_inner()),
            ["books", "movies"]
        );
        let describe = |principal: &Principal, name: &str| {
            api.describe_index(as_caller(
                principal,
                DescribeIndexRequest { name: name.into() },
            ))
        };
        assert_eq!(
            describe(&theirs, "movies")
                .await
                .unwrap()
                .into_inner()
                .dimension,
            Some(8)
        );
        let status = describe(&mine, "books").await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "index 'books' not found");
        let status = api
            .delete_index(as_caller(
                &mine,
                DeleteIndexRequest {
                    name: "books".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert!(describe(&theirs, "books").await.is_ok());
    }

    #[tokio::test]
    async fn an_allow_list_is_enforced_with_permission_denied() {
        let api = IndexApi::from(indexes());
        let admin = caller(Grant::DEFAULT_PROJECT, None);
        for name in ["a", "b"] {
            api.create_index(as_caller(&admin, create(name, 4)))
                .await
                .unwrap();
        }
        let restricted = caller(Grant::DEFAULT_PROJECT, Some(&["a"]));
        let listed = api
            .list_indexes(as_caller(&restricted, ListIndexesRequest {}))
            .await
            .unwrap();
        assert_eq!(names(listed.into_inner()), ["a"]);
        let expected = "this API key is restricted to other indexes and may not use index 'b'";
        let refusals = [
            api.describe_index(as_caller(
                &restricted,
                DescribeIndexRequest { name: "b".into() },
            ))
            .await
            .map(drop),
            api.create_index(as_caller(&restricted, create("c", 4)))
                .await
                .map(drop),
            api.configure_index(as_caller(
                &restricted,
                ConfigureIndexRequest {
                    name: "b".into(),
                    deletion_protection: Some("enabled".into()),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
            api.delete_index(as_caller(
                &restricted,
                DeleteIndexRequest { name: "b".into() },
            ))
            .await
            .map(drop),
        ];
        for refusal in refusals {
            let status = refusal.unwrap_err();
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            assert!(
                status.message() == expected || status.message().ends_with("index 'c'"),
                "{status:?}"
            );
        }
        // Refused before the catalog: nothing changed, and nothing was created.
        let all = api
            .list_indexes(as_caller(&admin, ListIndexesRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.indexes.len(), 2);
        assert!(
            all.indexes
                .iter()
                .all(|m| m.deletion_protection == "disabled")
        );
        // An index on its list it may use.
        api.delete_index(as_caller(
            &restricted,
            DeleteIndexRequest { name: "a".into() },
        ))
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_key_is_authorized_for_the_index_before_its_request_is_validated() {
        let api = IndexApi::from(indexes());
        let restricted = caller(OTHER, Some(&["a"]));
        let invalid = |name: &str| {
            let mut request = create(name, 0);
            request.metric = Some("manhattan".into());
            as_caller(&restricted, request)
        };
        let status = api.create_index(invalid("b")).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        let status = api.create_index(invalid("a")).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let configure = |name: &str| {
            as_caller(
                &restricted,
                ConfigureIndexRequest {
                    name: name.into(),
                    deletion_protection: Some("sometimes".into()),
                    ..Default::default()
                },
            )
        };
        let status = api.configure_index(configure("b")).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        api.create_index(as_caller(&restricted, create("a", 4)))
            .await
            .unwrap();
        let status = api.configure_index(configure("a")).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }

    #[tokio::test]
    async fn a_request_without_a_principal_is_unauthenticated() {
        let api = IndexApi::from(indexes());
        let status = api
            .list_indexes(Request::new(ListIndexesRequest {}))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
}
