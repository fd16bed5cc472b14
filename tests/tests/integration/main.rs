//! Larch's integration tests: one binary, one module per area.
//!
//! Every test starts a real embedded server on 127.0.0.1 port 0 through
//! [`larch_tests::TestServer`] and talks to it with generated tonic clients, or — for the REST
//! twins (`rest_control`, `rest_data`) — with a plain HTTP client (`rest_client`).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod abuse;
mod access;
mod answers;
mod auth;
mod backups;
mod bucket;
mod control;
mod data;
mod durability;
mod edge;
mod exploration;
mod filters;
mod freshness;
mod hostile;
mod imports;
mod lifecycle;
mod limits;
mod observability;
mod projects;
mod rest_client;
mod rest_control;
mod rest_data;
mod routed_server;
mod scores;
mod sparse;
mod split_pods;
