//! `larch-bench scale`: what scaling out over a bucket buys and costs (issue 17, "Benchmark").
//!
//! For each count N of `--data-planes` (e.g. `1,2,3`) the run starts on 127.0.0.1 an
//! S3-compatible server (`tests/s3/serve.py`: moto served one request at a time, or an existing
//! one with `--s3-endpoint`), one `larch control-plane` and N `larch data-plane` pods `dp-0`,
//! `dp-1`, … on a fresh prefix of one bucket, creates one cosine index and measures:
//!
//! - **ingest**: `--vectors` upserted through the index's writer pod by `load`'s machinery
//!   (batches of `--batch`, `--writers` in flight), in vectors/s; once before the rows, the
//!   same against a local-disk `larch serve` as the baseline;
//! - **follower lag**: every pod's `larch_index_lsn` read from its admin `/metrics` every
//!   `--lag-interval` during ingest (the writer's minus a follower's is the follower's lag in
//!   log batches): the largest, the one right after the last acknowledged upsert, and the time
//!   from that ack until every follower's LSN equals the writer's ("caught up");
//! - **queries**, once every pod holds every vector (and logged the namespace fully indexed,
//!   when it is large enough for a graph): `load`'s query phase, `--concurrency` in flight for
//!   `--duration` after a `--warmup`, the tasks spread round-robin over all N pods, each
//!   request carrying the index's host as `:authority`: QPS, p50/p99, failures by status, the
//!   distinct queries answered and how many had no match, the tool's ceiling (the health check
//!   on the same connections), and per pod the queries it answered and its CPU time (utime +
//!   stime from `/proc/<pid>/stat`) per query — a follower's cost against the writer's;
//! - **the bucket at idle**: the S3 server's requests per second by kind over
//!   `--idle-seconds` with nothing sent (what tailing and leases cost), from the server's own
//!   `--stats-file` counts (own server only).
//!
//! It prints a summary as each row completes, then one table, and writes JSON to `--out`.
//! Every figure is measured in the run. Every process is stopped at the end (SIGTERM), and
//! killed if the run fails.
//!
//! ```text
//! cargo build --release --bin larch && cargo build --release -p larch-bench
//! target/release/larch-bench scale --data-planes 1,2,3 --out scale.json
//! target/debug/larch-bench scale --larch-bin target/debug/larch --data-planes 1,2 \
//!     --vectors 2000 --dim 8 --duration 2s --idle-seconds 2
//! ```
//!
//! # Layout
//! - this module: the arguments and the run of each row;
//! - [`cluster`]: the child processes (S3 server, control plane, pods), killed when dropped;
//! - [`watch`]: what the pods and the S3 server report (LSNs, log events, CPU, request counts);
//! - [`report`]: a row's figures, the table and the JSON.

mod cluster;
mod report;
mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use larch_proto::pinecone::QueryRequest;
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use prost::Message as _;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::load::input::{self, Matrix, QueryShape};
use crate::load::{
    self as load_tool, Bounds, GRPC_HEALTH, LARCH_QUERY, LARCH_UPSERT, Outcome, Phase,
};
use crate::soak::load::ApiKey;
use crate::soak::server::{Server, wait_serving};
use cluster::{Cluster, S3};
use report::{IdleS3, Lag, PodLoad, Queried, Row};
use watch::{LagSampler, S3Counts};

/// The admin key every process of the run is started with.
const API_KEY: &str = "larch-bench-scale-key";

/// The index's name.
const INDEX: &str = "scale";

/// How long a process may take to start and report `SERVING` (a debug build on a busy
/// machine, a data plane probing the store first).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Deadline of one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The local-disk baseline's `--wal-flush-mb` (the data plane's default).
const WAL_FLUSH_MB: u64 = 64;

/// Seed of the vectors; the queries use the next one.
const SEED: u64 = 0x5ca1_ab1e;

/// Arguments of `larch-bench scale`.
#[derive(Debug, clap::Args)]
pub(crate) struct ScaleArgs {
    /// Counts of data-plane pods to measure, one row each.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    data_planes: Vec<usize>,
    /// The `larch` binary to start.
    #[arg(long, env = "LARCH_BIN", default_value = "target/release/larch")]
    larch_bin: PathBuf,
    /// Vectors to load (the first this many rows of --vectors-file, if given).
    #[arg(long, default_value_t = 100_000)]
    vectors: usize,
    /// Dimension of the vectors [default: 384, or the file's].
    #[arg(long)]
    dim: Option<usize>,
    /// Real vectors to load instead of seeded random unit vectors: a `.npy` float matrix (or
    /// raw little-endian f32 with --dim).
    #[arg(long)]
    vectors_file: Option<PathBuf>,
    /// Query vectors (same formats) [default: --queries seeded random unit vectors].
    #[arg(long)]
    queries_file: Option<PathBuf>,
    /// Random query vectors to cycle through when there is no --queries-file.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// `top_k` of each query.
    #[arg(long, default_value_t = 10)]
    top_k: u32,
    /// Vectors per upsert.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Upserts in flight during ingest.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Queries in flight, spread over the pods.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long queries are measured (the ceiling runs as long).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Untimed queries before the measurement.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Seconds of nothing over which the S3 server's requests are counted.
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
    /// How often every pod's LSN is read during ingest.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    lag_interval: Duration,
    /// The pods' `--ann-min-rows`: namespaces with fewer records are searched exactly, without
    /// a graph (and then the run does not wait for one).
    #[arg(long, default_value_t = 5000)]
    ann_min_rows: usize,
    /// How long every pod may take to hold every vector and have it indexed.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    index_timeout: Duration,
    /// The Python that runs `tests/s3/serve.py` [default: the repository's .venv-s3].
    #[arg(long)]
    s3_python: Option<PathBuf>,
    /// Use this S3-compatible endpoint (e.g. `http://127.0.0.1:9000`, credentials from the
    /// `AWS_*` variables) instead of starting serve.py; its requests are not counted.
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// The bucket (created by our own server; must exist on --s3-endpoint). Each row uses a
    /// fresh prefix in it.
    #[arg(long, default_value = "larch-bench")]
    bucket: String,
    /// Work directory (logs, scratch dirs) [default: a temporary one, removed afterwards].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Write the rows as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `larch-bench scale`.
pub(crate) fn run(args: ScaleArgs) -> anyhow::Result<()> {
    ensure!(
        !args.data_planes.is_empty() && args.data_planes.iter().all(|&n| n >= 1),
        "--data-planes must list counts of at least 1, e.g. 1,2,3"
    );
    ensure!(
        (1..=1000).contains(&args.batch),
        "--batch must be between 1 and 1000"
    );
    ensure!(
        args.writers >= 1 && args.concurrency >= 1,
        "--writers and --concurrency must be at least 1"
    );
    ensure!(
        args.vectors >= 1 && args.queries >= 1,
        "--vectors and --queries must be at least 1"
    );
    ensure!(!args.duration.is_zero(), "--duration must be above zero");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_rows(&args))
}

/// Runs every row in `--dir`, or in a temporary directory that is kept if the run fails (its
/// logs say why).
async fn run_rows(args: &ScaleArgs) -> anyhow::Result<()> {
    let Some(dir) = &args.dir else {
        let temp = tempfile::Builder::new().prefix("larch-scale-").tempdir()?;
        let result = run_in(args, temp.path()).await;
        if result.is_err() {
            eprintln!("the processes' logs are kept in {}", temp.keep().display());
        }
        return result;
    };
    std::fs::create_dir_all(dir)?;
    run_in(args, dir).await
}

async fn run_in(args: &ScaleArgs, dir: &Path) -> anyhow::Result<()> {
    let work = Workload::build(args)?;
    println!(
        "larch-bench scale: {} vectors of dimension {} ({}), batches of {}, {} writer(s); \
         {} queries in flight for {}, top_k {}; data planes {:?}",
        work.vectors,
        work.dim,
        work.source,
        args.batch,
        args.writers,
        args.concurrency,
        humantime::format_duration(args.duration),
        args.top_k,
        args.data_planes
    );
    println!("machine: {}", crate::soak::probe::machine());
    println!("larch: {}", crate::soak::version(&args.larch_bin));
    println!("work dir: {}", dir.display());

    let baseline = baseline(args, &work, &dir.join("local")).await?;
    let baseline_rate = baseline.vectors as f64 / baseline.elapsed.as_secs_f64().max(1e-9);
    println!(
        "local-disk larch serve: ingest {baseline_rate:.0} vectors/s ({:.2} s)",
        baseline.elapsed.as_secs_f64()
    );
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut rows = Vec::new();
    for &n in &args.data_planes {
        let row_dir = dir.join(format!("n{n}"));
        std::fs::create_dir_all(&row_dir)?;
        let prefix = format!("scale-{run_id}-n{n}");
        let row = measure(args, &work, n, &row_dir, &prefix)
            .await
            .with_context(|| format!("{n} data plane(s) (logs in {})", row_dir.display()))?;
        print!("{}", row.details());
        rows.push(row);
    }
    println!();
    print!("{}", report::table(&rows, baseline_rate));
    if let Some(out) = &args.out {
        let json = serde_json::json!({
            "vectors": work.vectors,
            "dim": work.dim,
            "source": work.source,
            "batch": args.batch,
            "writers": args.writers,
            "concurrency": args.concurrency,
            "duration_s": args.duration.as_secs_f64(),
            "top_k": args.top_k,
            "idle_seconds": args.idle_seconds,
            "machine": crate::soak::probe::machine(),
            "baseline": {
                "mode": "larch serve, local disk",
                "ingest_vectors_per_s": baseline_rate,
                "ingest_s": baseline.elapsed.as_secs_f64(),
            },
            "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        });
        std::fs::write(out, format!("{json:#}\n"))
            .with_context(|| format!("write {}", out.display()))?;
    }
    Ok(())
}

/// The encoded requests of every row: the same upserts and queries each time.
struct Workload {
    upserts: Arc<Vec<Bytes>>,
    /// Vectors in each upsert.
    upsert_vectors: Arc<Vec<u64>>,
    queries: Arc<Vec<Bytes>>,
    vectors: usize,
    dim: usize,
    /// Where the vectors come from, for the report.
    source: String,
    key: MetadataValue<Ascii>,
}

impl Workload {
    fn build(args: &ScaleArgs) -> anyhow::Result<Workload> {
        let (base, source) = match &args.vectors_file {
            Some(path) => {
                let mut matrix = input::read_vectors(path, args.dim)?;
                matrix.rows = matrix.rows.min(args.vectors);
                matrix.data.truncate(matrix.rows * matrix.dim);
                (matrix, path.display().to_string())
            }
            None => (
                random_unit_vectors(args.vectors, args.dim.unwrap_or(384), SEED),
                "seeded random unit vectors".to_owned(),
            ),
        };
        let queries = match &args.queries_file {
            Some(path) => input::read_vectors(path, Some(base.dim))?,
            None => random_unit_vectors(args.queries, base.dim, SEED + 1),
        };
        let (upserts, upsert_vectors): (Vec<_>, Vec<_>) =
            input::larch_upserts(&base, args.batch, "", "v")
                .into_iter()
                .unzip();
        let shape = QueryShape {
            top_k: args.top_k,
            namespace: String::new(),
            include_values: false,
            include_metadata: false,
            filter: None,
        };
        Ok(Workload {
            upserts: Arc::new(upserts),
            upsert_vectors: Arc::new(upsert_vectors),
            queries: Arc::new(input::larch_queries(&queries, &shape)),
            vectors: base.rows,
            dim: base.dim,
            source,
            key: API_KEY.parse().expect("the key is ASCII"),
        })
    }

    /// A phase of `path` requests from `bodies` (carrying `vectors` each) within `bounds`.
    fn phase(
        &self,
        path: &'static str,
        bodies: &Arc<Vec<Bytes>>,
        vectors: &Arc<Vec<u64>>,
        bounds: Bounds,
    ) -> Phase {
        Phase {
            path: PathAndQuery::from_static(path),
            bodies: Arc::clone(bodies),
            vectors: Arc::clone(vectors),
            key: Some(self.key.clone()),
            collect: None,
            bounds,
        }
    }

    /// Upserts every vector once through `channels`, `writers` at a time; fails unless every
    /// upsert was acknowledged.
    async fn ingest(&self, channels: &[Channel], writers: usize) -> anyhow::Result<Outcome> {
        let bounds = Bounds {
            duration: None,
            requests: Some(self.upserts.len() as u64),
        };
        let outcome = self
            .phase(LARCH_UPSERT, &self.upserts, &self.upsert_vectors, bounds)
            .run(channels, writers)
            .await;
        if let Some((code, (n, message))) = outcome.errors.iter().next() {
            bail!(
                "ingest: {} of {} upserts failed ({n} {code}, first: {message})",
                outcome.failed(),
                self.upserts.len()
            );
        }
        ensure!(
            outcome.vectors == self.vectors as u64,
            "ingest acknowledged {} vectors of {}",
            outcome.vectors,
            self.vectors
        );
        Ok(outcome)
    }
}

/// `rows` seeded random vectors of length 1, `dim` values each.
fn random_unit_vectors(rows: usize, dim: usize, seed: u64) -> Matrix {
    let mut rng = crate::Rng(seed | 1);
    let mut data = Vec::with_capacity(rows * dim);
    for _ in 0..rows {
        let row: Vec<f32> = (0..dim).map(|_| rng.next_f32()).collect();
        let norm = row
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt()
            .max(f32::MIN_POSITIVE);
        data.extend(row.iter().map(|x| x / norm));
    }
    Matrix { rows, dim, data }
}

/// Creates the index on the control plane at `control`; returns its host.
async fn create_index(control: SocketAddr, dim: usize) -> anyhow::Result<String> {
    let key = ApiKey::new(API_KEY)?;
    crate::soak::create_index(&format!("http://{control}"), &key, INDEX, dim).await
}

/// The local-disk baseline: the same ingest against one `larch serve` with its data in `dir`.
async fn baseline(args: &ScaleArgs, work: &Workload, dir: &Path) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(dir)?;
    let mut server = Server::start(&args.larch_bin, dir, API_KEY, WAL_FLUSH_MB, START_TIMEOUT)
        .await
        .context("the local-disk larch serve")?;
    let host = create_index(server.control, work.dim).await?;
    wait_serving(&host, "", Instant::now() + START_TIMEOUT).await?;
    let channels =
        load_tool::connect(&format!("http://{host}"), None, args.writers, CALL_TIMEOUT).await?;
    let outcome = work.ingest(&channels, args.writers).await?;
    drop(channels);
    let status = server.terminate(START_TIMEOUT).await?;
    if !status.success() {
        eprintln!("warning: the local-disk larch serve exited with {status}");
    }
    Ok(outcome)
}

/// One row: `n` pods on `prefix` of a bucket, from start to stop.
async fn measure(
    args: &ScaleArgs,
    work: &Workload,
    n: usize,
    dir: &Path,
    prefix: &str,
) -> anyhow::Result<Row> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut s3 = match &args.s3_endpoint {
        Some(endpoint) => S3::existing(endpoint, &args.bucket),
        None => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let python = args
                .s3_python
                .clone()
                .unwrap_or_else(|| root.join(".venv-s3/bin/python"));
            ensure!(
                python.exists(),
                "{} is missing: install moto there (tests/s3/requirements.txt), or give \
                 --s3-python or --s3-endpoint",
                python.display()
            );
            S3::start(
                &python,
                &root.join("tests/s3/serve.py"),
                &args.bucket,
                dir,
                deadline,
            )
            .await?
        }
    };
    let store = s3.store(prefix);
    let settings: BTreeMap<&str, String> =
        [("LARCH_ANN_MIN_ROWS", args.ann_min_rows.to_string())].into();
    let mut cluster = Cluster::start(
        &args.larch_bin,
        n,
        dir,
        API_KEY,
        &store,
        &settings,
        deadline,
    )
    .await?;
    let host = create_index(cluster.control, work.dim).await?;
    let writer = roles(&cluster, deadline).await?;
    let url = |pod: usize| format!("http://{}", cluster.pods[pod].addr);
    let admins: Vec<_> = cluster.pods.iter().map(|pod| pod.admin).collect();

    // Ingest through the writer, LSNs sampled meanwhile.
    let channels =
        load_tool::connect(&url(writer), Some(&host), args.writers, CALL_TIMEOUT).await?;
    let sampler = LagSampler::start(admins.clone(), writer, args.lag_interval);
    let ingested = work.ingest(&channels, args.writers).await;
    let acked = Instant::now();
    // Read at once (the sampler may be asleep for an interval), and only then stop it.
    let at_ack = match &ingested {
        Ok(_) if n > 1 => Some(read_lsns_blocking(&admins, writer).await),
        _ => None,
    };
    let sampled = tokio::task::spawn_blocking(move || sampler.stop()).await?;
    let ingested = ingested?;
    drop(channels);
    let lag = if let Some(lsns) = at_ack {
        let lsns = lsns?;
        let at_ack = watch::lags(&lsns, writer).into_iter().max().flatten();
        caught_up(&admins, writer, Instant::now() + args.index_timeout).await?;
        Some(Lag {
            max: sampled.max_lag.max(at_ack),
            last_ack: at_ack,
            writer_lsn: lsns[writer],
            catch_up_s: acked.elapsed().as_secs_f64(),
            rounds: sampled.rounds,
        })
    } else {
        None
    };
    indexed(
        &cluster,
        work.vectors as u64,
        args.vectors_need_graph(work.vectors),
        Instant::now() + args.index_timeout,
    )
    .await?;
    let indexed_s = acked.elapsed().as_secs_f64();

    let queried = query_load(args, work, &cluster, &host, writer).await?;
    let idle_s3 = match &s3.stats {
        Some(stats) => Some(idle(stats, Duration::from_secs(args.idle_seconds)).await?),
        None => None,
    };
    cluster.stop().await;
    s3.stop().await;
    Ok(Row {
        data_planes: n,
        ingest_vectors_per_s: ingested.vectors as f64 / ingested.elapsed.as_secs_f64().max(1e-9),
        ingest_s: ingested.elapsed.as_secs_f64(),
        lag,
        indexed_s,
        queried,
        idle_s3,
    })
}

impl ScaleArgs {
    /// Whether a namespace of `vectors` records gets a graph on the pods (else it is searched
    /// exactly and never logged fully indexed).
    fn vectors_need_graph(&self, vectors: usize) -> bool {
        vectors >= self.ann_min_rows
    }
}

/// Waits until every pod logged that it serves the index and each follower that it follows
/// it; returns the writer (the one pod the control plane named so).
async fn roles(cluster: &Cluster, deadline: Instant) -> anyhow::Result<usize> {
    loop {
        let logs: Vec<String> = cluster.pods.iter().map(|p| p.process.log_text()).collect();
        let writers: Vec<Option<bool>> = logs.iter().map(|log| watch::logged_writer(log)).collect();
        if writers.iter().all(Option::is_some) {
            let named: Vec<usize> = (0..writers.len())
                .filter(|&pod| writers[pod] == Some(true))
                .collect();
            let [writer] = named[..] else {
                bail!(
                    "the pods name {} writers of the index, not one",
                    named.len()
                );
            };
            let following = (0..logs.len())
                .filter(|&pod| pod != writer)
                .all(|pod| watch::logged_follower(&logs[pod]));
            if following {
                return Ok(writer);
            }
        }
        if Instant::now() >= deadline {
            bail!("the pods did not all serve the index (one writer, the rest following) in time");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`watch::read_lsns`] off the runtime's threads; fails unless every LSN was read.
async fn read_lsns_blocking(
    admins: &[SocketAddr],
    writer: usize,
) -> anyhow::Result<Vec<Option<u64>>> {
    let admins = admins.to_vec();
    let lsns = tokio::task::spawn_blocking(move || watch::read_lsns(&admins, writer)).await?;
    ensure!(
        lsns.iter().all(Option::is_some),
        "larch_index_lsn missing from a pod's /metrics: {lsns:?}"
    );
    Ok(lsns)
}

/// Polls every pod's LSN until each follower's equals the writer's.
async fn caught_up(admins: &[SocketAddr], writer: usize, deadline: Instant) -> anyhow::Result<()> {
    loop {
        let lsns = read_lsns_blocking(admins, writer).await?;
        if lsns.iter().all(|lsn| *lsn == lsns[writer]) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the followers never caught up with the writer: LSNs {lsns:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every pod holds `vectors` records and, with `graph`, logged a namespace of at
/// least that many fully indexed.
async fn indexed(
    cluster: &Cluster,
    vectors: u64,
    graph: bool,
    deadline: Instant,
) -> anyhow::Result<()> {
    for pod in &cluster.pods {
        loop {
            let admin = pod.admin;
            let held = tokio::task::spawn_blocking(move || watch::vectors(admin)).await?;
            let done = held == Some(vectors)
                && (!graph || watch::logged_fully_indexed(&pod.process.log_text(), vectors));
            if done {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} never had all {vectors} vectors {}: it holds {held:?}",
                    pod.process.name,
                    if graph { "fully indexed" } else { "" }
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The query load over every pod: warm-up, measured run with each pod's CPU time, ceiling.
async fn query_load(
    args: &ScaleArgs,
    work: &Workload,
    cluster: &Cluster,
    host: &str,
    writer: usize,
) -> anyhow::Result<Queried> {
    let n = cluster.pods.len();
    // Channel `c * n + pod` goes to `pod`, so task `i` (on channel `i % len`) goes to pod
    // `i % n`: the tasks are dealt round-robin over the pods.
    let per_pod = (args.concurrency / n).clamp(1, 4);
    let mut by_pod = Vec::with_capacity(n);
    for pod in &cluster.pods {
        let url = format!("http://{}", pod.addr);
        let channels = load_tool::connect(&url, Some(host), per_pod, CALL_TIMEOUT).await?;
        check_answers(&channels[0], work, &pod.process.name).await?;
        by_pod.push(channels);
    }
    let channels: Vec<Channel> = (0..per_pod)
        .flat_map(|c| by_pod.iter().map(move |pod| pod[c].clone()))
        .collect();
    let no_vectors = Arc::new(Vec::new());
    let timed = |duration| Bounds {
        duration: Some(duration),
        requests: None,
    };
    if !args.warmup.is_zero() {
        work.phase(LARCH_QUERY, &work.queries, &no_vectors, timed(args.warmup))
            .run(&channels, args.concurrency)
            .await;
    }
    let pids: Vec<u32> = cluster.pods.iter().map(|pod| pod.process.pid()).collect();
    let cpu_before: Vec<Option<u64>> = pids.iter().map(|&pid| watch::cpu(pid)).collect();
    let collect: Arc<Vec<OnceLock<Bytes>>> =
        Arc::new((0..work.queries.len()).map(|_| OnceLock::new()).collect());
    let mut phase = work.phase(
        LARCH_QUERY,
        &work.queries,
        &no_vectors,
        timed(args.duration),
    );
    phase.collect = Some(Arc::clone(&collect));
    let by_channel = phase.run_by_channel(&channels, args.concurrency).await;
    let cpu_after: Vec<Option<u64>> = pids.iter().map(|&pid| watch::cpu(pid)).collect();
    let ticks = crate::soak::probe::clock_ticks() as f64;

    let elapsed = by_channel.first().map_or(Duration::ZERO, |o| o.elapsed);
    let mut per_pod: Vec<Outcome> = (0..n).map(|_| Outcome::default()).collect();
    for (c, outcome) in by_channel.into_iter().enumerate() {
        per_pod[c % n].add(outcome);
    }
    let pods: Vec<PodLoad> = per_pod
        .iter()
        .enumerate()
        .map(|(pod, outcome)| PodLoad {
            name: cluster.pods[pod].process.name.clone(),
            writer: pod == writer,
            queries: outcome.ok(),
            failed: outcome.failed(),
            cpu_s: cpu_after[pod]
                .zip(cpu_before[pod])
                .map(|(after, before)| after.saturating_sub(before) as f64 / ticks),
        })
        .collect();
    let mut total = Outcome::default();
    for outcome in per_pod {
        total.add(outcome);
    }
    total.elapsed = elapsed;

    let ceiling = work
        .phase(
            GRPC_HEALTH,
            &Arc::new(vec![Bytes::new()]),
            &no_vectors,
            timed(args.duration),
        )
        .run(&channels, args.concurrency)
        .await;

    let mut answered = 0;
    let mut empty_answers = 0;
    for answer in collect.iter().filter_map(OnceLock::get) {
        answered += 1;
        let response = larch_proto::pinecone::QueryResponse::decode(answer.clone())
            .context("a Query answer does not decode")?;
        if response.matches.is_empty() {
            empty_answers += 1;
        }
    }
    Ok(Queried {
        qps: total.qps(),
        p50_ms: total.latency.quantile(0.5) as f64 / 1e6,
        p99_ms: total.latency.quantile(0.99) as f64 / 1e6,
        queries_ok: total.ok(),
        queries_failed: total.failed(),
        errors: total
            .errors
            .iter()
            .map(|(code, (count, message))| ((*code).to_owned(), (*count, message.clone())))
            .collect(),
        answered,
        empty_answers,
        ceiling_qps: ceiling.qps(),
        pods,
    })
}

/// The first query, sent on `channel` (a pod, with the index's authority), must find matches.
async fn check_answers(channel: &Channel, work: &Workload, pod: &str) -> anyhow::Result<()> {
    let query = QueryRequest::decode(work.queries[0].clone()).context("the first query")?;
    let mut request = tonic::Request::new(query);
    request.metadata_mut().insert("api-key", work.key.clone());
    let matches = VectorServiceClient::new(channel.clone())
        .query(request)
        .await
        .with_context(|| format!("a query on {pod}"))?
        .into_inner()
        .matches
        .len();
    ensure!(matches > 0, "{pod} answered a query with no match");
    Ok(())
}

/// The S3 server's requests per second over `window` with nothing sent, from its stats file.
async fn idle(stats: &Path, window: Duration) -> anyhow::Result<IdleS3> {
    // The server rewrites the file every second: give it several.
    let wait = Duration::from_secs(10);
    let first = S3Counts::next(stats, wait).await?;
    tokio::time::sleep(window).await;
    let last = S3Counts::next(stats, wait).await?;
    let (by_kind, total) = last.rates_since(&first);
    Ok(IdleS3 {
        seconds: last.uptime_s - first.uptime_s,
        by_kind,
        total,
    })
}
