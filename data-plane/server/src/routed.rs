//! Split mode, data-plane side ([`RoutedDataPlane`]): one address serves every index, and each
//! request goes to the index whose host it was sent to (HTTP/2 `:authority`, HTTP/1.1 `Host`),
//! as with Pinecone's hosts behind wildcard DNS. The control plane is the source of truth:
//!
//! - it calls `larch.internal.v1.DataPlaneControl` here as its catalog changes (attach,
//!   configure, detach an index), so a created index is served when CreateIndex returns;
//! - every `refresh` this side pulls `ControlPlaneSync` — every index to serve and every stored
//!   key — so it catches up after either side restarts, and a revoked or changed key takes
//!   effect here within one refresh (the data plane verifies keys itself, against the control
//!   plane's salted hashes, and keeps the last set it got if the control plane is unreachable
//!   — for at most [`ControlPlane::key_max_age`]: past it, it is not ready and refuses index
//!   requests with UNAVAILABLE rather than honour keys that may have been revoked). Keys come
//!   in pages and replace the whole set at once; every pull is bounded by
//!   [`ControlPlane::timeouts`], so a control plane that stops answering is a logged failure
//!   retried at the next refresh.
//!
//! An index the control plane no longer lists is no longer served, but its data is kept (and
//! logged): only a delete deletes data — an explicit DetachIndex, or a tombstone the pull
//! brings (a DeleteIndex whose DetachIndex did not get through). Tombstones acted on are
//! reported in the next pull, and the control plane then forgets them. Every index is named
//! with its incarnation, so a name deleted and created again is served from fresh storage.
//!
//! With several data-plane pods, each is named ([`RoutedDataPlane::with_pod_name`], `larch
//! data-plane --pod-name`) and the control plane calls every pod on each change. A pod the call
//! did not reach catches up here, at its next pull (and before it first reports SERVING): the
//! pull is the reconcile loop that makes a missed attach, configure or delete happen. Each pull
//! names the pod, because the control plane forgets a tombstone only once every pod has
//! reported it. Assignments carry the pods serving the index and its preferred writer
//! (rendezvous hashing in the control plane). Every pod serves every index: on local disks
//! each keeps its own copy; on a bucket the preferred writer writes it and the other pods
//! follow it, forwarding writes to the writer (see [`crate::forward`]).
//!
//! Failures are typed: [`ControlError`] (a refused `DataPlaneControl` call, or an index a pull
//! lists that cannot be served) and [`SyncError`] (one failed pull, logged and retried). Both
//! say their class through [`Classified`]; the service answers with the one gRPC map
//! ([`wire::grpc_status`]).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use larch_auth::grpc::SendKey;
use larch_auth::{KeyStore, Scope, StoredKey};
use larch_engine::{
    Engine, IndexConfig, Metric, Preference, Quantization, SearchParams, VectorType,
};
use larch_model::wire::{self, Dialect};
use larch_model::{Cause, Code};
use larch_model::{Classified, IndexKey, InvalidField};
use larch_observe::internal::CallTimeouts;
use larch_observe::{Limits, Metrics, Readiness};
use larch_proto::internal::control_plane_sync_client::ControlPlaneSyncClient;
use larch_proto::internal::data_plane_control_server::{DataPlaneControl, DataPlaneControlServer};
use larch_proto::internal::{
    self as internal, AttachIndexRequest, AttachIndexResponse, ConfigureIndexResponse,
    DetachIndexRequest, DetachIndexResponse, IndexAssignment, IndexTombstone,
    ListAssignmentsRequest, ListAssignmentsResponse, ListKeysRequest, ListKeysResponse,
};
use larch_proto::pinecone::vector_service_server::VectorServiceServer;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};
use tower::ServiceExt;

use crate::VectorApi;
use crate::api::IndexHandle;

/// The control plane this data plane follows.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// Its URL, e.g. `http://larch-control:5080`.
    pub url: String,
    /// The admin key both planes share, sent on internal calls.
    pub admin_key: SendKey,
    /// The file the admin key was read from, if any: read again before every pull, so a key
    /// rotated in the file (e.g. an updated Kubernetes Secret) is used without a restart.
    pub admin_key_file: Option<std::path::PathBuf>,
    /// How old this data plane's copy of the keys may get (the control plane not answering)
    /// before it stops serving: past it, readiness and health turn false and index requests
    /// get UNAVAILABLE, rather than honouring keys that may have been revoked meanwhile.
    pub key_max_age: Duration,
    /// How often to pull indexes and keys.
    pub refresh: Duration,
    /// For an https `url`: the CA certificate(s) to trust (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// Bounds on each pull, so a control plane that stops answering is a logged, retried
    /// failure rather than a sync loop stuck forever.
    pub timeouts: CallTimeouts,
}

/// Every index of this data plane, routed by host.
#[derive(Clone)]
pub struct RoutedDataPlane {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<Engine>,
    keys: KeyStore,
    metrics: Metrics,
    /// Request limits of the port, for index routes and internal calls alike.
    limits: Limits,
    /// Lower-case host name (no port) → the index served there.
    routes: RwLock<HashMap<String, Route>>,
    /// Serializes attach, detach and reconcile: a control-plane call that timed out may still
    /// run here (e.g. after a pause) while the control plane already retries it, and two
    /// attaches of one index must not create its storage side by side.
    changes: std::sync::Mutex<()>,
    /// When the keys were last pulled from the control plane (`None`: not yet).
    keys_pulled: std::sync::Mutex<Option<std::time::Instant>>,
    /// Tombstones whose data was removed, to report in the next pull.
    removed: std::sync::Mutex<Vec<IndexTombstone>>,
    /// This pod's name (`--pod-name`), sent with every pull and compared with each
    /// assignment's pods and preferred writer. Empty: unnamed (a single data plane).
    pod: std::sync::OnceLock<String>,
    /// Whether the warning that this pod's name is not among an assignment's pods was given.
    unplaced_warned: std::sync::atomic::AtomicBool,
    /// Bulk imports of every index (off unless given an import root).
    imports: crate::import::Imports,
    /// HTTP/2 channels to the writers of the indexes this pod follows (see `forward`).
    channels: crate::forward::Channels,
}

#[derive(Clone)]
struct Route {
    key: IndexKey,
    router: axum::Router,
    /// Who should write the index: see [`Writer`].
    writer: Writer,
}

/// The preferred writer of an index, as its assignment names it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Writer {
    /// The pod's name (empty: the control plane did not say).
    pod: String,
    /// Whether the assignment names a single pod: then that pod is this one, whatever the
    /// names say (with one data plane, its name need not match the control plane's URL).
    sole: bool,
}

impl Writer {
    fn of(assignment: &IndexAssignment) -> Writer {
        Writer {
            pod: assignment.preferred_writer.clone(),
            sole: assignment.pods.len() == 1,
        }
    }

    /// Whether the pod named `me` is this writer.
    fn is(&self, me: &str) -> bool {
        self.sole || (!me.is_empty() && self.pod == me)
    }
}

impl RoutedDataPlane {
    /// A data plane over `engine` with the default limits; see
    /// [`RoutedDataPlane::with_limits`].
    pub fn new(engine: Engine, keys: KeyStore, metrics: Metrics) -> RoutedDataPlane {
        RoutedDataPlane::with_limits(engine, keys, metrics, Limits::default())
    }

    /// A data plane over `engine`, checking requests against `keys` (which the sync loop
    /// keeps equal to the control plane's), counting them in `metrics` (which also reports
    /// the engine's indexes) and holding every request of its port to `limits`.
    pub fn with_limits(
        engine: Engine,
        keys: KeyStore,
        metrics: Metrics,
        limits: Limits,
    ) -> RoutedDataPlane {
        metrics.watch_engine(engine.clone());
        RoutedDataPlane {
            inner: Arc::new(Inner {
                engine: Arc::new(engine),
                keys,
                metrics,
                limits,
                routes: RwLock::new(HashMap::new()),
                changes: std::sync::Mutex::new(()),
                keys_pulled: std::sync::Mutex::new(None),
                removed: std::sync::Mutex::new(Vec::new()),
                pod: std::sync::OnceLock::new(),
                unplaced_warned: std::sync::atomic::AtomicBool::new(false),
                imports: crate::import::Imports::default(),
                channels: crate::forward::Channels::default(),
            }),
        }
    }

    /// Names this data plane `pod` (its `--pod-name`, e.g. the StatefulSet pod's name), as
    /// the control plane's `--data-plane-url` list names it. Set once, before serving; later
    /// calls are ignored.
    pub fn with_pod_name(self, pod: impl Into<String>) -> RoutedDataPlane {
        let _ = self.inner.pod.set(pod.into());
        self
    }

    /// Trusts `ca_pem` (its `--tls-ca`) for the certificates of other pods when a write is
    /// forwarded to an index's writer over `https` (pods serving TLS; see `forward`). Set
    /// once, before serving.
    pub fn with_peer_ca(self, ca_pem: Vec<u8>) -> RoutedDataPlane {
        self.inner.channels.trust(ca_pem);
        self
    }

    /// This data plane's pod name (empty if unnamed).
    pub fn pod_name(&self) -> &str {
        self.inner.pod.get().map_or("", String::as_str)
    }

    /// Whether this pod is the preferred writer of the served index `key`, as its assignment
    /// says (rendezvous hashing in the control plane); false when not served or not said.
    pub fn is_preferred_writer(&self, key: &IndexKey) -> bool {
        let pod = self.pod_name();
        self.read()
            .values()
            .any(|route| &route.key == key && route.writer.is(pod))
    }

    /// Warns (once) when `assignment` lists several pods serving it and this pod is not
    /// among them: its --pod-name does not match the control plane's --data-plane-url list, so
    /// the control plane cannot count this pod's reports (deleted indexes' tombstones linger).
    /// It serves the index all the same: every pod serves every index today. (With a single
    /// pod listed, that pod is this one whatever the names.)
    fn check_placed(&self, assignment: &IndexAssignment) {
        let pod = self.pod_name();
        if assignment.pods.len() <= 1 || assignment.pods.iter().any(|listed| listed == pod) {
            return;
        }
        if !self
            .inner
            .unplaced_warned
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                pod,
                pods = ?assignment.pods,
                "this data plane's --pod-name is not among the pods the control plane names (its --data-plane-url list); serving the index anyway, but give this pod the name its URL names"
            );
        }
    }

    /// The same data plane, running bulk imports with `imports` (`--import-root`). Call it
    /// right after construction, before the data plane is shared.
    pub fn with_imports(mut self, imports: crate::import::Imports) -> RoutedDataPlane {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.imports = imports,
            None => tracing::error!("with_imports called on a shared data plane; imports stay off"),
        }
        self
    }

    /// The bulk imports of every index.
    pub fn imports(&self) -> &crate::import::Imports {
        &self.inner.imports
    }

    fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The engine holding every index's data.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Hosts served now, with their index, sorted by host.
    pub fn served(&self) -> Vec<(String, IndexKey)> {
        let mut served: Vec<(String, IndexKey)> = self
            .read()
            .iter()
            .map(|(host, route)| (host.clone(), route.key.clone()))
            .collect();
        served.sort();
        served
    }

    fn removed(&self) -> std::sync::MutexGuard<'_, Vec<IndexTombstone>> {
        // Entries are pushed and taken whole; a poisoned lock is still consistent.
        self.inner
            .removed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Route>> {
        self.inner
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `change` (attach, detach or reconcile) after any other one has finished.
    fn serialized<T>(&self, change: impl FnOnce(&Self) -> T) -> T {
        let _changing = self
            .inner
            .changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        change(self)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Route>> {
        self.inner
            .routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts serving `assignment` (creating its storage if `create`, else recovering it, or
    /// creating it when there is nothing to recover), or updates it if it is served already.
    fn attach(&self, assignment: &IndexAssignment, create: bool) -> Result<(), ControlError> {
        let (key, config, search, host) = parse_assignment(assignment)?;
        self.check_placed(assignment);
        let engine = &self.inner.engine;
        let storage = key.storage_name();
        // On a bucket, the other pods follow the index (see `forward`); with no preferred
        // writer named (a control plane that names none), this pod tries to write it.
        let writer = Writer::of(assignment);
        let preference = if writer.pod.is_empty() || writer.is(self.pod_name()) {
            Preference::Write
        } else {
            Preference::Follow
        };
        let open = engine.index(&storage).ok();
        let index = match (open, create) {
            (Some(index), false) => index,
            // On a bucket the storage name carries the incarnation, so this is a repeated
            // create of the index being served: creating never deletes there.
            (Some(index), true) if engine.is_on_store() => index,
            (open, _) => {
                if open.is_some() {
                    // A new index under a name whose old data is still open: start afresh.
                    engine.drop_index(&storage)?;
                }
                let stored = engine.index_dirs()?.contains(&storage);
                if create || !stored {
                    // On a bucket, creating opens what the bucket already holds of this
                    // incarnation, so it is not necessarily empty.
                    if !create && !engine.is_on_store() {
                        tracing::warn!(index = %key, "the control plane lists an index this data plane has no data for; serving it empty");
                    }
                    engine.create_index_preferring(&storage, config, preference, search)
                } else {
                    engine.open_index_preferring(&storage, config, preference, search)
                }?
            }
        };
        index.set_search_params(search);
        let router = index_router(
            Arc::clone(engine),
            &key,
            self.inner.keys.clone(),
            self.inner.metrics.clone(),
            self.limits(),
            self.inner.imports.clone(),
            self.inner.channels.clone(),
        );
        // The index's unfinished imports resume (no-op when they are running already).
        self.inner.imports.recover(engine, &storage);
        let mut routes = self.write();
        routes.retain(|_, route| route.key != key);
        routes.insert(
            host.clone(),
            Route {
                key: key.clone(),
                router,
                writer: Writer::of(assignment),
            },
        );
        drop(routes);
        tracing::info!(
            index = %key,
            %host,
            preferred_writer = %assignment.preferred_writer,
            writer = self.is_preferred_writer(&key),
            "data plane serving index"
        );
        Ok(())
    }

    /// Records `writer` for the index served at `host` (the pods may have changed).
    fn place(&self, host: &str, writer: Writer) {
        if let Some(route) = self.write().get_mut(host)
            && route.writer != writer
        {
            tracing::info!(index = %route.key, from = %route.writer.pod, to = %writer.pod, "the index's preferred writer changed");
            route.writer = writer;
        }
    }

    fn configure(&self, key: &IndexKey, search: SearchParams) -> Result<(), ControlError> {
        let index = self.inner.engine.index(&key.storage_name())?;
        index.set_search_params(search);
        Ok(())
    }

    /// Stops serving `key` (that incarnation only) and deletes its data, whether or not it is
    /// open (after a restart, a deleted index is not); done if there is none.
    fn detach(&self, key: &IndexKey) -> Result<(), ControlError> {
        self.write().retain(|_, route| &route.key != key);
        let engine = &self.inner.engine;
        let storage = key.storage_name();
        self.inner.imports.stop(&storage);
        match engine.drop_index(&storage) {
            Ok(()) => Ok(()),
            // Not open: delete what is stored, if anything.
            Err(larch_engine::Error::NotFound(_)) => Ok(engine.remove_orphan(&storage)?),
            Err(err) => Err(err.into()),
        }
    }

    /// Makes the served set equal to `assignments`: attaches what is missing or changed and
    /// stops serving what the control plane no longer lists (keeping its data); deletes the
    /// data of `tombstones`. Returns the tombstones it deleted (or found gone) and the listed
    /// indexes it could not serve (logged; tried again at the next pull).
    fn reconcile(
        &self,
        assignments: &[IndexAssignment],
        tombstones: &[IndexTombstone],
    ) -> (Vec<IndexTombstone>, Vec<String>) {
        let mut unserved = Vec::new();
        let served: HashMap<String, IndexKey> = self
            .read()
            .iter()
            .map(|(host, route)| (host.clone(), route.key.clone()))
            .collect();
        let mut listed = std::collections::HashSet::with_capacity(assignments.len());
        for assignment in assignments {
            let host = host_name(&assignment.host);
            listed.insert(host.clone());
            let result = match parse_assignment(assignment) {
                // Served already, as this incarnation: only its parameters may have changed.
                Ok((key, _, search, _)) if served.get(&host) == Some(&key) => {
                    self.check_placed(assignment);
                    self.place(&host, Writer::of(assignment));
                    self.configure(&key, search)
                }
                Ok(_) => self.attach(assignment, false),
                Err(err) => Err(err),
            };
            if let Err(err) = result {
                tracing::error!(index = %assignment.name, project = %assignment.project, error = %err, "cannot serve an index the control plane lists");
                unserved.push(format!("{}/{}", assignment.project, assignment.name));
            }
        }
        let mut routes = self.write();
        let mut unlisted = Vec::new();
        routes.retain(|host, route| {
            let keep = listed.contains(host);
            if !keep {
                tracing::warn!(index = %route.key, %host, "the control plane no longer lists this index; not serving it (its data is kept)");
                unlisted.push(route.key.storage_name());
            }
            keep
        });
        drop(routes);
        for storage in unlisted {
            self.inner.imports.stop(&storage);
        }
        let mut removed = Vec::new();
        for tombstone in tombstones {
            let result = tombstone_key(tombstone).and_then(|key| {
                self.detach(&key)?;
                tracing::info!(index = %key, storage = %key.storage_name(), "removed the data of a deleted index");
                Ok(())
            });
            match result {
                Ok(()) => removed.push(tombstone.clone()),
                Err(err) => {
                    tracing::error!(index = %tombstone.name, project = %tombstone.project, error = %err, "cannot remove the data of a deleted index; retrying at the next sync");
                }
            }
        }
        (removed, unserved)
    }

    /// How long ago the keys were last pulled; `None` before the first pull.
    pub fn key_age(&self) -> Option<Duration> {
        self.inner
            .keys_pulled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|pulled| pulled.elapsed())
    }

    /// The age of the keys when it is past `max_age` (so requests must be refused).
    fn stale_keys(&self, max_age: Duration) -> Option<Duration> {
        self.key_age().filter(|age| *age > max_age)
    }

    /// Every stored key, page by page (the whole set is replaced at once, only once every
    /// page arrived).
    async fn pull_keys(client: &mut SyncClient) -> Result<Vec<StoredKey>, SyncError> {
        let mut keys: Vec<StoredKey> = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_keys(ListKeysRequest {
                    page_token: page_token.clone(),
                    page_size: KEY_PAGE_SIZE,
                })
                .await
                .map_err(SyncError::Remote)?
                .into_inner();
            let ListKeysResponse {
                keys_json,
                next_page_token,
            } = page;
            let mut got: Vec<StoredKey> =
                serde_json::from_str(&keys_json).map_err(SyncError::UnreadableKeys)?;
            keys.append(&mut got);
            if next_page_token.is_empty() {
                return Ok(keys);
            }
            // Key ids only grow from page to page; anything else would loop forever.
            if next_page_token <= page_token {
                return Err(SyncError::PageOrder {
                    next: next_page_token,
                    after: page_token,
                });
            }
            page_token = next_page_token;
        }
    }

    /// Pulls indexes and keys once.
    /// One pull: the keys, then the indexes. Returns the listed indexes this pod could not
    /// serve (see [`RoutedDataPlane::reconcile`]).
    async fn sync(&self, client: &mut SyncClient) -> Result<Vec<String>, SyncError> {
        let keys = Self::pull_keys(client).await?;
        if keys.is_empty() {
            return Err(SyncError::NoKeys);
        }
        self.inner.keys.replace_all(keys);
        *self
            .inner
            .keys_pulled
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(std::time::Instant::now());
        // Reported once the control plane has them; kept for the next pull if this one fails.
        let removed = std::mem::take(&mut *self.removed());
        let pulled = match client
            .list_assignments(ListAssignmentsRequest {
                removed: removed.clone(),
                pod_name: self.pod_name().to_owned(),
            })
            .await
        {
            Ok(pulled) => pulled.into_inner(),
            Err(status) => {
                self.removed().extend(removed);
                return Err(SyncError::Remote(status));
            }
        };
        let ListAssignmentsResponse {
            indexes,
            tombstones,
        } = pulled;
        let me = self.clone();
        let (removed, unserved) = tokio::task::spawn_blocking(move || {
            me.serialized(|me| me.reconcile(&indexes, &tombstones))
        })
        .await
        .map_err(SyncError::Reconcile)?;
        self.removed().extend(removed);
        Ok(unserved)
    }

    /// Dispatches a request that is neither health, reflection nor internal to the index
    /// served at its host. Its key has been checked already (see [`serve_routed`]): an unknown
    /// host is only ever named to a caller with a valid key.
    async fn dispatch(self, request: Request) -> Response {
        let host = request_authority(&request)
            .map(|host| host_name(&host))
            .unwrap_or_default();
        let router = self.read().get(&host).map(|route| route.router.clone());
        match router {
            Some(router) => match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            },
            None => no_index_at(&host, &request),
        }
    }
}

type SyncClient = ControlPlaneSyncClient<InterceptedService<Channel, SendKey>>;

/// Keys asked for per ListKeys page.
const KEY_PAGE_SIZE: u32 = 1_000;

/// The answer to an index request while the keys are older than `max_age` (`age`): UNAVAILABLE
/// (HTTP 503), naming why.
fn stale_keys_refusal(age: Duration, max_age: Duration, request: &Request) -> Response {
    let message = format!(
        "this data plane has not reached the control plane for {}s, longer than its key-age \
         bound (--key-max-age-secs {}): it refuses requests rather than honour API keys that \
         may have been revoked meanwhile; retry once the control plane is reachable",
        age.as_secs(),
        max_age.as_secs()
    );
    refuse(request, Code::Unavailable, message)
}

/// A refusal of the router itself in the request's protocol, through the shared maps: a gRPC
/// status, or the data plane's REST error shape.
pub(crate) fn refuse(request: &Request, code: Code, message: String) -> Response {
    refusal(is_grpc(request), code, message)
}

/// Whether `request` is a gRPC call (by its content type).
pub(crate) fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// [`refuse`], for a request already taken apart: `grpc` says its protocol.
pub(crate) fn refusal(grpc: bool, code: Code, message: String) -> Response {
    let refusal = Cause::from_parts(code, message);
    if grpc {
        wire::grpc_status(&refusal)
            .into_http::<axum::body::Body>()
            .into_response()
    } else {
        wire::http_error(Dialect::DataPlane, &refusal).into_response()
    }
}

/// The admin key in `path` if it differs from `current` (`Ok(None)` if unchanged).
fn rotated_key(path: &std::path::Path, current: &str) -> Result<Option<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let key = text.trim_end_matches(['\n', '\r']);
    if key.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok((key != current).then(|| key.to_owned()))
}

/// The host a request was sent to, port included: HTTP/2's `:authority`, else HTTP/1.1's
/// `Host`.
pub(crate) fn request_authority(request: &Request) -> Option<String> {
    request
        .uri()
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(http::header::HOST)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        })
}

/// The host name of `host` (`name[:port]`), lower-case, without the port.
fn host_name(host: &str) -> String {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    name.to_ascii_lowercase()
}

fn no_index_at(host: &str, request: &Request) -> Response {
    let message = format!(
        "no index is served at host '{host}': use the host DescribeIndex returns (requests are \
         routed by their :authority / Host)"
    );
    refuse(request, Code::NotFound, message)
}

/// The VectorService (gRPC) and REST routes of one index, behind its scoped auth, each
/// request observed (request id, span, metrics) with the index named.
fn index_router(
    engine: Arc<Engine>,
    key: &IndexKey,
    keys: KeyStore,
    metrics: Metrics,
    limits: &Limits,
    imports: crate::import::Imports,
    channels: crate::forward::Channels,
) -> axum::Router {
    let forwarder =
        crate::forward::Forwarder::new(Arc::clone(&engine), key.storage_name(), channels);
    let index = IndexHandle::new_with(engine, key.storage_name(), limits).with_imports(imports);
    let scope = Scope::Index {
        project: key.project().to_owned(),
        name: key.name().to_string(),
    };
    // Writes to an index this pod follows go to its writer once authorized here.
    let grpc = Routes::new(crate::vector_service(index.clone(), limits))
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(
            forwarder.clone(),
            crate::forward::forward_writes,
        ));
    larch_auth::http::protect_grpc_scoped(grpc, keys.clone(), scope.clone())
        .merge(crate::rest::router_forwarding(
            index,
            keys,
            scope,
            Some(forwarder),
        ))
        .layer(limits.layer(crate::rest::render_error))
        .layer(larch_observe::RequestLayer::new(metrics).for_index(key))
}

fn parse_assignment(
    assignment: &IndexAssignment,
) -> Result<(IndexKey, IndexConfig, SearchParams, String), ControlError> {
    let IndexAssignment {
        project,
        name,
        dimension,
        metric,
        search,
        host,
        incarnation,
        // Where the index is placed: see `check_placed` and `Writer`.
        pods: _,
        preferred_writer: _,
        vector_type,
    } = assignment;
    let key = index_key(project, name, incarnation)?;
    let vector_type = match vector_type.as_str() {
        // From a control plane older than sparse indexes.
        "" => VectorType::Dense,
        other => other.parse::<VectorType>().map_err(ControlError::Invalid)?,
    };
    let metric = metric.parse::<Metric>().map_err(ControlError::Invalid)?;
    let config =
        IndexConfig::new(vector_type, *dimension, metric).map_err(ControlError::Invalid)?;
    let search = search_params(search.as_ref(), || Ok(metric))?;
    if host.is_empty() {
        return Err(ControlError::NoHost);
    }
    Ok((key, config, search, host_name(host)))
}

/// The ANN parameters of an assignment or a configure call, each given value checked first;
/// what the call leaves out (all of them, or an empty quantization from a control plane older
/// than the setting) takes the defaults of the index's metric, which `metric` finds only then.
fn search_params(
    search: Option<&internal::SearchParams>,
    metric: impl FnOnce() -> Result<Metric, ControlError>,
) -> Result<SearchParams, ControlError> {
    let Some(search) = search else {
        return Ok(SearchParams::default_for(metric()?));
    };
    let params = SearchParams::default()
        .with_m(search.m)
        .and_then(|params| params.with_ef_construction(search.ef_construction))
        .and_then(|params| params.with_ef_search(search.ef_search))
        .map_err(ControlError::Invalid)?;
    let quantization = if search.quantization.is_empty() {
        SearchParams::default_for(metric()?).quantization()
    } else {
        Quantization::parse("quantization", &search.quantization).map_err(ControlError::Invalid)?
    };
    Ok(params.with_quantization(quantization))
}

/// Why `DataPlaneControl` refused a call of the control plane (or why [`RoutedDataPlane`]
/// cannot serve an index the pull lists): a malformed assignment is INVALID_ARGUMENT naming
/// the field, an engine failure keeps the engine's class, a panicked task is INTERNAL. The
/// control plane passes the class on to its client (its full disk is RESOURCE_EXHAUSTED there).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// AttachIndex without an `index`.
    #[error("index is required")]
    NoIndex,
    /// An assignment without a `host` to serve the index at.
    #[error("the index has no host")]
    NoHost,
    /// A project, name or incarnation that names no index.
    #[error(transparent)]
    Key(#[from] InvalidField),
    /// A dimension, metric or search parameter the engine refuses.
    #[error(transparent)]
    Invalid(larch_engine::Error),
    /// The engine could not create, open, configure or remove the index.
    #[error(transparent)]
    Engine(#[from] larch_engine::Error),
    /// The blocking task doing the change panicked or was cancelled.
    #[error("{what} failed")]
    Task {
        /// Which change: `attach` or `detach`.
        what: &'static str,
        /// Why the task ended.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Classified for ControlError {
    fn code(&self) -> Code {
        match self {
            ControlError::NoIndex
            | ControlError::NoHost
            | ControlError::Key(_)
            | ControlError::Invalid(_) => Code::InvalidArgument,
            ControlError::Engine(err) => err.code(),
            ControlError::Task { .. } => Code::Internal,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ControlError::Engine(err) => err.retry_after(),
            _ => None,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ControlError::NoIndex => Some("index"),
            ControlError::NoHost => Some("host"),
            ControlError::Key(err) => Some(err.field),
            ControlError::Invalid(err) | ControlError::Engine(err) => err.field(),
            ControlError::Task { .. } => None,
        }
    }
}

/// The status the control plane sees: the one gRPC map.
impl From<ControlError> for Status {
    fn from(err: ControlError) -> Status {
        wire::grpc_status(&err)
    }
}

/// How many pulls a listed index that cannot be opened holds back a starting pod's readiness.
const UNSERVED_PULLS: u32 = 30;

/// Why one pull from the control plane failed; the sync loop logs it and retries at the next
/// refresh, keeping the last indexes and keys.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The control plane answered the call with an error (or did not answer: unreachable,
    /// timed out); its message as received.
    #[error("{}", .0.message())]
    Remote(Status),
    /// A ListKeys page whose JSON is not a key list.
    #[error("unreadable key list: {0}")]
    UnreadableKeys(#[source] serde_json::Error),
    /// Page tokens must grow from page to page; anything else would loop forever.
    #[error("the control plane sent page token {next:?} after {after:?}; keeping the current keys")]
    PageOrder {
        /// The token received.
        next: String,
        /// The token it should have come after.
        after: String,
    },
    /// An empty key list: not even the admin key, so surely not the control plane's state.
    #[error("the control plane sent no keys at all; keeping the current ones")]
    NoKeys,
    /// The blocking task applying the pulled indexes panicked or was cancelled.
    #[error("reconcile failed: {0}")]
    Reconcile(#[source] tokio::task::JoinError),
}

impl Classified for SyncError {
    fn code(&self) -> Code {
        match self {
            SyncError::Remote(status) => wire::code_of_status(status.code()),
            SyncError::NoKeys => Code::FailedPrecondition,
            SyncError::UnreadableKeys(_)
            | SyncError::PageOrder { .. }
            | SyncError::Reconcile(_) => Code::Internal,
        }
    }
}

#[tonic::async_trait]
impl DataPlaneControl for RoutedDataPlane {
    async fn attach_index(
        &self,
        request: GrpcRequest<AttachIndexRequest>,
    ) -> Result<GrpcResponse<AttachIndexResponse>, Status> {
        let AttachIndexRequest { index, create } = request.into_inner();
        let index = index.ok_or(ControlError::NoIndex)?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.serialized(|me| me.attach(&index, create)))
            .await
            .map_err(|source| ControlError::Task {
                what: "attach",
                source,
            })??;
        Ok(GrpcResponse::new(AttachIndexResponse {}))
    }

    async fn configure_index(
        &self,
        request: GrpcRequest<internal::ConfigureIndexRequest>,
    ) -> Result<GrpcResponse<ConfigureIndexResponse>, Status> {
        let internal::ConfigureIndexRequest {
            project,
            name,
            search,
            incarnation,
        } = request.into_inner();
        let key = index_key(&project, &name, &incarnation)?;
        let search = search_params(search.as_ref(), || {
            let served = self.inner.engine.index(&key.storage_name())?;
            Ok(served.config().metric)
        })?;
        self.configure(&key, search)?;
        Ok(GrpcResponse::new(ConfigureIndexResponse {}))
    }

    async fn detach_index(
        &self,
        request: GrpcRequest<DetachIndexRequest>,
    ) -> Result<GrpcResponse<DetachIndexResponse>, Status> {
        let DetachIndexRequest {
            project,
            name,
            incarnation,
        } = request.into_inner();
        let key = index_key(&project, &name, &incarnation)?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.serialized(|me| me.detach(&key)))
            .await
            .map_err(|source| ControlError::Task {
                what: "detach",
                source,
            })??;
        Ok(GrpcResponse::new(DetachIndexResponse {}))
    }

    async fn create_backup(
        &self,
        request: GrpcRequest<internal::CreateBackupRequest>,
    ) -> Result<GrpcResponse<internal::CreateBackupResponse>, Status> {
        let internal::CreateBackupRequest {
            project,
            name,
            incarnation,
            backup_id,
        } = request.into_inner();
        let storage = index_key(&project, &name, &incarnation)?.storage_name();
        let backup = self
            .backup_step("backup", move |engine| {
                engine.backup_index(&storage, &backup_id)
            })
            .await?;
        Ok(GrpcResponse::new(internal::CreateBackupResponse {
            backup: Some(backup),
        }))
    }

    async fn restore_backup(
        &self,
        request: GrpcRequest<internal::RestoreBackupRequest>,
    ) -> Result<GrpcResponse<internal::RestoreBackupResponse>, Status> {
        let internal::RestoreBackupRequest {
            backup_id,
            project,
            name,
            incarnation,
        } = request.into_inner();
        let storage = index_key(&project, &name, &incarnation)?.storage_name();
        let backup = self
            .backup_step("restore", move |engine| {
                engine.restore_backup(&backup_id, &storage)
            })
            .await?;
        Ok(GrpcResponse::new(internal::RestoreBackupResponse {
            backup: Some(backup),
        }))
    }

    async fn delete_backup(
        &self,
        request: GrpcRequest<internal::DeleteBackupRequest>,
    ) -> Result<GrpcResponse<internal::DeleteBackupResponse>, Status> {
        let internal::DeleteBackupRequest { backup_id } = request.into_inner();
        let engine = Arc::clone(&self.inner.engine);
        tokio::task::spawn_blocking(move || engine.delete_backup(&backup_id))
            .await
            .map_err(|source| ControlError::Task {
                what: "backup deletion",
                source,
            })?
            .map_err(ControlError::Engine)?;
        Ok(GrpcResponse::new(internal::DeleteBackupResponse {}))
    }
}

impl RoutedDataPlane {
    /// Runs `step` (taking or restoring a backup) on the engine on the blocking pool, after
    /// any other change (attach, detach) has finished; what the control plane learns of it.
    async fn backup_step(
        &self,
        what: &'static str,
        step: impl FnOnce(&Engine) -> larch_engine::Result<larch_engine::BackupInfo> + Send + 'static,
    ) -> Result<internal::BackupSummary, ControlError> {
        let me = self.clone();
        let info = tokio::task::spawn_blocking(move || me.serialized(|me| step(&me.inner.engine)))
            .await
            .map_err(|source| ControlError::Task { what, source })??;
        Ok(backup_summary(info))
    }
}

/// What the control plane learns of a backup.
fn backup_summary(info: larch_engine::BackupInfo) -> internal::BackupSummary {
    let larch_engine::BackupInfo {
        backup_id: _,
        source_index: _,
        config,
        record_count,
        namespace_count,
        size_bytes,
    } = info;
    internal::BackupSummary {
        dimension: config.dimension.get(),
        metric: config.metric.to_string(),
        record_count,
        namespace_count,
        size_bytes,
    }
}

fn index_key(project: &str, name: &str, incarnation: &str) -> Result<IndexKey, ControlError> {
    Ok(IndexKey::parse(project, name, incarnation)?)
}

/// The key (with its incarnation) a tombstone names.
fn tombstone_key(tombstone: &IndexTombstone) -> Result<IndexKey, ControlError> {
    let IndexTombstone {
        project,
        name,
        incarnation,
    } = tombstone;
    index_key(project, name, incarnation)
}

/// Serves every index of `data_plane` on `listener`, following `control_plane`, until
/// `shutdown` completes; then reports NOT_SERVING and drains in-flight requests.
///
/// Health reports NOT_SERVING until the first successful pull from the control plane (until
/// then the data plane does not know what to serve, nor which keys are valid), and again while
/// the keys are older than `control_plane.key_max_age` (index requests then get UNAVAILABLE).
/// `readiness` (the admin port's `/readyz`) follows gRPC health.
pub async fn serve_routed(
    listener: impl Into<larch_observe::Listener>,
    data_plane: RoutedDataPlane,
    control_plane: ControlPlane,
    readiness: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let (reflection_v1, reflection_v1alpha) = larch_proto::reflection::services();
    set_health(&health, tonic_health::ServingStatus::NotServing).await;

    let endpoint = Endpoint::from_shared(control_plane.url.clone()).inspect_err(|err| {
        tracing::error!(url = %control_plane.url, error = %err, "not a URL");
    })?;
    let mut endpoint = control_plane.timeouts.apply(endpoint);
    if let Some(ca) = control_plane.ca_pem.clone() {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca));
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint.connect_lazy();
    let mut client =
        ControlPlaneSyncClient::with_interceptor(channel.clone(), control_plane.admin_key.clone());
    let syncing = data_plane.clone();
    let reporter = health.clone();
    let ready = readiness.clone();
    let max_age = control_plane.key_max_age;
    let sync = tokio::spawn(async move {
        let health = reporter;
        let mut synced = false;
        // Pulls that left a listed index unserved before this pod first became ready.
        let mut first_pulls = 0u32;
        let mut failing = false;
        let mut serving = false;
        // What the key file held when last read (`None`: not read yet; the key given at start
        // was read from it then).
        let mut key_read: Option<String> = None;
        loop {
            if let Some(path) = &control_plane.admin_key_file {
                match rotated_key(path, key_read.as_deref().unwrap_or_default()) {
                    Ok(None) => {}
                    Ok(Some(key)) => match SendKey::new(&key) {
                        Some(send) => {
                            if key_read.is_some() {
                                tracing::info!(file = %path.display(), "the admin key file changed; calling the control plane with the new key");
                            }
                            key_read = Some(key);
                            client =
                                ControlPlaneSyncClient::with_interceptor(channel.clone(), send);
                        }
                        None => {
                            tracing::warn!(file = %path.display(), "the admin key file holds a key that cannot be sent as request metadata; keeping the previous key")
                        }
                    },
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot read the admin key file; keeping the previous key")
                    }
                }
            }
            match syncing.sync(&mut client).await {
                // Not ready while an index the control plane lists is not served yet (its
                // open failed, e.g. a flush swapped the segments it was reading): it would
                // answer NOT_FOUND for it. An index that still cannot be served after
                // UNSERVED_PULLS pulls stops holding the pod back (logged at every pull).
                Ok(unserved) if !synced && !unserved.is_empty() && first_pulls < UNSERVED_PULLS => {
                    first_pulls += 1;
                    tracing::warn!(
                        ?unserved,
                        "not ready yet: indexes the control plane lists are not served yet; trying again at the next pull"
                    );
                }
                Ok(unserved) if !synced => {
                    synced = true;
                    if !unserved.is_empty() {
                        tracing::error!(
                            ?unserved,
                            pulls = first_pulls,
                            "serving without indexes that could not be opened"
                        );
                    }
                    tracing::info!(
                        indexes = syncing.served().len(),
                        "in sync with the control plane; serving"
                    );
                }
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!(url = %control_plane.url, "in sync with the control plane again");
                }
                Ok(_) => {}
                Err(err) if err.code() == Code::Unauthenticated => {
                    failing = synced;
                    tracing::warn!(
                        url = %control_plane.url,
                        error = %err,
                        "the control plane refused this data plane's admin key: give both planes the same key (LARCH_API_KEY, or LARCH_API_KEY_FILE, which is read again before every pull); keeping the last indexes and keys"
                    );
                }
                Err(err) => {
                    failing = synced;
                    tracing::warn!(
                        url = %control_plane.url,
                        code = %err.code(),
                        error = %err,
                        "cannot sync with the control plane; keeping the last indexes and keys"
                    );
                }
            }
            let age = syncing.key_age();
            syncing.inner.metrics.set_key_age(age.unwrap_or_default());
            let stale = age.filter(|age| *age > max_age);
            if let Some(age) = stale
                && serving
            {
                tracing::warn!(
                    age_secs = age.as_secs(),
                    max_age_secs = max_age.as_secs(),
                    "the keys are older than --key-max-age-secs: not ready, and refusing requests with UNAVAILABLE until the control plane answers"
                );
            }
            let healthy = synced && stale.is_none();
            if healthy != serving {
                serving = healthy;
                let status = if healthy {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                set_health(&health, status).await;
                ready.set(healthy);
            }
            tokio::time::sleep(control_plane.refresh).await;
        }
    });

    let internal = Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(DataPlaneControlServer::new(data_plane.clone()))
        .into_axum_router();
    let routed = data_plane.clone();
    let refuse_stale = move |request: Request| {
        let routed = routed.clone();
        async move {
            match routed.stale_keys(max_age) {
                Some(age) => stale_keys_refusal(age, max_age, &request),
                None => routed.dispatch(request).await,
            }
        }
    };
    let metrics = data_plane.inner.metrics.clone();
    let limits = data_plane.limits().clone();
    let app = larch_auth::http::protect_grpc(internal, data_plane.inner.keys.clone())
        // Health, reflection and internal calls; index requests are observed by their router.
        .route_layer(limits.layer(crate::rest::render_error))
        .route_layer(larch_observe::RequestLayer::new(metrics))
        .fallback(refuse_stale)
        // Keys are checked before anything else, routing included: a request without a valid
        // key gets UNAUTHENTICATED whether an index is served at its host or not (so hosts
        // cannot be probed without a key), and holds no slot of the limits.
        .layer(larch_auth::http::AuthenticateLayer::new(
            data_plane.inner.keys.clone(),
            Scope::ControlPlane,
            crate::rest::render_error,
        ));
    let drain = async move {
        shutdown.await;
        sync.abort();
        readiness.set(false);
        set_health(&health, tonic_health::ServingStatus::NotServing).await;
    };
    limits
        .server()
        .add_routes(Routes::from(app))
        .serve_with_incoming_shutdown(listener.into().incoming(), drain)
        .await
}

async fn set_health(
    health: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    health.set_service_status("", status).await;
    health
        .set_service_status(
            <VectorServiceServer<VectorApi> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_without_port_and_case() {
        assert_eq!(
            host_name("Movies.Default.Larch.Test:5081"),
            "movies.default.larch.test"
        );
        assert_eq!(
            host_name("movies.default.larch.test"),
            "movies.default.larch.test"
        );
        assert_eq!(host_name("localhost:x"), "localhost:x");
    }

    #[test]
    fn assignments_are_checked() {
        let good = IndexAssignment {
            project: "default".into(),
            name: "movies".into(),
            dimension: 4,
            metric: "cosine".into(),
            search: Some(internal::SearchParams {
                m: 16,
                ef_construction: 100,
                ef_search: 50,
                quantization: "int8".into(),
            }),
            host: "movies.default.larch.test:5081".into(),
            incarnation: String::new(),
            pods: vec!["larch-data-1".into(), "larch-data-0".into()],
            preferred_writer: "larch-data-1".into(),
            vector_type: String::new(),
        };
        let (key, config, search, host) = parse_assignment(&good).expect("valid");
        assert_eq!(key.storage_name(), "movies");
        assert_eq!(config.dimension.get(), 4);
        let (_, config, ..) = parse_assignment(&IndexAssignment {
            vector_type: "sparse".into(),
            dimension: 0,
            metric: "dotproduct".into(),
            ..good.clone()
        })
        .expect("valid");
        assert_eq!(config, IndexConfig::sparse());
        assert_eq!(search.ef_search(), 50);
        assert_eq!(host, "movies.default.larch.test");
        let (key, ..) = parse_assignment(&IndexAssignment {
            incarnation: "9f3c2a1b7d4e6f80".into(),
            ..good.clone()
        })
        .expect("valid");
        assert_eq!(key.storage_name(), "movies@default@9f3c2a1b7d4e6f80");
        // What an assignment leaves out takes its metric's defaults: an int8 graph, an f32
        // one for dotproduct.
        for (metric, quantization) in [
            ("cosine", Quantization::Int8),
            ("dotproduct", Quantization::None),
        ] {
            let (_, _, absent, _) = parse_assignment(&IndexAssignment {
                metric: metric.into(),
                search: None,
                ..good.clone()
            })
            .expect("valid");
            assert_eq!(absent, SearchParams::default_for(metric.parse().unwrap()));
            let (_, _, empty, _) = parse_assignment(&IndexAssignment {
                metric: metric.into(),
                search: Some(internal::SearchParams {
                    quantization: String::new(),
                    ..good.search.clone().unwrap()
                }),
                ..good.clone()
            })
            .expect("valid");
            assert_eq!(
                (empty.quantization(), empty.ef_search()),
                (quantization, 50),
                "{metric}"
            );
        }
        for bad in [
            IndexAssignment {
                name: "Movies".into(),
                ..good.clone()
            },
            IndexAssignment {
                dimension: 0,
                ..good.clone()
            },
            IndexAssignment {
                metric: "manhattan".into(),
                ..good.clone()
            },
            IndexAssignment {
                vector_type: "sparse".into(),
                dimension: 0,
                ..good.clone()
            },
            IndexAssignment {
                vector_type: "dense-ish".into(),
                ..good.clone()
            },
            IndexAssignment {
                host: String::new(),
                ..good.clone()
            },
            IndexAssignment {
                incarnation: "Not-An-Id".into(),
                ..good.clone()
            },
            IndexAssignment {
                search: Some(internal::SearchParams {
                    m: 1,
                    ..internal::SearchParams::default()
                }),
                ..good.clone()
            },
        ] {
            let err = Status::from(parse_assignment(&bad).expect_err("invalid"));
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }

    /// On a bucket an assignment repeated as a create (a retried AttachIndex) keeps the index
    /// it serves instead of starting it afresh, and another data plane opens what the bucket
    /// holds once the first let go of the index: creating never deletes there (issue 17).
    #[tokio::test]
    async fn on_a_bucket_a_repeated_create_keeps_the_index() {
        use larch_engine::object_store::{ObjectStore, memory::InMemory, path::Path};

        let logs = std::env::temp_dir().join(format!("larch-routed-bucket-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&logs);
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let engine_in = |dir: &str| {
            crate::IndexStorage::Bucket {
                root: logs.join(dir),
                store: Arc::clone(&store),
                prefix: Path::from("larch"),
            }
            .engine(larch_engine::FlushPolicy::default())
        };
        let assignment = IndexAssignment {
            project: "default".into(),
            name: "movies".into(),
            dimension: 2,
            metric: "cosine".into(),
            search: None,
            host: "movies.default.larch.test".into(),
            incarnation: "0a1b".into(),
            ..IndexAssignment::default()
        };
        let storage = "movies@default@0a1b";
        let first = RoutedDataPlane::new(engine_in("first"), KeyStore::new(), Metrics::new());
        first.attach(&assignment, true).expect("created");
        let index = first.inner.engine.index(storage).expect("served");
        let vector = larch_engine::VectorInput {
            id: "a".into(),
            values: vec![1.0, 0.0],
            ..Default::default()
        };
        index
            .upsert(larch_engine::UpsertRequest {
                namespace: String::new(),
                vectors: vec![vector],
            })
            .expect("upserted");
        assert!(index.flush().expect("flushed"));
        first.attach(&assignment, true).expect("created again");
        let served = first.inner.engine.index(storage).expect("served");
        assert!(Arc::ptr_eq(&served, &index), "the same index is kept");

        // Another data plane, told to recover the index, once the first has let go of it
        // (one writer per index: dropping it releases its lease).
        drop((served, index, first));
        let second = RoutedDataPlane::new(engine_in("second"), KeyStore::new(), Metrics::new());
        second.attach(&assignment, false).expect("recovered");
        let stats = second
            .inner
            .engine
            .index(storage)
            .expect("served")
            .describe_stats(None)
            .expect("stats");
        assert_eq!(
            stats.total_vector_count, 1,
            "opened from the bucket, not empty"
        );
        let _ = std::fs::remove_dir_all(&logs);
    }

    #[test]
    fn the_preferred_writer_is_the_named_pod_or_the_only_one() {
        let assignment = |pods: &[&str], writer: &str| IndexAssignment {
            pods: pods.iter().map(|pod| (*pod).to_owned()).collect(),
            preferred_writer: writer.into(),
            ..IndexAssignment::default()
        };
        let two = Writer::of(&assignment(
            &["larch-data-1", "larch-data-0"],
            "larch-data-1",
        ));
        assert!(two.is("larch-data-1"));
        assert!(!two.is("larch-data-0"));
        assert!(!two.is(""));
        // One pod listed: it is this one, whatever either side calls it.
        let one = Writer::of(&assignment(&["127.0.0.1:5081"], "127.0.0.1:5081"));
        assert!(one.is("my-laptop") && one.is(""));
        // A control plane that does not place indexes names no writer.
        let unplaced = Writer::of(&assignment(&[], ""));
        assert!(!unplaced.is("larch-data-0") && !unplaced.is(""));
    }

    /// A real `JoinError` (a cancelled task), without a panic in the test output.
    async fn join_error() -> tokio::task::JoinError {
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        task.await.expect_err("aborted")
    }

    #[tokio::test]
    async fn control_errors_say_their_class_and_field() {
        let full = larch_engine::Error::Storage {
            code: Code::ResourceExhausted,
            message: "disk full: cannot create index 'm'".into(),
        };
        let busy = larch_engine::Error::Overloaded {
            message: "memory budget reached".into(),
            retry_after: Duration::from_secs(3),
        };
        let bad_name = IndexKey::parse("default", "Movies", "").expect_err("upper case");
        let bad_metric = "manhattan".parse::<Metric>().expect_err("unknown metric");
        let cases = [
            (ControlError::NoIndex, Code::InvalidArgument, Some("index")),
            (ControlError::NoHost, Code::InvalidArgument, Some("host")),
            (
                ControlError::Key(bad_name),
                Code::InvalidArgument,
                Some("name"),
            ),
            (
                ControlError::Invalid(bad_metric),
                Code::InvalidArgument,
                Some("metric"),
            ),
            (ControlError::Engine(full), Code::ResourceExhausted, None),
            (ControlError::Engine(busy), Code::ResourceExhausted, None),
            (
                ControlError::Task {
                    what: "attach",
                    source: join_error().await,
                },
                Code::Internal,
                None,
            ),
        ];
        for (err, code, field) in cases {
            assert_eq!(err.code(), code, "{err:?}");
            assert_eq!(err.field(), field, "{err:?}");
            let status = Status::from(err);
            assert_eq!(status.code(), wire::grpc_code(code), "{status:?}");
            if code == Code::Internal {
                assert_eq!(status.message(), wire::INTERNAL_MESSAGE);
            } else if let Some(field) = field {
                assert!(status.message().contains(field), "{status:?}");
            }
        }
        // Backpressure keeps its retry hint on the way to the control plane.
        let busy = ControlError::Engine(larch_engine::Error::Overloaded {
            message: "memory budget reached".into(),
            retry_after: Duration::from_secs(3),
        });
        assert_eq!(busy.retry_after(), Some(Duration::from_secs(3)));
    }

    #[tokio::test]
    async fn sync_errors_say_their_class_and_what_failed() {
        let unreadable = serde_json::from_str::<Vec<StoredKey>>("{").expect_err("not a list");
        let cases = [
            (
                SyncError::Remote(Status::unauthenticated("invalid api key")),
                Code::Unauthenticated,
                "invalid api key",
            ),
            (
                SyncError::Remote(Status::unavailable("connection refused")),
                Code::Unavailable,
                "connection refused",
            ),
            (
                SyncError::UnreadableKeys(unreadable),
                Code::Internal,
                "unreadable key list: ",
            ),
            (
                SyncError::PageOrder {
                    next: "a".into(),
                    after: "b".into(),
                },
                Code::Internal,
                "page token \"a\" after \"b\"",
            ),
            (
                SyncError::NoKeys,
                Code::FailedPrecondition,
                "no keys at all",
            ),
            (
                SyncError::Reconcile(join_error().await),
                Code::Internal,
                "reconcile failed: ",
            ),
        ];
        for (err, code, said) in cases {
            assert_eq!(err.code(), code, "{err:?}");
            // The sync loop logs the Display: it must say what failed.
            assert!(err.to_string().contains(said), "{err}");
        }
    }

    /// The internal service on a real server, called by a real client with the admin key: a
    /// malformed call is INVALID_ARGUMENT naming the field, a good one is served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_internal_service_refuses_bad_calls_naming_the_field() {
        use larch_proto::internal::data_plane_control_client::DataPlaneControlClient;

        let admin = larch_auth::ApiKey::generate();
        let keys = KeyStore::new();
        keys.insert(StoredKey::new(&admin, larch_auth::Grant::admin()));
        let data_plane =
            RoutedDataPlane::new(Engine::new(), keys, Metrics::new()).with_pod_name("larch-data-0");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("bound");
        // A control plane that is not there: the calls below tell the data plane directly.
        let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind");
        let control_plane = ControlPlane {
            url: format!("http://{nowhere}"),
            admin_key: SendKey::new(admin.as_str()).expect("ascii key"),
            admin_key_file: None,
            key_max_age: Duration::from_secs(3600),
            refresh: Duration::from_secs(3600),
            ca_pem: None,
            timeouts: CallTimeouts::new(Duration::from_secs(5)),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_routed(
            listener,
            data_plane.clone(),
            control_plane,
            Readiness::new(),
            async move {
                let _ = stopped.await;
            },
        ));
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let mut client = DataPlaneControlClient::with_interceptor(
            channel,
            SendKey::new(admin.as_str()).expect("ascii key"),
        );
        let good = IndexAssignment {
            project: "default".into(),
            name: "movies".into(),
            dimension: 4,
            metric: "cosine".into(),
            search: None,
            host: "movies.default.larch.test".into(),
            incarnation: String::new(),
            pods: vec!["larch-data-0".into(), "larch-data-1".into()],
            preferred_writer: "larch-data-0".into(),
            vector_type: "dense".into(),
        };
        let attach = |index: Option<IndexAssignment>| AttachIndexRequest {
            index,
            create: true,
        };
        let refusals = [
            (attach(None), "index is required"),
            (
                attach(Some(IndexAssignment {
                    name: "Movies".into(),
                    ..good.clone()
                })),
                "name: ",
            ),
            (
                attach(Some(IndexAssignment {
                    dimension: 0,
                    ..good.clone()
                })),
                "dimension: ",
            ),
            (
                attach(Some(IndexAssignment {
                    host: String::new(),
                    ..good.clone()
                })),
                "has no host",
            ),
        ];
        for (request, said) in refusals {
            let err = client
                .attach_index(request)
                .await
                .expect_err("a malformed attach");
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
            assert!(err.message().contains(said), "{said}: {err:?}");
        }
        let err = client
            .configure_index(internal::ConfigureIndexRequest {
                project: "default".into(),
                name: "movies".into(),
                search: Some(internal::SearchParams {
                    m: 1,
                    ..internal::SearchParams::default()
                }),
                incarnation: String::new(),
            })
            .await
            .expect_err("m out of range");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with("m: "), "{err:?}");
        let err = client
            .detach_index(DetachIndexRequest {
                project: "default".into(),
                name: "movies".into(),
                incarnation: "Not-An-Id".into(),
            })
            .await
            .expect_err("not an incarnation");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with("incarnation: "), "{err:?}");
        assert!(data_plane.served().is_empty());

        client
            .attach_index(attach(Some(good)))
            .await
            .expect("a good attach");
        let served: Vec<(String, IndexKey)> = data_plane.served();
        assert_eq!(served.len(), 1);
        assert_eq!(served[0].0, "movies.default.larch.test");
        // The assignment names this pod as the index's preferred writer.
        assert!(data_plane.is_preferred_writer(&served[0].1));
        // Configuring an index this data plane does not have keeps the engine's class.
        let err = client
            .configure_index(internal::ConfigureIndexRequest {
                project: "default".into(),
                name: "books".into(),
                search: None,
                incarnation: String::new(),
            })
            .await
            .expect_err("no such index");
        assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

        drop(client);
        let _ = stop.send(());
        server.await.expect("joined").expect("served");
    }
}
