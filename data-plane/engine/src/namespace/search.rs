//! What every search shares: a validated query that scores rows
//! ([`SearchQuery`]), and the bounded heap [`TopK`] that ranks hits, whose
//! order is the contract of a query: best score first, ties by id ascending.
//! Exact scans and the ANN graph (see `ann`) both end here.

use std::{cmp::Ordering, collections::BinaryHeap};

use super::Rows;
use crate::{Metric, SparseVector, distance};

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
    /// The dense part, with its metric's kernel and its norm made once per query: an exact
    /// scan scores every row with it.
    dense: distance::DenseQuery<'a>,
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
        SearchQuery {
            dense: distance::DenseQuery::new(metric, dense),
            sparse,
            top_k,
        }
    }

    /// How many hits are wanted.
    pub(crate) fn top_k(&self) -> usize {
        self.top_k
    }

    /// The dense query values.
    pub(crate) fn dense(&self) -> &[f32] {
        self.dense.values()
    }

    /// The sparse part of a hybrid query.
    pub(crate) fn sparse(&self) -> Option<&SparseVector> {
        self.sparse
    }

    /// An empty ranking of at most `top_k` of `rows`.
    pub(crate) fn ranking<'r>(&self, rows: &Rows) -> TopK<'r> {
        TopK::new(
            self.top_k.min(rows.len()),
            self.dense.metric().higher_is_better(),
        )
    }

    /// Scores `row` and offers it to `top`.
    pub(crate) fn offer<'r>(&self, top: &mut TopK<'r>, rows: &'r Rows, row: usize) {
        top.push(
            rows.id(row).as_str(),
            Hit {
                row,
                score: self.score(rows, row),
            },
        );
    }

    /// Score of `row`: the dense score, plus the sparse dot product for hybrid queries.
    pub(crate) fn score(&self, rows: &Rows, row: usize) -> f32 {
        match (self.sparse, rows.sparse(row)) {
            (Some(query), Some(stored)) => {
                self.score_with_sparse(rows, row, distance::sparse_dot(query, stored))
            }
            _ => self.dense_score(rows, row),
        }
    }

    /// Score of `row` whose sparse dot product with the query is `sparse_dot` (from the
    /// namespace's inverted index): the same sum [`SearchQuery::score`] makes.
    pub(crate) fn score_with_sparse(&self, rows: &Rows, row: usize, sparse_dot: f32) -> f32 {
        self.dense_score(rows, row) + sparse_dot
    }

    fn dense_score(&self, rows: &Rows, row: usize) -> f32 {
        self.dense.score(rows.dense(row), || rows.norm(row))
    }

    /// This query without its sparse part: what scores the rows that share no sparse
    /// dimension with it.
    pub(crate) fn dense_only(&self) -> SearchQuery<'a> {
        SearchQuery {
            dense: self.dense,
            sparse: None,
            top_k: self.top_k,
        }
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
