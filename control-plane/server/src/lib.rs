//! Larch's control-plane server: index lifecycle over gRPC.
//!
//! [`serve`] runs `larch.control.v1.IndexService` on a listener, next to gRPC health
//! (`grpc.health.v1`) and server reflection (v1 and v1alpha), behind the API-key layer of
//! [`larch_auth`]. The handlers in [`service`] only translate protobuf to the
//! [`larch_catalog`] types and back; the catalog holds the rules.
//!
//! # Layout
//! - [`service`]: the `IndexService` implementation and the one catalog-error → status map.
//! - [`serve`]: the server as a library function, used by the `larch` binary and the tests.

pub mod service;

use std::future::Future;
use std::sync::Arc;

use larch_auth::KeyStore;
use larch_auth::grpc::AuthLayer;
use larch_catalog::Catalog;
use larch_proto::control::index_service_server::IndexServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use service::IndexApi;

/// Serves the control plane on `listener` until `shutdown` completes, then reports
/// NOT_SERVING on gRPC health and drains in-flight requests before returning.
///
/// The port answers at once, but health reports NOT_SERVING (and index calls UNAVAILABLE)
/// until `catalog` resolves — i.e. until every stored index has been recovered. If it resolves
/// to `None` (recovery failed), the server stops.
pub async fn serve(
    listener: TcpListener,
    catalog: impl Future<Output = Option<Arc<Catalog>>> + Send,
    keys: KeyStore,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let (reflection_v1, reflection_v1alpha) = larch_proto::reflection::services();
    health
        .set_not_serving::<IndexServiceServer<IndexApi>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let api = IndexApi::recovering();
    let ready = api.clone();
    let lifetime = async move {
        let serving = async {
            let Some(catalog) = catalog.await else {
                return;
            };
            ready.set_ready(catalog);
            health.set_serving::<IndexServiceServer<IndexApi>>().await;
            health
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
            std::future::pending::<()>().await
        };
        tokio::select! {
            () = shutdown => {}
            () = serving => {}
        }
        health
            .set_not_serving::<IndexServiceServer<IndexApi>>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    };
    tonic::transport::Server::builder()
        .layer(AuthLayer::new(keys))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(IndexServiceServer::new(api))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), lifetime)
        .await
}
