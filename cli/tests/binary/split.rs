//! Split mode with the real binary: `larch data-plane` and `larch control-plane` as separate
//! processes. An index created on the control plane is served by the data plane at the host
//! the template gives it (routed by `:authority`), keys made on the control plane work on the
//! data plane and a revoked one is refused there within the refresh period, a deleted index is
//! no longer served, and a restarted data plane recovers its indexes from the control plane.

use std::time::{Duration, Instant};

use larch_proto::control::api_key_service_client::ApiKeyServiceClient;
use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::control::{
    CreateApiKeyRequest, CreateIndexRequest, DeleteIndexRequest, RevokeApiKeyRequest,
};
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{QueryRequest, UpsertRequest, Vector};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::harness::*;

pub(super) const KEY: &str = "split-mode-admin-key";

/// A channel to the data plane at `addr` whose requests carry `host` as `:authority`.
pub(super) async fn via_host(addr: &str, host: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .origin(format!("http://{host}").parse().unwrap())
        .connect()
        .await
        .unwrap()
}

/// Creates a key with `role` on the control plane at `addr`; returns its id and secret.
pub(super) async fn create_key(addr: &str, name: &str, role: &str) -> (String, String) {
    let created = ApiKeyServiceClient::new(connect(addr).await)
        .create_api_key(with_key(
            CreateApiKeyRequest {
                name: name.into(),
                roles: vec![role.into()],
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner();
    (created.key.unwrap().id, created.value)
}

/// Upserts vector `a` = [1, 0] through `client`, with the admin key.
pub(super) async fn upsert_a(client: &mut VectorServiceClient<Channel>) {
    client
        .upsert(with_key(
            UpsertRequest {
                vectors: vec![Vector {
                    id: "a".into(),
                    values: vec![1.0, 0.0],
                    ..Default::default()
                }],
                namespace: String::new(),
            },
            Some(KEY),
        ))
        .await
        .unwrap();
}

pub(super) async fn query(addr: &str, host: &str, key: &str) -> Result<usize, tonic::Status> {
    VectorServiceClient::new(via_host(addr, host).await)
        .query(with_key(
            QueryRequest {
                vector: vec![1.0, 0.0],
                top_k: 5,
                ..Default::default()
            },
            Some(key),
        ))
        .await
        .map(|r| r.into_inner().matches.len())
}

/// Retries `check` until it holds or `limit` passes (the data plane follows the control plane
/// every refresh period).
pub(super) async fn eventually<F: AsyncFnMut() -> bool>(limit: Duration, what: &str, mut check: F) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(super) fn start_data_plane(dir: &std::path::Path, addr: &str, control_port: u16) -> Larch {
    start_data_plane_with(dir, addr, control_port, &[])
}

/// [`start_data_plane`] with more environment variables (`LARCH_…` settings).
pub(super) fn start_data_plane_with(
    dir: &std::path::Path,
    addr: &str,
    control_port: u16,
    env: &[(&str, &str)],
) -> Larch {
    let base = [("LARCH_API_KEY", KEY), ("LARCH_KEY_REFRESH_SECS", "1")];
    Larch::spawn(
        &[
            "data-plane",
            "--data-dir",
            dir.to_str().unwrap(),
            "--data-addr",
            addr,
            "--control-plane-url",
            &format!("http://127.0.0.1:{control_port}"),
        ],
        &[&base[..], env].concat(),
    )
}

/// A control plane and a data plane in split mode on ports of their own, indexes named
/// `{index}.{project}.<domain>:<data-plane port>`, both SERVING (the data plane once it has
/// synced with the control plane).
pub(super) struct Split {
    pub(super) control: Larch,
    pub(super) data: Larch,
    pub(super) control_addr: String,
    pub(super) data_addr: String,
    pub(super) control_port: u16,
    /// The data plane's port, as index hosts name it.
    pub(super) data_port: String,
    /// Held so the control plane's data lives as long as the pair.
    pub(super) _control_dir: tempfile::TempDir,
    pub(super) data_dir: tempfile::TempDir,
}

impl Split {
    pub(super) async fn start(domain: &str) -> Split {
        Split::start_with(domain, &[]).await
    }

    /// [`Split::start`] with more environment variables for both processes (each ignores the
    /// `LARCH_…` settings that are not its own).
    pub(super) async fn start_with(domain: &str, env: &[(&str, &str)]) -> Split {
        let (control_dir, data_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // The data plane needs the control plane's URL and the other way round: reserve a port
        // for the control plane, start the data plane (it retries until the control plane is
        // up).
        let control_port = free_port();
        let data = start_data_plane_with(data_dir.path(), "127.0.0.1:0", control_port, env);
        let data_addr = data.logged_addr("larch data plane listening").to_string();
        let data_port = data_addr.rsplit(':').next().unwrap().to_owned();
        let control = Larch::spawn(
            &[
                "control-plane",
                "--data-dir",
                control_dir.path().to_str().unwrap(),
                "--control-addr",
                &format!("127.0.0.1:{control_port}"),
                "--data-plane-url",
                &format!("http://{data_addr}"),
                "--host-template",
                &format!("{{index}}.{{project}}.{domain}:{data_port}"),
            ],
            &[&[("LARCH_API_KEY", KEY)][..], env].concat(),
        );
        let control_addr = control.control_addr().to_string();
        wait_serving(&control_addr, "").await;
        wait_serving(&data_addr, "").await;
        Split {
            control,
            data,
            control_addr,
            data_addr,
            control_port,
            data_port,
            _control_dir: control_dir,
            data_dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_planes_serve_indexes_and_follow_key_changes() {
    // Bound whole, so the directories live as long as the processes (the fields taken out
    // below are moved, the rest stays in `split`).
    let mut split = Split::start("larch.test").await;
    let (control_addr, data_addr, control_port) = (
        split.control_addr.clone(),
        split.data_addr.clone(),
        split.control_port,
    );

    let mut indexes = IndexServiceClient::new(connect(&control_addr).await);
    let model = indexes
        .create_index(with_key(
            CreateIndexRequest {
                name: "movies".into(),
                dimension: Some(2),
                metric: Some("cosine".into()),
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner();
    let port = data_addr.rsplit(':').next().unwrap();
    assert_eq!(model.host, format!("movies.default.larch.test:{port}"));

    // Served at once, at its host, on the data plane's one address.
    let mut data_client = VectorServiceClient::new(via_host(&data_addr, &model.host).await);
    upsert_a(&mut data_client).await;
    assert_eq!(query(&data_addr, &model.host, KEY).await.unwrap(), 1);
    // Another host on the same address is no index.
    let err = query(&data_addr, "nothing.default.larch.test", KEY)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // A key made on the control plane reaches the data plane; once revoked it is refused there.
    let (reader_id, reader) = create_key(&control_addr, "reader", "DataPlaneViewer").await;
    eventually(
        Duration::from_secs(10),
        "the new key working on the data plane",
        async || query(&data_addr, &model.host, &reader).await.is_ok(),
    )
    .await;
    ApiKeyServiceClient::new(connect(&control_addr).await)
        .revoke_api_key(with_key(RevokeApiKeyRequest { id: reader_id }, Some(KEY)))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the revoked key refused on the data plane", async || {
        matches!(query(&data_addr, &model.host, &reader).await, Err(s) if s.code() == Code::Unauthenticated)
    })
    .await;

    // A data plane restart (same address, as behind a Service) recovers the index from the
    // control plane's list.
    assert!(
        split.data.terminate().success(),
        "stderr:\n{}",
        split.data.stderr()
    );
    split.data = start_data_plane(split.data_dir.path(), &data_addr, control_port);
    assert_eq!(
        split
            .data
            .logged_addr("larch data plane listening")
            .to_string(),
        data_addr
    );
    wait_serving(&data_addr, "").await;
    assert_eq!(
        query(&data_addr, &model.host, KEY).await.unwrap(),
        1,
        "data recovered"
    );

    // Deleted on the control plane: no longer served.
    drop(data_client);
    indexes
        .delete_index(with_key(
            DeleteIndexRequest {
                name: "movies".into(),
            },
            Some(KEY),
        ))
        .await
        .unwrap();
    let err = query(&data_addr, &model.host, KEY).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    drop(split);
}
