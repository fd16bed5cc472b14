//! Crash safety of the real binary: concurrent writers, `SIGKILL` at random moments, restart,
//! and a check that every acknowledged write is there — exactly — and that a write whose
//! outcome the client never heard is either wholly applied or wholly absent.
//!
//! Each writer owns its ids, so the expected state of an id is exact: the last acknowledged
//! write, or — for the one request in flight when the process died — that write or the one
//! before. Records come in pairs (`pN` and `pN-twin`) written by the same request (an upsert
//! of both, a delete of both, an update by filter matching both), so a half-applied request
//! would show as a pair that disagrees.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::control::{CreateIndexRequest, DescribeIndexRequest};
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{DeleteRequest, FetchRequest, UpdateRequest, UpsertRequest, Vector};
use prost_types::value::Kind;
use prost_types::{Struct, Value};
use tokio::sync::Mutex;

use super::harness::*;

const KEY: &str = "crash-test-key";
const WRITERS: usize = 4;
const PAIRS_PER_WRITER: usize = 10;
/// Kill/restart cycles; `LARCH_CRASH_CYCLES` raises it for a longer soak.
const DEFAULT_CYCLES: usize = 6;

/// What a pair holds: absent, or values `[x, 1, 0, 0]` with metadata `v`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Absent,
    Present { x: f32, v: f64 },
}

/// The model of one pair: the last acknowledged state, and the state of a request whose
/// answer never came (the process was killed).
#[derive(Debug, Clone, Copy)]
struct Expect {
    acked: State,
    in_flight: Option<State>,
}

/// Tiny xorshift PRNG; a fixed seed per writer keeps runs reproducible in shape.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn metadata(pair: &str, v: f64) -> Option<Struct> {
    let value = |kind| Value { kind: Some(kind) };
    Some(Struct {
        fields: [
            ("pair".to_owned(), value(Kind::StringValue(pair.to_owned()))),
            ("v".to_owned(), value(Kind::NumberValue(v))),
        ]
        .into_iter()
        .collect(),
    })
}

/// `{"pair": pair}`: matches both records of a pair.
fn pair_filter(pair: &str) -> Struct {
    let value = Value {
        kind: Some(Kind::StringValue(pair.to_owned())),
    };
    Struct {
        fields: [("pair".to_owned(), value)].into_iter().collect(),
    }
}

fn with_api_key<T>(message: T) -> tonic::Request<T> {
    with_key(message, Some(KEY))
}

type Model = Arc<Mutex<HashMap<String, Expect>>>;

/// Writes to its own pairs until a request fails (the server was killed) or `stop` is set.
async fn writer(host: String, model: Model, writer: usize, cycle: usize, stop: Arc<AtomicBool>) {
    let mut client = VectorServiceClient::new(connect(&host).await);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((writer as u64 + 1) << 20) ^ cycle as u64);
    let mut counter = (cycle * 1_000_000) as f64;
    while !stop.load(Ordering::Relaxed) {
        counter += 1.0;
        let pair = format!("w{writer}-p{}", rng.below(PAIRS_PER_WRITER as u64));
        let twin = format!("{pair}-twin");
        let current = model.lock().await[&pair].acked;
        let choice = rng.below(10);
        let next = match (choice, current) {
            (0..=5, _) | (6..=7, State::Absent) => State::Present {
                x: counter as f32,
                v: counter,
            },
            (6..=7, State::Present { x, .. }) => State::Present { x, v: counter },
            _ => State::Absent,
        };
        model
            .lock()
            .await
            .get_mut(&pair)
            .expect("pairs are seeded")
            .in_flight = Some(next);
        let result = match (choice, current, next) {
            (6..=7, State::Present { .. }, State::Present { v, .. }) => client
                .update(with_api_key(UpdateRequest {
                    set_metadata: metadata(&pair, v),
                    filter: Some(pair_filter(&pair)),
                    namespace: "crash".into(),
                    ..Default::default()
                }))
                .await
                .map(|r| assert_eq!(r.into_inner().matched_records, Some(2), "{pair}")),
            (_, _, State::Present { x, v }) => client
                .upsert(with_api_key(UpsertRequest {
                    vectors: [&pair, &twin]
                        .into_iter()
                        .map(|id| Vector {
                            id: id.clone(),
                            values: vec![x, 1.0, 0.0, 0.0],
                            sparse_values: None,
                            metadata: metadata(&pair, v),
                        })
                        .collect(),
                    namespace: "crash".into(),
                }))
                .await
                .map(|r| assert_eq!(r.into_inner().upserted_count, 2)),
            (_, _, State::Absent) => client
                .delete(with_api_key(DeleteRequest {
                    ids: vec![pair.clone(), twin.clone()],
                    namespace: "crash".into(),
                    ..Default::default()
                }))
                .await
                .map(|_| ()),
        };
        let mut model = model.lock().await;
        let expect = model.get_mut(&pair).expect("pairs are seeded");
        match result {
            Ok(()) => {
                *expect = Expect {
                    acked: next,
                    in_flight: None,
                }
            }
            // The server is gone: the outcome of this request is unknown.
            Err(_) => return,
        }
    }
}

/// Reads every pair and checks it against the model; returns the model as observed.
async fn verify(host: &str, model: &Model, cycle: usize) {
    let mut client = VectorServiceClient::new(connect(host).await);
    let mut model = model.lock().await;
    let ids: Vec<String> = model
        .keys()
        .flat_map(|pair| [pair.clone(), format!("{pair}-twin")])
        .collect();
    let fetched = client
        .fetch(with_api_key(FetchRequest {
            ids,
            namespace: "crash".into(),
        }))
        .await
        .expect("fetch after restart")
        .into_inner()
        .vectors;
    let state_of = |id: &str| match fetched.get(id) {
        None => State::Absent,
        Some(vector) => {
            let v = match vector
                .metadata
                .as_ref()
                .and_then(|m| m.fields.get("v"))
                .and_then(|v| v.kind.clone())
            {
                Some(Kind::NumberValue(v)) => v,
                other => panic!("{id}: metadata v missing: {other:?}"),
            };
            assert_eq!(vector.values[1..], [1.0, 0.0, 0.0], "{id}");
            State::Present {
                x: vector.values[0],
                v,
            }
        }
    };
    for (pair, expect) in model.iter_mut() {
        let found = state_of(pair);
        let twin = state_of(&format!("{pair}-twin"));
        assert_eq!(found, twin, "cycle {cycle}: {pair} was half-applied");
        assert!(
            found == expect.acked || Some(found) == expect.in_flight,
            "cycle {cycle}: {pair} is {found:?}, expected {:?} (acknowledged) or {:?} (in flight)",
            expect.acked,
            expect.in_flight
        );
        *expect = Expect {
            acked: found,
            in_flight: None,
        };
    }
}

async fn index_host(addr: &str) -> String {
    IndexServiceClient::new(connect(addr).await)
        .describe_index(with_api_key(DescribeIndexRequest {
            name: "crash".into(),
        }))
        .await
        .expect("the index survives the crash")
        .into_inner()
        .host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    let cycles = std::env::var("LARCH_CRASH_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CYCLES);
    let data_dir = tempfile::tempdir().unwrap();
    let env = [("LARCH_API_KEY", KEY)];
    let mut larch = Larch::serve(data_dir.path(), &env);
    let addr = larch.control_addr().to_string();
    wait_serving(&addr, "").await;
    let host = IndexServiceClient::new(connect(&addr).await)
        .create_index(with_api_key(CreateIndexRequest {
            name: "crash".into(),
            dimension: Some(4),
            metric: Some("euclidean".into()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .host;
    let model: Model = Arc::new(Mutex::new(
        (0..WRITERS)
            .flat_map(|w| (0..PAIRS_PER_WRITER).map(move |p| format!("w{w}-p{p}")))
            .map(|pair| {
                let expect = Expect {
                    acked: State::Absent,
                    in_flight: None,
                };
                (pair, expect)
            })
            .collect(),
    ));
    let mut rng = Rng(42);
    let mut host = host;
    let mut acked_total = 0;
    for cycle in 0..cycles {
        wait_serving(&host, "").await;
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(writer(
                    host.clone(),
                    Arc::clone(&model),
                    w,
                    cycle,
                    Arc::clone(&stop),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100 + rng.below(300))).await;
        larch.kill();
        for w in writers {
            w.await.unwrap();
        }
        acked_total += model
            .lock()
            .await
            .values()
            .filter(|e| e.acked != State::Absent)
            .count();

        larch = Larch::serve(data_dir.path(), &env);
        let addr = larch.control_addr().to_string();
        wait_serving(&addr, "").await;
        let new_host = index_host(&addr).await;
        assert_eq!(new_host, host, "cycle {cycle}: the index keeps its host");
        host = new_host;
        wait_serving(&host, "").await;
        verify(&host, &model, cycle).await;
    }
    println!("{cycles} cycles, {acked_total} acknowledged pairs present at the kills");
    assert!(
        acked_total > 0,
        "the writers never got a write acknowledged"
    );
}
