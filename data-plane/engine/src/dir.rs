//! Index directories on the local disk, and index descriptions in a shared
//! store: creating, opening (recovery), removing and listing indexes.
//!
//! # Layout on local disk (the default)
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
//! through [`Storage`](crate::storage::Storage), here on the same directory.
//!
//! # Layout with a shared store (a bucket)
//!
//! ```text
//! <prefix>/indexes/<project>/<name>/<incarnation>/index.meta      created once (PutMode::Create), never replaced
//! <prefix>/indexes/<project>/<name>/<incarnation>/manifest        swapped with conditional PUTs; replay starts at its batch
//! <prefix>/indexes/<project>/<name>/<incarnation>/segments/…, graphs/…
//! <prefix>/indexes/<project>/<name>/<incarnation>/lease           the writer lease (see `objlog`)
//! <prefix>/indexes/<project>/<name>/<incarnation>/wal/<seq>       the object write-ahead log (see `objlog`)
//! ```
//!
//! The object prefix is derived from the storage name `name@project@incarnation`
//! (see `storage`), so every creation of a name has its own objects. Everything
//! is in the store, the log too, and nothing of the index is on local disk: a
//! process given only the store opens the index with every acknowledged write.
//! Opening it there takes the writer lease (`UNAVAILABLE` while another live
//! process holds it), fences the log and replays it from where the manifest
//! says on top of the segments (see `index/log.rs`).
//!
//! Creating an index in a shared store never deletes anything: it creates
//! `index.meta`, and if that already exists with the same dimension and
//! metric (a repeated create of the same incarnation, or a second data plane
//! told about the same new index) it opens what is there instead. Opening
//! never deletes an object it does not recognise (see `flush`). Only
//! dropping the index deletes, and only its own incarnation's prefix.
//!
//! # Recovery
//!
//! Recovery ([`open`]) checks `index.meta`, loads the segments the manifest
//! lists (see `flush`), replays the log from the manifest's first file (in a
//! shared store: its first batch), and deletes log files the segments cover
//! (in a shared store only the writer's flushes delete log batches).
//!
//! A new local index is built complete in `.<index>.tmp` and renamed into
//! place, and a dropped one is renamed away before it is deleted, so a crash
//! never leaves a half-made `<index>` directory: only a leftover whose name
//! starts with a dot, which is never an index name.
//!
//! `index.meta` is 21 bytes: magic `LARCHIDX`, format version (u32),
//! dimension (u32; 0 for a sparse index, with metric dotproduct), metric (u8:
//! 0 cosine, 1 euclidean, 2 dotproduct), and a crc32 of the preceding 17
//! bytes; integers little-endian. It is the same bytes on disk and in a store.

use std::{
    collections::BTreeMap,
    fs::{self, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    Error, IndexConfig, Metric, Namespace, Result, VectorType,
    codec::{self, LogEntry, LogRecord},
    flush::{FlushPolicy, Segments},
    index::{Durable, Follower, IndexLog, ObjectLog},
    namespace::NamespaceStore,
    objlog::{Bucket, LogSetup, Taken, lease::Lease, log::LogReader, writer::Writer},
    record::WriteOp,
    segment::Segment,
    storage::{Placement, Storage, StoreError},
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
pub(crate) fn staging_dir(root: &Path, name: &str) -> PathBuf {
    root.join(format!(".{name}.tmp"))
}

/// What an opened or created index holds: its namespaces as recovered, and
/// its log and segments.
pub(crate) type Opened = (BTreeMap<Namespace, NamespaceStore>, Durable);

/// How an engine keeps its indexes: where (`placement`), when they flush (`policy`), where
/// their logs and segments report timings (`timer`), how their object logs are written (`log`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keeping<'a> {
    pub(crate) placement: &'a Placement,
    pub(crate) policy: FlushPolicy,
    pub(crate) timer: &'a Timer,
    pub(crate) log: &'a LogSetup,
}

/// How an index in a shared store is opened (an index on local disk is always written).
#[derive(Debug, Clone)]
pub(crate) enum Role {
    /// Take its writer lease (looking again for about a second while it is held), and
    /// follow the index if another live process writes it.
    Write,
    /// Follow it without contending for its lease now (another pod is its preferred writer).
    Follow,
    /// Write it under `lease`, just taken over by a follower of it.
    WriteWith(Arc<Lease>),
}

/// Creates the new index `name` and opens its log; its log and segments
/// report their timings to `timer`.
///
/// On local disk: the directory of a new, empty index under `root`,
/// replacing any stale one. In a shared store: its description, created
/// once; nothing is deleted, and an incarnation that already exists with the
/// same description is opened as it is (see the module docs); its object
/// log is opened through `log`.
pub(crate) fn create(
    root: &Path,
    name: &str,
    config: IndexConfig,
    keeping: Keeping<'_>,
    role: Role,
) -> Result<Opened> {
    let Keeping {
        placement,
        policy,
        timer,
        ..
    } = keeping;
    if let Some((storage, bucket)) = placement.shared(name)? {
        return create_shared(name, config, storage, bucket, keeping, role);
    }
    let failed = |err: io::Error| {
        Error::storage(
            format!("cannot create the data directory of index '{name}'"),
            &err,
        )
    };
    let dir = root.join(name);
    let staging = staging_dir(root, name);
    create_root(root).map_err(failed)?;
    if dir.exists() {
        tracing::warn!(index = %name, dir = %dir.display(), "replacing a stale directory of an index that is being created");
        remove(root, name).map_err(failed)?;
    }
    remove_if_present(&staging).map_err(failed)?;
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
    let segments = Segments::new(name, config, policy, storage).timed(timer.clone());
    Ok((
        BTreeMap::new(),
        Durable::new(IndexLog::local(wal, &dir), segments, Vec::new()),
    ))
}

/// Creates `root` if it does not exist, durably.
fn create_root(root: &Path) -> io::Result<()> {
    if !root.exists() {
        fs::create_dir_all(root)?;
        // Make the new root's own entry durable too.
        let parent = root
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent)?;
    }
    Ok(())
}

/// [`create`] in a shared store: stores `index.meta` once (`PutMode::Create`)
/// and opens the index. If the description is already there (this
/// incarnation was created before: a repeated create, or another data plane
/// told of the same index), what is there is opened, provided it describes
/// the same dimension and metric. Deletes nothing.
fn create_shared(
    name: &str,
    config: IndexConfig,
    storage: Arc<dyn Storage>,
    bucket: Bucket,
    keeping: Keeping<'_>,
    role: Role,
) -> Result<Opened> {
    match storage.put_immutable(META_FILE, &encode_meta(config)) {
        Ok(()) => {
            tracing::debug!(index = %name, file = %storage.location(META_FILE).display(), "stored the description of a new index");
        }
        Err(StoreError::Conflict(_)) => {
            tracing::info!(index = %name, file = %storage.location(META_FILE).display(), "the index is already in the object store (created before under this incarnation); opening it");
        }
        Err(err) => {
            return Err(err.into_error(format!(
                "cannot store the description {} of index '{name}'",
                storage.location(META_FILE).display()
            )));
        }
    }
    open_shared(name, config, storage, bucket, keeping, role)
}

/// Fills a fresh index directory at `dir` and syncs it.
pub(crate) fn build(dir: &Path, config: IndexConfig) -> io::Result<()> {
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
/// report their timings to `timer`. In a shared store the description and
/// segments come from the store (see [`open_shared`]).
pub(crate) fn open(
    root: &Path,
    name: &str,
    config: IndexConfig,
    keeping: Keeping<'_>,
    role: Role,
) -> Result<Opened> {
    let Keeping {
        placement,
        policy,
        timer,
        ..
    } = keeping;
    if let Some((storage, bucket)) = placement.shared(name)? {
        return open_shared(name, config, storage, bucket, keeping, role);
    }
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
    check_meta(name, &meta_path, &bytes, config)?;
    let storage = placement.storage(&dir, name)?;
    let (namespaces, segments) = load(name, config, policy, storage)?;
    replay(name, &dir, config, namespaces, segments, timer)
}

/// [`open`] in a shared store: `index.meta`, the manifest and the segments
/// come from `storage`, the log from `bucket`. As its writer (see [`Role`]): takes the
/// writer lease, fences the log and replays it from the manifest's start on top of the
/// segments (see `Writer::open`), then renews the lease until the index is released. As a
/// follower (the lease is held by another live process, or `role` says so): replays the log
/// as it is, and tails it from there (see `index/follow.rs`). Deletes no object.
fn open_shared(
    name: &str,
    config: IndexConfig,
    storage: Arc<dyn Storage>,
    bucket: Bucket,
    keeping: Keeping<'_>,
    role: Role,
) -> Result<Opened> {
    let Keeping {
        policy, timer, log, ..
    } = keeping;
    let meta_location = storage.location(META_FILE);
    let bytes = match storage.get(META_FILE) {
        Ok(bytes) => bytes,
        Err(StoreError::NotFound) => {
            return Err(Error::NotFound(format!(
                "index '{name}' is not in the object store (no {})",
                meta_location.display()
            )));
        }
        Err(err) => {
            return Err(err.into_error(format!("cannot read {}", meta_location.display())));
        }
    };
    check_meta(name, &meta_location, &bytes, config)?;
    let lease = match role {
        Role::WriteWith(lease) => lease,
        Role::Follow => {
            let (namespaces, segments) = load(name, config, policy, Arc::clone(&storage))?;
            return follow(name, config, namespaces, segments, storage, bucket, timer);
        }
        Role::Write => match log.acquire(name, &bucket)? {
            Taken::Lease(lease) => lease,
            Taken::Held { holder } => {
                tracing::info!(index = %name, writer = %holder, "another process writes the index; following it");
                let (namespaces, segments) = load(name, config, policy, Arc::clone(&storage))?;
                return follow(name, config, namespaces, segments, storage, bucket, timer);
            }
        },
    };
    // Renewed from now on: loading and replaying may take longer than a TTL.
    let renewer = ObjectLog::renew(name, &lease)?;
    let mut dropped = Vec::new();
    let mut replayed = 0u64;
    let dimension = config.dimension.len();
    let opened =
        load(name, config, policy, Arc::clone(&storage)).and_then(|(mut namespaces, segments)| {
            let start = segments.wal_start()?;
            // Every batch from the start on was written by the manifest's writer or a newer one.
            let min_epoch = segments.writer_epoch()?;
            if min_epoch > lease.epoch() {
                return Err(Error::from(crate::objlog::LogError::NotWriter {
                    reason: format!(
                        "the manifest was written by writer epoch {min_epoch}, newer than this lease's epoch {}",
                        lease.epoch()
                    ),
                }));
            }
            segments.set_writer_epoch(lease.epoch())?;
            let writer = Writer::open(
                bucket.clone(),
                Arc::clone(&lease) as _,
                start,
                min_epoch,
                log.writer_config(),
                |batch| {
                    replayed += batch.apply_records(&bucket, dimension, |record| {
                        apply(&mut namespaces, &mut dropped, config, record).map_err(Error::Internal)
                    })?;
                    Ok::<_, Error>(())
                },
            )?;
            Ok((namespaces, segments, start, writer))
        });
    let (namespaces, segments, start, writer) = match opened {
        Ok(opened) => opened,
        Err(err) => {
            renewer.stop();
            // Let the next attempt (here or elsewhere) take the lease at once.
            if let Err(release) = lease.release() {
                tracing::warn!(index = %name, error = %release, "cannot release the writer lease after a failed open");
            }
            return Err(err);
        }
    };
    tracing::info!(index = %name, start, fence = writer.fence_seq(), epoch = writer.epoch(), replayed_bytes = replayed, "opened the object log as its writer");
    // Counts (and leaves) segments the manifest does not list: a shared store.
    segments.remove_orphans();
    let log = ObjectLog::start(name, writer, lease, renewer, start, replayed);
    Ok((
        namespaces,
        Durable::new(
            IndexLog::Object(log),
            segments.timed(timer.clone()),
            dropped,
        ),
    ))
}

/// Opens the index `name` of `bucket` as a follower: the loaded `namespaces` plus the log
/// from the manifest's start to its current end, with neither flushes nor graph saves (the
/// writer does both), tailed from there.
fn follow(
    name: &str,
    config: IndexConfig,
    mut namespaces: BTreeMap<Namespace, NamespaceStore>,
    segments: Segments,
    storage: Arc<dyn Storage>,
    bucket: Bucket,
    timer: &Timer,
) -> Result<Opened> {
    let start = segments.wal_start()?;
    let mut reader = LogReader::new(bucket.clone(), start).with_min_epoch(segments.writer_epoch()?);
    let mut dropped = Vec::new();
    let mut applied = start.saturating_sub(1);
    let dimension = config.dimension.len();
    while let Some(batch) = reader.next_batch().map_err(Error::from)? {
        batch.apply_records(&bucket, dimension, |record| {
            apply(&mut namespaces, &mut dropped, config, record).map_err(Error::Internal)
        })?;
        applied = batch.seq;
    }
    tracing::info!(index = %name, start, applied, "opened the object log as a follower");
    // Never flushed here: nothing to track.
    let namespaces = namespaces
        .into_iter()
        .map(|(namespace, mut store)| {
            store.mark_clean();
            (namespace, store.untracked())
        })
        .collect();
    segments.close();
    let follower = Follower::new(name, bucket, storage, reader, applied);
    Ok((
        namespaces,
        Durable::new(
            IndexLog::Follower(follower),
            segments.timed(timer.clone()),
            Vec::new(),
        ),
    ))
}

/// Checks the description `bytes` read from `location` against `config`.
fn check_meta(name: &str, location: &Path, bytes: &[u8], config: IndexConfig) -> Result<()> {
    let stored =
        decode_meta(bytes).map_err(|(offset, reason)| Error::corrupt(location, offset, reason))?;
    if stored != config {
        return Err(Error::FailedPrecondition(format!(
            "index '{name}' is stored {}, but was opened {}",
            describe(stored),
            describe(config)
        )));
    }
    Ok(())
}

/// A config for messages: `with dimension 8 and metric cosine`, or `as a sparse index`.
fn describe(config: IndexConfig) -> String {
    if config.is_sparse() {
        "as a sparse index".to_owned()
    } else {
        format!(
            "with dimension {} and metric {}",
            config.dimension, config.metric
        )
    }
}

/// Loads the segments of index `name` from `storage` into namespaces.
fn load(
    name: &str,
    config: IndexConfig,
    policy: FlushPolicy,
    storage: Arc<dyn Storage>,
) -> Result<(BTreeMap<Namespace, NamespaceStore>, Segments)> {
    let mut namespaces = BTreeMap::new();
    let segments = Segments::open(name, config, policy, storage, |name, segments| {
        let mut store = NamespaceStore::new(config, None);
        for segment in segments {
            restore(&mut store, config, segment?);
        }
        store.mark_clean();
        namespaces.insert(name.clone(), store);
        Ok(())
    })?;
    Ok((namespaces, segments))
}

/// Replays the log in `dir` on top of the loaded `namespaces`, then cleans
/// up (see [`Segments::remove_orphans`]) and opens the log for appending.
fn replay(
    name: &str,
    dir: &Path,
    config: IndexConfig,
    mut namespaces: BTreeMap<Namespace, NamespaceStore>,
    segments: Segments,
    timer: &Timer,
) -> Result<Opened> {
    let wal_start = segments.wal_start()?;
    let mut dropped = Vec::new();
    let dimension = config.dimension.len();
    let replayed = wal::replay(dir, wal_start, |file, offset, payload| {
        let record = codec::decode(payload, dimension).map_err(|reason| {
            Error::corrupt(file, offset, format!("undecodable record: {reason}"))
        })?;
        apply(&mut namespaces, &mut dropped, config, record)
            .map_err(|reason| Error::corrupt(file, offset, reason))
    })?;
    // Everything checked out: only now delete what the manifest does not need
    segments.remove_orphans();
    if let Err(err) = wal::remove_before(dir, wal_start) {
        tracing::warn!(index = %name, error = %err, "cannot delete write-ahead log files that segments cover");
    }
    let lsn = segments.lsn()?.saturating_add(replayed.records);
    let wal = Wal::open(name, dir, replayed.number, replayed.len)?
        .after_lsn(lsn)
        .timed(timer.clone());
    Ok((
        namespaces,
        Durable::new(
            IndexLog::local(wal, dir),
            segments.timed(timer.clone()),
            dropped,
        ),
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

pub(crate) fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

pub(crate) fn encode_meta(config: IndexConfig) -> [u8; META_LEN] {
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
    let metric = match meta[16] {
        0 => Metric::Cosine,
        1 => Metric::Euclidean,
        2 => Metric::DotProduct,
        other => return Err((16, format!("unknown metric code {other}"))),
    };
    // Dimension 0 is a sparse index; files written before sparse indexes never hold it.
    let dimension = u32::from_le_bytes(field(12..16));
    let vector_type = if dimension == 0 {
        VectorType::Sparse
    } else {
        VectorType::Dense
    };
    IndexConfig::new(vector_type, dimension, metric).map_err(|err| (12, err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dimension;

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
        let sparse = encode_meta(IndexConfig::sparse());
        assert_eq!(decode_meta(&sparse).unwrap(), IndexConfig::sparse());
        // No dimension with another metric than dotproduct is no index at all.
        let mut bad = sparse;
        bad[16] = 0;
        let crc = crc32fast::hash(&bad[..17]);
        bad[17..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_meta(&bad).unwrap_err().0, 12);
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
