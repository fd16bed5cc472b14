//! The data plane's edge (issue 16): the gRPC and REST handlers are adapters over one facade,
//! and a request is authorized (by its RPC or route, before its body is read) before anything
//! in it is decoded or validated — on both transports, so a caller without the rights learns
//! nothing about its request but that it may not make it.

use http::{Method, StatusCode};
use larch_proto::control::CreateApiKeyRequest;
use larch_proto::pinecone::{
    CreateNamespaceRequest, FetchByMetadataRequest, MetadataFieldProperties, MetadataSchema,
    QueryRequest, UpdateRequest, UpsertRequest, Vector,
};
use larch_tests::{DataClient, TestServer};
use prost_types::value::Kind;
use prost_types::{Struct, Value};
use serde_json::json;
use tonic::Code;

use crate::rest_client::{Reply, Rest};

/// A `Struct` no JSON object can hold: `{"x": NaN}` (INVALID_ARGUMENT when decoded).
fn nan_struct() -> Option<Struct> {
    let nan = Value {
        kind: Some(Kind::NumberValue(f64::NAN)),
    };
    Some(Struct {
        fields: [("x".to_owned(), nan)].into_iter().collect(),
    })
}

/// The malformed gRPC requests, each sent with `client`: a write (upsert, update, create
/// namespace) or a read (query, fetch by metadata), per `writes`.
async fn malformed_grpc(client: &mut DataClient, writes: bool) -> Vec<(&'static str, Code)> {
    let mut codes = Vec::new();
    if writes {
        let upsert = client
            .upsert(UpsertRequest {
                vectors: vec![Vector {
                    id: "v".into(),
                    values: vec![1.0, 0.0],
                    metadata: nan_struct(),
                    ..Default::default()
                }],
                namespace: String::new(),
            })
            .await;
        codes.push(("Upsert", upsert.map_or_else(|s| s.code(), |_| Code::Ok)));
        let update = client
            .update(UpdateRequest {
                id: "v".into(),
                set_metadata: nan_struct(),
                ..Default::default()
            })
            .await;
        codes.push(("Update", update.map_or_else(|s| s.code(), |_| Code::Ok)));
        let create = client
            .create_namespace(CreateNamespaceRequest {
                name: "ns".into(),
                schema: Some(MetadataSchema {
                    fields: [(
                        "genre".to_owned(),
                        MetadataFieldProperties { filterable: false },
                    )]
                    .into_iter()
                    .collect(),
                }),
            })
            .await;
        codes.push((
            "CreateNamespace",
            create.map_or_else(|s| s.code(), |_| Code::Ok),
        ));
    } else {
        let query = client
            .query(QueryRequest {
                top_k: 1,
                vector: vec![1.0, 0.0],
                filter: nan_struct(),
                ..Default::default()
            })
            .await;
        codes.push(("Query", query.map_or_else(|s| s.code(), |_| Code::Ok)));
        let fetch = client
            .fetch_by_metadata(FetchByMetadataRequest {
                filter: nan_struct(),
                ..Default::default()
            })
            .await;
        codes.push((
            "FetchByMetadata",
            fetch.map_or_else(|s| s.code(), |_| Code::Ok),
        ));
    }
    codes
}

/// The malformed REST requests, writes or reads as in [`malformed_grpc`].
async fn malformed_rest(rest: &Rest, writes: bool) -> Vec<(&'static str, Reply)> {
    if writes {
        vec![
            (
                "POST /vectors/upsert (not JSON)",
                rest.send(Method::POST, "/vectors/upsert", Some(b"{not json".to_vec()))
                    .await,
            ),
            (
                "POST /vectors/update (wrong type)",
                rest.post("/vectors/update", json!({"id": 7})).await,
            ),
            (
                "POST /namespaces (unfilterable field)",
                rest.post(
                    "/namespaces",
                    json!({"name": "ns", "schema": {"fields": {"genre": {"filterable": false}}}}),
                )
                .await,
            ),
        ]
    } else {
        vec![
            (
                "POST /query (batch form)",
                rest.post("/query", json!({"topK": 1, "queries": [{}]}))
                    .await,
            ),
            (
                "GET /vectors/list (bad limit)",
                rest.get("/vectors/list?limit=many").await,
            ),
            (
                "GET /vectors/fetch (bad encoding)",
                rest.get("/vectors/fetch?ids=%ff").await,
            ),
        ]
    }
}

#[tokio::test]
async fn issue_16_a_caller_without_the_rights_is_denied_before_its_request_is_read_on_both_transports()
 {
    let server = TestServer::start().await;
    let (model, _) = server.create_index("edge", 2, "cosine").await;
    server.create_index("elsewhere", 2, "cosine").await;
    let key = |name: &str, role: &str, index: Option<&str>| CreateApiKeyRequest {
        name: name.into(),
        roles: vec![role.into()],
        index_names: index.map(|i| vec![i.to_owned()]).unwrap_or_default(),
        ..Default::default()
    };
    // May read but not write this index; may do anything, but only on another index.
    let (viewer, _) = server
        .create_key(key("viewer", "DataPlaneViewer", None))
        .await;
    let (restricted, _) = server
        .create_key(key("restricted", "ProjectEditor", Some("elsewhere")))
        .await;

    for (writes, denied_key) in [(true, &viewer), (false, &restricted)] {
        // With the admin key the requests are refused as malformed: they are.
        let mut admin = server.data(&model.host).await;
        for (rpc, code) in malformed_grpc(&mut admin, writes).await {
            assert_eq!(code, Code::InvalidArgument, "admin {rpc}");
        }
        let rest = Rest::new(&model.host).key(&server.key);
        for (route, reply) in malformed_rest(&rest, writes).await {
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "admin {route}: {reply:?}"
            );
        }

        // Without the rights, the same requests are denied, not judged.
        let mut denied = server.data_with_key(&model.host, Some(denied_key)).await;
        for (rpc, code) in malformed_grpc(&mut denied, writes).await {
            assert_eq!(code, Code::PermissionDenied, "{rpc} (writes: {writes})");
        }
        let rest = Rest::new(&model.host).key(denied_key);
        for (route, reply) in malformed_rest(&rest, writes).await {
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{route}: {reply:?}");
            assert_eq!(reply.body["code"], Code::PermissionDenied as i32, "{route}");
        }
    }
    server.stop().await;
}
