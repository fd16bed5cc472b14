//! Request limits of every Larch server port: how big a gRPC message may be, how many requests
//! may run at once, how long one may take, and the HTTP/2 settings that bound each connection.
//!
//! [`Limits`] holds the configured values (the `larch` binary's `--max-request-bytes`,
//! `--max-concurrent-requests`, `--max-requests-per-peer`, `--max-streams-per-connection`,
//! `--max-header-bytes`, `--request-timeout` and `--body-timeout`); [`Limits::server`] is a
//! tonic server builder with the per-connection settings applied, and [`Limits::layer`] the
//! [`LimitLayer`] every app is wrapped in (inside the
//! [`RequestLayer`](crate::RequestLayer), so refusals get a request id and are counted).
//!
//! **Authentication comes first.** Each plane puts `larch_auth::http::AuthenticateLayer`
//! outside this layer, so a request without a valid key is refused from its headers before it
//! gets here: it never holds a slot of any budget below, never waits for its body, and anyone
//! without a key cannot lock keyed clients out.
//!
//! What the layer does, per (authenticated) request, in this order:
//! - **Per-peer limit**: at most `max_requests_per_peer` requests from one client address run
//!   (or wait for their body) at once; one more gets `RESOURCE_EXHAUSTED` with a pushback (REST:
//!   429). One busy or hostile client cannot take the whole process budget.
//! - **Body deadline**: the request's first bytes (a gRPC message's 5-byte prefix; for REST
//!   the first chunk of a body, if it has one) must arrive within `body_timeout` of its
//!   headers, or it is answered `DEADLINE_EXCEEDED` (REST: 408) and frees what it holds.
//! - **In-flight limit**: at most `max_concurrent_requests` requests of the whole process run
//!   at once (one budget shared by every port made from the same [`Limits`]), taken only once
//!   the body has started; one more is answered at once with `RESOURCE_EXHAUSTED` and a
//!   `grpc-retry-pushback-ms` trailer, which Pinecone's clients honour (REST: 429 with
//!   `Retry-After`). Health checks and reflection are never refused (by any limit here), so an
//!   overloaded pod is not restarted by its liveness probe.
//! - **Deadline**: the client's `grpc-timeout`, or `request_timeout` if shorter (or the only
//!   one), bounds the request: when it passes, the client gets `DEADLINE_EXCEEDED` (REST: 504)
//!   and the handler's future is dropped, which tells the work queued for it not to start (see
//!   [`Cancel`]). A request whose deadline has already passed on arrival does no work at all.
//! - **Message size**: a gRPC message is preceded by its length; the layer reads only that
//!   5-byte prefix and refuses a message above `max_request_bytes` with `INVALID_ARGUMENT`
//!   naming the limit, before any of the message is buffered (a client announcing 128 MiB is
//!   refused after 5 bytes). REST bodies have their own limit in each plane's router.
//!
//! Answers are bounded too (`--max-response-bytes`, `--max-queries-per-key`), not by the layer
//! but by the services: [`Limits::answer_budget`] is what the data plane's reads hold each
//! answer to while building it, [`Limits::max_encoding_bytes`] the gRPC services' encoding
//! limit, and [`Limits::queries`] the per-key cap on concurrent queries
//! ([`KeyedGate`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, Request, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use larch_model::wire::HttpError;
use larch_model::{Classified, Code};

use crate::keyed::KeyedGate;

/// The gRPC metadata key carrying how long a client should wait before retrying, in
/// milliseconds (gRPC's retry design, honoured by Pinecone's clients).
pub use larch_auth::grpc::RETRY_PUSHBACK_HEADER;

/// How often an idle HTTP/2 connection is pinged, and how long the answer may take before the
/// connection is closed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What a gRPC answer may hold beyond the answer budget: the parts the budget does not count
/// (namespace, pagination token, usage), which are far smaller.
pub const RESPONSE_HEADROOM_BYTES: usize = 64 * 1024;

/// How long a client refused by the in-flight limit is asked to wait before retrying.
const BUSY_PUSHBACK: Duration = Duration::from_millis(100);

/// The configured limits of a process's ports. Clones share one in-flight budget.
#[derive(Clone, Debug)]
pub struct Limits {
    settings: LimitSettings,
    /// `max_concurrent_requests` permits, shared by clones.
    in_flight: Arc<Semaphore>,
    /// `max_queries_per_key` permits per key, shared by clones.
    queries: Arc<KeyedGate>,
    /// Requests held per client address (entries removed at zero), shared by clones.
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(LimitSettings::default())
    }
}

/// The values of [`Limits`], with the documented defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitSettings {
    /// Largest gRPC request message, in bytes: 2 MiB, Pinecone's upsert limit.
    pub max_request_bytes: usize,
    /// Most requests running at once in the process, over all ports: 1024.
    pub max_concurrent_requests: usize,
    /// Most requests of one client address running or waiting for their body at once, over
    /// all ports: 256, a quarter of the process budget, so at least four clients are served
    /// whatever the others do.
    pub max_requests_per_peer: usize,
    /// Most concurrent HTTP/2 streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`): a
    /// client opening more waits for one to finish, which is HTTP/2's own backpressure. 128.
    pub max_streams_per_connection: u32,
    /// Largest request header list (all metadata of one request), in bytes: 16 KiB. A request
    /// with more is refused by the HTTP layer (HTTP/2: the stream is reset; HTTP/1.1: 431).
    pub max_header_bytes: u32,
    /// The longest any request may run, whatever its `grpc-timeout`: 60 s; `None`: only the
    /// client's deadline applies.
    pub request_timeout: Option<Duration>,
    /// Largest answer of a read that returns records (query, fetch, fetch by metadata, list),
    /// counted as it is built (see `larch_engine::answer`): 4 MiB, Pinecone's 4 MB query
    /// result limit. gRPC services encode up to this plus [`RESPONSE_HEADROOM_BYTES`].
    pub max_response_bytes: usize,
    /// Most queries (and fetches by metadata) of one API key running or queued at once in the
    /// process: 64 (one application usually sends everything with one key). One more is refused with `RESOURCE_EXHAUSTED` and a retry pushback.
    pub max_queries_per_key: usize,
    /// How long after its headers a request's first body bytes may take to arrive: 5 s.
    pub body_timeout: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_request_bytes: 2 * 1024 * 1024,
            max_concurrent_requests: 1024,
            max_requests_per_peer: 256,
            max_streams_per_connection: 128,
            max_header_bytes: 16 * 1024,
            request_timeout: Some(Duration::from_secs(60)),
            max_response_bytes: larch_engine::answer::DEFAULT_MAX_ANSWER_BYTES,
            max_queries_per_key: 64,
            body_timeout: Duration::from_secs(5),
        }
    }
}

impl Limits {
    /// Limits with `settings` and a fresh in-flight budget.
    pub fn new(settings: LimitSettings) -> Limits {
        Limits {
            settings,
            in_flight: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
            queries: KeyedGate::new(settings.max_queries_per_key),
            peers: Arc::default(),
        }
    }

    /// The answer budget of reads that return records.
    pub fn answer_budget(&self) -> larch_engine::AnswerBudget {
        larch_engine::AnswerBudget::new(self.settings.max_response_bytes)
    }

    /// The largest message a gRPC service may encode: the answer budget plus
    /// [`RESPONSE_HEADROOM_BYTES`] for what the budget does not count (namespace, pagination).
    pub fn max_encoding_bytes(&self) -> usize {
        self.settings
            .max_response_bytes
            .saturating_add(RESPONSE_HEADROOM_BYTES)
    }

    /// The per-key cap on concurrent queries, shared by every port made from these limits.
    pub fn queries(&self) -> &Arc<KeyedGate> {
        &self.queries
    }

    /// The largest gRPC request message, in bytes (for tonic's own decoding limit too).
    pub fn max_request_bytes(&self) -> usize {
        self.settings.max_request_bytes
    }

    /// A tonic server builder with the per-connection settings: HTTP/1.1 accepted next to
    /// HTTP/2 (REST shares the ports), at most `max_streams_per_connection` streams per
    /// connection and `max_header_bytes` of headers per request, and keepalive pings on idle
    /// HTTP/2 connections (every 60 s; no answer within 20 s closes the connection).
    pub fn server(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .accept_http1(true)
            .max_concurrent_streams(self.settings.max_streams_per_connection)
            .http2_max_header_list_size(self.settings.max_header_bytes)
            // Pings on idle HTTP/2 connections find peers that vanished without closing (a
            // crashed client, a dropped NAT entry) and free their connections.
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
    }

    /// The per-request layer; REST refusals are rendered by `render` in the plane's error shape.
    pub fn layer(&self, render: Render) -> LimitLayer {
        LimitLayer {
            limits: self.clone(),
            render,
        }
    }
}

/// Renders a REST refusal (status, class, message, retry hint) in a plane's JSON error shape.
pub type Render = fn(HttpError) -> Response;

/// The tower layer made by [`Limits::layer`].
#[derive(Clone)]
pub struct LimitLayer {
    limits: Limits,
    render: Render,
}

impl std::fmt::Debug for LimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitLayer")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<S> tower::Layer<S> for LimitLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`LimitLayer`].
#[derive(Clone, Debug)]
pub struct Limited<S> {
    inner: S,
    layer: LimitLayer,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> tower::Service<Request<Body>> for Limited<S>
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Axum routers are always ready; the in-flight budget is taken per request in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> BoxFuture {
        // The clone that was made ready is used; a fresh clone stays for the next call.
        let inner = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, inner);
        let layer = self.layer.clone();
        Box::pin(async move { Ok(layer.admit(inner, request).await) })
    }
}

/// How a refusal is answered: gRPC status (with optional pushback) or REST.
#[derive(Debug)]
struct Refusal {
    /// The class: the gRPC status, and the code of a REST body.
    code: Code,
    /// The REST status, which HTTP prescribes for some refusals (408, 413) whatever the class.
    http: StatusCode,
    message: String,
    retry_after: Option<Duration>,
}

impl LimitLayer {
    async fn admit<S>(&self, mut inner: S, request: Request<Body>) -> Response
    where
        S: tower::Service<Request<Body>, Response = Response, Error = Infallible>,
    {
        let grpc = is_grpc(&request);
        let path = request.uri().path();
        let routine =
            path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.");
        let deadline = match self.deadline(&request, grpc) {
            Ok(deadline) => deadline,
            Err(refusal) => return self.refuse(grpc, refusal),
        };
        let peer = if routine {
            None
        } else {
            match self.peer_slot(&request) {
                Ok(slot) => slot,
                Err(refusal) => return self.refuse(grpc, refusal),
            }
        };
        let work = async {
            // The body has to start before the request may take a slot of the process budget:
            // a client that sends headers and then nothing holds only its own peer's slots.
            let request = match self.body_started(request, grpc).await {
                Ok(request) => request,
                Err(refusal) => return (self.refuse(grpc, refusal), None),
            };
            let permit = if routine {
                None
            } else {
                match Arc::clone(&self.limits.in_flight).try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => return (self.refuse(grpc, self.busy()), None),
                }
            };
            match inner.call(request).await {
                Ok(response) => (response, permit),
                Err(never) => match never {},
            }
        };
        let (response, permit) = match deadline {
            None => work.await,
            Some((timeout, wait)) => match tokio::time::timeout(wait, work).await {
                Ok(answered) => answered,
                Err(_) => (self.refuse(grpc, expired(timeout)), None),
            },
        };
        // The request counts as in flight until its response body is sent (or dropped): a
        // client that never reads its answers cannot pile up more of them than the limits.
        if permit.is_none() && peer.is_none() {
            return response;
        }
        response.map(|body| {
            Body::new(Holding {
                body,
                _permit: permit,
                _peer: peer,
            })
        })
    }

    fn busy(&self) -> Refusal {
        Refusal {
            code: Code::ResourceExhausted,
            http: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "the server is busy: {} requests are already running (the limit, \
                 --max-concurrent-requests); retry shortly",
                self.limits.settings.max_concurrent_requests
            ),
            retry_after: Some(BUSY_PUSHBACK),
        }
    }

    /// One of the per-peer slots of the request's client address; `None` when the address is
    /// unknown (no TCP connection info, as in unit tests).
    fn peer_slot(&self, request: &Request<Body>) -> Result<Option<PeerSlot>, Refusal> {
        let Some(ip) = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr())
            .map(|addr| addr.ip())
        else {
            return Ok(None);
        };
        let limit = self.limits.settings.max_requests_per_peer;
        let mut peers = lock(&self.limits.peers);
        let held = peers.entry(ip).or_insert(0);
        if *held >= limit {
            return Err(Refusal {
                code: Code::ResourceExhausted,
                http: StatusCode::TOO_MANY_REQUESTS,
                message: format!(
                    "too many requests from this client: {limit} are already running or \
                     waiting for their body (the per-client limit, --max-requests-per-peer); \
                     retry shortly"
                ),
                retry_after: Some(BUSY_PUSHBACK),
            });
        }
        *held += 1;
        Ok(Some(PeerSlot {
            peers: Arc::clone(&self.limits.peers),
            ip,
        }))
    }

    /// Waits (at most `body_timeout`) for the first bytes of the body: a gRPC message's
    /// prefix, whose announced length is checked against the limit; for REST the first chunk
    /// of a body that has one. What was read is put back in front of the rest of the body.
    async fn body_started(
        &self,
        request: Request<Body>,
        grpc: bool,
    ) -> Result<Request<Body>, Refusal> {
        let (parts, body) = request.into_parts();
        if !grpc && http_body::Body::is_end_stream(&body) {
            return Ok(Request::from_parts(parts, body));
        }
        let wanted = if grpc { 5 } else { 1 };
        let timeout = self.limits.settings.body_timeout;
        let Ok(body) = tokio::time::timeout(timeout, Prefixed::read(body, wanted)).await else {
            return Err(Refusal {
                code: Code::DeadlineExceeded,
                http: StatusCode::REQUEST_TIMEOUT,
                message: format!(
                    "the request body did not start within {} ms of its headers (the limit, \
                     --body-timeout): send the message with the request",
                    timeout.as_millis()
                ),
                retry_after: None,
            });
        };
        if grpc && let Some(prefix) = body.prefix.as_deref().filter(|prefix| prefix.len() >= 5) {
            let length = (&prefix[1..5]).get_u32() as usize;
            if length > self.limits.settings.max_request_bytes {
                return Err(Refusal {
                    code: Code::InvalidArgument,
                    http: StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!(
                        "the request message is {length} bytes; the limit is {} bytes \
                         (--max-request-bytes; Pinecone allows 2 MB per upsert): send fewer \
                         vectors per request",
                        self.limits.settings.max_request_bytes
                    ),
                    retry_after: None,
                });
            }
        }
        Ok(Request::from_parts(parts, Body::new(body)))
    }

    /// How long the request may run: the shorter of its `grpc-timeout` and the server's limit.
    /// A deadline that has already passed (or is too short to do anything) refuses it.
    /// Returns the deadline as stated and how long to wait for the work.
    fn deadline(
        &self,
        request: &Request<Body>,
        grpc: bool,
    ) -> Result<Option<(Duration, Duration)>, Refusal> {
        let client = if grpc {
            request
                .headers()
                .get("grpc-timeout")
                .and_then(parse_grpc_timeout)
        } else {
            None
        };
        let timeout = match (client, self.limits.settings.request_timeout) {
            (Some(client), Some(server)) => Some(client.min(server)),
            (client, server) => client.or(server),
        };
        let Some(timeout) = timeout else {
            return Ok(None);
        };
        // tonic's server also enforces `grpc-timeout`, answering CANCELLED; finishing a little
        // earlier makes DEADLINE_EXCEEDED, the status gRPC specifies, the one clients see.
        match timeout.checked_sub(DEADLINE_MARGIN) {
            Some(wait) if !wait.is_zero() => Ok(Some((timeout, wait))),
            _ => Err(expired(timeout)),
        }
    }

    fn refuse(&self, grpc: bool, refusal: Refusal) -> Response {
        tracing::debug!(code = %refusal.code, message = %refusal.message, "request refused by a limit");
        if grpc {
            larch_model::wire::grpc_status(&refusal)
                .into_http::<Body>()
                .into_response()
        } else {
            let Refusal {
                code,
                http,
                message,
                retry_after,
            } = refusal;
            (self.render)(HttpError {
                status: http,
                code,
                message,
                retry_after,
            })
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

impl Classified for Refusal {
    fn code(&self) -> Code {
        self.code
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// How much earlier than the client's deadline the layer answers (see [`LimitLayer::deadline`]).
const DEADLINE_MARGIN: Duration = Duration::from_millis(2);

fn expired(timeout: Duration) -> Refusal {
    Refusal {
        code: Code::DeadlineExceeded,
        http: StatusCode::GATEWAY_TIMEOUT,
        message: format!(
            "the request did not finish within its deadline of {} ms; the work it started was \
             abandoned (writes that were not acknowledged may or may not have been applied)",
            timeout.as_millis()
        ),
        retry_after: None,
    }
}

/// Whether `request` is gRPC (as opposed to REST), by its content type.
fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// A `grpc-timeout` value: 1–8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`). A malformed
/// value is ignored (gRPC's rule), so the server's own limit applies.
pub fn parse_grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// A request body with the bytes already read from it put back in front.
struct Prefixed {
    prefix: Option<Bytes>,
    /// A frame other than data (trailers) read before `wanted` bytes came.
    then: Option<Frame<Bytes>>,
    rest: Body,
}

impl Prefixed {
    /// Reads `body` until `wanted` bytes, a frame other than data, an error or its end.
    async fn read(mut body: Body, wanted: usize) -> Prefixed {
        let mut prefix = BytesMut::new();
        let mut then = None;
        while prefix.len() < wanted {
            match std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx))
                .await
            {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => prefix.extend_from_slice(&data),
                    // Trailers before a whole prefix: let the decoder report it.
                    Err(frame) => {
                        then = Some(frame);
                        break;
                    }
                },
                // The error comes again from the rest of the body, to whoever reads it.
                Some(Err(_)) | None => break,
            }
        }
        Prefixed {
            prefix: Some(prefix.freeze()).filter(|prefix| !prefix.is_empty()),
            then,
            rest: body,
        }
    }
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if let Some(frame) = self.then.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.then.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.rest.size_hint();
        if let Some(prefix) = &self.prefix {
            let extra = prefix.len() as u64;
            hint.set_lower(hint.lower() + extra);
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + extra);
            }
        }
        hint
    }
}

/// A response body that holds its request's in-flight permit and per-peer slot until it is
/// dropped.
struct Holding {
    body: Body,
    _permit: Option<OwnedSemaphorePermit>,
    _peer: Option<PeerSlot>,
}

/// One request's slot of its client address's `max_requests_per_peer`, given back on drop.
struct PeerSlot {
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut peers = lock(&self.peers);
        if let Some(held) = peers.get_mut(&self.ip) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                peers.remove(&self.ip);
            }
        }
    }
}

// Counts are changed in one step under the lock; a poisoned lock is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl http_body::Body for Holding {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Tells work queued for a request whether the request is still wanted: [`Cancel::guard`]
/// gives the async side a guard to hold while it awaits the work; when the guard is dropped
/// (the request finished, or was abandoned at its deadline or by the client) the token reads
/// cancelled, and work that has not started yet is skipped.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A token and the guard that cancels it when dropped.
    pub fn guard() -> (Cancel, CancelGuard) {
        let cancel = Cancel::default();
        (cancel.clone(), CancelGuard(cancel))
    }

    /// Whether the request was abandoned.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// The flag itself, for work that looks at it while it runs (the engine's
    /// `larch_engine::interrupt`).
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
}

/// Cancels its [`Cancel`] token when dropped.
#[derive(Debug)]
pub struct CancelGuard(Cancel);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        (self.0).0.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_by_the_spec() {
        let parse = |text: &str| parse_grpc_timeout(&HeaderValue::from_str(text).expect("ascii"));
        assert_eq!(parse("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("0n"), Some(Duration::ZERO));
        for bad in ["", "S", "1", "1s", "123456789S", "-1S", "1.5S", "1 S", "xS"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    fn render(refused: HttpError) -> Response {
        let mut response = (refused.status, refused.message).into_response();
        if let Some(retry_after) = refused.retry_after {
            larch_model::wire::set_retry_after(response.headers_mut(), retry_after);
        }
        response
    }

    /// An app whose `/slow` route waits until released and whose `/echo` route answers with
    /// the request body's length, behind a layer with `settings`.
    fn app(settings: LimitSettings, release: Arc<tokio::sync::Notify>) -> axum::Router {
        app_with(&Limits::new(settings), release)
    }

    /// [`app`] behind `limits`, whose state the test can look at.
    fn app_with(limits: &Limits, release: Arc<tokio::sync::Notify>) -> axum::Router {
        use axum::routing::post;
        axum::Router::new()
            .route(
                "/slow",
                post(move || async move {
                    release.notified().await;
                    "done"
                }),
            )
            .route(
                "/echo",
                post(|body: Bytes| async move { body.len().to_string() }),
            )
            .route("/grpc.health.v1.Health/Check", post(|| async { "healthy" }))
            .layer(limits.layer(render))
    }

    fn grpc(path: &str, body: impl Into<Body>) -> Request<Body> {
        Request::post(path)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .body(body.into())
            .expect("request")
    }

    fn grpc_status(response: &Response) -> Option<(i32, String)> {
        let code = response
            .headers()
            .get("grpc-status")?
            .to_str()
            .ok()?
            .parse()
            .ok()?;
        let message = response
            .headers()
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .unwrap_or_default()
            .replace("%20", " ");
        Some((code, message))
    }

    async fn call(app: &axum::Router, request: Request<Body>) -> Response {
        use tower::Service;
        let mut app = app.clone();
        match app.call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    async fn text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn oversized_messages_are_refused_from_their_prefix() {
        let settings = LimitSettings {
            max_request_bytes: 100,
            ..LimitSettings::default()
        };
        let app = app(settings, Arc::default());
        // Exactly at the limit: passes, body intact (prefix put back).
        let mut at_limit = vec![0u8, 0, 0, 0, 100];
        at_limit.extend([7u8; 100]);
        let response = call(&app, grpc("/echo", at_limit)).await;
        assert_eq!(text(response).await, "105");
        // A 128 MiB announcement followed by a body that never ends: refused after the prefix.
        let (sender, body) = {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            (tx, Body::new(http_body_util_stream(stream)))
        };
        let header = Bytes::from_static(&[0, 8, 0, 0, 0]);
        sender.send(Ok(Frame::data(header))).await.expect("send");
        let response =
            tokio::time::timeout(Duration::from_secs(10), call(&app, grpc("/echo", body)))
                .await
                .expect("answered without the rest of the message");
        let (code, message) = grpc_status(&response).expect("grpc status");
        assert_eq!(code, tonic::Code::InvalidArgument as i32);
        assert!(message.contains("134217728 bytes"), "{message}");
        assert!(message.contains("limit is 100 bytes"), "{message}");
        drop(sender);
    }

    /// A body from a stream of frames.
    fn http_body_util_stream(
        stream: impl tokio_stream::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static,
    ) -> impl http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static {
        http_body_util::StreamBody::new(stream)
    }

    #[tokio::test]
    async fn requests_past_the_in_flight_limit_get_pushback_but_probes_pass() {
        let release = Arc::new(tokio::sync::Notify::new());
        let settings = LimitSettings {
            max_concurrent_requests: 2,
            ..LimitSettings::default()
        };
        let app = app(settings, Arc::clone(&release));
        let first = tokio::spawn({
            let app = app.clone();
            async move { call(&app, grpc("/slow", Body::empty())).await }
        });
        let second = tokio::spawn({
            let app = app.clone();
            async move {
                call(
                    &app,
                    Request::post("/slow").body(Body::empty()).expect("rest"),
                )
                .await
            }
        });
        // Both hold a permit once they wait in the handler.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = call(&app, grpc("/echo", Body::empty())).await;
        let (code, message) = grpc_status(&refused).expect("grpc status");
        assert_eq!(code, tonic::Code::ResourceExhausted as i32);
        assert!(message.contains("--max-concurrent-requests"), "{message}");
        assert_eq!(refused.headers()[RETRY_PUSHBACK_HEADER], "100");
        let refused = call(
            &app,
            Request::post("/echo").body(Body::empty()).expect("rest"),
        )
        .await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[http::header::RETRY_AFTER], "1");
        // Health checks are never refused.
        let health = call(&app, grpc("/grpc.health.v1.Health/Check", Body::empty())).await;
        assert_eq!(text(health).await, "healthy");
        release.notify_waiters();
        for handle in [first, second] {
            assert_eq!(text(handle.await.expect("joined")).await, "done");
        }
        // The permits came back.
        let response = call(&app, grpc("/echo", Body::empty())).await;
        assert_eq!(text(response).await, "0");
        // An answer whose body is not sent yet still holds its permit.
        let unread = [
            call(&app, grpc("/echo", Body::empty())).await,
            call(&app, grpc("/echo", Body::empty())).await,
        ];
        let refused = call(&app, grpc("/echo", Body::empty())).await;
        let (code, _) = grpc_status(&refused).expect("grpc status");
        assert_eq!(code, tonic::Code::ResourceExhausted as i32);
        drop(unread);
        let response = call(&app, grpc("/echo", Body::empty())).await;
        assert_eq!(text(response).await, "0");
    }

    #[tokio::test]
    async fn deadlines_answer_deadline_exceeded() {
        let app = app(LimitSettings::default(), Arc::default());
        let mut request = grpc("/slow", Body::empty());
        request
            .headers_mut()
            .insert("grpc-timeout", HeaderValue::from_static("50m"));
        let response = call(&app, request).await;
        let (code, message) = grpc_status(&response).expect("grpc status");
        assert_eq!(code, tonic::Code::DeadlineExceeded as i32, "{message}");
        assert!(message.contains("deadline of 50 ms"), "{message}");
        // Already expired on arrival: refused without running the handler.
        let mut request = grpc("/echo", Body::empty());
        request
            .headers_mut()
            .insert("grpc-timeout", HeaderValue::from_static("0n"));
        let (code, _) = grpc_status(&call(&app, request).await).expect("grpc status");
        assert_eq!(code, tonic::Code::DeadlineExceeded as i32);
        // A malformed timeout is ignored; the server's own limit applies.
        let mut request = grpc("/echo", Body::empty());
        request
            .headers_mut()
            .insert("grpc-timeout", HeaderValue::from_static("soon"));
        assert_eq!(text(call(&app, request).await).await, "0");
        // The server's limit applies to REST too.
        let settings = LimitSettings {
            request_timeout: Some(Duration::from_millis(30)),
            ..LimitSettings::default()
        };
        let app = super::tests::app(settings, Arc::default());
        let response = call(
            &app,
            Request::post("/slow").body(Body::empty()).expect("rest"),
        )
        .await;
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    }

    /// A request body that never sends anything (its sender is returned, to be kept).
    fn silent_body() -> (
        tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
        Body,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        (tx, Body::new(http_body_util_stream(stream)))
    }

    fn from_peer(mut request: Request<Body>, ip: [u8; 4]) -> Request<Body> {
        request
            .extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: Some((ip, 40000).into()),
            });
        request
    }

    #[tokio::test]
    async fn bodies_that_do_not_start_hold_only_their_peers_slots() {
        let settings = LimitSettings {
            max_concurrent_requests: 2,
            max_requests_per_peer: 2,
            // Not reached: the bodies are ended by the test.
            body_timeout: Duration::from_secs(600),
            ..LimitSettings::default()
        };
        let limits = Limits::new(settings);
        let app = app_with(&limits, Arc::default());
        // Two requests from one address whose bodies do not start: they hold its two slots
        // but none of the process's two permits.
        let (grpc_sender, grpc_body) = silent_body();
        let (rest_sender, rest_body) = silent_body();
        let waiting = [
            tokio::spawn({
                let app = app.clone();
                async move { call(&app, from_peer(grpc("/echo", grpc_body), [192, 0, 2, 1])).await }
            }),
            tokio::spawn({
                let app = app.clone();
                let request = Request::post("/echo").body(rest_body).expect("rest");
                async move { call(&app, from_peer(request, [192, 0, 2, 1])).await }
            }),
        ];
        // Once both wait for their bodies, the address's next request is refused.
        let ip = IpAddr::from([192, 0, 2, 1]);
        while lock(&limits.peers).get(&ip) != Some(&2) {
            tokio::task::yield_now().await;
        }
        let response = call(
            &app,
            from_peer(grpc("/echo", Body::empty()), [192, 0, 2, 1]),
        )
        .await;
        let refused = grpc_status(&response);
        let (code, message) = refused.expect("refused past the per-peer limit");
        assert_eq!(code, tonic::Code::ResourceExhausted as i32, "{message}");
        assert!(message.contains("--max-requests-per-peer"), "{message}");
        // Another address is served: the process's permits are free.
        let request = from_peer(grpc("/echo", vec![0u8, 0, 0, 0, 0]), [192, 0, 2, 2]);
        assert_eq!(text(call(&app, request).await).await, "5");
        // Bodies that end are served, and give their slots back.
        drop((grpc_sender, rest_sender));
        for handle in waiting {
            assert_eq!(text(handle.await.expect("joined")).await, "0");
        }
        let request = from_peer(grpc("/echo", Body::empty()), [192, 0, 2, 1]);
        assert_eq!(text(call(&app, request).await).await, "0");
    }

    #[tokio::test]
    async fn bodies_that_do_not_start_in_time_are_cut_off() {
        let settings = LimitSettings {
            max_concurrent_requests: 1,
            body_timeout: Duration::from_millis(50),
            ..LimitSettings::default()
        };
        let app = app(settings, Arc::default());
        let (grpc_sender, body) = silent_body();
        let response = call(&app, from_peer(grpc("/echo", body), [192, 0, 2, 1])).await;
        let (code, message) = grpc_status(&response).expect("grpc status");
        assert_eq!(code, tonic::Code::DeadlineExceeded as i32, "{message}");
        assert!(message.contains("--body-timeout"), "{message}");
        let (rest_sender, body) = silent_body();
        let request = Request::post("/echo").body(body).expect("rest");
        let response = call(&app, request).await;
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        drop((grpc_sender, rest_sender, response));
        // Nothing is held afterwards.
        let request = from_peer(grpc("/echo", Body::empty()), [192, 0, 2, 1]);
        assert_eq!(text(call(&app, request).await).await, "0");
    }

    #[test]
    fn cancel_guard_cancels_on_drop() {
        let (cancel, guard) = Cancel::guard();
        assert!(!cancel.is_cancelled());
        drop(guard);
        assert!(cancel.is_cancelled());
    }
}
