//! What one query costs the engine, counted in instructions (issue 15).
//!
//! Wall-clock figures are noise on a shared machine; instruction counts
//! under `valgrind --tool=callgrind` are repeatable. This harness keeps a
//! durable index in `--dir`: the first run fills it with seeded synthetic
//! embeddings and waits until the graph is built and saved (natively: a
//! build under valgrind would take an hour); every later run reopens it,
//! which loads the saved graph, so before/after runs search *the same
//! graph*. It then runs `--queries` queries (top_k 10) through the public
//! [`Index::query`] inside [`run_queries`], the function to count:
//!
//! ```sh
//! export CARGO_PROFILE_RELEASE_DEBUG=line-tables-only   # names and lines for callgrind
//! cargo build --release -p larch-engine --example query_cost
//! Q=target/release/examples/query_cost
//! $Q --dir /tmp/qc --vectors 100000 --queries 1000 --recall   # build once, natively
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/qc.out \
//!     --collect-atstart=no --toggle-collect='query_cost::run_queries' $Q --dir /tmp/qc --queries 500
//! callgrind_annotate --inclusive=yes /tmp/qc.out | head -40
//! ```
//!
//! Instructions per query = the total callgrind reports / `--queries`.
//! `--recall` compares the answers with an exact scan (natively; slow
//! under valgrind). The data: `--vectors` points in 384 dimensions (or
//! `--dim`) made from a 32-dimensional latent space with 256 clusters
//! through a fixed random linear map plus a little noise, so that, like
//! sentence embeddings, they have a low intrinsic dimension; queries come
//! from the same distribution with another seed. Cosine, the index's
//! default parameters (an int8 graph), or `--ef` for `ef_search`;
//! `--quantization none` keeps full floats in the graph (use another
//! `--dir`: a graph is saved with its quantization, and opening it with
//! another has it rebuilt).

use std::{
    hint::black_box,
    path::PathBuf,
    time::{Duration, Instant},
};

use larch_engine::{
    Dimension, Engine, Index, IndexConfig, Metric, Preference, Quantization, QueryRequest,
    SearchParams, UpsertRequest, VectorInput,
};

const INDEX: &str = "bench";
const NAMESPACE: &str = "ns";
const TOP_K: usize = 10;

struct Options {
    dir: PathBuf,
    vectors: usize,
    queries: usize,
    dim: usize,
    ef: Option<u32>,
    quantization: Quantization,
    recall: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        dir: PathBuf::from("/tmp/larch-query-cost"),
        vectors: 100_000,
        queries: 500,
        dim: 384,
        ef: None,
        quantization: Quantization::default(),
        recall: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |text: String| {
            text.parse::<usize>()
                .map_err(|err| format!("{text}: {err}"))
        };
        match flag.as_str() {
            "--dir" => options.dir = PathBuf::from(value()?),
            "--vectors" => options.vectors = number(value()?)?,
            "--queries" => options.queries = number(value()?)?,
            "--dim" => options.dim = number(value()?)?,
            "--ef" => options.ef = Some(number(value()?)? as u32),
            "--recall" => options.recall = true,
            "--quantization" => {
                options.quantization = Quantization::parse("--quantization", &value()?)
                    .map_err(|err| err.to_string())?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(options)
}

/// A seeded generator of embedding-like vectors (see the module docs).
struct Embeddings {
    state: u64,
    /// `dim × LATENT`, row-major.
    map: Vec<f32>,
    centers: Vec<[f32; LATENT]>,
    dim: usize,
}

const LATENT: usize = 32;
const LATENT_SPREAD: f32 = 1.0;
const NOISE: f32 = 6.0;

impl Embeddings {
    fn new(dim: usize, seed: u64) -> Self {
        // The map and the clusters are the same for every seed; only the points differ.
        let mut fixed = Embeddings {
            state: 0x5EED,
            map: Vec::new(),
            centers: Vec::new(),
            dim,
        };
        fixed.map = (0..dim * LATENT).map(|_| fixed.gaussian()).collect();
        fixed.centers = (0..256)
            .map(|_| std::array::from_fn(|_| fixed.gaussian()))
            .collect();
        fixed.state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        fixed
    }

    /// Uniform in [0, 1) (splitmix64).
    fn uniform(&mut self) -> f32 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }

    fn gaussian(&mut self) -> f32 {
        let (u, v) = (self.uniform().max(1e-7), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }

    fn next(&mut self) -> Vec<f32> {
        let center = (self.uniform() * self.centers.len() as f32) as usize % self.centers.len();
        let center = self.centers[center];
        let latent: Vec<f32> = center
            .iter()
            .map(|c| c + LATENT_SPREAD * self.gaussian())
            .collect();
        (0..self.dim)
            .map(|row| {
                let weights = &self.map[row * LATENT..(row + 1) * LATENT];
                let value: f32 = weights.iter().zip(&latent).map(|(w, z)| w * z).sum();
                value + NOISE * self.gaussian()
            })
            .collect()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options()?;
    let config = IndexConfig {
        dimension: Dimension::new(options.dim as u32)?,
        metric: Metric::Cosine,
    };
    let engine = Engine::open(&options.dir);
    let started = Instant::now();
    // Graph parameters are not stored with the index (the control plane keeps them): they are
    // given when opening it, or the indexer may rebuild the saved graph with the defaults.
    let params = SearchParams::default().with_quantization(options.quantization);
    let opened = engine.open_index_preferring(INDEX, config, Preference::Write, params);
    let index = match opened {
        Ok(index) => {
            wait_indexed(&index);
            eprintln!(
                "reopened {} records, graph ready in {:.1?}",
                index.indexing_status()?.records,
                started.elapsed()
            );
            index
        }
        Err(_) => {
            let index = engine.create_index_preferring(INDEX, config, Preference::Write, params)?;
            let mut data = Embeddings::new(options.dim, 1);
            for start in (0..options.vectors).step_by(1000) {
                let vectors = (start..options.vectors.min(start + 1000))
                    .map(|i| VectorInput {
                        id: format!("v{i}"),
                        values: data.next(),
                        ..Default::default()
                    })
                    .collect();
                index.upsert(UpsertRequest {
                    namespace: NAMESPACE.into(),
                    vectors,
                })?;
            }
            index.flush()?;
            wait_indexed(&index);
            wait_saved(&options.dir)?;
            eprintln!(
                "built {} records in {:.1?}",
                options.vectors,
                started.elapsed()
            );
            index
        }
    };
    if let Some(ef) = options.ef {
        index.set_search_params(index.search_params().with_ef_search(ef)?);
    }
    let mut queries = Embeddings::new(options.dim, 2);
    let queries: Vec<Vec<f32>> = (0..options.queries).map(|_| queries.next()).collect();
    let started = Instant::now();
    let answers = run_queries(&index, &queries);
    let elapsed = started.elapsed();
    eprintln!(
        "{} queries in {:.1?}: {:.3} ms each (wall clock: noise on a busy machine)",
        queries.len(),
        elapsed,
        elapsed.as_secs_f64() * 1e3 / queries.len().max(1) as f64
    );
    // The same graph and queries must give the same answers before and after a change.
    let digest = answers
        .iter()
        .flatten()
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, id| {
            id.bytes().chain([b',']).fold(hash, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
        });
    println!("answers digest: {digest:016x}");
    if options.recall {
        println!("recall@{TOP_K}: {:.4}", recall(&index, &queries, &answers)?);
    }
    Ok(())
}

/// Waits until the indexer has saved the graph file, which later runs load.
fn wait_saved(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let graphs = dir.join(INDEX).join("graphs");
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        let saved = std::fs::read_dir(&graphs).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|entry| entry.path().extension().is_some_and(|ext| ext == "graph"))
        });
        if saved {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "no graph file in {} after 5 minutes; delete the directory and run again",
        graphs.display()
    )
    .into())
}

/// Waits until the graph covers every record (built, or loaded from its file).
fn wait_indexed(index: &Index) {
    while index
        .indexing_status()
        .map_or(true, |status| status.pending > 0 || status.graph_nodes == 0)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The function callgrind counts: one `Index::query` per query vector.
#[inline(never)]
fn run_queries(index: &Index, queries: &[Vec<f32>]) -> Vec<Vec<String>> {
    queries
        .iter()
        .map(|vector| {
            let response = index.query(QueryRequest {
                namespace: NAMESPACE.into(),
                top_k: TOP_K as u32,
                vector: black_box(vector.clone()),
                ..Default::default()
            });
            response
                .map(|r| r.matches.into_iter().map(|m| m.id).collect())
                .unwrap_or_default()
        })
        .collect()
}

/// Share of the exact top-k found, by scanning every stored vector.
fn recall(
    index: &Index,
    queries: &[Vec<f32>],
    answers: &[Vec<String>],
) -> Result<f64, Box<dyn std::error::Error>> {
    let records = index.indexing_status()?.records as usize;
    let mut data = Embeddings::new(queries.first().map_or(0, Vec::len), 1);
    let data: Vec<Vec<f32>> = (0..records).map(|_| normalized(data.next())).collect();
    let mut hits = 0;
    for (query, answer) in queries.iter().zip(answers) {
        let query = normalized(query.clone());
        let mut scored: Vec<(f32, usize)> = data
            .iter()
            .enumerate()
            .map(|(i, v)| (-v.iter().zip(&query).map(|(a, b)| a * b).sum::<f32>(), i))
            .collect();
        scored.select_nth_unstable_by(TOP_K, |a, b| a.0.total_cmp(&b.0));
        hits += scored[..TOP_K]
            .iter()
            .filter(|(_, i)| answer.contains(&format!("v{i}")))
            .count();
    }
    Ok(hits as f64 / (queries.len() * TOP_K).max(1) as f64)
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm.max(f32::MIN_POSITIVE));
    v
}
