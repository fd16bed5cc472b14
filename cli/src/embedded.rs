//! The embedded server: the control plane, the data plane (one port per index) and the admin
//! port in one process. `larch serve` parses its flags into a [`Config`] and runs it; the
//! integration tests (`larch-tests`' `TestServer`) build a [`Config::ephemeral`] and run the
//! same code, so a test cannot pass while the binary wires things differently.
//!
//! Starting takes two steps, so a caller can act between them:
//! 1. [`Embedded::open`] locks the data dir, refuses a data dir it must not start on, and sets
//!    up the API keys (generating the bootstrap key on a first start); no port is bound yet.
//! 2. [`Embedded::start`] binds the admin and control ports, starts recovering the stored
//!    indexes in the background and returns a [`Running`] handle at once: the control port
//!    answers (health NOT_SERVING) until recovery completes, then SERVING.
//!
//! The server runs until the `shutdown` future given to [`Embedded::start`] resolves (the
//! binary passes SIGINT/SIGTERM) or [`Running::stop`] is called: readiness and health turn
//! NOT_SERVING, the planes drain their in-flight requests within [`Config::drain_timeout`],
//! and the admin port closes last.
//!
//! ```no_run
//! # async fn run() -> Result<(), larch::Error> {
//! let config = larch::embedded::Config::ephemeral("./larch-data");
//! let server = larch::embedded::serve(config, std::future::pending()).await?;
//! println!("control plane on {}", server.control_addr());
//! server.stop().await
//! # }
//! ```

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use larch_auth::{Admin, ApiKey, KeyStore, RateLimit};
use larch_catalog::{
    AttachError, AttachMode, Catalog, DataPlaneHost, HostError, IndexKey, PortPolicy,
};
use larch_data_plane::{DataPlane, IndexPorts};
use larch_engine::{BackupInfo, Engine, FlushPolicy, IndexConfig, ObjectLogConfig, SearchParams};
use larch_observe::{Limits, Listener, Metrics, Readiness, Tls};

use crate::lifecycle::{AdminServer, Ended, Error, Result, lock_data_dir, serve_until, wait_for};

/// Folder of the data dir holding one sub-folder per index.
pub const INDEXES_DIR: &str = "indexes";

/// Folder of the data dir where index directories the catalog does not list are moved at
/// start (beside [`INDEXES_DIR`], so on the same file system: a rename, never a copy).
pub const QUARANTINE_DIR: &str = "quarantine";

/// Folder of the data dir holding the state of bulk imports, a sub-folder per index.
pub const IMPORTS_DIR: &str = "imports";

/// The bulk imports of a server keeping its state in `data_dir` (`larch serve` and `larch
/// data-plane` alike): `file://` directories under `root` (`--import-root`; `None`: refused),
/// `s3://` URIs only if `allow_s3` (`--import-allow-s3`), job state under [`IMPORTS_DIR`].
pub fn imports(
    root: Option<PathBuf>,
    allow_s3: bool,
    data_dir: &Path,
) -> larch_data_plane::import::Imports {
    larch_data_plane::import::Imports::new(larch_data_plane::import::ImportSettings {
        root,
        allow_s3,
        state_dir: Some(data_dir.join(IMPORTS_DIR)),
    })
}

/// How long the drain after shutdown may take, unless configured (`--drain-timeout-secs`).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Namespaces with fewer records are searched exactly, unless configured (`--ann-min-rows`).
pub const DEFAULT_ANN_MIN_ROWS: usize = 5000;

/// Everything the embedded server is run with, as values (no setting is changed after
/// construction).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where Larch keeps its state: catalog, index data, the keys' hashes.
    pub data_dir: PathBuf,
    /// Address of the control plane (gRPC and REST); port 0 picks a free port.
    pub control_addr: SocketAddr,
    /// Address of the admin HTTP server (`/metrics`, `/healthz`, `/readyz`); port 0 picks a
    /// free port.
    pub admin_addr: SocketAddr,
    /// Which ports indexes get (bound on the control address' IP).
    pub data_ports: PortPolicy,
    /// Host shown in each index's `host`.
    pub advertise_host: String,
    /// How long the drain after shutdown may take.
    pub drain_timeout: Duration,
    /// When indexes flush their log into segments.
    pub flush: FlushPolicy,
    /// Namespaces with fewer records are searched exactly.
    pub ann_min_rows: usize,
    /// Writes that add data are refused once the process's memory would pass this many bytes
    /// (`None`: no budget).
    pub memory_budget: Option<u64>,
    /// The bootstrap admin key (`None`: the one stored in the data dir, or a new one generated
    /// at the first start, see [`Embedded::generated_key`]).
    pub api_key: Option<String>,
    /// Requests per second each API key may send (`None`: no limit).
    pub rate_limit: Option<RateLimit>,
    /// Whether refusals to an address that keeps presenting wrong keys are held back.
    pub auth_slowdown: bool,
    /// TLS for every port (`None`: plaintext).
    pub tls: Option<Tls>,
    /// Request limits of every port: the control port and every index port share one
    /// in-flight budget.
    pub limits: Limits,
    /// Bulk imports may read `file://` directories under this one (`--import-root`); `None`:
    /// imports are refused.
    pub import_root: Option<PathBuf>,
    /// Bulk imports may read `s3://bucket/prefix` URIs with this process's `AWS_*` settings
    /// (`--import-allow-s3`).
    pub import_allow_s3: bool,
    /// Keep everything in this bucket instead of the data dir (`--object-store-url`): the
    /// catalog and the access state as documents, every index (log, segments, manifests) as
    /// objects under a writer lease. A process started afresh, with an empty data dir, serves
    /// it all. Needs a configured API key ([`Config::api_key`]). `None`: the data dir.
    pub object_store: Option<larch_state::Bucket>,
    /// How indexes in [`Config::object_store`] hold their writer lease and batch their log.
    pub object_log: ObjectLogConfig,
}

impl Config {
    /// The embedded defaults of `larch serve` with every port on 127.0.0.1 chosen by the
    /// operating system (port 0, index ports included) and state in `data_dir`: what tests
    /// and other embedders want.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Config {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Config {
            data_dir: data_dir.into(),
            control_addr: loopback,
            admin_addr: loopback,
            data_ports: PortPolicy::Ephemeral,
            advertise_host: Ipv4Addr::LOCALHOST.to_string(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            flush: FlushPolicy::default(),
            ann_min_rows: DEFAULT_ANN_MIN_ROWS,
            memory_budget: None,
            api_key: None,
            rate_limit: None,
            auth_slowdown: true,
            tls: None,
            limits: Limits::default(),
            import_root: None,
            import_allow_s3: false,
            object_store: None,
            object_log: ObjectLogConfig::default(),
        }
    }
}

/// Opens the data dir of `config` and starts serving it until `shutdown` resolves (or
/// [`Running::stop`]): [`Embedded::open`] then [`Embedded::start`].
///
/// # Errors
///
/// As [`Embedded::open`] and [`Embedded::start`].
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = &'static str> + Send + 'static,
) -> Result<Running> {
    Embedded::open(config)?.start(shutdown).await
}

/// An embedded server whose data dir is locked and whose keys are set up, not yet serving.
pub struct Embedded {
    config: Config,
    /// Held until the server has stopped: a second server on the same data dir is refused.
    lock: std::fs::File,
    keys: KeyStore,
    admin: Admin,
    generated: Option<ApiKey>,
}

impl Embedded {
    /// Locks the data dir of `config`, checks it may be started on, and sets up the API keys
    /// (the bootstrap key, a rate limit, the failed-auth slowdown). Binds nothing.
    ///
    /// # Errors
    ///
    /// The data dir is locked by another server or cannot be locked, it holds index data
    /// without a catalog ([`Error::Refused`]), or the keys cannot be set up.
    pub fn open(config: Config) -> Result<Embedded> {
        let lock = lock_data_dir(&config.data_dir)?;
        let bootstrap = match &config.object_store {
            None => {
                // Before anything is written (a generated key) or bound.
                check_catalog_present(&config.data_dir)?;
                larch_auth::bootstrap(&config.data_dir, config.api_key.as_deref())
            }
            Some(bucket) => {
                // A key generated here would be lost with the data dir, which a process on a
                // bucket may start without.
                let Some(key) = config.api_key.as_deref() else {
                    return Err(Error::Refused(
                        "--object-store-url needs a configured admin key (LARCH_API_KEY or \
                         LARCH_API_KEY_FILE): a generated one would be lost with the data dir"
                            .to_owned(),
                    ));
                };
                let access = larch_state::SharedDocument::in_bucket(bucket, "access");
                larch_auth::bootstrap_shared(&config.data_dir, key, access)
            }
        }
        .map_err(|source| Error::Keys {
            path: config.data_dir.clone(),
            source,
        })?;
        let keys = bootstrap.store;
        if let Some(limit) = config.rate_limit {
            keys.limit_rate(limit);
            tracing::info!(
                per_second = limit.per_second,
                burst = limit.burst,
                "per-key rate limit on"
            );
        }
        keys.slow_down_failed_auth(config.auth_slowdown);
        Ok(Embedded {
            config,
            lock,
            keys,
            admin: bootstrap.admin,
            generated: bootstrap.generated,
        })
    }

    /// The bootstrap key, if it was generated now (a first start without
    /// [`Config::api_key`]): only its hash is stored, so this is the one chance to show it.
    pub fn generated_key(&self) -> Option<&ApiKey> {
        self.generated.as_ref()
    }

    /// The key store every port checks requests against.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// Binds the admin and control ports and starts serving: stored indexes are recovered in
    /// the background (health NOT_SERVING until they are), then the server runs until
    /// `shutdown` resolves — naming what asked for it (e.g. `"SIGTERM"`), which is logged —
    /// or [`Running::stop`] is called, and drains.
    ///
    /// # Errors
    ///
    /// A port cannot be bound.
    pub async fn start(
        self,
        shutdown: impl Future<Output = &'static str> + Send + 'static,
    ) -> Result<Running> {
        let Embedded {
            config,
            lock,
            keys,
            admin,
            generated: _,
        } = self;
        // One registry for both planes, the engine's storage timings and the gate's refusals:
        // this server's own, so servers sharing a process keep separate counts.
        let metrics = Metrics::new();
        if !keys.count_refusals(metrics.refusal_counter()) {
            tracing::warn!(
                "the key store already counts its refusals elsewhere; /metrics will not show them"
            );
        }
        // The admin port answers from the start: /healthz at once, /readyz once recovered.
        let readiness = Readiness::new();
        let admin_server =
            AdminServer::start(config.admin_addr, metrics.clone(), readiness.clone()).await?;

        let listener = tokio::net::TcpListener::bind(config.control_addr)
            .await
            .map_err(|source| Error::Listen {
                addr: config.control_addr,
                flag: "",
                source,
            })?;
        let control_addr = listener.local_addr().map_err(Error::LocalAddr)?;
        let root = config.data_dir.join(INDEXES_DIR);
        let engine = match &config.object_store {
            None => Engine::open_with(root, config.flush),
            Some(bucket) => Engine::open_on_store(
                root,
                config.flush,
                Arc::clone(&bucket.store),
                bucket.prefix.clone(),
            )
            .with_object_log(config.object_log.clone()),
        };
        let engine = engine
            .with_ann_min_rows(config.ann_min_rows)
            .with_storage_timer(metrics.storage_timer());
        let engine = match config.memory_budget {
            Some(bytes) => engine.with_memory_budget(bytes),
            None => engine,
        };
        let data_plane = DataPlane::with_ports(
            engine,
            keys,
            metrics.clone(),
            IndexPorts {
                bind_ip: control_addr.ip(),
                tls: config.tls.clone(),
                // One in-flight budget for the control port and every index port.
                limits: config.limits.clone(),
                imports: imports(
                    config.import_root.clone(),
                    config.import_allow_s3,
                    &config.data_dir,
                ),
            },
        );

        // The control port answers (health NOT_SERVING) while stored indexes are recovered.
        let (ready, recovered) = tokio::sync::oneshot::channel();
        let (stop_control, control_stopped) = tokio::sync::watch::channel(false);
        let control = tokio::spawn(larch_control_plane::serve(
            Listener::new(listener, config.tls.clone()),
            async move { recovered.await.ok() },
            Arc::new(admin),
            metrics.clone(),
            config.limits.clone(),
            wait_for(control_stopped),
        ));
        tracing::info!(
            addr = %control_addr,
            data_ports = %config.data_ports,
            advertise_host = %config.advertise_host,
            tls = config.tls.is_some(),
            data_dir = %config.data_dir.display(),
            "larch control plane listening",
        );

        // Recovery replays every index's log: blocking work, kept off the async workers.
        let recovery = {
            let (data_plane, data_dir) = (data_plane.clone(), config.data_dir.clone());
            let (ports, advertise_host) = (config.data_ports, config.advertise_host.clone());
            let catalog = config
                .object_store
                .as_ref()
                .map(|bucket| larch_state::SharedDocument::in_bucket(bucket, "catalog"));
            tokio::task::spawn_blocking(move || {
                recover(&data_dir, catalog, data_plane, ports, advertise_host)
            })
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            tokio::select! {
                reason = shutdown => reason,
                // Running::stop, or the handle dropped.
                _ = stopped => "stop requested",
            }
        };
        let admin_addr = admin_server.addr();
        let lifetime = Lifetime {
            lock,
            readiness,
            admin_server,
            stop_control,
            control,
            data_plane: data_plane.clone(),
            drain_timeout: config.drain_timeout,
        };
        let task = tokio::spawn(lifetime.run(recovery, ready, shutdown));
        Ok(Running {
            control_addr,
            admin_addr,
            data_plane,
            metrics,
            limits: config.limits,
            stop,
            task,
        })
    }
}

/// A running embedded server. Dropping it stops the server as [`Running::stop`] does, without
/// waiting for the drain.
pub struct Running {
    control_addr: SocketAddr,
    admin_addr: SocketAddr,
    data_plane: DataPlane,
    metrics: Metrics,
    limits: Limits,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Running {
    /// The bound address of the control plane.
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// The bound address of the admin server (`/metrics`, `/healthz`, `/readyz`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The data plane, e.g. to see what reached the engine where no RPC shows it.
    pub fn data_plane(&self) -> &DataPlane {
        &self.data_plane
    }

    /// The metrics every port records into (what `/metrics` shows).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The limits every port is held to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Starts the shutdown as the `shutdown` future would and waits for the drain.
    ///
    /// # Errors
    ///
    /// As [`Running::join`].
    pub async fn stop(self) -> Result<()> {
        let Running { stop, task, .. } = self;
        // The receiver is gone only if the server already ended.
        let _ = stop.send(());
        task.await.map_err(Error::Task)?
    }

    /// Waits until the server has stopped (after its `shutdown` future resolved and the
    /// drain) or failed.
    ///
    /// # Errors
    ///
    /// Recovering the stored indexes failed, or the control plane failed on its own.
    pub async fn join(self) -> Result<()> {
        let Running { stop, task, .. } = self;
        let result = task.await.map_err(Error::Task)?;
        // Kept until here: dropping it stops the server.
        drop(stop);
        result
    }
}

/// What the task of a [`Running`] server owns, to stop it.
struct Lifetime {
    /// The data dir's lock, released once the server has stopped.
    lock: std::fs::File,
    readiness: Readiness,
    admin_server: AdminServer,
    stop_control: tokio::sync::watch::Sender<bool>,
    control: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    data_plane: DataPlane,
    drain_timeout: Duration,
}

impl Lifetime {
    /// Serves from the end of `recovery` until `shutdown`, then drains: readiness and health
    /// NOT_SERVING, both planes finish their in-flight requests within the drain timeout, and
    /// the admin server stops last (so scrapes work through the drain).
    async fn run<E>(
        mut self,
        recovery: tokio::task::JoinHandle<Result<Catalog, E>>,
        ready: tokio::sync::oneshot::Sender<Arc<Catalog>>,
        shutdown: impl Future<Output = &'static str>,
    ) -> Result<()>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let ended = serve_until(
            recovery,
            ready,
            &self.readiness,
            &mut self.control,
            shutdown,
        )
        .await?;
        let signal = match ended {
            Ended::Shutdown(signal) => signal,
            Ended::Stopped => return Ok(()),
        };
        tracing::info!(signal, "shutting down: draining in-flight requests");
        // With gRPC health turning NOT_SERVING: probes stop sending traffic.
        self.readiness.set(false);
        let _ = self.stop_control.send(true);
        let timeout = self.drain_timeout;
        let drain = async {
            let (control, ()) = tokio::join!(self.control, self.data_plane.shutdown(timeout));
            control
        };
        match tokio::time::timeout(timeout, drain).await {
            Ok(result) => result
                .map_err(Error::ControlPlaneTask)?
                .map_err(Error::ControlPlane)?,
            Err(_) => tracing::warn!(timeout = ?timeout, "drain timed out"),
        }
        // Writes have stopped: indexes in a bucket are handed over at once (nothing otherwise).
        let engine = self.data_plane.engine().clone();
        match tokio::task::spawn_blocking(move || engine.release_leases()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "cannot release every writer lease"),
            Err(err) => tracing::warn!(error = %err, "releasing the writer leases failed"),
        }
        self.admin_server.stop().await;
        drop(self.lock);
        tracing::info!("stopped");
        Ok(())
    }
}

/// Refuses to start when the catalog file of `data_dir` is missing while its indexes directory
/// holds index directories: an empty catalog would not serve them (and older versions deleted
/// them), so this is most likely a partial restore or a mistake, and the operator decides.
fn check_catalog_present(data_dir: &Path) -> Result<()> {
    let catalog = data_dir.join(larch_catalog::CATALOG_FILE);
    if catalog.exists() {
        return Ok(());
    }
    let indexes = data_dir.join(INDEXES_DIR);
    // Opening does no IO; this only lists the directories.
    let dirs: Vec<String> = Engine::open(&indexes)
        .index_dirs()
        .map_err(|source| Error::ListIndexes {
            path: indexes.clone(),
            source,
        })?
        .into_iter()
        .filter(|dir| !dir.starts_with('.'))
        .collect();
    if dirs.is_empty() {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "refusing to start: {} is missing, but {} holds the data of {} index(es): {}. Restore \
         catalog.json (from the backup the data came from) to serve them, or, to start with no \
         indexes, move these directories out of {} first; nothing was changed",
        catalog.display(),
        indexes.display(),
        dirs.len(),
        dirs.join(", "),
        indexes.display(),
    )))
}

/// Opens the catalog of `data_dir` — or `in_bucket`, the catalog document in the bucket —
/// (which opens every stored index on `data_plane`), removes the data of deleted indexes and
/// moves aside index directories the catalog does not list.
fn recover(
    data_dir: &Path,
    in_bucket: Option<larch_state::SharedDocument>,
    data_plane: DataPlane,
    ports: PortPolicy,
    advertise_host: String,
) -> Result<Catalog, Box<dyn std::error::Error + Send + Sync>> {
    let host = Arc::new(InProcess(data_plane.clone()));
    let catalog = match in_bucket {
        None => Catalog::open(data_dir, host, ports, advertise_host)?,
        Some(doc) => Catalog::open_document(doc, host, ports, advertise_host)?,
    };
    let deleted = catalog.tombstones()?;
    data_plane.collect_orphans(
        &catalog.index_keys()?,
        &deleted,
        &data_dir.join(QUARANTINE_DIR),
    )?;
    catalog.confirm_removed(&deleted)?;
    Ok(catalog)
}

/// The data plane of this process as the catalog's [`DataPlaneHost`]: the one place the two
/// planes meet in embedded mode, so neither server crate depends on the other.
pub struct InProcess(pub DataPlane);

impl DataPlaneHost for InProcess {
    fn attach(
        &self,
        key: &IndexKey,
        config: IndexConfig,
        search: SearchParams,
        port: u16,
        mode: AttachMode,
    ) -> Result<u16, AttachError> {
        self.0.attach(key, config, search, port, mode)
    }

    fn configure(&self, key: &IndexKey, search: SearchParams) -> Result<(), HostError> {
        self.0.configure(key, search)
    }

    fn detach(&self, key: &IndexKey) -> Result<(), HostError> {
        self.0.detach(key)
    }

    fn backup(&self, key: &IndexKey, backup_id: &str) -> Result<BackupInfo, HostError> {
        self.0.backup(key, backup_id)
    }

    fn restore(&self, backup_id: &str, key: &IndexKey) -> Result<BackupInfo, HostError> {
        self.0.restore(backup_id, key)
    }

    fn delete_backup(&self, backup_id: &str) -> Result<(), HostError> {
        self.0.delete_backup(backup_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    fn config(dir: &Path) -> Config {
        Config {
            api_key: Some(ApiKey::generate().as_str().to_owned()),
            ..Config::ephemeral(dir)
        }
    }

    /// Polls the control plane's gRPC health until SERVING (the deadline only bounds a
    /// failure).
    async fn wait_serving(addr: SocketAddr) {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
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
                "never SERVING: {status:?}"
            );
            tokio::task::yield_now().await;
        }
    }

    /// The data dir stays locked while the server runs (a second server is refused, naming
    /// the lock) until the `shutdown` future has resolved and the drain is over; then it can
    /// be opened again, with the key set up before and no new key generated.
    #[tokio::test]
    async fn a_server_holds_its_data_dir_from_open_until_its_drain_is_over() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let (shut, shutdown) = tokio::sync::oneshot::channel::<()>();
        let server = serve(config.clone(), async {
            let _ = shutdown.await;
            "test shutdown"
        })
        .await
        .unwrap();
        assert_ne!(
            server.control_addr().port(),
            0,
            "the bound port is reported"
        );
        assert_ne!(server.admin_addr().port(), 0, "the bound port is reported");
        wait_serving(server.control_addr()).await;

        let second = Embedded::open(config.clone());
        assert!(
            matches!(&second, Err(Error::Locked { path, .. }) if path.ends_with("LOCK")),
            "a second server on the data dir is refused: {:?}",
            second.err()
        );

        shut.send(()).unwrap();
        server.join().await.unwrap();
        let again = Embedded::open(config).unwrap();
        assert!(
            again.generated_key().is_none(),
            "the configured key is kept"
        );
    }

    /// Index data without a catalog is refused before anything is written: no key is
    /// generated and the directories stay where they are.
    #[tokio::test]
    async fn index_data_without_a_catalog_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let movies = dir.path().join(INDEXES_DIR).join("movies");
        std::fs::create_dir_all(&movies).unwrap();
        let refused = Embedded::open(Config::ephemeral(dir.path()));
        match refused {
            Err(Error::Refused(message)) => {
                assert!(message.contains("movies"), "names the index: {message}")
            }
            Err(other) => panic!("expected a refusal, got {other}"),
            Ok(_) => panic!("expected a refusal, the server opened"),
        }
        assert!(movies.exists(), "nothing is moved");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != "LOCK")
            .collect();
        assert_eq!(left, [INDEXES_DIR], "no key or catalog was written");
    }

    /// Without a configured key the first start generates one to show, and a later start on
    /// the same data dir does not.
    #[tokio::test]
    async fn only_a_first_start_without_a_key_generates_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = Embedded::open(Config::ephemeral(dir.path())).unwrap();
        let key = first
            .generated_key()
            .expect("a key is generated")
            .as_str()
            .to_owned();
        drop(first);
        let next = Embedded::open(Config::ephemeral(dir.path())).unwrap();
        assert!(next.generated_key().is_none(), "shown only once");
        assert!(
            !std::fs::read_to_string(dir.path().join("bootstrap-key.json"))
                .unwrap()
                .contains(&key),
            "only the key's hash is stored"
        );
    }
}
