//! The transport-neutral side of the data plane: the facade both transports call.
//!
//! [`IndexHandle`] has one method per `VectorService` operation, each taking the [`Caller`]
//! and a domain request (the engine's request structs, or the few in this module the engine
//! has no struct for) — e.g. [`IndexHandle::query`]`(&caller, QueryRequest)`. Each method owns
//! what used to be spread over the handlers: the pool it runs on (writes on the blocking pool,
//! reads on the query pool), the per-request checks (the per-key query cap for the reads that
//! scan, the answer budget, the wire rules below), the one engine call (the engine validates),
//! and the answer's conversion to the transport's type ([`FromAnswer`]), made on the pool
//! thread that computed it, so a large answer's conversion or JSON encoding never holds up an
//! async worker. A gRPC or REST handler only decodes its wire request, calls one method and
//! encodes the answer.
//!
//! Authorization is not done here: the auth layers ([`larch_auth::http::AuthenticateLayer`],
//! then the per-route check) authorize every request by its path — the same
//! [`larch_auth::Action`] table for gRPC and REST — before its body is read, so a caller
//! without the rights gets PERMISSION_DENIED whatever its request holds, on both transports,
//! and a handler only runs for an authorized [`larch_auth::Principal`].
//!
//! The few wire-level rules that are not the engine's — how the default namespace is named
//! for each API version, the refused batch query, what a namespace schema may declare, how
//! counts saturate and records are keyed — live here too, so the transports cannot drift.
//!
//! # Freshness
//!
//! Writes (upsert, update, delete) and queries answer [`Sequenced`]: the answer and the
//! index's log sequence number ([`Index::last_lsn`]), which the transports send as Pinecone's
//! [`REQUEST_LSN_HEADER`] (read once the write is applied: at least the write's own LSN) and
//! [`MAX_INDEXED_LSN_HEADER`] (read before the query looks: every change with an LSN up to
//! it is in the answer). So a query whose LSN is not below a write's reflects that write.

use std::sync::Arc;
use std::time::Duration;

use larch_engine::{
    AnswerBudget, DeleteRequest, Dimension, Engine, Error, FetchByMetadataRequest,
    FetchByMetadataResponse, FetchRequest, FetchResponse, Index, IndexConfig, JsonObject,
    ListNamespacesRequest, ListRequest, ListResponse, NamespaceInfo, QueryRequest, QueryResponse,
    Record, Result, UpdateRequest, UpsertRequest,
};
use larch_observe::keyed::{KeyPermit, KeyedGate};
use larch_observe::{Cancel, Limits};

use crate::import;

/// How long a client refused by the per-key query cap is asked to wait before retrying: about
/// the time a filtered scan takes to free its slot.
const QUERY_PUSHBACK: Duration = Duration::from_millis(200);

/// One index of an engine, looked up per request, so a deleted index answers NOT_FOUND at once
/// even while its server is still draining.
#[derive(Clone)]
pub struct IndexHandle {
    engine: Arc<Engine>,
    index: String,
    /// The most bytes the records of one answer may take (`--max-response-bytes`).
    budget: AnswerBudget,
    /// Queries per API key running or queued (`--max-queries-per-key`), shared by every index
    /// of the process.
    queries: Arc<KeyedGate>,
    /// Bulk imports of the process (off unless the server was given an import root).
    imports: import::Imports,
}

impl IndexHandle {
    /// The index called `index` of `engine`, with the default limits (see
    /// [`IndexHandle::new_with`]).
    pub fn new(engine: Arc<Engine>, index: impl Into<String>) -> IndexHandle {
        IndexHandle::new_with(engine, index, &Limits::default())
    }

    /// The index called `index` of `engine`, holding answers to `limits`' answer budget and
    /// each key's queries to its per-key cap (shared with every handle made from clones of
    /// `limits`).
    pub fn new_with(engine: Arc<Engine>, index: impl Into<String>, limits: &Limits) -> IndexHandle {
        IndexHandle {
            engine,
            index: index.into(),
            budget: limits.answer_budget(),
            queries: Arc::clone(limits.queries()),
            imports: import::Imports::default(),
        }
    }

    /// The same handle, running bulk imports with `imports`.
    pub fn with_imports(mut self, imports: import::Imports) -> IndexHandle {
        self.imports = imports;
        self
    }

    /// The answer budget reads that return records are held to.
    pub fn answer_budget(&self) -> AnswerBudget {
        self.budget
    }

    /// Runs the query (or other filtered scan) `op` of API key `key_id` like
    /// [`IndexHandle::read`], once the key has a slot under the per-key cap; the slot is
    /// held until `op` ends (or is skipped). Past the cap: [`Error::Overloaded`]
    /// (RESOURCE_EXHAUSTED with a retry pushback) at once. `None` (no key, which the auth
    /// layers never let through) is not capped.
    pub async fn capped<T, F>(&self, key_id: Option<&str>, op: F) -> larch_engine::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Index) -> larch_engine::Result<T> + Send + 'static,
    {
        let permit: Option<KeyPermit> = match key_id {
            None => None,
            Some(key_id) => Some(self.queries.try_acquire(key_id).ok_or_else(|| {
                tracing::debug!(
                    key_id,
                    limit = self.queries.max(),
                    "query refused: per-key cap"
                );
                Error::Overloaded {
                    message: format!(
                        "this API key already has {} queries running or queued (the limit \
                         per key, --max-queries-per-key); retry when one has finished",
                        self.queries.max()
                    ),
                    retry_after: QUERY_PUSHBACK,
                }
            })?),
        };
        self.read(move |index| {
            // Given back when the read ends, whether it ran or was skipped.
            let _permit = permit;
            op(index)
        })
        .await
    }

    /// Runs `op` on the index, on the blocking pool (engine calls are CPU-bound and
    /// synchronous, and writes wait for an fsync). If the request is abandoned (its deadline
    /// passed or the client went away) before `op` starts, `op` never runs.
    pub async fn run<T, F>(&self, op: F) -> larch_engine::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Index) -> larch_engine::Result<T> + Send + 'static,
    {
        let index = self.engine.index(&self.index)?;
        // In the request's span, so its log lines carry the request id.
        let span = tracing::Span::current();
        let (cancel, _guard) = Cancel::guard();
        tokio::task::spawn_blocking(move || {
            if cancel.is_cancelled() {
                return Err(abandoned());
            }
            span.in_scope(|| op(&index))
        })
        .await
        .map_err(|err| Error::Internal(format!("engine task failed: {err}")))?
    }

    /// Runs the read `op` on the query pool (see `pool`): one thread per core
    /// for every read of every index. If the request is abandoned, `op` does not start, or,
    /// if it is running, its scans stop early (nobody receives the result).
    pub async fn read<T, F>(&self, op: F) -> larch_engine::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Index) -> larch_engine::Result<T> + Send + 'static,
    {
        let index = self.engine.index(&self.index)?;
        let span = tracing::Span::current();
        let (cancel, _guard) = Cancel::guard();
        crate::pool::run(move || {
            // Queued behind other reads past this request's deadline: skip it.
            if cancel.is_cancelled() {
                return Err(abandoned());
            }
            // Abandoned while running: long scans stop early (see `larch_engine::interrupt`).
            larch_engine::interrupt::run(cancel.flag(), || span.in_scope(|| op(&index)))
        })
        .await
        .ok_or_else(|| Error::Internal("the query failed unexpectedly".into()))?
    }
}

/// The operations of `VectorService`, one per RPC (and REST route). Each takes the caller and a
/// domain request and gives the transport's answer `A`, made on the thread that ran the engine
/// call (see the [module docs](self)). Writes run on the blocking pool, reads on the query
/// pool; queries and fetches by metadata (filtered scans) hold a slot of the caller's per-key
/// cap; answers with records are held to the answer budget.
impl IndexHandle {
    /// Inserts or replaces records; with the LSN once they are applied.
    pub async fn upsert<A: FromAnswer<Upserted>>(
        &self,
        _caller: &Caller,
        request: UpsertRequest,
    ) -> Result<Sequenced<A>> {
        self.run(move |index| {
            let upserted_count = index.upsert(request)?;
            Sequenced::after_write(index, Upserted { upserted_count })
        })
        .await
    }

    /// Deletes records by id, all of a namespace's, or those matching a filter; with the LSN
    /// once the delete is applied.
    pub async fn delete<A: FromAnswer<Deleted>>(
        &self,
        _caller: &Caller,
        request: DeleteRequest,
    ) -> Result<Sequenced<A>> {
        self.run(move |index| {
            index.delete(request)?;
            Sequenced::after_write(index, Deleted)
        })
        .await
    }

    /// Changes one record by id, or the metadata of the records matching a filter; with the
    /// LSN once the change is applied.
    pub async fn update<A: FromAnswer<Updated>>(
        &self,
        _caller: &Caller,
        request: UpdateRequest,
    ) -> Result<Sequenced<A>> {
        self.run(move |index| {
            let matched_records = index.update(request)?;
            Sequenced::after_write(index, Updated { matched_records })
        })
        .await
    }

    /// Reads records by id.
    pub async fn fetch<A: FromAnswer<FetchResponse>>(
        &self,
        _caller: &Caller,
        request: FetchRequest,
    ) -> Result<A> {
        let budget = self.budget;
        self.read(move |index| A::from_answer(index.fetch_within(request, budget)?))
            .await
    }

    /// Lists record ids, a page at a time.
    pub async fn list<A: FromAnswer<ListResponse>>(
        &self,
        _caller: &Caller,
        request: ListRequest,
    ) -> Result<A> {
        let budget = self.budget;
        self.read(move |index| A::from_answer(index.list_within(request, budget)?))
            .await
    }

    /// Finds the records most similar to a vector or to a stored record, under the caller's
    /// per-key cap; with the LSN every change up to which the answer reflects.
    pub async fn query<A: FromAnswer<QueryResponse>>(
        &self,
        caller: &Caller,
        request: QueryRequest,
    ) -> Result<Sequenced<A>> {
        let budget = self.budget;
        self.capped(caller.key_id(), move |index| {
            // Read before the query looks: a change with an LSN up to this one is applied, or
            // still holds its namespace's lock, which the query then waits for.
            let lsn = index.last_lsn();
            let answer = A::from_answer(index.query_within(request, budget)?)?;
            Ok(Sequenced { answer, lsn })
        })
        .await
    }

    /// Reads the records whose metadata matches a filter, a page at a time, under the
    /// caller's per-key cap.
    pub async fn fetch_by_metadata<A: FromAnswer<FetchByMetadataResponse>>(
        &self,
        caller: &Caller,
        request: FetchByMetadataRequest,
    ) -> Result<A> {
        let budget = self.budget;
        self.capped(caller.key_id(), move |index| {
            A::from_answer(index.fetch_by_metadata_within(request, budget)?)
        })
        .await
    }

    /// Record counts per namespace, named as the caller names them.
    pub async fn describe_index_stats<A: FromAnswer<IndexStats>>(
        &self,
        caller: &Caller,
        request: DescribeIndexStatsRequest,
    ) -> Result<A> {
        let DescribeIndexStatsRequest { filter } = request;
        let default_name = caller.default_namespace;
        self.read(move |index| {
            let larch_engine::IndexStats {
                dimension,
                metric,
                namespaces,
                total_vector_count,
            } = index.describe_stats(filter)?;
            A::from_answer(IndexStats {
                namespaces: namespaces
                    .into_iter()
                    .map(|(name, count)| (display_namespace(name, default_name), count))
                    .collect(),
                dimension: (dimension != Dimension::SPARSE).then(|| dimension.get()),
                metric: metric.to_string(),
                vector_type: IndexConfig { dimension, metric }.vector_type().as_str(),
                total_vector_count,
            })
        })
        .await
    }

    /// One page of namespaces, named as the caller names them.
    pub async fn list_namespaces<A: FromAnswer<NamespacePage>>(
        &self,
        caller: &Caller,
        request: ListNamespacesRequest,
    ) -> Result<A> {
        let default_name = caller.default_namespace;
        self.read(move |index| {
            let larch_engine::ListNamespacesResponse {
                namespaces,
                next,
                total_count,
            } = index.list_namespaces(request)?;
            A::from_answer(NamespacePage {
                namespaces: namespaces
                    .into_iter()
                    .map(|info| NamespaceDescription::new(info, default_name))
                    .collect(),
                next,
                total_count,
            })
        })
        .await
    }

    /// One namespace, named as the caller names it.
    pub async fn describe_namespace<A: FromAnswer<NamespaceDescription>>(
        &self,
        caller: &Caller,
        request: DescribeNamespaceRequest,
    ) -> Result<A> {
        let DescribeNamespaceRequest { namespace } = request;
        let default_name = caller.default_namespace;
        self.read(move |index| {
            let info = index.describe_namespace(&namespace)?;
            A::from_answer(NamespaceDescription::new(info, default_name))
        })
        .await
    }

    /// Creates a namespace, with the metadata fields its schema declares (only filterable
    /// ones may be declared).
    pub async fn create_namespace<A: FromAnswer<NamespaceDescription>>(
        &self,
        caller: &Caller,
        request: CreateNamespaceRequest,
    ) -> Result<A> {
        let CreateNamespaceRequest { name, schema } = request;
        let fields = schema.map(declared_fields).transpose()?;
        let default_name = caller.default_namespace;
        self.run(move |index| {
            let info = index.create_namespace(&name, fields)?;
            A::from_answer(NamespaceDescription::new(info, default_name))
        })
        .await
    }

    /// Deletes a namespace and its records.
    pub async fn delete_namespace<A: FromAnswer<Deleted>>(
        &self,
        _caller: &Caller,
        request: DeleteNamespaceRequest,
    ) -> Result<A> {
        let DeleteNamespaceRequest { namespace } = request;
        self.run(move |index| {
            index.delete_namespace(&namespace)?;
            A::from_answer(Deleted)
        })
        .await
    }
}

/// Who is asking, as far as the facade cares: the API key the auth layer authenticated (its
/// queries share one per-key cap) and how the caller names the default namespace (by the API
/// version it sends). Each transport builds it from its request; handlers never look inside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    key_id: Option<String>,
    default_namespace: &'static str,
}

impl Caller {
    /// The caller `principal` (attached by the auth layer; `None` only where no auth layer
    /// runs, e.g. a bare [`crate::VectorApi`] in tests, and then uncapped) speaking API version
    /// `api_version` (the [`API_VERSION_HEADER`] it sent, if any).
    pub fn new(principal: Option<&larch_auth::Principal>, api_version: Option<&str>) -> Caller {
        Caller {
            key_id: principal.map(|principal| principal.key_id.clone()),
            default_namespace: default_namespace_name(api_version),
        }
    }

    /// The id of the caller's API key.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// How the caller names the default namespace (see [`default_namespace_name`]).
    pub fn default_namespace(&self) -> &'static str {
        self.default_namespace
    }
}

/// Bulk imports of the index ([`crate::import`]), which Pinecone serves over REST only.
impl IndexHandle {
    /// Starts importing `uri` into the index; answers the import's id. Listing the files and
    /// reading their footers is blocking work: it runs on the blocking pool, as writes do.
    pub async fn start_import(
        &self,
        uri: String,
        error_mode: import::ErrorMode,
    ) -> import::Result<String> {
        let (imports, engine, index) = (
            self.imports.clone(),
            Arc::clone(&self.engine),
            self.index.clone(),
        );
        self.run(move |_| Ok(imports.start(&engine, &index, &uri, error_mode)))
            .await?
    }

    /// A page of the index's imports by id (see [`import::Imports::list`]).
    pub fn list_imports(
        &self,
        limit: Option<u32>,
        token: Option<&str>,
    ) -> import::Result<(Vec<import::ImportState>, Option<String>)> {
        self.imports.list(&self.index, limit, token)
    }

    /// The index's import `id`.
    pub fn describe_import(&self, id: &str) -> import::Result<import::ImportState> {
        self.imports.describe(&self.index, id)
    }

    /// Cancels the index's import `id` (see [`import::Imports::cancel`]).
    pub fn cancel_import(&self, id: &str) -> import::Result<()> {
        self.imports.cancel(&self.index, id)
    }
}

/// A transport's answer to one operation, made from the facade's domain answer `T` on the
/// thread that ran the engine call (so REST's JSON encoding of a large answer, say, never
/// holds up an async worker). Implemented by the protobuf responses (in [`crate::convert`])
/// and by REST's encoded JSON bodies (in [`crate::rest`]).
///
/// A trait of this crate rather than `From`: the orphan rule forbids implementing `From`
/// between the proto crate's and the engine's types, and REST's encoding can fail.
pub trait FromAnswer<T>: Sized + Send + 'static {
    /// `answer` in the transport's type.
    ///
    /// # Errors
    ///
    /// Only if the answer cannot be encoded (an internal error).
    fn from_answer(answer: T) -> Result<Self>;
}

/// The header (gRPC metadata or HTTP) carrying the LSN of a write (upsert, update, delete), as
/// Pinecone names it: the index's LSN once the write was applied.
pub const REQUEST_LSN_HEADER: &str = "x-pinecone-request-lsn";

/// The header (gRPC metadata or HTTP) carrying the LSN up to which a query's answer reflects
/// every change, as Pinecone names it.
pub const MAX_INDEXED_LSN_HEADER: &str = "x-pinecone-max-indexed-lsn";

/// An answer and the index's log sequence number that dates it (see the [module
/// docs](self#freshness)): for a write, at least the write's own LSN ([`REQUEST_LSN_HEADER`]);
/// for a query, an LSN every change up to which the answer reflects
/// ([`MAX_INDEXED_LSN_HEADER`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequenced<A> {
    /// The transport's answer.
    pub answer: A,
    /// The LSN ([`Index::last_lsn`]).
    pub lsn: u64,
}

impl<A> Sequenced<A> {
    /// `answer` to a write just applied to `index`, in the transport's type, with the index's
    /// LSN now (the write's own, or a later one if other writes were applied meanwhile).
    fn after_write<T>(index: &Index, answer: T) -> Result<Sequenced<A>>
    where
        A: FromAnswer<T>,
    {
        let lsn = index.last_lsn();
        Ok(Sequenced {
            answer: A::from_answer(answer)?,
            lsn,
        })
    }
}

/// The answer to an upsert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upserted {
    /// Records written.
    pub upserted_count: u32,
}

/// The answer to an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Updated {
    /// Records matched (and changed, unless a dry run).
    pub matched_records: u32,
}

/// The answer to a delete of records or of a namespace: nothing but success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted;

/// `DescribeIndexStats`: the filter, which the engine refuses when non-empty (as serverless
/// Pinecone does).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DescribeIndexStatsRequest {
    /// Refused when non-empty.
    pub filter: Option<JsonObject>,
}

/// `DescribeNamespace`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribeNamespaceRequest {
    /// The namespace's name.
    pub namespace: String,
}

/// `DeleteNamespace`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteNamespaceRequest {
    /// The namespace's name.
    pub namespace: String,
}

/// `CreateNamespace`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateNamespaceRequest {
    /// The new namespace's name.
    pub name: String,
    /// The schema's `(field, filterable)` pairs, if a schema was sent; only filterable fields
    /// can be declared (see [`declared_fields`]).
    pub schema: Option<Vec<(String, bool)>>,
}

/// Record counts of an index, with namespaces named as the caller names them.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexStats {
    /// Record count per namespace, sorted by the engine's names.
    pub namespaces: Vec<(String, u64)>,
    /// The index dimension; none for a sparse index.
    pub dimension: Option<u32>,
    /// The index metric, as Pinecone spells it.
    pub metric: String,
    /// `dense` or `sparse`.
    pub vector_type: &'static str,
    /// Sum of the namespace counts.
    pub total_vector_count: u64,
}

/// A namespace as both transports describe it, named as the caller names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceDescription {
    /// Its name (the default namespace's per the caller's API version).
    pub name: String,
    /// Records in it.
    pub record_count: u64,
    /// Estimated stored bytes.
    pub size_bytes: u64,
    /// The metadata fields declared at creation (each filterable), if a schema was declared.
    pub schema_fields: Option<Vec<String>>,
}

impl NamespaceDescription {
    /// The engine's `info`, with the default namespace called `default_name`.
    pub fn new(info: NamespaceInfo, default_name: &str) -> NamespaceDescription {
        let NamespaceInfo {
            name,
            record_count,
            size_bytes,
            schema_fields,
        } = info;
        NamespaceDescription {
            name: display_namespace(name, default_name),
            record_count,
            size_bytes,
            schema_fields,
        }
    }
}

/// One page of namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePage {
    /// This page, sorted by name.
    pub namespaces: Vec<NamespaceDescription>,
    /// Token for the next page, if more namespaces remain.
    pub next: Option<String>,
    /// Matching namespaces over all pages.
    pub total_count: u32,
}

/// Records keyed by id, as Pinecone's fetch answers carry them, each converted by `vector`.
pub fn keyed_by_id<V, M>(records: Vec<Record>, vector: impl Fn(Record) -> V) -> M
where
    M: FromIterator<(String, V)>,
{
    records
        .into_iter()
        .map(|record| (record.id.clone(), vector(record)))
        .collect()
}

/// `n`, or `u32::MAX` if it does not fit (counts of wire fields narrower than the engine's).
pub fn saturating_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `n`, or `i32::MAX` if it does not fit (counts of wire fields narrower than the engine's).
pub fn saturating_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The result of work skipped because its request was abandoned; nobody receives it.
fn abandoned() -> Error {
    Error::Internal("the request was abandoned before its work started".into())
}

/// The header (gRPC metadata or HTTP) carrying Pinecone's API version.
pub const API_VERSION_HEADER: &str = "x-pinecone-api-version";

/// How the default namespace is named in responses: Pinecone calls it `__default__` from API
/// version 2025-04 on (sent by clients in `x-pinecone-api-version`) and `""` before.
pub fn default_namespace_name(api_version: Option<&str>) -> &'static str {
    match api_version.map(str::trim) {
        // Versions are dates (YYYY-MM), so text order is time order.
        Some(v) if is_date(v) && v >= "2025-04" => "__default__",
        _ => "",
    }
}

/// Whether `v` is a `YYYY-MM` version.
fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || c.is_ascii_digit())
}

/// The engine's name of a namespace (`""` for the default one) as a response shows it.
pub fn display_namespace(name: String, default_name: &str) -> String {
    if name.is_empty() {
        default_name.to_owned()
    } else {
        name
    }
}

/// Refuses the deprecated batch form of query (`queries`), which neither Pinecone's current
/// clients nor Larch use.
pub fn refuse_batch_queries(count: usize) -> larch_engine::Result<()> {
    if count == 0 {
        return Ok(());
    }
    Err(Error::InvalidArgument {
        field: "queries".to_owned(),
        message: "the deprecated batch form is not supported; send one query per request \
                  with `vector` or `id`"
            .to_owned(),
    })
}

/// The field names a namespace schema declares, from `(name, filterable)` pairs: only
/// filterable fields can be declared.
pub fn declared_fields(
    fields: impl IntoIterator<Item = (String, bool)>,
) -> larch_engine::Result<Vec<String>> {
    fields
        .into_iter()
        .map(|(field, filterable)| {
            if filterable {
                Ok(field)
            } else {
                Err(Error::InvalidArgument {
                    field: format!("schema.fields.{field}.filterable"),
                    message: "only filterable fields can be declared; leave a field out of \
                              the schema instead of setting filterable to false"
                        .to_owned(),
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_namespace_is_named_by_api_version() {
        assert_eq!(default_namespace_name(None), "");
        assert_eq!(default_namespace_name(Some("2025-01")), "");
        assert_eq!(default_namespace_name(Some("garbage")), "");
        assert_eq!(default_namespace_name(Some("2025-04")), "__default__");
        assert_eq!(default_namespace_name(Some("2026-07")), "__default__");
        assert_eq!(
            display_namespace(String::new(), "__default__"),
            "__default__"
        );
        assert_eq!(display_namespace("films".into(), "__default__"), "films");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_of_an_abandoned_request_does_not_start() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::time::{Duration, Instant};
        let engine = Arc::new(Engine::new());
        let config = larch_engine::IndexConfig {
            dimension: larch_engine::Dimension::new(2).expect("dimension"),
            metric: larch_engine::Metric::Cosine,
        };
        engine.create_index("i", config).expect("index");
        let handle = IndexHandle::new(engine, "i");
        // Occupy every query thread until released (or, should the test fail, for at most
        // 30 s: the pool is shared by the other tests of this binary).
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (started, released) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let mut busy = Vec::new();
        for _ in 0..threads {
            let (handle, started, released) =
                (handle.clone(), Arc::clone(&started), Arc::clone(&released));
            busy.push(tokio::spawn(async move {
                handle
                    .read(move |_| {
                        started.fetch_add(1, Ordering::SeqCst);
                        let until = Instant::now() + Duration::from_secs(30);
                        while !released.load(Ordering::SeqCst) && Instant::now() < until {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Ok(())
                    })
                    .await
            }));
        }
        while started.load(Ordering::SeqCst) < threads {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // A read queued behind them, abandoned (as at its deadline) before it starts.
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let queued = handle.read(move |_| {
            flag.store(true, Ordering::SeqCst);
            Ok(())
        });
        let abandoned = tokio::time::timeout(Duration::from_millis(50), queued).await;
        released.store(true, Ordering::SeqCst);
        assert!(abandoned.is_err(), "the pool is busy: the read waits");
        for task in busy {
            task.await.expect("joined").expect("read");
        }
        // Reads queued after the abandoned one have run, so the pool went past it.
        for _ in 0..threads {
            handle.read(|_| Ok(())).await.expect("read");
        }
        assert!(!ran.load(Ordering::SeqCst), "abandoned work ran");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_keys_query_holds_its_slot_until_its_read_ends() {
        use std::time::Duration;
        let engine = Arc::new(Engine::new());
        let config = larch_engine::IndexConfig {
            dimension: larch_engine::Dimension::new(2).expect("dimension"),
            metric: larch_engine::Metric::Cosine,
        };
        engine.create_index("q", config).expect("index");
        let limits = Limits::new(larch_observe::LimitSettings {
            max_queries_per_key: 1,
            ..larch_observe::LimitSettings::default()
        });
        let handle = IndexHandle::new_with(engine, "q", &limits);
        // Key a's query runs until released (or, should the test fail, for at most 30 s).
        let (entered, started) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let held = tokio::spawn({
            let handle = handle.clone();
            async move {
                handle
                    .capped(Some("a"), move |_| {
                        let _ = entered.send(());
                        let _ = released.recv_timeout(Duration::from_secs(30));
                        Ok(())
                    })
                    .await
            }
        });
        started.await.expect("the held query started");
        assert_eq!(limits.queries().held_by("a"), 1);
        let err = handle.capped(Some("a"), |_| Ok(())).await.unwrap_err();
        assert_eq!(err.code(), larch_engine::ErrorCode::ResourceExhausted);
        assert_eq!(err.retry_after(), Some(QUERY_PUSHBACK));
        assert!(err.to_string().contains("--max-queries-per-key"), "{err}");
        // Another key is not held up (it may wait for a pool thread, not for the cap).
        let other = tokio::spawn({
            let handle = handle.clone();
            async move { handle.capped(Some("b"), |_| Ok(())).await }
        });
        release.send(()).expect("the held query waits");
        held.await.expect("joined").expect("held query");
        other.await.expect("joined").expect("key b served");
        // The slot came back when the read ended.
        assert_eq!(limits.queries().held_by("a"), 0);
        handle
            .capped(Some("a"), |_| Ok(()))
            .await
            .expect("key a again");
    }

    /// The domain answer itself, as a transport's answer.
    struct Raw<T>(T);

    impl<T: Send + 'static> FromAnswer<T> for Raw<T> {
        fn from_answer(answer: T) -> Result<Self> {
            Ok(Raw(answer))
        }
    }

    fn caller(key_id: &str, api_version: Option<&str>) -> Caller {
        let grant = larch_auth::Grant {
            project_id: "p".into(),
            roles: vec![larch_auth::Role::DataPlaneViewer],
            index_names: None,
            is_admin: false,
        };
        Caller::new(
            Some(&larch_auth::Principal::new(key_id, grant)),
            api_version,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_facade_caps_the_callers_scans_but_not_its_other_reads() {
        use std::time::Duration;
        let engine = Arc::new(Engine::new());
        let config = larch_engine::IndexConfig {
            dimension: larch_engine::Dimension::new(2).expect("dimension"),
            metric: larch_engine::Metric::Cosine,
        };
        engine.create_index("f", config).expect("index");
        let limits = Limits::new(larch_observe::LimitSettings {
            max_queries_per_key: 1,
            ..larch_observe::LimitSettings::default()
        });
        let handle = IndexHandle::new_with(engine, "f", &limits);
        let (a, b) = (caller("a", None), caller("b", None));
        let Sequenced {
            answer: Raw(upserted),
            lsn,
        } = handle
            .upsert(
                &a,
                UpsertRequest {
                    namespace: String::new(),
                    vectors: vec![larch_engine::VectorInput {
                        id: "v".into(),
                        values: vec![1.0, 0.0],
                        sparse_values: None,
                        metadata: None,
                    }],
                },
            )
            .await
            .expect("upsert");
        assert_eq!(upserted.upserted_count, 1);
        assert_eq!(lsn, 1, "the index's first change");
        // Key a's one slot is taken (or, should the test fail, for at most 30 s).
        let (entered, started) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let held = tokio::spawn({
            let handle = handle.clone();
            async move {
                handle
                    .capped(Some("a"), move |_| {
                        let _ = entered.send(());
                        let _ = released.recv_timeout(Duration::from_secs(30));
                        Ok(())
                    })
                    .await
            }
        });
        started.await.expect("the held scan started");
        let query = QueryRequest {
            top_k: 1,
            vector: vec![1.0, 0.0],
            ..QueryRequest::default()
        };
        let refused = handle.query::<Raw<QueryResponse>>(&a, query.clone()).await;
        let refused = refused.err().expect("past the cap");
        assert_eq!(refused.code(), larch_engine::ErrorCode::ResourceExhausted);
        let filtered = FetchByMetadataRequest {
            filter: Some(
                serde_json::json!({"x": 1})
                    .as_object()
                    .cloned()
                    .expect("object"),
            ),
            ..FetchByMetadataRequest::default()
        };
        let refused = handle
            .fetch_by_metadata::<Raw<FetchByMetadataResponse>>(&a, filtered)
            .await;
        assert_eq!(
            refused.err().expect("past the cap").code(),
            larch_engine::ErrorCode::ResourceExhausted
        );
        // Reads that do not scan are not capped; another key's query is.
        let fetch = FetchRequest {
            ids: vec!["v".into()],
            ..FetchRequest::default()
        };
        let Raw(fetched) = handle.fetch(&a, fetch).await.expect("fetch is not capped");
        assert_eq!(fetched.vectors.len(), 1);
        let Sequenced {
            answer: Raw(answer),
            lsn,
        } = handle
            .query::<Raw<QueryResponse>>(&b, query)
            .await
            .expect("key b");
        assert_eq!(answer.matches[0].id, "v");
        assert_eq!(lsn, 1, "the upsert is in the answer");
        release.send(()).expect("the held scan waits");
        held.await.expect("joined").expect("held scan");
    }

    #[tokio::test]
    async fn the_facade_names_the_default_namespace_as_the_caller_does() {
        let engine = Arc::new(Engine::new());
        let config = larch_engine::IndexConfig {
            dimension: larch_engine::Dimension::new(2).expect("dimension"),
            metric: larch_engine::Metric::Cosine,
        };
        engine.create_index("n", config).expect("index");
        let handle = IndexHandle::new(engine, "n");
        let upsert = UpsertRequest {
            namespace: String::new(),
            vectors: vec![larch_engine::VectorInput {
                id: "v".into(),
                values: vec![1.0, 0.0],
                sparse_values: None,
                metadata: None,
            }],
        };
        let old = caller("k", Some("2025-01"));
        let _: Sequenced<Raw<Upserted>> = handle.upsert(&old, upsert).await.expect("upsert");
        let stats = |caller: Caller| {
            let handle = handle.clone();
            async move {
                let Raw(stats): Raw<IndexStats> = handle
                    .describe_index_stats(&caller, DescribeIndexStatsRequest::default())
                    .await
                    .expect("stats");
                stats.namespaces
            }
        };
        assert_eq!(stats(old.clone()).await, [(String::new(), 1)]);
        let new = caller("k", Some("2026-07"));
        assert_eq!(stats(new.clone()).await, [("__default__".to_owned(), 1)]);
        let Raw(page): Raw<NamespacePage> = handle
            .list_namespaces(&new, ListNamespacesRequest::default())
            .await
            .expect("namespaces");
        assert_eq!(page.namespaces[0].name, "__default__");
        // A schema may only declare filterable fields, checked before any work is done.
        let create = CreateNamespaceRequest {
            name: "films".into(),
            schema: Some(vec![("genre".into(), false)]),
        };
        let refused = handle.create_namespace::<Raw<NamespaceDescription>>(&new, create);
        let err = refused.await.err().expect("unfilterable field");
        assert!(
            err.to_string()
                .starts_with("schema.fields.genre.filterable: "),
            "{err}"
        );
    }

    #[test]
    fn shared_rules_name_their_field() {
        assert!(refuse_batch_queries(0).is_ok());
        let err = refuse_batch_queries(2).unwrap_err();
        assert!(err.to_string().starts_with("queries: "), "{err}");
        assert_eq!(
            declared_fields([("a".to_owned(), true)]).unwrap(),
            vec!["a".to_owned()]
        );
        let err = declared_fields([("b".to_owned(), false)]).unwrap_err();
        assert!(
            err.to_string().starts_with("schema.fields.b.filterable: "),
            "{err}"
        );
    }
}
