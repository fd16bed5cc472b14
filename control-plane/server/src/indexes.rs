//! [`Indexes`]: the control plane's one service, shared by the gRPC and REST transports.
//!
//! Both transports translate their wire message into a [`larch_catalog`] request, make one
//! call here and translate the [`IndexRecord`] back; every rule lives in the catalog. Errors
//! come back as a [`Failure`] with a transport-neutral [`ErrorCode`], which each transport
//! maps to its own status in one place.

use std::fmt;
use std::sync::{Arc, OnceLock};

use larch_catalog::{Catalog, ConfigureIndex, CreateIndex, IndexRecord};
use larch_engine::ErrorCode;

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
}

impl Failure {
    /// The transport-neutral class of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Failure::Catalog(err) => err.code(),
            Failure::Recovering => ErrorCode::Unavailable,
            Failure::Unsupported(_) => ErrorCode::InvalidArgument,
            Failure::TaskFailed(_) => ErrorCode::Internal,
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
        }
    }
}

impl From<larch_catalog::Error> for Failure {
    fn from(err: larch_catalog::Error) -> Failure {
        Failure::Catalog(err)
    }
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

    /// Runs `op` on the blocking pool: catalog changes fsync files and create indexes on disk.
    async fn run<T, F>(&self, op: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&Catalog) -> larch_catalog::Result<T> + Send + 'static,
    {
        let catalog = Arc::clone(self.catalog()?);
        tokio::task::spawn_blocking(move || op(&catalog))
            .await
            .map_err(|err| Failure::TaskFailed(err.to_string()))?
            .map_err(Failure::Catalog)
    }

    /// Creates an index; it is ready when this returns.
    pub async fn create(&self, request: CreateIndex) -> Result<IndexRecord, Failure> {
        self.run(move |c| c.create_index(request)).await
    }

    /// Every index, ordered by name.
    pub fn list(&self) -> Result<Vec<IndexRecord>, Failure> {
        Ok(self.catalog()?.list_indexes())
    }

    /// One index.
    pub fn describe(&self, name: &str) -> Result<IndexRecord, Failure> {
        Ok(self.catalog()?.describe_index(name)?)
    }

    /// Changes deletion protection, merges tags and changes ANN search parameters.
    pub async fn configure(&self, request: ConfigureIndex) -> Result<IndexRecord, Failure> {
        self.run(move |c| c.configure_index(request)).await
    }

    /// Deletes an index and its data.
    pub async fn delete(&self, name: String) -> Result<(), Failure> {
        self.run(move |c| c.delete_index(&name)).await
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(Failure::Recovering.code(), ErrorCode::Unavailable);
        assert!(Failure::Recovering.to_string().contains("recovering"));
        assert_eq!(
            Failure::Unsupported("spec.pod: no".into()).code(),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            Failure::from(larch_catalog::Error::NotFound("x".into())).code(),
            ErrorCode::NotFound
        );
        assert_eq!(
            Failure::TaskFailed("boom".into()).code(),
            ErrorCode::Internal
        );
    }
}
