//! API keys for Larch: key format, salted hashes, constant-time verification, a tonic/tower
//! layer for gRPC and an axum middleware for REST. Used by both the control plane and the
//! data plane.
//!
//! Only the hash of a key is ever held, verification is constant-time, and keys are
//! never logged (key ids, which are not secret, may be).
//!
//! Keys look like `larch_<key-id>_<secret>`: a 12-hex-character random id and a 256-bit
//! secret as 64 hex characters. An operator may also choose a bootstrap key of their own
//! (e.g. `LARCH_API_KEY=pclocal`, see [`ApiKey::from_configured`]).
//!
//! # Layout
//!
//! - [`key`]: the key format, [`ApiKey`] (plaintext) and [`ParsedKey`].
//! - [`stored`]: [`StoredKey`], the salted hash plus the key's [`Grant`], and why a fast
//!   hash is the right choice.
//! - [`store`]: [`KeyStore`], the shared verifier: `authenticate(key) -> Principal`.
//! - [`principal`]: [`Role`], [`Grant`] and [`Principal`] (who is calling).
//! - [`access`]: what each RPC needs ([`Action`], [`action_of`]) and whether a principal has it
//!   ([`Principal::authorize`], [`Denied`]): the role × action matrix and index allow-lists,
//!   enforced by both planes' handlers.
//! - [`admin`]: [`Admin`], projects and keys as the admin API changes them, kept in
//!   `access.json` or, for several control-plane replicas, in a shared document refreshed
//!   every [`REFRESH_EVERY`].
//! - [`bootstrap`](mod@bootstrap): the admin key created or loaded at first start, and the
//!   access state opened with it ([`bootstrap()`], [`bootstrap_shared`]).
//! - [`grpc`]: the tonic adapter: [`grpc::AuthLayer`], [`grpc::principal`], and the mapping
//!   from [`Error`] to `tonic::Status`.
//! - [`http`]: the axum adapter for the REST twins: [`http::require_key`] (the `Api-Key`
//!   header) and the mapping from [`Error`] to an HTTP status.
//! - [`error`]: the crate's [`Error`] and [`Result`].
//!
//! Keys other than the bootstrap key are made, changed and revoked through [`Admin`] (the
//! control plane's admin API), which keeps [`KeyStore`] in step with what it persisted.
//!
//! # Example
//!
//! ```
//! use larch_auth::{ApiKey, Error, Grant, KeyStore, StoredKey};
//!
//! let key = ApiKey::generate(); // show `key.as_str()` to its owner once, then drop it
//! let store = KeyStore::new();
//! store.insert(StoredKey::new(&key, Grant::admin()));
//!
//! let principal = store.authenticate(key.as_str())?;
//! assert_eq!(principal.key_id, key.key_id());
//! assert!(principal.is_admin);
//!
//! assert!(matches!(store.authenticate("guess"), Err(Error::InvalidKey)));
//! assert!(matches!(store.authenticate(""), Err(Error::MissingKey)));
//! # Ok::<(), Error>(())
//! ```
//!
//! A server mounts [`grpc::AuthLayer::new(store)`](grpc::AuthLayer::new) with
//! `Server::builder().layer(..)`, and handlers call [`grpc::principal`] to learn who is
//! calling. REST routers mount [`http::require_key`] with `axum::middleware::from_fn_with_state`.

pub mod access;
pub mod admin;
pub mod audit;
pub mod bootstrap;
pub mod error;
mod file;
pub mod gate;
pub mod grpc;
pub mod http;
pub mod key;
pub mod limit;
pub mod principal;
pub mod store;
pub mod stored;
pub mod time;

pub use access::{Action, Denied, action_of, rest_action};
pub use admin::{Admin, KeyInfo, KeyUpdate, NewKey, Project, REFRESH_EVERY};
pub use bootstrap::{BOOTSTRAP_FILE, Bootstrap, bootstrap, bootstrap_shared};
pub use error::{Error, Result};
pub use gate::{Attempt, Authenticated, Presented, RefusalCounter, Rejection, Scope};
pub use key::{ApiKey, BOOTSTRAP_KEY_ID, KEY_PREFIX, ParsedKey};
pub use limit::RateLimit;
pub use principal::{Grant, Principal, Role};
pub use store::KeyStore;
pub use stored::StoredKey;
pub use time::Timestamp;
