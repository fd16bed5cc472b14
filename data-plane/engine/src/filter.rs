//! Metadata filters: Pinecone's (MongoDB-style) query language.
//!
//! A filter is a JSON object. Top-level keys are field names or the logical
//! operators `$and` / `$or`, all ANDed together. A field holds either a bare
//! value (meaning `$eq`) or an object of operators, also ANDed:
//!
//! ```json
//! {"genre": "drama", "year": {"$gte": 2000, "$lt": 2010}, "$or": [{"rated": true}, {"tags": {"$in": ["kids"]}}]}
//! ```
//!
//! Operators: `$eq` and `$ne` (string, number, boolean), `$gt` `$gte` `$lt`
//! `$lte` (number), `$in` and `$nin` (non-empty arrays of strings and numbers),
//! `$exists` (boolean).
//!
//! Semantics:
//! - values of different types never compare equal (`"1"` is not `1`);
//! - on a list-of-strings field, `$eq` and `$in` match when *any* element
//!   matches, `$ne` and `$nin` when *no* element does;
//! - `$ne` and `$nin` match records that lack the field (MongoDB semantics);
//!   every other operator needs the field, except `$exists: false`.

use std::collections::HashSet;

use serde_json::Value;

use crate::{Error, JsonObject, Metadata, MetadataValue, Result, limits};

/// The field-level operators, as listed in error messages.
const FIELD_OPERATORS: &str = "$eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists";

/// A parsed, validated metadata filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Clauses that must all hold; none means "match everything".
    clauses: Vec<Clause>,
}

/// One condition of a filter object.
#[derive(Debug, Clone)]
pub(crate) enum Clause {
    /// `$and`: every sub-filter holds.
    And(Vec<Filter>),
    /// `$or`: at least one sub-filter holds.
    Or(Vec<Filter>),
    /// A condition on one field.
    Field { key: String, condition: Condition },
}

/// A field-level operator with its operand.
#[derive(Debug, Clone)]
pub(crate) enum Condition {
    Eq(Scalar),
    Ne(Scalar),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    In(ValueSet),
    Nin(ValueSet),
    Exists(bool),
}

/// An operand of `$eq` / `$ne`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    String(String),
    Number(f64),
    Bool(bool),
}

/// The operand of `$in` / `$nin`: up to 10000 strings and numbers. Strings are
/// hashed because long `$in` lists of ids or tags are common.
#[derive(Debug, Clone, Default)]
pub(crate) struct ValueSet {
    pub(crate) strings: HashSet<String>,
    pub(crate) numbers: Vec<f64>,
}

impl ValueSet {
    fn contains(&self, value: &MetadataValue) -> bool {
        match value {
            MetadataValue::String(s) => self.strings.contains(s),
            MetadataValue::Number(n) => self.numbers.contains(n),
            MetadataValue::Bool(_) => false,
            MetadataValue::StringList(list) => list.iter().any(|s| self.strings.contains(s)),
        }
    }
}

impl Filter {
    /// Parses and validates a filter; error field paths start at `filter`,
    /// e.g. `filter.$and[1].year.$gte`.
    ///
    /// An empty object is a valid filter that matches everything; requests
    /// that need a non-empty filter check [`Filter::is_empty`].
    pub fn parse(object: &JsonObject) -> Result<Filter> {
        parse_object(object, "filter", 1)
    }

    /// Whether this filter has no conditions (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// The clauses, all of which must hold; read by the metadata index
    /// (`bitmap`), which evaluates them as set operations.
    pub(crate) fn clauses(&self) -> &[Clause] {
        &self.clauses
    }

    /// Whether a record with this metadata satisfies the filter.
    pub fn matches(&self, metadata: &Metadata) -> bool {
        self.clauses.iter().all(|clause| match clause {
            Clause::And(filters) => filters.iter().all(|f| f.matches(metadata)),
            Clause::Or(filters) => filters.iter().any(|f| f.matches(metadata)),
            Clause::Field { key, condition } => condition.matches(metadata.get(key)),
        })
    }

    /// [`Filter::matches`] for a record that may have no metadata at all.
    pub(crate) fn matches_record(&self, metadata: Option<&Metadata>) -> bool {
        static NO_METADATA: Metadata = Metadata::new();
        self.matches(metadata.unwrap_or(&NO_METADATA))
    }
}

impl Condition {
    fn matches(&self, value: Option<&MetadataValue>) -> bool {
        match self {
            Condition::Eq(s) => value.is_some_and(|v| s.equals(v)),
            Condition::Ne(s) => !value.is_some_and(|v| s.equals(v)),
            Condition::Gt(x) => number(value).is_some_and(|n| n > *x),
            Condition::Gte(x) => number(value).is_some_and(|n| n >= *x),
            Condition::Lt(x) => number(value).is_some_and(|n| n < *x),
            Condition::Lte(x) => number(value).is_some_and(|n| n <= *x),
            Condition::In(set) => value.is_some_and(|v| set.contains(v)),
            Condition::Nin(set) => !value.is_some_and(|v| set.contains(v)),
            Condition::Exists(expected) => value.is_some() == *expected,
        }
    }
}

impl Scalar {
    /// `$eq` semantics: same type and value, or any element of a string list.
    fn equals(&self, value: &MetadataValue) -> bool {
        match (value, self) {
            (MetadataValue::String(a), Scalar::String(b)) => a == b,
            (MetadataValue::Number(a), Scalar::Number(b)) => a == b,
            (MetadataValue::Bool(a), Scalar::Bool(b)) => a == b,
            (MetadataValue::StringList(list), Scalar::String(b)) => list.iter().any(|a| a == b),
            _ => false,
        }
    }
}

fn number(value: Option<&MetadataValue>) -> Option<f64> {
    match value {
        Some(MetadataValue::Number(n)) => Some(*n),
        _ => None,
    }
}

/// How a JSON value is named in messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_object(object: &JsonObject, path: &str, depth: usize) -> Result<Filter> {
    if depth > limits::MAX_FILTER_DEPTH {
        return Err(Error::invalid(
            path,
            format!(
                "filters may be nested at most {} levels deep",
                limits::MAX_FILTER_DEPTH
            ),
        ));
    }
    let mut clauses = Vec::with_capacity(object.len());
    for (key, value) in object {
        let key_path = format!("{path}.{key}");
        match key.as_str() {
            "$and" | "$or" => {
                let filters = parse_logical(value, &key_path, depth)?;
                clauses.push(if key == "$and" {
                    Clause::And(filters)
                } else {
                    Clause::Or(filters)
                });
            }
            "" => return Err(Error::invalid(path, "field names must not be empty")),
            op if op.starts_with('$') => {
                let message = if FIELD_OPERATORS.split(", ").any(|known| known == op) {
                    format!(
                        "operator '{op}' must be applied to a field, e.g. {{\"year\": {{\"{op}\": ...}}}}"
                    )
                } else {
                    format!(
                        "unknown operator '{op}'; only $and and $or may appear in place of a field name"
                    )
                };
                return Err(Error::invalid(key_path, message));
            }
            _ => parse_field(key, value, &key_path, &mut clauses)?,
        }
    }
    Ok(Filter { clauses })
}

/// The operand of `$and` / `$or`: a non-empty array of non-empty filter objects.
fn parse_logical(value: &Value, path: &str, depth: usize) -> Result<Vec<Filter>> {
    let items = match value {
        Value::Array(items) if !items.is_empty() => items,
        Value::Array(_) => {
            return Err(Error::invalid(
                path,
                "must be a non-empty array of filter objects",
            ));
        }
        other => {
            return Err(Error::invalid(
                path,
                format!(
                    "must be a non-empty array of filter objects, got {}",
                    kind(other)
                ),
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let item_path = format!("{path}[{i}]");
            match item {
                Value::Object(object) if object.is_empty() => Err(Error::invalid(
                    item_path,
                    "must not be an empty filter object",
                )),
                Value::Object(object) => parse_object(object, &item_path, depth + 1),
                other => Err(Error::invalid(
                    item_path,
                    format!("must be a filter object, got {}", kind(other)),
                )),
            }
        })
        .collect()
}

fn parse_field(key: &str, value: &Value, path: &str, clauses: &mut Vec<Clause>) -> Result<()> {
    let mut push = |condition| {
        clauses.push(Clause::Field {
            key: key.to_owned(),
            condition,
        })
    };
    match value {
        Value::Object(operators) => {
            if operators.is_empty() {
                return Err(Error::invalid(
                    path,
                    format!("must contain at least one operator; supported: {FIELD_OPERATORS}"),
                ));
            }
            for (op, operand) in operators {
                push(parse_condition(op, operand, &format!("{path}.{op}"))?);
            }
        }
        Value::Array(_) => {
            return Err(Error::invalid(
                path,
                "a bare array is not a valid filter value; use {\"$in\": [...]} to match any of several values",
            ));
        }
        Value::Null => return Err(Error::invalid(path, "null is not a valid filter value")),
        scalar => push(Condition::Eq(parse_scalar(scalar, path)?)),
    }
    Ok(())
}

fn parse_condition(op: &str, operand: &Value, path: &str) -> Result<Condition> {
    Ok(match op {
        "$eq" => Condition::Eq(parse_scalar(operand, path)?),
        "$ne" => Condition::Ne(parse_scalar(operand, path)?),
        "$gt" => Condition::Gt(parse_number(operand, path)?),
        "$gte" => Condition::Gte(parse_number(operand, path)?),
        "$lt" => Condition::Lt(parse_number(operand, path)?),
        "$lte" => Condition::Lte(parse_number(operand, path)?),
        "$in" => Condition::In(parse_set(operand, path)?),
        "$nin" => Condition::Nin(parse_set(operand, path)?),
        "$exists" => match operand {
            Value::Bool(b) => Condition::Exists(*b),
            other => {
                return Err(Error::invalid(
                    path,
                    format!("expected a boolean, got {}", kind(other)),
                ));
            }
        },
        _ => {
            return Err(Error::invalid(
                path,
                format!("unknown operator '{op}'; supported: {FIELD_OPERATORS}"),
            ));
        }
    })
}

fn parse_scalar(value: &Value, path: &str) -> Result<Scalar> {
    match value {
        Value::String(s) => Ok(Scalar::String(s.clone())),
        Value::Bool(b) => Ok(Scalar::Bool(*b)),
        Value::Number(_) => parse_number(value, path).map(Scalar::Number),
        other => Err(Error::invalid(
            path,
            format!("expected a string, number or boolean, got {}", kind(other)),
        )),
    }
}

fn parse_number(value: &Value, path: &str) -> Result<f64> {
    match value {
        Value::Number(n) => n.as_f64().filter(|n| n.is_finite()).ok_or_else(|| {
            Error::invalid(path, format!("number {n} is not a finite 64-bit float"))
        }),
        other => Err(Error::invalid(
            path,
            format!("expected a number, got {}", kind(other)),
        )),
    }
}

fn parse_set(value: &Value, path: &str) -> Result<ValueSet> {
    let items = match value {
        Value::Array(items) if !items.is_empty() => items,
        Value::Array(_) => {
            return Err(Error::invalid(
                path,
                "must be a non-empty array of strings or numbers",
            ));
        }
        other => {
            return Err(Error::invalid(
                path,
                format!(
                    "must be a non-empty array of strings or numbers, got {}",
                    kind(other)
                ),
            ));
        }
    };
    if items.len() > limits::MAX_FILTER_VALUES {
        return Err(Error::invalid(
            path,
            format!(
                "has {} values; the maximum is {}",
                items.len(),
                limits::MAX_FILTER_VALUES
            ),
        ));
    }
    let mut set = ValueSet::default();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) => {
                set.strings.insert(s.clone());
            }
            Value::Number(_) => set
                .numbers
                .push(parse_number(item, &format!("{path}[{i}]"))?),
            other => {
                return Err(Error::invalid(
                    format!("{path}[{i}]"),
                    format!("expected a string or number, got {}", kind(other)),
                ));
            }
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{metadata, test_support::object};

    fn filter(value: Value) -> Filter {
        Filter::parse(&object(value)).unwrap()
    }

    fn parse_err(value: Value) -> String {
        Filter::parse(&object(value)).unwrap_err().to_string()
    }

    fn record(value: Value) -> Metadata {
        metadata::parse("metadata", &object(value)).unwrap()
    }

    /// A small catalogue: which of these records does `f` match?
    fn matching(f: Value) -> Vec<&'static str> {
        let records = [
            (
                "drama",
                json!({"genre": "drama", "year": 2019, "tags": ["a", "b"], "new": true}),
            ),
            (
                "comedy",
                json!({"genre": "comedy", "year": 2005, "tags": ["b"], "new": false}),
            ),
            ("numeric", json!({"genre": 1, "year": 2010.5})),
            ("bare", json!({})),
        ];
        let f = filter(f);
        records
            .into_iter()
            .filter(|(_, m)| f.matches(&record(m.clone())))
            .map(|(id, _)| id)
            .collect()
    }

    #[test]
    fn empty_filter_matches_everything() {
        let f = filter(json!({}));
        assert!(f.is_empty());
        assert!(f.matches_record(None));
        assert_eq!(matching(json!({})), ["drama", "comedy", "numeric", "bare"]);
    }

    #[test]
    fn eq_and_bare_values() {
        assert_eq!(matching(json!({"genre": "drama"})), ["drama"]);
        assert_eq!(matching(json!({"genre": {"$eq": "drama"}})), ["drama"]);
        assert_eq!(matching(json!({"year": 2019})), ["drama"]);
        assert_eq!(matching(json!({"year": 2019.0})), ["drama"]);
        assert_eq!(matching(json!({"new": true})), ["drama"]);
        assert_eq!(matching(json!({"new": false})), ["comedy"]);
        // Types never mix: the string "1" is not the number 1.
        assert_eq!(matching(json!({"genre": "1"})), Vec::<&str>::new());
        assert_eq!(matching(json!({"genre": 1})), ["numeric"]);
    }

    #[test]
    fn ne_matches_missing_fields() {
        assert_eq!(
            matching(json!({"genre": {"$ne": "drama"}})),
            ["comedy", "numeric", "bare"]
        );
        assert_eq!(
            matching(json!({"new": {"$ne": true}})),
            ["comedy", "numeric", "bare"]
        );
        assert!(filter(json!({"genre": {"$ne": "drama"}})).matches_record(None));
    }

    #[test]
    fn range_operators_need_numbers() {
        assert_eq!(
            matching(json!({"year": {"$gt": 2010}})),
            ["drama", "numeric"]
        );
        assert_eq!(
            matching(json!({"year": {"$gte": 2010.5}})),
            ["drama", "numeric"]
        );
        assert_eq!(matching(json!({"year": {"$lt": 2010.5}})), ["comedy"]);
        assert_eq!(
            matching(json!({"year": {"$lte": 2010.5}})),
            ["comedy", "numeric"]
        );
        assert_eq!(
            matching(json!({"year": {"$gte": 2000, "$lt": 2011}})),
            ["comedy", "numeric"]
        );
        // A string field never satisfies a numeric comparison.
        assert_eq!(matching(json!({"genre": {"$gt": 0}})), ["numeric"]);
    }

    #[test]
    fn in_and_nin() {
        assert_eq!(
            matching(json!({"genre": {"$in": ["drama", "comedy"]}})),
            ["drama", "comedy"]
        );
        assert_eq!(
            matching(json!({"genre": {"$in": ["drama", 1]}})),
            ["drama", "numeric"]
        );
        assert_eq!(
            matching(json!({"year": {"$in": [2005, 2010.5]}})),
            ["comedy", "numeric"]
        );
        assert_eq!(
            matching(json!({"genre": {"$nin": ["drama", 1]}})),
            ["comedy", "bare"]
        );
        assert!(filter(json!({"genre": {"$nin": ["x"]}})).matches_record(None));
    }

    #[test]
    fn list_fields_match_any_element() {
        assert_eq!(matching(json!({"tags": "a"})), ["drama"]);
        assert_eq!(matching(json!({"tags": "b"})), ["drama", "comedy"]);
        assert_eq!(
            matching(json!({"$and": [{"tags": "a"}, {"tags": "b"}]})),
            ["drama"]
        );
        assert_eq!(matching(json!({"tags": {"$in": ["a", "z"]}})), ["drama"]);
        // $ne / $nin on a list: no element may match; records without the field match.
        assert_eq!(
            matching(json!({"tags": {"$ne": "a"}})),
            ["comedy", "numeric", "bare"]
        );
        assert_eq!(
            matching(json!({"tags": {"$nin": ["b"]}})),
            ["numeric", "bare"]
        );
        // A list of strings is never a number or a boolean.
        assert_eq!(matching(json!({"tags": {"$gt": 0}})), Vec::<&str>::new());
        assert_eq!(matching(json!({"tags": true})), Vec::<&str>::new());
    }

    #[test]
    fn exists() {
        assert_eq!(
            matching(json!({"tags": {"$exists": true}})),
            ["drama", "comedy"]
        );
        assert_eq!(
            matching(json!({"tags": {"$exists": false}})),
            ["numeric", "bare"]
        );
        assert!(filter(json!({"tags": {"$exists": false}})).matches_record(None));
        assert!(!filter(json!({"tags": {"$exists": true}})).matches_record(None));
    }

    #[test]
    fn logical_operators_and_implicit_and() {
        assert_eq!(
            matching(json!({"$or": [{"genre": "comedy"}, {"year": {"$gt": 2010}}]})),
            ["drama", "comedy", "numeric"]
        );
        assert_eq!(
            matching(json!({"$and": [{"year": {"$gt": 2000}}, {"new": false}]})),
            ["comedy"]
        );
        assert_eq!(
            matching(json!({"genre": "drama", "new": false})),
            Vec::<&str>::new()
        );
        assert_eq!(
            matching(
                json!({"$or": [{"$and": [{"genre": "drama"}, {"new": true}]}, {"genre": 1}], "year": {"$gt": 2010}})
            ),
            ["drama", "numeric"]
        );
    }

    #[test]
    fn unknown_operators_are_named() {
        assert_eq!(
            parse_err(json!({"genre": {"$foo": 1}})),
            "filter.genre.$foo: unknown operator '$foo'; supported: $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists"
        );
        assert_eq!(
            parse_err(json!({"genre": {"name": 1}})),
            "filter.genre.name: unknown operator 'name'; supported: $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists"
        );
        assert_eq!(
            parse_err(json!({"$not": {"a": 1}})),
            "filter.$not: unknown operator '$not'; only $and and $or may appear in place of a field name"
        );
        assert_eq!(
            parse_err(json!({"$gt": 1})),
            "filter.$gt: operator '$gt' must be applied to a field, e.g. {\"year\": {\"$gt\": ...}}"
        );
        assert_eq!(
            parse_err(json!({"$and": [{"a": 1}, {"b": {"$regex": "x"}}]})),
            "filter.$and[1].b.$regex: unknown operator '$regex'; supported: $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists"
        );
    }

    #[test]
    fn operand_type_errors() {
        assert_eq!(
            parse_err(json!({"genre": ["a", "b"]})),
            "filter.genre: a bare array is not a valid filter value; use {\"$in\": [...]} to match any of several values"
        );
        assert_eq!(
            parse_err(json!({"genre": {"$eq": ["a"]}})),
            "filter.genre.$eq: expected a string, number or boolean, got an array"
        );
        assert_eq!(
            parse_err(json!({"genre": null})),
            "filter.genre: null is not a valid filter value"
        );
        assert_eq!(
            parse_err(json!({"year": {"$gt": "2000"}})),
            "filter.year.$gt: expected a number, got a string"
        );
        assert_eq!(
            parse_err(json!({"a": {"$exists": 1}})),
            "filter.a.$exists: expected a boolean, got a number"
        );
        assert_eq!(
            parse_err(json!({"a": {"$in": []}})),
            "filter.a.$in: must be a non-empty array of strings or numbers"
        );
        assert_eq!(
            parse_err(json!({"a": {"$nin": "x"}})),
            "filter.a.$nin: must be a non-empty array of strings or numbers, got a string"
        );
        assert_eq!(
            parse_err(json!({"a": {"$in": ["x", true]}})),
            "filter.a.$in[1]: expected a string or number, got a boolean"
        );
        assert_eq!(
            parse_err(json!({"a": {}})),
            "filter.a: must contain at least one operator; supported: $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists"
        );
        assert_eq!(
            parse_err(json!({"": 1})),
            "filter: field names must not be empty"
        );
    }

    #[test]
    fn logical_operand_errors() {
        assert_eq!(
            parse_err(json!({"$and": []})),
            "filter.$and: must be a non-empty array of filter objects"
        );
        assert_eq!(
            parse_err(json!({"$or": {"a": 1}})),
            "filter.$or: must be a non-empty array of filter objects, got an object"
        );
        assert_eq!(
            parse_err(json!({"$or": [1]})),
            "filter.$or[0]: must be a filter object, got a number"
        );
        assert_eq!(
            parse_err(json!({"$or": [{}]})),
            "filter.$or[0]: must not be an empty filter object"
        );
    }

    #[test]
    fn in_list_limit() {
        let at_limit: Vec<u32> = (0..10_000).collect();
        assert!(Filter::parse(&object(json!({"a": {"$in": at_limit}}))).is_ok());
        let over: Vec<u32> = (0..10_001).collect();
        assert_eq!(
            parse_err(json!({"a": {"$nin": over}})),
            "filter.a.$nin: has 10001 values; the maximum is 10000"
        );
    }

    #[test]
    fn nesting_limit() {
        let nested = |levels: usize| {
            let mut value = json!({"a": 1});
            for _ in 1..levels {
                value = json!({"$and": [value]});
            }
            value
        };
        assert!(Filter::parse(&object(nested(10))).is_ok());
        let err = parse_err(nested(11));
        assert!(
            err.ends_with(": filters may be nested at most 10 levels deep"),
            "{err}"
        );
        assert!(err.starts_with("filter.$and[0]."), "{err}");
    }
}
