//! Buckets: the object store an `--object-store-url` names, opened once and shared by whatever
//! keeps state there (the control plane's documents now, index data later).
//!
//! [`open`] understands three forms:
//!
//! - `s3://bucket/prefix`: an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, moto), configured
//!   from the standard `AWS_*` variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, …) as object_store reads them.
//!   Conditional writes are on ([`S3ConditionalPut::ETagMatch`]): `PutMode::Create` is a PUT
//!   with `If-None-Match: *`, `PutMode::Update` one with `If-Match`, so the store itself arbitrates
//!   between writers; the ETag of an `If-Match` goes out in the form the server compares
//!   ([`if_match`]: Ceph RGW wants it without S3's quotes). TLS is rustls with ring as the only
//!   crypto provider.
//! - `file:///absolute/dir`: a local (or network-mounted) directory, created if missing.
//! - `memory://`: a new, empty in-memory store, for tests (two opens are two stores).
//!
//! The prefix is where everything of this deployment lives inside the store; callers join
//! their own names under [`Bucket::prefix`].
//!
//! # Runtime
//! An S3 store needs a tokio runtime for its sockets and its retry timers, but the callers of
//! a bucket are synchronous code on blocking threads (the catalog, the engine's indexer) that
//! drive each call with a plain executor. So the S3 store is wrapped in [`Spawned`]: every call
//! runs as a task on this module's own small runtime (two threads, started at the first open)
//! and its results, streams included, come back over channels that any executor can wait on.
//!
//! object_store's own `SpawnedReqwestConnector` is not enough for this: it moves only the HTTP
//! exchange onto a runtime, while the retry loop around it (`tokio::time::sleep` between
//! attempts) still runs in the caller's future and panics under a plain executor the first
//! time a request is retried.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

use crate::{Error, Result};

pub mod if_match;

use if_match::IfMatchForm;

/// An opened object store and the prefix inside it under which this deployment's objects live.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// The store; usable from any thread, with or without a tokio runtime.
    pub store: Arc<dyn ObjectStore>,
    /// Where this deployment's objects live in `store` (empty: at its root).
    pub prefix: ObjectPath,
}

/// Opens the store named by `url` (see the module docs), with the `AWS_*` variables of this
/// process for an `s3://` URL.
pub fn open(url: &str) -> Result<Bucket> {
    open_with_env(url, std::env::vars())
}

/// [`open`] with the environment given as `(name, value)` pairs; only names starting with
/// `AWS_` are used.
pub fn open_with_env(url: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Bucket> {
    let invalid = |reason: String| Error::Url {
        url: url.to_owned(),
        reason,
    };
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("the bucket name is missing".into()));
        }
        let prefix = parse_prefix(prefix).map_err(invalid)?;
        let mut builder = AmazonS3Builder::new();
        for (name, value) in env {
            if !name.starts_with("AWS_") {
                continue;
            }
            if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(key, value);
            }
        }
        install_ring();
        let store = builder
            .with_bucket_name(bucket)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .build()
            .map_err(|err| invalid(err.to_string()))?;
        let store = Spawned::new(Arc::new(store))?;
        return Ok(Bucket {
            store: Arc::new(store),
            prefix,
        });
    }
    if let Some(dir) = url.strip_prefix("file://") {
        if !dir.starts_with('/') {
            return Err(invalid(
                "a file URL needs an absolute path, e.g. file:///var/lib/larch".into(),
            ));
        }
        std::fs::create_dir_all(dir)
            .map_err(|err| invalid(format!("cannot create directory {dir}: {err}")))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|err| invalid(err.to_string()))?
            .with_fsync(true);
        return Ok(Bucket {
            store: Arc::new(store),
            prefix: ObjectPath::default(),
        });
    }
    if let Some(rest) = url.strip_prefix("memory://") {
        return Ok(Bucket {
            store: Arc::new(InMemory::new()),
            prefix: parse_prefix(rest).map_err(invalid)?,
        });
    }
    Err(invalid(
        "expected s3://bucket/prefix, file:///absolute/dir or memory://".into(),
    ))
}

impl Bucket {
    /// `name` (one or more `/`-separated parts) under this bucket's prefix.
    pub fn path(&self, name: &str) -> ObjectPath {
        name.split('/')
            .filter(|part| !part.is_empty())
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    /// The bucket and `path` in it, for messages.
    pub fn describe(&self, path: &ObjectPath) -> String {
        format!("{}/{path}", self.store)
    }
}

impl Bucket {
    /// Checks that the store honours the conditional writes an index's writer lease and
    /// manifest rely on, with a probe object under the prefix (deleted afterwards): a create
    /// (`If-None-Match: *`) of an existing object is refused, and a replace (`If-Match`) lands
    /// on the current ETag and is refused on an older one. A store that cannot replace
    /// conditionally at all (`NotImplemented`: a local directory) passes: Larch overwrites
    /// there, logged. `Err` says what the store did wrong, e.g. an S3-compatible server that
    /// refuses every `If-Match` PUT, on which a writer could never renew its lease.
    pub fn check_conditional_writes(&self) -> std::result::Result<(), String> {
        use object_store::{ObjectStoreExt, PutMode, UpdateVersion};
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let probe = self.path(&format!(
            "conditional-write-probe-{}-{nanos}",
            std::process::id()
        ));
        let store = &self.store;
        let put = |bytes: &'static [u8], mode: PutMode| {
            futures_executor::block_on(store.put_opts(
                &probe,
                PutPayload::from_static(bytes),
                PutOptions::from(mode),
            ))
        };
        let checked = (|| {
            let first = put(b"1", PutMode::Create)
                .map_err(|err| format!("cannot create {}: {err}", self.describe(&probe)))?;
            match put(b"2", PutMode::Create) {
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {}
                Ok(_) => {
                    return Err("a create with If-None-Match: * replaced an existing object: the store does not honour conditional creates".to_owned());
                }
                Err(err) => return Err(format!("a conditional create failed: {err}")),
            }
            let current = UpdateVersion {
                e_tag: first.e_tag.clone(),
                version: first.version.clone(),
            };
            match put(b"3", PutMode::Update(current.clone())) {
                Ok(_) => {}
                // A local directory: replaced by overwriting (see the engine's `put_replacing`).
                Err(object_store::Error::NotImplemented { .. }) => return Ok(()),
                Err(object_store::Error::Precondition { .. }) => {
                    return Err("a replace with If-Match on the object's current ETag was refused: the store does not honour conditional replaces (S3's If-Match on PUT), which an index's writer lease and manifest need".to_owned());
                }
                Err(err) => return Err(format!("a conditional replace failed: {err}")),
            }
            match put(b"4", PutMode::Update(current)) {
                Err(object_store::Error::Precondition { .. }) => Ok(()),
                Ok(_) => Err("a replace with If-Match on an old ETag landed: the store does not honour conditional replaces".to_owned()),
                Err(err) => Err(format!("a conditional replace failed: {err}")),
            }
        })();
        if let Err(err) = futures_executor::block_on(store.delete(&probe)) {
            tracing::debug!(object = %self.describe(&probe), error = %err, "cannot delete the conditional-write probe");
        }
        checked.map_err(|reason| {
            format!(
                "the object store at {} cannot hold Larch's indexes: {reason}",
                self.describe(&self.prefix)
            )
        })
    }
}

/// The prefix in `text` (`a/b/`, `a/b` or empty), refusing empty, `.` and `..` parts.
fn parse_prefix(text: &str) -> std::result::Result<ObjectPath, String> {
    let text = text.trim_end_matches('/');
    if text.is_empty() {
        return Ok(ObjectPath::default());
    }
    ObjectPath::parse(text).map_err(|err| format!("invalid prefix {text:?}: {err}"))
}

/// Makes ring the process's rustls crypto provider (the only one built in); a provider
/// installed before is kept.
fn install_ring() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

/// The runtime every [`Spawned`] store runs its calls on, started at the first use.
fn runtime() -> Result<tokio::runtime::Handle> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("larch-bucket")
            .enable_all()
            .build()
            .map_err(|err| err.to_string())
    });
    match runtime {
        Ok(runtime) => Ok(runtime.handle().clone()),
        Err(message) => Err(Error::Store {
            what: "starting the object-store runtime".into(),
            message: message.clone(),
        }),
    }
}

/// A store whose calls run on the module's runtime (see the module docs), sending each
/// `If-Match` in the form its server accepts ([`if_match`]).
#[derive(Debug)]
pub struct Spawned {
    inner: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Handle,
    /// How this server wants the ETag of an `If-Match` PUT (S3-compatible servers differ).
    if_match: Arc<IfMatchForm>,
}

impl Spawned {
    /// `inner`, run on this module's runtime.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Result<Spawned> {
        Ok(Spawned {
            inner,
            runtime: runtime()?,
            if_match: Arc::default(),
        })
    }

    /// Runs `future` on the runtime and waits for it from whatever executor polls this.
    async fn run<T: Send + 'static>(
        &self,
        future: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> object_store::Result<T> {
        joined(self.runtime.spawn(future).await)?
    }

    /// A stream whose items `stream` yields on the runtime, passed over a channel.
    fn forward<T: Send + 'static>(
        &self,
        stream: BoxStream<'static, object_store::Result<T>>,
    ) -> BoxStream<'static, object_store::Result<T>> {
        forward(&self.runtime, stream)
    }
}

fn forward<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    mut stream: BoxStream<'static, object_store::Result<T>>,
) -> BoxStream<'static, object_store::Result<T>> {
    let (send, receive) = tokio::sync::mpsc::channel(16);
    runtime.spawn(async move {
        while let Some(item) = stream.next().await {
            if send.send(item).await.is_err() {
                // Nobody reads any more.
                break;
            }
        }
    });
    futures_util::stream::unfold(receive, |mut receive| async move {
        receive.recv().await.map(|item| (item, receive))
    })
    .boxed()
}

/// The result of a task of the runtime: a panic is passed on, a cancelled task (the runtime
/// shutting down) is an error.
fn joined<T>(result: std::result::Result<T, tokio::task::JoinError>) -> object_store::Result<T> {
    match result {
        Ok(value) => Ok(value),
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => Err(object_store::Error::Generic {
            store: "bucket",
            source: Box::new(err),
        }),
    }
}

impl fmt::Display for Spawned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait]
impl ObjectStore for Spawned {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let (inner, location) = (Arc::clone(&self.inner), location.clone());
        let if_match = Arc::clone(&self.if_match);
        self.run(async move {
            let put = |payload, opts| inner.put_opts(&location, payload, opts);
            if_match.put(put, payload, opts).await
        })
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let (inner, location) = (Arc::clone(&self.inner), location.clone());
        let upload = self
            .run(async move { inner.put_multipart_opts(&location, opts).await })
            .await?;
        Ok(Box::new(SpawnedUpload {
            inner: Some(upload),
            runtime: self.runtime.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let (inner, location) = (Arc::clone(&self.inner), location.clone());
        let mut result = self
            .run(async move { inner.get_opts(&location, options).await })
            .await?;
        result.payload = match result.payload {
            GetResultPayload::Stream(stream) => GetResultPayload::Stream(self.forward(stream)),
            file @ GetResultPayload::File(..) => file,
        };
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &ObjectPath,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        let (inner, location, ranges) =
            (Arc::clone(&self.inner), location.clone(), ranges.to_vec());
        self.run(async move { inner.get_ranges(&location, &ranges).await })
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        let _entered = self.runtime.enter();
        self.forward(self.inner.delete_stream(locations))
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let _entered = self.runtime.enter();
        self.forward(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&ObjectPath>,
        offset: &ObjectPath,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let _entered = self.runtime.enter();
        self.forward(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        let (inner, prefix) = (Arc::clone(&self.inner), prefix.cloned());
        self.run(async move { inner.list_with_delimiter(prefix.as_ref()).await })
            .await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let (inner, from, to) = (Arc::clone(&self.inner), from.clone(), to.clone());
        self.run(async move { inner.copy_opts(&from, &to, options).await })
            .await
    }
}

/// A multipart upload of a [`Spawned`] store, each call run on the runtime.
#[derive(Debug)]
struct SpawnedUpload {
    /// `None` only while `complete` or `abort` runs (or after one of them panicked).
    inner: Option<Box<dyn MultipartUpload>>,
    runtime: tokio::runtime::Handle,
}

impl SpawnedUpload {
    /// Runs `call` on the upload on the runtime, then takes the upload back.
    async fn with_upload<T: Send + 'static>(
        &mut self,
        call: impl for<'a> FnOnce(
            &'a mut Box<dyn MultipartUpload>,
        )
            -> futures_util::future::BoxFuture<'a, object_store::Result<T>>
        + Send
        + 'static,
    ) -> object_store::Result<T> {
        let Some(mut upload) = self.inner.take() else {
            return Err(object_store::Error::Generic {
                store: "bucket",
                source: "the multipart upload was lost by an earlier failure".into(),
            });
        };
        let (upload, result) = joined(
            self.runtime
                .spawn(async move {
                    let result = call(&mut upload).await;
                    (upload, result)
                })
                .await,
        )?;
        self.inner = Some(upload);
        result
    }
}

#[async_trait]
impl MultipartUpload for SpawnedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let Some(upload) = self.inner.as_mut() else {
            return Box::pin(futures_util::future::ready(Err(
                object_store::Error::Generic {
                    store: "bucket",
                    source: "the multipart upload was lost by an earlier failure".into(),
                },
            )));
        };
        let part = {
            let _entered = self.runtime.enter();
            upload.put_part(data)
        };
        let task = self.runtime.spawn(part);
        Box::pin(async move { joined(task.await)? })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.with_upload(|upload| upload.complete()).await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.with_upload(|upload| upload.abort()).await
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn memory_and_local_directories_pass_the_conditional_write_probe() {
        let memory = open("memory://probe").unwrap();
        memory.check_conditional_writes().unwrap();
        // A local directory cannot replace conditionally: Larch overwrites there (logged).
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        open(&url).unwrap().check_conditional_writes().unwrap();
        let left = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, 0, "the probe object is deleted");
    }

    use object_store::ObjectStoreExt;

    use super::*;

    fn open_env(url: &str) -> Result<Bucket> {
        open_with_env(
            url,
            [
                ("AWS_ACCESS_KEY_ID".to_owned(), "test".to_owned()),
                ("AWS_SECRET_ACCESS_KEY".to_owned(), "test".to_owned()),
                ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
                (
                    "AWS_ENDPOINT_URL".to_owned(),
                    "http://127.0.0.1:9".to_owned(),
                ),
                ("AWS_ALLOW_HTTP".to_owned(), "true".to_owned()),
            ],
        )
    }

    #[test]
    fn an_s3_url_gives_the_bucket_and_its_prefix() {
        let bucket = open_env("s3://larch/deploy/one/").expect("open");
        assert_eq!(bucket.prefix.as_ref(), "deploy/one");
        assert_eq!(bucket.path("catalog").as_ref(), "deploy/one/catalog");
        assert!(
            bucket.store.to_string().contains("larch"),
            "{}",
            bucket.store
        );
        let bare = open_env("s3://larch").expect("open");
        assert_eq!(bare.prefix.as_ref(), "");
        assert_eq!(bare.path("a/b").as_ref(), "a/b");
    }

    #[test]
    fn bad_urls_are_refused_naming_the_flag() {
        for (url, why) in [
            ("s3:///prefix", "bucket name is missing"),
            ("s3://larch/a//b", "invalid prefix"),
            ("s3://larch/a/../b", "invalid prefix"),
            ("file://relative/dir", "absolute path"),
            ("gs://larch", "expected s3://bucket/prefix"),
            ("/just/a/path", "expected s3://bucket/prefix"),
        ] {
            let err = open_env(url).expect_err(url).to_string();
            assert!(err.starts_with("--object-store-url"), "{err}");
            assert!(err.contains(url), "{err}");
            assert!(err.contains(why), "{url}: {err}");
        }
    }

    #[test]
    fn ring_is_the_only_crypto_provider_in_the_workspace() {
        // Cargo.lock holds every package some feature of the workspace turns on: aws-lc-rs
        // would arrive with object_store's `aws` feature or reqwest's `rustls`.
        let lock = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock");
        let lock = std::fs::read_to_string(lock).expect("the workspace's Cargo.lock");
        for package in ["aws-lc-rs", "aws-lc-sys"] {
            assert!(
                !lock.contains(&format!("name = \"{package}\"")),
                "{package} is in Cargo.lock: keep object_store on aws-base + reqwest + ring and \
                 reqwest on rustls-no-provider"
            );
        }
        assert!(lock.contains("name = \"ring\""), "ring is the provider");
    }

    #[test]
    fn a_file_url_is_a_directory_created_if_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("deep/bucket");
        let bucket = open_env(&format!("file://{}", root.display())).expect("open");
        futures_executor::block_on(
            bucket
                .store
                .put(&bucket.path("x/y"), PutPayload::from_static(b"hi")),
        )
        .expect("put");
        assert_eq!(std::fs::read(root.join("x/y")).expect("written"), b"hi");
    }

    #[test]
    fn a_spawned_store_works_from_a_thread_without_a_runtime() {
        let store = Spawned::new(Arc::new(InMemory::new())).expect("runtime");
        let path = ObjectPath::from("a/b");
        let got = futures_executor::block_on(async {
            store.put(&path, PutPayload::from_static(b"v")).await?;
            let listed: Vec<_> = store.list(None).collect().await;
            let bytes = store.get(&path).await?.bytes().await?;
            Ok::<_, object_store::Error>((listed.len(), bytes))
        })
        .expect("calls");
        assert_eq!(got, (1, bytes::Bytes::from_static(b"v")));
    }
}
