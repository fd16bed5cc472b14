//! Approximate search for one namespace: which rows its HNSW graph covers,
//! and how the graph is kept up to date in the background.
//!
//! # Rows, nodes and pending rows
//!
//! The namespace's rows are the truth; the graph ([`Graph`]) is an index
//! over a past state of them. [`Ann`] maps between the two: `row_node` gives
//! the graph node holding a row's current values, `node_row` the row a node
//! stands for (or none, when that record was deleted or its values changed
//! since: a *stale* node, still walked through but never returned). Rows the
//! graph does not cover yet are *pending*; queries score them exactly. So a
//! query is always exact over what the graph has not caught up with, and an
//! acknowledged upsert is visible to the very next query.
//!
//! # Building
//!
//! The indexer (a few background workers per engine, see `indexer`) calls
//! [`build_step`] for namespaces with pending rows, one worker per namespace
//! at a time (the step's [`Claim`]; other workers skip the namespace, so a
//! long rebuild of one namespace holds one worker only). A step:
//!
//! 1. under the namespace's *read* lock, takes the ids and versions of up to
//!    a batch of pending rows, and the working graph;
//! 2. with no lock held, copies their values (a read lock per small chunk)
//!    and inserts them into the working graph, then clones it (cheap, see
//!    `hnsw`);
//! 3. under the *write* lock, briefly, publishes the clone and maps each
//!    inserted node to its row, unless the record changed meanwhile (its
//!    version moved on): then the node is stale and the row stays pending.
//!
//! Readers never wait for a build: they search the last published graph.
//! When a third of the graph is stale, or the index's graph parameters
//! changed, the step builds a new graph over every row instead and swaps it
//! in whole. Namespaces below [`Ann::MIN_ROWS`] rows are searched exactly.
//!
//! # Saved graphs
//!
//! A durable index saves a namespace's graph to a graph file (see
//! `hnsw::file`) whenever the namespace becomes fully indexed and the graph
//! grew by a tenth (at least 1,000 nodes) since the last save, or was
//! rebuilt. After a restart the first build step loads that file instead of
//! building: each node is mapped to the record it names only if the record
//! still holds the values the node was built from (up to rounding), so records
//! written after the save are simply pending. A missing, damaged or
//! outdated file means a rebuild, never a wrong answer.

use std::{
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Instant,
};

use roaring::RoaringBitmap;

use super::{
    NamespaceStore, Rows,
    search::{Hit, SearchQuery},
};
use crate::{
    IndexConfig, Metric, Namespace, SearchParams, VectorId,
    flush::Segments,
    hnsw::{Graph, Loaded, Node},
    interrupt,
    locks::{read_lock, write_lock},
};

/// "No row" / "no node" in the maps.
const NONE: u32 = u32::MAX;

/// Records inserted per build step before the graph is published, at least;
/// a step also takes a sixteenth of the graph's size, so the cost of
/// cloning the graph to publish it stays a small share of the work.
const BATCH: usize = 2048;

/// Records whose values are copied under one read lock.
const COPY_CHUNK: usize = 256;

/// The graph of a namespace and how its nodes map to rows.
#[derive(Debug)]
pub(crate) struct Ann {
    /// The published graph that queries search.
    graph: Option<Arc<Graph>>,
    /// Node → row, or [`NONE`] for a stale node.
    node_row: Vec<u32>,
    /// Row → node, or [`NONE`] for a pending row.
    row_node: Vec<u32>,
    /// Row → version of its values; a record's version changes on every
    /// write of its values.
    versions: Vec<u64>,
    next_version: u64,
    /// Rows the graph does not cover; `pending_pos` gives each one's place.
    pending: Vec<u32>,
    pending_pos: Vec<u32>,
    /// Number of stale nodes in the published graph.
    stale: usize,
    /// Bumped whenever the mapping is reset (delete all), so a build that
    /// started before is discarded.
    epoch: u64,
    /// The graph the indexer extends; taken out while a step runs.
    working: Mutex<Option<Graph>>,
    /// Nodes of the graph when it was last saved to (or loaded from) its
    /// file; `usize::MAX` when it never was.
    saved: AtomicUsize,
    /// Whether loading a saved graph was tried (or makes no sense any more).
    load_tried: AtomicBool,
    /// Whether an indexer worker is running a build step on this namespace
    /// (see [`Claim`]); kept across [`Ann::cleared`], where a step may still run.
    building: Arc<AtomicBool>,
}

/// What a query needs from the namespace besides [`Ann`].
pub(crate) struct Candidates<'a> {
    /// The rows.
    pub(crate) rows: &'a Rows,
    /// The rows the filter allows; `None` without a filter.
    pub(crate) allowed: Option<&'a RoaringBitmap>,
}

impl Ann {
    /// Namespaces with fewer rows are searched exactly and get no graph.
    pub(crate) const MIN_ROWS: usize = 5_000;

    /// State of an empty namespace.
    pub(crate) fn new() -> Self {
        Ann {
            graph: None,
            node_row: Vec::new(),
            row_node: Vec::new(),
            versions: Vec::new(),
            next_version: 0,
            pending: Vec::new(),
            pending_pos: Vec::new(),
            stale: 0,
            epoch: 0,
            working: Mutex::new(None),
            saved: AtomicUsize::new(usize::MAX),
            load_tried: AtomicBool::new(false),
            building: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Rows the graph does not cover yet.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Nodes in the published graph.
    pub(crate) fn graph_nodes(&self) -> usize {
        self.graph.as_ref().map_or(0, |graph| graph.len())
    }

    /// Memory of the published graph and of this mapping.
    pub(crate) fn memory_bytes(&self) -> usize {
        let graph = self.graph.as_ref().map_or(0, |graph| graph.memory_bytes());
        let maps = (self.node_row.capacity()
            + self.row_node.capacity()
            + self.pending.capacity()
            + self.pending_pos.capacity())
            * size_of::<u32>()
            + self.versions.capacity() * size_of::<u64>();
        graph + maps
    }

    fn bump(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    fn add_pending(&mut self, row: u32) {
        self.pending_pos[row as usize] = self.pending.len() as u32;
        self.pending.push(row);
    }

    fn remove_pending(&mut self, row: u32) {
        let pos = self.pending_pos[row as usize];
        if pos == NONE {
            return;
        }
        self.pending.swap_remove(pos as usize);
        if let Some(&moved) = self.pending.get(pos as usize) {
            self.pending_pos[moved as usize] = pos;
        }
        self.pending_pos[row as usize] = NONE;
    }

    /// Makes the node of `row`, if any, stale.
    fn unlink(&mut self, row: u32) {
        let node = self.row_node[row as usize];
        if node != NONE {
            self.node_row[node as usize] = NONE;
            self.stale += 1;
            self.row_node[row as usize] = NONE;
        }
    }

    /// A row was appended.
    pub(crate) fn row_added(&mut self) {
        let row = self.row_node.len() as u32;
        let version = self.bump();
        self.row_node.push(NONE);
        self.versions.push(version);
        self.pending_pos.push(NONE);
        self.add_pending(row);
    }

    /// The dense values of `row` changed.
    pub(crate) fn row_changed(&mut self, row: usize) {
        let version = self.bump();
        self.versions[row] = version;
        let row = row as u32;
        if self.row_node[row as usize] != NONE {
            self.unlink(row);
            self.add_pending(row);
        }
    }

    /// `row` was removed; if `moved_from` is set, the row that was there now
    /// lives at `row`.
    pub(crate) fn row_removed(&mut self, row: usize, moved_from: Option<usize>) {
        let row = row as u32;
        self.unlink(row);
        self.remove_pending(row);
        if let Some(last) = moved_from {
            let (last, to) = (last, row as usize);
            let node = self.row_node[last];
            self.row_node[to] = node;
            self.versions[to] = self.versions[last];
            if node != NONE {
                self.node_row[node as usize] = row;
            }
            let pos = self.pending_pos[last];
            self.pending_pos[to] = pos;
            if pos != NONE {
                self.pending[pos as usize] = row;
            }
        }
        self.row_node.pop();
        self.versions.pop();
        self.pending_pos.pop();
    }

    /// Every row was removed.
    pub(crate) fn cleared(&mut self) {
        let epoch = self.epoch + 1;
        let next_version = self.next_version;
        let building = Arc::clone(&self.building);
        *self = Ann::new();
        self.epoch = epoch;
        self.next_version = next_version;
        self.building = building;
        // A saved graph holds only records that are gone now.
        *self.load_tried.get_mut() = true;
    }

    /// The best `query.top_k` rows among those allowed: from the graph when
    /// there is one and it pays off, exactly otherwise; always exact over
    /// pending rows.
    pub(crate) fn search(
        &self,
        candidates: &Candidates<'_>,
        query: &SearchQuery<'_>,
        params: &SearchParams,
    ) -> Vec<Hit> {
        let rows = candidates.rows;
        let allowed_count = candidates
            .allowed
            .map_or(rows.len() as u64, |allowed| allowed.len());
        let ef = (params.ef_search() as usize).max(query.top_k());
        let graph = self.graph.as_ref().filter(|_| {
            // Hybrid queries rank by the sparse part too, which the graph
            // does not know; huge top_k or few allowed rows make a scan cheaper.
            query.sparse().is_none()
                && query.top_k() * 4 <= rows.len()
                && !exact_is_cheaper(allowed_count, rows.len(), ef)
        });
        let accepts = |row: u32| {
            candidates
                .allowed
                .is_none_or(|allowed| allowed.contains(row))
        };
        let mut top = query.ranking(rows);
        let mut offer = |row: usize| query.offer(&mut top, rows, row);
        match graph {
            Some(graph) => {
                let prepared = graph.prepare(query.dense());
                let accept = |node: Node| {
                    let row = self.node_row[node as usize];
                    row != NONE && accepts(row)
                };
                // Candidates are rescored with the exact values (which also
                // undoes quantization), so scores match an exact scan's.
                let mut offered = 0;
                graph.search_each(&prepared, ef, accept, |node, _| {
                    offer(self.node_row[node as usize] as usize);
                    offered += 1;
                });
                for &row in self.pending.iter().filter(|row| accepts(**row)) {
                    offer(row as usize);
                    offered += 1;
                }
                // A query returns top_k matches whenever that many exist: if
                // the graph walk could not reach enough, scan instead.
                if offered < query.top_k().min(allowed_count as usize) {
                    return exact(candidates, query);
                }
            }
            None => return exact(candidates, query),
        }
        top.into_hits()
    }
}

/// The best `query.top_k` of the allowed rows, each scored.
fn exact(candidates: &Candidates<'_>, query: &SearchQuery<'_>) -> Vec<Hit> {
    let rows = candidates.rows;
    let mut top = query.ranking(rows);
    let mut offer = |row: usize| query.offer(&mut top, rows, row);
    // A scan may cover millions of rows: stop if the request was abandoned meanwhile.
    match candidates.allowed {
        Some(allowed) => {
            for (seen, row) in allowed.iter().enumerate() {
                if seen % interrupt::CHECK_EVERY == 0 && interrupt::requested() {
                    break;
                }
                offer(row as usize);
            }
        }
        None => {
            for start in (0..rows.len()).step_by(interrupt::CHECK_EVERY) {
                if interrupt::requested() {
                    break;
                }
                (start..rows.len().min(start + interrupt::CHECK_EVERY)).for_each(&mut offer);
            }
        }
    }
    top.into_hits()
}

/// Whether scoring the `allowed` rows one by one costs less than a filtered
/// graph search. A graph search visits about `20 * ef` nodes to collect `ef`
/// results, divided by the share of rows the filter allows; a scan visits the
/// allowed rows once. The scan wins when `allowed² < 20 * ef * rows`.
fn exact_is_cheaper(allowed: u64, rows: usize, ef: usize) -> bool {
    let allowed = allowed as f64;
    allowed * allowed < 20.0 * ef as f64 * rows as f64
}

/// A batch a build step took from a namespace.
struct Batch {
    epoch: u64,
    /// A new graph over every row, replacing the published one.
    rebuild: bool,
    items: Vec<(VectorId, u64)>,
    graph: Graph,
}

/// Why a namespace's graph must be built anew, if it must.
fn needs_rebuild(ann: &Ann, graph: &Graph, params: &SearchParams) -> bool {
    !graph.built_with(params)
        || ann.stale * 3 > graph.len()
        || graph.over_bound() * 20 > graph.len().max(100)
}

/// Largest norm among the rows, with headroom, for a dotproduct graph.
fn norm_bound(rows: &Rows, metric: Metric) -> f32 {
    if metric != Metric::DotProduct {
        return 0.0;
    }
    let largest = (0..rows.len())
        .map(|row| rows.norm(row))
        .fold(0.0f32, f32::max);
    largest * 1.02
}

/// Whether a namespace has graph work to do: records the graph lacks, or a
/// graph built with another degree or quantization than `params` now ask for.
/// A sparse index has no dense values to build a graph of.
fn wants_build(store: &NamespaceStore, min_rows: usize, params: &SearchParams) -> bool {
    if store.rows.dim == 0 {
        return false;
    }
    let ann = store.ann();
    let outdated = ann
        .graph
        .as_ref()
        .is_some_and(|graph| !graph.built_with(params));
    store.len() >= min_rows && (ann.pending() > 0 || outdated)
}

/// A namespace's build steps taken by one indexer worker: while it is held,
/// other workers skip the namespace (its working graph is out, and a second
/// step would build a second graph).
struct Claim(Arc<AtomicBool>);

impl Claim {
    /// The claim on `shared`, unless another worker holds it.
    fn take(shared: &RwLock<NamespaceStore>) -> crate::Result<Option<Claim>> {
        let building = Arc::clone(&read_lock(shared)?.ann().building);
        if building.swap(true, Ordering::Acquire) {
            // Not `then_some(Claim(..))`: building the claim that is not taken would drop
            // it, releasing the other worker's.
            return Ok(None);
        }
        Ok(Some(Claim(building)))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// One build step for the namespace `shared` (see the module docs). Returns
/// whether it did any work; a namespace another worker is building is left to
/// it (no work here).
pub(crate) fn build_step(
    index: &str,
    namespace: &Namespace,
    shared: &RwLock<NamespaceStore>,
    config: IndexConfig,
    params: &SearchParams,
    min_rows: usize,
    segments: Option<&Segments>,
) -> crate::Result<bool> {
    let Some(_claim) = Claim::take(shared)? else {
        return Ok(false);
    };
    if let Some(segments) = segments
        && load_saved(index, namespace, shared, config, params, min_rows, segments)?
    {
        return Ok(true);
    }
    let started = Instant::now();
    let Some(batch) = take_batch(&*read_lock(shared)?, config, params, min_rows) else {
        return Ok(false);
    };
    let Batch {
        epoch,
        rebuild,
        items,
        mut graph,
    } = batch;
    #[cfg(test)]
    if rebuild {
        tests::rebuild_started(namespace);
    }
    let mut inserted: Vec<(Node, VectorId, u64)> = Vec::with_capacity(items.len());
    for chunk in items.chunks(COPY_CHUNK) {
        let values: Vec<(VectorId, u64, Vec<f32>)> = {
            let store = read_lock(shared)?;
            if store.ann().epoch != epoch {
                return Ok(true);
            }
            chunk
                .iter()
                .filter_map(|(id, version)| {
                    let row = store.row_of(id.as_str())?;
                    (store.ann().versions[row] == *version)
                        .then(|| (id.clone(), *version, store.rows().dense(row).to_vec()))
                })
                .collect()
        };
        for (id, version, values) in values {
            inserted.push((graph.insert(&values), id, version));
        }
    }
    let (store, mapped, pending) = publish(shared, epoch, rebuild, graph, &inserted)?;
    tracing::debug!(
        index,
        namespace = namespace.as_str(),
        inserted = inserted.len(),
        rebuild,
        mapped,
        pending,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "published an ANN graph"
    );
    if pending == 0 {
        log_fully_indexed(index, namespace, &store);
        let saved = store.ann().saved.load(Ordering::Relaxed);
        let nodes = store.ann().graph_nodes();
        drop(store);
        let grown = saved == usize::MAX || nodes >= saved.saturating_add((saved / 10).max(1000));
        if let Some(segments) = segments
            && grown
        {
            save(index, namespace, shared, segments)?;
        }
    }
    Ok(true)
}

/// Step 3 of a build: clones `graph` (with no lock held) and, under the
/// namespace's write lock, publishes the clone and maps the `inserted`
/// nodes. Returns the still locked store, how many nodes were mapped and
/// how many rows are still pending.
fn publish<'a>(
    shared: &'a RwLock<NamespaceStore>,
    epoch: u64,
    rebuild: bool,
    graph: Graph,
    inserted: &[(Node, VectorId, u64)],
) -> crate::Result<(
    std::sync::RwLockWriteGuard<'a, NamespaceStore>,
    usize,
    usize,
)> {
    let published = Arc::new(graph.clone());
    let mut store = write_lock(shared)?;
    let (mapped, pending) = store.publish_graph(epoch, rebuild, published, graph, inserted);
    Ok((store, mapped, pending))
}

/// The event telling operators (and the benchmark) that a namespace's graph
/// covers all its records.
fn log_fully_indexed(index: &str, namespace: &Namespace, store: &NamespaceStore) {
    let bytes = store.ann().memory_bytes();
    tracing::info!(
        index,
        namespace = namespace.as_str(),
        records = store.len(),
        graph_bytes = bytes,
        graph_bytes_per_vector = bytes / store.len().max(1),
        "namespace fully indexed"
    );
}

/// Writes the graph file of a fully indexed namespace (see `hnsw::file`).
/// A failure is logged: the graph is only rebuilt after the next restart.
fn save(
    index: &str,
    namespace: &Namespace,
    shared: &RwLock<NamespaceStore>,
    segments: &Segments,
) -> crate::Result<()> {
    let (graph, ids) = {
        let store = read_lock(shared)?;
        let ann = store.ann();
        let Some(graph) = ann.graph.clone() else {
            return Ok(());
        };
        let ids: Vec<Option<String>> = ann
            .node_row
            .iter()
            .map(|&row| (row != NONE).then(|| store.rows().id(row as usize).as_str().to_owned()))
            .collect();
        (graph, ids)
    };
    let started = Instant::now();
    let bytes = graph.encode(namespace.as_str(), &ids);
    match segments.save_graph(namespace, &bytes) {
        Ok(true) => {
            if let Ok(store) = read_lock(shared) {
                store.ann().saved.store(graph.len(), Ordering::Relaxed);
            }
            tracing::debug!(
                index,
                namespace = namespace.as_str(),
                bytes = bytes.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "saved the ANN graph"
            );
        }
        Ok(false) => {}
        Err(err) => {
            tracing::warn!(index, namespace = namespace.as_str(), error = %err, "cannot save the ANN graph; it will be rebuilt after a restart");
        }
    }
    Ok(())
}

/// Before a namespace's first graph is built: loads its saved graph, if it
/// has a usable one, and publishes it with every node whose record still
/// holds the values it was built from. Returns whether it did.
fn load_saved(
    index: &str,
    namespace: &Namespace,
    shared: &RwLock<NamespaceStore>,
    config: IndexConfig,
    params: &SearchParams,
    min_rows: usize,
    segments: &Segments,
) -> crate::Result<bool> {
    {
        let store = read_lock(shared)?;
        let ann = store.ann();
        if ann.graph.is_some()
            || ann.load_tried.swap(true, Ordering::Relaxed)
            || !wants_build(&store, min_rows, params)
        {
            return Ok(false);
        }
    }
    let started = Instant::now();
    let bytes = match segments.load_graph(namespace) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(false),
        Err(err) => {
            tracing::warn!(index, namespace = namespace.as_str(), error = %err, "cannot read the saved ANN graph; building it anew");
            return Ok(false);
        }
    };
    let usable = Graph::decode(&bytes).filter(|(name, loaded)| {
        name == namespace.as_str()
            && loaded.graph.built_with(params)
            && loaded.graph.fits(config.dimension.len(), config.metric)
    });
    let Some((_, Loaded { graph, ids })) = usable else {
        tracing::warn!(
            index,
            namespace = namespace.as_str(),
            "the saved ANN graph is damaged or was built with other parameters; building it anew"
        );
        return Ok(false);
    };
    let (epoch, inserted) = {
        let store = read_lock(shared)?;
        let inserted: Vec<(Node, VectorId, u64)> = ids
            .iter()
            .enumerate()
            .filter_map(|(node, id)| {
                let row = store.row_of(id.as_deref()?)?;
                graph.holds(node as Node, store.rows().dense(row)).then(|| {
                    (
                        node as Node,
                        store.rows().id(row).clone(),
                        store.ann().versions[row],
                    )
                })
            })
            .collect();
        (store.ann().epoch, inserted)
    };
    let nodes = graph.len();
    let (store, mapped, pending) = publish(shared, epoch, true, graph, &inserted)?;
    store.ann().saved.store(nodes, Ordering::Relaxed);
    tracing::info!(
        index,
        namespace = namespace.as_str(),
        nodes,
        mapped,
        pending,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded the saved ANN graph"
    );
    if pending == 0 {
        log_fully_indexed(index, namespace, &store);
    }
    Ok(true)
}

/// Step 1 of a build: what to insert, and the graph to insert it into.
fn take_batch(
    store: &NamespaceStore,
    config: IndexConfig,
    params: &SearchParams,
    min_rows: usize,
) -> Option<Batch> {
    if !wants_build(store, min_rows, params) {
        return None;
    }
    let ann = store.ann();
    let working = ann
        .working
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let rows = store.rows();
    let fresh = || {
        Graph::new(
            config.dimension.len(),
            config.metric,
            params,
            norm_bound(rows, config.metric),
        )
    };
    let (graph, rebuild) = match working {
        Some(graph) if !needs_rebuild(ann, &graph, params) => (graph, false),
        _ => (fresh(), true),
    };
    let items = if rebuild {
        (0..rows.len())
            .map(|row| (rows.id(row).clone(), ann.versions[row]))
            .collect()
    } else {
        ann.pending
            .iter()
            .take(BATCH.max(graph.len() / 16))
            .map(|&row| (rows.id(row as usize).clone(), ann.versions[row as usize]))
            .collect()
    };
    Some(Batch {
        epoch: ann.epoch,
        rebuild,
        items,
        graph,
    })
}

impl Ann {
    /// Step 3 of a build: swaps in `published` (a clone of `working`) and
    /// maps the nodes inserted into it. Returns how many were mapped and how
    /// many rows are still pending.
    pub(crate) fn publish(
        &mut self,
        epoch: u64,
        rebuild: bool,
        published: Arc<Graph>,
        working: Graph,
        inserted: &[(Node, VectorId, u64)],
        row_of: impl Fn(&str) -> Option<usize>,
    ) -> (usize, usize) {
        if epoch != self.epoch {
            // Everything was deleted meanwhile; this graph indexes nothing.
            return (0, self.pending.len());
        }
        if rebuild {
            // Every row becomes pending, then the new graph claims its rows.
            self.node_row.clear();
            self.stale = 0;
            for row in 0..self.row_node.len() {
                if self.row_node[row] != NONE {
                    self.row_node[row] = NONE;
                    self.add_pending(row as u32);
                }
            }
        }
        let known = self.node_row.len();
        self.node_row.resize(published.len(), NONE);
        let mut mapped = 0;
        for (node, id, version) in inserted {
            match row_of(id.as_str()) {
                Some(row) if self.versions[row] == *version && self.row_node[row] == NONE => {
                    self.row_node[row] = *node;
                    self.node_row[*node as usize] = row as u32;
                    self.remove_pending(row as u32);
                    mapped += 1;
                }
                _ => {}
            }
        }
        // Nodes inserted now and not mapped (their records changed meanwhile) are stale too.
        self.stale += (published.len() - known) - mapped;
        debug_assert_eq!(
            self.stale,
            self.node_row.iter().filter(|row| **row == NONE).count(),
            "stale nodes are counted as they go"
        );
        self.graph = Some(published);
        *self.working.lock().unwrap_or_else(PoisonError::into_inner) = Some(working);
        (mapped, self.pending.len())
    }
}

#[cfg(test)]
mod tests;
