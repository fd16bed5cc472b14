//! The tonic adapter: a tower [`AuthLayer`] for `Server::builder().layer(..)`, the
//! [`principal`] helper for handlers, and [`Error`]'s conversion to [`Status`] (through the
//! shared map, `larch_model::wire`).
//!
//! The layer reads the `api-key` request metadata, authenticates it with a [`KeyStore`]
//! and puts the resulting [`Principal`] into the request extensions. Requests without a
//! valid key get a trailers-only `UNAUTHENTICATED` response and never reach the service.
//! Health checks and reflection pass without a key, so probes and `grpcurl list` work.
//!
//! A server puts [`crate::http::AuthenticateLayer`] outside its limits, so the key is checked
//! before a request is admitted; this layer then finds the request authenticated and only
//! authorizes it (roles, the index's project, the rate limit).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::{debug, error};

use crate::error::ForClient;
use crate::gate::{Attempt, Authenticated, Presented, Rejection, Scope};
use crate::{Error, KeyStore, Principal, Result, action_of};

/// The request metadata (HTTP/2 header) that carries the key.
pub const API_KEY_HEADER: &str = "api-key";

/// Path prefixes of services reachable without a key.
pub(crate) const PUBLIC_PREFIXES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

const MISSING_KEY_MESSAGE: &str = "missing api key: send it in the 'api-key' request metadata";

/// Where both planes set the retry hint of a refusal (`grpc-retry-pushback-ms`); kept here for
/// the layers that used it from this crate.
pub use larch_model::wire::{RETRY_PUSHBACK_HEADER, set_pushback};

/// The status a gRPC client sees for every crate error: the shared map
/// ([`larch_model::wire::grpc_status`]) of the error as a client may see it ([`ForClient`]).
impl From<Error> for Status {
    fn from(err: Error) -> Status {
        larch_model::wire::grpc_status(&ForClient::new(&err, MISSING_KEY_MESSAGE))
    }
}

/// A client interceptor sending one key in `api-key` with every request (e.g. the admin key on
/// the internal calls between the planes in split mode).
#[derive(Clone)]
pub struct SendKey(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl SendKey {
    /// Sends `key`; `None` if it cannot be sent as request metadata (not visible ASCII).
    pub fn new(key: &str) -> Option<SendKey> {
        tonic::metadata::MetadataValue::try_from(key)
            .ok()
            .map(SendKey)
    }
}

impl std::fmt::Debug for SendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendKey(****)")
    }
}

impl tonic::service::Interceptor for SendKey {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request
            .metadata_mut()
            .insert(API_KEY_HEADER, self.0.clone());
        Ok(request)
    }
}

/// The principal attached by [`AuthLayer`], for use in handlers.
///
/// # Errors
///
/// `UNAUTHENTICATED` if there is none, which only happens when the service was mounted
/// without the layer (or on a public path); it is a defensive check, not a normal outcome.
pub fn principal<T>(req: &tonic::Request<T>) -> Result<&Principal, Status> {
    req.extensions().get::<Principal>().ok_or_else(|| {
        error!("request has no principal; is the service mounted behind AuthLayer?");
        Status::from(Error::MissingKey)
    })
}

/// A tower [`Layer`] that authenticates every gRPC request except health and reflection.
///
/// ```no_run
/// # async fn run(store: larch_auth::KeyStore, routes: tonic::service::Routes)
/// #     -> Result<(), tonic::transport::Error> {
/// let addr = "127.0.0.1:5081".parse().expect("valid address");
/// tonic::transport::Server::builder()
///     .layer(larch_auth::grpc::AuthLayer::new(store))
///     .add_routes(routes)
///     .serve(addr)
///     .await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AuthLayer {
    store: KeyStore,
    scope: Scope,
}

impl AuthLayer {
    /// A control-plane layer checking keys against `store` (a shared handle, so later key
    /// changes apply) and roles against each RPC.
    pub fn new(store: KeyStore) -> Self {
        AuthLayer::scoped(store, Scope::ControlPlane)
    }

    /// A layer for requests acting in `scope` (e.g. one index's data plane).
    pub fn scoped(store: KeyStore, scope: Scope) -> Self {
        AuthLayer { store, scope }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            store: self.store.clone(),
            scope: self.scope.clone(),
        }
    }
}

/// The service built by [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    store: KeyStore,
    scope: Scope,
}

impl<S> AuthService<S> {
    /// Admits the request; `Ok` carries the principal, or `None` for a public path.
    fn check<B>(&self, req: &http::Request<B>) -> Result<Option<Principal>, Rejection> {
        let path = req.uri().path();
        if PUBLIC_PREFIXES
            .iter()
            .any(|prefix| path.starts_with(prefix))
        {
            return Ok(None);
        }
        let presented = presented_key(req.headers());
        let attempt = Attempt {
            rpc: path,
            action: action_of(path),
            presented,
            peer: peer_ip(req.extensions()),
        };
        match req.extensions().get::<Authenticated>() {
            // The key was checked before the request was admitted; authorize only.
            Some(authenticated) => self
                .store
                .authorize_attempt(&self.scope, attempt, authenticated.principal().clone())
                .map(Some),
            None => self.store.admit(&self.scope, attempt).map(Some),
        }
    }
}

/// The key in the `api-key` header. Pinecone's clients may send a key with edge spaces or
/// tabs; they are not part of it.
pub(crate) fn presented_key(headers: &http::HeaderMap) -> Presented<'_> {
    match headers.get(API_KEY_HEADER).map(|value| value.to_str()) {
        None => Presented::Missing,
        Some(Ok(text)) => Presented::Key(text.trim()),
        Some(Err(_)) => Presented::Unreadable,
    }
}

/// The peer's IP address, from the connection info tonic's server attaches to requests.
pub(crate) fn peer_ip(extensions: &http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
        .map(|addr| addr.ip())
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.check(&req) {
            Ok(principal) => {
                if let Some(principal) = principal {
                    req.extensions_mut().insert(principal);
                }
                ResponseFuture::inner(self.inner.call(req))
            }
            Err(Rejection { error, delay }) => {
                debug!(path = req.uri().path(), error = %error, "rejected request");
                ResponseFuture::rejected(Status::from(error), delay)
            }
        }
    }
}

/// Future of [`AuthService`]: the inner service's response, or an immediate rejection.
pub struct ResponseFuture<F> {
    kind: Kind<F>,
}

enum Kind<F> {
    // Boxed so this future is `Unpin` without pin projection (the crate has no `unsafe`).
    Inner(Pin<Box<F>>),
    Rejected(Option<Status>),
    /// A refusal held back by the failed-authentication slowdown.
    Delayed(Pin<Box<tokio::time::Sleep>>, Option<Status>),
}

impl<F> ResponseFuture<F> {
    fn inner(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Inner(Box::pin(future)),
        }
    }

    fn rejected(status: Status, delay: std::time::Duration) -> Self {
        let kind = if delay.is_zero() {
            Kind::Rejected(Some(status))
        } else {
            Kind::Delayed(Box::pin(tokio::time::sleep(delay)), Some(status))
        };
        ResponseFuture { kind }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().kind {
            Kind::Inner(future) => future.as_mut().poll(cx),
            Kind::Rejected(status) => Poll::Ready(Ok(trailers_only(status))),
            Kind::Delayed(sleep, status) => {
                std::task::ready!(sleep.as_mut().poll(cx));
                Poll::Ready(Ok(trailers_only(status)))
            }
        }
    }
}

/// The refusal as a trailers-only response: grpc-status, grpc-message and any metadata (such
/// as the retry pushback) in the headers.
fn trailers_only(status: &mut Option<Status>) -> http::Response<Body> {
    status
        .take()
        .expect("ResponseFuture polled after completion")
        .into_http()
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            Kind::Inner(_) => "Inner",
            Kind::Rejected(_) => "Rejected",
            Kind::Delayed(..) => "Delayed",
        };
        f.debug_tuple("ResponseFuture").field(&state).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ApiKey, Grant, StoredKey};
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tonic::Code;

    /// An AuthService around an inner service that records the principal it saw.
    fn service(
        store: KeyStore,
    ) -> (
        impl Service<http::Request<()>, Response = http::Response<Body>, Error = Infallible>,
        Arc<AtomicUsize>,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        let inner = tower::service_fn(move |req: http::Request<()>| {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut response = http::Response::new(Body::empty());
            if let Some(principal) = req.extensions().get::<Principal>() {
                response.extensions_mut().insert(principal.clone());
            }
            std::future::ready(Ok::<_, Infallible>(response))
        });
        (AuthLayer::new(store).layer(inner), calls)
    }

    fn request(path: &str, key: Option<&str>) -> http::Request<()> {
        let mut builder = http::Request::builder().uri(format!("http://localhost{path}"));
        if let Some(key) = key {
            builder = builder.header(API_KEY_HEADER, key);
        }
        builder.body(()).expect("valid request")
    }

    async fn send(
        svc: &mut impl Service<http::Request<()>, Response = http::Response<Body>, Error = Infallible>,
        req: http::Request<()>,
    ) -> http::Response<Body> {
        std::future::poll_fn(|cx| svc.poll_ready(cx))
            .await
            .expect("infallible");
        svc.call(req).await.expect("infallible")
    }

    fn grpc_status(response: &http::Response<Body>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .map(|value| value.to_str().expect("ascii"))
    }

    const QUERY: &str = "/larch.data.v1.VectorService/Query";

    #[tokio::test]
    async fn rejects_a_request_without_a_key() {
        let (mut svc, calls) = service(KeyStore::new());
        let response = send(&mut svc, request(QUERY, None)).await;
        assert_eq!(grpc_status(&response), Some("16"));
        let status = Status::from_header_map(response.headers()).expect("status in headers");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), MISSING_KEY_MESSAGE);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn rejects_a_bad_key_without_echoing_it() {
        let store = KeyStore::new();
        store.insert(StoredKey::new(&ApiKey::generate(), Grant::admin()));
        let (mut svc, calls) = service(store);
        let bad = ApiKey::generate();
        for key in [bad.as_str(), "pclocal", ""] {
            let response = send(&mut svc, request(QUERY, Some(key))).await;
            assert_eq!(grpc_status(&response), Some("16"));
            let status = Status::from_header_map(response.headers()).expect("status");
            if !key.is_empty() {
                assert_eq!(status.message(), "invalid api key");
            }
        }
        let non_ascii = http::Request::builder()
            .uri(QUERY)
            .header(
                API_KEY_HEADER,
                http::HeaderValue::from_bytes(b"\xffkey").expect("obs-text"),
            )
            .body(())
            .expect("valid request");
        assert_eq!(grpc_status(&send(&mut svc, non_ascii).await), Some("16"));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn good_key_reaches_the_service_with_its_principal() {
        let store = KeyStore::new();
        let key = ApiKey::generate();
        store.insert(StoredKey::new(&key, Grant::admin()));
        let (mut svc, calls) = service(store);
        let response = send(&mut svc, request(QUERY, Some(key.as_str()))).await;
        assert_eq!(grpc_status(&response), None);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let principal = response.extensions().get::<Principal>().expect("attached");
        assert_eq!(principal.key_id, key.key_id());
        assert!(principal.is_admin);
    }

    #[tokio::test]
    async fn health_and_reflection_pass_without_a_key() {
        let (mut svc, calls) = service(KeyStore::new());
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            let response = send(&mut svc, request(path, None)).await;
            assert_eq!(grpc_status(&response), None, "{path}");
            assert!(response.extensions().get::<Principal>().is_none());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // A look-alike path is not public.
        let response = send(&mut svc, request("/grpc.health.v1.HealthX/Check", None)).await;
        assert_eq!(grpc_status(&response), Some("16"));
    }

    #[test]
    fn principal_helper_reads_the_extension() {
        let mut req = tonic::Request::new(());
        assert_eq!(
            principal(&req).expect_err("none attached").code(),
            Code::Unauthenticated
        );
        let attached = Principal::new("k", Grant::admin());
        req.extensions_mut().insert(attached.clone());
        assert_eq!(principal(&req).expect("attached"), &attached);
    }

    #[test]
    fn errors_map_to_the_documented_codes() {
        let io = Error::Io {
            action: "read",
            path: "/x".into(),
            source: std::io::Error::other("disk on fire"),
        };
        let cases = [
            (Error::MissingKey, Code::Unauthenticated),
            (Error::InvalidKey, Code::Unauthenticated),
            (Error::Malformed("x"), Code::Unauthenticated),
            (Error::UnknownRole("Owner".into()), Code::InvalidArgument),
            (io, Code::Internal),
        ];
        for (err, code) in cases {
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            assert!(
                !status.message().contains("disk on fire"),
                "internal detail leaked"
            );
        }
    }

    #[test]
    fn layered_service_fits_tonic_server() {
        // Compile-time check that the layer satisfies `Server::builder().layer(..)`'s
        // bounds; the server itself is never started.
        fn assert_serveable<L>(_: &tonic::transport::server::Router<L>)
        where
            L: Layer<tonic::service::Routes> + Clone,
            L::Service: Service<http::Request<Body>, Response = http::Response<Body>>
                + Clone
                + Send
                + 'static,
            <L::Service as Service<http::Request<Body>>>::Future: Send,
            <L::Service as Service<http::Request<Body>>>::Error:
                Into<tonic::codegen::StdError> + Send,
        {
        }
        let router = tonic::transport::Server::builder()
            .layer(AuthLayer::new(KeyStore::new()))
            .add_routes(tonic::service::Routes::default());
        assert_serveable(&router);
    }
}
