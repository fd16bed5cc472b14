//! [`RequestLayer`]: request ids, a `tracing` span and metrics for every request of a plane.
//!
//! Applied with `axum::Router::layer` to the app that serves a port's gRPC and REST routes,
//! it wraps every route and the fallback, outside the API-key layers, so refusals are seen too:
//!
//! 1. The request id is the request's `x-request-id` (Pinecone's clients send one) when it is
//!    1 to [`MAX_REQUEST_ID_LEN`] visible ASCII characters; otherwise a new UUID v4. It is put
//!    back on the request (header and [`RequestId`] extension) for the handlers.
//! 2. The request runs inside a span `request{request_id, rpc, index}` (`index` only on a
//!    data-plane port), so every log line emitted on its behalf names it. Health and
//!    reflection requests, which probes send every few seconds, get a `DEBUG` span instead of
//!    an `INFO` one, which is free unless debug logging is on.
//! 3. The response carries `x-request-id` in its headers, and a gRPC response also in its
//!    trailers: the body is wrapped so the id joins the trailers frame. A trailers-only gRPC
//!    response (an error such as an auth refusal, `grpc-status` in the headers) has it in its
//!    headers, which is where such a response keeps its trailers.
//! 4. The request is counted in [`Metrics`] by RPC and status once the status is known: at the
//!    response headers for REST (the HTTP status) and trailers-only gRPC, at the trailers
//!    otherwise (`grpc-status`; `CANCELLED` if the body is dropped before them). The `rpc`
//!    label is a gRPC method of Larch's or a REST route template; any other path — a method
//!    that does not exist, junk — is counted as `unrouted`, so clients cannot grow the set of
//!    label values.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tracing::Instrument;

use crate::Metrics;
use crate::metrics::UNROUTED;

/// The header (and gRPC metadata key) carrying the request id.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-sent request id kept; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The request id of a request, in its extensions for handlers that want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The id sent by the client in `headers`, if it is usable, or a new UUID v4.
    pub fn from_headers(headers: &HeaderMap) -> RequestId {
        let sent = headers.get(&X_REQUEST_ID).filter(|value| {
            let bytes = value.as_bytes();
            (1..=MAX_REQUEST_ID_LEN).contains(&bytes.len())
                && bytes.iter().all(|b| b.is_ascii_graphic())
        });
        match sent {
            Some(value) => RequestId(value.clone()),
            None => RequestId::generate(),
        }
    }

    /// A new UUID v4 id.
    pub fn generate() -> RequestId {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        RequestId(HeaderValue::try_from(id).expect("a UUID is a valid header value"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Both constructors only admit visible ASCII.
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tower layer of every request of one port: see the [module docs](self).
#[derive(Debug, Clone)]
pub struct RequestLayer {
    metrics: Metrics,
    /// The index of a data-plane port, for the span.
    index: Option<Arc<str>>,
}

impl RequestLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Metrics) -> RequestLayer {
        RequestLayer {
            metrics,
            index: None,
        }
    }

    /// The same layer for the port serving `index`, named in every request's span.
    pub fn for_index(self, index: impl fmt::Display) -> RequestLayer {
        RequestLayer {
            index: Some(Arc::from(index.to_string())),
            ..self
        }
    }
}

impl<S> tower::Layer<S> for RequestLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`RequestLayer`].
#[derive(Debug, Clone)]
pub struct Observed<S> {
    inner: S,
    layer: RequestLayer,
}

/// What a request's span and metrics need to know about it.
struct Seen {
    rpc: String,
    /// The `rpc` metric label: `rpc` with REST paths replaced by their route template.
    label: String,
    grpc: bool,
    /// Health and reflection: counted, but with a span that is off at the default level.
    routine: bool,
}

fn seen<B>(request: &Request<B>) -> Seen {
    let path = request.uri().path();
    let grpc = request
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
    let matched = request.extensions().get::<MatchedPath>();
    let (rpc, label) = if grpc {
        // Only RPCs that exist get their own label: a route matches every method under a
        // service's prefix, and anyone may send any path, so junk would grow the label set.
        let label = if matched.is_some() && known_rpc(path) {
            path
        } else {
            UNROUTED
        };
        (path.to_owned(), label.to_owned())
    } else {
        let method = request.method();
        let label = match matched {
            Some(template) => format!("{method} {}", template.as_str()),
            None => UNROUTED.to_owned(),
        };
        (format!("{method} {path}"), label)
    };
    let routine = grpc
        && (path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection."));
    Seen {
        rpc,
        label,
        grpc,
        routine,
    }
}

/// The keyless methods of health and reflection, the only ones of their services.
const PUBLIC_RPCS: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Whether `path` is an RPC a Larch server serves (of either plane, health or reflection).
fn known_rpc(path: &str) -> bool {
    larch_auth::action_of(path).is_some() || PUBLIC_RPCS.contains(&path)
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Observed<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Unpin,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let id = RequestId::from_headers(request.headers());
        let seen = seen(&request);
        let span = if seen.routine {
            tracing::debug_span!("request", request_id = %id, rpc = %seen.rpc, index = tracing::field::Empty)
        } else {
            tracing::info_span!("request", request_id = %id, rpc = %seen.rpc, index = tracing::field::Empty)
        };
        if let Some(index) = &self.layer.index {
            span.record("index", index.as_ref());
        }
        request
            .headers_mut()
            .insert(X_REQUEST_ID, id.header_value().clone());
        request.extensions_mut().insert(id.clone());
        // The clone that was not polled ready stays behind for the next request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let answered = {
            let _entered = span.enter();
            inner.call(request)
        };
        let metrics = self.layer.metrics.clone();
        Box::pin(async move {
            let mut response = answered.instrument(span.clone()).await?;
            response
                .headers_mut()
                .insert(X_REQUEST_ID, id.header_value().clone());
            let pending = Pending {
                metrics,
                label: seen.label,
                started,
                id,
                span,
            };
            let http_status = response.status();
            let status = if seen.grpc {
                response
                    .headers()
                    .get("grpc-status")
                    .map(|code| grpc_code_name(code.as_bytes()))
            } else {
                Some(http_status.as_str())
            };
            let trailers = match status {
                // REST, or trailers-only gRPC: the status is known now.
                Some(code) => {
                    pending.finish(code);
                    None
                }
                None => Some(pending),
            };
            Ok(response.map(|inner| ObservedBody { inner, trailers }))
        })
    }
}

/// A request whose status is not counted yet.
struct Pending {
    metrics: Metrics,
    label: String,
    started: Instant,
    id: RequestId,
    span: tracing::Span,
}

impl Pending {
    fn finish(self, code: &str) {
        let elapsed = self.started.elapsed();
        self.metrics.record_request(&self.label, code, elapsed);
        tracing::debug!(parent: &self.span, code, elapsed_ms = millis(elapsed), "request answered");
    }
}

fn millis(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

/// The response body of an observed request: for gRPC, adds the request id to the trailers
/// and counts the request when they pass.
#[derive(Debug)]
pub struct ObservedBody<B> {
    inner: B,
    /// Set while a gRPC response's trailers are still to come.
    trailers: Option<Pending>,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("rpc", &self.label)
            .field("request_id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<B> Body for ObservedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match polled {
            Some(Ok(mut frame)) => {
                if let Some(trailers) = frame.trailers_mut()
                    && let Some(pending) = this.trailers.take()
                {
                    trailers.insert(X_REQUEST_ID, pending.id.header_value().clone());
                    let code = trailers
                        .get("grpc-status")
                        .map_or("UNKNOWN", |code| grpc_code_name(code.as_bytes()));
                    pending.finish(code);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => {
                if let Some(pending) = this.trailers.take() {
                    pending.finish("INTERNAL");
                }
                Poll::Ready(Some(Err(err)))
            }
            None => {
                // A gRPC body that ends without trailers: the client sees no status.
                if let Some(pending) = this.trailers.take() {
                    pending.finish("UNKNOWN");
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        // Dropped before the trailers: the client went away (or the connection did).
        if let Some(pending) = self.trailers.take() {
            pending.finish("CANCELLED");
        }
    }
}

/// The canonical name of the gRPC status code `code` (the text of a `grpc-status` value).
pub fn grpc_code_name(code: &[u8]) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    std::str::from_utf8(code)
        .ok()
        .and_then(|code| code.parse::<usize>().ok())
        .and_then(|code| NAMES.get(code).copied())
        .unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_request_id_is_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123_XYZ"));
        assert_eq!(RequestId::from_headers(&headers).as_str(), "abc-123_XYZ");
    }

    #[test]
    fn a_missing_or_unusable_request_id_is_replaced_by_a_uuid() {
        let too_long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        let longest = "y".repeat(MAX_REQUEST_ID_LEN);
        let mut headers = HeaderMap::new();
        assert_ne!(
            RequestId::from_headers(&headers),
            RequestId::from_headers(&headers),
            "fresh ids differ"
        );
        for bad in ["", "has space", "tab\there", too_long.as_str()] {
            headers.insert(
                X_REQUEST_ID,
                HeaderValue::from_str(bad).expect("a header value"),
            );
            let id = RequestId::from_headers(&headers);
            assert!(uuid::Uuid::parse_str(id.as_str()).is_ok(), "{bad:?} → {id}");
        }
        headers.insert(
            X_REQUEST_ID,
            HeaderValue::from_bytes(b"caf\xc3\xa9").expect("bytes"),
        );
        assert!(uuid::Uuid::parse_str(RequestId::from_headers(&headers).as_str()).is_ok());
        headers.insert(
            X_REQUEST_ID,
            HeaderValue::from_str(&longest).expect("a header value"),
        );
        assert_eq!(RequestId::from_headers(&headers).as_str(), longest);
    }

    #[test]
    fn grpc_codes_have_their_canonical_names() {
        assert_eq!(grpc_code_name(b"0"), "OK");
        assert_eq!(grpc_code_name(b"7"), "PERMISSION_DENIED");
        assert_eq!(grpc_code_name(b"16"), "UNAUTHENTICATED");
        assert_eq!(grpc_code_name(b"17"), "UNKNOWN");
        assert_eq!(grpc_code_name(b"x"), "UNKNOWN");
    }
}
