//! Larch's control-plane server: index lifecycle over gRPC and Pinecone's REST API, on one
//! port.
//!
//! [`serve`] runs `larch.control.v1.IndexService` and the admin API (`ApiKeyService`,
//! `ProjectService`) next to gRPC health (`grpc.health.v1`) and server reflection (v1 and
//! v1alpha), behind the gRPC API-key layer of [`larch_auth`] (which authenticates the key and
//! checks its roles against each RPC; index allow-lists and projects are applied by
//! [`Indexes`], which sees the index name), and
//! Pinecone's REST control plane (`/indexes…`, `Api-Key` header) on the same listener. HTTP/1.1
//! and HTTP/2 (h2c, prior knowledge) are both accepted; requests are routed by path (gRPC
//! methods live under `/<package.Service>/`, REST under `/indexes`), and a path that is
//! neither gets gRPC's UNIMPLEMENTED or a JSON 404, by its content type. Both transports only
//! translate their wire format to the [`larch_catalog`] types and call the same [`Indexes`];
//! the catalog holds the rules.
//!
//! Every request's key is checked from its headers before the request limits admit it
//! ([`larch_auth::http::AuthenticateLayer`], then [`Limits`]), so requests without a valid key
//! hold nothing.
//!
//! Every request, of either transport, passes a [`larch_observe::RequestLayer`] first: it gets
//! a request id (`x-request-id`, returned in the response headers and gRPC trailers), a
//! `tracing` span naming that id and the RPC, and is counted in the [`Metrics`] given to
//! [`serve`].
//!
//! # Layout
//! - [`indexes`]: [`Indexes`], the one service both transports call, its [`Failure`] type,
//!   and [`ApiVersion`] (which JSON shape and which `host` a client gets).
//! - [`service`]: the `IndexService` gRPC handlers, the protobuf ⇄ catalog conversions and
//!   the one failure → gRPC status map.
//! - [`backups`]: backups and restore jobs — the [`Indexes`] calls, Pinecone's JSON for them
//!   and the `BackupService` gRPC handlers.
//! - [`admin`]: the `ApiKeyService` and `ProjectService` gRPC handlers over
//!   [`larch_auth::Admin`].
//! - [`split`]: split mode — the internal `ControlPlaneSync` service data planes pull from,
//!   and [`split::DataPlanes`], the catalog's handle on the data-plane pods in other processes.
//! - [`placement`]: which pods serve an index and which should write it (rendezvous hashing).
//! - [`rest`]: the REST handlers and the one failure → HTTP status map.
//! - [`json`]: Pinecone's control-plane JSON (2025-10 and 2026-07 shapes) ⇄ catalog types.
//! - [`serve`]: the server as a library function, used by the `larch` binary and the tests.

pub mod admin;
pub mod backups;
pub mod indexes;
pub mod json;
pub mod placement;
pub mod rest;
pub mod service;
pub mod split;

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use larch_auth::Admin;
use larch_catalog::Catalog;
use larch_proto::control::api_key_service_server::ApiKeyServiceServer;
use larch_proto::control::backup_service_server::BackupServiceServer;
use larch_proto::control::index_service_server::IndexServiceServer;
use larch_proto::control::project_service_server::ProjectServiceServer;
use larch_proto::internal::control_plane_sync_server::ControlPlaneSyncServer;
use tonic::service::Routes;

pub use admin::AdminApi;
pub use indexes::{ApiVersion, Failure, Indexes};
/// The metrics registry [`serve`] records requests into (re-exported: it is in its signature).
pub use larch_observe::{LimitSettings, Limits, Metrics};
pub use service::IndexApi;

/// Serves the control plane on `listener` until `shutdown` completes, then reports
/// NOT_SERVING on gRPC health and drains in-flight requests before returning.
///
/// The port answers at once, but health reports NOT_SERVING (and index calls UNAVAILABLE, or
/// 503 over REST) until `catalog` resolves — i.e. until every stored index has been recovered.
/// If it resolves to `None` (recovery failed), the server stops. Requests are checked against
/// `admin`'s key store, the admin API changes `admin`, and every request is counted in
/// `metrics` and held to `limits`.
pub async fn serve(
    listener: impl Into<larch_observe::Listener>,
    catalog: impl Future<Output = Option<Arc<Catalog>>> + Send,
    admin: Arc<Admin>,
    metrics: Metrics,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_with(listener, catalog, admin, metrics, limits, shutdown, None).await
}

/// [`serve`] for split mode: also serves `larch.internal.v1.ControlPlaneSync`, which the data
/// planes `planes` (in other processes) pull indexes and keys from (admin key only).
pub async fn serve_split(
    listener: impl Into<larch_observe::Listener>,
    catalog: impl Future<Output = Option<Arc<Catalog>>> + Send,
    admin: Arc<Admin>,
    metrics: Metrics,
    limits: Limits,
    planes: Arc<split::DataPlanes>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let split = Some(planes);
    serve_with(listener, catalog, admin, metrics, limits, shutdown, split).await
}

async fn serve_with(
    listener: impl Into<larch_observe::Listener>,
    catalog: impl Future<Output = Option<Arc<Catalog>>> + Send,
    admin: Arc<Admin>,
    metrics: Metrics,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
    split: Option<Arc<split::DataPlanes>>,
) -> Result<(), tonic::transport::Error> {
    let keys = admin.store().clone();
    let (health, health_service) = tonic_health::server::health_reporter();
    let (reflection_v1, reflection_v1alpha) = larch_proto::reflection::services();
    set_health(&health, tonic_health::ServingStatus::NotServing).await;
    let indexes = Indexes::recovering();
    let ready = indexes.clone();
    let lifetime = async move {
        let serving = async {
            let Some(catalog) = catalog.await else {
                return;
            };
            ready.set_ready(catalog);
            set_health(&health, tonic_health::ServingStatus::Serving).await;
            std::future::pending::<()>().await
        };
        tokio::select! {
            () = shutdown => {}
            () = serving => {}
        }
        set_health(&health, tonic_health::ServingStatus::NotServing).await;
    };
    // Answers are encoded up to the answer budget plus headroom, as on the data plane.
    // ControlPlaneSync (split mode, internal) is left out: its answers carry the whole access
    // state and catalog, whatever the user-facing answer budget.
    let max_answer = limits.max_encoding_bytes();
    let mut routes = Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            IndexServiceServer::new(IndexApi::from(indexes.clone()))
                .max_encoding_message_size(max_answer),
        )
        .add_service(
            BackupServiceServer::new(backups::BackupApi::from(indexes.clone()))
                .max_encoding_message_size(max_answer),
        )
        .add_service(
            ApiKeyServiceServer::new(AdminApi::new(Arc::clone(&admin), indexes.clone()))
                .max_encoding_message_size(max_answer),
        )
        .add_service(
            ProjectServiceServer::new(AdminApi::new(Arc::clone(&admin), indexes.clone()))
                .max_encoding_message_size(max_answer),
        );
    if let Some(planes) = split {
        routes = routes.add_service(ControlPlaneSyncServer::new(split::SyncApi::new(
            indexes.clone(),
            admin,
            planes,
        )));
    }
    let grpc = routes.into_axum_router();
    let grpc = larch_auth::http::protect_grpc(grpc, keys.clone());
    let app = grpc
        .merge(rest::router(indexes, keys.clone()))
        .fallback(unrouted)
        .layer(limits.layer(rest::render_error))
        // Keys are checked before the limits admit a request: one without a valid key takes
        // no slot of them and is never waited on.
        .layer(larch_auth::http::AuthenticateLayer::new(
            keys,
            larch_auth::Scope::ControlPlane,
            rest::render_error,
        ))
        // Outermost, on every route and the fallback: refusals get an id and are counted too.
        .layer(larch_observe::RequestLayer::new(metrics));
    // tonic's server (hyper-util's auto builder) with HTTP/1.1 allowed: REST clients may use
    // either HTTP version, and gRPC keeps tonic's graceful drain.
    limits
        .server()
        .add_routes(Routes::from(app))
        .serve_with_incoming_shutdown(listener.into().incoming(), lifetime)
        .await
}

/// Sets the overall status (`""`) and each service's: the admin API answers while recovering,
/// but reports what the server as a whole does so probes see one story.
async fn set_health(
    health: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    use tonic::server::NamedService;
    for service in [
        "",
        <IndexServiceServer<IndexApi> as NamedService>::NAME,
        <BackupServiceServer<backups::BackupApi> as NamedService>::NAME,
        <ApiKeyServiceServer<AdminApi> as NamedService>::NAME,
        <ProjectServiceServer<AdminApi> as NamedService>::NAME,
    ] {
        health.set_service_status(service, status).await;
    }
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
