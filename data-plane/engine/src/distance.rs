//! Distance kernels.
//!
//! Dense kernels walk both slices in `chunks_exact(8)` with eight independent
//! accumulators, a shape LLVM turns into SIMD without `unsafe`; the tail is
//! summed separately. Cosine uses norms precomputed per stored row.

use crate::{Metric, SparseVector};

/// Lanes per step; eight `f32` fill one AVX register.
const LANES: usize = 8;

/// Inner product of two equally long slices.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let (chunks_a, chunks_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0.0f32; LANES];
    for (xs, ys) in chunks_a.zip(chunks_b) {
        for ((sum, x), y) in acc.iter_mut().zip(xs).zip(ys) {
            *sum += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Squared euclidean distance of two equally long slices.
pub(crate) fn squared_euclidean(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let (chunks_a, chunks_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    let mut acc = [0.0f32; LANES];
    for (xs, ys) in chunks_a.zip(chunks_b) {
        for ((sum, x), y) in acc.iter_mut().zip(xs).zip(ys) {
            let d = x - y;
            *sum += d * d;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Euclidean length of a vector.
pub(crate) fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

/// Cosine similarity from a dot product and the two norms. A zero norm gives
/// 0 rather than NaN; rounding is clamped back into `[-1, 1]`.
pub(crate) fn cosine(dot: f32, norm_a: f32, norm_b: f32) -> f32 {
    if norm_a == 0.0 || norm_b == 0.0 {
        return 0.0;
    }
    // Divide twice rather than by the product, which could overflow.
    (dot / norm_a / norm_b).clamp(-1.0, 1.0)
}

/// Dense score of a stored row against a query under `metric`.
pub(crate) fn score(
    metric: Metric,
    query: &[f32],
    query_norm: f32,
    row: &[f32],
    row_norm: f32,
) -> f32 {
    match metric {
        Metric::Cosine => cosine(dot(query, row), query_norm, row_norm),
        Metric::Euclidean => squared_euclidean(query, row),
        Metric::DotProduct => dot(query, row),
    }
}

/// Inner product of two sparse vectors (indices sorted ascending): a merge walk.
pub(crate) fn sparse_dot(a: &SparseVector, b: &SparseVector) -> f32 {
    let (mut i, mut j, mut sum) = (0, 0, 0.0f32);
    while i < a.indices.len() && j < b.indices.len() {
        match a.indices[i].cmp(&b.indices[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                sum += a.values[i] * b.values[j];
                i += 1;
                j += 1;
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values for kernel tests, covering lengths around the lane width.
    fn ramp(len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * scale)
            .collect()
    }

    #[test]
    fn kernels_match_naive_loops_for_every_tail_length() {
        for len in [1, 3, 7, 8, 9, 15, 16, 17, 33] {
            let (a, b) = (ramp(len, 0.5), ramp(len + 1, 0.25)[1..].to_vec());
            let naive_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let naive_l2: f32 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum();
            assert!((dot(&a, &b) - naive_dot).abs() < 1e-4, "len {len}");
            assert!(
                (squared_euclidean(&a, &b) - naive_l2).abs() < 1e-4,
                "len {len}"
            );
        }
    }

    #[test]
    fn hand_computed_scores() {
        let (q, r) = ([1.0, 2.0, 3.0], [4.0, -5.0, 6.0]);
        // 4 - 10 + 18
        assert_eq!(score(Metric::DotProduct, &q, norm(&q), &r, norm(&r)), 12.0);
        // 9 + 49 + 9
        assert_eq!(score(Metric::Euclidean, &q, norm(&q), &r, norm(&r)), 67.0);
        // 12 / (sqrt(14) * sqrt(77))
        let expected = 12.0 / (14f32.sqrt() * 77f32.sqrt());
        assert!((score(Metric::Cosine, &q, norm(&q), &r, norm(&r)) - expected).abs() < 1e-6);
    }

    #[test]
    fn cosine_handles_zero_norms_and_rounding() {
        assert_eq!(cosine(0.0, 0.0, 1.0), 0.0);
        assert_eq!(cosine(0.0, 1.0, 0.0), 0.0);
        let v = [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
        let same = cosine(dot(&v, &v), norm(&v), norm(&v));
        assert!(same <= 1.0 && (same - 1.0).abs() < 1e-6);
        assert_eq!(cosine(-2.0, 1.0, 1.0), -1.0);
    }

    #[test]
    fn sparse_dot_multiplies_shared_indices() {
        let a = SparseVector {
            indices: vec![1, 4, 9],
            values: vec![1.0, 2.0, 3.0],
        };
        let b = SparseVector {
            indices: vec![0, 4, 9, 12],
            values: vec![5.0, 0.5, -1.0, 7.0],
        };
        assert_eq!(sparse_dot(&a, &b), 1.0 - 3.0);
        assert_eq!(sparse_dot(&a, &SparseVector::default()), 0.0);
    }
}
