//! The axum adapters: [`require_key`], a middleware that authenticates the `Api-Key` header
//! of REST requests with a [`KeyStore`], [`refused`] (an [`Error`] through the shared HTTP map,
//! `larch_model::wire`), and [`protect_grpc`], which mounts the gRPC layer of [`crate::grpc`] on gRPC services served
//! from an axum router (one port serving both protocols).
//!
//! Pinecone's REST clients send the key in `Api-Key` (HTTP header names are case-insensitive,
//! so it is the same header as gRPC's `api-key`). An authenticated request carries its
//! [`Principal`](crate::Principal) in its extensions, as on gRPC; a refused one never reaches a handler. Each
//! plane answers refusals in its own error shape, so it passes a [`Render`] function:
//!
//! ```
//! use axum::response::{IntoResponse, Response};
//! use axum::routing::get;
//! use larch_auth::http::{HttpAuth, require_key};
//!
//! fn render(refused: larch_auth::http::HttpError) -> Response {
//!     (refused.status, refused.message).into_response()
//! }
//! let auth = HttpAuth::new(larch_auth::KeyStore::new(), render);
//! let app: axum::Router = axum::Router::new()
//!     .route("/indexes", get(|| async { "[]" }))
//!     .layer(axum::middleware::from_fn_with_state(auth, require_key));
//! ```
//!
//! A server puts [`AuthenticateLayer`] around everything else on a port (its request limits,
//! its routing): it checks the key of every request from the headers alone — gRPC and REST
//! alike, health and reflection excepted — so a request without a valid key is answered at
//! once (after the failed-authentication slowdown, which holds nothing but a timer) and never
//! takes a slot of the in-flight budget, waits for its body, or learns whether a route exists.
//! The per-route checks then only authorize.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::StatusCode;
use tracing::debug;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::access::rest_action;
use crate::error::ForClient;
use crate::gate::{Attempt, Authenticated, Rejection, Scope};
use crate::grpc::{AuthLayer, PUBLIC_PREFIXES, peer_ip, presented_key};
use crate::{Error, KeyStore, action_of};

/// Renders a refused request (its status, class, message and retry hint, from the shared map)
/// in the plane's error shape.
pub type Render = fn(HttpError) -> Response;

/// What a [`Render`] function is given.
pub use larch_model::wire::HttpError;

const MISSING_KEY_MESSAGE: &str = "missing api key: send it in the 'Api-Key' header";

/// The state of [`require_key`]: where keys are checked, what requests act on, and how
/// refusals look.
#[derive(Clone)]
pub struct HttpAuth {
    store: KeyStore,
    scope: Scope,
    render: Render,
}

impl HttpAuth {
    /// Control-plane REST: checks keys against `store` (a shared handle, so later key changes
    /// apply) and roles against each route, and answers refusals with `render`.
    pub fn new(store: KeyStore, render: Render) -> HttpAuth {
        HttpAuth::scoped(store, Scope::ControlPlane, render)
    }

    /// REST whose requests act in `scope` (e.g. one index's data plane).
    pub fn scoped(store: KeyStore, scope: Scope, render: Render) -> HttpAuth {
        HttpAuth {
            store,
            scope,
            render,
        }
    }
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAuth")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The HTTP status, class and client-facing message of every crate error: the shared map
/// ([`HttpError::of`]) of the error as a REST client may see it ([`ForClient`]).
pub fn refused(err: &Error) -> HttpError {
    HttpError::of(&ForClient::new(err, MISSING_KEY_MESSAGE))
}

/// The HTTP status and client-facing message of `err` (see [`refused`]).
pub fn rejection(err: &Error) -> (StatusCode, String) {
    let HttpError {
        status, message, ..
    } = refused(err);
    (status, message)
}

/// Where both planes set the retry hint of a REST refusal (`Retry-After`); kept here for the
/// layers that used it from this crate.
pub use larch_model::wire::set_retry_after;

/// Axum middleware (use with `axum::middleware::from_fn_with_state`): lets a request with a
/// valid `Api-Key` that may do what the route does through with its [`Principal`](crate::Principal) attached,
/// and answers any other in the plane's error shape (401, 403, 404 for another project's
/// index, 429 with `Retry-After` when rate limited).
pub async fn require_key(
    State(auth): State<HttpAuth>,
    mut request: Request,
    next: Next,
) -> Response {
    let rpc = format!("{} {}", request.method(), request.uri().path());
    let attempt = Attempt {
        rpc: &rpc,
        action: rest_action(&auth.scope, request.method(), request.uri().path()),
        presented: presented_key(request.headers()),
        peer: peer_ip(request.extensions()),
    };
    let admitted = match request.extensions().get::<Authenticated>() {
        // The key was checked before the request was admitted; authorize only.
        Some(authenticated) => {
            auth.store
                .authorize_attempt(&auth.scope, attempt, authenticated.principal().clone())
        }
        None => auth.store.admit(&auth.scope, attempt),
    };
    match admitted {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(Rejection { error, delay }) => {
            debug!(path = request.uri().path(), error = %error, "rejected request");
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            (auth.render)(refused(&error))
        }
    }
}

/// The tower layer that authenticates every request of a port before anything else is done
/// for it (see the [module docs](self)); `render` shapes REST refusals, gRPC ones are
/// trailers-only statuses. An authenticated request carries [`Authenticated`] in its
/// extensions, which the per-route [`require_key`] and [`AuthLayer`] find.
#[derive(Clone, Debug)]
pub struct AuthenticateLayer {
    auth: HttpAuth,
}

impl AuthenticateLayer {
    /// Authenticates against `store`; `scope` names the plane and index in the audit log (a
    /// port serving several indexes, routed by host, passes [`Scope::ControlPlane`]: the index
    /// is not known before routing, and routing waits for the key).
    pub fn new(store: KeyStore, scope: Scope, render: Render) -> AuthenticateLayer {
        AuthenticateLayer {
            auth: HttpAuth::scoped(store, scope, render),
        }
    }
}

impl<S> tower::Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// The service made by [`AuthenticateLayer`].
#[derive(Clone, Debug)]
pub struct Authenticate<S> {
    inner: S,
    auth: HttpAuth,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> tower::Service<Request> for Authenticate<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> BoxFuture {
        match authenticate(&self.auth, &request) {
            Ok(principal) => {
                if let Some(principal) = principal {
                    request
                        .extensions_mut()
                        .insert(Authenticated::new(principal));
                }
                // The clone that was made ready is used; a fresh clone stays for the next call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request))
            }
            Err(Rejection { error, delay }) => {
                let grpc = is_grpc(&request);
                let render = self.auth.render;
                Box::pin(async move {
                    // Only a timer is held: no permit, no body, no route.
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Ok(refusal(grpc, render, error))
                })
            }
        }
    }
}

/// The principal of `request`'s key, or `None` for health and reflection, which need none.
///
/// # Errors
///
/// A [`Rejection`] for a missing, wrong or expired key.
fn authenticate(auth: &HttpAuth, request: &Request) -> Result<Option<crate::Principal>, Rejection> {
    let path = request.uri().path();
    if PUBLIC_PREFIXES
        .iter()
        .any(|prefix| path.starts_with(prefix))
    {
        return Ok(None);
    }
    let grpc = is_grpc(request);
    let rest_rpc;
    let (rpc, action) = if grpc {
        (path, action_of(path))
    } else {
        rest_rpc = format!("{} {path}", request.method());
        (
            rest_rpc.as_str(),
            rest_action(&auth.scope, request.method(), path),
        )
    };
    let attempt = Attempt {
        rpc,
        action,
        presented: presented_key(request.headers()),
        peer: peer_ip(request.extensions()),
    };
    auth.store
        .authenticate_attempt(&auth.scope, attempt)
        .map(Some)
}

/// A refusal in the request's protocol: a trailers-only gRPC status, or the plane's REST shape.
fn refusal(grpc: bool, render: Render, error: Error) -> Response {
    if grpc {
        tonic::Status::from(error).into_http::<axum::body::Body>()
    } else {
        render(refused(&error))
    }
}

/// Whether `request` is gRPC (as opposed to REST), by its content type.
fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// Puts the gRPC [`AuthLayer`] in front of every route of `router` — the gRPC services of a
/// `tonic::service::Routes` turned into an axum router — so they authenticate exactly as in a
/// plain tonic server (health and reflection stay public) while sharing a port with REST.
/// Requests act on the control plane; see [`protect_grpc_scoped`] for other scopes.
pub fn protect_grpc(router: axum::Router, keys: KeyStore) -> axum::Router {
    protect_grpc_scoped(router, keys, Scope::ControlPlane)
}

/// [`protect_grpc`] for requests acting in `scope` (e.g. one index's data plane).
pub fn protect_grpc_scoped(router: axum::Router, keys: KeyStore, scope: Scope) -> axum::Router {
    router.layer(
        tower::ServiceBuilder::new()
            .layer(AuthLayer::scoped(keys, scope))
            // The layer speaks tonic bodies; axum routes answer with axum bodies.
            .map_response(|response: Response| response.map(tonic::body::Body::new)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ApiKey, Grant, Principal, StoredKey};
    use axum::body::Body;
    use axum::response::IntoResponse;
    use tower::ServiceExt;

    fn render(refused: HttpError) -> Response {
        let mut response =
            (refused.status, format!("refused: {}", refused.message)).into_response();
        if let Some(retry_after) = refused.retry_after {
            set_retry_after(response.headers_mut(), retry_after);
        }
        response
    }

    /// A router whose one route echoes the key id of the principal it received.
    fn app(store: KeyStore) -> axum::Router {
        axum::Router::new()
            .route(
                "/whoami",
                axum::routing::get(|request: Request| async move {
                    request
                        .extensions()
                        .get::<Principal>()
                        .map(|p| p.key_id.clone())
                        .unwrap_or_default()
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                HttpAuth::new(store, render),
                require_key,
            ))
    }

    async fn call(store: &KeyStore, key: Option<&[u8]>) -> (StatusCode, String) {
        let mut builder = http::Request::builder().uri("/whoami");
        if let Some(key) = key {
            builder = builder.header(
                "Api-Key",
                http::HeaderValue::from_bytes(key).expect("header"),
            );
        }
        let response = app(store.clone())
            .oneshot(builder.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        (status, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    #[tokio::test]
    async fn valid_key_reaches_the_handler_with_its_principal() {
        let store = KeyStore::new();
        let key = ApiKey::generate();
        store.insert(StoredKey::new(&key, Grant::admin()));
        let padded = format!(" {}\t", key.as_str());
        for presented in [key.as_str(), padded.as_str()] {
            let (status, body) = call(&store, Some(presented.as_bytes())).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, key.key_id());
        }
    }

    #[tokio::test]
    async fn missing_or_bad_keys_get_401_in_the_planes_shape() {
        let store = KeyStore::new();
        store.insert(StoredKey::new(&ApiKey::generate(), Grant::admin()));
        let (status, body) = call(&store, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, format!("refused: {MISSING_KEY_MESSAGE}"));
        let wrong = ApiKey::generate();
        for key in [wrong.as_str().as_bytes(), b"pclocal", b"\xffkey"] {
            let (status, body) = call(&store, Some(key)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(body, "refused: invalid api key");
        }
    }

    /// A port's stack: [`AuthenticateLayer`] around a REST route behind [`require_key`] and a
    /// gRPC-style route behind the gRPC layer; `calls` counts requests reaching a handler.
    fn port(
        store: &KeyStore,
        calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> axum::Router {
        let counted = move || {
            let calls = std::sync::Arc::clone(&calls);
            async move {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                "ok"
            }
        };
        let grpc = axum::Router::new()
            .route("/VectorService/Query", axum::routing::post(counted.clone()))
            .route(
                "/grpc.health.v1.Health/Check",
                axum::routing::post(counted.clone()),
            );
        let rest = axum::Router::new()
            .route("/indexes", axum::routing::get(counted))
            .layer(axum::middleware::from_fn_with_state(
                HttpAuth::new(store.clone(), render),
                require_key,
            ));
        protect_grpc(grpc, store.clone())
            .merge(rest)
            .layer(AuthenticateLayer::new(
                store.clone(),
                Scope::ControlPlane,
                render,
            ))
    }

    fn request(path: &str, grpc: bool, key: Option<&str>) -> http::Request<Body> {
        let method = if grpc { "POST" } else { "GET" };
        let mut builder = http::Request::builder().method(method).uri(path);
        if grpc {
            builder = builder.header(http::header::CONTENT_TYPE, "application/grpc");
        }
        if let Some(key) = key {
            builder = builder.header("api-key", key);
        }
        builder.body(Body::empty()).expect("request")
    }

    #[tokio::test]
    async fn keys_are_checked_once_before_anything_else() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let store = KeyStore::new();
        let key = ApiKey::generate();
        store.insert(StoredKey::new(&key, Grant::admin()));
        // One request per second: a key checked twice per request would be refused.
        assert!(store.limit_rate(crate::RateLimit {
            per_second: 1,
            burst: 1,
        }));
        let calls = Arc::new(AtomicUsize::new(0));
        let app = port(&store, Arc::clone(&calls));
        let wrong = ApiKey::generate();
        for (path, grpc) in [
            ("/VectorService/Query", true),
            ("/indexes", false),
            ("/nowhere", true),
            ("/nowhere", false),
        ] {
            for presented in [None, Some(wrong.as_str())] {
                let response = app
                    .clone()
                    .oneshot(request(path, grpc, presented))
                    .await
                    .expect("infallible");
                if grpc {
                    assert_eq!(response.headers()["grpc-status"], "16", "{path}");
                } else {
                    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
                }
            }
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "no refused request reached a route"
        );
        // Health needs no key.
        let health = app
            .clone()
            .oneshot(request("/grpc.health.v1.Health/Check", true, None))
            .await
            .expect("infallible");
        assert_eq!(health.status(), StatusCode::OK);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A valid key passes both checks, and takes one token of its rate limit.
        let response = app
            .clone()
            .oneshot(request("/VectorService/Query", true, Some(key.as_str())))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(!response.headers().contains_key("grpc-status"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn errors_map_to_statuses_without_leaking_details() {
        let io = Error::Io {
            action: "read",
            path: "/x".into(),
            source: std::io::Error::other("disk on fire"),
        };
        let cases = [
            (Error::MissingKey, StatusCode::UNAUTHORIZED),
            (Error::InvalidKey, StatusCode::UNAUTHORIZED),
            (Error::Malformed("x"), StatusCode::UNAUTHORIZED),
            (Error::UnknownRole("Owner".into()), StatusCode::BAD_REQUEST),
            (io, StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (err, expected) in cases {
            let (status, message) = rejection(&err);
            assert_eq!(status, expected);
            assert!(!message.contains("disk on fire"));
        }
    }
}
