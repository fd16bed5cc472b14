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
//! | `engine` | [`Engine`]: all indexes of this node, by name |
//! | `index` | [`Index`]: one index; validates requests, locks namespaces, runs reads and the single write path |
//! | `namespace` | the per-namespace store: rows in one contiguous `Vec<f32>`, a sorted id map, and the mutations it applies |
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
//! State lives in memory for now. Every mutation is first validated into a
//! typed write operation and then applied through one function per level
//! (`Index::commit` for records, `create_namespace` / `delete_namespace` for
//! namespaces), which is where a write-ahead log append will go.
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
mod types;
mod validate;
mod vectors;

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
