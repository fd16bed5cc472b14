//! A hierarchical navigable small world (HNSW) graph: the approximate
//! nearest-neighbour index of a namespace.
//!
//! The algorithm is Malkov & Yashunin's (2016): every node sits on layer 0
//! and, with geometrically falling probability, on higher layers too; a
//! search descends greedily from the top layer's entry point, then explores
//! layer 0 keeping the `ef` closest nodes. Links are chosen with the paper's
//! neighbour-selection heuristic (a candidate is kept only if it is closer to
//! the new node than to any link already kept), which keeps the graph
//! navigable on clustered data such as sentence embeddings.
//!
//! A graph is written by one thread (the indexer) and read by many: readers
//! search an immutable snapshot (`Arc<Graph>`), and the indexer publishes a
//! new one by cloning (see `ann`). Cloning is cheap where it matters: vectors
//! sit in fixed-size chunks behind `Arc`s, so a clone shares every chunk and
//! the indexer copies only the one it appends to; the links (a few dozen
//! `u32` per node) are copied. A search allocates nothing once warm: its
//! visited marks, heaps and results live in buffers kept per thread (the
//! query pool's and the indexer's), and the walk is compiled once per vector
//! format and space (see `Scorer`), with its distance kernel picked once.
//!
//! Distances are "lower is closer" for every metric: the negated inner
//! product for cosine (whose vectors are normalized on the way in), the
//! squared distance for euclidean. Dotproduct is reduced to euclidean
//! (Bachrach et al., 2014): each stored vector `x` gets one more value,
//! `sqrt(M² - |x|²)` where `M` bounds the norms, and each query a `0`, so
//! the squared distance is `|q|² + M² - 2 q·x` and ranks exactly as the
//! inner product does, while the graph stays a metric one (HNSW's
//! neighbour heuristic needs the triangle inequality to hold roughly). With int8 quantization each
//! vector is held as signed bytes with one scale, the query is quantized the
//! same way, and a distance is the integer inner product of the two codes
//! times both scales: a quarter of the memory to read per neighbour, and 32
//! products per AVX2 step instead of 8. The caller rescores candidates with
//! the exact values.

use std::{
    cell::RefCell,
    cmp::{Ordering, Reverse},
    collections::BinaryHeap,
    sync::Arc,
};

use crate::{Metric, Quantization, SearchParams, distance};

mod file;

pub(crate) use file::Loaded;

/// Vectors per storage chunk; a clone of the graph shares full chunks.
const CHUNK: usize = 4096;

/// Unvisited neighbours of an expanded node looked up and prefetched at once
/// (see [`Graph::search_layer`]): a layer-0 node of the default degree has 32 links.
const FRESH_GROUP: usize = 32;

/// A graph node: its position in insertion order.
pub(crate) type Node = u32;

/// How distances are computed in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Space {
    /// Negated inner product of normalized vectors.
    Cosine,
    /// Squared euclidean distance; dotproduct indexes use it too, on
    /// vectors with one extra dimension (see [`Graph::new`]).
    L2,
}

/// Append-only storage of fixed-length rows in shared chunks.
#[derive(Debug, Clone)]
struct Chunked<T> {
    width: usize,
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

impl<T: Copy> Chunked<T> {
    fn new(width: usize) -> Self {
        Chunked {
            width,
            chunks: Vec::new(),
            len: 0,
        }
    }

    fn get(&self, row: usize) -> &[T] {
        let chunk = &self.chunks[row / CHUNK];
        let start = (row % CHUNK) * self.width;
        &chunk[start..start + self.width]
    }

    fn push(&mut self, values: &[T]) {
        debug_assert_eq!(values.len(), self.width);
        if self.len.is_multiple_of(CHUNK) {
            self.chunks
                .push(Arc::new(Vec::with_capacity(CHUNK * self.width)));
        }
        let last = self.chunks.last_mut().expect("a chunk was just ensured");
        // Copies the chunk only if a published snapshot still shares it.
        Arc::make_mut(last).extend_from_slice(values);
        self.len += 1;
    }

    fn bytes(&self) -> usize {
        self.chunks.len() * CHUNK * self.width * size_of::<T>()
    }
}

/// The vectors of the graph, as the index's quantization says.
#[derive(Debug, Clone)]
enum Vectors {
    F32(Chunked<f32>),
    Int8 {
        codes: Chunked<i8>,
        /// Per node: the value of code 1.
        scales: Vec<f32>,
        /// Per node: the squared norm of the original vector (euclidean).
        sq_norms: Vec<f32>,
    },
}

/// A query prepared for the graph's space.
#[derive(Debug)]
pub(crate) struct Prepared {
    values: Vec<f32>,
    sq_norm: f32,
    /// For an int8 graph: `values` quantized as the stored vectors are, and
    /// the value of code 1; empty otherwise.
    codes: Vec<i8>,
    code_scale: f32,
}

/// A node and its distance, ordered by distance (as `f32::total_cmp`) then node.
#[derive(Debug, Clone, Copy)]
struct Scored {
    dist: f32,
    node: Node,
    /// The distance's `total_cmp` integer in the high half, the node in the
    /// low half: the same order in one comparison, which the heaps of a walk
    /// make tens of thousands of times per query.
    key: i64,
}

impl Scored {
    fn new(dist: f32, node: Node) -> Self {
        // `f32::total_cmp`'s mapping: flipping the magnitude bits of negative
        // values makes the bits order as the floats do, as signed integers.
        let mut bits = dist.to_bits() as i32;
        bits ^= (((bits >> 31) as u32) >> 1) as i32;
        Scored {
            dist,
            node,
            key: (i64::from(bits) << 32) | i64::from(node),
        }
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        debug_assert_eq!(
            self.key.cmp(&other.key),
            self.dist
                .total_cmp(&other.dist)
                .then(self.node.cmp(&other.node))
        );
        self.key.cmp(&other.key)
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}

/// Marks of visited nodes: a node is visited when its mark equals the
/// current epoch, so starting a search costs one increment, not a clear.
struct Visited {
    marks: Vec<u32>,
    epoch: u32,
}

impl Visited {
    /// Starts a new search over `len` nodes.
    fn reset(&mut self, len: usize) {
        if self.marks.len() < len {
            self.marks.resize(len, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
    }

    /// Marks `node`; returns whether it was unvisited.
    fn insert(&mut self, node: Node) -> bool {
        let mark = &mut self.marks[node as usize];
        let fresh = *mark != self.epoch;
        *mark = self.epoch;
        fresh
    }
}

/// What a layer search works in, kept per thread (a query-pool thread, an
/// indexer worker) and reused, so a search allocates nothing once the buffers
/// have grown to the graph's size: the visited marks and the two heaps. (The
/// unvisited neighbours of the node being expanded sit on the stack.)
struct Scratch {
    visited: Visited,
    /// Backing store of the candidate heap (closest on top).
    candidates: Vec<Reverse<Scored>>,
    /// Backing store of the result heap (farthest on top).
    found: Vec<Scored>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            visited: Visited { marks: Vec::new(), epoch: 0 },
            candidates: Vec::new(),
            found: Vec::new(),
        })
    };
}

/// Distances from one query to the graph's nodes, in one vector format and
/// space. The walk is generic over it, so each combination compiles to its
/// own loop with the kernel called directly: no per-distance match on the
/// format, the space or the CPU's features.
trait Scorer {
    /// Where the vector of a node is: looked up once per scored node, for both
    /// [`Scorer::prefetch`] and [`Scorer::dist_at`].
    type Row<'s>: Copy + Default
    where
        Self: 's;
    /// The vector of `node`.
    fn row(&self, node: Node) -> Self::Row<'_>;
    /// Distance from the query to `node`, whose vector is `row`; lower is closer.
    fn dist_at(&self, row: Self::Row<'_>, node: Node) -> f32;
    /// Starts loading the vector `row` into the cache.
    fn prefetch(&self, row: Self::Row<'_>);
    /// Distance from the query to `node`; lower is closer.
    #[inline]
    fn dist(&self, node: Node) -> f32 {
        self.dist_at(self.row(node), node)
    }
}

/// Full-precision vectors, negated inner product (cosine).
struct CosineF32<'a> {
    query: &'a [f32],
    values: &'a Chunked<f32>,
    dot: distance::Kernel<f32>,
}

impl Scorer for CosineF32<'_> {
    type Row<'s>
        = &'s [f32]
    where
        Self: 's;

    #[inline]
    fn row(&self, node: Node) -> &[f32] {
        self.values.get(node as usize)
    }

    #[inline]
    fn dist_at(&self, row: &[f32], _: Node) -> f32 {
        -self.dot.run(self.query, row)
    }

    #[inline]
    fn prefetch(&self, row: &[f32]) {
        distance::prefetch(row);
    }
}

/// Full-precision vectors, squared euclidean distance (euclidean, dotproduct).
struct L2F32<'a> {
    query: &'a [f32],
    values: &'a Chunked<f32>,
    l2: distance::Kernel<f32>,
}

impl Scorer for L2F32<'_> {
    type Row<'s>
        = &'s [f32]
    where
        Self: 's;

    #[inline]
    fn row(&self, node: Node) -> &[f32] {
        self.values.get(node as usize)
    }

    #[inline]
    fn dist_at(&self, row: &[f32], _: Node) -> f32 {
        self.l2.run(self.query, row)
    }

    #[inline]
    fn prefetch(&self, row: &[f32]) {
        distance::prefetch(row);
    }
}

/// Int8 codes, either space: the query's codes times the node's, scaled by
/// both (the same arithmetic as [`Graph::dist`]).
struct Int8<'a> {
    query: &'a Prepared,
    codes: &'a Chunked<i8>,
    scales: &'a [f32],
    sq_norms: &'a [f32],
    space: Space,
    dot: distance::CodeKernel,
}

impl Scorer for Int8<'_> {
    type Row<'s>
        = &'s [i8]
    where
        Self: 's;

    #[inline]
    fn row(&self, node: Node) -> &[i8] {
        self.codes.get(node as usize)
    }

    #[inline]
    fn dist_at(&self, row: &[i8], node: Node) -> f32 {
        let node = node as usize;
        let dot = self.dot.run(&self.query.codes, row) as f32
            * (self.query.code_scale * self.scales[node]);
        match self.space {
            Space::Cosine => -dot,
            Space::L2 => self.query.sq_norm + self.sq_norms[node] - 2.0 * dot,
        }
    }

    #[inline]
    fn prefetch(&self, row: &[i8]) {
        distance::prefetch(row);
    }
}

/// Signed-byte codes of `values` and the value of code 1.
fn quantize(values: &[f32]) -> (Vec<i8>, f32) {
    let max = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let code = values
        .iter()
        .map(|v| {
            let x = (v / scale).clamp(-127.0, 127.0);
            // Rounded half away from zero, as `f32::round`, but a cast truncates in one
            // instruction where `round` is a library call on baseline x86-64: a query is
            // quantized on every search.
            (x + 0.5f32.copysign(x)) as i8
        })
        .collect();
    (code, scale)
}

/// An HNSW graph over vectors of one dimension. See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    space: Space,
    /// Values per stored vector: the index dimension, plus one for dotproduct.
    width: usize,
    /// Dotproduct only: `M²`, the squared bound on stored norms.
    norm_bound: Option<f32>,
    /// Vectors inserted with a norm above the bound (their extra value is 0,
    /// so they rank slightly off); many of them call for a rebuild.
    over_bound: usize,
    /// Links kept per node on upper layers, and chosen for a new node.
    m: usize,
    /// Links kept per node on layer 0.
    m0: usize,
    ef_construction: usize,
    /// `1 / ln(m)`: scales the random level of a new node.
    level_mult: f64,
    vectors: Vectors,
    /// Layer-0 links, `m0 + 1` slots per node: the count, then the links.
    layer0: Vec<Node>,
    /// Links on layers 1 and up: `upper[node][level - 1]`.
    upper: Vec<Vec<Vec<Node>>>,
    /// The node on the top layer where every search starts, and that layer.
    entry: Option<(Node, usize)>,
    /// State of the level generator (xorshift64*), seeded for repeatable builds.
    rng: u64,
}

impl Graph {
    /// An empty graph for `dim`-dimensional vectors compared by `metric`.
    /// For dotproduct, `max_norm` bounds the norms of the vectors to come
    /// (the largest among those at hand, with some headroom); see the
    /// module docs.
    pub(crate) fn new(dim: usize, metric: Metric, params: &SearchParams, max_norm: f32) -> Self {
        let norm_bound = (metric == Metric::DotProduct).then_some(max_norm * max_norm);
        let width = dim + usize::from(norm_bound.is_some());
        let m = params.m() as usize;
        let vectors = match params.quantization() {
            Quantization::None => Vectors::F32(Chunked::new(width)),
            Quantization::Int8 => Vectors::Int8 {
                codes: Chunked::new(width),
                scales: Vec::new(),
                sq_norms: Vec::new(),
            },
        };
        Graph {
            space: match metric {
                Metric::Cosine => Space::Cosine,
                Metric::DotProduct | Metric::Euclidean => Space::L2,
            },
            width,
            norm_bound,
            over_bound: 0,
            m,
            m0: 2 * m,
            ef_construction: (params.ef_construction() as usize).max(m),
            level_mult: 1.0 / (m as f64).ln(),
            vectors,
            layer0: Vec::new(),
            upper: Vec::new(),
            entry: None,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Number of nodes.
    pub(crate) fn len(&self) -> usize {
        self.upper.len()
    }

    /// Whether the graph was built with `params`' shape (degree and
    /// quantization); if not, it should be rebuilt.
    pub(crate) fn built_with(&self, params: &SearchParams) -> bool {
        let quantized = matches!(self.vectors, Vectors::Int8 { .. });
        self.m == params.m() as usize && quantized == (params.quantization() == Quantization::Int8)
    }

    /// Approximate memory held: vectors and links.
    pub(crate) fn memory_bytes(&self) -> usize {
        let vectors = match &self.vectors {
            Vectors::F32(values) => values.bytes(),
            Vectors::Int8 {
                codes,
                scales,
                sq_norms,
            } => codes.bytes() + (scales.capacity() + sq_norms.capacity()) * size_of::<f32>(),
        };
        let upper: usize = self
            .upper
            .iter()
            .map(|levels| {
                size_of::<Vec<Vec<Node>>>()
                    + levels
                        .iter()
                        .map(|links| size_of::<Vec<Node>>() + links.capacity() * size_of::<Node>())
                        .sum::<usize>()
            })
            .sum();
        vectors + self.layer0.capacity() * size_of::<Node>() + upper
    }

    /// Vectors inserted with a norm above the dotproduct bound.
    pub(crate) fn over_bound(&self) -> usize {
        self.over_bound
    }

    /// A query as the graph compares it: normalized for cosine, a `0`
    /// appended for dotproduct.
    pub(crate) fn prepare(&self, values: &[f32]) -> Prepared {
        self.prepared(self.query_values(values))
    }

    /// `values` normalized for cosine, with a `0` appended for dotproduct.
    fn query_values(&self, values: &[f32]) -> Vec<f32> {
        let mut values = values.to_vec();
        if self.space == Space::Cosine {
            let norm = distance::norm(&values);
            if norm > 0.0 {
                values.iter_mut().for_each(|v| *v /= norm);
            }
        }
        if self.norm_bound.is_some() {
            values.push(0.0);
        }
        values
    }

    /// Final `values` with their squared norm and, for an int8 graph, their codes.
    fn prepared(&self, values: Vec<f32>) -> Prepared {
        let sq_norm = distance::dot(&values, &values);
        let (codes, code_scale) = match self.vectors {
            Vectors::Int8 { .. } => quantize(&values),
            Vectors::F32(_) => (Vec::new(), 0.0),
        };
        Prepared {
            values,
            sq_norm,
            codes,
            code_scale,
        }
    }

    /// A vector to store, as the graph holds it: as a query, but for
    /// dotproduct the extra value lifts it onto the sphere of radius `M`.
    /// Also says whether its norm is above that bound.
    fn stored_form(&self, values: &[f32]) -> (Prepared, bool) {
        let mut values = self.query_values(values);
        let mut over = false;
        if let Some(bound) = self.norm_bound {
            let extra = bound - distance::dot(&values, &values);
            // Rounding may leave the largest vector a hair above its own norm.
            over = extra < -1e-4 * bound;
            *values.last_mut().expect("one value was appended") = extra.max(0.0).sqrt();
        }
        (self.prepared(values), over)
    }

    /// Distance from a prepared query to `node`.
    fn dist(&self, query: &Prepared, node: Node) -> f32 {
        let node = node as usize;
        match &self.vectors {
            Vectors::F32(values) => match self.space {
                Space::Cosine => -distance::dot(&query.values, values.get(node)),
                Space::L2 => distance::squared_euclidean(&query.values, values.get(node)),
            },
            Vectors::Int8 {
                codes,
                scales,
                sq_norms,
            } => {
                let dot = distance::dot_codes(&query.codes, codes.get(node)) as f32
                    * (query.code_scale * scales[node]);
                match self.space {
                    Space::Cosine => -dot,
                    Space::L2 => query.sq_norm + sq_norms[node] - 2.0 * dot,
                }
            }
        }
    }

    /// Distance between two stored nodes; without quantization no copy is made.
    fn between(&self, a: Node, b: Node) -> f32 {
        match &self.vectors {
            Vectors::F32(values) => {
                let (a, b) = (values.get(a as usize), values.get(b as usize));
                match self.space {
                    Space::Cosine => -distance::dot(a, b),
                    Space::L2 => distance::squared_euclidean(a, b),
                }
            }
            Vectors::Int8 {
                codes,
                scales,
                sq_norms,
            } => {
                let (a, b) = (a as usize, b as usize);
                let dot = distance::dot_codes(codes.get(a), codes.get(b)) as f32
                    * (scales[a] * scales[b]);
                match self.space {
                    Space::Cosine => -dot,
                    Space::L2 => sq_norms[a] + sq_norms[b] - 2.0 * dot,
                }
            }
        }
    }

    fn links(&self, node: Node, level: usize) -> &[Node] {
        if level == 0 {
            let start = node as usize * (self.m0 + 1);
            let count = self.layer0[start] as usize;
            &self.layer0[start + 1..start + 1 + count]
        } else {
            &self.upper[node as usize][level - 1]
        }
    }

    fn set_links(&mut self, node: Node, level: usize, links: &[Node]) {
        if level == 0 {
            let start = node as usize * (self.m0 + 1);
            self.layer0[start] = links.len() as Node;
            self.layer0[start + 1..start + 1 + links.len()].copy_from_slice(links);
        } else {
            let slot = &mut self.upper[node as usize][level - 1];
            slot.clear();
            slot.extend_from_slice(links);
        }
    }

    fn random_level(&mut self) -> usize {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let bits = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        // Uniform in (0, 1]: never 0, whose logarithm is infinite.
        let uniform = (bits as f64 + 1.0) / (1u64 << 53) as f64;
        ((-uniform.ln() * self.level_mult) as usize).min(16)
    }

    /// Adds a vector; returns its node.
    pub(crate) fn insert(&mut self, values: &[f32]) -> Node {
        let (query, over) = self.stored_form(values);
        self.over_bound += usize::from(over);
        debug_assert_eq!(query.values.len(), self.width);
        let node = self.len() as Node;
        match &mut self.vectors {
            Vectors::F32(stored) => stored.push(&query.values),
            Vectors::Int8 {
                codes,
                scales,
                sq_norms,
            } => {
                codes.push(&query.codes);
                scales.push(query.code_scale);
                sq_norms.push(query.sq_norm);
            }
        }
        let level = self.random_level();
        self.layer0.extend(std::iter::repeat_n(0, self.m0 + 1));
        self.upper.push(vec![Vec::new(); level]);

        let Some((entry, top)) = self.entry else {
            self.entry = Some((node, level));
            return node;
        };
        let start = Scored::new(self.dist(&query, entry), entry);
        let nearest = self.with_scorer(
            &query,
            Descend {
                graph: self,
                from: start,
                layers: level + 1..top + 1,
            },
        );
        let mut entries = vec![nearest];
        for layer in (0..=level.min(top)).rev() {
            let mut found = Vec::new();
            self.with_scorer(
                &query,
                Layer {
                    graph: self,
                    entries: &entries,
                    ef: self.ef_construction,
                    layer,
                    accept: |_| true,
                    out: &mut found,
                },
            );
            let chosen = self.select(&found, self.m);
            let links: Vec<Node> = chosen.iter().map(|s| s.node).collect();
            self.set_links(node, layer, &links);
            for peer in chosen {
                self.link(peer.node, node, peer.dist, layer);
            }
            entries = found;
        }
        if level > top {
            self.entry = Some((node, level));
        }
        node
    }

    /// Adds a link `from → to` (at distance `dist`) on `layer`, pruning
    /// `from`'s links with the heuristic if they overflow.
    fn link(&mut self, from: Node, to: Node, dist: f32, layer: usize) {
        let cap = if layer == 0 { self.m0 } else { self.m };
        let current = self.links(from, layer);
        if current.len() < cap {
            let mut links = current.to_vec();
            links.push(to);
            self.set_links(from, layer, &links);
            return;
        }
        let mut candidates: Vec<Scored> = current
            .iter()
            .map(|&node| Scored::new(self.between(from, node), node))
            .collect();
        candidates.push(Scored::new(dist, to));
        candidates.sort_unstable();
        let kept: Vec<Node> = self
            .select(&candidates, cap)
            .iter()
            .map(|s| s.node)
            .collect();
        self.set_links(from, layer, &kept);
    }

    /// The neighbour-selection heuristic: walks `candidates` (sorted by
    /// distance to the new node) and keeps one only if it is closer to the
    /// new node than to every candidate kept so far; at most `limit`.
    fn select(&self, candidates: &[Scored], limit: usize) -> Vec<Scored> {
        let mut kept: Vec<Scored> = Vec::with_capacity(limit);
        for candidate in candidates {
            if kept.len() == limit {
                break;
            }
            let diverse = kept
                .iter()
                .all(|k| self.between(candidate.node, k.node) >= candidate.dist);
            if diverse {
                kept.push(*candidate);
            }
        }
        kept
    }

    /// Runs `f` with the scorer of `query` for this graph's format and space.
    fn with_scorer<R>(&self, query: &Prepared, f: impl ScorerFn<R>) -> R {
        match (&self.vectors, self.space) {
            (Vectors::F32(values), Space::Cosine) => f.call(&CosineF32 {
                query: &query.values,
                values,
                dot: distance::Kernel::dot(self.width),
            }),
            (Vectors::F32(values), Space::L2) => f.call(&L2F32 {
                query: &query.values,
                values,
                l2: distance::Kernel::squared_euclidean(self.width),
            }),
            (
                Vectors::Int8 {
                    codes,
                    scales,
                    sq_norms,
                },
                space,
            ) => f.call(&Int8 {
                query,
                codes,
                scales,
                sq_norms,
                space,
                dot: distance::CodeKernel::dot(self.width),
            }),
        }
    }

    /// Moves greedily to closer nodes on `layer` until none is closer.
    fn greedy<S: Scorer>(&self, scorer: &S, mut nearest: Scored, layer: usize) -> Scored {
        loop {
            let mut moved = false;
            for &node in self.links(nearest.node, layer) {
                let dist = scorer.dist(node);
                if dist < nearest.dist {
                    nearest = Scored::new(dist, node);
                    moved = true;
                }
            }
            if !moved {
                return nearest;
            }
        }
    }

    /// Best-first search of one layer from `entries`, keeping the `ef`
    /// closest nodes that `accept` allows; `out` receives them sorted
    /// closest first. Rejected nodes are still walked through.
    fn search_layer<S: Scorer, A: Fn(Node) -> bool>(
        &self,
        scorer: &S,
        entries: &[Scored],
        ef: usize,
        layer: usize,
        accept: A,
        out: &mut Vec<Scored>,
    ) {
        SCRATCH.with_borrow_mut(|scratch| {
            let Scratch {
                visited,
                candidates: candidates_buf,
                found: found_buf,
            } = scratch;
            visited.reset(self.len());
            candidates_buf.clear();
            found_buf.clear();
            // Heaps over the kept buffers: `from` an empty vector is free, and
            // `into_vec` hands the grown buffer back for the next search.
            let mut candidates = BinaryHeap::from(std::mem::take(candidates_buf));
            let mut found_heap = BinaryHeap::from(std::mem::take(found_buf));
            for entry in entries {
                if visited.insert(entry.node) {
                    candidates.push(Reverse(*entry));
                    if accept(entry.node) {
                        found_heap.push(*entry);
                    }
                }
            }
            while found_heap.len() > ef {
                found_heap.pop();
            }
            while let Some(Reverse(closest)) = candidates.pop() {
                let bound = found_heap.peek().map_or(f32::INFINITY, |worst| worst.dist);
                if closest.dist > bound && found_heap.len() >= ef {
                    break;
                }
                // Unvisited neighbours first, their vectors looked up and
                // prefetched, then scored: the memory loads overlap instead of
                // queueing. (In groups on the stack: a node has at most 128 links.)
                for group in self.links(closest.node, layer).chunks(FRESH_GROUP) {
                    let mut fresh = [(0, S::Row::default()); FRESH_GROUP];
                    let mut count = 0;
                    for &node in group {
                        if visited.insert(node) {
                            let row = scorer.row(node);
                            scorer.prefetch(row);
                            fresh[count] = (node, row);
                            count += 1;
                        }
                    }
                    for &(node, row) in &fresh[..count] {
                        let dist = scorer.dist_at(row, node);
                        let bound = found_heap.peek().map_or(f32::INFINITY, |worst| worst.dist);
                        if found_heap.len() < ef || dist < bound {
                            let scored = Scored::new(dist, node);
                            candidates.push(Reverse(scored));
                            if accept(node) {
                                if found_heap.len() < ef {
                                    found_heap.push(scored);
                                } else if let Some(mut farthest) = found_heap.peek_mut() {
                                    // Full, and `scored` is closer than the farthest
                                    // kept (`dist < bound`): it takes that place with
                                    // one sift down instead of a push and a pop.
                                    *farthest = scored;
                                }
                            }
                        }
                    }
                }
            }
            let mut kept = found_heap.into_vec();
            kept.sort_unstable();
            out.clear();
            out.extend_from_slice(&kept);
            kept.clear();
            *found_buf = kept;
            let mut left = candidates.into_vec();
            left.clear();
            *candidates_buf = left;
        })
    }

    /// Up to `ef` nodes closest to `query` among those `accept` allows,
    /// closest first, with their graph distances.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn search(
        &self,
        query: &Prepared,
        ef: usize,
        accept: impl Fn(Node) -> bool,
    ) -> Vec<(Node, f32)> {
        let mut found = Vec::new();
        self.search_each(query, ef, accept, |node, dist| found.push((node, dist)));
        found
    }

    /// `Graph::search` (tests) handing each node to `each` instead of collecting
    /// them: the query path allocates nothing per search (see [`Scratch`]).
    pub(crate) fn search_each(
        &self,
        query: &Prepared,
        ef: usize,
        accept: impl Fn(Node) -> bool,
        mut each: impl FnMut(Node, f32),
    ) {
        let Some((entry, top)) = self.entry else {
            return;
        };
        let start = Scored::new(self.dist(query, entry), entry);
        let nearest = self.with_scorer(
            query,
            Descend {
                graph: self,
                from: start,
                layers: 1..top + 1,
            },
        );
        RESULTS.with_borrow_mut(|found| {
            self.with_scorer(
                query,
                Layer {
                    graph: self,
                    entries: &[nearest],
                    ef: ef.max(1),
                    layer: 0,
                    accept,
                    out: &mut *found,
                },
            );
            for scored in found.iter() {
                each(scored.node, scored.dist);
            }
        });
    }
}

/// A computation generic over the scorer; what [`Graph::with_scorer`] runs.
/// (A closure cannot be generic over a type, so this is a trait.)
trait ScorerFn<R> {
    fn call<S: Scorer>(self, scorer: &S) -> R;
}

/// Greedy descent through `layers`, top first, from `from`.
struct Descend<'a> {
    graph: &'a Graph,
    from: Scored,
    layers: std::ops::Range<usize>,
}

impl ScorerFn<Scored> for Descend<'_> {
    fn call<S: Scorer>(self, scorer: &S) -> Scored {
        self.layers.rev().fold(self.from, |nearest, layer| {
            self.graph.greedy(scorer, nearest, layer)
        })
    }
}

/// Best-first search of one layer (see [`Graph::search_layer`]).
struct Layer<'a, A> {
    graph: &'a Graph,
    entries: &'a [Scored],
    ef: usize,
    layer: usize,
    accept: A,
    out: &'a mut Vec<Scored>,
}

impl<A: Fn(Node) -> bool> ScorerFn<()> for Layer<'_, A> {
    fn call<S: Scorer>(self, scorer: &S) {
        let Layer {
            graph,
            entries,
            ef,
            layer,
            accept,
            out,
        } = self;
        graph.search_layer(scorer, entries, ef, layer, accept, out);
    }
}

thread_local! {
    /// The result buffer of [`Graph::search_each`], kept per thread like [`Scratch`].
    static RESULTS: RefCell<Vec<Scored>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(count: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        crate::test_support::clustered(count, dim, seed, 16, 0.3)
    }

    /// The `k` nearest by the metric's own score, in full precision.
    fn exact(data: &[Vec<f32>], metric: Metric, query: &[f32], k: usize) -> Vec<Node> {
        let query = distance::DenseQuery::new(metric, query);
        let mut all: Vec<Scored> = (0..data.len())
            .map(|i| {
                let score = query.score(&data[i], || distance::norm(&data[i]));
                let dist = if metric.higher_is_better() {
                    -score
                } else {
                    score
                };
                Scored::new(dist, i as Node)
            })
            .collect();
        all.sort_unstable();
        all.iter().take(k).map(|s| s.node).collect()
    }

    fn recall(metric: Metric, params: SearchParams, ef: usize) -> f64 {
        let (dim, k) = (24, 10);
        let data = dataset(3000, dim, 7);
        let queries = dataset(100, dim, 99);
        let max_norm = data.iter().map(|v| distance::norm(v)).fold(0.0, f32::max);
        let mut graph = Graph::new(dim, metric, &params, max_norm);
        for v in &data {
            graph.insert(v);
        }
        assert_eq!(graph.over_bound(), 0);
        let mut hits = 0;
        for q in &queries {
            let truth = exact(&data, metric, q, k);
            let found: Vec<Node> = graph
                .search(&graph.prepare(q), ef, |_| true)
                .iter()
                .take(k)
                .map(|(node, _)| *node)
                .collect();
            hits += found.iter().filter(|n| truth.contains(n)).count();
        }
        hits as f64 / (queries.len() * k) as f64
    }

    #[test]
    fn recall_is_high_for_every_metric() {
        // The f32 graph, unrescored (int8: below, and rescored through the
        // index in `namespace::ann`'s tests). Dotproduct ranks by an unbounded
        // score, which a graph navigates less well: it gets a larger candidate
        // list for the same bound.
        for (metric, ef) in [
            (Metric::Cosine, 64),
            (Metric::Euclidean, 64),
            (Metric::DotProduct, 128),
        ] {
            let r = recall(
                metric,
                SearchParams::default().with_quantization(Quantization::None),
                ef,
            );
            assert!(r >= 0.95, "{metric}: recall {r}");
        }
    }

    #[test]
    fn int8_graph_finds_nearly_the_same_neighbours() {
        let params = SearchParams::default().with_quantization(Quantization::Int8);
        let r = recall(Metric::Cosine, params, 64);
        assert!(r >= 0.85, "recall {r}");
    }

    #[test]
    fn search_only_returns_accepted_nodes_and_fills_up() {
        let data = dataset(2000, 16, 3);
        let mut graph = Graph::new(16, Metric::Euclidean, &SearchParams::default(), 0.0);
        for v in &data {
            graph.insert(v);
        }
        let query = graph.prepare(&data[5]);
        let found = graph.search(&query, 20, |node| node % 7 == 0);
        assert_eq!(found.len(), 20);
        assert!(found.iter().all(|(node, _)| node % 7 == 0));
        assert!(found.windows(2).all(|w| w[0].1 <= w[1].1), "sorted");
        assert!(graph.search(&query, 20, |_| false).is_empty());
    }

    #[test]
    fn searches_reusing_a_threads_scratch_answer_as_a_fresh_thread_does() {
        let build = |count: usize, quantization: Quantization| {
            let params = SearchParams::default().with_quantization(quantization);
            let mut graph = Graph::new(16, Metric::Euclidean, &params, 0.0);
            for v in &dataset(count, 16, count as u64) {
                graph.insert(v);
            }
            graph
        };
        let (large, small) = (
            build(2500, Quantization::None),
            build(300, Quantization::Int8),
        );
        let queries = dataset(20, 16, 77);
        let answers = |graph: &Graph| -> Vec<Vec<(Node, f32)>> {
            queries
                .iter()
                .map(|q| graph.search(&graph.prepare(q), 32, |node| node % 3 != 0))
                .collect()
        };
        let fresh = std::thread::scope(|scope| {
            let large = scope.spawn(|| answers(&large));
            let small = scope.spawn(|| answers(&small));
            (large.join().expect("large"), small.join().expect("small"))
        });
        // This thread's scratch grows on the large graph, then serves the small one and back.
        assert_eq!(answers(&large), fresh.0);
        assert_eq!(answers(&small), fresh.1);
        assert_eq!(answers(&large), fresh.0);
        assert!(fresh.1.iter().all(|found| found.len() == 32));
    }

    #[test]
    fn the_stored_vector_is_its_own_nearest() {
        let data = dataset(500, 8, 11);
        let mut graph = Graph::new(8, Metric::Cosine, &SearchParams::default(), 0.0);
        for v in &data {
            graph.insert(v);
        }
        for (i, v) in data.iter().enumerate().step_by(37) {
            let found = graph.search(&graph.prepare(v), 10, |_| true);
            assert_eq!(found[0].0, i as Node);
        }
    }

    #[test]
    fn clones_share_vector_chunks_and_stay_independent() {
        let data = dataset(CHUNK + 10, 4, 5);
        let f32_graph = SearchParams::default().with_quantization(Quantization::None);
        let mut graph = Graph::new(4, Metric::Euclidean, &f32_graph, 0.0);
        for v in &data[..CHUNK + 5] {
            graph.insert(v);
        }
        let snapshot = graph.clone();
        for v in &data[CHUNK + 5..] {
            graph.insert(v);
        }
        assert_eq!(snapshot.len(), CHUNK + 5);
        assert_eq!(graph.len(), CHUNK + 10);
        let Vectors::F32(values) = &graph.vectors else {
            unreachable!("f32 graph")
        };
        let Vectors::F32(shared) = &snapshot.vectors else {
            unreachable!("f32 graph")
        };
        assert!(Arc::ptr_eq(&values.chunks[0], &shared.chunks[0]));
        assert!(!Arc::ptr_eq(&values.chunks[1], &shared.chunks[1]));
        assert!(graph.memory_bytes() > 0);
    }

    #[test]
    fn a_graph_survives_its_file_and_a_damaged_file_is_refused() {
        for quantization in [Quantization::None, Quantization::Int8] {
            let data = dataset(1500, 12, 17);
            let params = SearchParams::default().with_quantization(quantization);
            let max_norm = data.iter().map(|v| distance::norm(v)).fold(0.0, f32::max);
            let mut graph = Graph::new(12, Metric::DotProduct, &params, max_norm);
            for v in &data {
                graph.insert(v);
            }
            let names: Vec<Option<String>> = (0..data.len())
                .map(|i| (i % 10 != 0).then(|| format!("r{i}")))
                .collect();
            let bytes = graph.encode("ns", &names);
            let (namespace, loaded) = Graph::decode(&bytes).expect("decodes");
            assert_eq!(namespace, "ns");
            assert_eq!(loaded.ids[3].as_deref(), Some("r3"));
            assert_eq!(loaded.ids[10], None);
            assert!(loaded.graph.fits(12, Metric::DotProduct));
            assert!(!loaded.graph.fits(12, Metric::Cosine));
            assert!(loaded.graph.built_with(&params));
            for (i, q) in data.iter().enumerate().step_by(101) {
                let before = graph.search(&graph.prepare(q), 10, |_| true);
                let after = loaded.graph.search(&loaded.graph.prepare(q), 10, |_| true);
                assert_eq!(before, after);
                assert!(loaded.graph.holds(i as Node, q));
                assert!(!loaded.graph.holds(i as Node, &data[i + 1]));
                // Rounding (another kernel's summation order) is not a change; a real one is.
                let scaled = |by: f32| q.iter().map(|v| v * by).collect::<Vec<f32>>();
                assert!(
                    loaded
                        .graph
                        .holds(i as Node, &scaled(1.0 + 4.0 * f32::EPSILON))
                );
                let mut changed = q.clone();
                changed[0] += 0.1 * distance::norm(q);
                assert!(!loaded.graph.holds(i as Node, &changed));
                // Dotproduct keeps norms: a scaled vector is another one.
                assert!(!loaded.graph.holds(i as Node, &scaled(1.1)));
            }
            for cut in [0, 7, bytes.len() / 2, bytes.len() - 1] {
                let mut damaged = bytes.clone();
                damaged[cut] ^= 0x10;
                assert!(Graph::decode(&damaged).is_none(), "flipped byte {cut}");
            }
            assert!(Graph::decode(&bytes[..bytes.len() - 3]).is_none());
        }
    }
}
