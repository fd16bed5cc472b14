//! Answer budgets (issue 14, item 5): every read that returns records is refused, naming the
//! field to lower, once its answer would pass the budget; the same read with a smaller answer
//! is served.

use serde_json::json;

use super::*;
use crate::{
    AnswerBudget, ErrorCode, FetchByMetadataRequest, FetchRequest, ListRequest, Metric,
    QueryRequest, UpsertRequest, VectorInput,
    test_support::{index, object},
};

/// 100 records of 64 values each (about 260 bytes encoded) with a little metadata.
fn filled() -> Index {
    let index = index(64, Metric::Cosine);
    let vectors = (0..100)
        .map(|i| VectorInput {
            id: format!("r{i:03}"),
            values: (0..64).map(|d| 1.0 + (i * 64 + d) as f32).collect(),
            metadata: Some(object(json!({"genre": "drama", "n": i}))),
            ..Default::default()
        })
        .collect();
    index
        .upsert(UpsertRequest {
            namespace: String::new(),
            vectors,
        })
        .unwrap();
    index
}

/// 8 KiB: about 30 records with their values, all 100 without.
fn small() -> AnswerBudget {
    AnswerBudget::new(8 * 1024)
}

fn refused(result: Result<impl fmt::Debug>, field: &str, advice: &str) {
    let err = result.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
    let message = err.to_string();
    assert!(message.starts_with(&format!("{field}: ")), "{message}");
    assert!(message.contains("limit of 8192 bytes"), "{message}");
    assert!(message.contains("--max-response-bytes"), "{message}");
    assert!(message.contains(advice), "{message}");
}

fn query(include_values: bool, include_metadata: bool) -> QueryRequest {
    QueryRequest {
        namespace: String::new(),
        top_k: 100,
        vector: vec![1.0; 64],
        include_values,
        include_metadata,
        ..Default::default()
    }
}

#[test]
fn a_query_over_the_budget_is_refused_and_without_values_it_is_served() {
    let index = filled();
    refused(
        index.query_within(query(true, true), small()),
        "top_k",
        "lower top_k, or set include_values or include_metadata to false",
    );
    refused(index.query_within(query(true, false), small()), "top_k", "");
    let served = index.query_within(query(false, false), small()).unwrap();
    assert_eq!(served.matches.len(), 100);
    // The default budget (4 MiB) holds all of it.
    assert_eq!(index.query(query(true, true)).unwrap().matches.len(), 100);
}

#[test]
fn fetch_and_fetch_by_metadata_over_the_budget_are_refused() {
    let index = filled();
    let ids = |n: usize| (0..n).map(|i| format!("r{i:03}")).collect::<Vec<_>>();
    let fetch = |n| FetchRequest {
        namespace: String::new(),
        ids: ids(n),
    };
    refused(
        index.fetch_within(fetch(100), small()),
        "ids",
        "fetch fewer ids per request",
    );
    assert_eq!(
        index
            .fetch_within(fetch(10), small())
            .unwrap()
            .vectors
            .len(),
        10
    );
    let by_metadata = |limit| FetchByMetadataRequest {
        namespace: String::new(),
        filter: Some(object(json!({"genre": "drama"}))),
        limit: Some(limit),
        pagination_token: None,
    };
    refused(
        index.fetch_by_metadata_within(by_metadata(100), small()),
        "limit",
        "lower limit and read the rest page by page",
    );
    let page = index
        .fetch_by_metadata_within(by_metadata(10), small())
        .unwrap();
    assert_eq!(page.vectors.len(), 10);
    assert!(page.next.is_some());
}

#[test]
fn a_list_over_the_budget_is_refused() {
    let index = filled();
    let list = ListRequest {
        namespace: String::new(),
        limit: Some(100),
        ..Default::default()
    };
    // 100 ids of 4 characters: about 700 bytes.
    let tiny = AnswerBudget::new(256);
    let err = index.list_within(list.clone(), tiny).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
    assert!(err.to_string().starts_with("limit: "), "{err}");
    assert!(err.to_string().contains("pagination token"), "{err}");
    assert_eq!(index.list_within(list, small()).unwrap().ids.len(), 100);
}
