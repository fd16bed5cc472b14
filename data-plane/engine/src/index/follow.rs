//! An index this process follows rather than writes ([`Follower`]): on a shared store, every
//! process but the one holding an index's writer lease opens the index as a follower. It loads
//! the segments the manifest lists, replays the object log from the manifest's start, and
//! from then on tails the log (`Index::catch_up`, called by the engine's follower thread and
//! by a request that must see a write forwarded to the writer), applying each batch as the
//! writer did. It serves every read; it refuses every change ("not the writer": the data plane
//! forwards writes to the address the lease names, see [`Follower::writer`]), never flushes,
//! never saves a graph file and never deletes an object.
//!
//! A follower applies batches in log order, each whole, so it always shows a state the writer
//! had: a prefix of the log. Its LSN ([`Index::last_lsn`]) is the sequence number of the last
//! batch applied, the writer's numbering, so `applied >= lsn` of a write's answer means the
//! write is visible here.
//!
//! When the batch it needs next is gone (the writer flushed and deleted the log below its new
//! manifest's start, which this follower had not read yet), the follower cannot go on from
//! the log: `catch_up` says [`CatchUp::Reload`] and the engine opens the index afresh from the
//! new manifest. The engine also opens it afresh as the writer when the lease is released or
//! has not been renewed for a full TTL (`LogSetup::try_take`): that is how a follower takes an
//! index over from a writer that stopped.

use std::{
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::Index;
use crate::{
    Error, ErrorCode, Result,
    codec::{LogEntry, LogRecord},
    locks::{lock, write_lock},
    manifest::{self, Manifest},
    objlog::{
        Bucket,
        lease::{self, Holder},
        log::{Batch, LogReader},
    },
    record::WriteOp,
    storage::Storage,
};

/// At most this many batches are applied per `catch_up` call, so one busy index does not
/// hold up the follower thread's round of the others.
const BATCHES_PER_CALL: usize = 256;

/// The log of an index this process follows (see the module docs).
pub(crate) struct Follower {
    index: String,
    bucket: Bucket,
    storage: Arc<dyn Storage>,
    /// Where the next batch is read; the lock also makes one caller at a time apply.
    reader: Mutex<LogReader>,
    /// The sequence number of the last batch applied (the index's LSN).
    applied: AtomicU64,
    /// When the last `catch_up` found the end of the log.
    caught_up: Mutex<Instant>,
    /// The writer as the lease last named it, and when it was read.
    writer: RwLock<Option<(Holder, Instant)>>,
    /// When the manifest was last read to tell the end of the log from a truncated batch.
    manifest_read: Mutex<Option<Instant>>,
    /// Set once the batch needed next was found deleted: this follower must be reopened.
    behind: std::sync::atomic::AtomicBool,
    /// When (the lease clock) the engine last looked at the lease to take the index over.
    lease_looked: Mutex<Option<Duration>>,
}

/// How often a follower at the end of the log reads the manifest to see whether the batch it
/// waits for was flushed and deleted (see `Index::catch_up`): each idle look costs a GET, so
/// a follower that fell behind a truncation may go on waiting this long before it reloads.
const MANIFEST_EVERY: Duration = Duration::from_secs(2);

/// How long the writer a follower read from the lease is trusted for forwarding without
/// reading the lease again (a failed forward forgets it at once).
const WRITER_CACHE: Duration = Duration::from_secs(1);

/// What one [`Index::catch_up`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Not a follower: nothing to do.
    NotFollowing,
    /// Applied this many batches and reached the end of the log.
    AtEnd(usize),
    /// Applied this many batches; more are there.
    More(usize),
    /// The next batch was deleted (the writer flushed past it): open the index afresh.
    Reload,
}

/// How far a follower is (see [`Index::follower_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerStatus {
    /// The sequence number of the last log batch applied.
    pub applied_seq: u64,
    /// How long ago the follower last found the end of the log (its staleness bound).
    pub caught_up_ago: Duration,
    /// The writer's holder id as the lease last named it (empty if unknown).
    pub writer: String,
}

impl Follower {
    /// The log of `index` in `bucket`, whose batches up to `applied` are applied; reading
    /// goes on from `reader`.
    pub(crate) fn new(
        index: &str,
        bucket: Bucket,
        storage: Arc<dyn Storage>,
        reader: LogReader,
        applied: u64,
    ) -> Self {
        Follower {
            index: index.to_owned(),
            bucket,
            storage,
            reader: Mutex::new(reader),
            applied: AtomicU64::new(applied),
            caught_up: Mutex::new(Instant::now()),
            writer: RwLock::new(None),
            manifest_read: Mutex::new(None),
            behind: std::sync::atomic::AtomicBool::new(false),
            lease_looked: Mutex::new(None),
        }
    }

    pub(crate) fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The refusal of a change on this follower.
    pub(crate) fn refusal(&self) -> Error {
        let writer = self
            .writer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or_else(|| "another process".to_owned(), |(w, _)| w.holder.clone());
        Error::Storage {
            code: ErrorCode::Unavailable,
            message: format!(
                "not the writer: index '{}' is written by {writer}; this process follows it",
                self.index
            ),
        }
    }

    /// The writer as the lease names it: as read less than [`WRITER_CACHE`] ago, else read
    /// from the store now.
    pub(crate) fn writer(&self) -> Result<Option<Holder>> {
        if let Some((holder, read)) = &*self.writer.read().unwrap_or_else(PoisonError::into_inner)
            && read.elapsed() < WRITER_CACHE
        {
            return Ok(Some(holder.clone()));
        }
        let found = lease::read(&self.bucket).map_err(Error::from)?;
        *self.writer.write().unwrap_or_else(PoisonError::into_inner) =
            found.clone().map(|holder| (holder, Instant::now()));
        Ok(found)
    }

    /// Forgets the writer read from the lease (forwarding to it failed).
    pub(crate) fn forget_writer(&self) {
        *self.writer.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn status(&self) -> FollowerStatus {
        let writer = self
            .writer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        FollowerStatus {
            applied_seq: self.applied(),
            caught_up_ago: self
                .caught_up
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .elapsed(),
            writer: writer.map(|(w, _)| w.holder).unwrap_or_default(),
        }
    }

    /// Whether `every` has passed since `last` (then marked now), or it was never marked.
    fn due(last: &Mutex<Option<Instant>>, every: Duration) -> bool {
        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Whether the manifest now starts replay after `next`: the batches from `next` on were
    /// flushed, and some of them may be deleted. Reads the manifest at most every
    /// [`MANIFEST_EVERY`] (`false` in between).
    fn flushed_past(&self, next: u64) -> Result<bool> {
        if !Follower::due(&self.manifest_read, MANIFEST_EVERY) {
            return Ok(false);
        }
        let location = self.storage.location(manifest::PATH);
        let Some((bytes, _)) = self
            .storage
            .get_manifest(manifest::PATH)
            .map_err(|err| err.into_error(format!("cannot read {}", location.display())))?
        else {
            return Ok(false);
        };
        let manifest = Manifest::decode(&bytes)
            .map_err(|(offset, reason)| Error::corrupt(&location, offset, reason))?;
        Ok(manifest.wal_start > next)
    }
}

impl Index {
    /// Applies the log batches the writer stored since the last call, if this index is
    /// followed here (see the module docs); at most a few hundred per call.
    pub fn catch_up(&self) -> Result<CatchUp> {
        let Some(follower) = self.follower() else {
            return Ok(CatchUp::NotFollowing);
        };
        if follower.behind.load(Ordering::Acquire) {
            return Ok(CatchUp::Reload);
        }
        let mut reader = lock(&follower.reader)?;
        let mut applied = 0;
        while applied < BATCHES_PER_CALL {
            let next = reader.next_seq();
            let Some(batch) = reader.next_batch().map_err(Error::from)? else {
                if follower.flushed_past(next)? {
                    follower.behind.store(true, Ordering::Release);
                    return Ok(CatchUp::Reload);
                }
                *follower
                    .caught_up
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Instant::now();
                return Ok(CatchUp::AtEnd(applied));
            };
            self.apply_batch(&batch)?;
            follower.applied.store(batch.seq, Ordering::Release);
            applied += 1;
        }
        Ok(CatchUp::More(applied))
    }

    /// Catches up until the batch `seq` is applied, or `timeout` passed (`UNAVAILABLE`):
    /// a follower that forwarded a write answers only once the write is visible here.
    pub fn wait_applied(&self, seq: u64, timeout: Duration) -> Result<()> {
        let Some(follower) = self.follower() else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        while follower.applied() < seq {
            match self.catch_up()? {
                CatchUp::Reload => {
                    return Err(Error::Storage {
                        code: ErrorCode::Unavailable,
                        message: format!(
                            "index '{}' is being reloaded on this follower; retry the read",
                            self.name
                        ),
                    });
                }
                CatchUp::More(_) => continue,
                CatchUp::AtEnd(_) | CatchUp::NotFollowing => {}
            }
            if follower.applied() >= seq {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Storage {
                    code: ErrorCode::Unavailable,
                    message: format!(
                        "the write (log batch {seq}) is stored but this follower of index '{}' has applied only up to batch {} after {timeout:?}; it shows up shortly",
                        self.name,
                        follower.applied()
                    ),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Whether this process follows the index (another process writes it): a cheap check for
    /// every write request (see [`Index::follower_status`] for the figures).
    pub fn is_followed(&self) -> bool {
        self.follower().is_some()
    }

    /// How far this follower is; `None` if this process writes the index (or it is local).
    pub fn follower_status(&self) -> Option<FollowerStatus> {
        self.follower().map(Follower::status)
    }

    /// The writer of a followed index as its lease names it (read from the store at most
    /// about once a second), for forwarding a write; `None` if this index is not followed here,
    /// has no lease, or its writer released it.
    pub fn writer_address(&self) -> Result<Option<String>> {
        match self.follower() {
            None => Ok(None),
            Some(follower) => Ok(follower
                .writer()?
                .filter(|holder| !holder.released && !holder.address.is_empty())
                .map(|holder| holder.address)),
        }
    }

    /// Whether this process wrote the index from a shared store and stopped for good (see
    /// `IndexLog::writer_stopped`).
    pub(crate) fn writer_stopped(&self) -> bool {
        self.durable
            .as_ref()
            .is_some_and(|durable| durable.log.writer_stopped())
    }

    /// Whether the engine's follower round should look at this followed index's lease at
    /// `now` (the lease clock): at most every `every` (a GET each time).
    pub(crate) fn lease_look_due(&self, now: Duration, every: Duration) -> bool {
        let Some(follower) = self.follower() else {
            return false;
        };
        let mut last = follower
            .lease_looked
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| now.saturating_sub(at) < every) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Forgets the writer address [`Index::writer_address`] gave (forwarding to it failed),
    /// so the next one is read from the lease.
    pub fn forget_writer(&self) {
        if let Some(follower) = self.follower() {
            follower.forget_writer();
        }
    }

    pub(crate) fn follower(&self) -> Option<&Follower> {
        match &self.durable.as_ref()?.log {
            super::IndexLog::Follower(follower) => Some(follower),
            _ => None,
        }
    }

    /// Applies every record of `batch` (a fence has none), as the writer applied them.
    fn apply_batch(&self, batch: &Batch) -> Result<()> {
        let Some(follower) = self.follower() else {
            return Ok(());
        };
        let dimension = self.config.dimension.len();
        batch.apply_records(&follower.bucket, dimension, |record| {
            self.apply_followed(record)
        })?;
        Ok(())
    }

    /// Applies one change the writer logged (see `dir::apply`, the same for replay at open).
    fn apply_followed(&self, LogRecord { namespace, entry }: LogRecord) -> Result<()> {
        match entry {
            LogEntry::CreateNamespace { schema_fields } => {
                let mut namespaces = write_lock(&self.namespaces)?;
                if namespaces.contains_key(&namespace) {
                    return Err(Error::Internal(format!(
                        "namespace '{}' is created but already exists",
                        namespace.label()
                    )));
                }
                let store = self.new_store(schema_fields);
                namespaces.insert(namespace, Arc::new(RwLock::new(store)));
            }
            LogEntry::DeleteNamespace => {
                let mut namespaces = write_lock(&self.namespaces)?;
                let Some(shared) = namespaces.remove(&namespace) else {
                    return Err(Error::Internal(format!(
                        "namespace '{}' is deleted but does not exist",
                        namespace.label()
                    )));
                };
                drop(namespaces);
                write_lock(&shared)?.mark_dropped();
            }
            LogEntry::Write(op) => {
                let shared = {
                    let mut namespaces = write_lock(&self.namespaces)?;
                    match namespaces.get(&namespace) {
                        Some(shared) => Arc::clone(shared),
                        // An upsert creates its namespace.
                        None if matches!(op, WriteOp::Upsert(_)) => {
                            let shared = Arc::new(RwLock::new(self.new_store(None)));
                            namespaces.insert(namespace.clone(), Arc::clone(&shared));
                            shared
                        }
                        None => {
                            return Err(Error::Internal(format!(
                                "a change of namespace '{}', which does not exist",
                                namespace.label()
                            )));
                        }
                    }
                };
                let mut store = write_lock(&shared)?;
                self.apply(&mut store, op);
            }
        }
        Ok(())
    }
}
