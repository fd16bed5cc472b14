//! Backups and restores (see `backup`), on local disk and in a shared store (`InMemory`): a
//! restore holds exactly the records acknowledged before the backup, a backup taken during
//! writes is a consistent cut, backups outlive their index, and segments are shared.

use std::{
    collections::BTreeSet,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use object_store::{ObjectStore, memory::InMemory, path::Path as ObjectPath};
use tempfile::TempDir;

use super::*;
use crate::{
    DeleteRequest, Dimension, ErrorCode, FetchRequest, ListRequest, Metric, UpsertRequest,
    VectorInput,
};

fn config() -> IndexConfig {
    IndexConfig {
        dimension: Dimension::new(2).unwrap(),
        metric: Metric::Euclidean,
    }
}

/// Where a test keeps its engine: a data dir on local disk, or a bucket.
enum Place {
    Local(TempDir),
    Bucket(TempDir, Arc<dyn ObjectStore>),
}

impl Place {
    fn local() -> Place {
        Place::Local(tempfile::tempdir().unwrap())
    }

    fn bucket() -> Place {
        Place::Bucket(tempfile::tempdir().unwrap(), Arc::new(InMemory::new()))
    }

    /// A fresh engine on this place (as after a restart).
    fn engine(&self) -> Engine {
        let policy = FlushPolicy {
            wal_bytes: u64::MAX,
            max_segments: 2,
        };
        match self {
            Place::Local(dir) => Engine::open_with(dir.path().join("indexes"), policy),
            Place::Bucket(dir, store) => Engine::open_on_store(
                dir.path().join("indexes"),
                policy,
                Arc::clone(store),
                ObjectPath::from("larch"),
            ),
        }
    }
}

/// Index storage names with incarnations, as the catalog gives them.
const SOURCE: &str = "movies@default@0a1b";
const COPY: &str = "copy@default@2c3d";

fn upsert(index: &Index, namespace: &str, ids: &[&str]) {
    let vectors = ids
        .iter()
        .map(|id| VectorInput {
            id: (*id).into(),
            values: vec![id.len() as f32, 1.0],
            ..Default::default()
        })
        .collect();
    index
        .upsert(UpsertRequest {
            namespace: namespace.into(),
            vectors,
        })
        .unwrap();
}

/// Every id of `namespace`, sorted.
fn ids(index: &Index, namespace: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let page = index
            .list(ListRequest {
                namespace: namespace.into(),
                pagination_token: token,
                limit: Some(100),
                ..Default::default()
            })
            .unwrap();
        all.extend(page.ids);
        match page.next {
            Some(next) => token = Some(next),
            None => return all,
        }
    }
}

/// Back up, write more, restore: exactly the backed-up records, in a new index that takes
/// writes and survives a restart, while the source keeps its later writes.
fn backup_then_restore(place: &Place) {
    let engine = place.engine();
    let index = engine.create_index(SOURCE, config()).unwrap();
    upsert(&index, "a", &["1", "2"]);
    // Some records already in segments, some only in the log, a delete and an overwrite.
    assert!(index.flush().unwrap());
    upsert(&index, "a", &["3", "22"]);
    index
        .delete(DeleteRequest {
            namespace: "a".into(),
            ids: vec!["1".into()],
            ..Default::default()
        })
        .unwrap();
    upsert(&index, "b", &["x"]);

    let info = engine.backup_index(SOURCE, "bk-1").unwrap();
    assert_eq!(
        (info.record_count, info.namespace_count, info.config),
        (4, 2, config())
    );
    assert!(info.size_bytes > 0);
    assert_eq!(info.source_index, SOURCE);
    assert_eq!(engine.backup_info("bk-1").unwrap(), info);

    // Written after the backup: not in the restore.
    upsert(&index, "a", &["late"]);
    upsert(&index, "c", &["late"]);
    index
        .delete(DeleteRequest {
            namespace: "a".into(),
            ids: vec!["2".into()],
            ..Default::default()
        })
        .unwrap();

    let restored = engine.restore_index("bk-1", COPY).unwrap();
    assert_eq!(ids(&restored, "a"), ["2", "22", "3"]);
    assert_eq!(ids(&restored, "b"), ["x"]);
    assert!(ids(&restored, "c").is_empty());
    let fetched = restored
        .fetch(FetchRequest {
            namespace: "a".into(),
            ids: vec!["22".into()],
        })
        .unwrap();
    assert_eq!(fetched.vectors[0].values, [2.0, 1.0]);
    assert_eq!(ids(&index, "a"), ["22", "3", "late"]);

    // The restored index is an index like any other: writes, flushes, a restart.
    upsert(&restored, "a", &["new"]);
    assert!(restored.flush().unwrap());
    drop((index, restored, engine));
    let engine = place.engine();
    let restored = engine.open_index(COPY, config()).unwrap();
    assert_eq!(ids(&restored, "a"), ["2", "22", "3", "new"]);
    assert_eq!(ids(&restored, "b"), ["x"]);
    let source = engine.open_index(SOURCE, config()).unwrap();
    assert_eq!(ids(&source, "a"), ["22", "3", "late"]);
}

#[test]
fn a_restore_holds_exactly_the_backed_up_records_on_local_disk() {
    backup_then_restore(&Place::local());
}

#[test]
fn a_restore_holds_exactly_the_backed_up_records_in_a_bucket() {
    backup_then_restore(&Place::bucket());
}

/// Drops the source index (and compacts it before), then restores: the backup has its own
/// names for the segments.
fn backups_outlive_their_index(place: &Place) {
    let engine = place.engine();
    let index = engine.create_index(SOURCE, config()).unwrap();
    upsert(&index, "", &["a", "b"]);
    assert!(index.flush().unwrap());
    upsert(&index, "", &["c"]);
    engine.backup_index(SOURCE, "keep").unwrap();
    // Compaction deletes the segments the backup shares (max 2 per namespace).
    for id in ["d", "e"] {
        upsert(&index, "", &[id]);
        assert!(index.flush().unwrap());
    }
    drop(index);
    engine.drop_index(SOURCE).unwrap();

    let engine = place.engine();
    let restored = engine.restore_index("keep", SOURCE).unwrap();
    assert_eq!(ids(&restored, ""), ["a", "b", "c"]);
    // A second restore of the same backup into another name.
    let again = engine.restore_index("keep", COPY).unwrap();
    assert_eq!(ids(&again, ""), ["a", "b", "c"]);

    // Deleted: gone, and deleting again is no error.
    assert!(engine.delete_backup("keep").unwrap());
    assert!(!engine.delete_backup("keep").unwrap());
    let err = engine.backup_info("keep").unwrap_err();
    assert_eq!(
        (err.code(), err.to_string()),
        (ErrorCode::NotFound, "backup 'keep' not found".into())
    );
    // The restored indexes do not depend on the backup.
    drop((restored, again, engine));
    let engine = place.engine();
    assert_eq!(
        ids(&engine.open_index(COPY, config()).unwrap(), ""),
        ["a", "b", "c"]
    );
}

#[test]
fn backups_outlive_their_index_on_local_disk() {
    backups_outlive_their_index(&Place::local());
}

#[test]
fn backups_outlive_their_index_in_a_bucket() {
    backups_outlive_their_index(&Place::bucket());
}

#[cfg(unix)]
#[test]
fn local_backups_share_segment_files() {
    use std::os::unix::fs::MetadataExt;
    let place = Place::local();
    let engine = place.engine();
    let index = engine.create_index(SOURCE, config()).unwrap();
    upsert(&index, "", &["a"]);
    engine.backup_index(SOURCE, "shared").unwrap();
    let Place::Local(dir) = &place else {
        unreachable!()
    };
    let segment = |root: &Path| {
        let dir = root.join("segments");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files.pop().unwrap()
    };
    let original = segment(&dir.path().join("indexes").join(SOURCE));
    let copy = segment(&dir.path().join("backups/shared"));
    let (original, copy) = (
        std::fs::metadata(original).unwrap(),
        std::fs::metadata(copy).unwrap(),
    );
    assert_eq!(original.ino(), copy.ino(), "a hard link, not a copy");
    assert!(dir.path().join("backups/shared/backup.json").is_file());
}

/// Writers in several namespaces keep upserting ids 0, 1, 2, … in order while a backup is
/// taken: in the restore, each namespace holds a prefix of its ids (nothing out of order, so
/// the cut is one point in time) that includes every id acknowledged before the backup began
/// and no id whose upsert began after it ended.
fn consistent_cut(place: &Place) {
    const WRITERS: usize = 3;
    let engine = place.engine();
    let index = engine.create_index(SOURCE, config()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let started: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (index, stop, started, acked) = (
                Arc::clone(&index),
                Arc::clone(&stop),
                Arc::clone(&started),
                Arc::clone(&acked),
            );
            std::thread::spawn(move || {
                let mut next = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    started[w].store(next + 1, Ordering::SeqCst);
                    upsert(&index, &format!("ns{w}"), &[&format!("{next:08}")]);
                    next += 1;
                    acked[w].store(next, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Let every writer get going (no timing: wait for acknowledged writes).
    while acked.iter().any(|count| count.load(Ordering::SeqCst) < 20) {
        std::thread::yield_now();
    }
    let before: Vec<u64> = acked.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    engine.backup_index(SOURCE, "cut").unwrap();
    let after: Vec<u64> = started.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    // More writes after the backup, then stop.
    let target: Vec<u64> = acked
        .iter()
        .map(|c| c.load(Ordering::SeqCst) + 10)
        .collect();
    while acked
        .iter()
        .zip(&target)
        .any(|(count, target)| count.load(Ordering::SeqCst) < *target)
    {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().unwrap();
    }

    let restored = engine.restore_index("cut", COPY).unwrap();
    let mut total = 0;
    for w in 0..WRITERS {
        let got = ids(&restored, &format!("ns{w}"));
        let count = got.len() as u64;
        let prefix: Vec<String> = (0..count).map(|n| format!("{n:08}")).collect();
        assert_eq!(got, prefix, "writer {w}: a prefix of its ids");
        assert!(
            (before[w]..=after[w]).contains(&count),
            "writer {w}: {count} ids, acknowledged before {}, started by the end {}",
            before[w],
            after[w]
        );
        assert!(
            ids(&index, &format!("ns{w}")).len() as u64 > count,
            "writer {w} wrote on after the backup"
        );
        total += count;
    }
    assert_eq!(engine.backup_info("cut").unwrap().record_count, total);
    let distinct: BTreeSet<String> = (0..WRITERS)
        .flat_map(|w| ids(&restored, &format!("ns{w}")))
        .collect();
    assert!(!distinct.is_empty());
}

#[test]
fn a_backup_during_writes_is_a_consistent_cut_on_local_disk() {
    consistent_cut(&Place::local());
}

#[test]
fn a_backup_during_writes_is_a_consistent_cut_in_a_bucket() {
    consistent_cut(&Place::bucket());
}

#[test]
fn refusals_say_why() {
    let place = Place::local();
    let engine = place.engine();
    let index = engine.create_index(SOURCE, config()).unwrap();
    upsert(&index, "", &["a"]);
    engine.create_index(COPY, config()).unwrap();
    engine.backup_index(SOURCE, "one").unwrap();

    let cases = [
        (
            engine.backup_index("nope", "two").unwrap_err(),
            ErrorCode::NotFound,
            "index 'nope' not found",
        ),
        (
            engine.backup_index(SOURCE, "one").unwrap_err(),
            ErrorCode::AlreadyExists,
            "backup 'one' already exists",
        ),
        (
            engine.backup_index(SOURCE, "../x").unwrap_err(),
            ErrorCode::InvalidArgument,
            "backup_id: '../x' is not a backup id: 1 to 128 ASCII letters, digits, '-' or '_'",
        ),
        (
            engine.restore_index("none", "other@default@1").unwrap_err(),
            ErrorCode::NotFound,
            "backup 'none' not found",
        ),
        (
            engine.restore_index("one", COPY).unwrap_err(),
            ErrorCode::AlreadyExists,
            "index 'copy@default@2c3d' already exists",
        ),
        (
            Engine::new().backup_index(SOURCE, "one").unwrap_err(),
            ErrorCode::FailedPrecondition,
            "this engine keeps indexes in memory only, so it keeps no backups",
        ),
    ];
    for (err, code, message) in cases {
        assert_eq!((err.code(), err.to_string()), (code, message.to_owned()));
    }
    // A failed restore left nothing: the same name restores once free.
    engine.drop_index(COPY).unwrap();
    assert_eq!(ids(&engine.restore_index("one", COPY).unwrap(), ""), ["a"]);
}
