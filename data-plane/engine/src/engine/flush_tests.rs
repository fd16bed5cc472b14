//! Segments, manifest and compaction on a real temporary directory (and on
//! an in-memory object store): flushed indexes reopen unchanged, compaction
//! keeps segments bounded and drops dead records, interrupted flushes lose
//! nothing, and damaged segments stop recovery.

use std::{
    fs,
    path::{Path, PathBuf},
};

use object_store::{ObjectStore, memory::InMemory};
use serde_json::json;
use tempfile::TempDir;

use super::*;
use crate::{
    DeleteRequest, Dimension, ErrorCode, FetchRequest, FlushPolicy, Metric, StorageStats,
    UpdateRequest, UpsertRequest, VectorInput, manifest, segment,
    test_support::{object, snapshot, sparse, vector, vector_with},
    wal,
};

const NAME: &str = "movies";

fn config() -> IndexConfig {
    IndexConfig {
        dimension: Dimension::new(3).unwrap(),
        metric: Metric::DotProduct,
    }
}

fn policy(wal_bytes: u64, max_segments: usize) -> FlushPolicy {
    FlushPolicy {
        wal_bytes,
        max_segments,
    }
}

/// Flushes on every write, and never compacts.
const EVERY_WRITE: FlushPolicy = FlushPolicy {
    wal_bytes: 1,
    max_segments: usize::MAX,
};

fn index_dir(root: &TempDir) -> PathBuf {
    root.path().join(NAME)
}

fn create(root: &TempDir, policy: FlushPolicy) -> Arc<Index> {
    Engine::open_with(root.path(), policy)
        .create_index(NAME, config())
        .unwrap()
}

fn reopen(root: &TempDir, policy: FlushPolicy) -> Result<Arc<Index>> {
    Engine::open_with(root.path(), policy).open_index(NAME, config())
}

fn upsert(index: &Index, namespace: &str, vectors: Vec<VectorInput>) {
    index
        .upsert(UpsertRequest {
            namespace: namespace.into(),
            vectors,
        })
        .unwrap();
}

fn delete_ids(index: &Index, namespace: &str, ids: Vec<String>) {
    index
        .delete(DeleteRequest {
            namespace: namespace.into(),
            ids,
            ..Default::default()
        })
        .unwrap();
}

fn stats(index: &Index) -> StorageStats {
    index.storage_stats().expect("a durable index")
}

/// The segment files in the directory, sorted.
fn segment_files(root: &TempDir) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(index_dir(root).join(segment::DIR)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// The log files in the directory, sorted.
fn wal_files(root: &TempDir) -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(index_dir(root))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("wal-"))
        .collect();
    files.sort();
    files
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

fn corruption(err: Error) -> (PathBuf, u64, String) {
    match err {
        Error::Corrupt {
            file,
            offset,
            reason,
        } => (file, offset, reason),
        other => panic!("expected corruption, got {other}"),
    }
}

/// Every kind of change: records with sparse values and metadata, updates
/// by id and by filter, deletes by id, by filter and all, explicit
/// namespaces with schema fields, and deleted and re-created namespaces.
fn change_everything(index: &Index) {
    upsert(
        index,
        "",
        vec![
            vector_with(
                "a",
                &[1.0, 0.0, 0.0],
                json!({"genre": "drama", "year": 2019}),
            ),
            vector_with(
                "b",
                &[0.0, 1.0, 0.0],
                json!({"genre": "comedy", "tags": ["x"]}),
            ),
            vector("c", &[0.0, 0.0, 1.0]),
            VectorInput {
                sparse_values: Some(sparse(&[(3, 0.5), (9, 1.5)])),
                ..vector_with("d", &[0.5, 0.5, 0.5], json!({"flag": true}))
            },
        ],
    );
    upsert(
        index,
        "films",
        vec![vector("x", &[1.0, 1.0, 1.0]), vector("y", &[2.0, 0.0, 1.0])],
    );
    index
        .update(UpdateRequest {
            id: "a".into(),
            values: vec![3.0, 2.0, 1.0],
            sparse_values: Some(sparse(&[(1, 2.0)])),
            set_metadata: Some(object(json!({"year": 2020, "new": "yes"}))),
            ..Default::default()
        })
        .unwrap();
    index
        .update(UpdateRequest {
            filter: Some(object(json!({"genre": {"$in": ["drama", "comedy"]}}))),
            set_metadata: Some(object(json!({"seen": true}))),
            ..Default::default()
        })
        .unwrap();
    delete_ids(index, "", vec!["c".into(), "missing".into()]);
    index
        .delete(DeleteRequest {
            filter: Some(object(json!({"flag": true}))),
            ..Default::default()
        })
        .unwrap();
    index
        .delete(DeleteRequest {
            namespace: "films".into(),
            delete_all: true,
            ..Default::default()
        })
        .unwrap();
    upsert(index, "films", vec![vector("z", &[0.0, 2.0, 2.0])]);
    index
        .create_namespace("empty", Some(vec!["genre".into(), "year".into()]))
        .unwrap();
    index.create_namespace("gone", None).unwrap();
    upsert(index, "gone", vec![vector("g", &[1.0, 1.0, 0.0])]);
    index.delete_namespace("gone").unwrap();
    upsert(index, "again", vec![vector("old", &[1.0, 2.0, 3.0])]);
    index.delete_namespace("again").unwrap();
    upsert(index, "again", vec![vector("new", &[3.0, 2.0, 1.0])]);
}

#[test]
fn flushed_indexes_reopen_unchanged() {
    for policy in [EVERY_WRITE, policy(600, 3)] {
        let root = TempDir::new().unwrap();
        let before = {
            let index = create(&root, policy);
            change_everything(&index);
            let stats = stats(&index);
            assert!(stats.flushes > 0, "{policy:?}: {stats:?}");
            assert!(stats.segments > 0 && stats.segment_bytes > 0, "{stats:?}");
            assert!(index_dir(&root).join(manifest::PATH).exists());
            assert_eq!(
                segment_files(&root).len(),
                stats.segments,
                "no unlisted segment is left"
            );
            // Only the log files that segments do not cover are kept.
            assert_eq!(wal_files(&root).len() as u64, stats.wal_files);
            snapshot(&index)
        };
        let index = reopen(&root, policy).unwrap();
        assert_eq!(snapshot(&index), before, "{policy:?}");
        assert_eq!(
            index.describe_namespace("empty").unwrap().schema_fields,
            Some(vec!["genre".into(), "year".into()])
        );

        // Writes after recovery flush on top, and replay too.
        upsert(&index, "", vec![vector("e", &[1.0, 1.0, 0.0])]);
        index.delete_namespace("empty").unwrap();
        index.flush().unwrap();
        let after = snapshot(&index);
        drop(index);
        assert_eq!(snapshot(&reopen(&root, policy).unwrap()), after);
    }
}

#[test]
fn a_flush_covers_exactly_the_log_it_deletes() {
    let root = TempDir::new().unwrap();
    let index = create(&root, FlushPolicy::default());
    assert!(!index.flush().unwrap(), "nothing to flush yet");
    upsert(&index, "", vec![vector("a", &[1.0, 0.0, 0.0])]);
    assert_eq!(wal_files(&root), ["wal-000001.log"]);
    assert!(index.flush().unwrap());
    let stats = stats(&index);
    assert_eq!(
        (stats.segments, stats.manifest_generation, stats.flushes),
        (1, 1, 1)
    );
    assert_eq!(wal_files(&root), ["wal-000002.log"]);
    assert_eq!(stats.wal_bytes, wal::HEADER_LEN);
    assert!(!index.flush().unwrap(), "nothing new");
    // These stay in the log only.
    upsert(&index, "", vec![vector("b", &[0.0, 1.0, 0.0])]);
    let before = snapshot(&index);
    drop(index);

    // A log file the segments cover, left by a crash before its deletion,
    // and a half-created one are ignored and deleted.
    let dir = index_dir(&root);
    fs::write(dir.join(wal::file_name(1)), b"stale").unwrap();
    fs::write(dir.join("wal-000003.log.tmp"), b"torn").unwrap();
    let index = reopen(&root, FlushPolicy::default()).unwrap();
    assert_eq!(snapshot(&index), before);
    assert_eq!(wal_files(&root), ["wal-000002.log"]);

    // The log file replay must start from is gone: corruption, naming it.
    drop(index);
    fs::remove_file(dir.join(wal::file_name(2))).unwrap();
    let (file, _, reason) = corruption(reopen(&root, FlushPolicy::default()).unwrap_err());
    assert_eq!(file, dir.join(wal::file_name(2)));
    assert!(reason.starts_with("missing"), "{reason}");
}

#[test]
fn compaction_bounds_segments_and_drops_dead_records() {
    const MAX: usize = 3;
    let root = TempDir::new().unwrap();
    let policy = policy(1, MAX);
    let id = |i: usize| format!("record-{i:04}");
    let index = create(&root, policy);
    for batch in 0..12 {
        let vectors = (batch * 20..batch * 20 + 20)
            .map(|i| vector_with(&id(i), &[i as f32, 1.0, 0.5], json!({"n": i})))
            .collect();
        upsert(&index, "", vectors);
        // Overwrite some earlier records, so old versions pile up.
        upsert(&index, "", vec![vector(&id(batch), &[9.0, 9.0, 9.0])]);
        assert!(stats(&index).segments <= MAX, "{:?}", stats(&index));
    }
    let full = stats(&index);
    assert!(full.compactions > 0, "{full:?}");
    assert_eq!(segment_files(&root).len(), full.segments);

    // Delete most records; enough flushes follow to compact them away.
    let deleted: Vec<String> = (0..240).filter(|i| i % 10 != 0).map(id).collect();
    for chunk in deleted.chunks(50) {
        delete_ids(&index, "", chunk.to_vec());
    }
    // More flushes of the same namespace, so a compaction merges the deletes.
    for _ in 0..=MAX {
        upsert(&index, "", vec![vector("tick", &[1.0, 0.0, 0.0])]);
    }
    index.flush().unwrap();
    let shrunk = stats(&index);
    assert!(shrunk.compactions > full.compactions, "{shrunk:?}");
    assert!(
        shrunk.segment_bytes * 3 < full.segment_bytes,
        "{shrunk:?} vs {full:?}"
    );
    // Deleted records and overwritten versions are gone from the files.
    let files: Vec<Vec<u8>> = segment_files(&root)
        .iter()
        .map(|f| fs::read(f).unwrap())
        .collect();
    for gone in &deleted {
        assert!(
            !files.iter().any(|f| contains(f, gone)),
            "{gone} is still stored"
        );
    }
    // Vectors are 4-byte aligned in the files (after an 80-byte header).
    let nines: usize = files
        .iter()
        .map(|f| {
            f.chunks_exact(4)
                .filter(|c| *c == 9.0f32.to_le_bytes())
                .count()
        })
        .sum();
    assert_eq!(nines, 6, "only record-0000 and record-0010 keep their 9s");

    let before = snapshot(&index);
    assert_eq!(before.stats.total_vector_count, 25);
    drop(index);
    assert_eq!(snapshot(&reopen(&root, policy).unwrap()), before);
}

#[test]
fn a_crash_between_segment_and_manifest_loses_nothing() {
    let root = TempDir::new().unwrap();
    let index = create(&root, FlushPolicy::default());
    upsert(&index, "", vec![vector("a", &[1.0, 0.0, 0.0])]);
    index.flush().unwrap();
    upsert(&index, "", vec![vector("b", &[0.0, 1.0, 0.0])]);
    upsert(&index, "films", vec![vector("x", &[0.0, 0.0, 1.0])]);
    delete_ids(&index, "", vec!["a".into()]);
    let before = snapshot(&index);

    // The segments are written, the manifest swap fails.
    let segments = index.durable_parts().unwrap().segments();
    segments.fail_manifest(true);
    let err = index.flush().unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert_eq!(
        segment_files(&root).len(),
        3,
        "two orphans beside the live one"
    );
    assert_eq!(stats(&index).segments, 1);
    assert_eq!(snapshot(&index), before, "memory is untouched");
    drop(index);

    // A restart deletes the orphans and replays the log that still holds it all.
    let index = reopen(&root, FlushPolicy::default()).unwrap();
    assert_eq!(snapshot(&index), before);
    assert_eq!(segment_files(&root).len(), 1);
    drop(index);

    // Without a restart, the next flush writes what the failed one cut.
    let index = reopen(&root, FlushPolicy::default()).unwrap();
    let segments = index.durable_parts().unwrap().segments();
    upsert(&index, "", vec![vector("c", &[1.0, 1.0, 0.0])]);
    segments.fail_manifest(true);
    assert!(index.flush().is_err());
    segments.fail_manifest(false);
    upsert(&index, "", vec![vector("d", &[1.0, 1.0, 1.0])]);
    assert!(index.flush().unwrap());
    let before = snapshot(&index);
    drop(index);
    let index = reopen(&root, FlushPolicy::default()).unwrap();
    assert_eq!(snapshot(&index), before);
    assert_eq!(segment_files(&root).len(), stats(&index).segments);
    assert_eq!(wal_files(&root).len(), 1);
}

#[test]
fn a_damaged_or_missing_segment_stops_recovery() {
    let root = TempDir::new().unwrap();
    let index = create(&root, FlushPolicy::default());
    upsert(&index, "", vec![vector("a", &[1.0, 0.0, 0.0])]);
    index.flush().unwrap();
    upsert(&index, "", vec![vector("b", &[0.0, 1.0, 0.0])]);
    index.flush().unwrap();
    drop(index);
    let files = segment_files(&root);
    assert_eq!(files.len(), 2);
    let original = fs::read(&files[1]).unwrap();

    // A flipped byte in the vectors, which start right after the 80-byte header.
    let mut bad = original.clone();
    bad[81] ^= 0x10;
    fs::write(&files[1], &bad).unwrap();
    // An unlisted file survives a failed open: nothing is deleted then.
    let orphan = index_dir(&root).join(segment::path(99));
    fs::write(&orphan, &original).unwrap();
    let engine = Engine::open(root.path());
    let err = engine.open_index(NAME, config()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal);
    assert!(
        err.to_string().contains("seg-000002.seg: at byte 80"),
        "{err}"
    );
    let (file, offset, reason) = corruption(err);
    assert_eq!((file, offset), (files[1].clone(), 80));
    assert_eq!(reason, "the vectors block fails its checksum");
    assert_eq!(engine.index(NAME).unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(
        fs::read(&files[1]).unwrap(),
        bad,
        "nothing was repaired away"
    );
    assert!(orphan.exists());

    // A flipped byte in the header, and a cut file.
    let mut bad = original.clone();
    bad[20] ^= 0x01;
    fs::write(&files[1], &bad).unwrap();
    assert_eq!(
        corruption(reopen(&root, FlushPolicy::default()).unwrap_err()).1,
        0
    );
    fs::write(&files[1], &original[..original.len() - 1]).unwrap();
    let (_, _, reason) = corruption(reopen(&root, FlushPolicy::default()).unwrap_err());
    assert!(reason.contains("but the manifest says"), "{reason}");

    // A listed segment that is gone.
    fs::remove_file(&files[1]).unwrap();
    let (file, _, reason) = corruption(reopen(&root, FlushPolicy::default()).unwrap_err());
    assert_eq!(file, files[1]);
    assert!(reason.starts_with("missing"), "{reason}");

    // A damaged manifest.
    fs::write(&files[1], &original).unwrap();
    assert!(reopen(&root, FlushPolicy::default()).is_ok());
    assert!(!orphan.exists());
    let manifest = index_dir(&root).join(manifest::PATH);
    let mut bytes = fs::read(&manifest).unwrap();
    bytes[14] ^= 0x01;
    fs::write(&manifest, &bytes).unwrap();
    let (file, _, reason) = corruption(reopen(&root, FlushPolicy::default()).unwrap_err());
    assert_eq!(file, manifest);
    assert_eq!(reason, "the manifest fails its checksum");
}

#[test]
fn an_in_memory_object_store_holds_segments_too() {
    // An index in a shared store needs an incarnation in its name.
    const SHARED: &str = "movies@default@0a1b";
    let root = TempDir::new().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let open = || {
        Engine::open_on_store(
            root.path(),
            policy(400, 2),
            Arc::clone(&store),
            object_store::path::Path::default(),
        )
    };
    let before = {
        let engine = open();
        let index = engine.create_index(SHARED, config()).unwrap();
        change_everything(&index);
        index.flush().unwrap();
        assert!(stats(&index).segments > 0);
        snapshot(&index)
    };
    // Nothing of the index is local.
    let local = root.path().join(SHARED);
    assert!(!local.join(segment::DIR).exists());
    assert!(!local.join(manifest::PATH).exists());
    assert!(!local.join(crate::dir::META_FILE).exists());

    let engine = open();
    let index = engine.open_index(SHARED, config()).unwrap();
    assert_eq!(snapshot(&index), before);
    let fetched = index
        .fetch(FetchRequest {
            namespace: "films".into(),
            ids: vec!["z".into()],
        })
        .unwrap();
    assert_eq!(fetched.vectors[0].values, [0.0, 2.0, 2.0]);

    // Dropping the index deletes its objects.
    drop(index);
    engine.drop_index(SHARED).unwrap();
    let storage = crate::storage::ObjectStorage::shared(
        store,
        object_store::path::Path::from("indexes/default/movies/0a1b"),
    );
    assert!(
        crate::storage::Storage::list(&storage, "")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_dropped_index_writes_no_more_files() {
    let root = TempDir::new().unwrap();
    let engine = Engine::open_with(root.path(), EVERY_WRITE);
    let index = engine.create_index(NAME, config()).unwrap();
    upsert(&index, "", vec![vector("a", &[1.0, 0.0, 0.0])]);
    engine.drop_index(NAME).unwrap();
    assert!(!index_dir(&root).exists());
    // A request that still holds the index may log, but flushes nothing.
    assert!(!index.flush().unwrap());
    assert!(!index_dir(&root).join(segment::DIR).exists());
    assert!(Path::new(root.path()).read_dir().unwrap().next().is_none());
}

#[test]
fn concurrent_writers_flush_without_losing_anything() {
    let root = TempDir::new().unwrap();
    let policy = policy(1500, 2);
    let index = create(&root, policy);
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let index = Arc::clone(&index);
            std::thread::spawn(move || {
                for i in 0..40 {
                    let id = format!("{writer}-{i}");
                    let own = format!("ns{writer}");
                    upsert(&index, &own, vec![vector(&id, &[1.0, i as f32, 0.0])]);
                    // A namespace all writers share, with overwrites and deletes.
                    upsert(
                        &index,
                        "shared",
                        vec![vector(&format!("s{}", i % 7), &[i as f32, 1.0, 1.0])],
                    );
                    if i % 5 == 4 {
                        delete_ids(&index, &own, vec![format!("{writer}-{}", i - 2)]);
                    }
                    if writer == 0 && i % 13 == 12 {
                        index.flush().unwrap();
                    }
                }
            })
        })
        .collect();
    let reader = {
        let index = Arc::clone(&index);
        std::thread::spawn(move || {
            for _ in 0..200 {
                snapshot(&index);
            }
        })
    };
    writers.into_iter().for_each(|t| t.join().unwrap());
    reader.join().unwrap();
    let before = snapshot(&index);
    assert_eq!(before.stats.total_vector_count, 4 * 32 + 7);
    let stats = stats(&index);
    assert!(stats.flushes > 3 && stats.compactions > 0, "{stats:?}");
    drop(index);
    assert_eq!(snapshot(&reopen(&root, policy).unwrap()), before);
}

#[test]
fn writes_wait_while_failing_flushes_let_the_log_grow() {
    let root = TempDir::new().unwrap();
    let policy = policy(2048, usize::MAX);
    let index = create(&root, policy);
    // Segments cannot be written: a file stands where their directory should be.
    let segments = index_dir(&root).join(segment::DIR);
    if segments.exists() {
        fs::remove_dir_all(&segments).unwrap();
    }
    fs::write(&segments, b"not a directory").unwrap();
    // Batches of 1000 records, so the backlog limit is reached in a few dozen fsyncs.
    let batch = |first: usize| -> Vec<VectorInput> {
        (first..first + 1000)
            .map(|i| vector(&format!("v{i}"), &[1.0, 2.0, i as f32]))
            .collect()
    };
    let mut acknowledged = 0;
    let refusal = loop {
        let request = UpsertRequest {
            namespace: "ns".into(),
            vectors: batch(acknowledged),
        };
        match index.upsert(request) {
            Ok(_) => acknowledged += 1000,
            Err(err) => break err,
        }
        if acknowledged % 5000 == 0 {
            // Past the failed flush's retry delay: the next write's flush rotates the log
            // again and fails again, so the backlog spans several files, none of them
            // holding the limit on its own.
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        assert!(acknowledged < 1_000_000, "the log grew without bound");
    };
    assert_eq!(refusal.code(), ErrorCode::ResourceExhausted, "{refusal}");
    assert_eq!(refusal.retry_after(), Some(crate::pressure::LOG_RETRY));
    assert!(
        refusal
            .to_string()
            .contains("faster than it can flush: its write-ahead log holds "),
        "{refusal}"
    );
    assert!(stats(&index).wal_files >= 2, "{:?}", stats(&index));
    let ids = |range: std::ops::Range<usize>| range.map(|i| format!("v{i}")).collect::<Vec<_>>();
    // Reads are served, deletes are taken.
    let fetched = index
        .fetch(FetchRequest {
            namespace: "ns".into(),
            ids: ids(acknowledged - 1000..acknowledged),
        })
        .unwrap();
    assert_eq!(fetched.vectors.len(), 1000);
    delete_ids(&index, "ns", ids(0..10));

    // Once segments can be written again, the next write flushes the backlog and goes
    // through (after the failed flush's retry delay).
    fs::remove_file(&segments).unwrap();
    fs::create_dir(&segments).unwrap();
    let started = std::time::Instant::now();
    loop {
        let request = UpsertRequest {
            namespace: "ns".into(),
            vectors: vec![vector("after", &[3.0, 2.0, 1.0])],
        };
        match index.upsert(request) {
            Ok(_) => break,
            Err(err) if err.code() == ErrorCode::ResourceExhausted => {
                assert!(started.elapsed().as_secs() < 30, "still refused: {err}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(err) => panic!("{err}"),
        }
    }
    assert_eq!(stats(&index).wal_files, 1, "{:?}", stats(&index));
    drop(index);
    let index = reopen(&root, policy).unwrap();
    let fetched = index
        .fetch(FetchRequest {
            namespace: "ns".into(),
            ids: ids(10..acknowledged)
                .into_iter()
                .chain(["after".to_owned()])
                .take(1000)
                .collect(),
        })
        .unwrap();
    assert_eq!(fetched.vectors.len(), 1000);
    let stats = index.describe_stats(None).unwrap();
    assert_eq!(stats.total_vector_count as usize, acknowledged - 10 + 1);
}
