//! [`Wal`]: appending records with group commit (writers share one `fdatasync`), the
//! poisoning after a failed sync, and rotation to the next log file.
//!
//! # Log sequence numbers
//!
//! Every record gets a log sequence number (LSN) once its batch is durable: the LSN of the
//! record before it plus one, in log order, across log files. Only records of a batch that
//! was written and synced are numbered (a failed batch, cut off the file again, takes none),
//! so the records in the files are exactly the numbered ones, in order: recovery numbers them
//! again by counting from the manifest's LSN (that of the last record before the manifest's
//! first log file) and resumes with [`Wal::after_lsn`]. An index's LSNs therefore only grow,
//! across rotations, flushes and restarts, and an acknowledged write's LSN is never given
//! to another record.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::{
        Condvar, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use super::{
    file::{LogFile, create_or_reuse_file, file_name, open_append, sync_dir},
    frame::{HEADER_LEN, push_frame},
};
use crate::{
    Error, ErrorCode, Result,
    error::storage_failure,
    limits,
    timing::{self, Timer},
};

/// The outcome of a finished batch, for the writers whose records were in it.
struct Outcome {
    /// The LSN of the batch's first record, or why the batch failed.
    first_lsn: std::result::Result<u64, (ErrorCode, String)>,
    /// Writers of the batch that have not collected the outcome yet.
    unread: usize,
}

/// Group-commit state, under `Wal::commit`.
struct Commit {
    /// Framed records waiting for the next leader.
    pending: Vec<u8>,
    /// Records in `pending`.
    pending_records: usize,
    /// Number of the batch `pending` will become; batches are numbered from 1.
    open_batch: u64,
    /// Every batch up to this number has been written and synced, or has failed.
    finished: u64,
    /// A leader is writing and syncing a batch.
    leader: bool,
    /// Finished batches whose writers have not all been told; at most a few.
    outcomes: HashMap<u64, Outcome>,
    /// Set when a sync failed: the message every later write gets.
    poisoned: Option<String>,
    /// Records appended and syncs attempted, for tests of the batching.
    appends: u64,
    syncs: u64,
}

/// The file batches go to, locked only by the leader.
struct Tail {
    file: Box<dyn LogFile>,
    /// Length of the file up to the last synced batch; a failed write is cut back to it.
    durable_len: u64,
}

/// The write-ahead log of one index, shared by all its writers.
pub(crate) struct Wal {
    /// The index, for error messages.
    index: String,
    /// The index directory, where [`Wal::rotate`] starts new files; `None`
    /// for a log that is not a file (tests).
    dir: Option<PathBuf>,
    /// Number of the file appended to.
    number: AtomicU64,
    /// Durable length of that file, readable without waiting for a sync.
    len: AtomicU64,
    /// LSN of the last record written and synced (0: none yet), readable without waiting
    /// for a sync; a leader numbers its batch's records on from it.
    lsn: AtomicU64,
    tail: Mutex<Tail>,
    commit: Mutex<Commit>,
    /// Signalled whenever a batch finishes.
    finished: Condvar,
    /// Receives the duration of every sync (the engine's storage timer, or none).
    timer: Timer,
}

impl Wal {
    /// A log appending to `file`, whose first `durable_len` bytes are
    /// durable; it cannot rotate (see [`Wal::open`]).
    pub(crate) fn new(index: impl Into<String>, file: Box<dyn LogFile>, durable_len: u64) -> Self {
        Wal {
            index: index.into(),
            dir: None,
            number: AtomicU64::new(1),
            len: AtomicU64::new(durable_len),
            lsn: AtomicU64::new(0),
            tail: Mutex::new(Tail { file, durable_len }),
            commit: Mutex::new(Commit {
                pending: Vec::new(),
                pending_records: 0,
                open_batch: 1,
                finished: 0,
                leader: false,
                outcomes: HashMap::new(),
                poisoned: None,
                appends: 0,
                syncs: 0,
            }),
            finished: Condvar::new(),
            timer: Timer::default(),
        }
    }

    /// This log, reporting how long each sync took to `timer`.
    pub(crate) fn timed(mut self, timer: Timer) -> Self {
        self.timer = timer;
        self
    }

    /// This log, numbering its next record `lsn + 1`: `lsn` is the sequence number of the
    /// last record before it (at recovery, the manifest's plus the records replayed).
    pub(crate) fn after_lsn(mut self, lsn: u64) -> Self {
        self.lsn = AtomicU64::new(lsn);
        self
    }

    /// Opens log file number `number` of the index directory `dir` for
    /// appending; its first `durable_len` bytes (its whole length after
    /// replay) are durable.
    pub(crate) fn open(index: &str, dir: &Path, number: u64, durable_len: u64) -> Result<Self> {
        let file = open_append(index, &dir.join(file_name(number)))?;
        let mut wal = Wal::new(index, Box::new(file), durable_len);
        wal.dir = Some(dir.to_owned());
        wal.number = AtomicU64::new(number);
        Ok(wal)
    }

    /// Number of the file appended to.
    pub(crate) fn number(&self) -> u64 {
        self.number.load(Ordering::Acquire)
    }

    /// Durable length of the file appended to, header included.
    pub(crate) fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// The LSN of the last durable record (0: none yet); a writer holding its namespace's lock
    /// has not applied its record yet, but every record up to here is on disk.
    pub(crate) fn last_lsn(&self) -> u64 {
        self.lsn.load(Ordering::Acquire)
    }

    /// Starts the next log file and sends every later append there; returns
    /// its number. The caller must make sure that no append is in flight
    /// (the index's flush gate), so every record before the switch is in
    /// an earlier file and every later one in the new file. A failure
    /// changes nothing: appends go on to the current file.
    pub(crate) fn rotate(&self) -> Result<u64> {
        let Some(dir) = &self.dir else {
            return Err(Error::Internal(
                "this write-ahead log is not a file and cannot start a new one".to_owned(),
            ));
        };
        let commit = self.lock_commit()?;
        if let Some(message) = &commit.poisoned {
            return Err(unavailable(message));
        }
        debug_assert!(!commit.leader && commit.pending.is_empty());
        let number = self.number() + 1;
        let path = create_or_reuse_file(dir, number)
            .and_then(|path| {
                sync_dir(dir).map(|()| path).inspect_err(|_| {
                    // Best effort; a leftover is reused by the next rotation anyway.
                    let _ = fs::remove_file(dir.join(file_name(number)));
                })
            })
            .map_err(|err| {
                Error::storage(
                    format!(
                        "cannot start the write-ahead log file {} of index '{}'",
                        file_name(number),
                        self.index
                    ),
                    &err,
                )
            })?;
        let file = open_append(&self.index, &path).inspect_err(|_| {
            // Best effort, so a later rotation can create the file again.
            let _ = fs::remove_file(&path).and_then(|()| sync_dir(dir));
        })?;
        let mut tail = self.tail.lock().map_err(|_| poisoned_lock())?;
        tail.file = Box::new(file);
        tail.durable_len = HEADER_LEN;
        self.len.store(HEADER_LEN, Ordering::Release);
        self.number.store(number, Ordering::Release);
        drop((tail, commit));
        Ok(number)
    }

    /// Appends one record and returns its LSN once it is durable (written and
    /// `fdatasync`ed), sharing the sync with concurrent writers. On error the
    /// record is not in the log: the caller must not apply it.
    pub(crate) fn append(&self, payload: &[u8]) -> Result<u64> {
        if payload.len() > limits::MAX_LOG_RECORD_BYTES {
            return Err(Error::invalid(
                "request",
                format!(
                    "the change is {} bytes once encoded; one write can log at most {} bytes (256 MiB): split it into smaller requests",
                    payload.len(),
                    limits::MAX_LOG_RECORD_BYTES
                ),
            ));
        }
        let mut commit = self.lock_commit()?;
        if let Some(message) = &commit.poisoned {
            return Err(unavailable(message));
        }
        push_frame(&mut commit.pending, payload);
        // Records before this one in its batch.
        let position = commit.pending_records as u64;
        commit.pending_records += 1;
        commit.appends += 1;
        let batch = commit.open_batch;
        loop {
            if commit.finished >= batch {
                let Some(outcome) = commit.outcomes.get_mut(&batch) else {
                    return Err(Error::Internal(
                        "the write-ahead log lost the outcome of a batch".to_owned(),
                    ));
                };
                let result = match &outcome.first_lsn {
                    Ok(first) => Ok(first + position),
                    Err((code, message)) => Err(Error::Storage {
                        code: *code,
                        message: message.clone(),
                    }),
                };
                outcome.unread -= 1;
                if outcome.unread == 0 {
                    commit.outcomes.remove(&batch);
                }
                return result;
            }
            if let Some(message) = &commit.poisoned {
                // Our record is still pending and will never be written.
                return Err(unavailable(message));
            }
            if commit.leader {
                commit = self.finished.wait(commit).map_err(|_| poisoned_lock())?;
                continue;
            }
            // No batch is in flight, so ours is the open one: lead it.
            debug_assert_eq!(commit.open_batch, batch);
            let bytes = std::mem::take(&mut commit.pending);
            let records = std::mem::take(&mut commit.pending_records);
            commit.open_batch += 1;
            commit.leader = true;
            commit.syncs += 1;
            drop(commit);

            let outcome = self.write_batch(&bytes);

            commit = self.lock_commit()?;
            commit.leader = false;
            commit.finished = batch;
            let first_lsn = match outcome {
                Ok(()) => {
                    // Numbered only now that they are durable, so a failed batch takes no LSNs.
                    let last = self.lsn.fetch_add(records as u64, Ordering::AcqRel);
                    Ok(last + 1)
                }
                Err(failure) => {
                    if let Some(poison) = failure.poison {
                        commit.poisoned = Some(poison);
                        // Nobody will write what is pending now; its writers get the poison.
                        commit.pending.clear();
                        commit.pending_records = 0;
                    }
                    Err((failure.code, failure.message))
                }
            };
            commit.outcomes.insert(
                batch,
                Outcome {
                    first_lsn,
                    unread: records,
                },
            );
            self.finished.notify_all();
        }
    }

    /// Writes and syncs one batch; the caller is the only leader.
    fn write_batch(&self, bytes: &[u8]) -> Result<(), BatchFailure> {
        let what = format!("cannot write the write-ahead log of index '{}'", self.index);
        let Ok(mut tail) = self.tail.lock() else {
            let message = format!("{what}: the log is unusable after an earlier panic");
            return Err(BatchFailure {
                code: ErrorCode::Internal,
                poison: Some(message.clone()),
                message,
            });
        };
        if let Err(err) = tail.file.append(bytes) {
            // A partial batch at the end would make every later record look
            // like corruption in the middle of the log: cut it off again. If
            // even that fails, the end of the file is unknown and the log
            // refuses further writes.
            let durable_len = tail.durable_len;
            let poison = tail.file.truncate(durable_len).err().map(|cut| {
                format!(
                    "{what}: a failed write ({err}) could not be cut off the end of the log ({cut})"
                )
            });
            let (code, message) = storage_failure(&what, &err);
            return Err(BatchFailure {
                code,
                message,
                poison,
            });
        }
        let syncing = std::time::Instant::now();
        let synced = tail.file.sync();
        self.timer.record(timing::WAL_FSYNC, syncing.elapsed());
        if let Err(err) = synced {
            // After a failed fsync the kernel may already have dropped the
            // dirty pages and cleared the error, so a retry could "succeed"
            // without the data ever reaching the disk. Nothing written since
            // the last good sync can be trusted: refuse every later write
            // (reads keep working) until a restart replays what is really on
            // disk.
            tracing::error!(index = %self.index, error = %err, "fsync of the write-ahead log failed; the index refuses writes until restarted");
            let (code, message) = storage_failure(&what, &err);
            return Err(BatchFailure {
                code,
                message,
                poison: Some(format!(
                    "{what}: an earlier fsync failed ({err}) and the kernel may have dropped the unsynced data"
                )),
            });
        }
        tail.durable_len += bytes.len() as u64;
        self.len.store(tail.durable_len, Ordering::Release);
        Ok(())
    }

    fn lock_commit(&self) -> Result<MutexGuard<'_, Commit>> {
        self.commit.lock().map_err(|_| poisoned_lock())
    }

    /// Records appended and syncs attempted so far.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u64, u64) {
        let commit = self.lock_commit().expect("not poisoned in tests");
        (commit.appends, commit.syncs)
    }
}

/// Why a batch failed.
struct BatchFailure {
    code: ErrorCode,
    message: String,
    /// Set if the log must refuse every later write: what they are told.
    poison: Option<String>,
}

/// The error of a write to a poisoned log.
fn unavailable(cause: &str) -> Error {
    Error::Storage {
        code: ErrorCode::Unavailable,
        message: format!(
            "{cause}, so the index refuses writes until the server restarts and replays the log"
        ),
    }
}

fn poisoned_lock() -> Error {
    Error::Internal("the write-ahead log is unavailable after an earlier panic".to_owned())
}
