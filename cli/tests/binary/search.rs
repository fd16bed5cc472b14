//! Approximate search in the real binary: with `--ann-min-rows` low, a namespace gets an HNSW
//! graph from the background indexer (its "namespace fully indexed" log event), queries answer
//! from it with filters and per-index `ef_search`, deleted records never come back, and after
//! a restart the graph is built again from the recovered records.

use std::time::{Duration, Instant};

use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::control::{ConfigureIndexRequest, CreateIndexRequest, SearchParams};
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{DeleteRequest, QueryRequest, UpsertRequest, Vector};
use prost_types::{Struct, Value, value::Kind};

use super::harness::*;

const KEY: &str = "search-test-key";
const RECORDS: usize = 600;
const DIM: usize = 8;

/// Deterministic, distinct pseudo-random vectors.
fn values(i: usize) -> Vec<f32> {
    let mut state = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..DIM)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn group(i: usize) -> f64 {
    (i % 3) as f64
}

fn metadata(i: usize) -> Struct {
    Struct {
        fields: [(
            "g".to_owned(),
            Value {
                kind: Some(Kind::NumberValue(group(i))),
            },
        )]
        .into(),
    }
}

/// Waits until the server logged the namespace fully indexed `times` times.
fn wait_fully_indexed(larch: &Larch, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logged = larch
            .stderr()
            .lines()
            .filter(|line| {
                line.contains("namespace fully indexed")
                    && line.contains(&format!("records={RECORDS}"))
            })
            .count();
        if logged >= times {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never fully indexed; stderr:\n{}",
            larch.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn query(host: &str, vector: Vec<f32>, filter: Option<Struct>) -> Vec<(String, Option<f64>)> {
    VectorServiceClient::new(connect(host).await)
        .query(with_key(
            QueryRequest {
                vector,
                top_k: 5,
                filter,
                include_metadata: true,
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner()
        .matches
        .into_iter()
        .map(|m| {
            let g = m.metadata.and_then(|s| match s.fields.get("g")?.kind {
                Some(Kind::NumberValue(g)) => Some(g),
                _ => None,
            });
            (m.id, g)
        })
        .collect()
}

fn filter_group(g: f64) -> Struct {
    Struct {
        fields: [(
            "g".to_owned(),
            Value {
                kind: Some(Kind::NumberValue(g)),
            },
        )]
        .into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_answers_queries_filters_and_deletes_and_is_rebuilt_after_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    let env = [("LARCH_API_KEY", KEY), ("LARCH_ANN_MIN_ROWS", "100")];
    let mut larch = Larch::serve(data_dir.path(), &env);
    let addr = larch.control_addr().to_string();
    wait_serving(&addr, "").await;
    let mut control = IndexServiceClient::new(connect(&addr).await);
    let host = control
        .create_index(with_key(
            CreateIndexRequest {
                name: "ann".into(),
                dimension: Some(DIM as i32),
                metric: Some("euclidean".into()),
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap()
        .into_inner()
        .host;
    wait_serving(&host, "").await;
    let mut data = VectorServiceClient::new(connect(&host).await);
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(200) {
        let vectors = chunk
            .iter()
            .map(|&i| Vector {
                id: format!("r{i}"),
                values: values(i),
                metadata: Some(metadata(i)),
                ..Default::default()
            })
            .collect();
        data.upsert(with_key(
            UpsertRequest {
                vectors,
                namespace: String::new(),
            },
            Some(KEY),
        ))
        .await
        .unwrap();
    }
    wait_fully_indexed(&larch, 1);

    for i in (0..RECORDS).step_by(37) {
        let found = query(&host, values(i), None).await;
        assert_eq!(found.len(), 5);
        assert_eq!(found[0].0, format!("r{i}"), "{found:?}");
        let filtered = query(&host, values(i), Some(filter_group(group(i + 1)))).await;
        assert_eq!(filtered.len(), 5);
        assert!(
            filtered.iter().all(|(_, g)| *g == Some(group(i + 1))),
            "{filtered:?}"
        );
    }

    // A larger ef_search through the control plane; deleted records never come back.
    control
        .configure_index(with_key(
            ConfigureIndexRequest {
                name: "ann".into(),
                search: Some(SearchParams {
                    ef_search: Some(200),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Some(KEY),
        ))
        .await
        .unwrap();
    data.delete(with_key(
        DeleteRequest {
            ids: (0..50).map(|i| format!("r{i}")).collect(),
            ..Default::default()
        },
        Some(KEY),
    ))
    .await
    .unwrap();
    for i in (0..50).step_by(7) {
        let found = query(&host, values(i), None).await;
        assert_eq!(found.len(), 5);
        assert!(
            found
                .iter()
                .all(|(id, _)| id[1..].parse::<usize>().unwrap() >= 50),
            "{found:?}"
        );
    }

    // Recovered records get a graph again.
    assert!(larch.terminate().success());
    let mut larch = Larch::serve(data_dir.path(), &env);
    let addr = larch.control_addr().to_string();
    wait_serving(&addr, "").await;
    wait_serving(&host, "").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !larch
        .stderr()
        .contains(&format!("records={}", RECORDS - 50))
    {
        assert!(
            Instant::now() < deadline,
            "not indexed after restart:\n{}",
            larch.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let found = query(&host, values(123), None).await;
    assert_eq!(found[0].0, "r123");
    larch.terminate();
}
