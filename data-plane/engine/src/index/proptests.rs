//! Property tests: for random records, deletes and filters, every query
//! result satisfies the filter and equals a brute-force reference (ids,
//! order and scores), for every metric; fetch by metadata and filtered stats
//! agree with an independent reference evaluation of the filter JSON.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::{
    DeleteRequest, FetchByMetadataRequest, Filter, JsonObject, Metric, QueryRequest, SparseInput,
    UpsertRequest, VectorInput,
    test_support::{index, object},
};

mod model;

const FIELDS: [&str; 5] = ["genre", "year", "tags", "flag", "missing"];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec!["a", "b", "c", "x"]).prop_map(Value::from),
        (0..5i32).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
    ]
}

fn in_list() -> impl Strategy<Value = Value> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(vec!["a", "b", "x", "y"]).prop_map(Value::from),
            (0..5i32).prop_map(Value::from)
        ],
        1..4,
    )
    .prop_map(Value::from)
}

/// One field condition: a bare value or an object of one or two operators.
fn field_condition() -> impl Strategy<Value = Value> {
    let operator = prop_oneof![
        scalar().prop_map(|v| ("$eq", v)),
        scalar().prop_map(|v| ("$ne", v)),
        (
            prop::sample::select(vec!["$gt", "$gte", "$lt", "$lte"]),
            0..5i32
        )
            .prop_map(|(op, n)| (op, Value::from(n))),
        (prop::sample::select(vec!["$in", "$nin"]), in_list()),
        any::<bool>().prop_map(|b| ("$exists", Value::from(b))),
    ];
    prop_oneof![
        scalar(),
        prop::collection::vec(operator, 1..3).prop_map(|ops| {
            Value::Object(ops.into_iter().map(|(op, v)| (op.to_owned(), v)).collect())
        }),
    ]
}

/// A valid filter object, possibly nested through `$and` / `$or`.
fn filter() -> impl Strategy<Value = Value> {
    let leaf = prop::collection::vec(
        (prop::sample::select(FIELDS.to_vec()), field_condition()),
        1..3,
    )
    .prop_map(|conditions| {
        Value::Object(
            conditions
                .into_iter()
                .map(|(f, c)| (f.to_owned(), c))
                .collect(),
        )
    });
    leaf.prop_recursive(3, 16, 3, |inner| {
        (
            prop::sample::select(vec!["$and", "$or"]),
            prop::collection::vec(inner, 1..4),
        )
            .prop_map(|(op, filters)| json!({ op: filters }))
    })
}

fn metadata() -> impl Strategy<Value = Option<Value>> {
    let field = |s: BoxedStrategy<Value>| prop::option::weighted(0.7, s);
    prop::option::weighted(
        0.9,
        (
            field(
                prop::sample::select(vec!["a", "b", "c"])
                    .prop_map(Value::from)
                    .boxed(),
            ),
            field((0..5i32).prop_map(Value::from).boxed()),
            field(
                prop::sample::subsequence(vec!["a", "x", "y"], 0..=3)
                    .prop_map(Value::from)
                    .boxed(),
            ),
            field(any::<bool>().prop_map(Value::from).boxed()),
        )
            .prop_map(|(genre, year, tags, flag)| {
                let fields = [
                    ("genre", genre),
                    ("year", year),
                    ("tags", tags),
                    ("flag", flag),
                ];
                Value::Object(
                    fields
                        .into_iter()
                        .filter_map(|(k, v)| Some((k.to_owned(), v?)))
                        .collect(),
                )
            }),
    )
}

fn sparse_input() -> impl Strategy<Value = Option<SparseInput>> {
    prop::option::of(
        prop::collection::btree_map(0..6u32, -2..=2i32, 1..4).prop_map(|entries| SparseInput {
            indices: entries.keys().copied().collect(),
            values: entries.values().map(|v| *v as f32).collect(),
        }),
    )
}

/// A generated record: id number, dense values, sparse values, metadata.
type RecordCase = (usize, Vec<f32>, Option<SparseInput>, Option<Value>);

#[derive(Debug, Clone)]
struct Case {
    metric: Metric,
    dim: usize,
    records: Vec<RecordCase>,
    deletes: Vec<usize>,
    query: Vec<f32>,
    query_sparse: Option<SparseInput>,
    filter: Option<Value>,
    top_k: u32,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(Metric::ALL.to_vec()),
        prop_oneof![1..5usize, 7..19usize],
    )
        .prop_flat_map(|(metric, dim)| {
            // Small integers keep every sum exact, so the reference can demand identical scores.
            let values = prop::collection::vec((-3..=3i32).prop_map(|v| v as f32), dim);
            let sparse = if metric == Metric::DotProduct {
                sparse_input().boxed()
            } else {
                Just(None).boxed()
            };
            let record = (0..30usize, values.clone(), sparse.clone(), metadata());
            (
                prop::collection::vec(record, 0..40),
                prop::collection::vec(0..30usize, 0..10),
                values,
                sparse,
                prop::option::weighted(0.8, filter()),
                1..45u32,
            )
                .prop_map(
                    move |(records, deletes, query, query_sparse, filter, top_k)| Case {
                        metric,
                        dim,
                        records,
                        deletes,
                        query,
                        query_sparse,
                        filter,
                        top_k,
                    },
                )
        })
}

/// What the reference keeps per record.
struct Stored {
    values: Vec<f32>,
    sparse: Option<SparseInput>,
    metadata: Option<Value>,
}

fn id(i: usize) -> String {
    format!("r{i:02}")
}

/// A non-zero vector (upsert rejects all-zero ones).
fn nonzero(mut values: Vec<f32>) -> Vec<f32> {
    if values.iter().all(|v| *v == 0.0) {
        values[0] = 1.0;
    }
    values
}

// ---- reference filter evaluation, straight on the JSON ----------------------

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn reference_eq(operand: &Value, value: Option<&Value>) -> bool {
    match value {
        None => false,
        Some(Value::Array(items)) => items.iter().any(|item| same(item, operand)),
        Some(value) => same(value, operand),
    }
}

fn reference_op(op: &str, operand: &Value, value: Option<&Value>) -> bool {
    let number = value
        .and_then(Value::as_f64)
        .filter(|_| value.is_some_and(Value::is_number));
    let bound = operand.as_f64().unwrap_or(f64::NAN);
    let any_of = || {
        operand
            .as_array()
            .into_iter()
            .flatten()
            .any(|item| reference_eq(item, value))
    };
    match op {
        "$eq" => reference_eq(operand, value),
        "$ne" => !reference_eq(operand, value),
        "$gt" => number.is_some_and(|n| n > bound),
        "$gte" => number.is_some_and(|n| n >= bound),
        "$lt" => number.is_some_and(|n| n < bound),
        "$lte" => number.is_some_and(|n| n <= bound),
        "$in" => any_of(),
        "$nin" => !any_of(),
        "$exists" => value.is_some() == operand.as_bool().unwrap_or(false),
        other => panic!("generator produced unknown operator {other}"),
    }
}

fn reference_matches(filter: &Value, metadata: Option<&Value>) -> bool {
    let empty = JsonObject::new();
    let metadata = metadata.and_then(Value::as_object).unwrap_or(&empty);
    let Some(filter) = filter.as_object() else {
        panic!("filters are objects")
    };
    filter.iter().all(|(key, condition)| match key.as_str() {
        "$and" => condition
            .as_array()
            .into_iter()
            .flatten()
            .all(|f| reference_matches(f, Some(&Value::Object(metadata.clone())))),
        "$or" => condition
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| reference_matches(f, Some(&Value::Object(metadata.clone())))),
        field => match condition {
            Value::Object(ops) => ops
                .iter()
                .all(|(op, operand)| reference_op(op, operand, metadata.get(field))),
            scalar => reference_op("$eq", scalar, metadata.get(field)),
        },
    })
}

// ---- reference scoring ------------------------------------------------------

fn reference_score(
    metric: Metric,
    query: &[f32],
    query_sparse: Option<&SparseInput>,
    stored: &Stored,
) -> f32 {
    let dot: f32 = query.iter().zip(&stored.values).map(|(a, b)| a * b).sum();
    let dense = match metric {
        Metric::DotProduct => dot,
        Metric::Euclidean => query
            .iter()
            .zip(&stored.values)
            .map(|(a, b)| (a - b) * (a - b))
            .sum(),
        Metric::Cosine => {
            let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            let (nq, nr) = (norm(query), norm(&stored.values));
            if nq == 0.0 || nr == 0.0 {
                0.0
            } else {
                (dot / nq / nr).clamp(-1.0, 1.0)
            }
        }
    };
    let sparse = match (query_sparse, &stored.sparse) {
        (Some(q), Some(r)) => {
            let stored: BTreeMap<u32, f32> = r
                .indices
                .iter()
                .copied()
                .zip(r.values.iter().copied())
                .collect();
            q.indices
                .iter()
                .zip(&q.values)
                .filter_map(|(i, v)| stored.get(i).map(|s| v * s))
                .sum()
        }
        _ => 0.0,
    };
    dense + sparse
}

fn run(case: Case) -> std::result::Result<(), TestCaseError> {
    let index = index(case.dim as u32, case.metric);
    let mut reference: BTreeMap<String, Stored> = BTreeMap::new();
    for chunk in case.records.chunks(7) {
        let vectors = chunk
            .iter()
            .map(|(i, values, sparse, metadata)| VectorInput {
                id: id(*i),
                values: nonzero(values.clone()),
                sparse_values: sparse.clone(),
                metadata: metadata.clone().map(object),
            })
            .collect::<Vec<_>>();
        for v in &vectors {
            let stored = Stored {
                values: v.values.clone(),
                sparse: v.sparse_values.clone(),
                metadata: v.metadata.clone().map(Value::Object),
            };
            reference.insert(v.id.clone(), stored);
        }
        index
            .upsert(UpsertRequest {
                namespace: "ns".into(),
                vectors,
            })
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    if !case.deletes.is_empty() {
        let ids: Vec<String> = case.deletes.iter().map(|i| id(*i)).collect();
        index
            .delete(DeleteRequest {
                namespace: "ns".into(),
                ids: ids.clone(),
                ..Default::default()
            })
            .unwrap();
        for id in &ids {
            reference.remove(id);
        }
    }

    let filter_object = case.filter.clone().map(object);
    let keep = |stored: &Stored| {
        case.filter
            .as_ref()
            .is_none_or(|f| reference_matches(f, stored.metadata.as_ref()))
    };

    // Query against a full sort of every matching record.
    let query = QueryRequest {
        namespace: "ns".into(),
        top_k: case.top_k,
        filter: filter_object.clone(),
        include_metadata: true,
        vector: case.query.clone(),
        sparse_vector: case.query_sparse.clone(),
        ..Default::default()
    };
    let response = index.query(query).unwrap();
    let mut expected: Vec<(&str, f32)> = reference
        .iter()
        .filter(|(_, stored)| keep(stored))
        .map(|(id, stored)| {
            (
                id.as_str(),
                reference_score(case.metric, &case.query, case.query_sparse.as_ref(), stored),
            )
        })
        .collect();
    let higher_is_better = case.metric.higher_is_better();
    expected.sort_by(|a, b| {
        // Adding 0.0 makes -0.0 and +0.0 the tie they are (broken by id).
        let (a_score, b_score) = (a.1 + 0.0, b.1 + 0.0);
        let by_score = if higher_is_better {
            b_score.total_cmp(&a_score)
        } else {
            a_score.total_cmp(&b_score)
        };
        by_score.then_with(|| a.0.cmp(b.0))
    });
    expected.truncate(case.top_k as usize);
    let got: Vec<(&str, f32)> = response
        .matches
        .iter()
        .map(|m| (m.id.as_str(), m.score))
        .collect();
    prop_assert_eq!(&got, &expected);

    if let Some(filter) = &filter_object {
        let parsed = Filter::parse(filter).unwrap();
        for m in &response.matches {
            prop_assert!(
                parsed.matches_record(m.metadata.as_ref()),
                "{} does not satisfy the filter",
                m.id
            );
        }
        // Fetch by metadata and filtered stats agree with the reference evaluation.
        let fetched = index
            .fetch_by_metadata(FetchByMetadataRequest {
                namespace: "ns".into(),
                filter: Some(filter.clone()),
                limit: Some(10_000),
                pagination_token: None,
            })
            .unwrap();
        let fetched_ids: Vec<&str> = fetched.vectors.iter().map(|r| r.id.as_str()).collect();
        let matching: Vec<&str> = reference
            .iter()
            .filter(|(_, s)| keep(s))
            .map(|(id, _)| id.as_str())
            .collect();
        prop_assert_eq!(&fetched_ids, &matching);
        let stats = index.describe_stats(Some(filter.clone())).unwrap();
        prop_assert_eq!(stats.total_vector_count, matching.len() as u64);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn query_results_equal_a_brute_force_reference(case in case()) {
        run(case)?;
    }
}
