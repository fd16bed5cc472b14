//! Every REST JSON body of both planes, through the real routers.
//!
//! The first byte picks the route (and the index's metric and the API version header); the
//! rest is the request body — or, for GET routes, the query string or the namespace in the
//! path. Data-plane requests go through `larch_data_plane::rest::router` to an in-memory index
//! holding a few records; control-plane requests through `larch_control_plane::rest::router`
//! to an empty in-memory catalog (`PATCH`, describe and delete act on an index created first).
//! Whatever the input, the answer must not be a 500, and its body must be JSON; after a
//! successful write the index still answers, and the catalog's indexes render in every API
//! version.

#![no_main]

use axum::body::Body;
use http::{Method, Request, StatusCode};
use larch_auth::Scope;
use larch_data_plane::api::IndexHandle;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// A data-plane route: method, path, and where the input goes.
enum Input {
    Body,
    Query,
    Segment,
}

const DATA_PLANE: [(Method, &str, Input); 12] = [
    (Method::POST, "/vectors/upsert", Input::Body),
    (Method::POST, "/query", Input::Body),
    (Method::GET, "/vectors/fetch", Input::Query),
    (Method::POST, "/vectors/fetch_by_metadata", Input::Body),
    (Method::POST, "/vectors/delete", Input::Body),
    (Method::POST, "/vectors/update", Input::Body),
    (Method::POST, "/describe_index_stats", Input::Body),
    (Method::GET, "/vectors/list", Input::Query),
    (Method::GET, "/namespaces", Input::Query),
    (Method::POST, "/namespaces", Input::Body),
    (Method::GET, "/namespaces/", Input::Segment),
    (Method::DELETE, "/namespaces/", Input::Segment),
];

/// A valid control-plane body, for the index that `PATCH` and the reads act on.
const CREATE: &str = r#"{"name":"movies","dimension":2,"metric":"cosine","spec":{"serverless":{"cloud":"aws","region":"us-east-1"}}}"#;

/// `bytes` percent-encoded as one path segment. Not UTF-8 bytes are replaced first: axum's
/// `Path` extractor answers them with a plain-text 400 before any Larch code runs.
fn segment(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends one request and checks the answer; returns its status.
async fn send(
    router: &axum::Router,
    method: Method,
    uri: &str,
    body: &[u8],
    version: Option<&str>,
) -> StatusCode {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(larch_fuzz::KEY_HEADER, larch_fuzz::key().0.as_str())
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(version) = version {
        request = request.header("x-pinecone-api-version", version);
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        // Not a valid URI: no client could send it.
        return StatusCode::BAD_REQUEST;
    };
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("routers are infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .expect("a response body in memory");
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{uri}: {}",
        String::from_utf8_lossy(&bytes)
    );
    if !bytes.is_empty() {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .unwrap_or_else(|err| panic!("{uri}: the body is not JSON ({err}): {bytes:?}"));
    }
    status
}

fuzz_target!(|data: &[u8]| {
    larch_fuzz::init();
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let version = match selector >> 6 {
        0 => None,
        1 => Some("2025-04"),
        2 => Some("2025-10"),
        _ => Some("2026-07"),
    };
    let route = usize::from(selector & 0x3f) % (DATA_PLANE.len() + 3);
    larch_fuzz::block_on(async {
        if let Some((method, path, place)) = DATA_PLANE.get(route) {
            let index = larch_fuzz::seeded_index(larch_fuzz::metric(selector));
            let handle = IndexHandle::new(larch_fuzz::engine().clone(), index.name());
            let scope = Scope::Index {
                project: "default".to_owned(),
                name: index.name().to_owned(),
            };
            let router = larch_data_plane::rest::router(handle, larch_fuzz::key().1.clone(), scope);
            let (uri, body) = match place {
                Input::Body => (path.to_string(), input),
                Input::Query => (
                    format!("{path}?{}", String::from_utf8_lossy(input)),
                    &[][..],
                ),
                Input::Segment => (format!("{path}{}", segment(input)), &[][..]),
            };
            let status = send(&router, method.clone(), &uri, body, version).await;
            if status.is_success() && *method != Method::GET && *path != "/query" {
                // The index still answers after whatever the write did.
                let query = br#"{"topK":100,"vector":[0.5,-0.5],"includeValues":true,"includeMetadata":true}"#;
                let answered = send(&router, Method::POST, "/query", query, version).await;
                assert_eq!(answered, StatusCode::OK);
                let listed = send(&router, Method::GET, "/namespaces", b"", version).await;
                assert_eq!(listed, StatusCode::OK);
            }
        } else {
            let router = larch_fuzz::control_plane();
            let changed = match route - DATA_PLANE.len() {
                0 => send(&router, Method::POST, "/indexes", input, version).await,
                1 => {
                    let created = send(
                        &router,
                        Method::POST,
                        "/indexes",
                        CREATE.as_bytes(),
                        version,
                    )
                    .await;
                    assert!(created.is_success(), "{created}");
                    send(&router, Method::PATCH, "/indexes/movies", input, version).await
                }
                _ => {
                    let uri = format!("/indexes/{}", segment(input));
                    send(
                        &router,
                        Method::POST,
                        "/indexes",
                        CREATE.as_bytes(),
                        version,
                    )
                    .await;
                    send(&router, Method::GET, &uri, b"", version).await;
                    send(&router, Method::DELETE, &uri, b"", version).await
                }
            };
            if changed.is_success() {
                // What is there renders in every API version.
                for version in [None, Some("2025-10"), Some("2026-07")] {
                    let listed = send(&router, Method::GET, "/indexes", b"", version).await;
                    assert_eq!(listed, StatusCode::OK);
                }
            }
        }
    });
});
