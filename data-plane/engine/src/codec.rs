//! The binary payload of a write-ahead log record: one namespace change.
//!
//! A hand-written little-endian codec, so the format is exactly what this file
//! says and costs no serialization framework. Dense and sparse values are raw
//! `f32` little-endian bytes; metadata numbers raw `f64`. Framing, checksums
//! and files are the WAL's business (see `wal`); a payload here is trusted to
//! be what was written, but decoding still checks every length and tag, so a
//! damaged payload is an error and never a panic or a huge allocation.
//!
//! # Layout
//!
//! ```text
//! payload   = kind:u8 namespace:str body
//! kind      = 1 create namespace   body = schema:opt<list<str>>
//!             2 delete namespace   body = (empty)
//!             3 upsert             body = count:u32 record*
//!             4 delete             body = ids:list<str>
//!             5 delete all         body = (empty)
//!             6 update             body = id:str values:opt<dense> sparse:opt<sparse> patch:opt<metadata>
//!             7 merge metadata     body = ids:list<str> patch:metadata
//! record    = id:str values:dense sparse:opt<sparse> metadata:opt<metadata>
//! dense     = count:u32 f32*
//! sparse    = count:u32 index:u32* value:f32*
//! metadata  = count:u32 (key:str value)*
//! value     = 1 str | 2 f64 | 3 bool:u8 | 4 list<str>
//! str       = len:u32 utf-8 bytes;  list<T> = count:u32 T*;  opt<T> = 0 | 1 T
//! ```
//!
//! Integers are little-endian. Every record of one index has the index's
//! dimension; the decoder checks it, so replay can never misplace values.
//! Segment blocks (see `segment`) use the same value encodings through
//! [`Encoder`] and [`Decoder`].

use crate::{
    Metadata, MetadataValue, Namespace, SparseVector, VectorId,
    record::{NewRecord, WriteOp},
};

/// Kind tags; never renumber, only add.
const CREATE_NAMESPACE: u8 = 1;
const DELETE_NAMESPACE: u8 = 2;
const UPSERT: u8 = 3;
const DELETE: u8 = 4;
const DELETE_ALL: u8 = 5;
const UPDATE: u8 = 6;
const MERGE_METADATA: u8 = 7;

/// Metadata value tags.
const STRING: u8 = 1;
const NUMBER: u8 = 2;
const BOOL: u8 = 3;
const STRING_LIST: u8 = 4;

/// One logged change of one namespace.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogRecord {
    pub(crate) namespace: Namespace,
    pub(crate) entry: LogEntry,
}

/// What changed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LogEntry {
    /// An explicit `create_namespace` (upserts create namespaces implicitly).
    CreateNamespace { schema_fields: Option<Vec<String>> },
    /// `delete_namespace`.
    DeleteNamespace,
    /// A record change.
    Write(WriteOp),
}

/// Encodes an explicit namespace creation.
pub(crate) fn encode_create_namespace(
    namespace: &Namespace,
    schema_fields: Option<&[String]>,
) -> Vec<u8> {
    let mut out = Encoder::new(CREATE_NAMESPACE, namespace);
    out.option(schema_fields, |out, fields| out.strings(fields));
    out.0
}

/// Encodes a namespace deletion.
pub(crate) fn encode_delete_namespace(namespace: &Namespace) -> Vec<u8> {
    Encoder::new(DELETE_NAMESPACE, namespace).0
}

/// Encodes a record change.
pub(crate) fn encode_write(namespace: &Namespace, op: &WriteOp) -> Vec<u8> {
    match op {
        WriteOp::Upsert(records) => {
            let mut out = Encoder::new(UPSERT, namespace);
            out.len(records.len());
            for record in records {
                let NewRecord {
                    id,
                    values,
                    sparse,
                    metadata,
                } = record;
                out.str(id.as_str());
                out.dense(values);
                out.option(sparse.as_ref(), Encoder::sparse);
                out.option(metadata.as_ref(), Encoder::metadata);
            }
            out.0
        }
        WriteOp::Delete(ids) => {
            let mut out = Encoder::new(DELETE, namespace);
            out.ids(ids);
            out.0
        }
        WriteOp::DeleteAll => Encoder::new(DELETE_ALL, namespace).0,
        WriteOp::Update {
            id,
            values,
            sparse,
            patch,
        } => {
            let mut out = Encoder::new(UPDATE, namespace);
            out.str(id.as_str());
            out.option(values.as_deref(), Encoder::dense);
            out.option(sparse.as_ref(), Encoder::sparse);
            out.option(patch.as_ref(), Encoder::metadata);
            out.0
        }
        WriteOp::MergeMetadata { ids, patch } => {
            let mut out = Encoder::new(MERGE_METADATA, namespace);
            out.ids(ids);
            out.metadata(patch);
            out.0
        }
    }
}

/// Decodes a payload of an index whose vectors have `dimension` values.
/// The error says what is wrong; the caller adds the file and offset.
pub(crate) fn decode(payload: &[u8], dimension: usize) -> Result<LogRecord, String> {
    let mut input = Decoder {
        bytes: payload,
        dimension,
    };
    let kind = input.u8()?;
    let namespace = input.str()?;
    let namespace = Namespace::parse("namespace", &namespace).map_err(|e| e.to_string())?;
    let entry = match kind {
        CREATE_NAMESPACE => LogEntry::CreateNamespace {
            schema_fields: input.option(Decoder::strings)?,
        },
        DELETE_NAMESPACE => LogEntry::DeleteNamespace,
        UPSERT => {
            // An id, a dense count and two option tags at the least.
            let count = input.count(4 + 4 + 1 + 1)?;
            let mut records = Vec::with_capacity(count);
            for _ in 0..count {
                records.push(NewRecord {
                    id: input.id()?,
                    values: input.dense()?,
                    sparse: input.option(Decoder::sparse)?,
                    metadata: input.option(Decoder::metadata)?,
                });
            }
            LogEntry::Write(WriteOp::Upsert(records))
        }
        DELETE => LogEntry::Write(WriteOp::Delete(input.ids()?)),
        DELETE_ALL => LogEntry::Write(WriteOp::DeleteAll),
        UPDATE => LogEntry::Write(WriteOp::Update {
            id: input.id()?,
            values: input.option(Decoder::dense)?,
            sparse: input.option(Decoder::sparse)?,
            patch: input.option(Decoder::metadata)?,
        }),
        MERGE_METADATA => LogEntry::Write(WriteOp::MergeMetadata {
            ids: input.ids()?,
            patch: input.metadata()?,
        }),
        other => return Err(format!("unknown record kind {other}")),
    };
    if !input.bytes.is_empty() {
        return Err(format!(
            "{} unexpected bytes after the record",
            input.bytes.len()
        ));
    }
    Ok(LogRecord { namespace, entry })
}

/// Appends little-endian values to a payload; segment blocks (see
/// `segment`) reuse it, so a value has one encoding everywhere.
pub(crate) struct Encoder(Vec<u8>);

impl Encoder {
    fn new(kind: u8, namespace: &Namespace) -> Self {
        let mut out = Encoder(Vec::with_capacity(64));
        out.0.push(kind);
        out.str(namespace.as_str());
        out
    }

    /// An empty buffer.
    pub(crate) fn empty() -> Self {
        Encoder(Vec::new())
    }

    /// The bytes written so far.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// A length or count. Every length the engine stores is far below 4 Gi
    /// (requests are capped by `limits`).
    pub(crate) fn len(&mut self, len: usize) {
        let len = u32::try_from(len).expect("lengths are bounded by the engine's limits");
        self.0.extend_from_slice(&len.to_le_bytes());
    }

    pub(crate) fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn strings(&mut self, strings: &[String]) {
        self.len(strings.len());
        strings.iter().for_each(|s| self.str(s));
    }

    pub(crate) fn ids(&mut self, ids: &[VectorId]) {
        self.len(ids.len());
        ids.iter().for_each(|id| self.str(id.as_str()));
    }

    pub(crate) fn f32s(&mut self, values: &[f32]) {
        self.0.reserve(values.len() * 4);
        values
            .iter()
            .for_each(|v| self.0.extend_from_slice(&v.to_le_bytes()));
    }

    pub(crate) fn dense(&mut self, values: &[f32]) {
        self.len(values.len());
        self.f32s(values);
    }

    pub(crate) fn sparse(&mut self, sparse: &SparseVector) {
        debug_assert_eq!(sparse.indices.len(), sparse.values.len());
        self.len(sparse.len());
        sparse
            .indices
            .iter()
            .for_each(|i| self.0.extend_from_slice(&i.to_le_bytes()));
        self.f32s(&sparse.values);
    }

    pub(crate) fn metadata(&mut self, metadata: &Metadata) {
        self.len(metadata.len());
        for (key, value) in metadata {
            self.str(key);
            match value {
                MetadataValue::String(s) => {
                    self.0.push(STRING);
                    self.str(s);
                }
                MetadataValue::Number(n) => {
                    self.0.push(NUMBER);
                    self.0.extend_from_slice(&n.to_le_bytes());
                }
                MetadataValue::Bool(b) => {
                    self.0.push(BOOL);
                    self.0.push(u8::from(*b));
                }
                MetadataValue::StringList(list) => {
                    self.0.push(STRING_LIST);
                    self.strings(list);
                }
            }
        }
    }

    pub(crate) fn option<T: ?Sized>(
        &mut self,
        value: Option<&T>,
        write: impl FnOnce(&mut Self, &T),
    ) {
        match value {
            None => self.0.push(0),
            Some(value) => {
                self.0.push(1);
                write(self, value);
            }
        }
    }
}

/// Fails if a vector value is NaN or infinite, which validation never lets in.
fn finite(values: &[f32]) -> Result<(), String> {
    match values.iter().find(|v| !v.is_finite()) {
        Some(v) => Err(format!("vector value {v} is not finite")),
        None => Ok(()),
    }
}

/// Reads little-endian values from a payload, checking every length against
/// the bytes left, and that values are what validation lets in (a checksum
/// proves a record was not damaged, not that this engine wrote it).
pub(crate) struct Decoder<'a> {
    bytes: &'a [u8],
    dimension: usize,
}

impl<'a> Decoder<'a> {
    /// Reads `bytes` of an index whose vectors have `dimension` values.
    pub(crate) fn new(bytes: &'a [u8], dimension: usize) -> Self {
        Decoder { bytes, dimension }
    }

    /// Fails unless every byte has been read.
    pub(crate) fn finish(&self) -> Result<(), String> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected bytes after the last value",
                self.bytes.len()
            ))
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.bytes.len() {
            return Err(format!(
                "the record ends early: {n} more bytes needed, {} left",
                self.bytes.len()
            ));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self
            .take(N)?
            .try_into()
            .expect("take returns exactly N bytes"))
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of items taking at least `min_item_bytes` each, checked
    /// against the bytes left before anything is allocated for them.
    pub(crate) fn count(&mut self, min_item_bytes: usize) -> Result<usize, String> {
        let count = self.u32()? as usize;
        if count.saturating_mul(min_item_bytes) > self.bytes.len() {
            return Err(format!(
                "a count of {count} does not fit in the {} bytes left",
                self.bytes.len()
            ));
        }
        Ok(count)
    }

    pub(crate) fn str(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a string is not valid UTF-8".to_owned())
    }

    pub(crate) fn strings(&mut self) -> Result<Vec<String>, String> {
        let count = self.count(4)?;
        (0..count).map(|_| self.str()).collect()
    }

    pub(crate) fn id(&mut self) -> Result<VectorId, String> {
        VectorId::parse("id", self.str()?).map_err(|e| e.to_string())
    }

    pub(crate) fn ids(&mut self) -> Result<Vec<VectorId>, String> {
        let count = self.count(4)?;
        (0..count).map(|_| self.id()).collect()
    }

    pub(crate) fn f32s(&mut self, count: usize) -> Result<Vec<f32>, String> {
        let bytes = self.take(count.saturating_mul(4))?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("chunks of 4 bytes")))
            .collect())
    }

    pub(crate) fn dense(&mut self) -> Result<Vec<f32>, String> {
        let count = self.count(4)?;
        if count != self.dimension {
            return Err(format!(
                "a vector has {count} values but the index dimension is {}",
                self.dimension
            ));
        }
        let values = self.f32s(count)?;
        finite(&values)?;
        Ok(values)
    }

    /// Sparse values as validation leaves them (see [`SparseVector`]): finite, with
    /// strictly ascending indices.
    pub(crate) fn sparse(&mut self) -> Result<SparseVector, String> {
        let count = self.count(8)?;
        let indices: Vec<u32> = self
            .take(count * 4)?
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("chunks of 4 bytes")))
            .collect();
        if indices.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err("sparse indices are not strictly ascending".to_owned());
        }
        let values = self.f32s(count)?;
        finite(&values)?;
        Ok(SparseVector { indices, values })
    }

    pub(crate) fn metadata(&mut self) -> Result<Metadata, String> {
        // A key length and a value tag at the least.
        let count = self.count(4 + 1)?;
        let mut metadata = Metadata::new();
        for _ in 0..count {
            let key = self.str()?;
            let value = match self.u8()? {
                STRING => MetadataValue::String(self.str()?),
                NUMBER => match f64::from_le_bytes(self.array()?) {
                    // Validation admits only finite numbers, and the metadata index relies on it.
                    n if n.is_finite() => MetadataValue::Number(n),
                    n => return Err(format!("metadata number {n} is not finite")),
                },
                BOOL => match self.u8()? {
                    0 => MetadataValue::Bool(false),
                    1 => MetadataValue::Bool(true),
                    other => return Err(format!("invalid boolean {other}")),
                },
                STRING_LIST => MetadataValue::StringList(self.strings()?),
                other => return Err(format!("unknown metadata value tag {other}")),
            };
            metadata.insert(key, value);
        }
        Ok(metadata)
    }

    pub(crate) fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            other => Err(format!("invalid option tag {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DIM: usize = 3;

    fn id() -> impl Strategy<Value = VectorId> {
        "[a-zé#-]{1,12}".prop_map(|s| VectorId::parse("id", s).unwrap())
    }

    fn namespace() -> impl Strategy<Value = Namespace> {
        "[a-z_]{0,8}".prop_map(|s| Namespace::parse("namespace", &s).unwrap())
    }

    fn finite() -> impl Strategy<Value = f32> {
        prop_oneof![
            -1e6f32..1e6,
            Just(0.0),
            Just(-0.0),
            Just(f32::MIN_POSITIVE),
            Just(f32::MAX)
        ]
    }

    fn dense() -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec(finite(), DIM)
    }

    fn sparse() -> impl Strategy<Value = SparseVector> {
        prop::collection::btree_map(any::<u32>(), finite(), 1..6).prop_map(|pairs| SparseVector {
            indices: pairs.keys().copied().collect(),
            values: pairs.values().copied().collect(),
        })
    }

    fn metadata() -> impl Strategy<Value = Metadata> {
        let value = prop_oneof![
            ".{0,10}".prop_map(MetadataValue::String),
            any::<f64>()
                .prop_filter("stored numbers are finite", |n| n.is_finite())
                .prop_map(MetadataValue::Number),
            any::<bool>().prop_map(MetadataValue::Bool),
            prop::collection::vec(".{0,5}", 0..4).prop_map(MetadataValue::StringList),
        ];
        prop::collection::btree_map("[a-z]{1,6}", value, 0..5)
    }

    fn record() -> impl Strategy<Value = NewRecord> {
        (
            id(),
            dense(),
            prop::option::of(sparse()),
            prop::option::of(metadata()),
        )
            .prop_map(|(id, values, sparse, metadata)| NewRecord {
                id,
                values,
                sparse,
                metadata,
            })
    }

    fn write_op() -> impl Strategy<Value = WriteOp> {
        prop_oneof![
            prop::collection::vec(record(), 0..5).prop_map(WriteOp::Upsert),
            prop::collection::vec(id(), 0..5).prop_map(WriteOp::Delete),
            Just(WriteOp::DeleteAll),
            (
                id(),
                prop::option::of(dense()),
                prop::option::of(sparse()),
                prop::option::of(metadata())
            )
                .prop_map(|(id, values, sparse, patch)| WriteOp::Update {
                    id,
                    values,
                    sparse,
                    patch
                }),
            (prop::collection::vec(id(), 0..5), metadata())
                .prop_map(|(ids, patch)| WriteOp::MergeMetadata { ids, patch }),
        ]
    }

    proptest! {
        #[test]
        fn every_write_op_round_trips(namespace in namespace(), op in write_op()) {
            let payload = encode_write(&namespace, &op);
            let decoded = decode(&payload, DIM).unwrap();
            prop_assert_eq!(decoded, LogRecord { namespace, entry: LogEntry::Write(op) });
        }

        #[test]
        fn namespace_changes_round_trip(
            namespace in namespace(),
            schema in prop::option::of(prop::collection::vec("[a-z]{1,6}", 0..4)),
        ) {
            let payload = encode_create_namespace(&namespace, schema.as_deref());
            prop_assert_eq!(
                decode(&payload, DIM).unwrap(),
                LogRecord { namespace: namespace.clone(), entry: LogEntry::CreateNamespace { schema_fields: schema } }
            );
            let payload = encode_delete_namespace(&namespace);
            prop_assert_eq!(
                decode(&payload, DIM).unwrap(),
                LogRecord { namespace, entry: LogEntry::DeleteNamespace }
            );
        }

        /// Damaged payloads are errors, never panics or huge allocations.
        #[test]
        fn truncated_or_damaged_payloads_never_panic(op in write_op(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()) {
            let payload = encode_write(&Namespace::default(), &op);
            let cut = cut.index(payload.len());
            prop_assert!(decode(&payload[..cut], DIM).is_err());
            let mut damaged = payload.clone();
            damaged[flip.index(payload.len())] ^= 0xff;
            let _ = decode(&damaged, DIM);
        }
    }

    #[test]
    fn float_bits_are_kept_exactly() {
        let record = NewRecord {
            id: VectorId::parse("id", "a").unwrap(),
            values: vec![-0.0, f32::MIN_POSITIVE / 2.0, 1.0 / 3.0],
            sparse: None,
            metadata: Some(Metadata::from([(
                "n".to_owned(),
                MetadataValue::Number(0.1 + 0.2),
            )])),
        };
        let payload = encode_write(
            &Namespace::default(),
            &WriteOp::Upsert(vec![record.clone()]),
        );
        let LogEntry::Write(WriteOp::Upsert(decoded)) = decode(&payload, DIM).unwrap().entry else {
            panic!("expected an upsert");
        };
        let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&decoded[0].values), bits(&record.values));
        assert_eq!(decoded[0].metadata, record.metadata);
    }

    #[test]
    fn decoding_rejects_bad_input_with_a_reason() {
        let upsert = |values: Vec<f32>| {
            encode_write(
                &Namespace::default(),
                &WriteOp::Upsert(vec![NewRecord {
                    id: VectorId::parse("id", "a").unwrap(),
                    values,
                    sparse: None,
                    metadata: None,
                }]),
            )
        };
        assert_eq!(
            decode(&upsert(vec![1.0; 2]), DIM).unwrap_err(),
            "a vector has 2 values but the index dimension is 3"
        );
        assert_eq!(
            decode(&[99, 0, 0, 0, 0], DIM).unwrap_err(),
            "unknown record kind 99"
        );
        let mut trailing = encode_delete_namespace(&Namespace::default());
        trailing.push(0);
        assert_eq!(
            decode(&trailing, DIM).unwrap_err(),
            "1 unexpected bytes after the record"
        );
        // A huge count is refused before anything is allocated for it.
        let mut huge = vec![UPSERT, 0, 0, 0, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            decode(&huge, DIM)
                .unwrap_err()
                .starts_with("a count of 4294967295")
        );
        assert!(decode(&[], DIM).is_err());
    }

    /// Found by `fuzz/` (storage_decode): an upsert record whose metadata number is NaN
    /// decoded, and applying it tripped the metadata index's assertion that numbers are
    /// never NaN (in a release build, NaN would have gone into the index).
    #[test]
    fn fuzz_regression_log_record_nan_metadata_number() {
        let record = [
            &[UPSERT][..],
            &0u32.to_le_bytes(), // default namespace
            &1u32.to_le_bytes(), // one record
            &1u32.to_le_bytes(), // id "v"
            b"v",
            &3u32.to_le_bytes(), // dense values
            &1.0f32.to_le_bytes(),
            &0.0f32.to_le_bytes(),
            &0.0f32.to_le_bytes(),
            &[0, 1],             // no sparse values; metadata
            &1u32.to_le_bytes(), // one key, "n"
            &1u32.to_le_bytes(),
            b"n",
            &[NUMBER],
            &f64::NAN.to_le_bytes(),
        ]
        .concat();
        let err = decode(&record, DIM).unwrap_err();
        assert!(err.contains("not finite"), "{err}");
        // Non-finite vector values and unsorted sparse indices are refused too.
        let mut infinite = record.clone();
        infinite[18..22].copy_from_slice(&f32::INFINITY.to_le_bytes());
        assert!(decode(&infinite, DIM).unwrap_err().contains("not finite"));
        let unsorted = encode_write(
            &Namespace::default(),
            &WriteOp::Update {
                id: VectorId::parse("id", "v").unwrap(),
                values: None,
                sparse: Some(SparseVector {
                    indices: vec![7, 2],
                    values: vec![1.0, 1.0],
                }),
                patch: None,
            },
        );
        assert!(decode(&unsorted, DIM).unwrap_err().contains("ascending"));
    }
}
