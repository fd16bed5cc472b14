//! Every limit the engine enforces, in one place.
//!
//! The numbers are Pinecone's published limits (`pinecone-api.md` §4). Error
//! messages quote them, and transports may reuse them for documentation.

/// Largest dense dimension of an index.
pub const MAX_DIMENSION: u32 = 20_000;
/// Longest vector id, in characters.
pub const MAX_ID_CHARS: usize = 512;
/// Longest namespace name, in characters.
pub const MAX_NAMESPACE_CHARS: usize = 512;
/// Longest `prefix` of a list request, in characters.
pub const MAX_PREFIX_CHARS: usize = 512;
/// Most vectors in one upsert.
pub const MAX_UPSERT_VECTORS: usize = 1000;
/// Most ids in one fetch.
pub const MAX_FETCH_IDS: usize = 1000;
/// Most ids in one delete.
pub const MAX_DELETE_IDS: usize = 1000;
/// Most non-zero entries in one sparse vector.
pub const MAX_SPARSE_ENTRIES: usize = 2048;
/// Largest metadata of one record, as compact JSON (40 KB).
pub const MAX_METADATA_BYTES: usize = 40 * 1024;
/// Largest `top_k` of a query.
pub const MAX_TOP_K: u32 = 10_000;
/// Most values in one `$in` or `$nin` list.
pub const MAX_FILTER_VALUES: usize = 10_000;
/// Deepest nesting of filter objects (through `$and` / `$or`).
pub const MAX_FILTER_DEPTH: usize = 10;
/// Largest page of a list (ids or namespaces) request.
pub const MAX_LIST_LIMIT: u32 = 100;
/// Page size of a list request that gives no limit.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
/// Largest page of a fetch-by-metadata request.
pub const MAX_FETCH_BY_METADATA_LIMIT: u32 = 10_000;
/// Page size of a fetch-by-metadata request that gives no limit.
pub const DEFAULT_FETCH_BY_METADATA_LIMIT: u32 = 100;
/// Most fields in a namespace's metadata schema.
pub const MAX_SCHEMA_FIELDS: usize = 50;
/// Largest single write-ahead log record (one write, encoded), 256 MiB: above
/// the largest upsert the other limits allow, so it only ever refuses a
/// delete or metadata update by filter that matches millions of records.
/// Recovery never allocates more than this for one record.
pub const MAX_LOG_RECORD_BYTES: usize = 256 * 1024 * 1024;
