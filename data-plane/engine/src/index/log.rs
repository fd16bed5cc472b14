//! The log of a durable index ([`IndexLog`]): the one seam between an index and where its
//! changes become durable before they are applied.
//!
//! - **Local** (an index directory, the default): the write-ahead log files of `wal`,
//!   appended with `fdatasync` and group commit. A change's LSN is its record's number.
//! - **Object** (an engine on a shared store, `Engine::open_on_store`): the object log of
//!   `objlog`, written under the index's writer lease. A change is acknowledged once its
//!   group-commit batch is stored as `<index prefix>/wal/<seq>` (a conditional create);
//!   there is no local file at all, so a process with an empty local directory recovers
//!   every acknowledged change from the bucket. A change's LSN is the sequence number of
//!   its batch: changes of one batch share it, and it only grows (a new writer fences the
//!   log after the last batch, so its numbers continue above every earlier one).
//!
//! Both are used the same way by the index (see `index/durable.rs`): a change is appended
//! while its namespace is write-locked and the flush gate is held shared, and applied only
//! once the append returned; a flush cuts the log with the gate held exclusively. So every
//! record before the cut is in the memtable being flushed, and every later one is replayed.
//! In object mode the cut is the writer's next sequence number: with the gate held no
//! append is in flight, so every batch below it is stored and applied. The manifest then
//! says replay starts there, and after the swap the writer deletes the batches below the
//! previous manifest's start (never a fence; `Writer::delete_before`), leaving followers a flush
//! interval to read them. A **follower** (`index/follow.rs`) has no writer: it refuses every
//! change and takes part in no flush. A batch that was stored but not acknowledged
//! (the lease lapsed during its create) is never below a cut: the writer stops at that
//! batch, its next sequence number does not pass it, and the next writer replays it.
//!
//! A writer that was fenced, lost its lease or met an unknown outcome refuses every later
//! change with `UNAVAILABLE` ("not the writer", or the store's failure) and takes part in
//! no flush; the index must be opened again (by this process or another) to write.
//! Releasing the log (dropping the index or the engine, `Engine::drop_index`) stops the
//! lease's renewal and marks the lease released, so a successor takes over at once.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use super::Follower;
use crate::{
    Error, Result,
    flush::ActiveLog,
    objlog::{
        LogError,
        lease::Lease,
        renew::Renewer,
        writer::{Authority, Writer},
    },
    wal::{self, Wal},
};

/// An index in a shared store flushes once this many batches were stored since its last cut
/// (see [`IndexLog::wants_flush`]).
pub(crate) const BATCHES_PER_FLUSH: u64 = 512;

/// Where a durable index's changes are logged before they are applied (see the module docs).
pub(crate) enum IndexLog {
    /// Log files in the index directory `dir`.
    Local { wal: Wal, dir: PathBuf },
    /// Batch objects in a shared store, under the index's writer lease.
    Object(ObjectLog),
    /// Batch objects in a shared store another process writes: read, never written (see
    /// `index/follow.rs`).
    Follower(Follower),
}

impl IndexLog {
    /// The log files of the index directory `dir`, appended through `wal`.
    pub(crate) fn local(wal: Wal, dir: &Path) -> Self {
        IndexLog::Local {
            wal,
            dir: dir.to_owned(),
        }
    }

    /// Appends one encoded change (see `codec`) and returns its LSN once it is durable.
    pub(crate) fn append(&self, payload: &[u8]) -> Result<u64> {
        match self {
            IndexLog::Local { wal, .. } => wal.append(payload),
            IndexLog::Object(log) => log.append(payload),
            IndexLog::Follower(follower) => Err(follower.refusal()),
        }
    }

    /// The LSN of the last change logged (see `Index::last_lsn`).
    pub(crate) fn last_lsn(&self) -> u64 {
        match self {
            IndexLog::Local { wal, .. } => wal.last_lsn(),
            IndexLog::Object(log) => log.writer.last_stored(),
            IndexLog::Follower(follower) => follower.applied(),
        }
    }

    /// What the flush threshold counts: the active file's bytes (header included), or the
    /// bytes of records logged since the last cut.
    pub(crate) fn len(&self) -> u64 {
        match self {
            IndexLog::Local { wal, .. } => wal.len(),
            IndexLog::Object(log) => log.bytes.load(Ordering::Acquire),
            IndexLog::Follower(_) => 0,
        }
    }

    /// Whether the log has grown enough since the last cut to flush: `wal_bytes` of records,
    /// or, in a shared store, [`BATCHES_PER_FLUSH`] batch objects — every follower and every
    /// new writer replays them one GET each, so their number is bounded too.
    pub(crate) fn wants_flush(&self, wal_bytes: u64) -> bool {
        let batches = match self {
            IndexLog::Object(log) => {
                (log.writer.last_stored() + 1).saturating_sub(log.cut_start.load(Ordering::Acquire))
            }
            IndexLog::Local { .. } | IndexLog::Follower(_) => 0,
        };
        self.len() >= wal_bytes || batches >= BATCHES_PER_FLUSH
    }

    /// Bytes of records logged since the last cut.
    pub(crate) fn record_bytes(&self) -> u64 {
        match self {
            IndexLog::Local { wal, .. } => wal.len().saturating_sub(wal::HEADER_LEN),
            IndexLog::Object(log) => log.bytes.load(Ordering::Acquire),
            IndexLog::Follower(_) => 0,
        }
    }

    /// Whether nothing was logged since the last cut.
    pub(crate) fn is_empty(&self) -> bool {
        self.record_bytes() == 0
    }

    /// Where replay of the changes since the last cut starts: the active file's number, or
    /// the sequence number of the first batch after the last cut.
    pub(crate) fn number(&self) -> u64 {
        match self {
            IndexLog::Local { wal, .. } => wal.number(),
            IndexLog::Object(log) => log.cut_start.load(Ordering::Acquire),
            IndexLog::Follower(follower) => follower.applied() + 1,
        }
    }

    /// Cuts the log: what is logged from now on is replayed from the returned number (a new
    /// log file, or the writer's next sequence number). Called with the flush gate held
    /// exclusively, so no append is in flight.
    pub(crate) fn rotate(&self) -> Result<u64> {
        match self {
            IndexLog::Local { wal, .. } => wal.rotate(),
            IndexLog::Object(log) => log.rotate(),
            IndexLog::Follower(follower) => Err(follower.refusal()),
        }
    }

    /// Where the log stands, for the storage figures.
    pub(crate) fn active(&self) -> ActiveLog {
        match self {
            IndexLog::Local { wal, .. } => ActiveLog {
                last: wal.number(),
                bytes: wal.len(),
            },
            IndexLog::Object(log) => ActiveLog {
                last: log.writer.last_stored(),
                bytes: log.bytes.load(Ordering::Acquire),
            },
            IndexLog::Follower(follower) => ActiveLog {
                last: follower.applied(),
                bytes: 0,
            },
        }
    }

    /// Whether this log may be cut and flushed: an object log whose writer stopped (fenced,
    /// lease lost, outcome unknown) may not, since a newer writer may own the index.
    pub(crate) fn check_writable(&self, index: &str) -> Result<()> {
        self.writer_holds(index, Lease::check)
    }

    /// Proves with the store that this process still writes the index (an object log renews
    /// its lease): called before a flush, so that a writer that lost the index without
    /// noticing yet (its clock says the lease holds) does not swap a manifest under its
    /// successor. Nothing for a local log.
    pub(crate) fn confirm_writer(&self, index: &str) -> Result<()> {
        self.writer_holds(index, Lease::confirm)
    }

    /// A local log always writes; an object log while its writer has not stopped and
    /// `lease_holds` (a check by the clock, or a renewal) says so.
    fn writer_holds(
        &self,
        index: &str,
        lease_holds: fn(&Lease) -> std::result::Result<(), LogError>,
    ) -> Result<()> {
        let log = match self {
            IndexLog::Local { .. } => return Ok(()),
            IndexLog::Follower(follower) => return Err(follower.refusal()),
            IndexLog::Object(log) => log,
        };
        match log.writer.failure() {
            Some(err) => Err(refused(index, err)),
            None => lease_holds(&log.lease).map_err(|err| refused(index, err)),
        }
    }

    /// A durable manifest starts replay at `start`: deletes the log below it (best effort;
    /// what is left is deleted by a later flush or at the next start). In a shared store, the
    /// batches below the *previous* manifest's start: followers tailing the log get a flush
    /// interval of grace, and one that falls further behind opens the index afresh.
    pub(crate) fn remove_before(&self, index: &str, start: u64) {
        match self {
            IndexLog::Local { dir, .. } => {
                if let Err(err) = wal::remove_before(dir, start) {
                    tracing::warn!(index = %index, error = %err, "cannot delete write-ahead log files that segments cover; they are deleted at the next start");
                }
            }
            IndexLog::Object(log) => match log
                .writer
                .delete_before(log.truncate_below.swap(start, Ordering::AcqRel))
            {
                Ok(deleted) => {
                    tracing::debug!(index = %index, start, deleted, "deleted log batches the manifest before the last one covers");
                }
                Err(err) => {
                    tracing::warn!(index = %index, start, error = %err, "cannot delete log batches the manifest covers; a later flush deletes them");
                }
            },
            // The writer deletes.
            IndexLog::Follower(_) => {}
        }
    }

    /// Whether this is an object log whose writer stopped for good: fenced, its lease lost
    /// or released, or an append's outcome unknown. The index must be opened again to be
    /// written (or followed) from here (see `Engine::follow_round`).
    pub(crate) fn writer_stopped(&self) -> bool {
        match self {
            IndexLog::Object(log) => log.writer.failure().is_some() || log.lease.is_lost(),
            IndexLog::Local { .. } | IndexLog::Follower(_) => false,
        }
    }

    /// Stops writing for good and lets a successor take over at once (see [`ObjectLog::release`]);
    /// nothing for a local log.
    pub(crate) fn release(&self) {
        if let IndexLog::Object(log) = self {
            log.release();
        }
    }
}

/// A change refused by the object log of `index`: not the writer, or the store failed.
fn refused(index: &str, err: LogError) -> Error {
    match Error::from(err) {
        Error::Storage { code, message } => Error::Storage {
            code,
            message: format!("index '{index}' refuses writes: {message}"),
        },
        other => other,
    }
}

/// The object log of an index on a shared store, as its writer: the `Writer` (fenced at
/// open), the lease it writes under and the thread renewing it.
pub(crate) struct ObjectLog {
    index: String,
    writer: Writer,
    lease: Arc<Lease>,
    /// `None` once released.
    renewer: Mutex<Option<Renewer>>,
    /// The sequence number of the first batch after the last cut.
    cut_start: AtomicU64,
    /// Where the manifest before the last one started replay: the batches below it are
    /// deleted at the next flush, not the one that covered them, so a follower that has
    /// not read them yet gets one flush interval to do so (see `remove_before`).
    truncate_below: AtomicU64,
    /// Bytes of records appended (or replayed) since the last cut.
    bytes: AtomicU64,
}

impl ObjectLog {
    /// Starts renewing `lease`, just taken for `index`, so that it stays held however long
    /// the open (loading, replay, fence) takes; on failure the lease is released.
    pub(crate) fn renew(index: &str, lease: &Arc<Lease>) -> Result<Renewer> {
        Renewer::start(Arc::clone(lease)).map_err(|err| {
            // As after a failed open: let the next attempt take the lease at once.
            if let Err(release) = lease.release() {
                tracing::warn!(index = %index, error = %release, "cannot release the writer lease after a failed open");
            }
            Error::storage(
                format!("cannot start renewing the writer lease of index '{index}'"),
                &err,
            )
        })
    }

    /// The log of `index` written by `writer` under `lease`, which `renewer` renews.
    /// `cut_start`: where the manifest says replay starts; `replayed`: the bytes of records
    /// replayed from there (not flushed yet).
    pub(crate) fn start(
        index: &str,
        writer: Writer,
        lease: Arc<Lease>,
        renewer: Renewer,
        cut_start: u64,
        replayed: u64,
    ) -> Self {
        ObjectLog {
            index: index.to_owned(),
            writer,
            lease,
            renewer: Mutex::new(Some(renewer)),
            cut_start: AtomicU64::new(cut_start),
            truncate_below: AtomicU64::new(cut_start),
            bytes: AtomicU64::new(replayed),
        }
    }

    fn append(&self, payload: &[u8]) -> Result<u64> {
        let seq = self
            .writer
            .append(payload.to_vec())
            .map_err(|err| refused(&self.index, err))?;
        self.bytes.fetch_add(payload.len() as u64, Ordering::AcqRel);
        Ok(seq)
    }

    fn rotate(&self) -> Result<u64> {
        let next = self
            .writer
            .next_seq()
            .map_err(|err| refused(&self.index, err))?;
        self.cut_start.store(next, Ordering::Release);
        self.bytes.store(0, Ordering::Release);
        Ok(next)
    }

    /// Stops renewing the lease and marks it released (once): this process writes no more,
    /// and a successor need not wait for the lease to expire.
    fn release(&self) {
        let renewer = self
            .renewer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(renewer) = renewer else {
            return;
        };
        renewer.stop();
        match self.lease.release() {
            Ok(()) => {
                tracing::info!(index = %self.index, epoch = self.lease.epoch(), "released the writer lease");
            }
            // Lost or released already: nothing to hand over.
            Err(err) if err.is_not_writer() => {}
            Err(err) => {
                tracing::warn!(index = %self.index, error = %err, "cannot release the writer lease; a successor takes over once it expires");
            }
        }
    }
}

impl Drop for ObjectLog {
    fn drop(&mut self) {
        self.release();
    }
}
