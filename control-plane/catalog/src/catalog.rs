//! The catalog: the set of indexes and the data-plane ports they are served on.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use larch_engine::IndexConfig;

use crate::error::{Error, Result};
use crate::record::{
    ConfigureIndex, CreateIndex, DeletionProtection, IndexName, IndexRecord, IndexState, merge_tags,
};

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

/// The data plane as the catalog sees it: it opens and drops indexes on request.
///
/// Both calls are synchronous and quick (bind a socket, spawn a task), so the catalog can make
/// them while holding its lock and keep its state and the data plane's in step.
pub trait DataPlaneHost: Send + Sync {
    /// Starts serving a new, empty index on `port` (0 = any free port); returns the bound port.
    fn attach(&self, name: &IndexName, config: IndexConfig, port: u16) -> Result<u16, AttachError>;
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
            data_plane,
            ports,
            advertise_host: advertise_host.into(),
        }
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
        let port = self.attach(&indexes, &valid.name, valid.config)?;
        let record = IndexRecord {
            host: host_port(&self.advertise_host, port),
            name: valid.name.clone(),
            config: valid.config,
            vector_type: valid.vector_type,
            cloud: valid.cloud,
            region: valid.region,
            deletion_protection: valid.deletion_protection,
            tags: valid.tags,
            state: IndexState::Ready,
        };
        tracing::info!(index = %record.name, host = %record.host, "index created");
        indexes.insert(
            valid.name,
            Entry {
                record: record.clone(),
                port,
            },
        );
        Ok(record)
    }

    /// Asks the data plane to serve `name` on the first port that works.
    fn attach(
        &self,
        indexes: &BTreeMap<IndexName, Entry>,
        name: &IndexName,
        config: IndexConfig,
    ) -> Result<u16> {
        let candidates: Box<dyn Iterator<Item = u16>> = match self.ports {
            PortPolicy::Ephemeral => Box::new(std::iter::once(0)),
            PortPolicy::Range { first, last } => {
                Box::new((first..=last).filter(|p| indexes.values().all(|entry| entry.port != *p)))
            }
        };
        for port in candidates {
            match self.data_plane.attach(name, config, port) {
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

    /// Changes deletion protection and merges tags (`""` removes a tag).
    pub fn configure_index(&self, request: ConfigureIndex) -> Result<IndexRecord> {
        let name = IndexName::new(&request.name)?;
        let protection = request
            .deletion_protection
            .as_deref()
            .map(|s| DeletionProtection::parse(s, "deletion_protection"))
            .transpose()?;
        let mut indexes = self.lock();
        let entry = indexes
            .get_mut(&name)
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        let mut record = entry.record.clone();
        merge_tags(&mut record.tags, request.tags)?;
        if let Some(protection) = protection {
            record.deletion_protection = protection;
        }
        entry.record = record.clone();
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
        self.data_plane.detach(&name).map_err(Error::DataPlane)?;
        indexes.remove(&name);
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
    use std::collections::BTreeSet;

    /// A data plane that records calls and refuses the ports it is told are busy.
    #[derive(Default)]
    struct FakeDataPlane {
        busy: BTreeSet<u16>,
        attached: Mutex<BTreeMap<String, u16>>,
    }

    impl DataPlaneHost for FakeDataPlane {
        fn attach(&self, name: &IndexName, _: IndexConfig, port: u16) -> Result<u16, AttachError> {
            if self.busy.contains(&port) {
                return Err(AttachError::PortInUse);
            }
            let port = if port == 0 { 40000 } else { port };
            self.attached.lock().unwrap().insert(name.to_string(), port);
            Ok(port)
        }
        fn detach(&self, name: &IndexName) -> Result<(), String> {
            self.attached.lock().unwrap().remove(name.as_str());
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
