//! The control plane, `larch.control.v1.IndexService`: create, list, describe, configure and
//! delete indexes, the validation rules of each, and the proto3 JSON names of the messages.

use std::collections::HashMap;

use larch_proto::control::{
    ConfigureIndexRequest, CreateIndexRequest, DeleteIndexRequest, DescribeIndexRequest,
    IndexModel, IndexSpec, IndexStatus, ListIndexesRequest, SearchParams, ServerlessSpec,
};
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{
    DescribeIndexStatsRequest, FetchRequest, QueryRequest, UpsertRequest, Vector,
};
use larch_tests::{TestServer, wait_serving};
use tonic::{Code, Status};

/// A create request with only a name and a dimension (every other field at its default).
fn create_request(name: &str, dimension: i32) -> CreateIndexRequest {
    CreateIndexRequest {
        name: name.into(),
        dimension: Some(dimension),
        ..Default::default()
    }
}

async fn create(server: &TestServer, request: CreateIndexRequest) -> Result<IndexModel, Status> {
    server
        .control()
        .await
        .create_index(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn describe(server: &TestServer, name: &str) -> Result<IndexModel, Status> {
    server
        .control()
        .await
        .describe_index(DescribeIndexRequest { name: name.into() })
        .await
        .map(tonic::Response::into_inner)
}

async fn list(server: &TestServer) -> Vec<IndexModel> {
    server
        .control()
        .await
        .list_indexes(ListIndexesRequest {})
        .await
        .unwrap()
        .into_inner()
        .indexes
}

async fn configure(
    server: &TestServer,
    request: ConfigureIndexRequest,
) -> Result<IndexModel, Status> {
    server
        .control()
        .await
        .configure_index(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn delete(server: &TestServer, name: &str) -> Result<(), Status> {
    server
        .control()
        .await
        .delete_index(DeleteIndexRequest { name: name.into() })
        .await
        .map(|_| ())
}

/// Asserts `result` failed with `code` and a message starting with `prefix`.
#[track_caller]
fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    prefix: &str,
) -> Status {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().starts_with(prefix),
        "message {:?} should start with {prefix:?}",
        status.message()
    );
    status
}

fn tags(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The ANN parameters of a cosine or euclidean index created without any: m 16,
/// ef_construction 128, ef_search 64, int8 quantization.
fn default_search() -> Option<SearchParams> {
    Some(SearchParams {
        m: Some(16),
        ef_construction: Some(128),
        ef_search: Some(64),
        quantization: Some("int8".into()),
    })
}

/// [`default_search`] for a dotproduct index: its graph keeps 32-bit floats.
fn default_dotproduct_search() -> Option<SearchParams> {
    default_search().map(|search| SearchParams {
        quantization: Some("none".into()),
        ..search
    })
}

fn serverless(cloud: &str, region: &str) -> Option<IndexSpec> {
    Some(IndexSpec {
        serverless: Some(ServerlessSpec {
            cloud: cloud.into(),
            region: region.into(),
        }),
    })
}

/// A data-plane client for `host` that connects on first use, so a closed port shows as an
/// UNAVAILABLE call instead of a failed connect.
fn data_client_lazy(
    host: &str,
    key: &str,
) -> VectorServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl tonic::service::Interceptor,
    >,
> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{host}"))
        .unwrap()
        .connect_lazy();
    let key = tonic::metadata::MetadataValue::try_from(key).unwrap();
    VectorServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("api-key", key.clone());
        Ok(req)
    })
}

/// The port of a `127.0.0.1:<port>` host; panics on any other shape.
#[track_caller]
fn local_port(host: &str) -> u16 {
    let port = host
        .strip_prefix("127.0.0.1:")
        .unwrap_or_else(|| panic!("host {host:?} should be 127.0.0.1:<port>"));
    port.parse()
        .unwrap_or_else(|e| panic!("host {host:?}: bad port: {e}"))
}

#[tokio::test]
async fn create_index_returns_pinecone_defaults_and_a_dialable_host() {
    let server = TestServer::start().await;
    let model = create(&server, create_request("movies", 8)).await.unwrap();

    let port = local_port(&model.host);
    assert_ne!(port, 0);
    assert_ne!(
        port,
        server.control_addr.port(),
        "each index has its own data-plane port"
    );
    let expected = IndexModel {
        name: "movies".into(),
        dimension: Some(8),
        metric: "cosine".into(),
        host: model.host.clone(),
        spec: serverless("aws", "us-east-1"),
        status: Some(IndexStatus {
            ready: true,
            state: "Ready".into(),
        }),
        deletion_protection: "disabled".into(),
        tags: HashMap::new(),
        vector_type: "dense".into(),
        search: default_search(),
    };
    assert_eq!(model, expected);
    assert_eq!(describe(&server, "movies").await.unwrap(), expected);

    // The host is dialable and serves this very index.
    wait_serving(&model.host).await;
    let stats = server
        .data(&model.host)
        .await
        .describe_index_stats(DescribeIndexStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.dimension, Some(8));
    assert_eq!(stats.total_vector_count, 0);
    assert_eq!(stats.metric.as_deref(), Some("cosine"));
    server.stop().await;
}

#[tokio::test]
async fn create_index_records_every_given_setting() {
    let server = TestServer::start().await;
    let model = create(
        &server,
        CreateIndexRequest {
            name: "docs-2".into(),
            dimension: Some(1536),
            metric: Some("dotproduct".into()),
            spec: serverless("gcp", "europe-west4"),
            deletion_protection: Some("enabled".into()),
            tags: tags(&[("env", "dev"), ("team", "search")]),
            vector_type: Some("dense".into()),
            search: None,
        },
    )
    .await
    .unwrap();
    let expected = IndexModel {
        name: "docs-2".into(),
        dimension: Some(1536),
        metric: "dotproduct".into(),
        host: model.host.clone(),
        spec: serverless("gcp", "europe-west4"),
        status: Some(IndexStatus {
            ready: true,
            state: "Ready".into(),
        }),
        deletion_protection: "enabled".into(),
        tags: tags(&[("env", "dev"), ("team", "search")]),
        vector_type: "dense".into(),
        search: default_dotproduct_search(),
    };
    assert_eq!(model, expected);
    assert_eq!(describe(&server, "docs-2").await.unwrap(), expected);

    // Every metric name is accepted as spelled, and the other clouds too.
    for (name, metric, cloud, region) in [
        ("e", "euclidean", "azure", "eastus2"),
        ("c", "cosine", "aws", "us-west-2"),
    ] {
        let model = create(
            &server,
            CreateIndexRequest {
                metric: Some(metric.into()),
                spec: serverless(cloud, region),
                ..create_request(name, 2)
            },
        )
        .await
        .unwrap();
        assert_eq!(model.metric, metric);
        assert_eq!(model.spec, serverless(cloud, region));
    }
    server.stop().await;
}

#[tokio::test]
async fn invalid_index_names_are_rejected_naming_the_field() {
    let server = TestServer::start().await;
    let long = "a".repeat(46);
    for bad in [
        "",
        long.as_str(),
        "Movies",
        "my_index",
        "-movies",
        "movies-",
        "a.b",
        "über",
    ] {
        assert_status(
            create(&server, create_request(bad, 4)).await,
            Code::InvalidArgument,
            "name: ",
        );
    }
    let status = assert_status(
        create(&server, create_request("", 4)).await,
        Code::InvalidArgument,
        "name: ",
    );
    assert_eq!(status.message(), "name: index name is required");
    let status = assert_status(
        create(&server, create_request(&long, 4)).await,
        Code::InvalidArgument,
        "name: ",
    );
    assert_eq!(
        status.message(),
        "name: index name must be at most 45 characters, got 46"
    );
    let status = assert_status(
        create(&server, create_request("my_index", 4)).await,
        Code::InvalidArgument,
        "name: ",
    );
    assert!(status.message().contains("'_'"), "{status:?}");
    assert!(
        list(&server).await.is_empty(),
        "a rejected create leaves nothing behind"
    );

    // The limits themselves are fine.
    let longest = "a".repeat(45);
    for good in [longest.as_str(), "a", "0", "my-index-1"] {
        assert_eq!(
            create(&server, create_request(good, 4)).await.unwrap().name,
            good
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn dimension_is_required_and_between_1_and_20000() {
    let server = TestServer::start().await;
    let missing = CreateIndexRequest {
        dimension: None,
        ..create_request("d", 1)
    };
    let status = assert_status(
        create(&server, missing).await,
        Code::InvalidArgument,
        "dimension: ",
    );
    assert!(status.message().contains("required"), "{status:?}");
    for bad in [0, -1, 20001, i32::MAX] {
        let status = assert_status(
            create(&server, create_request("d", bad)).await,
            Code::InvalidArgument,
            "dimension: ",
        );
        assert_eq!(
            status.message(),
            format!("dimension: must be between 1 and 20000, got {bad}")
        );
    }
    assert!(list(&server).await.is_empty());

    for (name, good) in [("one", 1), ("max", 20000)] {
        assert_eq!(
            create(&server, create_request(name, good))
                .await
                .unwrap()
                .dimension,
            Some(good)
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn unknown_metric_cloud_and_vector_type_are_rejected() {
    let server = TestServer::start().await;
    let status = assert_status(
        create(
            &server,
            CreateIndexRequest {
                metric: Some("manhattan".into()),
                ..create_request("m", 4)
            },
        )
        .await,
        Code::InvalidArgument,
        "metric: ",
    );
    assert!(status.message().contains("\"manhattan\""), "{status:?}");
    assert!(status.message().contains("dotproduct"), "{status:?}");

    let status = assert_status(
        create(
            &server,
            CreateIndexRequest {
                spec: serverless("ibm", "us-south"),
                ..create_request("m", 4)
            },
        )
        .await,
        Code::InvalidArgument,
        "spec.serverless.cloud: ",
    );
    assert!(status.message().contains("\"ibm\""), "{status:?}");

    // A cloud without a region, and a region without a cloud.
    assert_status(
        create(
            &server,
            CreateIndexRequest {
                spec: serverless("aws", ""),
                ..create_request("m", 4)
            },
        )
        .await,
        Code::InvalidArgument,
        "spec.serverless.region: ",
    );
    assert_status(
        create(
            &server,
            CreateIndexRequest {
                spec: serverless("", "us-east-1"),
                ..create_request("m", 4)
            },
        )
        .await,
        Code::InvalidArgument,
        "spec.serverless.cloud: ",
    );

    // Sparse indexes exist (see `sparse`), but have no dimension.
    assert_status(
        create(
            &server,
            CreateIndexRequest {
                vector_type: Some("sparse".into()),
                ..create_request("m", 4)
            },
        )
        .await,
        Code::InvalidArgument,
        "dimension: a sparse index has no dimension",
    );
    assert_status(
        create(
            &server,
            CreateIndexRequest {
                vector_type: Some("sparse-ish".into()),
                ..create_request("m", 4)
            },
        )
        .await,
        Code::InvalidArgument,
        "vector_type: ",
    );

    assert_status(
        create(
            &server,
            CreateIndexRequest {
                deletion_protection: Some("on".into()),
                ..create_request("m", 4)
            },
        )
        .await,
        Code::InvalidArgument,
        "deletion_protection: ",
    );
    assert_status(
        create(
            &server,
            CreateIndexRequest {
                tags: tags(&[("bad key!", "x")]),
                ..create_request("m", 4)
            },
        )
        .await,
        Code::InvalidArgument,
        "tags: ",
    );
    assert!(
        list(&server).await.is_empty(),
        "a rejected create leaves nothing behind"
    );
    server.stop().await;
}

#[tokio::test]
async fn duplicate_name_is_already_exists_and_keeps_the_original() {
    let server = TestServer::start().await;
    let original = create(&server, create_request("dup", 4)).await.unwrap();
    let status = assert_status(
        create(
            &server,
            CreateIndexRequest {
                metric: Some("euclidean".into()),
                ..create_request("dup", 8)
            },
        )
        .await,
        Code::AlreadyExists,
        "index 'dup' already exists",
    );
    assert_eq!(status.message(), "index 'dup' already exists");
    assert_eq!(describe(&server, "dup").await.unwrap(), original);
    assert_eq!(list(&server).await, [original]);
    server.stop().await;
}

#[tokio::test]
async fn list_indexes_is_sorted_by_name_with_every_field() {
    let server = TestServer::start().await;
    assert!(list(&server).await.is_empty());
    let mut created = Vec::new();
    for (name, dimension) in [("zeta", 3), ("alpha", 5), ("mid-1", 7)] {
        created.push(
            create(
                &server,
                CreateIndexRequest {
                    tags: tags(&[("n", name)]),
                    ..create_request(name, dimension)
                },
            )
            .await
            .unwrap(),
        );
    }
    let listed = list(&server).await;
    let names: Vec<_> = listed.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["alpha", "mid-1", "zeta"]);
    created.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        listed, created,
        "list returns the same full models as create"
    );
    for model in &listed {
        assert_eq!(&describe(&server, &model.name).await.unwrap(), model);
    }
    server.stop().await;
}

#[tokio::test]
async fn describe_unknown_index_is_not_found() {
    let server = TestServer::start().await;
    let status = assert_status(
        describe(&server, "nope").await,
        Code::NotFound,
        "index 'nope' not found",
    );
    assert_eq!(status.message(), "index 'nope' not found");
    assert_status(
        describe(&server, "Not_Valid").await,
        Code::InvalidArgument,
        "name: ",
    );
    server.stop().await;
}

#[tokio::test]
async fn deletion_protection_blocks_delete_until_disabled() {
    let server = TestServer::start().await;
    create(&server, create_request("guarded", 4)).await.unwrap();
    let model = configure(
        &server,
        ConfigureIndexRequest {
            name: "guarded".into(),
            deletion_protection: Some("enabled".into()),
            tags: HashMap::new(),
            search: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(model.deletion_protection, "enabled");
    assert_eq!(describe(&server, "guarded").await.unwrap(), model);

    let status = assert_status(
        delete(&server, "guarded").await,
        Code::FailedPrecondition,
        "index 'guarded' has deletion protection enabled",
    );
    // The message tells how to get out of it.
    assert!(status.message().contains("ConfigureIndex"), "{status:?}");
    assert!(
        status
            .message()
            .contains(r#""deletion_protection":"disabled""#),
        "{status:?}"
    );
    assert_eq!(
        describe(&server, "guarded").await.unwrap(),
        model,
        "still there"
    );

    let model = configure(
        &server,
        ConfigureIndexRequest {
            name: "guarded".into(),
            deletion_protection: Some("disabled".into()),
            tags: HashMap::new(),
            search: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(model.deletion_protection, "disabled");
    delete(&server, "guarded").await.unwrap();
    assert_status(
        describe(&server, "guarded").await,
        Code::NotFound,
        "index 'guarded' not found",
    );
    server.stop().await;
}

#[tokio::test]
async fn configure_merges_tags_and_empty_value_removes_one() {
    let server = TestServer::start().await;
    let created = create(
        &server,
        CreateIndexRequest {
            deletion_protection: Some("enabled".into()),
            tags: tags(&[("env", "dev"), ("team", "search")]),
            ..create_request("tagged", 4)
        },
    )
    .await
    .unwrap();
    let model = configure(
        &server,
        ConfigureIndexRequest {
            name: "tagged".into(),
            deletion_protection: None,
            tags: tags(&[("env", ""), ("owner", "ana"), ("team", "ranking")]),
            search: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(model.tags, tags(&[("owner", "ana"), ("team", "ranking")]));
    assert_eq!(
        model.deletion_protection, "enabled",
        "absent protection is unchanged"
    );
    assert_eq!(
        model,
        IndexModel {
            tags: tags(&[("owner", "ana"), ("team", "ranking")]),
            ..created
        },
        "nothing else changes"
    );
    assert_eq!(describe(&server, "tagged").await.unwrap(), model);

    // Removing a tag that does not exist is not an error; an empty change changes nothing.
    let again = configure(
        &server,
        ConfigureIndexRequest {
            name: "tagged".into(),
            deletion_protection: None,
            tags: tags(&[("never-set", "")]),
            search: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(again, model);
    server.stop().await;
}

#[tokio::test]
async fn configure_rejects_unknown_index_and_bad_values() {
    let server = TestServer::start().await;
    let status = assert_status(
        configure(
            &server,
            ConfigureIndexRequest {
                name: "ghost".into(),
                deletion_protection: Some("enabled".into()),
                tags: HashMap::new(),
                search: None,
            },
        )
        .await,
        Code::NotFound,
        "index 'ghost' not found",
    );
    assert_eq!(status.message(), "index 'ghost' not found");

    let created = create(
        &server,
        CreateIndexRequest {
            tags: tags(&[("env", "dev")]),
            ..create_request("conf", 4)
        },
    )
    .await
    .unwrap();
    for bad in ["on", "Enabled", "true", ""] {
        let status = assert_status(
            configure(
                &server,
                ConfigureIndexRequest {
                    name: "conf".into(),
                    deletion_protection: Some(bad.into()),
                    tags: tags(&[("env", "prod")]),
                    search: None,
                },
            )
            .await,
            Code::InvalidArgument,
            "deletion_protection: ",
        );
        assert!(
            status.message().contains("\"enabled\" or \"disabled\""),
            "{status:?}"
        );
    }
    assert_status(
        configure(
            &server,
            ConfigureIndexRequest {
                name: "conf".into(),
                deletion_protection: None,
                tags: tags(&[("env", "prod"), ("bad key!", "x")]),
                search: None,
            },
        )
        .await,
        Code::InvalidArgument,
        "tags: ",
    );
    assert_eq!(
        describe(&server, "conf").await.unwrap(),
        created,
        "a rejected configure changes nothing"
    );
    server.stop().await;
}

/// The ANN parameters the engine holds for `name` (no RPC shows them yet). The engine knows
/// the index by its storage name, which includes its incarnation.
fn engine_search(server: &TestServer, name: &str) -> larch_engine::SearchParams {
    let engine = server.data_plane().engine();
    engine
        .index(&server.storage_name(name))
        .unwrap()
        .search_params()
}

#[tokio::test]
async fn search_params_are_set_at_create_changed_by_configure_and_kept_across_restart() {
    let server = TestServer::start().await;
    let model = create(
        &server,
        CreateIndexRequest {
            search: Some(SearchParams {
                m: Some(24),
                ef_construction: None,
                ef_search: Some(100),
                quantization: Some("none".into()),
            }),
            ..create_request("tuned", 4)
        },
    )
    .await
    .unwrap();
    let created = SearchParams {
        m: Some(24),
        ef_construction: Some(128),
        ef_search: Some(100),
        quantization: Some("none".into()),
    };
    assert_eq!(model.search, Some(created.clone()), "absent fields default");
    assert_eq!(describe(&server, "tuned").await.unwrap(), model);
    let in_engine = larch_engine::SearchParams::default()
        .with_m(24)
        .and_then(|p| p.with_ef_search(100))
        .unwrap()
        .with_quantization(larch_engine::Quantization::None);
    assert_eq!(engine_search(&server, "tuned"), in_engine);

    // Configure changes only the fields given.
    let model = configure(
        &server,
        ConfigureIndexRequest {
            name: "tuned".into(),
            deletion_protection: None,
            tags: HashMap::new(),
            search: Some(SearchParams {
                ef_search: Some(40),
                ..Default::default()
            }),
        },
    )
    .await
    .unwrap();
    let configured = SearchParams {
        ef_search: Some(40),
        ..created
    };
    assert_eq!(model.search, Some(configured.clone()), "m stays 24");
    assert_eq!(describe(&server, "tuned").await.unwrap(), model);
    let in_engine = in_engine.with_ef_search(40).unwrap();
    assert_eq!(engine_search(&server, "tuned"), in_engine);

    // Out-of-range and unknown values are refused naming the field, and change nothing.
    let status = assert_status(
        create(
            &server,
            CreateIndexRequest {
                search: Some(SearchParams {
                    m: Some(2),
                    ..Default::default()
                }),
                ..create_request("bad-m", 4)
            },
        )
        .await,
        Code::InvalidArgument,
        "search.m: ",
    );
    assert_eq!(
        status.message(),
        "search.m: must be between 4 and 64; got 2"
    );
    assert_status(
        describe(&server, "bad-m").await,
        Code::NotFound,
        "index 'bad-m' not found",
    );
    for (search, message) in [
        (
            SearchParams {
                quantization: Some("pq".into()),
                ..Default::default()
            },
            r#"search.quantization: must be one of none, int8; got "pq""#,
        ),
        (
            SearchParams {
                m: Some(2),
                ..Default::default()
            },
            "search.m: must be between 4 and 64; got 2",
        ),
        (
            SearchParams {
                ef_search: Some(5000),
                ..Default::default()
            },
            "search.ef_search: must be between 8 and 4096; got 5000",
        ),
    ] {
        let status = assert_status(
            configure(
                &server,
                ConfigureIndexRequest {
                    name: "tuned".into(),
                    deletion_protection: None,
                    tags: HashMap::new(),
                    search: Some(search),
                },
            )
            .await,
            Code::InvalidArgument,
            "search.",
        );
        assert_eq!(status.message(), message);
    }
    assert_eq!(describe(&server, "tuned").await.unwrap(), model);
    assert_eq!(engine_search(&server, "tuned"), in_engine);

    // Stored in the catalog and applied again when the index is recovered.
    let server = server.restart().await;
    let restarted = describe(&server, "tuned").await.unwrap();
    assert_eq!(restarted.search, Some(configured));
    assert_eq!(list(&server).await, [restarted]);
    assert_eq!(engine_search(&server, "tuned"), in_engine);
    server.stop().await;
}

#[tokio::test]
async fn delete_index_removes_it_from_both_planes() {
    let server = TestServer::start().await;
    let (model, mut data) = server.create_index("gone", 2, "cosine").await;
    data.upsert(UpsertRequest {
        vectors: vec![Vector {
            id: "a".into(),
            values: vec![1.0, 0.0],
            ..Default::default()
        }],
        namespace: String::new(),
    })
    .await
    .unwrap();

    delete(&server, "gone").await.unwrap();
    assert_status(
        describe(&server, "gone").await,
        Code::NotFound,
        "index 'gone' not found",
    );
    assert!(list(&server).await.is_empty());
    assert_status(
        delete(&server, "gone").await,
        Code::NotFound,
        "index 'gone' not found",
    );

    // The deleted index's server drains and closes its port: until then every data call
    // answers NOT_FOUND (the index is looked up per request), afterwards the port refuses
    // connections. No call ever reaches the deleted data.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut answers = Vec::new();
    loop {
        let status = data_client_lazy(&model.host, &server.key)
            .fetch(FetchRequest {
                ids: vec!["a".into()],
                namespace: String::new(),
            })
            .await
            .expect_err("a deleted index serves nothing");
        answers.push(status.code());
        match status.code() {
            Code::NotFound => assert_eq!(status.message(), "index 'gone' not found"),
            Code::Unavailable => break,
            _ => panic!("unexpected answer from a deleted index: {status:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the port of a deleted index is still open after 10 s: {answers:?}"
        );
        tokio::task::yield_now().await;
    }
    // A connection opened before the delete is drained: NOT_FOUND until it closes.
    let status = data
        .query(QueryRequest {
            top_k: 1,
            vector: vec![1.0, 0.0],
            ..Default::default()
        })
        .await
        .unwrap_err();
    match status.code() {
        Code::NotFound => assert_eq!(status.message(), "index 'gone' not found"),
        Code::Unavailable => {}
        _ => panic!("unexpected answer on the open channel: {status:?}"),
    }

    // The name is free again, and the new index starts empty.
    let (_, mut data) = server.create_index("gone", 3, "euclidean").await;
    let stats = data
        .describe_index_stats(DescribeIndexStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.dimension, stats.total_vector_count), (Some(3), 0));
    server.stop().await;
}

#[tokio::test]
async fn two_indexes_have_their_own_hosts_and_data() {
    let server = TestServer::start().await;
    let (a, mut data_a) = server.create_index("left", 2, "cosine").await;
    let (b, mut data_b) = server.create_index("right", 2, "cosine").await;
    assert_ne!(a.host, b.host);
    assert_ne!(local_port(&a.host), local_port(&b.host));

    data_a
        .upsert(UpsertRequest {
            vectors: vec![Vector {
                id: "only-in-left".into(),
                values: vec![0.5, 0.5],
                ..Default::default()
            }],
            namespace: "ns".into(),
        })
        .await
        .unwrap();
    let stats = |stats: larch_proto::pinecone::DescribeIndexStatsResponse| stats.total_vector_count;
    let left = data_a
        .describe_index_stats(DescribeIndexStatsRequest { filter: None })
        .await
        .unwrap();
    let right = data_b
        .describe_index_stats(DescribeIndexStatsRequest { filter: None })
        .await
        .unwrap();
    assert_eq!(
        (stats(left.into_inner()), stats(right.into_inner())),
        (1, 0)
    );
    let fetched = data_b
        .fetch(FetchRequest {
            ids: vec!["only-in-left".into()],
            namespace: "ns".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(fetched.vectors.is_empty(), "{fetched:?}");
    let fetched = data_a
        .fetch(FetchRequest {
            ids: vec!["only-in-left".into()],
            namespace: "ns".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.vectors["only-in-left"].values, [0.5, 0.5]);

    // Deleting one leaves the other serving.
    delete(&server, "left").await.unwrap();
    let right = data_b
        .describe_index_stats(DescribeIndexStatsRequest { filter: None })
        .await
        .unwrap();
    assert_eq!(right.into_inner().dimension, Some(2));
    server.stop().await;
}

#[test]
fn json_names_of_snake_case_fields_match_pinecone_rest() {
    use prost::Message as _;
    let set = prost_types::FileDescriptorSet::decode(larch_proto::FILE_DESCRIPTOR_SET).unwrap();
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "larch.control.v1")
        .expect("the control-plane proto is in the descriptor set");
    let message = |name: &str| {
        file.message_type
            .iter()
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("message {name} is declared"))
    };
    for (msg, fields) in [
        ("IndexModel", &["deletion_protection", "vector_type"][..]),
        (
            "CreateIndexRequest",
            &["deletion_protection", "vector_type"][..],
        ),
        ("ConfigureIndexRequest", &["deletion_protection"][..]),
        ("SearchParams", &["ef_construction", "ef_search"][..]),
    ] {
        for field in fields {
            let descriptor = message(msg)
                .field
                .iter()
                .find(|f| f.name() == *field)
                .unwrap_or_else(|| panic!("{msg}.{field} is declared"));
            assert_eq!(descriptor.json_name(), *field, "{msg}.{field}");
        }
    }
    // ConfigureIndexRequest has no vector_type to pin (it cannot be changed after creation).
    assert!(
        !message("ConfigureIndexRequest")
            .field
            .iter()
            .any(|f| f.name() == "vector_type")
    );
}
