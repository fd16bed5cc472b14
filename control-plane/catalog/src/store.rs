//! How the catalog is stored: [`CatalogFormat`], the catalog's
//! [`Format`](larch_state::Format) — the same bytes in `catalog.json` (one control plane,
//! [`larch_state::LocalFile`]: temp file, fsync, rename, fsync of the directory) and in each
//! version of a shared catalog ([`larch_state::SharedDocument`]).
//!
//! Format: `{"version":1,"indexes":[{...}],"tombstones":[{...}]}`, each index a
//! [`StoredIndex`] of plain values, validated again when loaded. Fields added later default when absent, so files written by older versions load without a
//! version bump: `search` (the default ANN parameters), `project` (the default project,
//! which is what every index belonged to before projects existed), `incarnation` (none: the
//! index keeps its old storage name) and `tombstones` (deleted indexes whose data the data
//! plane has not confirmed removing yet; none), `backups` and `restore_jobs` (see `backups`;
//! none).

use std::collections::BTreeMap;

use larch_engine::{IndexConfig, Metric, SearchParams};
use serde::{Deserialize, Serialize};

use crate::backups::{BackupRecord, RestoreJob};
use crate::doc::{Entry, Indexes};
use crate::error::{Error, Result};
use crate::hosts::Hosts;
use crate::record::{
    Cloud, DEFAULT_PROJECT, DeletionProtection, Incarnation, IndexKey, IndexName, IndexRecord,
    IndexState, SearchSettings, parse_vector_type,
};

/// Name of the catalog file inside the data directory.
pub const CATALOG_FILE: &str = "catalog.json";
const VERSION: u32 = 1;

/// One index as stored on disk: plain values, validated again when loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredIndex {
    /// The owning project; absent in catalogs written before projects existed.
    #[serde(default = "default_project")]
    pub(crate) project: String,
    pub(crate) name: String,
    pub(crate) dimension: u32,
    pub(crate) metric: String,
    pub(crate) vector_type: String,
    pub(crate) cloud: String,
    pub(crate) region: String,
    pub(crate) deletion_protection: String,
    pub(crate) tags: BTreeMap<String, String>,
    /// The data-plane port, kept so an index has the same `host` after a restart.
    pub(crate) port: u16,
    /// ANN parameters; absent in catalogs written before they existed (defaults then).
    #[serde(default)]
    pub(crate) search: StoredSearch,
    /// Which creation of the index this is (see [`Incarnation`]); absent for indexes created
    /// before incarnations existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) incarnation: Option<String>,
}

/// A deleted index whose data the data plane has not confirmed removing yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredTombstone {
    pub(crate) project: String,
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) incarnation: Option<String>,
}

impl StoredTombstone {
    pub(crate) fn of(key: &IndexKey) -> StoredTombstone {
        StoredTombstone {
            project: key.project().to_owned(),
            name: key.name().to_string(),
            incarnation: key.incarnation().map(|i| i.as_str().to_owned()),
        }
    }

    /// The key (with its incarnation) of the deleted index; `location` names the catalog in
    /// errors.
    pub(crate) fn load(&self, location: &str) -> Result<IndexKey> {
        let corrupt = corrupt(location, "tombstone of index", &self.name, &self.project);
        let incarnation = self.incarnation.as_deref();
        let (key, incarnation) = stored_key(&self.project, &self.name, incarnation, &corrupt)?;
        Ok(key.with_incarnation(incarnation))
    }
}

/// Makes the error of a damaged catalog entry (`entry` = "index", "tombstone of index", …),
/// naming the file, the entry and what is wrong with it.
fn corrupt<'a>(
    location: &'a str,
    entry: &'a str,
    name: &'a str,
    project: &'a str,
) -> impl Fn(String) -> Error + 'a {
    move |what| {
        Error::Storage(format!(
            "{location}: {entry} '{name}' of project '{project}': {what}; fix or remove the entry",
        ))
    }
}

/// The key (without incarnation) and the incarnation of a stored entry, re-validated.
fn stored_key(
    project: &str,
    name: &str,
    incarnation: Option<&str>,
    corrupt: &impl Fn(String) -> Error,
) -> Result<(IndexKey, Option<Incarnation>)> {
    let name = IndexName::new(name).map_err(|e| corrupt(e.to_string()))?;
    let incarnation = incarnation
        .map(Incarnation::parse)
        .transpose()
        .map_err(|e| corrupt(e.to_string()))?;
    let key = IndexKey::new(project, name).map_err(|e| corrupt(e.to_string()))?;
    Ok((key, incarnation))
}

fn default_project() -> String {
    DEFAULT_PROJECT.to_owned()
}

/// [`SearchParams`] as stored; a missing field takes its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct StoredSearch {
    pub(crate) m: u32,
    pub(crate) ef_construction: u32,
    pub(crate) ef_search: u32,
    pub(crate) quantization: String,
}

impl From<SearchParams> for StoredSearch {
    fn from(params: SearchParams) -> StoredSearch {
        StoredSearch {
            m: params.m(),
            ef_construction: params.ef_construction(),
            ef_search: params.ef_search(),
            quantization: params.quantization().as_str().to_owned(),
        }
    }
}

impl Default for StoredSearch {
    fn default() -> StoredSearch {
        SearchParams::default().into()
    }
}

impl From<(&IndexKey, &Entry)> for StoredIndex {
    fn from((key, entry): (&IndexKey, &Entry)) -> StoredIndex {
        let Entry {
            record,
            port,
            incarnation,
        } = entry;
        StoredIndex {
            project: key.project().to_owned(),
            name: key.name().to_string(),
            dimension: record.config.dimension.get(),
            metric: record.config.metric.to_string(),
            vector_type: record.vector_type.as_str().to_owned(),
            cloud: record.cloud.as_str().to_owned(),
            region: record.region.clone(),
            deletion_protection: record.deletion_protection.as_str().to_owned(),
            tags: record.tags.clone(),
            port: *port,
            search: record.search.into(),
            incarnation: incarnation.as_ref().map(|i| i.as_str().to_owned()),
        }
    }
}

impl StoredIndex {
    /// Re-validates a stored index, whose `host` `hosts` forms; `location` names the catalog
    /// in errors.
    pub(crate) fn load(self, location: &str, hosts: &Hosts) -> Result<(IndexKey, Entry)> {
        let corrupt = corrupt(location, "index", &self.name, &self.project);
        let incarnation = self.incarnation.as_deref();
        let (key, incarnation) = stored_key(&self.project, &self.name, incarnation, &corrupt)?;
        let vector_type = parse_vector_type(&self.vector_type, "vector_type")
            .map_err(|e| corrupt(e.to_string()))?;
        let metric = self
            .metric
            .parse::<Metric>()
            .map_err(|e| corrupt(e.to_string()))?;
        let record = IndexRecord {
            host: hosts.host(&key, self.port),
            project_id: key.project().to_owned(),
            name: key.name().clone(),
            // A sparse index is stored with dimension 0.
            config: IndexConfig::new(vector_type, self.dimension, metric)
                .map_err(|e| corrupt(e.to_string()))?,
            vector_type,
            cloud: Cloud::parse(&self.cloud).map_err(|e| corrupt(e.to_string()))?,
            deletion_protection: DeletionProtection::parse(
                &self.deletion_protection,
                "deletion_protection",
            )
            .map_err(|e| corrupt(e.to_string()))?,
            search: {
                let StoredSearch {
                    m,
                    ef_construction,
                    ef_search,
                    quantization,
                } = self.search;
                SearchSettings {
                    m: Some(m),
                    ef_construction: Some(ef_construction),
                    ef_search: Some(ef_search),
                    quantization: Some(quantization),
                }
                .apply_to(SearchParams::default())
                .map_err(|e| corrupt(e.to_string()))?
            },
            region: self.region,
            tags: self.tags,
            state: IndexState::Ready,
        };
        let entry = Entry {
            record,
            port: self.port,
            incarnation,
        };
        Ok((key, entry))
    }
}

#[derive(Serialize, Deserialize)]
struct CatalogFile {
    version: u32,
    indexes: Vec<StoredIndex>,
    /// Absent in catalogs written before tombstones existed, and when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tombstones: Vec<StoredTombstone>,
    /// Backups of every project (see `backups`); absent in catalogs written before backups
    /// existed, and when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    backups: Vec<BackupRecord>,
    /// Restore jobs of every project; absent as `backups`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    restore_jobs: Vec<RestoreJob>,
}

/// The catalog's [`Format`](larch_state::Format): [`Indexes`] as the bytes of
/// `catalog.json`; records read back get their `host` from `hosts`.
#[derive(Debug, Clone)]
pub(crate) struct CatalogFormat {
    pub(crate) hosts: Hosts,
}

impl larch_state::Format for CatalogFormat {
    type Doc = Indexes;
    type Error = Error;

    fn decode(&self, bytes: &[u8], location: &str) -> Result<Indexes> {
        let file: CatalogFile = serde_json::from_slice(bytes)
            .map_err(|err| Error::Storage(format!("{location} is not a valid catalog: {err}")))?;
        let CatalogFile {
            version,
            indexes,
            tombstones,
            backups,
            restore_jobs,
        } = file;
        if version != VERSION {
            return Err(Error::Storage(format!(
                "{location} has version {version}, this larch reads version {VERSION}"
            )));
        }
        let mut doc = Indexes::default();
        for tombstone in &tombstones {
            doc.tombstones.insert(tombstone.load(location)?);
        }
        for stored in indexes {
            let (key, entry) = stored.load(location, &self.hosts)?;
            doc.live.insert(key, entry);
        }
        for backup in backups {
            doc.backups.insert(backup.backup_id.clone(), backup);
        }
        for job in restore_jobs {
            doc.restore_jobs.insert(job.restore_job_id.clone(), job);
        }
        Ok(doc)
    }

    fn encode(&self, doc: &Indexes, _location: &str) -> Result<Vec<u8>> {
        let file = CatalogFile {
            version: VERSION,
            indexes: doc.live.iter().map(StoredIndex::from).collect(),
            tombstones: doc.tombstones.iter().map(StoredTombstone::of).collect(),
            backups: doc.backups.values().cloned().collect(),
            restore_jobs: doc.restore_jobs.values().cloned().collect(),
        };
        Ok(serde_json::to_vec_pretty(&file).expect("catalog records always serialize"))
    }

    fn failed(&self, err: larch_state::Error) -> Error {
        match err {
            larch_state::Error::Contended { location, attempts } => Error::Storage(format!(
                "{location}: other replicas changed the catalog {attempts} times while this change was made; retry"
            )),
            other => Error::SharedState(other),
        }
    }
}
