//! Larch's storage and search engine: indexes, namespaces, records, metadata
//! filters, and vector search (HNSW graphs built in the background, exact
//! scans where they are cheaper or the graph has not caught up).
//!
//! This crate is the transport-free core of the data plane. It is plain,
//! synchronous Rust: no async runtime, no gRPC, no protobuf. The gRPC server
//! (and later a REST twin) converts a wire request into one of the request
//! structs of this crate, calls one method on an [`Index`], and converts the
//! result back. **All validation happens here**, so two transports cannot
//! drift apart: the server passes raw client values straight through, and
//! every error names the field path as the client wrote it
//! (`vectors[2].values: has 3 values but the index dimension is 4`).
//!
//! The semantics follow Pinecone's data plane (see `pinecone-api.md` §4):
//! cosine, dot product and squared euclidean scores, Mongo-style metadata
//! filters, `""` / `"__default__"` as the default namespace, and the same
//! limits (see [`limits`]).
//!
//! # Layout
//!
//! | Module | Concern |
//! |---|---|
//! | `engine` | [`Engine`]: all indexes of this node, by name, in memory or each in its own directory |
//! | `index` | [`Index`]: one index; validates requests, locks namespaces, runs reads and the single write path |
//! | `namespace` | the per-namespace store: rows in chunks of contiguous `f32`s, a sorted id map, the mutations it applies, and what changed since the last flush; its children `namespace::ann`, `namespace::sparse` and `namespace::search` |
//! | `wal` | the write-ahead log of an index: record framing and checksums, group commit, log sequence numbers, rotation, replay |
//! | `codec` | the binary (little-endian) encoding of one logged change, and of values in segment blocks |
//! | `flush` | flushing the memtable to segments, the manifest swap, compaction, loading segments at recovery; [`FlushPolicy`], [`StorageStats`] |
//! | `segment` | the segment file: one namespace's records (vectors contiguous) and tombstones, a checksum per block |
//! | `manifest` | the manifest: live segments per namespace, where log replay starts and the LSN it numbers on from |
//! | `storage` | the `Storage` trait (immutable files, atomically swapped manifest) and its `object_store` implementation |
//! | `store_io` | the one async-to-sync bridge over `object_store` (`wait`) and the conditional replace with its fallback, shared by `storage` and `objlog` |
//! | `backup` | backups: a consistent cut of an index copied beside it (segments shared), [`BackupInfo`], and indexes restored from one |
//! | `dir` | index directories: the checksummed `index.meta`, creation, recovery, removal |
//! | `namespace::sparse` | a namespace's inverted index over sparse dimensions (posting lists of rows and values): sparse and hybrid queries score only the rows their dimensions reach |
//! | `namespace::search` | a validated query that scores rows, and the bounded top-k heap every search ranks with |
//! | `namespace::ann` | a namespace's ANN state: which rows its graph covers, the query path (graph, exact over pending rows, exact for selective filters), background build steps |
//! | `hnsw` | the HNSW graph: insertion with the neighbour heuristic, filtered search, int8 codes, cheap snapshot clones, its file format |
//! | [`pressure`] | write backpressure: the memory budget and the log backlog, refused with [`Error::Overloaded`] and a retry hint |
//! | [`interrupt`] | how long-running scans learn that their request was abandoned, and stop |
//! | `indexer` | the engine's background workers running build steps when writes leave rows pending, several namespaces at once |
//! | `distance` | dense distance kernels (AVX2 + FMA where the CPU has them, portable loops elsewhere) and the sparse dot product |
//! | `filter` | [`Filter`]: parsing and evaluating metadata filters |
//! | `bitmap` | the metadata index of a namespace: per field and value, a compressed bitmap of its rows; a filter's exact matching rows by set algebra |
//! | `metadata` | [`Metadata`] values, their validation and JSON conversion |
//! | `vectors` | dense and sparse value validation, [`SparseVector`] |
//! | `validate` | request structs → typed, validated values |
//! | `requests` | the public request and response structs |
//! | `record` | a validated record and the validated mutations of a namespace: what validation builds, the log and segments encode, and the store applies |
//! | `locks` | lock helpers: a lock poisoned by an earlier panic is an internal error |
//! | `timing` | [`StorageTimer`], the receiver of storage timings an engine is built with ([`Engine::with_storage_timer`]), held by each index's log and segments |
//! | `pagination` | opaque pagination tokens |
//! | `types` | typed values that cannot be invalid: [`Metric`], [`Dimension`], [`VectorType`], [`VectorId`], [`Namespace`] |
//! | [`limits`] | every limit the engine enforces |
//! | [`answer`] | answer budgets: reads refuse, record by record, an answer that would pass [`AnswerBudget`] |
//! | `error` | [`Error`], its transport-neutral [`ErrorCode`] and [`Result`] |
//!
//! The modules form a DAG, read bottom-up: `error`, `limits`, `timing`, `locks`
//! and the typed values at the bottom; `record`, `codec`, `segment`, `manifest`
//! and `wal` above them; then `flush`, `namespace` (with its ANN state and
//! search), `index`, `dir`, `backup`, and `engine` on top. No module uses one that uses
//! it; `tests/module_graph.rs` fails, naming the cycle, if one ever does.
//!
//! # Durability
//!
//! [`Engine::new`] keeps everything in memory and writes no files (for
//! tests). [`Engine::open`] keeps each index in its own directory under a
//! root:
//!
//! ```text
//! <root>/<index>/index.meta              dimension and metric, checksummed
//! <root>/<index>/wal-000042.log          write-ahead log files from the manifest's first one on
//! <root>/<index>/manifest                the live segments per namespace, and where replay starts
//! <root>/<index>/segments/seg-000007.seg immutable segments: records and tombstones of one namespace
//! <root>/<index>/graphs/<hash>-<time>.graph the last saved HNSW graph of a namespace (derived data)
//! <root>/.<index>.tmp/                   an index being created or removed (a crash leftover)
//! ```
//!
//! **Writes.** Every change (upsert, update, delete, delete all, namespace
//! creation and deletion) is validated, encoded as one checksummed log
//! record, appended and `fdatasync`ed *before* it is applied in memory and
//! the call returns. Concurrent writers share one sync (group commit).
//! Memory (the memtable) always holds the whole index, and reads are served
//! from it.
//!
//! **Flush.** When the active log file passes [`FlushPolicy::wal_bytes`]
//! (64 MiB by default; [`Engine::open_with`] sets another), the write that
//! noticed it, once its own change is durable and applied, flushes: with
//! writers paused for a moment (readers are not), it starts the next log
//! file and takes what each namespace changed since the last flush; then,
//! holding no index lock, it writes one segment per namespace touched (the
//! current state of each changed id, a tombstone for each deleted one, a
//! *cleared* mark after `delete_all` or for a new namespace, its schema
//! fields), swaps in a new manifest listing them (dropping the segments of
//! deleted or cleared namespaces) and naming the new log file as where
//! replay starts, and only then deletes the older log files and the
//! segments no longer listed. [`Index::flush`] flushes on demand;
//! [`Index::storage_stats`] reports segment and log sizes.
//!
//! **Compaction.** After a flush, a namespace with more than
//! [`FlushPolicy::max_segments`] segments (8 by default) has them all merged,
//! oldest first, into one holding only the newest version of each live
//! record (no tombstones); the merged segment is written, the manifest
//! swapped, then the inputs deleted. Deleted and overwritten records leave
//! the disk.
//!
//! **Storage.** `index.meta` and the log are plain `std::fs` files, because
//! `object_store` can neither append nor `fsync`. Segments and the manifest
//! go through one small `Storage` trait built on `object_store` (local
//! filesystem by default, with every file synced before it counts; an
//! in-memory store in tests): files are immutable once written and the
//! manifest is swapped atomically (a rename locally, a conditional PUT on
//! stores that support it), so an S3-compatible store can be plugged in
//! later. `object_store` is async; the engine drives its futures on the
//! calling thread, which is a blocking thread (the server calls the engine
//! through `spawn_blocking`). [`Engine::open_on_store`] keeps everything in a
//! shared object store instead (`index.meta` too, created once), under
//! `<prefix>/indexes/<project>/<name>/<incarnation>/`; there start-up deletes
//! no object it does not recognise (layout in the `storage` module), and the
//! log is the object write-ahead log (`objlog`): a write is acknowledged once
//! its group-commit batch is stored as a new `wal/<seq>` object, by the one
//! process holding the index's writer lease, and a fresh process with an
//! empty local directory recovers every acknowledged write (see
//! `index/log.rs`; [`Engine::with_object_log`] sets the lease TTL and batch
//! size).
//!
//! What is guaranteed:
//!
//! - **An acknowledged write has been `fdatasync`ed to the write-ahead log**
//!   and stays there until a manifest that covers it is durable. A reader
//!   never sees a change that is not durable yet, and a change whose append
//!   fails is not applied. [`Engine::create_index`] returns once the index
//!   directory is on disk.
//! - **Process crash** (kill -9, panic, out of memory): every acknowledged
//!   write survives; [`Engine::open_index`] loads the segments the manifest
//!   lists, replays the log from the manifest's first file and reproduces
//!   exactly the namespaces and records there were. A write that was in
//!   flight may or may not be there, but never half-applied. A crash in the
//!   middle of a flush or compaction loses nothing: until the new manifest
//!   is in place the old one and the log files stand, and the files written
//!   meanwhile (not listed) are deleted at the next start.
//! - **Power loss or kernel crash**: the same, given a disk that honours
//!   flushes (no volatile write cache that acknowledges `fdatasync` early).
//! - **Damage**: a torn record at the very end of the log (a crash in the
//!   middle of an unacknowledged write) is dropped with a warning and cut off.
//!   Anything else stops recovery with [`Error::Corrupt`], naming the file
//!   and byte offset: a bad log record followed by more data, a bad log
//!   header, a missing log file, a damaged `index.meta` or manifest, a listed
//!   segment that is missing, has the wrong size, or fails the checksum of
//!   its header or any block (vectors, ids, sparse values, metadata,
//!   tombstones, namespace). Partial data is never served, and nothing is
//!   deleted from an index that fails to open.
//! - **Log sequence numbers** ([`Index::last_lsn`]): every change takes the
//!   next one, and they only grow, across flushes and restarts: the
//!   manifest keeps the LSN of the last record its segments cover, and
//!   recovery counts the replayed records on top. (In a shared store a
//!   change's LSN is its log batch's number: shared within a batch, still
//!   only growing.)
//! - **Faults**: when the disk is full ([`ErrorCode::ResourceExhausted`]) or
//!   read-only or failing ([`ErrorCode::Unavailable`]), writes fail with the
//!   reason and reads keep working. After a failed `fdatasync` an index
//!   refuses every write until it is reopened, since the kernel may have
//!   dropped the unsynced data. A failed flush changes nothing on disk that
//!   matters; it is retried (after a second) by a later write, and what it
//!   took from memory is written by the next flush.
//!
//! ```
//! use larch_engine::{Dimension, Engine, IndexConfig, Metric, UpsertRequest, VectorInput, FetchRequest};
//!
//! let dir = tempfile::tempdir()?;
//! let config = IndexConfig { dimension: Dimension::new(2)?, metric: Metric::Cosine };
//! let engine = Engine::open(dir.path());
//! let index = engine.create_index("movies", config)?;
//! let vector = VectorInput { id: "a".into(), values: vec![1.0, 0.0], ..Default::default() };
//! index.upsert(UpsertRequest { namespace: "films".into(), vectors: vec![vector] })?; // on disk now
//! drop((index, engine));
//!
//! // A restart: the server opens every index its catalog knows.
//! let engine = Engine::open(dir.path());
//! let index = engine.open_index("movies", config)?;
//! let fetched = index.fetch(FetchRequest { namespace: "films".into(), ids: vec!["a".into()] })?;
//! assert_eq!(fetched.vectors[0].values, [1.0, 0.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Example
//!
//! ```
//! use larch_engine::{Dimension, Engine, IndexConfig, Metric, QueryRequest, UpsertRequest, VectorInput};
//!
//! let engine = Engine::new();
//! let config = IndexConfig { dimension: Dimension::new(2)?, metric: Metric::Cosine };
//! let index = engine.create_index("movies", config)?;
//!
//! let vector = |id: &str, values: Vec<f32>| VectorInput { id: id.into(), values, ..Default::default() };
//! let upserted = index.upsert(UpsertRequest {
//!     namespace: "films".into(),
//!     vectors: vec![vector("a", vec![1.0, 0.0]), vector("b", vec![0.0, 1.0])],
//! })?;
//! assert_eq!(upserted, 2);
//!
//! let response = index.query(QueryRequest {
//!     namespace: "films".into(),
//!     top_k: 1,
//!     vector: vec![0.9, 0.1],
//!     ..Default::default()
//! })?;
//! assert_eq!(response.matches[0].id, "a");
//! # Ok::<(), larch_engine::Error>(())
//! ```

pub mod answer;
mod backup;
mod bitmap;
mod codec;
mod dir;
mod distance;
mod engine;
mod error;
mod filter;
mod flush;
/// Entry points for the fuzz targets in `fuzz/`: the private storage decoders, on arbitrary bytes.
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod hnsw;
mod index;
mod indexer;
pub mod interrupt;
pub mod limits;
mod locks;
mod manifest;
mod metadata;
mod namespace;
#[cfg_attr(not(test), allow(dead_code))]
// followers (tailing the log) come with the next step of issue 17
mod objlog;
mod pagination;
mod params;
pub mod pressure;
mod record;
mod requests;
mod segment;
mod storage;
mod store_io;
mod timing;
mod types;
mod validate;
mod vectors;
mod wal;

#[cfg(test)]
mod test_support;

pub use answer::AnswerBudget;
pub use backup::BackupInfo;
pub use engine::{Engine, Preference};
pub use error::{Error, ErrorCode, Result};
pub use filter::Filter;
pub use flush::{FlushPolicy, StorageStats};
pub use index::{CatchUp, FollowerStatus, Index, IndexingStatus};
pub use metadata::{JsonObject, Metadata, MetadataValue, metadata_to_json};
/// The object store crate of [`Engine::open_on_store`]'s signature, so callers build stores
/// with the same version.
pub use object_store;
pub use objlog::ObjectLogConfig;
pub use params::{Quantization, SearchParams};
pub use requests::{
    DeleteRequest, FetchByMetadataRequest, FetchByMetadataResponse, FetchRequest, FetchResponse,
    IndexStats, ListNamespacesRequest, ListNamespacesResponse, ListRequest, ListResponse,
    NamespaceInfo, QueryRequest, QueryResponse, Record, ScoredRecord, UpdateRequest, UpsertRequest,
    VectorInput,
};
pub use timing::StorageTimer;
pub use types::{Dimension, IndexConfig, Metric, Namespace, VectorId, VectorType};
pub use vectors::{SparseInput, SparseVector};
