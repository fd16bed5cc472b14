//! Split mode, control-plane side: `larch.internal.v1.ControlPlaneSync` (what data planes pull:
//! every index to serve and every stored key) and [`RemoteDataPlane`], the catalog's
//! [`DataPlaneHost`] for a data plane in another process (it calls that data plane's
//! `DataPlaneControl`).
//!
//! Both directions authenticate with the admin (bootstrap) key, which both processes are given:
//! the internal services need [`larch_auth::Action::Admin`].
//!
//! A refused pull is a [`SyncError`], answered through the one gRPC map
//! ([`larch_model::wire::grpc_status`]); a data plane's refusal keeps its class on the way to
//! the catalog (see [`RemoteDataPlane`]).

use std::sync::Arc;

use larch_auth::Admin;
use larch_auth::grpc::SendKey;
use larch_catalog::{
    AttachError, AttachMode, Catalog, DataPlaneHost, HostError, HostTemplate, IndexKey, Served,
};
use larch_engine::{IndexConfig, SearchParams};
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

/// The internal API data planes pull from.
#[derive(Clone)]
pub struct SyncApi {
    indexes: Indexes,
    admin: Arc<Admin>,
}

impl SyncApi {
    /// Serves the indexes of `indexes` and the keys `admin` keeps.
    pub fn new(indexes: Indexes, admin: Arc<Admin>) -> SyncApi {
        SyncApi { indexes, admin }
    }
}

#[tonic::async_trait]
impl ControlPlaneSync for SyncApi {
    async fn list_assignments(
        &self,
        request: Request<ListAssignmentsRequest>,
    ) -> Result<Response<ListAssignmentsResponse>, Status> {
        let ListAssignmentsRequest { removed } = request.into_inner();
        let removed = removed
            .iter()
            .map(tombstone_key)
            .collect::<Result<Vec<_>, SyncError>>()?;
        let (served, tombstones) = self
            .indexes
            .assignments(removed)
            .await
            .map_err(|failure| larch_model::wire::grpc_status(&failure))?;
        Ok(Response::new(ListAssignmentsResponse {
            indexes: served.iter().map(served_assignment).collect(),
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

/// What a data plane needs to serve `served`.
fn served_assignment(Served { key, record }: &Served) -> IndexAssignment {
    IndexAssignment {
        project: record.project_id.clone(),
        name: record.name.to_string(),
        dimension: record.config.dimension.get(),
        metric: record.config.metric.to_string(),
        search: Some(search_params(record.search)),
        host: record.host.clone(),
        incarnation: key.incarnation_str().to_owned(),
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

/// The catalog's view of a data plane in another process, reached at one URL.
///
/// The catalog calls [`DataPlaneHost`] methods synchronously from blocking threads (never
/// from async workers), so each call blocks on the runtime for its RPC.
pub struct RemoteDataPlane {
    client: Client,
    url: String,
    template: HostTemplate,
    runtime: tokio::runtime::Handle,
}

impl RemoteDataPlane {
    /// A data plane at `url` (e.g. `http://larch-data-0.larch-data:5081`), called with
    /// `admin_key`; indexes get hosts from `template`. Connects lazily, so the data plane may
    /// start later. Must be called inside a Tokio runtime.
    /// For an https `url`, `ca_pem` is the CA certificate(s) to trust. Every call is bounded
    /// by `timeouts`, so a data plane that stops answering fails the catalog change (UNAVAILABLE)
    /// instead of hanging it.
    pub fn new(
        url: &str,
        admin_key: SendKey,
        template: HostTemplate,
        ca_pem: Option<Vec<u8>>,
        timeouts: CallTimeouts,
    ) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(url.to_owned())
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
            url: url.to_owned(),
            template,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    fn call<T>(
        &self,
        what: &str,
        rpc: impl AsyncFnOnce(Client) -> Result<T, Status>,
    ) -> Result<T, Status> {
        let client = self.client.clone();
        self.runtime.block_on(rpc(client)).inspect_err(|status| {
            tracing::warn!(url = %self.url, code = ?status.code(), error = status.message(), "data plane refused {what}");
        })
    }

    /// A refused configure or detach: unavailable (worth retrying), or the data plane's own
    /// refusal with its class.
    fn refused(&self, status: &Status) -> HostError {
        if unreachable(status) {
            HostError::Unavailable(self.failed(status))
        } else {
            HostError::Refused(refusal(status))
        }
    }

    fn failed(&self, status: &Status) -> String {
        format!(
            "the data plane at {} answered {:?}: {}",
            self.url,
            status.code(),
            status.message()
        )
    }
}

/// The data plane's refusal `status` with its class, so e.g. its full disk is
/// RESOURCE_EXHAUSTED to the control plane's client too. A refusal of this control plane's own
/// key is not the client's: it is internal (the log of [`RemoteDataPlane::call`] has it).
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

impl DataPlaneHost for RemoteDataPlane {
    fn attach(
        &self,
        key: &IndexKey,
        config: IndexConfig,
        search: SearchParams,
        _port: u16,
        mode: AttachMode,
    ) -> Result<u16, AttachError> {
        let index = IndexAssignment {
            project: key.project().to_owned(),
            name: key.name().to_string(),
            dimension: config.dimension.get(),
            metric: config.metric.to_string(),
            search: Some(search_params(search)),
            host: self.template.render(key),
            incarnation: key.incarnation_str().to_owned(),
        };
        let request = AttachIndexRequest {
            index: Some(index),
            create: mode == AttachMode::Create,
        };
        match self.call("attach", async move |mut c| c.attach_index(request).await) {
            Ok(_) => Ok(0),
            // At start-up the data plane may not be up yet: it pulls every index it should
            // serve when it starts, so recovery need not wait for it.
            Err(status) if mode == AttachMode::Recover && unreachable(&status) => {
                tracing::info!(index = %key, url = %self.url, "data plane not reachable yet; it recovers the index itself when it starts");
                Ok(0)
            }
            // The admin key rotated here but not yet on the data plane: it recovers the index
            // itself once its pulls work (see `larch data-plane`, LARCH_API_KEY_FILE).
            Err(status)
                if mode == AttachMode::Recover && status.code() == Code::Unauthenticated =>
            {
                tracing::warn!(index = %key, url = %self.url, "the data plane refused this control plane's admin key; it recovers the index itself once both planes have the same key");
                Ok(0)
            }
            Err(status) if unreachable(&status) => {
                Err(AttachError::Unavailable(self.failed(&status)))
            }
            Err(status) => Err(AttachError::Refused(refusal(&status))),
        }
    }

    fn configure(&self, key: &IndexKey, search: SearchParams) -> Result<(), HostError> {
        let request = internal::ConfigureIndexRequest {
            project: key.project().to_owned(),
            name: key.name().to_string(),
            search: Some(search_params(search)),
            incarnation: key.incarnation_str().to_owned(),
        };
        self.call("configure", async move |mut c| {
            c.configure_index(request).await
        })
        .map(drop)
        .map_err(|status| self.refused(&status))
    }

    fn detach(&self, key: &IndexKey) -> Result<(), HostError> {
        let request = DetachIndexRequest {
            project: key.project().to_owned(),
            name: key.name().to_string(),
            incarnation: key.incarnation_str().to_owned(),
        };
        self.call("detach", async move |mut c| c.detach_index(request).await)
            .map(drop)
            .map_err(|status| self.refused(&status))
    }
}

/// Opens the durable catalog of a split-mode control plane, whose indexes live on the data
/// plane at `remote`'s URL.
pub fn open_catalog(
    dir: &std::path::Path,
    remote: RemoteDataPlane,
) -> larch_catalog::Result<Catalog> {
    let template = remote.template.clone();
    Catalog::open_routed(dir, Arc::new(remote), template)
}

/// Opens the catalog that several split-mode control-plane replicas share in `doc` (see
/// [`Catalog::open_shared`]), whose indexes live on the data plane at `remote`'s URL.
pub fn open_shared_catalog(
    doc: larch_catalog::SharedDocument,
    remote: RemoteDataPlane,
) -> larch_catalog::Result<Catalog> {
    let template = remote.template.clone();
    Catalog::open_shared(doc, Arc::new(remote), template)
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
        let sync = SyncApi::new(Indexes::recovering(), Arc::clone(&pulled_from));
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
