//! Score conventions of each metric, against a brute-force reference computed here in `f64`:
//! cosine similarity and the raw dot product (higher first), and the *squared* euclidean
//! distance (lower first), as Pinecone reports them.
//!
//! Vectors come from a seeded xorshift generator, so every run sees the same data. Generated
//! values are multiples of 2⁻²³ in `[-1, 1)`, exact in `f32`, so the reference sees exactly
//! what the server stores.

use std::cmp::Ordering;

use larch_proto::pinecone::{QueryRequest, QueryResponse, UpsertRequest, Vector};
use larch_tests::{DataClient, TestServer};

const DIMENSION: usize = 16;
const RECORDS: usize = 200;
const QUERIES: usize = 10;
const TOP_K: usize = 10;

/// Marsaglia's xorshift64: tiny, seeded, good enough for test data.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        assert_ne!(seed, 0, "xorshift needs a non-zero seed");
        XorShift(seed)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `[-1, 1)` with 24 significant bits, exact in `f32`.
    fn next_f32(&mut self) -> f32 {
        let bits = (self.next_u64() >> 40) as u32; // 24 bits
        bits as f32 / (1u32 << 23) as f32 - 1.0
    }

    fn vector(&mut self) -> Vec<f32> {
        (0..DIMENSION).map(|_| self.next_f32()).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Metric {
    Cosine,
    DotProduct,
    Euclidean,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::DotProduct => "dotproduct",
            Metric::Euclidean => "euclidean",
        }
    }

    /// The score Pinecone reports for `record` against `query`, computed in f64.
    fn score(self, query: &[f32], record: &[f32]) -> f64 {
        let dot = |a: &[f32], b: &[f32]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum()
        };
        match self {
            Metric::Cosine => {
                dot(query, record) / (dot(query, query).sqrt() * dot(record, record).sqrt())
            }
            Metric::DotProduct => dot(query, record),
            Metric::Euclidean => query
                .iter()
                .zip(record)
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                .sum(),
        }
    }

    /// Best first: descending similarity, or ascending distance for euclidean.
    fn better(self, a: f64, b: f64) -> Ordering {
        match self {
            Metric::Cosine | Metric::DotProduct => b.total_cmp(&a),
            Metric::Euclidean => a.total_cmp(&b),
        }
    }
}

/// `(id, score)` of every record, best first (ties by id ascending, as the server breaks them).
fn reference(metric: Metric, records: &[(String, Vec<f32>)], query: &[f32]) -> Vec<(String, f64)> {
    let mut scored: Vec<(String, f64)> = records
        .iter()
        .map(|(id, values)| (id.clone(), metric.score(query, values)))
        .collect();
    scored.sort_by(|a, b| metric.better(a.1, b.1).then_with(|| a.0.cmp(&b.0)));
    scored
}

fn assert_score(actual: f32, expected: f64, context: &str) {
    let tolerance = 1e-4 * expected.abs().max(1e-3);
    assert!(
        (f64::from(actual) - expected).abs() <= tolerance,
        "{context}: score {actual} != reference {expected}"
    );
}

/// The seeded records `v000`…`v199`.
fn records(rng: &mut XorShift) -> Vec<(String, Vec<f32>)> {
    (0..RECORDS)
        .map(|i| (format!("v{i:03}"), rng.vector()))
        .collect()
}

/// A server with one index of `metric` holding `records` in the default namespace.
async fn index_with(metric: Metric, records: &[(String, Vec<f32>)]) -> (TestServer, DataClient) {
    let server = TestServer::start().await;
    let (_, mut data) = server
        .create_index(
            &format!("scores-{}", metric.name()),
            DIMENSION as i32,
            metric.name(),
        )
        .await;
    let vectors: Vec<Vector> = records
        .iter()
        .map(|(id, values)| Vector {
            id: id.clone(),
            values: values.clone(),
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
    assert_eq!(upserted.upserted_count as usize, records.len());
    (server, data)
}

async fn query(data: &mut DataClient, vector: &[f32], top_k: u32) -> QueryResponse {
    data.query(QueryRequest {
        top_k,
        vector: vector.to_vec(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

/// Ten seeded queries with top_k 10: the ids must be the reference top 10 in order, and each
/// score the reference score.
async fn top_k_matches_brute_force(metric: Metric, seed: u64) {
    let mut rng = XorShift::new(seed);
    let records = records(&mut rng);
    let (server, mut data) = index_with(metric, &records).await;
    for q in 0..QUERIES {
        let vector = rng.vector();
        let expected = reference(metric, &records, &vector);
        // The data must not hold near ties around the cut, or f32 rounding could reorder them.
        for pair in expected[..=TOP_K].windows(2) {
            let gap = (pair[0].1 - pair[1].1).abs();
            assert!(
                gap > 1e-5 * pair[0].1.abs(),
                "seed {seed} query {q}: near tie {pair:?}"
            );
        }
        let response = query(&mut data, &vector, TOP_K as u32).await;
        let ids: Vec<&str> = response.matches.iter().map(|m| m.id.as_str()).collect();
        let expected_ids: Vec<&str> = expected[..TOP_K]
            .iter()
            .map(|(id, _)| id.as_str())
            .collect();
        assert_eq!(ids, expected_ids, "{} query {q}", metric.name());
        for (m, (_, score)) in response.matches.iter().zip(&expected) {
            assert_score(
                m.score,
                *score,
                &format!("{} query {q} id {}", metric.name(), m.id),
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn cosine_top_k_matches_brute_force() {
    top_k_matches_brute_force(Metric::Cosine, 0x5EED_0001).await;
}

#[tokio::test]
async fn dotproduct_top_k_matches_brute_force() {
    top_k_matches_brute_force(Metric::DotProduct, 0x5EED_0002).await;
}

#[tokio::test]
async fn euclidean_top_k_matches_brute_force() {
    top_k_matches_brute_force(Metric::Euclidean, 0x5EED_0003).await;
}

#[tokio::test]
async fn top_k_beyond_the_record_count_returns_every_record() {
    for (metric, seed) in [
        (Metric::Cosine, 11),
        (Metric::DotProduct, 12),
        (Metric::Euclidean, 13),
    ] {
        let mut rng = XorShift::new(seed);
        let records = records(&mut rng);
        let (server, mut data) = index_with(metric, &records).await;
        let vector = rng.vector();
        let expected = reference(metric, &records, &vector);
        let response = query(&mut data, &vector, 1000).await;
        assert_eq!(response.matches.len(), RECORDS, "{}", metric.name());

        let mut ids: Vec<&str> = response.matches.iter().map(|m| m.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(
            ids.len(),
            RECORDS,
            "{}: every record exactly once",
            metric.name()
        );
        for pair in response.matches.windows(2) {
            let order = metric.better(f64::from(pair[0].score), f64::from(pair[1].score));
            assert_ne!(
                order,
                Ordering::Greater,
                "{}: {pair:?} out of order",
                metric.name()
            );
        }
        let by_id: std::collections::HashMap<&str, f64> = expected
            .iter()
            .map(|(id, score)| (id.as_str(), *score))
            .collect();
        for m in &response.matches {
            assert_score(
                m.score,
                by_id[m.id.as_str()],
                &format!("{} id {}", metric.name(), m.id),
            );
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn hand_computed_scores_per_metric() {
    let (query_vector, record) = ([1.0, 2.0, 3.0], [4.0, -5.0, 6.0]);
    for (metric, expected) in [
        // 4 - 10 + 18
        (Metric::DotProduct, 12.0),
        // 3² + 7² + 3², the squared distance, not its root
        (Metric::Euclidean, 67.0),
        // 12 / (√14 · √77)
        (Metric::Cosine, 12.0 / (14f64.sqrt() * 77f64.sqrt())),
    ] {
        let server = TestServer::start().await;
        let (_, mut data) = server.create_index("hand", 3, metric.name()).await;
        data.upsert(UpsertRequest {
            vectors: vec![Vector {
                id: "r".into(),
                values: record.to_vec(),
                ..Default::default()
            }],
            namespace: String::new(),
        })
        .await
        .unwrap();
        let response = query(&mut data, &query_vector, 1).await;
        assert_eq!(response.matches.len(), 1);
        assert_score(response.matches[0].score, expected, metric.name());
        // The reference agrees with the hand computation.
        assert!((metric.score(&query_vector, &record) - expected).abs() < 1e-12);
        server.stop().await;
    }
}

#[tokio::test]
async fn euclidean_ranks_the_closest_first_with_zero_for_itself() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("closest", 2, "euclidean").await;
    data.upsert(UpsertRequest {
        vectors: [
            ("far", [10.0, 0.0]),
            ("near", [1.0, 1.0]),
            ("mid", [3.0, 4.0]),
        ]
        .into_iter()
        .map(|(id, values)| Vector {
            id: id.into(),
            values: values.to_vec(),
            ..Default::default()
        })
        .collect(),
        namespace: String::new(),
    })
    .await
    .unwrap();
    let response = data
        .query(QueryRequest {
            top_k: 3,
            id: "near".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ranked: Vec<(&str, f32)> = response
        .matches
        .iter()
        .map(|m| (m.id.as_str(), m.score))
        .collect();
    // near→mid: 2² + 3² = 13; near→far: 9² + 1² = 82.
    assert_eq!(ranked, [("near", 0.0), ("mid", 13.0), ("far", 82.0)]);
    server.stop().await;
}

#[tokio::test]
async fn cosine_ignores_length_and_dotproduct_does_not() {
    let server = TestServer::start().await;
    let (_, mut cosine) = server.create_index("len-cosine", 2, "cosine").await;
    let (_, mut dot) = server.create_index("len-dot", 2, "dotproduct").await;
    let vectors = || -> Vec<Vector> {
        [
            ("short", [1.0, 0.1]),
            ("long", [100.0, 50.0]),
            ("opposite", [-2.0, 0.0]),
        ]
        .into_iter()
        .map(|(id, values)| Vector {
            id: id.into(),
            values: values.to_vec(),
            ..Default::default()
        })
        .collect()
    };
    for data in [&mut cosine, &mut dot] {
        data.upsert(UpsertRequest {
            vectors: vectors(),
            namespace: String::new(),
        })
        .await
        .unwrap();
    }
    let ranked = |response: QueryResponse| -> Vec<(String, f32)> {
        response
            .matches
            .into_iter()
            .map(|m| (m.id, m.score))
            .collect()
    };

    let by_cosine = ranked(query(&mut cosine, &[10.0, 0.0], 3).await);
    let ids: Vec<&str> = by_cosine.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["short", "long", "opposite"]);
    assert_score(by_cosine[0].1, 1.0 / 1.01f64.sqrt(), "cosine short");
    assert_score(by_cosine[1].1, 100.0 / 12_500f64.sqrt(), "cosine long");
    assert_score(by_cosine[2].1, -1.0, "cosine opposite");
    // Scaling the query changes no cosine score.
    let scaled = ranked(query(&mut cosine, &[0.5, 0.0], 3).await);
    for ((id_a, a), (id_b, b)) in by_cosine.iter().zip(&scaled) {
        assert_eq!(id_a, id_b);
        assert!((a - b).abs() < 1e-6, "{id_a}: {a} vs {b}");
    }

    let by_dot = ranked(query(&mut dot, &[10.0, 0.0], 3).await);
    assert_eq!(
        by_dot,
        [
            ("long".to_owned(), 1000.0),
            ("short".to_owned(), 10.0),
            ("opposite".to_owned(), -20.0)
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn equal_scores_are_ordered_by_id() {
    for metric in [Metric::Cosine, Metric::DotProduct, Metric::Euclidean] {
        let server = TestServer::start().await;
        let (_, mut data) = server.create_index("ties", 2, metric.name()).await;
        data.upsert(UpsertRequest {
            vectors: ["c", "a", "d", "b"]
                .into_iter()
                .map(|id| Vector {
                    id: id.into(),
                    values: vec![1.0, 2.0],
                    ..Default::default()
                })
                .collect(),
            namespace: String::new(),
        })
        .await
        .unwrap();
        let response = query(&mut data, &[0.5, 0.5], 3).await;
        let ids: Vec<&str> = response.matches.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"], "{}", metric.name());
        assert!(
            response
                .matches
                .windows(2)
                .all(|p| p[0].score == p[1].score)
        );
        server.stop().await;
    }
}
