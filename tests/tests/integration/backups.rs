//! Backups and restore (issue 18, item 3) through the real servers: Pinecone's REST routes
//! (`/indexes/{name}/backups`, `/backups…`, `/restore-jobs…`) and their gRPC twin
//! `larch.control.v1.BackupService`; a restore holds exactly the backed-up records, backups
//! survive a restart and their index's deletion, and belong to one project.

use std::sync::Arc;

use http::StatusCode;
use larch_proto::control::backup_service_client::BackupServiceClient;
use larch_proto::control::{
    CreateApiKeyRequest, CreateBackupRequest, CreateIndexFromBackupRequest, CreateProjectRequest,
    DeleteBackupRequest, DescribeBackupRequest, DescribeIndexRequest, DescribeRestoreJobRequest,
    ListBackupsRequest, ListRestoreJobsRequest,
};
use larch_proto::pinecone::{ListRequest, UpsertRequest, Vector};
use larch_tests::{DataClient, KeyInterceptor, TestServer, connect, wait_serving};
use serde_json::{Value, json};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::rest_client::Rest;
use crate::split_pods::{attach, blocking, config, key, planes, pod};

type BackupClient = BackupServiceClient<InterceptedService<Channel, KeyInterceptor>>;

fn control(server: &TestServer) -> Rest {
    Rest::new(&server.control_addr.to_string()).key(&server.key)
}

async fn backups_client(server: &TestServer, key: &str) -> BackupClient {
    let channel = connect(&server.control_addr.to_string()).await;
    BackupServiceClient::with_interceptor(channel, KeyInterceptor::new(Some(key)))
}

async fn upsert(data: &mut DataClient, namespace: &str, ids: &[&str]) {
    let vectors = ids
        .iter()
        .map(|id| Vector {
            id: (*id).into(),
            values: vec![id.len() as f32, 1.0],
            ..Default::default()
        })
        .collect();
    data.upsert(UpsertRequest {
        vectors,
        namespace: namespace.into(),
    })
    .await
    .unwrap();
}

/// Every id of `namespace`, sorted.
async fn ids(data: &mut DataClient, namespace: &str) -> Vec<String> {
    let listed = data
        .list(ListRequest {
            namespace: namespace.into(),
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<String> = listed.vectors.into_iter().map(|item| item.id).collect();
    ids.sort();
    ids
}

/// A data client for index `name` (default project), once it serves.
async fn data_of(server: &TestServer, name: &str) -> DataClient {
    let model = server
        .control()
        .await
        .describe_index(DescribeIndexRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner();
    wait_serving(&model.host).await;
    server.data(&model.host).await
}

#[track_caller]
fn assert_error(body: &Value, code: &str, part: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(part), "{message:?} lacks {part:?}");
}

#[tokio::test]
async fn rest_back_up_write_more_restore_gives_exactly_the_backed_up_records() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("movies", 2, "euclidean").await;
    upsert(&mut data, "", &["a", "b"]).await;
    upsert(&mut data, "films", &["c"]).await;
    let rest = control(&server).version("2025-10");

    let backup = rest
        .post(
            "/indexes/movies/backups",
            json!({"name": "nightly", "description": "before the import"}),
        )
        .await
        .expect(StatusCode::CREATED);
    let id = backup["backup_id"].as_str().unwrap().to_owned();
    let created_at = backup["created_at"].as_str().unwrap().to_owned();
    let source_id = backup["source_index_id"].as_str().unwrap().to_owned();
    assert_eq!(
        backup,
        json!({"backup_id": id, "source_index_name": "movies", "source_index_id": source_id,
            "name": "nightly", "description": "before the import", "status": "Ready",
            "cloud": "aws", "region": "us-east-1", "dimension": 2, "metric": "euclidean",
            "vector_type": "dense", "record_count": 3, "namespace_count": 2,
            "size_bytes": backup["size_bytes"], "tags": {}, "created_at": created_at})
    );
    assert!(backup["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        rest.get(&format!("/backups/{id}"))
            .await
            .expect(StatusCode::OK),
        backup
    );
    // The 2026-07 shape carries a schema instead of dimension and metric.
    let schema = control(&server)
        .version("2026-07")
        .get(&format!("/backups/{id}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        schema["schema"]["fields"]["_values"],
        json!({"type": "dense_vector", "dimension": 2, "metric": "euclidean"})
    );
    assert!(schema.get("dimension").is_none(), "{schema}");

    // Written after the backup: not restored.
    upsert(&mut data, "", &["late"]).await;

    let restored = rest
        .post(
            &format!("/backups/{id}/create-index"),
            json!({"name": "movies-copy", "tags": {"from": "nightly"}}),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    let job_id = restored["restore_job_id"].as_str().unwrap().to_owned();
    let index_id = restored["index_id"].as_str().unwrap().to_owned();
    let job = rest
        .get(&format!("/restore-jobs/{job_id}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(job["status"], "Completed", "{job}");
    assert_eq!(job["percent_complete"], 100.0);
    assert_eq!(job["backup_id"], id.as_str());
    assert_eq!(job["target_index_name"], "movies-copy");
    assert_eq!(job["target_index_id"], index_id.as_str());
    assert!(job["completed_at"].is_string(), "{job}");
    assert_eq!(
        rest.get("/restore-jobs").await.expect(StatusCode::OK),
        json!({"data": [job]})
    );

    let model = rest
        .get("/indexes/movies-copy")
        .await
        .expect(StatusCode::OK);
    assert_eq!(model["status"]["ready"], true);
    assert_eq!(model["tags"], json!({"from": "nightly"}));
    assert_eq!(
        (model["dimension"].as_u64(), model["metric"].as_str()),
        (Some(2), Some("euclidean"))
    );
    let mut copy = data_of(&server, "movies-copy").await;
    assert_eq!(ids(&mut copy, "").await, ["a", "b"]);
    assert_eq!(ids(&mut copy, "films").await, ["c"]);
    assert_eq!(ids(&mut data, "").await, ["a", "b", "late"]);

    // Listings, in pages.
    let second = rest
        .post("/indexes/movies/backups", json!({}))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(second["record_count"], 4);
    assert!(second.get("name").is_none_or(Value::is_null), "{second}");
    let first_page = rest
        .get("/indexes/movies/backups?limit=1")
        .await
        .expect(StatusCode::OK);
    assert_eq!(first_page["data"][0]["backup_id"], id.as_str());
    let next = first_page["pagination"]["next"].as_str().unwrap();
    let last_page = rest
        .get(&format!("/indexes/movies/backups?paginationToken={next}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(last_page, json!({"data": [second]}));
    let all = rest.get("/backups").await.expect(StatusCode::OK);
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        rest.get("/indexes/movies-copy/backups")
            .await
            .expect(StatusCode::OK),
        json!({"data": []})
    );

    // Deleted: 202, then gone; the restored index is untouched.
    assert_eq!(
        rest.delete(&format!("/backups/{id}")).await.status,
        StatusCode::ACCEPTED
    );
    let gone = rest
        .get(&format!("/backups/{id}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    assert_error(&gone, "NOT_FOUND", &format!("backup '{id}' not found"));
    assert_eq!(ids(&mut copy, "").await, ["a", "b"]);
}

#[tokio::test]
async fn backups_survive_a_restart_and_the_deletion_of_their_index() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("docs", 2, "cosine").await;
    upsert(&mut data, "ns", &["x", "y", "z"]).await;
    let rest = control(&server);
    let backup = rest
        .post("/indexes/docs/backups", json!({"name": "keep"}))
        .await
        .expect(StatusCode::CREATED);
    let id = backup["backup_id"].as_str().unwrap().to_owned();
    drop(data);
    assert_eq!(
        rest.delete("/indexes/docs").await.status,
        StatusCode::ACCEPTED
    );

    let server = server.restart().await;
    let rest = control(&server);
    let kept = rest
        .get(&format!("/backups/{id}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (kept["name"].as_str(), kept["record_count"].as_u64()),
        (Some("keep"), Some(3))
    );
    assert!(kept["source_index_deleted_at"].is_string(), "{kept}");
    // The index is gone: its own listing needs include_deleted.
    let refused = rest
        .get("/indexes/docs/backups")
        .await
        .expect(StatusCode::NOT_FOUND);
    assert_error(&refused, "NOT_FOUND", "index 'docs' not found");
    let deleted = rest
        .get("/indexes/docs/backups?include_deleted=true")
        .await
        .expect(StatusCode::OK);
    assert_eq!(deleted["data"][0]["backup_id"], id.as_str());

    // Restored under the old name, after a restart.
    rest.post(
        &format!("/backups/{id}/create-index"),
        json!({"name": "docs"}),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    let server = server.restart().await;
    let mut restored = data_of(&server, "docs").await;
    assert_eq!(ids(&mut restored, "ns").await, ["x", "y", "z"]);
    let jobs = control(&server)
        .get("/restore-jobs")
        .await
        .expect(StatusCode::OK);
    assert_eq!(jobs["data"][0]["status"], "Completed");
}

#[tokio::test]
async fn refusals_have_pinecones_codes() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("taken", 2, "cosine").await;
    upsert(&mut data, "", &["a"]).await;
    let rest = control(&server);
    let id = rest
        .post("/indexes/taken/backups", json!({}))
        .await
        .expect(StatusCode::CREATED)["backup_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let unknown_index = rest
        .post("/indexes/nope/backups", json!({}))
        .await
        .expect(StatusCode::NOT_FOUND);
    assert_error(&unknown_index, "NOT_FOUND", "index 'nope' not found");
    for path in ["/backups/nope", "/backups/nope/create-index"] {
        let reply = if path.ends_with("create-index") {
            rest.post(path, json!({"name": "x"})).await
        } else {
            rest.get(path).await
        };
        assert_error(
            &reply.expect(StatusCode::NOT_FOUND),
            "NOT_FOUND",
            "backup 'nope' not found",
        );
    }
    let taken = rest
        .post(
            &format!("/backups/{id}/create-index"),
            json!({"name": "taken"}),
        )
        .await
        .expect(StatusCode::CONFLICT);
    assert_error(&taken, "ALREADY_EXISTS", "index 'taken' already exists");
    let bad_name = rest
        .post(
            &format!("/backups/{id}/create-index"),
            json!({"name": "Not_Valid"}),
        )
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_error(&bad_name, "INVALID_ARGUMENT", "name");
    let bad_protection = rest
        .post(
            &format!("/backups/{id}/create-index"),
            json!({"name": "ok", "deletion_protection": "maybe"}),
        )
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_error(&bad_protection, "INVALID_ARGUMENT", "deletion_protection");
    let bad_limit = rest
        .get("/backups?limit=0")
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_error(&bad_limit, "INVALID_ARGUMENT", "limit: 0 is out of range");
    let no_job = rest
        .get("/restore-jobs/nope")
        .await
        .expect(StatusCode::NOT_FOUND);
    assert_error(&no_job, "NOT_FOUND", "restore job 'nope' not found");
    // No failed restore left a job or an index behind.
    assert_eq!(
        rest.get("/restore-jobs").await.expect(StatusCode::OK),
        json!({"data": []})
    );
    assert_eq!(
        rest.get("/indexes").await.expect(StatusCode::OK)["indexes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn backups_belong_to_their_project_and_follow_the_index_roles() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("private", 2, "cosine").await;
    upsert(&mut data, "", &["a"]).await;
    let id = control(&server)
        .post("/indexes/private/backups", json!({}))
        .await
        .expect(StatusCode::CREATED)["backup_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let other = server
        .projects()
        .await
        .create_project(CreateProjectRequest {
            name: "other".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let (foreign, _) = server
        .create_key(CreateApiKeyRequest {
            name: "foreign".into(),
            project_id: other,
            ..Default::default()
        })
        .await;
    let theirs = Rest::new(&server.control_addr.to_string()).key(&foreign);
    assert_error(
        &theirs
            .get(&format!("/backups/{id}"))
            .await
            .expect(StatusCode::NOT_FOUND),
        "NOT_FOUND",
        "not found",
    );
    assert_eq!(
        theirs.get("/backups").await.expect(StatusCode::OK),
        json!({"data": []})
    );
    theirs
        .post(
            &format!("/backups/{id}/create-index"),
            json!({"name": "stolen"}),
        )
        .await
        .expect(StatusCode::NOT_FOUND);
    theirs
        .delete(&format!("/backups/{id}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    let mut grpc = backups_client(&server, &foreign).await;
    let err = grpc
        .describe_backup(DescribeBackupRequest {
            backup_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // A viewer reads backups but takes none.
    let (viewer, _) = server
        .create_key(CreateApiKeyRequest {
            name: "viewer".into(),
            roles: vec!["ControlPlaneViewer".into()],
            ..Default::default()
        })
        .await;
    let viewing = Rest::new(&server.control_addr.to_string()).key(&viewer);
    viewing
        .get(&format!("/backups/{id}"))
        .await
        .expect(StatusCode::OK);
    assert_error(
        &viewing
            .post("/indexes/private/backups", json!({}))
            .await
            .expect(StatusCode::FORBIDDEN),
        "PERMISSION_DENIED",
        "",
    );
    let mut grpc = backups_client(&server, &viewer).await;
    let err = grpc
        .create_backup(CreateBackupRequest {
            index_name: "private".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // The backup is still the owner's.
    control(&server)
        .get(&format!("/backups/{id}"))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn the_grpc_twin_backs_up_lists_restores_and_deletes() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("grpc", 2, "dotproduct").await;
    upsert(&mut data, "", &["one", "two"]).await;
    let mut backups = backups_client(&server, &server.key).await;

    let backup = backups
        .create_backup(CreateBackupRequest {
            index_name: "grpc".into(),
            name: Some("first".into()),
            description: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            backup.status.as_str(),
            backup.record_count,
            backup.dimension,
            backup.metric.as_str()
        ),
        ("Ready", 2, 2, "dotproduct")
    );
    upsert(&mut data, "", &["three"]).await;
    let listed = backups
        .list_backups(ListBackupsRequest {
            index_name: "grpc".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.data, std::slice::from_ref(&backup));
    assert!(listed.next_pagination_token.is_empty());

    let restored = backups
        .create_index_from_backup(CreateIndexFromBackupRequest {
            backup_id: backup.backup_id.clone(),
            name: "grpc-copy".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let job = backups
        .describe_restore_job(DescribeRestoreJobRequest {
            job_id: restored.restore_job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            job.status.as_str(),
            job.percent_complete,
            job.target_index_id.as_str()
        ),
        ("Completed", 100.0, restored.index_id.as_str())
    );
    let jobs = backups
        .list_restore_jobs(ListRestoreJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jobs.data, [job]);
    let mut copy = data_of(&server, "grpc-copy").await;
    assert_eq!(ids(&mut copy, "").await, ["one", "two"]);

    let again = backups
        .create_index_from_backup(CreateIndexFromBackupRequest {
            backup_id: backup.backup_id.clone(),
            name: "grpc-copy".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    let missing = backups
        .create_backup(CreateBackupRequest {
            index_name: "missing".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let invalid = backups
        .list_backups(ListBackupsRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");

    backups
        .delete_backup(DeleteBackupRequest {
            backup_id: backup.backup_id.clone(),
        })
        .await
        .unwrap();
    let gone = backups
        .describe_backup(DescribeBackupRequest {
            backup_id: backup.backup_id,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
}

/// Split mode: the control plane's handle on a data-plane pod in another server backs up,
/// restores and deletes through `larch.internal.v1.DataPlaneControl`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_mode_backs_up_and_restores_through_the_internal_api() {
    use larch_catalog::{AttachMode, DataPlaneHost};
    use larch_engine::{ErrorCode, FetchRequest, VectorInput};
    use larch_model::Classified;

    let admin = larch_auth::ApiKey::generate();
    let one = pod("one", Some(&admin)).await;
    let planes = planes(&admin, &[format!("one={}", one.url)]);
    let source = key("films");
    attach(&planes, &source, AttachMode::Create).await.unwrap();
    let index = one.plane.engine().index(&source.storage_name()).unwrap();
    let upsert = |ids: &[&str]| {
        let vectors = ids
            .iter()
            .map(|id| VectorInput {
                id: (*id).into(),
                values: vec![1.0, 0.0, 0.0, 0.0],
                ..Default::default()
            })
            .collect();
        index
            .upsert(larch_engine::UpsertRequest {
                namespace: String::new(),
                vectors,
            })
            .unwrap();
    };
    upsert(&["a", "b"]);

    let (p, s) = (Arc::clone(&planes), source.clone());
    let info = blocking(move || p.backup(&s, "bk-split")).await.unwrap();
    assert_eq!((info.record_count, info.config), (2, config()));
    upsert(&["late"]);

    let target = larch_model::IndexKey::parse("default", "copy", "0123abcd").unwrap();
    let (p, t) = (Arc::clone(&planes), target.clone());
    let restored = blocking(move || p.restore("bk-split", &t)).await.unwrap();
    assert_eq!(restored.record_count, 2);
    attach(&planes, &target, AttachMode::Recover).await.unwrap();
    let copy = one.plane.engine().index(&target.storage_name()).unwrap();
    let fetched = copy
        .fetch(FetchRequest {
            namespace: String::new(),
            ids: vec!["a".into(), "b".into(), "late".into()],
        })
        .unwrap();
    let mut ids: Vec<&String> = fetched.vectors.iter().map(|record| &record.id).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);

    // Refusals keep their class; deleting twice is fine.
    let (p, s) = (Arc::clone(&planes), source.clone());
    let taken = blocking(move || p.backup(&s, "bk-split"))
        .await
        .unwrap_err();
    assert!(
        matches!(&taken, larch_catalog::HostError::Refused(cause) if cause.code() == larch_model::Code::AlreadyExists),
        "{taken:?}"
    );
    for _ in 0..2 {
        let p = Arc::clone(&planes);
        blocking(move || p.delete_backup("bk-split")).await.unwrap();
    }
    assert_eq!(
        one.plane
            .engine()
            .backup_info("bk-split")
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
}
