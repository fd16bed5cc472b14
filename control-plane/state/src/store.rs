//! [`Store`]: where one state document lives, reduced to the two calls a read-modify-write
//! needs — load the newest version, replace it if it is still the one read — and its
//! implementations:
//!
//! - [`LocalFile`]: one file in the data directory (`catalog.json`, `access.json`), replaced
//!   atomically (temp file 0600, fsync, rename, fsync of the directory). Only this process
//!   writes it (the data-directory lock), so its versions are counted in memory.
//! - [`SharedDocument`]: immutable numbered versions created with a conditional create,
//!   shared by several control-plane replicas (see the crate docs).
//! - [`Memory`]: nowhere; the document lives only in the caller's copy (tests, embedded
//!   catalogs without a data directory).
//!
//! An object-storage document replaced in place maps onto the same two calls: `load` is a GET
//! returning the ETag as [`Version::Tag`], `replace` a PUT with `If-Match` (or
//! `If-None-Match: *` when the expected version is [`Version::Absent`]), a failed precondition
//! being [`Replaced::Conflict`].

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::{Error, Result, SharedDocument, Written};

/// Which version of a document a copy reflects. Opaque to callers: they hand back what
/// [`Store::load`] or [`Store::replace`] gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Version {
    /// Nothing is stored yet (or nothing was read yet).
    #[default]
    Absent,
    /// The n-th version of a document whose versions are numbered (1 is the first).
    Number(u64),
    /// An opaque tag of a document replaced in place (an object's ETag).
    Tag(String),
}

/// What [`Store::load`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// The version the caller knows is still the newest: keep the copy.
    Unchanged,
    /// Nothing is stored yet.
    Absent,
    /// A version other than the one the caller knows.
    Found {
        /// Its version, to hand back to [`Store::replace`].
        version: Version,
        /// The whole document.
        bytes: Vec<u8>,
    },
}

/// The outcome of [`Store::replace`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Replaced {
    /// The new document is durable as this version.
    Done(Version),
    /// The stored document is no longer the expected version (another writer changed it):
    /// load again and redo the change.
    Conflict,
}

/// Where one state document lives; see the module docs. Calls are synchronous (callers hold
/// their own lock and run on blocking threads).
pub trait Store: Send + Sync {
    /// Where the document lives, for messages.
    fn location(&self) -> &str;

    /// Names version `version` in messages (e.g. a document that cannot be understood).
    fn location_of(&self, version: &Version) -> String {
        let _ = version;
        self.location().to_owned()
    }

    /// The newest version, unless it is `known` (the version the caller read or wrote last;
    /// [`Version::Absent`] for none).
    fn load(&self, known: &Version) -> Result<Loaded>;

    /// Stores `bytes` as the version after `expected`, unless the stored document is no
    /// longer `expected` ([`Replaced::Conflict`]).
    fn replace(&self, expected: &Version, bytes: Vec<u8>) -> Result<Replaced>;
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn location(&self) -> &str {
        (**self).location()
    }
    fn location_of(&self, version: &Version) -> String {
        (**self).location_of(version)
    }
    fn load(&self, known: &Version) -> Result<Loaded> {
        (**self).load(known)
    }
    fn replace(&self, expected: &Version, bytes: Vec<u8>) -> Result<Replaced> {
        (**self).replace(expected, bytes)
    }
}

impl Store for SharedDocument {
    fn location(&self) -> &str {
        SharedDocument::location(self)
    }

    fn location_of(&self, version: &Version) -> String {
        match version {
            Version::Number(number) => format!("{} (version {number})", self.location()),
            Version::Absent | Version::Tag(_) => self.location().to_owned(),
        }
    }

    fn load(&self, known: &Version) -> Result<Loaded> {
        let base = self.number(known)?;
        Ok(match self.refresh(base)? {
            Some(snapshot) => Loaded::Found {
                version: Version::Number(snapshot.version),
                bytes: snapshot.bytes,
            },
            None if base == 0 => Loaded::Absent,
            None => Loaded::Unchanged,
        })
    }

    fn replace(&self, expected: &Version, bytes: Vec<u8>) -> Result<Replaced> {
        Ok(match self.write_next(self.number(expected)?, bytes)? {
            Written::Done(version) => Replaced::Done(Version::Number(version)),
            Written::Conflict => Replaced::Conflict,
        })
    }
}

impl SharedDocument {
    /// The version number of `version` (0: none).
    fn number(&self, version: &Version) -> Result<u64> {
        match version {
            Version::Absent => Ok(0),
            Version::Number(number) => Ok(*number),
            Version::Tag(tag) => Err(Error::Store {
                what: format!("using {}", self.location()),
                message: format!("version tag {tag:?} is not a version number of this document"),
            }),
        }
    }
}

/// A document in one local file, replaced atomically; see the module docs.
#[derive(Debug)]
pub struct LocalFile {
    path: PathBuf,
    location: String,
    /// What this process last read or wrote: `None` before the first read, `Some(0)` when the
    /// file did not exist, `Some(n)` for the n-th version this process has seen. Only this
    /// process writes the file, so this is exactly what is on disk.
    seen: Mutex<Option<u64>>,
}

impl LocalFile {
    /// The document in file `path` (created at the first write).
    pub fn new(path: impl Into<PathBuf>) -> LocalFile {
        let path = path.into();
        LocalFile {
            location: path.display().to_string(),
            path,
            seen: Mutex::new(None),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Version `n` of a document counted in memory (0: none).
fn counted(n: u64) -> Version {
    match n {
        0 => Version::Absent,
        n => Version::Number(n),
    }
}

impl Store for LocalFile {
    fn location(&self) -> &str {
        &self.location
    }

    fn load(&self, known: &Version) -> Result<Loaded> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = *seen
            && *known == counted(n)
        {
            return Ok(Loaded::Unchanged);
        }
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                *seen = Some(0);
                return Ok(Loaded::Absent);
            }
            Err(source) => {
                return Err(Error::Io {
                    action: "read",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let n = seen.unwrap_or(0).max(1);
        *seen = Some(n);
        Ok(Loaded::Found {
            version: Version::Number(n),
            bytes,
        })
    }

    fn replace(&self, expected: &Version, bytes: Vec<u8>) -> Result<Replaced> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(n) = *seen else {
            // Never read: load first.
            return Ok(Replaced::Conflict);
        };
        if *expected != counted(n) {
            return Ok(Replaced::Conflict);
        }
        write_atomically(&self.path, &bytes)?;
        *seen = Some(n + 1);
        Ok(Replaced::Done(Version::Number(n + 1)))
    }
}

/// A document kept nowhere: every replace succeeds and nothing is ever loaded back.
#[derive(Debug, Default)]
pub struct Memory {
    generation: Mutex<u64>,
}

impl Store for Memory {
    fn location(&self) -> &str {
        "memory"
    }

    fn load(&self, known: &Version) -> Result<Loaded> {
        let _ = known;
        let generation = *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Its only writer holds the only copy: nothing newer can be loaded.
        Ok(if generation == 0 {
            Loaded::Absent
        } else {
            Loaded::Unchanged
        })
    }

    fn replace(&self, expected: &Version, _bytes: Vec<u8>) -> Result<Replaced> {
        let mut generation = self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *expected != counted(*generation) {
            return Ok(Replaced::Conflict);
        }
        *generation += 1;
        Ok(Replaced::Done(Version::Number(*generation)))
    }
}

/// Writes `bytes` to `path` atomically, readable by its owner only: a temp file beside it
/// (mode 0600 on unix) + fsync + rename + fsync of the directory, so a crash leaves the old
/// file or the new one, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    if let Err(err) = write_new_file(&tmp, bytes) {
        // Best effort: do not leave a partial temp file behind.
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    sync_dir(dir).map_err(io("sync directory", dir))
}

fn write_new_file(path: &Path, contents: &[u8]) -> Result<()> {
    let io = |action: &'static str| {
        let path = path.to_owned();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    // A temp file left by a crash may have other permissions; start from scratch so the
    // mode below applies.
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(io("remove stale")(err)),
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io("create"))?;
    file.write_all(contents).map_err(io("write"))?;
    file.sync_all().map_err(io("sync"))
}

/// Makes the rename durable. Only possible on unix: other platforms cannot open a directory
/// as a file, and there the rename is all we can do.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}
