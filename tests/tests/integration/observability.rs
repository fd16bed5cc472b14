//! Request ids and request metrics on both planes (issue 7, item 5): `x-request-id` is kept or
//! generated, and comes back in the response headers and — for gRPC — in the trailers (or, for
//! a trailers-only refusal, in the headers, where such a response keeps its trailers).
//!
//! gRPC calls go out as raw h2c requests so headers and trailers can be told apart: tonic's
//! client merges the two into one metadata map (checked here too, as Pinecone's gRPC clients
//! see it).

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use larch_proto::control::ListIndexesRequest;
use larch_proto::pinecone::{DescribeIndexStatsRequest, UpsertRequest, Vector};
use larch_tests::TestServer;
use prost::Message;

const X_REQUEST_ID: &str = "x-request-id";

/// A response: status, headers, body and trailers (if a trailers frame came).
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    trailers: Option<HeaderMap>,
}

impl Reply {
    #[track_caller]
    fn header_id(&self) -> &str {
        id_in(&self.headers)
    }

    #[track_caller]
    fn trailer_id(&self) -> &str {
        id_in(self.trailers.as_ref().expect("a trailers frame"))
    }

    fn grpc_status(&self) -> Option<&str> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| self.headers.get("grpc-status"))
            .map(|v| v.to_str().unwrap())
    }
}

#[track_caller]
fn id_in(map: &HeaderMap) -> &str {
    let ids: Vec<_> = map.get_all(X_REQUEST_ID).iter().collect();
    assert_eq!(ids.len(), 1, "one x-request-id in {map:?}");
    ids[0].to_str().unwrap()
}

fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && id.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

/// Sends `method path` with `headers` and `body` to `host` over h2c (`http2`) or HTTP/1.1.
async fn send(
    host: &str,
    http2: bool,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let host = host.strip_prefix("http://").unwrap_or(host);
    let client = Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http::<Full<Bytes>>();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{host}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{host}{path}: {e}"));
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    Reply {
        status: parts.status,
        headers: parts.headers,
        trailers: collected.trailers().cloned(),
    }
}

/// A unary gRPC call of `path` with `message`, as a raw h2c request.
async fn grpc(host: &str, path: &str, message: &impl Message, headers: &[(&str, &str)]) -> Reply {
    let message = message.encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&message);
    let mut all = vec![("content-type", "application/grpc"), ("te", "trailers")];
    all.extend_from_slice(headers);
    send(host, true, Method::POST, path, &all, body).await
}

/// The value of the sample `series` (a whole line's name and labels) in `text`, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn grpc_answers_carry_the_request_id_in_headers_and_trailers() {
    let server = TestServer::start().await;
    let control = server.control_addr.to_string();
    let list = "/larch.control.v1.IndexService/ListIndexes";
    let key = ("api-key", server.key.as_str());

    let kept = grpc(
        &control,
        list,
        &ListIndexesRequest {},
        &[key, (X_REQUEST_ID, "req-control-1")],
    )
    .await;
    assert_eq!(kept.grpc_status(), Some("0"));
    assert!(
        !kept.headers.contains_key("grpc-status"),
        "a full response, not trailers-only"
    );
    assert_eq!(kept.header_id(), "req-control-1");
    assert_eq!(kept.trailer_id(), "req-control-1");

    let generated = grpc(&control, list, &ListIndexesRequest {}, &[key]).await;
    assert_eq!(generated.grpc_status(), Some("0"));
    assert!(is_uuid(generated.header_id()), "{}", generated.header_id());
    assert_eq!(generated.trailer_id(), generated.header_id());

    // Health is public and counted, and carries an id like every other RPC.
    let health = grpc(
        &control,
        "/grpc.health.v1.Health/Check",
        &tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        },
        &[(X_REQUEST_ID, "req-health")],
    )
    .await;
    assert_eq!(health.trailer_id(), "req-health");

    // The data plane of an index does the same.
    let (model, _) = server.create_index("observed", 2, "cosine").await;
    let stats = grpc(
        &model.host,
        "/VectorService/DescribeIndexStats",
        &DescribeIndexStatsRequest { filter: None },
        &[key, (X_REQUEST_ID, "req-data-1")],
    )
    .await;
    assert_eq!(stats.grpc_status(), Some("0"));
    assert_eq!(stats.header_id(), "req-data-1");
    assert_eq!(stats.trailer_id(), "req-data-1");

    let text = server.metrics().render();
    for (series, at_least) in [
        (
            r#"larch_requests_total{rpc="/larch.control.v1.IndexService/ListIndexes",code="OK"}"#,
            2.0,
        ),
        (
            r#"larch_requests_total{rpc="/larch.control.v1.IndexService/CreateIndex",code="OK"}"#,
            1.0,
        ),
        (
            r#"larch_requests_total{rpc="/grpc.health.v1.Health/Check",code="OK"}"#,
            1.0,
        ),
        (
            r#"larch_requests_total{rpc="/VectorService/DescribeIndexStats",code="OK"}"#,
            1.0,
        ),
        (
            r#"larch_request_duration_seconds_count{rpc="/larch.control.v1.IndexService/ListIndexes"}"#,
            2.0,
        ),
    ] {
        let value = sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
        assert!(value >= at_least, "{series} = {value}");
    }
    server.stop().await;
}

#[tokio::test]
async fn grpc_refusals_carry_the_request_id_in_their_headers() {
    let server = TestServer::start().await;
    let (model, _) = server.create_index("guarded", 2, "cosine").await;
    let query = larch_proto::pinecone::QueryRequest {
        vector: vec![1.0, 0.0],
        top_k: 1,
        ..Default::default()
    };

    // No key: UNAUTHENTICATED, answered trailers-only by the auth layer.
    let refused = grpc(
        &model.host,
        "/VectorService/Query",
        &query,
        &[(X_REQUEST_ID, "req-refused")],
    )
    .await;
    assert_eq!(refused.headers.get("grpc-status").unwrap(), "16");
    assert_eq!(refused.header_id(), "req-refused");

    let anonymous = grpc(&model.host, "/VectorService/Query", &query, &[]).await;
    assert_eq!(anonymous.headers.get("grpc-status").unwrap(), "16");
    assert!(is_uuid(anonymous.header_id()));

    // An unknown control-plane method: UNIMPLEMENTED from the fallback, with an id.
    let unknown = grpc(
        &server.control_addr.to_string(),
        "/larch.control.v1.Nothing/Here",
        &ListIndexesRequest {},
        &[("api-key", &server.key), (X_REQUEST_ID, "req-unknown")],
    )
    .await;
    assert_eq!(unknown.grpc_status(), Some("12"));
    assert_eq!(unknown.header_id(), "req-unknown");

    let text = server.metrics().render();
    let refusals = sample(
        &text,
        r#"larch_requests_total{rpc="/VectorService/Query",code="UNAUTHENTICATED"}"#,
    );
    assert_eq!(refusals, Some(2.0), "{text}");
    assert!(
        sample(
            &text,
            r#"larch_requests_total{rpc="unrouted",code="UNIMPLEMENTED"}"#
        )
        .is_some(),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn tonic_clients_see_the_request_id_they_sent() {
    let server = TestServer::start().await;
    let mut control = server.control().await;
    let mut request = tonic::Request::new(ListIndexesRequest {});
    request
        .metadata_mut()
        .insert(X_REQUEST_ID, "req-tonic".parse().unwrap());
    let response = control.list_indexes(request).await.unwrap();
    // Headers and trailers merged: the id is there, once from each.
    let ids: Vec<_> = response.metadata().get_all(X_REQUEST_ID).iter().collect();
    assert!(
        !ids.is_empty() && ids.iter().all(|id| *id == "req-tonic"),
        "{ids:?}"
    );

    let mut request = tonic::Request::new(ListIndexesRequest {});
    request
        .metadata_mut()
        .insert(X_REQUEST_ID, "req-tonic-refused".parse().unwrap());
    let refused = server
        .control_with_key(None)
        .await
        .list_indexes(request)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        refused.metadata().get(X_REQUEST_ID).unwrap(),
        "req-tonic-refused"
    );
    server.stop().await;
}

#[tokio::test]
async fn rest_answers_carry_the_request_id_in_their_headers() {
    let server = TestServer::start().await;
    let control = server.control_addr.to_string();
    let key = ("Api-Key", server.key.as_str());

    let listed = send(
        &control,
        false,
        Method::GET,
        "/indexes",
        &[key, (X_REQUEST_ID, "req-rest-1")],
        Vec::new(),
    )
    .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.header_id(), "req-rest-1");

    // h2c REST too, and without an id.
    let generated = send(&control, true, Method::GET, "/indexes", &[key], Vec::new()).await;
    assert_eq!(generated.status, StatusCode::OK);
    assert!(is_uuid(generated.header_id()));

    let missing = send(
        &control,
        false,
        Method::GET,
        "/indexes/nope",
        &[key, (X_REQUEST_ID, "req-rest-404")],
        Vec::new(),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.header_id(), "req-rest-404");

    let refused = send(
        &control,
        false,
        Method::GET,
        "/indexes",
        &[(X_REQUEST_ID, "req-rest-401")],
        Vec::new(),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.header_id(), "req-rest-401");

    let (model, _) = server.create_index("restful", 2, "cosine").await;
    let upserted = send(
        &model.host,
        false,
        Method::POST,
        "/vectors/upsert",
        &[
            key,
            ("content-type", "application/json"),
            (X_REQUEST_ID, "req-rest-data"),
        ],
        br#"{"vectors":[{"id":"a","values":[1,0]}]}"#.to_vec(),
    )
    .await;
    assert_eq!(upserted.status, StatusCode::OK);
    assert_eq!(upserted.header_id(), "req-rest-data");

    // REST is counted by route template, so index and namespace names do not become labels.
    let text = server.metrics().render();
    for (series, value) in [
        (
            r#"larch_requests_total{rpc="GET /indexes",code="200"}"#,
            2.0,
        ),
        (
            r#"larch_requests_total{rpc="GET /indexes",code="401"}"#,
            1.0,
        ),
        (
            r#"larch_requests_total{rpc="GET /indexes/{name}",code="404"}"#,
            1.0,
        ),
        (
            r#"larch_requests_total{rpc="POST /vectors/upsert",code="200"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    server.stop().await;
}

#[tokio::test]
async fn index_gauges_show_each_indexs_vectors() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("counted", 2, "cosine").await;
    let vectors = (0..5)
        .map(|n| Vector {
            id: format!("v{n}"),
            values: vec![1.0, n as f32],
            ..Default::default()
        })
        .collect();
    data.upsert(UpsertRequest {
        vectors,
        namespace: "ns".into(),
    })
    .await
    .unwrap();
    let text = server.metrics().render();
    let series = r#"larch_index_vectors{project="default",index="counted"}"#;
    assert_eq!(sample(&text, series), Some(5.0), "{text}");
    let wal = sample(
        &text,
        r#"larch_index_wal_bytes{project="default",index="counted"}"#,
    );
    assert!(wal.is_some_and(|bytes| bytes > 0.0), "{text}");

    server
        .control()
        .await
        .delete_index(larch_proto::control::DeleteIndexRequest {
            name: "counted".into(),
        })
        .await
        .unwrap();
    let text = server.metrics().render();
    assert_eq!(
        sample(&text, series),
        None,
        "a deleted index is gone: {text}"
    );
    server.stop().await;
}

/// The admin port's `/metrics` of `server`, as Prometheus scrapes it.
async fn scrape(server: &TestServer) -> String {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let uri = format!("http://{}/metrics", server.admin_addr());
    let response = client
        .request(Request::get(&uri).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{uri}: {e}"));
    assert_eq!(response.status(), StatusCode::OK, "{uri}");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// A request without a key to `server`'s control plane, refused UNAUTHENTICATED by its gate.
async fn keyless_request(server: &TestServer) {
    let refused = grpc(
        &server.control_addr.to_string(),
        "/larch.control.v1.IndexService/ListIndexes",
        &ListIndexesRequest {},
        &[],
    )
    .await;
    assert_eq!(refused.grpc_status(), Some("16"));
}

/// Issue 16, item 5: the engine's storage timings and the key gate's refusals reach the
/// metrics of the server they happened in, and only those, when two servers share a process
/// (they were process-wide hooks, which test servers left unset: they recorded nothing).
#[tokio::test]
async fn two_servers_in_one_process_keep_separate_storage_and_denial_counts() {
    const DENIED: &str = r#"larch_auth_denials_total{reason="UNAUTHENTICATED"}"#;
    const FSYNCS: &str = "larch_wal_fsync_duration_seconds_count";
    const FLUSHES: &str = "larch_flush_duration_seconds_count";
    let one = TestServer::start().await;
    let two = TestServer::start().await;

    let (_, mut data) = one.create_index("timed", 2, "cosine").await;
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
    let index = one
        .data_plane()
        .engine()
        .index(&one.storage_name("timed"))
        .unwrap();
    let flushed = tokio::task::spawn_blocking(move || index.flush())
        .await
        .unwrap()
        .unwrap();
    assert!(flushed, "the upsert was flushed into a segment");
    keyless_request(&one).await;

    let (first, second) = (scrape(&one).await, scrape(&two).await);
    assert_eq!(sample(&first, DENIED), Some(1.0), "{first}");
    assert!(
        sample(&first, FSYNCS).is_some_and(|n| n >= 1.0),
        "the upsert was fsynced: {first}"
    );
    assert_eq!(sample(&first, FLUSHES), Some(1.0), "{first}");
    assert_eq!(
        sample(&second, DENIED),
        None,
        "the other server refused nothing: {second}"
    );
    assert_eq!(sample(&second, FSYNCS), Some(0.0), "{second}");
    assert_eq!(sample(&second, FLUSHES), Some(0.0), "{second}");

    // And the other way round.
    keyless_request(&two).await;
    keyless_request(&two).await;
    let (first, second) = (scrape(&one).await, scrape(&two).await);
    assert_eq!(sample(&second, DENIED), Some(2.0), "{second}");
    assert_eq!(sample(&first, DENIED), Some(1.0), "{first}");
    one.stop().await;
    two.stop().await;
}
