//! What the fuzz targets in `fuzz_targets/` share: an allocator that refuses oversized
//! allocations, the async runtime, API keys, and small fixtures (an index with records, a
//! control plane without a data plane).
//!
//! # Layout
//! - [`Limited`]: the global allocator; an allocation above `LARCH_FUZZ_MAX_ALLOC_MB` aborts
//!   with a backtrace, so "allocates more than the input justifies" is a crash like a panic.
//! - [`block_on`]: runs a future on the one current-thread runtime of the process.
//! - [`key`], [`KEY_HEADER`]: an admin API key the targets' requests carry.
//! - [`seeded_index`]: an in-memory index with a few records in two namespaces.
//! - [`control_plane`]: the control plane's REST router over an empty in-memory catalog.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, OnceLock};

use larch_auth::{ApiKey, Grant, KeyStore, StoredKey};
use larch_catalog::{
    AttachError, AttachMode, Catalog, DataPlaneHost, HostError, IndexKey, PortPolicy,
};
use larch_engine::{
    Dimension, Engine, Index, IndexConfig, Metric, SearchParams, UpsertRequest, VectorInput,
};

/// The largest single allocation a target may make, unless `LARCH_FUZZ_MAX_ALLOC_MB` says
/// otherwise: inputs are at most a few hundred KiB, so anything near this is an allocation
/// sized by a number read from the input rather than by the input itself.
pub const DEFAULT_MAX_ALLOC_MB: usize = 256;

/// The allocation limit in bytes, from `LARCH_FUZZ_MAX_ALLOC_MB`.
fn max_alloc_bytes() -> usize {
    std::env::var("LARCH_FUZZ_MAX_ALLOC_MB")
        .ok()
        .and_then(|mb| mb.parse::<usize>().ok())
        .unwrap_or(DEFAULT_MAX_ALLOC_MB)
        .saturating_mul(1 << 20)
}

/// The system allocator, except that an allocation above the limit [`init`] read prints a
/// backtrace and aborts (libFuzzer then saves the input as a crash). libFuzzer's own
/// `-malloc_limit_mb` needs a sanitizer's malloc hooks, which `--sanitizer none` builds lack.
pub struct Limited;

// SAFETY: every call is forwarded unchanged to `System`; the only addition is an abort before
// an oversized allocation, which never returns memory.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: forwarded with the caller's own guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: forwarded with the caller's own guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's own guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: forwarded with the caller's own guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Aborts with a backtrace if `size` is above the limit. The backtrace and the message
/// allocate, but far less than the limit, so this does not recurse.
fn check(size: usize) {
    // The limit is read from the environment once; before that, nothing is refused.
    let Some(limit) = LIMIT.get() else {
        return;
    };
    if size > *limit {
        let trace = std::backtrace::Backtrace::force_capture();
        let _ = writeln!(
            std::io::stderr(),
            "==larch-fuzz== allocation of {size} bytes is above the limit of {} MiB \
             (LARCH_FUZZ_MAX_ALLOC_MB)\n{trace}",
            limit >> 20
        );
        std::process::abort();
    }
}

/// Set by [`init`]: reading the environment allocates, so the allocator must not do it itself.
static LIMIT: OnceLock<usize> = OnceLock::new();

#[global_allocator]
static ALLOCATOR: Limited = Limited;

/// Arms the allocation limit; every target calls it first (it is cheap after the first call).
pub fn init() {
    if LIMIT.get().is_none() {
        let limit = max_alloc_bytes();
        let _ = LIMIT.set(limit);
    }
}

/// Runs `future` to completion on the process's current-thread runtime (engine calls go to
/// tokio's blocking pool and the data plane's query pool, as in the server).
pub fn block_on<F: Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds")
        })
        .block_on(future)
}

/// The header REST requests carry the key in.
pub const KEY_HEADER: &str = "api-key";

/// An admin key (project `default`, `ProjectEditor`) and the store that knows it.
pub fn key() -> &'static (ApiKey, KeyStore) {
    static KEY: OnceLock<(ApiKey, KeyStore)> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = ApiKey::generate();
        let store = KeyStore::new();
        store.insert(StoredKey::new(&key, Grant::admin()));
        store.slow_down_failed_auth(false);
        (key, store)
    })
}

/// The engine every target's indexes live in: in memory, one per process.
pub fn engine() -> &'static Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE.get_or_init(|| Arc::new(Engine::new()))
}

/// The name of the index [`seeded_index`] creates.
pub const INDEX: &str = "fuzz";

/// Creates index [`INDEX`] of dimension 2 with `metric` in [`engine`] (replacing one left by
/// the previous input), holding three records with metadata in the default namespace and one
/// in namespace `ns`, so queries, filters and updates find something.
pub fn seeded_index(metric: Metric) -> Arc<Index> {
    let engine = engine();
    let _ = engine.drop_index(INDEX);
    let config = IndexConfig {
        dimension: Dimension::new(2).expect("2 is a valid dimension"),
        metric,
    };
    let index = engine
        .create_index(INDEX, config)
        .expect("a fresh in-memory index");
    let record = |id: &str, values: [f32; 2], metadata: serde_json::Value| VectorInput {
        id: id.to_owned(),
        values: values.to_vec(),
        sparse_values: None,
        metadata: metadata.as_object().cloned(),
    };
    let seeded = [
        (
            "",
            vec![
                record(
                    "a",
                    [1.0, 0.0],
                    serde_json::json!({"genre": "drama", "year": 2001}),
                ),
                record(
                    "b",
                    [0.0, 1.0],
                    serde_json::json!({"genre": "comedy", "tags": ["x", "y"]}),
                ),
                record(
                    "c",
                    [0.6, 0.8],
                    serde_json::json!({"rated": true, "year": 1999.5}),
                ),
            ],
        ),
        (
            "ns",
            vec![record(
                "d",
                [-1.0, 0.5],
                serde_json::json!({"genre": "drama"}),
            )],
        ),
    ];
    for (namespace, vectors) in seeded {
        index
            .upsert(UpsertRequest {
                namespace: namespace.to_owned(),
                vectors,
            })
            .expect("the seed records are valid");
    }
    index
}

/// A metric chosen by `byte`.
pub fn metric(byte: u8) -> Metric {
    Metric::ALL[usize::from(byte) % Metric::ALL.len()]
}

/// A data-plane host that attaches every index and serves nothing: the control plane's
/// catalog without data-plane servers.
struct NoDataPlane;

impl DataPlaneHost for NoDataPlane {
    fn attach(
        &self,
        _: &IndexKey,
        _: IndexConfig,
        _: SearchParams,
        _: u16,
        _: AttachMode,
    ) -> Result<u16, AttachError> {
        Ok(5081)
    }

    fn configure(&self, _: &IndexKey, _: SearchParams) -> Result<(), HostError> {
        Ok(())
    }

    fn detach(&self, _: &IndexKey) -> Result<(), HostError> {
        Ok(())
    }
}

/// The control plane's REST router over a new, empty in-memory catalog.
pub fn control_plane() -> axum::Router {
    let catalog = Catalog::new(Arc::new(NoDataPlane), PortPolicy::Ephemeral, "127.0.0.1");
    let indexes = larch_control_plane::indexes::Indexes::new(Arc::new(catalog));
    larch_control_plane::rest::router(indexes, key().1.clone())
}
