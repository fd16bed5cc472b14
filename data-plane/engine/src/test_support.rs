//! Helpers shared by the unit tests.

use serde_json::Value;

use crate::{Dimension, Index, IndexConfig, JsonObject, Metric, SparseInput, VectorInput};

/// The JSON object inside `value`; panics if it is not an object.
pub(crate) fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("expected a json object, got {other}"),
    }
}

/// A fresh index of the given dimension and metric.
pub(crate) fn index(dimension: u32, metric: Metric) -> Index {
    Index::new(
        "test",
        IndexConfig {
            dimension: Dimension::new(dimension).unwrap(),
            metric,
        },
    )
}

/// A record with dense values only.
pub(crate) fn vector(id: &str, values: &[f32]) -> VectorInput {
    VectorInput {
        id: id.into(),
        values: values.to_vec(),
        ..Default::default()
    }
}

/// A record with dense values and metadata.
pub(crate) fn vector_with(id: &str, values: &[f32], metadata: Value) -> VectorInput {
    VectorInput {
        metadata: Some(object(metadata)),
        ..vector(id, values)
    }
}

/// Sparse input from index/value pairs.
pub(crate) fn sparse(pairs: &[(u32, f32)]) -> SparseInput {
    SparseInput {
        indices: pairs.iter().map(|p| p.0).collect(),
        values: pairs.iter().map(|p| p.1).collect(),
    }
}
