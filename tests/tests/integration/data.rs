//! Every RPC of `VectorService` against a real server: the happy paths, Pinecone's limits,
//! and that a rejected request changes nothing (checked with fetch, list or stats after the
//! failed call).
//!
//! # Layout
//! - helpers: building vectors, calling the common RPCs, asserting on error statuses;
//! - upsert, fetch, delete, update, list, describe_index_stats;
//! - namespaces (create, list, describe, delete, the `__default__` alias);
//! - fetch_by_metadata;
//! - query.

use std::collections::{BTreeMap, HashMap};

use larch_proto::pinecone::{
    CreateNamespaceRequest, DeleteNamespaceRequest, DeleteRequest, DescribeIndexStatsRequest,
    DescribeIndexStatsResponse, DescribeNamespaceRequest, FetchByMetadataRequest, FetchRequest,
    ListNamespacesRequest, ListRequest, MetadataFieldProperties, MetadataSchema, QueryRequest,
    QueryVector, ScoredVector, SparseValues, UpdateRequest, UpsertRequest, Vector,
};
use larch_tests::{DataClient, TestServer, from_struct, json};
use serde_json::json as j;
use tonic::{Code, Response, Status};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn vector(id: &str, values: &[f32]) -> Vector {
    Vector {
        id: id.into(),
        values: values.to_vec(),
        ..Default::default()
    }
}

fn with_metadata(id: &str, values: &[f32], metadata: serde_json::Value) -> Vector {
    Vector {
        metadata: json(metadata),
        ..vector(id, values)
    }
}

fn sparse(pairs: &[(u32, f32)]) -> Option<SparseValues> {
    Some(SparseValues {
        indices: pairs.iter().map(|p| p.0).collect(),
        values: pairs.iter().map(|p| p.1).collect(),
    })
}

/// Upserts `vectors` into `namespace` and checks the returned count.
async fn upsert(data: &mut DataClient, namespace: &str, vectors: Vec<Vector>) {
    let expected = vectors.len();
    let response = data
        .upsert(UpsertRequest {
            vectors,
            namespace: namespace.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.upserted_count as usize, expected);
}

/// Fetches `ids` from `namespace`: the records found, by id.
async fn fetch(data: &mut DataClient, namespace: &str, ids: &[&str]) -> HashMap<String, Vector> {
    data.fetch(FetchRequest {
        ids: ids.iter().map(|id| (*id).to_owned()).collect(),
        namespace: namespace.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .vectors
}

/// The sorted ids among `ids` that exist in `namespace`.
async fn existing(data: &mut DataClient, namespace: &str, ids: &[&str]) -> Vec<String> {
    let mut found: Vec<String> = fetch(data, namespace, ids).await.into_keys().collect();
    found.sort();
    found
}

/// Every id of `namespace`, via `list` (pages of 100).
async fn all_ids(data: &mut DataClient, namespace: &str) -> Vec<String> {
    list_pages(data, namespace, None, 100)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Pages of `list`, following `pagination.next` until it is absent.
async fn list_pages(
    data: &mut DataClient,
    namespace: &str,
    prefix: Option<&str>,
    limit: u32,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut token = None;
    loop {
        let response = data
            .list(ListRequest {
                prefix: prefix.map(str::to_owned),
                limit: Some(limit),
                pagination_token: token,
                namespace: namespace.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.namespace, namespace);
        pages.push(response.vectors.into_iter().map(|item| item.id).collect());
        match response.pagination {
            Some(next) => token = Some(next.next),
            None => return pages,
        }
        assert!(pages.len() < 100, "pagination never ends");
    }
}

async fn stats(data: &mut DataClient) -> DescribeIndexStatsResponse {
    data.describe_index_stats(DescribeIndexStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
}

/// Vector count per namespace key, as `describe_index_stats` reports them.
fn counts(stats: &DescribeIndexStatsResponse) -> BTreeMap<String, u32> {
    stats
        .namespaces
        .iter()
        .map(|(name, summary)| (name.clone(), summary.vector_count))
        .collect()
}

fn count_map(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// Asserts `result` failed with `code` and a message containing every one of `parts`.
fn expect_err<T: std::fmt::Debug>(
    result: Result<Response<T>, Status>,
    code: Code,
    parts: &[&str],
) -> Status {
    let status = match result {
        Ok(response) => panic!("expected {code:?}, got {:?}", response.into_inner()),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "{}", status.message());
    for part in parts {
        assert!(
            status.message().contains(part),
            "message {:?} lacks {part:?}",
            status.message()
        );
    }
    status
}

fn invalid<T: std::fmt::Debug>(result: Result<Response<T>, Status>, parts: &[&str]) -> Status {
    expect_err(result, Code::InvalidArgument, parts)
}

fn metadata_of(vector: &Vector) -> serde_json::Value {
    vector
        .metadata
        .as_ref()
        .map_or(serde_json::Value::Null, from_struct)
}

fn match_metadata(scored: &ScoredVector) -> serde_json::Value {
    scored
        .metadata
        .as_ref()
        .map_or(serde_json::Value::Null, from_struct)
}

fn ids_of(matches: &[ScoredVector]) -> Vec<&str> {
    matches.iter().map(|m| m.id.as_str()).collect()
}

fn assert_close(actual: f32, expected: f32) {
    assert!(
        (actual - expected).abs() <= 1e-5 * expected.abs().max(1.0),
        "score {actual} != {expected}"
    );
}

fn versioned<T>(message: T, version: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-pinecone-api-version", version.parse().unwrap());
    request
}

// ---------------------------------------------------------------------------------------------
// Upsert
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn upsert_stores_values_and_metadata_for_fetch() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("upsert", 3, "cosine").await;
    upsert(
        &mut data,
        "",
        vec![
            with_metadata(
                "a",
                &[1.0, 2.0, 3.0],
                j!({"genre": "drama", "year": 2001, "tags": ["x", "y"], "new": true}),
            ),
            vector("b", &[0.5, -1.0, 0.0]),
        ],
    )
    .await;

    let fetched = fetch(&mut data, "", &["a", "b", "missing"]).await;
    assert_eq!(fetched.len(), 2, "{fetched:?}");
    assert_eq!(fetched["a"].id, "a");
    assert_eq!(fetched["a"].values, [1.0, 2.0, 3.0]);
    assert_eq!(
        metadata_of(&fetched["a"]),
        j!({"genre": "drama", "year": 2001.0, "tags": ["x", "y"], "new": true})
    );
    assert_eq!(fetched["b"].values, [0.5, -1.0, 0.0]);
    assert_eq!(fetched["b"].metadata, None);
    assert_eq!(fetched["b"].sparse_values, None);
    assert_eq!(counts(&stats(&mut data).await), count_map(&[("", 2)]));
    server.stop().await;
}

#[tokio::test]
async fn upsert_overwrite_replaces_values_and_metadata() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("overwrite", 3, "cosine").await;
    upsert(
        &mut data,
        "",
        vec![with_metadata(
            "a",
            &[1.0, 0.0, 0.0],
            j!({"genre": "drama", "year": 2000}),
        )],
    )
    .await;
    upsert(
        &mut data,
        "",
        vec![with_metadata("a", &[0.0, 2.0, 0.0], j!({"rating": 5}))],
    )
    .await;
    let fetched = fetch(&mut data, "", &["a"]).await;
    assert_eq!(fetched["a"].values, [0.0, 2.0, 0.0]);
    // Replaced, not merged: the old keys are gone.
    assert_eq!(metadata_of(&fetched["a"]), j!({"rating": 5.0}));

    // An overwrite without metadata drops the metadata.
    upsert(&mut data, "", vec![vector("a", &[0.0, 0.0, 3.0])]).await;
    let fetched = fetch(&mut data, "", &["a"]).await;
    assert_eq!(fetched["a"].values, [0.0, 0.0, 3.0]);
    assert_eq!(fetched["a"].metadata, None);
    assert_eq!(stats(&mut data).await.total_vector_count, 1);

    // Within one batch the last occurrence of an id wins.
    upsert(
        &mut data,
        "",
        vec![vector("b", &[1.0, 0.0, 0.0]), vector("b", &[0.0, 1.0, 0.0])],
    )
    .await;
    assert_eq!(
        fetch(&mut data, "", &["b"]).await["b"].values,
        [0.0, 1.0, 0.0]
    );
    assert_eq!(stats(&mut data).await.total_vector_count, 2);
    server.stop().await;
}

#[tokio::test]
async fn upsert_accepts_1000_vectors_and_rejects_1001() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("batch", 2, "euclidean").await;
    let batch = |n: usize| -> Vec<Vector> {
        (0..n)
            .map(|i| vector(&format!("v{i:04}"), &[i as f32 + 1.0, 1.0]))
            .collect()
    };
    upsert(&mut data, "big", batch(1000)).await;
    assert_eq!(counts(&stats(&mut data).await), count_map(&[("big", 1000)]));

    let result = data
        .upsert(UpsertRequest {
            vectors: batch(1001),
            namespace: "bigger".into(),
        })
        .await;
    invalid(result, &["vectors", "1001", "1000"]);
    // Nothing stored, not even the namespace.
    assert_eq!(counts(&stats(&mut data).await), count_map(&[("big", 1000)]));

    let result = data
        .upsert(UpsertRequest {
            vectors: Vec::new(),
            namespace: String::new(),
        })
        .await;
    invalid(result, &["vectors"]);
    assert_eq!(stats(&mut data).await.total_vector_count, 1000);
    server.stop().await;
}

#[tokio::test]
async fn upsert_with_one_bad_vector_stores_nothing() {
    let server = TestServer::start().await;
    let (_, mut cosine) = server.create_index("bad-cosine", 3, "cosine").await;
    let (_, mut dot) = server.create_index("bad-dot", 3, "dotproduct").await;
    let ok = [1.0, 2.0, 3.0];
    let cases: Vec<(&str, bool, Vector, Vec<&str>)> = vec![
        (
            "wrong dimension",
            true,
            vector("bad", &[1.0, 2.0]),
            vec!["vectors[1].values", "dimension is 3"],
        ),
        (
            "NaN",
            true,
            vector("bad", &[1.0, f32::NAN, 0.0]),
            vec!["vectors[1].values[1]", "finite"],
        ),
        (
            "infinity",
            true,
            vector("bad", &[f32::INFINITY, 1.0, 0.0]),
            vec!["vectors[1].values[0]", "finite"],
        ),
        (
            "all zeros",
            true,
            vector("bad", &[0.0, 0.0, 0.0]),
            vec!["vectors[1].values", "non-zero"],
        ),
        (
            "empty id",
            true,
            vector("", &ok),
            vec!["vectors[1].id", "empty"],
        ),
        (
            "513-char id",
            true,
            vector(&"x".repeat(513), &ok),
            vec!["vectors[1].id", "513", "512"],
        ),
        (
            "nested metadata",
            true,
            with_metadata("bad", &ok, j!({"nested": {"a": 1}})),
            vec!["vectors[1].metadata.nested", "nested"],
        ),
        (
            "null metadata value",
            true,
            with_metadata("bad", &ok, j!({"gone": null})),
            vec!["vectors[1].metadata.gone", "null"],
        ),
        (
            "list of numbers",
            true,
            with_metadata("bad", &ok, j!({"tags": ["a", 1]})),
            vec!["vectors[1].metadata.tags", "strings"],
        ),
        (
            "metadata key starting with $",
            true,
            with_metadata("bad", &ok, j!({"$k": 1})),
            vec!["vectors[1].metadata.$k"],
        ),
        (
            "metadata over 40 KB",
            true,
            // {"k":"…"} is 8 bytes around the string: 40961 bytes in all.
            with_metadata("bad", &ok, j!({"k": "x".repeat(40 * 1024 - 7)})),
            vec!["vectors[1].metadata", "40961", "40960"],
        ),
        (
            "sparse values on a cosine index",
            false,
            Vector {
                sparse_values: sparse(&[(1, 0.5)]),
                ..vector("bad", &ok)
            },
            vec!["vectors[1].sparse_values", "dotproduct"],
        ),
        (
            "sparse indices and values of different lengths",
            true,
            Vector {
                sparse_values: Some(SparseValues {
                    indices: vec![1, 2],
                    values: vec![0.5],
                }),
                ..vector("bad", &ok)
            },
            vec!["vectors[1].sparse_values", "2 indices", "1 values"],
        ),
        (
            "repeated sparse index",
            true,
            Vector {
                sparse_values: sparse(&[(4, 0.5), (4, 1.0)]),
                ..vector("bad", &ok)
            },
            vec!["vectors[1].sparse_values.indices", "4"],
        ),
    ];
    for data in [&mut cosine, &mut dot] {
        upsert(data, "", vec![with_metadata("old", &ok, j!({"v": 1}))]).await;
    }
    for (name, on_dot, bad, parts) in cases {
        let data = if on_dot { &mut dot } else { &mut cosine };
        let result = data
            .upsert(UpsertRequest {
                vectors: vec![
                    with_metadata("old", &[9.0, 9.0, 9.0], j!({"v": 2})),
                    bad,
                    vector("new", &ok),
                ],
                namespace: String::new(),
            })
            .await;
        let status = invalid(result, &parts);
        assert!(
            !status.message().contains("vectors[0]"),
            "{name}: {status:?}"
        );
        // Nothing stored: "old" keeps its values and metadata, "new" does not exist.
        let fetched = fetch(data, "", &["old", "new", "bad"]).await;
        assert_eq!(fetched.len(), 1, "{name}: {fetched:?}");
        assert_eq!(fetched["old"].values, ok, "{name}");
        assert_eq!(metadata_of(&fetched["old"]), j!({"v": 1.0}), "{name}");
        assert_eq!(stats(data).await.total_vector_count, 1, "{name}");
    }
    server.stop().await;
}

#[tokio::test]
async fn upsert_accepts_a_512_char_id_and_40_kb_of_metadata() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("limits", 2, "cosine").await;
    let long_id = "é".repeat(512);
    upsert(
        &mut data,
        "",
        vec![
            vector(&long_id, &[1.0, 0.0]),
            with_metadata("big", &[0.0, 1.0], j!({"k": "x".repeat(40 * 1024 - 8)})),
        ],
    )
    .await;
    assert_eq!(
        existing(&mut data, "", &[&long_id, "big"]).await,
        ["big", long_id.as_str()]
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Fetch
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn fetch_skips_missing_ids_and_echoes_the_namespace() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("fetch", 2, "cosine").await;
    upsert(
        &mut data,
        "films",
        vec![vector("a", &[1.0, 0.0]), vector("b", &[0.0, 1.0])],
    )
    .await;

    let response = data
        .fetch(FetchRequest {
            ids: vec!["b".into(), "nope".into(), "b".into()],
            namespace: "films".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.namespace, "films");
    assert_eq!(response.vectors.keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(response.vectors["b"].values, [0.0, 1.0]);

    // Records live in their namespace only.
    assert!(fetch(&mut data, "", &["a", "b"]).await.is_empty());
    // A namespace that does not exist reads as empty.
    let response = data
        .fetch(FetchRequest {
            ids: vec!["a".into()],
            namespace: "nowhere".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.namespace, "nowhere");
    assert!(response.vectors.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn fetch_needs_between_1_and_1000_ids() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("fetch-limits", 2, "cosine").await;
    upsert(&mut data, "", vec![vector("id7", &[1.0, 0.0])]).await;
    let ids = |n: usize| (0..n).map(|i| format!("id{i}")).collect::<Vec<_>>();

    let result = data
        .fetch(FetchRequest {
            ids: Vec::new(),
            namespace: String::new(),
        })
        .await;
    invalid(result, &["ids"]);
    let result = data
        .fetch(FetchRequest {
            ids: ids(1001),
            namespace: String::new(),
        })
        .await;
    invalid(result, &["ids", "1001", "1000"]);
    let result = data
        .fetch(FetchRequest {
            ids: vec!["a".into(), String::new()],
            namespace: String::new(),
        })
        .await;
    invalid(result, &["ids[1]"]);

    let response = data
        .fetch(FetchRequest {
            ids: ids(1000),
            namespace: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.vectors.keys().collect::<Vec<_>>(), ["id7"]);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Delete
// ---------------------------------------------------------------------------------------------

async fn seed_genres(data: &mut DataClient, namespace: &str) {
    upsert(
        data,
        namespace,
        vec![
            with_metadata("a", &[1.0, 0.0], j!({"genre": "drama"})),
            with_metadata("b", &[0.0, 1.0], j!({"genre": "comedy"})),
            with_metadata("c", &[1.0, 1.0], j!({"genre": "drama"})),
            vector("d", &[1.0, 2.0]),
        ],
    )
    .await;
}

#[tokio::test]
async fn delete_by_ids_by_filter_and_all() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("delete", 2, "cosine").await;
    seed_genres(&mut data, "").await;
    seed_genres(&mut data, "other").await;

    data.delete(DeleteRequest {
        ids: vec!["a".into(), "missing".into()],
        namespace: String::new(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(all_ids(&mut data, "").await, ["b", "c", "d"]);

    data.delete(DeleteRequest {
        filter: json(j!({"genre": "drama"})),
        namespace: String::new(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(all_ids(&mut data, "").await, ["b", "d"]);

    data.delete(DeleteRequest {
        delete_all: true,
        namespace: String::new(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(all_ids(&mut data, "").await.is_empty());

    // The other namespace is untouched.
    assert_eq!(all_ids(&mut data, "other").await, ["a", "b", "c", "d"]);
    assert_eq!(
        counts(&stats(&mut data).await).get("other").copied(),
        Some(4)
    );
    server.stop().await;
}

#[tokio::test]
async fn delete_needs_exactly_one_of_ids_delete_all_and_filter() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("delete-bad", 2, "cosine").await;
    seed_genres(&mut data, "").await;
    let drama = || json(j!({"genre": "drama"}));
    let cases: Vec<(DeleteRequest, Vec<&str>)> = vec![
        (DeleteRequest::default(), vec!["exactly one", "none"]),
        (
            DeleteRequest {
                ids: vec!["a".into()],
                delete_all: true,
                ..Default::default()
            },
            vec!["ids", "delete_all"],
        ),
        (
            DeleteRequest {
                delete_all: true,
                filter: drama(),
                ..Default::default()
            },
            vec!["delete_all", "filter"],
        ),
        (
            DeleteRequest {
                ids: vec!["a".into()],
                filter: drama(),
                ..Default::default()
            },
            vec!["ids", "filter"],
        ),
        (
            DeleteRequest {
                ids: vec!["a".into()],
                delete_all: true,
                filter: drama(),
                ..Default::default()
            },
            vec!["ids", "delete_all", "filter"],
        ),
        (
            DeleteRequest {
                filter: json(j!({})),
                ..Default::default()
            },
            vec!["filter", "empty"],
        ),
        (
            DeleteRequest {
                ids: (0..1001).map(|i| format!("x{i}")).collect(),
                ..Default::default()
            },
            vec!["ids", "1000"],
        ),
        (
            DeleteRequest {
                ids: vec!["a".into(), String::new()],
                ..Default::default()
            },
            vec!["ids[1]"],
        ),
    ];
    for (request, parts) in cases {
        let description = format!("{request:?}");
        invalid(data.delete(request).await, &parts);
        assert_eq!(
            all_ids(&mut data, "").await,
            ["a", "b", "c", "d"],
            "{description}"
        );
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Update
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn update_by_id_sets_values_and_merges_metadata() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("update", 3, "cosine").await;
    upsert(
        &mut data,
        "",
        vec![
            with_metadata("a", &[1.0, 0.0, 0.0], j!({"genre": "drama", "year": 2000})),
            with_metadata("b", &[0.0, 1.0, 0.0], j!({"genre": "comedy"})),
        ],
    )
    .await;

    let response = data
        .update(UpdateRequest {
            id: "a".into(),
            values: vec![0.0, 0.0, 5.0],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.matched_records, Some(1));
    let fetched = fetch(&mut data, "", &["a"]).await;
    assert_eq!(fetched["a"].values, [0.0, 0.0, 5.0]);
    assert_eq!(
        metadata_of(&fetched["a"]),
        j!({"genre": "drama", "year": 2000.0})
    );

    data.update(UpdateRequest {
        id: "a".into(),
        set_metadata: json(j!({"year": 2001, "rating": 4.5})),
        ..Default::default()
    })
    .await
    .unwrap();
    let fetched = fetch(&mut data, "", &["a", "b"]).await;
    assert_eq!(fetched["a"].values, [0.0, 0.0, 5.0]);
    assert_eq!(
        metadata_of(&fetched["a"]),
        j!({"genre": "drama", "year": 2001.0, "rating": 4.5})
    );
    // The other record is untouched.
    assert_eq!(fetched["b"].values, [0.0, 1.0, 0.0]);
    assert_eq!(metadata_of(&fetched["b"]), j!({"genre": "comedy"}));

    // The new values are what queries see.
    let result = data
        .query(QueryRequest {
            top_k: 1,
            vector: vec![0.0, 0.0, 1.0],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids_of(&result.matches), ["a"]);
    assert_close(result.matches[0].score, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn update_by_id_sets_sparse_values_on_a_dotproduct_index() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("update-sparse", 2, "dotproduct").await;
    upsert(
        &mut data,
        "",
        vec![with_metadata("a", &[1.0, 1.0], j!({"k": "v"}))],
    )
    .await;
    data.update(UpdateRequest {
        id: "a".into(),
        sparse_values: sparse(&[(9, 2.0), (3, 1.0)]),
        ..Default::default()
    })
    .await
    .unwrap();
    let fetched = fetch(&mut data, "", &["a"]).await;
    assert_eq!(fetched["a"].values, [1.0, 1.0]);
    assert_eq!(fetched["a"].sparse_values, sparse(&[(3, 1.0), (9, 2.0)]));
    assert_eq!(metadata_of(&fetched["a"]), j!({"k": "v"}));

    // Sparse values on a cosine index are refused and change nothing.
    let (_, mut cosine) = server.create_index("update-cosine", 2, "cosine").await;
    upsert(&mut cosine, "", vec![vector("a", &[1.0, 0.0])]).await;
    let result = cosine
        .update(UpdateRequest {
            id: "a".into(),
            sparse_values: sparse(&[(1, 1.0)]),
            ..Default::default()
        })
        .await;
    invalid(result, &["sparse_values", "dotproduct"]);
    assert_eq!(
        fetch(&mut cosine, "", &["a"]).await["a"].sparse_values,
        None
    );
    server.stop().await;
}

#[tokio::test]
async fn update_rejects_unknown_ids_and_bad_combinations() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("update-bad", 2, "cosine").await;
    upsert(
        &mut data,
        "",
        vec![with_metadata("a", &[1.0, 0.0], j!({"genre": "drama"}))],
    )
    .await;

    let result = data
        .update(UpdateRequest {
            id: "ghost".into(),
            values: vec![1.0, 1.0],
            ..Default::default()
        })
        .await;
    expect_err(result, Code::NotFound, &["ghost"]);
    assert!(fetch(&mut data, "", &["ghost"]).await.is_empty());
    // An id in a namespace that does not exist is just as unknown.
    let result = data
        .update(UpdateRequest {
            id: "a".into(),
            values: vec![1.0, 1.0],
            namespace: "nowhere".into(),
            ..Default::default()
        })
        .await;
    expect_err(result, Code::NotFound, &["'a'"]);
    assert!(!counts(&stats(&mut data).await).contains_key("nowhere"));

    let cases: Vec<(UpdateRequest, Vec<&str>)> = vec![
        (
            UpdateRequest {
                id: "a".into(),
                set_metadata: json(j!({"genre": "comedy"})),
                filter: json(j!({"genre": "drama"})),
                ..Default::default()
            },
            vec!["filter", "id"],
        ),
        (UpdateRequest::default(), vec!["id", "filter"]),
        (
            UpdateRequest {
                id: "a".into(),
                ..Default::default()
            },
            vec!["nothing to update"],
        ),
        (
            UpdateRequest {
                id: "a".into(),
                values: vec![1.0, 2.0, 3.0],
                ..Default::default()
            },
            vec!["values", "dimension is 2"],
        ),
        (
            UpdateRequest {
                id: "a".into(),
                values: vec![0.5, 0.5],
                set_metadata: json(j!({"bad": {"nested": true}})),
                ..Default::default()
            },
            vec!["set_metadata.bad"],
        ),
        (
            UpdateRequest {
                filter: json(j!({"genre": "drama"})),
                values: vec![0.5, 0.5],
                set_metadata: json(j!({"genre": "comedy"})),
                ..Default::default()
            },
            vec!["values", "filter"],
        ),
        (
            UpdateRequest {
                filter: json(j!({"genre": "drama"})),
                ..Default::default()
            },
            vec!["set_metadata"],
        ),
        (
            UpdateRequest {
                filter: json(j!({})),
                set_metadata: json(j!({"genre": "comedy"})),
                ..Default::default()
            },
            vec!["filter", "empty"],
        ),
    ];
    for (request, parts) in cases {
        let description = format!("{request:?}");
        invalid(data.update(request).await, &parts);
        let fetched = fetch(&mut data, "", &["a"]).await;
        assert_eq!(fetched["a"].values, [1.0, 0.0], "{description}");
        assert_eq!(
            metadata_of(&fetched["a"]),
            j!({"genre": "drama"}),
            "{description}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn update_by_filter_counts_matches_and_honours_dry_run() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("update-filter", 2, "cosine").await;
    seed_genres(&mut data, "").await;
    let update = |dry_run: Option<bool>| UpdateRequest {
        filter: json(j!({"genre": "drama"})),
        set_metadata: json(j!({"seen": true})),
        dry_run,
        ..Default::default()
    };

    let response = data.update(update(Some(true))).await.unwrap().into_inner();
    assert_eq!(response.matched_records, Some(2));
    let fetched = fetch(&mut data, "", &["a", "b", "c", "d"]).await;
    assert_eq!(metadata_of(&fetched["a"]), j!({"genre": "drama"}));
    assert_eq!(metadata_of(&fetched["c"]), j!({"genre": "drama"}));

    let response = data.update(update(Some(false))).await.unwrap().into_inner();
    assert_eq!(response.matched_records, Some(2));
    let fetched = fetch(&mut data, "", &["a", "b", "c", "d"]).await;
    assert_eq!(
        metadata_of(&fetched["a"]),
        j!({"genre": "drama", "seen": true})
    );
    assert_eq!(
        metadata_of(&fetched["c"]),
        j!({"genre": "drama", "seen": true})
    );
    assert_eq!(metadata_of(&fetched["b"]), j!({"genre": "comedy"}));
    assert_eq!(fetched["d"].metadata, None);
    // Values are untouched.
    assert_eq!(fetched["a"].values, [1.0, 0.0]);

    // No dry_run means a real update; a filter matching nothing reports 0.
    let response = data
        .update(UpdateRequest {
            filter: json(j!({"genre": "comedy"})),
            set_metadata: json(j!({"genre": "satire"})),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.matched_records, Some(1));
    assert_eq!(
        metadata_of(&fetch(&mut data, "", &["b"]).await["b"]),
        j!({"genre": "satire"})
    );
    let response = data
        .update(UpdateRequest {
            filter: json(j!({"genre": "western"})),
            set_metadata: json(j!({"x": 1})),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.matched_records, Some(0));
    server.stop().await;
}

#[tokio::test]
async fn update_that_would_overflow_metadata_changes_nothing() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("update-size", 2, "cosine").await;
    // {"genre":"drama","pad":"…"} is 26 bytes around the padding: 40946 bytes in all.
    let padding = "x".repeat(40 * 1024 - 40);
    upsert(
        &mut data,
        "",
        vec![
            with_metadata("small", &[1.0, 0.0], j!({"genre": "drama"})),
            with_metadata("big", &[0.0, 1.0], j!({"genre": "drama", "pad": padding})),
        ],
    )
    .await;
    // `,"note":"0123456789"` adds 20 bytes: 40966, past 40 KB once merged.
    let patch = || json(j!({"note": "0123456789"}));
    let by_id = data
        .update(UpdateRequest {
            id: "big".into(),
            set_metadata: patch(),
            ..Default::default()
        })
        .await;
    invalid(by_id, &["set_metadata", "big", "40960"]);
    let by_filter = data
        .update(UpdateRequest {
            filter: json(j!({"genre": "drama"})),
            set_metadata: patch(),
            ..Default::default()
        })
        .await;
    invalid(by_filter, &["set_metadata", "big", "40960"]);
    // Neither record changed, not even the one that would have fit.
    let fetched = fetch(&mut data, "", &["small", "big"]).await;
    assert_eq!(metadata_of(&fetched["small"]), j!({"genre": "drama"}));
    assert_eq!(
        metadata_of(&fetched["big"]),
        j!({"genre": "drama", "pad": "x".repeat(40 * 1024 - 40)})
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// List
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn list_paginates_every_id_once_in_order() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("list", 2, "cosine").await;
    // Inserted out of order, with ids outside the prefix on both sides of it.
    let mut vectors: Vec<Vector> = (0..25)
        .rev()
        .map(|i| vector(&format!("doc#{i:02}"), &[1.0, i as f32]))
        .collect();
    vectors.push(vector("aaa", &[1.0, 0.0]));
    vectors.push(vector("doc", &[1.0, 0.0]));
    vectors.push(vector("zzz", &[1.0, 0.0]));
    upsert(&mut data, "ns", vectors).await;

    let pages = list_pages(&mut data, "ns", Some("doc#"), 10).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    let expected: Vec<String> = (0..25).map(|i| format!("doc#{i:02}")).collect();
    assert_eq!(pages.concat(), expected);

    // An exact multiple of the limit ends without an empty page.
    let pages = list_pages(&mut data, "ns", Some("doc#0"), 5).await;
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert_eq!(pages.concat(), expected[..10]);

    // Without a prefix: everything, sorted; the default limit is 100.
    let response = data
        .list(ListRequest {
            namespace: "ns".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.pagination, None);
    let ids: Vec<String> = response.vectors.into_iter().map(|v| v.id).collect();
    let mut sorted = expected.clone();
    sorted.extend(["aaa".to_owned(), "doc".to_owned(), "zzz".to_owned()]);
    sorted.sort();
    assert_eq!(ids, sorted);

    // A prefix nothing has, and a namespace that does not exist.
    assert_eq!(
        list_pages(&mut data, "ns", Some("q"), 10).await,
        [Vec::<String>::new()]
    );
    assert_eq!(
        list_pages(&mut data, "none", None, 10).await,
        [Vec::<String>::new()]
    );
    server.stop().await;
}

#[tokio::test]
async fn list_rejects_bad_tokens_and_limits() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("list-bad", 2, "cosine").await;
    upsert(
        &mut data,
        "",
        vec![vector("a", &[1.0, 0.0]), vector("b", &[0.0, 1.0])],
    )
    .await;
    let list = |limit: Option<u32>, token: Option<&str>| ListRequest {
        limit,
        pagination_token: token.map(str::to_owned),
        ..Default::default()
    };
    invalid(data.list(list(Some(0), None)).await, &["limit", "100"]);
    invalid(data.list(list(Some(101), None)).await, &["limit", "101"]);
    invalid(
        data.list(list(None, Some("not a token"))).await,
        &["pagination_token"],
    );
    invalid(
        data.list(list(None, Some("zz"))).await,
        &["pagination_token"],
    );
    let long_prefix = ListRequest {
        prefix: Some("p".repeat(513)),
        ..Default::default()
    };
    invalid(data.list(long_prefix).await, &["prefix", "512"]);

    // A token of another endpoint is not a list token.
    upsert(
        &mut data,
        "",
        vec![with_metadata("c", &[1.0, 1.0], j!({"k": 1}))],
    )
    .await;
    upsert(
        &mut data,
        "",
        vec![with_metadata("d", &[1.0, 1.0], j!({"k": 1}))],
    )
    .await;
    let foreign = data
        .fetch_by_metadata(FetchByMetadataRequest {
            filter: json(j!({"k": 1})),
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .pagination
        .expect("a second page")
        .next;
    invalid(
        data.list(list(None, Some(&foreign))).await,
        &["pagination_token"],
    );

    // limit 100 and 1 are fine.
    let response = data.list(list(Some(1), None)).await.unwrap().into_inner();
    assert_eq!(response.vectors.len(), 1);
    assert!(response.pagination.is_some());
    let response = data.list(list(Some(100), None)).await.unwrap().into_inner();
    assert_eq!(response.vectors.len(), 4);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// DescribeIndexStats
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn describe_index_stats_counts_namespaces() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("stats", 4, "dotproduct").await;
    let empty = stats(&mut data).await;
    assert_eq!(empty.dimension, Some(4));
    assert_eq!(empty.metric.as_deref(), Some("dotproduct"));
    assert_eq!(empty.total_vector_count, 0);
    assert!(empty.namespaces.is_empty());

    upsert(
        &mut data,
        "",
        vec![
            with_metadata("a", &[1.0, 0.0, 0.0, 0.0], j!({"genre": "drama"})),
            vector("b", &[0.0, 1.0, 0.0, 0.0]),
        ],
    )
    .await;
    upsert(
        &mut data,
        "films",
        vec![
            with_metadata("a", &[1.0, 0.0, 0.0, 0.0], j!({"genre": "drama"})),
            with_metadata("b", &[1.0, 1.0, 0.0, 0.0], j!({"genre": "drama"})),
            with_metadata("c", &[1.0, 1.0, 1.0, 0.0], j!({"genre": "comedy"})),
        ],
    )
    .await;

    let all = stats(&mut data).await;
    assert_eq!(counts(&all), count_map(&[("", 2), ("films", 3)]));
    assert_eq!(all.total_vector_count, 5);
    assert_eq!(all.dimension, Some(4));
    assert_eq!(all.metric.as_deref(), Some("dotproduct"));

    let filtered = data
        .describe_index_stats(DescribeIndexStatsRequest {
            filter: json(j!({"genre": "drama"})),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts(&filtered), count_map(&[("", 1), ("films", 2)]));
    assert_eq!(filtered.total_vector_count, 3);

    let result = data
        .describe_index_stats(DescribeIndexStatsRequest {
            filter: json(j!({"genre": {"$bogus": 1}})),
        })
        .await;
    invalid(result, &["$bogus"]);
    server.stop().await;
}

#[tokio::test]
async fn default_namespace_key_follows_the_api_version() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("stats-version", 2, "cosine").await;
    upsert(&mut data, "", vec![vector("a", &[1.0, 0.0])]).await;
    upsert(&mut data, "films", vec![vector("a", &[1.0, 0.0])]).await;

    assert_eq!(
        counts(&stats(&mut data).await),
        count_map(&[("", 1), ("films", 1)])
    );
    let request = DescribeIndexStatsRequest { filter: None };
    let new = data
        .describe_index_stats(versioned(request.clone(), "2026-07"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts(&new), count_map(&[("__default__", 1), ("films", 1)]));
    let old = data
        .describe_index_stats(versioned(request, "2025-01"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts(&old), count_map(&[("", 1), ("films", 1)]));

    // Namespace listings name it the same way.
    let names = |response: larch_proto::pinecone::ListNamespacesResponse| -> Vec<String> {
        response.namespaces.into_iter().map(|n| n.name).collect()
    };
    let listed = data
        .list_namespaces(versioned(ListNamespacesRequest::default(), "2026-07"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(listed), ["__default__", "films"]);
    let listed = data
        .list_namespaces(ListNamespacesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(listed), ["", "films"]);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------------------------

fn schema(fields: &[&str]) -> MetadataSchema {
    MetadataSchema {
        fields: fields
            .iter()
            .map(|f| {
                (
                    (*f).to_owned(),
                    MetadataFieldProperties { filterable: true },
                )
            })
            .collect(),
    }
}

#[tokio::test]
async fn create_namespace_echoes_schema_and_refuses_repeats() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("ns-create", 2, "cosine").await;
    let created = data
        .create_namespace(CreateNamespaceRequest {
            name: "films".into(),
            schema: Some(schema(&["genre", "year"])),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.name, "films");
    assert_eq!(created.record_count, 0);
    assert_eq!(created.schema, Some(schema(&["genre", "year"])));
    let mut indexed = created.indexed_fields.expect("indexed fields").fields;
    indexed.sort();
    assert_eq!(indexed, ["genre", "year"]);

    let repeat = data
        .create_namespace(CreateNamespaceRequest {
            name: "films".into(),
            schema: None,
        })
        .await;
    expect_err(repeat, Code::AlreadyExists, &["films"]);
    // The original, with its schema, is still there.
    let described = data
        .describe_namespace(DescribeNamespaceRequest {
            namespace: "films".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.schema, Some(schema(&["genre", "year"])));

    // It shows in stats and listings while empty.
    assert_eq!(counts(&stats(&mut data).await), count_map(&[("films", 0)]));

    // Without a schema there is none to echo.
    let plain = data
        .create_namespace(CreateNamespaceRequest {
            name: "plain".into(),
            schema: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.schema, None);

    let bad = |name: &str, schema: Option<MetadataSchema>| CreateNamespaceRequest {
        name: name.into(),
        schema,
    };
    invalid(data.create_namespace(bad("", None)).await, &["name"]);
    invalid(
        data.create_namespace(bad("__default__", None)).await,
        &["name", "__default__"],
    );
    invalid(
        data.create_namespace(bad(&"n".repeat(513), None)).await,
        &["name", "512"],
    );
    // A namespace made by an upsert exists as much as a created one.
    upsert(&mut data, "implicit", vec![vector("a", &[1.0, 0.0])]).await;
    expect_err(
        data.create_namespace(bad("implicit", None)).await,
        Code::AlreadyExists,
        &["implicit"],
    );
    assert_eq!(all_ids(&mut data, "implicit").await, ["a"]);
    let not_filterable = MetadataSchema {
        fields: [(
            "genre".to_owned(),
            MetadataFieldProperties { filterable: false },
        )]
        .into(),
    };
    invalid(
        data.create_namespace(bad("unfilterable", Some(not_filterable)))
            .await,
        &["schema.fields.genre.filterable"],
    );
    let too_many: Vec<String> = (0..51).map(|i| format!("f{i}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    invalid(
        data.create_namespace(bad("wide", Some(schema(&too_many))))
            .await,
        &["schema.fields", "51", "50"],
    );

    let listed = data
        .list_namespaces(ListNamespacesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.namespaces.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["films", "implicit", "plain"]);
    assert_eq!(listed.total_count, 3);
    server.stop().await;
}

#[tokio::test]
async fn list_namespaces_paginates_with_prefix_and_total() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("ns-list", 2, "cosine").await;
    for i in (0..7).rev() {
        let records: Vec<Vector> = (0..=i)
            .map(|n| vector(&format!("r{n}"), &[1.0, 0.0]))
            .collect();
        upsert(&mut data, &format!("ns-{i}"), records).await;
    }
    upsert(&mut data, "other", vec![vector("r", &[1.0, 0.0])]).await;

    let mut names = Vec::new();
    let mut sizes = Vec::new();
    let mut token = None;
    loop {
        let response = data
            .list_namespaces(ListNamespacesRequest {
                pagination_token: token,
                limit: Some(3),
                prefix: Some("ns-".into()),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.total_count, 7);
        sizes.push(response.namespaces.len());
        for namespace in response.namespaces {
            let i: u64 = namespace.name["ns-".len()..].parse().unwrap();
            assert_eq!(namespace.record_count, i + 1, "{}", namespace.name);
            names.push(namespace.name);
        }
        match response.pagination {
            Some(next) => token = Some(next.next),
            None => break,
        }
        assert!(sizes.len() < 10, "pagination never ends");
    }
    assert_eq!(sizes, [3, 3, 1]);
    let expected: Vec<String> = (0..7).map(|i| format!("ns-{i}")).collect();
    assert_eq!(names, expected);

    let everything = data
        .list_namespaces(ListNamespacesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(everything.total_count, 8);
    assert_eq!(everything.namespaces.len(), 8);
    assert_eq!(everything.pagination, None);
    assert_eq!(everything.namespaces[7].name, "other");

    let none = data
        .list_namespaces(ListNamespacesRequest {
            prefix: Some("zzz".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((none.namespaces.len(), none.total_count), (0, 0));

    let limit = |limit: u32| ListNamespacesRequest {
        limit: Some(limit),
        ..Default::default()
    };
    invalid(data.list_namespaces(limit(0)).await, &["limit"]);
    invalid(data.list_namespaces(limit(101)).await, &["limit", "100"]);
    let bad_token = ListNamespacesRequest {
        pagination_token: Some("xyz".into()),
        ..Default::default()
    };
    invalid(data.list_namespaces(bad_token).await, &["pagination_token"]);
    server.stop().await;
}

#[tokio::test]
async fn describe_namespace_reports_record_count() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("ns-describe", 2, "cosine").await;
    upsert(
        &mut data,
        "films",
        vec![
            vector("a", &[1.0, 0.0]),
            vector("b", &[0.0, 1.0]),
            with_metadata("c", &[1.0, 1.0], j!({"genre": "drama"})),
        ],
    )
    .await;
    let describe = |name: &str| DescribeNamespaceRequest {
        namespace: name.into(),
    };
    let described = data
        .describe_namespace(describe("films"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.name, "films");
    assert_eq!(described.record_count, 3);
    assert!(described.size_bytes > 0);

    data.delete(DeleteRequest {
        ids: vec!["a".into()],
        namespace: "films".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let described = data
        .describe_namespace(describe("films"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.record_count, 2);

    // delete_all empties the namespace but keeps it.
    data.delete(DeleteRequest {
        delete_all: true,
        namespace: "films".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let described = data
        .describe_namespace(describe("films"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((described.record_count, described.size_bytes), (0, 0));

    expect_err(
        data.describe_namespace(describe("nowhere")).await,
        Code::NotFound,
        &["nowhere"],
    );
    server.stop().await;
}

#[tokio::test]
async fn delete_namespace_removes_its_records() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("ns-delete", 2, "cosine").await;
    upsert(
        &mut data,
        "films",
        vec![vector("a", &[1.0, 0.0]), vector("b", &[0.0, 1.0])],
    )
    .await;
    upsert(&mut data, "books", vec![vector("a", &[1.0, 0.0])]).await;

    let delete = |name: &str| DeleteNamespaceRequest {
        namespace: name.into(),
    };
    data.delete_namespace(delete("films")).await.unwrap();

    assert!(fetch(&mut data, "films", &["a", "b"]).await.is_empty());
    assert_eq!(counts(&stats(&mut data).await), count_map(&[("books", 1)]));
    expect_err(
        data.describe_namespace(DescribeNamespaceRequest {
            namespace: "films".into(),
        })
        .await,
        Code::NotFound,
        &["films"],
    );
    expect_err(
        data.delete_namespace(delete("films")).await,
        Code::NotFound,
        &["films"],
    );
    let query = data
        .query(QueryRequest {
            namespace: "films".into(),
            top_k: 5,
            vector: vec![1.0, 0.0],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(query.matches.is_empty());

    // The other namespace is intact, and the name can be reused from scratch.
    assert_eq!(all_ids(&mut data, "books").await, ["a"]);
    upsert(&mut data, "films", vec![vector("c", &[1.0, 1.0])]).await;
    assert_eq!(all_ids(&mut data, "films").await, ["c"]);
    server.stop().await;
}

#[tokio::test]
async fn default_alias_names_the_default_namespace() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("ns-alias", 2, "cosine").await;
    upsert(&mut data, "__default__", vec![vector("a", &[1.0, 0.0])]).await;
    upsert(&mut data, "", vec![vector("b", &[0.0, 1.0])]).await;

    assert_eq!(existing(&mut data, "", &["a", "b"]).await, ["a", "b"]);
    assert_eq!(
        existing(&mut data, "__default__", &["a", "b"]).await,
        ["a", "b"]
    );
    assert_eq!(counts(&stats(&mut data).await), count_map(&[("", 2)]));
    let described = data
        .describe_namespace(versioned(
            DescribeNamespaceRequest {
                namespace: "__default__".into(),
            },
            "2026-07",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (described.name.as_str(), described.record_count),
        ("__default__", 2)
    );

    for namespace in ["", "__default__"] {
        let result = data
            .query(QueryRequest {
                namespace: namespace.into(),
                top_k: 10,
                vector: vec![1.0, 0.1],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ids_of(&result.matches), ["a", "b"], "{namespace:?}");
    }
    data.delete(DeleteRequest {
        ids: vec!["a".into()],
        namespace: "__default__".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(all_ids(&mut data, "").await, ["b"]);
    server.stop().await;
}

#[tokio::test]
async fn namespace_names_are_limited_to_512_chars() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("ns-length", 2, "cosine").await;
    let longest = "n".repeat(512);
    let too_long = "n".repeat(513);
    upsert(&mut data, &longest, vec![vector("a", &[1.0, 0.0])]).await;
    assert_eq!(existing(&mut data, &longest, &["a"]).await, ["a"]);

    let result = data
        .upsert(UpsertRequest {
            vectors: vec![vector("a", &[1.0, 0.0])],
            namespace: too_long.clone(),
        })
        .await;
    invalid(result, &["namespace", "513", "512"]);
    let result = data
        .fetch(FetchRequest {
            ids: vec!["a".into()],
            namespace: too_long.clone(),
        })
        .await;
    invalid(result, &["namespace", "512"]);
    let result = data
        .query(QueryRequest {
            namespace: too_long,
            top_k: 1,
            vector: vec![1.0, 0.0],
            ..Default::default()
        })
        .await;
    invalid(result, &["namespace", "512"]);
    assert_eq!(counts(&stats(&mut data).await), count_map(&[(&longest, 1)]));
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// FetchByMetadata
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn fetch_by_metadata_needs_a_filter_and_paginates() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("fetch-meta", 2, "cosine").await;
    let vectors: Vec<Vector> = (0..10)
        .rev()
        .map(|i| {
            let genre = if i % 3 == 0 { "comedy" } else { "drama" };
            with_metadata(
                &format!("m{i}"),
                &[1.0, i as f32],
                j!({"genre": genre, "n": i}),
            )
        })
        .collect();
    upsert(&mut data, "films", vectors).await;
    let request = |filter, limit, token| FetchByMetadataRequest {
        namespace: "films".into(),
        filter,
        limit,
        pagination_token: token,
    };

    invalid(
        data.fetch_by_metadata(request(None, None, None)).await,
        &["filter"],
    );
    invalid(
        data.fetch_by_metadata(request(json(j!({})), None, None))
            .await,
        &["filter"],
    );
    let drama = || json(j!({"genre": "drama"}));
    invalid(
        data.fetch_by_metadata(request(drama(), Some(0), None))
            .await,
        &["limit"],
    );
    invalid(
        data.fetch_by_metadata(request(drama(), Some(10_001), None))
            .await,
        &["limit", "10000"],
    );
    invalid(
        data.fetch_by_metadata(request(drama(), None, Some("bogus".into())))
            .await,
        &["pagination_token"],
    );
    invalid(
        data.fetch_by_metadata(request(json(j!({"n": {"$gt": "x"}})), None, None))
            .await,
        &["filter.n.$gt"],
    );

    // m1 m2 m4 m5 m7 m8 are dramas: pages of 4 and 2, in id order.
    let mut pages = Vec::new();
    let mut token = None;
    loop {
        let response = data
            .fetch_by_metadata(request(drama(), Some(4), token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.namespace, "films");
        let mut ids: Vec<String> = response.vectors.keys().cloned().collect();
        ids.sort();
        for (id, vector) in &response.vectors {
            assert_eq!(&vector.id, id);
            assert_eq!(metadata_of(vector)["genre"], "drama");
        }
        pages.push(ids);
        match response.pagination {
            Some(next) => token = Some(next.next),
            None => break,
        }
        assert!(pages.len() < 10, "pagination never ends");
    }
    assert_eq!(pages, [vec!["m1", "m2", "m4", "m5"], vec!["m7", "m8"]]);

    let response = data
        .fetch_by_metadata(request(json(j!({"n": {"$gte": 8}})), None, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.pagination, None);
    let mut ids: Vec<&String> = response.vectors.keys().collect();
    ids.sort();
    assert_eq!(ids, ["m8", "m9"]);
    assert_eq!(response.vectors["m9"].values, [1.0, 9.0]);
    assert_eq!(
        metadata_of(&response.vectors["m9"]),
        j!({"genre": "comedy", "n": 9.0})
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Query
// ---------------------------------------------------------------------------------------------

/// a = x axis, b = y axis, c = the diagonal between them.
async fn seed_axes(data: &mut DataClient) {
    upsert(
        data,
        "",
        vec![
            with_metadata("a", &[1.0, 0.0, 0.0], j!({"axis": "x"})),
            with_metadata("b", &[0.0, 1.0, 0.0], j!({"axis": "y"})),
            vector("c", &[1.0, 1.0, 0.0]),
        ],
    )
    .await;
}

#[tokio::test]
async fn query_by_id_uses_the_stored_vector() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("query-id", 3, "cosine").await;
    seed_axes(&mut data).await;
    let result = data
        .query(QueryRequest {
            top_k: 3,
            id: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids_of(&result.matches), ["a", "c", "b"]);
    assert_close(result.matches[0].score, 1.0);
    assert_close(result.matches[1].score, std::f32::consts::FRAC_1_SQRT_2);
    assert_close(result.matches[2].score, 0.0);

    let result = data
        .query(QueryRequest {
            top_k: 3,
            id: "ghost".into(),
            ..Default::default()
        })
        .await;
    expect_err(result, Code::NotFound, &["ghost"]);
    server.stop().await;
}

#[tokio::test]
async fn query_rejects_malformed_requests() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("query-bad", 3, "cosine").await;
    seed_axes(&mut data).await;
    let good = || QueryRequest {
        top_k: 3,
        vector: vec![1.0, 0.0, 0.0],
        ..Default::default()
    };
    #[allow(deprecated)]
    let deprecated = QueryRequest {
        top_k: 3,
        queries: vec![QueryVector {
            values: vec![1.0, 0.0, 0.0],
            top_k: 3,
            ..Default::default()
        }],
        ..Default::default()
    };
    let cases: Vec<(QueryRequest, Vec<&str>)> = vec![
        (
            QueryRequest {
                id: "a".into(),
                ..good()
            },
            vec!["vector", "id", "not both"],
        ),
        (
            QueryRequest {
                top_k: 3,
                ..Default::default()
            },
            vec!["vector", "id"],
        ),
        (
            QueryRequest { top_k: 0, ..good() },
            vec!["top_k", "10000", "0"],
        ),
        (
            QueryRequest {
                top_k: 10_001,
                ..good()
            },
            vec!["top_k", "10000", "10001"],
        ),
        (
            QueryRequest {
                vector: vec![1.0, 0.0],
                ..good()
            },
            vec!["vector", "dimension is 3"],
        ),
        (
            QueryRequest {
                vector: vec![1.0, f32::NAN, 0.0],
                ..good()
            },
            vec!["vector[1]", "finite"],
        ),
        (deprecated, vec!["queries"]),
        (
            QueryRequest {
                sparse_vector: sparse(&[(1, 1.0)]),
                ..good()
            },
            vec!["sparse_vector", "dotproduct"],
        ),
        (
            QueryRequest {
                filter: json(j!({"axis": {"$foo": 1}})),
                ..good()
            },
            vec!["filter.axis.$foo"],
        ),
    ];
    for (request, parts) in cases {
        invalid(data.query(request).await, &parts);
    }

    // top_k at the limit is fine and returns what there is.
    let result = data
        .query(QueryRequest {
            top_k: 10_000,
            ..good()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids_of(&result.matches), ["a", "c", "b"]);
    server.stop().await;
}

#[tokio::test]
async fn query_includes_values_and_metadata_only_when_asked() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("query-include", 3, "dotproduct").await;
    upsert(
        &mut data,
        "",
        vec![
            Vector {
                sparse_values: sparse(&[(7, 0.5)]),
                ..with_metadata("a", &[1.0, 0.0, 0.0], j!({"axis": "x", "n": 1}))
            },
            vector("b", &[0.0, 1.0, 0.0]),
        ],
    )
    .await;
    let query = |include_values, include_metadata| QueryRequest {
        top_k: 2,
        vector: vec![2.0, 1.0, 0.0],
        include_values,
        include_metadata,
        ..Default::default()
    };

    let bare = data.query(query(false, false)).await.unwrap().into_inner();
    assert_eq!(ids_of(&bare.matches), ["a", "b"]);
    for m in &bare.matches {
        assert!(m.values.is_empty(), "{m:?}");
        assert_eq!(m.sparse_values, None, "{m:?}");
        assert_eq!(m.metadata, None, "{m:?}");
    }

    let values = data.query(query(true, false)).await.unwrap().into_inner();
    assert_eq!(values.matches[0].values, [1.0, 0.0, 0.0]);
    assert_eq!(values.matches[0].sparse_values, sparse(&[(7, 0.5)]));
    assert_eq!(values.matches[1].values, [0.0, 1.0, 0.0]);
    assert!(values.matches.iter().all(|m| m.metadata.is_none()));

    let metadata = data.query(query(false, true)).await.unwrap().into_inner();
    assert!(metadata.matches.iter().all(|m| m.values.is_empty()));
    assert_eq!(
        match_metadata(&metadata.matches[0]),
        j!({"axis": "x", "n": 1.0})
    );
    assert_eq!(metadata.matches[1].metadata, None);

    let both = data.query(query(true, true)).await.unwrap().into_inner();
    assert_eq!(both.matches[0].values, [1.0, 0.0, 0.0]);
    assert_eq!(
        match_metadata(&both.matches[0]),
        j!({"axis": "x", "n": 1.0})
    );
    assert_close(both.matches[0].score, 2.0);
    assert_close(both.matches[1].score, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn query_on_a_missing_namespace_is_empty() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("query-empty", 3, "cosine").await;
    seed_axes(&mut data).await;
    let result = data
        .query(QueryRequest {
            namespace: "nowhere".into(),
            top_k: 10,
            vector: vec![1.0, 0.0, 0.0],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(result.namespace, "nowhere");
    assert!(result.matches.is_empty());
    // Querying did not create it.
    assert_eq!(counts(&stats(&mut data).await), count_map(&[("", 3)]));
    server.stop().await;
}

#[tokio::test]
async fn hybrid_query_adds_dense_and_sparse_dot_products() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("hybrid", 2, "dotproduct").await;
    upsert(
        &mut data,
        "",
        vec![
            Vector {
                sparse_values: sparse(&[(7, 2.0), (1, 0.5)]),
                ..vector("a", &[1.0, 2.0])
            },
            vector("b", &[6.0, 0.0]),
            Vector {
                sparse_values: sparse(&[(100, 4.0)]),
                ..vector("c", &[-1.0, 0.0])
            },
        ],
    )
    .await;
    let result = data
        .query(QueryRequest {
            top_k: 3,
            vector: vec![0.5, 1.0],
            sparse_vector: sparse(&[(7, 3.0), (1, 1.0), (50, 9.0)]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // a: dense 0.5 + 2 = 2.5, sparse 0.5·1 + 2·3 = 6.5 → 9
    // b: dense 3, no sparse values → 3
    // c: dense -0.5, no sparse index in common → -0.5
    assert_eq!(ids_of(&result.matches), ["a", "b", "c"]);
    assert_close(result.matches[0].score, 9.0);
    assert_close(result.matches[1].score, 3.0);
    assert_close(result.matches[2].score, -0.5);

    // The dense part alone ranks b first.
    let dense = data
        .query(QueryRequest {
            top_k: 3,
            vector: vec![0.5, 1.0],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids_of(&dense.matches), ["b", "a", "c"]);
    assert_close(dense.matches[0].score, 3.0);
    assert_close(dense.matches[1].score, 2.5);
    server.stop().await;
}

#[tokio::test]
async fn sparse_query_on_a_cosine_index_is_rejected() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("sparse-cosine", 2, "cosine").await;
    upsert(&mut data, "", vec![vector("a", &[1.0, 0.0])]).await;
    let result = data
        .query(QueryRequest {
            top_k: 1,
            vector: vec![1.0, 0.0],
            sparse_vector: sparse(&[(1, 1.0)]),
            ..Default::default()
        })
        .await;
    invalid(result, &["sparse_vector", "dotproduct", "cosine"]);
    server.stop().await;
}
