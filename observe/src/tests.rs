//! The layer and the admin server on real ports: a tonic server holding gRPC health and a
//! REST route behind [`RequestLayer`], as the planes are built, and plain HTTP clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;

use crate::{Listener, LogFormat, Metrics, Readiness, RequestLayer, X_REQUEST_ID};

/// A server like a plane's: gRPC health and `GET /things/{id}` (which logs a line) on one port.
async fn start(layer: RequestLayer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(app(layer)))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// Serves `app` on a [`Listener`], as the planes do.
async fn start_on(listener: Listener, app: axum::Router) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(app))
            .serve_with_incoming(listener.incoming()),
    );
    addr
}

fn app(layer: RequestLayer) -> axum::Router {
    let (_reporter, health) = tonic_health::server::health_reporter();
    tonic::service::Routes::new(health)
        .into_axum_router()
        .route(
            "/things/{id}",
            get(|| async {
                tracing::info!("looking the thing up");
                "thing"
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such route") })
        .layer(layer)
}

/// What came back: status, headers, body and trailers.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: http::request::Builder,
    body: Vec<u8>,
) -> Reply {
    let response = client
        .request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

async fn rest(addr: SocketAddr, path: &str, id: Option<&str>) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::get(format!("http://{addr}{path}"));
    if let Some(id) = id {
        request = request.header(X_REQUEST_ID, id);
    }
    send(&client, request, Vec::new()).await
}

/// A raw `grpc.health.v1.Health/Check` of `service` over h2c, so headers and trailers can be
/// told apart (tonic's client merges them).
async fn health_check(addr: SocketAddr, service: &str, id: Option<&str>) -> Reply {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut request = Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(id) = id {
        request = request.header(X_REQUEST_ID, id);
    }
    // HealthCheckRequest { service }: field 1, length-delimited; then the gRPC frame prefix.
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        message.push(u8::try_from(service.len()).unwrap());
        message.extend_from_slice(service.as_bytes());
    }
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&message);
    send(&client, request, body).await
}

fn id_of(headers: &HeaderMap) -> &str {
    headers
        .get(X_REQUEST_ID)
        .expect("an x-request-id")
        .to_str()
        .unwrap()
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[tokio::test]
async fn rest_requests_keep_or_get_an_id_and_are_counted_by_route() {
    let metrics = Metrics::new();
    let addr = start(RequestLayer::new(metrics.clone())).await;

    let kept = rest(addr, "/things/7", Some("client-id-1")).await;
    assert_eq!(
        (kept.status, &kept.body[..]),
        (StatusCode::OK, &b"thing"[..])
    );
    assert_eq!(id_of(&kept.headers), "client-id-1");

    let generated = rest(addr, "/things/8", None).await;
    let id = id_of(&generated.headers);
    assert!(uuid::Uuid::parse_str(id).is_ok(), "a UUID: {id}");

    let unrouted = rest(addr, "/nowhere/at/all", None).await;
    assert_eq!(unrouted.status, StatusCode::NOT_FOUND);
    assert!(unrouted.headers.contains_key(X_REQUEST_ID));

    let text = metrics.render();
    for line in [
        r#"larch_requests_total{rpc="GET /things/{id}",code="200"} 2"#,
        r#"larch_requests_total{rpc="unrouted",code="404"} 1"#,
        r#"larch_request_duration_seconds_count{rpc="GET /things/{id}"} 2"#,
    ] {
        assert!(has_line(&text, line), "{line:?} in\n{text}");
    }
}

#[tokio::test]
async fn grpc_responses_carry_the_id_in_headers_and_trailers() {
    let metrics = Metrics::new();
    let addr = start(RequestLayer::new(metrics.clone())).await;

    let served = health_check(addr, "", Some("grpc-id-1")).await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(id_of(&served.headers), "grpc-id-1");
    assert!(
        !served.headers.contains_key("grpc-status"),
        "not trailers-only"
    );
    let trailers = served.trailers.expect("a gRPC response has trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(id_of(&trailers), "grpc-id-1");

    let generated = health_check(addr, "", None).await;
    let trailers = generated.trailers.expect("trailers");
    assert_eq!(id_of(&trailers), id_of(&generated.headers));
    assert!(uuid::Uuid::parse_str(id_of(&trailers)).is_ok());

    // An unknown service: NOT_FOUND as a trailers-only response, id in its headers.
    let refused = health_check(addr, "no.such.Service", Some("grpc-id-2")).await;
    assert_eq!(refused.headers.get("grpc-status").unwrap(), "5");
    assert_eq!(id_of(&refused.headers), "grpc-id-2");

    let text = metrics.render();
    for line in [
        r#"larch_requests_total{rpc="/grpc.health.v1.Health/Check",code="OK"} 2"#,
        r#"larch_requests_total{rpc="/grpc.health.v1.Health/Check",code="NOT_FOUND"} 1"#,
        r#"larch_request_duration_seconds_count{rpc="/grpc.health.v1.Health/Check"} 3"#,
    ] {
        assert!(has_line(&text, line), "{line:?} in\n{text}");
    }
}

/// Log lines captured in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

// One thread, so the scoped subscriber sees the server's tasks too.
#[tokio::test(flavor = "current_thread")]
async fn log_lines_of_a_request_name_its_id() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber =
        crate::logging::subscriber(LogFormat::Json, Some("info"), false, move || writer.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    let addr = start(RequestLayer::new(Metrics::new()).for_index("default/movies")).await;
    rest(addr, "/things/1", Some("logged-id")).await;

    let text = captured.text();
    let line = text
        .lines()
        .find(|line| line.contains("looking the thing up"))
        .unwrap_or_else(|| panic!("the handler's line in {text}"));
    let event: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
    assert_eq!(event["message"], "looking the thing up");
    assert_eq!(event["span"]["request_id"], "logged-id");
    assert_eq!(event["span"]["rpc"], "GET /things/1");
    assert_eq!(event["span"]["index"], "default/movies");
    assert_eq!(event["spans"][0]["request_id"], "logged-id");
}

#[tokio::test]
async fn admin_server_serves_probes_and_metrics() {
    let metrics = Metrics::new();
    metrics.count_auth_denial("UNAUTHENTICATED");
    let readiness = Readiness::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve_admin(
        listener,
        metrics,
        readiness.clone(),
        async move {
            let _ = stopped.await;
        },
    ));

    assert_eq!(rest(addr, "/healthz", None).await.status, StatusCode::OK);
    assert_eq!(
        rest(addr, "/readyz", None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    readiness.set(true);
    assert_eq!(rest(addr, "/readyz", None).await.status, StatusCode::OK);
    readiness.set(false);
    assert_eq!(
        rest(addr, "/readyz", None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let scraped = rest(addr, "/metrics", None).await;
    assert_eq!(scraped.status, StatusCode::OK);
    assert_eq!(
        scraped.headers.get("content-type").unwrap(),
        crate::metrics::CONTENT_TYPE
    );
    let text = String::from_utf8(scraped.body.to_vec()).unwrap();
    assert!(
        has_line(
            &text,
            r#"larch_auth_denials_total{reason="UNAUTHENTICATED"} 1"#
        ),
        "{text}"
    );
    assert_eq!(
        rest(addr, "/other", None).await.status,
        StatusCode::NOT_FOUND
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

// Raw sockets without tokio's io-util: the connections below speak bytes, not HTTP.

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        stream.writable().await.unwrap();
        match stream.try_write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => panic!("write: {err}"),
        }
    }
}

async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            read => return read,
        }
    }
}

/// Reads until the server closes the connection (end of stream or reset); false if it is
/// still open after `within`.
async fn closed_within(stream: &TcpStream, within: Duration) -> bool {
    let closed = async {
        let mut buf = [0; 4096];
        while let Ok(1..) = read_some(stream, &mut buf).await {}
    };
    tokio::time::timeout(within, closed).await.is_ok()
}

/// Reads until `bytes` has come (at the end of what was read so far); panics on close.
async fn read_until(stream: &TcpStream, bytes: &[u8]) {
    let mut seen = Vec::new();
    let mut buf = [0; 4096];
    while !seen.windows(bytes.len()).any(|w| w == bytes) {
        let read = read_some(stream, &mut buf).await.unwrap();
        assert!(
            read > 0,
            "closed before {:?}",
            String::from_utf8_lossy(bytes)
        );
        seen.extend_from_slice(&buf[..read]);
    }
}

const H2_MAGIC: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame on stream 0.
fn h2_frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn connections_that_send_no_request_in_time_are_closed_and_others_are_not() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    // Generous, for a loaded machine: without the defence none of these ever closes.
    const PATIENCE: Duration = Duration::from_secs(20);
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = Listener::from(tcp).with_preface_timeout(TIMEOUT);
    let addr = start_on(listener, app(RequestLayer::new(Metrics::new()))).await;

    let mut slow = Vec::new();
    for (what, sent) in [
        ("nothing", &b""[..]),
        ("part of the HTTP/2 preface", &H2_MAGIC[..16]),
        ("the HTTP/2 magic without SETTINGS", H2_MAGIC),
        ("part of an HTTP/1 request line", b"GET /things/1 HTT"),
        (
            "an HTTP/1 head without its end",
            b"GET /things/1 HTTP/1.1\r\nHost: x\r\n",
        ),
    ] {
        let stream = TcpStream::connect(addr).await.unwrap();
        write_all(&stream, sent).await;
        slow.push((what, stream));
    }
    // An HTTP/2 connection that has sent its preface and SETTINGS, and an HTTP/1 one that has
    // had an answer: both then idle well past the timeout.
    let h2 = TcpStream::connect(addr).await.unwrap();
    write_all(&h2, &[H2_MAGIC, &h2_frame(0x4, 0, &[])].concat()).await;
    let h1 = TcpStream::connect(addr).await.unwrap();
    let get = b"GET /things/1 HTTP/1.1\r\nHost: x\r\n\r\n";
    write_all(&h1, get).await;
    read_until(&h1, b"thing").await;

    for (what, stream) in &slow {
        assert!(
            closed_within(stream, PATIENCE).await,
            "a connection that sent {what} is still open"
        );
    }
    tokio::time::sleep(TIMEOUT * 3).await;
    // Still served: a PING is answered (ACK flag, same payload), a second request too.
    write_all(&h2, &h2_frame(0x6, 0, b"stillup!")).await;
    read_until(&h2, &h2_frame(0x6, 0x1, b"stillup!")).await;
    write_all(&h1, get).await;
    read_until(&h1, b"thing").await;
}

/// Tells when it is dropped.
struct DropSignal(Arc<tokio::sync::Notify>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

#[tokio::test]
async fn a_connection_whose_peer_stops_reading_is_closed_after_the_send_timeout() {
    // Long enough that a steady reader on a loaded machine never stalls this long.
    const TIMEOUT: Duration = Duration::from_secs(2);
    const PATIENCE: Duration = Duration::from_secs(30);
    // Far more than the socket buffers of both ends hold.
    const CHUNKS: usize = 64;
    const CHUNK: usize = 512 * 1024;
    let dropped = Arc::new(tokio::sync::Notify::new());
    let signal = Arc::clone(&dropped);
    let big = axum::Router::new().route(
        "/big",
        get(move || {
            let guard = DropSignal(Arc::clone(&signal));
            let chunk = Bytes::from(vec![b'x'; CHUNK]);
            let chunks = tokio_stream::iter((0..CHUNKS).map(move |_| {
                let _ = &guard;
                Ok::<_, std::convert::Infallible>(chunk.clone())
            }));
            async move { axum::body::Body::from_stream(chunks) }
        }),
    );
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = start_on(Listener::from(tcp).with_send_timeout(TIMEOUT), big).await;

    // A client that reads steadily gets all of it.
    let whole = rest(addr, "/big", None).await;
    assert_eq!(whole.body.len(), CHUNKS * CHUNK);
    tokio::time::timeout(PATIENCE, dropped.notified())
        .await
        .expect("the answered body is dropped");

    // One that asks and never reads: the server gives up on it and drops the answer.
    let deaf = TcpStream::connect(addr).await.unwrap();
    write_all(&deaf, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        tokio::time::timeout(PATIENCE, dropped.notified())
            .await
            .is_ok(),
        "the server still holds the answer of a peer that reads nothing"
    );
    // What the sockets held arrives, then the end: not the whole answer.
    let mut read = 0;
    let mut buf = vec![0; 64 * 1024];
    loop {
        let chunk = tokio::time::timeout(PATIENCE, read_some(&deaf, &mut buf)).await;
        match chunk.expect("the connection ends") {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    assert!(
        read < CHUNKS * CHUNK,
        "{read} bytes: the whole answer was sent"
    );
}
