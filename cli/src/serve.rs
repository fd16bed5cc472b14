//! `larch serve`: both planes in one process. This module only turns flags into a
//! [`larch::embedded::Config`] and runs it until SIGINT/SIGTERM; the wiring is the library's
//! [`larch::embedded`], which the integration tests run too. It also holds what every server
//! command's flags and `main` share (server flags, TLS flags, the runtime, signals).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use larch::embedded::{Config, Embedded};
use larch_catalog::PortPolicy;
use larch_engine::FlushPolicy;
use larch_observe::{LogFormat, Tls};

/// Bulk-import flags, shared by `larch serve` and `larch data-plane`
/// ([`larch::embedded::imports`] turns them into the server's imports).
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// Allow bulk imports (POST /bulk/imports) of file:// directories under this one; without
    /// it imports are refused. Paths outside it (through `..` or symlinks too) are refused.
    #[arg(long, env = "LARCH_IMPORT_ROOT")]
    pub(crate) import_root: Option<PathBuf>,
    /// Allow bulk imports of s3://bucket/prefix URIs. The server reads them with its own AWS_*
    /// credentials, so any caller with a data-plane write role could make it read whatever
    /// those credentials reach: allow it only when that is acceptable.
    #[arg(long, env = "LARCH_IMPORT_ALLOW_S3", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) import_allow_s3: bool,
}

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
    #[arg(long, env = "LARCH_ANN_MIN_ROWS", default_value_t = larch::embedded::DEFAULT_ANN_MIN_ROWS)]
    ann_min_rows: usize,
    #[command(flatten)]
    memory: crate::limits::MemoryArgs,
    #[command(flatten)]
    imports: ImportArgs,
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
    /// Keep everything in an S3-compatible bucket, s3://bucket/prefix (credentials and endpoint
    /// from the standard AWS_* variables), not in --data-dir: the catalog and keys as
    /// documents, every index (its write-ahead log too) as objects, so a process started with
    /// an empty data dir serves it all. Needs LARCH_API_KEY (or LARCH_API_KEY_FILE).
    #[arg(long, env = "LARCH_OBJECT_STORE_URL")]
    object_store_url: Option<String>,
    /// With --object-store-url: seconds an index's writer lease lasts unrenewed before another
    /// process may take the index over (at once after a clean shutdown).
    #[arg(long, env = "LARCH_LEASE_TTL_SECS", default_value_t = 10)]
    lease_ttl_secs: u64,
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
    #[arg(long, env = "LARCH_DRAIN_TIMEOUT_SECS", default_value_t = larch::embedded::DEFAULT_DRAIN_TIMEOUT.as_secs())]
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

impl ServeArgs {
    /// How to log, needed before the rest of the configuration is checked.
    pub(crate) fn log_format(&self) -> LogFormat {
        self.server.log_format
    }

    /// The embedded server's configuration from these flags and the environment's API key.
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
        if self.wal_flush_mb == 0 || self.lease_ttl_secs == 0 {
            return Err("--wal-flush-mb and --lease-ttl-secs must be at least 1".into());
        }
        let object_store = self
            .object_store_url
            .as_deref()
            .map(larch_state::bucket::open)
            .transpose()
            .map_err(|err| err.to_string())?;
        if let Some(bucket) = &object_store {
            bucket.check_conditional_writes()?;
        }
        let object_log = larch_engine::ObjectLogConfig {
            lease_ttl: Duration::from_secs(self.lease_ttl_secs),
            holder: crate::split::pod_name(None).unwrap_or_else(|_| "larch".to_owned()),
            ..larch_engine::ObjectLogConfig::default()
        };
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
            admin_addr: self.server.admin_addr,
            data_ports,
            advertise_host,
            drain_timeout: self.server.drain_timeout(),
            flush,
            ann_min_rows: self.ann_min_rows,
            memory_budget: self.memory.budget(),
            api_key,
            rate_limit,
            auth_slowdown: self.auth_slowdown,
            tls: self.server.tls.load()?,
            limits: self.server.limits.limits()?,
            import_root: self.imports.import_root,
            import_allow_s3: self.imports.import_allow_s3,
            object_store,
            object_log,
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
    let embedded = Embedded::open(config)?;
    if let Some(key) = embedded.generated_key() {
        // Printed once on stderr (beside the log, where operators look, but never as a log
        // event, so no log filter or shipper sees it as one): only the hash is kept on disk.
        eprintln!(
            "Generated the bootstrap API key (shown only now; set LARCH_API_KEY or LARCH_API_KEY_FILE to choose your own):\n\n    {}\n",
            key.as_str()
        );
    }
    embedded.start(shutdown_signal()).await?.join().await?;
    Ok(())
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM, naming it. The handlers are installed
/// by this call, not when the future is first polled (which may be on another task, later), so
/// a signal sent once the caller has gone on is caught rather than killing the process. Must
/// be called inside the runtime.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = &'static str> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = signal(SignalKind::interrupt()).and_then(|interrupt| {
            signal(SignalKind::terminate()).map(|terminate| (interrupt, terminate))
        });
        async move {
            match handlers {
                Ok((mut interrupt, mut terminate)) => tokio::select! {
                    _ = interrupt.recv() => "SIGINT",
                    _ = terminate.recv() => "SIGTERM",
                },
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for SIGINT and SIGTERM; trying Ctrl-C alone");
                    let _ = tokio::signal::ctrl_c().await;
                    "SIGINT"
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
