//! Indexes on a shared store write their log to the store (issue 17): a write is
//! acknowledged once its batch is a `wal/<seq>` object, a fresh process with an empty local
//! directory recovers every acknowledged write, one process at a time writes an index
//! (its lease), and a writer that lost the index to another is stopped by the fence.
//! Leases are timed by fake clocks: nothing here waits for a TTL to pass.

use std::{collections::BTreeSet, time::Duration};

use object_store::{ObjectStore, memory::InMemory, path::Path as ObjectPath};
use tempfile::TempDir;

use super::*;
use crate::{
    Dimension, ErrorCode, FetchRequest, Metric, ObjectLogConfig, UpsertRequest,
    objlog::{
        clock::FakeClock,
        faulty::{Failure, Fault, FaultyStore, Op},
    },
    storage::index_prefix,
    test_support::vector,
};

const NAME: &str = "movies@default@0a1b";
/// Long enough that no lease is renewed (every TTL/3, in real time) while a test runs:
/// only the fake clocks move the leases.
const TTL: Duration = Duration::from_secs(3600);

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

/// An engine on `store` with a fresh, empty local directory, its leases timed by `clock`.
fn engine_on(store: &Arc<dyn ObjectStore>, clock: &Arc<FakeClock>) -> (Engine, TempDir) {
    let root = TempDir::new().unwrap();
    let engine = Engine::open_on_store(
        root.path(),
        policy(),
        Arc::clone(store),
        ObjectPath::from("larch"),
    )
    .with_object_log(ObjectLogConfig {
        lease_ttl: TTL,
        holder: "test-pod".into(),
        // The tests run the follower rounds themselves.
        tail_interval: TTL,
        ..ObjectLogConfig::default()
    })
    .with_log_clock(Arc::clone(clock) as _);
    (engine, root)
}

fn upsert(index: &Index, id: &str) -> Result<()> {
    index
        .upsert(UpsertRequest {
            namespace: "films".into(),
            vectors: vec![vector(id, &[1.0, 0.5, 0.25])],
        })
        .map(|_| ())
}

/// The index once `engine`'s follower round took it over (its own follower thread may
/// get there first).
fn taken_over(engine: &Engine) -> Arc<Index> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        engine.follow_round();
        let index = engine.index(NAME).unwrap();
        if index.follower_status().is_none() {
            return index;
        }
        assert!(std::time::Instant::now() < deadline, "never taken over");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The ids `index` holds among `ids`, sorted.
fn present(index: &Index, ids: &BTreeSet<String>) -> BTreeSet<String> {
    let fetched = index
        .fetch(FetchRequest {
            namespace: "films".into(),
            ids: ids.iter().cloned().collect(),
        })
        .unwrap();
    fetched.vectors.into_iter().map(|r| r.id).collect()
}

/// The sequence numbers of the log objects of index `NAME`.
fn log_objects(store: &Arc<dyn ObjectStore>) -> Vec<u64> {
    let dir = index_prefix(&ObjectPath::from("larch"), NAME)
        .unwrap()
        .join("wal");
    let mut seqs: Vec<u64> = futures_executor::block_on_stream(store.list(Some(&dir)))
        .map(|meta| {
            let meta = meta.unwrap();
            meta.location.filename().unwrap().parse().unwrap()
        })
        .collect();
    seqs.sort_unstable();
    seqs
}

fn acknowledged_writes_survive_on(store: Arc<dyn ObjectStore>) {
    let clock = FakeClock::new();
    let mut acked = BTreeSet::new();
    {
        let (engine, root) = engine_on(&store, &clock);
        let index = engine.create_index(NAME, config()).unwrap();
        for n in 0..20 {
            let id = format!("a{n}");
            upsert(&index, &id).unwrap();
            acked.insert(id);
        }
        // No local file at all: the log is in the store.
        assert_eq!(std::fs::read_dir(root.path()).map_or(0, Iterator::count), 0);
        // The fence at 1, then one batch per write (one writer at a time: no grouping).
        assert_eq!(log_objects(&store), (1..=21).collect::<Vec<_>>());
    }
    // A fresh process with an empty local directory.
    let (engine, _root) = engine_on(&store, &clock);
    let index = engine.open_index(NAME, config()).unwrap();
    assert_eq!(present(&index, &acked), acked);

    // A flush: replay starts after the cut, and the batches below it go (but no fence).
    assert!(index.flush().unwrap());
    let start = index.storage_stats().unwrap();
    assert_eq!(start.wal_files, 0, "{start:?}");
    // Kept until the next flush: followers may still be reading them.
    assert_eq!(log_objects(&store), (1..=22).collect::<Vec<_>>());
    for n in 0..5 {
        let id = format!("b{n}");
        upsert(&index, &id).unwrap();
        acked.insert(id);
    }
    assert_eq!(log_objects(&store), (1..=27).collect::<Vec<_>>());
    assert!(index.flush().unwrap());
    assert_eq!(
        log_objects(&store),
        [1, 22, 23, 24, 25, 26, 27],
        "the batches the first flush covered go, but no fence of either writer"
    );
    drop((index, engine));

    let (engine, _root) = engine_on(&store, &clock);
    let index = engine.open_index(NAME, config()).unwrap();
    assert_eq!(present(&index, &acked), acked);
    assert_eq!(index.storage_stats().unwrap().segments, 2);
}

#[test]
fn acknowledged_writes_survive_a_new_process_with_an_empty_directory() {
    acknowledged_writes_survive_on(Arc::new(InMemory::new()));
}

#[test]
fn acknowledged_writes_survive_ambiguous_and_failed_creates() {
    let faulty = FaultyStore::new(Arc::new(InMemory::new()));
    // The first batch creates land but answer with an error (a timeout, a retried create
    // that finds its own object); one does not land at all: each is read back and
    // resolved, never skipped and never stored twice.
    faulty.inject(Op::Put, "/wal/", Fault::ApplyThenFail(Failure::Timeout), 2);
    faulty.inject(
        Op::Put,
        "/wal/",
        Fault::ApplyThenFail(Failure::AlreadyExists),
        1,
    );
    faulty.inject(Op::Put, "/wal/", Fault::Fail(Failure::Timeout), 1);
    acknowledged_writes_survive_on(Arc::clone(&faulty) as _);
    assert_eq!(faulty.rules_left(), 0, "every injected fault was met");
}

#[test]
fn a_second_process_follows_the_writer_and_takes_over_once_it_releases() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let clock = FakeClock::new();
    let (first, _first_root) = engine_on(&store, &clock);
    let index = first.create_index(NAME, config()).unwrap();
    upsert(&index, "a").unwrap();

    // Another live process writes it: the second follows, serving reads and refusing writes.
    let (second, _second_root) = engine_on(&store, &clock);
    let followed = second.open_index(NAME, config()).unwrap();
    let status = followed.follower_status().expect("a follower");
    assert_eq!(status.applied_seq, followed.last_lsn());
    assert!(status.writer.is_empty(), "not looked up yet");
    let err = upsert(&followed, "x").unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    let message = err.to_string();
    assert!(message.starts_with("not the writer: index '"), "{message}");
    let a: BTreeSet<String> = ["a".to_owned()].into();
    assert_eq!(present(&followed, &a), a);
    assert_eq!(
        second.create_index(NAME, config()).unwrap_err().code(),
        ErrorCode::AlreadyExists
    );
    // The first still writes, and the follower sees it once it catches up.
    upsert(&index, "b").unwrap();
    let lsn = index.last_lsn();
    followed.wait_applied(lsn, Duration::from_secs(30)).unwrap();
    assert_eq!(followed.last_lsn(), lsn);
    let ids: BTreeSet<String> = ["a", "b"].map(String::from).into();
    assert_eq!(present(&followed, &ids), ids);
    assert_eq!(followed.catch_up().unwrap(), crate::CatchUp::AtEnd(0));
    // A writer renewing its lease is never taken over.
    assert!(!second.follow_round());
    assert!(second.index(NAME).unwrap().follower_status().is_some());

    // Closed (its lease released): the second takes over at its next round, with everything.
    drop((index, first));
    // Followers look at the lease about once a second (a GET each time).
    clock.advance(Duration::from_secs(1));
    let index = taken_over(&second);
    assert_eq!(present(&index, &ids), ids);
    upsert(&index, "c").unwrap();
    assert!(index.last_lsn() > lsn);
    drop(followed);

    // Dropping the index releases the lease too (and deletes its objects).
    second.drop_index(NAME).unwrap();
    assert!(log_objects(&store).is_empty());
}

#[test]
fn a_fenced_writer_acknowledges_nothing_more() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (old_clock, new_clock) = (FakeClock::new(), FakeClock::new());
    let (old_engine, _old_root) = engine_on(&store, &old_clock);
    let old = old_engine.create_index(NAME, config()).unwrap();
    let mut acked = BTreeSet::new();
    for id in ["old-1", "old-2"] {
        upsert(&old, id).unwrap();
        acked.insert(id.to_owned());
    }

    // The old writer stops renewing (paused, partitioned): a contender that saw its lease
    // unchanged for a full TTL on its own clock takes over. The old writer's clock has not
    // moved, so it still believes it holds the lease: only the fence stops it.
    let (new_engine, _new_root) = engine_on(&store, &new_clock);
    let follower = new_engine.open_index(NAME, config()).unwrap();
    assert!(follower.follower_status().is_some());
    assert!(!new_engine.follow_round(), "the lease was just seen");
    new_clock.advance(TTL);
    let new = taken_over(&new_engine);
    assert_eq!(present(&new, &acked), acked);
    upsert(&new, "new-1").unwrap();
    acked.insert("new-1".to_owned());

    // A flush of the old writer would swap a manifest under the new one: it is refused
    // (the old writer cannot renew its lease), and the new writer flushes as usual.
    let err = old.flush().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    assert!(err.to_string().contains("not the writer"), "{err}");
    assert!(new.flush().unwrap());
    // The manifest carries the writer's epoch: replay refuses older batches after its start.
    let segments = new.durable_parts().unwrap().segments();
    assert_eq!(segments.writer_epoch().unwrap(), 2);

    let before = log_objects(&store);
    for id in ["old-3", "old-4"] {
        let err = upsert(&old, id).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
        assert!(err.to_string().contains("not the writer"), "{err}");
    }
    assert_eq!(
        log_objects(&store),
        before,
        "the stale writer stored nothing"
    );
    // It takes part in no flush either.
    assert_eq!(old.flush().unwrap_err().code(), ErrorCode::Unavailable);
    upsert(&new, "new-2").unwrap();
    acked.insert("new-2".to_owned());
    // Its next follower round opens the index afresh, as a follower of the new writer.
    assert!(old_engine.follow_round());
    let rejoined = old_engine.index(NAME).unwrap();
    assert!(rejoined.follower_status().is_some(), "a follower now");
    assert_eq!(present(&rejoined, &acked), acked);
    assert_eq!(
        upsert(&rejoined, "old-5").unwrap_err().code(),
        ErrorCode::Unavailable
    );
    drop((old, rejoined, old_engine));
    drop((new, new_engine));

    let every: BTreeSet<String> = ["old-1", "old-2", "old-3", "old-4", "new-1", "new-2"]
        .map(String::from)
        .into();
    let (engine, _root) = engine_on(&store, &FakeClock::new());
    let index = engine.open_index(NAME, config()).unwrap();
    assert_eq!(present(&index, &every), acked);
}

#[test]
fn a_writer_whose_lease_lapsed_refuses_writes_before_storing_them() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let clock = FakeClock::new();
    let (engine, _root) = engine_on(&store, &clock);
    let index = engine.create_index(NAME, config()).unwrap();
    upsert(&index, "a").unwrap();
    let before = log_objects(&store);
    // Not renewed for TTL − margin by its own clock: it may not acknowledge any more.
    clock.advance(TTL);
    let err = upsert(&index, "b").unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    assert!(err.to_string().contains("not the writer"), "{err}");
    assert_eq!(log_objects(&store), before);
    assert!(present(&index, &["b".to_owned()].into()).is_empty());
}

#[test]
fn lsns_keep_increasing_across_reopen_and_flush() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let clock = FakeClock::new();
    let mut last = 0;
    let mut check = |index: &Index, what: &str| {
        let lsn = index.last_lsn();
        assert!(lsn > last, "{what}: {lsn} after {last}");
        last = lsn;
    };
    let (engine_one, _root) = engine_on(&store, &clock);
    let index = engine_one.create_index(NAME, config()).unwrap();
    check(&index, "created");
    for id in ["a", "b"] {
        upsert(&index, id).unwrap();
        check(&index, "written");
    }
    drop((index, engine_one));
    for round in 0..2 {
        let (engine, _root) = engine_on(&store, &clock);
        let index = engine.open_index(NAME, config()).unwrap();
        check(&index, "reopened");
        upsert(&index, &format!("r{round}")).unwrap();
        check(&index, "written after reopen");
        assert!(index.flush().unwrap());
        upsert(&index, &format!("f{round}")).unwrap();
        check(&index, "written after flush");
    }
}

#[test]
fn concurrent_writes_and_flushes_lose_nothing_across_a_restart() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let clock = FakeClock::new();
    let (engine, _root) = engine_on(&store, &clock);
    let index = engine.create_index(NAME, config()).unwrap();
    let acked = std::sync::Mutex::new(BTreeSet::new());
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let (index, acked) = (&index, &acked);
            scope.spawn(move || {
                for n in 0..25 {
                    let id = format!("t{thread}-{n}");
                    upsert(index, &id).unwrap();
                    acked.lock().unwrap().insert(id);
                }
            });
        }
        // Flushes cut the log while the writers go on.
        scope.spawn(|| {
            for _ in 0..5 {
                index.flush().unwrap();
                std::thread::yield_now();
            }
        });
    });
    let acked = acked.into_inner().unwrap();
    assert_eq!(acked.len(), 100);
    assert_eq!(present(&index, &acked), acked);
    let last = index.last_lsn();
    drop((index, engine));

    let (engine, _root) = engine_on(&store, &clock);
    let index = engine.open_index(NAME, config()).unwrap();
    assert_eq!(present(&index, &acked), acked);
    assert!(index.last_lsn() > last);
}

#[test]
fn releasing_the_leases_hands_every_index_over_at_once() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let clock = FakeClock::new();
    let (draining, _root) = engine_on(&store, &clock);
    let index = draining.create_index(NAME, config()).unwrap();
    upsert(&index, "a").unwrap();
    draining.release_leases().unwrap();
    // Reads go on; writes are refused.
    assert_eq!(present(&index, &["a".to_owned()].into()).len(), 1);
    let err = upsert(&index, "b").unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    assert!(err.to_string().contains("not the writer"), "{err}");

    // Another process takes over while the draining one still has the index open.
    let (successor, _root) = engine_on(&store, &clock);
    let taken = successor.open_index(NAME, config()).unwrap();
    let ids: BTreeSet<String> = ["a", "b"].map(String::from).into();
    assert_eq!(present(&taken, &ids), ["a".to_owned()].into());
    upsert(&taken, "b").unwrap();
}

#[test]
fn a_follower_that_fell_behind_the_truncated_log_opens_the_index_afresh() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let clock = FakeClock::new();
    let (writer_engine, _writer_root) = engine_on(&store, &clock);
    let writer = writer_engine.create_index(NAME, config()).unwrap();
    let mut acked = BTreeSet::new();
    let mut write = |id: &str| {
        upsert(&writer, id).unwrap();
        acked.insert(id.to_owned());
    };
    for id in ["a0", "a1", "a2"] {
        write(id);
    }
    let (engine, _root) = engine_on(&store, &clock);
    let followed = engine.open_index(NAME, config()).unwrap();
    assert_eq!(followed.last_lsn(), 4, "the fence and three batches");

    // The writer flushes twice while the follower reads nothing: the second flush deletes
    // the batches the first one covered, which the follower needed next.
    for id in ["b0", "b1", "b2"] {
        write(id);
    }
    assert!(writer.flush().unwrap());
    write("c0");
    assert!(writer.flush().unwrap());
    assert!(!log_objects(&store).contains(&5));
    assert_eq!(followed.catch_up().unwrap(), crate::CatchUp::Reload);

    assert!(engine.follow_round());
    let reopened = engine.index(NAME).unwrap();
    assert!(reopened.follower_status().is_some(), "still a follower");
    assert_eq!(reopened.last_lsn(), writer.last_lsn());
    assert_eq!(present(&reopened, &acked), acked);
    // And it goes on tailing from the new manifest.
    upsert(&writer, "d0").unwrap();
    acked.insert("d0".to_owned());
    reopened
        .wait_applied(writer.last_lsn(), Duration::from_secs(30))
        .unwrap();
    assert_eq!(present(&reopened, &acked), acked);
}

#[test]
fn a_follower_leaves_a_new_index_to_its_preferred_writer_for_a_ttl() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let clock = FakeClock::new();
    let (engine, _root) = engine_on(&store, &clock);
    let followed = engine
        .create_index_preferring(
            NAME,
            config(),
            crate::Preference::Follow,
            crate::SearchParams::default(),
        )
        .unwrap();
    assert!(followed.follower_status().is_some());
    assert_eq!(
        upsert(&followed, "a").unwrap_err().code(),
        ErrorCode::Unavailable
    );
    // No lease yet: the preferred writer may still be on its way.
    assert!(!engine.follow_round());
    clock.advance(TTL / 2);
    assert!(!engine.follow_round());
    // Nobody came for a full TTL: this process writes the index.
    clock.advance(TTL / 2);
    let index = taken_over(&engine);
    upsert(&index, "a").unwrap();
}
