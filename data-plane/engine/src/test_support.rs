//! Helpers shared by the unit tests.

use std::sync::Arc;

use object_store::memory::InMemory;
use serde_json::Value;

use crate::{
    Dimension, FetchRequest, FetchResponse, FlushPolicy, Index, IndexConfig, IndexStats,
    JsonObject, ListNamespacesRequest, ListNamespacesResponse, ListRequest, ListResponse, Metric,
    QueryRequest, QueryResponse, SparseInput, VectorInput, flush::Segments, storage::ObjectStorage,
};

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

/// `count` deterministic `dim`-dimensional vectors around `centers` random
/// cluster centres (a linear congruential generator seeded with `seed`),
/// each value within `spread / 2` of its centre's.
pub(crate) fn clustered(
    count: usize,
    dim: usize,
    seed: u64,
    centers: usize,
    spread: f32,
) -> Vec<Vec<f32>> {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let centers: Vec<Vec<f32>> = (0..centers)
        .map(|_| (0..dim).map(|_| next()).collect())
        .collect();
    (0..count)
        .map(|i| {
            let center = &centers[i % centers.len()];
            center.iter().map(|c| c + spread * next()).collect()
        })
        .collect()
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

/// Empty segments of index `name` in a fresh in-memory store, for a durable
/// index whose log is not a file (it never flushes).
pub(crate) fn memory_segments(name: &str, config: IndexConfig) -> Segments {
    let storage = ObjectStorage::shared(
        Arc::new(InMemory::new()),
        object_store::path::Path::from(name),
    );
    Segments::new(name, config, FlushPolicy::default(), Arc::new(storage))
}

/// Everything a client can read from an index (of dimension 3).
#[derive(Debug, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) stats: IndexStats,
    pub(crate) namespaces: ListNamespacesResponse,
    pub(crate) contents: Vec<(ListResponse, Option<FetchResponse>, QueryResponse)>,
}

pub(crate) fn snapshot(index: &Index) -> Snapshot {
    let namespaces = index
        .list_namespaces(ListNamespacesRequest::default())
        .unwrap();
    let contents = namespaces
        .namespaces
        .iter()
        .map(|info| {
            let namespace = info.name.clone();
            let list = index
                .list(ListRequest {
                    namespace: namespace.clone(),
                    ..Default::default()
                })
                .unwrap();
            // A fetch needs at least one id.
            let fetch = (!list.ids.is_empty()).then(|| {
                index
                    .fetch(FetchRequest {
                        namespace: namespace.clone(),
                        ids: list.ids.clone(),
                    })
                    .unwrap()
            });
            let query = index
                .query(QueryRequest {
                    namespace,
                    top_k: 100,
                    vector: vec![1.0, 0.5, -0.25],
                    include_values: true,
                    include_metadata: true,
                    ..Default::default()
                })
                .unwrap();
            (list, fetch, query)
        })
        .collect();
    Snapshot {
        stats: index.describe_stats(None).unwrap(),
        namespaces,
        contents,
    }
}
