//! A data plane whose indexes live in a shared object store ([`IndexStorage::Bucket`]): the
//! real per-index gRPC server over `InMemory` and `LocalFileSystem` stores. A second data plane
//! with a log directory of its own serves what the first one flushed, and deleting the index
//! deletes exactly its incarnation's objects (issue 17).

use std::sync::Arc;

use larch_auth::{ApiKey, Grant, KeyStore, StoredKey};
use larch_data_plane::{DataPlane, IndexStorage, Metrics};
use larch_engine::object_store::{
    ObjectStore, ObjectStoreExt, local::LocalFileSystem, memory::InMemory, path::Path,
};
use larch_engine::{Dimension, FlushPolicy, IndexConfig, Metric, SearchParams};
use larch_model::{AttachMode, IndexKey};
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{
    DescribeIndexStatsRequest, FetchRequest, QueryRequest, UpsertRequest, Vector,
};
use larch_tests::{DataClient, KeyInterceptor, connect, wait_serving};

const KEY: &str = "bucket-test-key";

fn keys() -> KeyStore {
    let keys = KeyStore::new();
    let admin = ApiKey::from_configured(KEY).unwrap();
    keys.insert(StoredKey::new(&admin, Grant::admin()));
    keys
}

fn config() -> IndexConfig {
    IndexConfig {
        dimension: Dimension::new(3).unwrap(),
        metric: Metric::Cosine,
    }
}

/// A data plane keeping its indexes in `store` under `larch/`, its logs in `logs`; every
/// write flushes, so everything acknowledged is in the store.
fn data_plane(store: &Arc<dyn ObjectStore>, logs: &tempfile::TempDir) -> DataPlane {
    let storage = IndexStorage::Bucket {
        root: logs.path().join("indexes"),
        store: Arc::clone(store),
        prefix: Path::from("larch"),
    };
    let engine = storage.engine(FlushPolicy {
        wal_bytes: 1,
        ..FlushPolicy::default()
    });
    assert!(engine.is_on_store());
    DataPlane::new(engine, keys(), "127.0.0.1".parse().unwrap(), Metrics::new())
}

async fn client(port: u16) -> DataClient {
    let host = format!("127.0.0.1:{port}");
    wait_serving(&host).await;
    VectorServiceClient::with_interceptor(connect(&host).await, KeyInterceptor::new(Some(KEY)))
}

fn vector(id: &str, values: [f32; 3]) -> Vector {
    Vector {
        id: id.into(),
        values: values.to_vec(),
        ..Default::default()
    }
}

/// Every object in the store, by path, sorted (listed level by level).
async fn objects(store: &Arc<dyn ObjectStore>) -> Vec<String> {
    let mut found = Vec::new();
    let mut prefixes = vec![None];
    while let Some(prefix) = prefixes.pop() {
        let listed = store.list_with_delimiter(prefix.as_ref()).await.unwrap();
        found.extend(listed.objects.into_iter().map(|o| o.location.to_string()));
        prefixes.extend(listed.common_prefixes.into_iter().map(Some));
    }
    found.sort();
    found
}

async fn serves_an_index_from(store: Arc<dyn ObjectStore>) {
    let key = IndexKey::parse(larch_model::DEFAULT_PROJECT, "movies", "0a1b2c3d").unwrap();
    let own = "larch/indexes/default/movies/0a1b2c3d/";
    // Someone else's object beside it, which nothing here may touch.
    store
        .put(
            &Path::from("larch/indexes/default/books/77/index.meta"),
            b"theirs".to_vec().into(),
        )
        .await
        .unwrap();

    // The first data plane creates the index and takes writes.
    let first_logs = tempfile::tempdir().unwrap();
    let first = data_plane(&store, &first_logs);
    let port = first
        .attach(
            &key,
            config(),
            SearchParams::default(),
            0,
            AttachMode::Create,
        )
        .unwrap();
    let mut data = client(port).await;
    data.upsert(UpsertRequest {
        vectors: vec![vector("a", [1.0, 0.0, 0.0]), vector("b", [0.0, 1.0, 0.0])],
        namespace: "films".into(),
    })
    .await
    .unwrap();
    data.upsert(UpsertRequest {
        vectors: vec![vector("c", [0.0, 0.0, 1.0])],
        namespace: "films".into(),
    })
    .await
    .unwrap();
    let stored = objects(&store).await;
    assert!(stored.contains(&format!("{own}index.meta")), "{stored:?}");
    assert!(stored.contains(&format!("{own}manifest")), "{stored:?}");
    assert!(
        stored
            .iter()
            .any(|path| path.starts_with(&format!("{own}segments/"))),
        "{stored:?}"
    );
    first.shutdown(std::time::Duration::from_secs(10)).await;
    drop(first);

    // A second data plane with no log of its own recovers the index from the store alone.
    let second_logs = tempfile::tempdir().unwrap();
    let second = data_plane(&store, &second_logs);
    let port = second
        .attach(
            &key,
            config(),
            SearchParams::default(),
            0,
            AttachMode::Recover,
        )
        .unwrap();
    let mut data = client(port).await;
    let stats = data
        .describe_index_stats(DescribeIndexStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.total_vector_count, 3);
    let fetched = data
        .fetch(FetchRequest {
            ids: vec!["a".into(), "c".into()],
            namespace: "films".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.vectors["c"].values, [0.0, 0.0, 1.0]);
    let found = data
        .query(QueryRequest {
            namespace: "films".into(),
            top_k: 1,
            vector: vec![0.1, 0.9, 0.0],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.matches[0].id, "b");

    // Deleting the index deletes its incarnation's objects and nothing else.
    second.detach(&key).unwrap();
    let left = objects(&store).await;
    assert!(!left.iter().any(|path| path.starts_with(own)), "{left:?}");
    assert!(
        left.contains(&"larch/indexes/default/books/77/index.meta".to_owned()),
        "{left:?}"
    );
    second.shutdown(std::time::Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_plane_serves_an_index_from_an_in_memory_bucket() {
    serves_an_index_from(Arc::new(InMemory::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_plane_serves_an_index_from_a_local_file_system_bucket() {
    let bucket = tempfile::tempdir().unwrap();
    let store = LocalFileSystem::new_with_prefix(bucket.path()).unwrap();
    serves_an_index_from(Arc::new(store)).await;
}
