//! Indexes in a shared object store ([`Engine::open_on_store`]), on `InMemory` and on
//! `LocalFileSystem`: a fresh engine on the same store opens them with every acknowledged
//! write (the log is in the store too), every creation of a name has its own incarnation's
//! objects, and start-up deletes nothing it does not recognise (deletes are counted by
//! [`FaultyStore`], without faults). The object log's own behaviour (leases, fences) is in
//! `object_log_tests`.

use std::collections::BTreeMap;

use object_store::{
    ObjectStore, ObjectStoreExt, local::LocalFileSystem, memory::InMemory, path::Path as ObjectPath,
};
use tempfile::TempDir;

use super::*;
use crate::{
    Dimension, ErrorCode, FetchRequest, Metric, UpsertRequest, objlog::faulty::FaultyStore,
    storage::index_prefix, test_support::vector,
};

/// The first incarnation of `movies`, and the one it gets when created again.
const FIRST: &str = "movies@default@0a1b";
const SECOND: &str = "movies@default@9f8e";

fn config() -> IndexConfig {
    IndexConfig {
        dimension: Dimension::new(3).unwrap(),
        metric: Metric::Cosine,
    }
}

/// Never flushes on its own: the tests flush when they mean to.
fn policy() -> FlushPolicy {
    FlushPolicy {
        wal_bytes: u64::MAX,
        max_segments: usize::MAX,
    }
}

fn prefix() -> ObjectPath {
    ObjectPath::from("larch/test")
}

fn engine_on(logs: &TempDir, store: &Arc<dyn ObjectStore>) -> Engine {
    Engine::open_on_store(logs.path(), policy(), Arc::clone(store), prefix())
}

/// An in-memory store that notes every delete, as itself and as a plain store.
fn counting_store() -> (Arc<FaultyStore>, Arc<dyn ObjectStore>) {
    let counting = FaultyStore::new(Arc::new(InMemory::new()));
    let store: Arc<dyn ObjectStore> = Arc::clone(&counting) as _;
    (counting, store)
}

/// Creates index `FIRST` in `engine` and flushes `ids` into a segment.
fn created_and_flushed(engine: &Engine, ids: &[&str]) -> Arc<Index> {
    let index = engine.create_index(FIRST, config()).unwrap();
    upsert(&index, ids);
    assert!(index.flush().unwrap());
    index
}

fn upsert(index: &Index, ids: &[&str]) {
    let vectors = ids
        .iter()
        .enumerate()
        .map(|(i, id)| vector(id, &[1.0, i as f32, 0.5]))
        .collect();
    index
        .upsert(UpsertRequest {
            namespace: "films".into(),
            vectors,
        })
        .unwrap();
}

/// The ids of `ids` that `index` holds, in order.
fn present(index: &Index, ids: &[&str]) -> Vec<String> {
    let fetched = index
        .fetch(FetchRequest {
            namespace: "films".into(),
            ids: ids.iter().map(|id| (*id).to_owned()).collect(),
        })
        .unwrap();
    let mut found: Vec<String> = fetched.vectors.into_iter().map(|r| r.id).collect();
    found.sort();
    found
}

/// Every object in the store with its bytes.
fn objects(store: &Arc<dyn ObjectStore>) -> BTreeMap<String, Vec<u8>> {
    futures_executor::block_on(async {
        use futures_util::TryStreamExt;
        let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
        let mut objects = BTreeMap::new();
        for meta in listed {
            let bytes = store
                .get(&meta.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            objects.insert(meta.location.to_string(), bytes.to_vec());
        }
        objects
    })
}

/// The objects of index `name` only.
fn objects_of(store: &Arc<dyn ObjectStore>, name: &str) -> BTreeMap<String, Vec<u8>> {
    let own = format!("{}/", index_prefix(&prefix(), name).unwrap());
    objects(store)
        .into_iter()
        .filter(|(path, _)| path.starts_with(&own))
        .collect()
}

fn put(store: &Arc<dyn ObjectStore>, path: &str, bytes: &[u8]) {
    futures_executor::block_on(store.put(&ObjectPath::from(path), bytes.to_vec().into())).unwrap();
}

/// create → write → flush → reopen, on one kind of store.
fn a_fresh_engine_opens_the_index_from(store: Arc<dyn ObjectStore>) {
    let logs = TempDir::new().unwrap();
    {
        let engine = engine_on(&logs, &store);
        let index = created_and_flushed(&engine, &["a", "b"]);
        // A second flush replaces the manifest (a conditional swap where the store has one).
        upsert(&index, &["c"]);
        assert!(index.flush().unwrap());
        // Not flushed: only in the log, which is in the store too.
        upsert(&index, &["d"]);
        assert_eq!(index.storage_stats().unwrap().segments, 2);
    }
    let own = objects_of(&store, FIRST);
    let names: Vec<&str> = own
        .keys()
        .map(|path| path.rsplit_once("/0a1b/").unwrap().1)
        .collect();
    assert!(names.contains(&"index.meta"), "{names:?}");
    assert!(names.contains(&"manifest"), "{names:?}");
    assert!(names.contains(&"lease"), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("wal/")), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| n.starts_with("segments/")).count(),
        2,
        "{names:?}"
    );
    // Nothing of the index is on local disk.
    assert!(!logs.path().join(FIRST).exists());

    // The same process restarted: segments and log from the store.
    let engine = engine_on(&logs, &store);
    let index = engine.open_index(FIRST, config()).unwrap();
    assert_eq!(present(&index, &["a", "b", "c", "d"]), ["a", "b", "c", "d"]);
    drop((index, engine));

    // Another process with an empty local directory: the same.
    let elsewhere = TempDir::new().unwrap();
    let engine = engine_on(&elsewhere, &store);
    let index = engine.open_index(FIRST, config()).unwrap();
    assert_eq!(present(&index, &["a", "b", "c", "d"]), ["a", "b", "c", "d"]);
    // It writes and flushes on the log from where the manifest says replay starts.
    upsert(&index, &["e"]);
    assert!(index.flush().unwrap());
    drop((index, engine));
    let engine = engine_on(&elsewhere, &store);
    let index = engine.open_index(FIRST, config()).unwrap();
    assert_eq!(
        present(&index, &["a", "b", "c", "d", "e"]),
        ["a", "b", "c", "d", "e"]
    );
    drop((index, engine));

    // A different description is refused, and a name the store does not hold is not found.
    let other = IndexConfig {
        metric: Metric::Euclidean,
        ..config()
    };
    let fresh = engine_on(&TempDir::new().unwrap(), &store);
    let err = fresh.open_index(FIRST, other).unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    let err = fresh.open_index(SECOND, config()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    assert!(err.to_string().contains("not in the object store"), "{err}");
}

#[test]
fn a_fresh_engine_opens_an_index_from_an_in_memory_store() {
    a_fresh_engine_opens_the_index_from(Arc::new(InMemory::new()));
}

#[test]
fn a_fresh_engine_opens_an_index_from_a_local_file_system_store() {
    let bucket = TempDir::new().unwrap();
    let store = LocalFileSystem::new_with_prefix(bucket.path()).unwrap();
    a_fresh_engine_opens_the_index_from(Arc::new(store));
    assert!(
        bucket
            .path()
            .join("larch/test/indexes/default/movies/0a1b/index.meta")
            .is_file()
    );
}

#[test]
fn a_name_created_again_never_meets_the_old_objects() {
    let (counting, store) = counting_store();
    let logs = TempDir::new().unwrap();
    let engine = engine_on(&logs, &store);
    let old = created_and_flushed(&engine, &["old"]);
    let old_objects = objects_of(&store, FIRST);
    assert!(old_objects.len() >= 3, "{old_objects:?}");

    // Deleted in the catalog and created again: a new incarnation, while the old one's data
    // is still there (its removal pending). (The old writer's flush deleted the log batch it
    // covered.)
    let deletes_before = counting.counts().deletes;
    let new = engine.create_index(SECOND, config()).unwrap();
    assert_eq!(
        counting.counts().deletes,
        deletes_before,
        "creating deletes nothing"
    );
    assert!(
        present(&new, &["old"]).is_empty(),
        "the old data is never read"
    );
    upsert(&new, &["new"]);
    assert!(new.flush().unwrap());
    // (Its lease is renewed meanwhile: same object, new content.)
    let without_lease = |objects: BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Vec<u8>> {
        objects
            .into_iter()
            .filter(|(path, _)| !path.ends_with("/lease"))
            .collect()
    };
    assert_eq!(
        without_lease(objects_of(&store, FIRST)),
        without_lease(old_objects.clone()),
        "the old incarnation is untouched"
    );
    assert!(
        counting.deleted()[deletes_before..]
            .iter()
            .all(|path| path.contains("/9f8e/wal/")),
        "only the new writer's flush deleted, and only its own log: {:?}",
        counting.deleted()
    );

    // Dropping the old incarnation deletes exactly its objects.
    let new_objects = without_lease(objects_of(&store, SECOND));
    let deletes_before = counting.counts().deletes;
    drop(old);
    engine.drop_index(FIRST).unwrap();
    let mut deleted = counting.deleted().split_off(deletes_before);
    deleted.sort();
    assert_eq!(deleted, old_objects.keys().cloned().collect::<Vec<_>>());
    assert!(objects_of(&store, FIRST).is_empty());
    assert_eq!(without_lease(objects_of(&store, SECOND)), new_objects);

    // A fresh process finds only the new incarnation's data under the name.
    drop((new, engine));
    let engine = engine_on(&TempDir::new().unwrap(), &store);
    let index = engine.open_index(SECOND, config()).unwrap();
    assert_eq!(present(&index, &["old", "new"]), ["new"]);
    assert_eq!(
        engine.open_index(FIRST, config()).unwrap_err().code(),
        ErrorCode::NotFound
    );
}

#[test]
fn start_up_deletes_nothing_it_does_not_recognise() {
    let (counting, store) = counting_store();
    let logs = TempDir::new().unwrap();
    created_and_flushed(&engine_on(&logs, &store), &["a"]);
    // The first flush deleted the log batch it covers (the writer's own clean-up).
    let deletes_before = counting.counts().deletes;
    // Objects this engine does not know: an unlisted segment (another writer's, or left by
    // an interrupted flush), something beside the log objects, something else entirely,
    // another index.
    let own = index_prefix(&prefix(), FIRST).unwrap();
    let unknown = [
        format!("{own}/segments/seg-999999.seg"),
        format!("{own}/wal/readme.txt"),
        format!("{own}/notes/readme.txt"),
        "larch/test/indexes/default/books/77/index.meta".to_owned(),
        "elsewhere/file".to_owned(),
    ];
    for path in &unknown {
        put(&store, path, b"not ours");
    }
    let before = objects(&store);

    // Opened by this process again, and by another one. Opening writes (the lease, a
    // fence batch) but changes and deletes nothing that was there.
    let kept = |before: &BTreeMap<String, Vec<u8>>| {
        let now = objects(&store);
        for (path, bytes) in before {
            if !path.ends_with("/lease") {
                assert_eq!(now.get(path), Some(bytes), "{path}");
            }
        }
    };
    let elsewhere = TempDir::new().unwrap();
    for logs in [&logs, &elsewhere] {
        let engine = engine_on(logs, &store);
        let index = engine.open_index(FIRST, config()).unwrap();
        assert_eq!(present(&index, &["a"]), ["a"]);
        assert_eq!(index.storage_stats().unwrap().unlisted_segments, 1);
        assert_eq!(
            counting.counts().deletes,
            deletes_before,
            "{:?}",
            counting.deleted()
        );
        kept(&before);
    }
    // Created again (a repeated create of this incarnation): opened as it is.
    let engine = engine_on(&TempDir::new().unwrap(), &store);
    let index = engine.create_index(FIRST, config()).unwrap();
    assert_eq!(present(&index, &["a"]), ["a"]);
    assert_eq!(
        counting.counts().deletes,
        deletes_before,
        "{:?}",
        counting.deleted()
    );
    kept(&before);

    // The writer's own clean-up after a manifest swap still deletes what it replaced (a
    // compaction's inputs), and never the unknown objects; the next segment number passes
    // the unlisted one.
    upsert(&index, &["b"]);
    assert!(index.flush().unwrap());
    let manifest_after = objects_of(&store, FIRST);
    assert!(
        manifest_after
            .keys()
            .any(|path| path.ends_with("seg-1000000.seg")),
        "{manifest_after:?}"
    );
    let objects_now = objects(&store);
    for path in &unknown {
        assert_eq!(objects_now[path], b"not ours", "{path}");
    }
}

#[test]
fn creating_an_existing_incarnation_checks_its_description() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let engine = engine_on(&TempDir::new().unwrap(), &store);
    engine.create_index(FIRST, config()).unwrap();
    let other = engine_on(&TempDir::new().unwrap(), &store);
    let err = other
        .create_index(
            FIRST,
            IndexConfig {
                dimension: Dimension::new(4).unwrap(),
                ..config()
            },
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");

    // A name without an incarnation cannot be kept in a shared store.
    for name in ["movies", "movies@p1"] {
        let err = engine.create_index(name, config()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("incarnation"), "{err}");
    }
    assert!(engine.is_on_store());
    assert!(!Engine::open(TempDir::new().unwrap().path()).is_on_store());
}
