//! A data plane whose indexes live in a bucket, with the real binary and a real S3-compatible
//! server (issue 17): `larch data-plane --object-store-url s3://…` acknowledges a write only
//! once its log object is stored, so a data plane started afresh — an empty `--data-dir`, as a
//! replaced Kubernetes pod has — serves every acknowledged write: after `kill -9` (it takes
//! the index over once the dead writer's lease has gone unrenewed for a TTL) and after a
//! SIGTERM (the lease is released on the way out, so the next one takes over at once).
//! Skipped without a server (`larch_state::testing::s3`; `tests/run` starts one), failing
//! instead with `LARCH_REQUIRE_S3=1`.

use std::time::Duration;

use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{UpsertRequest, Vector};

use super::harness::*;
use super::replicas::create;
use super::split::{KEY, Split, eventually, start_data_plane_with, via_host};

/// Upserts `count` vectors `v<first>`, … in requests of 10; returns the acknowledged ids.
pub(super) async fn upsert(addr: &str, host: &str, first: usize, count: usize) -> Vec<String> {
    let mut client = VectorServiceClient::new(via_host(addr, host).await);
    let mut acknowledged = Vec::new();
    for batch in (first..first + count).collect::<Vec<_>>().chunks(10) {
        let vectors: Vec<Vector> = batch
            .iter()
            .map(|i| Vector {
                id: format!("v{i}"),
                values: vec![1.0, *i as f32],
                ..Default::default()
            })
            .collect();
        client
            .upsert(with_key(
                UpsertRequest {
                    vectors,
                    namespace: String::new(),
                },
                Some(KEY),
            ))
            .await
            .expect("upsert acknowledged");
        acknowledged.extend(batch.iter().map(|i| format!("v{i}")));
    }
    acknowledged.sort();
    acknowledged
}

/// One upsert of `v<n>` to the data plane at `addr`, as an error while it is refused.
pub(super) async fn try_upsert(addr: &str, host: &str, n: usize) -> Result<(), tonic::Status> {
    let mut client = VectorServiceClient::new(via_host(addr, host).await);
    client
        .upsert(with_key(
            UpsertRequest {
                vectors: vec![Vector {
                    id: format!("v{n}"),
                    values: vec![1.0, n as f32],
                    ..Default::default()
                }],
                namespace: String::new(),
            },
            Some(KEY),
        ))
        .await
        .map(|_| ())
}

/// The ids of `ids` the data plane at `addr` holds for `host`; `None` while it cannot answer
/// (not serving the index yet).
pub(super) async fn held(addr: &str, host: &str, ids: &[String]) -> Option<Vec<String>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .origin(format!("http://{host}").parse().ok()?)
        .connect()
        .await
        .ok()?;
    let mut client = VectorServiceClient::new(channel);
    let answer = client
        .fetch(with_key(
            larch_proto::pinecone::FetchRequest {
                ids: ids.to_vec(),
                namespace: String::new(),
            },
            Some(KEY),
        ))
        .await
        .ok()?;
    let mut found: Vec<String> = answer.into_inner().vectors.into_keys().collect();
    found.sort();
    Some(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_data_plane_on_the_bucket_serves_every_acknowledged_write() {
    let Some(test) = larch_state::testing::s3("s3_data_plane_fresh") else {
        return;
    };
    // Both planes keep their state in the bucket (the control plane its catalog and keys).
    let env = [
        ("LARCH_OBJECT_STORE_URL", test.url.as_str()),
        ("LARCH_LEASE_TTL_SECS", "2"),
    ];
    let mut split = Split::start_with("larch.test", &env).await;
    let host = create(&split.control_addr, "movies")
        .await
        .expect("created")
        .host;
    let data_addr = split.data_addr.clone();
    let mut acknowledged = upsert(&data_addr, &host, 0, 50).await;

    // kill -9: no lease released, nothing flushed; the next data plane starts with an empty
    // data dir on the same address (the control plane's --data-plane-url).
    split.data.kill();
    let fresh = tempfile::tempdir().unwrap();
    split.data = start_data_plane_with(fresh.path(), &data_addr, split.control_port, &env);
    eventually(
        Duration::from_secs(60),
        "a fresh data plane serving every acknowledged write after kill -9",
        async || held(&data_addr, &host, &acknowledged).await.as_ref() == Some(&acknowledged),
    )
    .await;

    // It writes too once it holds the lease (it follows the index until the dead writer's
    // lease lapses), and a SIGTERM hands the index over at once.
    eventually(
        Duration::from_secs(60),
        "the fresh data plane taking the index over",
        async || try_upsert(&data_addr, &host, 50).await.is_ok(),
    )
    .await;
    acknowledged.extend(upsert(&data_addr, &host, 50, 30).await);
    acknowledged.sort();
    let status = split.data.terminate();
    assert!(
        status.success(),
        "the data plane drains and exits 0: {status:?}"
    );
    assert!(
        !split.data.stderr().contains("cannot release"),
        "the writer lease is released on the way out: {}",
        split.data.stderr()
    );
    let fresher = tempfile::tempdir().unwrap();
    split.data = start_data_plane_with(fresher.path(), &data_addr, split.control_port, &env);
    eventually(
        Duration::from_secs(60),
        "a fresh data plane serving every acknowledged write after SIGTERM",
        async || held(&data_addr, &host, &acknowledged).await.as_ref() == Some(&acknowledged),
    )
    .await;
    // The bucket, not a local directory, held the data: the first data dir was never reused.
    drop(fresh);
}
