//! Dense and sparse values: their validation, sparse values as the client sent them
//! ([`SparseInput`], part of the request structs) and as stored ([`SparseVector`]).

use crate::{Dimension, Error, Metric, Result, limits};

/// Sparse values as the client sent them: unvalidated, in any order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseInput {
    /// Positions of the non-zero values.
    pub indices: Vec<u32>,
    /// The values, one per index.
    pub values: Vec<f32>,
}

/// Validated sparse values: equal lengths, finite values, indices unique and
/// sorted ascending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseVector {
    /// Positions of the non-zero values, strictly ascending.
    pub indices: Vec<u32>,
    /// The values, one per index.
    pub values: Vec<f32>,
}

impl SparseVector {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// Validates dense values against the index dimension: the right length,
/// finite, and (for stored vectors, `require_nonzero`) not all zero.
pub(crate) fn dense(
    field: &str,
    values: Vec<f32>,
    dimension: Dimension,
    require_nonzero: bool,
) -> Result<Vec<f32>> {
    if values.len() != dimension.len() {
        return Err(Error::invalid(
            field,
            format!(
                "has {} values but the index dimension is {dimension}",
                values.len()
            ),
        ));
    }
    check_finite(field, &values)?;
    if require_nonzero && values.iter().all(|v| *v == 0.0) {
        return Err(Error::invalid(
            field,
            "must contain at least one non-zero value",
        ));
    }
    Ok(values)
}

/// Validates sparse values. Absent or empty input is `None`; anything else
/// needs a dotproduct index, matching lengths, at most 2048 finite entries
/// and unique indices. The result is sorted by index.
pub(crate) fn sparse(
    field: &str,
    input: Option<SparseInput>,
    metric: Metric,
) -> Result<Option<SparseVector>> {
    let Some(SparseInput { indices, values }) = input else {
        return Ok(None);
    };
    if indices.is_empty() && values.is_empty() {
        return Ok(None);
    }
    if metric != Metric::DotProduct {
        return Err(Error::invalid(
            field,
            format!("sparse values need an index with metric dotproduct; this index uses {metric}"),
        ));
    }
    if indices.len() != values.len() {
        return Err(Error::invalid(
            field,
            format!(
                "has {} indices but {} values; they must have the same length",
                indices.len(),
                values.len()
            ),
        ));
    }
    if indices.len() > limits::MAX_SPARSE_ENTRIES {
        return Err(Error::invalid(
            field,
            format!(
                "has {} entries; the maximum is {}",
                indices.len(),
                limits::MAX_SPARSE_ENTRIES
            ),
        ));
    }
    check_finite(&format!("{field}.values"), &values)?;

    let mut pairs: Vec<(u32, f32)> = indices.into_iter().zip(values).collect();
    pairs.sort_unstable_by_key(|pair| pair.0);
    if let Some(pair) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::invalid(
            format!("{field}.indices"),
            format!("index {} appears more than once", pair[0].0),
        ));
    }
    let (indices, values) = pairs.into_iter().unzip();
    Ok(Some(SparseVector { indices, values }))
}

/// Rejects NaN and infinities, naming the first offending position.
fn check_finite(field: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::invalid(
            format!("{field}[{i}]"),
            format!("must be a finite number, got {}", values[i]),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::sparse as input;

    fn dim(n: u32) -> Dimension {
        Dimension::new(n).unwrap()
    }

    #[test]
    fn dense_rules() {
        assert_eq!(
            dense("values", vec![1.0, 0.0], dim(2), true).unwrap(),
            vec![1.0, 0.0]
        );
        assert_eq!(
            dense("vectors[2].values", vec![1.0; 3], dim(4), true)
                .unwrap_err()
                .to_string(),
            "vectors[2].values: has 3 values but the index dimension is 4"
        );
        assert_eq!(
            dense("values", vec![1.0, f32::NAN], dim(2), true)
                .unwrap_err()
                .to_string(),
            "values[1]: must be a finite number, got NaN"
        );
        assert_eq!(
            dense("values", vec![f32::INFINITY, 1.0], dim(2), true)
                .unwrap_err()
                .to_string(),
            "values[0]: must be a finite number, got inf"
        );
        assert_eq!(
            dense("values", vec![0.0, -0.0], dim(2), true)
                .unwrap_err()
                .to_string(),
            "values: must contain at least one non-zero value"
        );
        // A query vector may be all zeros.
        assert!(dense("vector", vec![0.0, 0.0], dim(2), false).is_ok());
    }

    #[test]
    fn sparse_is_sorted_and_empty_means_none() {
        let sorted = sparse(
            "s",
            Some(input(&[(9, 0.5), (2, 1.0), (5, -1.0)])),
            Metric::DotProduct,
        )
        .unwrap()
        .unwrap();
        assert_eq!(sorted.indices, vec![2, 5, 9]);
        assert_eq!(sorted.values, vec![1.0, -1.0, 0.5]);
        assert_eq!(sparse("s", None, Metric::DotProduct).unwrap(), None);
        assert_eq!(
            sparse("s", Some(SparseInput::default()), Metric::Cosine).unwrap(),
            None
        );
    }

    #[test]
    fn sparse_rules() {
        let err = |input: SparseInput, metric| {
            sparse("v.sparse_values", Some(input), metric)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(input(&[(1, 1.0)]), Metric::Cosine),
            "v.sparse_values: sparse values need an index with metric dotproduct; this index uses cosine"
        );
        assert_eq!(
            err(
                SparseInput {
                    indices: vec![1, 2],
                    values: vec![1.0]
                },
                Metric::DotProduct
            ),
            "v.sparse_values: has 2 indices but 1 values; they must have the same length"
        );
        assert_eq!(
            err(input(&[(1, 1.0), (1, 2.0)]), Metric::DotProduct),
            "v.sparse_values.indices: index 1 appears more than once"
        );
        assert_eq!(
            err(
                input(&[(1, 1.0), (3, f32::NEG_INFINITY)]),
                Metric::DotProduct
            ),
            "v.sparse_values.values[1]: must be a finite number, got -inf"
        );
        let too_many: Vec<(u32, f32)> = (0..2049).map(|i| (i, 1.0)).collect();
        assert_eq!(
            err(input(&too_many), Metric::DotProduct),
            "v.sparse_values: has 2049 entries; the maximum is 2048"
        );
        let at_limit: Vec<(u32, f32)> = (0..2048).map(|i| (i, 1.0)).collect();
        assert!(sparse("s", Some(input(&at_limit)), Metric::DotProduct).is_ok());
    }
}
