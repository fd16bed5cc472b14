//! Several control-plane replicas with the real binary: `larch control-plane
//! --shared-state-dir` processes over one shared directory (as pods over one ReadWriteMany
//! volume) and one data plane. Whatever one replica changes — indexes, keys — the others
//! answer with at once (index reads) or within the refresh period (authentication); the same
//! name created on two replicas at once exists once; a replica can die and a new one with an
//! empty data dir takes over; and a single control plane's state is carried into shared mode.

use std::path::Path;
use std::time::Duration;

use larch_proto::control::api_key_service_client::ApiKeyServiceClient;
use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::control::{
    CreateIndexRequest, DeleteIndexRequest, DescribeIndexRequest, IndexModel, ListIndexesRequest,
    RevokeApiKeyRequest,
};
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use tonic::Code;

use super::harness::*;
use super::split::{KEY, create_key, eventually, query, start_data_plane, upsert_a, via_host};

/// A control-plane replica on `addr` keeping its lock and admin-key hash in `dir` and the
/// shared state in `shared` (`None`: a single control plane keeping everything in `dir`),
/// once it serves; returns it and its address.
async fn replica(
    dir: &Path,
    addr: &str,
    shared: Option<&Path>,
    data_addr: &str,
    template: &str,
) -> (Larch, String) {
    match shared {
        Some(shared) => {
            let state = ["--shared-state-dir", shared.to_str().unwrap()];
            control_plane(dir, addr, data_addr, template, &state).await
        }
        None => control_plane(dir, addr, data_addr, template, &[]).await,
    }
}

/// A control plane on `addr` with its data dir `dir`, following the data plane at
/// `data_addr`, with `state` naming where it keeps its state besides (`--shared-state-dir …`,
/// `--object-store-url …`, or nothing), once it serves; returns it and its address.
pub(super) async fn control_plane(
    dir: &Path,
    addr: &str,
    data_addr: &str,
    template: &str,
    state: &[&str],
) -> (Larch, String) {
    let data_plane_url = format!("http://{data_addr}");
    let args = [
        "control-plane",
        "--data-dir",
        dir.to_str().unwrap(),
        "--control-addr",
        addr,
        "--data-plane-url",
        &data_plane_url,
        "--host-template",
        template,
    ];
    let larch = Larch::spawn(&[&args[..], state].concat(), &[("LARCH_API_KEY", KEY)]);
    let addr = larch.control_addr().to_string();
    wait_serving(&addr, "").await;
    (larch, addr)
}

/// Creates a 2-dimensional cosine index `name` on the control plane at `addr` (admin key).
pub(super) async fn create(addr: &str, name: &str) -> Result<IndexModel, tonic::Status> {
    IndexServiceClient::new(connect(addr).await)
        .create_index(with_key(
            CreateIndexRequest {
                name: name.into(),
                dimension: Some(2),
                metric: Some("cosine".into()),
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Creates indexes `race-0`, `race-1`, `race-2`, each on the replicas at `first` and
/// `second` at once: one of the two must succeed and the other get ALREADY_EXISTS.
pub(super) async fn race_creates(first: &str, second: &str) {
    for round in 0..3 {
        let name = format!("race-{round}");
        let (a, b) = tokio::join!(create(first, &name), create(second, &name));
        let codes = [&a, &b].map(|r| r.as_ref().err().map(tonic::Status::code));
        assert!(
            codes == [None, Some(Code::AlreadyExists)]
                || codes == [Some(Code::AlreadyExists), None],
            "round {round}: {a:?} {b:?}"
        );
    }
}

/// The names of the indexes `key` sees on the control plane at `addr`.
pub(super) async fn list(addr: &str, key: &str) -> Result<Vec<String>, tonic::Status> {
    IndexServiceClient::new(connect(addr).await)
        .list_indexes(with_key(ListIndexesRequest {}, Some(key)))
        .await
        .map(|r| r.into_inner().indexes.into_iter().map(|i| i.name).collect())
}

async fn describe(addr: &str, name: &str) -> Result<IndexModel, tonic::Status> {
    IndexServiceClient::new(connect(addr).await)
        .describe_index(with_key(
            DescribeIndexRequest { name: name.into() },
            Some(KEY),
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// What the replica tests (here and in `s3_control`) start from: a shared dir, `dirs` data
/// dirs (the first is the data plane's), a data plane following the control plane that will
/// listen on `control_addr`, and the host template that points at the data plane.
pub(super) struct Setup {
    pub(super) shared: tempfile::TempDir,
    pub(super) dirs: Vec<tempfile::TempDir>,
    pub(super) data: Larch,
    pub(super) data_addr: String,
    pub(super) template: String,
    pub(super) control_addr: String,
}

pub(super) async fn setup(dirs: usize) -> Setup {
    let control_port = free_port();
    let dirs: Vec<_> = (0..dirs).map(|_| tempfile::tempdir().unwrap()).collect();
    let data = start_data_plane(dirs[0].path(), "127.0.0.1:0", control_port);
    let data_addr = data.logged_addr("larch data plane listening").to_string();
    let template = format!(
        "{{index}}.{{project}}.larch.test:{}",
        data_addr.rsplit(':').next().unwrap()
    );
    Setup {
        shared: tempfile::tempdir().unwrap(),
        dirs,
        data,
        data_addr,
        template,
        control_addr: format!("127.0.0.1:{control_port}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_replicas_share_indexes_and_keys() {
    let Setup {
        shared,
        dirs,
        data,
        data_addr,
        template,
        control_addr: first_addr,
    } = setup(4).await;
    let shared_dir = Some(shared.path());
    let (mut first, _) = replica(
        dirs[1].path(),
        &first_addr,
        shared_dir,
        &data_addr,
        &template,
    )
    .await;
    let (second, second_addr) = replica(
        dirs[2].path(),
        "127.0.0.1:0",
        shared_dir,
        &data_addr,
        &template,
    )
    .await;
    wait_serving(&data_addr, "").await;

    // Created through the first replica: the second describes and lists it at once, and the
    // data plane serves it.
    let movies = create(&first_addr, "movies").await.unwrap();
    assert_eq!(describe(&second_addr, "movies").await.unwrap(), movies);
    assert_eq!(list(&second_addr, KEY).await.unwrap(), ["movies"]);
    upsert_a(&mut VectorServiceClient::new(
        via_host(&data_addr, &movies.host).await,
    ))
    .await;
    assert_eq!(query(&data_addr, &movies.host, KEY).await.unwrap(), 1);

    // The same name on both replicas at once: created once, ALREADY_EXISTS for the other.
    race_creates(&first_addr, &second_addr).await;

    // A key made on the second replica authenticates on the first (within the refresh
    // period) and on the data plane (which follows the first).
    let (key_id, key) = create_key(&second_addr, "shared", "ProjectEditor").await;
    eventually(
        Duration::from_secs(10),
        "the key working on the first replica",
        async || list(&first_addr, &key).await.is_ok(),
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the key working on the data plane",
        async || query(&data_addr, &movies.host, &key).await.is_ok(),
    )
    .await;
    // Revoked on the first: refused by the second.
    ApiKeyServiceClient::new(connect(&first_addr).await)
        .revoke_api_key(with_key(RevokeApiKeyRequest { id: key_id }, Some(KEY)))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the revoked key refused on the second replica", async || {
        matches!(list(&second_addr, &key).await, Err(s) if s.code() == Code::Unauthenticated)
    })
    .await;

    // Deleted through the second replica: gone on the first and no longer served.
    IndexServiceClient::new(connect(&second_addr).await)
        .delete_index(with_key(
            DeleteIndexRequest {
                name: "movies".into(),
            },
            Some(KEY),
        ))
        .await
        .unwrap();
    let err = describe(&first_addr, "movies").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = query(&data_addr, &movies.host, KEY).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // The first replica dies; the second goes on, and a new replica with an empty data dir
    // has the whole state.
    first.kill();
    create(&second_addr, "after").await.unwrap();
    let (third, third_addr) = replica(
        dirs[3].path(),
        "127.0.0.1:0",
        shared_dir,
        &data_addr,
        &template,
    )
    .await;
    assert_eq!(
        list(&third_addr, KEY).await.unwrap(),
        ["after", "race-0", "race-1", "race-2"]
    );
    let err = list(&third_addr, &key).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    drop((data, second, third));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_control_planes_state_moves_into_the_shared_state() {
    let Setup {
        shared,
        dirs,
        data,
        data_addr,
        template,
        control_addr: addr,
    } = setup(3).await;
    let shared_dir = Some(shared.path());

    let (mut single, _) = replica(dirs[1].path(), &addr, None, &data_addr, &template).await;
    create(&addr, "legacy").await.unwrap();
    let (_, key) = create_key(&addr, "old", "ProjectEditor").await;
    assert!(single.terminate().success(), "stderr:\n{}", single.stderr());

    // Restarted with a shared state dir, same data dir: its state is copied in; a second
    // replica with an empty data dir sees it too.
    let (first, _) = replica(dirs[1].path(), &addr, shared_dir, &data_addr, &template).await;
    assert_eq!(list(&addr, &key).await.unwrap(), ["legacy"]);
    let (second, second_addr) = replica(
        dirs[2].path(),
        "127.0.0.1:0",
        shared_dir,
        &data_addr,
        &template,
    )
    .await;
    assert_eq!(list(&second_addr, &key).await.unwrap(), ["legacy"]);
    assert!(
        shared
            .path()
            .join("catalog/00000000000000000001.json")
            .is_file()
    );
    drop((data, first, second));
}
