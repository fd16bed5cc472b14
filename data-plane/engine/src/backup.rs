//! Backups: consistent point-in-time copies of an index, and new indexes made from them.
//!
//! # The cut
//!
//! A backup is taken like a flush (see `flush`): with the index's flush state held, a forced
//! flush cuts the log and the memtable at one point and writes everything before it as
//! segments, so the manifest it leaves covers every change acknowledged before the backup was
//! asked for, and none logged after the cut (`Index::with_flushed`). Still holding the flush
//! state — so no flush or compaction deletes a segment meanwhile — the backup copies the
//! segments that manifest lists. Writers are paused only for the cut itself, as by any flush.
//!
//! # Sharing files
//!
//! Segments are immutable, so a backup shares them instead of writing them again: the engine's
//! [`Vault`] is one store holding both index files and backups, where a copy is a hard link
//! (local disk) or the store's server-side copy (a bucket). Deleting or compacting the source
//! index later removes only its own names for those files; the backup keeps its own.
//!
//! # Layout
//!
//! ```text
//! <data dir>/backups/<id>/segments/seg-NNNNNN.seg    or <prefix>/backups/<id>/… in a bucket
//! <data dir>/backups/<id>/manifest                   the source's manifest at the cut
//! <data dir>/backups/<id>/backup.json                what [`BackupInfo`] says; written last
//! ```
//!
//! A backup without `backup.json` is incomplete (an interrupted copy) and is not found. Graph
//! files are not copied: they are derived data, and a restored index builds its graphs again.
//!
//! # Restore
//!
//! Restoring materialises a new index (a new storage name, so a new incarnation) from a backup:
//! its segments are copied (shared) into the new index's place, with a manifest that starts
//! an empty log, and the index description last. On local disk the directory is built aside
//! (`.<name>.tmp`) and renamed into place, as a new index is. The caller then opens the index
//! like any stored one (`Engine::open_index`).

use std::{collections::HashSet, fmt, fs, io, path::Path};

use serde_json::{Value, json};

use crate::{
    Dimension, Error, Index, IndexConfig, Metric, Result, dir,
    flush::read,
    manifest::{self, Manifest},
    segment,
    storage::{ObjectStorage, Storage, StoreError, Vault},
    wal::sync_dir,
};

/// What a backup holds, from its `backup.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The backup's id (a plain name: ASCII letters, digits, `-` and `_`).
    pub backup_id: String,
    /// The storage name of the index it was taken from.
    pub source_index: String,
    /// The dimension and metric of that index.
    pub config: IndexConfig,
    /// Records in the backup, over all namespaces.
    pub record_count: u64,
    /// Namespaces in the backup.
    pub namespace_count: u64,
    /// Bytes of the segment files it holds.
    pub size_bytes: u64,
}

/// Where a backup's description lives in its folder.
const INFO: &str = "backup.json";
/// The format of `backup.json` this engine writes and reads.
const FORMAT: u64 = 1;

/// `InvalidArgument` unless `id` is 1 to 128 ASCII letters, digits, `-` or `_`.
pub(crate) fn check_id(id: &str) -> Result<()> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(Error::invalid(
            "backup_id",
            format!("'{id}' is not a backup id: 1 to 128 ASCII letters, digits, '-' or '_'"),
        ));
    }
    Ok(())
}

/// Takes backup `id` of `index` into `vault` (see the module docs). `AlreadyExists` if a
/// backup of that id exists; a failed backup leaves nothing behind (best effort).
pub(crate) fn create(vault: &Vault, index: &Index, id: &str) -> Result<BackupInfo> {
    check_id(id)?;
    let backup = vault.backup(id);
    let existing = backup
        .list("")
        .map_err(|err| err.into_error(format!("cannot list backup '{id}'")))?;
    if !existing.is_empty() {
        return Err(Error::AlreadyExists(format!(
            "backup '{id}' already exists"
        )));
    }
    let source = vault.index(index.name())?;
    let taken = copy_cut(&backup, &source, index, id);
    let info = taken.and_then(|manifest| {
        let info = describe(&backup, index, id, &manifest)?;
        backup
            .put_immutable(INFO, encode(&info).as_bytes())
            .map_err(|err| {
                err.into_error(format!("cannot write {}", backup.location(INFO).display()))
            })?;
        Ok(info)
    });
    match info {
        Ok(info) => {
            tracing::info!(index = %index.name(), backup = %id, records = info.record_count, bytes = info.size_bytes, "backup taken");
            Ok(info)
        }
        Err(err) => {
            if let Err(cleanup) = remove(vault, &backup, id) {
                tracing::warn!(backup = %id, error = %cleanup, "cannot delete the files of a failed backup");
            }
            Err(err)
        }
    }
}

/// Cuts `index` (a forced flush) and, with its flush state held, copies the segments and the
/// manifest of the cut into `backup`; returns that manifest.
fn copy_cut(
    backup: &ObjectStorage,
    source: &ObjectStorage,
    index: &Index,
    id: &str,
) -> Result<Manifest> {
    index
        .with_flushed(|state| {
            let manifest = state.manifest().clone();
            for listed in manifest.segments() {
                let path = segment::path(listed.number);
                backup.copy_from(&path, source, &path).map_err(|err| {
                    err.into_error(format!(
                        "cannot copy {} into backup '{id}'",
                        source.location(&path).display()
                    ))
                })?;
            }
            Ok(manifest)
        })
        .and_then(|manifest| {
            backup
                .put_immutable(manifest::PATH, &manifest.encode())
                .map_err(|err| {
                    err.into_error(format!(
                        "cannot write {}",
                        backup.location(manifest::PATH).display()
                    ))
                })?;
            Ok(manifest)
        })
}

/// What backup `id` of `index` holds: its records counted from its own copies of the
/// segments (each namespace's segments oldest first, newest version wins).
fn describe(
    backup: &ObjectStorage,
    index: &Index,
    id: &str,
    manifest: &Manifest,
) -> Result<BackupInfo> {
    let config = index.config();
    let mut record_count = 0u64;
    for (namespace, listed) in &manifest.namespaces {
        let mut live = HashSet::new();
        for entry in listed {
            let segment = read(backup, config, namespace, entry)?;
            if segment.header.cleared {
                live.clear();
            }
            for id in &segment.tombstones {
                live.remove(id);
            }
            live.extend(segment.records.into_iter().map(|record| record.id));
        }
        record_count += live.len() as u64;
    }
    Ok(BackupInfo {
        backup_id: id.to_owned(),
        source_index: index.name().to_owned(),
        config,
        record_count,
        namespace_count: manifest.namespaces.len() as u64,
        size_bytes: manifest.segments().map(|s| s.bytes).sum(),
    })
}

/// The description of backup `id`; `NotFound` if there is no complete backup of that id.
pub(crate) fn info(vault: &Vault, id: &str) -> Result<BackupInfo> {
    check_id(id)?;
    let backup = vault.backup(id);
    let location = backup.location(INFO);
    let bytes = match backup.get(INFO) {
        Ok(bytes) => bytes,
        Err(StoreError::NotFound) => return Err(backup_not_found(id)),
        Err(err) => return Err(err.into_error(format!("cannot read {}", location.display()))),
    };
    decode(&bytes).map_err(|reason| Error::corrupt(&location, 0, reason))
}

/// Deletes backup `id` (complete or not); whether there was anything to delete.
pub(crate) fn delete(vault: &Vault, id: &str) -> Result<bool> {
    check_id(id)?;
    let backup = vault.backup(id);
    let existed = !backup
        .list("")
        .map_err(|err| err.into_error(format!("cannot list backup '{id}'")))?
        .is_empty();
    remove(vault, &backup, id)?;
    if existed {
        tracing::info!(backup = %id, "backup deleted");
    }
    Ok(existed)
}

/// Deletes every file of backup `id`, and on local disk its folder.
fn remove(vault: &Vault, backup: &ObjectStorage, id: &str) -> Result<()> {
    let what = || format!("cannot delete backup '{id}'");
    if let Some(dir) = vault.backup_dir(id) {
        return dir::remove_if_present(&dir).map_err(|err| Error::storage(what(), &err));
    }
    for file in backup.list("").map_err(|err| err.into_error(what()))? {
        backup
            .delete(&file.path)
            .map_err(|err| err.into_error(what()))?;
    }
    Ok(())
}

/// Materialises index `target` (a storage name) from backup `id` (see the module docs);
/// `root` is the engine's index root. Returns the backup's description: its `config` is the
/// new index's. `AlreadyExists` if `target` has data already.
pub(crate) fn restore(
    vault: &Vault,
    root: &Path,
    shared: bool,
    id: &str,
    target: &str,
) -> Result<BackupInfo> {
    dir::check_name(target)?;
    let info = info(vault, id)?;
    let backup = vault.backup(id);
    let location = backup.location(manifest::PATH);
    let bytes = backup
        .get(manifest::PATH)
        .map_err(|err| err.into_error(format!("cannot read {}", location.display())))?;
    let taken = Manifest::decode(&bytes)
        .map_err(|(offset, reason)| Error::corrupt(&location, offset, reason))?;
    // The same segments, and an empty log from its first file on.
    let manifest = Manifest {
        generation: 1,
        wal_start: 1,
        ..taken
    };
    let exists = || Error::AlreadyExists(format!("index '{target}' already exists"));
    if shared {
        let files = vault.index(target)?;
        match files.get(dir::META_FILE) {
            Err(StoreError::NotFound) => {}
            Ok(_) => return Err(exists()),
            Err(err) => {
                return Err(err.into_error(format!(
                    "cannot read {}",
                    files.location(dir::META_FILE).display()
                )));
            }
        }
        fill(&files, &backup, &manifest, id)?;
        // Last: an index is in the store once its description is.
        files
            .put_immutable(dir::META_FILE, &dir::encode_meta(info.config))
            .map_err(|err| {
                err.into_error(format!(
                    "cannot write {}",
                    files.location(dir::META_FILE).display()
                ))
            })?;
    } else {
        if root.join(target).exists() {
            return Err(exists());
        }
        let staging = dir::staging_dir(root, target);
        let failed =
            |err: io::Error| Error::storage(format!("cannot build {}", staging.display()), &err);
        fs::create_dir_all(root).map_err(failed)?;
        dir::remove_if_present(&staging).map_err(failed)?;
        let built = dir::build(&staging, info.config)
            .map_err(failed)
            .and_then(|()| {
                let name = staging
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                fill(&vault.index(name)?, &backup, &manifest, id)?;
                if staging.join(segment::DIR).exists() {
                    sync_dir(&staging.join(segment::DIR)).map_err(failed)?;
                }
                sync_dir(&staging).map_err(failed)?;
                fs::rename(&staging, root.join(target)).map_err(failed)?;
                sync_dir(root).map_err(failed)
            });
        if let Err(err) = built {
            // Best effort: a leftover is harmless and replaced by the next try.
            let _ = dir::remove_if_present(&staging);
            return Err(err);
        }
    }
    tracing::info!(backup = %id, index = %target, records = info.record_count, "index restored from a backup");
    Ok(info)
}

/// Copies the segments of `manifest` from `backup` into `files` and writes the manifest.
fn fill(
    files: &ObjectStorage,
    backup: &ObjectStorage,
    manifest: &Manifest,
    id: &str,
) -> Result<()> {
    for listed in manifest.segments() {
        let path = segment::path(listed.number);
        files.copy_from(&path, backup, &path).map_err(|err| {
            err.into_error(format!(
                "cannot copy segment {path} of backup '{id}' into {}",
                files.location(&path).display()
            ))
        })?;
    }
    files
        .put_manifest(manifest::PATH, &manifest.encode(), None)
        .map_err(|err| {
            err.into_error(format!(
                "cannot write {}",
                files.location(manifest::PATH).display()
            ))
        })?;
    Ok(())
}

fn backup_not_found(id: &str) -> Error {
    Error::NotFound(format!("backup '{id}' not found"))
}

fn encode(info: &BackupInfo) -> String {
    json!({
        "format": FORMAT,
        "backup_id": info.backup_id,
        "source_index": info.source_index,
        "dimension": info.config.dimension.get(),
        "metric": info.config.metric.as_str(),
        "record_count": info.record_count,
        "namespace_count": info.namespace_count,
        "size_bytes": info.size_bytes,
    })
    .to_string()
}

fn decode(bytes: &[u8]) -> std::result::Result<BackupInfo, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|err| format!("not JSON: {err}"))?;
    let text = |key: &str| {
        value[key]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("'{key}' is missing or not a string"))
    };
    let number = |key: &str| {
        value[key]
            .as_u64()
            .ok_or_else(|| format!("'{key}' is missing or not a number"))
    };
    let format = number("format")?;
    if format != FORMAT {
        return Err(format!(
            "unsupported backup format {format}; this build reads format {FORMAT}"
        ));
    }
    let dimension = u32::try_from(number("dimension")?)
        .ok()
        .and_then(|d| Dimension::new(d).ok())
        .ok_or("'dimension' is out of range")?;
    let metric: Metric = text("metric")?
        .parse()
        .map_err(|err| format!("'metric': {err}"))?;
    Ok(BackupInfo {
        backup_id: text("backup_id")?,
        source_index: text("source_index")?,
        config: IndexConfig { dimension, metric },
        record_count: number("record_count")?,
        namespace_count: number("namespace_count")?,
        size_bytes: number("size_bytes")?,
    })
}

impl fmt::Display for BackupInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backup '{}' of index '{}' ({} records in {} namespaces, {} bytes)",
            self.backup_id,
            self.source_index,
            self.record_count,
            self.namespace_count,
            self.size_bytes
        )
    }
}
