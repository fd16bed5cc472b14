//! Against a real S3-compatible server ([`crate::testing::s3`]; skipped without one): the
//! server's conditional writes are atomic, and shared documents keep every change there.

use std::sync::{Arc, Barrier};
use std::thread;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use crate::bucket::Bucket;
use crate::{SharedDocument, Written};

/// Racers per round, and rounds per test.
const RACERS: usize = 16;
const ROUNDS: usize = 20;

fn wait<F: std::future::Future>(future: F) -> F::Output {
    futures_executor::block_on(future)
}

/// What one racer's conditional PUT came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Won,
    /// AlreadyExists (a create) or Precondition (an update): the store refused it.
    Refused,
}

/// Starts `RACERS` threads at once (a barrier), each putting `{what}-{racer}` to `path` with
/// `mode`; returns each racer's outcome, by racer. The bytes differ from race to race: S3
/// ETags are digests of the content, so rewriting the same bytes would keep the ETag that an
/// `If-Match` expects.
fn race(bucket: &Bucket, path: &ObjectPath, mode: PutMode, what: &str) -> Vec<Outcome> {
    let start = Arc::new(Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|racer| {
            let (store, path, mode) = (Arc::clone(&bucket.store), path.clone(), mode.clone());
            let start = Arc::clone(&start);
            let bytes = format!("{what}-{racer}").into_bytes();
            thread::spawn(move || {
                let options = PutOptions {
                    mode,
                    ..PutOptions::default()
                };
                start.wait();
                let payload = PutPayload::from(bytes);
                match wait(store.put_opts(&path, payload, options)) {
                    Ok(_) => Outcome::Won,
                    Err(object_store::Error::AlreadyExists { .. })
                    | Err(object_store::Error::Precondition { .. }) => Outcome::Refused,
                    Err(err) => panic!("racer {racer}: {err}"),
                }
            })
        })
        .collect();
    racers
        .into_iter()
        .map(|racer| racer.join().expect("racer"))
        .collect()
}

/// Checks that a race `what` had one winner and that the object holds its write.
fn one_winner(bucket: &Bucket, path: &ObjectPath, outcomes: &[Outcome], what: &str) {
    let winners: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, outcome)| **outcome == Outcome::Won)
        .map(|(racer, _)| racer)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{what}: exactly one of {RACERS} racers must win, these did: {winners:?}"
    );
    let stored = wait(async { bucket.store.get(path).await?.bytes().await }).expect("read back");
    assert_eq!(
        stored.as_ref(),
        format!("{what}-{}", winners[0]).as_bytes(),
        "{what}: the object holds the winner's write"
    );
}

#[test]
fn s3_racing_conditional_creates_and_updates_have_exactly_one_winner() {
    let Some(test) = crate::testing::s3("s3_racing_conditional_writes") else {
        return;
    };
    let bucket = &test.bucket;
    for round in 0..ROUNDS {
        let path = bucket.path(&format!("race-{round}"));
        let what = format!("round {round} create");
        let created = race(bucket, &path, PutMode::Create, &what);
        one_winner(bucket, &path, &created, &what);

        // Everyone read the same version; each tries to replace it.
        let head = wait(bucket.store.head(&path)).expect("head");
        let version = UpdateVersion {
            e_tag: head.e_tag.clone(),
            version: head.version.clone(),
        };
        assert!(version.e_tag.is_some(), "the server gives ETags");
        let what = format!("round {round} update");
        let updated = race(bucket, &path, PutMode::Update(version.clone()), &what);
        one_winner(bucket, &path, &updated, &what);

        // The version everyone raced against is gone: replacing it again is refused.
        let stale = wait(bucket.store.put_opts(
            &path,
            PutPayload::from_static(b"stale"),
            PutOptions {
                mode: PutMode::Update(version),
                ..PutOptions::default()
            },
        ));
        assert!(
            matches!(stale, Err(object_store::Error::Precondition { .. })),
            "a stale ETag is refused: {stale:?}"
        );
    }
}

#[test]
fn s3_shared_document_keeps_every_change_of_racing_replicas() {
    let Some(test) = crate::testing::s3("s3_shared_document") else {
        return;
    };
    const REPLICAS: usize = 4;
    const CHANGES: u64 = 12;
    let start = Arc::new(Barrier::new(REPLICAS));
    let replicas: Vec<_> = (0..REPLICAS)
        .map(|_| {
            // Each replica opens the URL itself, as separate processes would.
            let url = test.url.clone();
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let bucket = crate::bucket::open(&url).expect("open");
                let doc = SharedDocument::in_bucket(&bucket, "counter");
                start.wait();
                let mut conflicts = 0;
                for _ in 0..CHANGES {
                    loop {
                        let (base, value) = newest(&doc);
                        match doc
                            .write_next(base, (value + 1).to_string().into_bytes())
                            .expect("write")
                        {
                            Written::Done(_) => break,
                            Written::Conflict => conflicts += 1,
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: u64 = replicas
        .into_iter()
        .map(|replica| replica.join().expect("replica"))
        .sum();
    let doc = SharedDocument::in_bucket(&test.bucket, "counter");
    let total = REPLICAS as u64 * CHANGES;
    assert_eq!(
        newest(&doc),
        (total, total),
        "every change is in the newest version"
    );
    assert!(
        doc.location()
            .ends_with(&format!("{}/counter", test.bucket.prefix)),
        "{}",
        doc.location()
    );
    assert!(
        conflicts > 0,
        "no conflicts: the replicas did not overlap, so nothing was tested"
    );
}

/// The newest version of `doc` and the number it holds (0, 0 for none).
fn newest(doc: &SharedDocument) -> (u64, u64) {
    doc.refresh(0).expect("refresh").map_or((0, 0), |snapshot| {
        let value = String::from_utf8(snapshot.bytes)
            .expect("utf-8")
            .parse()
            .expect("a number");
        (snapshot.version, value)
    })
}

#[test]
fn s3_the_server_passes_the_conditional_write_probe_and_it_leaves_nothing() {
    let Some(test) = crate::testing::s3("conditional_probe") else {
        return;
    };
    test.bucket.check_conditional_writes().unwrap();
    let left: Vec<_> =
        futures_executor::block_on_stream(test.bucket.store.list(Some(&test.bucket.prefix)))
            .collect();
    assert!(left.is_empty(), "the probe object is deleted: {left:?}");
}
