//! The axum adapters: [`require_key`], a middleware that authenticates the `Api-Key` header
//! of REST requests with a [`KeyStore`], the one mapping from [`Error`] to an HTTP status, and
//! [`protect_grpc`], which mounts the gRPC layer of [`crate::grpc`] on gRPC services served
//! from an axum router (one port serving both protocols).
//!
//! Pinecone's REST clients send the key in `Api-Key` (HTTP header names are case-insensitive,
//! so it is the same header as gRPC's `api-key`). An authenticated request carries its
//! [`Principal`] in its extensions, as on gRPC; a refused one never reaches a handler. Each
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
use http::{HeaderMap, StatusCode};
use tracing::{debug, error};

use crate::grpc::{API_KEY_HEADER, AuthLayer};
use crate::{Error, KeyStore, Principal, Result};

/// Renders a refused request as `status` with `message`, in the plane's error shape.
pub type Render = fn(StatusCode, &str) -> Response;

const MISSING_KEY_MESSAGE: &str = "missing api key: send it in the 'Api-Key' header";

/// The state of [`require_key`]: where keys are checked and how refusals look.
#[derive(Clone)]
pub struct HttpAuth {
    store: KeyStore,
    render: Render,
}

impl HttpAuth {
    /// Checks keys against `store` (a shared handle, so later key changes apply) and answers
    /// refusals with `render`.
    pub fn new(store: KeyStore, render: Render) -> HttpAuth {
        HttpAuth { store, render }
    }

    /// Authenticates the key in `headers`.
    fn check(&self, headers: &HeaderMap) -> Result<Principal> {
        let presented = match headers.get(API_KEY_HEADER) {
            None => return Err(Error::MissingKey),
            // A header that is not visible ASCII cannot be a key we issued or accepted; edge
            // spaces and tabs some clients send are not part of the key.
            Some(value) => value.to_str().map_err(|_| Error::InvalidKey)?.trim(),
        };
        self.store.authenticate(presented)
    }
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAuth").finish_non_exhaustive()
    }
}

/// The HTTP status and client-facing message of every crate error. The one place that does so.
pub fn rejection(err: &Error) -> (StatusCode, &'static str) {
    match err {
        Error::MissingKey => (StatusCode::UNAUTHORIZED, MISSING_KEY_MESSAGE),
        // Never echo the key, nor say which part of it was wrong.
        Error::InvalidKey | Error::Malformed(_) => (StatusCode::UNAUTHORIZED, "invalid api key"),
        Error::UnknownRole(_) => (StatusCode::BAD_REQUEST, "unknown role"),
        Error::Io { .. } | Error::InvalidKeyFile { .. } => {
            error!(error = err as &dyn std::error::Error, "key storage failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// Axum middleware (use with `axum::middleware::from_fn_with_state`): lets a request with a
/// valid `Api-Key` through with its [`Principal`] attached, and answers any other with 401.
pub async fn require_key(
    State(auth): State<HttpAuth>,
    mut request: Request,
    next: Next,
) -> Response {
    match auth.check(request.headers()) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(err) => {
            debug!(path = request.uri().path(), error = %err, "rejected request");
            let (status, message) = rejection(&err);
            (auth.render)(status, message)
        }
    }
}

/// Puts the gRPC [`AuthLayer`] in front of every route of `router` — the gRPC services of a
/// `tonic::service::Routes` turned into an axum router — so they authenticate exactly as in a
/// plain tonic server (health and reflection stay public) while sharing a port with REST.
pub fn protect_grpc(router: axum::Router, keys: KeyStore) -> axum::Router {
    router.layer(
        tower::ServiceBuilder::new()
            .layer(AuthLayer::new(keys))
            // The layer speaks tonic bodies; axum routes answer with axum bodies.
            .map_response(|response: Response| response.map(tonic::body::Body::new)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ApiKey, Grant, StoredKey};
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
