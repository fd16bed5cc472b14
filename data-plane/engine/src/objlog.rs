//! The object write-ahead log of an index on a shared object store, its
//! writer lease and the fence that stops a stale writer (issue 17).
//!
//! This is the write path for stateless data-plane pods over an
//! S3-compatible bucket: the bucket is the only durable state, and the only
//! arbiter between pods is the bucket's conditional put (`PutMode::Create` =
//! `If-None-Match: *`, `PutMode::Update` = `If-Match`). There is no
//! consensus protocol of our own. Every index of an engine on a shared store
//! writes its log through it (`index/log.rs`; opening in `dir`): the lease is
//! taken at open, the writer fences and replays from the manifest's start,
//! and a flush deletes the batches below the previous manifest's start (a
//! flush interval of grace for followers). Processes that do not hold the
//! lease follow the index: they read the log with [`log::LogReader`] and
//! take the lease over once its holder stops (`index/follow.rs`).
//!
//! # Objects
//!
//! ```text
//! <prefix>/lease                       holder id, epoch, ttl, renewal counter, released (JSON)
//! <prefix>/wal/00000000000000000042    one group-commit batch: magic, version, writer epoch,
//!                                      random 128-bit batch id, seq, records, crc32
//! ```
//!
//! `<prefix>` is an index's incarnation prefix, so a re-created index never
//! meets these objects. The log's sequence numbers are dense: `wal/<n>`
//! exists for every `n` from the manifest's start to the newest batch
//! (below it, only fence batches are kept).
//!
//! # The protocol
//!
//! 1. **Lease** ([`lease`]). A process that wants to write acquires the
//!    lease object: creates it (`If-None-Match: *`, epoch 1), or takes it
//!    over (`If-Match` on the version it saw, epoch + 1) once it has seen the
//!    *same* content and version unchanged for a full TTL on its own
//!    monotonic clock, or at once if the lease says `released`. The holder
//!    renews every TTL/3 (`If-Match`); it stops acknowledging once its last
//!    successful renewal was *sent* more than TTL − margin ago, and a failed
//!    `If-Match` means it lost the lease. On shutdown it writes `released`.
//! 2. **Fence** ([`writer::Writer::open`]). The new holder, with epoch `E`,
//!    replays the log from the manifest's start to the first missing number
//!    `N + 1`, and creates `wal/<N+1>` as a *fence batch* (no records,
//!    epoch `E`). If that number is taken first (an older writer's last
//!    batch), it replays that batch and fences at the next number. A batch of
//!    a newer epoch than `E` in the log means a newer writer exists: it does
//!    not write. (Batches of epoch `E` itself are replayed: an earlier writer
//!    of this process under the same lease, which stopped.)
//! 3. **Append** ([`writer::Writer::append`]). Appends are group-committed:
//!    one batch object per create, at most one create in flight, the next
//!    batch forming meanwhile (bounded in bytes), no lock held during the
//!    create. A write is acknowledged only once the create of its batch
//!    `wal/<seq>` (`If-None-Match: *`) succeeded and the lease still allows
//!    acknowledging.
//! 4. **Ambiguity** ([`log::create_batch`]). A create whose answer is an
//!    error, a timeout or `AlreadyExists` (a retried request whose first
//!    attempt landed) is resolved by reading `wal/<seq>` back: the same
//!    batch id means it succeeded; another batch means a newer writer took
//!    the number: this writer is **fenced** and fails this and every later
//!    append (the engine answers `UNAVAILABLE` "not the writer"); no object
//!    means the create did not happen and it is retried with the same
//!    number and the same bytes. A number is never skipped and never retried
//!    into `seq + 1`. When neither create nor read-back gets an answer, the
//!    writer stops (outcome unknown), as the local log does after a failed
//!    fsync; a new writer's replay shows what is there.
//! 5. **Read** ([`log::LogReader`]). Replay and followers read `wal/<n>`,
//!    `wal/<n+1>`, … up to the first missing number, checking each object's
//!    crc32, that it holds the batch its key names, and that epochs never
//!    decrease.
//! 6. **Truncate** ([`writer::Writer::delete_before`]). Only an unfenced
//!    writer that has just renewed its lease deletes batches, below a
//!    durable manifest's start, oldest first (so the log from that start on
//!    never has a gap), and never a fence batch. Readers and stale writers
//!    never delete.
//!
//! # Why it is safe
//!
//! **No acknowledged write is lost, whatever the clocks do.** Objects are
//! only ever created, never overwritten, so the create of `wal/<s>` is
//! decided once, by the store. A writer creates `s + 1` only after `s` is
//! its own (a batch or its fence), so from the manifest's start on the log
//! is gap-free and a read up to the first missing number sees every batch.
//! A new writer fences at the first missing number `f`, after replaying
//! everything below it; a batch of the old writer that takes `f` first is
//! replayed and the fence moves up. So every batch the old writer stored —
//! every write it acknowledged — lies below the fence and is in the new
//! writer's state. The old writer's next create is at a number ≤ the fence's,
//! all taken, so it meets another batch id and stops for good: nothing it
//! writes after the fence is ever acknowledged, and it never skips ahead
//! into a number beyond the fence. Truncation keeps every fence, so this
//! holds however long the old writer was paused; the only numbers it could
//! still create are deleted ones below the fence, and there its create
//! can only be the retry of a batch that was already replayed (a number it
//! had not tried yet was free when the fence was placed, so it would be the
//! fence's). Epochs only grow along the log, so a stale object is detected,
//! not applied.
//!
//! **An ambiguous create is decided exactly once.** The batch id is 128
//! random bits, so finding it in `wal/<s>` proves this writer's create
//! landed; finding another id proves it did not and never will (the number
//! is taken). A retry sends the same bytes under the same number, so a
//! delayed first attempt and a retry cannot both land, and whichever lands
//! is the same batch. The lease's writes are resolved the same way: every
//! write carries a fresh renewal counter, so equal content is this write.
//!
//! **At most one writer acknowledges at a time, given bounded clock-rate
//! differences.** A contender starts its TTL when its read of the lease
//! returns, which is after the holder's last renewal landed, which is after
//! that renewal was sent, when the holder's TTL − margin started. If, over
//! one TTL, the holder's clock runs at least `1 − margin/TTL` as fast as the
//! contender's (75% with the default margin of TTL/4; only intervals on each
//! process's own monotonic clock are compared, never wall-clock times), the
//! holder stops acknowledging before the contender can take over. A holder
//! checks before starting a create and again before acknowledging it, so a
//! create that outlives the lease is not acknowledged. A process paused
//! between that check and its answer (SIGSTOP, a long GC) can answer late,
//! but only with a write that is already in the log below any later fence:
//! the clocks bound *when* a stale writer may answer; durability never
//! depends on them.
//!
//! # Calling it
//!
//! Every call blocks its thread until the store answers: object_store's
//! futures are driven on the calling thread with `futures_executor::block_on`,
//! as the `storage` module does. Call it from blocking threads (the server's
//! `spawn_blocking` pool, the engine's own threads), never from an async task.
//! A store whose IO needs a Tokio runtime (object_store's S3 client) must run
//! its whole calls, retries included, on a runtime of its own: use the store
//! `larch_state::bucket::open` returns (`bucket::Spawned`). object_store's
//! `SpawnedReqwestConnector` is not enough: only the HTTP exchange moves to
//! the runtime, and the retry loop's `tokio::time::sleep` would panic under
//! this blocking executor at the first retry. [`renew::Renewer`] renews a lease until it is
//! stopped or the lease is lost, from one scheduler thread for every lease of the process.
//!
//! # Layout
//!
//! | Module | Concern |
//! |---|---|
//! | `log` | the batch object format, [`LogReader`](log::LogReader) (replay and tailing), the conditional create every batch goes through |
//! | `writer` | [`Writer`](writer::Writer): group commit, ambiguous PUTs, the fence at open, truncation; the [`Authority`](writer::Authority) it writes under |
//! | `lease` | [`Contender`](lease::Contender) and [`Lease`](lease::Lease): the lease object, acquisition, takeover, renewal, release |
//! | `renew` | [`Renewer`](renew::Renewer): one process-wide schedule renewing every held lease on time, a round's PUTs side by side |
//! | `clock` | [`Clock`]: the monotonic clock leases are timed with, and a fake one for tests |
//! | `faulty` | (tests) a fault-injecting `ObjectStore`: fail, delay, hold, apply-then-error, call counters, the paths deleted |

use std::{
    collections::HashMap,
    fmt,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutPayload, UpdateVersion, path::Path as ObjectPath,
};

use crate::{
    Error, ErrorCode,
    store_io::{put_replacing, wait},
};

pub(crate) mod clock;
#[cfg(test)]
pub(crate) mod faulty;
pub(crate) mod lease;
pub(crate) mod log;
pub(crate) mod renew;
pub(crate) mod writer;

use clock::{Clock, MonotonicClock};
use lease::{Attempt, Contender, Lease, LeaseConfig};
use writer::LogConfig;

/// How the indexes of an engine on a shared store write their object logs: the writer
/// lease's timing and the size of a group-commit batch (`Engine::with_object_log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLogConfig {
    /// The writer lease's time to live (default 10 s; the data plane's `--lease-ttl-secs`).
    /// A successor takes an index over this long after its writer stopped renewing (at
    /// once after a release); the writer stops acknowledging a quarter of it earlier.
    pub lease_ttl: Duration,
    /// At most this many bytes of records go into one `wal/<seq>` object (default 8 MiB;
    /// the data plane's `--wal-batch-max-mb`); a larger record makes a batch alone.
    pub max_batch_bytes: usize,
    /// Names this process in every lease it holds (e.g. the pod name); a random suffix
    /// makes each process a different holder. Default `larch`.
    pub holder: String,
    /// Where this process takes writes that followers forward (e.g. `http://10.1.2.3:50051`),
    /// written into every lease it holds; empty: followers cannot forward (default).
    pub address: String,
    /// How often a follower looks for new batches of the log it tails while batches keep
    /// coming (default 100 ms; the data plane's `--tail-interval-ms`); it backs off up to
    /// eight times this while the log is idle.
    pub tail_interval: Duration,
}

impl Default for ObjectLogConfig {
    fn default() -> Self {
        ObjectLogConfig {
            lease_ttl: Duration::from_secs(10),
            max_batch_bytes: LogConfig::default().max_batch_bytes,
            holder: "larch".to_owned(),
            address: String::new(),
            tail_interval: Duration::from_millis(100),
        }
    }
}

/// How often [`LogSetup::acquire`] looks at a lease held by someone else before it gives
/// up, and the pause between looks: a holder handing the index over (a rolling restart,
/// an index dropped moments ago by a thread that still finishes with it) releases it
/// within moments, and waiting a second beats failing the open.
const HELD_LOOKS: u32 = 20;
const HELD_PAUSE: Duration = Duration::from_millis(50);

/// What an engine on a shared store needs to open its indexes' object logs: the
/// configuration, the clock leases are timed with, and the contenders for leases that
/// another process holds (kept between open attempts, so that a lease seen unchanged for a
/// full TTL is taken over at a later attempt).
#[derive(Debug, Clone)]
pub(crate) struct LogSetup {
    config: ObjectLogConfig,
    clock: Arc<dyn Clock>,
    contenders: Arc<Mutex<HashMap<String, Contender>>>,
}

impl Default for LogSetup {
    fn default() -> Self {
        LogSetup::new(ObjectLogConfig::default())
    }
}

impl LogSetup {
    pub(crate) fn new(config: ObjectLogConfig) -> Self {
        LogSetup {
            config,
            clock: Arc::new(MonotonicClock::default()),
            contenders: Arc::default(),
        }
    }

    /// The same, with leases timed by `clock` (tests move a fake one).
    #[cfg(test)]
    pub(crate) fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self.contenders = Arc::default();
        self
    }

    /// How the writer of an index's log batches and retries.
    pub(crate) fn writer_config(&self) -> LogConfig {
        LogConfig {
            max_batch_bytes: self.config.max_batch_bytes,
            ..LogConfig::default()
        }
    }

    /// Takes the writer lease of index `name`, whose objects are `bucket`: at once if it
    /// is free or released (looking again for about a second while it is held), or once
    /// this process has seen it unchanged for a full TTL (over several calls). Otherwise
    /// [`Taken::Held`]: another live process writes the index.
    pub(crate) fn acquire(&self, name: &str, bucket: &Bucket) -> Result<Taken, Error> {
        self.contend(name, bucket, HELD_LOOKS)
    }

    /// One look at the lease of index `name` by a follower (see `index/follow.rs`): takes it
    /// if it is released, or was seen unchanged (or missing) for a full TTL over earlier
    /// looks; a writer that renews is never taken over.
    pub(crate) fn try_take(&self, name: &str, bucket: &Bucket) -> Result<Taken, Error> {
        self.contend(name, bucket, 1)
    }

    fn contend(&self, name: &str, bucket: &Bucket, looks: u32) -> Result<Taken, Error> {
        let patient = looks == 1;
        let mut contenders = self.contenders.lock().map_err(|_| {
            Error::Internal("the lease contenders are unusable after an earlier panic".to_owned())
        })?;
        let contender = match contenders.entry(name.to_owned()) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(
                Contender::new(
                    bucket.clone(),
                    &self.config.holder,
                    LeaseConfig::new(self.config.lease_ttl),
                    Arc::clone(&self.clock),
                )?
                .with_address(&self.config.address),
            ),
        };
        if patient {
            contender.patient_when_missing();
        }
        let mut looked = 0;
        let attempt = loop {
            looked += 1;
            match contender.try_acquire()? {
                Attempt::Held { .. } if looked < looks => {
                    std::thread::sleep(HELD_PAUSE);
                }
                attempt => break attempt,
            }
        };
        Ok(match attempt {
            Attempt::Acquired(lease) => {
                contenders.remove(name);
                Taken::Lease(Arc::new(*lease))
            }
            Attempt::Held { holder, .. } => Taken::Held { holder },
        })
    }

    /// The writer lease's time to live.
    pub(crate) fn lease_ttl(&self) -> Duration {
        self.config.lease_ttl
    }

    /// Now, on the clock leases are timed with.
    pub(crate) fn now(&self) -> Duration {
        self.clock.now()
    }

    /// Where this process takes forwarded writes (see [`ObjectLogConfig::address`]).
    pub(crate) fn address(&self) -> &str {
        &self.config.address
    }

    /// How often a follower looks for new log batches while they keep coming (see
    /// [`ObjectLogConfig::tail_interval`]).
    pub(crate) fn tail_interval(&self) -> Duration {
        self.config.tail_interval
    }
}

/// What a look at an index's writer lease came to.
#[derive(Debug)]
pub(crate) enum Taken {
    /// This process holds the lease now: it writes the index.
    Lease(Arc<Lease>),
    /// Another process holds it (`holder`; empty if unknown).
    Held { holder: String },
}

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
    /// Set once a conditional replace fell back to an overwrite (see [`Bucket::put`]), so
    /// that is logged once.
    overwrites: Arc<std::sync::atomic::AtomicBool>,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.store, self.prefix)
    }
}

/// An object read back with the version a conditional write must name.
#[derive(Debug)]
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
            overwrites: Arc::default(),
        }
    }

    /// Where batch `seq` is, for messages and [`Error::Corrupt`].
    pub(crate) fn wal_location(&self, seq: u64) -> PathBuf {
        PathBuf::from(self.wal(seq).to_string())
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
        wait(self.fetch(path))
    }

    /// The objects at `paths`, asked for all at once (their requests overlap on a store
    /// with a network in between), each answer in the order of `paths`.
    fn get_many(&self, paths: &[ObjectPath]) -> Vec<Result<Option<Fetched>, object_store::Error>> {
        wait(futures_util::future::join_all(
            paths.iter().map(|path| self.fetch(path)),
        ))
    }

    async fn fetch(&self, path: &ObjectPath) -> Result<Option<Fetched>, object_store::Error> {
        let fetched = async {
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
        };
        match fetched.await {
            Ok(fetched) => Ok(Some(fetched)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Puts `payload` at `path` with `mode`. A store that creates conditionally but cannot
    /// replace conditionally (`LocalFileSystem`, a shared directory) gets an overwrite
    /// instead of an `If-Match` replace, logged once (see [`put_replacing`]): the lease then
    /// cannot keep two processes from both believing they hold it, but every log batch is
    /// still created conditionally, so the fence still stops a second writer before it
    /// acknowledges anything that is not in the log.
    fn put(
        &self,
        path: &ObjectPath,
        payload: PutPayload,
        mode: PutMode,
    ) -> Result<UpdateVersion, object_store::Error> {
        put_replacing(&*self.store, path, payload, mode, &self.overwrites, || {
            tracing::warn!(store = %self.store, object = %path, "the object store cannot replace an object conditionally; the lease is overwritten, so only the log's fence tells two writers of this index apart");
        })
        .map(UpdateVersion::from)
    }

    /// Deletes `path`; a missing object is not an error.
    fn delete(&self, path: &ObjectPath) -> Result<(), object_store::Error> {
        match wait(self.store.delete(path)) {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// The log objects present, ascending: sequence number and size.
    fn list_wal(&self) -> Result<Vec<(u64, u64)>, object_store::Error> {
        let dir = self.wal_dir();
        let mut found = Vec::new();
        for meta in futures_executor::block_on_stream(self.store.list(Some(&dir))) {
            let meta = meta?;
            // Anything that is not `wal/<digits>` is not ours to touch.
            let seq = meta.location.prefix_match(&dir).and_then(|mut parts| {
                match (parts.next(), parts.next()) {
                    (Some(name), None) => name.as_ref().parse::<u64>().ok(),
                    _ => None,
                }
            });
            found.extend(seq.map(|seq| (seq, meta.size)));
        }
        found.sort_unstable();
        Ok(found)
    }
}

/// An `object_store` failure as a [`LogError::Unavailable`] while doing `what`.
fn unavailable(what: impl fmt::Display, err: &object_store::Error) -> LogError {
    LogError::Unavailable(format!("{what}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_the_writer_is_unavailable_and_damage_is_internal() {
        let fenced = LogError::Fenced {
            seq: 7,
            epoch: 1,
            by_epoch: 2,
        };
        assert!(fenced.is_not_writer());
        let err = Error::from(fenced);
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert_eq!(
            err.to_string(),
            "not the writer: wal/00000000000000000007 belongs to writer epoch 2, this writer has epoch 1"
        );
        let lost = LogError::NotWriter {
            reason: "the lease was released".into(),
        };
        assert_eq!(Error::from(lost).code(), ErrorCode::Unavailable);
        let unknown = LogError::Unavailable("outcome unknown".into());
        assert!(!unknown.is_not_writer());
        assert_eq!(Error::from(unknown).code(), ErrorCode::Unavailable);
        let corrupt = LogError::corrupt(&ObjectPath::from("i/wal/1"), 12, "checksum mismatch");
        let err = Error::from(corrupt);
        assert_eq!(err.code(), ErrorCode::Internal);
        assert_eq!(
            err.to_string(),
            "corrupt data in i/wal/1: at byte 12: checksum mismatch"
        );
    }
}
