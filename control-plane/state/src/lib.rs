//! The control plane's state documents (the catalog, the access state) and where they live.
//!
//! Each kind of state is one document, changed by read-modify-write through one loop,
//! [`Versioned::change`], over the [`Store`] trait (load the newest version; replace it if it
//! is still the version read). Each change is a function over the in-memory document, written
//! once whatever the store.
//!
//! # Layout
//! - [`store`]: the [`Store`] trait, its [`Version`]s, and the stores: [`LocalFile`] (one
//!   control plane: a file behind the data-directory lock), [`SharedDocument`] (below) and
//!   [`Memory`] (nowhere).
//! - [`versioned`]: [`Versioned`], a [`Format`] (one kind of state) in a store, and the
//!   read-modify-write loop with retry on conflict.
//! - [`bucket`]: [`bucket::open`], the object store an `--object-store-url` names
//!   (`s3://bucket/prefix` with conditional writes, `file:///dir`, `memory://`), usable from
//!   any thread.
//! - `testing` (feature `testing`): each test's own prefix in the test bucket of a real
//!   S3-compatible server.
//!
//! # Shared documents
//! One control plane keeps its catalog and its access file (projects and key hashes) as local
//! files behind the data-directory lock ([`LocalFile`]). Several replicas (a Kubernetes Deployment with more
//! than one pod) instead keep them as a [`SharedDocument`] in a store they all reach: a
//! directory on a shared volume ([`SharedDocument::local`]) or an S3-compatible bucket
//! ([`SharedDocument::in_bucket`]; the same `object_store` interface the engine uses for
//! segments). No replica is special and there is no protocol
//! between them: the store's conditional create is the only arbiter.
//!
//! # Format and protocol
//! A document `name` is a series of immutable versions `name/00000000000000000001.json`,
//! `…/00000000000000000002.json`, … each holding the whole document. A change is
//! read-modify-write: read the newest version `n`, compute the new document, create version
//! `n + 1` with `PutMode::Create` (If-None-Match). Of two replicas that both read `n`, exactly
//! one creates `n + 1`; the other gets [`Written::Conflict`], reads again and redoes its change
//! on the new state (or refuses it, if the change no longer applies). So every acknowledged
//! change is in every later version: none is lost, none applied twice.
//!
//! Finding the newest version: from a known version `k` that still exists, probe `k + 1`,
//! `k + 2`, … until one is missing, then confirm the last one found still exists. Old versions are deleted ([`KEEP`] are kept), always
//! oldest first, so "`k + 1` missing, then `k` present" proves `k + 1` never existed at the time
//! of the probe (it could only have been deleted after `k`). A replica whose `k` was deleted
//! lists the directory instead. Only a replica that stalls in the middle of a write while
//! others make [`KEEP`] changes can be unsure whether its write counts: it gets
//! [`Error::Unknown`] instead of an acknowledgement.
//!
//! Everything here is synchronous (callers hold their own lock and run on blocking threads);
//! the async `object_store` calls are driven to completion on the calling thread.

pub mod bucket;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod versioned;

pub use bucket::Bucket;
pub use store::{Loaded, LocalFile, Memory, Replaced, Store, Version, write_atomically};
pub use versioned::{ATTEMPTS, Format, Versioned};

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

/// How many of the newest versions are kept; older ones are deleted after a write.
pub const KEEP: u64 = 64;

/// Width of the zero-padded version number in file names (fits every `u64`).
const WIDTH: usize = 20;

/// Why a shared-document operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed (unreachable, permission, disk full); `what` says what was being done.
    #[error("shared state {what}: {message}")]
    Store {
        /// What was being done, with the document's location.
        what: String,
        /// The store's message.
        message: String,
    },
    /// A write may or may not have become part of the document: the version it was based on
    /// vanished while it was written, which means this replica stalled while many others
    /// wrote. Retrying the request is safe only if the change is idempotent.
    #[error(
        "shared state {0}: the outcome of this change is unknown (this replica stalled while others made {KEEP}+ changes); check and retry"
    )]
    Unknown(String),
    /// A local file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `create`, `rename into place`, …).
        action: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An object-store URL ([`bucket::open`]) that cannot be used.
    #[error("--object-store-url {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Other writers changed the document first `attempts` times in a row; nothing was changed.
    #[error(
        "{location}: other writers changed the document first {attempts} times in a row; retry"
    )]
    Contended {
        /// Where the document lives.
        location: String,
        /// How many times the change was tried.
        attempts: u32,
    },
}

impl larch_model::Classified for Error {
    /// A full disk is [`Code::ResourceExhausted`](larch_model::Code::ResourceExhausted) (free
    /// space and retry); everything else may pass once the store or the other writers let go,
    /// so it is [`Code::Unavailable`](larch_model::Code::Unavailable).
    fn code(&self) -> larch_model::Code {
        match self {
            Error::Io { source, .. } => larch_model::Code::of_io(source),
            Error::Url { .. } => larch_model::Code::InvalidArgument,
            Error::Store { .. } | Error::Unknown(_) | Error::Contended { .. } => {
                larch_model::Code::Unavailable
            }
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// One version of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Its version number (1 is the first).
    pub version: u64,
    /// The whole document.
    pub bytes: Vec<u8>,
}

/// The outcome of [`SharedDocument::write_next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Written {
    /// The change is version `.0` of the document, durable in the store.
    Done(u64),
    /// Another replica wrote that version first: read the newest and redo the change.
    Conflict,
}

/// A document shared through an object store; see the crate docs.
#[derive(Debug, Clone)]
pub struct SharedDocument {
    store: Arc<dyn ObjectStore>,
    dir: ObjectPath,
    /// For messages: where the document lives.
    location: String,
    /// The document's directory when it is on a local (or network-mounted) filesystem: kept
    /// owner-only (0700), and each version made 0600, like the single control plane's files.
    local_dir: Option<std::path::PathBuf>,
}

impl SharedDocument {
    /// Document `name` in the local (or network-mounted) directory `root`, created if missing;
    /// every version is synced to disk before a write returns. The document's own directory
    /// `root/name` is owner-only (0700, narrowed if it was wider) and every version is written
    /// 0600: it holds key hashes and index names.
    pub fn local(root: &Path, name: &str) -> Result<SharedDocument> {
        let what = || format!("directory {}", root.display());
        let local_dir = root.join(name);
        owner_only_dir(&local_dir).map_err(|err| Error::Store {
            what: format!("directory {}", local_dir.display()),
            message: err.to_string(),
        })?;
        let store = LocalFileSystem::new_with_prefix(root)
            .map_err(|err| Error::Store {
                what: what(),
                message: err.to_string(),
            })?
            .with_fsync(true);
        let mut document =
            SharedDocument::new(Arc::new(store), name, local_dir.display().to_string());
        document.local_dir = Some(local_dir);
        Ok(document)
    }

    /// Document `name` in `store`; `location` names it in messages.
    pub fn new(store: Arc<dyn ObjectStore>, name: &str, location: String) -> SharedDocument {
        SharedDocument {
            store,
            dir: ObjectPath::from(name),
            location,
            local_dir: None,
        }
    }

    /// Document `name` under the prefix of `bucket` (e.g. `s3://bucket/prefix` keeps
    /// document `catalog` as `prefix/catalog/00000000000000000001.json`, …).
    pub fn in_bucket(bucket: &Bucket, name: &str) -> SharedDocument {
        let dir = bucket.path(name);
        let location = bucket.describe(&dir);
        SharedDocument {
            store: Arc::clone(&bucket.store),
            dir,
            location,
            local_dir: None,
        }
    }

    /// Where the document lives (for messages).
    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, version: u64) -> ObjectPath {
        self.dir.clone().join(format!("{version:0WIDTH$}.json"))
    }

    fn failed(&self, doing: &str, err: object_store::Error) -> Error {
        Error::Store {
            what: format!("{doing} {}", self.location),
            message: err.to_string(),
        }
    }

    /// The newest version, or `None` while the document has none. `known` is the version this
    /// replica read last (0 for none): the search starts there, and `Ok(None)` is also returned
    /// when `known` is still the newest, so the caller keeps what it has.
    pub fn refresh(&self, known: u64) -> Result<Option<Snapshot>> {
        if known == 0 {
            return self.newest_listed();
        }
        // A replica that fell behind the deleted range lists instead of probing.
        if !self.exists(known)? {
            return self.newest_listed();
        }
        let mut version = known;
        while self.exists(version + 1)? {
            version += 1;
        }
        if version == known {
            return Ok(None);
        }
        // `version + 1` was missing; `version` still being there proves it is the newest.
        match self.get(version)? {
            Some(bytes) => Ok(Some(Snapshot { version, bytes })),
            // Deleted under us: others wrote many versions meanwhile; list.
            None => self.newest_listed(),
        }
    }

    /// The newest version found by listing the directory, then probing past it.
    fn newest_listed(&self) -> Result<Option<Snapshot>> {
        loop {
            let Some(mut version) = self.versions()?.into_iter().max() else {
                return Ok(None);
            };
            while self.exists(version + 1)? {
                version += 1;
            }
            if let Some(bytes) = self.get(version)? {
                return Ok(Some(Snapshot { version, bytes }));
            }
            // Deleted between the listing and the read (others wrote many versions): again.
        }
    }

    /// Writes `bytes` as the version after `base` (0: the first version), unless another
    /// replica wrote that version first.
    pub fn write_next(&self, base: u64, bytes: Vec<u8>) -> Result<Written> {
        let version = base + 1;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let put = wait(
            self.store
                .put_opts(&self.path(version), PutPayload::from(bytes), options),
        );
        match put {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => return Ok(Written::Conflict),
            Err(err) => return Err(self.failed("writing", err)),
        }
        self.owner_only_file(version)?;
        // If `base` is gone, `version` may have existed and been deleted before this write
        // (see the crate docs): then it landed behind the newest version, unseen.
        if base > 0 && !self.exists(base)? {
            // Take it back so no replica mistakes it for the newest (best effort; the next
            // deletion of old versions removes it otherwise).
            let _ = wait(self.store.delete(&self.path(version)));
            return Err(Error::Unknown(self.location.clone()));
        }
        if version > KEEP && version.is_multiple_of(8) {
            self.delete_before(version + 1 - KEEP);
        }
        Ok(Written::Done(version))
    }

    /// Makes version `version` of a local document readable by its owner only. The directory is
    /// already owner-only, so the file was never exposed in between.
    fn owner_only_file(&self, version: u64) -> Result<()> {
        let Some(dir) = &self.local_dir else {
            return Ok(());
        };
        let file = dir.join(format!("{version:0WIDTH$}.json"));
        set_mode(&file, 0o600).map_err(|err| Error::Store {
            what: format!("making {} owner-only", file.display()),
            message: err.to_string(),
        })
    }

    /// Deletes every version below `bound`, oldest first; failures are only logged (old
    /// versions are never read again).
    fn delete_before(&self, bound: u64) {
        let mut old = match self.versions() {
            Ok(versions) => versions,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list old shared-state versions to delete");
                return;
            }
        };
        old.retain(|version| *version < bound);
        old.sort_unstable();
        for version in old {
            match wait(self.store.delete(&self.path(version))) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => {
                    // Stop: deleting a newer version while an older one stays would break the
                    // newest-version proof.
                    tracing::warn!(error = %err, version, location = %self.location, "cannot delete an old shared-state version");
                    return;
                }
            }
        }
    }

    /// Every version number in the directory.
    fn versions(&self) -> Result<Vec<u64>> {
        let listed = wait(self.store.list_with_delimiter(Some(&self.dir)))
            .map_err(|err| self.failed("listing", err))?;
        Ok(listed
            .objects
            .iter()
            .filter_map(|object| {
                let name = object.location.filename()?;
                let number = name.strip_suffix(".json")?;
                (number.len() == WIDTH)
                    .then(|| number.parse().ok())
                    .flatten()
            })
            .collect())
    }

    fn exists(&self, version: u64) -> Result<bool> {
        match wait(self.store.head(&self.path(version))) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(err) => Err(self.failed("reading", err)),
        }
    }

    fn get(&self, version: u64) -> Result<Option<Vec<u8>>> {
        let result = wait(async {
            let got = self.store.get(&self.path(version)).await?;
            got.bytes().await
        });
        match result {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(self.failed("reading", err)),
        }
    }
}

/// Creates `dir` (and its parents) if missing and makes it owner-only (0700).
fn owner_only_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    set_mode(dir, 0o700)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Other platforms have no owner-only modes to set.
#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// Drives an `object_store` future to completion on this thread (see the crate docs).
fn wait<F: Future>(future: F) -> F::Output {
    futures_executor::block_on(future)
}

#[cfg(test)]
mod s3_tests;
#[cfg(test)]
mod tests;
