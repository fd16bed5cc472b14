//! The API-key gate and the path and header matching in front of every route: arbitrary
//! paths, methods, content types, key headers and other headers through the real admission
//! stack of a port — `larch_auth::http::AuthenticateLayer` (the key, from the headers alone),
//! then the per-route check (`protect_grpc_scoped` for gRPC, `require_key` for REST), which
//! finds the request authenticated and only authorizes it.
//!
//! Input: byte 0 picks the path (one of [`PATHS`], or the first input line), byte 1 the key
//! (none, the valid one, padded, altered, truncated, extended, or the second input line),
//! byte 2 the protocol, method and scope; the remaining lines are `name: value` headers.
//! Whatever the input: no panic; a request reaches the handler only with the valid key (as
//! the first `api-key` header, edge whitespace aside) and carries its principal, or on a
//! health or reflection path; gRPC health and reflection are never refused; and the valid
//! key is always let through.

#![no_main]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use larch_auth::http::{AuthenticateLayer, HttpAuth, protect_grpc_scoped, require_key};
use larch_auth::{Authenticated, Principal, Scope};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// Paths of both planes, health and reflection, and near misses.
const PATHS: [&str; 16] = [
    "/VectorService/Query",
    "/VectorService/Upsert",
    "/VectorService/Nope",
    "/larch.control.v1.IndexService/ListIndexes",
    "/larch.control.v1.ApiKeyService/CreateApiKey",
    "/larch.internal.v1.DataPlaneControl/AttachIndex",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health",
    "/grpc.health.v1.HealthX/Check",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "//grpc.health.v1.Health/Check",
    "/query",
    "/vectors/upsert",
    "/indexes",
    "/",
];

/// Paths reachable without a key.
fn public(path: &str) -> bool {
    [
        "/grpc.health.v1.Health/",
        "/grpc.reflection.v1.ServerReflection/",
        "/grpc.reflection.v1alpha.ServerReflection/",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix))
}

fn render(refused: larch_auth::http::HttpError) -> Response {
    (refused.status, refused.message).into_response()
}

/// What the handler saw: the principal of the request, if any.
type Seen = Arc<Mutex<Option<Option<Principal>>>>;

fn app(scope: Scope, grpc: bool, seen: Seen) -> axum::Router {
    let store = larch_fuzz::key().1.clone();
    let handler = move |request: Request| {
        let seen = Arc::clone(&seen);
        async move {
            let principal = request
                .extensions()
                .get::<Principal>()
                .cloned()
                .or_else(|| {
                    request
                        .extensions()
                        .get::<Authenticated>()
                        .map(|authenticated| authenticated.principal().clone())
                });
            *seen.lock().expect("not poisoned") = Some(principal);
            StatusCode::OK
        }
    };
    let routes = axum::Router::new().fallback(handler);
    let routes = if grpc {
        protect_grpc_scoped(routes, store.clone(), scope.clone())
    } else {
        routes.layer(axum::middleware::from_fn_with_state(
            HttpAuth::scoped(store.clone(), scope.clone(), render),
            require_key,
        ))
    };
    routes.layer(AuthenticateLayer::new(store, scope, render))
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == b'\n').collect()
}

fuzz_target!(|data: &[u8]| {
    larch_fuzz::init();
    let [path_pick, key_pick, flags, rest @ ..] = data else {
        return;
    };
    let lines = split(rest);
    let line = |i: usize| lines.get(i).copied().unwrap_or_default();
    let path = match PATHS.get(usize::from(*path_pick)) {
        Some(path) => path.to_string(),
        None => String::from_utf8_lossy(line(0)).into_owned(),
    };
    let valid = larch_fuzz::key().0.as_str().as_bytes().to_vec();
    let key: Option<Vec<u8>> = match key_pick % 8 {
        0 => None,
        1 => Some(valid.clone()),
        2 => Some([b" \t".as_slice(), &valid, b"\t "].concat()),
        3 => {
            let mut altered = valid.clone();
            let at = usize::from(*key_pick) % altered.len();
            altered[at] ^= 1 + (key_pick >> 3);
            Some(altered)
        }
        4 => Some(valid[..usize::from(*key_pick) % valid.len()].to_vec()),
        5 => Some([valid.as_slice(), line(1)].concat()),
        _ => Some(line(1).to_vec()),
    };
    let grpc = flags & 1 == 1;
    let method = [Method::POST, Method::GET, Method::DELETE, Method::PATCH]
        [usize::from((flags >> 1) & 3)]
    .clone();
    let scope = if flags & 8 == 0 {
        Scope::ControlPlane
    } else {
        Scope::Index {
            project: larch_auth::Grant::DEFAULT_PROJECT.into(),
            name: "fuzz".into(),
        }
    };

    let mut builder = Request::builder().method(method).uri(path.as_str());
    if grpc {
        builder = builder.header(http::header::CONTENT_TYPE, "application/grpc");
    }
    if let Some(key) = &key {
        let Ok(value) = HeaderValue::from_bytes(key) else {
            return;
        };
        builder = builder.header("api-key", value);
    }
    for header in lines.iter().skip(2) {
        let Some(colon) = header.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&header[..colon]),
            HeaderValue::from_bytes(header[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        builder = builder.header(name, value);
    }
    // Requests hyper would not deliver (an invalid path) are not the gate's concern.
    let Ok(request) = builder.body(Body::empty()) else {
        return;
    };
    let path = request.uri().path().to_owned();
    // What the adapters read: the first `api-key` header, edge whitespace aside.
    let presented = request
        .headers()
        .get("api-key")
        .map(|value| value.as_bytes().trim_ascii().to_vec());
    let holds_valid_key = presented.as_deref() == Some(valid.as_slice());
    // A refusal's form follows the content type actually sent (a header line may set it).
    let sent_grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));

    let seen: Seen = Arc::default();
    let response = larch_fuzz::block_on(app(scope, grpc, Arc::clone(&seen)).oneshot(request))
        .expect("infallible");
    let seen = seen.lock().expect("not poisoned").take();
    match seen {
        Some(principal) if !public(&path) => {
            assert!(holds_valid_key, "admitted without the valid key: {path}");
            let principal = principal.expect("an admitted request carries its principal");
            assert_eq!(principal.key_id, larch_fuzz::key().0.key_id());
        }
        Some(_) => {}
        None => {
            // Health and reflection are gRPC services, never refused by the gRPC layers; the
            // REST middleware serves no such route and may refuse them.
            assert!(
                !(grpc && public(&path)),
                "a public path was refused: {path}"
            );
            assert!(
                !holds_valid_key,
                "the valid key was refused on {path}: {}",
                response.status()
            );
            // Refused by the key check in front, in the protocol of the content type sent (a
            // public path passes it and can only be refused by the REST middleware).
            if sent_grpc && !public(&path) {
                assert!(response.headers().contains_key("grpc-status"), "{path}");
            } else {
                assert!(response.status().is_client_error(), "{path}");
            }
        }
    }
});
