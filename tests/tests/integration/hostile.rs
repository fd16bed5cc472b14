//! Hostile clients (issue 14, items 1, 8 and 9), against real servers on real sockets: floods
//! of HTTP/2 streams that send headers and never a body — without a key, with a wrong key, and
//! with a valid key — do not lock keyed clients out of either plane; a client's slow bodies
//! are cut off by the body deadline and its streams are capped per address; a keyless request
//! in split mode learns nothing about which hosts are served; and junk paths cannot grow the
//! metrics' label set.
//!
//! The defences: every port checks the key from the headers before its request limits admit
//! anything (`larch_auth::http::AuthenticateLayer` outside `larch_observe::limits`), the limits
//! take a client's per-address slot before waiting for its body and the process-wide slot
//! only once the body has started, and `--body-timeout` bounds that wait.
//!
//! Time is never asserted: waits are bounded by a generous [`PROMPTLY`], and a flood's streams
//! are known to have reached the server by a PING round trip on their connection (HTTP/2
//! frames are read in order).

use std::time::Duration;

use bytes::Bytes;
use h2::SendStream;
use h2::client::{ResponseFuture, SendRequest};
use http::HeaderMap;
use larch_auth::ApiKey;
use larch_control_plane::LimitSettings;
use larch_proto::control::ListIndexesRequest;
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{QueryRequest, UpsertRequest, Vector};
use larch_tests::{KeyInterceptor, TestServer, wait_serving};

use crate::routed_server::RoutedServer;
use tokio::net::TcpStream;
use tonic::Code;
use tonic::transport::Endpoint;

/// What "promptly" means here: far above any real answer time, even on a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(60);

async fn promptly<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(PROMPTLY, work)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {PROMPTLY:?}"))
}

/// `host:port` of an index's data plane, from its `host`.
fn authority(host: &str) -> String {
    host.trim_start_matches("http://").to_owned()
}

/// One HTTP/2 connection holding streams that sent their headers and nothing more.
struct Flood {
    /// Each stream's response and its (never used) body sender: dropping the sender would
    /// reset the stream, so they are kept.
    streams: Vec<(ResponseFuture, SendStream<Bytes>)>,
    _send: SendRequest<Bytes>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Flood {
    /// Opens a connection to `addr` and sends `count` gRPC request heads for `path` with `key`
    /// (none: no `api-key` at all) and no body; returns once the server has read them all.
    async fn open(addr: &str, path: &str, key: Option<&str>, count: usize) -> Flood {
        Flood::open_paths(addr, vec![path.to_owned(); count], key, false).await
    }

    /// [`Flood::open`] with one stream per path of `paths`; `ended`: each stream's headers
    /// also end it (an empty body).
    async fn open_paths(addr: &str, paths: Vec<String>, key: Option<&str>, ended: bool) -> Flood {
        let io = TcpStream::connect(addr).await.unwrap();
        let (send, mut connection) = h2::client::handshake(io).await.unwrap();
        let mut ping = connection.ping_pong().expect("the first ping_pong");
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut streams = Vec::with_capacity(paths.len());
        for path in paths {
            let mut ready = send.clone().ready().await.unwrap();
            let mut head = http::Request::post(format!("http://{addr}{path}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers");
            if let Some(key) = key {
                head = head.header("api-key", key);
            }
            streams.push(ready.send_request(head.body(()).unwrap(), ended).unwrap());
        }
        // Frames are read in order: once the PING is answered, every HEADERS was read.
        promptly("ping", ping.ping(h2::Ping::opaque()))
            .await
            .unwrap();
        Flood {
            streams,
            _send: send,
            driver,
        }
    }

    /// Waits for every stream's answer and returns each `grpc-status` with its message.
    async fn answers(&mut self) -> Vec<(String, String)> {
        let mut answers = Vec::new();
        for (response, _) in self.streams.drain(..) {
            let response = promptly("flood answer", response).await.unwrap();
            let (parts, mut body) = response.into_parts();
            let trailers = match parts.headers.contains_key("grpc-status") {
                true => parts.headers,
                false => promptly("trailers", body.trailers())
                    .await
                    .unwrap()
                    .unwrap_or_default(),
            };
            answers.push(status_of(&trailers));
        }
        answers
    }
}

fn status_of(headers: &HeaderMap) -> (String, String) {
    let text = |name: &str| {
        headers
            .get(name)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    (
        text("grpc-status"),
        text("grpc-message").replace("%20", " "),
    )
}

fn vectors() -> Vec<Vector> {
    (0..3)
        .map(|i| Vector {
            id: format!("v{i}"),
            values: vec![1.0 + i as f32, 1.0],
            ..Default::default()
        })
        .collect()
}

fn query() -> QueryRequest {
    QueryRequest {
        top_k: 3,
        vector: vec![1.0, 1.0],
        ..Default::default()
    }
}

/// The reviewer's reproduction of issue 14 with a budget of 16: three connections of 32
/// keyless header-only `Query` streams, one of keyless `ListIndexes` streams on the control
/// plane and two of wrong-key streams (whose refusals the failed-authentication slowdown
/// holds back for seconds) are all held open; meanwhile keyed queries and `ListIndexes` are
/// answered, every time, and health says SERVING. Before the fix each of those streams held
/// a slot of the in-flight budget while its body was awaited, and keyed calls got
/// RESOURCE_EXHAUSTED for as long as the streams were held.
#[tokio::test]
async fn keyless_and_wrong_key_floods_do_not_lock_keyed_clients_out() {
    let server = TestServer::start_limited(LimitSettings {
        max_concurrent_requests: 16,
        ..LimitSettings::default()
    })
    .await;
    let (model, mut data) = server.create_index("flooded", 2, "euclidean").await;
    let data_addr = authority(&model.host);
    let control_addr = server.control_addr.to_string();
    data.upsert(UpsertRequest {
        vectors: vectors(),
        namespace: String::new(),
    })
    .await
    .unwrap();

    let wrong = ApiKey::generate();
    let mut floods = Vec::new();
    for _ in 0..3 {
        floods.push(Flood::open(&data_addr, "/VectorService/Query", None, 32).await);
    }
    floods.push(
        Flood::open(
            &control_addr,
            "/larch.control.v1.IndexService/ListIndexes",
            None,
            32,
        )
        .await,
    );
    for _ in 0..2 {
        floods
            .push(Flood::open(&data_addr, "/VectorService/Query", Some(wrong.as_str()), 32).await);
    }

    let mut control = server.control().await;
    for round in 0..10 {
        let answer = promptly("keyed query", data.query(query())).await;
        let matches = answer
            .unwrap_or_else(|err| panic!("keyed query {round} refused during the flood: {err:?}"))
            .into_inner()
            .matches;
        assert_eq!(matches.len(), 3);
        let listed = promptly("ListIndexes", control.list_indexes(ListIndexesRequest {})).await;
        let listed = listed
            .unwrap_or_else(|err| panic!("ListIndexes {round} refused during the flood: {err:?}"));
        assert_eq!(listed.into_inner().indexes.len(), 1);
    }
    wait_serving(&data_addr).await;

    // Every flood stream was refused from its headers: UNAUTHENTICATED, no body needed.
    for flood in &mut floods {
        for (code, message) in flood.answers().await {
            assert_eq!(code, "16", "{message}");
        }
    }
    drop(floods);
    server.stop().await;
}

/// A keyed client that sends headers and no body holds only its own address's slots: the
/// process budget (4 here) stays free for others; past `max_requests_per_peer` its next
/// request is refused naming the flag while another address is served. Before the fix the
/// waiting requests held the process budget, and everyone got RESOURCE_EXHAUSTED.
#[tokio::test]
async fn slow_bodies_hold_only_their_own_address() {
    let server = TestServer::start_limited(LimitSettings {
        max_concurrent_requests: 4,
        max_requests_per_peer: 12,
        // Never reached here: the slots are held for as long as the test wants.
        body_timeout: PROMPTLY * 2,
        ..LimitSettings::default()
    })
    .await;
    let (model, mut data) = server.create_index("slow", 2, "euclidean").await;
    let data_addr = authority(&model.host);
    data.upsert(UpsertRequest {
        vectors: vectors(),
        namespace: String::new(),
    })
    .await
    .unwrap();
    let key = server.key.clone();

    // 8 slow streams from 127.0.0.1: twice the process budget, within the per-address one.
    let slow = Flood::open(&data_addr, "/VectorService/Query", Some(&key), 8).await;
    let answer = promptly("keyed query beside slow bodies", data.query(query())).await;
    assert_eq!(answer.expect("answered").into_inner().matches.len(), 3);

    // 4 more fill the address's 12 slots: its next request is refused, another's is not.
    let more = Flood::open(&data_addr, "/VectorService/Query", Some(&key), 4).await;
    let refused = promptly("refused query", data.query(query()))
        .await
        .expect_err("past the per-address limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("--max-requests-per-peer"),
        "{refused:?}"
    );
    let elsewhere = Endpoint::from_shared(format!("http://{data_addr}"))
        .unwrap()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .connect()
        .await
        .unwrap();
    let mut elsewhere =
        VectorServiceClient::with_interceptor(elsewhere, KeyInterceptor::new(Some(&key)));
    let answer = promptly("query from another address", elsewhere.query(query())).await;
    assert_eq!(answer.expect("answered").into_inner().matches.len(), 3);

    // Closing the slow connection gives its slots back.
    drop((slow, more));
    promptly("slots freed", async {
        loop {
            match data.query(query()).await {
                Ok(answer) => break assert_eq!(answer.into_inner().matches.len(), 3),
                // The server sees the streams reset soon, not at once.
                Err(status) if status.code() == Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => panic!("{status:?}"),
            }
        }
    })
    .await;
    server.stop().await;
}

/// A request whose body does not start within `body_timeout` of its headers is answered
/// DEADLINE_EXCEEDED naming `--body-timeout`, and what it held is free again: with a budget
/// of one, a query goes through afterwards.
#[tokio::test]
async fn a_body_that_does_not_start_in_time_is_cut_off() {
    let server = TestServer::start_limited(LimitSettings {
        max_concurrent_requests: 1,
        max_requests_per_peer: 1,
        body_timeout: Duration::from_millis(500),
        ..LimitSettings::default()
    })
    .await;
    let (model, mut data) = server.create_index("late", 2, "euclidean").await;
    let data_addr = authority(&model.host);
    let mut late = Flood::open(&data_addr, "/VectorService/Query", Some(&server.key), 1).await;
    for (code, message) in late.answers().await {
        assert_eq!(code, "4", "{message}");
        assert!(message.contains("--body-timeout"), "{message}");
    }
    drop(late);
    promptly("slot freed", async {
        loop {
            match data.query(query()).await {
                Ok(answer) => break assert!(answer.into_inner().matches.is_empty()),
                // The slot goes back once the answer has been sent, just after it arrives.
                Err(status) if status.code() == Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => panic!("{status:?}"),
            }
        }
    })
    .await;
    server.stop().await;
}

/// Junk gRPC paths — hundreds of distinct ones, under real services and not, with and without
/// a key — are all counted under one `rpc` label: a client cannot grow the metrics' label set
/// (nor push real RPCs out of it).
#[tokio::test]
async fn junk_paths_do_not_grow_the_metrics_label_set() {
    let server = TestServer::start().await;
    let (model, _data) = server.create_index("labels", 2, "euclidean").await;
    let data_addr = authority(&model.host);
    let control_addr = server.control_addr.to_string();
    let mut sent = 0;
    for (addr, prefix) in [
        (&data_addr, "/VectorService/Junk"),
        (&data_addr, "/junk.Service/Method"),
        (&control_addr, "/larch.control.v1.IndexService/Junk"),
        (&control_addr, "/Junk"),
    ] {
        for key in [None, Some(server.key.as_str())] {
            let paths = (0..40).map(|i| format!("{prefix}{i}")).collect();
            let mut junk = Flood::open_paths(addr, paths, key, true).await;
            for (code, message) in junk.answers().await {
                assert_ne!(code, "0", "{prefix}: {message}");
                sent += 1;
            }
        }
    }
    assert_eq!(sent, 320);
    let text = server.metrics().render();
    let labels: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|line| line.starts_with("larch_requests_total{"))
        .filter_map(|line| line.split("rpc=\"").nth(1)?.split('"').next())
        .collect();
    assert!(labels.contains("unrouted"), "{labels:?}");
    assert!(
        labels
            .iter()
            .all(|label| !label.contains("Junk") && !label.contains("junk") && *label != "other"),
        "{labels:?}"
    );
    assert!(labels.len() < 16, "{labels:?}");
    server.stop().await;
}

/// Split mode: a request without a valid key gets UNAUTHENTICATED whether an index is served
/// at its host or not, so hosts cannot be probed without a key; a valid key at an unknown host
/// still gets NOT_FOUND naming the host, and at the index's host its answer. Before the fix
/// a keyless request to an unknown host got NOT_FOUND and one to a served host
/// UNAUTHENTICATED.
#[tokio::test]
async fn split_mode_authenticates_before_routing() {
    let server = RoutedServer::start().await;
    let admin = &server.admin;
    let host = "movies.default.larch.test";
    server.attach("movies", "euclidean", host).await;

    let wrong = ApiKey::generate();
    let ask = async |host: &str, key: Option<&str>| {
        let channel = server.via(host).await;
        let mut client = VectorServiceClient::with_interceptor(channel, KeyInterceptor::new(key));
        promptly("query", client.query(query())).await
    };
    for key in [None, Some(wrong.as_str()), Some("")] {
        for at in [host, "nothing.default.larch.test"] {
            let err = ask(at, key).await.expect_err("no valid key");
            assert_eq!(err.code(), Code::Unauthenticated, "{at} {key:?}: {err:?}");
            assert!(!err.message().contains("no index"), "{err:?}");
        }
    }
    let err = ask("nothing.default.larch.test", Some(admin.as_str()))
        .await
        .expect_err("no index there");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("nothing.default.larch.test"),
        "{err:?}"
    );
    let answer = ask(host, Some(admin.as_str())).await.expect("served");
    assert!(answer.into_inner().matches.is_empty());

    server.stop().await;
}
