//! Vector search behind a small trait, so an approximate (ANN) index can
//! replace the exact scan without touching the rest of the engine.
//!
//! A [`VectorSearch`] implementation sees every change to a namespace's rows
//! through its hooks and answers top-k queries over them. [`ExactSearch`]
//! ignores the hooks and scans every row: exact, and fine for small
//! namespaces. Both rank with the bounded heap [`TopK`], whose order is the
//! contract of a query: best score first, ties by id ascending.

use std::{cmp::Ordering, collections::BinaryHeap, fmt};

use crate::{Metric, SparseVector, distance, namespace::Rows};

/// One search result: a row of the namespace and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hit {
    /// Row in the namespace's [`Rows`].
    pub(crate) row: usize,
    /// The score as reported to the client.
    pub(crate) score: f32,
}

/// A validated query, ready to score rows.
#[derive(Debug)]
pub(crate) struct SearchQuery<'a> {
    metric: Metric,
    dense: &'a [f32],
    /// Norm of `dense`, computed once per query for cosine.
    norm: f32,
    /// Sparse part of a hybrid (dotproduct) query.
    sparse: Option<&'a SparseVector>,
    top_k: usize,
}

impl<'a> SearchQuery<'a> {
    /// A query for the `top_k` rows closest to `dense` (plus `sparse` for hybrid search).
    pub(crate) fn new(
        metric: Metric,
        dense: &'a [f32],
        sparse: Option<&'a SparseVector>,
        top_k: usize,
    ) -> Self {
        let norm = if metric == Metric::Cosine {
            distance::norm(dense)
        } else {
            0.0
        };
        SearchQuery {
            metric,
            dense,
            norm,
            sparse,
            top_k,
        }
    }

    /// Score of `row`: the dense score, plus the sparse dot product for hybrid queries.
    pub(crate) fn score(&self, rows: &Rows, row: usize) -> f32 {
        let dense = distance::score(
            self.metric,
            self.dense,
            self.norm,
            rows.dense(row),
            rows.norm(row),
        );
        match (self.sparse, rows.sparse(row)) {
            (Some(query), Some(stored)) => dense + distance::sparse_dot(query, stored),
            _ => dense,
        }
    }
}

/// Finds the best rows of one namespace for a query.
///
/// The namespace calls the hooks after every change to its rows, so an index
/// can keep its own structure in sync; rows are dense (`0..rows.len()`) and
/// removal moves the last row into the hole.
pub(crate) trait VectorSearch: Send + Sync + fmt::Debug {
    /// Row `row` was added or its dense or sparse values changed.
    fn row_written(&mut self, rows: &Rows, row: usize);

    /// Row `row` was removed; if `moved_from` is set, the row that was at that
    /// position now lives at `row`.
    fn row_removed(&mut self, rows: &Rows, row: usize, moved_from: Option<usize>);

    /// Every row was removed.
    fn cleared(&mut self);

    /// The best `top_k` rows that `accept` allows, best first, ties by id
    /// ascending. Every returned row must satisfy `accept`.
    fn search(
        &self,
        rows: &Rows,
        query: &SearchQuery<'_>,
        accept: &dyn Fn(usize) -> bool,
    ) -> Vec<Hit>;
}

/// Brute-force search: scores every accepted row. Exact, so it is also the
/// reference an ANN index is measured against.
#[derive(Debug, Default)]
pub(crate) struct ExactSearch;

impl VectorSearch for ExactSearch {
    fn row_written(&mut self, _rows: &Rows, _row: usize) {}

    fn row_removed(&mut self, _rows: &Rows, _row: usize, _moved_from: Option<usize>) {}

    fn cleared(&mut self) {}

    fn search(
        &self,
        rows: &Rows,
        query: &SearchQuery<'_>,
        accept: &dyn Fn(usize) -> bool,
    ) -> Vec<Hit> {
        let mut top = TopK::new(query.top_k.min(rows.len()), query.metric.higher_is_better());
        for row in (0..rows.len()).filter(|row| accept(*row)) {
            top.push(
                rows.id(row).as_str(),
                Hit {
                    row,
                    score: query.score(rows, row),
                },
            );
        }
        top.into_hits()
    }
}

/// Keeps the best `k` hits seen so far in a heap of size `k`, so selecting
/// costs `O(n log k)` instead of sorting all `n` scores.
#[derive(Debug)]
pub(crate) struct TopK<'a> {
    k: usize,
    higher_is_better: bool,
    /// Max-heap under "worse is greater": the top is the worst kept hit.
    heap: BinaryHeap<Ranked<'a>>,
}

impl<'a> TopK<'a> {
    /// An empty selection of at most `k` hits.
    pub(crate) fn new(k: usize, higher_is_better: bool) -> Self {
        TopK {
            k,
            higher_is_better,
            heap: BinaryHeap::with_capacity(k),
        }
    }

    /// Offers a hit for the record `id`.
    pub(crate) fn push(&mut self, id: &'a str, hit: Hit) {
        if self.k == 0 {
            return;
        }
        let candidate = Ranked {
            key: rank_key(hit.score, self.higher_is_better),
            id,
            hit,
        };
        if self.heap.len() < self.k {
            self.heap.push(candidate);
        } else if let Some(mut worst) = self.heap.peek_mut()
            && candidate < *worst
        {
            *worst = candidate;
        }
    }

    /// The kept hits, best first.
    pub(crate) fn into_hits(self) -> Vec<Hit> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|ranked| ranked.hit)
            .collect()
    }
}

/// A score turned into "higher is better" for every metric.
fn rank_key(score: f32, higher_is_better: bool) -> f32 {
    let key = if higher_is_better { score } else { -score };
    // NaN (only possible when huge values overflow) ranks last. Adding 0.0 turns
    // -0.0 into +0.0 so `total_cmp` treats the two zeros as the tie they are.
    if key.is_nan() {
        f32::NEG_INFINITY
    } else {
        key + 0.0
    }
}

/// A hit with what it is ranked by.
#[derive(Debug)]
struct Ranked<'a> {
    key: f32,
    id: &'a str,
    hit: Hit,
}

impl Ord for Ranked<'_> {
    /// Greater means worse: a lower key, or an equal key and a larger id.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .key
            .total_cmp(&self.key)
            .then_with(|| self.id.cmp(other.id))
    }
}

impl PartialOrd for Ranked<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(
        k: usize,
        higher_is_better: bool,
        scored: &[(&'static str, f32)],
    ) -> Vec<&'static str> {
        let mut top = TopK::new(k, higher_is_better);
        for (row, (id, score)) in scored.iter().enumerate() {
            top.push(id, Hit { row, score: *score });
        }
        top.into_hits()
            .into_iter()
            .map(|hit| scored[hit.row].0)
            .collect()
    }

    #[test]
    fn keeps_the_best_k_in_order() {
        let scored = [("a", 0.1), ("b", 0.9), ("c", 0.5), ("d", 0.7), ("e", -1.0)];
        assert_eq!(select(3, true, &scored), ["b", "d", "c"]);
        assert_eq!(select(3, false, &scored), ["e", "a", "c"]);
        assert_eq!(select(10, true, &scored), ["b", "d", "c", "a", "e"]);
        assert!(select(0, true, &scored).is_empty());
    }

    #[test]
    fn ties_break_by_id_ascending() {
        let scored = [("d", 1.0), ("b", 1.0), ("c", 2.0), ("a", 1.0), ("e", 0.0)];
        assert_eq!(select(3, true, &scored), ["c", "a", "b"]);
        assert_eq!(select(2, false, &scored), ["e", "a"]);
        // The two zeros tie.
        assert_eq!(select(2, true, &[("z", 0.0), ("y", -0.0)]), ["y", "z"]);
    }

    #[test]
    fn nan_scores_rank_last() {
        let scored = [("a", f32::NAN), ("b", -100.0), ("c", 1.0)];
        assert_eq!(select(3, true, &scored), ["c", "b", "a"]);
        assert_eq!(select(3, false, &scored), ["b", "c", "a"]);
    }
}
