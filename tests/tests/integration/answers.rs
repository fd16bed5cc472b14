//! Answers are bounded like writes (issue 14, item 5), against real servers over gRPC and
//! REST: `top_k` above 10,000 is refused naming the limit; a query, fetch, fetch by metadata
//! or list whose answer would pass `--max-response-bytes` is refused with INVALID_ARGUMENT
//! saying what to lower, while the same read with a smaller answer is served; and past
//! `--max-queries-per-key` a key's next query gets RESOURCE_EXHAUSTED with a retry pushback
//! while another key's query is served.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use larch_control_plane::LimitSettings;
use larch_proto::control::CreateApiKeyRequest;
use larch_proto::pinecone::{
    FetchByMetadataRequest, FetchRequest, ListRequest, QueryRequest, UpsertRequest, Vector,
};
use larch_tests::{DataClient, TestServer, json as pb_json};
use serde_json::{Value, json};
use tonic::Code;

use crate::rest_client::Rest;

/// Far above any real answer time: a stall fails the test instead of hanging it.
const PROMPTLY: Duration = Duration::from_secs(60);

/// The answer budget of these tests: 32 KiB.
const BUDGET: usize = 32 * 1024;

/// Dimension of the test index: a record with its values is about 1 KiB.
const DIMENSION: usize = 256;

fn limited(settings: LimitSettings) -> LimitSettings {
    LimitSettings {
        max_response_bytes: BUDGET,
        ..settings
    }
}

/// 100 records of 256 values with metadata in the default namespace (about 100 KiB with
/// values, 2 KiB without), and 100 records with 500-character ids in `long` (50 KiB of ids).
async fn seed(data: &mut DataClient) {
    let values = |i: usize| (0..DIMENSION).map(|d| 1.0 + (i + d) as f32).collect();
    let records = (0..100)
        .map(|i| Vector {
            id: format!("r{i:03}"),
            values: values(i),
            metadata: pb_json(json!({"genre": "drama"})),
            ..Default::default()
        })
        .collect();
    data.upsert(UpsertRequest {
        vectors: records,
        namespace: String::new(),
    })
    .await
    .expect("seed");
    let long = (0..100)
        .map(|i| Vector {
            id: format!("{i:03}{}", "x".repeat(497)),
            values: values(i),
            ..Default::default()
        })
        .collect();
    data.upsert(UpsertRequest {
        vectors: long,
        namespace: "long".into(),
    })
    .await
    .expect("seed long ids");
}

#[track_caller]
fn assert_refused(err: &tonic::Status, field: &str, advice: &str) {
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let message = err.message();
    assert!(message.starts_with(&format!("{field}: ")), "{message}");
    assert!(
        message.contains(&format!("limit of {BUDGET} bytes")),
        "{message}"
    );
    assert!(message.contains("--max-response-bytes"), "{message}");
    assert!(message.contains(advice), "{message}");
}

#[track_caller]
fn assert_rest_refused(status: StatusCode, body: &Value, field: &str, advice: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], Code::InvalidArgument as i32, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("{field}: ")), "{message}");
    assert!(
        message.contains(&format!("limit of {BUDGET} bytes")),
        "{message}"
    );
    assert!(message.contains(advice), "{message}");
}

#[tokio::test]
async fn top_k_above_10000_is_refused_naming_the_limit() {
    let server = TestServer::start().await;
    let (model, mut data) = server.create_index("topk", 2, "cosine").await;
    let err = data
        .query(QueryRequest {
            top_k: 10_001,
            vector: vec![1.0, 0.0],
            ..Default::default()
        })
        .await
        .expect_err("above the limit");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("top_k: "), "{err:?}");
    assert!(
        err.message()
            .contains("between 1 and 10000 (the limit on matches per query"),
        "{err:?}"
    );
    let rest = Rest::new(&model.host).key(&server.key);
    let reply = rest
        .post("/query", json!({"topK": 10_001, "vector": [1.0, 0.0]}))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("10000 (the limit on matches per query"),
        "{message}"
    );
    // 10,000 itself is allowed.
    data.query(QueryRequest {
        top_k: 10_000,
        vector: vec![1.0, 0.0],
        ..Default::default()
    })
    .await
    .expect("at the limit");
    server.stop().await;
}

#[tokio::test]
async fn a_query_over_the_answer_budget_is_refused_and_without_values_served() {
    let server = TestServer::start_limited(limited(LimitSettings::default())).await;
    let (model, mut data) = server
        .create_index("answers", DIMENSION as i32, "cosine")
        .await;
    seed(&mut data).await;
    let query = |include_values, include_metadata| QueryRequest {
        top_k: 100,
        vector: vec![1.0; DIMENSION],
        include_values,
        include_metadata,
        ..Default::default()
    };
    let err = data.query(query(true, true)).await.expect_err("too large");
    assert_refused(
        &err,
        "top_k",
        "lower top_k, or set include_values or include_metadata to false",
    );
    let served = data
        .query(query(false, true))
        .await
        .expect("without values it fits")
        .into_inner();
    assert_eq!(served.matches.len(), 100);
    // REST: the same refusal, and the same query without values served.
    let rest = Rest::new(&model.host).key(&server.key);
    let reply = rest
        .post(
            "/query",
            json!({"topK": 100, "vector": vec![1.0; DIMENSION], "includeValues": true}),
        )
        .await;
    assert_rest_refused(reply.status, &reply.body, "top_k", "lower top_k");
    let reply = rest
        .post(
            "/query",
            json!({"topK": 100, "vector": vec![1.0; DIMENSION], "includeMetadata": true}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply["matches"].as_array().unwrap().len(), 100);
    server.stop().await;
}

#[tokio::test]
async fn fetch_fetch_by_metadata_and_list_over_the_answer_budget_are_refused() {
    let server = TestServer::start_limited(limited(LimitSettings::default())).await;
    let (model, mut data) = server
        .create_index("reads", DIMENSION as i32, "cosine")
        .await;
    seed(&mut data).await;
    let ids = |n: usize| (0..n).map(|i| format!("r{i:03}")).collect::<Vec<_>>();
    let fetch = |n| FetchRequest {
        ids: ids(n),
        namespace: String::new(),
    };
    let err = data.fetch(fetch(100)).await.expect_err("too large");
    assert_refused(&err, "ids", "fetch fewer ids per request");
    let fetched = data.fetch(fetch(10)).await.expect("fits").into_inner();
    assert_eq!(fetched.vectors.len(), 10);

    let by_metadata = |limit| FetchByMetadataRequest {
        namespace: String::new(),
        filter: Some(larch_tests::to_struct(json!({"genre": "drama"}))),
        limit: Some(limit),
        pagination_token: None,
    };
    let err = data
        .fetch_by_metadata(by_metadata(100))
        .await
        .expect_err("too large");
    assert_refused(&err, "limit", "lower limit and read the rest page by page");
    let page = data
        .fetch_by_metadata(by_metadata(10))
        .await
        .expect("fits")
        .into_inner();
    assert_eq!(page.vectors.len(), 10);
    assert!(page.pagination.is_some());

    let list = |limit| ListRequest {
        namespace: "long".into(),
        limit: Some(limit),
        ..Default::default()
    };
    let err = data.list(list(100)).await.expect_err("too large");
    assert_refused(&err, "limit", "pagination token");
    let listed = data.list(list(10)).await.expect("fits").into_inner();
    assert_eq!(listed.vectors.len(), 10);

    // REST: the same refusals.
    let rest = Rest::new(&model.host).key(&server.key);
    let query_string = ids(100)
        .iter()
        .map(|id| format!("ids={id}"))
        .collect::<Vec<_>>()
        .join("&");
    let reply = rest.get(&format!("/vectors/fetch?{query_string}")).await;
    assert_rest_refused(reply.status, &reply.body, "ids", "fetch fewer ids");
    let reply = rest
        .post(
            "/vectors/fetch_by_metadata",
            json!({"filter": {"genre": "drama"}, "limit": 100}),
        )
        .await;
    assert_rest_refused(reply.status, &reply.body, "limit", "pagination token");
    let reply = rest.get("/vectors/list?namespace=long&limit=100").await;
    assert_rest_refused(reply.status, &reply.body, "limit", "pagination token");
    let reply = rest
        .get("/vectors/list?namespace=long&limit=10")
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply["vectors"].as_array().unwrap().len(), 10);
    server.stop().await;
}

/// Holds every query-pool thread until the returned flag is set (or, should the test fail,
/// for at most 60 s: the pool is shared by every test of this binary). Returns once all of
/// them are held.
async fn hold_the_query_pool(server: &TestServer, index: &str) -> Arc<AtomicBool> {
    let engine = Arc::new(server.data_plane().engine().clone());
    let handle = larch_data_plane::api::IndexHandle::new(engine, server.storage_name(index));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(AtomicBool::new(false));
    for _ in 0..threads {
        let (handle, started, released) =
            (handle.clone(), Arc::clone(&started), Arc::clone(&released));
        tokio::spawn(async move {
            handle
                .read(move |_| {
                    started.fetch_add(1, Ordering::SeqCst);
                    let until = Instant::now() + PROMPTLY;
                    while !released.load(Ordering::SeqCst) && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Ok(())
                })
                .await
        });
    }
    tokio::time::timeout(PROMPTLY, async {
        while started.load(Ordering::SeqCst) < threads {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("every query thread is held");
    released
}

#[tokio::test]
async fn past_the_per_key_query_cap_a_key_gets_pushback_and_another_key_is_served() {
    let server = TestServer::start_limited(LimitSettings {
        max_queries_per_key: 1,
        ..LimitSettings::default()
    })
    .await;
    let (model, _) = server.create_index("tenants", 2, "cosine").await;
    let key = |name: &str| CreateApiKeyRequest {
        name: name.into(),
        ..Default::default()
    };
    let (a_key, a_id) = server.create_key(key("tenant-a")).await;
    let (b_key, _) = server.create_key(key("tenant-b")).await;
    let mut a = server.data_with_key(&model.host, Some(&a_key)).await;
    let mut b = server.data_with_key(&model.host, Some(&b_key)).await;
    a.upsert(UpsertRequest {
        vectors: vec![Vector {
            id: "v".into(),
            values: vec![1.0, 0.0],
            ..Default::default()
        }],
        namespace: String::new(),
    })
    .await
    .expect("seed");
    let query = || QueryRequest {
        top_k: 1,
        vector: vec![1.0, 0.0],
        ..Default::default()
    };

    // Key a's first query waits in the query pool, which the test holds, so it stays open.
    let released = hold_the_query_pool(&server, "tenants").await;
    let first = tokio::spawn({
        let mut a = a.clone();
        async move { a.query(query()).await }
    });
    let gate = server.limits().queries();
    tokio::time::timeout(PROMPTLY, async {
        while gate.held_by(&a_id) < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("key a's first query took its slot");

    // Its second is refused at once, over gRPC and REST, with a retry pushback.
    let err = a.query(query()).await.expect_err("past the cap");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("--max-queries-per-key"), "{err:?}");
    let pushback = err.metadata().get("grpc-retry-pushback-ms");
    assert_eq!(pushback.map(|v| v.to_str().unwrap()), Some("200"));
    let reply = Rest::new(&model.host)
        .key(&a_key)
        .post("/query", json!({"topK": 1, "vector": [1.0, 0.0]}))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        reply.body
    );
    assert_eq!(reply.body["code"], Code::ResourceExhausted as i32);
    assert_eq!(reply.headers[http::header::RETRY_AFTER], "1");

    // Key b is not held up by key a's cap: its query is admitted, and served once the pool
    // is free.
    let second_key = tokio::spawn(async move { b.query(query()).await });
    released.store(true, Ordering::SeqCst);
    let served = tokio::time::timeout(PROMPTLY, second_key)
        .await
        .expect("key b answered")
        .expect("joined")
        .expect("key b served")
        .into_inner();
    assert_eq!(served.matches.len(), 1);
    tokio::time::timeout(PROMPTLY, first)
        .await
        .expect("key a's first query answered")
        .expect("joined")
        .expect("key a's first query served");
    // Its slot is back.
    assert_eq!(gate.held_by(&a_id), 0);
    a.query(query()).await.expect("key a again");
    server.stop().await;
}

#[tokio::test]
async fn grpc_answers_are_encoded_only_up_to_the_budget_plus_headroom() {
    // A 1 KiB budget: gRPC services encode at most 1 KiB + 64 KiB. Stats (not a read held to
    // the budget) of 200 namespaces with 500-character names take about 100 KiB.
    let server = TestServer::start_limited(LimitSettings {
        max_response_bytes: 1024,
        ..LimitSettings::default()
    })
    .await;
    let (model, mut data) = server.create_index("stats", 2, "cosine").await;
    for n in 0..200 {
        data.create_namespace(larch_proto::pinecone::CreateNamespaceRequest {
            name: format!("{n:03}{}", "n".repeat(497)),
            schema: None,
        })
        .await
        .expect("namespace");
    }
    let err = match data
        .describe_index_stats(larch_proto::pinecone::DescribeIndexStatsRequest::default())
        .await
    {
        Ok(stats) => panic!(
            "past the encoding limit, yet {} namespaces were sent",
            stats.into_inner().namespaces.len()
        ),
        Err(err) => err,
    };
    assert!(
        err.message().contains("the limit is: 66560 bytes"),
        "{err:?}"
    );
    // REST has no encoding limit of its own; the server goes on serving.
    let reply = Rest::new(&model.host)
        .key(&server.key)
        .get("/describe_index_stats")
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply["namespaces"].as_object().unwrap().len(), 200);
    server.stop().await;
}
