//! `larch control-plane` and `larch data-plane`: the two planes as separate processes (split
//! mode), for deployments where they scale and restart independently (e.g. a control-plane
//! Deployment and a data-plane StatefulSet on Kubernetes).
//!
//! The control plane keeps the catalog, projects and keys in its data dir and serves the public
//! control-plane API plus `larch.internal.v1.ControlPlaneSync`. The data plane keeps index data
//! in its own data dir, serves every index on one address — routed by the host each request
//! was sent to, from the control plane's `--host-template` — and follows the control plane:
//! told of each index change as it happens, and pulling every index and key every
//! `--key-refresh-secs`. Both are given the same admin key (`LARCH_API_KEY` or
//! `LARCH_API_KEY_FILE`), which authenticates the calls between them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use larch_auth::grpc::SendKey;
use larch_auth::{ApiKey, Grant, KeyStore, StoredKey};
use larch_catalog::{HostTemplate, SharedDocument};
use larch_control_plane::split::RemoteDataPlane;
use larch_data_plane::routed::{ControlPlane, RoutedDataPlane};
use larch_engine::{Engine, FlushPolicy};

use larch_observe::internal::CallTimeouts;
use larch_observe::{Limits, Listener, LogFormat, Metrics, Readiness, Tls};

use larch::embedded::INDEXES_DIR;
use larch::lifecycle::{AdminServer, Ended, lock_data_dir, serve_until, wait_for};

use crate::serve::{ServerArgs, shutdown_signal};

/// Flags of `larch control-plane`.
#[derive(Debug, clap::Args)]
pub(crate) struct ControlPlaneArgs {
    /// Where the control plane keeps the catalog, projects and the keys' hashes (with
    /// --shared-state-dir: only this replica's lock and the admin key's hash).
    #[arg(long, env = "LARCH_DATA_DIR", default_value = "./larch-data")]
    data_dir: PathBuf,
    /// Keep the catalog, projects and the keys' hashes in this directory, shared by every
    /// control-plane replica (a ReadWriteMany volume mounted by each pod), so that several
    /// replicas serve side by side. Each change is written as a new version with a conditional
    /// create; replicas read the newest before answering and pick up keys changed elsewhere
    /// within 2 seconds. At the first start, a single control plane's state in --data-dir is
    /// copied in.
    #[arg(long, env = "LARCH_SHARED_STATE_DIR")]
    shared_state_dir: Option<PathBuf>,
    /// Address of the control plane (gRPC and REST). Port 0 picks a free port.
    #[arg(long, env = "LARCH_CONTROL_ADDR", default_value = "127.0.0.1:5080")]
    control_addr: SocketAddr,
    /// URL of the data plane, e.g. http://larch-data-0.larch-data:5081.
    #[arg(long, env = "LARCH_DATA_PLANE_URL")]
    data_plane_url: String,
    /// Host of each index, e.g. "{index}.{project}.data.example.com:5081": the data plane
    /// routes requests by the host they were sent to, so point a wildcard DNS name at it.
    #[arg(long, env = "LARCH_HOST_TEMPLATE")]
    host_template: String,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    internal: InternalArgs,
    /// PEM CA certificate(s) to trust when --data-plane-url is https.
    #[arg(long, env = "LARCH_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

impl ControlPlaneArgs {
    /// How to log, needed before the rest of the configuration is checked.
    pub(crate) fn log_format(&self) -> LogFormat {
        self.server.log_format
    }
}

impl DataPlaneArgs {
    /// How to log, needed before the rest of the configuration is checked.
    pub(crate) fn log_format(&self) -> LogFormat {
        self.server.log_format
    }
}

/// Flags of `larch data-plane`.
#[derive(Debug, clap::Args)]
pub(crate) struct DataPlaneArgs {
    /// Where the data plane keeps index data.
    #[arg(long, env = "LARCH_DATA_DIR", default_value = "./larch-data")]
    data_dir: PathBuf,
    /// Address serving every index (gRPC and REST, routed by host). Port 0 picks a free port.
    #[arg(long, env = "LARCH_DATA_ADDR", default_value = "127.0.0.1:5081")]
    data_addr: SocketAddr,
    /// URL of the control plane, e.g. http://larch-control:5080.
    #[arg(long, env = "LARCH_CONTROL_PLANE_URL")]
    control_plane_url: String,
    /// Seconds between pulls of indexes and keys from the control plane: a revoked key is
    /// refused here at most this long (plus one round trip) after the control plane revoked it.
    #[arg(long, env = "LARCH_KEY_REFRESH_SECS", default_value_t = 2)]
    key_refresh_secs: u64,
    /// Seconds the keys pulled last may be old (the control plane not answering) before this
    /// data plane stops serving: readiness and health turn false and index requests get
    /// UNAVAILABLE, instead of honouring keys that may have been revoked meanwhile. Default: 10
    /// times --key-refresh-secs.
    #[arg(long, env = "LARCH_KEY_MAX_AGE_SECS")]
    key_max_age_secs: Option<u64>,
    /// Flush an index's write-ahead log into segment files once it holds this many MiB.
    #[arg(long, env = "LARCH_WAL_FLUSH_MB", default_value_t = 64)]
    wal_flush_mb: u64,
    /// Namespaces with fewer records are searched exactly; larger ones get an HNSW graph.
    #[arg(long, env = "LARCH_ANN_MIN_ROWS", default_value_t = 5000)]
    ann_min_rows: usize,
    #[command(flatten)]
    memory: crate::limits::MemoryArgs,
    /// Allow bulk imports (POST /bulk/imports) of file:// directories under this one; without
    /// it imports are refused. Paths outside it (through `..` or symlinks too) are refused.
    #[arg(long, env = "LARCH_IMPORT_ROOT")]
    import_root: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    internal: InternalArgs,
    /// PEM CA certificate(s) to trust when --control-plane-url is https.
    #[arg(long, env = "LARCH_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

/// Bounds on the calls between the planes, flags of both commands.
#[derive(Debug, clap::Args)]
struct InternalArgs {
    /// Seconds a call to the other plane may take (the control plane attaching, configuring or
    /// detaching an index on the data plane; the data plane pulling indexes and keys) before it
    /// fails: a change then fails with UNAVAILABLE, a pull is logged and retried. Connecting
    /// may take at most this long too (at most 5 s), and idle connections are checked with
    /// HTTP/2 PINGs every 10 s (or this long, if shorter).
    #[arg(long, env = "LARCH_INTERNAL_TIMEOUT_SECS", default_value_t = 10)]
    internal_timeout_secs: u64,
}

impl InternalArgs {
    fn timeouts(&self) -> Result<CallTimeouts, String> {
        if self.internal_timeout_secs == 0 {
            return Err("--internal-timeout-secs must be at least 1".into());
        }
        Ok(CallTimeouts::new(Duration::from_secs(
            self.internal_timeout_secs,
        )))
    }
}

/// The admin key both planes need in split mode.
fn admin_key() -> Result<String, String> {
    crate::configured_api_key()?.ok_or_else(|| {
        "split mode needs the admin key on both planes: set LARCH_API_KEY or LARCH_API_KEY_FILE \
         to the same key for `larch control-plane` and `larch data-plane`"
            .to_owned()
    })
}

fn send_key(key: &str) -> Result<SendKey, String> {
    SendKey::new(key).ok_or_else(|| "the API key cannot be sent as request metadata".to_owned())
}

/// Checks an internal `url` (`flag` names it in errors) and returns the CA to trust for it:
/// required for https.
fn internal_ca(url: &str, ca: Option<&PathBuf>, flag: &str) -> Result<Option<Vec<u8>>, String> {
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(format!(
            "{flag}: {url:?} is not a URL such as http://larch-data:5081"
        ));
    }
    match (url.starts_with("https://"), ca) {
        (true, Some(path)) => std::fs::read(path)
            .map(Some)
            .map_err(|err| format!("--tls-ca: cannot read {}: {err}", path.display())),
        (true, None) => Err(format!(
            "{flag} is https: give the CA that signed its certificate with --tls-ca"
        )),
        (false, _) => Ok(None),
    }
}

/// Validated configuration of `larch control-plane`.
pub(crate) struct ControlPlaneConfig {
    args: ControlPlaneArgs,
    template: HostTemplate,
    key: String,
    tls: Option<Tls>,
    limits: Limits,
    ca: Option<Vec<u8>>,
    timeouts: CallTimeouts,
}

impl ControlPlaneArgs {
    pub(crate) fn into_config(self) -> Result<ControlPlaneConfig, String> {
        let template = HostTemplate::parse(&self.host_template)
            .map_err(|e| format!("--host-template: {e}"))?;
        let key = admin_key()?;
        send_key(&key)?;
        let tls = self.server.tls.load()?;
        let limits = self.server.limits.limits()?;
        let ca = internal_ca(
            &self.data_plane_url,
            self.tls_ca.as_ref(),
            "--data-plane-url",
        )?;
        let timeouts = self.internal.timeouts()?;
        Ok(ControlPlaneConfig {
            args: self,
            template,
            key,
            tls,
            limits,
            ca,
            timeouts,
        })
    }
}

/// Validated configuration of `larch data-plane`.
pub(crate) struct DataPlaneConfig {
    args: DataPlaneArgs,
    key: String,
    tls: Option<Tls>,
    limits: Limits,
    ca: Option<Vec<u8>>,
    timeouts: CallTimeouts,
    key_max_age: Duration,
    key_file: Option<PathBuf>,
}

impl DataPlaneArgs {
    pub(crate) fn into_config(self) -> Result<DataPlaneConfig, String> {
        if self.key_refresh_secs == 0 || self.wal_flush_mb == 0 {
            return Err("--key-refresh-secs and --wal-flush-mb must be at least 1".into());
        }
        let key = admin_key()?;
        send_key(&key)?;
        let tls = self.server.tls.load()?;
        let limits = self.server.limits.limits()?;
        let ca = internal_ca(
            &self.control_plane_url,
            self.tls_ca.as_ref(),
            "--control-plane-url",
        )?;
        let timeouts = self.internal.timeouts()?;
        let key_max_age = self
            .key_max_age_secs
            .unwrap_or(self.key_refresh_secs.saturating_mul(10));
        if key_max_age <= self.key_refresh_secs {
            return Err(format!(
                "--key-max-age-secs ({key_max_age}) must be longer than --key-refresh-secs ({})",
                self.key_refresh_secs
            ));
        }
        // Read again before every pull, so a rotated key is picked up without a restart.
        let key_file = std::env::var_os("LARCH_API_KEY_FILE")
            .filter(|path| !path.is_empty())
            .map(PathBuf::from);
        Ok(DataPlaneConfig {
            args: self,
            key,
            tls,
            limits,
            ca,
            timeouts,
            key_max_age: Duration::from_secs(key_max_age),
            key_file,
        })
    }
}

/// Runs `larch control-plane` until SIGINT or SIGTERM, then drains and returns.
pub(crate) fn run_control_plane(config: ControlPlaneConfig) -> anyhow::Result<()> {
    crate::serve::run_server(control_plane(config))
}

async fn control_plane(config: ControlPlaneConfig) -> anyhow::Result<()> {
    let ControlPlaneConfig {
        args,
        template,
        key,
        tls,
        limits,
        ca,
        timeouts,
    } = config;
    let data_dir = &args.data_dir;
    let _lock = lock_data_dir(data_dir)?;
    let (bootstrap, catalog_doc) = match &args.shared_state_dir {
        None => {
            let bootstrap = larch_auth::bootstrap(data_dir, Some(&key))
                .with_context(|| format!("cannot set up API keys in {}", data_dir.display()))?;
            (bootstrap, None)
        }
        Some(shared) => {
            let (access, catalog) = shared_state(data_dir, shared)?;
            let bootstrap = larch_auth::bootstrap_shared(data_dir, &key, access)
                .with_context(|| format!("cannot set up API keys in {}", shared.display()))?;
            (bootstrap, Some(catalog))
        }
    };
    let admin = Arc::new(bootstrap.admin);
    let refresh = catalog_doc.is_some().then(|| {
        tokio::spawn(larch_control_plane::split::keep_access_refreshed(
            Arc::clone(&admin),
        ))
    });
    let metrics = Metrics::new();
    // A fresh store: nothing counts its refusals yet.
    admin.store().count_refusals(metrics.refusal_counter());
    let readiness = Readiness::new();
    let admin_server =
        AdminServer::start(args.server.admin_addr, metrics.clone(), readiness.clone()).await?;
    let listener = tokio::net::TcpListener::bind(args.control_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.control_addr))?;
    let addr = listener.local_addr()?;
    let remote = RemoteDataPlane::new(
        &args.data_plane_url,
        send_key(&key).map_err(anyhow::Error::msg)?,
        template.clone(),
        ca,
        timeouts,
    )
    .map_err(anyhow::Error::msg)?;

    let (ready, recovered) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut control = tokio::spawn(larch_control_plane::serve_split(
        Listener::new(listener, tls),
        async move { recovered.await.ok() },
        admin,
        metrics,
        limits,
        wait_for(stopped),
    ));
    tracing::info!(
        %addr,
        data_plane = %args.data_plane_url,
        host_template = %template,
        data_dir = %data_dir.display(),
        "larch control plane listening",
    );
    let dir = data_dir.clone();
    let recovery = tokio::task::spawn_blocking(move || match catalog_doc {
        Some(doc) => larch_control_plane::split::open_shared_catalog(doc, remote),
        None => larch_control_plane::split::open_catalog(&dir, remote),
    });
    let ended = serve_until(recovery, ready, &readiness, &mut control, shutdown_signal()).await?;
    let signal = match ended {
        Ended::Shutdown(signal) => signal,
        Ended::Stopped => return Ok(()),
    };
    let timeout = args.server.drain_timeout();
    let drained = drain(
        signal,
        Shutdown {
            readiness,
            stop,
            admin_server,
        },
        control,
        timeout,
        "control plane",
    )
    .await;
    if let Some(refresh) = refresh {
        refresh.abort();
    }
    drained
}

/// The two documents of a shared state directory (`access` for projects and keys, `catalog`
/// for indexes); at the first start, the state a single control plane kept in `data_dir`
/// (`access.json`, `catalog.json`) becomes their first version, so a deployment can grow from
/// one replica to several.
fn shared_state(
    data_dir: &std::path::Path,
    shared: &std::path::Path,
) -> anyhow::Result<(SharedDocument, SharedDocument)> {
    let open = |name: &str| {
        SharedDocument::local(shared, name)
            .with_context(|| format!("cannot use --shared-state-dir {}", shared.display()))
    };
    let (access, catalog) = (open("access")?, open("catalog")?);
    for (doc, file) in [
        (&access, larch_auth::admin::ACCESS_FILE),
        (&catalog, larch_catalog::CATALOG_FILE),
    ] {
        let path = data_dir.join(file);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        if doc.refresh(0)?.is_none() && doc.write_next(0, bytes)? == larch_catalog::Written::Done(1)
        {
            tracing::info!(from = %path.display(), to = doc.location(), "copied a single control plane's state into the shared state");
        }
    }
    Ok((access, catalog))
}

/// What a server command stops on a signal.
struct Shutdown {
    readiness: Readiness,
    stop: tokio::sync::watch::Sender<bool>,
    admin_server: AdminServer,
}

/// After `signal`: readiness off, stop accepting and drain `server` within `timeout`, then stop
/// the admin server (last, so scrapes work through the drain).
async fn drain(
    signal: &str,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<()> {
    tracing::info!(signal, "shutting down: draining in-flight requests");
    shutdown.readiness.set(false);
    let _ = shutdown.stop.send(true);
    match tokio::time::timeout(timeout, server).await {
        Ok(result) => result
            .with_context(|| format!("{what} task failed"))?
            .with_context(|| format!("{what} failed"))?,
        Err(_) => tracing::warn!(?timeout, "drain timed out"),
    }
    shutdown.admin_server.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// Runs `larch data-plane` until SIGINT or SIGTERM, then drains and returns.
pub(crate) fn run_data_plane(config: DataPlaneConfig) -> anyhow::Result<()> {
    crate::serve::run_server(data_plane(config))
}

async fn data_plane(config: DataPlaneConfig) -> anyhow::Result<()> {
    let DataPlaneConfig {
        args,
        key,
        tls,
        limits,
        ca,
        timeouts,
        key_max_age,
        key_file,
    } = config;
    let data_dir = &args.data_dir;
    let _lock = lock_data_dir(data_dir)?;
    // Until the first pull from the control plane, only the admin key is known.
    let keys = KeyStore::new();
    let admin = ApiKey::from_configured(&key).context("LARCH_API_KEY")?;
    keys.insert(StoredKey::new(&admin, Grant::admin()));
    let flush = FlushPolicy {
        wal_bytes: args.wal_flush_mb.saturating_mul(1024 * 1024),
        ..FlushPolicy::default()
    };
    let metrics = Metrics::new();
    keys.count_refusals(metrics.refusal_counter());
    let engine = Engine::open_with(data_dir.join(INDEXES_DIR), flush)
        .with_ann_min_rows(args.ann_min_rows)
        .with_storage_timer(metrics.storage_timer());
    let engine = args.memory.apply(engine);
    let readiness = Readiness::new();
    let admin_server =
        AdminServer::start(args.server.admin_addr, metrics.clone(), readiness.clone()).await?;
    let imports =
        larch_data_plane::import::Imports::new(larch_data_plane::import::ImportSettings {
            root: args.import_root.clone(),
            state_dir: Some(data_dir.join(larch::embedded::IMPORTS_DIR)),
        });
    let data_plane =
        RoutedDataPlane::with_limits(engine, keys, metrics, limits).with_imports(imports);
    let listener = tokio::net::TcpListener::bind(args.data_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.data_addr))?;
    let addr = listener.local_addr()?;
    let control_plane = ControlPlane {
        url: args.control_plane_url.clone(),
        admin_key: send_key(&key).map_err(anyhow::Error::msg)?,
        refresh: Duration::from_secs(args.key_refresh_secs),
        ca_pem: ca,
        timeouts,
        admin_key_file: key_file,
        key_max_age,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut server = tokio::spawn(larch_data_plane::routed::serve_routed(
        Listener::new(listener, tls),
        data_plane,
        control_plane,
        readiness.clone(),
        wait_for(stopped),
    ));
    tracing::info!(
        %addr,
        control_plane = %args.control_plane_url,
        data_dir = %data_dir.display(),
        "larch data plane listening",
    );
    let signal = tokio::select! {
        signal = shutdown_signal() => signal,
        result = &mut server => {
            return result.context("data plane task failed")?.context("data plane failed");
        }
    };
    let timeout = args.server.drain_timeout();
    let shutdown = Shutdown {
        readiness,
        stop,
        admin_server,
    };
    drain(signal, shutdown, server, timeout, "data plane").await
}
