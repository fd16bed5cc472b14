//! A split-mode (routed) data plane on its own, for tests of what it serves: every index on one
//! address, routed by host, with no control plane behind it (its pulls go nowhere); indexes are
//! attached directly through its internal `DataPlaneControl` service, as a control plane would.

use std::time::Duration;

use larch_auth::grpc::SendKey;
use larch_auth::{ApiKey, Grant, KeyStore, StoredKey};
use larch_data_plane::routed::{ControlPlane, RoutedDataPlane, serve_routed};
use larch_proto::internal::data_plane_control_client::DataPlaneControlClient;
use larch_proto::internal::{AttachIndexRequest, IndexAssignment};
use larch_tests::KeyInterceptor;
use tonic::transport::{Channel, Endpoint};

/// A routed data plane on 127.0.0.1 with its admin key; stopped (drained) by [`Self::stop`],
/// or at once when dropped.
pub(crate) struct RoutedServer {
    pub(crate) addr: String,
    /// The key it sends its (absent) control plane; one it accepts as admin when made by
    /// [`Self::start`].
    pub(crate) admin: ApiKey,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    _dir: tempfile::TempDir,
}

impl RoutedServer {
    /// Starts one on a free port, its indexes on local disk in a temporary directory.
    pub(crate) async fn start() -> RoutedServer {
        let dir = tempfile::tempdir().unwrap();
        let admin = ApiKey::generate();
        let keys = KeyStore::new();
        keys.insert(StoredKey::new(&admin, Grant::admin()));
        let data_plane = RoutedDataPlane::new(
            larch_engine::Engine::open(dir.path().join("indexes")),
            keys,
            larch_observe::Metrics::new(),
        );
        RoutedServer::serve(data_plane, admin, dir).await
    }

    /// Serves `data_plane` (keeping its indexes in `dir`) on a free port; `admin` is the key
    /// it sends its control plane, which is not there: the data plane keeps the keys it has,
    /// and is told about its indexes by `attach` (or a test's own control-plane handle).
    pub(crate) async fn serve(
        data_plane: RoutedDataPlane,
        admin: ApiKey,
        dir: tempfile::TempDir,
    ) -> RoutedServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let control_plane = ControlPlane {
            url: format!("http://{nowhere}"),
            admin_key: SendKey::new(admin.as_str()).unwrap(),
            admin_key_file: None,
            key_max_age: Duration::from_secs(3600),
            refresh: Duration::from_secs(3600),
            ca_pem: None,
            timeouts: larch_observe::internal::CallTimeouts::new(Duration::from_secs(5)),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve_routed(
            listener,
            data_plane,
            control_plane,
            larch_observe::Readiness::new(),
            async move {
                let _ = stopped.await;
            },
        ));
        RoutedServer {
            addr,
            admin,
            stop,
            served,
            _dir: dir,
        }
    }

    /// Creates index `name` (dimension 2, `metric`, default project) served at `host`.
    pub(crate) async fn attach(&self, name: &str, metric: &str, host: &str) {
        let channel = Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        DataPlaneControlClient::with_interceptor(
            channel,
            KeyInterceptor::new(Some(self.admin.as_str())),
        )
        .attach_index(AttachIndexRequest {
            index: Some(IndexAssignment {
                project: Grant::DEFAULT_PROJECT.into(),
                name: name.into(),
                dimension: 2,
                metric: metric.into(),
                host: host.into(),
                ..IndexAssignment::default()
            }),
            create: true,
        })
        .await
        .unwrap();
    }

    /// A channel to this data plane whose requests name `host` as their authority.
    pub(crate) async fn via(&self, host: &str) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .origin(format!("http://{host}").parse().unwrap())
            .connect()
            .await
            .unwrap()
    }

    /// Stops it and waits (at most a minute) for the drain.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(60), self.served)
            .await
            .expect("drained")
            .unwrap()
            .unwrap();
    }
}
