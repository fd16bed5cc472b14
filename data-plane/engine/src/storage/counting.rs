//! [`CountingStore`]: an object store that passes every call to another one and notes every
//! delete, so tests can show that a path deleted nothing (or exactly what it deleted).

use std::{
    fmt,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, path::Path,
};

/// `inner`, with a record of every path a delete was asked for. Clones share the record.
#[derive(Debug, Clone)]
pub(crate) struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    deleted: Arc<Mutex<Vec<String>>>,
}

impl CountingStore {
    /// Counts the deletes sent to `inner`.
    pub(crate) fn new(inner: Arc<dyn ObjectStore>) -> Self {
        CountingStore {
            inner,
            deleted: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Every path a delete was asked for so far, in order.
    pub(crate) fn deleted(&self) -> Vec<String> {
        self.deleted.lock().expect("not poisoned").clone()
    }

    /// How many deletes were asked for so far.
    pub(crate) fn deletes(&self) -> usize {
        self.deleted.lock().expect("not poisoned").len()
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let deleted = Arc::clone(&self.deleted);
        let noted = locations
            .inspect(move |location| {
                if let Ok(location) = location {
                    deleted
                        .lock()
                        .expect("not poisoned")
                        .push(location.to_string());
                }
            })
            .boxed();
        self.inner.delete_stream(noted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
