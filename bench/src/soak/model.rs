//! What the server must hold: each client's ids and the record each one should have.
//!
//! Clients own disjoint id ranges (`c003-000042` is slot 42 of client 3), so nobody else
//! writes them and the expected state is known exactly. An acknowledged write replaces the
//! expectation; a write that failed (an error, a timeout) may or may not have been applied, so
//! its slot then has several *candidates*, and the final check accepts any of them. In a passing
//! run every slot has exactly one.

use std::collections::BTreeMap;

use prost_types::value::Kind;
use prost_types::{ListValue, Struct};

/// A metadata value, as the soak writes them (numbers, strings, lists of strings).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Number(f64),
    Text(String),
    List(Vec<String>),
}

/// Record metadata.
pub(crate) type Metadata = BTreeMap<String, Value>;

/// One stored record: its dense values and metadata.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub(crate) values: Vec<f32>,
    pub(crate) metadata: Metadata,
}

/// A slot's state: the record, or `None` when the id must be absent.
pub(crate) type State = Option<Record>;

/// The expected state of one client's slots.
#[derive(Debug)]
pub(crate) struct Slots {
    client: usize,
    /// Per slot, every state the server may hold (usually one).
    states: Vec<Vec<State>>,
}

impl Slots {
    /// `len` slots of `client`, all absent.
    pub(crate) fn new(client: usize, len: usize) -> Slots {
        Slots {
            client,
            states: vec![vec![None]; len],
        }
    }

    pub(crate) fn client(&self) -> usize {
        self.client
    }

    pub(crate) fn len(&self) -> usize {
        self.states.len()
    }

    /// The id of `slot`.
    pub(crate) fn id(&self, slot: usize) -> String {
        id(self.client, slot)
    }

    /// The state of `slot` if it is known exactly.
    pub(crate) fn certain(&self, slot: usize) -> Option<&State> {
        match self.states[slot].as_slice() {
            [state] => Some(state),
            _ => None,
        }
    }

    /// Every state `slot` may be in.
    pub(crate) fn candidates(&self, slot: usize) -> &[State] {
        &self.states[slot]
    }

    /// Live records if every slot is known exactly.
    pub(crate) fn live_count(&self) -> Option<usize> {
        let mut live = 0;
        for slot in 0..self.len() {
            live += usize::from(self.certain(slot)?.is_some());
        }
        Some(live)
    }

    /// A write set `slot` to `state`: for certain when `acked`, else possibly.
    pub(crate) fn set(&mut self, slot: usize, state: State, acked: bool) {
        let states = &mut self.states[slot];
        if acked {
            *states = vec![state];
        } else if !states.contains(&state) {
            states.push(state);
        }
    }

    /// An update of `slot`: new values (if any) and `patch` merged into the metadata. The
    /// server answers `NOT_FOUND` for an absent id, so an acknowledged update rules absence out.
    pub(crate) fn update(
        &mut self,
        slot: usize,
        values: Option<&[f32]>,
        patch: &Metadata,
        acked: bool,
    ) {
        let states = &mut self.states[slot];
        let updated: Vec<State> = states
            .iter()
            .flatten()
            .map(|record| {
                let mut record = record.clone();
                if let Some(values) = values {
                    record.values = values.to_vec();
                }
                record
                    .metadata
                    .extend(patch.iter().map(|(k, v)| (k.clone(), v.clone())));
                Some(record)
            })
            .collect();
        if acked && !updated.is_empty() {
            *states = updated;
        } else {
            // (An acknowledged update of a slot with no live candidate cannot happen: clients
            // update only slots known to be live.)
            for state in updated {
                if !states.contains(&state) {
                    states.push(state);
                }
            }
        }
    }
}

/// The id of `slot` of `client`.
pub(crate) fn id(client: usize, slot: usize) -> String {
    format!("c{client:03}-{slot:06}")
}

/// The client and slot of an id made by [`id`].
pub(crate) fn parse_id(id: &str) -> Option<(usize, usize)> {
    let (client, slot) = id.strip_prefix('c')?.split_once('-')?;
    Some((client.parse().ok()?, slot.parse().ok()?))
}

/// `metadata` as a protobuf `Struct`.
pub(crate) fn to_struct(metadata: &Metadata) -> Struct {
    Struct {
        fields: metadata
            .iter()
            .map(|(key, value)| {
                let kind = match value {
                    Value::Number(n) => Kind::NumberValue(*n),
                    Value::Text(s) => Kind::StringValue(s.clone()),
                    Value::List(list) => Kind::ListValue(ListValue {
                        values: list.iter().map(|s| string(s)).collect(),
                    }),
                };
                (key.clone(), kind_value(kind))
            })
            .collect(),
    }
}

/// A protobuf `Struct` as metadata; an error names what the soak never writes.
pub(crate) fn from_struct(metadata: &Struct) -> Result<Metadata, String> {
    metadata
        .fields
        .iter()
        .map(|(key, value)| {
            let value = match &value.kind {
                Some(Kind::NumberValue(n)) => Value::Number(*n),
                Some(Kind::StringValue(s)) => Value::Text(s.clone()),
                Some(Kind::ListValue(list)) => Value::List(
                    list.values
                        .iter()
                        .map(|v| match &v.kind {
                            Some(Kind::StringValue(s)) => Ok(s.clone()),
                            other => Err(format!("{key}: a list holding {other:?}")),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                other => return Err(format!("{key}: unexpected value {other:?}")),
            };
            Ok((key.clone(), value))
        })
        .collect()
}

/// A filter `{field: {op: value}}`.
pub(crate) fn filter(field: &str, op: &str, value: prost_types::Value) -> Struct {
    let inner = Struct {
        fields: [(op.to_owned(), value)].into(),
    };
    Struct {
        fields: [(field.to_owned(), kind_value(Kind::StructValue(inner)))].into(),
    }
}

/// A number as a protobuf `Value`.
pub(crate) fn number(n: f64) -> prost_types::Value {
    kind_value(Kind::NumberValue(n))
}

/// A string as a protobuf `Value`.
pub(crate) fn string(s: &str) -> prost_types::Value {
    kind_value(Kind::StringValue(s.to_owned()))
}

/// A list of strings as a protobuf `Value`.
pub(crate) fn strings(list: &[String]) -> prost_types::Value {
    kind_value(Kind::ListValue(ListValue {
        values: list.iter().map(|s| string(s)).collect(),
    }))
}

fn kind_value(kind: Kind) -> prost_types::Value {
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ver: f64) -> Record {
        Record {
            values: vec![1.0, 2.0],
            metadata: [
                ("ver".to_owned(), Value::Number(ver)),
                ("tags".to_owned(), Value::List(vec!["a".into()])),
            ]
            .into(),
        }
    }

    #[test]
    fn ids_round_trip() {
        assert_eq!(id(3, 42), "c003-000042");
        assert_eq!(parse_id("c003-000042"), Some((3, 42)));
        assert_eq!(parse_id("churn-1"), None);
    }

    #[test]
    fn metadata_round_trips_through_struct() {
        let metadata = record(7.0).metadata;
        assert_eq!(from_struct(&to_struct(&metadata)), Ok(metadata));
    }

    #[test]
    fn failed_writes_leave_candidates_and_acks_settle_them() {
        let mut slots = Slots::new(0, 2);
        slots.set(0, Some(record(1.0)), true);
        assert_eq!(slots.live_count(), Some(1));
        slots.set(0, None, false);
        assert_eq!(slots.certain(0), None);
        assert_eq!(slots.candidates(0).len(), 2);
        assert_eq!(slots.live_count(), None);
        // An acknowledged update proves the record exists: only the updated one remains.
        let patch = [("ver".to_owned(), Value::Number(2.0))].into();
        slots.update(0, Some(&[3.0, 4.0]), &patch, true);
        let Some(Some(updated)) = slots.certain(0) else {
            panic!("one live candidate: {:?}", slots.candidates(0));
        };
        assert_eq!(updated.values, [3.0, 4.0]);
        assert_eq!(updated.metadata["ver"], Value::Number(2.0));
        assert_eq!(updated.metadata["tags"], Value::List(vec!["a".into()]));
        slots.set(1, None, true);
        assert_eq!(slots.live_count(), Some(1));
    }
}
