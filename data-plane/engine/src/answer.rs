//! Answer budgets: how large the answer of a read (query, fetch, fetch by metadata, list) may
//! grow, checked record by record *while* the answer is built, so an answer over the budget
//! is refused before it exists whole in memory.
//!
//! Writes are bounded on the way in (2 MiB messages, a memory budget); answers are bounded
//! here. Pinecone refuses a query whose result passes 4 MB and tells the client to lower
//! `top_k` or leave out values or metadata; Larch does the same, with the same default
//! ([`DEFAULT_MAX_ANSWER_BYTES`]), for every read that returns records.
//!
//! What is counted is an upper bound of each record's **protobuf** encoding (the gRPC answer):
//! its id, values, sparse values and metadata with their tags and length prefixes. The rest of
//! an answer (namespace, pagination token) is small and not counted, so a server sets its gRPC
//! encoding limit a little above the budget. The JSON of the same answer is larger (numbers
//! are text): a few times the counted size, never unbounded.
//!
//! An answer over the budget is an [`Error::InvalidArgument`]: the request asks for more
//! than one answer may carry, retrying the same request cannot help, and the message says
//! which field to lower.

use crate::{Error, Metadata, Result, SparseVector, metadata::MetadataValue};

/// The default answer budget: 4 MiB, gRPC's default message limit and Pinecone's 4 MB.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// The most bytes one answer's records may take, encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerBudget {
    max_bytes: usize,
}

impl Default for AnswerBudget {
    /// [`DEFAULT_MAX_ANSWER_BYTES`].
    fn default() -> Self {
        AnswerBudget {
            max_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }
}

impl AnswerBudget {
    /// A budget of `max_bytes` (at least 1).
    pub fn new(max_bytes: usize) -> AnswerBudget {
        AnswerBudget {
            max_bytes: max_bytes.max(1),
        }
    }

    /// The most bytes an answer's records may take.
    pub fn max_bytes(self) -> usize {
        self.max_bytes
    }
}

/// The running size of one answer being built, refusing it as soon as it passes the budget.
#[derive(Debug)]
pub(crate) struct Tally {
    budget: AnswerBudget,
    used: usize,
    records: usize,
    /// The request field that decides the answer's size, named in the refusal.
    field: &'static str,
    /// What the client can do instead, ending the refusal's message.
    advice: &'static str,
}

impl Tally {
    /// An empty answer held to `budget`; a refusal names `field` and ends with `advice`.
    pub(crate) fn new(budget: AnswerBudget, field: &'static str, advice: &'static str) -> Tally {
        Tally {
            budget,
            used: 0,
            records: 0,
            field,
            advice,
        }
    }

    /// Counts one more record of `bytes`; an error once the answer passes the budget.
    pub(crate) fn charge(&mut self, bytes: usize) -> Result<()> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.budget.max_bytes {
            return Err(Error::invalid(
                self.field,
                format!(
                    "the answer would be larger than the limit of {} bytes per answer \
                     (--max-response-bytes; Pinecone's limit is 4 MB): it passed the limit at \
                     record {}; {}",
                    self.budget.max_bytes,
                    self.records + 1,
                    self.advice
                ),
            ));
        }
        self.records += 1;
        Ok(())
    }
}

/// Upper bound of the encoded size of a record (a query match or a fetched vector) with these
/// parts, including its framing in the answer (a fetch answer's map repeats the id as key).
pub(crate) fn record_bytes(
    id: &str,
    values: &[f32],
    sparse: Option<&SparseVector>,
    metadata: Option<&Metadata>,
) -> usize {
    let values = if values.is_empty() {
        0
    } else {
        delimited(4 * values.len())
    };
    let sparse = sparse.map_or(0, |s| {
        // Indices are varints of at most 5 bytes; values are 4-byte floats.
        delimited(delimited(5 * s.indices.len()) + delimited(4 * s.values.len()))
    });
    let metadata = metadata.map_or(0, |m| delimited(struct_bytes(m)));
    // The id twice (field and map key), the score (tag and float), then two framings: the
    // message's and the map entry's.
    let body = 2 * delimited(id.len()) + 5 + values + sparse + metadata;
    delimited(delimited(body))
}

/// Upper bound of the encoded size of one id of a list answer.
pub(crate) fn id_bytes(id: &str) -> usize {
    delimited(delimited(id.len()))
}

/// A `google.protobuf.Struct` holding `metadata`.
fn struct_bytes(metadata: &Metadata) -> usize {
    metadata
        .iter()
        .map(|(key, value)| delimited(delimited(key.len()) + delimited(value_bytes(value))))
        .sum()
}

/// A `google.protobuf.Value` holding `value` (its kind field, without the outer framing).
fn value_bytes(value: &MetadataValue) -> usize {
    match value {
        MetadataValue::String(s) => delimited(s.len()),
        MetadataValue::Number(_) => 9,
        MetadataValue::Bool(_) => 2,
        MetadataValue::StringList(list) => delimited(
            list.iter()
                .map(|s| delimited(delimited(s.len())))
                .sum::<usize>(),
        ),
    }
}

/// A length-delimited field of `len` bytes: a one-byte tag, the length as a varint, the bytes.
fn delimited(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Bytes of `n` as a protobuf varint (7 bits per byte).
fn varint_len(n: u64) -> usize {
    let bits = 64 - n.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_take_seven_bits_a_byte() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(16_383), 2);
        assert_eq!(varint_len(16_384), 3);
        assert_eq!(varint_len(u64::MAX), 10);
    }

    #[test]
    fn a_tally_refuses_the_record_that_passes_the_budget() {
        let mut tally = Tally::new(AnswerBudget::new(100), "top_k", "lower top_k");
        tally.charge(60).expect("within");
        tally.charge(40).expect("exactly at the budget");
        let err = tally.charge(1).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("top_k: "), "{message}");
        assert!(message.contains("limit of 100 bytes"), "{message}");
        assert!(message.contains("at record 3"), "{message}");
        assert!(message.ends_with("lower top_k"), "{message}");
        assert_eq!(err.code(), crate::ErrorCode::InvalidArgument);
    }

    #[test]
    fn record_sizes_grow_with_what_is_included() {
        let metadata: Metadata = [
            ("genre".to_owned(), MetadataValue::String("drama".into())),
            ("year".to_owned(), MetadataValue::Number(2019.0)),
            (
                "tags".to_owned(),
                MetadataValue::StringList(vec!["a".into(), "b".into()]),
            ),
        ]
        .into_iter()
        .collect();
        let values = vec![0.5; 1000];
        let bare = record_bytes("id-1", &[], None, None);
        let with_values = record_bytes("id-1", &values, None, None);
        let with_all = record_bytes("id-1", &values, None, Some(&metadata));
        assert!(bare < 40, "{bare}");
        // At least the 4000 bytes of floats, and not wildly more.
        assert!((4000..4100).contains(&with_values), "{with_values}");
        assert!(with_all > with_values + "genredramayeartagsab".len());
        assert!(id_bytes("id-1") < bare);
    }
}
