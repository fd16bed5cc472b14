//! Metadata filters over a fixed catalogue of eight records: every operator, list fields,
//! type mismatches and missing fields, each checked as the exact set of matching ids of a
//! query with `top_k` 100 (and, as a cross-check, of fetch_by_metadata). Then malformed
//! filters, and filters on delete, update, describe_index_stats and fetch_by_metadata.
//!
//! The catalogue (r8 has no metadata at all):
//!
//! | id | genre       | year     | rating | tags               | active |
//! |----|-------------|----------|--------|--------------------|--------|
//! | r1 | drama       | 1999     | 7.5    | classic, award     | true   |
//! | r2 | comedy      | 2005     | 6      | family             | false  |
//! | r3 | drama       | 2010     | 8.2    | award, indie       | true   |
//! | r4 | action      | 2015     | 5.5    | blockbuster        | true   |
//! | r5 | comedy      | 2020     | –      | indie, family      | –      |
//! | r6 | –           | 2001     | 9      | –                  | false  |
//! | r7 | documentary | "2010"   | 7.5    | award              | true   |
//! | r8 | –           | –        | –      | –                  | –      |

use larch_proto::pinecone::{
    DeleteRequest, DescribeIndexStatsRequest, FetchByMetadataRequest, ListRequest, QueryRequest,
    UpdateRequest, UpsertRequest, Vector,
};
use larch_tests::{DataClient, TestServer, from_struct, json};
use serde_json::{Value, json as j};
use tonic::Code;

const ALL: [&str; 8] = ["r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8"];

fn catalogue() -> Vec<(&'static str, Value)> {
    vec![
        (
            "r1",
            j!({"genre": "drama", "year": 1999, "rating": 7.5, "tags": ["classic", "award"], "active": true}),
        ),
        (
            "r2",
            j!({"genre": "comedy", "year": 2005, "rating": 6, "tags": ["family"], "active": false}),
        ),
        (
            "r3",
            j!({"genre": "drama", "year": 2010, "rating": 8.2, "tags": ["award", "indie"], "active": true}),
        ),
        (
            "r4",
            j!({"genre": "action", "year": 2015, "rating": 5.5, "tags": ["blockbuster"], "active": true}),
        ),
        (
            "r5",
            j!({"genre": "comedy", "year": 2020, "tags": ["indie", "family"]}),
        ),
        ("r6", j!({"year": 2001, "rating": 9, "active": false})),
        (
            "r7",
            j!({"genre": "documentary", "year": "2010", "rating": 7.5, "tags": ["award"], "active": true}),
        ),
        ("r8", Value::Null),
    ]
}

/// A server with one euclidean index holding the catalogue in the default namespace.
async fn setup(name: &str) -> (TestServer, DataClient) {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index(name, 2, "euclidean").await;
    let vectors = catalogue()
        .into_iter()
        .enumerate()
        .map(|(i, (id, metadata))| Vector {
            id: id.into(),
            values: vec![1.0, i as f32],
            metadata: if metadata.is_null() {
                None
            } else {
                json(metadata)
            },
            ..Default::default()
        })
        .collect();
    let upserted = data
        .upsert(UpsertRequest {
            vectors,
            namespace: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upserted.upserted_count, 8);
    (server, data)
}

/// Sorted ids of a query with `filter` and `top_k` 100.
async fn query_ids(data: &mut DataClient, filter: &Value) -> Vec<String> {
    let response = data
        .query(QueryRequest {
            top_k: 100,
            vector: vec![1.0, 0.0],
            filter: json(filter.clone()),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("query with {filter}: {e:?}"))
        .into_inner();
    let mut ids: Vec<String> = response.matches.into_iter().map(|m| m.id).collect();
    ids.sort();
    ids
}

/// Sorted ids fetch_by_metadata returns for `filter`.
async fn fetch_ids(data: &mut DataClient, filter: &Value) -> Vec<String> {
    let response = data
        .fetch_by_metadata(FetchByMetadataRequest {
            filter: json(filter.clone()),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("fetch_by_metadata with {filter}: {e:?}"))
        .into_inner();
    let mut ids: Vec<String> = response.vectors.into_keys().collect();
    ids.sort();
    ids
}

/// Checks each `(filter, expected ids)` against query and fetch_by_metadata.
async fn check(data: &mut DataClient, cases: &[(Value, &[&str])]) {
    for (filter, expected) in cases {
        assert_eq!(
            query_ids(data, filter).await,
            *expected,
            "query, filter {filter}"
        );
        assert_eq!(
            fetch_ids(data, filter).await,
            *expected,
            "fetch_by_metadata, filter {filter}"
        );
    }
}

/// Every id, via list.
async fn listed(data: &mut DataClient) -> Vec<String> {
    data.list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .vectors
        .into_iter()
        .map(|v| v.id)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Operators
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn eq_and_ne() {
    let (server, mut data) = setup("f-eq").await;
    check(
        &mut data,
        &[
            (j!({"genre": {"$eq": "drama"}}), &["r1", "r3"]),
            (
                j!({"genre": {"$ne": "drama"}}),
                &["r2", "r4", "r5", "r6", "r7", "r8"],
            ),
            (j!({"rating": {"$eq": 7.5}}), &["r1", "r7"]),
            (j!({"rating": {"$eq": 6}}), &["r2"]),
            (
                j!({"rating": {"$ne": 7.5}}),
                &["r2", "r3", "r4", "r5", "r6", "r8"],
            ),
            (j!({"active": {"$eq": true}}), &["r1", "r3", "r4", "r7"]),
            (j!({"active": {"$eq": false}}), &["r2", "r6"]),
            (j!({"active": {"$ne": true}}), &["r2", "r5", "r6", "r8"]),
            (j!({"genre": {"$eq": "western"}}), &[]),
            (j!({"genre": {"$ne": "western"}}), &ALL),
        ],
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn implicit_eq_is_eq() {
    let (server, mut data) = setup("f-implicit").await;
    check(
        &mut data,
        &[
            (j!({"genre": "drama"}), &["r1", "r3"]),
            (j!({"year": 2005}), &["r2"]),
            (j!({"active": false}), &["r2", "r6"]),
            (j!({"genre": "Drama"}), &[]),
        ],
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn numeric_comparisons() {
    let (server, mut data) = setup("f-compare").await;
    check(
        &mut data,
        &[
            (j!({"year": {"$gt": 2005}}), &["r3", "r4", "r5"]),
            (j!({"year": {"$gte": 2005}}), &["r2", "r3", "r4", "r5"]),
            (j!({"year": {"$lt": 2005}}), &["r1", "r6"]),
            (j!({"year": {"$lte": 2005}}), &["r1", "r2", "r6"]),
            (j!({"rating": {"$gt": 7.5}}), &["r3", "r6"]),
            (j!({"rating": {"$gte": 7.5}}), &["r1", "r3", "r6", "r7"]),
            (j!({"rating": {"$lt": 6}}), &["r4"]),
            (j!({"rating": {"$lte": 6.0}}), &["r2", "r4"]),
            (j!({"rating": {"$gt": 8.19, "$lt": 8.21}}), &["r3"]),
            (j!({"year": {"$gt": 3000}}), &[]),
        ],
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn in_and_nin() {
    let (server, mut data) = setup("f-in").await;
    check(
        &mut data,
        &[
            (
                j!({"genre": {"$in": ["comedy", "action"]}}),
                &["r2", "r4", "r5"],
            ),
            (
                j!({"genre": {"$nin": ["comedy", "action"]}}),
                &["r1", "r3", "r6", "r7", "r8"],
            ),
            (j!({"year": {"$in": [1999, 2015]}}), &["r1", "r4"]),
            (
                j!({"year": {"$nin": [1999, 2015]}}),
                &["r2", "r3", "r5", "r6", "r7", "r8"],
            ),
            (j!({"rating": {"$in": [7.5, 100]}}), &["r1", "r7"]),
            (j!({"genre": {"$in": ["western"]}}), &[]),
            (j!({"genre": {"$nin": ["western"]}}), &ALL),
        ],
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn exists() {
    let (server, mut data) = setup("f-exists").await;
    check(
        &mut data,
        &[
            (
                j!({"rating": {"$exists": true}}),
                &["r1", "r2", "r3", "r4", "r6", "r7"],
            ),
            (j!({"rating": {"$exists": false}}), &["r5", "r8"]),
            (j!({"genre": {"$exists": false}}), &["r6", "r8"]),
            // r7's year is a string, but it exists.
            (
                j!({"year": {"$exists": true}}),
                &["r1", "r2", "r3", "r4", "r5", "r6", "r7"],
            ),
            (j!({"year": {"$exists": false}}), &["r8"]),
            (
                j!({"tags": {"$exists": true}}),
                &["r1", "r2", "r3", "r4", "r5", "r7"],
            ),
            (j!({"nothing": {"$exists": true}}), &[]),
            (j!({"nothing": {"$exists": false}}), &ALL),
        ],
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn and_or_and_implicit_and() {
    let (server, mut data) = setup("f-logic").await;
    check(
        &mut data,
        &[
            (j!({"$and": [{"genre": "drama"}, {"year": {"$gt": 2000}}]}), &["r3"]),
            (j!({"$or": [{"genre": "action"}, {"rating": {"$gte": 9}}]}), &["r4", "r6"]),
            (
                j!({"$or": [{"$and": [{"genre": "comedy"}, {"active": false}]}, {"tags": "classic"}]}),
                &["r1", "r2"],
            ),
            (
                j!({"$and": [
                    {"$or": [{"genre": "drama"}, {"genre": "comedy"}]},
                    {"year": {"$gte": 2005}}
                ]}),
                &["r2", "r3", "r5"],
            ),
            // Several top-level fields are ANDed.
            (j!({"genre": "comedy", "active": false}), &["r2"]),
            (j!({"genre": "comedy", "year": {"$gt": 2010}}), &["r5"]),
            // Top-level fields and $or are ANDed too.
            (
                j!({"active": true, "$or": [{"genre": "drama"}, {"rating": {"$lt": 6}}]}),
                &["r1", "r3", "r4"],
            ),
            // $and and $or side by side.
            (
                j!({"$and": [{"active": true}], "$or": [{"year": 1999}, {"year": 2015}]}),
                &["r1", "r4"],
            ),
            (j!({"$or": [{"genre": "western"}, {"year": 1800}]}), &[]),
            (j!({"$and": [{"genre": "drama"}, {"genre": "comedy"}]}), &[]),
        ],
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn several_operators_on_one_field() {
    let (server, mut data) = setup("f-several").await;
    check(
        &mut data,
        &[
            (
                j!({"year": {"$gte": 2000, "$lt": 2016}}),
                &["r2", "r3", "r4", "r6"],
            ),
            (j!({"rating": {"$gt": 6, "$ne": 7.5}}), &["r3", "r6"]),
            (
                j!({"genre": {"$in": ["drama", "comedy"], "$ne": "comedy"}}),
                &["r1", "r3"],
            ),
            (j!({"year": {"$gt": 2010, "$lt": 2010}}), &[]),
            (j!({"rating": {"$exists": true, "$lte": 6}}), &["r2", "r4"]),
        ],
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn list_fields_match_when_any_element_matches() {
    let (server, mut data) = setup("f-lists").await;
    check(
        &mut data,
        &[
            (j!({"tags": "award"}), &["r1", "r3", "r7"]),
            (j!({"tags": {"$eq": "family"}}), &["r2", "r5"]),
            (
                j!({"tags": {"$in": ["indie", "family"]}}),
                &["r2", "r3", "r5"],
            ),
            (
                j!({"$and": [{"tags": "award"}, {"tags": "indie"}]}),
                &["r3"],
            ),
            (
                j!({"$or": [{"tags": "classic"}, {"tags": "blockbuster"}]}),
                &["r1", "r4"],
            ),
            // $ne and $nin on a list: no element may match (and a missing list matches).
            (
                j!({"tags": {"$ne": "award"}}),
                &["r2", "r4", "r5", "r6", "r8"],
            ),
            (
                j!({"tags": {"$nin": ["award", "family"]}}),
                &["r4", "r6", "r8"],
            ),
            (j!({"tags": "awa"}), &[]),
        ],
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn values_of_another_type_never_match() {
    let (server, mut data) = setup("f-types").await;
    check(
        &mut data,
        &[
            // r7's year is the string "2010", r3's the number 2010.
            (j!({"year": "2010"}), &["r7"]),
            (j!({"year": 2010}), &["r3"]),
            (j!({"year": {"$gt": 2000}}), &["r2", "r3", "r4", "r5", "r6"]),
            (j!({"year": {"$in": [1999, "2005"]}}), &["r1"]),
            (j!({"year": {"$in": ["2010"]}}), &["r7"]),
            (
                j!({"year": {"$ne": 2010}}),
                &["r1", "r2", "r4", "r5", "r6", "r7", "r8"],
            ),
            (j!({"genre": 1}), &[]),
            (j!({"genre": {"$ne": 1}}), &ALL),
            (j!({"active": "true"}), &[]),
            (j!({"active": 1}), &[]),
            (j!({"rating": "7.5"}), &[]),
            (j!({"tags": {"$in": [1]}}), &[]),
            (j!({"tags": true}), &[]),
        ],
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn missing_fields_fail_every_operator_but_ne_nin_and_exists_false() {
    let (server, mut data) = setup("f-missing").await;
    check(
        &mut data,
        &[
            (
                j!({"rating": {"$lt": 100}}),
                &["r1", "r2", "r3", "r4", "r6", "r7"],
            ),
            (
                j!({"rating": {"$gt": -100}}),
                &["r1", "r2", "r3", "r4", "r6", "r7"],
            ),
            (
                j!({"genre": {"$nin": ["drama"]}}),
                &["r2", "r4", "r5", "r6", "r7", "r8"],
            ),
            (
                j!({"active": {"$ne": false}}),
                &["r1", "r3", "r4", "r5", "r7", "r8"],
            ),
            (
                j!({"$or": [{"genre": {"$exists": false}}, {"tags": {"$exists": false}}]}),
                &["r6", "r8"],
            ),
            (j!({"active": {"$in": ["true"]}}), &[]),
        ],
    )
    .await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Malformed filters
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_filters_are_invalid_arguments_naming_the_operator() {
    let (server, mut data) = setup("f-malformed").await;
    let cases: Vec<(Value, &[&str])> = vec![
        (
            j!({"genre": {"$foo": 1}}),
            &["filter.genre.$foo", "unknown operator"],
        ),
        (
            j!({"$foo": [{"genre": "drama"}]}),
            &["filter.$foo", "unknown operator"],
        ),
        (
            j!({"year": {"$gt": "2000"}}),
            &["filter.year.$gt", "number", "string"],
        ),
        (
            j!({"year": {"$lte": true}}),
            &["filter.year.$lte", "number"],
        ),
        (
            j!({"genre": {"$in": "drama"}}),
            &["filter.genre.$in", "array"],
        ),
        (j!({"genre": {"$nin": 3}}), &["filter.genre.$nin", "array"]),
        (
            j!({"genre": {"$in": []}}),
            &["filter.genre.$in", "non-empty"],
        ),
        (
            j!({"genre": {"$in": ["a", true]}}),
            &["filter.genre.$in[1]"],
        ),
        (j!({"$and": {"genre": "drama"}}), &["filter.$and", "array"]),
        (j!({"$or": "drama"}), &["filter.$or", "array"]),
        (j!({"$or": []}), &["filter.$or", "non-empty"]),
        (j!({"$and": [{}]}), &["filter.$and[0]"]),
        (j!({"$or": [1]}), &["filter.$or[0]"]),
        (
            j!({"genre": ["drama", "comedy"]}),
            &["filter.genre", "array", "$in"],
        ),
        (
            j!({"genre": {"$eq": ["drama"]}}),
            &["filter.genre.$eq", "array"],
        ),
        (j!({"genre": {"$ne": {"a": 1}}}), &["filter.genre.$ne"]),
        (
            j!({"active": {"$exists": "yes"}}),
            &["filter.active.$exists", "boolean"],
        ),
        (j!({"genre": null}), &["filter.genre", "null"]),
        (j!({"genre": {}}), &["filter.genre", "operator"]),
        (j!({"$gt": 2000}), &["filter.$gt"]),
        (
            j!({"$or": [{"genre": "drama"}, {"year": {"$lt": "x"}}]}),
            &["filter.$or[1].year.$lt"],
        ),
    ];
    for (filter, parts) in cases {
        let status = data
            .query(QueryRequest {
                top_k: 100,
                vector: vec![1.0, 0.0],
                filter: json(filter.clone()),
                ..Default::default()
            })
            .await
            .expect_err(&format!("{filter} should be rejected"));
        assert_eq!(status.code(), Code::InvalidArgument, "{filter}: {status:?}");
        for part in parts {
            assert!(
                status.message().contains(part),
                "{filter}: message {:?} lacks {part:?}",
                status.message()
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn filter_depth_and_in_size_are_limited() {
    let (server, mut data) = setup("f-limits").await;
    let nested = |levels: usize| {
        let mut value = j!({"genre": "drama"});
        for _ in 1..levels {
            value = j!({"$and": [value]});
        }
        value
    };
    assert_eq!(query_ids(&mut data, &nested(10)).await, ["r1", "r3"]);
    let query = |filter: Value| QueryRequest {
        top_k: 100,
        vector: vec![1.0, 0.0],
        filter: json(filter),
        ..Default::default()
    };
    let status = data.query(query(nested(11))).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("10 levels"),
        "{}",
        status.message()
    );

    let mut values: Vec<Value> = (0..9_999).map(|i| j!(format!("g{i}"))).collect();
    values.push(j!("drama"));
    assert_eq!(
        query_ids(&mut data, &j!({"genre": {"$in": values.clone()}})).await,
        ["r1", "r3"]
    );
    values.push(j!("comedy"));
    let status = data
        .query(query(j!({"genre": {"$in": values}})))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("filter.genre.$in") && status.message().contains("10000"),
        "{}",
        status.message()
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Filters on other RPCs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn delete_by_filter_removes_exactly_the_matches() {
    let (server, mut data) = setup("f-delete").await;
    // A malformed filter deletes nothing.
    let status = data
        .delete(DeleteRequest {
            filter: json(j!({"year": {"$gte": "2005"}})),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("filter.year.$gte"),
        "{}",
        status.message()
    );
    assert_eq!(listed(&mut data).await, ALL);

    data.delete(DeleteRequest {
        filter: json(j!({"year": {"$gte": 2005}})),
        ..Default::default()
    })
    .await
    .unwrap();
    // r7's year is a string, so it stays.
    assert_eq!(listed(&mut data).await, ["r1", "r6", "r7", "r8"]);

    data.delete(DeleteRequest {
        filter: json(j!({"genre": {"$exists": false}})),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(listed(&mut data).await, ["r1", "r7"]);
    server.stop().await;
}

#[tokio::test]
async fn update_by_filter_touches_exactly_the_matches() {
    let (server, mut data) = setup("f-update").await;
    let update = |dry_run| UpdateRequest {
        filter: json(j!({"tags": "award"})),
        set_metadata: json(j!({"flag": "x", "active": false})),
        dry_run: Some(dry_run),
        ..Default::default()
    };
    let dry = data.update(update(true)).await.unwrap().into_inner();
    assert_eq!(dry.matched_records, Some(3));
    assert_eq!(
        query_ids(&mut data, &j!({"flag": "x"})).await,
        Vec::<String>::new()
    );

    let real = data.update(update(false)).await.unwrap().into_inner();
    assert_eq!(real.matched_records, Some(3));
    assert_eq!(
        query_ids(&mut data, &j!({"flag": "x"})).await,
        ["r1", "r3", "r7"]
    );
    assert_eq!(query_ids(&mut data, &j!({"active": true})).await, ["r4"]);

    // The patch merges: other keys stay.
    let fetched = data
        .fetch_by_metadata(FetchByMetadataRequest {
            filter: json(j!({"flag": "x"})),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        from_struct(fetched.vectors["r7"].metadata.as_ref().unwrap()),
        j!({
            "genre": "documentary", "year": "2010", "rating": 7.5, "tags": ["award"],
            "active": false, "flag": "x"
        })
    );

    let status = data
        .update(UpdateRequest {
            filter: json(j!({"tags": {"$in": "award"}})),
            set_metadata: json(j!({"flag": "y"})),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("filter.tags.$in"),
        "{}",
        status.message()
    );
    assert_eq!(
        query_ids(&mut data, &j!({"flag": "y"})).await,
        Vec::<String>::new()
    );
    server.stop().await;
}

#[tokio::test]
async fn describe_index_stats_counts_the_matches() {
    let (server, mut data) = setup("f-stats").await;
    data.upsert(UpsertRequest {
        vectors: vec![Vector {
            id: "o1".into(),
            values: vec![1.0, 1.0],
            metadata: json(j!({"active": true})),
            ..Default::default()
        }],
        namespace: "other".into(),
    })
    .await
    .unwrap();
    let stats = |filter: Value| DescribeIndexStatsRequest {
        filter: json(filter),
    };
    let counts = |response: larch_proto::pinecone::DescribeIndexStatsResponse| {
        let mut counts: Vec<(String, u32)> = response
            .namespaces
            .into_iter()
            .map(|(name, summary)| (name, summary.vector_count))
            .collect();
        counts.sort();
        (counts, response.total_vector_count)
    };

    let active = data
        .describe_index_stats(stats(j!({"active": true})))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        counts(active),
        (vec![(String::new(), 4), ("other".to_owned(), 1)], 5)
    );
    // o1 has no genre, so it counts too.
    let old = data
        .describe_index_stats(stats(
            j!({"$or": [{"year": {"$lt": 2000}}, {"genre": {"$exists": false}}]}),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        counts(old),
        (vec![(String::new(), 3), ("other".to_owned(), 1)], 4)
    );
    // An empty filter counts everything.
    let all = data
        .describe_index_stats(stats(j!({})))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        counts(all),
        (vec![(String::new(), 8), ("other".to_owned(), 1)], 9)
    );

    let status = data
        .describe_index_stats(stats(j!({"active": {"$exists": 1}})))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("filter.active.$exists"),
        "{}",
        status.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn fetch_by_metadata_returns_exactly_the_matches() {
    let (server, mut data) = setup("f-fetch").await;
    let filter =
        j!({"$or": [{"genre": "comedy"}, {"rating": {"$gte": 8}}], "active": {"$ne": true}});
    let response = data
        .fetch_by_metadata(FetchByMetadataRequest {
            filter: json(filter),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.pagination, None);
    let mut ids: Vec<&str> = response.vectors.keys().map(String::as_str).collect();
    ids.sort_unstable();
    // comedy or rating ≥ 8: r2 r3 r5 r6; of those, active ≠ true: r2 r5 r6.
    assert_eq!(ids, ["r2", "r5", "r6"]);
    let r6 = &response.vectors["r6"];
    assert_eq!(r6.values, [1.0, 5.0]);
    assert_eq!(
        from_struct(r6.metadata.as_ref().unwrap()),
        j!({"year": 2001.0, "rating": 9.0, "active": false})
    );

    let status = data
        .fetch_by_metadata(FetchByMetadataRequest {
            filter: json(j!({"genre": {"$regex": "com"}})),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("filter.genre.$regex"),
        "{}",
        status.message()
    );
    server.stop().await;
}
