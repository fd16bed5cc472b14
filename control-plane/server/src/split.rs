//! Split mode, control-plane side: `larch.internal.v1.ControlPlaneSync` (what data planes pull:
//! every index to serve and every stored key) and [`DataPlanes`], the catalog's
//! [`DataPlaneHost`] for one or more data-plane pods in other processes (it calls each pod's
//! `DataPlaneControl`; see [`DataPlanes`] for what happens when a pod does not answer).
//!
//! Pods are named (`--data-plane-url [POD=]URL`, [`DataPlaneUrl`]); every index's assignment
//! carries the pods serving it and its preferred writer, chosen by rendezvous hashing over the
//! pod names ([`crate::placement`]).
//!
//! Both directions authenticate with the admin (bootstrap) key, which both processes are given:
//! the internal services need [`larch_auth::Action::Admin`].
//!
//! A refused pull is a [`SyncError`], answered through the one gRPC map
//! ([`larch_model::wire::grpc_status`]); a data plane's refusal keeps its class on the way to
//! the catalog (see [`DataPlanes`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError};

use larch_auth::Admin;
use larch_auth::grpc::SendKey;
use larch_catalog::{
    AttachError, AttachMode, Catalog, DataPlaneHost, HostError, HostTemplate, IndexKey, Served,
};
use larch_engine::{BackupInfo, IndexConfig, SearchParams};
use larch_model::{Cause, Classified, Code as LarchCode, InvalidField};
use larch_observe::internal::CallTimeouts;
use larch_proto::internal::data_plane_control_client::DataPlaneControlClient;
use larch_proto::internal::{
    self as internal, AttachIndexRequest, DetachIndexRequest, IndexAssignment, IndexTombstone,
    ListAssignmentsRequest, ListAssignmentsResponse, ListKeysRequest, ListKeysResponse,
    control_plane_sync_server::ControlPlaneSync,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use crate::indexes::Indexes;
use crate::placement::{Placement, Pods, PodsError};

/// The internal API data planes pull from.
#[derive(Clone)]
pub struct SyncApi {
    indexes: Indexes,
    admin: Arc<Admin>,
    /// The pods pulling: where each index is placed, and which pods have removed the data of
    /// each deleted index.
    planes: Arc<DataPlanes>,
}

impl SyncApi {
    /// Serves the indexes of `indexes`, placed on the pods of `planes`, and the keys `admin`
    /// keeps.
    pub fn new(indexes: Indexes, admin: Arc<Admin>, planes: Arc<DataPlanes>) -> SyncApi {
        SyncApi {
            indexes,
            admin,
            planes,
        }
    }
}

#[tonic::async_trait]
impl ControlPlaneSync for SyncApi {
    async fn list_assignments(
        &self,
        request: Request<ListAssignmentsRequest>,
    ) -> Result<Response<ListAssignmentsResponse>, Status> {
        let ListAssignmentsRequest { removed, pod_name } = request.into_inner();
        let removed = removed
            .iter()
            .map(tombstone_key)
            .collect::<Result<Vec<_>, SyncError>>()?;
        // A tombstone goes once every pod has removed the data, not the first one.
        let removed = self.planes.removed_by(&pod_name, removed);
        let (served, tombstones) = self
            .indexes
            .assignments(removed)
            .await
            .map_err(|failure| larch_model::wire::grpc_status(&failure))?;
        self.planes.keep_removals_of(&tombstones);
        Ok(Response::new(ListAssignmentsResponse {
            indexes: served
                .iter()
                .map(|served| served_assignment(served, &self.planes.placement(&served.key)))
                .collect(),
            tombstones: tombstones.iter().map(tombstone).collect(),
        }))
    }

    async fn list_keys(
        &self,
        request: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        let ListKeysRequest {
            page_token,
            page_size,
        } = request.into_inner();
        // With state shared by several replicas, catch up first: a data plane pulling through a
        // Service from whichever replica answers then gets the newest keys from every one.
        // (Each page catches up, so a key changed between two pages is picked up on the next
        // pull at the latest.)
        refresh_access(&self.admin).await;
        // Copying and encoding up to ~1 MiB of keys: on the blocking pool, off the workers.
        let admin = Arc::clone(&self.admin);
        let page = tokio::task::spawn_blocking(move || {
            key_page(admin.store().all(), &page_token, page_size)
        })
        .await
        .map_err(SyncError::Task)??;
        Ok(Response::new(page))
    }
}

/// Most keys in one ListKeys page.
const MAX_PAGE_KEYS: usize = 1_000;

/// A ListKeys page ends once its JSON holds this many bytes (a client's decode limit is 4 MiB by
/// default; one key, at most [`larch_auth::admin::MAX_ALLOWED_INDEXES`] index names, stays far
/// below).
const PAGE_BYTES: usize = 1024 * 1024;

/// The page of `keys` (sorted by id) after key id `after` (all of them for `page_size` 0, the
/// callers from before paging), of at most `page_size` keys and about [`PAGE_BYTES`].
fn key_page(
    keys: Vec<larch_auth::StoredKey>,
    after: &str,
    page_size: u32,
) -> Result<ListKeysResponse, SyncError> {
    let encode =
        |keys: &[larch_auth::StoredKey]| serde_json::to_string(keys).map_err(SyncError::Encode);
    if page_size == 0 {
        return Ok(ListKeysResponse {
            keys_json: encode(&keys)?,
            next_page_token: String::new(),
        });
    }
    let limit = usize::try_from(page_size)
        .unwrap_or(usize::MAX)
        .min(MAX_PAGE_KEYS);
    let mut rest = keys
        .into_iter()
        .filter(|key| after.is_empty() || key.key_id() > after)
        .peekable();
    let (mut page, mut bytes) = (Vec::new(), 0);
    while page.len() < limit && (page.is_empty() || bytes < PAGE_BYTES) {
        let Some(key) = rest.next() else { break };
        bytes += serde_json::to_string(&key).map_or(0, |json| json.len() + 1);
        page.push(key);
    }
    let next_page_token = match (rest.peek(), page.last()) {
        (Some(_), Some(last)) => last.key_id().to_owned(),
        _ => String::new(),
    };
    Ok(ListKeysResponse {
        keys_json: encode(&page)?,
        next_page_token,
    })
}

/// Catches `admin` up with access state shared by several replicas (a no-op otherwise), on
/// the blocking pool; on failure this replica keeps the state it read last, and says so.
async fn refresh_access(admin: &Arc<Admin>) {
    let admin = Arc::clone(admin);
    match tokio::task::spawn_blocking(move || admin.refresh()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "keeping the access state read last: the shared access state cannot be read");
        }
        Err(err) => tracing::warn!(error = %err, "shared access state refresh failed"),
    }
}

/// Keeps `admin` caught up with access state shared by several replicas, every
/// [`larch_auth::REFRESH_EVERY`], so that authentication here sees keys changed on the others
/// within that bound. Runs until dropped.
pub async fn keep_access_refreshed(admin: Arc<Admin>) {
    let mut ticks = tokio::time::interval(larch_auth::REFRESH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        refresh_access(&admin).await;
    }
}

/// What a data plane needs to serve `served`, placed on `placement`.
fn served_assignment(Served { key, record }: &Served, placement: &Placement) -> IndexAssignment {
    assignment(
        key,
        record.config,
        record.search,
        record.host.clone(),
        placement,
    )
}

/// What a data plane needs to serve `key` at `host`, placed on `placement`: the one place an
/// [`IndexAssignment`] is built, for pulls and for attach calls alike.
fn assignment(
    key: &IndexKey,
    config: IndexConfig,
    search: SearchParams,
    host: String,
    placement: &Placement,
) -> IndexAssignment {
    IndexAssignment {
        project: key.project().to_owned(),
        name: key.name().to_string(),
        dimension: config.dimension.get(),
        metric: config.metric.to_string(),
        search: Some(search_params(search)),
        host,
        incarnation: key.incarnation_str().to_owned(),
        pods: placement.pods().to_vec(),
        preferred_writer: placement.preferred_writer().to_owned(),
        vector_type: config.vector_type().as_str().to_owned(),
    }
}

/// The tombstone of the deleted index `key` (with its incarnation).
pub fn tombstone(key: &IndexKey) -> IndexTombstone {
    IndexTombstone {
        project: key.project().to_owned(),
        name: key.name().to_string(),
        incarnation: key.incarnation_str().to_owned(),
    }
}

/// The key (with its incarnation) a tombstone names.
pub fn tombstone_key(tombstone: &IndexTombstone) -> Result<IndexKey, SyncError> {
    let IndexTombstone {
        project,
        name,
        incarnation,
    } = tombstone;
    IndexKey::parse(project, name, incarnation).map_err(SyncError::Tombstone)
}

/// Why this control plane refused a data plane's pull: a malformed tombstone in the request
/// is INVALID_ARGUMENT naming the field; failing to list or encode the keys is INTERNAL.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A tombstone reported removed that names no index.
    #[error("tombstone: {0}")]
    Tombstone(#[source] InvalidField),
    /// The keys cannot be written as JSON.
    #[error("cannot encode keys: {0}")]
    Encode(#[source] serde_json::Error),
    /// The blocking task listing the keys panicked or was cancelled.
    #[error("key listing failed")]
    Task(#[source] tokio::task::JoinError),
}

impl Classified for SyncError {
    fn code(&self) -> LarchCode {
        match self {
            SyncError::Tombstone(_) => LarchCode::InvalidArgument,
            SyncError::Encode(_) | SyncError::Task(_) => LarchCode::Internal,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            SyncError::Tombstone(err) => Some(err.field),
            SyncError::Encode(_) | SyncError::Task(_) => None,
        }
    }
}

/// The status the data plane sees: the one gRPC map.
impl From<SyncError> for Status {
    fn from(err: SyncError) -> Status {
        larch_model::wire::grpc_status(&err)
    }
}

fn search_params(search: SearchParams) -> internal::SearchParams {
    internal::SearchParams {
        m: search.m(),
        ef_construction: search.ef_construction(),
        ef_search: search.ef_search(),
        quantization: search.quantization().as_str().to_owned(),
    }
}

type Client = DataPlaneControlClient<InterceptedService<Channel, SendKey>>;

/// One data-plane pod as the control plane names and reaches it: `--data-plane-url
/// [POD=]URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPlaneUrl {
    /// The pod's name, as the pod itself says it (`larch data-plane --pod-name`): the name
    /// rendezvous hashing ranks, and the one the pod's pulls carry.
    pub pod: String,
    /// Where to call it, e.g. `http://larch-data-0.larch-data:5081`.
    pub url: String,
}

impl DataPlaneUrl {
    /// Reads `[POD=]URL`. Without `POD=`, the pod is named after the URL's host: its first
    /// DNS label (`larch-data-0` for `http://larch-data-0.larch-data:5081`, a StatefulSet
    /// pod's name and hostname), or the whole `host:port` for an IP address.
    pub fn parse(spec: &str) -> Result<DataPlaneUrl, String> {
        let spec = spec.trim();
        let (pod, url) = match spec.split_once('=') {
            // A name is what comes before the first '=' if it cannot be part of a URL's
            // scheme and authority (URLs here have no query).
            Some((pod, url)) if !pod.contains([':', '/']) => (Some(pod.trim()), url.trim()),
            _ => (None, spec),
        };
        let uri: http::Uri = url.parse().map_err(|err| {
            format!("{url:?} is not a URL such as http://larch-data-0.larch-data:5081: {err}")
        })?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(format!(
                "{url:?} is not a URL such as http://larch-data-0.larch-data:5081"
            ));
        };
        if scheme != "http" && scheme != "https" {
            return Err(format!("{url:?}: the scheme must be http or https"));
        }
        let pod = match pod {
            Some("") => return Err(format!("{spec:?}: the pod name before '=' is empty")),
            Some(pod) => pod.to_owned(),
            None => {
                let host = authority.host();
                let ip = host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok();
                if ip {
                    authority.as_str().to_owned()
                } else {
                    host.split('.').next().unwrap_or(host).to_owned()
                }
            }
        };
        Ok(DataPlaneUrl {
            pod,
            url: url.to_owned(),
        })
    }
}

/// Reads a list of `[POD=]URL`s (`--data-plane-url` repeated, or `LARCH_DATA_PLANE_URLS`
/// split at commas; blank entries are skipped): at least one, each pod named once.
pub fn parse_data_plane_urls<S: AsRef<str>>(specs: &[S]) -> Result<Vec<DataPlaneUrl>, String> {
    let urls = specs
        .iter()
        .map(AsRef::as_ref)
        .filter(|spec| !spec.trim().is_empty())
        .map(DataPlaneUrl::parse)
        .collect::<Result<Vec<_>, _>>()?;
    Pods::new(urls.iter().map(|url| url.pod.clone())).map_err(|err| match err {
        PodsError::Duplicate(pod) => format!(
            "two data-plane URLs name pod {pod:?}: name each pod once (POD=URL when the hosts \
             do not tell them apart)"
        ),
        err => err.to_string(),
    })?;
    Ok(urls)
}

/// One data plane (pod) in another process, reached at one URL.
struct RemoteDataPlane {
    client: Client,
    pod: String,
    url: String,
}

impl RemoteDataPlane {
    /// Connects lazily, so the data plane may start later. Must be called inside a Tokio
    /// runtime.
    fn new(
        target: &DataPlaneUrl,
        admin_key: SendKey,
        ca_pem: Option<Vec<u8>>,
        timeouts: CallTimeouts,
    ) -> Result<Self, String> {
        let url = &target.url;
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|err| format!("{url:?} is not a URL such as http://data-plane:5081: {err}"))?;
        let mut endpoint = timeouts.apply(endpoint);
        if let Some(ca) = ca_pem {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca));
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|err| format!("TLS to {url}: {err}"))?;
        }
        Ok(RemoteDataPlane {
            client: DataPlaneControlClient::with_interceptor(endpoint.connect_lazy(), admin_key),
            pod: target.pod.clone(),
            url: url.clone(),
        })
    }

    fn failed(&self, status: &Status) -> String {
        format!(
            "the data plane {} at {} answered {:?}: {}",
            self.pod,
            self.url,
            status.code(),
            status.message()
        )
    }
}

/// The catalog's view of the data-plane pods in other processes: every index change is sent
/// to every pod the index is placed on (today: all of them), at once.
///
/// # When a pod does not answer
///
/// A change is acknowledged once it is recorded in the catalog and applied by every pod that
/// answered; it is never reported as applied by a pod that did not answer. Such a pod (down,
/// partitioned, too slow: UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED) catches up at its next
/// pull (`ControlPlaneSync`, every `--key-refresh-secs`; a restarted pod pulls before it
/// reports SERVING): it attaches what it misses, takes the recorded search parameters, and
/// removes the data of deleted indexes. So:
///
/// - **create** succeeds if at least one pod attached the index; it fails (UNAVAILABLE) if no
///   pod answered. If a pod *refuses* (e.g. its disk is full), the create fails with that
///   pod's class and the pods that did attach the index drop it again.
/// - **configure** succeeds if at least one pod applied it and none refused; a refusal fails
///   it, the catalog keeps the old parameters, and pods that applied the new ones return to
///   the recorded ones at their next pull.
/// - **delete** always succeeds (the catalog records a tombstone first); the tombstone is
///   forgotten only once every pod has removed the index's data, reported either here or in
///   its pulls.
/// - **recovery** at start-up tolerates pods that do not answer or refuse (each pulls what it
///   should serve); it fails only if every pod refuses.
///
/// The catalog calls [`DataPlaneHost`] methods synchronously from blocking threads (never
/// from async workers); each call runs its RPCs to every pod concurrently on the runtime and
/// blocks until all have answered or timed out.
pub struct DataPlanes {
    planes: Vec<RemoteDataPlane>,
    pods: Pods,
    template: HostTemplate,
    runtime: tokio::runtime::Handle,
    /// Deleted indexes (tombstones) → the pods that have removed their data, reported since
    /// this process started. In memory: after a restart the pods report again (every pull
    /// reports every tombstone it is sent), so nothing is lost, only asked again.
    removals: std::sync::Mutex<HashMap<IndexKey, BTreeSet<String>>>,
}

impl DataPlanes {
    /// The pods at `urls` (at least one, from [`parse_data_plane_urls`]), called with
    /// `admin_key`; indexes get hosts from `template`. For https URLs, `ca_pem` is the CA
    /// certificate(s) to trust. Every call is bounded by `timeouts`, so a pod that stops
    /// answering counts as not answering instead of hanging the change. Must be called inside
    /// a Tokio runtime.
    pub fn new(
        urls: &[DataPlaneUrl],
        admin_key: SendKey,
        template: HostTemplate,
        ca_pem: Option<Vec<u8>>,
        timeouts: CallTimeouts,
    ) -> Result<Self, String> {
        let pods =
            Pods::new(urls.iter().map(|url| url.pod.clone())).map_err(|err| err.to_string())?;
        let planes = urls
            .iter()
            .map(|url| RemoteDataPlane::new(url, admin_key.clone(), ca_pem.clone(), timeouts))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DataPlanes {
            planes,
            pods,
            template,
            runtime: tokio::runtime::Handle::current(),
            removals: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The pods, by name.
    pub fn pods(&self) -> &Pods {
        &self.pods
    }

    /// Where `key` is served and who should write it.
    pub fn placement(&self, key: &IndexKey) -> Placement {
        Placement::all(&self.pods, &key.storage_name())
    }

    /// The pods of `placement`, in its order.
    fn placed(&self, placement: &Placement) -> Vec<&RemoteDataPlane> {
        placement
            .pods()
            .iter()
            .filter_map(|pod| self.planes.iter().find(|plane| &plane.pod == pod))
            .collect()
    }

    /// Runs `rpc` against each of `planes` at once; the outcome of each, in order.
    fn each<'a, T, F>(
        &self,
        what: &str,
        planes: Vec<&'a RemoteDataPlane>,
        rpc: impl Fn(Client) -> F,
    ) -> Vec<(&'a RemoteDataPlane, Result<T, Status>)>
    where
        F: std::future::Future<Output = Result<T, Status>> + Send + 'static,
        T: Send + 'static,
    {
        let calls: Vec<_> = planes
            .into_iter()
            .map(|plane| (plane, self.runtime.spawn(rpc(plane.client.clone()))))
            .collect();
        self.runtime.block_on(async {
            let mut outcomes = Vec::with_capacity(calls.len());
            for (plane, call) in calls {
                let outcome = call
                    .await
                    .unwrap_or_else(|err| Err(Status::internal(format!("call failed: {err}"))));
                if let Err(status) = &outcome {
                    tracing::warn!(pod = %plane.pod, url = %plane.url, code = ?status.code(), error = status.message(), "data plane refused {what}");
                }
                outcomes.push((plane, outcome));
            }
            outcomes
        })
    }

    /// Records that `pod` has removed the data of the deleted indexes `removed`; returns those
    /// now removed by every pod (the tombstones the catalog may forget). With one pod, that
    /// pod's report is enough whatever name it gives (data planes from before pod names send
    /// none); with several, a pod this control plane does not know counts for nothing.
    pub fn removed_by(&self, pod: &str, removed: Vec<IndexKey>) -> Vec<IndexKey> {
        if self.pods.len() == 1 || removed.is_empty() {
            return removed;
        }
        if !self.pods.contains(pod) {
            tracing::warn!(
                pod,
                known = ?self.pods.names(),
                "a data plane whose pod name is not among --data-plane-url's reported removed indexes; not counted (give each data plane the --pod-name its URL names)"
            );
            return Vec::new();
        }
        let mut removals = self.removals.lock().unwrap_or_else(PoisonError::into_inner);
        let mut done = Vec::new();
        for key in removed {
            let by = removals.entry(key.clone()).or_default();
            by.insert(pod.to_owned());
            // Every pod the index is placed on (today: all of them).
            if self
                .placement(&key)
                .pods()
                .iter()
                .all(|pod| by.contains(pod))
            {
                removals.remove(&key);
                done.push(key);
            }
        }
        done
    }

    /// Forgets removals of tombstones the catalog no longer holds (another replica forgot
    /// them), so the ledger stays as small as the catalog's tombstones.
    fn keep_removals_of(&self, tombstones: &[IndexKey]) {
        let mut removals = self.removals.lock().unwrap_or_else(PoisonError::into_inner);
        removals.retain(|key, _| tombstones.contains(key));
    }
}

/// The outcome of one change over several pods: the pods that applied it, the first refusal
/// (with its class), and what the pods that did not answer said.
fn outcome_of<'a>(
    outcomes: &[(&'a RemoteDataPlane, Result<(), Status>)],
) -> (Vec<&'a str>, Option<Cause>, Vec<String>) {
    let mut applied = Vec::new();
    let mut refused = None;
    let mut unanswered = Vec::new();
    for (plane, outcome) in outcomes {
        match outcome {
            Ok(()) => applied.push(plane.pod.as_str()),
            Err(status) if unreachable(status) => unanswered.push(plane.failed(status)),
            Err(status) => {
                refused.get_or_insert_with(|| refusal(status));
            }
        }
    }
    (applied, refused, unanswered)
}

/// The data plane's refusal `status` with its class, so e.g. its full disk is
/// RESOURCE_EXHAUSTED to the control plane's client too. A refusal of this control plane's own
/// key is not the client's: it is internal (the log of [`DataPlanes::each`] has it).
fn refusal(status: &Status) -> Cause {
    let code = match larch_model::wire::code_of_status(status.code()) {
        LarchCode::Unauthenticated | LarchCode::PermissionDenied => LarchCode::Internal,
        code => code,
    };
    Cause::from_parts(code, status.message())
}

/// Whether `status` says the data plane did not answer (down, unreachable, or too slow: the
/// call timed out) rather than refused: worth retrying later.
fn unreachable(status: &Status) -> bool {
    // A timed-out call ends as DEADLINE_EXCEEDED or, when the client's timer fires first,
    // CANCELLED ("Timeout expired").
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
    )
}

impl DataPlaneHost for DataPlanes {
    fn attach(
        &self,
        key: &IndexKey,
        config: IndexConfig,
        search: SearchParams,
        _port: u16,
        mode: AttachMode,
    ) -> Result<u16, AttachError> {
        let placement = self.placement(key);
        let index = assignment(key, config, search, self.template.render(key), &placement);
        let request = AttachIndexRequest {
            index: Some(index),
            create: mode == AttachMode::Create,
        };
        let outcomes = self.each("attach", self.placed(&placement), |mut c| {
            let request = request.clone();
            async move { c.attach_index(request).await.map(drop) }
        });
        if mode == AttachMode::Recover {
            return recovered(key, &outcomes);
        }
        let (applied, refusal, unanswered) = outcome_of(&outcomes);
        if let Some(refusal) = refusal {
            // Not created: the pods that attached it drop it again (a pod that misses this
            // stops serving it at its next pull, since the catalog does not list it).
            let attached: Vec<&RemoteDataPlane> = outcomes
                .iter()
                .filter(|(_, outcome)| outcome.is_ok())
                .map(|(plane, _)| *plane)
                .collect();
            if !attached.is_empty() {
                let detach = detach_request(key);
                self.each("detach of a refused create", attached, |mut c| {
                    let request = detach.clone();
                    async move { c.detach_index(request).await.map(drop) }
                });
            }
            return Err(AttachError::Refused(refusal));
        }
        if applied.is_empty() {
            return Err(AttachError::Unavailable(unanswered.join("; ")));
        }
        if !unanswered.is_empty() {
            tracing::warn!(index = %key, attached = ?applied, missing = ?unanswered, "index created, but not every data plane answered; the others attach it at their next pull");
        }
        Ok(0)
    }

    fn configure(&self, key: &IndexKey, search: SearchParams) -> Result<(), HostError> {
        let request = internal::ConfigureIndexRequest {
            project: key.project().to_owned(),
            name: key.name().to_string(),
            search: Some(search_params(search)),
            incarnation: key.incarnation_str().to_owned(),
        };
        let placement = self.placement(key);
        let outcomes = self.each("configure", self.placed(&placement), |mut c| {
            let request = request.clone();
            async move { c.configure_index(request).await.map(drop) }
        });
        match outcome_of(&outcomes) {
            (_, Some(refusal), _) => Err(HostError::Refused(refusal)),
            (applied, None, unanswered) if applied.is_empty() => {
                Err(HostError::Unavailable(unanswered.join("; ")))
            }
            (applied, None, unanswered) => {
                if !unanswered.is_empty() {
                    tracing::warn!(index = %key, configured = ?applied, missing = ?unanswered, "search parameters changed, but not every data plane answered; the others take them at their next pull");
                }
                Ok(())
            }
        }
    }

    fn detach(&self, key: &IndexKey) -> Result<(), HostError> {
        let request = detach_request(key);
        let placement = self.placement(key);
        let outcomes = self.each("detach", self.placed(&placement), |mut c| {
            let request = request.clone();
            async move { c.detach_index(request).await.map(drop) }
        });
        let (applied, refusal, unanswered) = outcome_of(&outcomes);
        if refusal.is_none() && unanswered.is_empty() {
            return Ok(());
        }
        // Counted towards the tombstone, which the others report from their pulls.
        for pod in applied {
            self.removed_by(pod, vec![key.clone()]);
        }
        match refusal {
            Some(refusal) => Err(HostError::Refused(refusal)),
            None => Err(HostError::Unavailable(unanswered.join("; "))),
        }
    }

    fn backup(&self, key: &IndexKey, backup_id: &str) -> Result<BackupInfo, HostError> {
        let request = internal::CreateBackupRequest {
            project: key.project().to_owned(),
            name: key.name().to_string(),
            incarnation: key.incarnation_str().to_owned(),
            backup_id: backup_id.to_owned(),
        };
        self.first_pod("backup", key, backup_id, |mut c| {
            let request = request.clone();
            async move { Ok(c.create_backup(request).await?.into_inner().backup) }
        })
    }

    fn restore(&self, backup_id: &str, key: &IndexKey) -> Result<BackupInfo, HostError> {
        let request = internal::RestoreBackupRequest {
            backup_id: backup_id.to_owned(),
            project: key.project().to_owned(),
            name: key.name().to_string(),
            incarnation: key.incarnation_str().to_owned(),
        };
        self.first_pod("restore", key, backup_id, |mut c| {
            let request = request.clone();
            async move { Ok(c.restore_backup(request).await?.into_inner().backup) }
        })
    }

    fn delete_backup(&self, backup_id: &str) -> Result<(), HostError> {
        let request = internal::DeleteBackupRequest {
            backup_id: backup_id.to_owned(),
        };
        let outcomes = self.each("backup deletion", self.planes.iter().collect(), |mut c| {
            let request = request.clone();
            async move { c.delete_backup(request).await.map(drop) }
        });
        match outcome_of(&outcomes) {
            (_, Some(refusal), _) => Err(HostError::Refused(refusal)),
            (applied, None, unanswered) if applied.is_empty() => {
                Err(HostError::Unavailable(unanswered.join("; ")))
            }
            (_, None, unanswered) => {
                if !unanswered.is_empty() {
                    tracing::warn!(backup = %backup_id, missing = ?unanswered, "backup deleted, but not every data plane answered; a pod on its own disk may keep its copy");
                }
                Ok(())
            }
        }
    }
}

/// Backups in split mode: a backup or a restore is taken by one pod, the first of the
/// index's placement that carries it out (the preferred writer first: in a bucket only the
/// writer may cut the index, and a restore there is seen by every pod); a deletion goes to
/// every pod. With pods on local disks, a backup lives on the pod that took it.
impl DataPlanes {
    /// Runs `rpc` on the pods of `key`'s placement one after another until one answers with
    /// a summary; the first refusal (or the pods' silence) otherwise.
    fn first_pod<F>(
        &self,
        what: &str,
        key: &IndexKey,
        backup_id: &str,
        rpc: impl Fn(Client) -> F,
    ) -> Result<BackupInfo, HostError>
    where
        F: std::future::Future<Output = Result<Option<internal::BackupSummary>, Status>>
            + Send
            + 'static,
    {
        let placement = self.placement(key);
        let mut refused = None;
        let mut unanswered = Vec::new();
        for plane in self.placed(&placement) {
            let Some((_, outcome)) = self.each(what, vec![plane], &rpc).pop() else {
                continue;
            };
            match outcome {
                Ok(summary) => return backup_info(key, backup_id, summary),
                Err(status) if unreachable(&status) => unanswered.push(plane.failed(&status)),
                Err(status) => {
                    refused.get_or_insert_with(|| refusal(&status));
                }
            }
        }
        match refused {
            Some(cause) => Err(HostError::Refused(cause)),
            None => Err(HostError::Unavailable(unanswered.join("; "))),
        }
    }
}

/// What a pod's `summary` of backup `backup_id` of `key` says, as the engine describes it.
fn backup_info(
    key: &IndexKey,
    backup_id: &str,
    summary: Option<internal::BackupSummary>,
) -> Result<BackupInfo, HostError> {
    let failed = |what: String| HostError::Failed(format!("backup '{backup_id}': {what}"));
    let internal::BackupSummary {
        dimension,
        metric,
        record_count,
        namespace_count,
        size_bytes,
    } = summary.ok_or_else(|| failed("the data plane sent no summary".to_owned()))?;
    let config = IndexConfig {
        dimension: larch_engine::Dimension::new(dimension)
            .map_err(|err| failed(err.to_string()))?,
        metric: metric
            .parse()
            .map_err(|err: larch_engine::Error| failed(err.to_string()))?,
    };
    Ok(BackupInfo {
        backup_id: backup_id.to_owned(),
        source_index: key.storage_name(),
        config,
        record_count,
        namespace_count,
        size_bytes,
    })
}

fn detach_request(key: &IndexKey) -> DetachIndexRequest {
    DetachIndexRequest {
        project: key.project().to_owned(),
        name: key.name().to_string(),
        incarnation: key.incarnation_str().to_owned(),
    }
}

/// A recovery at start-up: each pod that does not answer yet, or refuses this control plane's
/// admin key (rotated here first), recovers the index itself once its pulls work; a pod that
/// refuses the index is logged and retries at its pulls. Fails only if every pod refused it.
fn recovered(
    key: &IndexKey,
    outcomes: &[(&RemoteDataPlane, Result<(), Status>)],
) -> Result<u16, AttachError> {
    let mut refusals = Vec::new();
    for (plane, outcome) in outcomes {
        match outcome {
            Ok(()) => {}
            Err(status) if unreachable(status) => {
                tracing::info!(index = %key, pod = %plane.pod, url = %plane.url, "data plane not reachable yet; it recovers the index itself when it starts");
            }
            Err(status) if status.code() == Code::Unauthenticated => {
                tracing::warn!(index = %key, pod = %plane.pod, url = %plane.url, "the data plane refused this control plane's admin key; it recovers the index itself once both planes have the same key");
            }
            Err(status) => {
                tracing::error!(index = %key, pod = %plane.pod, url = %plane.url, error = status.message(), "the data plane cannot recover the index; it retries at its next pull");
                refusals.push(refusal(status));
            }
        }
    }
    if !outcomes.is_empty() && refusals.len() == outcomes.len() {
        return Err(AttachError::Refused(refusals.swap_remove(0)));
    }
    Ok(0)
}

/// Opens the durable catalog of a split-mode control plane, whose indexes live on the
/// data-plane pods `planes`.
pub fn open_catalog(
    dir: &std::path::Path,
    planes: Arc<DataPlanes>,
) -> larch_catalog::Result<Catalog> {
    let template = planes.template.clone();
    Catalog::open_routed(dir, planes, template)
}

/// Opens the catalog that several split-mode control-plane replicas share in `doc` (see
/// [`Catalog::open_shared`]), whose indexes live on the data-plane pods `planes`.
pub fn open_shared_catalog(
    doc: larch_catalog::SharedDocument,
    planes: Arc<DataPlanes>,
) -> larch_catalog::Result<Catalog> {
    let template = planes.template.clone();
    Catalog::open_shared(doc, planes, template)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_data_planes_refusal_keeps_its_class_but_not_our_key_trouble() {
        let full = refusal(&Status::resource_exhausted(
            "disk full: cannot create index 'm'",
        ));
        assert_eq!(
            larch_model::Classified::code(&full),
            LarchCode::ResourceExhausted
        );
        assert_eq!(full.to_string(), "disk full: cannot create index 'm'");
        // Through the catalog and the control plane's own failure, to the client.
        let failure =
            crate::indexes::Failure::Catalog(larch_catalog::Error::from(HostError::Refused(full)));
        let status = larch_model::wire::grpc_status(&failure);
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("disk full"), "{status:?}");
        // The data plane refusing this control plane's admin key is not the client's fault.
        let key = refusal(&Status::unauthenticated("invalid api key"));
        assert_eq!(larch_model::Classified::code(&key), LarchCode::Internal);
    }
    use larch_auth::{Grant, KeyStore, NewKey, Principal};
    use larch_catalog::SharedDocument;

    use super::*;

    #[tokio::test]
    async fn sync_refusals_say_their_class_and_field() {
        let bad = tombstone_key(&IndexTombstone {
            project: "default".into(),
            name: "Movies".into(),
            incarnation: String::new(),
        })
        .expect_err("upper case");
        assert_eq!(bad.code(), LarchCode::InvalidArgument);
        assert_eq!(bad.field(), Some("name"));
        let status = Status::from(bad);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with("tombstone: name: "),
            "{status:?}"
        );

        let unencodable = serde_json::to_string(&std::collections::HashMap::from([((1, 2), 3)]))
            .expect_err("a map with non-string keys");
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        let cancelled = task.await.expect_err("aborted");
        for err in [SyncError::Encode(unencodable), SyncError::Task(cancelled)] {
            assert_eq!(err.code(), LarchCode::Internal, "{err:?}");
            let status = Status::from(err);
            assert_eq!(status.code(), Code::Internal);
            assert_eq!(status.message(), larch_model::wire::INTERNAL_MESSAGE);
        }
    }

    /// Data planes at `urls` (never called in these tests). Needs a Tokio runtime.
    fn planes(urls: &[&str]) -> Arc<DataPlanes> {
        let urls = parse_data_plane_urls(urls).unwrap();
        let template = HostTemplate::parse("{index}.{project}.larch.test").unwrap();
        let key = SendKey::new("test-key").unwrap();
        let timeouts = CallTimeouts::new(std::time::Duration::from_secs(5));
        Arc::new(DataPlanes::new(&urls, key, template, None, timeouts).unwrap())
    }

    #[test]
    fn data_plane_urls_name_their_pods() {
        let parsed = |spec: &str| DataPlaneUrl::parse(spec).map(|url| (url.pod, url.url));
        let pod = |pod: &str, url: &str| Ok((pod.to_owned(), url.to_owned()));
        // A StatefulSet pod's stable DNS name: the pod is its first label.
        assert_eq!(
            parsed("http://larch-data-0.larch-data:5081"),
            pod("larch-data-0", "http://larch-data-0.larch-data:5081")
        );
        assert_eq!(
            parsed(" https://larch-data-2.larch-data.larch.svc.cluster.local:5081 "),
            pod(
                "larch-data-2",
                "https://larch-data-2.larch-data.larch.svc.cluster.local:5081"
            )
        );
        // An IP address is no name: host and port are.
        assert_eq!(
            parsed("http://127.0.0.1:5081"),
            pod("127.0.0.1:5081", "http://127.0.0.1:5081")
        );
        assert_eq!(
            parsed("http://[::1]:5081"),
            pod("[::1]:5081", "http://[::1]:5081")
        );
        // An explicit name wins.
        assert_eq!(
            parsed("dp-1=http://127.0.0.1:5082"),
            pod("dp-1", "http://127.0.0.1:5082")
        );
        for bad in [
            "larch-data:5081",
            "ftp://larch-data:21",
            "=http://a:1",
            "",
            "dp=not a url",
        ] {
            assert!(parsed(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn data_plane_url_lists_need_one_url_and_distinct_pods() {
        let urls = parse_data_plane_urls(&[
            "http://larch-data-0.larch-data:5081",
            " ",
            "http://larch-data-1.larch-data:5081",
        ])
        .unwrap();
        let pods: Vec<&str> = urls.iter().map(|url| url.pod.as_str()).collect();
        assert_eq!(pods, ["larch-data-0", "larch-data-1"]);
        assert!(parse_data_plane_urls::<&str>(&[]).is_err());
        assert!(parse_data_plane_urls(&[""]).is_err());
        let twice = parse_data_plane_urls(&[
            "http://larch-data-0.larch-data:5081",
            "http://larch-data-0.other:5081",
        ])
        .unwrap_err();
        assert!(twice.contains("\"larch-data-0\""), "{twice}");
        // Named apart, the same host is fine.
        assert!(parse_data_plane_urls(&["a=http://localhost:1", "b=http://localhost:2"]).is_ok());
    }

    #[tokio::test]
    async fn a_tombstone_goes_only_once_every_pod_removed_the_data() {
        let planes = planes(&["a=http://127.0.0.1:1", "b=http://127.0.0.1:2"]);
        let gone = IndexKey::parse("default", "movies", "9f3c2a1b7d4e6f80").unwrap();
        let other = IndexKey::parse("default", "books", "").unwrap();
        assert!(planes.removed_by("a", vec![gone.clone()]).is_empty());
        // Reported again by the same pod (every pull reports what it is sent): still waiting.
        assert!(planes.removed_by("a", vec![gone.clone()]).is_empty());
        // A pod nobody configured counts for nothing.
        assert!(planes.removed_by("stranger", vec![gone.clone()]).is_empty());
        assert_eq!(
            planes.removed_by("b", vec![gone.clone(), other.clone()]),
            std::slice::from_ref(&gone)
        );
        // Once forgotten elsewhere, partial reports are dropped too.
        planes.keep_removals_of(&[]);
        assert!(planes.removed_by("a", vec![other.clone()]).is_empty());
        // With a single pod, its report is enough whatever name it gives (older data planes
        // send none).
        let one = self::planes(&["http://larch-data-0.larch-data:5081"]);
        assert_eq!(one.removed_by("", vec![gone.clone()]), [gone]);
    }

    #[tokio::test]
    async fn assignments_name_every_pod_and_the_rendezvous_writer() {
        let planes = planes(&[
            "http://larch-data-0.larch-data:5081",
            "http://larch-data-1.larch-data:5081",
            "http://larch-data-2.larch-data:5081",
        ]);
        let key = IndexKey::parse("default", "movies", "9f3c2a1b7d4e6f80").unwrap();
        let placement = planes.placement(&key);
        assert_eq!(placement.pods().len(), 3);
        assert_eq!(
            placement,
            Placement::all(planes.pods(), "movies@default@9f3c2a1b7d4e6f80")
        );
        let config = IndexConfig {
            dimension: larch_engine::Dimension::new(4).unwrap(),
            metric: larch_engine::Metric::Cosine,
        };
        let assignment = assignment(
            &key,
            config,
            SearchParams::default(),
            "movies.default.larch.test".into(),
            &placement,
        );
        assert_eq!(assignment.pods, placement.pods());
        assert_eq!(assignment.preferred_writer, placement.preferred_writer());
        assert_eq!(assignment.pods[0], assignment.preferred_writer);
        assert_eq!(assignment.vector_type, "dense");
        let sparse = super::assignment(
            &key,
            IndexConfig::sparse(),
            SearchParams::default(),
            "movies.default.larch.test".into(),
            &placement,
        );
        assert_eq!(
            (
                sparse.vector_type.as_str(),
                sparse.dimension,
                sparse.metric.as_str()
            ),
            ("sparse", 0, "dotproduct")
        );
    }

    fn replica(dir: &std::path::Path) -> Arc<Admin> {
        let doc = SharedDocument::local(dir, "access").unwrap();
        Arc::new(Admin::open_shared(doc, KeyStore::new()).unwrap())
    }

    fn stored(n: usize) -> Vec<larch_auth::StoredKey> {
        let mut keys: Vec<_> = (0..n)
            .map(|_| {
                let key = larch_auth::ApiKey::generate();
                larch_auth::StoredKey::new(&key, Grant::admin())
            })
            .collect();
        keys.sort_by(|a, b| a.key_id().cmp(b.key_id()));
        keys
    }

    #[test]
    fn key_pages_cover_every_key_once_in_order() {
        let keys = stored(25);
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = key_page(keys.clone(), &token, 10).unwrap();
            let got: Vec<larch_auth::StoredKey> = serde_json::from_str(&page.keys_json).unwrap();
            assert!(got.len() <= 10);
            seen.extend(got.iter().map(|k| k.key_id().to_owned()));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let all: Vec<String> = keys.iter().map(|k| k.key_id().to_owned()).collect();
        assert_eq!(seen, all);
        // Without a page size (callers from before paging): everything at once.
        let whole = key_page(keys.clone(), "", 0).unwrap();
        assert!(whole.next_page_token.is_empty());
        let got: Vec<larch_auth::StoredKey> = serde_json::from_str(&whole.keys_json).unwrap();
        assert_eq!(got.len(), 25);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pull_from_any_replica_gets_the_keys_made_on_another() {
        let dir = tempfile::tempdir().unwrap();
        let (made_on, pulled_from) = (replica(dir.path()), replica(dir.path()));
        let sync = SyncApi::new(
            Indexes::recovering(),
            Arc::clone(&pulled_from),
            planes(&["http://larch-data-0.larch-data:5081"]),
        );
        let admin = Principal::new("admin", Grant::admin());
        let request = NewKey {
            name: "reader".into(),
            ..NewKey::default()
        };
        let (made, _) = made_on.create_key(&admin, request).unwrap();
        // No background refresh has run on the replica pulled from.
        assert!(
            pulled_from
                .store()
                .all()
                .iter()
                .all(|k| k.key_id() != made.id)
        );
        let keys = sync
            .list_keys(Request::new(ListKeysRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .keys_json;
        assert!(keys.contains(&made.id), "{keys}");
    }
}
