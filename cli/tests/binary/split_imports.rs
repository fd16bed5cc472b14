//! Bulk import in split mode: `larch data-plane --import-root` (here `LARCH_IMPORT_ROOT`)
//! runs `POST /bulk/imports` for an index routed by host, like `larch serve` does; with
//! `--import-allow-s3` (here `LARCH_IMPORT_ALLOW_S3`) from an `s3://` bucket prefix too.

use std::io::{Read, Write};
use std::time::Duration;

use larch_data_plane::import::parquet::write::write_records;
use larch_engine::VectorInput;
use larch_proto::control::CreateIndexRequest;
use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::pinecone::DescribeIndexStatsRequest;
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use serde_json::{Value, json};

use super::harness::*;
use super::split::{KEY, Split, eventually, via_host};

/// One HTTP/1.1 request to the data plane at `addr` for index host `host`; status and JSON.
async fn http(addr: &str, host: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (addr, host, method, path, body) = (
        addr.to_owned(),
        host.to_owned(),
        method.to_owned(),
        path.to_owned(),
        body.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nApi-Key: {KEY}\r\nContent-Type: \
             application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status: u16 = answer[9..12].parse().unwrap();
        let (_, payload) = answer.split_once("\r\n\r\n").unwrap();
        (status, serde_json::from_str(payload).unwrap_or(Value::Null))
    })
    .await
    .unwrap()
}

/// Creates the 2-dimensional euclidean index "docs" on `split`'s control plane; returns its
/// host.
async fn create_docs(split: &Split) -> String {
    IndexServiceClient::new(connect(&split.control_addr).await)
        .create_index(with_key(
            CreateIndexRequest {
                name: "docs".into(),
                dimension: Some(2),
                metric: Some("euclidean".into()),
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner()
        .host
}

/// Starts an import of `body` into the index at `host` on the data plane at `addr`, waits
/// for it to end and returns how it ended.
async fn run_import(addr: &str, host: &str, body: &str) -> Value {
    let (status, started) = http(addr, host, "POST", "/bulk/imports", body).await;
    assert_eq!(status, 200, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let path = format!("/bulk/imports/{id}");
    eventually(Duration::from_secs(120), "the import ending", async || {
        let (_, import) = http(addr, host, "GET", &path, "").await;
        import["status"] != "Pending" && import["status"] != "InProgress"
    })
    .await;
    http(addr, host, "GET", &path, "").await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_data_plane_runs_bulk_imports_under_its_import_root() {
    let root = tempfile::tempdir().unwrap();
    let set = root.path().join("set");
    std::fs::create_dir_all(set.join("docs")).unwrap();
    let records: Vec<VectorInput> = (0..1200)
        .map(|i| VectorInput {
            id: format!("d{i}"),
            values: vec![1.0, i as f32],
            ..VectorInput::default()
        })
        .collect();
    write_records(&set.join("docs").join("0.parquet"), &records, 400).unwrap();
    let root_path = root.path().to_str().unwrap();
    let split = Split::start_with("larch.test", &[("LARCH_IMPORT_ROOT", root_path)]).await;

    let host = create_docs(&split).await;
    let addr = split.data_addr.clone();
    let body = json!({"uri": format!("file://{}", set.display())}).to_string();
    let import = run_import(&addr, &host, &body).await;
    assert_eq!(import["status"], "Completed", "{import}");
    assert_eq!(import["recordsImported"], 1200, "{import}");
    let stats = VectorServiceClient::new(via_host(&addr, &host).await)
        .describe_index_stats(with_key(
            DescribeIndexStatsRequest { filter: None },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.namespaces["docs"].vector_count, 1200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_the_split_data_plane_imports_a_bucket_prefix_when_allowed() {
    use larch_proto::pinecone::FetchRequest;
    use object_store::ObjectStoreExt;

    let Some(test) = larch_state::testing::s3("s3_import_split") else {
        return;
    };
    // Pinecone's layout under <prefix>/set: two namespaces, one file each.
    let scratch = tempfile::tempdir().unwrap();
    for (namespace, first, count) in [("docs", 0, 1100), ("__default__", 5000, 3)] {
        let records: Vec<VectorInput> = (first..first + count)
            .map(|i| VectorInput {
                id: format!("d{i}"),
                values: vec![1.0, i as f32],
                metadata: Some(serde_json::from_value(json!({"n": i})).unwrap()),
                ..VectorInput::default()
            })
            .collect();
        let file = scratch.path().join(format!("{namespace}.parquet"));
        write_records(&file, &records, 400).unwrap();
        let bytes = std::fs::read(&file).unwrap();
        let key = test.bucket.path(&format!("set/{namespace}/part-0.parquet"));
        test.bucket.store.put(&key, bytes.into()).await.unwrap();
    }
    // The child inherits this process's AWS_* variables, which reach the test server.
    let split = Split::start_with("larch.test", &[("LARCH_IMPORT_ALLOW_S3", "true")]).await;
    let host = create_docs(&split).await;
    let addr = split.data_addr.clone();
    let uri = format!("{}/set", test.url);
    let body = json!({"uri": uri, "errorMode": {"onError": "abort"}}).to_string();
    let import = run_import(&addr, &host, &body).await;
    assert_eq!(import["status"], "Completed", "{import}");
    assert_eq!(import["recordsImported"], 1103, "{import}");
    assert_eq!(import["uri"], uri.as_str(), "{import}");

    // The records are there, values and metadata as written.
    let mut client = VectorServiceClient::new(via_host(&addr, &host).await);
    let fetched = client
        .fetch(with_key(
            FetchRequest {
                ids: vec!["d7".into(), "d1099".into()],
                namespace: "docs".into(),
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.vectors.len(), 2, "{fetched:?}");
    assert_eq!(fetched.vectors["d1099"].values, vec![1.0, 1099.0]);
    let metadata = fetched.vectors["d7"].metadata.clone().unwrap();
    assert!(
        matches!(
            metadata.fields["n"].kind,
            Some(prost_types::value::Kind::NumberValue(n)) if n == 7.0
        ),
        "{metadata:?}"
    );
    let fetched = client
        .fetch(with_key(
            FetchRequest {
                ids: vec!["d5002".into()],
                namespace: String::new(),
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.vectors["d5002"].values, vec![1.0, 5002.0]);

    // A prefix with no namespace directories is refused up front.
    let body = json!({"uri": format!("{}/missing", test.url)}).to_string();
    let (status, refused) = http(&addr, &host, "POST", "/bulk/imports", &body).await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("no namespace directories")),
        "{refused}"
    );
}
