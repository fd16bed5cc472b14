//! Bulk import in split mode: `larch data-plane --import-root` (here `LARCH_IMPORT_ROOT`)
//! runs `POST /bulk/imports` for an index routed by host, like `larch serve` does.

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

    let model = IndexServiceClient::new(connect(&split.control_addr).await)
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
        .into_inner();
    let addr = split.data_addr.clone();
    let body = json!({"uri": format!("file://{}", set.display())}).to_string();
    let (status, started) = http(&addr, &model.host, "POST", "/bulk/imports", &body).await;
    assert_eq!(status, 200, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let path = format!("/bulk/imports/{id}");
    eventually(Duration::from_secs(120), "the import ending", async || {
        let (_, import) = http(&addr, &model.host, "GET", &path, "").await;
        import["status"] != "Pending" && import["status"] != "InProgress"
    })
    .await;
    let (_, import) = http(&addr, &model.host, "GET", &path, "").await;
    assert_eq!(import["status"], "Completed", "{import}");
    assert_eq!(import["recordsImported"], 1200, "{import}");
    let stats = VectorServiceClient::new(via_host(&addr, &model.host).await)
        .describe_index_stats(with_key(
            DescribeIndexStatsRequest { filter: None },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.namespaces["docs"].vector_count, 1200);
}
