//! API keys through the real binary: `larch keys …` / `larch projects …` against a running
//! `larch serve`, keys never in the log even at trace level, audit events for refusals and
//! changes, `LARCH_API_KEY_FILE`, and rotating the bootstrap key without losing data.

use larch_proto::control::CreateIndexRequest;
use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::pinecone::DescribeIndexStatsRequest;
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use serde_json::Value;
use tonic::Code;

use super::harness::*;

/// Runs an admin command that must succeed and parses its JSON.
fn admin(args: &[&str], env: &[(&str, &str)]) -> Value {
    let (code, stdout, stderr) = cli(args, env);
    assert_eq!(code, 0, "larch {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
}

async fn stats(host: &str, key: &str) -> Result<(), tonic::Status> {
    VectorServiceClient::new(connect(host).await)
        .describe_index_stats(with_key(DescribeIndexStatsRequest::default(), Some(key)))
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_administers_keys_and_no_key_is_ever_logged() {
    let data_dir = tempfile::tempdir().unwrap();
    let admin_key = larch_auth::ApiKey::generate().as_str().to_owned();
    let mut larch = Larch::serve(
        data_dir.path(),
        &[("LARCH_API_KEY", &admin_key), ("LARCH_LOG", "trace")],
    );
    let addr = larch.control_addr().to_string();
    wait_serving(&addr, "").await;
    let url = format!("http://{addr}");
    let env = [
        ("LARCH_ADDR", url.as_str()),
        ("LARCH_API_KEY", admin_key.as_str()),
    ];

    let model = IndexServiceClient::new(connect(&addr).await)
        .create_index(with_key(
            CreateIndexRequest {
                name: "logged".into(),
                dimension: Some(2),
                ..Default::default()
            },
            Some(&admin_key),
        ))
        .await
        .unwrap()
        .into_inner();
    wait_serving(&model.host, "").await;

    let project = admin(&["projects", "create", "team"], &env);
    assert_eq!(project["name"], "team");
    let listed = admin(&["projects", "list"], &env);
    assert_eq!(listed["projects"].as_array().unwrap().len(), 2);

    let created = admin(
        &[
            "keys",
            "create",
            "--name",
            "ci",
            "--role",
            "DataPlaneViewer",
            "--index",
            "logged",
        ],
        &env,
    );
    let secret = created["value"].as_str().unwrap().to_owned();
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(&format!("larch_{id}_")), "{created}");
    assert_eq!(
        created["key"]["roles"],
        serde_json::json!(["DataPlaneViewer"])
    );
    assert_eq!(created["key"]["index_names"], serde_json::json!(["logged"]));
    assert_eq!(created["key"]["project_id"], "default");
    stats(&model.host, &secret).await.unwrap();

    // Listing and describing never show a secret.
    let keys = admin(&["keys", "list"], &env);
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2, "{keys}");
    assert!(!keys.to_string().contains(&secret));
    let described = admin(&["keys", "describe", &id], &env);
    assert_eq!(described["name"], "ci");
    assert!(described.get("value").is_none());

    let updated = admin(
        &[
            "keys",
            "update",
            &id,
            "--name",
            "ci-2",
            "--role",
            "ControlPlaneViewer",
        ],
        &env,
    );
    assert_eq!(updated["name"], "ci-2");
    assert_eq!(
        stats(&model.host, &secret).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // A wrong secret under a real key id, and a revoked key.
    let wrong = format!("larch_{id}_{}", "0".repeat(64));
    assert_eq!(
        stats(&model.host, &wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    admin(&["keys", "revoke", &id], &env);
    assert_eq!(
        stats(&model.host, &secret).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // Without the admin key the CLI says what to do; with another key it is refused.
    let (code, _, stderr) = cli(&["keys", "list"], &[("LARCH_ADDR", url.as_str())]);
    assert_eq!(code, 1);
    assert!(stderr.contains("LARCH_API_KEY"), "{stderr}");
    let (code, _, stderr) = cli(
        &["keys", "list"],
        &[("LARCH_ADDR", url.as_str()), ("LARCH_API_KEY", "wrong")],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("Unauthenticated"), "{stderr}");

    larch.terminate();
    let log = format!("{}{}", larch.stdout(), larch.stderr());
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log ran at trace level"
    );
    let admin_secret = admin_key.rsplit('_').next().unwrap();
    for (what, text) in [
        ("admin key", admin_key.as_str()),
        ("admin secret", admin_secret),
        ("created key", secret.as_str()),
        ("created secret", secret.rsplit('_').next().unwrap()),
        ("wrong secret", wrong.rsplit('_').next().unwrap()),
    ] {
        assert!(!log.contains(text), "the {what} appears in the log");
    }
    // Audit events: the key's creation, its refusal, its revocation.
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("audit")).collect();
    let about = |needle: &str| audit.iter().any(|l| l.contains(&id) && l.contains(needle));
    assert!(about("CreateApiKey"), "{audit:#?}");
    assert!(about("PERMISSION_DENIED"), "{audit:#?}");
    assert!(about("RevokeApiKey"), "{audit:#?}");
    // Key changes run on blocking threads, still inside the request's span.
    assert!(
        audit
            .iter()
            .any(|l| l.contains("CreateApiKey") && l.contains("request_id")),
        "audit events carry the request id: {audit:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_key_comes_from_a_file_and_rotates_without_losing_data() {
    let data_dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("api-key");
    std::fs::write(&file, "first-admin-key\n").unwrap();
    let file_env = file.to_str().unwrap();

    let mut larch = Larch::serve(data_dir.path(), &[("LARCH_API_KEY_FILE", file_env)]);
    let addr = larch.control_addr().to_string();
    wait_serving(&addr, "").await;
    assert!(
        !larch.stderr().contains(GENERATED),
        "no key is generated when one is configured"
    );
    IndexServiceClient::new(connect(&addr).await)
        .create_index(with_key(
            CreateIndexRequest {
                name: "kept".into(),
                dimension: Some(2),
                ..Default::default()
            },
            Some("first-admin-key"),
        ))
        .await
        .unwrap();
    assert!(larch.terminate().success());

    // Rotate: a new key in the file; the old one stops working, the data stays.
    std::fs::write(&file, "second-admin-key").unwrap();
    let mut larch = Larch::serve(data_dir.path(), &[("LARCH_API_KEY_FILE", file_env)]);
    let addr = larch.control_addr().to_string();
    wait_serving(&addr, "").await;
    assert_eq!(
        list_indexes(&addr, Some("first-admin-key"))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        list_indexes(&addr, Some("second-admin-key")).await.unwrap(),
        ["kept"]
    );
    assert!(larch.terminate().success());

    // Both variables at once is a configuration error.
    let (code, _, stderr) = cli(
        &["serve", "--data-dir", data_dir.path().to_str().unwrap()],
        &[("LARCH_API_KEY", "x"), ("LARCH_API_KEY_FILE", file_env)],
    );
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("not both"), "{stderr}");
}
