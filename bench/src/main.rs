//! `larch-bench`: measures what the storage engine and the server promise, on this machine.
//!
//! # Layout
//! - `restart` (this file): durable upsert throughput and recovery time of the engine.
//! - `soak` ([`soak`]): mixed traffic from many clients against the real `larch` binary for
//!   minutes, with connection churn, latency and RSS over time, and a final check that every
//!   acknowledged write is readable (see `bench/soak/README.md`).
//! - `load` ([`load`]): a gRPC load generator (pre-encoded requests, N in flight) that reports
//!   QPS, latency percentiles and its own ceiling; `bench/ann` measures every gRPC server with it.
//! - `scale` ([`scale`]): 1, 2, 3… data-plane pods over one S3-compatible bucket — ingest
//!   through the writer, follower lag, queries spread over every pod with CPU per query, and the
//!   bucket's requests at idle.
//!
//! `larch-bench restart` fills one durable index with random vectors (every batch is
//! acknowledged only after its log record is fsynced, exactly as the server does it), closes
//! it, and times recovery — opening the index again until it answers queries — then checks that
//! every vector came back. Defaults: 1,000,000 vectors of dimension 384 in batches of 1000.
//!
//! ```text
//! cargo run --release -p larch-bench -- restart
//! cargo run --release -p larch-bench -- restart --vectors 100000 --writers 4
//! ```
//!
//! ```text
//! cargo build --release --bin larch
//! cargo run --release -p larch-bench -- soak --duration 10m
//! ```
//!
//! Heavy by design: not part of the test suite (CI runs a one-minute soak on the debug build).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::{Parser, Subcommand};
use larch_engine::{
    Dimension, Engine, Index, IndexConfig, Metric, QueryRequest, UpsertRequest, VectorInput,
};

mod load;
mod scale;
mod soak;

#[derive(Debug, Parser)]
#[command(
    name = "larch-bench",
    about = "Benchmarks of Larch's storage engine and server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Durable upsert throughput, then restart (recovery) time.
    Restart(RestartArgs),
    /// Mixed read/write load with connection churn against the real binary, then a check
    /// that every acknowledged write is readable.
    Soak(Box<soak::SoakArgs>),
    /// gRPC load against any server (Larch's Pinecone API, Qdrant) from pre-encoded requests:
    /// QPS, latency percentiles, errors by status and the tool's own ceiling.
    Load(Box<load::LoadArgs>),
    /// N data-plane pods over one S3-compatible bucket, for each N: ingest through the writer,
    /// follower lag, queries over every pod (CPU per query), the bucket's requests at idle.
    Scale(Box<scale::ScaleArgs>),
}

#[derive(Debug, clap::Args)]
struct RestartArgs {
    /// Vectors to store.
    #[arg(long, default_value_t = 1_000_000)]
    vectors: usize,
    /// Dimension of each vector.
    #[arg(long, default_value_t = 384)]
    dim: u32,
    /// Vectors per upsert (Pinecone allows at most 1000).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent writers, each to its own namespace (they share fsyncs: group commit).
    #[arg(long, default_value_t = 1)]
    writers: usize,
    /// Where to put the data [default: a temporary directory, removed afterwards].
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Restart(args) => restart(args),
        Command::Soak(args) => soak::run(*args),
        Command::Load(args) => load::run(*args),
        Command::Scale(args) => scale::run(*args),
    }
}

/// A small, fast, seeded PRNG (xorshift64*): the data is random but the same every run.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // 24 random bits → [-1, 1).
        ((x >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

fn config(dim: u32) -> anyhow::Result<IndexConfig> {
    Ok(IndexConfig {
        dimension: Dimension::new(dim)?,
        metric: Metric::Cosine,
    })
}

fn restart(args: RestartArgs) -> anyhow::Result<()> {
    ensure!(
        args.writers >= 1 && args.batch >= 1,
        "--writers and --batch must be at least 1"
    );
    let temp;
    let root = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let config = config(args.dim)?;
    println!(
        "larch-bench restart: {} vectors of dimension {}, batches of {}, {} writer(s), data in {}",
        args.vectors,
        args.dim,
        args.batch,
        args.writers,
        root.display()
    );

    let engine = Engine::open(&root);
    let index = engine.create_index("bench", config)?;
    let started = Instant::now();
    fill(&index, &args)?;
    let fill_time = started.elapsed();
    drop(index);
    drop(engine);
    let bytes = dir_bytes(&root)?;

    let started = Instant::now();
    let engine = Engine::open(&root);
    let index = engine.open_index("bench", config)?;
    let reopened = started.elapsed();
    let stats = index.describe_stats(None)?;
    let first_query = Instant::now();
    let answer = index.query(QueryRequest {
        namespace: "w0".into(),
        top_k: 10,
        vector: vec![0.5; args.dim as usize],
        ..Default::default()
    })?;
    let query_time = first_query.elapsed();
    ensure!(
        stats.total_vector_count == args.vectors as u64,
        "recovered {} vectors, stored {}",
        stats.total_vector_count,
        args.vectors
    );
    ensure!(
        answer.matches.len() == 10.min(args.vectors),
        "the recovered index answers queries"
    );

    let raw = args.vectors as f64 * f64::from(args.dim) * 4.0;
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| durable upsert throughput | {:.0} vectors/s ({:.1} MB/s of raw floats) |",
        args.vectors as f64 / secs(fill_time),
        raw / 1e6 / secs(fill_time)
    );
    println!("| fill time | {:.2} s |", secs(fill_time));
    println!(
        "| bytes on disk | {:.1} MB ({:.2}x the raw floats) |",
        bytes as f64 / 1e6,
        bytes as f64 / raw
    );
    println!("| restart: open + recover | {:.2} s |", secs(reopened));
    println!(
        "| first query after restart (exact, {} vectors) | {:.1} ms |",
        stats.total_vector_count,
        secs(query_time) * 1e3
    );
    println!("| recovered vectors | {} (all) |", stats.total_vector_count);
    Ok(())
}

/// Upserts `args.vectors` vectors, `args.writers` threads in parallel (one namespace each).
fn fill(index: &Arc<Index>, args: &RestartArgs) -> anyhow::Result<()> {
    let per_writer = args.vectors.div_ceil(args.writers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.writers)
            .map(|w| {
                let index = Arc::clone(index);
                scope.spawn(move || -> anyhow::Result<()> {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
                    let start = w * per_writer;
                    let end = ((w + 1) * per_writer).min(args.vectors);
                    let mut next = start;
                    while next < end {
                        let stop = (next + args.batch).min(end);
                        let vectors = (next..stop)
                            .map(|i| VectorInput {
                                id: format!("v{i}"),
                                values: (0..args.dim).map(|_| rng.next_f32()).collect(),
                                ..Default::default()
                            })
                            .collect();
                        index
                            .upsert(UpsertRequest {
                                namespace: format!("w{w}"),
                                vectors,
                            })
                            .with_context(|| format!("upsert of vectors {next}..{stop}"))?;
                        next = stop;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("writer thread panicked"))
    })
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}

/// Total size of the files under `dir`.
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
