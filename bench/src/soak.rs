//! `larch-bench soak`: mixed read/write traffic from many concurrent clients against the real
//! `larch` binary for a fixed time, then a check that every acknowledged write is readable.
//!
//! The run: start `larch serve` (port 0, a fresh data directory, its log in a file; with
//! `--split`, `larch data-plane` and `larch control-plane` instead), create an
//! index over the control plane's gRPC API, fill each client's id range once, then run the
//! load for `--duration` while one extra client keeps opening connections and resetting them.
//! Every `--interval` one table row: throughput, p50/p99 (overall and per operation), errors
//! by status, backpressure, the server's RSS, fds, threads and data size. At the end: a
//! summary, p99 flatness (last third against first third), RSS range, the final verification
//! and a verdict; the exit status is non-zero on any unexpected error, violation or
//! verification failure (and above `--max-rss-mib` / `--max-p99-ratio` when given).
//!
//! ```text
//! cargo build --release --bin larch
//! cargo run --release -p larch-bench -- soak --duration 10m
//! target/debug/larch-bench soak --duration 60s --larch-bin target/debug/larch    # CI
//! ```
//!
//! # Layout
//! - this module: the arguments and the run, from start-up to verdict;
//! - [`server`]: the `larch serve` child process (log file, addresses, kill on drop) and the
//!   scan of its log;
//! - [`model`]: the expected state of each client's ids;
//! - [`load`]: the load clients and the checks they make on every answer;
//! - [`churn`]: the client that resets connections;
//! - [`stats`]: latencies, errors and churn per interval, and the table rows;
//! - [`probe`]: RSS, fds, threads and disk use of the server, from `/proc`;
//! - [`verify`]: the final check of every id.

mod churn;
pub(crate) mod load;
mod model;
pub(crate) mod probe;
pub(crate) mod server;
pub(crate) mod stats;
mod verify;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::control::{CreateIndexRequest, DeleteIndexRequest, IndexSpec, ServerlessSpec};
use tonic::transport::Endpoint;

use churn::{CHURN_NAMESPACE, Churn};
use load::{ApiKey, Client, Params};
use model::Slots;
use server::Server;
use stats::{ChurnEnd, ChurnMode, Op, Recorder, Sample, Window, ms, quantile_ms};

/// The default `--mix`.
const DEFAULT_MIX: &str = "upsert=20,query=20,filtered-query=15,fetch=25,update=10,delete=10";

/// The load's namespace.
const NAMESPACE: &str = "soak";

/// Vectors per upsert while filling the id ranges before the load.
const PREFILL_BATCH: usize = 200;

/// How long the server may take to start, and to exit after SIGTERM (its drain timeout is 20 s).
const SERVER_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `larch-bench soak`.
#[derive(Debug, clap::Args)]
pub(crate) struct SoakArgs {
    /// How long the load runs (e.g. `10m`, `60s`).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent load clients, each with its own connection and id range.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Time between report rows.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// The `larch` binary to start.
    #[arg(long, env = "LARCH_BIN", default_value = "target/release/larch")]
    larch_bin: PathBuf,
    /// Attach to a running server's control plane (e.g. `http://127.0.0.1:5080`) instead of
    /// starting one; needs --api-key. The soak creates (and, if it passes, deletes) its own
    /// index there.
    #[arg(long)]
    addr: Option<String>,
    /// The API key for --addr (a started server gets this one too, or a made-up one).
    #[arg(long, env = "LARCH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// With --addr: the server's process id, to sample its RSS, fds and threads.
    #[arg(long)]
    pid: Option<u32>,
    /// Dimension of the vectors.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Ids per client; the namespace holds up to clients × this many records.
    #[arg(long, default_value_t = 2000)]
    ids_per_client: usize,
    /// Vectors per upsert during the load.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// `top_k` of queries.
    #[arg(long, default_value_t = 10)]
    top_k: u32,
    /// Relative weights of the operations.
    #[arg(long, default_value = DEFAULT_MIX, value_parser = parse_mix)]
    mix: Mix,
    /// Pause of the churn client between two connections.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    churn_pause: Duration,
    /// Run without the churn client.
    #[arg(long)]
    no_churn: bool,
    /// The started server's `--wal-flush-mb`. Smaller than the server's default (64) so that a
    /// 10-minute run goes through many flushes and several compactions: with 64 the first
    /// compaction comes after about 9.5 minutes on a 2-core machine.
    #[arg(long, default_value_t = 16)]
    wal_flush_mb: u64,
    /// Deadline of one call of a load client.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Fail if the server's RSS ever exceeds this many MiB.
    #[arg(long)]
    max_rss_mib: Option<f64>,
    /// Fail if the last third's p99 exceeds the first third's by more than this factor.
    #[arg(long)]
    max_p99_ratio: Option<f64>,
    /// Seed of the clients' random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Work directory (server data and log) [default: a new temporary directory, removed
    /// after a passing run].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the work directory after a passing run.
    #[arg(long)]
    keep: bool,
    /// Start split mode instead of `larch serve`: a `larch data-plane` and a `larch
    /// control-plane` process; the load goes to the data plane's one address, routed by the
    /// index's host. RSS, files and threads are the data plane's; both logs are checked.
    #[arg(long, conflicts_with = "addr")]
    split: bool,
}

/// Operation weights, from `--mix upsert=20,query=20,…` (operations not named weigh 0).
#[derive(Debug, Clone)]
pub(crate) struct Mix([u32; 6]);

fn parse_mix(text: &str) -> Result<Mix, String> {
    let mut weights = [0u32; 6];
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected op=weight"))?;
        let op = Op::ALL
            .iter()
            .position(|op| op.name() == name.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Op::ALL.iter().map(|op| op.name()).collect();
                format!("{name:?} is not one of {}", names.join(", "))
            })?;
        weights[op] = weight
            .trim()
            .parse()
            .map_err(|e| format!("{part:?}: {e}"))?;
    }
    if weights.iter().sum::<u32>() == 0 {
        return Err("the weights add up to 0".into());
    }
    Ok(Mix(weights))
}

impl Mix {
    /// Running sums of the weights, for picking an operation.
    fn cumulative(&self) -> [u32; 6] {
        let mut sums = self.0;
        for i in 1..sums.len() {
            sums[i] += sums[i - 1];
        }
        sums
    }

    fn describe(&self) -> String {
        let parts: Vec<String> = Op::ALL
            .iter()
            .zip(self.0)
            .filter(|(_, w)| *w > 0)
            .map(|(op, w)| format!("{} {w}", op.name()))
            .collect();
        parts.join(", ")
    }
}

/// A small seeded PRNG (SplitMix64): each client's choices are the same every run.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is negligible here).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in [-1, 1).
    pub(crate) fn f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Runs the soak; an error if it failed.
pub(crate) fn run(args: SoakArgs) -> anyhow::Result<()> {
    ensure!(args.clients >= 1, "--clients must be at least 1");
    ensure!(
        args.ids_per_client >= 1 && args.batch >= 1 && args.dim >= 1,
        "--ids-per-client, --batch and --dim must be at least 1"
    );
    ensure!(
        args.interval >= Duration::from_secs(1),
        "--interval must be at least 1s"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // SIGTERM (e.g. a CI timeout) would end this process without running destructors, so
        // it is caught like Ctrl-C: dropping the run kills the server it started.
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = soak(&args) => result,
            _ = tokio::signal::ctrl_c() => bail!("interrupted (the server was killed)"),
            _ = terminate.recv() => bail!("terminated (the server was killed)"),
        }
    })
}

/// Where the load goes.
struct Target {
    /// `http://host:port` of the control plane.
    control: String,
    key: String,
    /// The started server, if the soak started one.
    server: Option<Server>,
    pid: Option<u32>,
}

async fn soak(args: &SoakArgs) -> anyhow::Result<()> {
    let (dir, temporary) = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            (dir.clone(), false)
        }
        None => (
            tempfile::Builder::new()
                .prefix("larch-soak-")
                .tempdir()?
                .keep(),
            true,
        ),
    };
    println!("larch-bench soak");
    println!("machine: {}", probe::machine());
    let mut target = start(args, &dir).await?;
    if let Some(server) = &target.server {
        println!(
            "server: {} (pid {}), --wal-flush-mb {}, control {}, admin {}, log {}",
            version(&args.larch_bin),
            server.pid(),
            args.wal_flush_mb,
            server.control,
            server.admin,
            server.log.display()
        );
    } else {
        println!(
            "server: attached to {} (its own settings; --wal-flush-mb does not apply)",
            target.control
        );
    }
    println!("work dir: {}", dir.display());
    println!(
        "load: {} for {}, {} clients × {} ids, dimension {}, upsert batches of {}, top_k {}, \
         call deadline {}, seed {}",
        args.mix.describe(),
        humantime::format_duration(args.duration),
        args.clients,
        args.ids_per_client,
        args.dim,
        args.batch,
        args.top_k,
        humantime::format_duration(args.request_timeout),
        args.seed,
    );
    if args.no_churn {
        println!("churn: off");
    } else {
        println!(
            "churn: one client resetting a new connection every {} or so",
            humantime::format_duration(args.churn_pause)
        );
    }

    let key = ApiKey::new(&target.key)?;
    let index = match target.server {
        Some(_) => "soak".to_owned(),
        None => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            format!("soak-{now}")
        }
    };
    let host = create_index(&target.control, &key, &index, args.dim).await?;
    // Split mode: the index's host names no machine; requests go to the data plane's address
    // with the host as `:authority`.
    let (dial, authority) = match target.server.as_ref().and_then(|s| s.data_addr) {
        Some(addr) => (addr.to_string(), Some(host.clone())),
        None => (host.clone(), None),
    };
    let deadline = Instant::now() + SERVER_TIMEOUT;
    server::wait_serving(&dial, "", deadline).await?;
    let data_addr = tokio::net::lookup_host(dial.as_str())
        .await?
        .next()
        .with_context(|| format!("{dial} resolves to no address"))?;
    match &authority {
        Some(_) => println!("index: {index}, host {host} on the data plane at {data_addr}"),
        None => println!("index: {index}, data plane {host}"),
    }

    let recorder = Arc::new(Recorder::default());
    let params = Arc::new(Params {
        namespace: NAMESPACE.to_owned(),
        dim: args.dim,
        batch: args.batch,
        top_k: args.top_k,
        mix: args.mix.cumulative(),
        recorder: Arc::clone(&recorder),
    });
    let data_dir = target.server.as_ref().map(|s| s.data_dir.clone());
    let sample = || {
        let (pid, data_dir) = (target.pid, data_dir.clone());
        tokio::task::spawn_blocking(move || probe::sample(pid, data_dir.as_deref()))
    };

    // Fill every id range once, all clients at once.
    let started = Instant::now();
    let mut prefill = Vec::new();
    for c in 0..args.clients {
        let data = load::connect(&dial, authority.as_deref(), &key, args.request_timeout).await?;
        let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(c as u64);
        let mut client = Client::new(
            data,
            Slots::new(c, args.ids_per_client),
            seed,
            Arc::clone(&params),
        );
        prefill.push(tokio::spawn(async move {
            client.prefill(PREFILL_BATCH).await.map(|()| client)
        }));
    }
    let mut clients = Vec::new();
    for handle in prefill {
        clients.push(handle.await.context("a prefill task panicked")??);
    }
    let filled = args.clients * args.ids_per_client;
    let prefill_time = started.elapsed();
    recorder.take();
    let before = sample().await?;
    println!(
        "prefill: {filled} vectors in {:.1} s ({:.0}/s); server RSS {}",
        prefill_time.as_secs_f64(),
        filled as f64 / prefill_time.as_secs_f64().max(1e-9),
        mib(before.rss_kib)
    );

    // The load.
    println!();
    println!("{}", stats::heading());
    let start = Instant::now();
    let end = start + args.duration;
    let mut tasks: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(client.run(end)))
        .collect();
    let churn = (!args.no_churn).then(|| {
        let churn = Churn {
            addr: data_addr,
            authority: authority.clone(),
            key: key.clone(),
            namespace: NAMESPACE.to_owned(),
            dim: args.dim,
            pause: args.churn_pause,
            recorder: Arc::clone(&recorder),
        };
        tokio::spawn(churn.run(end, args.seed ^ 0x00c4_a5e0))
    });
    let intervals = args
        .duration
        .as_nanos()
        .div_ceil(args.interval.as_nanos())
        .max(1) as u32;
    let mut windows: Vec<(Duration, Window, Sample)> = Vec::new();
    let mut finished = Vec::new();
    let mut last = start;
    let ticks = probe::clock_ticks();
    let mut prev = before;
    for k in 1..=intervals {
        tokio::time::sleep_until((start + args.interval * k).min(end).into()).await;
        // Sampled at the tick, while the clients still hold their connections.
        let sample = sample().await?;
        if let Some(status) = target.server.as_mut().and_then(Server::exited) {
            let window = recorder.take();
            if let Some(errors) = window.errors_line() {
                println!("errors before the exit: {errors}");
            }
            bail!(
                "the server exited during the load ({status}); its log: {}",
                dir.join("server.log").display()
            );
        }
        if k == intervals {
            // The clients stop at the deadline; their last calls belong to the last row.
            for task in tasks.drain(..) {
                finished.push(task.await.context("a load client panicked")?);
            }
            if let Some(churn) = &churn {
                while !churn.is_finished() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        let now = Instant::now();
        let window = recorder.take();
        println!(
            "{}",
            stats::row(now - start, now - last, &window, &sample, &prev, ticks)
        );
        windows.push((now - start, window, sample));
        prev = sample;
        last = now;
    }
    if let Some(churn) = churn {
        churn.await.context("the churn client panicked")?;
    }
    let load_time = last - start;

    let mut report = String::new();
    let mut failures = Vec::new();
    summarize(
        args,
        &windows,
        load_time,
        &before,
        ticks,
        &mut report,
        &mut failures,
    )?;
    print!("{report}");

    // The final check.
    let data = load::connect(&dial, authority.as_deref(), &key, Duration::from_secs(120)).await?;
    let verification = verify::verify(&data, NAMESPACE, CHURN_NAMESPACE, &finished).await?;
    println!(
        "verification: fetched all {} ids: {} live, {} absent, {} with several possible states \
         (failed writes), {} not as acknowledged; DescribeIndexStats counts {} in {NAMESPACE:?} \
         (expected {}) and {} in {CHURN_NAMESPACE:?} (not checked) -> {}",
        verification.checked,
        verification.live,
        verification.absent,
        verification.uncertain,
        verification.mismatches,
        verification.stats_count,
        verification.live,
        verification.churn_count,
        if verification.passed() {
            "ok"
        } else {
            "FAILED"
        }
    );
    for example in &verification.examples {
        println!("  ! {example}");
    }
    if !verification.passed() {
        failures.push("the final verification failed".to_owned());
    }

    // What the server says about itself.
    if let Some(server) = &target.server {
        let admin = server.admin;
        let text = tokio::task::spawn_blocking(move || probe::scrape_metrics(admin)).await?;
        match text {
            Ok(text) => println!("server metrics: {}", probe::metrics_summary(&text, &index)),
            Err(err) => println!("server metrics: not read ({err})"),
        }
    }

    // Shut down and read the server's log.
    if let Some(mut server) = target.server.take() {
        let peak = probe::peak_rss_kib(server.pid());
        let status = server.terminate(SERVER_TIMEOUT).await;
        match &status {
            Ok(status) if status.success() => {
                println!(
                    "server: peak RSS (VmHWM) {}; exited cleanly after SIGTERM",
                    mib(peak)
                );
            }
            Ok(status) => {
                println!(
                    "server: peak RSS (VmHWM) {}; exit after SIGTERM: {status}",
                    mib(peak)
                );
                failures.push(format!("the server exited with {status} after SIGTERM"));
            }
            Err(err) => {
                println!("server: {err:#}");
                failures.push(format!("{err:#}"));
            }
        }
        for path in server.logs() {
            let log = server::scan_log(&path)?;
            println!(
                "server log {}: {} lines, {} warnings, {} errors, {} panics",
                path.display(),
                log.lines,
                log.warnings,
                log.errors,
                log.panics
            );
            for (event, count) in &log.events {
                println!("  {count:>6} × {event}");
            }
            if log.errors > 0 {
                failures.push(format!("the server logged {} errors", log.errors));
            }
            if log.panics > 0 {
                failures.push(format!("the server panicked ({} lines)", log.panics));
            }
        }
    } else if failures.is_empty() {
        delete_index(&target.control, &key, &index).await?;
    }

    if failures.is_empty() {
        println!("verdict: PASS");
        if temporary && !args.keep {
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        } else {
            println!("kept: {}", dir.display());
        }
        Ok(())
    } else {
        println!("verdict: FAIL");
        for failure in &failures {
            println!("  - {failure}");
        }
        println!("kept: {}", dir.display());
        bail!("soak failed: {}", failures.join("; "))
    }
}

/// Starts the server, or attaches to `--addr`.
async fn start(args: &SoakArgs, dir: &Path) -> anyhow::Result<Target> {
    if let Some(addr) = &args.addr {
        let key = args
            .api_key
            .clone()
            .context("--addr needs --api-key (or LARCH_API_KEY)")?;
        let control = if addr.contains("://") {
            addr.clone()
        } else {
            format!("http://{addr}")
        };
        return Ok(Target {
            control,
            key,
            server: None,
            pid: args.pid,
        });
    }
    let key = match &args.api_key {
        Some(key) => key.clone(),
        None => {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
            format!("soak-{}-{nanos}", std::process::id())
        }
    };
    let (bin, wal) = (&args.larch_bin, args.wal_flush_mb);
    let server = if args.split {
        Server::start_split(bin, dir, &key, wal, SERVER_TIMEOUT).await?
    } else {
        Server::start(bin, dir, &key, wal, SERVER_TIMEOUT).await?
    };
    Ok(Target {
        control: format!("http://{}", server.control),
        key,
        pid: Some(server.pid()),
        server: Some(server),
    })
}

/// `larch --version`, or the path when that fails.
pub(crate) fn version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map_or_else(
            || bin.display().to_string(),
            |v| format!("{} ({})", v.trim(), bin.display()),
        )
}

async fn control_client(
    control: &str,
    key: &ApiKey,
) -> anyhow::Result<
    IndexServiceClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, ApiKey>,
    >,
> {
    let channel = Endpoint::from_shared(control.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(SERVER_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("connect to the control plane at {control}"))?;
    Ok(IndexServiceClient::with_interceptor(channel, key.clone()))
}

/// Creates the soak's index at the control plane `control` (`http://host:port`) and returns its
/// data plane's `host:port`.
pub(crate) async fn create_index(
    control: &str,
    key: &ApiKey,
    name: &str,
    dim: usize,
) -> anyhow::Result<String> {
    let model = control_client(control, key)
        .await?
        .create_index(CreateIndexRequest {
            name: name.to_owned(),
            dimension: Some(i32::try_from(dim)?),
            metric: Some("cosine".to_owned()),
            spec: Some(IndexSpec {
                serverless: Some(ServerlessSpec {
                    cloud: "aws".to_owned(),
                    region: "us-east-1".to_owned(),
                }),
            }),
            deletion_protection: Some("disabled".to_owned()),
            tags: [("purpose".to_owned(), "soak".to_owned())].into(),
            vector_type: None,
            search: None,
        })
        .await
        .with_context(|| format!("create index {name}"))?
        .into_inner();
    let host = model.host;
    Ok(host
        .strip_prefix("http://")
        .map_or(host.clone(), str::to_owned))
}

async fn delete_index(control: &str, key: &ApiKey, name: &str) -> anyhow::Result<()> {
    control_client(control, key)
        .await?
        .delete_index(DeleteIndexRequest {
            name: name.to_owned(),
        })
        .await
        .with_context(|| format!("delete index {name}"))?;
    Ok(())
}

/// KiB as `123.4 MiB`, or `-`.
fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "-".to_owned(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

/// Writes the summary of the load to `out` and pushes what failed to `failures`.
fn summarize(
    args: &SoakArgs,
    windows: &[(Duration, Window, Sample)],
    load_time: Duration,
    before: &Sample,
    ticks_per_sec: u64,
    out: &mut String,
    failures: &mut Vec<String>,
) -> std::fmt::Result {
    let mut total = Window::default();
    for (_, window, _) in windows {
        total.absorb(window);
    }
    let secs = load_time.as_secs_f64().max(1e-9);
    writeln!(out)?;
    writeln!(
        out,
        "summary: {} successful calls in {:.0} s: {:.0} calls/s",
        total.ops(),
        secs,
        total.ops() as f64 / secs
    )?;

    writeln!(
        out,
        "latency (ms)        calls      p50      p90      p99    p99.9      max"
    )?;
    let mut line = |name: &str, sorted: &[u32]| {
        writeln!(
            out,
            "  {name:<15} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
            sorted.len(),
            ms(quantile_ms(sorted, 0.5)),
            ms(quantile_ms(sorted, 0.9)),
            ms(quantile_ms(sorted, 0.99)),
            ms(quantile_ms(sorted, 0.999)),
            ms(quantile_ms(sorted, 1.0)),
        )
    };
    line("all", &total.all_sorted())?;
    for op in Op::ALL {
        line(op.name(), &total.sorted(op))?;
    }

    match total.errors_line() {
        None => writeln!(out, "errors: none")?,
        Some(errors) => {
            writeln!(out, "errors: {} unexpected: {errors}", total.error_count())?;
            failures.push(format!(
                "{} unexpected errors: {errors}",
                total.error_count()
            ));
        }
    }
    let backpressure = total.backpressure_count();
    if backpressure == 0 {
        writeln!(out, "backpressure: none")?;
    } else {
        let parts: Vec<String> = total
            .backpressure
            .iter()
            .map(|(op, n)| format!("{op} {n}"))
            .collect();
        writeln!(
            out,
            "backpressure: {backpressure} RESOURCE_EXHAUSTED answers with a pushback ({}), \
             retried after {:.1} s of pushback in all",
            parts.join(", "),
            total.pushback.as_secs_f64()
        )?;
    }
    writeln!(out, "violations: {}", total.violations)?;
    if total.violations > 0 {
        failures.push(format!(
            "{} answers contradicted the expected state",
            total.violations
        ));
    }

    // p99 flatness: the first third of the rows against the last third.
    let third = (windows.len() / 3).max(1);
    let merged = |part: &[(Duration, Window, Sample)]| {
        let mut w = Window::default();
        for (_, window, _) in part {
            w.absorb(window);
        }
        w.all_sorted()
    };
    let first = quantile_ms(&merged(&windows[..third]), 0.99);
    let last = quantile_ms(&merged(&windows[windows.len() - third..]), 0.99);
    let span = |part: &[(Duration, Window, Sample)], before: Duration| {
        let from = before.as_secs_f64();
        let to = part.last().map_or(0.0, |(end, _, _)| end.as_secs_f64());
        format!("{from:.0}–{to:.0} s")
    };
    let first_span = span(&windows[..third], Duration::ZERO);
    let last_start = windows
        .len()
        .checked_sub(third + 1)
        .map_or(Duration::ZERO, |i| windows[i].0);
    let last_span = span(&windows[windows.len() - third..], last_start);
    let worst = windows
        .iter()
        .filter_map(|(end, window, _)| Some((quantile_ms(&window.all_sorted(), 0.99)?, *end)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let ratio = first.zip(last).map(|(f, l)| l / f.max(1e-6));
    writeln!(
        out,
        "p99 over time: first third ({first_span}) {} ms, last third ({last_span}) {} ms, \
         ratio {}{}",
        ms(first),
        ms(last),
        ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
        worst.map_or_else(String::new, |(p99, end)| format!(
            "; worst interval p99 {p99:.2} ms (row {:.0} s)",
            end.as_secs_f64()
        )),
    )?;
    if let (Some(max), Some(ratio)) = (args.max_p99_ratio, ratio)
        && ratio > max
    {
        failures.push(format!("p99 grew {ratio:.2}× (limit {max})"));
    }

    // Resources.
    let rss: Vec<u64> = windows.iter().filter_map(|(_, _, s)| s.rss_kib).collect();
    if let (Some(min), Some(max), Some(last)) = (rss.iter().min(), rss.iter().max(), rss.last()) {
        let first_max = rss[..(rss.len() / 3).max(1)].iter().max();
        let last_max = rss[rss.len() - (rss.len() / 3).max(1)..].iter().max();
        writeln!(
            out,
            "RSS: after prefill {}; during the load min {}, max {}, last {}; max of first third \
             {}, of last third {}",
            mib(before.rss_kib),
            mib(Some(*min)),
            mib(Some(*max)),
            mib(Some(*last)),
            mib(first_max.copied()),
            mib(last_max.copied()),
        )?;
        if let Some(limit) = args.max_rss_mib
            && *max as f64 / 1024.0 > limit
        {
            failures.push(format!(
                "RSS reached {} (limit {limit} MiB)",
                mib(Some(*max))
            ));
        }
    } else {
        writeln!(out, "RSS: not sampled (no pid)")?;
    }
    let range = |f: fn(&Sample) -> Option<u64>| {
        let values: Vec<u64> = windows.iter().filter_map(|(_, _, s)| f(s)).collect();
        match (
            f(before),
            values.iter().min(),
            values.iter().max(),
            values.last(),
        ) {
            (first, Some(min), Some(max), Some(last)) => format!(
                "after prefill {}, min {min}, max {max}, last {last}",
                first.map_or_else(|| "-".to_owned(), |v| v.to_string())
            ),
            _ => "-".to_owned(),
        }
    };
    writeln!(out, "open fds: {}", range(|s| s.fds))?;
    writeln!(out, "threads: {}", range(|s| s.threads))?;
    writeln!(
        out,
        "data dir (MiB): {}",
        range(|s| s.disk_bytes.map(|b| b >> 20))
    )?;
    if let Some((_, _, last)) = windows.last() {
        let pct = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
        let [server, bench, other] = stats::cpu(before, last, ticks_per_sec);
        writeln!(
            out,
            "CPU (% of one core, average over the load): server {}, bench {}, everything else {}",
            pct(server),
            pct(bench),
            pct(other)
        )?;
    }

    // Churn.
    if !args.no_churn {
        let attempts = total.churn_count();
        let by_mode = |mode: ChurnMode| -> u64 {
            total
                .churn
                .iter()
                .filter(|((m, _), _)| *m == mode)
                .map(|(_, n)| n)
                .sum()
        };
        let modes: Vec<String> = [
            ChurnMode::Reset,
            ChurnMode::Preface,
            ChurnMode::Handshake,
            ChurnMode::Request,
        ]
        .iter()
        .map(|&mode| format!("{} {}", mode.name(), by_mode(mode)))
        .collect();
        let ends: Vec<String> = total
            .churn
            .iter()
            .filter(|((mode, _), _)| *mode == ChurnMode::Request)
            .map(|((_, end), n)| match end {
                ChurnEnd::Dropped => format!("dropped before the answer {n}"),
                ChurnEnd::Answered => format!("answered before the drop {n}"),
                ChurnEnd::SelfCaused(code) => format!("{code} (self-caused) {n}"),
            })
            .collect();
        writeln!(
            out,
            "churn: {attempts} connections reset ({:.1}/s): {}; requests: {}",
            attempts as f64 / secs,
            modes.join(", "),
            ends.join(", ")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_sums() {
        let mix = parse_mix(DEFAULT_MIX).unwrap();
        assert_eq!(mix.0, [20, 20, 15, 25, 10, 10]);
        assert_eq!(mix.cumulative(), [20, 40, 55, 80, 90, 100]);
        assert_eq!(parse_mix("fetch=1").unwrap().0, [0, 0, 0, 1, 0, 0]);
        assert!(parse_mix("fetch=0").is_err());
        assert!(parse_mix("scan=3").is_err());
        assert!(parse_mix("upsert").is_err());
    }

    #[test]
    fn rng_stays_in_range() {
        let mut rng = Rng::new(7);
        for _ in 0..10_000 {
            let x = rng.f32();
            assert!((-1.0..1.0).contains(&x));
            assert!(rng.below(5) < 5);
        }
    }
}
