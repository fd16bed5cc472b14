//! Pinecone's data-plane REST API on each index's port, beside gRPC: every route with
//! Pinecone's JSON keys, the gRPC-gateway error shape, auth, and parity with gRPC (same
//! engine calls, so the same results and the same messages).

use http::{Method, StatusCode};
use larch_proto::pinecone::{FetchRequest, QueryRequest, UpsertRequest, Vector};
use larch_tests::{TestServer, json as pb_json};
use serde_json::{Value, json};

use crate::rest_client::Rest;

/// A server with one index of `dimension` and `metric`, and a REST client for its data plane.
async fn index(dimension: i32, metric: &str) -> (TestServer, Rest, String) {
    let server = TestServer::start().await;
    let (model, _) = server.create_index("items", dimension, metric).await;
    let rest = Rest::new(&model.host).key(&server.key);
    (server, rest, model.host)
}

/// Asserts `body` is the gRPC-gateway error shape with `code` and a message containing `part`.
#[track_caller]
fn assert_error(body: &Value, code: tonic::Code, part: &str) {
    assert_eq!(body["code"], code as i32, "{body}");
    assert_eq!(body["details"], json!([]), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(part), "{message:?} lacks {part:?}");
}

async fn seed(rest: &Rest) {
    let reply = rest
        .post(
            "/vectors/upsert",
            json!({"namespace": "films", "vectors": [
                {"id": "a", "values": [1.0, 0.0, 0.0, 0.0], "metadata": {"genre": "drama", "year": 2001}},
                {"id": "b", "values": [0.0, 1.0, 0.0, 0.0], "metadata": {"genre": "comedy", "tags": ["x", "y"]}},
                {"id": "c", "values": [0.7, 0.7, 0.0, 0.0], "metadata": {"genre": "comedy", "year": 2010}},
            ]}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply, json!({"upsertedCount": 3}));
}

#[tokio::test]
async fn vectors_round_trip_with_pinecones_json_keys() {
    let (server, rest, _) = index(4, "cosine").await;
    seed(&rest).await;

    let query = rest
        .post(
            "/query",
            json!({"namespace": "films", "vector": [1.0, 0.1, 0.0, 0.0], "topK": 3,
                "includeMetadata": true, "includeValues": false}),
        )
        .await
        .expect(StatusCode::OK);
    let ids: Vec<&str> = query["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "c", "b"]);
    assert_eq!(query["namespace"], "films");
    assert_eq!(
        query["matches"][0]["metadata"],
        json!({"genre": "drama", "year": 2001.0})
    );
    assert_eq!(query["matches"][0]["values"], json!([]));
    let score = query["matches"][0]["score"].as_f64().unwrap();
    assert!((score - 1.0 / 1.01f64.sqrt()).abs() < 1e-5, "{score}");

    // Filter, query by id, and the snake_case proto names Pinecone's gateway also accepts.
    let filtered = rest
        .post(
            "/query",
            json!({"namespace": "films", "id": "a", "top_k": 3, "include_values": true,
                "filter": {"genre": {"$eq": "comedy"}}}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(filtered["matches"][0]["id"], "c");
    assert_eq!(
        filtered["matches"][0]["values"],
        json!([0.7, 0.7, 0.0, 0.0])
    );
    assert!(filtered["matches"][0].get("metadata").is_none());

    // Fetch takes repeated `ids` query parameters and skips missing ids.
    let fetched = rest
        .get("/vectors/fetch?ids=b&ids=missing&namespace=films")
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        fetched,
        json!({"vectors": {"b": {"id": "b", "values": [0.0, 1.0, 0.0, 0.0],
            "metadata": {"genre": "comedy", "tags": ["x", "y"]}}}, "namespace": "films"})
    );

    let updated = rest
        .post(
            "/vectors/update",
            json!({"id": "a", "setMetadata": {"year": 2002}, "namespace": "films"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(updated, json!({"matchedRecords": 1}));
    let dry_run = rest
        .post(
            "/vectors/update",
            json!({"filter": {"genre": "comedy"}, "setMetadata": {"seen": true},
                "namespace": "films", "dryRun": true}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(dry_run, json!({"matchedRecords": 2}));

    let by_metadata = rest
        .post(
            "/vectors/fetch_by_metadata",
            json!({"namespace": "films", "filter": {"genre": "comedy"}, "limit": 1}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        by_metadata["vectors"].as_object().unwrap().len(),
        1,
        "{by_metadata}"
    );
    let token = by_metadata["pagination"]["next"].as_str().unwrap();
    let rest_page = rest
        .post(
            "/vectors/fetch_by_metadata",
            json!({"namespace": "films", "filter": {"genre": "comedy"}, "paginationToken": token}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(rest_page["vectors"].as_object().unwrap().len(), 1);
    assert!(rest_page.get("pagination").is_none());

    // List ids page by page.
    let mut ids = Vec::new();
    let mut path = "/vectors/list?namespace=films&limit=2".to_owned();
    loop {
        let page = rest.get(&path).await.expect(StatusCode::OK);
        assert_eq!(page["namespace"], "films");
        ids.extend(
            page["vectors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["id"].as_str().unwrap().to_owned()),
        );
        match page["pagination"]["next"].as_str() {
            Some(next) => {
                path = format!("/vectors/list?namespace=films&limit=2&paginationToken={next}")
            }
            None => break,
        }
    }
    assert_eq!(ids, ["a", "b", "c"]);

    rest.post(
        "/vectors/delete",
        json!({"ids": ["b"], "namespace": "films"}),
    )
    .await
    .expect(StatusCode::OK);
    rest.post(
        "/vectors/delete",
        json!({"filter": {"year": {"$gte": 2010}}, "namespace": "films"}),
    )
    .await
    .expect(StatusCode::OK);
    let stats = rest
        .post("/describe_index_stats", json!({}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        stats,
        json!({"namespaces": {"films": {"vectorCount": 1}}, "dimension": 4,
            "indexFullness": 0.0, "totalVectorCount": 1, "metric": "cosine",
            "vectorType": "dense"})
    );
    let delete_all = rest
        .post(
            "/vectors/delete",
            json!({"deleteAll": true, "namespace": "films"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(delete_all, json!({}));
    assert_eq!(
        rest.get("/describe_index_stats")
            .await
            .expect(StatusCode::OK)["totalVectorCount"],
        0
    );
    server.stop().await;
}

#[tokio::test]
async fn namespaces_use_snake_case_and_the_versioned_default_name() {
    let (server, rest, host) = index(2, "dotproduct").await;
    let created = rest
        .post(
            "/namespaces",
            json!({"name": "tenant-a", "schema": {"fields": {"genre": {"filterable": true}}}}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        created,
        json!({"name": "tenant-a", "record_count": 0,
            "schema": {"fields": {"genre": {"filterable": true}}},
            "indexed_fields": {"fields": ["genre"]}, "size_bytes": 0})
    );
    let again = rest
        .post("/namespaces", json!({"name": "tenant-a"}))
        .await
        .expect(StatusCode::CONFLICT);
    assert_error(&again, tonic::Code::AlreadyExists, "tenant-a");
    let not_filterable = rest
        .post(
            "/namespaces",
            json!({"name": "t", "schema": {"fields": {"genre": {"filterable": false}}}}),
        )
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_error(
        &not_filterable,
        tonic::Code::InvalidArgument,
        "schema.fields.genre.filterable: ",
    );

    rest.post(
        "/vectors/upsert",
        json!({"vectors": [{"id": "d", "values": [1.0, 2.0],
            "sparseValues": {"indices": [7], "values": [0.5]}}]}),
    )
    .await
    .expect(StatusCode::OK);
    let hybrid = rest
        .post(
            "/query",
            json!({"vector": [1.0, 0.0], "sparseVector": {"indices": [7], "values": [2.0]},
                "topK": 1, "includeValues": true}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(hybrid["matches"][0]["score"], 2.0);
    assert_eq!(
        hybrid["matches"][0]["sparseValues"],
        json!({"indices": [7], "values": [0.5]})
    );

    // API ≥ 2025-04 names the default namespace "__default__", older ones "".
    let new = Rest::new(&host).key(&server.key).version("2026-07");
    let old = Rest::new(&host).key(&server.key).version("2025-01");
    let listed = new.get("/namespaces?limit=10").await.expect(StatusCode::OK);
    assert_eq!(listed["total_count"], 2);
    assert_eq!(listed["namespaces"][0]["name"], "__default__");
    assert_eq!(listed["namespaces"][0]["record_count"], 1);
    assert_eq!(listed["namespaces"][1]["name"], "tenant-a");
    let first = new.get("/namespaces?limit=1").await.expect(StatusCode::OK);
    let next = first["pagination"]["next"].as_str().unwrap();
    let second = new
        .get(&format!("/namespaces?limit=1&paginationToken={next}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(second["namespaces"][0]["name"], "tenant-a");
    assert_eq!(
        new.post("/describe_index_stats", json!({}))
            .await
            .expect(StatusCode::OK)["namespaces"],
        json!({"__default__": {"vectorCount": 1}, "tenant-a": {"vectorCount": 0}})
    );
    assert_eq!(
        old.post("/describe_index_stats", json!({}))
            .await
            .expect(StatusCode::OK)["namespaces"],
        json!({"": {"vectorCount": 1}, "tenant-a": {"vectorCount": 0}})
    );
    assert_eq!(
        new.get("/namespaces/__default__")
            .await
            .expect(StatusCode::OK)["name"],
        "__default__"
    );

    assert_eq!(
        rest.delete("/namespaces/tenant-a")
            .await
            .expect(StatusCode::OK),
        json!({})
    );
    let gone = rest
        .get("/namespaces/tenant-a")
        .await
        .expect(StatusCode::NOT_FOUND);
    assert_error(&gone, tonic::Code::NotFound, "tenant-a");
    server.stop().await;
}

#[tokio::test]
async fn rest_and_grpc_are_one_index_with_the_same_rules() {
    let (server, rest, host) = index(3, "euclidean").await;
    let mut grpc = server.data(&host).await;
    grpc.upsert(UpsertRequest {
        vectors: vec![Vector {
            id: "from-grpc".into(),
            values: vec![1.0, 0.0, 0.0],
            sparse_values: None,
            metadata: pb_json(json!({"via": "grpc"})),
        }],
        namespace: "ns".into(),
    })
    .await
    .unwrap();
    rest.post(
        "/vectors/upsert",
        json!({"namespace": "ns", "vectors": [{"id": "from-rest", "values": [0.0, 2.0, 0.0],
            "metadata": {"via": "rest"}}]}),
    )
    .await
    .expect(StatusCode::OK);

    // Each transport sees the other's writes, with the same scores.
    let fetched = grpc
        .fetch(FetchRequest {
            ids: vec!["from-rest".into()],
            namespace: "ns".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.vectors["from-rest"].values, [0.0, 2.0, 0.0]);
    let grpc_query = grpc
        .query(QueryRequest {
            namespace: "ns".into(),
            top_k: 2,
            vector: vec![0.0, 1.0, 0.0],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rest_query = rest
        .post(
            "/query",
            json!({"namespace": "ns", "topK": 2, "vector": [0.0, 1.0, 0.0]}),
        )
        .await
        .expect(StatusCode::OK);
    for (i, grpc_match) in grpc_query.matches.iter().enumerate() {
        assert_eq!(rest_query["matches"][i]["id"], grpc_match.id.as_str());
        assert_eq!(
            rest_query["matches"][i]["score"].as_f64().unwrap(),
            f64::from(grpc_match.score)
        );
    }

    // The same invalid request gets the same message on both transports.
    let grpc_err = grpc
        .query(QueryRequest {
            top_k: 1,
            vector: vec![1.0, 0.0],
            ..Default::default()
        })
        .await
        .unwrap_err();
    let rest_err = rest
        .post("/query", json!({"topK": 1, "vector": [1.0, 0.0]}))
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_eq!(grpc_err.code(), tonic::Code::InvalidArgument);
    assert_eq!(rest_err["code"], tonic::Code::InvalidArgument as i32);
    assert_eq!(rest_err["message"], grpc_err.message());
    server.stop().await;
}

#[tokio::test]
async fn errors_have_the_gateway_shape_and_status() {
    let (server, rest, host) = index(2, "cosine").await;
    seed_small(&rest).await;
    let cases = [
        (
            json!({"topK": 1, "vector": [1.0, 0.0, 0.0]}),
            "/query",
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "index dimension is 2",
        ),
        (
            json!({"topK": 0, "vector": [1.0, 0.0]}),
            "/query",
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "top_k",
        ),
        (
            json!({"topK": 1, "id": "missing", "namespace": "ns"}),
            "/query",
            StatusCode::NOT_FOUND,
            tonic::Code::NotFound,
            "missing",
        ),
        (
            json!({"topK": 1, "vector": [1.0, 0.0], "queries": [{"values": [1.0, 0.0]}]}),
            "/query",
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "queries: the deprecated batch form",
        ),
        (
            json!({"topK": "one"}),
            "/query",
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "invalid JSON body",
        ),
        (
            json!({"vectors": [{"id": "x", "values": [1.0, 0.0], "metadata": {"nested": {"a": 1}}}]}),
            "/vectors/upsert",
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "vectors[0].metadata",
        ),
        (
            json!({"namespace": "ns", "filter": {}}),
            "/vectors/delete",
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "filter",
        ),
        (
            json!({"filter": {"genre": {"$regex": "x"}}}),
            "/describe_index_stats",
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "filter.genre",
        ),
    ];
    for (body, path, status, code, part) in cases {
        let reply = rest.post(path, body.clone()).await;
        assert_eq!(reply.status, status, "{path} {body}: {}", reply.body);
        assert_error(&reply.body, code, part);
    }
    let not_json = rest
        .send(
            Method::POST,
            "/vectors/upsert",
            Some(b"{\"vectors\":".to_vec()),
        )
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_error(&not_json, tonic::Code::InvalidArgument, "invalid JSON body");
    let bad_limit = rest
        .get("/vectors/list?limit=lots")
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_error(&bad_limit, tonic::Code::InvalidArgument, "limit: ");
    let too_many = rest
        .get("/vectors/list?limit=101")
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_error(&too_many, tonic::Code::InvalidArgument, "limit");

    // Auth: 401 with code 16, never echoing the key.
    let unauthenticated = Rest::new(&host)
        .post("/query", json!({"topK": 1, "vector": [1.0, 0.0]}))
        .await
        .expect(StatusCode::UNAUTHORIZED);
    assert_error(
        &unauthenticated,
        tonic::Code::Unauthenticated,
        "missing api key",
    );
    let wrong = Rest::new(&host)
        .key("wrong-key")
        .get("/vectors/list")
        .await
        .expect(StatusCode::UNAUTHORIZED);
    assert_error(&wrong, tonic::Code::Unauthenticated, "invalid api key");

    // Integrated inference and documents: 501 with a message (imports: see `imports`).
    // Unknown: 404.
    for (method, path) in [
        (Method::POST, "/records/namespaces/ns/upsert"),
        (Method::POST, "/records/namespaces/ns/search"),
        (Method::POST, "/namespaces/ns/documents/search"),
    ] {
        let reply = rest.send(method.clone(), path, Some(b"{}".to_vec())).await;
        assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED, "{method} {path}");
        assert_error(
            &reply.body,
            tonic::Code::Unimplemented,
            "not implemented by Larch",
        );
    }
    let nowhere = rest.get("/indexes").await.expect(StatusCode::NOT_FOUND);
    assert_error(&nowhere, tonic::Code::NotFound, "no route GET /indexes");
    server.stop().await;
}

async fn seed_small(rest: &Rest) {
    rest.post(
        "/vectors/upsert",
        json!({"namespace": "ns", "vectors": [{"id": "a", "values": [1.0, 0.0]}]}),
    )
    .await
    .expect(StatusCode::OK);
}

#[tokio::test]
async fn data_port_serves_rest_over_h2c_next_to_grpc() {
    let (server, _, host) = index(2, "cosine").await;
    let h2 = Rest::h2c(&host).key(&server.key);
    seed_small(&h2).await;
    let fetched = h2
        .get("/vectors/fetch?ids=a&namespace=ns")
        .await
        .expect(StatusCode::OK);
    assert_eq!(fetched["vectors"]["a"]["values"], json!([1.0, 0.0]));
    // gRPC on the same connection-level port still works, health included.
    larch_tests::wait_serving(&host).await;
    let grpc = server
        .data(&host)
        .await
        .fetch(FetchRequest {
            ids: vec!["a".into()],
            namespace: "ns".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grpc.vectors["a"].values, [1.0, 0.0]);
    server.stop().await;
}
