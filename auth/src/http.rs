//! The axum adapters: [`require_key`], a middleware that authenticates the `Api-Key` header
//! of REST requests with a [`KeyStore`], the one mapping from [`Error`] to an HTTP status, and
//! [`protect_grpc`], which mounts the gRPC layer of [`crate::grpc`] on gRPC services served
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
//! fn render(status: http::StatusCode, message: &str) -> Response {
//!     (status, message.to_owned()).into_response()
//! }
//! let auth = HttpAuth::new(larch_auth::KeyStore::new(), render);
//! let app: axum::Router = axum::Router::new()
//!     .route("/indexes", get(|| async { "[]" }))
//!     .layer(axum::middleware::from_fn_with_state(auth, require_key));
//! ```

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::StatusCode;
use tracing::{debug, error};

use crate::access::rest_action;
use crate::gate::{Attempt, Rejection, Scope};
use crate::grpc::{AuthLayer, peer_ip, presented_key};
use crate::{Error, KeyStore};

/// Renders a refused request as `status` with `message`, in the plane's error shape.
pub type Render = fn(StatusCode, &str) -> Response;

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

/// The HTTP status and client-facing message of every crate error. The one place that does so.
pub fn rejection(err: &Error) -> (StatusCode, String) {
    match err {
        Error::MissingKey => (StatusCode::UNAUTHORIZED, MISSING_KEY_MESSAGE.to_owned()),
        // Never echo the key, nor say which part of it was wrong.
        Error::InvalidKey | Error::Malformed(_) => {
            (StatusCode::UNAUTHORIZED, "invalid api key".to_owned())
        }
        Error::ExpiredKey(_) => (StatusCode::UNAUTHORIZED, err.to_string()),
        Error::Denied(_) => (StatusCode::FORBIDDEN, err.to_string()),
        Error::IndexNotFound(_) | Error::NotFound { .. } => {
            (StatusCode::NOT_FOUND, err.to_string())
        }
        Error::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, err.to_string()),
        Error::AlreadyExists { .. } => (StatusCode::CONFLICT, err.to_string()),
        Error::Invalid { .. } | Error::UnknownRole(_) => (StatusCode::BAD_REQUEST, err.to_string()),
        Error::FailedPrecondition(_) => (StatusCode::PRECONDITION_FAILED, err.to_string()),
        Error::SharedState(_) | Error::Contended { .. } => {
            tracing::warn!(error = %err, "shared access state unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, err.to_string())
        }
        Error::Io { .. } | Error::InvalidKeyFile { .. } => {
            error!(error = err as &dyn std::error::Error, "key storage failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error".to_owned(),
            )
        }
    }
}

/// Tells an HTTP client to wait `retry_after` before retrying (`Retry-After`, in whole seconds,
/// rounded up). Every backpressure refusal of both planes' REST APIs sets it through here.
pub fn set_retry_after(headers: &mut http::HeaderMap, retry_after: std::time::Duration) {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    headers.insert(http::header::RETRY_AFTER, seconds.into());
}

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
    let admitted = auth.store.admit(&auth.scope, attempt);
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
            let (status, message) = rejection(&error);
            let mut response = (auth.render)(status, &message);
            if let Error::RateLimited { retry_after, .. } = error {
                set_retry_after(response.headers_mut(), retry_after);
            }
            response
        }
    }
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

    fn render(status: StatusCode, message: &str) -> Response {
        (status, format!("refused: {message}")).into_response()
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
