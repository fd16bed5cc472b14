//! Conversions between protobuf values and the engine's JSON-shaped inputs and outputs.
//!
//! Metadata and filters travel as `google.protobuf.Struct`; the engine validates them as JSON
//! objects (the shape the REST twin receives too), so both transports share one set of rules.

use larch_engine::{JsonObject, Metadata, MetadataValue, SparseInput, SparseVector};
use larch_proto::pinecone::SparseValues;
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use tonic::Status;

/// A protobuf `Struct` as a JSON object. `field` names the request field in errors.
pub fn struct_to_json(value: Struct, field: &str) -> Result<JsonObject, Status> {
    value
        .fields
        .into_iter()
        .map(|(key, value)| {
            let json = value_to_json(value, &format!("{field}.{key}"))?;
            Ok((key, json))
        })
        .collect()
}

fn value_to_json(value: Value, field: &str) -> Result<serde_json::Value, Status> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(n)
            .map(serde_json::Value::Number)
            .ok_or_else(|| {
                Status::invalid_argument(format!("{field}: numbers must be finite, got {n}"))
            })?,
        Some(Kind::ListValue(ListValue { values })) => serde_json::Value::Array(
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| value_to_json(v, &format!("{field}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_to_json(s, field)?),
    })
}

/// Stored metadata as a protobuf `Struct`.
pub fn metadata_to_struct(metadata: Metadata) -> Struct {
    let fields = metadata
        .into_iter()
        .map(|(key, value)| {
            let kind = match value {
                MetadataValue::String(s) => Kind::StringValue(s),
                MetadataValue::Number(n) => Kind::NumberValue(n),
                MetadataValue::Bool(b) => Kind::BoolValue(b),
                MetadataValue::StringList(items) => Kind::ListValue(ListValue {
                    values: items
                        .into_iter()
                        .map(|s| Value {
                            kind: Some(Kind::StringValue(s)),
                        })
                        .collect(),
                }),
            };
            (key, Value { kind: Some(kind) })
        })
        .collect();
    Struct { fields }
}

/// Optional protobuf `Struct` → optional JSON object.
pub fn optional_json(value: Option<Struct>, field: &str) -> Result<Option<JsonObject>, Status> {
    value.map(|s| struct_to_json(s, field)).transpose()
}

/// Protobuf sparse values → engine input (validated by the engine).
pub fn sparse_input(value: Option<SparseValues>) -> Option<SparseInput> {
    value.map(|SparseValues { indices, values }| SparseInput { indices, values })
}

/// Stored sparse values → protobuf.
pub fn sparse_values(value: Option<SparseVector>) -> Option<SparseValues> {
    value.map(|SparseVector { indices, values }| SparseValues { indices, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    #[test]
    fn struct_round_trips_through_json() {
        let s = Struct {
            fields: [
                ("genre".to_owned(), value(Kind::StringValue("drama".into()))),
                ("year".to_owned(), value(Kind::NumberValue(2001.0))),
                (
                    "tags".to_owned(),
                    value(Kind::ListValue(ListValue {
                        values: vec![value(Kind::StringValue("a".into()))],
                    })),
                ),
                ("nothing".to_owned(), value(Kind::NullValue(0))),
            ]
            .into_iter()
            .collect(),
        };
        let json = struct_to_json(s, "metadata").unwrap();
        assert_eq!(
            serde_json::Value::Object(json),
            serde_json::json!({"genre": "drama", "year": 2001.0, "tags": ["a"], "nothing": null})
        );
    }

    #[test]
    fn non_finite_numbers_are_rejected_with_their_path() {
        let s = Struct {
            fields: [("x".to_owned(), value(Kind::NumberValue(f64::NAN)))]
                .into_iter()
                .collect(),
        };
        let err = struct_to_json(s, "filter").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("filter.x: "), "{}", err.message());
    }

    #[test]
    fn metadata_becomes_struct() {
        let metadata = Metadata::from([
            ("b".to_owned(), MetadataValue::Bool(true)),
            (
                "l".to_owned(),
                MetadataValue::StringList(vec!["x".into(), "y".into()]),
            ),
        ]);
        let s = metadata_to_struct(metadata);
        assert_eq!(s.fields["b"].kind, Some(Kind::BoolValue(true)));
        let Some(Kind::ListValue(list)) = &s.fields["l"].kind else {
            panic!("list expected")
        };
        assert_eq!(list.values.len(), 2);
    }
}
