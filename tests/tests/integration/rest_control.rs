//! Pinecone's REST control plane on the control-plane port, beside gRPC: status codes, both
//! JSON shapes (chosen by `X-Pinecone-Api-Version`), the `host` rule, auth and error bodies.

use http::{Method, StatusCode};
use larch_proto::control::{DescribeIndexRequest, ListIndexesRequest};
use larch_tests::{TestServer, wait_serving};
use serde_json::{Value, json};

use crate::rest_client::Rest;

const CLASSIC: &str = "2025-10";
const SCHEMA: &str = "2026-07";

fn control(server: &TestServer) -> Rest {
    Rest::new(&server.control_addr.to_string()).key(&server.key)
}

/// The body pinecone 8.1.2 sends for `create_index(name, dimension, metric, spec, ...)`.
fn classic_create(name: &str, dimension: i64) -> Value {
    json!({"name": name, "spec": {"serverless": {"cloud": "aws", "region": "us-east-1"}},
        "dimension": dimension, "metric": "cosine", "deletion_protection": "disabled",
        "vector_type": "dense", "tags": {"env": "dev"}})
}

/// The body pinecone 10.2.0 sends for the same call.
fn schema_create(name: &str, dimension: i64) -> Value {
    json!({"schema": {"fields": {"_values": {"type": "dense_vector", "dimension": dimension,
        "metric": "cosine"}}}, "name": name, "deployment": {"deployment_type": "managed",
        "cloud": "aws", "region": "us-east-1"}, "tags": {"env": "dev"}})
}

/// Asserts `body` is the control plane's error shape with `code`, `status` and a message
/// containing `part`.
#[track_caller]
fn assert_error(body: &Value, code: &str, status: StatusCode, part: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(part), "{message:?} lacks {part:?}");
}

#[tokio::test]
async fn classic_lifecycle_with_pinecones_status_codes() {
    let server = TestServer::start().await;
    let rest = control(&server).version(CLASSIC);

    assert_eq!(
        rest.get("/indexes").await.expect(StatusCode::OK),
        json!({"indexes": []})
    );
    let created = rest.post("/indexes", classic_create("movies", 4)).await;
    assert_eq!(created.content_type.as_deref(), Some("application/json"));
    let model = created.expect(StatusCode::CREATED);
    let host = model["host"].as_str().unwrap().to_owned();
    assert!(
        host.starts_with("127.0.0.1:") && !host.contains("://"),
        "{host}"
    );
    assert_eq!(
        model,
        json!({"name": "movies", "dimension": 4, "metric": "cosine", "host": host,
            "deletion_protection": "disabled", "tags": {"env": "dev"}, "vector_type": "dense",
            "spec": {"serverless": {"cloud": "aws", "region": "us-east-1",
                "read_capacity": {"mode": "OnDemand", "status": {"state": "Ready"}}}},
            "status": {"ready": true, "state": "Ready"}})
    );
    assert_eq!(
        rest.get("/indexes/movies").await.expect(StatusCode::OK),
        model
    );
    assert_eq!(
        rest.get("/indexes").await.expect(StatusCode::OK),
        json!({"indexes": [model]})
    );

    // Configure: 202 with the new model; tags merge and "" removes one.
    let configured = rest
        .patch(
            "/indexes/movies",
            json!({"deletion_protection": "enabled", "tags": {"team": "search", "env": ""}}),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(configured["deletion_protection"], "enabled");
    assert_eq!(configured["tags"], json!({"team": "search"}));

    // Delete: 403 while protected, then 202 with no body, then 404.
    let refused = rest
        .delete("/indexes/movies")
        .await
        .expect(StatusCode::FORBIDDEN);
    assert_error(
        &refused,
        "FORBIDDEN",
        StatusCode::FORBIDDEN,
        "deletion protection",
    );
    rest.patch(
        "/indexes/movies",
        json!({"deletion_protection": "disabled"}),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    let deleted = rest.delete("/indexes/movies").await;
    assert_eq!(deleted.expect(StatusCode::ACCEPTED), Value::Null);
    let gone = rest
        .get("/indexes/movies")
        .await
        .expect(StatusCode::NOT_FOUND);
    assert_error(
        &gone,
        "NOT_FOUND",
        StatusCode::NOT_FOUND,
        "index 'movies' not found",
    );
    server.stop().await;
}

#[tokio::test]
async fn api_2026_07_gets_the_schema_shape_and_a_dialable_http_host() {
    let server = TestServer::start().await;
    let rest = control(&server).version(SCHEMA);
    let model = rest
        .post("/indexes", schema_create("docs", 8))
        .await
        .expect(StatusCode::CREATED);
    let host = model["host"].as_str().unwrap().to_owned();
    assert!(host.starts_with("http://127.0.0.1:"), "{host}");
    assert_eq!(
        model,
        json!({"name": "docs", "host": host, "status": {"ready": true, "state": "Ready"},
            "deployment": {"deployment_type": "managed", "cloud": "aws", "region": "us-east-1"},
            "schema": {"fields": {
                "_values": {"type": "dense_vector", "dimension": 8, "metric": "cosine"},
                "_sparse_values": {"type": "sparse_vector"}}},
            "read_capacity": {"mode": "OnDemand", "status": {"state": "Ready"}},
            "deletion_protection": "disabled", "tags": {"env": "dev"}})
    );

    // The same index in the classic shape has the bare host, and so does gRPC.
    let bare = host.strip_prefix("http://").unwrap();
    let classic = control(&server)
        .version(CLASSIC)
        .get("/indexes/docs")
        .await
        .expect(StatusCode::OK);
    assert_eq!(classic["host"], bare);
    assert_eq!(classic["dimension"], 8);
    let unversioned = control(&server)
        .get("/indexes/docs")
        .await
        .expect(StatusCode::OK);
    assert_eq!(unversioned, classic);
    let grpc = server
        .control()
        .await
        .describe_index(DescribeIndexRequest {
            name: "docs".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grpc.host, bare);

    // A classic body is accepted under 2026-07 too, and answered in the 2026-07 shape.
    let from_classic = rest
        .post("/indexes", classic_create("films", 3))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(
        from_classic["schema"]["fields"]["_values"],
        json!({"type": "dense_vector", "dimension": 3, "metric": "cosine"})
    );
    let listed = rest.get("/indexes").await.expect(StatusCode::OK);
    let names: Vec<&str> = listed["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs", "films"]);

    // The host serves the data plane over REST, as a 10.x client would dial it.
    let data = Rest::new(&host).key(&server.key);
    data.get("/vectors/list").await.expect(StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn rest_and_grpc_share_the_port_over_http1_and_h2c() {
    let server = TestServer::start().await;
    let addr = server.control_addr.to_string();
    let created = Rest::h2c(&addr)
        .key(&server.key)
        .post("/indexes", classic_create("shared", 2))
        .await
        .expect(StatusCode::CREATED);
    let listed = server
        .control()
        .await
        .list_indexes(ListIndexesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.indexes.len(), 1);
    assert_eq!(listed.indexes[0].host, created["host"]);
    wait_serving(&addr).await;
    let described = Rest::new(&addr)
        .key(&server.key)
        .get("/indexes/shared")
        .await
        .expect(StatusCode::OK);
    assert_eq!(described, created);
    server.stop().await;
}

#[tokio::test]
async fn requests_are_refused_with_pinecones_codes() {
    let server = TestServer::start().await;
    let rest = control(&server);
    rest.post("/indexes", classic_create("dup", 2))
        .await
        .expect(StatusCode::CREATED);

    let duplicate = rest
        .post("/indexes", classic_create("dup", 2))
        .await
        .expect(StatusCode::CONFLICT);
    assert_error(
        &duplicate,
        "ALREADY_EXISTS",
        StatusCode::CONFLICT,
        "already exists",
    );

    // Bodies that do not fit the request type: 422, as Pinecone's server answers.
    for (body, part) in [
        (json!({"name": "x", "dimension": "four"}), "invalid type"),
        (
            json!({"name": "x", "dimensions": 4}),
            "unknown field `dimensions`",
        ),
        (json!(["not", "an", "object"]), "invalid type"),
    ] {
        let reply = rest
            .post("/indexes", body)
            .await
            .expect(StatusCode::UNPROCESSABLE_ENTITY);
        assert_error(
            &reply,
            "UNPROCESSABLE_ENTITY",
            StatusCode::UNPROCESSABLE_ENTITY,
            part,
        );
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Failed to deserialize the JSON body"),
            "{reply}"
        );
    }
    let not_json = rest
        .send(Method::POST, "/indexes", Some(b"{\"name\":".to_vec()))
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_error(
        &not_json,
        "INVALID_ARGUMENT",
        StatusCode::BAD_REQUEST,
        "Failed to parse",
    );

    // Valid JSON, invalid settings: 400 naming the field (the catalog's rules).
    for (body, part) in [
        (
            classic_create("zero", 0),
            "dimension: must be between 1 and 20000",
        ),
        (classic_create("Upper", 2), "name: "),
        (
            json!({"name": "pod", "dimension": 2, "spec": {"pod": {"environment": "x"}}}),
            "spec.pod: only serverless",
        ),
        (
            json!({"name": "doc", "schema": {"fields": {"_values": {"type": "dense_vector",
                "dimension": 2}, "title": {"type": "string", "full_text_search": {}}}}}),
            "schema.fields.title: ",
        ),
        (
            json!({"name": "sparse", "vector_type": "sparse", "metric": "cosine",
                "spec": {"serverless": {"cloud": "aws", "region": "us-east-1"}}}),
            "metric: a sparse index is scored by dot product",
        ),
    ] {
        let reply = rest
            .post("/indexes", body)
            .await
            .expect(StatusCode::BAD_REQUEST);
        assert_error(&reply, "INVALID_ARGUMENT", StatusCode::BAD_REQUEST, part);
    }
    let bad_tag = rest
        .patch("/indexes/dup", json!({"tags": {"bad key!": "x"}}))
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_error(
        &bad_tag,
        "INVALID_ARGUMENT",
        StatusCode::BAD_REQUEST,
        "tags: ",
    );
    let unknown = rest
        .patch("/indexes/nope", json!({"deletion_protection": "enabled"}))
        .await
        .expect(StatusCode::NOT_FOUND);
    assert_error(&unknown, "NOT_FOUND", StatusCode::NOT_FOUND, "nope");
    rest.delete("/indexes/nope")
        .await
        .expect(StatusCode::NOT_FOUND);

    // Not implemented: 501 with a message; unknown routes: 404; wrong method: 405.
    for (method, path) in [
        (Method::GET, "/collections"),
        (Method::POST, "/indexes/create-for-model"),
    ] {
        let reply = rest
            .send(method, path, Some(b"{}".to_vec()))
            .await
            .expect(StatusCode::NOT_IMPLEMENTED);
        assert_error(
            &reply,
            "UNIMPLEMENTED",
            StatusCode::NOT_IMPLEMENTED,
            "not implemented by Larch",
        );
    }
    let nowhere = rest.get("/nowhere").await.expect(StatusCode::NOT_FOUND);
    assert_error(
        &nowhere,
        "NOT_FOUND",
        StatusCode::NOT_FOUND,
        "no route GET /nowhere",
    );
    rest.send(Method::PUT, "/indexes/dup", Some(b"{}".to_vec()))
        .await
        .expect(StatusCode::METHOD_NOT_ALLOWED);
    server.stop().await;
}

#[tokio::test]
async fn rest_needs_a_valid_api_key() {
    let server = TestServer::start().await;
    let addr = server.control_addr.to_string();
    let missing = Rest::new(&addr)
        .get("/indexes")
        .await
        .expect(StatusCode::UNAUTHORIZED);
    assert_error(
        &missing,
        "UNAUTHENTICATED",
        StatusCode::UNAUTHORIZED,
        "missing api key",
    );
    let wrong = Rest::new(&addr)
        .key("not-the-key")
        .post("/indexes", classic_create("x", 2))
        .await
        .expect(StatusCode::UNAUTHORIZED);
    assert_error(
        &wrong,
        "UNAUTHENTICATED",
        StatusCode::UNAUTHORIZED,
        "invalid api key",
    );
    assert!(
        !wrong.to_string().contains("not-the-key"),
        "the key is echoed"
    );
    // Nothing was created by the refused request.
    Rest::new(&addr)
        .key(&format!(" {}\t", server.key))
        .get("/indexes")
        .await
        .expect(StatusCode::OK);
    assert!(
        control(&server)
            .get("/indexes")
            .await
            .expect(StatusCode::OK)["indexes"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    server.stop().await;
}

#[tokio::test]
async fn rest_answers_503_until_recovery_completes() {
    let key = "recovery-rest-key";
    let control = larch_tests::Recovering::start(key).await;
    let addr = control.addr.clone();
    let rest = Rest::new(&addr).key(key);
    let recovering = rest
        .get("/indexes")
        .await
        .expect(StatusCode::SERVICE_UNAVAILABLE);
    assert_error(
        &recovering,
        "UNAVAILABLE",
        StatusCode::SERVICE_UNAVAILABLE,
        "recovering",
    );
    rest.post("/indexes", classic_create("early", 2))
        .await
        .expect(StatusCode::SERVICE_UNAVAILABLE);

    let server = control.finish();
    wait_serving(&addr).await;
    rest.get("/indexes").await.expect(StatusCode::OK);
    server.abort();
}
