//! TLS on every port (`--tls-cert`, `--tls-key`): `larch serve` answers gRPC over TLS on the
//! control plane and on each index's port and refuses plaintext there; in split mode the planes
//! call each other over https (`--tls-ca`) and the data plane still routes by host. The test CA
//! and certificate are fixtures made by `tls/make.sh`.

use larch_proto::control::CreateIndexRequest;
use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{QueryRequest, UpsertRequest, Vector};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::harness::*;

const KEY: &str = "tls-test-admin-key";

fn fixture(name: &str) -> String {
    format!("{}/tests/binary/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A TLS channel to `addr` trusting the test CA; requests carry `authority` if given.
async fn tls_channel(addr: &str, authority: Option<&str>) -> Channel {
    let ca = std::fs::read(fixture("ca.pem")).unwrap();
    let mut endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .unwrap();
    if let Some(authority) = authority {
        endpoint = endpoint.origin(format!("https://{authority}").parse().unwrap());
    }
    endpoint
        .connect()
        .await
        .unwrap_or_else(|e| panic!("TLS connect to {addr}: {e:?}"))
}

async fn wait_serving_tls(addr: &str) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let mut health = HealthClient::new(tls_channel(addr, None).await);
        let status = health
            .check(HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status);
        if matches!(status, Ok(s) if s == ServingStatus::Serving as i32) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{addr} never SERVING: {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn upsert_and_query(channel: Channel) -> usize {
    let mut data = VectorServiceClient::new(channel);
    data.upsert(with_key(
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
    data.query(with_key(
        QueryRequest {
            vector: vec![1.0, 0.0],
            top_k: 3,
            ..Default::default()
        },
        Some(KEY),
    ))
    .await
    .unwrap()
    .into_inner()
    .matches
    .len()
}

/// Index "secure" (2 dimensions), created through the control plane at `addr` over TLS.
async fn create_secure(addr: &str) -> larch_proto::control::IndexModel {
    IndexServiceClient::new(tls_channel(addr, None).await)
        .create_index(with_key(
            CreateIndexRequest {
                name: "secure".into(),
                dimension: Some(2),
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner()
}

/// `larch data-plane` keeping its data in `dir`, on a port of its own, calling the control
/// plane at `https://localhost:<control_port>`, with `env`.
fn tls_data_plane(dir: &std::path::Path, control_port: u16, env: &[(&str, &str)]) -> Larch {
    Larch::spawn(
        &[
            "data-plane",
            "--data-dir",
            dir.to_str().unwrap(),
            "--data-addr",
            "127.0.0.1:0",
            "--control-plane-url",
            &format!("https://localhost:{control_port}"),
            "--key-refresh-secs",
            "1",
        ],
        env,
    )
}

fn tls_env() -> Vec<(&'static str, String)> {
    vec![
        ("LARCH_API_KEY", KEY.to_owned()),
        ("LARCH_TLS_CERT", fixture("server.pem")),
        ("LARCH_TLS_KEY", fixture("server-key.pem")),
        ("LARCH_TLS_CA", fixture("ca.pem")),
    ]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_speaks_tls_on_every_port_and_refuses_plaintext() {
    let data_dir = tempfile::tempdir().unwrap();
    let env = tls_env();
    let mut larch = Larch::serve(data_dir.path(), &env_refs(&env[..3]));
    let addr = larch.control_addr().to_string();
    wait_serving_tls(&addr).await;
    let model = create_secure(&addr).await;
    wait_serving_tls(&model.host).await;
    assert_eq!(
        upsert_and_query(tls_channel(&model.host, None).await).await,
        1
    );

    // Plaintext to a TLS port gets no answer.
    for host in [&addr, &model.host] {
        let plain = Endpoint::from_shared(format!("http://{host}"))
            .unwrap()
            .connect()
            .await;
        let refused = match plain {
            Err(_) => true,
            Ok(channel) => HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .is_err(),
        };
        assert!(refused, "{host} answered plaintext");
    }
    assert!(larch.terminate().success(), "stderr:\n{}", larch.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_planes_call_each_other_over_tls() {
    let (control_dir, data_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = tls_env();
    let control_port = free_port();
    let data = tls_data_plane(data_dir.path(), control_port, &env_refs(&env));
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
            &format!("https://localhost:{data_port}"),
            "--host-template",
            &format!("{{index}}.{{project}}.larch.test:{data_port}"),
        ],
        &env_refs(&env),
    );
    let control_addr = control.control_addr().to_string();
    wait_serving_tls(&control_addr).await;
    wait_serving_tls(&data_addr).await;
    let model = create_secure(&control_addr).await;
    assert_eq!(model.host, format!("secure.default.larch.test:{data_port}"));
    let channel = tls_channel(&data_addr, Some(&model.host)).await;
    assert_eq!(upsert_and_query(channel).await, 1);
    drop((data, control));
}

/// Pods serving TLS on one bucket: a write sent to the follower is forwarded to the writer's
/// https address, checked against `--tls-ca` and the index host, and read back on the follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_writes_to_the_writer_over_tls() {
    let Some(test) = larch_state::testing::s3("tls_forwarding") else {
        return;
    };
    let env = tls_env();
    let control_port = free_port();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let planes: Vec<Larch> = dirs
        .iter()
        .enumerate()
        .map(|(pod, dir)| {
            let name = format!("dp-{pod}");
            let mut env = env_refs(&env);
            env.extend(super::s3_followers::pod_env(&test.url, &name, "2"));
            tls_data_plane(dir.path(), control_port, &env)
        })
        .collect();
    let addrs: Vec<String> = planes
        .iter()
        .map(|plane| plane.logged_addr("larch data plane listening").to_string())
        .collect();
    let control_dir = tempfile::tempdir().unwrap();
    let control = super::split_pods::control_plane_with(
        control_dir.path(),
        control_port,
        &addrs,
        "https",
        &env_refs(&env),
    );
    let control_addr = control.control_addr().to_string();
    wait_serving_tls(&control_addr).await;
    for addr in &addrs {
        wait_serving_tls(addr).await;
    }
    let model = create_secure(&control_addr).await;
    let follower = super::s3_followers::wait_followed(&planes).await;
    let channel = tls_channel(&addrs[follower], Some(&model.host)).await;
    assert_eq!(
        upsert_and_query(channel).await,
        1,
        "the write, forwarded over TLS, is read back on the follower"
    );
    drop((planes, control));
}
