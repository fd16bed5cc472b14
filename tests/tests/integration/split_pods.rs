//! The control plane's handle on several data-plane pods ([`DataPlanes`]) against real
//! data-plane servers on 127.0.0.1 (issue 17, "Control plane"): what a change does when one
//! pod refuses it or does not answer.

use std::sync::Arc;
use std::time::Duration;

use larch_auth::grpc::SendKey;
use larch_auth::{ApiKey, Grant, KeyStore, StoredKey};
use larch_catalog::{AttachError, AttachMode, DataPlaneHost, HostError, HostTemplate, IndexKey};
use larch_control_plane::split::{DataPlanes, parse_data_plane_urls};
use larch_data_plane::routed::RoutedDataPlane;
use larch_engine::{Dimension, IndexConfig, Metric, SearchParams};
use larch_observe::internal::CallTimeouts;

use crate::routed_server::RoutedServer;

/// A data plane serving on 127.0.0.1, stopped when dropped.
pub(crate) struct Pod {
    pub(crate) plane: RoutedDataPlane,
    pub(crate) url: String,
    _server: RoutedServer,
}

/// A data plane named `pod` that accepts `admin` (or, with `None`, refuses every key of the
/// control plane: a pod with another admin key). Only told, it never pulls.
pub(crate) async fn pod(name: &str, admin: Option<&ApiKey>) -> Pod {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::new();
    let own = ApiKey::generate();
    keys.insert(StoredKey::new(admin.unwrap_or(&own), Grant::admin()));
    let plane = RoutedDataPlane::new(
        larch_engine::Engine::open(dir.path().join("indexes")),
        keys,
        larch_observe::Metrics::new(),
    )
    .with_pod_name(name);
    let server = RoutedServer::serve(plane.clone(), own, dir).await;
    Pod {
        plane,
        url: format!("http://{}", server.addr),
        _server: server,
    }
}

/// An address nothing listens on: a pod that is down.
fn nowhere() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The control plane's handle on the pods `urls` (`POD=URL`), calling with `admin`.
pub(crate) fn planes(admin: &ApiKey, urls: &[String]) -> Arc<DataPlanes> {
    let urls = parse_data_plane_urls(urls).unwrap();
    Arc::new(
        DataPlanes::new(
            &urls,
            SendKey::new(admin.as_str()).unwrap(),
            HostTemplate::parse("{index}.{project}.larch.test").unwrap(),
            None,
            CallTimeouts::new(Duration::from_secs(10)),
        )
        .unwrap(),
    )
}

pub(crate) fn key(name: &str) -> IndexKey {
    IndexKey::parse("default", name, "9f3c2a1b7d4e6f80").unwrap()
}

pub(crate) fn config() -> IndexConfig {
    IndexConfig {
        dimension: Dimension::new(4).unwrap(),
        metric: Metric::Cosine,
    }
}

/// Runs `call` on the blocking pool, as the catalog does.
pub(crate) async fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(call).await.unwrap()
}

/// `planes.attach` of index `key` (see [`config`]) in `mode`, on the blocking pool.
pub(crate) async fn attach(
    planes: &Arc<DataPlanes>,
    key: &IndexKey,
    mode: AttachMode,
) -> Result<u16, AttachError> {
    let (planes, key) = (Arc::clone(planes), key.clone());
    blocking(move || planes.attach(&key, config(), SearchParams::default(), 0, mode)).await
}

fn served(pod: &Pod) -> Vec<IndexKey> {
    pod.plane.served().into_iter().map(|(_, key)| key).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_pod_that_refuses_a_create_undoes_it_on_the_others() {
    let admin = ApiKey::generate();
    let (good, other_key) = (pod("dp-0", Some(&admin)).await, pod("dp-1", None).await);
    let planes = planes(
        &admin,
        &[
            format!("dp-0={}", good.url),
            format!("dp-1={}", other_key.url),
        ],
    );
    let movies = key("movies");
    let created = attach(&planes, &movies, AttachMode::Create).await;
    // The refusal of this control plane's own key is not the client's: INTERNAL.
    match created {
        Err(AttachError::Refused(cause)) => {
            let failure = larch_control_plane::Failure::Catalog(larch_catalog::Error::from(
                HostError::Refused(cause),
            ));
            assert_eq!(failure.code(), larch_engine::ErrorCode::Internal);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The pod that had attached it dropped it again, data included.
    assert!(served(&good).is_empty());
    assert!(
        !good
            .plane
            .engine()
            .index_dirs()
            .unwrap()
            .contains(&movies.storage_name())
    );
    // At start-up, one pod refusing does not stop the others recovering (it retries itself).
    let recovered = attach(&planes, &movies, AttachMode::Recover).await;
    assert!(recovered.is_ok(), "{recovered:?}");
    assert_eq!(served(&good), std::slice::from_ref(&movies));
    // A configure one pod refuses fails with that refusal.
    let configured = {
        let (planes, movies) = (Arc::clone(&planes), movies.clone());
        blocking(move || planes.configure(&movies, SearchParams::default())).await
    };
    assert!(
        matches!(configured, Err(HostError::Refused(_))),
        "{configured:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_pod_that_does_not_answer_never_counts_as_done() {
    let admin = ApiKey::generate();
    let up = pod("dp-0", Some(&admin)).await;
    let down = format!("http://{}", nowhere());
    let planes = planes(
        &admin,
        &[format!("dp-0={}", up.url), format!("dp-1={down}")],
    );
    let books = key("books");

    // Created while dp-1 is down: done on dp-0, which serves it.
    let created = attach(&planes, &books, AttachMode::Create).await;
    assert_eq!(created.unwrap(), 0);
    assert_eq!(served(&up), std::slice::from_ref(&books));
    // Configured: done on dp-0; dp-1 takes the parameters at its next pull.
    let configured = {
        let (planes, books) = (Arc::clone(&planes), books.clone());
        let search = SearchParams::default().with_ef_search(77).unwrap();
        blocking(move || planes.configure(&books, search)).await
    };
    assert!(configured.is_ok(), "{configured:?}");
    // Deleted: dp-0 drops the data, but the change is not done everywhere, so the catalog keeps
    // the tombstone; dp-0's removal is counted, and dp-1's report completes it.
    let detached = {
        let (planes, books) = (Arc::clone(&planes), books.clone());
        blocking(move || planes.detach(&books)).await
    };
    assert!(
        matches!(detached, Err(HostError::Unavailable(ref message)) if message.contains("dp-1")),
        "{detached:?}"
    );
    assert!(served(&up).is_empty());
    assert_eq!(planes.removed_by("dp-1", vec![books.clone()]), [books]);

    // No pod answering: a create fails (UNAVAILABLE), and nothing is served.
    let created = attach(&planes_of_nobody(&admin), &key("films"), AttachMode::Create).await;
    assert!(
        matches!(created, Err(AttachError::Unavailable(_))),
        "{created:?}"
    );
}

/// Two pods that are both down.
fn planes_of_nobody(admin: &ApiKey) -> Arc<DataPlanes> {
    planes(
        admin,
        &[
            format!("a=http://{}", nowhere()),
            format!("b=http://{}", nowhere()),
        ],
    )
}
