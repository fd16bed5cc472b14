//! Larch's data-plane server: Pinecone's `VectorService` over gRPC and its REST twin, on one
//! port per index.
//!
//! In the embedded mode every index has its own port, as with Pinecone Local: the control
//! plane's catalog asks the [`DataPlane`] (through the catalog's `DataPlaneHost`, which the
//! embedded wiring implements over [`DataPlane::attach`]) to open
//! an index, and the data plane binds a listener and runs [`serve_index`] on it. Each such
//! server answers `VectorService`, gRPC health and reflection behind the gRPC API-key layer,
//! and Pinecone's data-plane REST API behind the `Api-Key` header check — both scoped to the
//! index, so the key's project, roles and index allow-list are checked on every request — — HTTP/1.1 and h2c on
//! the same port, routed by path (`/VectorService/…` is gRPC, `/vectors/…`, `/query`, … REST).
//! Both transports are adapters over one facade, [`api::IndexHandle`]: a handler decodes its
//! wire request into a domain request, makes the one facade call of its RPC (which picks the
//! pool, applies the per-request checks and makes the engine call; the engine validates) and
//! returns the answer in its wire type.
//!
//! Every request's key is checked from its headers before the request limits admit it
//! ([`larch_auth::http::AuthenticateLayer`], then [`Limits`]), so requests without a valid key
//! hold nothing.
//!
//! Every request, of either transport, passes a [`larch_observe::RequestLayer`] first: it gets
//! a request id (`x-request-id`, returned in the response headers and gRPC trailers), a
//! `tracing` span naming that id, the RPC and the index, and is counted in the [`Metrics`]
//! given to the [`DataPlane`], which also reports each index's vectors and bytes there.
//!
//! # Layout
//! - [`api`]: the facade — [`api::IndexHandle`] with one method per operation (taking the
//!   [`api::Caller`] and a domain request; one engine call, on the blocking pool or the query
//!   pool; reads held to the answer budget, scans to the per-key cap), the domain answers and
//!   the wire rules both transports share.
//! - [`service`]: the `VectorService` gRPC handlers (decode, call, encode) and the one
//!   engine-error → gRPC status map.
//! - [`rest`]: the REST handlers (decode, call, encode) and the one engine-error → HTTP status
//!   map.
//! - [`json`]: Pinecone's data-plane REST JSON bodies and their conversions from and to the
//!   domain requests and answers.
//! - [`convert`]: protobuf messages from and to the domain requests and answers, and
//!   `google.protobuf.Struct` ⇄ JSON objects and engine metadata.
//! - [`host`]: [`DataPlane`], which opens, serves and drops per-index servers, and
//!   [`IndexStorage`], where the indexes' files live (local disk or a bucket).
//! - [`import`]: bulk import of Pinecone's Parquet import layout (also read by the CLI).
//! - [`routed`]: split mode — [`routed::RoutedDataPlane`] serves every index on one address,
//!   routed by host, following a control plane in another process.

pub mod api;
pub mod convert;
pub mod forward;
pub mod host;
pub mod import;
pub mod json;
mod pool;
pub mod rest;
pub mod routed;
pub mod service;

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use larch_auth::KeyStore;
use larch_engine::Engine;
use larch_model::IndexKey;
use larch_proto::pinecone::vector_service_server::VectorServiceServer;
use tonic::service::Routes;

use crate::api::IndexHandle;

pub use host::{DataPlane, IndexPorts, IndexStorage};
/// The metrics registry requests are recorded into, and the request limits (re-exported: they
/// are in the signatures).
pub use larch_observe::{Limits, Metrics};
pub use service::VectorApi;

/// Serves the data plane (gRPC and REST) of index `key` — the engine index
/// [`IndexKey::storage_name`] — on `listener` until `shutdown` completes, then reports
/// NOT_SERVING on gRPC health and drains in-flight requests before returning. Every request
/// is counted in `metrics` and held to `limits`. Bulk imports run through `imports` (off when
/// it has no import root): the index's unfinished imports resume when its server starts, and
/// stop (to resume at the next start) when it has drained.
#[allow(clippy::too_many_arguments)]
pub async fn serve_index(
    listener: impl Into<larch_observe::Listener>,
    engine: Arc<Engine>,
    key: IndexKey,
    keys: KeyStore,
    metrics: Metrics,
    limits: Limits,
    imports: import::Imports,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let storage = key.storage_name();
    imports.recover(&engine, &storage);
    let (health, health_service) = tonic_health::server::health_reporter();
    let (reflection_v1, reflection_v1alpha) = larch_proto::reflection::services();
    // The index lives in memory and is ready as soon as it exists.
    health.set_serving::<VectorServiceServer<VectorApi>>().await;
    let drain = async move {
        shutdown.await;
        health
            .set_not_serving::<VectorServiceServer<VectorApi>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    };
    tracing::debug!(index = %key, "serving the index's data plane");
    let index = IndexHandle::new_with(engine, &storage, &limits).with_imports(imports.clone());
    // Every request acts on this index of this project: keys of other projects get NOT_FOUND.
    let scope = larch_auth::Scope::Index {
        project: key.project().to_owned(),
        name: key.name().to_string(),
    };
    let grpc = Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(vector_service(index.clone(), &limits))
        .into_axum_router();
    let observe = larch_observe::RequestLayer::new(metrics).for_index(&key);
    let app = larch_auth::http::protect_grpc_scoped(grpc, keys.clone(), scope.clone())
        .merge(rest::router(index, keys.clone(), scope.clone()))
        .fallback(unrouted)
        .layer(limits.layer(rest::render_error))
        // Keys are checked before the limits admit a request: one without a valid key takes
        // no slot of them and is never waited on.
        .layer(larch_auth::http::AuthenticateLayer::new(
            keys,
            scope,
            rest::render_error,
        ))
        // Outermost, on every route and the fallback: refusals get an id and are counted too.
        .layer(observe);
    // tonic's server (hyper-util's auto builder) with HTTP/1.1 allowed: REST clients may use
    // either HTTP version, and gRPC keeps tonic's graceful drain.
    let served = limits
        .server()
        .add_routes(Routes::from(app))
        .serve_with_incoming_shutdown(listener.into().incoming(), drain)
        .await;
    // Joins the job threads, which finish their current batch first.
    let _ = tokio::task::spawn_blocking(move || imports.stop(&storage)).await;
    served
}

/// The `VectorService` of `index`, decoding messages up to the configured request size (the
/// limit layer refuses larger ones first, with a clearer message) and encoding answers up to
/// the answer budget plus headroom (reads refuse larger answers while building them, naming
/// what to lower; this is the backstop).
fn vector_service(index: IndexHandle, limits: &Limits) -> VectorServiceServer<VectorApi> {
    VectorServiceServer::new(VectorApi::from(index))
        .max_decoding_message_size(limits.max_request_bytes())
        .max_encoding_message_size(limits.max_encoding_bytes())
}

/// A path that is neither a gRPC method nor a REST route: gRPC's UNIMPLEMENTED for gRPC
/// callers, a JSON 404 for everyone else.
async fn unrouted(request: Request) -> Response {
    if is_grpc(&request) {
        let unknown = larch_model::Cause::from_parts(
            larch_model::Code::Unimplemented,
            format!("unknown gRPC method {}", request.uri().path()),
        );
        let status = larch_model::wire::grpc_status(&unknown);
        status.into_http::<axum::body::Body>().into_response()
    } else {
        rest::not_found(request).await
    }
}

/// Whether `request` is gRPC (as opposed to REST), by its content type.
fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}
