//! [`Metrics`]: the registry every metric of a Larch process lives in, and its Prometheus text.
//!
//! | Metric | Type | Labels | What |
//! |---|---|---|---|
//! | `larch_requests_total` | counter | `rpc`, `code` | requests answered, by RPC and status |
//! | `larch_request_duration_seconds` | histogram | `rpc` | time until a request's status was known |
//! | `larch_auth_denials_total` | counter | `reason` | requests refused by the API-key gate |
//! | `larch_wal_fsync_duration_seconds` | histogram | — | one `fdatasync` of a write-ahead log batch |
//! | `larch_flush_duration_seconds` | histogram | — | one flush of a memtable into segments |
//! | `larch_compaction_duration_seconds` | histogram | — | one merge of a namespace's segments |
//! | `larch_index_vectors` | gauge | `project`, `index` | records in the index |
//! | `larch_index_graph_bytes` | gauge | `project`, `index` | memory of its graphs and metadata index |
//! | `larch_index_segment_bytes` | gauge | `project`, `index` | its segment files (durable indexes) |
//! | `larch_index_wal_bytes` | gauge | `project`, `index` | its active write-ahead log file |
//! | `larch_index_lsn` | gauge | `project`, `index` | its log sequence number: last change logged here (applied, on a follower); the writer's minus a follower's is the follower's lag in log batches |
//! | `larch_follower_staleness_seconds` | gauge | `project`, `index` | on a pod following the index in a bucket: time since it last found the end of the writer's log |
//! | `larch_data_plane_key_age_seconds` | gauge | — | split-mode data plane: age of its copy of the keys (0 elsewhere) |
//!
//! `rpc` is the gRPC path of one of Larch's methods (`/VectorService/Query`) or, for REST, the
//! method and route template (`GET /indexes/{name}`), so the label set stays bounded: requests
//! for any other path (no route matched, or a method no service has — anyone can send junk
//! paths, with or without a key) count as `unrouted`, and past [`MAX_RPCS`] distinct values, a
//! backstop, as `other`. `code` is the gRPC status name (`OK`, `UNAUTHENTICATED`, …) for gRPC and the HTTP
//! status (`200`, `401`, …) for REST. Index gauges are read from the engine at each scrape, so
//! a dropped index disappears from the next one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use larch_auth::RefusalCounter;
use larch_engine::{Engine, StorageTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Distinct `rpc` label values kept; later ones are counted as `other`.
pub const MAX_RPCS: usize = 256;

/// The `rpc` label of requests that no route matched.
pub const UNROUTED: &str = "unrouted";

/// The `rpc` label once [`MAX_RPCS`] distinct values have been seen.
pub const OTHER: &str = "other";

/// Request latency buckets, in seconds: 0.5 ms to 10 s.
const REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Storage step buckets, in seconds: 100 µs (an fsync on fast disks) to a minute (a big flush).
const STORAGE_BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    rpc: Arc<str>,
    code: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IndexLabels {
    project: String,
    index: String,
}

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

fn storage_histogram() -> Histogram {
    Histogram::new(STORAGE_BUCKETS)
}

/// Every metric of a Larch server: what the request layer, the engine's storage timer
/// ([`Metrics::storage_timer`]), the key store's refusal counter ([`Metrics::refusal_counter`])
/// and the engine's index gauges record, rendered for Prometheus by [`Metrics::render`].
///
/// Cheap to clone: clones share the same registry. The binary makes one for both planes;
/// tests make one per server, and each counts only its own server's steps and refusals.
///
/// ```
/// let metrics = larch_observe::Metrics::new();
/// metrics.record_request("/VectorService/Query", "OK", std::time::Duration::from_millis(2));
/// let text = metrics.render();
/// assert!(text.contains(r#"larch_requests_total{rpc="/VectorService/Query",code="OK"} 1"#));
/// ```
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RpcLabels, Histogram, fn() -> Histogram>,
    auth_denials: Family<ReasonLabels, Counter>,
    wal_fsync: Histogram,
    flush: Histogram,
    compaction: Histogram,
    /// `rpc` label values seen so far, shared so each request's label is one `Arc` clone.
    rpcs: RwLock<HashSet<Arc<str>>>,
    indexes: Arc<IndexGauges>,
    /// Seconds since a split-mode data plane last pulled the keys (stays 0 in other processes).
    key_age: prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every Larch metric registered and nothing recorded.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::new_with_constructor(request_histogram as fn() -> Histogram);
        let auth_denials = Family::<ReasonLabels, Counter>::default();
        let (wal_fsync, flush, compaction) = (
            storage_histogram(),
            storage_histogram(),
            storage_histogram(),
        );
        registry.register(
            "larch_requests",
            "Requests answered by either plane, by RPC and status code",
            requests.clone(),
        );
        registry.register(
            "larch_request_duration_seconds",
            "Time from a request's arrival until its status was known, by RPC",
            latency.clone(),
        );
        registry.register(
            "larch_auth_denials",
            "Requests refused by the API-key gate, by reason (the gRPC status name)",
            auth_denials.clone(),
        );
        registry.register(
            "larch_wal_fsync_duration_seconds",
            "Duration of one fdatasync of a write-ahead log batch",
            wal_fsync.clone(),
        );
        registry.register(
            "larch_flush_duration_seconds",
            "Duration of one flush of an index's memtable into segment files",
            flush.clone(),
        );
        registry.register(
            "larch_compaction_duration_seconds",
            "Duration of one compaction of a namespace's segments",
            compaction.clone(),
        );
        let indexes = Arc::new(IndexGauges::default());
        registry.register_collector(Box::new(Arc::clone(&indexes)));
        let key_age = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "larch_data_plane_key_age_seconds",
            "Seconds since this split-mode data plane last pulled the API keys from the control plane",
            key_age.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                requests,
                latency,
                auth_denials,
                wal_fsync,
                flush,
                compaction,
                rpcs: RwLock::new(HashSet::new()),
                indexes,
                key_age,
            }),
        }
    }

    /// Counts one request of `rpc` answered with `code`, which took `elapsed`.
    pub fn record_request(&self, rpc: &str, code: &str, elapsed: Duration) {
        let rpc = self.rpc_label(rpc);
        let labels = RequestLabels {
            rpc: Arc::clone(&rpc),
            code: Arc::from(code),
        };
        self.inner.requests.get_or_create(&labels).inc();
        self.inner
            .latency
            .get_or_create(&RpcLabels { rpc })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one request refused by the API-key gate for `reason` (a gRPC status name).
    pub fn count_auth_denial(&self, reason: &'static str) {
        self.inner
            .auth_denials
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Records that the engine's storage step `step` (an `Engine::TIMED_…` name) took
    /// `elapsed`; other names are ignored.
    pub fn observe_storage(&self, step: &str, elapsed: Duration) {
        let histogram = match step {
            Engine::TIMED_WAL_FSYNC => &self.inner.wal_fsync,
            Engine::TIMED_FLUSH => &self.inner.flush,
            Engine::TIMED_COMPACTION => &self.inner.compaction,
            _ => return,
        };
        histogram.observe(elapsed.as_secs_f64());
    }

    /// Records how long ago a split-mode data plane last pulled the keys
    /// (`larch_data_plane_key_age_seconds`).
    pub fn set_key_age(&self, age: Duration) {
        self.inner.key_age.set(age.as_secs_f64());
    }

    /// A storage timer recording into these metrics ([`Metrics::observe_storage`]), for the
    /// engine whose storage steps they show:
    /// `Engine::open(root).with_storage_timer(metrics.storage_timer())`.
    pub fn storage_timer(&self) -> StorageTimer {
        let metrics = self.clone();
        Arc::new(move |step, elapsed| metrics.observe_storage(step, elapsed))
    }

    /// A refusal counter recording into these metrics ([`Metrics::count_auth_denial`]), for
    /// the key store whose refusals they show: `keys.count_refusals(metrics.refusal_counter())`.
    pub fn refusal_counter(&self) -> RefusalCounter {
        let metrics = self.clone();
        Arc::new(move |reason| metrics.count_auth_denial(reason))
    }

    /// Reports the indexes of `engine` (vectors and bytes of each) at every scrape, instead
    /// of the engine watched before, if any.
    pub fn watch_engine(&self, engine: Engine) {
        *self
            .inner
            .indexes
            .engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(engine);
    }

    /// Every metric in the Prometheus text format (see [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail, and every label set here encodes.
        if let Err(err) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.inner.registry)
        {
            tracing::warn!(error = %err, "cannot render the metrics");
        }
        text
    }

    /// The shared `rpc` label for `rpc`, or [`OTHER`] once [`MAX_RPCS`] are known.
    fn rpc_label(&self, rpc: &str) -> Arc<str> {
        let known = self
            .inner
            .rpcs
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(label) = known.get(rpc) {
            return Arc::clone(label);
        }
        drop(known);
        let mut known = self
            .inner
            .rpcs
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(label) = known.get(rpc) {
            return Arc::clone(label);
        }
        let label: Arc<str> = if known.len() < MAX_RPCS {
            Arc::from(rpc)
        } else {
            Arc::from(OTHER)
        };
        known.insert(Arc::clone(&label));
        label
    }
}

/// The per-index gauges, read from the watched engine at each scrape.
#[derive(Debug, Default)]
struct IndexGauges {
    engine: Mutex<Option<Engine>>,
}

/// One index's figures at a scrape.
struct IndexRow {
    labels: IndexLabels,
    vectors: u64,
    graph_bytes: u64,
    /// `None` for an in-memory index.
    storage: Option<(u64, u64)>,
    /// The log sequence number: the last change logged (applied, on a follower).
    lsn: u64,
    /// On a follower: seconds since it last found the end of the writer's log.
    staleness: Option<f64>,
}

impl IndexGauges {
    fn rows(&self) -> Vec<IndexRow> {
        let engine = self
            .engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(engine) = engine else {
            return Vec::new();
        };
        let names = engine.index_names().unwrap_or_default();
        let mut rows = Vec::with_capacity(names.len());
        for name in names {
            // An index dropped since the listing is simply not reported.
            let Ok(index) = engine.index(&name) else {
                continue;
            };
            let Ok(status) = index.indexing_status() else {
                continue;
            };
            rows.push(IndexRow {
                labels: index_labels(&name),
                vectors: status.records,
                graph_bytes: status.index_bytes,
                storage: index
                    .storage_stats()
                    .map(|stats| (stats.segment_bytes, stats.wal_bytes)),
                lsn: index.last_lsn(),
                staleness: index
                    .follower_status()
                    .map(|status| status.caught_up_ago.as_secs_f64()),
            });
        }
        rows
    }
}

/// The project and name of the index the engine stores as `storage` (see
/// `larch_model::IndexKey::storage_name`: `name@project@incarnation`, or from before
/// incarnations `name@project`, or the bare name in the default project).
fn index_labels(storage: &str) -> IndexLabels {
    match larch_model::IndexKey::from_storage_name(storage) {
        Some(key) => IndexLabels {
            project: key.project().to_owned(),
            index: key.name().to_string(),
        },
        None => IndexLabels {
            project: larch_model::DEFAULT_PROJECT.to_owned(),
            index: storage.to_owned(),
        },
    }
}

impl Collector for IndexGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.rows();
        type Value = fn(&IndexRow) -> Option<u64>;
        let gauges: [(&str, &str, Value); 5] = [
            ("larch_index_vectors", "Records in the index", |row| {
                Some(row.vectors)
            }),
            (
                "larch_index_graph_bytes",
                "Memory of the index's ANN graphs, their row maps and its metadata index",
                |row| Some(row.graph_bytes),
            ),
            (
                "larch_index_segment_bytes",
                "Bytes of the index's segment files",
                |row| row.storage.map(|(segments, _)| segments),
            ),
            (
                "larch_index_wal_bytes",
                "Bytes in the index's active write-ahead log file",
                |row| row.storage.map(|(_, wal)| wal),
            ),
            (
                "larch_index_lsn",
                "The index's log sequence number: its last change logged here, or, on a follower, applied from the writer's log",
                |row| Some(row.lsn),
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for row in &rows {
                if let Some(value) = value(row) {
                    ConstGauge::new(value).encode(family.encode_family(&row.labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "larch_follower_staleness_seconds",
            "On a pod following an index in a bucket: seconds since it last found the end of the writer's log",
            None,
            MetricType::Gauge,
        )?;
        for row in &rows {
            if let Some(seconds) = row.staleness {
                ConstGauge::new(seconds).encode(family.encode_family(&row.labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use larch_engine::{Dimension, IndexConfig, Metric, UpsertRequest, VectorInput};

    #[test]
    fn requests_are_counted_by_rpc_and_code() {
        let metrics = Metrics::new();
        let ms = Duration::from_millis(3);
        metrics.record_request("/VectorService/Query", "OK", ms);
        metrics.record_request("/VectorService/Query", "OK", ms);
        metrics.record_request("/VectorService/Query", "UNAUTHENTICATED", ms);
        metrics.record_request("GET /indexes/{name}", "404", ms);
        let text = metrics.render();
        for line in [
            r#"larch_requests_total{rpc="/VectorService/Query",code="OK"} 2"#,
            r#"larch_requests_total{rpc="/VectorService/Query",code="UNAUTHENTICATED"} 1"#,
            r#"larch_requests_total{rpc="GET /indexes/{name}",code="404"} 1"#,
            r#"larch_request_duration_seconds_count{rpc="/VectorService/Query"} 3"#,
            r#"larch_request_duration_seconds_bucket{rpc="/VectorService/Query",le="0.005"} 3"#,
            r#"larch_request_duration_seconds_bucket{rpc="/VectorService/Query",le="0.0025"} 0"#,
            "# TYPE larch_requests_total counter",
            "# TYPE larch_request_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
    }

    #[test]
    fn rpc_labels_are_capped() {
        let metrics = Metrics::new();
        for n in 0..MAX_RPCS + 10 {
            metrics.record_request(
                &format!("/VectorService/Bogus{n}"),
                "UNIMPLEMENTED",
                Duration::ZERO,
            );
        }
        let text = metrics.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("larch_requests_total{"))
            .count();
        assert_eq!(series, MAX_RPCS + 1, "{MAX_RPCS} rpcs and `other`");
        assert!(text.contains(r#"larch_requests_total{rpc="other",code="UNIMPLEMENTED"} 10"#));
    }

    #[test]
    fn denials_and_storage_steps_are_recorded() {
        let metrics = Metrics::new();
        // Directly, and through the receivers the key store and the engine are given.
        let (deny, time) = (metrics.refusal_counter(), metrics.storage_timer());
        metrics.count_auth_denial("UNAUTHENTICATED");
        deny("UNAUTHENTICATED");
        deny("PERMISSION_DENIED");
        time(Engine::TIMED_WAL_FSYNC, Duration::from_micros(300));
        metrics.observe_storage(Engine::TIMED_FLUSH, Duration::from_secs(2));
        time(Engine::TIMED_COMPACTION, Duration::from_secs(1));
        time("something else", Duration::from_secs(1));
        let text = metrics.render();
        for line in [
            r#"larch_auth_denials_total{reason="UNAUTHENTICATED"} 2"#,
            r#"larch_auth_denials_total{reason="PERMISSION_DENIED"} 1"#,
            "larch_wal_fsync_duration_seconds_count 1",
            r#"larch_wal_fsync_duration_seconds_bucket{le="0.0005"} 1"#,
            r#"larch_wal_fsync_duration_seconds_bucket{le="0.00025"} 0"#,
            "larch_flush_duration_seconds_count 1",
            "larch_compaction_duration_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
    }

    #[test]
    fn index_gauges_follow_the_engine() {
        let metrics = Metrics::new();
        assert!(
            !metrics.render().contains("larch_index_vectors{"),
            "no engine, no index series"
        );
        let engine = Engine::new();
        let config = IndexConfig {
            dimension: Dimension::new(2).expect("a valid dimension"),
            metric: Metric::Cosine,
        };
        let movies = engine.create_index("movies", config).expect("created");
        engine
            .create_index("books@3f2b8c1e-7d4a-4e0b-9c6f-1a2b3c4d5e6f", config)
            .expect("created");
        let vectors = (0..3)
            .map(|n| VectorInput {
                id: format!("v{n}"),
                values: vec![1.0, n as f32],
                sparse_values: None,
                metadata: None,
            })
            .collect();
        movies
            .upsert(UpsertRequest {
                namespace: String::new(),
                vectors,
            })
            .expect("upserted");
        metrics.watch_engine(engine.clone());
        let text = metrics.render();
        for line in [
            r#"larch_index_vectors{project="default",index="movies"} 3"#,
            r#"larch_index_vectors{project="3f2b8c1e-7d4a-4e0b-9c6f-1a2b3c4d5e6f",index="books"} 0"#,
            "# TYPE larch_index_vectors gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        assert!(
            !text.contains("larch_index_segment_bytes{"),
            "in-memory indexes have no files: {text}"
        );
        engine.drop_index("movies").expect("dropped");
        assert!(!metrics.render().contains(r#"index="movies""#));
    }
}
