//! The catalog: the set of indexes and the data-plane ports they are served on.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use larch_engine::{IndexConfig, SearchParams};

use crate::error::{Error, Result};
use crate::record::{
    ConfigureIndex, CreateIndex, DeletionProtection, IndexName, IndexRecord, IndexState, merge_tags,
};
use crate::store::{CatalogStore, StoredIndex};

/// Which ports the data plane may use for indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortPolicy {
    /// Each index gets the lowest free port of `first..=last` (Pinecone Local's scheme).
    Range {
        /// First port of the range.
        first: u16,
        /// Last port of the range, inclusive.
        last: u16,
    },
    /// Each index gets a port chosen by the operating system (tests, `--data-ports 0`).
    Ephemeral,
}

impl PortPolicy {
    /// Parses `"5081-5199"`, a single port `"5081"`, or `"0"` for ephemeral ports.
    pub fn parse(s: &str) -> Result<PortPolicy, String> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("{p:?} is not a port number (0-65535)"))
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(s)?;
                (p, p)
            }
        };
        match (first, last) {
            (0, 0) => Ok(PortPolicy::Ephemeral),
            (0, _) => {
                Err("a port range cannot start at 0; use \"0\" alone for any free port".into())
            }
            (first, last) if first > last => Err(format!(
                "port range {first}-{last} is empty: the first port must not exceed the last"
            )),
            (first, last) => Ok(PortPolicy::Range { first, last }),
        }
    }
}

impl fmt::Display for PortPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortPolicy::Range { first, last } => write!(f, "{first}-{last}"),
            PortPolicy::Ephemeral => f.write_str("0"),
        }
    }
}

/// Why the data plane could not open an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachError {
    /// The requested port is taken by another program; the catalog tries the next one.
    PortInUse,
    /// Anything else, described for the operator.
    Failed(String),
}

/// Whether the data plane starts an index afresh or recovers its stored data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// A new, empty index (any stale data of that name is discarded).
    Create,
    /// An index the catalog knew before a restart: its data is recovered.
    Recover,
}

/// The data plane as the catalog sees it: it opens, reconfigures and drops indexes on request.
///
/// Every call is synchronous (bind a socket, create or recover the index's storage, spawn a
/// task), so the catalog can make them while holding its lock and keep its state and the data
/// plane's in step. Recovery replays an index's log, so it may take a while at start-up.
///
/// The catalog owns (and persists) each index's [`SearchParams`]; the data plane only applies
/// them: at attach, so an index never answers a query with other parameters, and at
/// [`configure`](DataPlaneHost::configure) when they change.
pub trait DataPlaneHost: Send + Sync {
    /// Starts serving an index with ANN parameters `search` on `port` (0 = any free port);
    /// returns the bound port.
    fn attach(
        &self,
        name: &IndexName,
        config: IndexConfig,
        search: SearchParams,
        port: u16,
        mode: AttachMode,
    ) -> Result<u16, AttachError>;
    /// Applies new ANN parameters to the attached index `name`.
    fn configure(&self, name: &IndexName, search: SearchParams) -> Result<(), String>;
    /// Stops serving `name` and drops its data.
    fn detach(&self, name: &IndexName) -> Result<(), String>;
}

struct Entry {
    record: IndexRecord,
    port: u16,
}

/// Every index of this control plane.
pub struct Catalog {
    indexes: Mutex<BTreeMap<IndexName, Entry>>,
    /// Where records are persisted; `None` keeps them in memory only.
    store: Option<CatalogStore>,
    data_plane: Arc<dyn DataPlaneHost>,
    ports: PortPolicy,
    /// Host part of every index's `host`, as clients should dial it.
    advertise_host: String,
}

impl Catalog {
    /// An empty catalog whose indexes are served by `data_plane` on ports from `ports`, and
    /// advertised as `advertise_host:port`.
    pub fn new(
        data_plane: Arc<dyn DataPlaneHost>,
        ports: PortPolicy,
        advertise_host: impl Into<String>,
    ) -> Catalog {
        Catalog {
            indexes: Mutex::new(BTreeMap::new()),
            store: None,
            data_plane,
            ports,
            advertise_host: advertise_host.into(),
        }
    }

    /// A durable catalog kept in `dir` (file [`CATALOG_FILE`]): every index recorded there is
    /// recovered by the data plane — on its old port when that is free, so its `host` stays
    /// the same — before this returns.
    pub fn open(
        dir: &Path,
        data_plane: Arc<dyn DataPlaneHost>,
        ports: PortPolicy,
        advertise_host: impl Into<String>,
    ) -> Result<Catalog> {
        let store = CatalogStore::new(dir);
        let stored = store.load()?;
        let mut catalog = Catalog::new(data_plane, ports, advertise_host);
        let mut moved = false;
        {
            let mut indexes = catalog.lock();
            for stored in stored {
                let loaded = stored.load(store.path())?;
                let port = match catalog.data_plane.attach(
                    &loaded.name,
                    loaded.config,
                    loaded.search,
                    loaded.port,
                    AttachMode::Recover,
                ) {
                    Ok(port) => port,
                    Err(AttachError::PortInUse) => {
                        tracing::warn!(
                            index = %loaded.name,
                            port = loaded.port,
                            "the index's port is taken by another program; serving it on a new port, so its host changes",
                        );
                        moved = true;
                        catalog.attach(
                            &indexes,
                            &loaded.name,
                            loaded.config,
                            loaded.search,
                            AttachMode::Recover,
                        )?
                    }
                    Err(AttachError::Failed(reason)) => {
                        return Err(Error::DataPlane(format!(
                            "cannot recover index '{}': {reason}",
                            loaded.name
                        )));
                    }
                };
                let record = IndexRecord {
                    host: host_port(&catalog.advertise_host, port),
                    name: loaded.name.clone(),
                    config: loaded.config,
                    vector_type: loaded.vector_type,
                    cloud: loaded.cloud,
                    region: loaded.region,
                    deletion_protection: loaded.deletion_protection,
                    tags: loaded.tags,
                    search: loaded.search,
                    state: IndexState::Ready,
                };
                tracing::info!(index = %record.name, host = %record.host, "index recovered");
                indexes.insert(loaded.name, Entry { record, port });
            }
        }
        catalog.store = Some(store);
        if moved {
            let indexes = catalog.lock();
            catalog.save(&indexes)?;
        }
        Ok(catalog)
    }

    /// Persists `indexes` (durable catalogs only).
    fn save(&self, indexes: &BTreeMap<IndexName, Entry>) -> Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        store.save(
            indexes
                .values()
                .map(|Entry { record, port }| StoredIndex {
                    name: record.name.to_string(),
                    dimension: record.config.dimension.get(),
                    metric: record.config.metric.to_string(),
                    vector_type: record.vector_type.as_str().to_owned(),
                    cloud: record.cloud.as_str().to_owned(),
                    region: record.region.clone(),
                    deletion_protection: record.deletion_protection.as_str().to_owned(),
                    tags: record.tags.clone(),
                    port: *port,
                    search: record.search.into(),
                })
                .collect(),
        )
    }

    /// The names of every index, for garbage-collecting data the catalog no longer knows.
    pub fn index_names(&self) -> Vec<IndexName> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<IndexName, Entry>> {
        // A panic while holding the lock cannot leave a half-written entry (entries are
        // inserted whole), so a poisoned lock is still consistent.
        self.indexes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates an index and starts serving it; it is ready when this returns.
    pub fn create_index(&self, request: CreateIndex) -> Result<IndexRecord> {
        let valid = request.validate()?;
        let mut indexes = self.lock();
        if indexes.contains_key(&valid.name) {
            return Err(Error::AlreadyExists(valid.name.to_string()));
        }
        let port = self.attach(
            &indexes,
            &valid.name,
            valid.config,
            valid.search,
            AttachMode::Create,
        )?;
        let record = IndexRecord {
            host: host_port(&self.advertise_host, port),
            name: valid.name.clone(),
            config: valid.config,
            vector_type: valid.vector_type,
            cloud: valid.cloud,
            region: valid.region,
            deletion_protection: valid.deletion_protection,
            tags: valid.tags,
            search: valid.search,
            state: IndexState::Ready,
        };
        indexes.insert(
            valid.name.clone(),
            Entry {
                record: record.clone(),
                port,
            },
        );
        if let Err(err) = self.save(&indexes) {
            // Not recorded, so not created: undo the data plane's side too.
            indexes.remove(&valid.name);
            if let Err(detach) = self.data_plane.detach(&valid.name) {
                tracing::warn!(index = %valid.name, error = %detach, "cannot drop the unrecorded index");
            }
            return Err(err);
        }
        tracing::info!(index = %record.name, host = %record.host, "index created");
        Ok(record)
    }

    /// Asks the data plane to serve `name` on the first port that works.
    fn attach(
        &self,
        indexes: &BTreeMap<IndexName, Entry>,
        name: &IndexName,
        config: IndexConfig,
        search: SearchParams,
        mode: AttachMode,
    ) -> Result<u16> {
        let candidates: Box<dyn Iterator<Item = u16>> = match self.ports {
            PortPolicy::Ephemeral => Box::new(std::iter::once(0)),
            PortPolicy::Range { first, last } => {
                Box::new((first..=last).filter(|p| indexes.values().all(|entry| entry.port != *p)))
            }
        };
        for port in candidates {
            match self.data_plane.attach(name, config, search, port, mode) {
                Ok(bound) => return Ok(bound),
                Err(AttachError::PortInUse) => {
                    tracing::debug!(port, "data-plane port in use, trying the next one");
                }
                Err(AttachError::Failed(reason)) => return Err(Error::DataPlane(reason)),
            }
        }
        Err(Error::NoFreePort(self.ports.to_string()))
    }

    /// Every index, ordered by name.
    pub fn list_indexes(&self) -> Vec<IndexRecord> {
        self.lock().values().map(|e| e.record.clone()).collect()
    }

    /// One index.
    pub fn describe_index(&self, name: &str) -> Result<IndexRecord> {
        let name = IndexName::new(name)?;
        self.lock()
            .get(&name)
            .map(|e| e.record.clone())
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }

    /// Changes deletion protection, merges tags (`""` removes a tag) and changes the given ANN
    /// parameters, which the data plane applies before this returns.
    pub fn configure_index(&self, request: ConfigureIndex) -> Result<IndexRecord> {
        let ConfigureIndex {
            name,
            deletion_protection,
            tags,
            search,
        } = request;
        let name = IndexName::new(&name)?;
        let protection = deletion_protection
            .as_deref()
            .map(|s| DeletionProtection::parse(s, "deletion_protection"))
            .transpose()?;
        let mut indexes = self.lock();
        let entry = indexes
            .get_mut(&name)
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        let mut record = entry.record.clone();
        merge_tags(&mut record.tags, tags)?;
        if let Some(protection) = protection {
            record.deletion_protection = protection;
        }
        record.search = search.apply_to(record.search)?;
        let previous = std::mem::replace(&mut entry.record, record.clone());
        let search_changed = record.search != previous.search;
        let restore = |indexes: &mut BTreeMap<IndexName, Entry>, previous: IndexRecord| {
            if let Some(entry) = indexes.get_mut(&name) {
                entry.record = previous;
            }
        };
        // Applied before it is recorded, as create attaches before recording.
        if search_changed && let Err(reason) = self.data_plane.configure(&name, record.search) {
            restore(&mut indexes, previous);
            return Err(Error::DataPlane(reason));
        }
        if let Err(err) = self.save(&indexes) {
            if search_changed && let Err(reason) = self.data_plane.configure(&name, previous.search)
            {
                tracing::warn!(index = %name, error = %reason, "cannot restore the previous search parameters");
            }
            restore(&mut indexes, previous);
            return Err(err);
        }
        if search_changed {
            tracing::info!(index = %name, search = ?record.search, "search parameters changed");
        }
        Ok(record)
    }

    /// Deletes an index and its data, unless deletion protection is enabled.
    pub fn delete_index(&self, name: &str) -> Result<()> {
        let name = IndexName::new(name)?;
        let mut indexes = self.lock();
        let entry = indexes
            .get(&name)
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        if entry.record.deletion_protection == DeletionProtection::Enabled {
            return Err(Error::FailedPrecondition(format!(
                "index '{name}' has deletion protection enabled; disable it first with \
                 ConfigureIndex {{\"name\":\"{name}\",\"deletion_protection\":\"disabled\"}}"
            )));
        }
        let entry = indexes
            .remove(&name)
            .expect("looked up above under the same lock");
        if let Err(err) = self.save(&indexes) {
            indexes.insert(name, entry);
            return Err(err);
        }
        // Recorded as gone first: a crash now leaves only orphaned data, collected at start.
        self.data_plane.detach(&name).map_err(Error::DataPlane)?;
        tracing::info!(index = %name, "index deleted");
        Ok(())
    }
}

/// `host:port`, with IPv6 literals in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SearchSettings;
    use larch_engine::Quantization;
    use std::collections::BTreeSet;

    /// A data plane that records calls and refuses the ports it is told are busy.
    #[derive(Default)]
    struct FakeDataPlane {
        busy: BTreeSet<u16>,
        attached: Mutex<BTreeMap<String, u16>>,
        /// The search parameters each index was last given.
        search: Mutex<BTreeMap<String, SearchParams>>,
    }

    impl FakeDataPlane {
        fn search_of(&self, name: &str) -> Option<SearchParams> {
            self.search.lock().unwrap().get(name).copied()
        }
    }

    impl DataPlaneHost for FakeDataPlane {
        fn attach(
            &self,
            name: &IndexName,
            _: IndexConfig,
            search: SearchParams,
            port: u16,
            _: AttachMode,
        ) -> Result<u16, AttachError> {
            if self.busy.contains(&port) {
                return Err(AttachError::PortInUse);
            }
            let port = if port == 0 { 40000 } else { port };
            self.attached.lock().unwrap().insert(name.to_string(), port);
            self.search.lock().unwrap().insert(name.to_string(), search);
            Ok(port)
        }
        fn configure(&self, name: &IndexName, search: SearchParams) -> Result<(), String> {
            if !self.attached.lock().unwrap().contains_key(name.as_str()) {
                return Err(format!("index '{name}' is not attached"));
            }
            self.search.lock().unwrap().insert(name.to_string(), search);
            Ok(())
        }
        fn detach(&self, name: &IndexName) -> Result<(), String> {
            self.attached.lock().unwrap().remove(name.as_str());
            self.search.lock().unwrap().remove(name.as_str());
            Ok(())
        }
    }

    fn create(name: &str) -> CreateIndex {
        CreateIndex {
            name: name.into(),
            dimension: Some(4),
            ..Default::default()
        }
    }

    #[test]
    fn ports_come_from_the_range_skipping_busy_ones() {
        let dp = Arc::new(FakeDataPlane {
            busy: BTreeSet::from([5081]),
            ..Default::default()
        });
        let catalog = Catalog::new(
            dp.clone(),
            PortPolicy::parse("5081-5083").unwrap(),
            "127.0.0.1",
        );
        assert_eq!(
            catalog.create_index(create("a")).unwrap().host,
            "127.0.0.1:5082"
        );
        assert_eq!(
            catalog.create_index(create("b")).unwrap().host,
            "127.0.0.1:5083"
        );
        let err = catalog.create_index(create("c")).unwrap_err();
        assert!(matches!(err, Error::NoFreePort(_)), "{err}");
        catalog.delete_index("a").unwrap();
        assert_eq!(
            catalog.create_index(create("c")).unwrap().host,
            "127.0.0.1:5082"
        );
        assert_eq!(dp.attached.lock().unwrap().len(), 2);
    }

    #[test]
    fn lifecycle_errors() {
        let catalog = Catalog::new(
            Arc::new(FakeDataPlane::default()),
            PortPolicy::Ephemeral,
            "::1",
        );
        let rec = catalog.create_index(create("a")).unwrap();
        assert_eq!(rec.host, "[::1]:40000");
        assert!(matches!(
            catalog.create_index(create("a")),
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            catalog.describe_index("zz"),
            Err(Error::NotFound(_))
        ));
        catalog
            .configure_index(ConfigureIndex {
                name: "a".into(),
                deletion_protection: Some("enabled".into()),
                tags: BTreeMap::from([("env".into(), "dev".into())]),
                search: SearchSettings::default(),
            })
            .unwrap();
        let err = catalog.delete_index("a").unwrap_err();
        assert!(matches!(err, Error::FailedPrecondition(_)));
        assert!(
            err.to_string()
                .contains("\"deletion_protection\":\"disabled\""),
            "{err}"
        );
        let rec = catalog.describe_index("a").unwrap();
        assert_eq!(rec.tags.get("env").map(String::as_str), Some("dev"));
        catalog
            .configure_index(ConfigureIndex {
                name: "a".into(),
                deletion_protection: Some("disabled".into()),
                tags: BTreeMap::new(),
                search: SearchSettings::default(),
            })
            .unwrap();
        catalog.delete_index("a").unwrap();
        assert!(matches!(
            catalog.describe_index("a"),
            Err(Error::NotFound(_))
        ));
        assert!(catalog.list_indexes().is_empty());
    }

    #[test]
    fn durable_catalog_recovers_records_and_ports() {
        let dir = tempfile::tempdir().unwrap();
        let policy = PortPolicy::parse("6001-6010").unwrap();
        let dp = Arc::new(FakeDataPlane::default());
        let catalog = Catalog::open(dir.path(), dp.clone(), policy, "127.0.0.1").unwrap();
        catalog.create_index(create("a")).unwrap();
        catalog.create_index(create("b")).unwrap();
        catalog.create_index(create("c")).unwrap();
        catalog
            .configure_index(ConfigureIndex {
                name: "b".into(),
                deletion_protection: Some("enabled".into()),
                tags: BTreeMap::from([("env".into(), "prod".into())]),
                search: SearchSettings {
                    ef_search: Some(40),
                    ..Default::default()
                },
            })
            .unwrap();
        catalog.delete_index("a").unwrap();
        let before = catalog.list_indexes();
        drop(catalog);

        // Restart: same records, same hosts; recovered, not created.
        let dp = Arc::new(FakeDataPlane::default());
        let reopened = Catalog::open(dir.path(), dp.clone(), policy, "127.0.0.1").unwrap();
        assert_eq!(reopened.list_indexes(), before);
        assert_eq!(
            dp.attached.lock().unwrap().clone(),
            BTreeMap::from([("b".to_owned(), 6002), ("c".to_owned(), 6003)])
        );
        let b_search = SearchParams::default().with_ef_search(40).unwrap();
        assert_eq!(reopened.describe_index("b").unwrap().search, b_search);
        assert_eq!(
            dp.search_of("b"),
            Some(b_search),
            "recovery applies the stored search parameters"
        );
        assert_eq!(dp.search_of("c"), Some(SearchParams::default()));
        drop(reopened);

        // A port taken by another program moves the index and records the new port.
        let dp = Arc::new(FakeDataPlane {
            busy: BTreeSet::from([6002]),
            ..Default::default()
        });
        let moved = Catalog::open(dir.path(), dp, policy, "127.0.0.1").unwrap();
        assert_eq!(moved.describe_index("b").unwrap().host, "127.0.0.1:6001");
        drop(moved);
        let dp = Arc::new(FakeDataPlane::default());
        let again = Catalog::open(dir.path(), dp, policy, "127.0.0.1").unwrap();
        assert_eq!(again.describe_index("b").unwrap().host, "127.0.0.1:6001");
    }

    #[test]
    fn search_params_reach_the_data_plane_at_create_and_configure() {
        let dp = Arc::new(FakeDataPlane::default());
        let catalog = Catalog::new(dp.clone(), PortPolicy::Ephemeral, "127.0.0.1");
        let mut request = create("a");
        request.search = SearchSettings {
            m: Some(24),
            ef_search: Some(100),
            quantization: Some("int8".into()),
            ..Default::default()
        };
        let created = catalog.create_index(request).unwrap().search;
        let expected = SearchParams::default()
            .with_m(24)
            .and_then(|p| p.with_ef_search(100))
            .unwrap()
            .with_quantization(Quantization::Int8);
        assert_eq!(created, expected);
        assert_eq!(dp.search_of("a"), Some(expected));

        let configure = |search: SearchSettings| {
            catalog.configure_index(ConfigureIndex {
                name: "a".into(),
                search,
                ..Default::default()
            })
        };
        let changed = configure(SearchSettings {
            ef_search: Some(40),
            ..Default::default()
        })
        .unwrap()
        .search;
        let expected = expected.with_ef_search(40).unwrap();
        assert_eq!(changed, expected, "only ef_search changes");
        assert_eq!(dp.search_of("a"), Some(expected));

        let err = configure(SearchSettings {
            m: Some(2),
            ef_search: Some(50),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "search.m: must be between 4 and 64; got 2");
        assert_eq!(
            catalog.describe_index("a").unwrap().search,
            expected,
            "a refused change changes nothing"
        );
        assert_eq!(dp.search_of("a"), Some(expected));
    }

    #[test]
    fn catalog_written_before_search_params_loads_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        // catalog.json as written before `search` existed.
        std::fs::write(
            dir.path().join(crate::CATALOG_FILE),
            r#"{"version":1,"indexes":[{"name":"old","dimension":4,"metric":"cosine",
                "vector_type":"dense","cloud":"aws","region":"us-east-1",
                "deletion_protection":"disabled","tags":{},"port":0}]}"#,
        )
        .unwrap();
        let dp = Arc::new(FakeDataPlane::default());
        let catalog =
            Catalog::open(dir.path(), dp.clone(), PortPolicy::Ephemeral, "127.0.0.1").unwrap();
        assert_eq!(
            catalog.describe_index("old").unwrap().search,
            SearchParams::default()
        );
        assert_eq!(dp.search_of("old"), Some(SearchParams::default()));
    }

    #[test]
    fn stored_search_params_out_of_range_are_refused_naming_the_index() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(crate::CATALOG_FILE),
            r#"{"version":1,"indexes":[{"name":"bad","dimension":4,"metric":"cosine",
                "vector_type":"dense","cloud":"aws","region":"us-east-1",
                "deletion_protection":"disabled","tags":{},"port":0,
                "search":{"m":1000}}]}"#,
        )
        .unwrap();
        let err = Catalog::open(
            dir.path(),
            Arc::new(FakeDataPlane::default()),
            PortPolicy::Ephemeral,
            "127.0.0.1",
        )
        .err()
        .expect("an out-of-range m is refused");
        assert!(err.to_string().contains("index 'bad'"), "{err}");
        assert!(err.to_string().contains("search.m"), "{err}");
    }

    #[test]
    fn unreadable_catalog_stops_startup_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(crate::CATALOG_FILE), b"{not json").unwrap();
        let err = Catalog::open(
            dir.path(),
            Arc::new(FakeDataPlane::default()),
            PortPolicy::Ephemeral,
            "127.0.0.1",
        )
        .err()
        .expect("a corrupt catalog is refused");
        assert!(err.to_string().contains("catalog.json"), "{err}");
    }

    #[test]
    fn port_policy_parsing() {
        assert_eq!(PortPolicy::parse("0"), Ok(PortPolicy::Ephemeral));
        assert_eq!(
            PortPolicy::parse("5081-5199"),
            Ok(PortPolicy::Range {
                first: 5081,
                last: 5199
            })
        );
        assert_eq!(
            PortPolicy::parse("6000"),
            Ok(PortPolicy::Range {
                first: 6000,
                last: 6000
            })
        );
        for bad in ["", "x", "5199-5081", "0-10", "70000"] {
            assert!(PortPolicy::parse(bad).is_err(), "{bad}");
        }
    }
}
