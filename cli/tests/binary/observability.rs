//! Observability of the real binary (issue 7, item 5): the admin port (`--admin-addr`) with
//! `/healthz`, `/readyz` and Prometheus `/metrics` — requests by RPC and code, auth denials,
//! vectors per index, WAL fsync timings — and request ids in text and JSON logs.

use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::control::{CreateIndexRequest, ListIndexesRequest};
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{UpsertRequest, Vector};
use tonic::Code;

use super::harness::*;

const KEY: &str = "observability-test-key";

/// `message` with the test's key (none for `None`) and `x-request-id: id`.
fn with_id<T>(message: T, key: Option<&str>, id: &str) -> tonic::Request<T> {
    let mut request = with_key(message, key);
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().unwrap());
    request
}

/// The value of the sample `series` (metric name and labels, as rendered) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[track_caller]
fn assert_sample(text: &str, series: &str, expected: f64) {
    assert_eq!(sample(text, series), Some(expected), "{series} in\n{text}");
}

/// Polls `/readyz` until it answers 200; panics after [`TIMEOUT`].
async fn wait_ready(admin: std::net::SocketAddr) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (status, _) = http_get(admin, "/readyz");
        if status == 200 {
            return;
        }
        assert_eq!(status, 503, "/readyz answers 200 or 503");
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never became ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_serves_probes_and_metrics() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut larch = Larch::spawn(
        &[
            "serve",
            "--control-addr",
            "127.0.0.1:0",
            "--data-ports",
            "0",
            "--admin-addr",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.path().to_str().unwrap(),
        ],
        &[("LARCH_API_KEY", KEY)],
    );
    let addr = larch.control_addr().to_string();
    let admin = larch.admin_addr();
    assert!(admin.port() != 0 && admin.ip().is_loopback(), "{admin}");
    assert_eq!(http_get(admin, "/healthz").0, 200);
    wait_ready(admin).await;
    wait_serving(&addr, "").await;

    // Some traffic: an index with three vectors, and a refused call.
    let mut control = IndexServiceClient::new(connect(&addr).await);
    let model = control
        .create_index(with_key(
            CreateIndexRequest {
                name: "watched".into(),
                dimension: Some(2),
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner();
    wait_serving(&model.host, "VectorService").await;
    let mut data = VectorServiceClient::new(connect(&model.host).await);
    let vectors = (0..3)
        .map(|n| Vector {
            id: format!("v{n}"),
            values: vec![1.0, n as f32],
            ..Default::default()
        })
        .collect();
    data.upsert(with_key(
        UpsertRequest {
            vectors,
            namespace: String::new(),
        },
        Some(KEY),
    ))
    .await
    .unwrap();
    let refused = control
        .list_indexes(with_id(ListIndexesRequest {}, None, "bin-text-1"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(
        refused.metadata().get("x-request-id").unwrap(),
        "bin-text-1"
    );

    let (status, text) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    for (series, value) in [
        (
            r#"larch_requests_total{rpc="/larch.control.v1.IndexService/CreateIndex",code="OK"}"#,
            1.0,
        ),
        (
            r#"larch_requests_total{rpc="/larch.control.v1.IndexService/ListIndexes",code="UNAUTHENTICATED"}"#,
            1.0,
        ),
        (
            r#"larch_requests_total{rpc="/VectorService/Upsert",code="OK"}"#,
            1.0,
        ),
        (
            r#"larch_request_duration_seconds_count{rpc="/VectorService/Upsert"}"#,
            1.0,
        ),
        (r#"larch_auth_denials_total{reason="UNAUTHENTICATED"}"#, 1.0),
        (
            r#"larch_index_vectors{project="default",index="watched"}"#,
            3.0,
        ),
    ] {
        assert_sample(&text, series, value);
    }
    // Health checks are counted too (the harness polled them).
    let health = r#"larch_requests_total{rpc="/grpc.health.v1.Health/Check",code="OK"}"#;
    assert!(sample(&text, health).is_some_and(|n| n >= 2.0), "{text}");
    let fsyncs = sample(&text, "larch_wal_fsync_duration_seconds_count");
    assert!(
        fsyncs.is_some_and(|n| n >= 1.0),
        "the upsert was fsynced: {text}"
    );
    assert!(
        sample(
            &text,
            r#"larch_index_wal_bytes{project="default",index="watched"}"#
        )
        .is_some_and(|bytes| bytes > 0.0),
        "{text}"
    );

    // The refusal's audit line names its request id (text format: the span's fields). The
    // answer can reach the client before the test's reader of the server's stderr has the
    // line, so it is waited for (bounded).
    super::split::eventually(
        std::time::Duration::from_secs(30),
        "the refusal's audit line with its request id",
        async || {
            larch.stderr().lines().any(|line| {
                line.contains("request_id=bin-text-1") && line.contains("request refused")
            })
        },
    )
    .await;

    assert!(larch.terminate().success());
    let stopped = std::net::TcpStream::connect(admin);
    assert!(stopped.is_err(), "the admin port closes with the process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_request_ids() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut larch = Larch::spawn(
        &[
            "serve",
            "--control-addr",
            "127.0.0.1:0",
            "--data-ports",
            "0",
            "--log-format",
            "json",
            "--data-dir",
            data_dir.path().to_str().unwrap(),
        ],
        &[("LARCH_API_KEY", KEY)],
    );
    let addr = larch.control_addr().to_string();
    wait_serving(&addr, "").await;
    let refused = list_indexes_with_id(&addr, "bin-json-1").await;
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(larch.terminate().success());

    let stderr = larch.stderr();
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line:?}"))
        })
        .collect();
    assert!(events.iter().all(serde_json::Value::is_object));
    assert!(
        events
            .iter()
            .any(|event| event["message"] == LISTENING && event["level"] == "INFO"),
        "{stderr}"
    );
    let refusal = events
        .iter()
        .find(|event| event["span"]["request_id"] == "bin-json-1")
        .unwrap_or_else(|| panic!("a line of request bin-json-1 in {stderr}"));
    assert_eq!(refusal["message"], "request refused", "{refusal}");
    assert_eq!(refusal["target"], "audit", "{refusal}");
    assert_eq!(refusal["code"], "UNAUTHENTICATED", "{refusal}");
    assert_eq!(
        refusal["span"]["rpc"], "/larch.control.v1.IndexService/ListIndexes",
        "{refusal}"
    );
}

/// `ListIndexes` without a key, sent with `x-request-id: id`; returns the refusal.
async fn list_indexes_with_id(addr: &str, id: &str) -> tonic::Status {
    IndexServiceClient::new(connect(addr).await)
        .list_indexes(with_id(ListIndexesRequest {}, None, id))
        .await
        .unwrap_err()
}

#[test]
fn bad_observability_flags_exit_64() {
    for args in [
        ["serve", "--log-format", "yaml"],
        ["serve", "--admin-addr", "not-an-address"],
    ] {
        let mut larch = Larch::spawn(&args, &[]);
        let status = larch.wait();
        assert_eq!(status.code(), Some(64), "{args:?}: {}", larch.stderr());
    }
}
