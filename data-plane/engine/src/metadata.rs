//! Record metadata: a flat map from key to string, number, boolean or list of
//! strings.
//!
//! Metadata arrives as a JSON object (`google.protobuf.Struct` on the wire)
//! and is validated once into [`Metadata`]; numbers are stored as `f64`, as
//! Pinecone does.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{Error, Result, limits};

/// A JSON object: metadata and filters as they arrive on the wire.
pub type JsonObject = serde_json::Map<String, Value>;

/// Metadata: flat map of string -> value; BTreeMap so output is deterministic.
pub type Metadata = BTreeMap<String, MetadataValue>;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    /// A string.
    String(String),
    /// A number, stored as a 64-bit float.
    Number(f64),
    /// A boolean.
    Bool(bool),
    /// A list of strings.
    StringList(Vec<String>),
}

impl MetadataValue {
    /// The value as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            MetadataValue::String(s) => Value::String(s.clone()),
            // Stored numbers are always finite, so `from_f64` cannot fail; null is a safe fallback.
            MetadataValue::Number(n) => {
                serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
            MetadataValue::Bool(b) => Value::Bool(*b),
            MetadataValue::StringList(list) => {
                Value::Array(list.iter().map(|s| Value::String(s.clone())).collect())
            }
        }
    }

    /// Rough number of bytes this value occupies, for size estimates.
    fn estimated_bytes(&self) -> usize {
        match self {
            MetadataValue::String(s) => s.len(),
            MetadataValue::Number(_) => 8,
            MetadataValue::Bool(_) => 1,
            MetadataValue::StringList(list) => list.iter().map(String::len).sum(),
        }
    }
}

/// Metadata as a JSON object.
pub fn metadata_to_json(metadata: &Metadata) -> JsonObject {
    metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect()
}

/// Validates a client's metadata object; errors name `field` (e.g.
/// `vectors[0].metadata`) and the offending key.
pub(crate) fn parse(field: &str, object: &JsonObject) -> Result<Metadata> {
    let mut metadata = Metadata::new();
    for (key, value) in object {
        if key.is_empty() {
            return Err(Error::invalid(field, "keys must not be empty"));
        }
        let path = || format!("{field}.{key}");
        if key.starts_with('$') {
            return Err(Error::invalid(path(), "keys must not start with '$'"));
        }
        let value = match value {
            Value::String(s) => MetadataValue::String(s.clone()),
            Value::Bool(b) => MetadataValue::Bool(*b),
            Value::Number(n) => match n.as_f64() {
                Some(n) if n.is_finite() => MetadataValue::Number(n),
                _ => {
                    return Err(Error::invalid(
                        path(),
                        format!("number {n} is not a finite 64-bit float"),
                    ));
                }
            },
            Value::Array(items) => {
                let strings = items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| Error::invalid(path(), "lists may contain only strings"))?;
                MetadataValue::StringList(strings)
            }
            Value::Null => {
                return Err(Error::invalid(
                    path(),
                    "null is not supported; remove the key instead",
                ));
            }
            Value::Object(_) => {
                return Err(Error::invalid(
                    path(),
                    "nested objects are not supported; metadata must be flat",
                ));
            }
        };
        metadata.insert(key.clone(), value);
    }
    check_size(field, json_size(object))?;
    Ok(metadata)
}

/// Size of a JSON object as compact JSON, the unit of the 40 KB limit.
pub(crate) fn json_size(object: &JsonObject) -> usize {
    serde_json::to_vec(object)
        .expect("a json map with string keys always serializes")
        .len()
}

/// Size of stored metadata as compact JSON.
pub(crate) fn metadata_json_size(metadata: &Metadata) -> usize {
    json_size(&metadata_to_json(metadata))
}

/// Rejects metadata larger than 40 KB.
pub(crate) fn check_size(field: &str, size: usize) -> Result<()> {
    if size > limits::MAX_METADATA_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "is {size} bytes as JSON; the limit is {} bytes (40 KB)",
                limits::MAX_METADATA_BYTES
            ),
        ));
    }
    Ok(())
}

/// `base` with every key of `patch` set (keys in `patch` overwrite).
pub(crate) fn merged(base: Option<&Metadata>, patch: &Metadata) -> Metadata {
    let mut merged = base.cloned().unwrap_or_default();
    merged.extend(patch.iter().map(|(k, v)| (k.clone(), v.clone())));
    merged
}

/// Rough number of bytes metadata occupies, for `NamespaceInfo::size_bytes`.
pub(crate) fn estimated_bytes(metadata: &Metadata) -> usize {
    metadata
        .iter()
        .map(|(k, v)| k.len() + v.estimated_bytes())
        .sum()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::test_support::object;

    fn parse_err(value: Value) -> String {
        parse("vectors[0].metadata", &object(value))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_every_supported_type() {
        let metadata = parse(
            "metadata",
            &object(json!({"genre": "drama", "year": 2019, "rating": 7.5, "new": true, "tags": ["a", "b"], "none": []})),
        )
        .unwrap();
        assert_eq!(metadata["genre"], MetadataValue::String("drama".into()));
        assert_eq!(metadata["year"], MetadataValue::Number(2019.0));
        assert_eq!(metadata["rating"], MetadataValue::Number(7.5));
        assert_eq!(metadata["new"], MetadataValue::Bool(true));
        assert_eq!(
            metadata["tags"],
            MetadataValue::StringList(vec!["a".into(), "b".into()])
        );
        assert_eq!(metadata["none"], MetadataValue::StringList(vec![]));
    }

    #[test]
    fn rejects_unsupported_values_naming_the_key() {
        assert_eq!(
            parse_err(json!({"tags": ["a", 1]})),
            "vectors[0].metadata.tags: lists may contain only strings"
        );
        assert_eq!(
            parse_err(json!({"gone": null})),
            "vectors[0].metadata.gone: null is not supported; remove the key instead"
        );
        assert_eq!(
            parse_err(json!({"nested": {"a": 1}})),
            "vectors[0].metadata.nested: nested objects are not supported; metadata must be flat"
        );
        assert_eq!(
            parse_err(json!({"$x": 1})),
            "vectors[0].metadata.$x: keys must not start with '$'"
        );
        assert_eq!(
            parse_err(json!({"": 1})),
            "vectors[0].metadata: keys must not be empty"
        );
    }

    #[test]
    fn size_limit_is_40_kb_of_compact_json() {
        // {"k":"…"} is 8 bytes of framing around the string.
        let at_limit = object(json!({"k": "x".repeat(limits::MAX_METADATA_BYTES - 8)}));
        assert_eq!(json_size(&at_limit), limits::MAX_METADATA_BYTES);
        assert!(parse("metadata", &at_limit).is_ok());
        let over = object(json!({"k": "x".repeat(limits::MAX_METADATA_BYTES - 7)}));
        assert_eq!(
            parse("metadata", &over).unwrap_err().to_string(),
            "metadata: is 40961 bytes as JSON; the limit is 40960 bytes (40 KB)"
        );
    }

    #[test]
    fn json_round_trip_and_merge() {
        let base = parse("m", &object(json!({"a": 1, "b": "x"}))).unwrap();
        let patch = parse("m", &object(json!({"b": "y", "c": ["z"]}))).unwrap();
        let both = merged(Some(&base), &patch);
        assert_eq!(
            Value::Object(metadata_to_json(&both)),
            json!({"a": 1.0, "b": "y", "c": ["z"]})
        );
        assert_eq!(merged(None, &patch), patch);
        assert!(estimated_bytes(&both) > 0);
    }
}
