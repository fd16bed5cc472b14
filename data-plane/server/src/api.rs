//! The transport-neutral side of the data plane, shared by the gRPC and REST handlers.
//!
//! [`IndexHandle`] is the one service both transports call: each handler translates its wire
//! request into an engine request struct, makes one [`IndexHandle::run`] call (the engine
//! validates), and translates the result back. The few wire-level rules that are not the
//! engine's — how the default namespace is named for each API version, the refused batch
//! query, what a namespace schema may declare — live here too, so the transports cannot drift.

use std::sync::Arc;
use std::time::Duration;

use larch_engine::{AnswerBudget, Engine, Error, Index};
use larch_observe::keyed::{KeyPermit, KeyedGate};
use larch_observe::{Cancel, Limits};

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
        }
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
    pub async fn query<T, F>(&self, key_id: Option<&str>, op: F) -> larch_engine::Result<T>
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

/// The `vector_type` every Larch index reports.
pub const VECTOR_TYPE: &str = "dense";

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
                    .query(Some("a"), move |_| {
                        let _ = entered.send(());
                        let _ = released.recv_timeout(Duration::from_secs(30));
                        Ok(())
                    })
                    .await
            }
        });
        started.await.expect("the held query started");
        assert_eq!(limits.queries().held_by("a"), 1);
        let err = handle.query(Some("a"), |_| Ok(())).await.unwrap_err();
        assert_eq!(err.code(), larch_engine::ErrorCode::ResourceExhausted);
        assert_eq!(err.retry_after(), Some(QUERY_PUSHBACK));
        assert!(err.to_string().contains("--max-queries-per-key"), "{err}");
        // Another key is not held up (it may wait for a pool thread, not for the cap).
        let other = tokio::spawn({
            let handle = handle.clone();
            async move { handle.query(Some("b"), |_| Ok(())).await }
        });
        release.send(()).expect("the held query waits");
        held.await.expect("joined").expect("held query");
        other.await.expect("joined").expect("key b served");
        // The slot came back when the read ended.
        assert_eq!(limits.queries().held_by("a"), 0);
        handle
            .query(Some("a"), |_| Ok(()))
            .await
            .expect("key a again");
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
