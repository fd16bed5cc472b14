//! `larch serve`: the bootstrap key printed once, the control plane found through its log
//! line, gRPC health and index creation with that key, a clean exit on SIGTERM, restarts on
//! the same data directory, `LARCH_API_KEY`, and exit code 64 for bad configuration.

use larch_proto::control::CreateIndexRequest;
use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{DescribeIndexStatsRequest, UpsertRequest, Vector};
use tonic::Code;

use super::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_prints_a_key_that_works_and_survives_a_restart() {
    let data_dir = tempfile::tempdir().unwrap();

    let mut larch = Larch::serve(data_dir.path(), &[]);
    let addr = larch.control_addr().to_string();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );
    wait_serving(&addr, "").await;
    wait_serving(&addr, "larch.control.v1.IndexService").await;

    // The key is printed before the control plane listens, so it is there by now.
    let key = printed_key(&larch.stderr());

    let status = list_indexes(&addr, None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    let mut control = IndexServiceClient::new(connect(&addr).await);
    let model = control
        .create_index(with_key(
            CreateIndexRequest {
                name: "served".into(),
                dimension: Some(3),
                ..Default::default()
            },
            Some(&key),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(model.name, "served");
    assert_eq!(model.dimension, Some(3));
    assert!(
        model.host.starts_with("127.0.0.1:") && model.host != addr,
        "{}",
        model.host
    );
    assert_eq!(list_indexes(&addr, Some(&key)).await.unwrap(), ["served"]);

    // The index's own port serves its data plane with the same key.
    wait_serving(&model.host, "VectorService").await;
    let mut data = VectorServiceClient::new(connect(&model.host).await);
    let upserted = data
        .upsert(with_key(
            UpsertRequest {
                vectors: vec![Vector {
                    id: "a".into(),
                    values: vec![1.0, 0.0, 0.0],
                    ..Default::default()
                }],
                namespace: String::new(),
            },
            Some(&key),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upserted.upserted_count, 1);
    let stats = data
        .describe_index_stats(with_key(
            DescribeIndexStatsRequest { filter: None },
            Some(&key),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.dimension, stats.total_vector_count), (Some(3), 1));
    let status = data
        .describe_index_stats(with_key(DescribeIndexStatsRequest { filter: None }, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let exit = larch.terminate();
    assert_eq!(
        exit.code(),
        Some(0),
        "SIGTERM exits cleanly; stderr:\n{}",
        larch.stderr()
    );
    let stderr = larch.stderr();
    assert!(
        stderr.contains("SIGTERM"),
        "the drain names its signal:\n{stderr}"
    );
    // Printed once, never in a log event, and only the key's hash is on disk.
    assert_eq!(printed_key(&stderr), key);
    assert_eq!(larch.stdout(), "", "nothing on stdout");
    let stored = std::fs::read_to_string(data_dir.path().join("bootstrap-key.json")).unwrap();
    let secret = key.rsplit('_').next().unwrap();
    assert!(
        !stored.contains(secret),
        "the secret is not stored:\n{stored}"
    );

    // A second start on the same directory prints nothing and accepts the same key.
    let mut again = Larch::serve(data_dir.path(), &[]);
    let addr = again.control_addr().to_string();
    wait_serving(&addr, "").await;
    list_indexes(&addr, Some(&key)).await.unwrap();
    let other =
        "larch_0123456789ab_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let status = list_indexes(&addr, Some(other)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let exit = again.terminate();
    assert_eq!(exit.code(), Some(0), "stderr:\n{}", again.stderr());
    assert!(
        !again.stderr().contains(GENERATED),
        "no new key on a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn larch_api_key_is_the_admin_key() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut larch = Larch::serve(data_dir.path(), &[("LARCH_API_KEY", "mykey-123")]);
    let addr = larch.control_addr().to_string();
    wait_serving(&addr, "").await;

    assert_eq!(
        list_indexes(&addr, Some("mykey-123")).await.unwrap(),
        Vec::<String>::new()
    );
    for wrong in ["mykey-1234", "mykey-12", "MYKEY-123"] {
        let status = list_indexes(&addr, Some(wrong)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{wrong}: {status:?}");
    }
    let exit = larch.terminate();
    assert_eq!(exit.code(), Some(0), "stderr:\n{}", larch.stderr());
    assert!(
        !larch.stderr().contains(GENERATED),
        "a configured key is not printed"
    );
    assert!(!larch.stderr().contains("mykey-123"), "nor logged");
}

#[test]
fn bad_configuration_exits_64_naming_the_flag() {
    let data_dir = tempfile::tempdir().unwrap();
    let never_created = data_dir.path().join("never-created");
    let dir = never_created.to_str().unwrap();
    for (args, names) in [
        (
            &[
                "serve",
                "--data-dir",
                dir,
                "--control-addr",
                "127.0.0.1:0",
                "--data-ports",
                "9-1",
            ][..],
            &["--data-ports", "9-1"][..],
        ),
        (
            &[
                "serve",
                "--data-dir",
                dir,
                "--control-addr",
                "127.0.0.1:0",
                "--data-ports",
                "lots",
            ][..],
            &["--data-ports", "lots"][..],
        ),
        (
            &[
                "serve",
                "--data-dir",
                dir,
                "--control-addr",
                "not-an-address",
            ][..],
            &["--control-addr"][..],
        ),
        (
            &["serve", "--data-dir", dir, "--no-such-flag"][..],
            &["--no-such-flag"][..],
        ),
    ] {
        let mut larch = Larch::spawn(args, &[]);
        let exit = larch.wait();
        let stderr = larch.stderr();
        assert_eq!(exit.code(), Some(64), "{args:?}; stderr:\n{stderr}");
        for name in names {
            assert!(
                stderr.contains(name),
                "{args:?}: stderr should name {name:?}:\n{stderr}"
            );
        }
        assert!(
            !larch.stderr().contains(GENERATED),
            "{args:?}: no key is generated for a bad configuration"
        );
    }
    assert!(
        !never_created.exists(),
        "bad configuration touches no data directory"
    );
}
