//! The crate's JSON files (`bootstrap-key.json`, `access.json`): versioned, read with clear
//! errors, and replaced atomically so a crash leaves the old file or the new one, never half
//! of one. They hold hashes, never keys, and are still written with mode 0600.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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
/// fsync + rename + fsync of the directory.
pub(crate) fn write<T: Serialize>(dir: &Path, path: &Path, value: &T) -> Result<()> {
    let json = encode(value, path)?;

    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    if let Err(err) = write_new_file(&tmp, &json) {
        // Best effort: do not leave a partial temp file behind.
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    fs::rename(&tmp, path).map_err(Error::io("rename into place", path))?;
    sync_dir(dir)
}

fn write_new_file(path: &Path, contents: &[u8]) -> Result<()> {
    // A temp file left by a crash may have other permissions; start from scratch so the
    // mode below applies.
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(Error::io("remove stale", path)(err)),
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(Error::io("create", path))?;
    file.write_all(contents).map_err(Error::io("write", path))?;
    file.sync_all().map_err(Error::io("sync", path))
}

/// Makes the rename durable. Only possible on unix: other platforms cannot open a
/// directory as a file, and there the rename is all we can do.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(Error::io("sync directory", dir))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}
