//! [`Indexes`]: the control plane's one service, shared by the gRPC and REST transports.
//!
//! Each operation is one method taking the caller's [`Principal`] and a domain request
//! ([`CreateIndex`], [`ConfigureIndex`], an index name) and answering an [`IndexRecord`] or a
//! [`Failure`]; the transports only decode their wire message, call, and encode the answer.
//! Every rule lives in the catalog. Errors come back as a [`Failure`],
//! [`Classified`] in the shared vocabulary, which the transports map with `larch_model::wire`.
//!
//! Every call is scoped to a project — the caller's, `Principal::project_id` — so a caller
//! sees and changes only its own project's indexes. Each call runs the same steps, in the same
//! order for every transport:
//! 1. **authorize**: the caller's roles and index allow-list must admit the action on the
//!    index the request names (a refusal is [`Failure::Denied`]), so a restricted key learns
//!    nothing about an index it may not use — not whether it exists, nor what is wrong with
//!    its request;
//! 2. **translate**: a wire body that is not a catalog request yet (Pinecone's JSON) becomes
//!    one, or is refused with [`Failure::Unsupported`] (see [`NamesIndex`]);
//! 3. **call the catalog** on the blocking pool ([`Failure::Recovering`] until it is open).
//!
//! Lists keep only the indexes the caller [may see](Principal::may_see).

use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, OnceLock};

use larch_auth::{Action, Denied, Principal};
use larch_catalog::{Catalog, ConfigureIndex, CreateIndex, IndexKey, IndexRecord, Served};
use larch_model::{Classified, Code};

/// The index lifecycle over a catalog that may still be recovering. Clones share the catalog.
#[derive(Clone)]
pub struct Indexes {
    /// Empty while stored indexes are being recovered at start-up.
    catalog: Arc<OnceLock<Arc<Catalog>>>,
}

/// Why an index operation failed.
#[derive(Debug)]
pub enum Failure {
    /// The catalog refused the request.
    Catalog(larch_catalog::Error),
    /// The catalog is not open yet: stored indexes are being recovered after a start.
    Recovering,
    /// The request is well-formed JSON or protobuf but asks for something the wire-to-catalog
    /// translation cannot express (e.g. a pod spec); the message names the field.
    Unsupported(String),
    /// The blocking task running the catalog call died (a panic).
    TaskFailed(String),
    /// The caller's key may not do this (its roles, or its index allow-list).
    Denied(Denied),
}

impl Failure {
    /// The class of this failure in the shared vocabulary.
    pub fn code(&self) -> Code {
        match self {
            Failure::Catalog(err) => err.code(),
            Failure::Denied(_) => Code::PermissionDenied,
            Failure::Recovering => Code::Unavailable,
            Failure::Unsupported(_) => Code::InvalidArgument,
            Failure::TaskFailed(_) => Code::Internal,
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Failure::Catalog(err) => Some(err),
            Failure::Denied(denied) => Some(denied),
            Failure::Recovering | Failure::Unsupported(_) | Failure::TaskFailed(_) => None,
        }
    }
}

impl Classified for Failure {
    fn code(&self) -> Code {
        Failure::code(self)
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Failure::Catalog(err) => Classified::retry_after(err),
            _ => None,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            Failure::Catalog(err) => Classified::field(err),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Catalog(err) => err.fmt(f),
            Failure::Recovering => {
                f.write_str("larch is recovering its indexes after a restart; retry shortly")
            }
            Failure::Unsupported(message) => f.write_str(message),
            Failure::TaskFailed(reason) => write!(f, "catalog task failed: {reason}"),
            Failure::Denied(denied) => denied.fmt(f),
        }
    }
}

impl From<larch_catalog::Error> for Failure {
    fn from(err: larch_catalog::Error) -> Failure {
        Failure::Catalog(err)
    }
}

/// For requests that are catalog requests already: their translation cannot fail.
impl From<Infallible> for Failure {
    fn from(never: Infallible) -> Failure {
        match never {}
    }
}

impl From<Denied> for Failure {
    fn from(denied: Denied) -> Failure {
        Failure::Denied(denied)
    }
}

/// Whether `principal` may do `action` on index `name`: its roles grant the action and its
/// allow-list (if any) names the index. Checked before the catalog is asked, so a restricted
/// key learns nothing about indexes it may not use, not even whether they exist.
/// A refusal is an audit event, as those of the auth layer are.
pub(crate) fn authorize(principal: &Principal, action: Action, name: &str) -> Result<(), Failure> {
    principal.authorize(action, Some(name)).map_err(|denied| {
        let error = larch_auth::Error::Denied(denied.clone());
        larch_auth::audit::denied(principal, action.as_str(), Some(name), &error);
        Failure::Denied(denied)
    })
}

impl Indexes {
    /// Serves `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> Indexes {
        Indexes {
            catalog: Arc::new(OnceLock::from(catalog)),
        }
    }

    /// Indexes that answer [`Failure::Recovering`] until [`Indexes::set_ready`].
    pub fn recovering() -> Indexes {
        Indexes {
            catalog: Arc::new(OnceLock::new()),
        }
    }

    /// Starts serving `catalog` (once; later calls are ignored).
    pub fn set_ready(&self, catalog: Arc<Catalog>) {
        let _ = self.catalog.set(catalog);
    }

    fn catalog(&self) -> Result<&Arc<Catalog>, Failure> {
        self.catalog.get().ok_or(Failure::Recovering)
    }

    /// Runs `op` on the blocking pool: catalog changes fsync files and create indexes on disk,
    /// and a shared catalog reads its store on every call.
    pub(crate) async fn run<T, F>(&self, op: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&Catalog) -> larch_catalog::Result<T> + Send + 'static,
    {
        let catalog = Arc::clone(self.catalog()?);
        // In the request's span, so its log lines carry the request id.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| op(&catalog)))
            .await
            .map_err(|err| Failure::TaskFailed(err.to_string()))?
            .map_err(Failure::Catalog)
    }

    /// Every index of every project (what a split-mode data plane serves).
    pub async fn all(&self) -> Result<Vec<IndexRecord>, Failure> {
        self.run(Catalog::all_indexes).await
    }

    /// What a data plane pulls in split mode: every index as served (with its incarnation) and
    /// the tombstones of deleted ones whose data it has not removed yet, after forgetting those
    /// in `removed`, whose removal it reports.
    pub async fn assignments(
        &self,
        removed: Vec<IndexKey>,
    ) -> Result<(Vec<Served>, Vec<IndexKey>), Failure> {
        self.run(move |catalog| {
            catalog.confirm_removed(&removed)?;
            Ok((catalog.served()?, catalog.tombstones()?))
        })
        .await
    }

    /// How many indexes `project` has.
    pub fn index_count(&self, project: &str) -> Result<usize, Failure> {
        Ok(self.catalog()?.index_count(project)?)
    }

    /// Creates an index in the caller's project; it is ready when this returns.
    ///
    /// `request` is the catalog request itself or a wire body that translates to one (and may
    /// refuse to): either way the caller is authorized for the name it carries first.
    pub async fn create<R>(&self, principal: &Principal, request: R) -> Result<IndexRecord, Failure>
    where
        R: NamesIndex + TryInto<CreateIndex>,
        Failure: From<R::Error>,
    {
        let request = admit(principal, Action::ControlWrite, request)?;
        let project = principal.project_id.clone();
        self.run(move |c| c.create_index(&project, request)).await
    }

    /// The indexes of the caller's project that it [may see](Principal::may_see), ordered by
    /// name.
    pub async fn list(&self, principal: &Principal) -> Result<Vec<IndexRecord>, Failure> {
        let project = principal.project_id.clone();
        let mut records = self.run(move |c| c.list_indexes(&project)).await?;
        records.retain(|record| principal.may_see(record.name.as_str()));
        Ok(records)
    }

    /// One index of the caller's project.
    pub async fn describe(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<IndexRecord, Failure> {
        authorize(principal, Action::ControlRead, name)?;
        let (project, name) = (principal.project_id.clone(), name.to_owned());
        self.run(move |c| c.describe_index(&project, &name)).await
    }

    /// Changes deletion protection, merges tags and changes ANN search parameters of an index
    /// of the caller's project; `request` as for [`Indexes::create`].
    pub async fn configure<R>(
        &self,
        principal: &Principal,
        request: R,
    ) -> Result<IndexRecord, Failure>
    where
        R: NamesIndex + TryInto<ConfigureIndex>,
        Failure: From<R::Error>,
    {
        let request = admit(principal, Action::ControlWrite, request)?;
        let project = principal.project_id.clone();
        self.run(move |c| c.configure_index(&project, request))
            .await
    }

    /// Deletes an index of the caller's project and its data.
    pub async fn delete(&self, principal: &Principal, name: &str) -> Result<(), Failure> {
        authorize(principal, Action::ControlWrite, name)?;
        let (project, name) = (principal.project_id.clone(), name.to_owned());
        self.run(move |c| c.delete_index(&project, &name)).await
    }
}

/// A request that names the index it is about before it is translated to a catalog request,
/// so the caller can be authorized for that index first.
pub trait NamesIndex {
    /// The index the request is about (`""` when the request names none: the catalog then
    /// refuses it, after authorization).
    fn index_name(&self) -> &str;
}

impl NamesIndex for CreateIndex {
    fn index_name(&self) -> &str {
        &self.name
    }
}

impl NamesIndex for ConfigureIndex {
    fn index_name(&self) -> &str {
        &self.name
    }
}

/// `request` translated to its catalog request, once `principal` may do `action` on the
/// index it names: authorization comes before validation on every transport.
fn admit<R, T>(principal: &Principal, action: Action, request: R) -> Result<T, Failure>
where
    R: NamesIndex + TryInto<T>,
    Failure: From<R::Error>,
{
    authorize(principal, action, request.index_name())?;
    Ok(request.try_into()?)
}

/// Pinecone's API version of a request (`X-Pinecone-Api-Version` / `x-pinecone-api-version`):
/// it chooses between the two JSON shapes of the control plane and how `host` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// Before 2026-07 (or not given): `spec`, `dimension`, `metric`, `vector_type`.
    Classic,
    /// 2026-07 and later: `schema` with `_values`/`_sparse_values`, and `deployment`.
    Schema,
}

impl ApiVersion {
    /// The first version with the `schema`/`deployment` shape.
    pub const SCHEMA_SINCE: &str = "2026-07";

    /// Reads a version header value; absent or unreadable means [`ApiVersion::Classic`].
    pub fn parse(header: Option<&str>) -> ApiVersion {
        match header.map(str::trim) {
            // Versions are dates (YYYY-MM), so text order is time order.
            Some(v) if is_date(v) && v >= Self::SCHEMA_SINCE => ApiVersion::Schema,
            _ => ApiVersion::Classic,
        }
    }

    /// The `host` a client of this version can dial for `record`'s data plane.
    ///
    /// The data plane serves plaintext gRPC and REST on one `host:port`. Clients before
    /// 2026-07 (Python 8.x, Pinecone Local users) expect a bare `host:port` — 8.x's gRPC
    /// channel strips only `https://` — and gRPC callers get it bare too. 2026-07 clients
    /// (Python 10.x) keep an explicit `http://` but treat a bare host as TLS for their REST
    /// data plane; their gRPC path strips any scheme and applies `grpc_scheme`. So they are
    /// given `http://host:port`.
    pub fn host(self, record: &IndexRecord) -> String {
        match self {
            ApiVersion::Classic => record.host.clone(),
            ApiVersion::Schema => format!("http://{}", record.host),
        }
    }
}

/// Whether `v` is a `YYYY-MM` version.
fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || c.is_ascii_digit())
}

/// What the transports' unit tests share: a catalog over a data plane that serves nothing,
/// and callers of any project, roles and allow-list.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use larch_auth::{Grant, Principal, Role};
    use larch_catalog::{
        AttachError, AttachMode, Catalog, DataPlaneHost, HostError, IndexKey, PortPolicy,
    };
    use larch_engine::{IndexConfig, SearchParams};

    use super::Indexes;

    /// A project other than the default, with an id shaped like the auth crate's.
    pub(crate) const OTHER: &str = "3f2b8c1e-7d4a-4e0b-9c6f-1a2b3c4d5e6f";

    struct NoDataPlane;

    impl DataPlaneHost for NoDataPlane {
        fn attach(
            &self,
            _: &IndexKey,
            _: IndexConfig,
            _: SearchParams,
            _: u16,
            _: AttachMode,
        ) -> Result<u16, AttachError> {
            Ok(5081)
        }
        fn configure(&self, _: &IndexKey, _: SearchParams) -> Result<(), HostError> {
            Ok(())
        }
        fn detach(&self, _: &IndexKey) -> Result<(), HostError> {
            Ok(())
        }
    }

    /// An empty in-memory catalog.
    pub(crate) fn indexes() -> Indexes {
        Indexes::new(Arc::new(Catalog::new(
            Arc::new(NoDataPlane),
            PortPolicy::Ephemeral,
            "127.0.0.1",
        )))
    }

    /// A `ProjectEditor` key of `project`, restricted to `allowed` indexes when given.
    pub(crate) fn caller(project: &str, allowed: Option<&[&str]>) -> Principal {
        let mut principal = Principal::new("test", Grant::admin());
        principal.project_id = project.to_owned();
        principal.roles = vec![Role::ProjectEditor];
        principal.index_names = allowed.map(|names| names.iter().map(|n| n.to_string()).collect());
        principal.is_admin = false;
        principal
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{OTHER, caller, indexes};
    use super::*;
    use larch_auth::Grant;

    #[test]
    fn api_version_switches_at_2026_07() {
        assert_eq!(ApiVersion::parse(None), ApiVersion::Classic);
        for classic in [
            "", "2025-01", "2025-10", "2026-04", "garbage", "2026", "2026-07x",
        ] {
            assert_eq!(
                ApiVersion::parse(Some(classic)),
                ApiVersion::Classic,
                "{classic}"
            );
        }
        for schema in ["2026-07", " 2026-07 ", "2026-10", "2027-01"] {
            assert_eq!(
                ApiVersion::parse(Some(schema)),
                ApiVersion::Schema,
                "{schema}"
            );
        }
    }

    #[test]
    fn failures_have_codes_and_messages() {
        assert_eq!(Failure::Recovering.code(), Code::Unavailable);
        assert!(Failure::Recovering.to_string().contains("recovering"));
        assert_eq!(
            Failure::Unsupported("spec.pod: no".into()).code(),
            Code::InvalidArgument
        );
        assert_eq!(
            Failure::from(larch_catalog::Error::NotFound("x".into())).code(),
            Code::NotFound
        );
        assert_eq!(Failure::TaskFailed("boom".into()).code(), Code::Internal);
    }

    #[test]
    fn the_default_project_is_the_same_in_both_crates() {
        assert_eq!(larch_catalog::DEFAULT_PROJECT, Grant::DEFAULT_PROJECT);
    }

    fn create(name: &str, dimension: i64) -> CreateIndex {
        CreateIndex {
            name: name.into(),
            dimension: Some(dimension),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn calls_work_in_the_callers_project() {
        let indexes = indexes();
        let (me, them) = (caller(Grant::DEFAULT_PROJECT, None), caller(OTHER, None));
        indexes.create(&me, create("movies", 4)).await.unwrap();
        indexes.create(&them, create("movies", 8)).await.unwrap();
        let mine = indexes.describe(&me, "movies").await.unwrap();
        let theirs = indexes.describe(&them, "movies").await.unwrap();
        assert_eq!(
            (mine.config.dimension.get(), theirs.config.dimension.get()),
            (4, 8)
        );
        indexes.delete(&them, "movies").await.unwrap();
        assert!(matches!(
            indexes.describe(&them, "movies").await,
            Err(Failure::Catalog(larch_catalog::Error::NotFound(_)))
        ));
        assert_eq!(indexes.list(&me).await.unwrap(), [mine]);
        assert!(indexes.list(&them).await.unwrap().is_empty());
    }

    /// A wire body whose translation always refuses it, as a pod spec in Pinecone's JSON is.
    struct PodSpec(&'static str);

    impl NamesIndex for PodSpec {
        fn index_name(&self) -> &str {
            self.0
        }
    }

    impl TryFrom<PodSpec> for CreateIndex {
        type Error = Failure;
        fn try_from(_: PodSpec) -> Result<CreateIndex, Failure> {
            Err(Failure::Unsupported("spec.pod: only serverless".into()))
        }
    }

    impl TryFrom<PodSpec> for ConfigureIndex {
        type Error = Failure;
        fn try_from(_: PodSpec) -> Result<ConfigureIndex, Failure> {
            Err(Failure::Unsupported("spec: only tags".into()))
        }
    }

    #[tokio::test]
    async fn authorization_comes_before_translation_validation_and_recovery() {
        let indexes = indexes();
        let restricted = caller(OTHER, Some(&["a"]));
        // Refused for the name, whatever is wrong with the request.
        for refused in [
            indexes.create(&restricted, PodSpec("b")).await.map(drop),
            indexes.configure(&restricted, PodSpec("b")).await.map(drop),
            indexes.create(&restricted, create("b", 0)).await.map(drop),
        ] {
            assert!(matches!(refused, Err(Failure::Denied(_))), "{refused:?}");
        }
        // Allowed: now the translation, then the catalog, refuses it.
        assert!(matches!(
            indexes.create(&restricted, PodSpec("a")).await,
            Err(Failure::Unsupported(_))
        ));
        assert!(matches!(
            indexes.configure(&restricted, PodSpec("a")).await,
            Err(Failure::Unsupported(_))
        ));
        assert!(matches!(
            indexes.create(&restricted, create("a", 0)).await,
            Err(Failure::Catalog(_))
        ));
        // While recovering, too: a refusal says nothing about the server's state.
        let recovering = Indexes::recovering();
        assert!(matches!(
            recovering.describe(&restricted, "b").await,
            Err(Failure::Denied(_))
        ));
        assert!(matches!(
            recovering.delete(&restricted, "b").await,
            Err(Failure::Denied(_))
        ));
        assert!(matches!(
            recovering.create(&restricted, PodSpec("a")).await,
            Err(Failure::Unsupported(_))
        ));
        assert!(matches!(
            recovering.describe(&restricted, "a").await,
            Err(Failure::Recovering)
        ));
    }

    #[tokio::test]
    async fn allow_lists_deny_by_name_and_filter_lists() {
        let indexes = indexes();
        for name in ["a", "b", "c"] {
            indexes
                .create(&caller(OTHER, None), create(name, 4))
                .await
                .unwrap();
        }
        let restricted = caller(OTHER, Some(&["a", "c", "not-created"]));
        let names: Vec<String> = indexes
            .list(&restricted)
            .await
            .unwrap()
            .into_iter()
            .map(|record| record.name.to_string())
            .collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(indexes.list(&caller(OTHER, None)).await.unwrap().len(), 3);
        assert!(
            indexes
                .list(&caller("default", None))
                .await
                .unwrap()
                .is_empty()
        );

        assert!(authorize(&restricted, Action::ControlRead, "a").is_ok());
        let denied = authorize(&restricted, Action::ControlWrite, "b").unwrap_err();
        assert!(matches!(denied, Failure::Denied(_)));
        assert_eq!(
            denied.to_string(),
            "this API key is restricted to other indexes and may not use index 'b'"
        );
        let mut viewer = caller(OTHER, None);
        viewer.roles = vec![larch_auth::Role::ControlPlaneViewer];
        assert!(authorize(&viewer, Action::ControlRead, "b").is_ok());
        assert!(matches!(
            authorize(&viewer, Action::ControlWrite, "b"),
            Err(Failure::Denied(_))
        ));
    }
}
