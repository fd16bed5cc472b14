//! `larch control-plane` and `larch data-plane`: the two planes as separate processes (split
//! mode), for deployments where they scale and restart independently (e.g. a control-plane
//! Deployment and a data-plane StatefulSet on Kubernetes).
//!
//! The control plane keeps the catalog, projects and keys in its data dir (or, for several
//! replicas, in a shared directory or an object-store bucket) and serves the public
//! control-plane API plus `larch.internal.v1.ControlPlaneSync`. The data plane keeps index data
//! in its own data dir, serves every index on one address — routed by the host each request
//! was sent to, from the control plane's `--host-template` — and follows the control plane:
//! told of each index change as it happens, and pulling every index and key every
//! `--key-refresh-secs`. Both are given the same admin key (`LARCH_API_KEY` or
//! `LARCH_API_KEY_FILE`), which authenticates the calls between them.
//!
//! The control plane may follow several data-plane pods (`--data-plane-url` repeated,
//! `LARCH_DATA_PLANE_URLS`), each named (`--pod-name` on `larch data-plane`): index changes go
//! to every pod, and a pod that misses one catches up at its next pull.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use larch_auth::grpc::SendKey;
use larch_auth::{ApiKey, Grant, KeyStore, StoredKey};
use larch_catalog::{HostTemplate, SharedDocument};
use larch_control_plane::split::{DataPlaneUrl, DataPlanes, parse_data_plane_urls};
use larch_data_plane::IndexStorage;
use larch_data_plane::routed::{ControlPlane, RoutedDataPlane};
use larch_engine::{FlushPolicy, ObjectLogConfig};
use larch_state::Bucket;

use larch_observe::internal::CallTimeouts;
use larch_observe::{Limits, Listener, LogFormat, Metrics, Readiness, Tls};

use larch::embedded::INDEXES_DIR;
use larch::lifecycle::{AdminServer, Ended, lock_data_dir, serve_until, wait_for};

use crate::serve::{ServerArgs, shutdown_signal};

/// Flags of `larch control-plane`.
#[derive(Debug, clap::Args)]
pub(crate) struct ControlPlaneArgs {
    /// Where the control plane keeps the catalog, projects and the keys' hashes (with
    /// --shared-state-dir or --object-store-url: only this replica's lock and the admin key's
    /// hash).
    #[arg(long, env = "LARCH_DATA_DIR", default_value = "./larch-data")]
    data_dir: PathBuf,
    /// Keep the catalog, projects and the keys' hashes in this directory, shared by every
    /// control-plane replica (a ReadWriteMany volume mounted by each pod), so that several
    /// replicas serve side by side. Each change is written as a new version with a conditional
    /// create; replicas read the newest before answering and pick up keys changed elsewhere
    /// within 2 seconds. At the first start, a single control plane's state in --data-dir is
    /// copied in.
    #[arg(
        long,
        env = "LARCH_SHARED_STATE_DIR",
        conflicts_with = "object_store_url"
    )]
    shared_state_dir: Option<PathBuf>,
    /// Keep the catalog, projects and the keys' hashes in an object store shared by every
    /// control-plane replica, as --shared-state-dir does in a directory:
    /// s3://bucket/prefix (an S3-compatible store with conditional writes; credentials,
    /// region and endpoint from the standard AWS_* variables, e.g. AWS_ENDPOINT_URL and
    /// AWS_ALLOW_HTTP=true for a plain-HTTP endpoint), file:///absolute/dir, or memory://
    /// (tests). At the first start, a single control plane's state in --data-dir is copied in.
    #[arg(long, env = "LARCH_OBJECT_STORE_URL")]
    object_store_url: Option<String>,
    /// Address of the control plane (gRPC and REST). Port 0 picks a free port.
    #[arg(long, env = "LARCH_CONTROL_ADDR", default_value = "127.0.0.1:5080")]
    control_addr: SocketAddr,
    /// URL of a data-plane pod, e.g. http://larch-data-0.larch-data:5081. Repeat the flag (or
    /// list the URLs in LARCH_DATA_PLANE_URLS, comma-separated) for several pods: every index
    /// change goes to each of them, and a pod that misses one catches up at its next pull.
    /// Each pod is named after its URL's first DNS label (larch-data-0 here; host:port for an
    /// IP address), or as written in POD=URL; give each `larch data-plane` that --pod-name.
    /// Without either, LARCH_DATA_PLANE_URL (one URL) is read.
    #[arg(long, env = "LARCH_DATA_PLANE_URLS", value_delimiter = ',')]
    data_plane_url: Vec<String>,
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
    /// This pod's name, as the control plane's --data-plane-url list names it (on Kubernetes,
    /// the StatefulSet pod's name from the downward API). Sent with every pull and compared
    /// with each index's preferred writer. Default: the host name.
    #[arg(long, env = "LARCH_POD_NAME")]
    pod_name: Option<String>,
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
    /// Keep every index in an S3-compatible bucket, s3://bucket/prefix (credentials and
    /// endpoint from the standard AWS_* variables): its write-ahead log as objects, its
    /// segments, manifest and graphs, so a pod with an empty --data-dir serves it. One pod
    /// writes an index at a time, under a lease. Without it, indexes live in --data-dir.
    #[arg(long, env = "LARCH_OBJECT_STORE_URL")]
    object_store_url: Option<String>,
    /// With --object-store-url: seconds an index's writer lease lasts unrenewed before
    /// another pod may take the index over (renewed every third of it).
    #[arg(long, env = "LARCH_LEASE_TTL_SECS", default_value_t = 10)]
    lease_ttl_secs: u64,
    /// With --object-store-url: the most MiB of writes stored as one log object (writes that
    /// arrive while one is being stored form the next).
    #[arg(long, env = "LARCH_WAL_BATCH_MAX_MB", default_value_t = 8)]
    wal_batch_max_mb: u64,
    /// With --object-store-url: milliseconds between a follower's looks for new log batches
    /// of the indexes another pod writes (up to eight times this while the log is idle).
    #[arg(long, env = "LARCH_TAIL_INTERVAL_MS", default_value_t = 100)]
    tail_interval_ms: u64,
    /// With --object-store-url: the URL other pods reach this one at, written into the
    /// writer lease of every index this pod writes so their followers can forward writes
    /// here. Default: http://$POD_IP:<port> (the downward API), else the --data-addr host.
    #[arg(long, env = "LARCH_ADVERTISE_URL")]
    advertise_url: Option<String>,
    #[command(flatten)]
    memory: crate::limits::MemoryArgs,
    #[command(flatten)]
    imports: crate::serve::ImportArgs,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    internal: InternalArgs,
    /// PEM CA certificate(s) to trust when --control-plane-url is https, and for other pods'
    /// certificates when writes are forwarded between pods over https (on a bucket with TLS).
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
        (true, Some(path)) => read_ca(path).map(Some),
        (true, None) => Err(format!(
            "{flag} is https: give the CA that signed its certificate with --tls-ca"
        )),
        (false, _) => Ok(None),
    }
}

/// Validated configuration of `larch control-plane`.
pub(crate) struct ControlPlaneConfig {
    args: ControlPlaneArgs,
    /// The store of --object-store-url, opened (no request made yet).
    bucket: Option<Bucket>,
    data_planes: Vec<DataPlaneUrl>,
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
        let data_planes = data_plane_urls(
            &self.data_plane_url,
            std::env::var("LARCH_DATA_PLANE_URL").ok(),
        )?;
        // One CA for every https URL (they must all be http or all be checked the same way).
        let mut ca = None;
        for data_plane in &data_planes {
            let trusted = internal_ca(&data_plane.url, self.tls_ca.as_ref(), "--data-plane-url")?;
            ca = ca.or(trusted);
        }
        let timeouts = self.internal.timeouts()?;
        let bucket = self
            .object_store_url
            .as_deref()
            .map(larch_state::bucket::open)
            .transpose()
            .map_err(|err| err.to_string())?;
        Ok(ControlPlaneConfig {
            args: self,
            bucket,
            data_planes,
            template,
            key,
            tls,
            limits,
            ca,
            timeouts,
        })
    }
}

/// The data-plane pods of `larch control-plane`: the `listed` URLs (--data-plane-url, or
/// LARCH_DATA_PLANE_URLS split at commas), else the `single` one (LARCH_DATA_PLANE_URL, the
/// setting from before several pods).
fn data_plane_urls(listed: &[String], single: Option<String>) -> Result<Vec<DataPlaneUrl>, String> {
    let single: Vec<String> = single
        .into_iter()
        .filter(|url| !url.trim().is_empty())
        .collect();
    let specs = if listed.iter().any(|url| !url.trim().is_empty()) {
        listed
    } else if !single.is_empty() {
        &single[..]
    } else {
        return Err(
            "give the data plane's URL: --data-plane-url (repeated for several pods), \
                    LARCH_DATA_PLANE_URLS (comma-separated) or LARCH_DATA_PLANE_URL"
                .into(),
        );
    };
    parse_data_plane_urls(specs).map_err(|err| format!("--data-plane-url: {err}"))
}

/// This data plane's pod name: `configured` (--pod-name, LARCH_POD_NAME), else the host name
/// (a StatefulSet pod's host name is its pod name).
pub(crate) fn pod_name(configured: Option<&str>) -> Result<String, String> {
    if let Some(name) = configured {
        let name = name.trim();
        if name.is_empty() {
            return Err("--pod-name must not be empty".into());
        }
        return Ok(name.to_owned());
    }
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok();
    from_kernel
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .ok_or_else(|| "cannot read this machine's host name: give --pod-name".to_owned())
}

/// Validated configuration of `larch data-plane`.
pub(crate) struct DataPlaneConfig {
    args: DataPlaneArgs,
    /// The store of --object-store-url, opened (no request made yet).
    bucket: Option<Bucket>,
    pod: String,
    key: String,
    tls: Option<Tls>,
    limits: Limits,
    ca: Option<Vec<u8>>,
    /// The CA other pods' certificates are checked against when a write is forwarded to an
    /// index's writer over https.
    peer_ca: Option<Vec<u8>>,
    timeouts: CallTimeouts,
    key_max_age: Duration,
    key_file: Option<PathBuf>,
}

impl DataPlaneArgs {
    pub(crate) fn into_config(self) -> Result<DataPlaneConfig, String> {
        if self.key_refresh_secs == 0
            || self.wal_flush_mb == 0
            || self.lease_ttl_secs == 0
            || self.wal_batch_max_mb == 0
            || self.tail_interval_ms == 0
        {
            return Err(
                "--key-refresh-secs, --wal-flush-mb, --lease-ttl-secs, --wal-batch-max-mb and \
                 --tail-interval-ms must be at least 1"
                    .into(),
            );
        }
        let bucket = self
            .object_store_url
            .as_deref()
            .map(larch_state::bucket::open)
            .transpose()
            .map_err(|err| err.to_string())?;
        // An index's writer lease and manifest need conditional replaces: refuse a store
        // without them now, rather than lose every lease at its first renewal.
        if let Some(bucket) = &bucket {
            bucket.check_conditional_writes()?;
        }
        let key = admin_key()?;
        send_key(&key)?;
        let pod = pod_name(self.pod_name.as_deref())?;
        let tls = self.server.tls.load()?;
        let limits = self.server.limits.limits()?;
        let ca = internal_ca(
            &self.control_plane_url,
            self.tls_ca.as_ref(),
            "--control-plane-url",
        )?;
        let peer_ca = peer_ca(
            self.advertise_url.as_deref(),
            tls.is_some(),
            bucket.is_some(),
            self.tls_ca.as_ref(),
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
            bucket,
            pod,
            key,
            tls,
            limits,
            ca,
            peer_ca,
            timeouts,
            key_max_age: Duration::from_secs(key_max_age),
            key_file,
        })
    }
}

/// The CA to check other pods' certificates with (`--tls-ca`), needed when this data plane
/// keeps indexes on a bucket and advertises an https address (`--advertise-url`, or TLS on its
/// port): followers forward writes to the writer's advertised address, so the pods must trust
/// each other.
fn peer_ca(
    advertise_url: Option<&str>,
    tls: bool,
    bucket: bool,
    ca: Option<&PathBuf>,
) -> Result<Option<Vec<u8>>, String> {
    let https = match configured_advertise(advertise_url) {
        Some(url) => url.starts_with("https://"),
        None => tls,
    };
    match (https && bucket, ca) {
        (false, _) => Ok(None),
        (true, Some(path)) => read_ca(path).map(Some),
        (true, None) => Err(concat!(
            "this data plane keeps indexes on a bucket and advertises an https address, so ",
            "other pods forward writes to it over TLS and it to them: give the CA that signed ",
            "the pods' certificates with --tls-ca"
        )
        .to_owned()),
    }
}

/// The PEM CA certificate(s) in `path` (`--tls-ca`).
fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|err| format!("--tls-ca: cannot read {}: {err}", path.display()))
}

/// Runs `larch control-plane` until SIGINT or SIGTERM, then drains and returns.
pub(crate) fn run_control_plane(config: ControlPlaneConfig) -> anyhow::Result<()> {
    crate::serve::run_server(control_plane(config))
}

async fn control_plane(config: ControlPlaneConfig) -> anyhow::Result<()> {
    let ControlPlaneConfig {
        args,
        bucket,
        data_planes,
        template,
        key,
        tls,
        limits,
        ca,
        timeouts,
    } = config;
    let data_dir = &args.data_dir;
    let _lock = lock_data_dir(data_dir)?;
    let shared = match (&args.shared_state_dir, &bucket) {
        (Some(shared), _) => {
            let open = |name: &str| {
                SharedDocument::local(shared, name)
                    .with_context(|| format!("cannot use --shared-state-dir {}", shared.display()))
            };
            Some((open("access")?, open("catalog")?))
        }
        (None, Some(bucket)) => Some((
            SharedDocument::in_bucket(bucket, "access"),
            SharedDocument::in_bucket(bucket, "catalog"),
        )),
        (None, None) => None,
    };
    let (bootstrap, catalog_doc) = match shared {
        None => {
            let bootstrap = larch_auth::bootstrap(data_dir, Some(&key))
                .with_context(|| format!("cannot set up API keys in {}", data_dir.display()))?;
            (bootstrap, None)
        }
        Some((access, catalog)) => {
            // Requests to the store (a bucket: network round trips) on a blocking thread.
            let (data_dir, key) = (data_dir.clone(), key.clone());
            tokio::task::spawn_blocking(move || {
                let (access, catalog) = copy_in_single_state(&data_dir, access, catalog)?;
                let location = access.location().to_owned();
                let bootstrap = larch_auth::bootstrap_shared(&data_dir, &key, access)
                    .with_context(|| format!("cannot set up API keys in {location}"))?;
                anyhow::Ok((bootstrap, Some(catalog)))
            })
            .await
            .context("setting up the shared state failed")??
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
    let remote = Arc::new(
        DataPlanes::new(
            &data_planes,
            send_key(&key).map_err(anyhow::Error::msg)?,
            template.clone(),
            ca,
            timeouts,
        )
        .map_err(anyhow::Error::msg)?,
    );

    let (ready, recovered) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut control = tokio::spawn(larch_control_plane::serve_split(
        Listener::new(listener, tls),
        async move { recovered.await.ok() },
        admin,
        metrics,
        limits,
        Arc::clone(&remote),
        wait_for(stopped),
    ));
    let pods: Vec<String> = data_planes
        .iter()
        .map(|data_plane| format!("{}={}", data_plane.pod, data_plane.url))
        .collect();
    tracing::info!(
        %addr,
        data_planes = ?pods,
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

/// The two shared documents (`access` for projects and keys, `catalog` for indexes) of a
/// shared state directory or bucket; at the first start, the state a single control plane
/// kept in `data_dir` (`access.json`, `catalog.json`) becomes their first version, so a
/// deployment can grow from one replica to several.
fn copy_in_single_state(
    data_dir: &std::path::Path,
    access: SharedDocument,
    catalog: SharedDocument,
) -> anyhow::Result<(SharedDocument, SharedDocument)> {
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
        bucket,
        pod,
        key,
        tls,
        limits,
        ca,
        peer_ca,
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
    let root = data_dir.join(INDEXES_DIR);
    let storage = match bucket {
        None => IndexStorage::Local { root },
        Some(bucket) => IndexStorage::Bucket {
            root,
            store: bucket.store,
            prefix: bucket.prefix,
        },
    };
    // Bound before the engine exists: the address goes into the writer leases it takes.
    let listener = tokio::net::TcpListener::bind(args.data_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.data_addr))?;
    let addr = listener.local_addr()?;
    let advertise = advertise_url(
        args.advertise_url.as_deref(),
        std::env::var("POD_IP").ok().as_deref(),
        addr,
        tls.is_some(),
    );
    let engine = storage
        .engine(flush)
        .with_object_log(ObjectLogConfig {
            lease_ttl: Duration::from_secs(args.lease_ttl_secs),
            max_batch_bytes: usize::try_from(args.wal_batch_max_mb.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
            holder: pod.clone(),
            address: advertise.clone(),
            tail_interval: Duration::from_millis(args.tail_interval_ms),
        })
        .with_ann_min_rows(args.ann_min_rows)
        .with_storage_timer(metrics.storage_timer());
    let engine = args.memory.apply(engine);
    // Kept to release the indexes' writer leases after the drain (a bucket only).
    let leases = engine.clone();
    let readiness = Readiness::new();
    let admin_server =
        AdminServer::start(args.server.admin_addr, metrics.clone(), readiness.clone()).await?;
    let imports = larch::embedded::imports(
        args.imports.import_root.clone(),
        args.imports.import_allow_s3,
        data_dir,
    );
    let mut data_plane = RoutedDataPlane::with_limits(engine, keys, metrics, limits)
        .with_pod_name(pod.clone())
        .with_imports(imports);
    if let Some(ca) = peer_ca {
        data_plane = data_plane.with_peer_ca(ca);
    }
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
        %pod,
        %advertise,
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
    let drained = drain(signal, shutdown, server, timeout, "data plane").await;
    // Writes have stopped: hand every index on a bucket over at once (another pod takes it
    // without waiting a lease TTL). Nothing for indexes on local disk.
    match tokio::task::spawn_blocking(move || leases.release_leases()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "cannot release every writer lease; other pods take those indexes over after --lease-ttl-secs")
        }
        Err(err) => tracing::warn!(error = %err, "releasing the writer leases failed"),
    }
    drained
}

/// Where other pods reach this data plane (see `--advertise-url`): the flag, else the pod's
/// IP (`POD_IP`) or the address it listens on, with its port.
fn advertise_url(
    configured: Option<&str>,
    pod_ip: Option<&str>,
    listening: SocketAddr,
    tls: bool,
) -> String {
    if let Some(url) = configured_advertise(configured) {
        return url.to_owned();
    }
    let scheme = if tls { "https" } else { "http" };
    let port = listening.port();
    match pod_ip.map(str::trim).filter(|ip| !ip.is_empty()) {
        Some(ip) if ip.contains(':') => format!("{scheme}://[{ip}]:{port}"),
        Some(ip) => format!("{scheme}://{ip}:{port}"),
        None => format!("{scheme}://{listening}"),
    }
}

/// `--advertise-url` when it is set (blank counts as unset), trimmed.
fn configured_advertise(configured: Option<&str>) -> Option<&str> {
    configured.map(str::trim).filter(|url| !url.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_serving_tls_on_a_bucket_need_a_ca_to_forward_writes_to_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, b"pem").unwrap();
        // Plain http, or no bucket (nothing is forwarded): no CA needed.
        assert_eq!(peer_ca(None, false, true, None), Ok(None));
        assert_eq!(
            peer_ca(Some("http://10.0.0.7:5081"), true, true, None),
            Ok(None)
        );
        assert_eq!(peer_ca(None, true, false, None), Ok(None));
        // TLS on the port, or an https advertised URL, on a bucket: the CA is read.
        assert_eq!(
            peer_ca(None, true, true, Some(&ca)),
            Ok(Some(b"pem".to_vec()))
        );
        assert_eq!(
            peer_ca(Some("https://dp-0.larch:5081"), false, true, Some(&ca)),
            Ok(Some(b"pem".to_vec()))
        );
        let err = peer_ca(None, true, true, None).unwrap_err();
        assert!(err.contains("--tls-ca"), "{err}");
        assert!(!err.contains("  "), "one space between words: {err}");
        let missing = dir.path().join("missing.pem");
        let err = peer_ca(None, true, true, Some(&missing)).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn the_advertised_url_is_the_flag_or_the_pod_ip_or_the_listening_address() {
        let addr: SocketAddr = "127.0.0.1:5081".parse().unwrap();
        assert_eq!(
            advertise_url(
                Some("http://data-0.data:5081"),
                Some("10.0.0.7"),
                addr,
                false
            ),
            "http://data-0.data:5081"
        );
        assert_eq!(
            advertise_url(None, Some("10.0.0.7"), addr, false),
            "http://10.0.0.7:5081"
        );
        assert_eq!(
            advertise_url(None, Some("fd00::7"), addr, true),
            "https://[fd00::7]:5081"
        );
        assert_eq!(
            advertise_url(Some(" "), None, addr, false),
            "http://127.0.0.1:5081"
        );
    }

    fn pods(urls: &[DataPlaneUrl]) -> Vec<(&str, &str)> {
        urls.iter()
            .map(|url| (url.pod.as_str(), url.url.as_str()))
            .collect()
    }

    #[test]
    fn the_url_list_wins_over_the_single_url() {
        // --data-plane-url repeated, or LARCH_DATA_PLANE_URLS split at commas by clap.
        let listed = vec![
            "http://larch-data-0.larch-data:5081".to_owned(),
            "http://larch-data-1.larch-data:5081".to_owned(),
            " http://larch-data-2.larch-data:5081 ".to_owned(),
        ];
        let single = Some("http://old:5081".to_owned());
        let urls = data_plane_urls(&listed, single).unwrap();
        assert_eq!(
            pods(&urls),
            [
                ("larch-data-0", "http://larch-data-0.larch-data:5081"),
                ("larch-data-1", "http://larch-data-1.larch-data:5081"),
                ("larch-data-2", "http://larch-data-2.larch-data:5081"),
            ]
        );
    }

    #[test]
    fn the_single_url_still_works_alone() {
        let urls =
            data_plane_urls(&[], Some("http://larch-data-0.larch-data:5081".into())).unwrap();
        assert_eq!(
            pods(&urls),
            [("larch-data-0", "http://larch-data-0.larch-data:5081")]
        );
        // An empty list entry (LARCH_DATA_PLANE_URLS="") does not hide it.
        let urls = data_plane_urls(&[String::new()], Some("http://dp:5081".into())).unwrap();
        assert_eq!(pods(&urls), [("dp", "http://dp:5081")]);
    }

    #[test]
    fn bad_url_lists_say_what_is_wrong() {
        let err = data_plane_urls(&[], None).unwrap_err();
        assert!(err.contains("LARCH_DATA_PLANE_URLS"), "{err}");
        let err = data_plane_urls(&[], Some("  ".into())).unwrap_err();
        assert!(err.contains("--data-plane-url"), "{err}");
        let twice = vec![
            "http://127.0.0.1:5081".to_owned(),
            "http://127.0.0.1:5081".to_owned(),
        ];
        let err = data_plane_urls(&twice, None).unwrap_err();
        assert!(
            err.starts_with("--data-plane-url: two data-plane URLs name pod"),
            "{err}"
        );
        let err = data_plane_urls(&["larch-data-0:5081".to_owned()], None).unwrap_err();
        assert!(err.contains("not a URL"), "{err}");
        // Named pods on one host are apart.
        let named = vec![
            "dp-0=http://127.0.0.1:5081".to_owned(),
            "dp-1=http://127.0.0.1:5082".to_owned(),
        ];
        let urls = data_plane_urls(&named, None).unwrap();
        assert_eq!(
            pods(&urls),
            [
                ("dp-0", "http://127.0.0.1:5081"),
                ("dp-1", "http://127.0.0.1:5082")
            ]
        );
    }

    #[test]
    fn pod_names_come_from_the_flag_or_the_host_name() {
        assert_eq!(pod_name(Some(" larch-data-1 ")).unwrap(), "larch-data-1");
        assert!(pod_name(Some("")).is_err());
        // This machine has a host name (the test runs on Linux).
        assert!(!pod_name(None).unwrap().is_empty());
    }
}
