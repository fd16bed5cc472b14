//! A data plane whose indexes live in a shared object store ([`IndexStorage::Bucket`]): the
//! real per-index gRPC server over `InMemory` and `LocalFileSystem` stores. A second data plane
//! with an empty data directory of its own serves everything the first one acknowledged,
//! flushed or only in the object write-ahead log, and deleting the index deletes exactly its
//! incarnation's objects (issue 17).

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

/// A data plane keeping its indexes in `store` under `larch/`, with `logs` as its data
/// directory; every write flushes, so everything acknowledged is in segments too.
fn data_plane(store: &Arc<dyn ObjectStore>, logs: &tempfile::TempDir) -> DataPlane {
    data_plane_with(
        store,
        logs,
        FlushPolicy {
            wal_bytes: 1,
            ..FlushPolicy::default()
        },
    )
}

fn data_plane_with(
    store: &Arc<dyn ObjectStore>,
    logs: &tempfile::TempDir,
    policy: FlushPolicy,
) -> DataPlane {
    let storage = IndexStorage::Bucket {
        root: logs.path().join("indexes"),
        store: Arc::clone(store),
        prefix: Path::from("larch"),
    };
    let engine = storage.engine(policy);
    assert!(engine.is_on_store());
    DataPlane::new(engine, keys(), "127.0.0.1".parse().unwrap(), Metrics::new())
}

/// Attaches index `key` to `plane` (`mode`: create it or recover it from the store) and
/// returns a client for it once it serves.
async fn attach(plane: &DataPlane, key: &IndexKey, mode: AttachMode) -> DataClient {
    let port = plane
        .attach(key, config(), SearchParams::default(), 0, mode)
        .unwrap();
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
    let mut data = attach(&first, &key, AttachMode::Create).await;
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

    // A second data plane with an empty data directory recovers the index from the store.
    let second_logs = tempfile::tempdir().unwrap();
    let second = data_plane(&store, &second_logs);
    let mut data = attach(&second, &key, AttachMode::Recover).await;
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

/// Nothing flushed: every acknowledged write is only in the object write-ahead log, and a
/// data plane restarted with an empty data directory answers each of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_plane_restarted_with_an_empty_data_dir_answers_every_acknowledged_write() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let key = IndexKey::parse(larch_model::DEFAULT_PROJECT, "movies", "5e6f").unwrap();
    let never = FlushPolicy {
        wal_bytes: u64::MAX,
        ..FlushPolicy::default()
    };
    let first_dir = tempfile::tempdir().unwrap();
    let first = data_plane_with(&store, &first_dir, never);
    let mut data = attach(&first, &key, AttachMode::Create).await;
    let mut acked = Vec::new();
    for batch in 0..10u8 {
        let vectors: Vec<Vector> = (0..3u8)
            .map(|n| {
                vector(
                    &format!("v{batch}-{n}"),
                    [1.0, f32::from(batch), f32::from(n)],
                )
            })
            .collect();
        acked.extend(vectors.iter().map(|v| v.id.clone()));
        data.upsert(UpsertRequest {
            vectors,
            namespace: "films".into(),
        })
        .await
        .unwrap();
    }
    let stored = objects(&store).await;
    assert!(
        !stored.iter().any(|path| path.contains("/segments/")),
        "nothing was flushed: {stored:?}"
    );
    assert!(
        stored.iter().filter(|path| path.contains("/wal/")).count() > 10,
        "{stored:?}"
    );
    first.shutdown(std::time::Duration::from_secs(10)).await;
    drop((data, first));

    let second_dir = tempfile::tempdir().unwrap();
    let second = data_plane_with(&store, &second_dir, never);
    let mut data = attach(&second, &key, AttachMode::Recover).await;
    let fetched = data
        .fetch(FetchRequest {
            ids: acked.clone(),
            namespace: "films".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut found: Vec<String> = fetched.vectors.into_keys().collect();
    found.sort();
    acked.sort();
    assert_eq!(found, acked);
    assert_eq!(fetched_values(&mut data, "v7-2").await, [1.0, 7.0, 2.0]);
    second.shutdown(std::time::Duration::from_secs(10)).await;
}

async fn fetched_values(data: &mut DataClient, id: &str) -> Vec<f32> {
    let fetched = data
        .fetch(FetchRequest {
            ids: vec![id.into()],
            namespace: "films".into(),
        })
        .await
        .unwrap()
        .into_inner();
    fetched.vectors[id].values.clone()
}
