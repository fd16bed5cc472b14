//! `larch serve`: both planes in one process.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use larch_catalog::{Catalog, PortPolicy};
use larch_data_plane::DataPlane;
use larch_engine::{Engine, FlushPolicy};
use larch_observe::{Limits, Listener, LogFormat, Metrics, Readiness, Tls};

/// Folder of the data dir holding one sub-folder per index.
pub(crate) const INDEXES_DIR: &str = "indexes";

/// Folder of the data dir where index directories the catalog does not list are moved at
/// start (beside [`INDEXES_DIR`], so on the same file system: a rename, never a copy).
pub(crate) const QUARANTINE_DIR: &str = "quarantine";

/// Start-up refused because of what is on disk rather than a fault: the process exits 64, as
/// for bad configuration, since the operator must act before a restart can help.
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Refuses to start when the catalog file of `data_dir` is missing while its indexes directory
/// holds index directories:
/// an empty catalog would not serve them (and older versions deleted them), so this is most
/// likely a partial restore or a mistake, and the operator decides.
pub(crate) fn check_catalog_present(data_dir: &Path) -> anyhow::Result<()> {
    let catalog = data_dir.join(larch_catalog::CATALOG_FILE);
    if catalog.exists() {
        return Ok(());
    }
    // Opening does no IO; this only lists the directories.
    let dirs: Vec<String> = Engine::open(data_dir.join(INDEXES_DIR))
        .index_dirs()?
        .into_iter()
        .filter(|dir| !dir.starts_with('.'))
        .collect();
    if dirs.is_empty() {
        return Ok(());
    }
    let indexes = data_dir.join(INDEXES_DIR);
    Err(Refused(format!(
        "refusing to start: {} is missing, but {} holds the data of {} index(es): {}. Restore \
         catalog.json (from the backup the data came from) to serve them, or, to start with no \
         indexes, move these directories out of {} first; nothing was changed",
        catalog.display(),
        indexes.display(),
        dirs.len(),
        dirs.join(", "),
        indexes.display(),
    ))
    .into())
}

/// How long the admin server may take to finish its requests once the planes have stopped.
const ADMIN_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// Flags of `larch serve`; each has an environment twin.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Where Larch keeps its state: catalog, index data, the bootstrap key's hash.
    #[arg(long, env = "LARCH_DATA_DIR", default_value = "./larch-data")]
    data_dir: PathBuf,
    /// Address of the control plane (gRPC). Port 0 picks a free port.
    #[arg(long, env = "LARCH_CONTROL_ADDR", default_value = "127.0.0.1:5080")]
    control_addr: SocketAddr,
    /// Data-plane ports: each index gets its own port from this range ("0" = any free port).
    #[arg(long, env = "LARCH_DATA_PORTS", default_value = "5081-5199")]
    data_ports: String,
    /// Host shown in each index's `host` [default: the control address' IP, or 127.0.0.1 when
    /// that is unspecified].
    #[arg(long, env = "LARCH_ADVERTISE_HOST")]
    advertise_host: Option<String>,
    /// Flush an index's write-ahead log into segment files once it holds this many MiB
    /// (bounds restart time: recovery replays at most about this much log).
    #[arg(long, env = "LARCH_WAL_FLUSH_MB", default_value_t = 64)]
    wal_flush_mb: u64,
    /// Namespaces with fewer records are searched exactly; larger ones get an HNSW graph, built
    /// in the background.
    #[arg(long, env = "LARCH_ANN_MIN_ROWS", default_value_t = 5000)]
    ann_min_rows: usize,
    #[command(flatten)]
    memory: crate::limits::MemoryArgs,
    /// Requests per second each API key may send; beyond it requests get RESOURCE_EXHAUSTED
    /// with a retry pushback [default: no limit].
    #[arg(long, env = "LARCH_RATE_LIMIT")]
    rate_limit: Option<u32>,
    /// Requests a key may send at once after being idle [default: the rate limit].
    #[arg(long, env = "LARCH_RATE_LIMIT_BURST", requires = "rate_limit")]
    rate_limit_burst: Option<u32>,
    /// Hold back the refusals sent to an address that keeps presenting wrong API keys. Turn it
    /// off when all clients connect through one proxy.
    #[arg(long, env = "LARCH_AUTH_SLOWDOWN", default_value_t = true, action = clap::ArgAction::Set)]
    auth_slowdown: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// TLS flags every server command takes: with both, every port it opens speaks TLS only.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TlsArgs {
    /// PEM certificate chain (leaf first): serve every port over TLS. Needs --tls-key.
    #[arg(long, env = "LARCH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "LARCH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The TLS identity, if configured.
    pub(crate) fn load(&self) -> Result<Option<Tls>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Tls::from_pem_files(cert, key)
                .map(Some)
                .map_err(|err| format!("--tls-cert/--tls-key: {err}")),
            _ => Ok(None),
        }
    }
}

/// Flags every server command (`serve`, `control-plane`, `data-plane`) takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServerArgs {
    /// Seconds to finish in-flight requests after SIGTERM/SIGINT before exiting.
    #[arg(long, env = "LARCH_DRAIN_TIMEOUT_SECS", default_value_t = 20)]
    drain_timeout_secs: u64,
    /// Address of the admin HTTP server: Prometheus `/metrics`, `/healthz`, `/readyz`. Port 0
    /// picks a free port. It has no API keys: keep it off public networks.
    #[arg(long, env = "LARCH_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    pub(crate) admin_addr: SocketAddr,
    /// Log lines as human-readable text, or as one JSON object per line ("text" or "json").
    #[arg(long, env = "LARCH_LOG_FORMAT", default_value = "text")]
    pub(crate) log_format: LogFormat,
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
    #[command(flatten)]
    pub(crate) limits: crate::limits::LimitArgs,
}

impl ServerArgs {
    /// How long the drain after SIGTERM/SIGINT may take.
    pub(crate) fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }
}

/// Validated configuration of `larch serve`.
#[derive(Debug)]
pub(crate) struct Config {
    data_dir: PathBuf,
    control_addr: SocketAddr,
    data_ports: PortPolicy,
    advertise_host: String,
    drain_timeout: Duration,
    flush: FlushPolicy,
    ann_min_rows: usize,
    memory: crate::limits::MemoryArgs,
    /// `LARCH_API_KEY` or the contents of `LARCH_API_KEY_FILE`, read here so library crates
    /// never touch the environment.
    api_key: Option<String>,
    rate_limit: Option<larch_auth::RateLimit>,
    auth_slowdown: bool,
    admin_addr: SocketAddr,
    tls: Option<Tls>,
    limits: Limits,
}

impl ServeArgs {
    /// How to log, needed before the rest of the configuration is checked.
    pub(crate) fn log_format(&self) -> LogFormat {
        self.server.log_format
    }

    pub(crate) fn into_config(self) -> Result<Config, String> {
        let data_ports =
            PortPolicy::parse(&self.data_ports).map_err(|e| format!("--data-ports: {e}"))?;
        let advertise_host = match self.advertise_host {
            Some(host) if host.is_empty() || host.contains('/') => {
                return Err(format!(
                    "--advertise-host: {host:?} is not a host name or IP address"
                ));
            }
            Some(host) => host,
            None if self.control_addr.ip().is_unspecified() => {
                IpAddr::V4(Ipv4Addr::LOCALHOST).to_string()
            }
            None => self.control_addr.ip().to_string(),
        };
        if self.wal_flush_mb == 0 {
            return Err("--wal-flush-mb: must be at least 1".into());
        }
        let flush = FlushPolicy {
            wal_bytes: self.wal_flush_mb.saturating_mul(1024 * 1024),
            ..FlushPolicy::default()
        };
        let api_key = crate::configured_api_key()?;
        let rate_limit = match (self.rate_limit, self.rate_limit_burst) {
            (Some(0), _) | (_, Some(0)) => {
                return Err("--rate-limit and --rate-limit-burst must be at least 1".into());
            }
            (Some(per_second), burst) => Some(larch_auth::RateLimit {
                per_second,
                burst: burst.unwrap_or(per_second),
            }),
            (None, _) => None,
        };
        Ok(Config {
            data_dir: self.data_dir,
            control_addr: self.control_addr,
            data_ports,
            advertise_host,
            drain_timeout: self.server.drain_timeout(),
            flush,
            ann_min_rows: self.ann_min_rows,
            memory: self.memory,
            api_key,
            rate_limit,
            auth_slowdown: self.auth_slowdown,
            admin_addr: self.server.admin_addr,
            tls: self.server.tls.load()?,
            limits: self.server.limits.limits()?,
        })
    }
}

/// Runs until SIGINT or SIGTERM, then drains and returns.
pub(crate) fn run(config: Config) -> anyhow::Result<()> {
    run_server(serve(config))
}

/// Runs a server command's future on a new multi-threaded runtime until it returns. Work it
/// left behind (a recovery interrupted by a signal) is not waited for.
pub(crate) fn run_server(
    server: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(server);
    runtime.shutdown_background();
    result
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Held until the process exits: a second server on the same data dir is refused.
    let _lock = lock_data_dir(&config.data_dir)?;
    // Before anything is written (a generated key) or bound.
    check_catalog_present(&config.data_dir)?;
    let bootstrap = larch_auth::bootstrap(&config.data_dir, config.api_key.as_deref())
        .with_context(|| format!("cannot set up API keys in {}", config.data_dir.display()))?;
    if let Some(key) = &bootstrap.generated {
        // Printed once on stderr (beside the log, where operators look, but never as a log
        // event, so no log filter or shipper sees it as one): only the hash is kept on disk.
        eprintln!(
            "Generated the bootstrap API key (shown only now; set LARCH_API_KEY or LARCH_API_KEY_FILE to choose your own):\n\n    {}\n",
            key.as_str()
        );
    }
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
    let admin = Arc::new(bootstrap.admin);

    // One registry for both planes, the engine's storage timings and the gate's refusals.
    let metrics = Metrics::new();
    metrics.install_hooks();
    // The admin port answers from the start: /healthz at once, /readyz once recovered.
    let readiness = Readiness::new();
    let admin_server =
        AdminServer::start(config.admin_addr, metrics.clone(), readiness.clone()).await?;

    let listener = tokio::net::TcpListener::bind(config.control_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.control_addr))?;
    let control_addr = listener.local_addr()?;
    let engine = Engine::open_with(config.data_dir.join(INDEXES_DIR), config.flush)
        .with_ann_min_rows(config.ann_min_rows);
    let engine = config.memory.apply(engine);
    let data_plane = DataPlane::new(engine, keys.clone(), control_addr.ip(), metrics.clone());
    if let Some(tls) = &config.tls {
        data_plane.set_tls(tls.clone());
    }
    // One in-flight budget for the control port and every index port.
    data_plane.set_limits(config.limits.clone());

    // The control port answers (health NOT_SERVING) while stored indexes are recovered.
    let (ready, recovered) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut control = tokio::spawn(larch_control_plane::serve(
        Listener::new(listener, config.tls.clone()),
        async move { recovered.await.ok() },
        admin,
        metrics,
        config.limits.clone(),
        wait_for(stopped),
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
        tokio::task::spawn_blocking(move || -> anyhow::Result<Catalog> {
            let catalog = Catalog::open(
                &data_dir,
                Arc::new(data_plane.clone()),
                ports,
                advertise_host,
            )?;
            let deleted = catalog.tombstones()?;
            data_plane.collect_orphans(
                &catalog.index_keys()?,
                &deleted,
                &data_dir.join(QUARANTINE_DIR),
            )?;
            catalog.confirm_removed(&deleted)?;
            Ok(catalog)
        })
    };
    let signal = match serve_until_signal(recovery, ready, &readiness, &mut control).await? {
        Ended::Signal(signal) => signal,
        Ended::Stopped => return Ok(()),
    };
    tracing::info!(signal, "shutting down: draining in-flight requests");
    // With gRPC health turning NOT_SERVING: probes stop sending traffic.
    readiness.set(false);
    let _ = stop.send(true);
    let drain = async {
        let (control, ()) = tokio::join!(control, data_plane.shutdown(config.drain_timeout));
        control
    };
    match tokio::time::timeout(config.drain_timeout, drain).await {
        Ok(result) => result.context("control plane task failed")??,
        Err(_) => tracing::warn!(timeout = ?config.drain_timeout, "drain timed out"),
    }
    admin_server.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// How a control plane's run ended before draining.
pub(crate) enum Ended {
    /// SIGINT or SIGTERM, named.
    Signal(&'static str),
    /// The server stopped on its own without an error.
    Stopped,
}

/// Waits for the catalog's recovery (`recovery`), hands it to the control plane (`ready`) and
/// marks the process ready, then waits for a signal; a signal during recovery ends it too.
///
/// # Errors
///
/// Recovery failed, or the control plane (`control`) failed on its own.
pub(crate) async fn serve_until_signal<E>(
    recovery: tokio::task::JoinHandle<Result<Catalog, E>>,
    ready: tokio::sync::oneshot::Sender<Arc<Catalog>>,
    readiness: &Readiness,
    control: &mut tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) -> anyhow::Result<Ended>
where
    E: Into<anyhow::Error>,
{
    tokio::select! {
        recovered = recovery => {
            let catalog = recovered
                .context("recovery task failed")?
                .map_err(Into::into)
                .context("cannot recover the stored indexes")?;
            let _ = ready.send(Arc::new(catalog));
            // The moment the control plane reports SERVING on gRPC health.
            readiness.set(true);
            tracing::info!("recovery complete; serving");
            tokio::select! {
                signal = shutdown_signal() => Ok(Ended::Signal(signal)),
                result = control => {
                    // The control plane stopped on its own: report why.
                    result.context("control plane task failed")?.context("control plane failed")?;
                    Ok(Ended::Stopped)
                }
            }
        }
        signal = shutdown_signal() => Ok(Ended::Signal(signal)),
    }
}

/// The admin HTTP server of a server command (`/metrics`, `/healthz`, `/readyz`).
pub(crate) struct AdminServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl AdminServer {
    /// Binds `addr` and serves; the bound address is logged (`larch admin listening addr=…`).
    pub(crate) async fn start(
        addr: SocketAddr,
        metrics: Metrics,
        readiness: Readiness,
    ) -> anyhow::Result<AdminServer> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--admin-addr)"))?;
        let bound = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(larch_observe::serve_admin(
            listener,
            metrics,
            readiness,
            async move {
                // A dropped sender also stops the server.
                let _ = stopped.await;
            },
        ));
        tracing::info!(addr = %bound, "larch admin listening");
        Ok(AdminServer { stop, task })
    }

    /// Stops it. Called last, so /metrics and /readyz answer through the drain. A scrape is
    /// quick; the admin server holds nothing to save, so one that lingers is not waited for.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(ADMIN_STOP_TIMEOUT, self.task).await {
            Ok(Ok(Ok(()))) | Err(_) => {}
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "admin server failed"),
            Ok(Err(err)) => tracing::warn!(error = %err, "admin server task failed"),
        }
    }
}

/// Creates `data_dir` if needed and takes an exclusive lock on `<data_dir>/LOCK` for the life
/// of the process (the returned file holds it).
pub(crate) fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let path = data_dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another larch server is using the data dir {} (its lock file {} is held); stop it or \
             choose another --data-dir",
            data_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(err)) => {
            Err(err).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

pub(crate) async fn wait_for(mut stopped: tokio::sync::watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM, naming it.
pub(crate) async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops Larch");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
