//! Abuse resistance (issue 8, item 6), against real servers on real sockets: idle connections
//! by the thousand do not exhaust a server, a client that stops reading does not stall
//! others, and oversized or malformed request headers are refused cleanly over gRPC (HTTP/2)
//! and REST (HTTP/1.1) while the server goes on serving.
//!
//! The defences these rest on: every port's listener closes a connection that sends no
//! HTTP/2 preface or HTTP/1 request head within 10 s, and one whose peer reads nothing for
//! 60 s (`larch_observe::listener`, where both are also tested with short timeouts); HTTP/2
//! flow control and hyper's per-connection tasks; the HTTP layer's header limits.
//!
//! Time is never asserted: "promptly" is a generous [`PROMPTLY`], so a loaded machine only
//! makes the tests slower, and a stall makes them fail instead of hang.
//!
//! # Layout
//! - helpers: the open-file limit, raw sockets, an HTTP/2 client (the `h2` crate, which shows
//!   resets with their reasons and can leave bodies unread), raw HTTP/2 frames and HTTP/1.1;
//! - idle connections;
//! - slow readers;
//! - oversized and malformed headers.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, HeaderValue, StatusCode};
use larch_proto::control::DescribeIndexRequest;
use larch_proto::pinecone::{
    DescribeIndexStatsRequest, FetchRequest, QueryRequest, UpsertRequest, Vector,
};
use larch_tests::{DataClient, TestServer, wait_serving};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::rest_client::Rest;

/// What "promptly" means here: far above any real answer time, even on a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Runs `work`, failing the test (instead of hanging) if it takes longer than [`PROMPTLY`].
async fn promptly<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(PROMPTLY, work)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {PROMPTLY:?}"))
}

/// Raises this process's soft limit on open files to its hard limit if the soft one is below
/// `needed`: the idle-connection test holds both ends of thousands of sockets. The limit is
/// process-wide and only ever raised, so tests running beside this one are unaffected.
fn raise_open_files_limit(needed: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|current| current < needed) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )
        .expect("raising the soft limit on open files to the hard limit");
    }
    let limit = getrlimit(Resource::Nofile);
    assert!(
        limit.current.is_none_or(|current| current >= needed),
        "this test holds {needed} open files; the limit is {limit:?}"
    );
}

/// A TCP connection to `host` (`ip:port`) that has sent `opening` and nothing else.
async fn open(host: &str, opening: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(host).await.unwrap();
    stream.write_all(opening).await.unwrap();
    stream
}

/// Reads until the server closes `stream` (end of stream, or a reset).
async fn closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0; 4096];
    while let Ok(1..) = stream.read(&mut buf).await {}
}

/// The HTTP/2 client connection preface, before its SETTINGS frame.
const H2_MAGIC: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 client connection (the `h2` crate's); dropping it closes the connection.
struct H2 {
    send: SendRequest<Bytes>,
    driver: tokio::task::JoinHandle<()>,
}

impl std::ops::Deref for H2 {
    type Target = SendRequest<Bytes>;

    fn deref(&self) -> &SendRequest<Bytes> {
        &self.send
    }
}

impl Drop for H2 {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// An HTTP/2 client on its own connection to `host`. `windows`: the initial stream and
/// connection flow-control windows it grants the server (h2's defaults: 64 KiB - 1).
async fn h2_client(host: &str, windows: Option<u32>) -> H2 {
    h2_client_on(TcpStream::connect(host).await.unwrap(), windows).await
}

async fn h2_client_on<T>(io: T, windows: Option<u32>) -> H2
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = h2::client::Builder::new();
    if let Some(window) = windows {
        builder
            .initial_window_size(window)
            .initial_connection_window_size(window);
    }
    let (send, connection) = builder.handshake(io).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    H2 { send, driver }
}

/// A socket that reads `limit` bytes and then never reads again, like a client that stops
/// reading its responses: the server's writes fill the socket buffers and then wait.
struct Deaf {
    stream: TcpStream,
    limit: usize,
}

impl AsyncRead for Deaf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.limit == 0 {
            // Never woken: reading is over for good.
            return Poll::Pending;
        }
        let mut chunk = vec![0; this.limit.min(buf.remaining())];
        let mut capped = ReadBuf::new(&mut chunk);
        let polled = Pin::new(&mut this.stream).poll_read(cx, &mut capped);
        buf.put_slice(capped.filled());
        this.limit -= capped.filled().len();
        polled
    }
}

impl AsyncWrite for Deaf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A gRPC request head for `path` on `host`, with the given extra headers (raw bytes).
fn grpc_head(host: &str, path: &str, headers: &[(String, Vec<u8>)]) -> http::Request<()> {
    let mut request = http::Request::post(format!("http://{host}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(name.as_str(), HeaderValue::from_bytes(value).unwrap());
    }
    request.body(()).unwrap()
}

/// `message` as one length-prefixed gRPC message.
fn grpc_body(message: &impl Message) -> Bytes {
    let encoded = message.encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&encoded);
    Bytes::from(body)
}

/// A gRPC answer as it came: headers, the body's bytes, trailers.
#[derive(Debug)]
struct GrpcReply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl GrpcReply {
    /// `grpc-status`, from the trailers or (trailers-only responses) the headers.
    fn grpc_status(&self) -> Option<&str> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| self.headers.get("grpc-status"))
            .map(|v| v.to_str().unwrap())
    }

    /// Every `x-request-id` value of the headers and trailers.
    fn request_ids(&self) -> Vec<&HeaderValue> {
        let trailers = self.trailers.iter().flat_map(|t| t.get_all("x-request-id"));
        self.headers
            .get_all("x-request-id")
            .iter()
            .chain(trailers)
            .collect()
    }
}

/// Sends one unary gRPC call on `send` and reads the whole answer.
async fn unary(
    send: &SendRequest<Bytes>,
    head: http::Request<()>,
    body: Bytes,
) -> Result<GrpcReply, h2::Error> {
    let mut send = send.clone().ready().await?;
    let (response, mut stream) = send.send_request(head, false)?;
    // A stream the server has already reset refuses the data; the response says why.
    let _ = stream.send_data(body, true);
    let (parts, mut body) = response.await?.into_parts();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await?;
    Ok(GrpcReply {
        status: parts.status,
        headers: parts.headers,
        body: data.freeze(),
        trailers,
    })
}

/// `DescribeIndexStats` with the admin key and `headers` on `send`.
async fn stats_with(
    send: &SendRequest<Bytes>,
    host: &str,
    key: &str,
    headers: &[(String, Vec<u8>)],
) -> Result<GrpcReply, h2::Error> {
    let mut all = vec![("api-key".to_owned(), key.as_bytes().to_vec())];
    all.extend_from_slice(headers);
    let head = grpc_head(host, "/VectorService/DescribeIndexStats", &all);
    unary(
        send,
        head,
        grpc_body(&DescribeIndexStatsRequest { filter: None }),
    )
    .await
}

/// An HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An HPACK integer with a `prefix`-bit prefix (RFC 7541, section 5.1), after `first`'s
/// high bits.
fn hpack_int(out: &mut Vec<u8>, first: u8, prefix: u32, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | u8::try_from(value).unwrap());
        return;
    }
    out.push(first | u8::try_from(max).unwrap());
    let mut rest = value - max;
    while rest >= 128 {
        out.push(u8::try_from(rest % 128).unwrap() | 0x80);
        rest /= 128;
    }
    out.push(u8::try_from(rest).unwrap());
}

/// A header block of literal fields without indexing, new names, no Huffman coding: the
/// bytes of each value go on the wire as they are, which no HTTP library would send.
fn hpack_block(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0);
        hpack_int(&mut block, 0, 7, name.len());
        block.extend_from_slice(name.as_bytes());
        hpack_int(&mut block, 0, 7, value.len());
        block.extend_from_slice(value);
    }
    block
}

/// How the server ended a raw HTTP/2 request on stream 1.
#[derive(Debug, PartialEq, Eq)]
enum RawOutcome {
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY with this error code.
    GoAway(u32),
    /// A response HEADERS frame: the request was taken.
    Answered,
    /// The connection closed without either.
    Closed,
}

/// The HTTP/2 error code of a malformed request (RFC 9113, section 7).
const PROTOCOL_ERROR: u32 = 0x1;

/// Sends a gRPC request whose header block is `fields` as written (HEADERS with END_HEADERS
/// and END_STREAM on stream 1) and reports what the server did with it.
async fn raw_h2_request(host: &str, fields: &[(&str, &[u8])]) -> RawOutcome {
    let mut stream = TcpStream::connect(host).await.unwrap();
    let mut out = H2_MAGIC.to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    out.extend(h2_frame(0x1, 0x4 | 0x1, 1, &hpack_block(fields)));
    stream.write_all(&out).await.unwrap();
    loop {
        let mut header = [0; 9];
        if stream.read_exact(&mut header).await.is_err() {
            return RawOutcome::Closed;
        }
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let (kind, id) = (
            header[3],
            u32::from_be_bytes(header[5..9].try_into().unwrap()),
        );
        let mut payload = vec![0; len];
        if stream.read_exact(&mut payload).await.is_err() {
            return RawOutcome::Closed;
        }
        let code = |at: usize| u32::from_be_bytes(payload[at..at + 4].try_into().unwrap());
        match kind {
            0x3 if id == 1 => return RawOutcome::Reset(code(0)),
            0x7 => return RawOutcome::GoAway(code(4)),
            0x1 if id == 1 => return RawOutcome::Answered,
            // SETTINGS (and their ACK), WINDOW_UPDATE, PING: the connection's housekeeping.
            _ => {}
        }
    }
}

/// An HTTP/1.1 answer read off a raw socket.
#[derive(Debug)]
struct RawReply {
    status: u16,
    /// Header lines as sent, names lowercased.
    headers: Vec<(String, Vec<u8>)>,
    /// Everything read: status line, headers, body.
    len: usize,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Writes `request` (HTTP/1.1, which should say `Connection: close`) on a new connection to
/// `host` and reads the answer until the server closes. The request is written by its own
/// task, so a server that answers (and closes) before reading all of it is seen answering;
/// `None`: the connection closed (or was reset) before any answer.
async fn raw_http1(host: &str, request: Vec<u8>) -> Option<RawReply> {
    let stream = TcpStream::connect(host).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&request).await;
        // Kept open until the answer is read: a half-close is not a request's end in HTTP/1.
        write
    });
    let mut answer = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        match read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    drop(writer.await);
    parse_http1(&answer)
}

fn parse_http1(answer: &[u8]) -> Option<RawReply> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let mut lines = answer[..end].split(|&b| b == b'\n');
    let status_line = String::from_utf8_lossy(lines.next()?).into_owned();
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
            let value = line[colon + 1..].trim_ascii().to_vec();
            Some((name, value))
        })
        .collect();
    Some(RawReply {
        status,
        headers,
        len: answer.len(),
    })
}

/// `GET /describe_index_stats` with `headers` (name, raw value), `Connection: close`.
fn rest_stats_request(host: &str, headers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut request =
        format!("GET /describe_index_stats HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    request
}

fn is_uuid(id: &[u8]) -> bool {
    let Ok(id) = std::str::from_utf8(id) else {
        return false;
    };
    let groups: Vec<usize> = id.split('-').map(str::len).collect();
    groups == [8, 4, 4, 4, 12] && id.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

/// `count` vectors `v0`, `v1`, … of `dimension` values each.
fn vectors(count: usize, dimension: usize) -> Vec<Vector> {
    (0..count)
        .map(|i| Vector {
            id: format!("v{i}"),
            values: (0..dimension)
                .map(|d| ((i * 31 + d * 7) % 97) as f32 / 97.0 + 0.01)
                .collect(),
            ..Default::default()
        })
        .collect()
}

/// The calls of a normal client, each of which must be answered: upsert, query, fetch and
/// stats on the data plane, describe on the control plane.
async fn normal_client(server: &TestServer, host: &str, index: &str, dimension: usize) {
    let mut data: DataClient = promptly("connect", server.data(host)).await;
    let upserted = promptly(
        "upsert",
        data.upsert(UpsertRequest {
            vectors: vectors(3, dimension),
            namespace: "normal".into(),
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(upserted.upserted_count, 3);
    let query = promptly(
        "query",
        data.query(QueryRequest {
            namespace: "normal".into(),
            top_k: 3,
            vector: vectors(1, dimension).remove(0).values,
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(query.matches.len(), 3);
    let fetched = promptly(
        "fetch",
        data.fetch(FetchRequest {
            ids: vec!["v0".into(), "v2".into()],
            namespace: "normal".into(),
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(fetched.vectors.len(), 2);
    promptly(
        "stats",
        data.describe_index_stats(DescribeIndexStatsRequest { filter: None }),
    )
    .await
    .unwrap();
    let mut control = promptly("connect", server.control()).await;
    let described = promptly(
        "describe index",
        control.describe_index(DescribeIndexRequest { name: index.into() }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(described.name, index);
}

// ---------------------------------------------------------------------------------------------
// Idle connections
// ---------------------------------------------------------------------------------------------

/// Connections per port that send nothing at all.
const SILENT: usize = 1000;
/// Connections per port that send only a beginning: the HTTP/2 magic without its SETTINGS
/// frame (half of them), or part of an HTTP/1 request line.
const PARTIAL: usize = 500;

/// 1,000 silent connections (and 500 partial ones) to a data-plane port and as many to the
/// control-plane port: while they are held, a normal client connects and gets its answers;
/// the server does not keep them (each is closed once the listener's preface timeout has
/// passed, which reclaims its file descriptor), yet an HTTP/2 connection that completed its
/// handshake and then idled just as long still serves; once they are gone the server is
/// healthy. Without the preface timeout the silent connections are never closed (the server
/// would run out of file descriptors at its limit) and this test fails.
#[tokio::test]
async fn a_thousand_idle_connections_do_not_exhaust_the_server() {
    // Both ends of every connection are in this process, plus what other tests hold.
    let held = 2 * 2 * (SILENT + PARTIAL);
    raise_open_files_limit(u64::try_from(held).unwrap() + 2048);
    let server = TestServer::start().await;
    let (model, _) = server.create_index("idle", 8, "cosine").await;
    let (data_host, control_host) = (model.host.clone(), server.control_addr.to_string());
    // A client's pooled HTTP/2 connection, made before the flood and idle from then on.
    let pooled = h2_client(&data_host, None).await;
    let first = promptly("stats", stats_with(&pooled, &data_host, &server.key, &[])).await;
    assert_eq!(first.unwrap().grpc_status(), Some("0"));

    let mut idle = Vec::with_capacity(held / 2);
    for host in [&data_host, &control_host] {
        for i in 0..SILENT + PARTIAL {
            let opening: &[u8] = match i {
                i if i < SILENT => b"",
                i if i % 2 == 0 => H2_MAGIC,
                _ => b"GET /indexes HTT",
            };
            idle.push(open(host, opening).await);
        }
    }
    normal_client(&server, &data_host, "idle", 8).await;

    let reaped = async {
        for stream in &mut idle {
            closed_by_server(stream).await;
        }
    };
    let patience = larch_observe::listener::DEFAULT_PREFACE_TIMEOUT + PROMPTLY;
    assert!(
        tokio::time::timeout(patience, reaped).await.is_ok(),
        "connections that never sent a request were still open after {patience:?}"
    );
    let again = promptly("stats", stats_with(&pooled, &data_host, &server.key, &[])).await;
    assert_eq!(
        again
            .expect("the idle HTTP/2 connection still serves")
            .grpc_status(),
        Some("0")
    );

    drop(idle);
    promptly("health", wait_serving(&data_host)).await;
    promptly("health", wait_serving(&control_host)).await;
    normal_client(&server, &data_host, "idle", 8).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Slow readers
// ---------------------------------------------------------------------------------------------

/// Dimension and number of the big vectors: fetching them all answers about 830 KB over gRPC
/// (and about 2 MB of JSON over REST).
const BIG_DIMENSION: usize = 1024;
const BIG_COUNT: usize = 200;
/// Big answers each slow reader asks for at once (fewer than the streams a connection may
/// have open).
const ASKED: usize = 32;

/// Three clients ask for big answers (`Fetch` of 200 vectors of 1,024 values, 32 at a time)
/// and never read them: one over HTTP/2 that reads frames but never gives back flow-control
/// window (h2's default 64 KiB), one over HTTP/2 that grants 1 GiB windows and then stops
/// reading its socket, and one over HTTP/1.1 that pipelines REST fetches and reads nothing.
/// Meanwhile other clients on other connections get every answer, big ones included, and
/// afterwards the server is healthy.
///
/// Why the server's memory for such a connection stays bounded: each connection is served by
/// its own task, and a response is handed over to it without any lock or in-flight budget
/// held. For HTTP/2, hyper polls a response body only while its stream has send window (and
/// h2 sends no more than the window the client grants), so per stream at most one encoded
/// message waits in memory, and a connection has at most `SETTINGS_MAX_CONCURRENT_STREAMS`
/// streams; for HTTP/1.1, one response is written at a time and pipelined requests wait
/// unread in hyper's bounded read buffer or the kernel. The stingy client shows the first
/// half: the server sent it no more than its window. Bounded, but held: a peer that stops
/// reading its socket is closed after the listener's send timeout (60 s), while one that
/// reads frames but grants no window keeps its streams' answers until it goes away.
#[tokio::test]
async fn a_client_that_stops_reading_does_not_stall_others() {
    let server = TestServer::start().await;
    let dimension = i32::try_from(BIG_DIMENSION).unwrap();
    let (model, mut data) = server.create_index("slow", dimension, "euclidean").await;
    let host = model.host.as_str();
    for batch in vectors(BIG_COUNT, BIG_DIMENSION).chunks(100) {
        data.upsert(UpsertRequest {
            vectors: batch.to_vec(),
            namespace: String::new(),
        })
        .await
        .unwrap();
    }
    let ids: Vec<String> = (0..BIG_COUNT).map(|i| format!("v{i}")).collect();
    let fetch_all = FetchRequest {
        ids: ids.clone(),
        namespace: String::new(),
    };
    let key = ("api-key".to_owned(), server.key.as_bytes().to_vec());
    let fetch_head = || grpc_head(host, "/VectorService/Fetch", std::slice::from_ref(&key));
    let rest_fetch = format!(
        "/vectors/fetch?{}",
        ids.iter()
            .map(|id| format!("ids={id}"))
            .collect::<Vec<_>>()
            .join("&")
    );

    // Never gives back window: the answers' heads come (they need none), the bodies wait.
    let stingy = h2_client(host, None).await;
    let mut responses = Vec::new();
    for _ in 0..ASKED {
        let mut send = promptly("stream", stingy.clone().ready()).await.unwrap();
        let (response, mut stream) = send.send_request(fetch_head(), false).unwrap();
        stream.send_data(grpc_body(&fetch_all), true).unwrap();
        responses.push(response);
    }
    let mut unread = Vec::new();
    for response in responses {
        let response = promptly("a head", response).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        unread.push(response.into_body());
    }

    // Grants 1 GiB windows, reads 1 MiB and then nothing: the server fills the socket.
    let socket = TcpStream::connect(host).await.unwrap();
    let deaf = h2_client_on(
        Deaf {
            stream: socket,
            limit: 1 << 20,
        },
        Some(1 << 30),
    )
    .await;
    let mut deaf_responses = Vec::new();
    for _ in 0..ASKED {
        let mut send = promptly("stream", deaf.clone().ready()).await.unwrap();
        let (response, mut stream) = send.send_request(fetch_head(), false).unwrap();
        stream.send_data(grpc_body(&fetch_all), true).unwrap();
        deaf_responses.push(response);
    }

    // REST over HTTP/1.1, pipelined, never read.
    let mut pipelined = TcpStream::connect(host).await.unwrap();
    let request = format!(
        "GET {rest_fetch} HTTP/1.1\r\nHost: {host}\r\nApi-Key: {}\r\n\r\n",
        server.key
    );
    pipelined
        .write_all(request.repeat(ASKED).as_bytes())
        .await
        .unwrap();

    let rest = Rest::new(host).key(&server.key);
    for _ in 0..3 {
        normal_client(&server, host, "slow", BIG_DIMENSION).await;
        let fetched = promptly("big fetch", data.fetch(fetch_all.clone())).await;
        assert_eq!(fetched.unwrap().into_inner().vectors.len(), BIG_COUNT);
        let fetched = promptly("big REST fetch", rest.get(&rest_fetch)).await;
        let fetched = fetched.expect(StatusCode::OK);
        assert_eq!(fetched["vectors"].as_object().unwrap().len(), BIG_COUNT);
    }

    // Flow control held: what the stingy client holds unread fits in the one connection
    // window it granted, of the 32 big answers it asked for.
    let held: usize = unread
        .iter_mut()
        .map(|body| body.flow_control().used_capacity())
        .sum();
    assert!(held <= 65_535, "{held} bytes sent past the window");

    drop((unread, stingy, deaf_responses, deaf, pipelined));
    promptly("health", wait_serving(host)).await;
    normal_client(&server, host, "slow", BIG_DIMENSION).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Oversized and malformed headers
// ---------------------------------------------------------------------------------------------

/// Header fields as sent: names and raw values.
type Fields = Vec<(String, Vec<u8>)>;

/// Header lists far above the limit of 16 KiB per request (hyper's default, and Larch's).
fn oversized() -> Vec<(&'static str, Fields)> {
    vec![
        ("a 1 MiB value", vec![("x-big".into(), vec![b'a'; 1 << 20])]),
        (
            "5,000 headers",
            (0..5000)
                .map(|i| (format!("x-filler-{i}"), b"v".to_vec()))
                .collect(),
        ),
        (
            "a 100 KB x-request-id",
            vec![("x-request-id".into(), vec![b'r'; 100_000])],
        ),
    ]
}

/// The `x-request-id` values an answer carries: all fresh UUIDs, none the client's.
#[track_caller]
fn assert_fresh_ids<'a>(what: &str, ids: impl IntoIterator<Item = &'a [u8]>) {
    let ids: Vec<&[u8]> = ids.into_iter().collect();
    assert!(!ids.is_empty(), "{what}: no x-request-id");
    for id in ids {
        assert!(
            is_uuid(id),
            "{what}: x-request-id {:?}",
            String::from_utf8_lossy(id)
        );
    }
}

/// Over gRPC (HTTP/2), each refused or handled without echoing anything big, and the server
/// serving others afterwards:
/// - Header lists over the limit never reach a handler. What h2 does depends on how far over
///   the block is: a block a little over (20 KiB) is answered `431 Request Header Fields Too
///   Large` on its stream, and the connection goes on serving; a block that keeps coming in
///   CONTINUATION frames far past the limit (1 MiB, 5,000 headers, a 100 KB id) ends the
///   connection with GOAWAY (`ENHANCE_YOUR_CALM` or `COMPRESSION_ERROR`), because h2 must
///   decode a header block to keep the connection's HPACK state and will not buffer that
///   much. Either way the client gets an error; gRPC clients report the 431 as `UNKNOWN`.
/// - A non-ASCII `api-key` is `UNAUTHENTICATED`; `api-key-bin` is not a key.
/// - A `-bin` value that is not base64 and a malformed `grpc-timeout` are ignored, as gRPC
///   servers do with metadata they do not use and with timeouts they cannot parse (the
///   server's own request timeout applies): the call is served.
/// - An `x-request-id` over 128 characters or with anything but visible ASCII is replaced
///   by a fresh UUID in the answer's headers and trailers.
/// - NUL, CR or LF in a value (which no HTTP library sends, so the frames are written by
///   hand) is a malformed request: h2 ends the connection with GOAWAY `PROTOCOL_ERROR`.
#[tokio::test]
async fn oversized_and_malformed_grpc_headers_are_refused_cleanly() {
    let server = TestServer::start().await;
    let (model, _) = server.create_index("headers", 4, "cosine").await;
    let (host, key) = (model.host.as_str(), server.key.as_str());

    for (what, headers) in oversized() {
        let conn = h2_client(host, None).await;
        match promptly(what, stats_with(&conn, host, key, &headers)).await {
            Err(err) => assert!(
                err.is_remote() && (err.is_go_away() || err.is_reset()),
                "{what}: {err}"
            ),
            Ok(reply) => panic!("{what}: served {reply:?}"),
        }
    }
    let conn = h2_client(host, None).await;
    let over = vec![("x-big".to_owned(), vec![b'a'; 20 << 10])];
    let refused = promptly("20 KiB", stats_with(&conn, host, key, &over)).await;
    let refused = refused.expect("a 431 answer, not a reset");
    assert_eq!(refused.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(refused.body.len() < 1024, "{refused:?}");

    // The same connection serves on, through every malformed request below.
    let served = promptly("stats", stats_with(&conn, host, key, &[])).await;
    assert_eq!(served.unwrap().grpc_status(), Some("0"));
    let stats_alone = |headers: &[(String, Vec<u8>)]| {
        let head = grpc_head(host, "/VectorService/DescribeIndexStats", headers);
        unary(
            &conn,
            head,
            grpc_body(&DescribeIndexStatsRequest { filter: None }),
        )
    };
    for (what, value) in [
        ("binary", vec![0xff, 0xfe, 0x80, b'k']),
        ("non-ASCII", "clé-ünïcode".as_bytes().to_vec()),
    ] {
        let headers = [("api-key".to_owned(), value)];
        let reply = promptly(what, stats_alone(&headers)).await.unwrap();
        assert_eq!(reply.grpc_status(), Some("16"), "{what} api-key: {reply:?}");
    }
    let headers = [("api-key-bin".to_owned(), b"%%%".to_vec())];
    let reply = promptly("api-key-bin", stats_alone(&headers))
        .await
        .unwrap();
    assert_eq!(reply.grpc_status(), Some("16"), "{reply:?}");

    for (name, value) in [
        ("x-thing-bin", &b"!!!not base64***"[..]),
        ("grpc-timeout", b"forever"),
        ("grpc-timeout", b"999999999S"),
        ("grpc-timeout", b"-5S"),
    ] {
        let headers = [(name.to_owned(), value.to_vec())];
        let reply = promptly(name, stats_with(&conn, host, key, &headers)).await;
        assert_eq!(reply.unwrap().grpc_status(), Some("0"), "{name}: {value:?}");
    }

    for (what, id) in [
        ("10 KB", vec![b'r'; 10_000]),
        ("non-printable", vec![b'a', 0x80, b'\t', 0xff, b'b']),
    ] {
        let headers = [("x-request-id".to_owned(), id)];
        let reply = promptly(what, stats_with(&conn, host, key, &headers)).await;
        let reply = reply.unwrap();
        assert_eq!(reply.grpc_status(), Some("0"));
        assert_fresh_ids(
            what,
            reply.request_ids().into_iter().map(HeaderValue::as_bytes),
        );
    }

    let stats_fields = |name: &'static str, value: &'static [u8]| {
        vec![
            (":method", &b"POST"[..]),
            (":scheme", b"http"),
            (":path", b"/VectorService/DescribeIndexStats"),
            (":authority", host.as_bytes()),
            ("content-type", b"application/grpc"),
            ("te", b"trailers"),
            (name, value),
        ]
    };
    // The hand-written request itself is fine: answered.
    let fine = raw_h2_request(host, &stats_fields("api-key", b"larch_x_y")).await;
    assert_eq!(fine, RawOutcome::Answered);
    for (name, value) in [
        ("api-key", &b"a\0b"[..]),
        ("api-key", b"a\r\nx-injected: 1"),
        ("x-request-id", b"id\nwith-newline"),
    ] {
        let outcome = promptly(name, raw_h2_request(host, &stats_fields(name, value))).await;
        assert!(
            matches!(
                outcome,
                RawOutcome::GoAway(PROTOCOL_ERROR) | RawOutcome::Reset(PROTOCOL_ERROR)
            ),
            "{name}: {value:?} → {outcome:?}"
        );
    }

    let served = promptly("stats", stats_with(&conn, host, key, &[])).await;
    assert_eq!(served.unwrap().grpc_status(), Some("0"));
    normal_client(&server, host, "headers", 4).await;
    server.stop().await;
}

/// Over REST (HTTP/1.1), with raw requests: a head too big for hyper's read buffer (about
/// 400 KB: the 1 MiB value) or with more than 100 headers is answered `431` and the
/// connection closed; NUL or a bare CR in a value is `400`; a non-ASCII `Api-Key` is `401`;
/// `-bin` and `grpc-timeout` mean nothing to REST; an unusable `X-Request-Id` (100 KB, or not
/// visible ASCII) is replaced by a fresh UUID. No answer echoes what was sent: each is a few
/// hundred bytes. The server serves others afterwards.
#[tokio::test]
async fn oversized_and_malformed_rest_headers_are_refused_cleanly() {
    let server = TestServer::start().await;
    let (model, _) = server.create_index("rest-headers", 4, "cosine").await;
    let host = model.host.as_str();
    let key = ("Api-Key".to_owned(), server.key.as_bytes().to_vec());
    let answer = async |what: &str, headers: Vec<(String, Vec<u8>)>| {
        let request = rest_stats_request(host, &headers);
        let reply = promptly(what, raw_http1(host, request)).await;
        let reply = reply.unwrap_or_else(|| panic!("{what}: closed without an answer"));
        assert!(reply.len < 4096, "{what}: a {}-byte answer", reply.len);
        reply
    };

    for (what, mut headers) in oversized() {
        headers.insert(0, key.clone());
        let reply = answer(what, headers).await;
        let expected = if what.contains("x-request-id") {
            200
        } else {
            431
        };
        assert_eq!(reply.status, expected, "{what}: {reply:?}");
        if expected == 200 {
            assert_fresh_ids(what, reply.header("x-request-id"));
        }
    }
    for (what, value) in [("NUL", &b"a\0b"[..]), ("CR", b"a\rb")] {
        let headers = vec![key.clone(), ("X-Odd".to_owned(), value.to_vec())];
        assert_eq!(answer(what, headers).await.status, 400, "{what}");
    }
    for (what, value) in [
        ("binary", vec![0xff, 0xfe, 0x80, b'k']),
        ("non-ASCII", "clé-ünïcode".as_bytes().to_vec()),
    ] {
        let headers = vec![("Api-Key".to_owned(), value)];
        assert_eq!(answer(what, headers).await.status, 401, "{what} Api-Key");
    }
    for (name, value) in [
        ("X-Thing-Bin", &b"!!!not base64***"[..]),
        ("Grpc-Timeout", b"forever"),
    ] {
        let headers = vec![key.clone(), (name.to_owned(), value.to_vec())];
        assert_eq!(answer(name, headers).await.status, 200, "{name}");
    }
    let id = vec![b'a', 0x80, b'\t', 0xff, b'b'];
    let headers = vec![key.clone(), ("X-Request-Id".to_owned(), id)];
    let reply = answer("non-printable x-request-id", headers).await;
    assert_eq!(reply.status, 200);
    assert_fresh_ids("non-printable", reply.header("x-request-id"));

    let rest = Rest::new(host).key(&server.key);
    promptly("REST stats", rest.get("/describe_index_stats"))
        .await
        .expect(StatusCode::OK);
    normal_client(&server, host, "rest-headers", 4).await;
    server.stop().await;
}
