//! The one interface through which an index stores its segments, manifest,
//! graph files and (in a shared store) its description, and its
//! implementation on the `object_store` crate.
//!
//! [`Storage`] offers only what every object store can do: whole immutable
//! files (put once, read, list, delete) and one small file, the manifest,
//! that is replaced atomically. Nothing above this module assumes more
//! (no appends, no renames, no directories, no `fsync`), so an S3-compatible
//! store can be plugged in without touching the flush, compaction or
//! recovery code.
//!
//! [`ObjectStorage`] implements it on any [`ObjectStore`]; [`Placement`]
//! says which:
//!
//! - **Local disk** ([`Placement::IndexDirs`], the default,
//!   [`ObjectStorage::local`]): `LocalFileSystem` rooted at the index
//!   directory, with `fsync` on: a put writes a staging file, syncs it,
//!   renames it into place and syncs the directory, so a file is durable and
//!   complete once `put` returns, and the manifest swap is an atomic rename.
//!   The engine is the only writer of an index directory, so the manifest is
//!   replaced unconditionally, and the directory is *private*: recovery may
//!   delete what it does not recognise there.
//! - **A shared store** ([`Placement::Shared`], `Engine::open_on_store`): one
//!   store (a bucket) for all indexes, possibly seen by several processes.
//!   Files are created with `PutMode::Create` and the manifest is swapped
//!   with `PutMode::Update` (a conditional PUT against the version read or
//!   written last), so a second writer is detected instead of silently
//!   overwritten. Nothing there is private: no start-up path deletes an
//!   object it does not recognise (see [`Storage::private`]).
//!
//! # Layout in a shared store
//!
//! ```text
//! <prefix>/indexes/<project>/<name>/<incarnation>/index.meta      dimension and metric (see `dir`), created once
//! <prefix>/indexes/<project>/<name>/<incarnation>/manifest        the live segments, where log replay starts
//! <prefix>/indexes/<project>/<name>/<incarnation>/segments/seg-000007.seg
//! <prefix>/indexes/<project>/<name>/<incarnation>/graphs/<hash>-<time>.graph
//! ```
//!
//! `<prefix>` is the one the engine was given (`s3://bucket/prefix` → `prefix`);
//! `<project>`, `<name>` and `<incarnation>` come from the index's storage name
//! `name@project@incarnation` (`larch_model::IndexKey::storage_name`). The
//! catalog gives every creation of an index a fresh incarnation, so creating
//! never has to delete anything, and a name deleted and created again never
//! meets the old objects: they sit under another incarnation until that one's
//! drop deletes exactly its own prefix ([`Placement::remove`]). An index
//! without an incarnation (created before incarnations existed) cannot be kept
//! in a shared store.
//!
//! The write-ahead log does not go through here: on local disk it needs
//! appends and `fdatasync`, which `object_store` cannot offer, so it is plain
//! `std::fs` files in the index directory (see `wal`); in a shared store it is
//! the object log (`objlog`: `<index prefix>/wal/<seq>` and `<index prefix>/lease`,
//! written with conditional creates), whose place [`Placement::shared`] gives.
//!
//! # Async bridge
//!
//! `object_store`'s API is async; the engine is synchronous. `store_io::wait` is
//! the one place that bridges them (for this module and the object log): it drives a future to completion on the
//! calling thread (`futures_executor::block_on`). That is sound because
//! engine calls already run on blocking threads (the server calls the
//! engine through `spawn_blocking`) or on plain threads. Inside a Tokio
//! context `LocalFileSystem` hands its file IO to Tokio's blocking pool and
//! this thread just waits; elsewhere it does the IO inline.

use std::{
    error::Error as _,
    fmt, io,
    path::{Path, PathBuf},
    sync::{Arc, atomic::AtomicBool},
};

use larch_model::IndexKey;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutPayload, UpdateVersion,
    local::LocalFileSystem,
    path::{Path as ObjectPath, PathPart},
};

use crate::{
    Error, ErrorCode, Result,
    objlog::Bucket,
    store_io::{put_replacing, wait},
};

/// Why a storage operation failed, before the caller adds what it was doing.
#[derive(Debug)]
pub(crate) enum StoreError {
    /// The file does not exist.
    NotFound,
    /// The file exists although it should not, or the manifest changed since
    /// this index last read or wrote it (another writer).
    Conflict(String),
    /// Anything else; `full` when the store ran out of space.
    Failed { full: bool, message: String },
}

impl StoreError {
    /// The engine error for this failure while doing `what`.
    pub(crate) fn into_error(self, what: impl fmt::Display) -> Error {
        let (code, message) = match self {
            StoreError::NotFound => (ErrorCode::Unavailable, format!("{what}: not found")),
            StoreError::Conflict(message) => (
                ErrorCode::Unavailable,
                format!("{what}: changed by another writer ({message})"),
            ),
            StoreError::Failed {
                full: true,
                message,
            } => (
                ErrorCode::ResourceExhausted,
                format!("disk full: {what}: {message}; free disk space and retry"),
            ),
            StoreError::Failed {
                full: false,
                message,
            } => (ErrorCode::Unavailable, format!("{what}: {message}")),
        };
        Error::Storage { code, message }
    }
}

/// The version of a manifest as the store reported it, for the next
/// conditional replacement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Version {
    e_tag: Option<String>,
    version: Option<String>,
}

/// A file found by [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    /// Its path, relative to the storage root (`segments/seg-000001.seg`).
    pub(crate) path: String,
    /// Its size in bytes.
    pub(crate) size: u64,
}

/// Immutable files and one atomically replaced manifest, under one root
/// (an index). Paths are relative, `/`-separated and plain ASCII.
pub(crate) trait Storage: Send + Sync + fmt::Debug {
    /// Where `path` is, for messages and [`Error::Corrupt`].
    fn location(&self, path: &str) -> PathBuf;

    /// Whether this process is the only one that sees these files (an index
    /// directory on local disk): only then may start-up delete files it does
    /// not recognise. In a shared store an unknown object may belong to a
    /// writer this process does not know about, so it is left alone.
    fn private(&self) -> bool;

    /// Stores a new immutable file; it is complete and durable on return.
    /// Paths are never reused, so the file must not exist yet.
    fn put_immutable(&self, path: &str, bytes: &[u8]) -> Result<(), StoreError>;

    /// The whole content of a file.
    fn get(&self, path: &str) -> Result<Vec<u8>, StoreError>;

    /// Deletes a file; deleting a missing file is not an error.
    fn delete(&self, path: &str) -> Result<(), StoreError>;

    /// Every file whose path starts with `prefix/`, in no particular order.
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError>;

    /// The manifest at `path` and its version; `None` if there is none yet.
    fn get_manifest(&self, path: &str) -> Result<Option<(Vec<u8>, Version)>, StoreError>;

    /// Replaces the manifest at `path` atomically: a reader sees the old or
    /// the new content, never a mix. `expected` is the version this writer
    /// last read or wrote (`None`: there must be no manifest yet); a store
    /// that can check it fails with [`StoreError::Conflict`] when another
    /// writer got there first.
    fn put_manifest(
        &self,
        path: &str,
        bytes: &[u8],
        expected: Option<&Version>,
    ) -> Result<Version, StoreError>;
}

/// Where the engine keeps the segments and manifests of its indexes.
#[derive(Debug, Clone, Default)]
pub(crate) enum Placement {
    /// Each index in its own directory, beside its log (`LocalFileSystem`).
    #[default]
    IndexDirs,
    /// One shared store (a bucket) for all indexes, each under
    /// `<prefix>/indexes/<project>/<name>/<incarnation>` (see the module
    /// docs); the store must support conditional puts.
    Shared {
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
    },
}

impl Placement {
    /// The storage of index `name`, whose directory is `dir`. In a shared
    /// store `name` must carry an incarnation (`FailedPrecondition` if not:
    /// an index from before incarnations cannot move into a shared store).
    pub(crate) fn storage(&self, dir: &Path, name: &str) -> Result<Arc<dyn Storage>> {
        match self.shared(name)? {
            None => Ok(Arc::new(ObjectStorage::local(dir)?)),
            Some((storage, _)) => Ok(storage),
        }
    }

    /// Where index `name` lives in a shared store: its storage, and the bucket of its object
    /// write-ahead log and lease (see `objlog`), both under its incarnation prefix. `None` on
    /// local disk, where the log is a file in the index directory. `FailedPrecondition` for
    /// a name without an incarnation.
    pub(crate) fn shared(&self, name: &str) -> Result<Option<(Arc<dyn Storage>, Bucket)>> {
        let Placement::Shared { store, prefix } = self else {
            return Ok(None);
        };
        let Some(index) = index_prefix(prefix, name) else {
            return Err(Error::FailedPrecondition(format!(
                "index '{name}' has no incarnation id; an index kept in a shared object \
                 store needs one (name@project@incarnation)"
            )));
        };
        let storage = ObjectStorage::shared(Arc::clone(store), index.clone());
        Ok(Some((
            Arc::new(storage),
            Bucket::new(Arc::clone(store), index),
        )))
    }

    /// Whether indexes live in a shared store.
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, Placement::Shared { .. })
    }

    /// Deletes everything a shared store holds for index `name`: exactly its
    /// incarnation's prefix, never another incarnation's objects. A local
    /// index's files go with its directory, and a name without an
    /// incarnation has nothing in a shared store.
    pub(crate) fn remove(&self, name: &str) -> Result<()> {
        let Placement::Shared { store, prefix } = self else {
            return Ok(());
        };
        let Some(index) = index_prefix(prefix, name) else {
            return Ok(());
        };
        let storage = ObjectStorage::shared(Arc::clone(store), index);
        let what = || format!("cannot delete the stored files of index '{name}'");
        let listed = storage.list("").map_err(|err| err.into_error(what()))?;
        let count = listed.len();
        for file in listed {
            storage
                .delete(&file.path)
                .map_err(|err| err.into_error(what()))?;
        }
        tracing::debug!(index = %name, objects = count, "deleted the stored objects of the index");
        Ok(())
    }
}

/// Where index `name` (a storage name, `name@project@incarnation`) keeps its
/// objects under `root` in a shared store:
/// `<root>/indexes/<project>/<name>/<incarnation>`; `None` for a name without
/// an incarnation.
pub(crate) fn index_prefix(root: &ObjectPath, name: &str) -> Option<ObjectPath> {
    let key = IndexKey::from_storage_name(name)?;
    let incarnation = key.incarnation()?;
    let parts = [
        "indexes",
        key.project(),
        key.name().as_str(),
        incarnation.as_str(),
    ];
    Some(ObjectPath::from_iter(
        root.parts().chain(parts.into_iter().map(PathPart::from)),
    ))
}

/// The one store that holds both an engine's index files and its backups, so a backup shares
/// the immutable segment files of its index instead of writing them again (see `backup`): on
/// local disk the data directory, the parent of the index root (a copy there is a hard link),
/// in a shared store the bucket (a copy is the store's own server-side copy).
///
/// ```text
/// local:  <data dir>/backups/<id>/…          beside <data dir>/<index root>/<index>/…
/// bucket: <prefix>/backups/<id>/…            beside <prefix>/indexes/<project>/<name>/<incarnation>/…
/// ```
#[derive(Debug, Clone)]
pub(crate) struct Vault {
    store: Arc<dyn ObjectStore>,
    kind: VaultKind,
}

#[derive(Debug, Clone)]
enum VaultKind {
    /// `LocalFileSystem` at `data_dir`; index directories under `data_dir/<indexes>`.
    Local { data_dir: PathBuf, indexes: String },
    /// A bucket; indexes under `index_prefix(prefix, name)`.
    Shared { prefix: ObjectPath },
}

/// Where backups live under the vault's root.
const BACKUPS: &str = "backups";

impl Vault {
    /// The vault of an engine whose index root is `root`, keeping its files as `placement` says.
    /// On local disk the data directory (`root`'s parent) is created if needed.
    pub(crate) fn new(placement: &Placement, root: &Path) -> Result<Self> {
        match placement {
            Placement::Shared { store, prefix } => Ok(Vault {
                store: Arc::clone(store),
                kind: VaultKind::Shared {
                    prefix: prefix.clone(),
                },
            }),
            Placement::IndexDirs => {
                let (Some(data_dir), Some(indexes)) = (
                    root.parent(),
                    root.file_name().and_then(|name| name.to_str()),
                ) else {
                    return Err(Error::FailedPrecondition(format!(
                        "backups need an index root with a parent directory, not {}",
                        root.display()
                    )));
                };
                let data_dir = if data_dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    data_dir
                };
                let failed = |err: io::Error| {
                    Error::storage(format!("cannot create {}", data_dir.display()), &err)
                };
                std::fs::create_dir_all(data_dir).map_err(failed)?;
                let store = LocalFileSystem::new_with_prefix(data_dir)
                    .map_err(|err| {
                        failure(err)
                            .into_error(format!("cannot open the directory {}", data_dir.display()))
                    })?
                    .with_fsync(true);
                Ok(Vault {
                    store: Arc::new(store),
                    kind: VaultKind::Local {
                        data_dir: data_dir.to_owned(),
                        indexes: indexes.to_owned(),
                    },
                })
            }
        }
    }

    /// The files of backup `id`. The caller has checked `id` (a plain name).
    pub(crate) fn backup(&self, id: &str) -> ObjectStorage {
        match &self.kind {
            VaultKind::Local { data_dir, .. } => self.local([BACKUPS, id], data_dir),
            VaultKind::Shared { prefix } => ObjectStorage::shared(
                Arc::clone(&self.store),
                ObjectPath::from_iter(prefix.parts().chain([BACKUPS, id].map(PathPart::from))),
            ),
        }
    }

    /// The files of index `name` (a storage name, or on local disk also the name of a
    /// staging directory). `FailedPrecondition` in a shared store for a name without an
    /// incarnation.
    pub(crate) fn index(&self, name: &str) -> Result<ObjectStorage> {
        match &self.kind {
            VaultKind::Local { data_dir, indexes } => Ok(self.local([indexes, name], data_dir)),
            VaultKind::Shared { prefix } => {
                let Some(index) = index_prefix(prefix, name) else {
                    return Err(Error::FailedPrecondition(format!(
                        "index '{name}' has no incarnation id; an index kept in a shared \
                         object store needs one (name@project@incarnation)"
                    )));
                };
                Ok(ObjectStorage::shared(Arc::clone(&self.store), index))
            }
        }
    }

    /// The directory of backup `id` on local disk; `None` in a shared store.
    pub(crate) fn backup_dir(&self, id: &str) -> Option<PathBuf> {
        match &self.kind {
            VaultKind::Local { data_dir, .. } => Some(data_dir.join(BACKUPS).join(id)),
            VaultKind::Shared { .. } => None,
        }
    }

    fn local(&self, parts: [&str; 2], data_dir: &Path) -> ObjectStorage {
        ObjectStorage {
            store: Arc::clone(&self.store),
            prefix: ObjectPath::from_iter(parts.map(PathPart::from)),
            display_root: data_dir.join(parts[0]).join(parts[1]),
            conditional: false,
            overwrites: AtomicBool::new(false),
        }
    }
}

/// [`Storage`] on an [`ObjectStore`], under a prefix.
#[derive(Debug)]
pub(crate) struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    /// Where this index's files live in the store.
    prefix: ObjectPath,
    /// What [`Storage::location`] joins paths to.
    display_root: PathBuf,
    /// Whether the store checks `PutMode::Create` / `PutMode::Update`; if
    /// not, the engine's single writer per index makes plain puts safe.
    conditional: bool,
    /// Set once a conditional manifest swap fell back to an overwrite (the
    /// store cannot replace conditionally), so that is logged once.
    overwrites: AtomicBool,
}

impl ObjectStorage {
    /// The local directory `dir` (which must exist), with every write
    /// synced to disk before it returns.
    pub(crate) fn local(dir: &Path) -> Result<Self> {
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|err| {
                failure(err).into_error(format!("cannot open the directory {}", dir.display()))
            })?
            .with_fsync(true);
        Ok(ObjectStorage {
            store: Arc::new(store),
            prefix: ObjectPath::default(),
            display_root: dir.to_owned(),
            conditional: false,
            overwrites: AtomicBool::new(false),
        })
    }

    /// The files under `prefix` in a shared store that supports conditional
    /// puts.
    pub(crate) fn shared(store: Arc<dyn ObjectStore>, prefix: ObjectPath) -> Self {
        ObjectStorage {
            display_root: PathBuf::from(format!("{store}")).join(prefix.as_ref()),
            prefix,
            store,
            conditional: true,
            overwrites: AtomicBool::new(false),
        }
    }

    fn object_path(&self, path: &str) -> ObjectPath {
        ObjectPath::from_iter(
            self.prefix.parts().chain(
                path.split('/')
                    .filter(|p| !p.is_empty())
                    .map(PathPart::from),
            ),
        )
    }

    fn put(&self, path: &str, bytes: &[u8], mode: PutMode) -> Result<Version, StoreError> {
        let location = self.object_path(path);
        // One copy, so a failed put leaves the caller its bytes to retry with.
        let payload = PutPayload::from(bytes.to_vec());
        let result = put_replacing(&*self.store, &location, payload, mode, &self.overwrites, || {
            tracing::warn!(store = %self.store, file = %self.location(path).display(), "the object store cannot replace a file conditionally; the manifest is overwritten, so a second writer of this index would not be detected");
        })
        .map_err(failure)?;
        Ok(Version {
            e_tag: result.e_tag,
            version: result.version,
        })
    }
}

impl ObjectStorage {
    /// Stores `from_path` of `from` as the new immutable file `path` here, sharing its bytes
    /// where the store can: when both are in the same store (a [`Vault`]'s), a hard link on
    /// local disk or the store's server-side copy; otherwise a read and a put. Complete and
    /// durable on return.
    pub(crate) fn copy_from(
        &self,
        path: &str,
        from: &ObjectStorage,
        from_path: &str,
    ) -> Result<(), StoreError> {
        if Arc::ptr_eq(&self.store, &from.store) {
            let (source, target) = (from.object_path(from_path), self.object_path(path));
            return wait(self.store.copy(&source, &target)).map_err(failure);
        }
        let bytes = from.get(from_path)?;
        self.put_immutable(path, &bytes)
    }
}

impl Storage for ObjectStorage {
    fn location(&self, path: &str) -> PathBuf {
        self.display_root.join(path)
    }

    fn private(&self) -> bool {
        // Only a local index directory is written unconditionally, and only
        // because this engine is its one writer.
        !self.conditional
    }

    fn put_immutable(&self, path: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let mode = if self.conditional {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        self.put(path, bytes, mode).map(drop)
    }

    fn get(&self, path: &str) -> Result<Vec<u8>, StoreError> {
        let location = self.object_path(path);
        wait(async {
            let result = self.store.get(&location).await?;
            result.bytes().await
        })
        .map(Vec::from)
        .map_err(failure)
    }

    fn delete(&self, path: &str) -> Result<(), StoreError> {
        match wait(self.store.delete(&self.object_path(path))).map_err(failure) {
            Err(StoreError::NotFound) => Ok(()),
            other => other,
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let root = self.object_path(prefix);
        let mut listed = Vec::new();
        for meta in futures_executor::block_on_stream(self.store.list(Some(&root))) {
            let meta = meta.map_err(failure)?;
            let Some(parts) = meta.location.prefix_match(&self.prefix) else {
                continue;
            };
            let path = parts
                .map(|part| part.as_ref().to_owned())
                .collect::<Vec<_>>()
                .join("/");
            listed.push(Listed {
                path,
                size: meta.size,
            });
        }
        Ok(listed)
    }

    fn get_manifest(&self, path: &str) -> Result<Option<(Vec<u8>, Version)>, StoreError> {
        let location = self.object_path(path);
        let result = wait(async {
            let result = self.store.get(&location).await?;
            let version = Version {
                e_tag: result.meta.e_tag.clone(),
                version: result.meta.version.clone(),
            };
            Ok((result.bytes().await?, version))
        });
        match result.map_err(failure) {
            Ok((bytes, version)) => Ok(Some((Vec::from(bytes), version))),
            Err(StoreError::NotFound) => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn put_manifest(
        &self,
        path: &str,
        bytes: &[u8],
        expected: Option<&Version>,
    ) -> Result<Version, StoreError> {
        let mode = match expected {
            // A local directory has one writer: the rename alone is atomic.
            _ if !self.conditional => PutMode::Overwrite,
            None => PutMode::Create,
            Some(Version { e_tag, version }) => PutMode::Update(UpdateVersion {
                e_tag: e_tag.clone(),
                version: version.clone(),
            }),
        };
        self.put(path, bytes, mode)
    }
}

/// Classifies an `object_store` error.
fn failure(err: object_store::Error) -> StoreError {
    match err {
        object_store::Error::NotFound { .. } => StoreError::NotFound,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            StoreError::Conflict(err.to_string())
        }
        other => {
            // The top message often repeats its source; add only what is new.
            let mut message = other.to_string();
            let mut full = false;
            let mut source = other.source();
            while let Some(cause) = source {
                if let Some(io) = cause.downcast_ref::<io::Error>() {
                    full |= matches!(
                        io.kind(),
                        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                    );
                }
                let text = cause.to_string();
                if !message.contains(&text) {
                    message = format!("{message}: {text}");
                }
                source = cause.source();
            }
            StoreError::Failed { full, message }
        }
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    fn exercise(storage: &dyn Storage) {
        assert!(matches!(storage.get("a/x"), Err(StoreError::NotFound)));
        assert!(storage.list("a").unwrap().is_empty());
        storage.put_immutable("a/x", b"one").unwrap();
        storage.put_immutable("a/y", b"three").unwrap();
        storage.put_immutable("b", b"other").unwrap();
        assert_eq!(storage.get("a/x").unwrap(), b"one");
        let mut listed = storage.list("a").unwrap();
        listed.sort_by(|l, r| l.path.cmp(&r.path));
        assert_eq!(
            listed,
            [
                Listed {
                    path: "a/x".into(),
                    size: 3
                },
                Listed {
                    path: "a/y".into(),
                    size: 5
                }
            ]
        );
        storage.delete("a/x").unwrap();
        storage.delete("a/x").unwrap();
        assert_eq!(storage.list("a").unwrap().len(), 1);

        assert!(storage.get_manifest("manifest").unwrap().is_none());
        let first = storage.put_manifest("manifest", b"v1", None).unwrap();
        let (bytes, read) = storage.get_manifest("manifest").unwrap().unwrap();
        assert_eq!(bytes, b"v1");
        let second = storage
            .put_manifest("manifest", b"v2", Some(&read))
            .unwrap();
        assert_eq!(storage.get_manifest("manifest").unwrap().unwrap().0, b"v2");
        drop((first, second));
    }

    #[test]
    fn local_directories_store_files_and_swap_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let storage = ObjectStorage::local(dir.path()).unwrap();
        exercise(&storage);
        assert!(storage.private());
        assert_eq!(fs_read(dir.path(), "manifest"), b"v2");
        assert_eq!(
            storage.location("segments/x"),
            dir.path().join("segments/x")
        );
    }

    fn fs_read(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(name)).unwrap()
    }

    #[test]
    fn shared_stores_keep_indexes_apart_and_check_versions() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let placement = Placement::Shared {
            store: Arc::clone(&store),
            prefix: ObjectPath::from("larch"),
        };
        let dir = Path::new("/nonexistent");
        let storage = placement.storage(dir, "movies@default@aa").unwrap();
        exercise(storage.as_ref());
        assert!(!storage.private());
        assert_eq!(
            storage.location("manifest"),
            PathBuf::from("InMemory/larch/indexes/default/movies/aa/manifest")
        );
        // Another incarnation of the same name, and the same name in another project.
        for other in ["movies@default@bb", "movies@p1@aa"] {
            let other = placement.storage(dir, other).unwrap();
            assert!(other.list("").unwrap().is_empty());
            assert!(other.get_manifest("manifest").unwrap().is_none());
            other.put_immutable("b", b"theirs").unwrap();
        }

        // A stale version or a second creation is a conflict, not an overwrite.
        let (_, current) = storage.get_manifest("manifest").unwrap().unwrap();
        storage
            .put_manifest("manifest", b"v3", Some(&current))
            .unwrap();
        let stale = storage.put_manifest("manifest", b"v4", Some(&current));
        assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
        let again = storage.put_manifest("manifest", b"v4", None);
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        let twice = storage.put_immutable("b", b"x");
        assert!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
        assert_eq!(storage.get_manifest("manifest").unwrap().unwrap().0, b"v3");

        // Removing one incarnation deletes its prefix and nothing else.
        placement.remove("movies@default@aa").unwrap();
        assert!(storage.list("").unwrap().is_empty());
        for other in ["movies@default@bb", "movies@p1@aa"] {
            let other = placement.storage(dir, other).unwrap();
            assert_eq!(other.get("b").unwrap(), b"theirs");
        }
    }

    #[test]
    fn a_shared_store_needs_an_incarnation() {
        let placement = Placement::Shared {
            store: Arc::new(InMemory::new()),
            prefix: ObjectPath::default(),
        };
        for name in ["movies", "movies@p1", ".movies.tmp"] {
            let err = placement
                .storage(Path::new("/nonexistent"), name)
                .unwrap_err();
            assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{name}: {err}");
            assert!(err.to_string().contains("no incarnation id"), "{err}");
            // Nothing of such a name is in the store, so there is nothing to delete.
            placement.remove(name).unwrap();
        }
        assert_eq!(
            index_prefix(&ObjectPath::default(), "movies@default@0a1b").unwrap(),
            ObjectPath::from("indexes/default/movies/0a1b")
        );
    }

    /// The server calls the engine on Tokio's blocking threads, where
    /// `LocalFileSystem` hands its IO to the blocking pool; even a
    /// current-thread runtime's own thread must not deadlock.
    #[test]
    fn the_bridge_works_inside_tokio() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(ObjectStorage::local(dir.path()).unwrap());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let shared = Arc::clone(&storage);
        let task = runtime.spawn_blocking(move || {
            shared.put_immutable("segments/a", b"one").unwrap();
            assert_eq!(shared.get("segments/a").unwrap(), b"one");
            assert_eq!(shared.list("segments").unwrap().len(), 1);
        });
        runtime.block_on(task).unwrap();
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        current.block_on(async {
            storage.put_manifest("manifest", b"v1", None).unwrap();
            assert_eq!(storage.get_manifest("manifest").unwrap().unwrap().0, b"v1");
            storage.delete("segments/a").unwrap();
        });
    }

    #[test]
    fn errors_say_what_failed() {
        let err = StoreError::Failed {
            full: true,
            message: "no space left on device".into(),
        }
        .into_error("cannot write segment x");
        assert_eq!(err.code(), ErrorCode::ResourceExhausted);
        assert_eq!(
            err.to_string(),
            "disk full: cannot write segment x: no space left on device; free disk space and retry"
        );
        let err = StoreError::NotFound.into_error("cannot read y");
        assert_eq!(
            (err.code(), err.to_string()),
            (ErrorCode::Unavailable, "cannot read y: not found".into())
        );
    }
}
