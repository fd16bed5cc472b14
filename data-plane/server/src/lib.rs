//! Larch's data-plane server: Pinecone's `VectorService` over gRPC.
//!
//! In the embedded mode every index has its own port, as with Pinecone Local: the control
//! plane's catalog asks the [`DataPlane`] (through [`larch_catalog::DataPlaneHost`]) to open
//! an index, and the data plane binds a listener and runs [`serve_index`] on it. Each such
//! server answers `VectorService`, gRPC health and reflection, behind the API-key layer.
//!
//! # Layout
//! - [`service`]: the `VectorService` handlers (protobuf ⇄ [`larch_engine`] requests) and the
//!   one engine-error → status map.
//! - [`convert`]: `google.protobuf.Struct` ⇄ JSON objects and engine metadata.
//! - [`host`]: [`DataPlane`], which opens, serves and drops per-index servers.

pub mod convert;
pub mod host;
pub mod service;

use std::future::Future;
use std::sync::Arc;

use larch_auth::KeyStore;
use larch_auth::grpc::AuthLayer;
use larch_engine::Engine;
use larch_proto::pinecone::vector_service_server::VectorServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use host::DataPlane;
pub use service::VectorApi;

/// Serves one index's data plane on `listener` until `shutdown` completes, then reports
/// NOT_SERVING on gRPC health and drains in-flight requests before returning.
pub async fn serve_index(
    listener: TcpListener,
    engine: Arc<Engine>,
    index: String,
    keys: KeyStore,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
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
    tonic::transport::Server::builder()
        .layer(AuthLayer::new(keys))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(VectorServiceServer::new(VectorApi::new(engine, index)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), drain)
        .await
}
