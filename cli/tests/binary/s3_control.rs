//! Control-plane replicas on a bucket, with the real binary and a real S3-compatible server
//! (issue 17): `larch control-plane --object-store-url s3://…` processes over one prefix of
//! the test bucket, without a shared directory. The same index name created on both at once
//! exists once, a key made on one works on the other, and a single control plane's state is
//! copied into the bucket when it is restarted with the flag. Skipped without a server
//! (`larch_state::testing::s3`; `tests/run` starts one), failing instead with
//! `LARCH_REQUIRE_S3=1`.

use std::path::Path;
use std::time::Duration;

use larch_proto::pinecone::vector_service_client::VectorServiceClient;

use super::harness::*;
use super::replicas::{Setup, control_plane, create, list, race_creates, setup};
use super::split::{KEY, create_key, eventually, query, upsert_a, via_host};

/// A control-plane replica on `addr` with its lock and admin-key hash in `dir` and its state
/// in the bucket `url`, once it serves; returns it and its address.
async fn replica(
    dir: &Path,
    addr: &str,
    url: &str,
    data_addr: &str,
    template: &str,
) -> (Larch, String) {
    control_plane(dir, addr, data_addr, template, &["--object-store-url", url]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_replicas_on_one_bucket_create_a_name_once_and_share_keys() {
    let Some(test) = larch_state::testing::s3("s3_control_plane_replicas") else {
        return;
    };
    let Setup {
        dirs,
        data,
        data_addr,
        template,
        control_addr,
        ..
    } = setup(3).await;
    let first_addr = control_addr;
    let (first, _) = replica(
        dirs[1].path(),
        &first_addr,
        &test.url,
        &data_addr,
        &template,
    )
    .await;
    let (second, second_addr) = replica(
        dirs[2].path(),
        "127.0.0.1:0",
        &test.url,
        &data_addr,
        &template,
    )
    .await;
    wait_serving(&data_addr, "").await;

    // The same name on both replicas at once: created once, ALREADY_EXISTS for the other.
    race_creates(&first_addr, &second_addr).await;
    assert_eq!(
        list(&first_addr, KEY).await.unwrap(),
        ["race-0", "race-1", "race-2"]
    );
    assert_eq!(
        list(&second_addr, KEY).await.unwrap(),
        ["race-0", "race-1", "race-2"]
    );

    // Created on the second replica, served by the data plane that follows the first.
    let movies = create(&second_addr, "movies").await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the index served by the data plane",
        async || query(&data_addr, &movies.host, KEY).await.is_ok(),
    )
    .await;
    upsert_a(&mut VectorServiceClient::new(
        via_host(&data_addr, &movies.host).await,
    ))
    .await;

    // A key made on the second replica works on the first (within its refresh period) and on
    // the data plane.
    let (_, key) = create_key(&second_addr, "on-the-bucket", "ProjectEditor").await;
    eventually(
        Duration::from_secs(10),
        "the key working on the first replica",
        async || list(&first_addr, &key).await.is_ok(),
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the key working on the data plane",
        async || matches!(query(&data_addr, &movies.host, &key).await, Ok(1)),
    )
    .await;

    // The state is in the bucket, not in the replicas' data dirs.
    for dir in &dirs[1..] {
        for file in ["catalog.json", "access.json"] {
            assert!(!dir.path().join(file).exists(), "{file} in a data dir");
        }
    }
    drop((data, first, second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_control_planes_state_moves_into_the_bucket() {
    let Some(test) = larch_state::testing::s3("s3_single_state_moves_in") else {
        return;
    };
    let Setup {
        dirs,
        data,
        data_addr,
        template,
        control_addr,
        ..
    } = setup(3).await;
    let addr = control_addr;

    // One control plane keeping its state in its data dir.
    let (mut single, _) = control_plane(dirs[1].path(), &addr, &data_addr, &template, &[]).await;
    create(&addr, "legacy").await.unwrap();
    let (_, key) = create_key(&addr, "old", "ProjectEditor").await;
    assert!(single.terminate().success(), "stderr:\n{}", single.stderr());

    // Restarted on the bucket with the same data dir: its state is copied in, and a second
    // replica with an empty data dir sees it too.
    let (first, _) = replica(dirs[1].path(), &addr, &test.url, &data_addr, &template).await;
    assert_eq!(list(&addr, &key).await.unwrap(), ["legacy"]);
    let (second, second_addr) = replica(
        dirs[2].path(),
        "127.0.0.1:0",
        &test.url,
        &data_addr,
        &template,
    )
    .await;
    assert_eq!(list(&second_addr, &key).await.unwrap(), ["legacy"]);
    drop((data, first, second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_object_store_url_exits_64_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let mut larch = Larch::spawn(
        &[
            "control-plane",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--control-addr",
            "127.0.0.1:0",
            "--data-plane-url",
            "http://127.0.0.1:1",
            "--host-template",
            "{index}.{project}.larch.test:1",
            "--object-store-url",
            "gs://somewhere",
        ],
        &[("LARCH_API_KEY", KEY)],
    );
    let status = larch.wait();
    assert_eq!(status.code(), Some(64), "stderr:\n{}", larch.stderr());
    let stderr = larch.stderr();
    assert!(
        stderr.contains("--object-store-url") && stderr.contains("gs://somewhere"),
        "{stderr}"
    );
}
