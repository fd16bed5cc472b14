//! Index directories on the local disk: creating, opening (recovery),
//! removing and listing them.
//!
//! # Layout
//!
//! ```text
//! <root>/<index>/index.meta              dimension and metric, checksummed
//! <root>/<index>/wal-000042.log          write-ahead log files not yet covered by segments (see `wal`)
//! <root>/<index>/manifest                the live segments and where replay starts (see `manifest`)
//! <root>/<index>/segments/seg-000007.seg immutable segments (see `segment`)
//! <root>/.<index>.tmp/                   an index being created or removed
//! ```
//!
//! `index.meta` and the log are plain files; the manifest and segments go
//! through [`Storage`](crate::storage::Storage), here on the same directory
//! (or, with a shared store, under the index's prefix there).
//!
//! Recovery ([`open`]) checks `index.meta`, loads the segments the manifest
//! lists (see `flush`), replays the log from the manifest's first file, and
//! deletes log files the segments cover.
//!
//! A new index is built complete in `.<index>.tmp` and renamed into place,
//! and a dropped one is renamed away before it is deleted, so a crash never
//! leaves a half-made `<index>` directory: only a leftover whose name starts
//! with a dot, which is never an index name.
//!
//! `index.meta` is 21 bytes: magic `LARCHIDX`, format version (u32),
//! dimension (u32), metric (u8: 0 cosine, 1 euclidean, 2 dotproduct), and a
//! crc32 of the preceding 17 bytes; integers little-endian.

use std::{
    collections::BTreeMap,
    fs::{self, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use crate::{
    Dimension, Error, IndexConfig, Metric, Namespace, Result,
    codec::{self, LogEntry, LogRecord},
    flush::{FlushPolicy, Segments},
    index::Durable,
    namespace::NamespaceStore,
    record::WriteOp,
    segment::Segment,
    storage::Placement,
    timing::Timer,
    wal::{self, Wal, sync_dir},
};

/// Name of the index description file.
pub(crate) const META_FILE: &str = "index.meta";
const META_MAGIC: &[u8; 8] = b"LARCHIDX";
const META_VERSION: u32 = 1;
const META_LEN: usize = 21;

/// Checks that an index name can be a directory name: non-empty, at most 255
/// bytes, no path separator or NUL, and not starting with a dot (those names
/// are reserved for leftovers of interrupted work and for `.`/`..`).
pub(crate) fn check_name(name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        "must not be empty"
    } else if name.len() > 255 {
        "must be at most 255 bytes"
    } else if name.contains(['/', '\\', '\0']) {
        "must not contain '/', '\\' or NUL"
    } else if name.starts_with('.') {
        "must not start with '.'"
    } else {
        return Ok(());
    };
    Err(Error::invalid(
        "name",
        format!("index name '{name}' {problem}"),
    ))
}

/// Where an index being created or removed sits.
fn staging_dir(root: &Path, name: &str) -> PathBuf {
    root.join(format!(".{name}.tmp"))
}

/// Creates the directory of a new, empty index under `root`, replacing any
/// stale one (and stale files in a shared store), and opens its log. Its log and segments
/// report their timings to `timer`.
pub(crate) fn create(
    root: &Path,
    name: &str,
    config: IndexConfig,
    placement: &Placement,
    policy: FlushPolicy,
    timer: &Timer,
) -> Result<Durable> {
    let failed = |err: io::Error| {
        Error::storage(
            format!("cannot create the data directory of index '{name}'"),
            &err,
        )
    };
    let dir = root.join(name);
    let staging = staging_dir(root, name);
    if !root.exists() {
        fs::create_dir_all(root).map_err(failed)?;
        // Make the new root's own entry durable too.
        let parent = root
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent).map_err(failed)?;
    }
    if dir.exists() {
        tracing::warn!(index = %name, dir = %dir.display(), "replacing a stale directory of an index that is being created");
        remove(root, name).map_err(failed)?;
    }
    remove_if_present(&staging).map_err(failed)?;
    placement.remove(name)?;
    let built = build(&staging, config).and_then(|()| {
        fs::rename(&staging, &dir)?;
        sync_dir(root)
    });
    if let Err(err) = built {
        // Best effort: a leftover is harmless and removed on the next try.
        let _ = remove_if_present(&staging);
        return Err(failed(err));
    }
    let wal = Wal::open(name, &dir, 1, wal::HEADER_LEN)?.timed(timer.clone());
    let storage = placement.storage(&dir, name)?;
    let segments = Segments::new(name, &dir, config, policy, storage).timed(timer.clone());
    Ok(Durable::new(wal, segments, Vec::new()))
}

/// Fills a fresh index directory at `dir` and syncs it.
fn build(dir: &Path, config: IndexConfig) -> io::Result<()> {
    fs::create_dir(dir)?;
    let mut meta = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join(META_FILE))?;
    meta.write_all(&encode_meta(config))?;
    meta.sync_all()?;
    wal::create_file(dir, 1)?;
    sync_dir(dir)
}

/// Opens the existing index `name` under `root`: checks its description
/// against `config`, loads its segments and replays its log on top. Its log and segments
/// report their timings to `timer`.
pub(crate) fn open(
    root: &Path,
    name: &str,
    config: IndexConfig,
    placement: &Placement,
    policy: FlushPolicy,
    timer: &Timer,
) -> Result<(BTreeMap<Namespace, NamespaceStore>, Durable)> {
    let dir = root.join(name);
    let meta_path = dir.join(META_FILE);
    let bytes = match fs::read(&meta_path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            if !dir.exists() {
                return Err(Error::NotFound(format!(
                    "index '{name}' has no data directory {}",
                    dir.display()
                )));
            }
            return Err(Error::corrupt(&meta_path, 0, "the file is missing"));
        }
        Err(err) => {
            return Err(Error::storage(
                format!("cannot read {}", meta_path.display()),
                &err,
            ));
        }
    };
    let stored = decode_meta(&bytes)
        .map_err(|(offset, reason)| Error::corrupt(&meta_path, offset, reason))?;
    if stored != config {
        return Err(Error::FailedPrecondition(format!(
            "index '{name}' is stored with dimension {} and metric {}, but was opened with dimension {} and metric {}",
            stored.dimension, stored.metric, config.dimension, config.metric
        )));
    }

    let storage = placement.storage(&dir, name)?;
    let mut namespaces = BTreeMap::new();
    let segments = Segments::open(name, &dir, config, policy, storage, |name, segments| {
        let mut store = NamespaceStore::new(config, None);
        for segment in segments {
            restore(&mut store, config, segment?);
        }
        store.mark_clean();
        namespaces.insert(name.clone(), store);
        Ok(())
    })?;
    let wal_start = segments.wal_start()?;
    let mut dropped = Vec::new();
    let dimension = config.dimension.len();
    let replayed = wal::replay(&dir, wal_start, |file, offset, payload| {
        let record = codec::decode(payload, dimension).map_err(|reason| {
            Error::corrupt(file, offset, format!("undecodable record: {reason}"))
        })?;
        apply(&mut namespaces, &mut dropped, config, record)
            .map_err(|reason| Error::corrupt(file, offset, reason))
    })?;
    // Everything checked out: only now delete what the manifest does not need.
    segments.remove_orphans();
    if let Err(err) = wal::remove_before(&dir, wal_start) {
        tracing::warn!(index = %name, error = %err, "cannot delete write-ahead log files that segments cover");
    }
    let lsn = segments.lsn()?.saturating_add(replayed.records);
    let wal = Wal::open(name, &dir, replayed.number, replayed.len)?
        .after_lsn(lsn)
        .timed(timer.clone());
    Ok((
        namespaces,
        Durable::new(wal, segments.timed(timer.clone()), dropped),
    ))
}

/// Applies one replayed record, noting deleted namespaces in `dropped`
/// (their segments go at the next flush). A record that contradicts the
/// ones before it means the log is not a history this engine could have
/// written.
pub(crate) fn apply(
    namespaces: &mut BTreeMap<Namespace, NamespaceStore>,
    dropped: &mut Vec<Namespace>,
    config: IndexConfig,
    LogRecord { namespace, entry }: LogRecord,
) -> Result<(), String> {
    match entry {
        LogEntry::CreateNamespace { schema_fields } => {
            if namespaces.contains_key(&namespace) {
                return Err(format!(
                    "namespace '{}' is created but already exists",
                    namespace.label()
                ));
            }
            namespaces.insert(namespace, NamespaceStore::new(config, schema_fields));
        }
        LogEntry::DeleteNamespace => {
            if namespaces.remove(&namespace).is_none() {
                return Err(format!(
                    "namespace '{}' is deleted but does not exist",
                    namespace.label()
                ));
            }
            dropped.push(namespace);
        }
        LogEntry::Write(op) => match namespaces.get_mut(&namespace) {
            Some(store) => store.apply(op),
            // An upsert creates its namespace.
            None if matches!(op, WriteOp::Upsert(_)) => {
                let mut store = NamespaceStore::new(config, None);
                store.apply(op);
                namespaces.insert(namespace, store);
            }
            None => {
                return Err(format!(
                    "a change of namespace '{}', which does not exist",
                    namespace.label()
                ));
            }
        },
    }
    Ok(())
}

/// Applies a segment read back from storage to `store`.
fn restore(store: &mut NamespaceStore, config: IndexConfig, segment: Segment) {
    let Segment {
        header,
        records,
        tombstones,
    } = segment;
    if header.cleared {
        *store = NamespaceStore::new(config, header.schema_fields);
    } else {
        store.restore_schema(header.schema_fields);
    }
    if !tombstones.is_empty() {
        store.restore(WriteOp::Delete(tombstones));
    }
    if !records.is_empty() {
        store.restore(WriteOp::Upsert(records));
    }
}

/// Deletes the directory `name` under `root` if it exists: renamed away
/// first (for an index directory), so a crash leaves only a dot-leftover.
pub(crate) fn remove(root: &Path, name: &str) -> io::Result<()> {
    let dir = root.join(name);
    if name.starts_with('.') {
        return remove_if_present(&dir);
    }
    if !dir.exists() {
        return Ok(());
    }
    let staging = staging_dir(root, name);
    remove_if_present(&staging)?;
    fs::rename(&dir, &staging)?;
    sync_dir(root)?;
    fs::remove_dir_all(&staging)
}

/// Moves the directory `name` under `root` to `<into>/<name>-<seconds>`
/// (with `-2`, `-3`… appended if that is taken), creating `into`; syncs both
/// directories. `None` if `root` has no directory `name`.
pub(crate) fn quarantine(
    root: &Path,
    name: &str,
    into: &Path,
    seconds: u64,
) -> io::Result<Option<PathBuf>> {
    let dir = root.join(name);
    if !dir.is_dir() {
        return Ok(None);
    }
    fs::create_dir_all(into)?;
    let mut target = into.join(format!("{name}-{seconds}"));
    let mut attempt = 1;
    while target.exists() {
        attempt += 1;
        target = into.join(format!("{name}-{seconds}-{attempt}"));
    }
    fs::rename(&dir, &target)?;
    sync_dir(root)?;
    sync_dir(into)?;
    Ok(Some(target))
}

/// Names of the directories under `root`, sorted: index directories and
/// leftovers of interrupted work (names starting with a dot).
pub(crate) fn list(root: &Path) -> Result<Vec<String>> {
    let failed = |err: io::Error| Error::storage(format!("cannot list {}", root.display()), &err);
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(failed(err)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(failed)?;
        if !entry.file_type().map_err(failed)?.is_dir() {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) => names.push(name),
            Err(name) => {
                tracing::warn!(dir = ?name, root = %root.display(), "ignoring a directory whose name is not UTF-8");
            }
        }
    }
    names.sort();
    Ok(names)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn encode_meta(config: IndexConfig) -> [u8; META_LEN] {
    let mut meta = [0; META_LEN];
    meta[..8].copy_from_slice(META_MAGIC);
    meta[8..12].copy_from_slice(&META_VERSION.to_le_bytes());
    meta[12..16].copy_from_slice(&config.dimension.get().to_le_bytes());
    meta[16] = match config.metric {
        Metric::Cosine => 0,
        Metric::Euclidean => 1,
        Metric::DotProduct => 2,
    };
    let crc = crc32fast::hash(&meta[..17]);
    meta[17..].copy_from_slice(&crc.to_le_bytes());
    meta
}

/// Reads `index.meta`; on failure, the offset of the bad field and why.
pub(crate) fn decode_meta(meta: &[u8]) -> Result<IndexConfig, (u64, String)> {
    let field =
        |range: std::ops::Range<usize>| -> [u8; 4] { meta[range].try_into().expect("4 bytes") };
    if meta.len() != META_LEN {
        return Err((
            0,
            format!("the file is {} bytes; expected {META_LEN}", meta.len()),
        ));
    }
    if &meta[..8] != META_MAGIC {
        return Err((
            0,
            "not a larch index description (wrong magic bytes)".to_owned(),
        ));
    }
    if crc32fast::hash(&meta[..17]) != u32::from_le_bytes(field(17..21)) {
        return Err((17, "the file fails its checksum".to_owned()));
    }
    let version = u32::from_le_bytes(field(8..12));
    if version != META_VERSION {
        return Err((
            8,
            format!(
                "unsupported format version {version}; this build reads version {META_VERSION}"
            ),
        ));
    }
    let dimension =
        Dimension::new(u32::from_le_bytes(field(12..16))).map_err(|err| (12, err.to_string()))?;
    let metric = match meta[16] {
        0 => Metric::Cosine,
        1 => Metric::Euclidean,
        2 => Metric::DotProduct,
        other => return Err((16, format!("unknown metric code {other}"))),
    };
    Ok(IndexConfig { dimension, metric })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_rejects_damage() {
        for metric in Metric::ALL {
            let config = IndexConfig {
                dimension: Dimension::new(384).unwrap(),
                metric,
            };
            let meta = encode_meta(config);
            assert_eq!(decode_meta(&meta).unwrap(), config);
            for byte in 0..META_LEN {
                let mut bad = meta;
                bad[byte] ^= 0x04;
                assert!(decode_meta(&bad).is_err(), "flipped byte {byte}");
            }
            assert_eq!(decode_meta(&meta[..20]).unwrap_err().0, 0);
        }
    }

    #[test]
    fn index_names_must_be_plain_directory_names() {
        assert!(check_name("movies-2").is_ok());
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "a\0b",
            &"x".repeat(256),
        ] {
            let err = check_name(bad).unwrap_err();
            assert_eq!(err.field(), Some("name"), "{bad:?}");
        }
    }
}
