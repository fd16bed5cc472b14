//! Observability and serving plumbing of a Larch server, shared by both planes and the `larch`
//! binary.
//!
//! Both planes answer gRPC and REST on each port through one axum app; each app is wrapped in
//! one [`RequestLayer`], which gives every request an id (`x-request-id`, kept from the client
//! or generated), runs it inside a `tracing` span naming that id and the RPC, returns the id
//! in the response headers and gRPC trailers, and counts it in [`Metrics`]. The binary serves
//! those metrics, with liveness and readiness probes, on the admin port ([`serve_admin`]), and
//! sets up logging as text or JSON ([`logging::init`]).
//!
//! The engine and the API-key gate stay free of HTTP: they report storage timings and refusals
//! to receivers they are given as values when they are set up ([`Metrics::storage_timer`],
//! [`Metrics::refusal_counter`]), so two servers in one process keep separate counts, and the
//! per-index gauges are read from the engine at each scrape ([`Metrics::watch_engine`]).
//!
//! ```no_run
//! # async fn example(app: axum::Router, listener: tokio::net::TcpListener, keys: larch_auth::KeyStore) {
//! use larch_observe::{Metrics, Readiness, RequestLayer};
//!
//! let metrics = Metrics::new();
//! let engine = larch_engine::Engine::open("./indexes")
//!     .with_storage_timer(metrics.storage_timer());
//! keys.count_refusals(metrics.refusal_counter());
//! metrics.watch_engine(engine);
//! let app = app.layer(RequestLayer::new(metrics.clone()));
//! let readiness = Readiness::new();
//! tokio::spawn(larch_observe::serve_admin(listener, metrics, readiness.clone(), std::future::pending()));
//! readiness.set(true); // once stored indexes are recovered
//! # let _ = app;
//! # }
//! ```
//!
//! # Layout
//! - [`layer`]: [`RequestLayer`], request ids, spans, and the response body that carries the
//!   id into gRPC trailers.
//! - [`metrics`]: [`Metrics`], the registry, metric names and Prometheus rendering.
//! - [`admin`]: the admin HTTP server (`/metrics`, `/healthz`, `/readyz`) and [`Readiness`].
//! - [`logging`]: `--log-format text|json`.
//! - [`limits`]: [`Limits`]: request size, in-flight and deadline limits ([`limits::LimitLayer`])
//!   and the HTTP/2 settings of every server; [`Cancel`], how queued work learns its request
//!   was abandoned; the answer budget (`--max-response-bytes`) and per-key query cap the
//!   data plane applies.
//! - [`keyed`]: [`keyed::KeyedGate`], a per-key cap on concurrent work (`--max-queries-per-key`).
//! - [`listener`]: [`Listener`], a port's socket, plaintext or TLS (`--tls-cert`/`--tls-key`,
//!   offering both h2 and http/1.1), as the connection stream tonic serves.
//! - [`internal`]: [`internal::CallTimeouts`], connect/request timeouts and HTTP/2 keepalive of
//!   the calls between Larch's own processes (split mode).

pub mod admin;
pub mod internal;
pub mod keyed;
pub mod layer;
pub mod limits;
pub mod listener;
pub mod logging;
pub mod metrics;

pub use admin::{Readiness, serve_admin};
pub use layer::{RequestId, RequestLayer, X_REQUEST_ID};
pub use limits::{Cancel, LimitSettings, Limits};
pub use listener::{Listener, Tls};
pub use logging::LogFormat;
pub use metrics::Metrics;

#[cfg(test)]
mod tests;
