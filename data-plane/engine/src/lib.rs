//! Larch's storage and search engine: indexes, namespaces, records, metadata
//! filters and exact vector search.
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
//! | `namespace` | the per-namespace store: rows in one contiguous `Vec<f32>`, a sorted id map, and the mutations it applies |
//! | `wal` | the write-ahead log of an index: record framing and checksums, group commit, replay |
//! | `codec` | the binary (little-endian) encoding of one logged change |
//! | `storage` | index directories: the checksummed `index.meta`, creation, recovery, removal |
//! | `search` | the `VectorSearch` trait an ANN index can slot into, the exact (brute-force) implementation and a bounded top-k heap |
//! | `distance` | dense distance kernels (auto-vectorized loops) and the sparse dot product |
//! | `filter` | [`Filter`]: parsing and evaluating metadata filters |
//! | `metadata` | [`Metadata`] values, their validation and JSON conversion |
//! | `vectors` | dense and sparse value validation, [`SparseVector`] |
//! | `validate` | request structs → typed, validated values |
//! | `requests` | the public request and response structs |
//! | `pagination` | opaque pagination tokens |
//! | `types` | typed values that cannot be invalid: [`Metric`], [`Dimension`], [`VectorId`], [`Namespace`] |
//! | [`limits`] | every limit the engine enforces |
//! | `error` | [`Error`], its transport-neutral [`ErrorCode`] and [`Result`] |
//!
//! # Durability
//!
//! [`Engine::new`] keeps everything in memory and writes no files (for
//! tests). [`Engine::open`] keeps each index in its own directory under a
//! root:
//!
//! ```text
//! <root>/<index>/index.meta        dimension and metric, checksummed
//! <root>/<index>/wal-000001.log    the write-ahead log
//! <root>/.<index>.tmp/             an index being created or removed (a crash leftover)
//! ```
//!
//! What is guaranteed:
//!
//! - **An acknowledged write has been `fdatasync`ed to the write-ahead log.**
//!   Every change (upsert, update, delete, delete all, namespace creation and
//!   deletion) is validated, encoded as one checksummed log record, appended
//!   and synced *before* it is applied in memory and the call returns.
//!   Concurrent writers share one sync (group commit). A reader never sees a
//!   change that is not durable yet, and a change whose append fails is not
//!   applied. [`Engine::create_index`] returns once the index directory is on
//!   disk.
//! - **Process crash** (kill -9, panic, out of memory): every acknowledged
//!   write survives; [`Engine::open_index`] replays the log at the next start
//!   and reproduces exactly the namespaces and records there were. A write
//!   that was in flight may or may not be there, but never half-applied.
//! - **Power loss or kernel crash**: the same, given a disk that honours
//!   flushes (no volatile write cache that acknowledges `fdatasync` early).
//! - **Damage**: a torn record at the very end of the log (a crash in the
//!   middle of an unacknowledged write) is dropped with a warning and cut off.
//!   Anything else — a bad record followed by more data, a bad file header, a
//!   damaged `index.meta` — stops recovery with [`Error::Corrupt`], naming the
//!   file and byte offset: partial data is never served.
//! - **Faults**: when the disk is full ([`ErrorCode::ResourceExhausted`]) or
//!   read-only or failing ([`ErrorCode::Unavailable`]), writes fail with the
//!   reason and reads keep working. After a failed `fdatasync` an index
//!   refuses every write until it is reopened, since the kernel may have
//!   dropped the unsynced data.
//!
//! The log files are written with plain `std::fs` (appends and
//! `fdatasync`), because `object_store` can neither append nor fsync; the
//! immutable segment files and manifest that come next will go through it.
//! For now the log grows without bound and recovery replays all of it;
//! numbered log files are the seam for flushing to segments.
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

mod codec;
mod distance;
mod engine;
mod error;
mod filter;
mod index;
pub mod limits;
mod metadata;
mod namespace;
mod pagination;
mod requests;
mod search;
mod storage;
mod types;
mod validate;
mod vectors;
mod wal;

#[cfg(test)]
mod test_support;

pub use engine::Engine;
pub use error::{Error, ErrorCode, Result};
pub use filter::Filter;
pub use index::Index;
pub use metadata::{JsonObject, Metadata, MetadataValue, metadata_to_json};
pub use requests::{
    DeleteRequest, FetchByMetadataRequest, FetchByMetadataResponse, FetchRequest, FetchResponse,
    IndexStats, ListNamespacesRequest, ListNamespacesResponse, ListRequest, ListResponse,
    NamespaceInfo, QueryRequest, QueryResponse, Record, ScoredRecord, SparseInput, UpdateRequest,
    UpsertRequest, VectorInput,
};
pub use types::{Dimension, IndexConfig, Metric, Namespace, VectorId};
pub use vectors::SparseVector;
