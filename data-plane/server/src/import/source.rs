//! Where an import's files come from: a directory under the operator's `--import-root`
//! (`file://`) or a prefix of an S3-compatible bucket (`s3://`, allowed by `--import-allow-s3`).
//!
//! Both hold Pinecone's layout: one sub-directory (prefix) per namespace, `__default__` for the
//! default one, of `.parquet` files. [`Source::layout`] lists it, [`Source::rows`] counts a
//! file's rows for the percentage (for an object, from its footer alone: two small requests),
//! and [`Source::open`] opens a file for reading.
//!
//! A bucket is opened through `larch_state::bucket::open`, so it takes the same `AWS_*`
//! settings and TLS as `--object-store-url`, and its calls run on that module's runtime
//! (callers here are blocking threads). Its files are named `s3://bucket/key` in job states and
//! messages. An object is read by streaming it, a chunk at a time, into a scratch file (the
//! job's `spool` path), opening that, and unlinking it at once: the open reader keeps the data
//! readable and the space is freed when the reader is dropped; a failed or interrupted
//! download's part is unlinked too. So a job holds at most one object's bytes, on disk rather
//! than in memory, and a crash leaves at most one scratch file, removed at the next start.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use larch_state::bucket::{self, Bucket};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::file::metadata::ParquetMetaDataReader;

use super::parquet::{DEFAULT_NAMESPACE_DIR, ParquetRecords, namespaces};
use super::{ImportError, Result};

/// The bytes of a file's end fetched first to read its footer (most footers fit).
const FOOTER_GUESS: u64 = 64 * 1024;

/// An import's files: a local directory or a bucket prefix.
#[derive(Debug)]
pub(crate) enum Source {
    /// A directory (resolved under the import root); files are local paths.
    Dir(PathBuf),
    /// A prefix of a bucket; files are `s3://<bucket name>/<key>`.
    Bucket {
        /// The store and the URI's prefix in it.
        bucket: Bucket,
        /// `s3://<bucket name>`, what file names start with.
        base: String,
    },
}

impl Source {
    /// Opens the bucket of `uri` (`s3://bucket/prefix`); nothing is read yet.
    pub(crate) fn s3(uri: &str) -> Result<Source> {
        let rest = uri.strip_prefix("s3://").unwrap_or(uri);
        let name = rest.split('/').next().unwrap_or_default();
        let bucket = bucket::open(uri).map_err(|err| match err {
            larch_state::Error::Url { reason, .. } => ImportError::BadUri(format!(
                "{uri}: {reason}; give s3://BUCKET/PREFIX, the prefix holding one directory per \
                 namespace"
            )),
            other => ImportError::BadUri(format!("{uri}: cannot open the bucket: {other}")),
        })?;
        Ok(Source::Bucket {
            bucket,
            base: format!("s3://{name}"),
        })
    }

    /// The namespaces of the source and their Parquet files, sorted by name (as
    /// [`namespaces`] does for a directory). `uri` is for messages.
    pub(crate) fn layout(&self, uri: &str) -> Result<Vec<(String, Vec<PathBuf>)>> {
        let (bucket, base) = match self {
            Source::Dir(dir) => return namespaces(dir),
            Source::Bucket { bucket, base } => (bucket, base),
        };
        let list = |prefix: &ObjectPath| {
            let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
            futures_executor::block_on(bucket.store.list_with_delimiter(prefix)).map_err(|err| {
                ImportError::BadUri(format!(
                    "{uri}: cannot list {base}/{}: {err}; check the bucket name, the prefix and \
                     the server's AWS_* credentials",
                    prefix.map(ObjectPath::as_ref).unwrap_or_default()
                ))
            })
        };
        let mut found = Vec::new();
        for directory in list(&bucket.prefix)?.common_prefixes {
            let Some(name) = directory.filename().map(str::to_owned) else {
                continue;
            };
            let mut files: Vec<PathBuf> = list(&directory)?
                .objects
                .into_iter()
                .filter(|object| object.location.extension() == Some("parquet"))
                .map(|object| PathBuf::from(format!("{base}/{}", object.location)))
                .collect();
            if files.is_empty() {
                continue;
            }
            files.sort();
            let namespace = if name == DEFAULT_NAMESPACE_DIR {
                String::new()
            } else {
                name
            };
            found.push((namespace, files));
        }
        found.sort();
        Ok(found)
    }

    /// The rows of `file` as its footer says; 0 when it cannot be read (reading it fails the
    /// file later, naming why).
    pub(crate) fn rows(&self, file: &Path) -> u64 {
        match self {
            Source::Dir(_) => ParquetRecords::open(file, 0).map_or(0, |f| f.rows()),
            Source::Bucket { bucket, base } => {
                let Some(key) = object_key(base, file) else {
                    return 0;
                };
                footer_rows(bucket, &key).unwrap_or(0)
            }
        }
    }

    /// Opens `file` at row `skip`. An object is first downloaded to `spool` (see the module
    /// docs), checking `interrupted` between chunks: when it says so, the download stops with
    /// an error (the caller checks why).
    pub(crate) fn open(
        &self,
        file: &Path,
        skip: u64,
        spool: &Path,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<ParquetRecords> {
        let (bucket, base) = match self {
            Source::Dir(_) => return ParquetRecords::open(file, skip),
            Source::Bucket { bucket, base } => (bucket, base),
        };
        let unreadable = |message: String| ImportError::Unreadable {
            file: file.to_owned(),
            message,
        };
        let key =
            object_key(base, file).ok_or_else(|| unreadable(format!("not an object of {base}")))?;
        let records = download(bucket, &key, spool, interrupted)
            .map_err(unreadable)
            .and_then(|()| ParquetRecords::open_named(spool, file, skip));
        // The open reader keeps the data; nothing else needs the name. A failed or
        // interrupted download's part goes too.
        match std::fs::remove_file(spool) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(file = %spool.display(), error = %err, "cannot remove an import's scratch file");
            }
            _ => {}
        }
        records
    }
}

/// The key in the bucket of a file named `s3://bucket/key`.
fn object_key(base: &str, file: &Path) -> Option<ObjectPath> {
    let key = file.to_str()?.strip_prefix(base)?.strip_prefix('/')?;
    ObjectPath::parse(key).ok()
}

/// Streams object `key` into the file `to`, a chunk at a time.
fn download(
    bucket: &Bucket,
    key: &ObjectPath,
    to: &Path,
    interrupted: &dyn Fn() -> bool,
) -> std::result::Result<(), String> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    }
    let mut out = std::fs::File::create(to)
        .map_err(|err| format!("cannot create {}: {err}", to.display()))?;
    futures_executor::block_on(async {
        let got = bucket
            .store
            .get(key)
            .await
            .map_err(|err| format!("cannot download: {err}"))?;
        let mut chunks = got.into_stream();
        while let Some(chunk) = chunks.next().await {
            if interrupted() {
                return Err("download interrupted".to_owned());
            }
            let chunk = chunk.map_err(|err| format!("cannot download: {err}"))?;
            out.write_all(&chunk)
                .map_err(|err| format!("cannot write {}: {err}", to.display()))?;
        }
        Ok(())
    })
}

/// The rows of object `key` from its Parquet footer: its end is fetched, and more of it when
/// the footer is larger.
fn footer_rows(bucket: &Bucket, key: &ObjectPath) -> Option<u64> {
    futures_executor::block_on(async {
        let size = bucket.store.head(key).await.ok()?.size;
        let mut want = FOOTER_GUESS.min(size);
        loop {
            let tail = bucket.store.get_range(key, size - want..size).await.ok()?;
            let mut reader = ParquetMetaDataReader::new();
            match reader.try_parse_sized(&tail, size) {
                Ok(()) => {
                    let rows = reader.finish().ok()?.file_metadata().num_rows();
                    return u64::try_from(rows).ok();
                }
                Err(parquet::errors::ParquetError::NeedMoreData(needed))
                    if (needed as u64) > want && (needed as u64) <= size =>
                {
                    want = needed as u64;
                }
                Err(_) => return None,
            }
        }
    })
}
