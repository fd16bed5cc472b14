//! Graceful shutdown under load: SIGTERM while clients keep writing and querying. Every request
//! the server accepted completes (it answers OK or, once it stopped accepting, the request is
//! refused as UNAVAILABLE — never cut off half-way), the process exits 0, and every
//! acknowledged write is there after a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use larch_proto::control::CreateIndexRequest;
use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{FetchRequest, QueryRequest, UpsertRequest, Vector};
use tonic::Code;

use super::harness::*;

const KEY: &str = "drain-test-key";
const DIMENSION: usize = 64;
const WRITERS: usize = 6;
const READERS: usize = 4;
const BATCH: usize = 100;

/// One request as the client saw it.
struct Call {
    started: Instant,
    finished: Instant,
    result: Result<Vec<String>, tonic::Status>,
}

fn batch(writer: usize, round: usize) -> Vec<Vector> {
    (0..BATCH)
        .map(|i| Vector {
            id: format!("w{writer}-r{round}-{i}"),
            values: (0..DIMENSION)
                .map(|d| ((writer * 31 + round * 7 + i + d) % 97) as f32 / 97.0)
                .collect(),
            ..Default::default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_accepted_requests_and_loses_no_acknowledged_write() {
    let data_dir = tempfile::tempdir().unwrap();
    let env = [("LARCH_API_KEY", KEY), ("LARCH_DRAIN_TIMEOUT_SECS", "20")];
    let larch = Larch::serve(data_dir.path(), &env);
    let addr = larch.control_addr().to_string();
    wait_serving(&addr, "").await;
    let host = IndexServiceClient::new(connect(&addr).await)
        .create_index(with_key(
            CreateIndexRequest {
                name: "busy".into(),
                dimension: Some(DIMENSION as i32),
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

    // Clients loop until their first error (the server is gone) and record every call.
    let successes = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for client in 0..WRITERS + READERS {
        let (host, successes) = (host.clone(), Arc::clone(&successes));
        tasks.push(tokio::spawn(async move {
            let mut data = VectorServiceClient::new(connect(&host).await);
            let mut calls = Vec::new();
            for round in 0.. {
                let started = Instant::now();
                let result = if client < WRITERS {
                    let vectors = batch(client, round);
                    let ids = vectors.iter().map(|v| v.id.clone()).collect();
                    data.upsert(with_key(
                        UpsertRequest {
                            vectors,
                            namespace: String::new(),
                        },
                        Some(KEY),
                    ))
                    .await
                    .map(|_| ids)
                } else {
                    data.query(with_key(
                        QueryRequest {
                            vector: vec![0.5; DIMENSION],
                            top_k: 10,
                            ..Default::default()
                        },
                        Some(KEY),
                    ))
                    .await
                    .map(|_| Vec::new())
                };
                let failed = result.is_err();
                if !failed {
                    successes.fetch_add(1, Ordering::Relaxed);
                }
                calls.push(Call {
                    started,
                    finished: Instant::now(),
                    result,
                });
                if failed || round > 100_000 {
                    break;
                }
            }
            calls
        }));
    }

    // A steady stream first: every client has had a few answers.
    let deadline = Instant::now() + TIMEOUT;
    while successes.load(Ordering::Relaxed) < 5 * (WRITERS + READERS) {
        assert!(Instant::now() < deadline, "the clients never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let signalled = Instant::now();
    let mut larch = larch;
    let exit = tokio::task::spawn_blocking(move || {
        let exit = larch.terminate();
        (exit, larch.stderr())
    });

    let mut calls = Vec::new();
    for task in tasks {
        calls.extend(
            tokio::time::timeout(TIMEOUT * 3, task)
                .await
                .expect("clients end")
                .unwrap(),
        );
    }
    let (exit, stderr) = exit.await.unwrap();
    assert_eq!(exit.code(), Some(0), "stderr:\n{stderr}");

    // No accepted request was cut off: the only failures are requests the server never took —
    // UNAVAILABLE (connection refused), one the client had queued on a connection that closed
    // before it was sent (hyper's `Canceled`, "a pending item was dropped before ever being
    // processed"), or a stream above the last one the server's GOAWAY (NO_ERROR) says it
    // processed (HTTP/2: such streams were not processed and are safe to retry; tonic's client
    // reports them as INTERNAL "h2 protocol error"), or one written after the server closed the
    // drained connection (a broken pipe). A request cut off mid-way would show up as a reset
    // stream or a broken response instead.
    for status in calls.iter().filter_map(|c| c.result.as_ref().err()) {
        let debug = format!("{status:?}");
        let never_sent = status.code() == Code::Cancelled
            && debug.contains("hyper::Error(Canceled, \"connection closed\")");
        let refused_by_goaway =
            status.code() == Code::Internal && debug.contains("GoAway(b\"\", NO_ERROR, Remote)");
        // The connection was gone when the client wrote the request: a graceful drain closes a
        // connection only after answering every stream it took, so a stream still open on it
        // then is one the server never took (seen once under fresh-clone CI load).
        let written_after_close = status.code() == Code::Unknown
            && debug
                .contains("kind: BrokenPipe, error: \"stream closed because of a broken pipe\"");
        assert!(
            status.code() == Code::Unavailable
                || never_sent
                || refused_by_goaway
                || written_after_close,
            "an accepted request failed: {status:?}"
        );
    }
    // The shutdown did drain: requests in flight when SIGTERM was sent were answered.
    let drained = calls
        .iter()
        .filter(|c| c.started < signalled && c.finished > signalled && c.result.is_ok())
        .count();
    assert!(drained > 0, "no request was in flight at SIGTERM");

    // Every acknowledged write survived.
    let acknowledged: Vec<String> = calls
        .iter()
        .filter_map(|c| c.result.as_ref().ok())
        .flatten()
        .cloned()
        .collect();
    assert!(!acknowledged.is_empty());
    let larch = Larch::serve(data_dir.path(), &env);
    let addr = larch.control_addr().to_string();
    wait_serving(&addr, "").await;
    wait_serving(&host, "").await;
    let mut data = VectorServiceClient::new(connect(&host).await);
    for ids in acknowledged.chunks(1000) {
        let fetched = data
            .fetch(with_key(
                FetchRequest {
                    ids: ids.to_vec(),
                    namespace: String::new(),
                },
                Some(KEY),
            ))
            .await
            .unwrap()
            .into_inner();
        let missing: Vec<&String> = ids
            .iter()
            .filter(|id| !fetched.vectors.contains_key(*id))
            .collect();
        assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    }
    drop(larch);
}
