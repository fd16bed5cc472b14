//! The admin HTTP server (`--admin-addr`): Prometheus metrics and probes for tools that cannot
//! speak gRPC health.
//!
//! - `GET /metrics`: [`Metrics::render`], Prometheus text format.
//! - `GET /healthz`: 200 while the process runs (liveness).
//! - `GET /readyz`: 200 while [`Readiness`] is set — from the moment stored indexes are
//!   recovered until shutdown starts, when gRPC health flips too — and 503 otherwise.
//!
//! Plain HTTP/1.1 on its own port, without API keys: bind it to an address only the cluster
//! (or the machine) can reach.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::Metrics;
use crate::metrics::CONTENT_TYPE;

/// Whether the server is ready for traffic, for `/readyz`. Cheap to clone: clones share the
/// flag. Starts not ready.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// A flag that is not set.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Sets (recovery done) or clears (shutdown started) the flag.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether the flag is set.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct Admin {
    metrics: Metrics,
    readiness: Readiness,
}

/// The admin routes, for [`serve_admin`] or to mount elsewhere.
pub fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Admin { metrics, readiness })
}

/// Serves [`router`] on `listener` until `shutdown` completes.
///
/// # Errors
///
/// An IO error of the listener.
pub async fn serve_admin(
    listener: TcpListener,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, readiness))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn render(State(admin): State<Admin>) -> axum::response::Response {
    // The scrape reads every index's figures under their locks: keep it off the async workers.
    let metrics = admin.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "rendering the metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn ready(State(admin): State<Admin>) -> (StatusCode, &'static str) {
    if admin.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
