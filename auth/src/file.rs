//! The crate's JSON files (`bootstrap-key.json`, `access.json`): versioned, read with clear
//! errors, and replaced atomically so a crash leaves the old file or the new one, never half
//! of one (by larch-state's writer, shared with the catalog). They hold hashes, never keys,
//! and are still written with mode 0600.

use std::fs;
use std::io;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Read first, so that a file written by a newer build gets a clear message instead of a
/// confusing parse error about some field.
#[derive(serde::Deserialize)]
struct VersionOnly {
    version: u32,
}

/// Reads `path` as JSON of layout `version` (a top-level `"version"` field); `None` if the
/// file does not exist.
pub(crate) fn read<T: DeserializeOwned>(path: &Path, version: u32) -> Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(Error::io("read", path)(err)),
    };
    parse(&bytes, version, path).map(Some)
}

/// Parses `bytes` as JSON of layout `version`; `path` names where they came from in errors
/// (a file, or a version of a shared document).
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8], version: u32, path: &Path) -> Result<T> {
    let invalid = |reason: String| Error::InvalidKeyFile {
        path: path.to_owned(),
        reason,
    };
    let VersionOnly { version: found } =
        serde_json::from_slice(bytes).map_err(|err| invalid(err.to_string()))?;
    if found != version {
        return Err(invalid(format!(
            "unsupported version {found} (this build reads version {version})"
        )));
    }
    serde_json::from_slice(bytes).map_err(|err| invalid(err.to_string()))
}

/// The bytes [`write`] stores: pretty JSON and a newline.
pub(crate) fn encode<T: Serialize>(value: &T, path: &Path) -> Result<Vec<u8>> {
    let mut json = serde_json::to_vec_pretty(value).map_err(|err| Error::InvalidKeyFile {
        path: path.to_owned(),
        reason: format!("cannot encode: {err}"),
    })?;
    json.push(b'\n');
    Ok(json)
}

/// Writes `value` as pretty JSON to `dir/path` atomically: temp file (mode 0600 on unix) +
/// fsync + rename + fsync of the directory ([`larch_state::write_atomically`], the same
/// writer as every local state file).
pub(crate) fn write<T: Serialize>(dir: &Path, path: &Path, value: &T) -> Result<()> {
    debug_assert_eq!(
        path.parent(),
        Some(dir),
        "files are written in their directory"
    );
    let json = encode(value, path)?;
    larch_state::write_atomically(path, &json).map_err(from_state)
}

/// A failure of the state crate as this crate's error: a local file's IO error keeps its
/// action and path, other writers winning every attempt is [`Error::Contended`], anything
/// else (a shared store) is [`Error::SharedState`].
pub(crate) fn from_state(err: larch_state::Error) -> Error {
    match err {
        larch_state::Error::Io {
            action,
            path,
            source,
        } => Error::Io {
            action,
            path,
            source,
        },
        larch_state::Error::Contended { attempts, .. } => Error::Contended { attempts },
        other => Error::SharedState(other),
    }
}
