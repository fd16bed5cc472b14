//! API-key authentication on both planes: every RPC refuses a missing, wrong or unknown key
//! with UNAUTHENTICATED and never reaches the service; health and reflection need no key;
//! an operator-chosen bootstrap key (`LARCH_API_KEY=pclocal`) works like a generated one.

use std::collections::HashMap;
use std::sync::Arc;

use larch_catalog::{Catalog, PortPolicy};
use larch_data_plane::DataPlane;
use larch_proto::control::{
    ConfigureIndexRequest, CreateIndexRequest, DeleteIndexRequest, DescribeIndexRequest,
    ListIndexesRequest,
};
use larch_proto::pinecone::{
    CreateNamespaceRequest, DeleteNamespaceRequest, DeleteRequest, DescribeIndexStatsRequest,
    DescribeNamespaceRequest, FetchByMetadataRequest, FetchRequest, ListNamespacesRequest,
    ListRequest, QueryRequest, UpdateRequest, UpsertRequest, Vector,
};
use larch_tests::{ControlClient, DataClient, TestServer, json};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::exploration::{Reflection, health, list_services};

/// Message of a request without a key: it names the metadata key to use.
const MISSING_KEY: &str = "missing api key: send it in the 'api-key' request metadata";
/// Message of a request with a key that does not authenticate: it says nothing more.
const INVALID_KEY: &str = "invalid api key";

/// Calls every `IndexService` RPC once (in an order that succeeds with a valid key, on a
/// server that has no index called `auth-probe`), returning each outcome by method name.
async fn call_every_control_rpc(
    client: &mut ControlClient,
) -> Vec<(&'static str, Result<(), Status>)> {
    let name = || "auth-probe".to_owned();
    vec![
        (
            "CreateIndex",
            client
                .create_index(CreateIndexRequest {
                    name: name(),
                    dimension: Some(2),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "ListIndexes",
            client.list_indexes(ListIndexesRequest {}).await.map(|_| ()),
        ),
        (
            "DescribeIndex",
            client
                .describe_index(DescribeIndexRequest { name: name() })
                .await
                .map(|_| ()),
        ),
        (
            "ConfigureIndex",
            client
                .configure_index(ConfigureIndexRequest {
                    name: name(),
                    deletion_protection: Some("disabled".into()),
                    tags: HashMap::new(),
                    search: None,
                })
                .await
                .map(|_| ()),
        ),
        (
            "DeleteIndex",
            client
                .delete_index(DeleteIndexRequest { name: name() })
                .await
                .map(|_| ()),
        ),
    ]
}

/// Calls every `VectorService` RPC once (in an order that succeeds with a valid key on an
/// empty 2-dimensional index), returning each outcome by method name.
async fn call_every_data_rpc(client: &mut DataClient) -> Vec<(&'static str, Result<(), Status>)> {
    let ns = || "auth-ns".to_owned();
    vec![
        (
            "Upsert",
            client
                .upsert(UpsertRequest {
                    vectors: vec![Vector {
                        id: "v1".into(),
                        values: vec![1.0, 0.0],
                        metadata: json(serde_json::json!({"genre": "drama"})),
                        ..Default::default()
                    }],
                    namespace: ns(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "Fetch",
            client
                .fetch(FetchRequest {
                    ids: vec!["v1".into()],
                    namespace: ns(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "List",
            client
                .list(ListRequest {
                    namespace: ns(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "Query",
            client
                .query(QueryRequest {
                    top_k: 1,
                    vector: vec![1.0, 0.0],
                    namespace: ns(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "Update",
            client
                .update(UpdateRequest {
                    id: "v1".into(),
                    values: vec![0.0, 1.0],
                    namespace: ns(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "DescribeIndexStats",
            client
                .describe_index_stats(DescribeIndexStatsRequest { filter: None })
                .await
                .map(|_| ()),
        ),
        (
            "ListNamespaces",
            client
                .list_namespaces(ListNamespacesRequest::default())
                .await
                .map(|_| ()),
        ),
        (
            "DescribeNamespace",
            client
                .describe_namespace(DescribeNamespaceRequest { namespace: ns() })
                .await
                .map(|_| ()),
        ),
        (
            "FetchByMetadata",
            client
                .fetch_by_metadata(FetchByMetadataRequest {
                    namespace: ns(),
                    filter: json(serde_json::json!({"genre": {"$eq": "drama"}})),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "CreateNamespace",
            client
                .create_namespace(CreateNamespaceRequest {
                    name: "auth-other".into(),
                    schema: None,
                })
                .await
                .map(|_| ()),
        ),
        (
            "DeleteNamespace",
            client
                .delete_namespace(DeleteNamespaceRequest {
                    namespace: "auth-other".into(),
                })
                .await
                .map(|_| ()),
        ),
        (
            "Delete",
            client
                .delete(DeleteRequest {
                    ids: vec!["v1".into()],
                    namespace: ns(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
    ]
}

/// Asserts every outcome is UNAUTHENTICATED with exactly `message`.
#[track_caller]
fn assert_all_unauthenticated(
    outcomes: &[(&str, Result<(), Status>)],
    expected_calls: usize,
    message: &str,
    what: &str,
) {
    assert_eq!(outcomes.len(), expected_calls);
    for (method, outcome) in outcomes {
        let status = outcome
            .as_ref()
            .expect_err(&format!("{method} {what} should be refused"));
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{method} {what}: {status:?}"
        );
        assert_eq!(status.message(), message, "{method} {what}");
    }
}

/// Keys that must not authenticate against a server whose admin key is `key`.
fn wrong_keys(key: &str) -> Vec<(String, &'static str)> {
    let (prefix, secret) = key.rsplit_once('_').expect("a generated key");
    let flipped = if secret.starts_with('0') { '1' } else { '0' };
    vec![
        ("wrong".to_owned(), "an opaque wrong key"),
        (format!("{key}0"), "the right key with an extra character"),
        (
            key[..key.len() - 1].to_owned(),
            "the right key minus its last character",
        ),
        (
            format!("{prefix}_{flipped}{}", &secret[1..]),
            "the right key id with a wrong secret",
        ),
        (
            larch_auth::ApiKey::generate().as_str().to_owned(),
            "a well-formed unknown key",
        ),
        (
            format!("larch_000000000000_{secret}"),
            "the right secret under an unknown key id",
        ),
    ]
}

#[tokio::test]
async fn control_plane_rpcs_require_a_valid_key() {
    // Many wrong keys from one address: the failed-auth slowdown (tested in `projects`) would
    // hold each refusal up to 3 s.
    let server = TestServer::start_with(|keys| keys.slow_down_failed_auth(false)).await;

    let outcomes = call_every_control_rpc(&mut server.control_with_key(None).await).await;
    assert_all_unauthenticated(&outcomes, 5, MISSING_KEY, "without a key");
    let outcomes = call_every_control_rpc(&mut server.control_with_key(Some("")).await).await;
    assert_all_unauthenticated(&outcomes, 5, MISSING_KEY, "with an empty key");
    for (key, what) in wrong_keys(&server.key) {
        let outcomes = call_every_control_rpc(&mut server.control_with_key(Some(&key)).await).await;
        assert_all_unauthenticated(&outcomes, 5, INVALID_KEY, what);
    }
    // Nothing refused reached the catalog.
    let listed = server
        .control()
        .await
        .list_indexes(ListIndexesRequest {})
        .await
        .unwrap();
    assert!(listed.into_inner().indexes.is_empty());

    // The right key passes every RPC.
    for (method, outcome) in call_every_control_rpc(&mut server.control().await).await {
        outcome.unwrap_or_else(|status| panic!("{method} with the admin key: {status:?}"));
    }
    server.stop().await;
}

#[tokio::test]
async fn data_plane_rpcs_require_a_valid_key() {
    // Many wrong keys from one address: the failed-auth slowdown (tested in `projects`) would
    // hold each refusal up to 3 s.
    let server = TestServer::start_with(|keys| keys.slow_down_failed_auth(false)).await;
    let (model, mut admin) = server.create_index("guarded-data", 2, "cosine").await;

    let outcomes = call_every_data_rpc(&mut server.data_with_key(&model.host, None).await).await;
    assert_all_unauthenticated(&outcomes, 12, MISSING_KEY, "without a key");
    for (key, what) in wrong_keys(&server.key) {
        let outcomes =
            call_every_data_rpc(&mut server.data_with_key(&model.host, Some(&key)).await).await;
        assert_all_unauthenticated(&outcomes, 12, INVALID_KEY, what);
    }
    // Nothing refused reached the index.
    let stats = admin
        .describe_index_stats(DescribeIndexStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.total_vector_count, 0);
    assert!(stats.namespaces.is_empty(), "{:?}", stats.namespaces);

    // The right key passes every RPC.
    for (method, outcome) in call_every_data_rpc(&mut admin).await {
        outcome.unwrap_or_else(|status| panic!("{method} with the admin key: {status:?}"));
    }
    server.stop().await;
}

#[tokio::test]
async fn health_and_reflection_need_no_key_on_either_plane() {
    let server = TestServer::start().await;
    let (model, _) = server.create_index("open-probes", 2, "cosine").await;
    let control = server.control_addr.to_string();
    for host in [&control, &model.host] {
        assert_eq!(
            health(host, "").await.unwrap(),
            ServingStatus::Serving,
            "{host}"
        );
        for version in [Reflection::V1, Reflection::V1Alpha] {
            let services = list_services(host, version).await.unwrap();
            assert!(
                services
                    .iter()
                    .any(|s| s == "larch.control.v1.IndexService")
                    && services.iter().any(|s| s == "VectorService"),
                "{host} {version:?}: {services:?}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn configured_bootstrap_key_authenticates_on_both_planes() {
    let dir = tempfile::tempdir().unwrap();
    let boot = larch_auth::bootstrap(dir.path(), Some("pclocal")).unwrap();
    assert!(
        boot.generated.is_none(),
        "a configured key is never generated or printed"
    );
    let principal = boot.store.authenticate("pclocal").unwrap();
    assert_eq!(principal.key_id, larch_auth::BOOTSTRAP_KEY_ID);
    assert!(principal.is_admin);

    // A later start without the variable keeps accepting the same key (its hash was stored).
    let restarted = larch_auth::bootstrap(dir.path(), None).unwrap();
    assert!(restarted.generated.is_none());
    assert!(restarted.store.authenticate("pclocal").is_ok());
    assert!(restarted.store.authenticate("pclocal2").is_err());

    // A real server on that key store.
    let keys = restarted.store;
    let admin = Arc::new(restarted.admin);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = larch_control_plane::Metrics::new();
    let data_plane = DataPlane::new(
        larch_engine::Engine::new(),
        keys.clone(),
        addr.ip(),
        metrics.clone(),
    );
    let catalog = Arc::new(Catalog::new(
        Arc::new(larch::embedded::InProcess(data_plane.clone())),
        PortPolicy::Ephemeral,
        "127.0.0.1",
    ));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let control = tokio::spawn(larch_control_plane::serve(
        listener,
        async move { Some(catalog) },
        admin,
        metrics,
        larch_control_plane::Limits::default(),
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    larch_tests::wait_serving(&addr.to_string()).await;

    let client = |key: &str| {
        let key = tonic::metadata::MetadataValue::try_from(key).unwrap();
        let addr = addr.to_string();
        async move {
            let channel = larch_tests::connect(&addr).await;
            larch_proto::control::index_service_client::IndexServiceClient::with_interceptor(
                channel,
                move |mut req: tonic::Request<()>| {
                    req.metadata_mut().insert("api-key", key.clone());
                    Ok(req)
                },
            )
        }
    };
    let model = client("pclocal")
        .await
        .create_index(CreateIndexRequest {
            name: "local".into(),
            dimension: Some(2),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for wrong in ["pclocal2", "PCLOCAL", "pcloca"] {
        let status = client(wrong)
            .await
            .list_indexes(ListIndexesRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{wrong}");
        assert_eq!(status.message(), INVALID_KEY);
    }

    larch_tests::wait_serving(&model.host).await;
    let data = |key: &str| {
        let key = tonic::metadata::MetadataValue::try_from(key).unwrap();
        let host = model.host.clone();
        async move {
            larch_proto::pinecone::vector_service_client::VectorServiceClient::with_interceptor(
                larch_tests::connect(&host).await,
                move |mut req: tonic::Request<()>| {
                    req.metadata_mut().insert("api-key", key.clone());
                    Ok(req)
                },
            )
        }
    };
    let stats = data("pclocal")
        .await
        .describe_index_stats(DescribeIndexStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.dimension, Some(2));
    let status = data("pclocal2")
        .await
        .describe_index_stats(DescribeIndexStatsRequest { filter: None })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), INVALID_KEY);

    let _ = stop.send(true);
    control.await.unwrap().unwrap();
    data_plane.shutdown(std::time::Duration::from_secs(5)).await;
}
