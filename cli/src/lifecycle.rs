//! What every server command shares (`larch serve`, `larch control-plane`, `larch
//! data-plane`): the data-dir lock, the admin port, the wait from recovery to shutdown, and the
//! one [`Error`] of this library.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use larch_catalog::Catalog;
use larch_observe::{Metrics, Readiness};

/// A failure to start or run a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Start-up refused because of what is on disk rather than a fault: the operator must act
    /// before a restart can help (the binary exits 64, as for bad configuration).
    #[error("{0}")]
    Refused(String),
    /// The data dir could not be created.
    #[error("cannot create data dir {}", .path.display())]
    CreateDataDir {
        /// The data dir.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The lock file of the data dir could not be opened.
    #[error("cannot open lock file {}", .path.display())]
    OpenLock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The lock file of the data dir could not be locked.
    #[error("cannot lock {}", .path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another server holds the lock of the data dir.
    #[error(
        "another larch server is using the data dir {} (its lock file {} is held); stop it or \
         choose another --data-dir",
        .data_dir.display(),
        .path.display()
    )]
    Locked {
        /// The data dir.
        data_dir: PathBuf,
        /// Its lock file.
        path: PathBuf,
    },
    /// The index directories of the data dir could not be listed.
    #[error("cannot list the index directories of {}", .path.display())]
    ListIndexes {
        /// The indexes directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: larch_engine::Error,
    },
    /// The bootstrap key or the access state could not be set up.
    #[error("cannot set up API keys in {}", .path.display())]
    Keys {
        /// Where the keys are kept.
        path: PathBuf,
        /// Why.
        #[source]
        source: larch_auth::Error,
    },
    /// A port could not be bound (`flag` names the flag that chose it, if any).
    #[error("cannot listen on {addr}{flag}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// E.g. ` (--admin-addr)`, or empty.
        flag: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A bound listener could not tell its address.
    #[error("cannot read the bound address")]
    LocalAddr(#[source] std::io::Error),
    /// Recovering the stored indexes failed.
    #[error("cannot recover the stored indexes")]
    Recovery(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The recovery task panicked or was cancelled.
    #[error("recovery task failed")]
    RecoveryTask(#[source] tokio::task::JoinError),
    /// The control plane failed on its own.
    #[error("control plane failed")]
    ControlPlane(#[source] tonic::transport::Error),
    /// The control plane's task panicked or was cancelled.
    #[error("control plane task failed")]
    ControlPlaneTask(#[source] tokio::task::JoinError),
    /// The task running a server panicked or was cancelled.
    #[error("server task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// The result of this library's functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long the admin server may take to finish its requests once the planes have stopped.
const ADMIN_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// Creates `data_dir` if needed and takes an exclusive lock on `<data_dir>/LOCK`, held as long
/// as the returned file is open: a second server on the same data dir is refused.
///
/// # Errors
///
/// The directory or lock file cannot be created, or another server holds the lock.
pub fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(data_dir).map_err(|source| Error::CreateDataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = data_dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path);
    let file = match file {
        Ok(file) => file,
        Err(source) => return Err(Error::OpenLock { path, source }),
    };
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            data_dir: data_dir.to_owned(),
            path,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(Error::Lock { path, source }),
    }
}

/// How a control plane's run ended before draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The shutdown future resolved, naming what asked for it (e.g. `SIGTERM`).
    Shutdown(&'static str),
    /// The control plane stopped on its own without an error.
    Stopped,
}

/// Waits for the catalog's recovery (`recovery`), hands it to the control plane (`ready`) and
/// marks the process ready, then waits for `shutdown`; `shutdown` during recovery ends it too.
///
/// # Errors
///
/// Recovery failed, or the control plane (`control`) failed on its own.
pub async fn serve_until<E>(
    recovery: tokio::task::JoinHandle<Result<Catalog, E>>,
    ready: tokio::sync::oneshot::Sender<Arc<Catalog>>,
    readiness: &Readiness,
    control: &mut tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    shutdown: impl Future<Output = &'static str>,
) -> Result<Ended>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(shutdown);
    tokio::select! {
        recovered = recovery => {
            let catalog = recovered
                .map_err(Error::RecoveryTask)?
                .map_err(|err| Error::Recovery(err.into()))?;
            let _ = ready.send(Arc::new(catalog));
            // The moment the control plane reports SERVING on gRPC health.
            readiness.set(true);
            tracing::info!("recovery complete; serving");
            tokio::select! {
                reason = &mut shutdown => Ok(Ended::Shutdown(reason)),
                result = control => {
                    // The control plane stopped on its own: report why.
                    result
                        .map_err(Error::ControlPlaneTask)?
                        .map_err(Error::ControlPlane)?;
                    Ok(Ended::Stopped)
                }
            }
        }
        reason = &mut shutdown => Ok(Ended::Shutdown(reason)),
    }
}

/// The admin HTTP server of a server command (`/metrics`, `/healthz`, `/readyz`).
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl AdminServer {
    /// Binds `addr` and serves; the bound address is logged (`larch admin listening addr=…`).
    ///
    /// # Errors
    ///
    /// `addr` cannot be bound.
    pub async fn start(
        addr: SocketAddr,
        metrics: Metrics,
        readiness: Readiness,
    ) -> Result<AdminServer> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                addr,
                flag: " (--admin-addr)",
                source,
            })?;
        let bound = listener.local_addr().map_err(Error::LocalAddr)?;
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
        Ok(AdminServer {
            addr: bound,
            stop,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it. Called last, so /metrics and /readyz answer through the drain. A scrape is
    /// quick; the admin server holds nothing to save, so one that lingers is not waited for.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(ADMIN_STOP_TIMEOUT, self.task).await {
            Ok(Ok(Ok(()))) | Err(_) => {}
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "admin server failed"),
            Ok(Err(err)) => tracing::warn!(error = %err, "admin server task failed"),
        }
    }
}

/// Resolves once `stopped` holds `true` (or its sender is gone, which also means stop).
pub async fn wait_for(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
