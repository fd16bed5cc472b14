//! Log sequence numbers ([`Index::last_lsn`]): one per change, in order, never given out
//! twice, across flushes and restarts.

use std::{sync::Arc, thread};

use super::*;
use crate::{
    DeleteRequest, Dimension, Engine, FlushPolicy, Metric, UpdateRequest, UpsertRequest,
    test_support::{object, vector},
};

fn config() -> IndexConfig {
    IndexConfig {
        dimension: Dimension::new(2).unwrap(),
        metric: Metric::Cosine,
    }
}

fn upsert(index: &Index, namespace: &str, id: &str) {
    index
        .upsert(UpsertRequest {
            namespace: namespace.into(),
            vectors: vec![vector(id, &[1.0, 0.5])],
        })
        .unwrap();
}

/// Changes of every kind, each checked to take exactly the next LSN; requests that change
/// nothing take none. Returns the LSN after them.
fn every_kind_of_change(index: &Index) -> u64 {
    let start = index.last_lsn();
    let step = |n: u64, what: &str| assert_eq!(index.last_lsn(), start + n, "after {what}");
    upsert(index, "films", "a");
    step(1, "an upsert");
    upsert(index, "", "b");
    step(2, "an upsert creating the default namespace");
    let missing = DeleteRequest {
        namespace: "films".into(),
        ids: vec!["nobody".into()],
        ..Default::default()
    };
    index.delete(missing).unwrap();
    step(2, "a delete of a missing id (nothing changed)");
    let dry_run = UpdateRequest {
        namespace: "films".into(),
        filter: Some(object(serde_json::json!({"seen": {"$exists": false}}))),
        set_metadata: Some(object(serde_json::json!({"seen": true}))),
        dry_run: true,
        ..Default::default()
    };
    index.update(dry_run).unwrap();
    step(2, "a dry run");
    let update = UpdateRequest {
        namespace: "films".into(),
        id: "a".into(),
        values: vec![0.0, 1.0],
        ..Default::default()
    };
    assert_eq!(index.update(update).unwrap(), 1);
    step(3, "an update");
    index.create_namespace("empty", None).unwrap();
    step(4, "a namespace created");
    index.delete_namespace("empty").unwrap();
    step(5, "a namespace deleted");
    let delete = DeleteRequest {
        namespace: "films".into(),
        ids: vec!["a".into()],
        ..Default::default()
    };
    index.delete(delete).unwrap();
    step(6, "a delete");
    start + 6
}

#[test]
fn an_in_memory_index_numbers_each_change() {
    let index = Index::new("movies", config());
    assert_eq!(index.last_lsn(), 0);
    assert_eq!(every_kind_of_change(&index), 6);
    // Refused requests take no number.
    let refused = UpsertRequest {
        namespace: "films".into(),
        vectors: vec![vector("bad", &[1.0])],
    };
    index.upsert(refused).unwrap_err();
    assert_eq!(index.last_lsn(), 6);
}

#[test]
fn a_durable_index_numbers_on_across_flushes_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let policy = FlushPolicy::default();
    let engine = Engine::open_with(dir.path(), policy);
    let index = engine.create_index("movies", config()).unwrap();
    assert_eq!(index.last_lsn(), 0);
    assert_eq!(every_kind_of_change(&index), 6);
    // Through a flush (the manifest keeps the LSN the deleted log files ended at)…
    assert!(index.flush().unwrap());
    assert_eq!(every_kind_of_change(&index), 12);
    drop((index, engine));

    // …and a restart replaying the log on top of it: nothing is numbered twice.
    let engine = Engine::open_with(dir.path(), policy);
    let index = engine.open_index("movies", config()).unwrap();
    assert_eq!(index.last_lsn(), 12);
    assert_eq!(every_kind_of_change(&index), 18);
    assert!(index.flush().unwrap());
    drop((index, engine));

    // A restart with nothing to replay: the manifest alone has it.
    let engine = Engine::open_with(dir.path(), policy);
    let index = engine.open_index("movies", config()).unwrap();
    assert_eq!(index.last_lsn(), 18);
    upsert(&index, "films", "z");
    assert_eq!(index.last_lsn(), 19);
}

/// Writers of several namespaces at once, sharing log syncs: each sees its LSNs grow, and
/// every write took exactly one.
#[test]
fn concurrent_writers_each_see_their_lsns_grow() {
    const WRITERS: usize = 4;
    const EACH: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path());
    let index = engine.create_index("movies", config()).unwrap();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let index = Arc::clone(&index);
            thread::spawn(move || {
                let mut last = 0;
                for i in 0..EACH {
                    upsert(&index, &format!("ns{writer}"), &format!("v{i}"));
                    let lsn = index.last_lsn();
                    assert!(lsn > last, "writer {writer}: {lsn} after {last}");
                    last = lsn;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    assert_eq!(index.last_lsn(), (WRITERS * EACH) as u64);
}
