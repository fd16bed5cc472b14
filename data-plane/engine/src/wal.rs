//! The write-ahead log of one index: framing, group commit and replay.
//!
//! # Files
//!
//! An index directory holds numbered log files, `wal-000001.log`,
//! `wal-000002.log`, …, replayed in order. A flush starts the next file
//! ([`Wal::rotate`]) at the moment it cuts the memtable, so every file before
//! it is wholly covered by the segments the flush writes; once the manifest
//! says so, those files are deleted ([`remove_before`]) and recovery replays
//! from the manifest's first file on. Each file is:
//!
//! ```text
//! header = magic "LARCHWAL" | version:u32 | file number:u64 | crc32 of the previous 20 bytes:u32
//! record = payload length:u32 | crc32 of the payload:u32 | crc32 of the previous 8 bytes:u32 | payload   (see `codec`)
//! ```
//!
//! All integers are little-endian. The files are written with plain
//! `std::fs`: a log needs appends and `fdatasync`, which the `object_store`
//! abstraction (immutable whole objects) does not offer; segments and the
//! manifest go through it (see `storage`). A new file is written as
//! `wal-NNNNNN.log.tmp`, synced and renamed into place, so a crash never
//! leaves a half-made log file; a leftover `.tmp` is deleted.
//!
//! # Group commit
//!
//! A writer frames its record into a shared pending buffer and waits. One
//! writer at a time becomes the leader: it takes the whole buffer, writes it
//! and calls `sync_data` without holding the buffer's mutex (so others keep
//! queueing the next batch), then publishes the batch's number as finished
//! and wakes everyone. Writers of one batch share one `fdatasync`.
//!
//! # Replay and damage
//!
//! A crash can leave the last batch half written. Replay therefore drops a
//! damaged record at the very end of the last file (incomplete, or failing its
//! checksum with nothing but zeros after it), truncates the file to the last
//! good record and logs a warning. Damage anywhere else is
//! [`Error::Corrupt`] with the file and offset: recovery stops instead of
//! serving partial data.
//!
//! The frame carries its own checksum, so a damaged length is never mistaken
//! for a record cut short by a crash: a frame that passes its checksum has a
//! true length (a record running past the end of the file is then torn), and
//! a frame that fails it is torn only if no intact record follows it anywhere
//! in the file — a crash cannot leave acknowledged records behind a torn one,
//! while damage to an old record does.

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::{self, BufReader, Read, Write},
    path::{Path, PathBuf},
    sync::{
        Condvar, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::{Error, ErrorCode, Result, error::storage_failure, limits, timing};

/// First bytes of every log file.
const MAGIC: &[u8; 8] = b"LARCHWAL";
/// Format version written in the header (2: frames carry their own checksum).
const VERSION: u32 = 2;
/// Bytes of a file header.
pub(crate) const HEADER_LEN: u64 = 24;
/// Bytes of a record's frame before its payload: length, payload checksum and
/// the frame's own checksum.
pub(crate) const FRAME_LEN: u64 = 12;

/// The name of log file number `number`.
pub(crate) fn file_name(number: u64) -> String {
    format!("wal-{number:06}.log")
}

/// The number of a log file called `name`, if it is one.
fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header of log file number `number`.
fn header(number: u64) -> [u8; HEADER_LEN as usize] {
    let mut header = [0; HEADER_LEN as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&number.to_le_bytes());
    let crc = crc32fast::hash(&header[..20]);
    header[20..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Appends `payload`, framed, to `buffer`.
fn push_frame(buffer: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payloads are checked against the record limit");
    let mut frame = [0; FRAME_LEN as usize];
    frame[..4].copy_from_slice(&len.to_le_bytes());
    frame[4..8].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let frame_crc = crc32fast::hash(&frame[..8]);
    frame[8..].copy_from_slice(&frame_crc.to_le_bytes());
    buffer.extend_from_slice(&frame);
    buffer.extend_from_slice(payload);
}

/// Creates log file number `number` in `dir` with just its header, synced:
/// written under a temporary name and renamed into place, so the file either
/// does not exist or is complete. The caller syncs the directory.
pub(crate) fn create_file(dir: &Path, number: u64) -> io::Result<PathBuf> {
    let path = dir.join(file_name(number));
    let staging = dir.join(format!("{}{TMP_SUFFIX}", file_name(number)));
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&staging)
        .and_then(|mut file| {
            file.write_all(&header(number))?;
            file.sync_all()
        });
    let renamed = written.and_then(|()| {
        if path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists", path.display()),
            ));
        }
        fs::rename(&staging, &path)
    });
    if let Err(err) = renamed {
        // Best effort: a leftover is deleted at the next flush or start.
        let _ = fs::remove_file(&staging);
        return Err(err);
    }
    Ok(path)
}

/// [`create_file`], except that a file `number` holding just its header — left by a rotation
/// that failed after creating it (the directory sync or the open failed) — is taken as it is:
/// refusing it would jam every later rotation, and so every flush, until a restart.
fn create_or_reuse_file(dir: &Path, number: u64) -> io::Result<PathBuf> {
    match create_file(dir, number) {
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            let path = dir.join(file_name(number));
            if fs::read(&path)? == header(number) {
                Ok(path)
            } else {
                Err(err)
            }
        }
        other => other,
    }
}

/// Suffix of a log file being created.
const TMP_SUFFIX: &str = ".tmp";

/// Deletes the log files of `dir` numbered below `start` (covered by
/// segments) and leftovers of interrupted file creation, then syncs `dir`.
pub(crate) fn remove_before(dir: &Path, start: u64) -> io::Result<()> {
    let mut removed = false;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let stale = match name.strip_suffix(TMP_SUFFIX) {
            Some(base) => parse_file_name(base).is_some(),
            None => parse_file_name(&name).is_some_and(|number| number < start),
        };
        if stale {
            fs::remove_file(entry.path())?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes the entries of `dir` (created, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Where log records are appended: a file, or a fake in tests.
pub(crate) trait LogFile: Send {
    /// Appends `bytes` at the end.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

impl LogFile for File {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        // The file is opened with O_APPEND, so this also lands at the end after a `truncate`.
        self.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
}

/// The outcome of a failed batch, for the writers whose records were in it.
struct Failure {
    code: ErrorCode,
    message: String,
    /// Writers of the batch that have not collected the failure yet.
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
    /// Failed batches whose writers have not all been told; usually empty.
    failures: HashMap<u64, Failure>,
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
    tail: Mutex<Tail>,
    commit: Mutex<Commit>,
    /// Signalled whenever a batch finishes.
    finished: Condvar,
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
            tail: Mutex::new(Tail { file, durable_len }),
            commit: Mutex::new(Commit {
                pending: Vec::new(),
                pending_records: 0,
                open_batch: 1,
                finished: 0,
                leader: false,
                failures: HashMap::new(),
                poisoned: None,
                appends: 0,
                syncs: 0,
            }),
            finished: Condvar::new(),
        }
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

    /// Appends one record and returns once it is durable (written and
    /// `fdatasync`ed), sharing the sync with concurrent writers. On error the
    /// record is not in the log: the caller must not apply it.
    pub(crate) fn append(&self, payload: &[u8]) -> Result<()> {
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
        commit.pending_records += 1;
        commit.appends += 1;
        let batch = commit.open_batch;
        loop {
            if commit.finished >= batch {
                return match commit.failures.get_mut(&batch) {
                    None => Ok(()),
                    Some(failure) => {
                        let error = Error::Storage {
                            code: failure.code,
                            message: failure.message.clone(),
                        };
                        failure.unread -= 1;
                        if failure.unread == 0 {
                            commit.failures.remove(&batch);
                        }
                        Err(error)
                    }
                };
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
            if let Err(failure) = outcome {
                if let Some(poison) = failure.poison {
                    commit.poisoned = Some(poison);
                    // Nobody will write what is pending now; its writers get the poison.
                    commit.pending.clear();
                    commit.pending_records = 0;
                }
                commit.failures.insert(
                    batch,
                    Failure {
                        code: failure.code,
                        message: failure.message,
                        unread: records,
                    },
                );
            }
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
        timing::record(timing::WAL_FSYNC, syncing.elapsed());
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

/// Opens the log file at `path` for appending.
fn open_append(index: &str, path: &Path) -> Result<File> {
    OpenOptions::new().append(true).open(path).map_err(|err| {
        Error::storage(
            format!(
                "cannot open the write-ahead log {} of index '{index}'",
                path.display()
            ),
            &err,
        )
    })
}

fn poisoned_lock() -> Error {
    Error::Internal("the write-ahead log is unavailable after an earlier panic".to_owned())
}

/// The file to append to after replay, and its length.
#[derive(Debug)]
pub(crate) struct Replayed {
    pub(crate) number: u64,
    pub(crate) len: u64,
}

/// Replays the log files of `dir` numbered `start` and up, in order, calling
/// `visit(file, offset, payload)` for each good record (older files are
/// covered by segments and ignored). Drops and truncates a torn record at
/// the end of the last file; any other damage, or a missing file, is
/// [`Error::Corrupt`].
pub(crate) fn replay(
    dir: &Path,
    start: u64,
    mut visit: impl FnMut(&Path, u64, &[u8]) -> Result<()>,
) -> Result<Replayed> {
    let mut numbers = file_numbers(dir)?;
    numbers.retain(|number| *number >= start);
    let (Some(&first), Some(&last)) = (numbers.first(), numbers.last()) else {
        return Err(Error::corrupt(
            dir.join(file_name(start)),
            0,
            "missing: no write-ahead log file from here on in the index directory",
        ));
    };
    if first != start {
        return Err(Error::corrupt(
            dir.join(file_name(start)),
            0,
            format!(
                "missing: replay must start here, but the write-ahead log starts at {}",
                file_name(first)
            ),
        ));
    }
    if let Some(pair) = numbers.windows(2).find(|pair| pair[1] != pair[0] + 1) {
        return Err(Error::corrupt(
            dir.join(file_name(pair[0] + 1)),
            0,
            format!(
                "missing: the write-ahead log jumps from {} to {}",
                file_name(pair[0]),
                file_name(pair[1])
            ),
        ));
    }
    debug_assert!(first <= last);
    let mut replayed = None;
    for number in numbers {
        let path = dir.join(file_name(number));
        let read_error = |err: io::Error| {
            Error::storage(
                format!("cannot read the write-ahead log {}", path.display()),
                &err,
            )
        };
        let file = File::open(&path).map_err(read_error)?;
        let len = file.metadata().map_err(read_error)?.len();
        let is_last = number == last;
        let scan = scan(
            BufReader::with_capacity(1 << 20, file),
            len,
            &path,
            number,
            is_last,
            &mut visit,
        )?;
        if let Some(reason) = &scan.torn {
            debug_assert!(is_last);
            tracing::warn!(
                file = %path.display(),
                offset = scan.good_len,
                dropped_bytes = len - scan.good_len,
                reason = %reason,
                "dropping a torn record at the end of the write-ahead log (a crash during a write that was never acknowledged)"
            );
            truncate(&path, scan.good_len).map_err(|err| {
                Error::storage(
                    format!(
                        "cannot cut the torn end off the write-ahead log {}",
                        path.display()
                    ),
                    &err,
                )
            })?;
        }
        replayed = Some(Replayed {
            number,
            len: scan.good_len,
        });
    }
    Ok(replayed.expect("there is at least one log file"))
}

/// The numbers of the log files in `dir`, ascending.
fn file_numbers(dir: &Path) -> Result<Vec<u64>> {
    let list_error =
        |err: io::Error| Error::storage(format!("cannot list {}", dir.display()), &err);
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        if let Some(number) = entry.file_name().to_str().and_then(parse_file_name) {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Cuts the file at `path` to `len` bytes, durably.
fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

/// What scanning one file found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// End of the last good record.
    pub(crate) good_len: u64,
    /// Why the bytes after `good_len` were dropped, if there are any.
    pub(crate) torn: Option<String>,
}

/// Reads log file number `number` (`len` bytes, from `input`), calling
/// `visit` for each good record. A torn record is accepted only at the end of
/// the `last` file.
pub(crate) fn scan(
    mut input: impl Read,
    len: u64,
    path: &Path,
    number: u64,
    last: bool,
    visit: &mut impl FnMut(&Path, u64, &[u8]) -> Result<()>,
) -> Result<Scan> {
    let read_error = |err: io::Error| {
        Error::storage(
            format!("cannot read the write-ahead log {}", path.display()),
            &err,
        )
    };
    if len < HEADER_LEN {
        return Err(Error::corrupt(
            path,
            0,
            format!("the file is {len} bytes, shorter than its {HEADER_LEN}-byte header"),
        ));
    }
    let mut head = [0; HEADER_LEN as usize];
    input.read_exact(&mut head).map_err(read_error)?;
    check_header(&head, number).map_err(|(offset, reason)| Error::corrupt(path, offset, reason))?;

    let torn = |offset: u64, reason: String| {
        if last {
            Ok(Scan {
                good_len: offset,
                torn: Some(reason),
            })
        } else {
            Err(Error::corrupt(
                path,
                offset,
                format!("{reason}, and another log file follows"),
            ))
        }
    };
    let mut offset = HEADER_LEN;
    let mut payload = Vec::new();
    while offset < len {
        let left = len - offset;
        if left < FRAME_LEN {
            return torn(
                offset,
                format!("an incomplete record frame of {left} bytes"),
            );
        }
        let mut frame = [0; FRAME_LEN as usize];
        input.read_exact(&mut frame).map_err(read_error)?;
        let size = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
        let frame_crc = u32::from_le_bytes(frame[8..].try_into().expect("4 bytes"));
        if crc32fast::hash(&frame[..8]) != frame_crc {
            // Torn only if nothing intact follows; damage to an old frame leaves
            // intact records behind it.
            let mut rest = Vec::new();
            input.read_to_end(&mut rest).map_err(read_error)?;
            if let Some(at) = next_intact_record(&rest) {
                return Err(Error::corrupt(
                    path,
                    offset,
                    format!(
                        "a record frame fails its checksum, and an intact record follows at byte {}",
                        offset + FRAME_LEN + at as u64
                    ),
                ));
            }
            return torn(
                offset,
                "the last record's frame fails its checksum".to_owned(),
            );
        }
        if size == 0 || size as usize > limits::MAX_LOG_RECORD_BYTES {
            return Err(Error::corrupt(
                path,
                offset,
                format!(
                    "a record length of {size} bytes is out of range (1 to {})",
                    limits::MAX_LOG_RECORD_BYTES
                ),
            ));
        }
        let size = u64::from(size);
        if size > left - FRAME_LEN {
            return torn(
                offset,
                format!(
                    "a record of {size} bytes ends {} bytes past the end of the file",
                    size - (left - FRAME_LEN)
                ),
            );
        }
        // `size` is at most the limit and fits in the file: a sane allocation.
        payload.resize(size as usize, 0);
        input.read_exact(&mut payload).map_err(read_error)?;
        if crc32fast::hash(&payload) != crc {
            if rest_is_zero(&mut input).map_err(read_error)? {
                return torn(offset, "the last record fails its checksum".to_owned());
            }
            return Err(Error::corrupt(
                path,
                offset,
                "a record fails its checksum, and more records follow it",
            ));
        }
        visit(path, offset, &payload)?;
        offset += FRAME_LEN + size;
    }
    Ok(Scan {
        good_len: offset,
        torn: None,
    })
}

/// Checks a file header; on failure, the offset of the bad field and why.
fn check_header(head: &[u8; HEADER_LEN as usize], number: u64) -> Result<(), (u64, String)> {
    if &head[..8] != MAGIC {
        return Err((
            0,
            "not a larch write-ahead log (wrong magic bytes)".to_owned(),
        ));
    }
    let crc = u32::from_le_bytes(head[20..].try_into().expect("4 bytes"));
    if crc32fast::hash(&head[..20]) != crc {
        return Err((20, "the file header fails its checksum".to_owned()));
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err((
            8,
            format!("unsupported log format version {version}; this build reads version {VERSION}"),
        ));
    }
    let stored = u64::from_le_bytes(head[12..20].try_into().expect("8 bytes"));
    if stored != number {
        return Err((
            12,
            format!("the header says this is log file {stored}, but its name says {number}"),
        ));
    }
    Ok(())
}

/// The position in `bytes` of the first intact record (a frame passing its
/// checksum, with a payload that fits and passes its own), if any. A frame
/// checksum is cheap, so every position is tried; a false match needs two
/// 32-bit checksums to agree by chance.
fn next_intact_record(bytes: &[u8]) -> Option<usize> {
    let frame_len = FRAME_LEN as usize;
    (0..bytes.len().saturating_sub(frame_len - 1)).find(|&at| {
        let frame = &bytes[at..at + frame_len];
        let stored = u32::from_le_bytes(frame[8..].try_into().expect("4 bytes"));
        if crc32fast::hash(&frame[..8]) != stored {
            return false;
        }
        let size = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
        bytes
            .get(at + frame_len..at + frame_len + size)
            .is_some_and(|payload| size > 0 && crc32fast::hash(payload) == crc)
    })
}

/// Whether everything left in `input` is zero bytes (or nothing).
fn rest_is_zero(input: &mut impl Read) -> io::Result<bool> {
    let mut buffer = [0; 8192];
    loop {
        let n = match input.read(&mut buffer) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if buffer[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A log file in memory that fails on request.

    use std::{
        io,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use super::LogFile;

    /// What the next operations of a [`MemoryFile`] do.
    #[derive(Debug, Default)]
    pub(crate) struct Faults {
        /// Appends fail with this error after writing `partial` bytes.
        pub(crate) append: Option<io::ErrorKind>,
        pub(crate) partial: usize,
        /// Syncs fail with this error.
        pub(crate) sync: Option<io::ErrorKind>,
        /// Truncation fails.
        pub(crate) truncate: bool,
        /// How long a sync takes.
        pub(crate) sync_delay: Duration,
    }

    /// A log file in memory; clones share the bytes and the faults.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct MemoryFile {
        pub(crate) bytes: Arc<Mutex<Vec<u8>>>,
        pub(crate) faults: Arc<Mutex<Faults>>,
    }

    impl MemoryFile {
        /// A file holding a header for file number 1.
        pub(crate) fn with_header() -> Self {
            let file = MemoryFile::default();
            file.bytes
                .lock()
                .unwrap()
                .extend_from_slice(&super::header(1));
            file
        }

        pub(crate) fn len(&self) -> u64 {
            self.bytes.lock().unwrap().len() as u64
        }
    }

    impl LogFile for MemoryFile {
        fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
            let faults = self.faults.lock().unwrap();
            let mut file = self.bytes.lock().unwrap();
            match faults.append {
                Some(kind) => {
                    file.extend_from_slice(&bytes[..faults.partial.min(bytes.len())]);
                    Err(io::Error::from(kind))
                }
                None => {
                    file.extend_from_slice(bytes);
                    Ok(())
                }
            }
        }

        fn sync(&mut self) -> io::Result<()> {
            let (delay, fault) = {
                let faults = self.faults.lock().unwrap();
                (faults.sync_delay, faults.sync)
            };
            std::thread::sleep(delay);
            fault.map_or(Ok(()), |kind| Err(io::Error::from(kind)))
        }

        fn truncate(&mut self, len: u64) -> io::Result<()> {
            if self.faults.lock().unwrap().truncate {
                return Err(io::Error::other("truncate failed"));
            }
            self.bytes.lock().unwrap().truncate(len as usize);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Cursor, sync::Arc, thread, time::Duration};

    use super::{testing::MemoryFile, *};

    /// Payloads of the good records of an in-memory log, or the scan error.
    fn records(bytes: &[u8], last: bool) -> Result<(Vec<Vec<u8>>, Scan)> {
        let mut payloads = Vec::new();
        let scan = scan(
            Cursor::new(bytes),
            bytes.len() as u64,
            Path::new("wal-000001.log"),
            1,
            last,
            &mut |_, _, payload: &[u8]| {
                payloads.push(payload.to_vec());
                Ok(())
            },
        )?;
        Ok((payloads, scan))
    }

    fn log_of(payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = header(1).to_vec();
        payloads.iter().for_each(|p| push_frame(&mut bytes, p));
        bytes
    }

    fn corrupt_offset(err: Error) -> (u64, String) {
        match err {
            Error::Corrupt { offset, reason, .. } => (offset, reason),
            other => panic!("expected corruption, got {other}"),
        }
    }

    #[test]
    fn file_names_sort_by_number() {
        assert_eq!(file_name(1), "wal-000001.log");
        assert_eq!(file_name(1_234_567), "wal-1234567.log");
        assert_eq!(parse_file_name("wal-000042.log"), Some(42));
        assert_eq!(parse_file_name("wal-1234567.log"), Some(1_234_567));
        assert_eq!(parse_file_name("wal-42.log"), None);
        assert_eq!(parse_file_name("wal-00004x.log"), None);
        assert_eq!(parse_file_name("index.meta"), None);
    }

    #[test]
    fn scan_returns_every_record_in_order() {
        let bytes = log_of(&[b"one", b"two", b"three"]);
        let (payloads, scan) = records(&bytes, true).unwrap();
        assert_eq!(payloads, [&b"one"[..], b"two", b"three"]);
        assert_eq!(scan.good_len, bytes.len() as u64);
        assert!(scan.torn.is_none());
        let (payloads, _) = records(&header(1), true).unwrap();
        assert!(payloads.is_empty());
    }

    #[test]
    fn a_torn_tail_is_dropped_at_every_cut() {
        let full = log_of(&[b"one", b"two", b"three"]);
        let second_end = log_of(&[b"one", b"two"]).len();
        for cut in second_end + 1..full.len() {
            let (payloads, scan) = records(&full[..cut], true).unwrap();
            assert_eq!(payloads, [&b"one"[..], b"two"], "cut at {cut}");
            assert_eq!(scan.good_len, second_end as u64);
            assert!(scan.torn.is_some());
            // The same damage before another file is corruption.
            let (offset, _) = corrupt_offset(records(&full[..cut], false).unwrap_err());
            assert_eq!(offset, second_end as u64);
        }
        // Zeros after the last good record (a file extended but never written).
        let mut zeros = log_of(&[b"one"]);
        zeros.extend_from_slice(&[0; 40]);
        let (payloads, scan) = records(&zeros, true).unwrap();
        assert_eq!(payloads, [b"one"]);
        assert_eq!(scan.good_len, log_of(&[b"one"]).len() as u64);
        // A last record whose payload was zeroed by the crash.
        let mut zeroed = full.clone();
        let len = zeroed.len();
        zeroed[len - 3..].fill(0);
        let (payloads, _) = records(&zeroed, true).unwrap();
        assert_eq!(payloads, [&b"one"[..], b"two"]);
    }

    #[test]
    fn damage_in_the_middle_is_corruption_with_its_offset() {
        let full = log_of(&[b"one", b"two", b"three"]);
        let second = log_of(&[b"one"]).len();
        let mut flipped = full.clone();
        flipped[second + FRAME_LEN as usize] ^= 0x01;
        let (offset, reason) = corrupt_offset(records(&flipped, true).unwrap_err());
        assert_eq!(offset, second as u64);
        assert_eq!(
            reason,
            "a record fails its checksum, and more records follow it"
        );
        // An absurd length is corruption, never an allocation.
        let mut absurd = full.clone();
        absurd[second + 3] = 0xff;
        let (offset, reason) = corrupt_offset(records(&absurd, true).unwrap_err());
        assert_eq!(offset, second as u64);
        assert!(reason.contains("fails its checksum"), "{reason}");
        // A length damaged to point past the end of the file is not mistaken
        // for a torn write: an intact record follows it.
        let mut past_end = full.clone();
        past_end[second + 1] ^= 0x01;
        let (offset, reason) = corrupt_offset(records(&past_end, true).unwrap_err());
        assert_eq!(offset, second as u64);
        let third = log_of(&[b"one", b"two"]).len();
        assert!(
            reason.contains(&format!("an intact record follows at byte {third}")),
            "{reason}"
        );
        // A zero length followed by data.
        let mut zero = full.clone();
        zero[second..second + 4].fill(0);
        assert_eq!(
            corrupt_offset(records(&zero, true).unwrap_err()).0,
            second as u64
        );
    }

    #[test]
    fn bad_headers_are_corruption() {
        let good = log_of(&[b"one"]);
        for (at, field_offset) in [(0, 0), (9, 20), (15, 20), (21, 20)] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            let (offset, _) = corrupt_offset(records(&bad, true).unwrap_err());
            assert_eq!(offset, field_offset, "flipped byte {at}");
        }
        let (offset, reason) = corrupt_offset(records(&good[..10], true).unwrap_err());
        assert_eq!(offset, 0);
        assert!(
            reason.contains("shorter than its 24-byte header"),
            "{reason}"
        );
        let mut other_number = good.clone();
        other_number[..HEADER_LEN as usize].copy_from_slice(&header(7));
        let (offset, reason) = corrupt_offset(records(&other_number, true).unwrap_err());
        assert_eq!(offset, 12);
        assert!(reason.contains("log file 7"), "{reason}");
    }

    /// Many writers at once: every append becomes durable, in per-writer
    /// order, and syncs are shared (never more syncs than appends).
    #[test]
    fn group_commit_makes_every_concurrent_append_durable() {
        let file = MemoryFile::with_header();
        file.faults.lock().unwrap().sync_delay = Duration::from_micros(200);
        let wal = Arc::new(Wal::new("test", Box::new(file.clone()), file.len()));
        const WRITERS: u8 = 8;
        const EACH: u16 = 40;
        let threads: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let wal = Arc::clone(&wal);
                thread::spawn(move || {
                    for seq in 0..EACH {
                        let mut payload = vec![writer];
                        payload.extend_from_slice(&seq.to_le_bytes());
                        wal.append(&payload).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());

        let (appends, syncs) = wal.counts();
        assert_eq!(appends, u64::from(WRITERS) * u64::from(EACH));
        assert!(
            syncs >= 1 && syncs <= appends,
            "{syncs} syncs for {appends} appends"
        );
        let bytes = file.bytes.lock().unwrap().clone();
        let (payloads, _) = records(&bytes, true).unwrap();
        assert_eq!(payloads.len() as u64, appends);
        let mut next = [0u16; WRITERS as usize];
        for payload in payloads {
            let writer = usize::from(payload[0]);
            let seq = u16::from_le_bytes([payload[1], payload[2]]);
            assert_eq!(seq, next[writer], "writer {writer} out of order");
            next[writer] += 1;
        }
        assert!(next.iter().all(|n| *n == EACH));
    }

    fn storage_code(result: Result<()>) -> (ErrorCode, String) {
        let err = result.unwrap_err();
        (err.code(), err.to_string())
    }

    #[test]
    fn a_failed_write_is_cut_off_and_later_writes_work() {
        let file = MemoryFile::with_header();
        let wal = Wal::new("movies", Box::new(file.clone()), file.len());
        wal.append(b"one").unwrap();
        {
            let mut faults = file.faults.lock().unwrap();
            faults.append = Some(io::ErrorKind::StorageFull);
            faults.partial = 5;
        }
        let (code, message) = storage_code(wal.append(b"two"));
        assert_eq!(code, ErrorCode::ResourceExhausted);
        assert!(
            message.starts_with("disk full: cannot write the write-ahead log of index 'movies': "),
            "{message}"
        );
        // Space freed: the log goes on, with no trace of the failed record.
        file.faults.lock().unwrap().append = None;
        wal.append(b"three").unwrap();
        let bytes = file.bytes.lock().unwrap().clone();
        let (payloads, scan) = records(&bytes, true).unwrap();
        assert_eq!(payloads, [&b"one"[..], b"three"]);
        assert!(scan.torn.is_none());
    }

    #[test]
    fn a_write_that_cannot_be_cut_off_poisons_the_log() {
        let file = MemoryFile::with_header();
        let wal = Wal::new("movies", Box::new(file.clone()), file.len());
        {
            let mut faults = file.faults.lock().unwrap();
            faults.append = Some(io::ErrorKind::ReadOnlyFilesystem);
            faults.partial = 3;
            faults.truncate = true;
        }
        let (code, message) = storage_code(wal.append(b"one"));
        assert_eq!(code, ErrorCode::Unavailable);
        assert!(
            message.starts_with("cannot write the write-ahead log of index 'movies': "),
            "{message}"
        );
        *file.faults.lock().unwrap() = Default::default();
        let (code, message) = storage_code(wal.append(b"two"));
        assert_eq!(code, ErrorCode::Unavailable);
        assert!(message.contains("refuses writes"), "{message}");
    }

    #[test]
    fn a_failed_sync_poisons_the_log() {
        let file = MemoryFile::with_header();
        let wal = Wal::new("movies", Box::new(file.clone()), file.len());
        wal.append(b"one").unwrap();
        file.faults.lock().unwrap().sync = Some(io::ErrorKind::Other);
        let (code, _) = storage_code(wal.append(b"two"));
        assert_eq!(code, ErrorCode::Unavailable);
        // Even once the disk behaves again, the log stays closed.
        file.faults.lock().unwrap().sync = None;
        let (code, message) = storage_code(wal.append(b"three"));
        assert_eq!(code, ErrorCode::Unavailable);
        assert!(message.contains("until the server restarts"), "{message}");
        // A sync failing with a full disk says so.
        let file = MemoryFile::with_header();
        let wal = Wal::new("movies", Box::new(file.clone()), file.len());
        file.faults.lock().unwrap().sync = Some(io::ErrorKind::StorageFull);
        assert_eq!(
            storage_code(wal.append(b"one")).0,
            ErrorCode::ResourceExhausted
        );
    }

    #[test]
    fn issue_14_a_rotation_that_failed_after_creating_the_next_file_does_not_jam_the_log() {
        let dir = tempfile::tempdir().unwrap();
        create_file(dir.path(), 1).unwrap();
        let wal = Wal::open("movies", dir.path(), 1, HEADER_LEN).unwrap();
        wal.append(b"one").unwrap();
        // What a rotation leaves when the directory sync or the open fails after the next
        // file was created: that file, holding just its header.
        create_file(dir.path(), 2).unwrap();
        assert_eq!(
            wal.rotate().unwrap(),
            2,
            "the leftover is taken as the next file"
        );
        wal.append(b"two").unwrap();
        assert_eq!(wal.rotate().unwrap(), 3);
        wal.append(b"three").unwrap();
        let mut replayed = Vec::new();
        replay(dir.path(), 1, |_, _, payload| {
            replayed.push(payload.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(replayed, [&b"one"[..], b"two", b"three"]);

        // A file of that number holding records is never taken over.
        let wal = Wal::open("movies", dir.path(), 1, HEADER_LEN).unwrap();
        let err = wal.rotate().unwrap_err();
        assert!(err.to_string().contains("wal-"), "{err}");
    }

    #[test]
    fn oversized_records_are_refused_before_logging() {
        let file = MemoryFile::with_header();
        let wal = Wal::new("movies", Box::new(file.clone()), file.len());
        let huge = vec![0; limits::MAX_LOG_RECORD_BYTES + 1];
        let err = wal.append(&huge).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert_eq!(file.len(), HEADER_LEN);
    }
}
