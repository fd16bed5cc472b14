//! A sparse index on disk (issue 18, item 5): its `index.meta`, log and segments hold records
//! without dense values, and reopening it (segments, then the log tail) rebuilds the inverted
//! index, so the same queries give the same answers.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use larch_engine::{
    Engine, IndexConfig, QueryRequest, SparseInput, UpdateRequest, UpsertRequest, VectorInput,
    VectorType,
};

fn record(id: &str, entries: &[(u32, f32)]) -> VectorInput {
    VectorInput {
        id: id.into(),
        sparse_values: Some(SparseInput {
            indices: entries.iter().map(|e| e.0).collect(),
            values: entries.iter().map(|e| e.1).collect(),
        }),
        ..Default::default()
    }
}

fn ranked(index: &larch_engine::Index, entries: &[(u32, f32)]) -> Vec<(String, f32)> {
    index
        .query(QueryRequest {
            namespace: "ns".into(),
            top_k: 10,
            sparse_vector: record("q", entries).sparse_values,
            ..Default::default()
        })
        .unwrap()
        .matches
        .into_iter()
        .map(|m| (m.id, m.score))
        .collect()
}

#[test]
fn a_sparse_index_answers_the_same_after_flush_and_reopen() {
    let root = tempfile::tempdir().unwrap();
    let query = [(1, 1.0), (4_000_000_000, 2.0)];
    let before = {
        let engine = Engine::open(root.path());
        let index = engine
            .create_index("splade", IndexConfig::sparse())
            .unwrap();
        let upsert = |vectors| {
            index
                .upsert(UpsertRequest {
                    namespace: "ns".into(),
                    vectors,
                })
                .unwrap()
        };
        upsert(vec![
            record("a", &[(1, 0.5), (4_000_000_000, 1.0)]),
            record("b", &[(1, 2.0)]),
            record("c", &[(9, 1.0)]),
        ]);
        // Into a segment; the next writes stay in the log only.
        assert!(index.flush().unwrap());
        upsert(vec![record("d", &[(4_000_000_000, 0.25), (9, 1.0)])]);
        index
            .update(UpdateRequest {
                namespace: "ns".into(),
                id: "b".into(),
                sparse_values: record("b", &[(1, 3.0)]).sparse_values,
                ..Default::default()
            })
            .unwrap();
        let before = ranked(&index, &query);
        assert_eq!(
            before,
            [
                ("b".to_owned(), 3.0),
                ("a".to_owned(), 2.5),
                ("d".to_owned(), 0.5)
            ]
        );
        before
    };

    let engine = Engine::open(root.path());
    let index = engine.open_index("splade", IndexConfig::sparse()).unwrap();
    assert_eq!(index.config().vector_type(), VectorType::Sparse);
    assert_eq!(ranked(&index, &query), before);
    // Opened as a dense index, it is refused rather than misread.
    drop(index);
    drop(engine);
    let engine = Engine::open(root.path());
    let dense = IndexConfig::new(VectorType::Dense, 4, larch_engine::Metric::DotProduct).unwrap();
    let err = engine.open_index("splade", dense).unwrap_err();
    assert!(err.to_string().contains("as a sparse index"), "{err}");
}
