//! The object write-ahead log of an index on a shared object store, its
//! writer lease and the fence that stops a stale writer (issue 17).
//!
//! PROTOCOL-DOCS
//!
//! # Layout
//!
//! | Module | Concern |
//! |---|---|
//! | `log` | the batch object format, [`LogReader`](log::LogReader) (replay and tailing), the conditional create every batch goes through |
//! | `writer` | [`Writer`](writer::Writer): group commit, ambiguous PUTs, the fence at open, truncation; the [`Authority`](writer::Authority) it writes under |
//! | `lease` | [`Contender`](lease::Contender) and [`Lease`](lease::Lease): the lease object, acquisition, takeover, renewal, release |
//! | `clock` | [`Clock`](clock::Clock): the monotonic clock leases are timed with, and a fake one for tests |
//! | `faulty` | (tests) a fault-injecting `ObjectStore`: fail, delay, hold, apply-then-error, call counters |

use std::{fmt, future::Future, path::PathBuf, sync::Arc};

use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
    path::Path as ObjectPath,
};

use crate::{Error, ErrorCode};

pub(crate) mod clock;
#[cfg(test)]
mod faulty;
pub(crate) mod lease;
pub(crate) mod log;
pub(crate) mod writer;

use clock::Clock;

/// What went wrong in the object log, its lease or its fence.
///
/// [`LogError::Fenced`] and [`LogError::NotWriter`] mean this process is no
/// longer the writer of the index: it must stop writing and let the new
/// writer (or the next lease holder) take over. The engine maps both to
/// `UNAVAILABLE` "not the writer" (see the `From` impl).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LogError {
    /// Another writer created the log object this writer needed: a newer
    /// writer fenced the log. Every later append fails the same way.
    #[error(
        "not the writer: wal/{seq:020} belongs to writer epoch {by_epoch}, this writer has epoch {epoch}"
    )]
    Fenced {
        /// The sequence number that was taken.
        seq: u64,
        /// This writer's epoch.
        epoch: u64,
        /// The epoch written in the object found there.
        by_epoch: u64,
    },
    /// The lease is lost, released or could not be renewed in time.
    #[error("not the writer: {reason}")]
    NotWriter {
        /// Why, e.g. `lease taken over by …`.
        reason: String,
    },
    /// The store failed (after retries) or the outcome of a write is unknown.
    #[error("{0}")]
    Unavailable(String),
    /// A log or lease object is damaged, foreign, or out of order.
    #[error("corrupt object {object}: at byte {offset}: {reason}")]
    Corrupt {
        /// The object's key in the store.
        object: String,
        /// Where in it the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

impl LogError {
    /// Whether this process has stopped being the writer (fenced, or its
    /// lease lost or expired).
    pub(crate) fn is_not_writer(&self) -> bool {
        matches!(self, LogError::Fenced { .. } | LogError::NotWriter { .. })
    }

    fn corrupt(object: &ObjectPath, offset: u64, reason: impl Into<String>) -> Self {
        LogError::Corrupt {
            object: object.to_string(),
            offset,
            reason: reason.into(),
        }
    }
}

impl From<LogError> for Error {
    fn from(err: LogError) -> Self {
        match err {
            LogError::Fenced { .. } | LogError::NotWriter { .. } | LogError::Unavailable(_) => {
                Error::Storage {
                    code: ErrorCode::Unavailable,
                    message: err.to_string(),
                }
            }
            LogError::Corrupt {
                object,
                offset,
                reason,
            } => Error::corrupt(PathBuf::from(object), offset, reason),
        }
    }
}

/// Runs an `object_store` future to completion on this thread, as `storage`
/// does: callers of this module are blocking threads (the server's
/// `spawn_blocking` pool or the engine's own threads), never async tasks. A
/// store whose IO needs a Tokio runtime (the S3 client) must be built to
/// spawn its requests on one (object_store's `SpawnedReqwestConnector`), so
/// that its futures complete under any executor.
fn wait<F: Future>(future: F) -> F::Output {
    futures_executor::block_on(future)
}

/// Random bytes from the operating system.
fn random<const N: usize>() -> Result<[u8; N], LogError> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes)
        .map_err(|err| LogError::Unavailable(format!("no randomness from the system: {err}")))?;
    Ok(bytes)
}

/// One index's place in a shared store: every object of its log and its
/// lease lives under `prefix` (an index's incarnation prefix).
#[derive(Clone)]
pub(crate) struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.store, self.prefix)
    }
}

/// An object read back with the version a conditional write must name.
struct Fetched {
    bytes: Vec<u8>,
    version: UpdateVersion,
}

impl Bucket {
    /// The objects under `prefix` in `store`, which must honour conditional
    /// puts (`PutMode::Create` atomically, `PutMode::Update` on the ETag or
    /// version): S3, GCS, Azure, MinIO, Ceph RGW, `InMemory`.
    pub(crate) fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<ObjectPath>) -> Self {
        Bucket {
            store,
            prefix: prefix.into(),
        }
    }

    /// Where the log's batch `seq` lives: `<prefix>/wal/<seq, 20 digits>`, so
    /// the keys sort like the numbers.
    fn wal(&self, seq: u64) -> ObjectPath {
        self.wal_dir().join(format!("{seq:020}"))
    }

    fn wal_dir(&self) -> ObjectPath {
        self.prefix.clone().join("wal")
    }

    fn lease(&self) -> ObjectPath {
        self.prefix.clone().join("lease")
    }

    /// The object at `path`; `None` if there is none.
    fn get(&self, path: &ObjectPath) -> Result<Option<Fetched>, object_store::Error> {
        let fetched = wait(async {
            let result = self.store.get(path).await?;
            let version = UpdateVersion {
                e_tag: result.meta.e_tag.clone(),
                version: result.meta.version.clone(),
            };
            let bytes = result.bytes().await?;
            Ok(Fetched {
                bytes: bytes.to_vec(),
                version,
            })
        });
        match fetched {
            Ok(fetched) => Ok(Some(fetched)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn put(
        &self,
        path: &ObjectPath,
        payload: PutPayload,
        mode: PutMode,
    ) -> Result<UpdateVersion, object_store::Error> {
        let options = PutOptions::from(mode);
        wait(self.store.put_opts(path, payload, options)).map(UpdateVersion::from)
    }

    /// Deletes `path`; a missing object is not an error.
    fn delete(&self, path: &ObjectPath) -> Result<(), object_store::Error> {
        match wait(self.store.delete(path)) {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// The sequence numbers of the log objects present, ascending.
    fn list_wal(&self) -> Result<Vec<u64>, object_store::Error> {
        let dir = self.wal_dir();
        let mut seqs = Vec::new();
        for meta in futures_executor::block_on_stream(self.store.list(Some(&dir))) {
            let meta = meta?;
            // Anything that is not `wal/<digits>` is not ours to touch.
            let seq = meta.location.prefix_match(&dir).and_then(|mut parts| {
                match (parts.next(), parts.next()) {
                    (Some(name), None) => name.as_ref().parse::<u64>().ok(),
                    _ => None,
                }
            });
            seqs.extend(seq);
        }
        seqs.sort_unstable();
        Ok(seqs)
    }
}

/// An `object_store` failure as a [`LogError::Unavailable`] while doing `what`.
fn unavailable(what: impl fmt::Display, err: &object_store::Error) -> LogError {
    LogError::Unavailable(format!("{what}: {err}"))
}
