//! The engine's one async-to-sync bridge over `object_store`, below both users of a store
//! (`storage`: segments and manifests; `objlog`: the object write-ahead log): [`wait`] drives
//! a store's future on the calling thread, and [`put_replacing`] is the conditional replace
//! with its one fallback for stores that cannot replace conditionally.

use std::{
    future::Future,
    sync::atomic::{AtomicBool, Ordering},
};

use object_store::{
    ObjectStore, PutMode, PutOptions, PutPayload, PutResult, path::Path as ObjectPath,
};

/// Runs an `object_store` future to completion on this thread: the single
/// async-to-sync bridge of the engine (see `storage`'s module docs).
pub(crate) fn wait<F: Future>(future: F) -> F::Output {
    futures_executor::block_on(future)
}

/// Puts `payload` at `location` with `mode`, on this thread. A store that creates
/// conditionally but cannot replace conditionally (`LocalFileSystem`, a shared directory)
/// answers `PutMode::Update` with `NotImplemented`; it gets an overwrite instead (an atomic
/// rename there), and `warn` is called the first time `overwrites` sees that happen.
pub(crate) fn put_replacing(
    store: &dyn ObjectStore,
    location: &ObjectPath,
    payload: PutPayload,
    mode: PutMode,
    overwrites: &AtomicBool,
    warn: impl FnOnce(),
) -> object_store::Result<PutResult> {
    let update = matches!(mode, PutMode::Update(_));
    match wait(store.put_opts(location, payload.clone(), PutOptions::from(mode))) {
        Err(object_store::Error::NotImplemented { .. }) if update => {
            if !overwrites.swap(true, Ordering::Relaxed) {
                warn();
            }
            wait(store.put_opts(location, payload, PutOptions::from(PutMode::Overwrite)))
        }
        result => result,
    }
}
