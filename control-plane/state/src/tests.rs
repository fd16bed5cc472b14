use std::sync::Arc;
use std::thread;

use super::*;

fn doc(dir: &Path) -> SharedDocument {
    SharedDocument::local(dir, "catalog").expect("open")
}

fn number(snapshot: &Snapshot) -> u64 {
    String::from_utf8(snapshot.bytes.clone())
        .expect("utf-8")
        .parse()
        .expect("a number")
}

/// Adds one to the number stored in `doc`, redoing the change on conflicts, the way the
/// catalog and the access file use a document. Returns how many conflicts it met.
fn increment(doc: &SharedDocument, known: &mut Option<Snapshot>) -> u64 {
    let mut conflicts = 0;
    loop {
        let base = known.as_ref().map_or(0, |s| s.version);
        if let Some(newer) = doc.refresh(base).expect("refresh") {
            *known = Some(newer);
        }
        let (base, value) = known.as_ref().map_or((0, 0), |s| (s.version, number(s)));
        let bytes = (value + 1).to_string().into_bytes();
        match doc.write_next(base, bytes.clone()).expect("write") {
            Written::Done(version) => {
                *known = Some(Snapshot { version, bytes });
                return conflicts;
            }
            Written::Conflict => conflicts += 1,
        }
    }
}

#[test]
fn an_empty_document_has_no_version_and_the_first_write_is_version_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = doc(dir.path());
    assert_eq!(doc.refresh(0).expect("refresh"), None);
    assert_eq!(
        doc.write_next(0, b"a".to_vec()).expect("write"),
        Written::Done(1)
    );
    let newest = doc.refresh(0).expect("refresh").expect("a version");
    assert_eq!((newest.version, newest.bytes), (1, b"a".to_vec()));
    // Up to date: nothing to reload.
    assert_eq!(doc.refresh(1).expect("refresh"), None);
    assert!(
        dir.path()
            .join("catalog/00000000000000000001.json")
            .is_file()
    );
}

#[test]
fn of_two_writers_on_the_same_version_exactly_one_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (doc(dir.path()), doc(dir.path()));
    assert_eq!(a.write_next(0, b"1".to_vec()).expect("a"), Written::Done(1));
    assert_eq!(
        b.write_next(0, b"x".to_vec()).expect("b"),
        Written::Conflict
    );
    assert_eq!(a.write_next(1, b"2".to_vec()).expect("a"), Written::Done(2));
    assert_eq!(
        b.write_next(1, b"y".to_vec()).expect("b"),
        Written::Conflict
    );
    // b catches up from what it knew and sees a's writes, not its own.
    let newest = b.refresh(1).expect("refresh").expect("newer");
    assert_eq!((newest.version, newest.bytes), (2, b"2".to_vec()));
}

#[test]
fn concurrent_read_modify_write_loses_no_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Arc::new(dir.path().to_owned());
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let root = Arc::clone(&root);
            thread::spawn(move || {
                // Each thread is its own "replica" with its own store handle and view.
                let doc = doc(&root);
                let mut known = None;
                (0..60).map(|_| increment(&doc, &mut known)).sum::<u64>()
            })
        })
        .collect();
    let conflicts: u64 = writers.into_iter().map(|w| w.join().expect("writer")).sum();
    let newest = doc(&root).refresh(0).expect("refresh").expect("a version");
    assert_eq!(
        number(&newest),
        240,
        "every increment is in the newest version"
    );
    assert_eq!(newest.version, 240);
    // The test is only meaningful if the writers really raced.
    assert!(conflicts > 0, "no conflicts: the writers did not overlap");
}

#[test]
fn old_versions_are_deleted_and_a_replica_far_behind_still_finds_the_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = doc(dir.path());
    let mut known = None;
    for _ in 0..200 {
        increment(&doc, &mut known);
    }
    let kept = doc.versions().expect("list");
    assert!(
        kept.len() as u64 <= KEEP + 8,
        "{} versions kept",
        kept.len()
    );
    assert_eq!(kept.iter().max(), Some(&200));
    let oldest = *kept.iter().min().expect("some");
    assert!(
        (kept.len() as u64) == 201 - oldest,
        "kept versions are contiguous"
    );
    // Version 3 was deleted: a replica that last read it lists and finds 200.
    let newest = doc.refresh(3).expect("refresh").expect("newer");
    assert_eq!((newest.version, number(&newest)), (200, 200));
    // A writer that still believes in version 3 cannot create version 4 behind the newest
    // without being told: 4 was deleted, so the create succeeds, but 3 is gone.
    assert!(matches!(
        doc.write_next(3, b"stale".to_vec()),
        Err(Error::Unknown(_))
    ));
    assert!(
        !doc.exists(4).expect("head"),
        "the stray write was taken back"
    );
    assert_eq!(
        doc.refresh(0).expect("refresh").map(|s| s.version),
        Some(200)
    );
}

#[test]
fn a_writer_behind_by_a_few_versions_conflicts_and_catches_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (doc(dir.path()), doc(dir.path()));
    let mut a_known = None;
    for _ in 0..5 {
        increment(&a, &mut a_known);
    }
    // b last saw version 2.
    assert_eq!(
        b.write_next(2, b"x".to_vec()).expect("b"),
        Written::Conflict
    );
    let newest = b.refresh(2).expect("refresh").expect("newer");
    assert_eq!(newest.version, 5);
}

#[test]
fn a_store_that_cannot_be_written_is_an_error_naming_the_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let err = SharedDocument::local(&file, "catalog").expect_err("a file is not a directory");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[cfg(unix)]
#[test]
fn local_documents_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    // A document directory left readable by everyone (an older version) is narrowed.
    std::fs::create_dir(dir.path().join("catalog")).expect("mkdir");
    std::fs::set_permissions(
        dir.path().join("catalog"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let doc = doc(dir.path());
    assert_eq!(
        doc.write_next(0, b"a".to_vec()).expect("write"),
        Written::Done(1)
    );
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&dir.path().join("catalog")), 0o700);
    assert_eq!(
        mode(&dir.path().join("catalog/00000000000000000001.json")),
        0o600
    );
}
