//! [`DataPlane`]: the per-index servers of the embedded mode.
//!
//! Opening an index binds its port synchronously (so the catalog learns at once whether the
//! port is free), applies the catalog's search parameters and spawns [`crate::serve_index`] on
//! the runtime. Dropping an index stops its server gracefully and frees its memory once
//! in-flight requests finish.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use larch_auth::KeyStore;
use larch_catalog::{AttachError, AttachMode, DataPlaneHost, IndexName};
use larch_engine::{Engine, IndexConfig, SearchParams};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running per-index server.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Every index of this node and the server of each.
#[derive(Clone)]
pub struct DataPlane {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<Engine>,
    keys: KeyStore,
    bind_ip: IpAddr,
    runtime: Handle,
    servers: Mutex<HashMap<String, Running>>,
}

impl DataPlane {
    /// A data plane serving the indexes of `engine`, binding index ports on `bind_ip` and
    /// checking requests against `keys`. Must be called inside a Tokio runtime: servers are
    /// spawned on it.
    pub fn new(engine: Engine, keys: KeyStore, bind_ip: IpAddr) -> DataPlane {
        DataPlane {
            inner: Arc::new(Inner {
                engine: Arc::new(engine),
                keys,
                bind_ip,
                runtime: Handle::current(),
                servers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The engine holding every index's data.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    fn servers(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        // Entries are inserted and removed whole; a poisoned lock is still consistent.
        self.inner
            .servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops every index server: each reports NOT_SERVING, stops accepting and finishes its
    /// in-flight requests. Servers still busy after `deadline` are aborted.
    pub async fn shutdown(&self, deadline: Duration) {
        let running: Vec<Running> = self.servers().drain().map(|(_, r)| r).collect();
        let mut tasks = Vec::with_capacity(running.len());
        for Running { stop, task } in running {
            // The receiver is gone only if the server already ended.
            let _ = stop.send(());
            tasks.push(task);
        }
        let all = async {
            for task in &mut tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(deadline, all).await.is_err() {
            tracing::warn!(
                ?deadline,
                "data-plane drain deadline passed; aborting servers"
            );
            for task in &tasks {
                task.abort();
            }
        }
    }

    /// Deletes stored data of indexes that are not in `known` (left behind by a crash between
    /// the catalog's record and the data plane's work).
    pub fn collect_orphans(&self, known: &[IndexName]) -> larch_engine::Result<()> {
        for dir in self.inner.engine.index_dirs()? {
            if !known.iter().any(|name| name.as_str() == dir) {
                tracing::warn!(index = %dir, "removing data of an index the catalog does not know");
                self.inner.engine.remove_orphan(&dir)?;
            }
        }
        Ok(())
    }

    fn bind(&self, port: u16) -> Result<tokio::net::TcpListener, AttachError> {
        let addr = SocketAddr::new(self.inner.bind_ip, port);
        let listener = std::net::TcpListener::bind(addr).map_err(|err| match err.kind() {
            io::ErrorKind::AddrInUse => AttachError::PortInUse,
            _ => AttachError::Failed(format!("cannot listen on {addr}: {err}")),
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|err| AttachError::Failed(format!("cannot configure {addr}: {err}")))?;
        let _guard = self.inner.runtime.enter();
        tokio::net::TcpListener::from_std(listener)
            .map_err(|err| AttachError::Failed(format!("cannot register {addr}: {err}")))
    }
}

impl DataPlaneHost for DataPlane {
    fn attach(
        &self,
        name: &IndexName,
        config: IndexConfig,
        search: SearchParams,
        port: u16,
        mode: AttachMode,
    ) -> Result<u16, AttachError> {
        let listener = self.bind(port)?;
        let bound = listener
            .local_addr()
            .map_err(|err| AttachError::Failed(format!("cannot read bound address: {err}")))?;
        let engine = &self.inner.engine;
        let index = match mode {
            AttachMode::Create => engine.create_index(name.as_str(), config),
            AttachMode::Recover => engine.open_index(name.as_str(), config),
        }
        .map_err(|err| AttachError::Failed(err.to_string()))?;
        // Before the server starts, so no query runs with the engine's defaults instead.
        index.set_search_params(search);
        let engine = Arc::clone(&self.inner.engine);
        let (stop, stopped) = oneshot::channel::<()>();
        let keys = self.inner.keys.clone();
        let index_name = name.to_string();
        let task = self.inner.runtime.spawn(async move {
            let shutdown = async {
                // A dropped sender (data plane gone) also stops the server.
                let _ = stopped.await;
            };
            if let Err(err) =
                crate::serve_index(listener, engine, index_name.clone(), keys, shutdown).await
            {
                tracing::error!(index = %index_name, error = %err, "data-plane server failed");
            }
        });
        tracing::info!(index = %name, addr = %bound, "data plane serving index");
        self.servers()
            .insert(name.to_string(), Running { stop, task });
        Ok(bound.port())
    }

    fn configure(&self, name: &IndexName, search: SearchParams) -> Result<(), String> {
        let index = self
            .inner
            .engine
            .index(name.as_str())
            .map_err(|err| err.to_string())?;
        index.set_search_params(search);
        Ok(())
    }

    fn detach(&self, name: &IndexName) -> Result<(), String> {
        if let Some(Running { stop, task: _ }) = self.servers().remove(name.as_str()) {
            // The server drains in-flight requests on its own; nobody needs to wait for it.
            let _ = stop.send(());
        }
        self.inner
            .engine
            .drop_index(name.as_str())
            .map_err(|err| err.to_string())
    }
}
