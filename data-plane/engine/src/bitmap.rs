//! The metadata index of one namespace: an inverted index from metadata
//! values to compressed bitmaps of rows, so a filter yields its exact set of
//! matching rows by set algebra instead of being evaluated on every record.
//!
//! A namespace keeps its records in dense rows `0..n`; [`MetadataIndex`] is
//! told about every row that is added, removed or moved and answers
//! [`MetadataIndex::matching`] with a [`RoaringBitmap`] that equals, row for
//! row, what [`Filter::matches_record`] says. Callers use it to count how
//! many rows a filter selects, to scan exactly those rows, and to test
//! membership while walking an ANN graph.
//!
//! # Layout
//!
//! Per metadata key, a [`FieldIndex`] holds:
//!
//! - `present`: the rows that have the key at all, whatever its type (for
//!   `$exists`, and for the negations `$ne` / `$nin`, which also match rows
//!   lacking the key);
//! - `strings`: string value → rows; a list-of-strings field indexes each of
//!   its elements, so "equals `x`" is one lookup for both kinds, exactly as
//!   `$eq` / `$in` treat lists ("any element");
//! - `numbers`: number → rows in a [`BTreeMap`] keyed by [`NumberKey`], so
//!   `$gt` / `$gte` / `$lt` / `$lte` are unions over a key range;
//! - `bools`: the rows holding `false` and those holding `true`.
//!
//! Each row holds one value per key, so the maps of different types never
//! share a row, and a lookup in the map of one type cannot match a value of
//! another (`"1"` is not `1`). Bitmaps that become empty are dropped, so the
//! index of an emptied namespace holds nothing.
//!
//! # Evaluation
//!
//! [`MetadataIndex::matching`] starts from all rows `0..rows` and narrows
//! that set clause by clause: a positive condition intersects it with the
//! rows it selects, a negation (`$ne`, `$nin`, `$exists: false`) subtracts
//! the rows it excludes (so rows lacking the key stay in), `$and` narrows in
//! turn and `$or` unions its branches, each narrowed from the current set.
//! An empty filter keeps every row.
//!
//! # Numbers
//!
//! Filters compare metadata numbers as `f64` with `==`, `<`, `>`: `2` equals
//! `2.0`, and `-0.0` equals `0.0`. [`NumberKey`] maps `-0.0` to `0.0` and
//! then orders finite floats by their bits (sign flipped), which agrees with
//! those comparisons. Metadata and filter operands are always finite, so NaN
//! never reaches it.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use roaring::{MultiOps, RoaringBitmap};

use crate::filter::{Clause, Condition, Scalar, ValueSet};
use crate::{Filter, Metadata, MetadataValue};

/// The inverted metadata index of one namespace: per key, which rows hold
/// which value.
#[derive(Debug, Default, Clone)]
pub(crate) struct MetadataIndex {
    /// Per metadata key; keys that no row holds any more are removed.
    fields: HashMap<String, FieldIndex>,
}

/// The rows holding each value of one metadata key.
#[derive(Debug, Default, Clone)]
struct FieldIndex {
    /// Rows that have this key, with a value of any type.
    present: RoaringBitmap,
    /// Rows whose value is this string, or a list with this string in it.
    strings: HashMap<String, RoaringBitmap>,
    /// Rows whose value is this number; ordered, for range operators.
    numbers: BTreeMap<NumberKey, RoaringBitmap>,
    /// Rows whose value is `false` (index 0) or `true` (index 1).
    bools: [RoaringBitmap; 2],
}

/// A finite `f64` as a totally ordered key that agrees with `f64`'s own
/// `==` and `<` on finite values: `-0.0` and `0.0` are one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct NumberKey(u64);

impl NumberKey {
    /// The key of `n`, which must not be NaN.
    fn new(n: f64) -> NumberKey {
        debug_assert!(!n.is_nan(), "metadata and filter numbers are never NaN");
        // `-0.0 == 0.0` holds, so both become `+0.0`.
        let n = if n == 0.0 { 0.0 } else { n };
        let bits = n.to_bits();
        // Negative floats order backwards by bits: flip them all. Positive
        // ones order forwards: set the sign bit so they sort above negatives.
        NumberKey(if bits >> 63 == 1 {
            !bits
        } else {
            bits | 1 << 63
        })
    }
}

impl MetadataIndex {
    /// An empty index.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Row `row` now holds a record with `metadata` (`None`: no metadata).
    /// Call after a record is added at `row`; to change the metadata of a
    /// row, [`remove`](Self::remove) the old one first.
    pub(crate) fn insert(&mut self, row: u32, metadata: Option<&Metadata>) {
        self.edit(metadata, |bitmap| {
            bitmap.insert(row);
        });
    }

    /// The record at row `row`, which had `metadata`, is gone.
    pub(crate) fn remove(&mut self, row: u32, metadata: Option<&Metadata>) {
        self.edit(metadata, |bitmap| {
            bitmap.remove(row);
        });
    }

    /// The record at row `from`, with `metadata`, moved to row `to`, which
    /// holds no record (rows are kept dense: removing a row moves the last
    /// row into the hole).
    pub(crate) fn move_row(&mut self, from: u32, to: u32, metadata: Option<&Metadata>) {
        self.edit(metadata, |bitmap| {
            bitmap.remove(from);
            bitmap.insert(to);
        });
    }

    /// Forgets every row.
    pub(crate) fn clear(&mut self) {
        self.fields.clear();
    }

    /// Exactly the rows in `0..rows` whose metadata satisfies `filter`: row
    /// `r` is in the result if and only if `filter.matches_record` holds for
    /// the metadata of row `r`.
    pub(crate) fn matching(&self, filter: &Filter, rows: u32) -> RoaringBitmap {
        let mut result = RoaringBitmap::new();
        result.insert_range(0..rows);
        self.narrow(&mut result, filter);
        result
    }

    /// Approximate bytes used by the index, for memory reporting.
    pub(crate) fn memory_bytes(&self) -> usize {
        let bitmap = |b: &RoaringBitmap| size_of::<RoaringBitmap>() + b.serialized_size();
        self.fields
            .iter()
            .map(|(key, field)| {
                let strings: usize = field
                    .strings
                    .iter()
                    .map(|(s, rows)| size_of::<String>() + s.len() + bitmap(rows))
                    .sum();
                let numbers: usize = field
                    .numbers
                    .values()
                    .map(|rows| size_of::<NumberKey>() + bitmap(rows))
                    .sum();
                size_of::<(String, FieldIndex)>()
                    + key.len()
                    + field.present.serialized_size()
                    + strings
                    + numbers
                    + field
                        .bools
                        .iter()
                        .map(RoaringBitmap::serialized_size)
                        .sum::<usize>()
            })
            .sum()
    }

    /// Applies `edit` to every bitmap a row with `metadata` belongs to,
    /// creating missing ones and dropping those left empty.
    fn edit(&mut self, metadata: Option<&Metadata>, mut edit: impl FnMut(&mut RoaringBitmap)) {
        for (key, value) in metadata.into_iter().flatten() {
            edit_entry(
                &mut self.fields,
                key,
                |field| field.edit_row(value, &mut edit),
                |field| field.present.is_empty(),
            );
        }
    }

    /// Narrows `rows` to those that satisfy every clause of `filter`.
    fn narrow(&self, rows: &mut RoaringBitmap, filter: &Filter) {
        for clause in filter.clauses() {
            if rows.is_empty() {
                return;
            }
            match clause {
                Clause::And(filters) => {
                    for filter in filters {
                        self.narrow(rows, filter);
                    }
                }
                Clause::Or(filters) => {
                    let mut union = RoaringBitmap::new();
                    for filter in filters {
                        let mut branch = rows.clone();
                        self.narrow(&mut branch, filter);
                        union |= branch;
                    }
                    *rows = union;
                }
                Clause::Field { key, condition } => {
                    narrow_field(rows, self.fields.get(key), condition);
                }
            }
        }
    }
}

/// Narrows `rows` to those whose value of one key (indexed in `field`, `None`
/// when no row has the key) satisfies `condition`.
fn narrow_field(rows: &mut RoaringBitmap, field: Option<&FieldIndex>, condition: &Condition) {
    // Without any row holding the key, only the negations match (every row).
    let Some(field) = field else {
        if !matches!(
            condition,
            Condition::Ne(_) | Condition::Nin(_) | Condition::Exists(false)
        ) {
            rows.clear();
        }
        return;
    };
    match condition {
        Condition::Eq(scalar) => match field.equal(scalar) {
            Some(equal) => *rows &= equal,
            None => rows.clear(),
        },
        Condition::Ne(scalar) => {
            if let Some(equal) = field.equal(scalar) {
                *rows -= equal;
            }
        }
        Condition::Gt(x) => *rows &= field.numbers_from(Bound::Excluded(*x)),
        Condition::Gte(x) => *rows &= field.numbers_from(Bound::Included(*x)),
        Condition::Lt(x) => *rows &= field.numbers_below(Bound::Excluded(*x)),
        Condition::Lte(x) => *rows &= field.numbers_below(Bound::Included(*x)),
        Condition::In(set) => *rows &= field.any_of(set),
        Condition::Nin(set) => *rows -= field.any_of(set),
        Condition::Exists(true) => *rows &= &field.present,
        Condition::Exists(false) => *rows -= &field.present,
    }
}

/// Applies `edit` to `map[key]` (a default value if the key is missing) and
/// keeps the entry only if it is not `empty` afterwards. The key is copied
/// only when a new entry is kept.
fn edit_entry<V: Default>(
    map: &mut HashMap<String, V>,
    key: &str,
    edit: impl FnOnce(&mut V),
    empty: impl Fn(&V) -> bool,
) {
    match map.get_mut(key) {
        Some(value) => {
            edit(value);
            if empty(value) {
                map.remove(key);
            }
        }
        None => {
            let mut value = V::default();
            edit(&mut value);
            if !empty(&value) {
                map.insert(key.to_owned(), value);
            }
        }
    }
}

impl FieldIndex {
    /// Applies `edit` to every bitmap of this key that a row holding `value`
    /// belongs to, creating missing ones and dropping those left empty.
    fn edit_row(&mut self, value: &MetadataValue, edit: &mut impl FnMut(&mut RoaringBitmap)) {
        edit(&mut self.present);
        match value {
            MetadataValue::String(s) => {
                edit_entry(&mut self.strings, s, edit, RoaringBitmap::is_empty)
            }
            MetadataValue::StringList(list) => {
                for s in list {
                    edit_entry(&mut self.strings, s, &mut *edit, RoaringBitmap::is_empty);
                }
            }
            MetadataValue::Number(n) => {
                let key = NumberKey::new(*n);
                let rows = self.numbers.entry(key).or_default();
                edit(rows);
                if rows.is_empty() {
                    self.numbers.remove(&key);
                }
            }
            MetadataValue::Bool(b) => edit(&mut self.bools[usize::from(*b)]),
        }
    }

    /// The rows whose value equals `scalar` in the sense of `$eq` (a list
    /// equals a string it contains), or `None` if there are none.
    fn equal(&self, scalar: &Scalar) -> Option<&RoaringBitmap> {
        match scalar {
            Scalar::String(s) => self.strings.get(s),
            Scalar::Number(n) => self.numbers.get(&NumberKey::new(*n)),
            Scalar::Bool(b) => Some(&self.bools[usize::from(*b)]),
        }
    }

    /// The rows whose number is above `low` (`$gt`, `$gte`).
    fn numbers_from(&self, low: Bound<f64>) -> RoaringBitmap {
        // One end is unbounded, so `BTreeMap::range` cannot panic on an inverted range.
        let range = (low.map(NumberKey::new), Bound::Unbounded);
        self.numbers.range(range).map(|(_, rows)| rows).union()
    }

    /// The rows whose number is below `high` (`$lt`, `$lte`).
    fn numbers_below(&self, high: Bound<f64>) -> RoaringBitmap {
        let range = (Bound::Unbounded, high.map(NumberKey::new));
        self.numbers.range(range).map(|(_, rows)| rows).union()
    }

    /// The rows whose value is in `set` in the sense of `$in`: a string or
    /// number of the set, or a list holding one of its strings.
    fn any_of(&self, set: &ValueSet) -> RoaringBitmap {
        let strings = set.strings.iter().map(|s| self.strings.get(s));
        let numbers = set
            .numbers
            .iter()
            .map(|n| self.numbers.get(&NumberKey::new(*n)));
        strings.chain(numbers).flatten().union()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::{metadata, test_support::object};

    fn filter(value: Value) -> Filter {
        Filter::parse(&object(value)).expect("test filters are valid")
    }

    fn record(value: Value) -> Metadata {
        metadata::parse("metadata", &object(value)).expect("test metadata is valid")
    }

    /// The rows of a small catalogue that `f` selects, checked against
    /// `Filter::matches_record` on every row.
    fn matching(f: Value) -> Vec<u32> {
        let records = [
            Some(json!({"genre": "drama", "year": 2019, "tags": ["a", "b"], "new": true})),
            Some(json!({"genre": "comedy", "year": 2005, "tags": ["b"], "new": false})),
            Some(json!({"genre": 1, "year": 2010.5, "tags": []})),
            Some(json!({})),
            None,
            Some(json!({"genre": "1", "year": -0.0, "new": "true"})),
        ];
        let records: Vec<Option<Metadata>> = records.into_iter().map(|m| m.map(record)).collect();
        let mut index = MetadataIndex::new();
        for (row, metadata) in (0..).zip(&records) {
            index.insert(row, metadata.as_ref());
        }
        let f = filter(f);
        let rows = records.len() as u32;
        let result = index.matching(&f, rows);
        let expected: Vec<u32> = (0..rows)
            .filter(|&row| f.matches_record(records[row as usize].as_ref()))
            .collect();
        let result: Vec<u32> = result.iter().collect();
        assert_eq!(
            result, expected,
            "index and Filter::matches_record disagree"
        );
        result
    }

    #[test]
    fn empty_filter_matches_every_row() {
        assert_eq!(matching(json!({})), [0, 1, 2, 3, 4, 5]);
        assert!(
            MetadataIndex::new()
                .matching(&filter(json!({})), 0)
                .is_empty()
        );
    }

    #[test]
    fn eq_never_mixes_types() {
        assert_eq!(matching(json!({"genre": "drama"})), [0]);
        assert_eq!(matching(json!({"genre": {"$eq": "comedy"}})), [1]);
        assert_eq!(matching(json!({"genre": 1})), [2]);
        assert_eq!(matching(json!({"genre": 1.0})), [2]);
        assert_eq!(matching(json!({"genre": "1"})), [5]);
        assert_eq!(matching(json!({"new": true})), [0]);
        assert_eq!(matching(json!({"new": false})), [1]);
        assert_eq!(matching(json!({"new": "true"})), [5]);
        assert_eq!(matching(json!({"missing": 1})), Vec::<u32>::new());
    }

    #[test]
    fn numbers_compare_as_floats() {
        assert_eq!(matching(json!({"year": 2019})), [0]);
        assert_eq!(matching(json!({"year": 2019.0})), [0]);
        // `-0.0 == 0.0`, in both directions.
        assert_eq!(matching(json!({"year": 0})), [5]);
        assert_eq!(matching(json!({"year": -0.0})), [5]);
        assert_eq!(matching(json!({"year": {"$gte": 0}})), [0, 1, 2, 5]);
        assert_eq!(matching(json!({"year": {"$gt": -0.0}})), [0, 1, 2]);
        assert_eq!(matching(json!({"year": {"$lt": 0}})), Vec::<u32>::new());
        assert_eq!(matching(json!({"year": {"$lte": 0.0}})), [5]);
    }

    #[test]
    fn ne_matches_missing_fields() {
        assert_eq!(
            matching(json!({"genre": {"$ne": "drama"}})),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(matching(json!({"genre": {"$ne": 1}})), [0, 1, 3, 4, 5]);
        assert_eq!(matching(json!({"new": {"$ne": true}})), [1, 2, 3, 4, 5]);
        assert_eq!(matching(json!({"missing": {"$ne": 1}})), [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn ranges_select_numbers_only() {
        assert_eq!(matching(json!({"year": {"$gt": 2010}})), [0, 2]);
        assert_eq!(matching(json!({"year": {"$gte": 2010.5}})), [0, 2]);
        assert_eq!(matching(json!({"year": {"$lt": 2010.5}})), [1, 5]);
        assert_eq!(matching(json!({"year": {"$lte": 2010.5}})), [1, 2, 5]);
        assert_eq!(
            matching(json!({"year": {"$gte": 2000, "$lt": 2011}})),
            [1, 2]
        );
        // Empty ranges.
        assert_eq!(
            matching(json!({"year": {"$gt": 2005, "$lt": 2005}})),
            Vec::<u32>::new()
        );
        assert_eq!(
            matching(json!({"year": {"$gte": 2011, "$lte": 2006}})),
            Vec::<u32>::new()
        );
        // Strings, booleans and lists never satisfy a comparison.
        assert_eq!(matching(json!({"genre": {"$gt": 0}})), [2]);
        assert_eq!(matching(json!({"new": {"$gte": 0}})), Vec::<u32>::new());
        assert_eq!(matching(json!({"tags": {"$lt": 10}})), Vec::<u32>::new());
        assert_eq!(matching(json!({"missing": {"$lt": 10}})), Vec::<u32>::new());
    }

    #[test]
    fn in_and_nin() {
        assert_eq!(
            matching(json!({"genre": {"$in": ["drama", "comedy"]}})),
            [0, 1]
        );
        assert_eq!(matching(json!({"genre": {"$in": ["drama", 1]}})), [0, 2]);
        assert_eq!(matching(json!({"genre": {"$in": ["1"]}})), [5]);
        assert_eq!(
            matching(json!({"year": {"$in": [2005, 2010.5, 0]}})),
            [1, 2, 5]
        );
        assert_eq!(
            matching(json!({"genre": {"$nin": ["drama", 1]}})),
            [1, 3, 4, 5]
        );
        assert_eq!(
            matching(json!({"missing": {"$in": ["x"]}})),
            Vec::<u32>::new()
        );
        assert_eq!(
            matching(json!({"missing": {"$nin": ["x"]}})),
            [0, 1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn list_fields_match_any_element() {
        assert_eq!(matching(json!({"tags": "a"})), [0]);
        assert_eq!(matching(json!({"tags": "b"})), [0, 1]);
        assert_eq!(
            matching(json!({"$and": [{"tags": "a"}, {"tags": "b"}]})),
            [0]
        );
        assert_eq!(matching(json!({"tags": {"$in": ["a", "z"]}})), [0]);
        // No element may match; rows without the field, or with an empty list, match.
        assert_eq!(matching(json!({"tags": {"$ne": "a"}})), [1, 2, 3, 4, 5]);
        assert_eq!(matching(json!({"tags": {"$nin": ["b"]}})), [2, 3, 4, 5]);
        assert_eq!(matching(json!({"tags": true})), Vec::<u32>::new());
    }

    #[test]
    fn exists() {
        assert_eq!(matching(json!({"tags": {"$exists": true}})), [0, 1, 2]);
        assert_eq!(matching(json!({"tags": {"$exists": false}})), [3, 4, 5]);
        assert_eq!(
            matching(json!({"missing": {"$exists": true}})),
            Vec::<u32>::new()
        );
        assert_eq!(
            matching(json!({"missing": {"$exists": false}})),
            [0, 1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn logical_operators_nest() {
        assert_eq!(
            matching(json!({"$or": [{"genre": "comedy"}, {"year": {"$gt": 2010}}]})),
            [0, 1, 2]
        );
        assert_eq!(
            matching(json!({"$and": [{"year": {"$gt": 2000}}, {"new": false}]})),
            [1]
        );
        assert_eq!(
            matching(json!({"genre": "drama", "new": false})),
            Vec::<u32>::new()
        );
        assert_eq!(
            matching(json!({
                "$or": [{"$and": [{"genre": "drama"}, {"new": true}]}, {"genre": 1}, {"tags": {"$exists": false}}],
                "year": {"$gte": 0}
            })),
            [0, 2, 5]
        );
        assert_eq!(
            matching(
                json!({"$or": [{"genre": {"$ne": "drama"}}, {"missing": 1}], "new": {"$nin": [1]}})
            ),
            [1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn moves_and_removals_keep_rows_dense() {
        let a = record(json!({"k": "a", "n": 1, "l": ["x", "x"]}));
        let b = record(json!({"k": "b", "n": 2}));
        let mut index = MetadataIndex::new();
        index.insert(0, Some(&a));
        index.insert(1, None);
        index.insert(2, Some(&b));
        // Remove row 0: the last row (2) moves into it.
        index.remove(0, Some(&a));
        index.move_row(2, 0, Some(&b));
        let rows = |f: Value| index.matching(&filter(f), 2).iter().collect::<Vec<_>>();
        assert_eq!(rows(json!({"k": "b"})), [0]);
        assert_eq!(rows(json!({"k": "a"})), Vec::<u32>::new());
        assert_eq!(rows(json!({"l": "x"})), Vec::<u32>::new());
        assert_eq!(rows(json!({"n": {"$gte": 1}})), [0]);
        assert_eq!(rows(json!({"k": {"$exists": false}})), [1]);
        // Values no row holds any more are forgotten.
        assert!(!index.fields.contains_key("l"));
        assert_eq!(index.fields["n"].numbers.len(), 1);
        index.remove(0, Some(&b));
        assert!(index.fields.is_empty());
        assert_eq!(index.memory_bytes(), 0);

        index.insert(0, Some(&a));
        assert!(index.memory_bytes() > 0);
        index.clear();
        assert!(index.fields.is_empty());
        assert!(index.matching(&filter(json!({"k": "a"})), 1).is_empty());
    }

    #[test]
    fn number_keys_order_like_floats() {
        let values = [
            -1e300,
            -2.5,
            -1.0,
            -f64::MIN_POSITIVE,
            -0.0,
            0.0,
            5e-324,
            0.5,
            2.0,
            1e300,
        ];
        for a in values {
            for b in values {
                assert_eq!(
                    NumberKey::new(a).cmp(&NumberKey::new(b)),
                    a.partial_cmp(&b).expect("no NaN"),
                    "{a} vs {b}"
                );
            }
        }
    }
}

#[cfg(test)]
mod proptests {
    //! Random metadata, random row edits and random filters: the index must
    //! agree with `Filter::matches_record` on every row, and forget every
    //! value once the rows holding it are gone.

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::test_support::object;

    /// Keys of generated metadata; `mixed` takes values of every type.
    const KEYS: [&str; 5] = ["s", "n", "b", "l", "mixed"];

    fn string() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c", "1"]).prop_map(str::to_owned)
    }

    /// Small integers and halves, with both zeros.
    fn number() -> impl Strategy<Value = f64> {
        prop_oneof![(-4..=4i32).prop_map(|n| f64::from(n) / 2.0), Just(-0.0),]
    }

    fn value_of(key: &str) -> BoxedStrategy<MetadataValue> {
        let list = || prop::collection::vec(string(), 0..3).prop_map(MetadataValue::StringList);
        match key {
            "s" => string().prop_map(MetadataValue::String).boxed(),
            "n" => number().prop_map(MetadataValue::Number).boxed(),
            "b" => any::<bool>().prop_map(MetadataValue::Bool).boxed(),
            "l" => list().boxed(),
            _ => prop_oneof![
                string().prop_map(MetadataValue::String),
                number().prop_map(MetadataValue::Number),
                any::<bool>().prop_map(MetadataValue::Bool),
                list(),
            ]
            .boxed(),
        }
    }

    /// A record's metadata: none at all, or each key present or missing.
    fn metadata() -> impl Strategy<Value = Option<Metadata>> {
        let fields: Vec<_> = KEYS
            .iter()
            .map(|&key| prop::option::weighted(0.6, value_of(key)).prop_map(move |v| (key, v)))
            .collect();
        prop::option::weighted(
            0.85,
            fields.prop_map(|fields| {
                fields
                    .into_iter()
                    .filter_map(|(key, value)| Some((key.to_owned(), value?)))
                    .collect()
            }),
        )
    }

    /// A filter operand number, written as an integer or a float.
    fn json_number() -> impl Strategy<Value = Value> {
        prop_oneof![
            (-3..=3i32).prop_map(Value::from),
            number().prop_map(|n| json!(n)),
        ]
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            string().prop_map(Value::from),
            json_number(),
            any::<bool>().prop_map(Value::from),
        ]
    }

    fn value_set() -> impl Strategy<Value = Value> {
        prop::collection::vec(
            prop_oneof![string().prop_map(Value::from), json_number()],
            1..4,
        )
        .prop_map(Value::from)
    }

    /// A bare value or an object of one to three operators.
    fn condition() -> impl Strategy<Value = Value> {
        let operator = prop_oneof![
            scalar().prop_map(|v| ("$eq", v)),
            scalar().prop_map(|v| ("$ne", v)),
            (
                prop::sample::select(vec!["$gt", "$gte", "$lt", "$lte"]),
                json_number()
            ),
            (prop::sample::select(vec!["$in", "$nin"]), value_set()),
            any::<bool>().prop_map(|b| ("$exists", Value::from(b))),
        ];
        prop_oneof![
            scalar(),
            prop::collection::vec(operator, 1..4).prop_map(|ops| {
                Value::Object(ops.into_iter().map(|(op, v)| (op.to_owned(), v)).collect())
            }),
        ]
    }

    /// A filter object nested through `$and` / `$or` at most two levels; may
    /// be empty at the top.
    fn filter() -> impl Strategy<Value = Value> {
        let mut keys = KEYS.to_vec();
        keys.push("absent");
        let leaf = prop::collection::vec((prop::sample::select(keys), condition()), 1..3).prop_map(
            |conditions| {
                Value::Object(
                    conditions
                        .into_iter()
                        .map(|(key, c)| (key.to_owned(), c))
                        .collect(),
                )
            },
        );
        let nested = leaf.prop_recursive(2, 12, 3, |inner| {
            (
                prop::sample::select(vec!["$and", "$or"]),
                prop::collection::vec(inner.clone(), 1..4),
                prop::option::of(inner),
            )
                .prop_map(|(op, filters, sibling)| {
                    let mut object = match sibling {
                        Some(Value::Object(object)) => object,
                        _ => serde_json::Map::new(),
                    };
                    object.insert(op.to_owned(), Value::from(filters));
                    Value::Object(object)
                })
        });
        prop_oneof![1 => Just(json!({})), 9 => nested]
    }

    /// A change to the namespace's dense rows.
    #[derive(Debug, Clone)]
    enum Op {
        /// Append a record.
        Insert(Option<Metadata>),
        /// Remove a row (index modulo the row count), moving the last row into it.
        Remove(usize),
        /// Replace the metadata of a row (index modulo the row count).
        Update(usize, Option<Metadata>),
        /// Remove every row.
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => metadata().prop_map(Op::Insert),
            3 => any::<usize>().prop_map(Op::Remove),
            2 => (any::<usize>(), metadata()).prop_map(|(row, m)| Op::Update(row, m)),
            1 => Just(Op::Clear),
        ]
    }

    /// Applies `op` to both the index and the plain model of its rows.
    fn apply(index: &mut MetadataIndex, model: &mut Vec<Option<Metadata>>, op: Op) {
        let row = |i: usize, len: usize| u32::try_from(i % len).expect("few rows");
        match op {
            Op::Insert(metadata) => {
                let row = u32::try_from(model.len()).expect("few rows");
                index.insert(row, metadata.as_ref());
                model.push(metadata);
            }
            Op::Remove(_) | Op::Update(..) if model.is_empty() => {}
            Op::Remove(i) => {
                let r = row(i, model.len());
                let last = u32::try_from(model.len() - 1).expect("few rows");
                index.remove(r, model[r as usize].as_ref());
                if r != last {
                    index.move_row(last, r, model[last as usize].as_ref());
                }
                model.swap_remove(r as usize);
            }
            Op::Update(i, metadata) => {
                let r = row(i, model.len());
                index.remove(r, model[r as usize].as_ref());
                index.insert(r, metadata.as_ref());
                model[r as usize] = metadata;
            }
            Op::Clear => {
                index.clear();
                model.clear();
            }
        }
    }

    proptest! {
        #[test]
        fn index_agrees_with_filter_matches(
            ops in prop::collection::vec(op(), 0..80),
            filters in prop::collection::vec(filter(), 1..6),
        ) {
            let filters: Vec<Filter> = filters
                .iter()
                .map(|f| Filter::parse(&object(f.clone())).expect("generated filters are valid"))
                .collect();
            let mut index = MetadataIndex::new();
            let mut model = Vec::new();
            for (step, op) in ops.into_iter().enumerate() {
                apply(&mut index, &mut model, op);
                // Check every few steps and at the end, to keep cases fast.
                if step % 8 != 7 {
                    continue;
                }
                check(&index, &model, &filters)?;
            }
            check(&index, &model, &filters)?;

            // Removing every row, last first or by swaps, leaves nothing behind.
            while !model.is_empty() {
                let middle = model.len() / 2;
                apply(&mut index, &mut model, Op::Remove(middle));
            }
            prop_assert!(index.fields.is_empty(), "left over: {:?}", index.fields);
            prop_assert_eq!(index.memory_bytes(), 0);
        }
    }

    /// Compares every filter's matching rows with a brute-force evaluation.
    fn check(
        index: &MetadataIndex,
        model: &[Option<Metadata>],
        filters: &[Filter],
    ) -> Result<(), TestCaseError> {
        let rows = u32::try_from(model.len()).expect("few rows");
        for filter in filters {
            let expected: Vec<u32> = (0..rows)
                .filter(|&r| filter.matches_record(model[r as usize].as_ref()))
                .collect();
            let actual: Vec<u32> = index.matching(filter, rows).iter().collect();
            prop_assert_eq!(actual, expected, "filter {:?}", filter);
        }
        Ok(())
    }
}
