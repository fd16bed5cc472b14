//! Property test: random sequences of changes, with flushes, compactions
//! and restarts at random points, leave a durable index (segments on the
//! local disk or in an in-memory object store) reading exactly like an
//! in-memory one that never flushes.

use std::fmt;

use object_store::{ObjectStore, memory::InMemory};
use proptest::prelude::*;
use serde_json::json;
use tempfile::TempDir;

use super::*;
use crate::{
    DeleteRequest, Dimension, FlushPolicy, Metric, UpdateRequest, UpsertRequest, VectorInput,
    test_support::{object, snapshot, sparse},
};

const NAMESPACES: [&str; 3] = ["", "films", "books"];

#[derive(Debug, Clone)]
enum Op {
    /// Records `(id, value, genre)`.
    Upsert(usize, Vec<(u8, i8, Option<u8>)>),
    Delete(usize, Vec<u8>),
    DeleteAll(usize),
    UpdateValues(usize, u8, i8),
    UpdateMetadata(usize, u8, u8),
    UpdateByFilter(usize, u8),
    DeleteByFilter(usize, u8),
    CreateNamespace(usize, bool),
    DeleteNamespace(usize),
    Flush,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let ns = 0..NAMESPACES.len();
    let id = 0..12u8;
    let genre = 0..3u8;
    prop_oneof![
        6 => (ns.clone(), prop::collection::vec((id.clone(), -4..5i8, prop::option::of(genre.clone())), 1..6))
            .prop_map(|(ns, records)| Op::Upsert(ns, records)),
        2 => (ns.clone(), prop::collection::vec(id.clone(), 1..4)).prop_map(|(ns, ids)| Op::Delete(ns, ids)),
        1 => ns.clone().prop_map(Op::DeleteAll),
        2 => (ns.clone(), id.clone(), -4..5i8).prop_map(|(ns, id, v)| Op::UpdateValues(ns, id, v)),
        2 => (ns.clone(), id, genre.clone()).prop_map(|(ns, id, g)| Op::UpdateMetadata(ns, id, g)),
        1 => (ns.clone(), genre.clone()).prop_map(|(ns, g)| Op::UpdateByFilter(ns, g)),
        1 => (ns.clone(), genre).prop_map(|(ns, g)| Op::DeleteByFilter(ns, g)),
        1 => (ns.clone(), any::<bool>()).prop_map(|(ns, schema)| Op::CreateNamespace(ns, schema)),
        1 => ns.prop_map(Op::DeleteNamespace),
        1 => Just(Op::Flush),
        1 => Just(Op::Restart),
    ]
}

fn config() -> IndexConfig {
    IndexConfig {
        dimension: Dimension::new(3).unwrap(),
        metric: Metric::DotProduct,
    }
}

fn genre(g: u8) -> String {
    ["drama", "comedy", "noir"][usize::from(g)].to_owned()
}

/// Applies a change to `index`; the outcome is the result's error code, if any.
fn apply(index: &Index, op: &Op) -> Option<crate::ErrorCode> {
    let name = |ns: &usize| NAMESPACES[*ns].to_owned();
    let id = |id: &u8| format!("id-{id}");
    let result: Result<()> = match op {
        Op::Upsert(ns, records) => index
            .upsert(UpsertRequest {
                namespace: name(ns),
                vectors: records
                    .iter()
                    .map(|(i, v, g)| VectorInput {
                        id: id(i),
                        values: vec![f32::from(*v), 1.0, f32::from(*i)],
                        sparse_values: (*v > 2).then(|| sparse(&[(u32::from(*i), 0.5)])),
                        metadata: g.map(|g| object(json!({"genre": genre(g), "n": i}))),
                    })
                    .collect(),
            })
            .map(drop),
        Op::Delete(ns, ids) => index.delete(DeleteRequest {
            namespace: name(ns),
            ids: ids.iter().map(id).collect(),
            ..Default::default()
        }),
        Op::DeleteAll(ns) => index.delete(DeleteRequest {
            namespace: name(ns),
            delete_all: true,
            ..Default::default()
        }),
        Op::UpdateValues(ns, i, v) => index
            .update(UpdateRequest {
                namespace: name(ns),
                id: id(i),
                values: vec![1.0, f32::from(*v), 2.0],
                ..Default::default()
            })
            .map(drop),
        Op::UpdateMetadata(ns, i, g) => index
            .update(UpdateRequest {
                namespace: name(ns),
                id: id(i),
                set_metadata: Some(object(json!({"genre": genre(*g), "touched": true}))),
                ..Default::default()
            })
            .map(drop),
        Op::UpdateByFilter(ns, g) => index
            .update(UpdateRequest {
                namespace: name(ns),
                filter: Some(object(json!({"genre": genre(*g)}))),
                set_metadata: Some(object(json!({"seen": *g}))),
                ..Default::default()
            })
            .map(drop),
        Op::DeleteByFilter(ns, g) => index.delete(DeleteRequest {
            namespace: name(ns),
            filter: Some(object(json!({"genre": genre(*g)}))),
            ..Default::default()
        }),
        Op::CreateNamespace(ns, schema) => index
            .create_namespace(&name(ns), schema.then(|| vec!["genre".to_owned()]))
            .map(drop),
        Op::DeleteNamespace(ns) => index.delete_namespace(&name(ns)),
        Op::Flush | Op::Restart => Ok(()),
    };
    result.err().map(|err| err.code())
}

struct Case {
    policy: FlushPolicy,
    /// Segments in an in-memory object store instead of the index directory.
    shared: bool,
    ops: Vec<Op>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:?} shared: {}", self.policy, self.shared)?;
        self.ops.iter().try_for_each(|op| writeln!(f, "  {op:?}"))
    }
}

fn case() -> impl Strategy<Value = Case> {
    (
        // Flushing on every write costs a dozen fsyncs each: not too often.
        prop_oneof![1 => Just(1u64), 3 => 200..3000u64],
        1..5usize,
        any::<bool>(),
        prop::collection::vec(op(), 1..40),
    )
        .prop_map(|(wal_bytes, max_segments, shared, ops)| Case {
            policy: FlushPolicy {
                wal_bytes,
                max_segments,
            },
            shared,
            ops,
        })
}

/// A storage name with an incarnation, as an index in a shared store needs.
const NAME: &str = "durable@default@0a1b";

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_flushing_index_reads_like_one_that_never_flushes(case in case()) {
        let reference = Engine::new().create_index("reference", config()).unwrap();
        let root = TempDir::new().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let engine = || if case.shared {
            Engine::open_on_store(root.path(), case.policy, Arc::clone(&store), object_store::path::Path::from("larch"))
        } else {
            Engine::open_with(root.path(), case.policy)
        };
        let mut index = engine().create_index(NAME, config()).unwrap();
        for (step, op) in case.ops.iter().enumerate() {
            match op {
                Op::Flush => {
                    index.flush().unwrap();
                }
                Op::Restart => {
                    drop(index);
                    index = engine().open_index(NAME, config()).unwrap();
                    prop_assert_eq!(snapshot(&index), snapshot(&reference), "after restart at step {}", step);
                }
                change => {
                    let expected = apply(&reference, change);
                    prop_assert_eq!(apply(&index, change), expected, "step {}", step);
                }
            }
        }
        let before = snapshot(&index);
        prop_assert_eq!(&before, &snapshot(&reference));
        let stats = index.storage_stats().unwrap();
        prop_assert!(stats.segments <= NAMESPACES.len() * case.policy.max_segments, "{:?}", stats);
        drop(index);
        let index = engine().open_index(NAME, config()).unwrap();
        prop_assert_eq!(snapshot(&index), before);
    }
}
