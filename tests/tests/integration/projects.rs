//! Projects and API keys beyond the matrix: indexes of one project are invisible to another
//! (same names, separate data), allow-lists shape listings, role changes and revocations apply
//! to the very next request on an open connection, rate limits answer RESOURCE_EXHAUSTED with
//! a retry pushback, REST enforces the same rules, and the admin API refuses bad requests with
//! statuses a person can act on.

use std::time::Duration;

use http::StatusCode;
use larch_proto::control::{
    CreateApiKeyRequest, CreateProjectRequest, DeleteIndexRequest, DeleteProjectRequest,
    DescribeApiKeyRequest, DescribeIndexRequest, ListApiKeysRequest, ListIndexesRequest,
    RevokeApiKeyRequest, UpdateApiKeyRequest,
};
use larch_proto::pinecone::{
    DescribeIndexStatsRequest, FetchRequest, QueryRequest, UpsertRequest, Vector,
};
use larch_tests::{TestServer, wait_serving};
use serde_json::json;
use tonic::Code;

use crate::rest_client::Rest;

fn key_request(name: &str, roles: &[&str]) -> CreateApiKeyRequest {
    CreateApiKeyRequest {
        name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    }
}

fn vector(id: &str, x: f32) -> Vector {
    Vector {
        id: id.into(),
        values: vec![x, 1.0],
        ..Default::default()
    }
}

async fn new_project(server: &TestServer, name: &str) -> String {
    server
        .projects()
        .await
        .create_project(CreateProjectRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .id
}

#[tokio::test]
async fn projects_have_their_own_indexes_under_the_same_names() {
    let server = TestServer::start().await;
    let team = new_project(&server, "team").await;
    let (team_key, _) = server
        .create_key(CreateApiKeyRequest {
            project_id: team.clone(),
            ..key_request("team", &[])
        })
        .await;

    let (default_model, mut default_data) = server.create_index("movies", 2, "euclidean").await;
    default_data
        .upsert(UpsertRequest {
            vectors: vec![vector("default-only", 0.1)],
            namespace: String::new(),
        })
        .await
        .unwrap();

    // The team key cannot see the default project's "movies"...
    let mut team_control = server.control_with_key(Some(&team_key)).await;
    assert!(
        team_control
            .list_indexes(ListIndexesRequest {})
            .await
            .unwrap()
            .into_inner()
            .indexes
            .is_empty()
    );
    let err = team_control
        .describe_index(DescribeIndexRequest {
            name: "movies".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "index 'movies' not found");
    let mut intruder = server
        .data_with_key(&default_model.host, Some(&team_key))
        .await;
    let err = intruder
        .fetch(FetchRequest {
            ids: vec!["default-only".into()],
            namespace: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "index 'movies' not found")
    );

    // ...and creates its own, with its own data and host.
    let team_model = team_control
        .create_index(larch_proto::control::CreateIndexRequest {
            name: "movies".into(),
            dimension: Some(2),
            metric: Some("euclidean".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(team_model.host, default_model.host);
    wait_serving(&team_model.host).await;
    let mut team_data = server
        .data_with_key(&team_model.host, Some(&team_key))
        .await;
    team_data
        .upsert(UpsertRequest {
            vectors: vec![vector("team-only", 0.2)],
            namespace: String::new(),
        })
        .await
        .unwrap();
    let fetched = team_data
        .fetch(FetchRequest {
            ids: vec!["default-only".into(), "team-only".into()],
            namespace: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.vectors.keys().collect::<Vec<_>>(), ["team-only"]);
    let stats = default_data
        .describe_index_stats(DescribeIndexStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stats.total_vector_count, 1,
        "the default project's movies is untouched"
    );
    // The admin key works in the default project and does not reach the team's index either.
    let mut admin_on_team = server.data(&team_model.host).await;
    assert_eq!(
        admin_on_team
            .describe_index_stats(DescribeIndexStatsRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // A project with an index cannot be deleted; without it, it can, and its keys die with it.
    let err = server
        .projects()
        .await
        .delete_project(DeleteProjectRequest { id: team.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("still has 1 index"),
        "{}",
        err.message()
    );
    team_control
        .delete_index(DeleteIndexRequest {
            name: "movies".into(),
        })
        .await
        .unwrap();
    server
        .projects()
        .await
        .delete_project(DeleteProjectRequest { id: team })
        .await
        .unwrap();
    assert_eq!(
        team_control
            .list_indexes(ListIndexesRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    // The default project's index survived all of it.
    server
        .control()
        .await
        .describe_index(DescribeIndexRequest {
            name: "movies".into(),
        })
        .await
        .unwrap();

    // Restart: projects, keys and both indexes' separation persist.
    let server = server.restart().await;
    assert_eq!(
        server
            .control()
            .await
            .list_indexes(ListIndexesRequest {})
            .await
            .unwrap()
            .into_inner()
            .indexes
            .len(),
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn allow_lists_shape_listings_and_changes_apply_to_the_next_request() {
    let server = TestServer::start().await;
    let (model_a, _) = server.create_index("idx-a", 2, "euclidean").await;
    server.create_index("idx-b", 2, "euclidean").await;
    let (key, id) = server
        .create_key(CreateApiKeyRequest {
            index_names: vec!["idx-b".into()],
            ..key_request("scoped", &["ProjectViewer"])
        })
        .await;

    let mut control = server.control_with_key(Some(&key)).await;
    let names = |list: larch_proto::control::ListIndexesResponse| -> Vec<String> {
        list.indexes.into_iter().map(|i| i.name).collect()
    };
    assert_eq!(
        names(
            control
                .list_indexes(ListIndexesRequest {})
                .await
                .unwrap()
                .into_inner()
        ),
        ["idx-b"]
    );
    // One open data-plane connection, used before and after each change.
    let mut data = server.data_with_key(&model_a.host, Some(&key)).await;
    let query = || QueryRequest {
        vector: vec![0.0, 1.0],
        top_k: 1,
        ..Default::default()
    };
    let err = data.query(query()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("restricted to other indexes"),
        "{}",
        err.message()
    );

    let mut admin = server.api_keys().await;
    admin
        .update_api_key(UpdateApiKeyRequest {
            id: id.clone(),
            all_indexes: true,
            ..Default::default()
        })
        .await
        .unwrap();
    data.query(query()).await.unwrap();
    assert_eq!(
        names(
            control
                .list_indexes(ListIndexesRequest {})
                .await
                .unwrap()
                .into_inner()
        ),
        ["idx-a", "idx-b"]
    );
    let err = data
        .upsert(UpsertRequest {
            vectors: vec![vector("x", 0.1)],
            namespace: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("DataPlaneEditor"),
        "names the roles that would do: {}",
        err.message()
    );

    admin
        .update_api_key(UpdateApiKeyRequest {
            id: id.clone(),
            roles: vec!["DataPlaneEditor".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    data.upsert(UpsertRequest {
        vectors: vec![vector("x", 0.1)],
        namespace: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(
        control
            .list_indexes(ListIndexesRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    admin
        .revoke_api_key(RevokeApiKeyRequest { id: id.clone() })
        .await
        .unwrap();
    assert_eq!(
        data.query(query()).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        admin
            .describe_api_key(DescribeApiKeyRequest { id })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    server.stop().await;
}

#[tokio::test]
async fn the_admin_api_refuses_bad_requests_clearly() {
    let server = TestServer::start().await;
    let mut keys = server.api_keys().await;
    let cases = [
        (key_request("", &[]), Code::InvalidArgument, "name"),
        (
            key_request("x", &["Owner"]),
            Code::InvalidArgument,
            "unknown role 'Owner'",
        ),
        (
            CreateApiKeyRequest {
                project_id: "nope".into(),
                ..key_request("x", &[])
            },
            Code::NotFound,
            "project 'nope' not found",
        ),
        (
            CreateApiKeyRequest {
                expires_at: "2001-01-01T00:00:00Z".into(),
                ..key_request("x", &[])
            },
            Code::InvalidArgument,
            "expires_at",
        ),
        (
            CreateApiKeyRequest {
                index_names: vec!["UPPER".into()],
                ..key_request("x", &[])
            },
            Code::InvalidArgument,
            "index_names",
        ),
    ];
    for (request, code, text) in cases {
        let err = keys.create_api_key(request).await.unwrap_err();
        assert_eq!(err.code(), code, "{}", err.message());
        assert!(
            err.message().contains(text),
            "{} lacks {text}",
            err.message()
        );
    }
    let listed = keys
        .list_api_keys(ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(
        listed.len(),
        1,
        "only the bootstrap key: nothing was created"
    );
    assert!(listed[0].admin);
    let err = keys
        .revoke_api_key(RevokeApiKeyRequest {
            id: listed[0].id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("LARCH_API_KEY"), "{}", err.message());

    let mut projects = server.projects().await;
    projects
        .create_project(CreateProjectRequest { name: "dup".into() })
        .await
        .unwrap();
    let err = projects
        .create_project(CreateProjectRequest { name: "dup".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = projects
        .delete_project(DeleteProjectRequest {
            id: "default".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    server.stop().await;
}

#[tokio::test]
async fn rate_limited_keys_get_resource_exhausted_with_a_retry_pushback() {
    let server = TestServer::start_with(|keys| {
        keys.limit_rate(larch_auth::RateLimit {
            per_second: 1,
            burst: 3,
        });
    })
    .await;
    let (model, _) = server.create_index("limited", 2, "euclidean").await;
    let (key, _) = server
        .create_key(key_request("busy", &["DataPlaneViewer"]))
        .await;
    let (other, _) = server
        .create_key(key_request("calm", &["DataPlaneViewer"]))
        .await;
    let mut data = server.data_with_key(&model.host, Some(&key)).await;
    let stats = || DescribeIndexStatsRequest::default();
    let mut refused = None;
    for _ in 0..10 {
        if let Err(status) = data.describe_index_stats(stats()).await {
            refused = Some(status);
            break;
        }
    }
    let status = refused.expect("a burst of 3 at 1/s runs out within 10 calls");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("1 requests per second"),
        "{}",
        status.message()
    );
    let pushback: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("pushback")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pushback > 0 && pushback <= 1000, "{pushback}");
    // Another key is not affected; REST shares the budget and says when to retry.
    server
        .data_with_key(&model.host, Some(&other))
        .await
        .describe_index_stats(stats())
        .await
        .unwrap();
    let reply = Rest::new(&model.host)
        .key(&key)
        .get("/describe_index_stats")
        .await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.body
    );
    assert_eq!(reply.headers.get("retry-after").unwrap(), "1");
    // After the pushback the key is served again.
    tokio::time::sleep(Duration::from_millis(pushback + 50)).await;
    data.describe_index_stats(stats()).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn rest_enforces_the_same_rules() {
    let server = TestServer::start().await;
    let (model, _) = server.create_index("rest-a", 2, "euclidean").await;
    let other_project = new_project(&server, "elsewhere").await;
    let (viewer, _) = server
        .create_key(key_request("viewer", &["DataPlaneViewer"]))
        .await;
    let (foreign, _) = server
        .create_key(CreateApiKeyRequest {
            project_id: other_project,
            ..key_request("f", &[])
        })
        .await;
    let upsert = json!({"vectors": [{"id": "r1", "values": [0.1, 1.0]}]});

    let data = Rest::new(&model.host);
    data.post("/vectors/upsert", upsert.clone())
        .await
        .expect(StatusCode::UNAUTHORIZED);
    let body = data
        .clone()
        .key(&viewer)
        .post("/vectors/upsert", upsert.clone())
        .await
        .expect(StatusCode::FORBIDDEN);
    assert!(body.to_string().contains("DataPlaneEditor"), "{body}");
    data.clone()
        .key(&viewer)
        .post("/query", json!({"vector": [0.0, 1.0], "topK": 1}))
        .await
        .expect(StatusCode::OK);
    data.clone()
        .key(&foreign)
        .get("/describe_index_stats")
        .await
        .expect(StatusCode::NOT_FOUND);

    let control = Rest::new(&server.control_addr.to_string());
    control
        .clone()
        .key(&viewer)
        .get("/indexes")
        .await
        .expect(StatusCode::FORBIDDEN);
    let listed = control
        .clone()
        .key(&foreign)
        .get("/indexes")
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        listed["indexes"],
        json!([]),
        "another project's index is not listed"
    );
    control
        .clone()
        .key(&foreign)
        .get("/indexes/rest-a")
        .await
        .expect(StatusCode::NOT_FOUND);
    control
        .clone()
        .key(&foreign)
        .delete("/indexes/rest-a")
        .await
        .expect(StatusCode::NOT_FOUND);
    // Nothing was written or deleted.
    control
        .clone()
        .key(&server.key)
        .get("/indexes/rest-a")
        .await
        .expect(StatusCode::OK);
    let stats = data
        .clone()
        .key(&server.key)
        .get("/describe_index_stats")
        .await
        .expect(StatusCode::OK);
    assert_eq!(stats["totalVectorCount"], json!(0));
    server.stop().await;
}

#[tokio::test]
async fn a_guessing_peer_is_slowed_down_while_valid_keys_are_answered_at_once() {
    let server = TestServer::start().await;
    let (model, _) = server.create_index("guarded", 2, "euclidean").await;
    let mut guesser = server.data_with_key(&model.host, Some("guess")).await;
    // Enough failures that the next refusal is held for seconds.
    for _ in 0..12 {
        let status = guesser
            .describe_index_stats(DescribeIndexStatsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let held = tokio::spawn(async move {
        guesser
            .describe_index_stats(DescribeIndexStatsRequest::default())
            .await
    });
    // A valid key from the same address is served while that refusal is still held back.
    let mut valid = server.data(&model.host).await;
    valid
        .describe_index_stats(DescribeIndexStatsRequest::default())
        .await
        .unwrap();
    assert!(
        !held.is_finished(),
        "the guess was answered before the valid request"
    );
    assert_eq!(
        held.await.unwrap().unwrap_err().code(),
        Code::Unauthenticated
    );
    server.stop().await;
}
