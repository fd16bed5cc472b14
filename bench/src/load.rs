//! `larch-bench load`: a gRPC load generator that is not the bottleneck (issue 15).
//!
//! Sends Pinecone `Query` or `Upsert` (to Larch or any server speaking Pinecone's data-plane
//! gRPC API), or Qdrant `Search`/`Upsert`, to one server with N requests in flight over C
//! HTTP/2 connections for a time or a number of requests, then prints throughput, latency
//! percentiles, errors by gRPC status, and the tool's own **ceiling**: the same concurrency and
//! connections against the server's gRPC health check, the cheapest call it answers. A result
//! close to the ceiling says the tool (or the transport), not the search, set the pace.
//!
//! Every request is encoded once before the clock starts; the timed path sends those bytes
//! through [`codec::RawCodec`] and keeps the response bytes undecoded (answers are decoded
//! after the run, and only for `--collect-ids`). Latencies go into a fixed-size log-linear
//! [`histogram::Histogram`] per task. The runtime is tokio's multi-threaded one.
//!
//! ```text
//! larch-bench load --addr 127.0.0.1:5081 --api-key $KEY --mode upsert --vectors base.npy --batch 500
//! larch-bench load --addr 127.0.0.1:5081 --api-key $KEY --queries queries.npy --concurrency 16 --duration 10s
//! larch-bench load --addr 127.0.0.1:6334 --target qdrant --collection bench --hnsw-ef 64 --queries queries.npy --json
//! ```
//!
//! `larch-bench scale` drives the same machinery from code: [`connect`] (optionally naming an
//! index's host as `:authority`) and a [`Phase`] per step, whose outcome it reads per connection
//! ([`Phase::run_by_channel`]) to tell the data-plane pods apart.
//!
//! # Layout
//! - this module: the arguments, the phases (warm-up, measured run, ceiling) and the report;
//! - [`input`]: vector files and the requests encoded from them;
//! - [`codec`]: the codec that sends and receives encoded bytes;
//! - [`histogram`]: the latencies;
//! - [`qdrant`]: the few Qdrant messages used.

mod codec;
mod histogram;
pub(crate) mod input;
mod qdrant;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use prost::Message as _;
use tonic::Status;
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use codec::RawCodec;
use histogram::Histogram;
use input::QueryShape;

/// Larch's (Pinecone's) query method.
pub(crate) const LARCH_QUERY: &str = "/VectorService/Query";
/// Larch's (Pinecone's) upsert method.
pub(crate) const LARCH_UPSERT: &str = "/VectorService/Upsert";
/// The standard gRPC health check; an empty request asks for the server's overall status.
pub(crate) const GRPC_HEALTH: &str = "/grpc.health.v1.Health/Check";
/// A result at or above this share of the ceiling is flagged: the tool may be the limit.
pub(crate) const BOTTLENECK_SHARE: f64 = 0.7;
/// The run length when neither `--duration` nor `--requests` is given (query and health).
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Queries, one per row of `--queries`, cycling.
    Query,
    /// Upserts of the rows of `--vectors` in batches (one pass unless --duration/--requests).
    Upsert,
    /// Only the health check (what the ceiling measures).
    Health,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Query => "query",
            Mode::Upsert => "upsert",
            Mode::Health => "health",
        }
    }
}

/// Which API the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Target {
    /// Pinecone's data-plane API (`/VectorService/…`), with the `api-key` header: Larch.
    Larch,
    /// Qdrant's gRPC API (`/qdrant.Points/…`, port 6334 by default).
    Qdrant,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Larch => "larch",
            Target::Qdrant => "qdrant",
        }
    }
}

/// Arguments of `larch-bench load`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// The server: `host:port` or `http://host:port` (for Larch, the index's data-plane host).
    #[arg(long, env = "LARCH_LOAD_ADDR")]
    addr: String,
    /// What to send.
    #[arg(long, value_enum, default_value_t = Mode::Query)]
    mode: Mode,
    /// The API the server speaks.
    #[arg(long, value_enum, default_value_t = Target::Larch)]
    target: Target,
    /// Sent as the `api-key` header of every call (Larch, Qdrant with a key).
    #[arg(long, env = "LARCH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Query vectors: a `.npy` float32/float64 matrix, or raw little-endian f32 with --dim.
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Vectors to upsert (same formats as --queries).
    #[arg(long)]
    vectors: Option<PathBuf>,
    /// Values per vector of a raw f32 file (checked against a .npy file's shape).
    #[arg(long)]
    dim: Option<usize>,
    /// `top_k` (Qdrant: `limit`) of each query.
    #[arg(long, default_value_t = 10)]
    top_k: u32,
    /// Pinecone namespace of queries and upserts.
    #[arg(long, default_value = "")]
    namespace: String,
    /// Ask for the matches' values.
    #[arg(long)]
    include_values: bool,
    /// Ask for the matches' metadata (Qdrant: payload).
    #[arg(long)]
    include_metadata: bool,
    /// Metadata filter of every query, as Pinecone JSON (Larch only).
    #[arg(long)]
    filter: Option<String>,
    /// Qdrant collection.
    #[arg(long, default_value = "bench")]
    collection: String,
    /// Qdrant's `hnsw_ef` search parameter (Larch sets ef_search per index instead).
    #[arg(long)]
    hnsw_ef: Option<u64>,
    /// Vectors per upsert (Pinecone allows at most 1000).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Upserted ids are this prefix followed by the row number.
    #[arg(long, default_value = "")]
    id_prefix: String,
    /// Requests in flight (one task each).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// HTTP/2 connections the requests are spread over [default: min(concurrency, 4)].
    #[arg(long)]
    connections: Option<usize>,
    /// How long to measure (e.g. `10s`) [default: 10s, or one pass for upserts].
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many requests (with --duration: whichever comes first).
    #[arg(long)]
    requests: Option<u64>,
    /// Untimed load before the measurement (connections, caches, server threads warm up).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// How long the ceiling runs [default: as long as the measured run took].
    #[arg(long, value_parser = humantime::parse_duration)]
    ceiling_duration: Option<Duration>,
    /// The ceiling's method [default: /grpc.health.v1.Health/Check; Qdrant:
    /// /qdrant.Qdrant/HealthCheck]. Its request is the empty message.
    #[arg(long)]
    ceiling_method: Option<String>,
    /// Skip the ceiling (e.g. a short run that only collects answers).
    #[arg(long)]
    no_ceiling: bool,
    /// Deadline of each call.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Runtime worker threads [default: one per core].
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object instead of the text summary.
    #[arg(long)]
    json: bool,
    /// Write the ids of each query's first answer to this file: line i is a JSON array of the
    /// ids answering query row i, best first (`null` if it was never answered).
    #[arg(long)]
    collect_ids: Option<PathBuf>,
}

/// Runs `larch-bench load`.
pub(crate) fn run(args: LoadArgs) -> anyhow::Result<()> {
    ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    let connections = args.connections.unwrap_or(args.concurrency.min(4));
    ensure!(
        (1..=args.concurrency).contains(&connections),
        "--connections must be between 1 and --concurrency ({})",
        args.concurrency
    );
    ensure!(
        (1..=1000).contains(&args.batch),
        "--batch must be between 1 and 1000"
    );
    ensure!(
        args.requests != Some(0),
        "--requests must be at least 1 (or leave it out)"
    );
    ensure!(
        args.collect_ids.is_none() || args.mode == Mode::Query,
        "--collect-ids needs --mode query"
    );
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        ensure!(threads >= 1, "--threads must be at least 1");
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build()?;
    let work = build_work(&args)?;
    let report = runtime.block_on(drive(&args, connections, &work))?;
    if let Some(path) = &args.collect_ids {
        write_ids(path, args.target, &report.answers)?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", report.json(&args, connections))?;
    } else {
        write!(out, "{}", report.text(&args, connections))?;
    }
    Ok(())
}

/// The encoded requests of the measured run.
struct Work {
    path: PathAndQuery,
    bodies: Vec<Bytes>,
    /// Vectors carried by each request (upserts), else empty.
    vectors: Vec<u64>,
    /// Number of requests of one pass over the input.
    pass: u64,
}

fn build_work(args: &LoadArgs) -> anyhow::Result<Work> {
    if args.filter.is_some() && args.target == Target::Qdrant {
        bail!("--filter is Pinecone JSON and only applies to --target larch");
    }
    let work = match args.mode {
        Mode::Query => {
            let path = args
                .queries
                .as_ref()
                .context("--mode query needs --queries FILE")?;
            let queries = input::read_vectors(path, args.dim)?;
            let shape = QueryShape {
                top_k: args.top_k,
                namespace: args.namespace.clone(),
                include_values: args.include_values,
                include_metadata: args.include_metadata,
                filter: args.filter.as_deref().map(input::json_struct).transpose()?,
            };
            let (method, bodies) = match args.target {
                Target::Larch => (LARCH_QUERY, input::larch_queries(&queries, &shape)),
                Target::Qdrant => (
                    qdrant::SEARCH,
                    input::qdrant_queries(&queries, &shape, &args.collection, args.hnsw_ef),
                ),
            };
            Work {
                path: PathAndQuery::from_static(method),
                pass: bodies.len() as u64,
                bodies,
                vectors: Vec::new(),
            }
        }
        Mode::Upsert => {
            let path = args
                .vectors
                .as_ref()
                .context("--mode upsert needs --vectors FILE")?;
            let vectors = input::read_vectors(path, args.dim)?;
            let (method, requests) = match args.target {
                Target::Larch => (
                    LARCH_UPSERT,
                    input::larch_upserts(&vectors, args.batch, &args.namespace, &args.id_prefix),
                ),
                Target::Qdrant => (
                    qdrant::UPSERT,
                    input::qdrant_upserts(&vectors, args.batch, &args.collection),
                ),
            };
            let (bodies, vectors): (Vec<_>, Vec<_>) = requests.into_iter().unzip();
            Work {
                path: PathAndQuery::from_static(method),
                pass: bodies.len() as u64,
                bodies,
                vectors,
            }
        }
        Mode::Health => Work {
            path: ceiling_path(args)?,
            bodies: vec![Bytes::new()],
            vectors: Vec::new(),
            pass: 1,
        },
    };
    Ok(work)
}

fn ceiling_path(args: &LoadArgs) -> anyhow::Result<PathAndQuery> {
    let method = args.ceiling_method.clone().unwrap_or_else(|| {
        match args.target {
            Target::Larch => GRPC_HEALTH,
            Target::Qdrant => qdrant::HEALTH_CHECK,
        }
        .to_owned()
    });
    ensure!(
        method.starts_with('/') && method[1..].contains('/'),
        "--ceiling-method must look like /package.Service/Method, not {method:?}"
    );
    PathAndQuery::try_from(method.as_str()).with_context(|| format!("--ceiling-method {method}"))
}

/// When a phase stops.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) duration: Option<Duration>,
    pub(crate) requests: Option<u64>,
}

/// The outcome of one phase.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) latency: Histogram,
    /// Failed calls by gRPC status name, with the first message seen.
    pub(crate) errors: BTreeMap<&'static str, (u64, String)>,
    pub(crate) vectors: u64,
    pub(crate) elapsed: Duration,
}

impl Outcome {
    pub(crate) fn ok(&self) -> u64 {
        self.latency.count()
    }

    pub(crate) fn failed(&self) -> u64 {
        self.errors.values().map(|(n, _)| n).sum()
    }

    pub(crate) fn qps(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds `other`'s calls (not its elapsed time: phases run side by side).
    pub(crate) fn add(&mut self, other: Outcome) {
        self.latency.merge(&other.latency);
        for (code, (n, message)) in other.errors {
            let entry = self.errors.entry(code).or_insert((0, message));
            entry.0 += n;
        }
        self.vectors += other.vectors;
    }
}

/// Everything the report shows.
struct Report {
    result: Outcome,
    ceiling: Option<(String, Outcome)>,
    /// Raw answer of each request's first success (query mode with --collect-ids).
    answers: Vec<Option<Bytes>>,
}

/// Connects, warms up, measures, then measures the ceiling on the same connections.
async fn drive(args: &LoadArgs, connections: usize, work: &Work) -> anyhow::Result<Report> {
    let key = args
        .api_key
        .as_deref()
        .map(MetadataValue::<Ascii>::try_from)
        .transpose()
        .context("--api-key must be visible ASCII")?;
    let url = if args.addr.contains("://") {
        ensure!(
            args.addr.starts_with("http://"),
            "--addr: only plaintext http:// is supported (TLS would measure the handshake \
             library too), not {}",
            args.addr
        );
        args.addr.clone()
    } else {
        format!("http://{}", args.addr)
    };
    let channels = connect(&url, None, connections, args.timeout)
        .await
        .with_context(|| format!("--addr {}", args.addr))?;
    let bodies = Arc::new(work.bodies.clone());
    let vectors = Arc::new(work.vectors.clone());
    let load = |collect: Option<Arc<Vec<OnceLock<Bytes>>>>, bounds: Bounds| Phase {
        path: work.path.clone(),
        bodies: Arc::clone(&bodies),
        vectors: Arc::clone(&vectors),
        key: key.clone(),
        collect,
        bounds,
    };

    if !args.warmup.is_zero() {
        let warmup = Bounds {
            duration: Some(args.warmup),
            requests: None,
        };
        // Upserts write: a time-bounded warm-up would add vectors beyond one pass, so they
        // warm up on the health check instead.
        let phase = if args.mode == Mode::Upsert {
            Phase {
                path: ceiling_path(args)?,
                bodies: Arc::new(vec![Bytes::new()]),
                vectors: Arc::new(Vec::new()),
                ..load(None, warmup)
            }
        } else {
            load(None, warmup)
        };
        phase.run(&channels, args.concurrency).await;
    }

    let bounds = Bounds {
        duration: args
            .duration
            .or((args.requests.is_none() && args.mode != Mode::Upsert).then_some(DEFAULT_DURATION)),
        requests: args
            .requests
            .or((args.duration.is_none() && args.mode == Mode::Upsert).then_some(work.pass)),
    };
    let collect = args
        .collect_ids
        .is_some()
        .then(|| Arc::new((0..work.bodies.len()).map(|_| OnceLock::new()).collect()));
    let result = load(collect.clone(), bounds)
        .run(&channels, args.concurrency)
        .await;

    let ceiling = if args.no_ceiling {
        None
    } else {
        let method = ceiling_path(args)?;
        let duration = args
            .ceiling_duration
            .unwrap_or(result.elapsed)
            .max(Duration::from_millis(500));
        let phase = Phase {
            path: method.clone(),
            bodies: Arc::new(vec![Bytes::new()]),
            vectors: Arc::new(Vec::new()),
            ..load(
                None,
                Bounds {
                    duration: Some(duration),
                    requests: None,
                },
            )
        };
        Some((
            method.to_string(),
            phase.run(&channels, args.concurrency).await,
        ))
    };
    let answers = collect.map_or_else(Vec::new, |c| {
        c.iter().map(|answer| answer.get().cloned()).collect()
    });
    Ok(Report {
        result,
        ceiling,
        answers,
    })
}

/// `connections` HTTP/2 connections to `url` (`http://host:port`), each call with the deadline
/// `timeout`; with `authority`, every request names that host as its `:authority` (an index's
/// host on a data plane that routes by host) instead of the dialled address.
pub(crate) async fn connect(
    url: &str,
    authority: Option<&str>,
    connections: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Channel>> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("{url} is not a URL"))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .tcp_nodelay(true);
    if let Some(authority) = authority {
        let origin = format!("http://{authority}")
            .parse()
            .with_context(|| format!("{authority} is not a host"))?;
        endpoint = endpoint.origin(origin);
    }
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("connect to {url}"))?,
        );
    }
    Ok(channels)
}

/// One phase: the same requests from `concurrency` tasks until the bounds are reached.
pub(crate) struct Phase {
    pub(crate) path: PathAndQuery,
    pub(crate) bodies: Arc<Vec<Bytes>>,
    /// Vectors carried by each body (upserts), else empty.
    pub(crate) vectors: Arc<Vec<u64>>,
    pub(crate) key: Option<MetadataValue<Ascii>>,
    /// The first answer to each body, kept when set.
    pub(crate) collect: Option<Arc<Vec<OnceLock<Bytes>>>>,
    pub(crate) bounds: Bounds,
}

impl Phase {
    pub(crate) async fn run(self, channels: &[Channel], concurrency: usize) -> Outcome {
        let mut total = Outcome::default();
        let mut elapsed = Duration::ZERO;
        for outcome in self.run_by_channel(channels, concurrency).await {
            elapsed = outcome.elapsed;
            total.add(outcome);
        }
        total.elapsed = elapsed;
        total
    }

    /// Runs the phase and returns the outcome of each channel's tasks (task `i` uses channel
    /// `i % channels.len()`), each with the whole phase's elapsed time.
    pub(crate) async fn run_by_channel(
        self,
        channels: &[Channel],
        concurrency: usize,
    ) -> Vec<Outcome> {
        let phase = Arc::new(self);
        let next = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let deadline = phase.bounds.duration.map(|d| started + d);
        let tasks: Vec<_> = (0..concurrency)
            .map(|i| {
                let grpc = Grpc::new(channels[i % channels.len()].clone())
                    .max_decoding_message_size(64 << 20);
                tokio::spawn(Arc::clone(&phase).task(grpc, Arc::clone(&next), deadline))
            })
            .collect();
        let mut by_channel: Vec<Outcome> = channels.iter().map(|_| Outcome::default()).collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let total = &mut by_channel[i % channels.len()];
            match task.await {
                Ok(outcome) => total.add(outcome),
                Err(err) => {
                    let entry = total
                        .errors
                        .entry("TASK_PANICKED")
                        .or_insert((0, err.to_string()));
                    entry.0 += 1;
                }
            }
        }
        let elapsed = started.elapsed();
        for outcome in &mut by_channel {
            outcome.elapsed = elapsed;
        }
        by_channel
    }

    /// One request in flight at a time until the shared counter or the clock says stop.
    async fn task(
        self: Arc<Self>,
        mut grpc: Grpc<Channel>,
        next: Arc<AtomicU64>,
        deadline: Option<Instant>,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let count = self.bodies.len() as u64;
        loop {
            let n = next.fetch_add(1, Ordering::Relaxed);
            if self.bounds.requests.is_some_and(|limit| n >= limit)
                || deadline.is_some_and(|d| Instant::now() >= d)
            {
                break;
            }
            let i = (n % count) as usize;
            let mut request = tonic::Request::new(self.bodies[i].clone());
            if let Some(key) = &self.key {
                request.metadata_mut().insert("api-key", key.clone());
            }
            let sent = Instant::now();
            let answer = match grpc.ready().await {
                Ok(()) => grpc.unary(request, self.path.clone(), RawCodec).await,
                Err(err) => Err(Status::unavailable(format!("connection not ready: {err}"))),
            };
            let took = sent.elapsed();
            match answer {
                Ok(response) => {
                    outcome
                        .latency
                        .record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                    outcome.vectors += self.vectors.get(i).copied().unwrap_or(0);
                    if let Some(answers) = &self.collect
                        && answers[i].get().is_none()
                    {
                        let _ = answers[i].set(response.into_inner());
                    }
                }
                Err(status) => {
                    let entry = outcome
                        .errors
                        .entry(crate::soak::stats::code_name(status.code()))
                        .or_insert_with(|| (0, status.message().to_owned()));
                    entry.0 += 1;
                }
            }
        }
        outcome
    }
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

impl Report {
    /// The result's share of the ceiling, when there is one and it answered.
    fn ratio(&self) -> Option<f64> {
        let (_, ceiling) = self.ceiling.as_ref()?;
        (ceiling.ok() > 0).then(|| self.result.qps() / ceiling.qps())
    }

    fn json(&self, args: &LoadArgs, connections: usize) -> serde_json::Value {
        let r = &self.result;
        let errors = |o: &Outcome| -> serde_json::Map<String, serde_json::Value> {
            o.errors
                .iter()
                .map(|(code, (n, _))| ((*code).to_owned(), (*n).into()))
                .collect()
        };
        let messages: serde_json::Map<String, serde_json::Value> = r
            .errors
            .iter()
            .map(|(code, (_, m))| ((*code).to_owned(), m.clone().into()))
            .collect();
        let ceiling = self.ceiling.as_ref().map(|(method, c)| {
            serde_json::json!({
                "method": method,
                "qps": c.qps(),
                "requests": c.ok() + c.failed(),
                "duration_s": c.elapsed.as_secs_f64(),
                "p50_ms": ms(c.latency.quantile(0.5)),
                "p99_ms": ms(c.latency.quantile(0.99)),
                "errors": errors(c),
            })
        });
        let ratio = self.ratio();
        serde_json::json!({
            "mode": args.mode.name(),
            "target": args.target.name(),
            "addr": args.addr,
            "concurrency": args.concurrency,
            "connections": connections,
            "requests": r.ok() + r.failed(),
            "ok": r.ok(),
            "failed": r.failed(),
            "errors": errors(r),
            "error_messages": messages,
            "duration_s": r.elapsed.as_secs_f64(),
            "qps": r.qps(),
            "vectors": r.vectors,
            "vectors_per_s": (args.mode == Mode::Upsert)
                .then(|| r.vectors as f64 / r.elapsed.as_secs_f64().max(1e-9)),
            "p50_ms": ms(r.latency.quantile(0.5)),
            "p95_ms": ms(r.latency.quantile(0.95)),
            "p99_ms": ms(r.latency.quantile(0.99)),
            "max_ms": ms(r.latency.max()),
            "mean_ms": r.latency.mean() / 1e6,
            "ceiling_qps": self.ceiling.as_ref().map(|(_, c)| c.qps()),
            "ceiling": ceiling,
            "ratio_to_ceiling": ratio,
            "tool_may_be_bottleneck": ratio.map(|x| x >= BOTTLENECK_SHARE),
            "ids_collected": args.collect_ids.as_ref().map(|_| self.answers.iter().filter(|a| a.is_some()).count()),
        })
    }

    fn text(&self, args: &LoadArgs, connections: usize) -> String {
        let r = &self.result;
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            s,
            "larch-bench load: {} to {} ({} API), {} in flight over {} connection(s), \
             {:.1} s after a {} warm-up",
            args.mode.name(),
            args.addr,
            args.target.name(),
            args.concurrency,
            connections,
            r.elapsed.as_secs_f64(),
            humantime::format_duration(args.warmup),
        );
        let _ = writeln!(s, "  requests:   {} ok, {} failed", r.ok(), r.failed());
        for (code, (n, message)) in &r.errors {
            let _ = writeln!(s, "    {code}: {n} (first: {message})");
        }
        let _ = write!(s, "  throughput: {:.0} requests/s", r.qps());
        if args.mode == Mode::Upsert {
            let _ = write!(
                s,
                ", {:.0} vectors/s",
                r.vectors as f64 / r.elapsed.as_secs_f64().max(1e-9)
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "  latency:    p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms, max {:.3} ms (mean {:.3} ms)",
            ms(r.latency.quantile(0.5)),
            ms(r.latency.quantile(0.95)),
            ms(r.latency.quantile(0.99)),
            ms(r.latency.max()),
            r.latency.mean() / 1e6,
        );
        match &self.ceiling {
            None => {
                let _ = writeln!(s, "  ceiling:    not measured (--no-ceiling)");
            }
            Some((method, c)) => {
                let _ = writeln!(
                    s,
                    "  ceiling:    {:.0} requests/s of {method} at the same concurrency \
                     (p50 {:.3} ms, {} failed)",
                    c.qps(),
                    ms(c.latency.quantile(0.5)),
                    c.failed(),
                );
                match self.ratio() {
                    Some(ratio) if ratio >= BOTTLENECK_SHARE => {
                        let _ = writeln!(
                            s,
                            "  the result is {:.0}% of the ceiling: the load tool may be the \
                             bottleneck (try more --connections/--threads, or a client machine)",
                            ratio * 100.0
                        );
                    }
                    Some(ratio) => {
                        let _ = writeln!(
                            s,
                            "  the result is {:.0}% of the ceiling: the server, not the tool, \
                             sets the pace",
                            ratio * 100.0
                        );
                    }
                    None => {
                        let _ = writeln!(s, "  the ceiling call never succeeded: no ratio");
                    }
                }
            }
        }
        s
    }
}

/// Writes the ids of each answer, one JSON array per line.
fn write_ids(
    path: &std::path::Path,
    target: Target,
    answers: &[Option<Bytes>],
) -> anyhow::Result<()> {
    let mut out = String::new();
    for answer in answers {
        let line = match answer {
            None => serde_json::Value::Null,
            Some(bytes) => {
                let ids: Vec<String> = match target {
                    Target::Larch => larch_proto::pinecone::QueryResponse::decode(bytes.clone())
                        .context("a Query answer does not decode")?
                        .matches
                        .into_iter()
                        .map(|m| m.id)
                        .collect(),
                    Target::Qdrant => qdrant::SearchResponse::decode(bytes.clone())
                        .context("a Search answer does not decode")?
                        .result
                        .into_iter()
                        .map(|p| p.id.map(|id| id.text()).unwrap_or_default())
                        .collect(),
                };
                ids.into()
            }
        };
        let _ = writeln!(out, "{line}");
    }
    std::fs::write(path, out).with_context(|| format!("write {}", path.display()))
}
