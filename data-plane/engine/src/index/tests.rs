//! Behaviour of the public [`Index`] API: validation, scoring, pagination,
//! updates, deletes and namespaces.

use serde_json::json;

use super::*;
use crate::{
    DeleteRequest, ErrorCode, FetchByMetadataRequest, FetchRequest, JsonObject,
    ListNamespacesRequest, ListRequest, MetadataValue, Metric, NamespaceInfo, QueryRequest,
    QueryResponse, Record, SparseInput, UpdateRequest, UpsertRequest, VectorInput,
    pagination::Cursor,
    test_support::{index, object, sparse, vector, vector_with},
};

fn upsert(index: &Index, namespace: &str, vectors: Vec<VectorInput>) {
    index
        .upsert(UpsertRequest {
            namespace: namespace.into(),
            vectors,
        })
        .unwrap();
}

fn invalid(result: Result<impl fmt::Debug>) -> String {
    let err = result.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
    err.to_string()
}

fn query(namespace: &str, vector: &[f32], top_k: u32) -> QueryRequest {
    QueryRequest {
        namespace: namespace.into(),
        top_k,
        vector: vector.to_vec(),
        ..Default::default()
    }
}

fn ids_and_scores(response: &QueryResponse) -> Vec<(&str, f32)> {
    response
        .matches
        .iter()
        .map(|m| (m.id.as_str(), m.score))
        .collect()
}

fn ids(response: &QueryResponse) -> Vec<&str> {
    response.matches.iter().map(|m| m.id.as_str()).collect()
}

fn fetch_ids(index: &Index, namespace: &str, ids: &[&str]) -> Vec<Record> {
    let request = FetchRequest {
        namespace: namespace.into(),
        ids: ids.iter().map(|s| s.to_string()).collect(),
    };
    index.fetch(request).unwrap().vectors
}

fn all_ids(index: &Index, namespace: &str) -> Vec<String> {
    index
        .list(ListRequest {
            namespace: namespace.into(),
            ..Default::default()
        })
        .unwrap()
        .ids
}

fn stats(index: &Index) -> Vec<(String, u64)> {
    index.describe_stats(None).unwrap().namespaces
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() < 1e-6
}

// ---- upsert ----------------------------------------------------------------

#[test]
fn upsert_counts_vectors_and_the_last_duplicate_wins() {
    let index = index(2, Metric::Cosine);
    let count = index
        .upsert(UpsertRequest {
            namespace: "ns".into(),
            vectors: vec![
                vector("a", &[1.0, 0.0]),
                vector("b", &[0.0, 1.0]),
                vector("a", &[2.0, 2.0]),
            ],
        })
        .unwrap();
    assert_eq!(count, 3);
    assert_eq!(all_ids(&index, "ns"), ["a", "b"]);
    assert_eq!(fetch_ids(&index, "ns", &["a"])[0].values, [2.0, 2.0]);
}

#[test]
fn upsert_batch_size_limits() {
    let index = index(1, Metric::Cosine);
    assert_eq!(
        invalid(index.upsert(UpsertRequest::default())),
        "vectors: at least one vector is required (at most 1000)"
    );
    let batch = |n: usize| {
        (0..n)
            .map(|i| vector(&i.to_string(), &[1.0]))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        invalid(index.upsert(UpsertRequest {
            vectors: batch(1001),
            ..Default::default()
        })),
        "vectors: has 1001 vectors; the maximum is 1000"
    );
    assert_eq!(
        index
            .upsert(UpsertRequest {
                vectors: batch(1000),
                ..Default::default()
            })
            .unwrap(),
        1000
    );
}

#[test]
fn upsert_errors_name_the_field_path() {
    let index = index(4, Metric::Cosine);
    let one = |v: VectorInput| {
        invalid(index.upsert(UpsertRequest {
            namespace: "ns".into(),
            vectors: vec![v],
        }))
    };
    assert_eq!(
        one(vector("", &[1.0; 4])),
        "vectors[0].id: must not be empty"
    );
    assert_eq!(
        one(vector(&"x".repeat(513), &[1.0; 4])),
        "vectors[0].id: has 513 characters; the maximum is 512"
    );
    assert_eq!(
        one(vector("a", &[1.0; 3])),
        "vectors[0].values: has 3 values but the index dimension is 4"
    );
    assert_eq!(
        one(vector("a", &[])),
        "vectors[0].values: has 0 values but the index dimension is 4"
    );
    assert_eq!(
        one(vector("a", &[1.0, 1.0, f32::NAN, 1.0])),
        "vectors[0].values[2]: must be a finite number, got NaN"
    );
    assert_eq!(
        one(vector("a", &[0.0; 4])),
        "vectors[0].values: must contain at least one non-zero value"
    );
    assert_eq!(
        one(VectorInput {
            sparse_values: Some(sparse(&[(1, 1.0)])),
            ..vector("a", &[1.0; 4])
        }),
        "vectors[0].sparse_values: sparse values need an index with metric dotproduct; this index uses cosine"
    );
    assert_eq!(
        one(vector_with("a", &[1.0; 4], json!({"tags": ["x", 1]}))),
        "vectors[0].metadata.tags: lists may contain only strings"
    );
    assert_eq!(
        one(vector_with(
            "a",
            &[1.0; 4],
            json!({"big": "x".repeat(41_000)})
        )),
        "vectors[0].metadata: is 41010 bytes as JSON; the limit is 40960 bytes (40 KB)"
    );
    assert_eq!(
        invalid(index.upsert(UpsertRequest {
            namespace: "a\0".into(),
            vectors: vec![vector("a", &[1.0; 4])]
        })),
        "namespace: must not contain the NUL character"
    );
}

#[test]
fn a_rejected_batch_stores_nothing() {
    let index = index(2, Metric::Cosine);
    upsert(
        &index,
        "ns",
        vec![vector_with("keep", &[1.0, 0.0], json!({"v": 1}))],
    );
    let err = invalid(index.upsert(UpsertRequest {
        namespace: "ns".into(),
        vectors: vec![
            vector("keep", &[0.0, 1.0]),
            vector("new", &[1.0, 1.0]),
            vector("bad", &[1.0]),
        ],
    }));
    assert_eq!(
        err,
        "vectors[2].values: has 1 values but the index dimension is 2"
    );
    let stored = fetch_ids(&index, "ns", &["keep", "new"]);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].values, [1.0, 0.0]);
    // A rejected first upsert does not create its namespace either.
    assert!(
        index
            .upsert(UpsertRequest {
                namespace: "other".into(),
                vectors: vec![vector("x", &[0.0, 0.0])]
            })
            .is_err()
    );
    assert_eq!(stats(&index), [("ns".to_owned(), 1)]);
}

#[test]
fn upsert_replaces_the_whole_record() {
    let index = index(2, Metric::DotProduct);
    upsert(
        &index,
        "",
        vec![VectorInput {
            sparse_values: Some(sparse(&[(3, 1.0)])),
            ..vector_with("a", &[1.0, 0.0], json!({"k": "v"}))
        }],
    );
    upsert(&index, "", vec![vector("a", &[0.0, 1.0])]);
    let record = &fetch_ids(&index, "", &["a"])[0];
    assert_eq!(record.values, [0.0, 1.0]);
    assert_eq!(record.sparse_values, None);
    assert_eq!(record.metadata, None);
}

#[test]
fn stored_sparse_values_are_sorted_and_empty_metadata_is_none() {
    let index = index(2, Metric::DotProduct);
    upsert(
        &index,
        "",
        vec![VectorInput {
            sparse_values: Some(sparse(&[(9, 0.5), (1, 2.0)])),
            metadata: Some(JsonObject::new()),
            ..vector("a", &[1.0, 0.0])
        }],
    );
    let record = &fetch_ids(&index, "", &["a"])[0];
    let sparse = record.sparse_values.as_ref().unwrap();
    assert_eq!(
        (sparse.indices.as_slice(), sparse.values.as_slice()),
        ([1, 9].as_slice(), [2.0, 0.5].as_slice())
    );
    assert_eq!(record.metadata, None);
}

// ---- query -----------------------------------------------------------------

fn scoring_index(metric: Metric) -> Index {
    let index = index(2, metric);
    upsert(
        &index,
        "",
        vec![
            vector("a", &[1.0, 0.0]),
            vector("b", &[0.0, 2.0]),
            vector("c", &[3.0, 4.0]),
            vector("d", &[-1.0, -1.0]),
        ],
    );
    index
}

#[test]
fn cosine_scores_and_order() {
    let index = scoring_index(Metric::Cosine);
    let response = index.query(query("", &[1.0, 1.0], 4)).unwrap();
    let s = std::f32::consts::FRAC_1_SQRT_2;
    let expected = [
        ("c", 7.0 / (5.0 * 2f32.sqrt())),
        ("a", s),
        ("b", s),
        ("d", -1.0),
    ];
    assert_eq!(ids(&response), ["c", "a", "b", "d"]);
    for ((id, score), (want_id, want)) in ids_and_scores(&response).into_iter().zip(expected) {
        assert_eq!(id, want_id);
        assert!(close(score, want), "{id}: {score} vs {want}");
    }
}

#[test]
fn euclidean_scores_are_squared_distances_lowest_first() {
    let index = scoring_index(Metric::Euclidean);
    let response = index.query(query("", &[1.0, 1.0], 4)).unwrap();
    // a: 0+1, b: 1+1, c: 4+9, d: 4+4
    assert_eq!(
        ids_and_scores(&response),
        [("a", 1.0), ("b", 2.0), ("d", 8.0), ("c", 13.0)]
    );
}

#[test]
fn dotproduct_scores_are_raw_inner_products() {
    let index = scoring_index(Metric::DotProduct);
    let response = index.query(query("", &[1.0, 1.0], 4)).unwrap();
    // a and b tie at 1 and 2? a: 1, b: 2, c: 7, d: -2
    assert_eq!(
        ids_and_scores(&response),
        [("c", 7.0), ("b", 2.0), ("a", 1.0), ("d", -2.0)]
    );
}

#[test]
fn ties_break_by_id_and_top_k_truncates() {
    let index = index(2, Metric::DotProduct);
    upsert(
        &index,
        "",
        vec![
            vector("z", &[1.0, 0.0]),
            vector("m", &[1.0, 0.0]),
            vector("a", &[1.0, 0.0]),
            vector("best", &[2.0, 0.0]),
        ],
    );
    let response = index.query(query("", &[1.0, 0.0], 3)).unwrap();
    assert_eq!(ids(&response), ["best", "a", "m"]);
    // top_k above the record count returns every record.
    assert_eq!(
        index
            .query(query("", &[1.0, 0.0], 10_000))
            .unwrap()
            .matches
            .len(),
        4
    );
}

#[test]
fn cosine_with_a_zero_query_vector_scores_zero() {
    let index = scoring_index(Metric::Cosine);
    let response = index.query(query("", &[0.0, 0.0], 4)).unwrap();
    assert_eq!(
        ids_and_scores(&response),
        [("a", 0.0), ("b", 0.0), ("c", 0.0), ("d", 0.0)]
    );
}

#[test]
fn query_validation() {
    let index = scoring_index(Metric::Cosine);
    assert_eq!(
        invalid(index.query(query("", &[1.0, 0.0], 0))),
        "top_k: must be between 1 and 10000 (the limit on matches per query, as in Pinecone), got 0"
    );
    assert_eq!(
        invalid(index.query(query("", &[1.0, 0.0], 10_001))),
        "top_k: must be between 1 and 10000 (the limit on matches per query, as in Pinecone), got 10001"
    );
    assert_eq!(
        invalid(index.query(QueryRequest {
            id: "a".into(),
            ..query("", &[1.0, 0.0], 1)
        })),
        "id: give either vector or id, not both"
    );
    assert_eq!(
        invalid(index.query(query("", &[], 1))),
        "vector: either vector or id is required"
    );
    assert_eq!(
        invalid(index.query(query("", &[1.0], 1))),
        "vector: has 1 values but the index dimension is 2"
    );
    assert_eq!(
        invalid(index.query(query("", &[1.0, f32::INFINITY], 1))),
        "vector[1]: must be a finite number, got inf"
    );
    assert_eq!(
        invalid(index.query(QueryRequest {
            sparse_vector: Some(sparse(&[(1, 1.0)])),
            ..query("", &[1.0, 0.0], 1)
        })),
        "sparse_vector: sparse values need an index with metric dotproduct; this index uses cosine"
    );
    assert_eq!(
        invalid(index.query(QueryRequest {
            filter: Some(object(json!({"genre": {"$foo": 1}}))),
            ..query("", &[1.0, 0.0], 1)
        })),
        "filter.genre.$foo: unknown operator '$foo'; supported: $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists"
    );
}

#[test]
fn query_by_id_uses_the_stored_vector() {
    let index = scoring_index(Metric::Euclidean);
    let by_id = QueryRequest {
        id: "c".into(),
        top_k: 2,
        ..Default::default()
    };
    assert_eq!(
        ids_and_scores(&index.query(by_id).unwrap()),
        [("c", 0.0), ("b", 13.0)]
    );

    let err = index
        .query(QueryRequest {
            id: "nope".into(),
            top_k: 1,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert_eq!(
        err.to_string(),
        "vector 'nope' not found in namespace '__default__'"
    );
    let err = index
        .query(QueryRequest {
            namespace: "ns".into(),
            id: "a".into(),
            top_k: 1,
            ..Default::default()
        })
        .unwrap();
    assert!(err.matches.is_empty(), "a missing namespace reads as empty");
}

#[test]
fn query_of_a_missing_namespace_is_empty() {
    let index = scoring_index(Metric::Cosine);
    let response = index.query(query("nowhere", &[1.0, 0.0], 5)).unwrap();
    assert_eq!(
        response,
        QueryResponse {
            namespace: "nowhere".into(),
            matches: vec![]
        }
    );
}

#[test]
fn query_filter_and_includes() {
    let index = index(2, Metric::DotProduct);
    upsert(
        &index,
        "",
        vec![
            vector_with("a", &[1.0, 0.0], json!({"genre": "drama", "year": 2001})),
            vector_with("b", &[2.0, 0.0], json!({"genre": "comedy"})),
            VectorInput {
                sparse_values: Some(sparse(&[(1, 1.0)])),
                ..vector_with("c", &[3.0, 0.0], json!({"genre": "drama"}))
            },
            vector("d", &[4.0, 0.0]),
        ],
    );
    let filtered = QueryRequest {
        filter: Some(object(json!({"genre": "drama"}))),
        ..query("", &[1.0, 0.0], 10)
    };
    let response = index.query(filtered.clone()).unwrap();
    assert_eq!(ids(&response), ["c", "a"]);
    assert!(
        response
            .matches
            .iter()
            .all(|m| m.values.is_empty() && m.sparse_values.is_none() && m.metadata.is_none())
    );

    let response = index
        .query(QueryRequest {
            include_values: true,
            include_metadata: true,
            ..filtered
        })
        .unwrap();
    let c = &response.matches[0];
    assert_eq!(c.values, [3.0, 0.0]);
    assert_eq!(c.sparse_values.as_ref().unwrap().indices, [1]);
    assert_eq!(
        c.metadata.as_ref().unwrap()["genre"],
        MetadataValue::String("drama".into())
    );

    // An empty filter is no filter.
    let unfiltered = QueryRequest {
        filter: Some(JsonObject::new()),
        ..query("", &[1.0, 0.0], 10)
    };
    assert_eq!(ids(&index.query(unfiltered).unwrap()), ["d", "c", "b", "a"]);
    // `$ne` also matches records without the field.
    let ne = QueryRequest {
        filter: Some(object(json!({"genre": {"$ne": "drama"}}))),
        ..query("", &[1.0, 0.0], 10)
    };
    assert_eq!(ids(&index.query(ne).unwrap()), ["d", "b"]);
}

#[test]
fn hybrid_score_adds_the_sparse_dot_product() {
    let index = index(2, Metric::DotProduct);
    upsert(
        &index,
        "",
        vec![
            VectorInput {
                sparse_values: Some(sparse(&[(1, 1.0), (7, 2.0)])),
                ..vector("a", &[1.0, 0.0])
            },
            VectorInput {
                sparse_values: Some(sparse(&[(7, -1.0)])),
                ..vector("b", &[2.0, 0.0])
            },
            vector("c", &[0.5, 0.5]),
        ],
    );
    let request = QueryRequest {
        sparse_vector: Some(sparse(&[(7, 3.0), (2, 5.0)])),
        ..query("", &[1.0, 1.0], 3)
    };
    // a: 1 + 2*3 = 7, b: 2 - 3 = -1, c: 1 + 0 = 1
    assert_eq!(
        ids_and_scores(&index.query(request).unwrap()),
        [("a", 7.0), ("c", 1.0), ("b", -1.0)]
    );
    // Hybrid with a query by id: the record's dense values plus the request's sparse vector.
    let by_id = QueryRequest {
        id: "c".into(),
        top_k: 1,
        sparse_vector: Some(sparse(&[(1, 10.0)])),
        ..Default::default()
    };
    // a: 0.5 + 10, b: 1, c: 0.5
    assert_eq!(ids_and_scores(&index.query(by_id).unwrap()), [("a", 10.5)]);
}

// ---- fetch -----------------------------------------------------------------

#[test]
fn fetch_keeps_request_order_skips_missing_and_repeats() {
    let index = scoring_index(Metric::Cosine);
    let records = fetch_ids(&index, "", &["c", "missing", "a", "c"]);
    let got: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(got, ["c", "a"]);
    assert_eq!(records[0].values, [3.0, 4.0]);
    assert!(fetch_ids(&index, "nowhere", &["a"]).is_empty());
}

#[test]
fn fetch_validation() {
    let index = index(1, Metric::Cosine);
    assert_eq!(
        invalid(index.fetch(FetchRequest::default())),
        "ids: at least one id is required"
    );
    let many = (0..1001).map(|i| i.to_string()).collect();
    assert_eq!(
        invalid(index.fetch(FetchRequest {
            ids: many,
            ..Default::default()
        })),
        "ids: has 1001 ids; the maximum is 1000"
    );
    assert_eq!(
        invalid(index.fetch(FetchRequest {
            ids: vec!["a".into(), "".into()],
            ..Default::default()
        })),
        "ids[1]: must not be empty"
    );
}

fn catalogue(index: &Index, namespace: &str, n: usize) {
    let vectors = (0..n)
        .map(|i| {
            vector_with(
                &format!("id-{i:03}"),
                &[1.0, i as f32],
                json!({"even": i % 2 == 0, "i": i}),
            )
        })
        .collect();
    upsert(index, namespace, vectors);
}

#[test]
fn fetch_by_metadata_pages_through_every_match_once() {
    let index = index(2, Metric::Cosine);
    catalogue(&index, "ns", 25);
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = index
            .fetch_by_metadata(FetchByMetadataRequest {
                namespace: "ns".into(),
                filter: Some(object(json!({"even": true}))),
                limit: Some(4),
                pagination_token: token.take(),
            })
            .unwrap();
        assert!(page.vectors.len() <= 4);
        seen.extend(page.vectors.into_iter().map(|r| r.id));
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).step_by(2).map(|i| format!("id-{i:03}")).collect();
    assert_eq!(seen, expected);
}

#[test]
fn fetch_by_metadata_validation() {
    let index = index(2, Metric::Cosine);
    catalogue(&index, "", 3);
    let request = |filter: Option<serde_json::Value>, limit| FetchByMetadataRequest {
        filter: filter.map(object),
        limit,
        ..Default::default()
    };
    let needs = "filter: fetch by metadata needs a non-empty filter";
    assert_eq!(invalid(index.fetch_by_metadata(request(None, None))), needs);
    assert_eq!(
        invalid(index.fetch_by_metadata(request(Some(json!({})), None))),
        needs
    );
    assert_eq!(
        invalid(index.fetch_by_metadata(request(Some(json!({"i": 1})), Some(0)))),
        "limit: must be between 1 and 10000, got 0"
    );
    assert!(
        index
            .fetch_by_metadata(request(Some(json!({"i": 1})), Some(10_000)))
            .is_ok()
    );
    let bad_token = FetchByMetadataRequest {
        pagination_token: Some("nope".into()),
        ..request(Some(json!({"i": 1})), None)
    };
    assert_eq!(
        index.fetch_by_metadata(bad_token).unwrap_err().field(),
        Some("pagination_token")
    );
    // Default limit is 100, and the exact page has no next token.
    let page = index
        .fetch_by_metadata(request(Some(json!({"i": {"$gte": 0}})), None))
        .unwrap();
    assert_eq!((page.vectors.len(), page.next), (3, None));
}

// ---- delete ----------------------------------------------------------------

#[test]
fn delete_needs_exactly_one_mode() {
    let index = index(1, Metric::Cosine);
    let err = |request| invalid(index.delete(request));
    assert_eq!(
        err(DeleteRequest::default()),
        "ids: give exactly one of ids, delete_all or filter; got none"
    );
    assert_eq!(
        err(DeleteRequest {
            ids: vec!["a".into()],
            delete_all: true,
            ..Default::default()
        }),
        "ids, delete_all: give exactly one of ids, delete_all or filter; got ids and delete_all"
    );
    assert_eq!(
        err(DeleteRequest {
            delete_all: true,
            filter: Some(object(json!({"a": 1}))),
            ..Default::default()
        }),
        "delete_all, filter: give exactly one of ids, delete_all or filter; got delete_all and filter"
    );
    assert_eq!(
        err(DeleteRequest {
            filter: Some(JsonObject::new()),
            ..Default::default()
        }),
        "filter: delete with empty metadata filter is not allowed"
    );
    assert_eq!(
        err(DeleteRequest {
            ids: (0..1001).map(|i| i.to_string()).collect(),
            ..Default::default()
        }),
        "ids: has 1001 ids; the maximum is 1000"
    );
    assert_eq!(
        err(DeleteRequest {
            ids: vec!["".into()],
            ..Default::default()
        }),
        "ids[0]: must not be empty"
    );
}

#[test]
fn delete_by_ids_filter_and_all() {
    let index = index(2, Metric::Cosine);
    catalogue(&index, "ns", 6);
    index
        .delete(DeleteRequest {
            namespace: "ns".into(),
            ids: vec!["id-000".into(), "nope".into()],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        all_ids(&index, "ns"),
        ["id-001", "id-002", "id-003", "id-004", "id-005"]
    );
    index
        .delete(DeleteRequest {
            namespace: "ns".into(),
            filter: Some(object(json!({"even": true}))),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all_ids(&index, "ns"), ["id-001", "id-003", "id-005"]);
    // The survivors are intact after rows moved around.
    let records = fetch_ids(&index, "ns", &["id-001", "id-003", "id-005"]);
    assert_eq!(
        records.iter().map(|r| r.values[1]).collect::<Vec<_>>(),
        [1.0, 3.0, 5.0]
    );
    index
        .delete(DeleteRequest {
            namespace: "ns".into(),
            delete_all: true,
            ..Default::default()
        })
        .unwrap();
    assert!(all_ids(&index, "ns").is_empty());
    // delete_all keeps the namespace.
    assert_eq!(index.describe_namespace("ns").unwrap().record_count, 0);
    // Deleting in a missing namespace is a no-op.
    index
        .delete(DeleteRequest {
            namespace: "nowhere".into(),
            ids: vec!["a".into()],
            ..Default::default()
        })
        .unwrap();
    index
        .delete(DeleteRequest {
            namespace: "nowhere".into(),
            delete_all: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(stats(&index), [("ns".to_owned(), 0)]);
}

// ---- update ----------------------------------------------------------------

#[test]
fn update_by_id_merges_metadata_and_replaces_values() {
    let index = index(2, Metric::DotProduct);
    upsert(
        &index,
        "",
        vec![vector_with(
            "a",
            &[1.0, 0.0],
            json!({"genre": "drama", "year": 2000}),
        )],
    );
    let updated = index
        .update(UpdateRequest {
            id: "a".into(),
            set_metadata: Some(object(json!({"year": 2001, "new": true}))),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(updated, 1);
    let record = &fetch_ids(&index, "", &["a"])[0];
    assert_eq!(
        serde_json::Value::Object(metadata_to_json_opt(record)),
        json!({"genre": "drama", "year": 2001.0, "new": true})
    );
    assert_eq!(record.values, [1.0, 0.0]);

    index
        .update(UpdateRequest {
            id: "a".into(),
            values: vec![0.0, 5.0],
            ..Default::default()
        })
        .unwrap();
    index
        .update(UpdateRequest {
            id: "a".into(),
            sparse_values: Some(sparse(&[(4, 1.0)])),
            ..Default::default()
        })
        .unwrap();
    let record = &fetch_ids(&index, "", &["a"])[0];
    assert_eq!(record.values, [0.0, 5.0]);
    assert_eq!(record.sparse_values.as_ref().unwrap().indices, [4]);
    assert_eq!(record.metadata.as_ref().unwrap().len(), 3);
    // The new values are searched.
    let response = index.query(query("", &[0.0, 1.0], 1)).unwrap();
    assert_eq!(ids_and_scores(&response), [("a", 5.0)]);
}

fn metadata_to_json_opt(record: &Record) -> JsonObject {
    crate::metadata_to_json(record.metadata.as_ref().unwrap())
}

#[test]
fn update_validation() {
    let index = index(2, Metric::Cosine);
    upsert(&index, "", vec![vector("a", &[1.0, 0.0])]);
    let err = |request| invalid(index.update(request));
    assert_eq!(
        err(UpdateRequest::default()),
        "id: either id or filter is required"
    );
    assert_eq!(
        err(UpdateRequest {
            id: "a".into(),
            filter: Some(object(json!({"x": 1}))),
            ..Default::default()
        }),
        "filter: give either id or filter, not both"
    );
    assert_eq!(
        err(UpdateRequest {
            id: "a".into(),
            ..Default::default()
        }),
        "values: nothing to update; give at least one of values, sparse_values or set_metadata"
    );
    assert_eq!(
        err(UpdateRequest {
            id: "a".into(),
            values: vec![1.0],
            ..Default::default()
        }),
        "values: has 1 values but the index dimension is 2"
    );
    assert_eq!(
        err(UpdateRequest {
            id: "a".into(),
            sparse_values: Some(sparse(&[(1, 1.0)])),
            ..Default::default()
        }),
        "sparse_values: sparse values need an index with metric dotproduct; this index uses cosine"
    );
    assert_eq!(
        err(UpdateRequest {
            id: "a".into(),
            set_metadata: Some(object(json!({"k": null}))),
            ..Default::default()
        }),
        "set_metadata.k: null is not supported; remove the key instead"
    );
    let by_filter = || UpdateRequest {
        filter: Some(object(json!({"x": 1}))),
        ..Default::default()
    };
    assert_eq!(
        err(by_filter()),
        "set_metadata: is required when updating by filter"
    );
    assert_eq!(
        err(UpdateRequest {
            values: vec![1.0, 1.0],
            set_metadata: Some(object(json!({"y": 1}))),
            ..by_filter()
        }),
        "values: cannot be combined with filter; an update by filter changes only metadata"
    );
    assert_eq!(
        err(UpdateRequest {
            sparse_values: Some(sparse(&[(1, 1.0)])),
            ..by_filter()
        }),
        "sparse_values: cannot be combined with filter; an update by filter changes only metadata"
    );
    assert_eq!(
        err(UpdateRequest {
            filter: Some(JsonObject::new()),
            set_metadata: Some(object(json!({"y": 1}))),
            ..Default::default()
        }),
        "filter: update with empty metadata filter is not allowed"
    );

    let missing = UpdateRequest {
        id: "nope".into(),
        values: vec![1.0, 1.0],
        ..Default::default()
    };
    let not_found = index.update(missing.clone()).unwrap_err();
    assert_eq!(not_found.code(), ErrorCode::NotFound);
    assert_eq!(
        not_found.to_string(),
        "vector 'nope' not found in namespace '__default__'"
    );
    let elsewhere = index
        .update(UpdateRequest {
            namespace: "other".into(),
            ..missing
        })
        .unwrap_err();
    assert_eq!(
        elsewhere.to_string(),
        "vector 'nope' not found in namespace 'other'"
    );
}

#[test]
fn update_by_filter_and_dry_run() {
    let index = index(2, Metric::Cosine);
    catalogue(&index, "ns", 6);
    let request = |dry_run| UpdateRequest {
        namespace: "ns".into(),
        filter: Some(object(json!({"even": true}))),
        set_metadata: Some(object(json!({"tag": "x"}))),
        dry_run,
        ..Default::default()
    };
    assert_eq!(index.update(request(true)).unwrap(), 3);
    let tagged = FetchByMetadataRequest {
        namespace: "ns".into(),
        filter: Some(object(json!({"tag": "x"}))),
        ..Default::default()
    };
    assert!(
        index
            .fetch_by_metadata(tagged.clone())
            .unwrap()
            .vectors
            .is_empty(),
        "dry run changes nothing"
    );
    assert_eq!(index.update(request(false)).unwrap(), 3);
    let ids: Vec<String> = index
        .fetch_by_metadata(tagged)
        .unwrap()
        .vectors
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["id-000", "id-002", "id-004"]);
    // Other metadata keys are kept.
    assert_eq!(
        fetch_ids(&index, "ns", &["id-002"])[0]
            .metadata
            .as_ref()
            .unwrap()["i"],
        MetadataValue::Number(2.0)
    );
    // No match and missing namespaces count zero.
    let none = UpdateRequest {
        filter: Some(object(json!({"even": "no"}))),
        ..request(false)
    };
    assert_eq!(index.update(none).unwrap(), 0);
    assert_eq!(
        index
            .update(UpdateRequest {
                namespace: "nowhere".into(),
                ..request(false)
            })
            .unwrap(),
        0
    );
}

#[test]
fn merged_metadata_over_the_limit_changes_nothing() {
    let index = index(2, Metric::Cosine);
    let half = "x".repeat(25_000);
    upsert(
        &index,
        "",
        vec![
            vector_with("small", &[1.0, 0.0], json!({"group": "g"})),
            vector_with("large", &[1.0, 0.0], json!({"group": "g", "a": half})),
        ],
    );
    let patch = object(json!({"b": "y".repeat(20_000)}));
    let by_filter = UpdateRequest {
        filter: Some(object(json!({"group": "g"}))),
        set_metadata: Some(patch.clone()),
        ..Default::default()
    };
    let err = invalid(index.update(by_filter));
    assert!(
        err.starts_with("set_metadata: merged into the metadata of vector 'large' it would be"),
        "{err}"
    );
    assert!(err.ends_with("the limit is 40960 bytes (40 KB)"), "{err}");
    assert!(
        fetch_ids(&index, "", &["small"])[0]
            .metadata
            .as_ref()
            .unwrap()
            .get("b")
            .is_none()
    );
    let by_id = UpdateRequest {
        id: "large".into(),
        set_metadata: Some(patch),
        ..Default::default()
    };
    assert!(
        invalid(index.update(by_id))
            .starts_with("set_metadata: merged into the metadata of vector 'large'")
    );
}

// ---- list ------------------------------------------------------------------

#[test]
fn list_pages_through_ids_with_a_prefix() {
    let index = index(1, Metric::Cosine);
    let mut vectors: Vec<VectorInput> = (0..23)
        .map(|i| vector(&format!("doc#{i:02}"), &[1.0]))
        .collect();
    vectors.extend(["a", "doc", "doc$", "e"].map(|id| vector(id, &[1.0])));
    upsert(&index, "ns", vectors);

    let mut seen = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = index
            .list(ListRequest {
                namespace: "ns".into(),
                prefix: Some("doc#".into()),
                limit: Some(5),
                pagination_token: token.take(),
            })
            .unwrap();
        pages += 1;
        seen.extend(page.ids);
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(
        seen,
        (0..23).map(|i| format!("doc#{i:02}")).collect::<Vec<_>>()
    );
    let everything = all_ids(&index, "ns");
    assert_eq!(everything.len(), 27);
    assert!(everything.windows(2).all(|w| w[0] < w[1]));
    assert!(all_ids(&index, "nowhere").is_empty());
}

#[test]
fn list_validation() {
    let index = index(1, Metric::Cosine);
    let err = |request| invalid(index.list(request));
    assert_eq!(
        err(ListRequest {
            limit: Some(0),
            ..Default::default()
        }),
        "limit: must be between 1 and 100, got 0"
    );
    assert_eq!(
        err(ListRequest {
            limit: Some(101),
            ..Default::default()
        }),
        "limit: must be between 1 and 100, got 101"
    );
    assert_eq!(
        err(ListRequest {
            prefix: Some("p".repeat(513)),
            ..Default::default()
        }),
        "prefix: has 513 characters; the maximum is 512"
    );
    assert_eq!(
        err(ListRequest {
            pagination_token: Some("xyz".into()),
            ..Default::default()
        }),
        "pagination_token: is not a valid token; pass the `next` token of the previous page"
    );
}

// ---- namespaces ------------------------------------------------------------

#[test]
fn namespace_lifecycle() {
    let index = index(2, Metric::Cosine);
    let info = index
        .create_namespace("films", Some(vec!["genre".into()]))
        .unwrap();
    assert_eq!(
        info,
        NamespaceInfo {
            name: "films".into(),
            record_count: 0,
            size_bytes: 0,
            schema_fields: Some(vec!["genre".into()])
        }
    );
    let err = index.create_namespace("films", None).unwrap_err();
    assert_eq!(
        (err.code(), err.to_string()),
        (
            ErrorCode::AlreadyExists,
            "namespace 'films' already exists".into()
        )
    );

    upsert(
        &index,
        "films",
        vec![vector_with("a", &[1.0, 0.0], json!({"genre": "drama"}))],
    );
    let info = index.describe_namespace("films").unwrap();
    assert_eq!(info.record_count, 1);
    // 2 floats + a norm, a 1-byte id, "genre" + "drama".
    assert_eq!(info.size_bytes, 12 + 1 + 10);
    assert_eq!(info.schema_fields, Some(vec!["genre".into()]));

    index.delete_namespace("films").unwrap();
    let err = index.describe_namespace("films").unwrap_err();
    assert_eq!(
        (err.code(), err.to_string()),
        (ErrorCode::NotFound, "namespace 'films' not found".into())
    );
    assert_eq!(
        index.delete_namespace("films").unwrap_err().code(),
        ErrorCode::NotFound
    );
    // Upserting again brings back a fresh, empty-schema namespace.
    upsert(&index, "films", vec![vector("b", &[1.0, 0.0])]);
    assert_eq!(all_ids(&index, "films"), ["b"]);
    assert_eq!(
        index.describe_namespace("films").unwrap().schema_fields,
        None
    );
}

#[test]
fn create_namespace_validation() {
    let index = index(1, Metric::Cosine);
    assert_eq!(
        invalid(index.create_namespace("", None)),
        "name: must not be empty; the default namespace needs no creating"
    );
    assert_eq!(
        invalid(index.create_namespace("__default__", None)),
        "name: '__default__' is reserved for the default namespace"
    );
    assert_eq!(
        invalid(index.create_namespace(&"n".repeat(513), None)),
        "name: has 513 characters; the maximum is 512"
    );
    assert_eq!(
        invalid(index.create_namespace("n", Some(vec!["a".into(), "$b".into()]))),
        "schema.fields[1]: must not start with '$'"
    );
    assert_eq!(
        invalid(index.create_namespace("n", Some(vec!["a".into(), "a".into()]))),
        "schema.fields[1]: field 'a' appears more than once"
    );
    assert_eq!(
        invalid(index.create_namespace("n", Some((0..51).map(|i| i.to_string()).collect()))),
        "schema.fields: has 51 fields; the maximum is 50"
    );
    assert!(
        stats(&index).is_empty(),
        "failed creates leave nothing behind"
    );
}

#[test]
fn default_namespace_aliasing() {
    let index = index(2, Metric::Cosine);
    upsert(&index, "__default__", vec![vector("a", &[1.0, 0.0])]);
    upsert(&index, "", vec![vector("b", &[0.0, 1.0])]);
    assert_eq!(stats(&index), [("".to_owned(), 2)]);
    assert_eq!(fetch_ids(&index, "__default__", &["a", "b"]).len(), 2);
    let response = index.query(query("__default__", &[1.0, 0.0], 1)).unwrap();
    assert_eq!(
        (response.namespace.as_str(), ids(&response)),
        ("", vec!["a"])
    );
    assert_eq!(index.describe_namespace("__default__").unwrap().name, "");
    assert_eq!(index.describe_namespace("").unwrap().record_count, 2);
    let listed = index
        .list(ListRequest {
            namespace: "__default__".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((listed.namespace.as_str(), listed.ids.len()), ("", 2));
    index.delete_namespace("__default__").unwrap();
    let err = index.describe_namespace("").unwrap_err();
    assert_eq!(err.to_string(), "namespace '__default__' not found");
}

#[test]
fn list_namespaces_pages_with_prefix_and_total() {
    let index = index(1, Metric::Cosine);
    upsert(&index, "", vec![vector("a", &[1.0])]);
    for i in 0..7 {
        index.create_namespace(&format!("team-{i}"), None).unwrap();
    }
    index.create_namespace("other", None).unwrap();

    let all = index
        .list_namespaces(ListNamespacesRequest::default())
        .unwrap();
    assert_eq!(all.total_count, 9);
    assert_eq!(all.next, None);
    assert_eq!(all.namespaces[0].name, "");
    assert_eq!(all.namespaces[0].record_count, 1);
    assert_eq!(all.namespaces[1].name, "other");

    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = index
            .list_namespaces(ListNamespacesRequest {
                prefix: Some("team-".into()),
                limit: Some(3),
                pagination_token: token.take(),
            })
            .unwrap();
        assert_eq!(page.total_count, 7);
        seen.extend(page.namespaces.into_iter().map(|n| n.name));
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..7).map(|i| format!("team-{i}")).collect::<Vec<_>>()
    );

    // The default namespace "" can be the last key of a page.
    let first = index
        .list_namespaces(ListNamespacesRequest {
            limit: Some(1),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(first.namespaces[0].name, "");
    let second = index
        .list_namespaces(ListNamespacesRequest {
            limit: Some(1),
            pagination_token: first.next,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(second.namespaces[0].name, "other");

    assert_eq!(
        invalid(index.list_namespaces(ListNamespacesRequest {
            limit: Some(0),
            ..Default::default()
        })),
        "limit: must be between 1 and 100, got 0"
    );
    let ids_token = Cursor::Ids.encode("x");
    assert_eq!(
        index
            .list_namespaces(ListNamespacesRequest {
                pagination_token: Some(ids_token),
                ..Default::default()
            })
            .unwrap_err()
            .field(),
        Some("pagination_token")
    );
}

#[test]
fn empty_namespaces_stay_until_deleted() {
    let index = index(1, Metric::Cosine);
    upsert(&index, "ns", vec![vector("a", &[1.0])]);
    index
        .delete(DeleteRequest {
            namespace: "ns".into(),
            ids: vec!["a".into()],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(stats(&index), [("ns".to_owned(), 0)]);
    assert_eq!(
        index
            .list_namespaces(ListNamespacesRequest::default())
            .unwrap()
            .total_count,
        1
    );
}

#[test]
fn describe_stats_counts_per_namespace() {
    let index = index(2, Metric::Euclidean);
    catalogue(&index, "b", 4);
    catalogue(&index, "a", 3);
    index.create_namespace("c", None).unwrap();
    let stats = index.describe_stats(None).unwrap();
    assert_eq!(stats.dimension.get(), 2);
    assert_eq!(stats.metric, Metric::Euclidean);
    assert_eq!(
        stats.namespaces,
        [
            ("a".to_owned(), 3),
            ("b".to_owned(), 4),
            ("c".to_owned(), 0)
        ]
    );
    assert_eq!(stats.total_vector_count, 7);

    let even = index
        .describe_stats(Some(object(json!({"even": true}))))
        .unwrap();
    assert_eq!(
        even.namespaces,
        [
            ("a".to_owned(), 2),
            ("b".to_owned(), 2),
            ("c".to_owned(), 0)
        ]
    );
    assert_eq!(even.total_vector_count, 4);
    assert_eq!(
        index
            .describe_stats(Some(JsonObject::new()))
            .unwrap()
            .total_vector_count,
        7
    );
    assert!(
        invalid(index.describe_stats(Some(object(json!({"$bad": 1})))))
            .starts_with("filter.$bad: unknown operator")
    );
}

#[test]
fn size_bytes_tracks_records() {
    let index = index(4, Metric::Cosine);
    upsert(
        &index,
        "",
        vec![vector_with("abc", &[1.0; 4], json!({"k": "value"}))],
    );
    // 4 floats + a norm, a 3-byte id, 1 + 5 bytes of metadata.
    assert_eq!(index.describe_namespace("").unwrap().size_bytes, 20 + 3 + 6);
    index
        .update(UpdateRequest {
            id: "abc".into(),
            set_metadata: Some(object(json!({"n": 1}))),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        index.describe_namespace("").unwrap().size_bytes,
        20 + 3 + 6 + 9
    );
    index
        .delete(DeleteRequest {
            delete_all: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(index.describe_namespace("").unwrap().size_bytes, 0);
}

#[test]
fn namespaces_are_independent_under_concurrent_writes() {
    let index = index(2, Metric::DotProduct);
    std::thread::scope(|scope| {
        for t in 0..4 {
            let index = &index;
            scope.spawn(move || {
                for i in 0..50 {
                    upsert(
                        index,
                        &format!("ns-{t}"),
                        vec![vector(&i.to_string(), &[1.0, i as f32])],
                    );
                    if t == 0 && i % 10 == 0 {
                        // Racing deletes of another namespace must never lose or corrupt state.
                        let _ = index.delete_namespace("ns-1");
                    }
                }
            });
        }
    });
    let stats = index.describe_stats(None).unwrap();
    for (name, count) in &stats.namespaces {
        if name != "ns-1" {
            assert_eq!(*count, 50, "{name}");
        }
        let listed = index
            .list(ListRequest {
                namespace: name.clone(),
                ..Default::default()
            })
            .unwrap()
            .ids
            .len();
        assert_eq!(listed as u64, *count);
    }
}

#[test]
fn error_messages_are_lowercase_without_trailing_period() {
    let index = index(2, Metric::Cosine);
    let errors = [
        index.upsert(UpsertRequest::default()).unwrap_err(),
        index.query(QueryRequest::default()).unwrap_err(),
        index.describe_namespace("x").unwrap_err(),
        index.delete(DeleteRequest::default()).unwrap_err(),
    ];
    for err in errors {
        let message = match &err {
            Error::InvalidArgument { message, .. } => message.clone(),
            other => other.to_string(),
        };
        assert!(!message.ends_with('.'), "{message}");
        assert!(
            message.chars().next().is_some_and(|c| !c.is_uppercase()),
            "{message}"
        );
    }
}

#[test]
fn sparse_only_rejected_input_shapes() {
    let index = index(2, Metric::DotProduct);
    let bad = SparseInput {
        indices: vec![1],
        values: vec![],
    };
    assert_eq!(
        invalid(index.upsert(UpsertRequest {
            vectors: vec![VectorInput {
                sparse_values: Some(bad),
                ..vector("a", &[1.0, 0.0])
            }],
            ..Default::default()
        })),
        "vectors[0].sparse_values: has 1 indices but 0 values; they must have the same length"
    );
}
