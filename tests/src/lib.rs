//! Test harness for Larch's integration tests.
//!
//! [`TestServer::start`] runs the real embedded service in-process — the very
//! [`larch::embedded::serve`] that `larch serve` runs, with a [`larch::embedded::Config`] of
//! its own — on `127.0.0.1` port 0 with ephemeral data-plane ports, waits for gRPC health to
//! report SERVING, and hands out tonic clients that send the API key.
//!
//! # Layout
//! - [`TestServer`]: start/stop a server; make control-plane and data-plane clients.
//! - [`KeyInterceptor`]: adds the `api-key` metadata to every request.
//! - [`json`] / [`to_struct`]: build `google.protobuf.Struct` values from `serde_json::json!`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use larch::embedded::{Config, Embedded, Running};
use larch_catalog::{Catalog, PortPolicy};
use larch_control_plane::{Limits, Metrics};
use larch_data_plane::DataPlane;
use larch_proto::control::api_key_service_client::ApiKeyServiceClient;
use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::control::project_service_client::ProjectServiceClient;
use larch_proto::control::{CreateIndexRequest, IndexModel};
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Adds `api-key: <key>` to every request (or nothing, for unauthenticated tests).
#[derive(Clone)]
pub struct KeyInterceptor(Option<String>);

impl KeyInterceptor {
    /// Sends `key` (None: no key at all).
    pub fn new(key: Option<&str>) -> KeyInterceptor {
        KeyInterceptor(key.map(str::to_owned))
    }
}

impl tonic::service::Interceptor for KeyInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.0 {
            req.metadata_mut()
                .insert("api-key", MetadataValue::try_from(key.as_str()).unwrap());
        }
        Ok(req)
    }
}

pub type ControlClient = IndexServiceClient<InterceptedService<Channel, KeyInterceptor>>;
pub type DataClient = VectorServiceClient<InterceptedService<Channel, KeyInterceptor>>;
pub type KeysClient = ApiKeyServiceClient<InterceptedService<Channel, KeyInterceptor>>;
pub type ProjectsClient = ProjectServiceClient<InterceptedService<Channel, KeyInterceptor>>;

/// A running embedded Larch (both planes) with its own temporary data directory.
pub struct TestServer {
    pub control_addr: SocketAddr,
    /// The bootstrap admin key.
    pub key: String,
    server: Running,
    data_dir: tempfile::TempDir,
    /// `--import-root`, kept across restarts.
    import_root: Option<std::path::PathBuf>,
}

impl TestServer {
    /// Starts both planes on 127.0.0.1 port 0 with a new data directory and waits until the
    /// control plane is SERVING.
    pub async fn start() -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        let key = larch_auth::ApiKey::generate().as_str().to_owned();
        TestServer::start_in(data_dir, key).await
    }

    /// Starts both planes with a new data directory after `configure` has set up the key store
    /// (e.g. a rate limit).
    pub async fn start_with(configure: impl FnOnce(&larch_auth::KeyStore)) -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        let key = larch_auth::ApiKey::generate().as_str().to_owned();
        TestServer::start_full(data_dir, key, configure, Limits::default()).await
    }

    /// Starts both planes with a new data directory, holding every port to `limits` (one
    /// in-flight budget for all of them, as in the binary).
    pub async fn start_limited(limits: larch_control_plane::LimitSettings) -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        let key = larch_auth::ApiKey::generate().as_str().to_owned();
        TestServer::start_full(data_dir, key, |_| {}, Limits::new(limits)).await
    }

    /// Starts both planes on an existing data directory (recovering what it holds).
    pub async fn start_in(data_dir: tempfile::TempDir, key: String) -> TestServer {
        TestServer::start_full(data_dir, key, |_| {}, Limits::default()).await
    }

    /// Starts both planes with a new data directory, allowing bulk imports of directories
    /// under `import_root` (`--import-root`); restarts keep it.
    pub async fn start_importing(import_root: &std::path::Path) -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        let key = larch_auth::ApiKey::generate().as_str().to_owned();
        TestServer::start_importing_in(data_dir, key, Some(import_root.to_owned())).await
    }

    /// Starts on an existing data directory, importing under `import_root` if given (without
    /// one, the very configuration [`Self::start_in`] uses).
    async fn start_importing_in(
        data_dir: tempfile::TempDir,
        key: String,
        import_root: Option<std::path::PathBuf>,
    ) -> TestServer {
        let config = Config {
            api_key: Some(key.clone()),
            import_root: import_root.clone(),
            ..Config::ephemeral(data_dir.path())
        };
        TestServer::start_config(config, data_dir, key, |_| {}).await
    }

    async fn start_full(
        data_dir: tempfile::TempDir,
        key: String,
        configure: impl FnOnce(&larch_auth::KeyStore),
        limits: Limits,
    ) -> TestServer {
        let config = Config {
            api_key: Some(key.clone()),
            limits,
            ..Config::ephemeral(data_dir.path())
        };
        TestServer::start_config(config, data_dir, key, configure).await
    }

    async fn start_config(
        config: Config,
        data_dir: tempfile::TempDir,
        key: String,
        configure: impl FnOnce(&larch_auth::KeyStore),
    ) -> TestServer {
        let import_root = config.import_root.clone();
        let embedded = Embedded::open(config).unwrap();
        configure(embedded.keys());
        // Stopped by `Running::stop`, never by a signal.
        let server = embedded.start(std::future::pending()).await.unwrap();
        let server = TestServer {
            control_addr: server.control_addr(),
            key,
            server,
            data_dir,
            import_root,
        };
        wait_serving(&server.control_addr.to_string()).await;
        server
    }

    /// The admin server (`/metrics`, `/healthz`, `/readyz`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.server.admin_addr()
    }

    /// The data plane, to check what reached the engine where no RPC shows it.
    pub fn data_plane(&self) -> &DataPlane {
        self.server.data_plane()
    }

    /// The engine's storage name of index `name` (of any project): its directory and the name
    /// the engine knows it by, which carries its incarnation.
    pub fn storage_name(&self, name: &str) -> String {
        self.data_plane()
            .engine()
            .index_names()
            .expect("the engine lists its indexes")
            .into_iter()
            .find(|storage| {
                larch_catalog::IndexKey::from_storage_name(storage)
                    .is_some_and(|key| key.name().as_str() == name)
            })
            .unwrap_or_else(|| panic!("index {name} is not in the engine"))
    }

    /// The limits every port is held to (e.g. to see how many queries a key has running).
    pub fn limits(&self) -> &Limits {
        self.server.limits()
    }

    /// The metrics both planes record into (what the binary's `/metrics` would show).
    pub fn metrics(&self) -> &Metrics {
        self.server.metrics()
    }

    /// A control-plane client sending the admin key.
    pub async fn control(&self) -> ControlClient {
        self.control_with_key(Some(&self.key)).await
    }

    /// A control-plane client sending `key` (None: no key at all).
    pub async fn control_with_key(&self, key: Option<&str>) -> ControlClient {
        let channel = connect(&self.control_addr.to_string()).await;
        IndexServiceClient::with_interceptor(channel, KeyInterceptor(key.map(str::to_owned)))
    }

    /// An `ApiKeyService` client sending the admin key.
    pub async fn api_keys(&self) -> KeysClient {
        self.api_keys_with_key(Some(&self.key)).await
    }

    /// An `ApiKeyService` client sending `key` (None: no key at all).
    pub async fn api_keys_with_key(&self, key: Option<&str>) -> KeysClient {
        let channel = connect(&self.control_addr.to_string()).await;
        ApiKeyServiceClient::with_interceptor(channel, KeyInterceptor::new(key))
    }

    /// A `ProjectService` client sending the admin key.
    pub async fn projects(&self) -> ProjectsClient {
        self.projects_with_key(Some(&self.key)).await
    }

    /// A `ProjectService` client sending `key` (None: no key at all).
    pub async fn projects_with_key(&self, key: Option<&str>) -> ProjectsClient {
        let channel = connect(&self.control_addr.to_string()).await;
        ProjectServiceClient::with_interceptor(channel, KeyInterceptor::new(key))
    }

    /// Creates an API key with the admin key; returns its value (the secret) and its id.
    pub async fn create_key(
        &self,
        request: larch_proto::control::CreateApiKeyRequest,
    ) -> (String, String) {
        let created = self
            .api_keys()
            .await
            .create_api_key(request)
            .await
            .unwrap()
            .into_inner();
        (created.value, created.key.unwrap().id)
    }

    /// A data-plane client for `host` (as returned in `IndexModel.host`) sending the admin key.
    pub async fn data(&self, host: &str) -> DataClient {
        self.data_with_key(host, Some(&self.key)).await
    }

    /// A data-plane client for `host` sending `key` (None: no key at all).
    pub async fn data_with_key(&self, host: &str, key: Option<&str>) -> DataClient {
        let channel = connect(host).await;
        VectorServiceClient::with_interceptor(channel, KeyInterceptor(key.map(str::to_owned)))
    }

    /// Creates a serverless index and returns its model and a data-plane client for it, after
    /// its data plane reports SERVING.
    pub async fn create_index(
        &self,
        name: &str,
        dimension: i32,
        metric: &str,
    ) -> (IndexModel, DataClient) {
        let model = self
            .control()
            .await
            .create_index(CreateIndexRequest {
                name: name.into(),
                dimension: Some(dimension),
                metric: Some(metric.into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        wait_serving(&model.host).await;
        let client = self.data(&model.host).await;
        (model, client)
    }

    /// Graceful stop: NOT_SERVING, drain, then return.
    pub async fn stop(self) {
        self.stop_keeping_data().await;
    }

    /// Graceful stop that hands back the data directory and key, for a restart.
    pub async fn stop_keeping_data(self) -> (tempfile::TempDir, String) {
        self.server.stop().await.unwrap();
        (self.data_dir, self.key)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// Starts on the data directory and key of a stopped server, allowing imports under
    /// `import_root`.
    pub async fn restart_importing(
        data_dir: tempfile::TempDir,
        key: String,
        import_root: &std::path::Path,
    ) -> TestServer {
        TestServer::start_importing_in(data_dir, key, Some(import_root.to_owned())).await
    }

    /// Stops gracefully and starts again on the same data directory and key.
    pub async fn restart(self) -> TestServer {
        let import_root = self.import_root.clone();
        let (data_dir, key) = self.stop_keeping_data().await;
        TestServer::start_importing_in(data_dir, key, import_root).await
    }
}

/// Opens a plaintext HTTP/2 channel to `host:port`.
pub async fn connect(host: &str) -> Channel {
    Endpoint::from_shared(format!("http://{host}"))
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {host}: {e}"))
}

/// Polls gRPC health (overall status `""`) until SERVING; panics after 10 s.
pub async fn wait_serving(host: &str) {
    let mut health = HealthClient::new(connect(host).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status);
        if matches!(status, Ok(s) if s == ServingStatus::Serving as i32) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{host} never became SERVING: {status:?}"
        );
        tokio::task::yield_now().await;
    }
}

/// A `google.protobuf.Value` from JSON.
pub fn to_value(json: serde_json::Value) -> Value {
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(Struct {
            fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

/// A `google.protobuf.Struct` from a JSON object; panics on other JSON.
pub fn to_struct(json: serde_json::Value) -> Struct {
    match to_value(json).kind {
        Some(Kind::StructValue(s)) => s,
        other => panic!("expected a JSON object, got {other:?}"),
    }
}

/// Shorthand: `json(serde_json::json!({...}))` → `Some(Struct)`, for filter and metadata fields.
pub fn json(value: serde_json::Value) -> Option<Struct> {
    Some(to_struct(value))
}

/// A `google.protobuf.Value` back to JSON, for comparing returned metadata.
pub fn from_value(value: &Value) -> serde_json::Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::json!(n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(from_value).collect())
        }
        Some(Kind::StructValue(s)) => from_struct(s),
    }
}

/// A `google.protobuf.Struct` back to a JSON object.
pub fn from_struct(s: &Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), from_value(v)))
            .collect(),
    )
}

/// A control plane whose recovery is held back: health is NOT_SERVING and index calls are
/// refused until [`Recovering::finish`] hands it an (empty, in-memory) catalog.
pub struct Recovering {
    pub addr: String,
    ready: tokio::sync::oneshot::Sender<Arc<Catalog>>,
    catalog: Arc<Catalog>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    _data_dir: tempfile::TempDir,
}

impl Recovering {
    /// Starts the control plane on 127.0.0.1 port 0 with `key` as its admin key.
    pub async fn start(key: &str) -> Recovering {
        let data_dir = tempfile::tempdir().unwrap();
        let larch_auth::Bootstrap {
            store: keys, admin, ..
        } = larch_auth::bootstrap(data_dir.path(), Some(key)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let data_plane = DataPlane::new(
            larch_engine::Engine::new(),
            keys.clone(),
            "127.0.0.1".parse().unwrap(),
            Metrics::new(),
        );
        let catalog = Arc::new(Catalog::new(
            Arc::new(larch::embedded::InProcess(data_plane)),
            PortPolicy::Ephemeral,
            "127.0.0.1",
        ));
        let (ready, recovered) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(larch_control_plane::serve(
            listener,
            async move { recovered.await.ok() },
            Arc::new(admin),
            Metrics::new(),
            larch_control_plane::Limits::default(),
            std::future::pending(),
        ));
        Recovering {
            addr,
            ready,
            catalog,
            server,
            _data_dir: data_dir,
        }
    }

    /// Ends recovery: the control plane starts serving its catalog. Returns the server task.
    pub fn finish(self) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
        self.ready.send(self.catalog).ok().unwrap();
        self.server
    }
}
