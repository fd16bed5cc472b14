//! Log files on disk: their names, creating them whole (written under a temporary name,
//! synced, renamed), deleting those segments cover, directory syncs, and the [`LogFile`] a
//! [`Wal`](super::Wal) appends to.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use super::frame::header;
use crate::{Error, Result};

/// The name of log file number `number`.
pub(crate) fn file_name(number: u64) -> String {
    format!("wal-{number:06}.log")
}

/// The number of a log file called `name`, if it is one.
pub(super) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
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
pub(super) fn create_or_reuse_file(dir: &Path, number: u64) -> io::Result<PathBuf> {
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

/// Opens the log file at `path` for appending.
pub(super) fn open_append(index: &str, path: &Path) -> Result<File> {
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

/// The numbers of the log files in `dir`, ascending.
pub(super) fn file_numbers(dir: &Path) -> Result<Vec<u64>> {
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
pub(super) fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}
