//! Metadata filters: parsing and evaluation.
//!
//! The input is a stream of JSON values: a filter object, then up to 32 metadata objects.
//! The filter is parsed with [`Filter::parse`]; if it is valid, the metadata objects are
//! upserted as records (the engine validates them) and the filter is evaluated three ways
//! that must agree: [`Filter::matches`] on each stored record's metadata, the metadata index
//! behind `describe_stats` (set algebra on bitmaps), and a filtered exact query.

#![no_main]

use std::collections::BTreeSet;

use larch_engine::{
    DeleteRequest, Dimension, FetchRequest, Filter, IndexConfig, Metadata, Metric, QueryRequest,
    UpsertRequest, VectorInput,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const INDEX: &str = "filter";

fuzz_target!(|data: &[u8]| {
    larch_fuzz::init();
    let mut values = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let Some(Ok(Value::Object(filter_json))) = values.next() else {
        return;
    };
    let Ok(filter) = Filter::parse(&filter_json) else {
        return;
    };
    let records: Vec<_> = values
        .take(32)
        .map_while(Result::ok)
        .enumerate()
        .map(|(i, metadata)| VectorInput {
            id: format!("r{i}"),
            values: vec![1.0, i as f32],
            sparse_values: None,
            metadata: metadata.as_object().cloned(),
        })
        .collect();

    let engine = larch_fuzz::engine();
    let _ = engine.drop_index(INDEX);
    let config = IndexConfig {
        dimension: Dimension::new(2).expect("valid"),
        metric: Metric::Euclidean,
    };
    let index = engine.create_index(INDEX, config).expect("a fresh index");
    // One at a time, so an invalid metadata object drops only its own record.
    for record in records {
        let _ = index.upsert(UpsertRequest {
            namespace: String::new(),
            vectors: vec![record],
        });
    }
    let ids: Vec<String> = (0..32).map(|i| format!("r{i}")).collect();
    let stored = index
        .fetch(FetchRequest {
            namespace: String::new(),
            ids,
        })
        .expect("fetch of valid ids")
        .vectors;
    let no_metadata = Metadata::new();
    let expected: BTreeSet<String> = stored
        .iter()
        .filter(|record| filter.matches(record.metadata.as_ref().unwrap_or(&no_metadata)))
        .map(|record| record.id.clone())
        .collect();

    let stats = index
        .describe_stats(Some(filter_json.clone()))
        .expect("a filter that parses is a valid stats filter");
    assert_eq!(
        stats.total_vector_count,
        expected.len() as u64,
        "the metadata index counts otherwise than Filter::matches"
    );
    if !stored.is_empty() {
        let found: BTreeSet<String> = index
            .query(QueryRequest {
                top_k: 1000,
                vector: vec![0.5, 0.5],
                filter: Some(filter_json.clone()),
                ..Default::default()
            })
            .expect("a filter that parses is a valid query filter")
            .matches
            .into_iter()
            .map(|hit| hit.id)
            .collect();
        assert_eq!(
            found, expected,
            "a filtered query finds other records than Filter::matches"
        );
    }
    if !filter.is_empty() {
        index
            .delete(DeleteRequest {
                filter: Some(filter_json),
                ..Default::default()
            })
            .expect("a filter that parses is a valid delete filter");
        let left = index
            .describe_stats(None)
            .expect("stats")
            .total_vector_count;
        assert_eq!(
            left,
            (stored.len() - expected.len()) as u64,
            "delete by filter removed other records than Filter::matches"
        );
    }
});
