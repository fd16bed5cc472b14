//! [`DataPlane`]: the per-index servers of the embedded mode.
//!
//! Opening an index binds its port synchronously (so the catalog learns at once whether the
//! port is free), applies the catalog's search parameters and spawns [`crate::serve_index`] on
//! the runtime. Dropping an index stops its server gracefully and frees its memory once
//! in-flight requests finish. How every port is bound and served (IP, TLS, limits) is given
//! at construction as [`IndexPorts`], so the ports recovery opens first are served like later
//! ones.
//!
//! Indexes come as [`IndexKey`]s (project and name); the engine, its data directories and the
//! server map know each by [`IndexKey::storage_name`], so indexes of the same name in two
//! projects stay apart, and default-project indexes keep their bare name.
//!
//! Where the indexes' files live is [`IndexStorage`]: each index in a local directory (the
//! default), or everything but the write-ahead log in a shared object store (a bucket), where
//! each index's incarnation has a prefix of its own. It builds the [`Engine`] that both this
//! embedded [`DataPlane`] and split mode's `RoutedDataPlane` are given.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use larch_auth::KeyStore;
use larch_engine::object_store::{ObjectStore, path::Path as ObjectPath};
use larch_engine::{BackupInfo, Engine, FlushPolicy, IndexConfig, Preference, SearchParams};
use larch_model::{AttachError, AttachMode, Cause, HostError, IndexKey};
use larch_observe::{Limits, Metrics};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where a data plane keeps its indexes' files: the storage setting of a data-plane process.
#[derive(Debug, Clone)]
pub enum IndexStorage {
    /// Each index in its own directory `<root>/<storage name>/` on local disk: its
    /// description, write-ahead log, manifest, segments and graph files (today's default).
    Local {
        /// Where index directories live (`<data-dir>/indexes`).
        root: PathBuf,
    },
    /// Each index's description, manifest, segments and graph files in `store` under
    /// `<prefix>/indexes/<project>/<name>/<incarnation>/`, so another process on the same
    /// store opens the index; its write-ahead log still in `<root>/<storage name>/` on local
    /// disk (writes not yet flushed are only there). Creating deletes nothing and start-up
    /// deletes no object it does not recognise; dropping an index deletes its incarnation's
    /// prefix. Every index needs an incarnation (the catalog gives every new index one).
    Bucket {
        /// Where the indexes' local log directories live (`<data-dir>/indexes`).
        root: PathBuf,
        /// The shared store, e.g. an S3-compatible bucket; it must support conditional creates.
        store: Arc<dyn ObjectStore>,
        /// Where in the store this deployment's indexes live (`s3://bucket/prefix` → `prefix`).
        prefix: ObjectPath,
    },
}

impl IndexStorage {
    /// The engine keeping indexes here, flushing and compacting by `policy`. Does no IO:
    /// indexes are created and opened through the data plane.
    pub fn engine(&self, policy: FlushPolicy) -> Engine {
        match self {
            IndexStorage::Local { root } => Engine::open_with(root, policy),
            IndexStorage::Bucket {
                root,
                store,
                prefix,
            } => Engine::open_on_store(root, policy, Arc::clone(store), prefix.clone()),
        }
    }
}

/// A running per-index server.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// How a [`DataPlane`] opens and serves its index ports.
#[derive(Debug, Clone)]
pub struct IndexPorts {
    /// The IP index ports are bound on.
    pub bind_ip: IpAddr,
    /// TLS for every index port (`None`: plaintext, HTTP/1.1 and h2c).
    pub tls: Option<larch_observe::Tls>,
    /// Request limits of every index port. Pass the control plane's (a clone shares its
    /// in-flight budget) to hold every port of the process to one budget.
    pub limits: Limits,
    /// Bulk imports of every index (off by default: no import root).
    pub imports: crate::import::Imports,
}

impl IndexPorts {
    /// Plaintext ports on `bind_ip` with the default limits and an in-flight budget of their
    /// own.
    pub fn plain(bind_ip: IpAddr) -> IndexPorts {
        IndexPorts {
            bind_ip,
            tls: None,
            limits: Limits::default(),
            imports: crate::import::Imports::default(),
        }
    }
}

/// Every index of this node and the server of each.
#[derive(Clone)]
pub struct DataPlane {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<Engine>,
    keys: KeyStore,
    metrics: Metrics,
    /// How every index port is bound and served, fixed at construction so the ports recovery
    /// opens first are served exactly like those opened later.
    ports: IndexPorts,
    runtime: Handle,
    /// By storage name.
    servers: Mutex<HashMap<String, Running>>,
}

impl DataPlane {
    /// A data plane serving the indexes of `engine` on plaintext ports of `bind_ip` with the
    /// default limits ([`IndexPorts::plain`]); see [`DataPlane::with_ports`].
    pub fn new(engine: Engine, keys: KeyStore, bind_ip: IpAddr, metrics: Metrics) -> DataPlane {
        DataPlane::with_ports(engine, keys, metrics, IndexPorts::plain(bind_ip))
    }

    /// A data plane serving the indexes of `engine` on index ports opened as `ports` says,
    /// checking requests against `keys` and counting them in `metrics` (which also reports
    /// each index's vectors and bytes from now on). Must be called inside a Tokio runtime:
    /// servers are spawned on it.
    pub fn with_ports(
        engine: Engine,
        keys: KeyStore,
        metrics: Metrics,
        ports: IndexPorts,
    ) -> DataPlane {
        metrics.watch_engine(engine.clone());
        DataPlane {
            inner: Arc::new(Inner {
                engine: Arc::new(engine),
                keys,
                metrics,
                ports,
                runtime: Handle::current(),
                servers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The bulk imports of every index.
    pub fn imports(&self) -> &crate::import::Imports {
        &self.inner.ports.imports
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

    /// Deletes the stored data of `deleted` indexes (the catalog's tombstones: deleted, but
    /// their data was not removed then) and moves aside stored data of indexes that are not in
    /// `known` (comparing storage names) into `quarantine` — nothing is deleted because the
    /// catalog does not list it: a catalog restored from an older backup, or a crash between
    /// the catalog's record and the data plane's work, must not cost data. Leftovers of
    /// interrupted work (names starting with a dot) are deleted. Returns each quarantined
    /// directory's name and where it went.
    ///
    /// With [`IndexStorage::Bucket`] the directories are the local log directories; in the
    /// bucket only the `deleted` indexes lose objects (exactly their incarnation's prefix),
    /// never an index because the catalog does not list it.
    pub fn collect_orphans(
        &self,
        known: &[IndexKey],
        deleted: &[IndexKey],
        quarantine: &Path,
    ) -> larch_engine::Result<Vec<(String, PathBuf)>> {
        let known: std::collections::HashSet<String> =
            known.iter().map(IndexKey::storage_name).collect();
        let engine = &self.inner.engine;
        for key in deleted {
            let storage = key.storage_name();
            tracing::info!(index = %key, %storage, "removing the data of a deleted index");
            engine.remove_orphan(&storage)?;
        }
        let mut moved = Vec::new();
        for dir in engine.index_dirs()? {
            if known.contains(&dir) {
                continue;
            }
            if dir.starts_with('.') {
                tracing::info!(dir = %dir, "removing a leftover of interrupted work");
                engine.remove_orphan(&dir)?;
                continue;
            }
            if let Some(to) = engine.quarantine_orphan(&dir, quarantine)? {
                tracing::warn!(
                    index = %dir,
                    moved_to = %to.display(),
                    "the catalog does not list this index directory; moved it aside instead of \
                     deleting it. To serve it again, stop larch, move it back into the indexes \
                     directory and restore the catalog.json that lists it; if it is not needed, \
                     delete it"
                );
                moved.push((dir, to));
            }
        }
        Ok(moved)
    }

    fn bind(&self, port: u16) -> Result<tokio::net::TcpListener, AttachError> {
        let addr = SocketAddr::new(self.inner.ports.bind_ip, port);
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

/// What the control plane's catalog asks of an in-process data plane (the embedded server
/// adapts these to the catalog's `DataPlaneHost`, so this crate needs no catalog).
impl DataPlane {
    /// Starts serving index `key` with ANN parameters `search` on `port` (0 = any free port),
    /// creating or recovering it per `mode`; returns the bound port.
    pub fn attach(
        &self,
        key: &IndexKey,
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
        let storage = key.storage_name();
        // With its parameters from the start, so neither the indexer nor a query sees the
        // engine's defaults instead.
        match mode {
            AttachMode::Create => {
                engine.create_index_preferring(&storage, config, Preference::Write, search)
            }
            AttachMode::Recover => {
                engine.open_index_preferring(&storage, config, Preference::Write, search)
            }
        }
        .map_err(|err| AttachError::Refused(Cause::new(err)))?;
        let engine = Arc::clone(&self.inner.engine);
        let (stop, stopped) = oneshot::channel::<()>();
        let keys = self.inner.keys.clone();
        let metrics = self.inner.metrics.clone();
        let limits = self.inner.ports.limits.clone();
        let imports = self.inner.ports.imports.clone();
        let served = key.clone();
        let listener = larch_observe::Listener::new(listener, self.inner.ports.tls.clone());
        let task = self.inner.runtime.spawn(async move {
            let shutdown = async {
                // A dropped sender (data plane gone) also stops the server.
                let _ = stopped.await;
            };
            let logged = served.to_string();
            let served = crate::serve_index(
                listener, engine, served, keys, metrics, limits, imports, shutdown,
            );
            if let Err(err) = served.await {
                tracing::error!(index = %logged, error = %err, "data-plane server failed");
            }
        });
        tracing::info!(index = %key, addr = %bound, "data plane serving index");
        self.servers().insert(storage, Running { stop, task });
        Ok(bound.port())
    }

    /// Applies new ANN parameters to the served index `key`.
    pub fn configure(&self, key: &IndexKey, search: SearchParams) -> Result<(), HostError> {
        let index = self
            .inner
            .engine
            .index(&key.storage_name())
            .map_err(|err| HostError::Refused(Cause::new(err)))?;
        index.set_search_params(search);
        Ok(())
    }

    /// Stops serving `key` and drops its data.
    pub fn detach(&self, key: &IndexKey) -> Result<(), HostError> {
        let storage = key.storage_name();
        if let Some(Running { stop, task: _ }) = self.servers().remove(&storage) {
            // The server drains in-flight requests on its own; nobody needs to wait for it.
            let _ = stop.send(());
        }
        self.inner
            .engine
            .drop_index(&storage)
            .map_err(|err| HostError::Refused(Cause::new(err)))
    }
}

/// Backups of this data plane's indexes, as the catalog asks for them (see `larch_engine`'s
/// backups): each call runs on the calling (blocking) thread.
impl DataPlane {
    /// Takes backup `backup_id` of the served index `key`.
    pub fn backup(&self, key: &IndexKey, backup_id: &str) -> Result<BackupInfo, HostError> {
        self.inner
            .engine
            .backup_index(&key.storage_name(), backup_id)
            .map_err(|err| HostError::Refused(Cause::new(err)))
    }

    /// Materialises index `key` from backup `backup_id`, not served yet: attach it with
    /// [`AttachMode::Recover`].
    pub fn restore(&self, backup_id: &str, key: &IndexKey) -> Result<BackupInfo, HostError> {
        self.inner
            .engine
            .restore_backup(backup_id, &key.storage_name())
            .map_err(|err| HostError::Refused(Cause::new(err)))
    }

    /// Deletes backup `backup_id`; done if there is none.
    pub fn delete_backup(&self, backup_id: &str) -> Result<(), HostError> {
        self.inner
            .engine
            .delete_backup(backup_id)
            .map(drop)
            .map_err(|err| HostError::Refused(Cause::new(err)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use larch_engine::{Dimension, Metric};
    use larch_model::IndexName;
    use std::net::Ipv4Addr;

    /// A project other than the default, with an id shaped like the auth crate's.
    const OTHER: &str = "3f2b8c1e-7d4a-4e0b-9c6f-1a2b3c4d5e6f";

    #[tokio::test]
    async fn projects_keep_separate_storage_and_unknown_directories_are_quarantined() {
        let root = std::env::temp_dir().join(format!("larch-host-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let data_plane = DataPlane::new(
            Engine::open(&root),
            KeyStore::new(),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Metrics::new(),
        );
        let key =
            |project: &str| IndexKey::new(project, IndexName::new("movies").unwrap()).unwrap();
        let (mine, theirs) = (key(larch_model::DEFAULT_PROJECT), key(OTHER));
        let config = IndexConfig {
            dimension: Dimension::new(4).unwrap(),
            metric: Metric::Cosine,
        };
        let attach = |key: &IndexKey| {
            data_plane
                .attach(key, config, SearchParams::default(), 0, AttachMode::Create)
                .unwrap()
        };
        let ports = (attach(&mine), attach(&theirs));
        assert_ne!(ports.0, ports.1, "each index has its own server");
        let storage = vec!["movies".to_owned(), format!("movies@{OTHER}")];
        assert_eq!(data_plane.engine().index_names().unwrap(), storage);

        std::fs::create_dir_all(root.join("gone")).unwrap();
        std::fs::write(root.join("gone").join("data"), b"kept").unwrap();
        std::fs::create_dir_all(root.join(".left.tmp")).unwrap();
        // A deleted index whose data was not removed then (its tombstone names it).
        let deleted = IndexKey::parse(larch_model::DEFAULT_PROJECT, "old", "abc").unwrap();
        std::fs::create_dir_all(root.join(deleted.storage_name())).unwrap();
        // Beside the root, as `larch serve` keeps it beside its indexes directory.
        let quarantine = root.with_extension("quarantine");
        let moved = data_plane
            .collect_orphans(
                &[mine.clone(), theirs.clone()],
                std::slice::from_ref(&deleted),
                &quarantine,
            )
            .unwrap();
        assert_eq!(
            data_plane.engine().index_dirs().unwrap(),
            storage,
            "the unknown directory, the leftover and the deleted index's data go"
        );
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(moved[0].0, "gone");
        assert!(moved[0].1.starts_with(&quarantine));
        assert_eq!(
            std::fs::read(moved[0].1.join("data")).unwrap(),
            b"kept",
            "an unknown directory is moved aside, not deleted"
        );

        data_plane.detach(&theirs).unwrap();
        assert_eq!(data_plane.engine().index_names().unwrap(), ["movies"]);
        data_plane.shutdown(Duration::from_secs(5)).await;
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_dir_all(&quarantine);
    }

    /// Backups in a real S3-compatible bucket (moto, `tests/s3/serve.py`): segments are copied
    /// server-side under `<prefix>/backups/<id>/`, and a process with an empty directory of its
    /// own restores the index from the bucket alone.
    #[test]
    fn s3_backups_restore_from_the_bucket_alone() {
        use larch_engine::{FetchRequest, UpsertRequest, VectorInput};
        let Some(test) = larch_state::testing::s3("s3_backups") else {
            return;
        };
        let config = IndexConfig {
            dimension: Dimension::new(2).unwrap(),
            metric: Metric::Cosine,
        };
        let storage = |dir: &Path| IndexStorage::Bucket {
            root: dir.join("indexes"),
            store: Arc::clone(&test.bucket.store),
            prefix: test.bucket.prefix.clone(),
        };
        let first = tempfile::tempdir().unwrap();
        let engine = storage(first.path()).engine(FlushPolicy::default());
        let index = engine.create_index("movies@default@0a1b", config).unwrap();
        let upsert = |ids: &[&str]| {
            let vectors = ids
                .iter()
                .map(|id| VectorInput {
                    id: (*id).into(),
                    values: vec![1.0, 0.5],
                    ..Default::default()
                })
                .collect();
            index
                .upsert(UpsertRequest {
                    namespace: "films".into(),
                    vectors,
                })
                .unwrap();
        };
        upsert(&["a", "b"]);
        let info = engine.backup_index("movies@default@0a1b", "s3-bk").unwrap();
        assert_eq!((info.record_count, info.namespace_count), (2, 1));
        upsert(&["late"]);
        engine.drop_index("movies@default@0a1b").unwrap();
        drop((index, engine));

        let second = tempfile::tempdir().unwrap();
        let engine = storage(second.path()).engine(FlushPolicy::default());
        let restored = engine.restore_index("s3-bk", "copy@default@2c3d").unwrap();
        let fetched = restored
            .fetch(FetchRequest {
                namespace: "films".into(),
                ids: vec!["a".into(), "b".into(), "late".into()],
            })
            .unwrap();
        let ids: Vec<&str> = fetched.vectors.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(engine.delete_backup("s3-bk").unwrap());
        assert!(engine.backup_info("s3-bk").is_err());
    }
}
