//! Bulk import (issue 18, item 2): Pinecone's `/bulk/imports` REST API on an index's host,
//! importing a generated Parquet set in Pinecone's layout from a `file://` directory under the
//! server's `--import-root`: completion with the right records, corrupt files under `continue`
//! and `abort`, cancel, restarts mid-import, and the refusals (no import root, paths outside
//! it, object storage, roles).

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::StatusCode;
use larch_data_plane::import::parquet::write::write_records;
use larch_data_plane::import::{ErrorMode, ImportState, Status};
use larch_engine::VectorInput;
use larch_proto::control::CreateApiKeyRequest;
use larch_tests::TestServer;
use serde_json::{Value, json};

use crate::rest_client::Rest;

const DIMENSION: usize = 4;

/// `count` records `{prefix}{i}` with metadata `{"n": i}`.
fn records(prefix: &str, count: usize) -> Vec<VectorInput> {
    (0..count)
        .map(|i| VectorInput {
            id: format!("{prefix}{i}"),
            values: (0..DIMENSION).map(|d| (i * DIMENSION + d) as f32).collect(),
            sparse_values: None,
            metadata: json!({"n": i}).as_object().cloned(),
        })
        .collect()
}

/// Writes `records` as `dir/namespace/file`.
fn write(dir: &Path, namespace: &str, file: &str, records: &[VectorInput]) -> PathBuf {
    let path = dir.join(namespace).join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_records(&path, records, 300).unwrap();
    path
}

fn uri(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// A server importing from `root`, an index "items" and a REST client for its data plane.
async fn server(root: &Path) -> (TestServer, Rest) {
    let server = TestServer::start_importing(root).await;
    let (model, _) = server
        .create_index("items", DIMENSION as i32, "euclidean")
        .await;
    let rest = Rest::new(&model.host).key(&server.key);
    (server, rest)
}

/// A REST client for index "items" of a restarted `server`, once it serves.
async fn rest_after(server: &TestServer) -> Rest {
    let indexes = server
        .control()
        .await
        .list_indexes(larch_proto::control::ListIndexesRequest {})
        .await
        .unwrap()
        .into_inner();
    let host = &indexes.indexes[0].host;
    larch_tests::wait_serving(host).await;
    Rest::new(host).key(&server.key)
}

/// Polls import `id` until it ends (the deadline only bounds a failure).
async fn finished(rest: &Rest, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let import = rest
            .get(&format!("/bulk/imports/{id}"))
            .await
            .expect(StatusCode::OK);
        if ["Completed", "Failed", "Cancelled"].contains(&import["status"].as_str().unwrap()) {
            return import;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "import {id} did not end: {import}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start(rest: &Rest, body: Value) -> String {
    let started = rest
        .post("/bulk/imports", body)
        .await
        .expect(StatusCode::OK);
    started["id"].as_str().unwrap().to_owned()
}

async fn count(rest: &Rest, namespace: &str) -> u64 {
    let stats = rest
        .post("/describe_index_stats", json!({}))
        .await
        .expect(StatusCode::OK);
    stats["namespaces"][namespace]["vectorCount"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_of_a_generated_parquet_set_lands_every_record() {
    let root = tempfile::tempdir().unwrap();
    let set = root.path().join("set");
    let default = records("d", 2500);
    write(&set, "__default__", "0.parquet", &default[..1200]);
    write(&set, "__default__", "1.parquet", &default[1200..]);
    let books = records("b", 700);
    write(&set, "books", "0.parquet", &books);
    std::fs::write(set.join("books").join(".log"), b"ignored").unwrap();
    let (_server, rest) = server(root.path()).await;

    let id = start(
        &rest,
        json!({"uri": uri(&set), "errorMode": {"onError": "abort"}}),
    )
    .await;
    assert_eq!(id, "1");
    let done = finished(&rest, &id).await;
    assert_eq!(done["status"], "Completed", "{done}");
    assert_eq!(done["recordsImported"], 3200);
    assert_eq!(done["percentComplete"], 100.0);
    assert_eq!(done["uri"], uri(&set));
    assert!(done["createdAt"].as_str().unwrap().ends_with('Z'), "{done}");
    assert!(done["finishedAt"].is_string(), "{done}");
    assert!(done.get("error").is_none(), "{done}");
    assert_eq!(count(&rest, "").await, 2500);
    assert_eq!(count(&rest, "books").await, 700);
    let fetched = rest
        .get("/vectors/fetch?ids=b699&namespace=books")
        .await
        .expect(StatusCode::OK);
    let record = &fetched["vectors"]["b699"];
    assert_eq!(record["metadata"], json!({"n": 699.0}), "{fetched}");
    assert_eq!(
        record["values"],
        json!(
            books[699]
                .values
                .iter()
                .map(|&v| f64::from(v))
                .collect::<Vec<_>>()
        )
    );

    // Listed, a page at a time.
    let second = start(&rest, json!({"uri": uri(&set)})).await;
    assert_eq!(second, "2");
    finished(&rest, &second).await;
    let page = rest
        .get("/bulk/imports?limit=1")
        .await
        .expect(StatusCode::OK);
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["data"][0]["id"], "1");
    let next = page["pagination"]["next"].as_str().unwrap();
    let page = rest
        .get(&format!("/bulk/imports?limit=1&paginationToken={next}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(page["data"][0]["id"], "2", "{page}");
    let all = rest.get("/bulk/imports").await.expect(StatusCode::OK);
    assert_eq!(all["data"].as_array().unwrap().len(), 2, "{all}");
    assert!(all.get("pagination").is_none(), "{all}");
    rest.get("/bulk/imports/9")
        .await
        .expect(StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_files_and_bad_records_are_skipped_under_continue_and_stop_an_abort() {
    let root = tempfile::tempdir().unwrap();
    let set = root.path().join("set");
    write(&set, "ns", "0.parquet", &records("a", 50));
    let mut bad = records("b", 40);
    bad[17].values[2] = f32::NAN; // refused by the reader
    bad[23].values = vec![1.0, 2.0]; // refused by the engine: wrong dimension
    write(&set, "ns", "1.parquet", &bad);
    std::fs::write(
        set.join("ns").join("2.parquet"),
        b"PAR1 this is not parquet",
    )
    .unwrap();
    write(&set, "ns", "3.parquet", &records("c", 10));
    let (_server, rest) = server(root.path()).await;

    let id = start(
        &rest,
        json!({"uri": uri(&set), "errorMode": {"onError": "continue"}}),
    )
    .await;
    let done = finished(&rest, &id).await;
    assert_eq!(done["status"], "Completed", "{done}");
    assert_eq!(done["recordsImported"], 50 + 38 + 10, "{done}");
    assert_eq!(count(&rest, "ns").await, 98);

    // abort: stops at the first bad record, naming its file and row; the rows before it land.
    rest.delete("/namespaces/ns").await.expect(StatusCode::OK);
    let id = start(
        &rest,
        json!({"uri": uri(&set), "errorMode": {"onError": "abort"}}),
    )
    .await;
    let done = finished(&rest, &id).await;
    assert_eq!(done["status"], "Failed", "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(
        error.contains("1.parquet row 17") && error.contains("values[2]"),
        "{error}"
    );
    assert_eq!(done["recordsImported"], 50 + 17, "{done}");
    assert_eq!(count(&rest, "ns").await, 67);

    // A corrupt file under abort fails naming the file.
    let only_corrupt = root.path().join("corrupt");
    std::fs::create_dir_all(only_corrupt.join("ns")).unwrap();
    std::fs::copy(
        set.join("ns").join("2.parquet"),
        only_corrupt.join("ns").join("0.parquet"),
    )
    .unwrap();
    let id = start(&rest, json!({"uri": uri(&only_corrupt)})).await;
    let done = finished(&rest, &id).await;
    assert_eq!(done["status"], "Failed", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("0.parquet"),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_import_stops_and_says_cancelled() {
    let root = tempfile::tempdir().unwrap();
    let set = root.path().join("set");
    write(&set, "ns", "0.parquet", &records("a", 100));
    let (server, rest) = server(root.path()).await;
    let storage = server.storage_name("items");
    // Caught before its first batch, so the cancel cannot race the end.
    server.data_plane().imports().pause(&storage, true);
    let id = start(&rest, json!({"uri": uri(&set)})).await;
    let pending = rest
        .get(&format!("/bulk/imports/{id}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(pending["status"], "Pending", "{pending}");
    rest.delete(&format!("/bulk/imports/{id}"))
        .await
        .expect(StatusCode::OK);
    server.data_plane().imports().pause(&storage, false);
    let done = finished(&rest, &id).await;
    assert_eq!(done["status"], "Cancelled", "{done}");
    assert_eq!(done["recordsImported"], 0);
    assert_eq!(count(&rest, "ns").await, 0);
    // Cancelling again is a no-op; a completed import cannot be cancelled.
    rest.delete(&format!("/bulk/imports/{id}"))
        .await
        .expect(StatusCode::OK);
    let id = start(&rest, json!({"uri": uri(&set)})).await;
    assert_eq!(finished(&rest, &id).await["status"], "Completed");
    let refused = rest
        .delete(&format!("/bulk/imports/{id}"))
        .await
        .expect(StatusCode::PRECONDITION_FAILED);
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("already ended"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_import_resumes_from_the_last_recorded_batch() {
    let root = tempfile::tempdir().unwrap();
    let set = root.path().join("set");
    let data = records("r", 3000);
    let first = write(&set, "ns", "0.parquet", &data[..2000]);
    let second = write(&set, "ns", "1.parquet", &data[2000..]);
    let (server, rest) = server(root.path()).await;
    let storage = server.storage_name("items");

    // A job held before its first batch survives a restart and runs after it.
    server.data_plane().imports().pause(&storage, true);
    let id = start(&rest, json!({"uri": uri(&set)})).await;
    let server = server.restart().await;
    let host = rest_after(&server).await;
    let done = finished(&host, &id).await;
    assert_eq!(done["status"], "Completed", "{done}");
    assert_eq!(done["recordsImported"], 3000);

    // A job stopped mid-file (its state as a crash would leave it: 1,000 rows of the first
    // file in) resumes at row 1,000 of that file and counts on from there.
    let data_dir = server.data_dir().to_owned();
    let (dir, key) = server.stop_keeping_data().await;
    let state = ImportState {
        id: "2".into(),
        uri: uri(&set),
        error_mode: ErrorMode::Abort,
        status: Status::InProgress,
        created_at: "2026-01-01T00:00:00.000Z".into(),
        finished_at: None,
        records_imported: 1000,
        records_skipped: 0,
        rows_done: 1000,
        rows_total: 3000,
        error: None,
        namespaces: vec![larch_data_plane::import::job::NamespaceFiles {
            namespace: "resumed".into(),
            files: vec![first, second],
        }],
        next: (0, 0, 1000),
    };
    let file = data_dir.join("imports").join(&storage).join("2.json");
    std::fs::write(&file, serde_json::to_vec(&state).unwrap()).unwrap();
    let server = TestServer::restart_importing(dir, key, root.path()).await;
    let host = rest_after(&server).await;
    let done = finished(&host, "2").await;
    assert_eq!(done["status"], "Completed", "{done}");
    assert_eq!(done["recordsImported"], 3000, "{done}");
    // Only rows 1,000 on were read again.
    assert_eq!(count(&host, "resumed").await, 2000);
    // The finished state is what a later restart shows.
    let server = server.restart().await;
    let host = rest_after(&server).await;
    let listed = host.get("/bulk/imports").await.expect(StatusCode::OK);
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed["data"][1]["status"], "Completed");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_outside_the_root_or_without_one_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "ns", "0.parquet", &records("a", 5));
    let inside = root.path().join("in");
    write(&inside, "ns", "0.parquet", &records("a", 5));
    let (server, rest) = server(root.path()).await;

    let refused = |body: &Value| body["message"].as_str().unwrap().to_owned();
    let reply = rest
        .post("/bulk/imports", json!({"uri": uri(outside.path())}))
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(refused(&reply).contains("outside"), "{reply}");
    let outside_name = outside.path().file_name().unwrap().to_str().unwrap();
    let dotted = format!("{}/in/../../{outside_name}", uri(root.path()));
    let reply = rest
        .post("/bulk/imports", json!({"uri": dotted}))
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(refused(&reply).contains("outside"), "{reply}");
    let link = root.path().join("link");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    let reply = rest
        .post("/bulk/imports", json!({"uri": uri(&link)}))
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(refused(&reply).contains("outside"), "{reply}");
    // s3:// needs the operator's --import-allow-s3 (off here): 412 naming it.
    let reply = rest
        .post("/bulk/imports", json!({"uri": "s3://bucket/set"}))
        .await
        .expect(StatusCode::PRECONDITION_FAILED);
    assert!(refused(&reply).contains("--import-allow-s3"), "{reply}");
    let reply = rest
        .post("/bulk/imports", json!({"uri": "gs://bucket/set"}))
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(refused(&reply).contains("object storage"), "{reply}");
    let reply = rest
        .post(
            "/bulk/imports",
            json!({"uri": uri(&inside), "errorMode": {"onError": "explode"}}),
        )
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(refused(&reply).contains("onError"), "{reply}");

    // A viewer may list and describe, not start or cancel.
    let (viewer, _) = server
        .create_key(CreateApiKeyRequest {
            name: "viewer".into(),
            roles: vec!["DataPlaneViewer".into()],
            ..Default::default()
        })
        .await;
    let id = start(&rest, json!({"uri": uri(&inside)})).await;
    finished(&rest, &id).await;
    let host = rest.clone().key(&viewer);
    host.get("/bulk/imports").await.expect(StatusCode::OK);
    host.get(&format!("/bulk/imports/{id}"))
        .await
        .expect(StatusCode::OK);
    host.post("/bulk/imports", json!({"uri": uri(&inside)}))
        .await
        .expect(StatusCode::FORBIDDEN);
    host.delete(&format!("/bulk/imports/{id}"))
        .await
        .expect(StatusCode::FORBIDDEN);

    // Without --import-root, imports are refused naming the flag.
    let plain = TestServer::start().await;
    let (model, _) = plain.create_index("items", 4, "cosine").await;
    let rest = Rest::new(&model.host).key(&plain.key);
    let reply = rest
        .post("/bulk/imports", json!({"uri": uri(&inside)}))
        .await
        .expect(StatusCode::PRECONDITION_FAILED);
    assert!(refused(&reply).contains("--import-root"), "{reply}");
}
