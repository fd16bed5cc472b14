//! Request limits (issue 8, item 1) against real servers: the message size limit refuses an
//! oversized upsert with INVALID_ARGUMENT naming the limit, and a 128 MiB announcement after
//! its 5-byte prefix, without the rest being sent; deadlines answer DEADLINE_EXCEEDED and an
//! expired request does no work; past the in-flight limit requests get RESOURCE_EXHAUSTED with
//! a retry pushback while health checks still answer. Refused requests change nothing.

use std::time::Duration;

use bytes::Bytes;
use larch_control_plane::LimitSettings;
use larch_proto::pinecone::{DescribeIndexStatsRequest, FetchRequest, UpsertRequest, Vector};
use larch_tests::{DataClient, TestServer};
use tonic::Code;

/// Far above any real answer time: a stall fails the test instead of hanging it.
const PROMPTLY: Duration = Duration::from_secs(60);

fn vectors(count: usize, dimension: usize, prefix: &str) -> Vec<Vector> {
    (0..count)
        .map(|i| Vector {
            id: format!("{prefix}{i}"),
            values: (0..dimension).map(|d| 1.0 + (i + d) as f32).collect(),
            ..Default::default()
        })
        .collect()
}

async fn count(data: &mut DataClient) -> u32 {
    data.describe_index_stats(DescribeIndexStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .total_vector_count
}

/// `host:port` of an index's data plane, from its `host`.
fn authority(host: &str) -> String {
    host.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn oversized_upserts_are_refused_naming_the_limit() {
    let server = TestServer::start().await;
    let (_, mut data) = server.create_index("big", 700, "euclidean").await;
    // 1000 vectors of 700 floats: about 2.8 MB, above the 2 MiB limit.
    let err = data
        .upsert(UpsertRequest {
            vectors: vectors(1000, 700, "v"),
            namespace: String::new(),
        })
        .await
        .expect_err("too large");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("limit is 2097152 bytes"), "{err:?}");
    assert!(err.message().contains("--max-request-bytes"), "{err:?}");
    // 1001 vectors, small enough in bytes: the count limit.
    let err = data
        .upsert(UpsertRequest {
            vectors: vectors(1001, 2, "w")
                .into_iter()
                .map(|v| Vector {
                    values: (0..700).map(|d| d as f32 + 1.0).take(2).collect(),
                    ..v
                })
                .collect(),
            namespace: String::new(),
        })
        .await
        .expect_err("too many");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("1000"), "{err:?}");
    assert_eq!(count(&mut data).await, 0, "refused upserts stored nothing");
    // Just under the limit in bytes: accepted.
    data.upsert(UpsertRequest {
        vectors: vectors(600, 700, "ok"),
        namespace: String::new(),
    })
    .await
    .expect("under the limit");
    assert_eq!(count(&mut data).await, 600);
    server.stop().await;
}

/// An HTTP/2 connection to `host` and a gRPC request on it whose body is left open.
async fn open_grpc_request(
    host: &str,
    key: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (
    h2::client::ResponseFuture,
    h2::SendStream<Bytes>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let mut request = http::Request::post(format!("http://{host}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("api-key", key);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let request = request.body(()).unwrap();
    let (response, body) = client.send_request(request, false).unwrap();
    (response, body, driver)
}

#[tokio::test]
async fn a_128_mib_announcement_is_refused_after_its_prefix() {
    let server = TestServer::start().await;
    let (model, mut data) = server.create_index("frame", 4, "cosine").await;
    let host = authority(&model.host);
    let (response, mut body, driver) =
        open_grpc_request(&host, &server.key, "/VectorService/Upsert", &[]).await;
    // The gRPC prefix of a 128 MiB message, then 1 KiB of it; the rest never comes.
    let mut start = vec![0u8];
    start.extend_from_slice(&(128u32 * 1024 * 1024).to_be_bytes());
    start.extend_from_slice(&[0u8; 1024]);
    body.send_data(Bytes::from(start), false).unwrap();
    let response = tokio::time::timeout(PROMPTLY, response)
        .await
        .expect("answered without the rest of the message")
        .expect("a response, not a reset");
    let headers = response.headers();
    assert_eq!(headers["grpc-status"], "3", "{headers:?}");
    let message = headers["grpc-message"]
        .to_str()
        .unwrap()
        .replace("%20", " ");
    assert!(message.contains("134217728 bytes"), "{message}");
    assert!(message.contains("limit is 2097152 bytes"), "{message}");
    drop(body);
    driver.abort();
    // The server goes on serving, and nothing was stored.
    assert_eq!(count(&mut data).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn deadlines_end_requests_and_expired_ones_do_no_work() {
    let server = TestServer::start().await;
    let (model, mut data) = server.create_index("deadline", 2, "cosine").await;
    let host = authority(&model.host);
    // Already expired on arrival (sent raw: tonic's own client would give up before sending):
    // refused before any work, so nothing is written.
    let (response, mut body, driver) = open_grpc_request(
        &host,
        &server.key,
        "/VectorService/Upsert",
        &[("grpc-timeout", "0n")],
    )
    .await;
    let message = UpsertRequest {
        vectors: vectors(1, 2, "late"),
        namespace: String::new(),
    };
    let encoded = prost::Message::encode_to_vec(&message);
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&encoded);
    body.send_data(Bytes::from(framed), true).unwrap();
    let response = tokio::time::timeout(PROMPTLY, response)
        .await
        .expect("answered")
        .expect("a response");
    let headers = response.headers();
    assert_eq!(
        headers["grpc-status"], "4",
        "DEADLINE_EXCEEDED: {headers:?}"
    );
    driver.abort();
    let fetched = data
        .fetch(FetchRequest {
            ids: vec!["late0".into()],
            namespace: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(fetched.vectors.is_empty(), "an expired upsert was applied");
    // A generous deadline is no obstacle.
    let mut request = tonic::Request::new(UpsertRequest {
        vectors: vectors(1, 2, "ok"),
        namespace: String::new(),
    });
    request.set_timeout(Duration::from_secs(30));
    data.upsert(request).await.expect("within the deadline");
    assert_eq!(count(&mut data).await, 1);
    server.stop().await;
}

#[tokio::test]
async fn past_the_in_flight_limit_requests_get_pushback_and_probes_still_answer() {
    let server = TestServer::start_limited(LimitSettings {
        max_concurrent_requests: 1,
        ..LimitSettings::default()
    })
    .await;
    let (model, mut data) = server.create_index("busy", 2, "cosine").await;
    let host = authority(&model.host);
    // One request in flight: its body has sent the gRPC prefix (a request takes its slot of
    // the budget once its body has started) but not the 10-byte message it announces.
    let (held, mut body, driver) =
        open_grpc_request(&host, &server.key, "/VectorService/Upsert", &[]).await;
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 10]), false)
        .unwrap();
    let err = tokio::time::timeout(PROMPTLY, async {
        loop {
            // Until the held request has taken the only slot.
            match data
                .upsert(UpsertRequest {
                    vectors: vectors(1, 2, "refused"),
                    namespace: String::new(),
                })
                .await
            {
                Err(err) => break err,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("refused while the slot is held");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("--max-concurrent-requests"),
        "{err:?}"
    );
    let pushback = err.metadata().get("grpc-retry-pushback-ms");
    assert_eq!(pushback.map(|v| v.to_str().unwrap()), Some("100"));
    // Health checks are never refused.
    let channel = larch_tests::connect(&model.host).await;
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // The held request ends (its client goes away): the slot comes back.
    drop(body);
    drop(held);
    driver.abort();
    tokio::time::timeout(PROMPTLY, async {
        loop {
            match data
                .upsert(UpsertRequest {
                    vectors: vectors(1, 2, "after"),
                    namespace: String::new(),
                })
                .await
            {
                Ok(_) => break,
                Err(err) if err.code() == Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("{err:?}"),
            }
        }
    })
    .await
    .expect("the slot is released");
    assert_eq!(
        count(&mut data).await,
        1,
        "only the accepted upsert is stored"
    );
    server.stop().await;
}
