//! Tests of the real `larch` binary, one module per area; each child process is owned by a
//! [`harness::Larch`] guard that kills it when a test fails.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod cli_tool;
mod crash;
mod drain;
mod faults;
mod first_five;
mod harness;
mod keys;
mod observability;
mod pressure;
mod replicas;
mod s3_control;
mod s3_data;
mod s3_followers;
mod safety;
mod search;
mod serve;
mod split;
mod split_hangs;
mod split_imports;
mod split_keys;
mod split_pods;
mod tls;
