//! Model-based property tests (issue 8): random sequences of writes and
//! reads over several namespaces run against a real [`Index`] and against a
//! model as naive as it can be, and every read must agree with the model.
//!
//! The model is sorted maps of plain values, with its own scoring (in `f64`)
//! and its own evaluation of filters straight on the JSON, written from the
//! documented semantics (`filter`, `requests`, `search`) rather than from the
//! engine's code paths. It follows the engine's rules where Pinecone leaves a
//! choice: `set_metadata` merges keys into the stored metadata, `delete_all`
//! keeps the namespace, an empty metadata object or filter means none, and
//! ties rank by id ascending.
//!
//! Namespaces stay far below `Ann::MIN_ROWS` and no test builds a graph, so
//! every query is an exact scan and must return exactly the model's ranking.
//! Dense and sparse values are small integers, so dot products and squared
//! distances are exact in `f32` and must equal the model's to the bit;
//! cosine scores (a square root and divisions) get a tolerance of `1e-6`,
//! and records whose model scores are that close may swap places.
//!
//! # Layout
//!
//! - the generated operations (`Op`, `Case`) and their strategies;
//! - the model (`Model`) with `satisfies` (filters) and `score`;
//! - `Harness`: applies an operation to the index and the model, and
//!   checks reads, namespace counts after every step, and everything after
//!   a reopen and at the end;
//! - two proptests: an in-memory index, and a durable one in a temporary
//!   directory that flushes, compacts and is reopened at random points
//!   (acknowledged writes must survive).

use std::{
    collections::{BTreeMap, HashSet},
    fmt, mem,
    sync::Arc,
};

use proptest::prelude::*;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{
    DeleteRequest, Dimension, Engine, ErrorCode, FetchByMetadataRequest, FetchRequest, FlushPolicy,
    Index, IndexConfig, JsonObject, ListNamespacesRequest, ListRequest, Metric, QueryRequest,
    Record, ScoredRecord, SparseInput, SparseVector, UpdateRequest, UpsertRequest, VectorInput,
    metadata_to_json,
    test_support::{index, object},
};

/// Namespaces as requests name them: the default one under both of its
/// names, two named ones (one a prefix of the other), and one that is only
/// ever read.
const NAMESPACES: [&str; 5] = ["", "__default__", "film", "films", "void"];
/// Writes go to the first ones only.
const WRITABLE: usize = 4;
/// Prefixes of `list_namespaces`.
const NAMESPACE_PREFIXES: [&str; 5] = ["", "f", "film", "films", "x"];
/// Ids are a stem and a number; the stems are prefixes of one another, so
/// listing by prefix has something to tell apart.
const ID_STEMS: [&str; 4] = ["a", "ab", "b", "ba"];
/// How many distinct ids the operations use.
const IDS: usize = 8;
/// Prefixes of `list`.
const ID_PREFIXES: [&str; 5] = ["", "a", "ab", "b", "c"];
/// The durable index's name.
const NAME: &str = "model";

fn id(i: usize) -> String {
    format!("{}{}", ID_STEMS[i % ID_STEMS.len()], i / ID_STEMS.len())
}

/// The name the engine reports for a namespace: `""` for the default one.
fn canonical(namespace: &str) -> &str {
    if namespace == "__default__" {
        ""
    } else {
        namespace
    }
}

// ---- generated operations -----------------------------------------------------

/// A JSON value printed compactly, so shrunk cases read like requests.
#[derive(Clone, PartialEq)]
struct Json(Value);

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Json {
    fn object(&self) -> JsonObject {
        object(self.0.clone())
    }
}

/// Sparse values as `(index, value)`, in the (not necessarily sorted) order sent.
type Sparse = Vec<(u32, i8)>;

#[derive(Debug, Clone)]
struct NewRecord {
    id: usize,
    values: Vec<i8>,
    sparse: Option<Sparse>,
    metadata: Option<Json>,
}

#[derive(Debug, Clone)]
enum Target {
    Vector(Vec<i8>),
    Id(usize),
}

#[derive(Debug, Clone)]
struct Query {
    ns: usize,
    top_k: u32,
    target: Target,
    sparse: Option<Sparse>,
    filter: Option<Json>,
    include_values: bool,
    include_metadata: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Upsert {
        ns: usize,
        records: Vec<NewRecord>,
    },
    Update {
        ns: usize,
        id: usize,
        values: Option<Vec<i8>>,
        sparse: Option<Sparse>,
        set_metadata: Option<Json>,
        dry_run: bool,
    },
    UpdateByFilter {
        ns: usize,
        filter: Json,
        set_metadata: Json,
        dry_run: bool,
    },
    Delete {
        ns: usize,
        ids: Vec<usize>,
    },
    DeleteByFilter {
        ns: usize,
        filter: Json,
    },
    DeleteAll {
        ns: usize,
    },
    CreateNamespace {
        ns: usize,
        schema: bool,
    },
    DeleteNamespace {
        ns: usize,
    },
    Query(Query),
    Fetch {
        ns: usize,
        ids: Vec<usize>,
    },
    List {
        ns: usize,
        prefix: usize,
        limit: Option<u32>,
    },
    FetchByMetadata {
        ns: usize,
        filter: Json,
        limit: u32,
    },
    ListNamespaces {
        prefix: usize,
        limit: Option<u32>,
    },
    Stats {
        filter: Option<Json>,
    },
    /// Durable only: flush the memtable to segments.
    Flush,
    /// Durable only: drop the engine and open the index again.
    Reopen,
}

struct Case {
    metric: Metric,
    dim: usize,
    /// Durable cases only.
    policy: Option<FlushPolicy>,
    ops: Vec<Op>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:?} dim {} {:?}", self.metric, self.dim, self.policy)?;
        self.ops
            .iter()
            .enumerate()
            .try_for_each(|(step, op)| writeln!(f, "  {step}: {op:?}"))
    }
}

/// Dense values of a record: never all zero (upsert and update reject that).
fn record_values(dim: usize) -> impl Strategy<Value = Vec<i8>> {
    prop::collection::vec(-3..=3i8, dim).prop_map(|mut values| {
        if values.iter().all(|v| *v == 0) {
            values[0] = 1;
        }
        values
    })
}

/// Sparse values, only for dotproduct indexes; sent with descending indices
/// so that the engine's sorting is exercised.
fn sparse(metric: Metric) -> BoxedStrategy<Option<Sparse>> {
    if metric != Metric::DotProduct {
        return Just(None).boxed();
    }
    prop::option::of(
        prop::collection::btree_map(0..6u32, -2..=2i8, 1..4)
            .prop_map(|entries| entries.into_iter().rev().collect()),
    )
    .boxed()
}

fn strings(pool: &[&'static str]) -> BoxedStrategy<Value> {
    prop::sample::select(pool.to_vec())
        .prop_map(Value::from)
        .boxed()
}

fn numbers() -> BoxedStrategy<Value> {
    prop_oneof![4 => (0..5i32).prop_map(Value::from), 1 => Just(json!(2.5))].boxed()
}

fn booleans() -> BoxedStrategy<Value> {
    any::<bool>().prop_map(Value::from).boxed()
}

/// A metadata object of up to five fields: `genre` a string, `year` a
/// number, `tags` a list of strings (maybe empty), `flag` a boolean, and
/// `kind` any of the three types. The object may be empty.
fn metadata_object() -> impl Strategy<Value = Json> {
    let field = |values: BoxedStrategy<Value>| prop::option::weighted(0.8, values);
    (
        field(strings(&["a", "b", "c"])),
        field(numbers()),
        field(
            prop::sample::subsequence(vec!["a", "x", "y"], 0..=3)
                .prop_map(Value::from)
                .boxed(),
        ),
        field(booleans()),
        field(prop_oneof![Just(json!("1")), Just(json!(1)), Just(json!(true))].boxed()),
    )
        .prop_map(|(genre, year, tags, flag, kind)| {
            let fields = [
                ("genre", genre),
                ("year", year),
                ("tags", tags),
                ("flag", flag),
                ("kind", kind),
            ];
            Json(Value::Object(
                fields
                    .into_iter()
                    .filter_map(|(key, value)| Some((key.to_owned(), value?)))
                    .collect(),
            ))
        })
}

/// An operand of any type `$eq` and `$ne` take.
fn any_scalar() -> BoxedStrategy<Value> {
    prop_oneof![strings(&["a", "b", "x", "1"]), numbers(), booleans()].boxed()
}

/// A condition on one field: a bare value (meaning `$eq`) or an object of
/// one or two operators. `scalar` draws the operands of `$eq` and `$ne`,
/// `item` those of `$in` and `$nin` (strings and numbers only); mostly of
/// the field's own type, so that filters match often enough to matter.
fn condition(
    scalar: BoxedStrategy<Value>,
    item: BoxedStrategy<Value>,
    comparisons: u32,
) -> BoxedStrategy<Value> {
    let operator = prop_oneof![
        3 => scalar.clone().prop_map(|v| ("$eq", v)),
        2 => scalar.clone().prop_map(|v| ("$ne", v)),
        comparisons => (prop::sample::select(vec!["$gt", "$gte", "$lt", "$lte"]), numbers()),
        3 => (
            prop::sample::select(vec!["$in", "$nin"]),
            prop::collection::vec(item, 1..4).prop_map(Value::from),
        ),
        1 => booleans().prop_map(|b| ("$exists", b)),
    ];
    prop_oneof![
        2 => scalar,
        3 => operator.clone().prop_map(|(op, operand)| json!({ op: operand })),
        1 => prop::collection::vec(operator, 2).prop_map(|operators| {
            Value::Object(
                operators
                    .into_iter()
                    .map(|(op, operand)| (op.to_owned(), operand))
                    .collect(),
            )
        }),
    ]
    .boxed()
}

/// A field and a condition on it; `missing` is in no record. Comparisons
/// are mostly on `year`, where they can match.
fn field_condition() -> impl Strategy<Value = (&'static str, Value)> {
    let mostly = |own: BoxedStrategy<Value>, other: BoxedStrategy<Value>| {
        prop_oneof![6 => own, 1 => other].boxed()
    };
    let on = |field: &'static str, condition: BoxedStrategy<Value>| {
        condition.prop_map(move |c| (field, c))
    };
    prop_oneof![
        3 => on(
            "genre",
            condition(
                mostly(strings(&["a", "b", "c", "x"]), any_scalar()),
                mostly(strings(&["a", "b", "c", "x"]), numbers()),
                1,
            ),
        ),
        3 => on(
            "year",
            condition(
                mostly(numbers(), any_scalar()),
                mostly(numbers(), strings(&["1", "a"])),
                6,
            ),
        ),
        3 => on(
            "tags",
            condition(
                mostly(strings(&["a", "x", "y", "b"]), any_scalar()),
                mostly(strings(&["a", "x", "y", "b"]), numbers()),
                1,
            ),
        ),
        2 => on(
            "flag",
            condition(mostly(booleans(), any_scalar()), strings(&["a", "1"]), 1),
        ),
        2 => on(
            "kind",
            condition(
                mostly(
                    prop_oneof![Just(json!("1")), Just(json!(1)), Just(json!(true))].boxed(),
                    any_scalar(),
                ),
                prop_oneof![Just(json!("1")), Just(json!(1))].boxed(),
                1,
            ),
        ),
        1 => on("missing", condition(any_scalar(), strings(&["a", "1"]), 1)),
    ]
}

/// A non-empty filter, possibly nested through `$and` / `$or`.
fn filter() -> impl Strategy<Value = Json> {
    let conditions = prop_oneof![
        3 => prop::collection::vec(field_condition(), 1),
        1 => prop::collection::vec(field_condition(), 2),
    ];
    let leaf = conditions.prop_map(|conditions| {
        Value::Object(
            conditions
                .into_iter()
                .map(|(field, condition)| (field.to_owned(), condition))
                .collect(),
        )
    });
    leaf.prop_recursive(2, 12, 3, |inner| {
        (
            prop::sample::select(vec!["$and", "$or", "$or"]),
            prop::collection::vec(inner, 1..4),
        )
            .prop_map(|(op, filters)| json!({ op: filters }))
    })
    .prop_map(Json)
}

/// An optional filter for reads; `{}` is a valid filter that means none.
fn optional_filter() -> impl Strategy<Value = Option<Json>> {
    prop::option::weighted(0.6, prop_oneof![9 => filter(), 1 => Just(Json(json!({})))])
}

fn query(metric: Metric, dim: usize) -> impl Strategy<Value = Query> {
    (
        read_namespace(),
        prop_oneof![1..4u32, 1..16u32],
        prop_oneof![
            // The query vector may be all zeros.
            3 => prop::collection::vec(-3..=3i8, dim).prop_map(Target::Vector),
            1 => (0..IDS).prop_map(Target::Id),
        ],
        sparse(metric),
        optional_filter(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(ns, top_k, target, sparse, filter, include_values, include_metadata)| Query {
                ns,
                top_k,
                target,
                sparse,
                filter,
                include_values,
                include_metadata,
            },
        )
}

/// Where a write goes (an index into `NAMESPACES`): mostly to `film`, so
/// that one namespace holds most ids.
fn write_namespace() -> impl Strategy<Value = usize> + Clone {
    prop_oneof![2 => Just(0), 1 => Just(1), 4 => Just(2), 1 => Just(3)]
}

/// Where a read goes: where writes go, or to `void`.
fn read_namespace() -> impl Strategy<Value = usize> + Clone {
    prop_oneof![8 => write_namespace(), 1 => Just(4)]
}

fn op(metric: Metric, dim: usize, durable: bool) -> BoxedStrategy<Op> {
    let ns = write_namespace();
    let any_ns = read_namespace();
    let id = 0..IDS;
    let record = (
        id.clone(),
        record_values(dim),
        sparse(metric),
        prop::option::weighted(0.8, metadata_object()),
    )
        .prop_map(|(id, values, sparse, metadata)| NewRecord {
            id,
            values,
            sparse,
            metadata,
        });
    let ops = prop_oneof![
        10 => (ns.clone(), prop::collection::vec(record, 1..6))
            .prop_map(|(ns, records)| Op::Upsert { ns, records }),
        4 => (
            ns.clone(),
            id.clone(),
            prop::option::weighted(0.5, record_values(dim)),
            sparse(metric),
            prop::option::weighted(0.8, metadata_object()),
            prop::bool::weighted(0.1),
        )
            .prop_map(|(ns, id, values, sparse, set_metadata, dry_run)| Op::Update {
                ns,
                id,
                values,
                sparse,
                set_metadata,
                dry_run,
            }),
        2 => (ns.clone(), filter(), metadata_object(), prop::bool::weighted(0.2)).prop_map(
            |(ns, filter, set_metadata, dry_run)| Op::UpdateByFilter {
                ns,
                filter,
                set_metadata,
                dry_run,
            }
        ),
        1 => (ns.clone(), prop::collection::vec(id.clone(), 1..4))
            .prop_map(|(ns, ids)| Op::Delete { ns, ids }),
        1 => (ns.clone(), filter()).prop_map(|(ns, filter)| Op::DeleteByFilter { ns, filter }),
        1 => ns.clone().prop_map(|ns| Op::DeleteAll { ns }),
        // Mostly named namespaces: the default one cannot be created.
        2 => (prop_oneof![1 => 0..2usize, 3 => 2..WRITABLE], any::<bool>())
            .prop_map(|(ns, schema)| Op::CreateNamespace { ns, schema }),
        1 => ns.prop_map(|ns| Op::DeleteNamespace { ns }),
        8 => query(metric, dim).prop_map(Op::Query),
        2 => (any_ns.clone(), prop::collection::vec(id, 1..6))
            .prop_map(|(ns, ids)| Op::Fetch { ns, ids }),
        1 => (
            any_ns.clone(),
            0..ID_PREFIXES.len(),
            prop::option::of(1..4u32)
        )
            .prop_map(|(ns, prefix, limit)| Op::List { ns, prefix, limit }),
        1 => (any_ns, filter(), 1..4u32)
            .prop_map(|(ns, filter, limit)| Op::FetchByMetadata { ns, filter, limit }),
        1 => (0..NAMESPACE_PREFIXES.len(), prop::option::of(1..3u32))
            .prop_map(|(prefix, limit)| Op::ListNamespaces { prefix, limit }),
        1 => optional_filter().prop_map(|filter| Op::Stats { filter }),
    ];
    if durable {
        prop_oneof![30 => ops, 1 => Just(Op::Flush), 1 => Just(Op::Reopen)].boxed()
    } else {
        ops.boxed()
    }
}

fn case(durable: bool, steps: std::ops::Range<usize>) -> impl Strategy<Value = Case> {
    // Shrinking keeps the metric and dimension and works on the operations only:
    // with `prop_flat_map` a smaller dimension would draw a new, unrelated sequence.
    // Small dimensions run only the distance kernels' scalar tails; 19 runs
    // their 8-lane steps too, and 37 their 32-float blocks.
    let dimension = prop_oneof![4 => 1..=4usize, 1 => Just(19), 1 => Just(37)];
    (prop::sample::select(Metric::ALL.to_vec()), dimension).prop_ind_flat_map(
        move |(metric, dim)| {
            let policy = if durable {
                // A log of 64 bytes flushes after almost every write; segments
                // pile up past `max_segments`, so compactions run too.
                (prop_oneof![1 => Just(64u64), 3 => 300..4000u64], 1..4usize)
                    .prop_map(|(wal_bytes, max_segments)| {
                        Some(FlushPolicy {
                            wal_bytes,
                            max_segments,
                        })
                    })
                    .boxed()
            } else {
                Just(None).boxed()
            };
            (
                policy,
                prop::collection::vec(op(metric, dim, durable), steps.clone()),
            )
                .prop_map(move |(policy, ops)| Case {
                    metric,
                    dim,
                    policy,
                    ops,
                })
        },
    )
}

// ---- the model ------------------------------------------------------------------

/// A record as the model keeps it.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    values: Vec<f32>,
    /// Sorted by index.
    sparse: Option<Vec<(u32, f32)>>,
    /// Never empty; numbers as `f64`, the way the engine returns them.
    metadata: Option<JsonObject>,
}

#[derive(Debug, Default)]
struct Space {
    schema: Option<Vec<String>>,
    records: BTreeMap<String, Stored>,
}

/// What a write returns: the engine's count, or the code of its error.
type Outcome = Result<u32, ErrorCode>;

#[derive(Debug)]
struct Model {
    metric: Metric,
    /// By canonical name (`""` for the default namespace).
    spaces: BTreeMap<String, Space>,
}

fn dense(values: &[i8]) -> Vec<f32> {
    values.iter().map(|v| f32::from(*v)).collect()
}

fn sorted_sparse(sparse: &Sparse) -> Vec<(u32, f32)> {
    let entries: BTreeMap<u32, f32> = sparse.iter().map(|(i, v)| (*i, f32::from(*v))).collect();
    entries.into_iter().collect()
}

fn sparse_input(sparse: &Sparse) -> SparseInput {
    SparseInput {
        indices: sparse.iter().map(|(i, _)| *i).collect(),
        values: sparse.iter().map(|(_, v)| f32::from(*v)).collect(),
    }
}

/// `value` with every number as `f64`, as the engine stores numbers.
fn as_f64(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().expect("generated numbers are finite")),
        other => other.clone(),
    }
}

/// Metadata as the model keeps it: numbers as `f64`; an empty object is none.
fn normalized(metadata: Option<&Json>) -> Option<JsonObject> {
    let object = metadata?.object();
    (!object.is_empty()).then(|| object.iter().map(|(k, v)| (k.clone(), as_f64(v))).collect())
}

/// A filter as requests mean it: an empty object is none.
fn effective(filter: Option<&Json>) -> Option<JsonObject> {
    filter.map(Json::object).filter(|f| !f.is_empty())
}

impl Model {
    fn new(metric: Metric) -> Self {
        Model {
            metric,
            spaces: BTreeMap::new(),
        }
    }

    fn space(&self, namespace: &str) -> Option<&Space> {
        self.spaces.get(canonical(namespace))
    }

    fn space_mut(&mut self, namespace: &str) -> Option<&mut Space> {
        self.spaces.get_mut(canonical(namespace))
    }

    /// Applies a write and returns what the engine must answer.
    fn apply(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Upsert { ns, records } => {
                let space = self
                    .spaces
                    .entry(canonical(NAMESPACES[*ns]).to_owned())
                    .or_default();
                // A repeated id: the last one wins.
                for record in records {
                    let stored = Stored {
                        values: dense(&record.values),
                        sparse: record.sparse.as_ref().map(sorted_sparse),
                        metadata: normalized(record.metadata.as_ref()),
                    };
                    space.records.insert(id(record.id), stored);
                }
                Ok(u32::try_from(records.len()).expect("a handful of records"))
            }
            Op::Update {
                ns,
                id: i,
                values,
                sparse,
                set_metadata,
                dry_run,
            } => {
                let patch = normalized(set_metadata.as_ref());
                if values.is_none() && sparse.is_none() && patch.is_none() {
                    return Err(ErrorCode::InvalidArgument);
                }
                let stored = self
                    .space_mut(NAMESPACES[*ns])
                    .and_then(|space| space.records.get_mut(&id(*i)))
                    .ok_or(ErrorCode::NotFound)?;
                if !dry_run {
                    if let Some(values) = values {
                        stored.values = dense(values);
                    }
                    if let Some(sparse) = sparse {
                        stored.sparse = Some(sorted_sparse(sparse));
                    }
                    if let Some(patch) = patch {
                        merge(stored, &patch);
                    }
                }
                Ok(1)
            }
            Op::UpdateByFilter {
                ns,
                filter,
                set_metadata,
                dry_run,
            } => {
                let patch = normalized(Some(set_metadata)).ok_or(ErrorCode::InvalidArgument)?;
                let filter = filter.object();
                let Some(space) = self.space_mut(NAMESPACES[*ns]) else {
                    return Ok(0);
                };
                let mut count = 0;
                for stored in space.records.values_mut() {
                    if satisfies(&filter, stored.metadata.as_ref()) {
                        count += 1;
                        if !dry_run {
                            merge(stored, &patch);
                        }
                    }
                }
                Ok(count)
            }
            Op::Delete { ns, ids } => {
                if let Some(space) = self.space_mut(NAMESPACES[*ns]) {
                    for i in ids {
                        space.records.remove(&id(*i));
                    }
                }
                Ok(0)
            }
            Op::DeleteByFilter { ns, filter } => {
                let filter = filter.object();
                if let Some(space) = self.space_mut(NAMESPACES[*ns]) {
                    space
                        .records
                        .retain(|_, stored| !satisfies(&filter, stored.metadata.as_ref()));
                }
                Ok(0)
            }
            Op::DeleteAll { ns } => {
                // The namespace stays, with its schema.
                if let Some(space) = self.space_mut(NAMESPACES[*ns]) {
                    space.records.clear();
                }
                Ok(0)
            }
            Op::CreateNamespace { ns, schema } => {
                let name = NAMESPACES[*ns];
                // The default namespace needs no creating, under either name.
                if canonical(name).is_empty() {
                    return Err(ErrorCode::InvalidArgument);
                }
                if self.spaces.contains_key(name) {
                    return Err(ErrorCode::AlreadyExists);
                }
                let space = Space {
                    schema: schema.then(|| vec!["genre".to_owned()]),
                    records: BTreeMap::new(),
                };
                self.spaces.insert(name.to_owned(), space);
                Ok(0)
            }
            Op::DeleteNamespace { ns } => self
                .spaces
                .remove(canonical(NAMESPACES[*ns]))
                .map(|_| 0)
                .ok_or(ErrorCode::NotFound),
            read => panic!("{read:?} is not a write"),
        }
    }

    /// The records of `space` a query would consider, each with its score,
    /// best first and ties by id.
    fn ranking<'a>(
        &self,
        space: &'a Space,
        vector: &[f32],
        sparse: Option<&[(u32, f32)]>,
        filter: Option<&JsonObject>,
    ) -> Vec<(&'a str, f64, &'a Stored)> {
        let mut ranked: Vec<_> = space
            .records
            .iter()
            .filter(|(_, stored)| filter.is_none_or(|f| satisfies(f, stored.metadata.as_ref())))
            .map(|(id, stored)| {
                let score = score(self.metric, vector, sparse, stored);
                (id.as_str(), score, stored)
            })
            .collect();
        ranked.sort_by(|a, b| {
            // Adding 0.0 turns -0.0 into 0.0: the two zeros tie.
            let (a_score, b_score) = (a.1 + 0.0, b.1 + 0.0);
            let better = if self.metric.higher_is_better() {
                b_score.total_cmp(&a_score)
            } else {
                a_score.total_cmp(&b_score)
            };
            better.then_with(|| a.0.cmp(b.0))
        });
        ranked
    }
}

/// `set_metadata`: the patch's keys overwrite, the others stay.
fn merge(stored: &mut Stored, patch: &JsonObject) {
    let metadata = stored.metadata.get_or_insert_with(JsonObject::new);
    metadata.extend(patch.iter().map(|(k, v)| (k.clone(), v.clone())));
}

/// The model's filter evaluation, straight on the JSON: fields and
/// `$and`/`$or` all hold; a list of strings matches `$eq`/`$in` when any
/// element does (and `$ne`/`$nin` when none does); types never mix; a
/// missing field satisfies only `$ne`, `$nin` and `$exists: false`.
fn satisfies(filter: &JsonObject, metadata: Option<&JsonObject>) -> bool {
    let sub_filters = |value: &'_ Value| -> Vec<JsonObject> {
        value
            .as_array()
            .expect("$and and $or hold arrays")
            .iter()
            .map(|item| item.as_object().expect("of filter objects").clone())
            .collect()
    };
    filter.iter().all(|(key, condition)| match key.as_str() {
        "$and" => sub_filters(condition)
            .iter()
            .all(|f| satisfies(f, metadata)),
        "$or" => sub_filters(condition)
            .iter()
            .any(|f| satisfies(f, metadata)),
        field => {
            let value = metadata.and_then(|m| m.get(field));
            match condition {
                Value::Object(operators) => operators
                    .iter()
                    .all(|(op, operand)| holds(op, operand, value)),
                operand => holds("$eq", operand, value),
            }
        }
    })
}

fn holds(op: &str, operand: &Value, value: Option<&Value>) -> bool {
    let equal = |operand: &Value| value.is_some_and(|v| same(v, operand));
    let number = value.filter(|v| v.is_number()).and_then(Value::as_f64);
    let bound = || operand.as_f64().expect("comparisons take numbers");
    let any_of = || {
        operand
            .as_array()
            .expect("$in and $nin take arrays")
            .iter()
            .any(equal)
    };
    match op {
        "$eq" => equal(operand),
        "$ne" => !equal(operand),
        "$gt" => number.is_some_and(|n| n > bound()),
        "$gte" => number.is_some_and(|n| n >= bound()),
        "$lt" => number.is_some_and(|n| n < bound()),
        "$lte" => number.is_some_and(|n| n <= bound()),
        "$in" => any_of(),
        "$nin" => !any_of(),
        "$exists" => value.is_some() == operand.as_bool().expect("$exists takes a boolean"),
        other => panic!("the generator made an unknown operator {other}"),
    }
}

/// Whether a stored value equals an operand.
fn same(stored: &Value, operand: &Value) -> bool {
    match (stored, operand) {
        (Value::Array(items), Value::String(_)) => items.contains(operand),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(_), _) => false,
        _ => stored == operand,
    }
}

/// The model's score, in `f64`: the dense score under `metric` (squared
/// distance for euclidean; 0 for cosine against a zero vector), plus the
/// sparse dot product when both sides have sparse values.
fn score(metric: Metric, query: &[f32], sparse: Option<&[(u32, f32)]>, stored: &Stored) -> f64 {
    let pairs = || {
        query
            .iter()
            .zip(&stored.values)
            .map(|(q, r)| (f64::from(*q), f64::from(*r)))
    };
    let dot: f64 = pairs().map(|(q, r)| q * r).sum();
    let dense = match metric {
        Metric::DotProduct => dot,
        Metric::Euclidean => pairs().map(|(q, r)| (q - r) * (q - r)).sum(),
        Metric::Cosine => {
            let query_norm = pairs().map(|(q, _)| q * q).sum::<f64>().sqrt();
            let stored_norm = pairs().map(|(_, r)| r * r).sum::<f64>().sqrt();
            if query_norm == 0.0 || stored_norm == 0.0 {
                0.0
            } else {
                (dot / (query_norm * stored_norm)).clamp(-1.0, 1.0)
            }
        }
    };
    let sparse = match (sparse, &stored.sparse) {
        (Some(query), Some(stored)) => query
            .iter()
            .filter_map(|(i, q)| {
                let (_, r) = stored.iter().find(|(j, _)| j == i)?;
                Some(f64::from(*q) * f64::from(*r))
            })
            .sum(),
        _ => 0.0,
    };
    dense + sparse
}

/// How far an engine score may be from the model's: none where the
/// arithmetic is exact in `f32`.
fn tolerance(metric: Metric) -> f64 {
    match metric {
        Metric::Cosine => 1e-6,
        Metric::DotProduct | Metric::Euclidean => 0.0,
    }
}

// ---- comparing --------------------------------------------------------------------

fn fail(context: impl fmt::Display) -> TestCaseError {
    TestCaseError::fail(context.to_string())
}

/// A record as the engine returned it, in the model's terms.
type View = (
    String,
    Vec<f32>,
    Option<Vec<(u32, f32)>>,
    Option<JsonObject>,
);

fn view_record(record: &Record) -> View {
    (
        record.id.clone(),
        record.values.clone(),
        record.sparse_values.as_ref().map(sparse_pairs),
        record.metadata.as_ref().map(metadata_to_json),
    )
}

fn view_stored(id: &str, stored: &Stored) -> View {
    (
        id.to_owned(),
        stored.values.clone(),
        stored.sparse.clone(),
        stored.metadata.clone(),
    )
}

fn sparse_pairs(sparse: &SparseVector) -> Vec<(u32, f32)> {
    sparse
        .indices
        .iter()
        .copied()
        .zip(sparse.values.iter().copied())
        .collect()
}

/// The engine's ranking order on its own scores: better score first, ties
/// by id ascending (the contract of `search::TopK`).
fn ranks_before(metric: Metric, a: &ScoredRecord, b: &ScoredRecord) -> bool {
    let key = |score: f32| {
        let key = if metric.higher_is_better() {
            score
        } else {
            -score
        };
        key + 0.0
    };
    match key(a.score).total_cmp(&key(b.score)) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => a.id < b.id,
        std::cmp::Ordering::Less => false,
    }
}

/// An index under test and the model it must agree with.
struct Harness {
    metric: Metric,
    dim: usize,
    model: Model,
    index: Arc<Index>,
    durable: Option<Durable>,
}

/// What a durable index needs to be reopened.
struct Durable {
    dir: TempDir,
    policy: FlushPolicy,
    engine: Engine,
}

impl Harness {
    fn new(case: &Case) -> Self {
        let config = IndexConfig {
            dimension: Dimension::new(u32::try_from(case.dim).expect("a small dimension"))
                .expect("a valid dimension"),
            metric: case.metric,
        };
        let (index, durable) = match case.policy {
            None => (Arc::new(index(config.dimension.get(), case.metric)), None),
            Some(policy) => {
                let dir = TempDir::new().expect("a temporary directory");
                let engine = Engine::open_with(dir.path(), policy);
                let index = engine
                    .create_index(NAME, config)
                    .expect("a fresh durable index");
                let durable = Durable {
                    dir,
                    policy,
                    engine,
                };
                (index, Some(durable))
            }
        };
        Harness {
            metric: case.metric,
            dim: case.dim,
            model: Model::new(case.metric),
            index,
            durable,
        }
    }

    fn config(&self) -> IndexConfig {
        self.index.config()
    }

    /// Runs one operation on the index and the model, checks what it read,
    /// then checks the namespaces and their counts.
    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Flush => {
                self.index.flush().map_err(fail)?;
            }
            Op::Reopen => self.reopen()?,
            Op::Query(query) => self.check_query(query)?,
            Op::Fetch { ns, ids } => self.check_fetch(*ns, ids)?,
            Op::List { ns, prefix, limit } => {
                self.check_list(NAMESPACES[*ns], ID_PREFIXES[*prefix], *limit)?;
            }
            Op::FetchByMetadata { ns, filter, limit } => {
                self.check_fetch_by_metadata(*ns, filter, *limit)?;
            }
            Op::ListNamespaces { prefix, limit } => {
                self.check_list_namespaces(NAMESPACE_PREFIXES[*prefix], *limit)?;
            }
            Op::Stats { filter } => self.check_stats(filter.as_ref())?,
            write => {
                let got = self.write(write);
                let expected = self.model.apply(write);
                prop_assert_eq!(got, expected, "the outcome of the write");
            }
        }
        self.check_namespaces()
    }

    /// Sends a write to the index.
    fn write(&self, op: &Op) -> Outcome {
        let name = |ns: &usize| NAMESPACES[*ns].to_owned();
        let result = match op {
            Op::Upsert { ns, records } => self.index.upsert(UpsertRequest {
                namespace: name(ns),
                vectors: records
                    .iter()
                    .map(|record| VectorInput {
                        id: id(record.id),
                        values: dense(&record.values),
                        sparse_values: record.sparse.as_ref().map(sparse_input),
                        metadata: record.metadata.as_ref().map(Json::object),
                    })
                    .collect(),
            }),
            Op::Update {
                ns,
                id: i,
                values,
                sparse,
                set_metadata,
                dry_run,
            } => self.index.update(UpdateRequest {
                namespace: name(ns),
                id: id(*i),
                values: values.as_deref().map(dense).unwrap_or_default(),
                sparse_values: sparse.as_ref().map(sparse_input),
                set_metadata: set_metadata.as_ref().map(Json::object),
                filter: None,
                dry_run: *dry_run,
            }),
            Op::UpdateByFilter {
                ns,
                filter,
                set_metadata,
                dry_run,
            } => self.index.update(UpdateRequest {
                namespace: name(ns),
                filter: Some(filter.object()),
                set_metadata: Some(set_metadata.object()),
                dry_run: *dry_run,
                ..Default::default()
            }),
            Op::Delete { ns, ids } => self
                .index
                .delete(DeleteRequest {
                    namespace: name(ns),
                    ids: ids.iter().map(|i| id(*i)).collect(),
                    ..Default::default()
                })
                .map(|()| 0),
            Op::DeleteByFilter { ns, filter } => self
                .index
                .delete(DeleteRequest {
                    namespace: name(ns),
                    filter: Some(filter.object()),
                    ..Default::default()
                })
                .map(|()| 0),
            Op::DeleteAll { ns } => self
                .index
                .delete(DeleteRequest {
                    namespace: name(ns),
                    delete_all: true,
                    ..Default::default()
                })
                .map(|()| 0),
            Op::CreateNamespace { ns, schema } => self
                .index
                .create_namespace(&name(ns), schema.then(|| vec!["genre".to_owned()]))
                .map(|_| 0),
            Op::DeleteNamespace { ns } => self.index.delete_namespace(&name(ns)).map(|()| 0),
            read => panic!("{read:?} is not a write"),
        };
        result.map_err(|err| err.code())
    }

    /// A restart: the engine is dropped and the index opened from its
    /// directory again; it must read as before, down to the size estimates.
    fn reopen(&mut self) -> Result<(), TestCaseError> {
        let before = self.all_namespaces()?;
        let config = self.config();
        let durable = self.durable.as_mut().expect("only durable cases reopen");
        // Nothing of the old engine may outlive the restart: drop its index
        // (swapped for a throwaway one) and the engine itself.
        drop(mem::replace(
            &mut self.index,
            Arc::new(index(config.dimension.get(), config.metric)),
        ));
        durable.engine = Engine::open_with(durable.dir.path(), durable.policy);
        self.index = durable
            .engine
            .open_index(NAME, config)
            .map_err(|err| fail(format!("reopening: {err}")))?;
        prop_assert_eq!(self.all_namespaces()?, before, "namespaces after reopening");
        self.check_everything()
    }

    /// Every namespace (one page holds them all).
    fn all_namespaces(&self) -> Result<Vec<crate::NamespaceInfo>, TestCaseError> {
        let response = self
            .index
            .list_namespaces(ListNamespacesRequest::default())
            .map_err(fail)?;
        prop_assert!(response.next.is_none());
        Ok(response.namespaces)
    }

    /// After every step: the namespaces, their counts and schemas, by
    /// listing, describing each, and the index stats.
    fn check_namespaces(&self) -> Result<(), TestCaseError> {
        let expected: Vec<(String, u64, Option<Vec<String>>)> = self
            .model
            .spaces
            .iter()
            .map(|(name, space)| {
                (
                    name.clone(),
                    space.records.len() as u64,
                    space.schema.clone(),
                )
            })
            .collect();
        let listed: Vec<_> = self
            .all_namespaces()?
            .into_iter()
            .map(|info| (info.name, info.record_count, info.schema_fields))
            .collect();
        prop_assert_eq!(&listed, &expected, "list_namespaces");
        for name in NAMESPACES {
            let described = self
                .index
                .describe_namespace(name)
                .map(|info| (info.name, info.record_count, info.schema_fields))
                .map_err(|err| err.code());
            let expected = self
                .model
                .space(name)
                .map(|space| {
                    (
                        canonical(name).to_owned(),
                        space.records.len() as u64,
                        space.schema.clone(),
                    )
                })
                .ok_or(ErrorCode::NotFound);
            prop_assert_eq!(described, expected, "describe_namespace({:?})", name);
        }
        self.check_stats(None)
    }

    fn check_stats(&self, filter: Option<&Json>) -> Result<(), TestCaseError> {
        let stats = self
            .index
            .describe_stats(filter.map(Json::object))
            .map_err(fail)?;
        let filter = effective(filter);
        let expected: Vec<(String, u64)> = self
            .model
            .spaces
            .iter()
            .map(|(name, space)| {
                let count = space
                    .records
                    .values()
                    .filter(|s| {
                        filter
                            .as_ref()
                            .is_none_or(|f| satisfies(f, s.metadata.as_ref()))
                    })
                    .count();
                (name.clone(), count as u64)
            })
            .collect();
        prop_assert_eq!(
            stats.total_vector_count,
            expected.iter().map(|(_, count)| count).sum::<u64>()
        );
        prop_assert_eq!(&stats.namespaces, &expected, "describe_stats");
        prop_assert_eq!(stats.dimension, self.config().dimension);
        prop_assert_eq!(stats.metric, self.metric);
        Ok(())
    }

    fn check_query(&self, query: &Query) -> Result<(), TestCaseError> {
        let name = NAMESPACES[query.ns];
        let (vector, target_id) = match &query.target {
            Target::Vector(values) => (dense(values), String::new()),
            Target::Id(i) => (Vec::new(), id(*i)),
        };
        let got = self.index.query(QueryRequest {
            namespace: name.to_owned(),
            top_k: query.top_k,
            filter: query.filter.as_ref().map(Json::object),
            include_values: query.include_values,
            include_metadata: query.include_metadata,
            vector,
            sparse_vector: query.sparse.as_ref().map(sparse_input),
            id: target_id,
        });
        let Some(space) = self.model.space(name) else {
            // A missing namespace has no matches, even for a query by id.
            let response = got.map_err(fail)?;
            prop_assert_eq!(response.namespace, canonical(name));
            prop_assert!(response.matches.is_empty());
            return Ok(());
        };
        let target = match &query.target {
            Target::Vector(values) => dense(values),
            Target::Id(i) => match space.records.get(&id(*i)) {
                Some(stored) => stored.values.clone(),
                None => {
                    prop_assert_eq!(
                        got.map(drop).map_err(|e| e.code()),
                        Err(ErrorCode::NotFound)
                    );
                    return Ok(());
                }
            },
        };
        let response = got.map_err(fail)?;
        prop_assert_eq!(&response.namespace, canonical(name));
        let filter = effective(query.filter.as_ref());
        let sparse = query.sparse.as_ref().map(sorted_sparse);
        let ranked = self
            .model
            .ranking(space, &target, sparse.as_deref(), filter.as_ref());
        let matches = &response.matches;
        prop_assert_eq!(
            matches.len(),
            ranked.len().min(query.top_k as usize),
            "number of matches"
        );
        let tolerance = tolerance(self.metric);
        let mut seen = HashSet::new();
        for (rank, (found, expected)) in matches.iter().zip(&ranked).enumerate() {
            prop_assert!(seen.insert(found.id.as_str()), "{} twice", found.id);
            // The record must be one the model would consider: it exists and
            // satisfies the filter.
            let Some((_, model_score, stored)) = ranked.iter().find(|(id, _, _)| *id == found.id)
            else {
                return Err(fail(format!(
                    "match {rank} is {}, which the model does not have or which fails the filter",
                    found.id
                )));
            };
            if let Some(filter) = &filter {
                prop_assert!(satisfies(filter, stored.metadata.as_ref()));
                if let Some(metadata) = &found.metadata {
                    let returned = metadata_to_json(metadata);
                    prop_assert!(
                        satisfies(filter, Some(&returned)),
                        "match {} ({}) has metadata that fails the filter",
                        rank,
                        found.id
                    );
                }
            }
            let score = f64::from(found.score);
            prop_assert!(
                (score - model_score).abs() <= tolerance,
                "match {} ({}) scores {} but the model says {}",
                rank,
                found.id,
                score,
                model_score
            );
            // The same record as the model's at this rank; only records whose
            // scores are within the tolerance of each other may trade places.
            prop_assert!(
                found.id == expected.0
                    || (tolerance > 0.0 && (model_score - expected.1).abs() <= tolerance),
                "match {} is {} (score {}) but the model ranks {} (score {}) there",
                rank,
                found.id,
                score,
                expected.0,
                expected.1
            );
            if rank > 0 {
                prop_assert!(
                    ranks_before(self.metric, &matches[rank - 1], found),
                    "matches {} and {} are out of order",
                    rank - 1,
                    rank
                );
            }
            if query.include_values {
                prop_assert_eq!(&found.values, &stored.values);
                prop_assert_eq!(
                    found.sparse_values.as_ref().map(sparse_pairs),
                    stored.sparse.clone()
                );
            } else {
                prop_assert!(found.values.is_empty() && found.sparse_values.is_none());
            }
            if query.include_metadata {
                prop_assert_eq!(
                    found.metadata.as_ref().map(metadata_to_json),
                    stored.metadata.clone()
                );
            } else {
                prop_assert!(found.metadata.is_none());
            }
        }
        Ok(())
    }

    fn check_fetch(&self, ns: usize, ids: &[usize]) -> Result<(), TestCaseError> {
        let name = NAMESPACES[ns];
        let response = self
            .index
            .fetch(FetchRequest {
                namespace: name.to_owned(),
                ids: ids.iter().map(|i| id(*i)).collect(),
            })
            .map_err(fail)?;
        prop_assert_eq!(&response.namespace, canonical(name));
        // Request order; a repeated id once; a missing one not at all.
        let mut seen = HashSet::new();
        let expected: Vec<View> = ids
            .iter()
            .map(|i| id(*i))
            .filter(|id| seen.insert(id.clone()))
            .filter_map(|id| {
                let stored = self.model.space(name)?.records.get(&id)?;
                Some(view_stored(&id, stored))
            })
            .collect();
        let got: Vec<View> = response.vectors.iter().map(view_record).collect();
        prop_assert_eq!(got, expected, "fetch");
        Ok(())
    }

    /// Lists every page of ids with `prefix`.
    fn check_list(
        &self,
        name: &str,
        prefix: &str,
        limit: Option<u32>,
    ) -> Result<(), TestCaseError> {
        let page_size = limit.unwrap_or(100) as usize;
        let mut token = None;
        let mut ids = Vec::new();
        for _ in 0..=IDS {
            let page = self
                .index
                .list(ListRequest {
                    namespace: name.to_owned(),
                    prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
                    limit,
                    pagination_token: token.take(),
                })
                .map_err(fail)?;
            prop_assert_eq!(&page.namespace, canonical(name));
            prop_assert!(page.ids.len() <= page_size);
            ids.extend(page.ids.iter().cloned());
            match page.next {
                Some(next) => {
                    prop_assert_eq!(page.ids.len(), page_size, "a page before the last is full");
                    token = Some(next);
                }
                None => break,
            }
        }
        prop_assert!(token.is_none(), "list never ended");
        let expected: Vec<String> = self
            .model
            .space(name)
            .into_iter()
            .flat_map(|space| space.records.keys())
            .filter(|id| id.starts_with(prefix))
            .cloned()
            .collect();
        prop_assert_eq!(ids, expected, "list with prefix {:?}", prefix);
        Ok(())
    }

    fn check_fetch_by_metadata(
        &self,
        ns: usize,
        filter: &Json,
        limit: u32,
    ) -> Result<(), TestCaseError> {
        let name = NAMESPACES[ns];
        let mut token = None;
        let mut got = Vec::new();
        for _ in 0..=IDS {
            let page = self
                .index
                .fetch_by_metadata(FetchByMetadataRequest {
                    namespace: name.to_owned(),
                    filter: Some(filter.object()),
                    limit: Some(limit),
                    pagination_token: token.take(),
                })
                .map_err(fail)?;
            prop_assert_eq!(&page.namespace, canonical(name));
            prop_assert!(page.vectors.len() <= limit as usize);
            got.extend(page.vectors.iter().map(view_record));
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        prop_assert!(token.is_none(), "fetch by metadata never ended");
        let filter = filter.object();
        let expected: Vec<View> = self
            .model
            .space(name)
            .into_iter()
            .flat_map(|space| &space.records)
            .filter(|(_, stored)| satisfies(&filter, stored.metadata.as_ref()))
            .map(|(id, stored)| view_stored(id, stored))
            .collect();
        prop_assert_eq!(got, expected, "fetch by metadata");
        Ok(())
    }

    fn check_list_namespaces(&self, prefix: &str, limit: Option<u32>) -> Result<(), TestCaseError> {
        let expected: Vec<String> = self
            .model
            .spaces
            .keys()
            .filter(|name| name.starts_with(prefix))
            .cloned()
            .collect();
        let mut token = None;
        let mut names = Vec::new();
        for _ in 0..=NAMESPACES.len() {
            let page = self
                .index
                .list_namespaces(ListNamespacesRequest {
                    prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
                    limit,
                    pagination_token: token.take(),
                })
                .map_err(fail)?;
            prop_assert_eq!(page.total_count as usize, expected.len(), "total_count");
            names.extend(page.namespaces.into_iter().map(|info| info.name));
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        prop_assert!(token.is_none(), "list_namespaces never ended");
        prop_assert_eq!(names, expected, "list_namespaces with prefix {:?}", prefix);
        Ok(())
    }

    /// Everything, in every namespace: ids, records, and a query ranking
    /// them all.
    fn check_everything(&self) -> Result<(), TestCaseError> {
        for (ns, name) in NAMESPACES.iter().enumerate() {
            self.check_list(name, "", None)?;
            self.check_fetch(ns, &(0..IDS).collect::<Vec<_>>())?;
            self.check_query(&Query {
                ns,
                top_k: 100,
                target: Target::Vector(vec![1; self.dim]),
                sparse: None,
                filter: None,
                include_values: true,
                include_metadata: true,
            })?;
        }
        Ok(())
    }
}

fn run(case: &Case) -> Result<(), TestCaseError> {
    let mut harness = Harness::new(case);
    for (step, op) in case.ops.iter().enumerate() {
        harness
            .step(op)
            .map_err(|err| fail(format!("step {step}: {op:?}: {err}")))?;
    }
    let end = if harness.durable.is_some() {
        // A last restart: every acknowledged write must have survived.
        harness.reopen()
    } else {
        harness.check_everything()
    };
    end.map_err(|err| fail(format!("at the end: {err}")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn an_index_reads_like_the_model(case in case(false, 1..64)) {
        run(&case)?;
    }
}

proptest! {
    // Every write syncs the log, and a log of one byte flushes after each.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_durable_index_reads_like_the_model_across_reopens(case in case(true, 1..40)) {
        run(&case)?;
    }
}
