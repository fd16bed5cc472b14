//! The catalog file: every index record, written atomically so a crash leaves either the old
//! or the new catalog, never a mix.
//!
//! Format: `catalog.json`, `{"version":1,"indexes":[{...}]}`. Written to a temporary file,
//! fsynced, renamed over the old one, and the directory fsynced so the rename itself is durable.
//! Fields added later default when absent, so files written by older versions load without a
//! version bump: `search` (the default ANN parameters), `project` (the default project,
//! which is what every index belonged to before projects existed), `incarnation` (none: the
//! index keeps its old storage name) and `tombstones` (deleted indexes whose data the data
//! plane has not confirmed removing yet; none).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use larch_engine::{Dimension, IndexConfig, Metric, SearchParams};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::record::{
    Cloud, DEFAULT_PROJECT, DeletionProtection, Incarnation, IndexKey, IndexName, SearchSettings,
    VectorType,
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

    /// The key (with its incarnation) of the deleted index; `file` names the catalog in errors.
    pub(crate) fn load(&self, file: &Path) -> Result<IndexKey> {
        let corrupt = corrupt(file, "tombstone of index", &self.name, &self.project);
        let (key, incarnation) = stored_key(
            &self.project,
            &self.name,
            self.incarnation.as_deref(),
            &corrupt,
        )?;
        Ok(key.with_incarnation(incarnation))
    }
}

/// Makes the error of a damaged catalog entry (`entry` = "index", "tombstone of index", …),
/// naming the file, the entry and what is wrong with it.
fn corrupt<'a>(
    file: &'a Path,
    entry: &'a str,
    name: &'a str,
    project: &'a str,
) -> impl Fn(String) -> Error + 'a {
    move |what| {
        Error::Storage(format!(
            "{}: {entry} '{name}' of project '{project}': {what}; fix or remove the entry",
            file.display(),
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

/// What a stored index turns back into.
pub(crate) struct LoadedIndex {
    pub(crate) key: IndexKey,
    pub(crate) config: IndexConfig,
    pub(crate) vector_type: VectorType,
    pub(crate) cloud: Cloud,
    pub(crate) region: String,
    pub(crate) deletion_protection: DeletionProtection,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) search: SearchParams,
    pub(crate) port: u16,
    pub(crate) incarnation: Option<Incarnation>,
}

impl StoredIndex {
    /// Re-validates a stored index; `file` names the catalog in errors.
    pub(crate) fn load(self, file: &Path) -> Result<LoadedIndex> {
        let corrupt = corrupt(file, "index", &self.name, &self.project);
        let (key, incarnation) = stored_key(
            &self.project,
            &self.name,
            self.incarnation.as_deref(),
            &corrupt,
        )?;
        Ok(LoadedIndex {
            incarnation,
            key,
            config: IndexConfig {
                dimension: Dimension::new(self.dimension).map_err(|e| corrupt(e.to_string()))?,
                metric: self
                    .metric
                    .parse::<Metric>()
                    .map_err(|e| corrupt(e.to_string()))?,
            },
            vector_type: VectorType::parse(&self.vector_type)
                .map_err(|e| corrupt(e.to_string()))?,
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
            port: self.port,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct CatalogFile {
    version: u32,
    indexes: Vec<StoredIndex>,
    /// Absent in catalogs written before tombstones existed, and when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tombstones: Vec<StoredTombstone>,
}

/// What a catalog file holds.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    pub(crate) indexes: Vec<StoredIndex>,
    pub(crate) tombstones: Vec<StoredTombstone>,
}

/// Where the catalog lives on disk.
#[derive(Debug, Clone)]
pub(crate) struct CatalogStore {
    path: PathBuf,
}

impl CatalogStore {
    pub(crate) fn new(dir: &Path) -> CatalogStore {
        CatalogStore {
            path: dir.join(CATALOG_FILE),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Every stored index and tombstone; none if the file does not exist yet (first start).
    pub(crate) fn load(&self) -> Result<Stored> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Stored::default()),
            Err(err) => {
                return Err(Error::Storage(format!(
                    "cannot read {}: {err}",
                    self.path.display()
                )));
            }
        };
        decode(&bytes, &self.path.display().to_string())
    }

    /// Replaces the stored catalog with `stored`, durably.
    pub(crate) fn save(&self, stored: Stored) -> Result<()> {
        write_atomically(&self.path, &encode(stored))
            .map_err(|err| Error::Storage(format!("cannot write {}: {err}", self.path.display())))
    }
}

/// The catalog file's bytes (also the content of each version of a shared catalog).
pub(crate) fn encode(
    Stored {
        indexes,
        tombstones,
    }: Stored,
) -> Vec<u8> {
    let file = CatalogFile {
        version: VERSION,
        indexes,
        tombstones,
    };
    serde_json::to_vec_pretty(&file).expect("catalog records always serialize")
}

/// The indexes in a catalog file's bytes; `location` names it in errors.
pub(crate) fn decode(bytes: &[u8], location: &str) -> Result<Stored> {
    let file: CatalogFile = serde_json::from_slice(bytes)
        .map_err(|err| Error::Storage(format!("{location} is not a valid catalog: {err}")))?;
    if file.version != VERSION {
        return Err(Error::Storage(format!(
            "{location} has version {}, this larch reads version {VERSION}",
            file.version
        )));
    }
    let CatalogFile {
        version: _,
        indexes,
        tombstones,
    } = file;
    Ok(Stored {
        indexes,
        tombstones,
    })
}

/// Temp file + fsync + rename + fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    // Makes the rename durable; directories can be opened and synced on unix.
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}
