//! The segment file: an immutable, checksummed batch of one namespace's
//! records and tombstones.
//!
//! A flush writes one segment per namespace it touched, holding the current
//! state of every record that changed since the previous flush (tombstones
//! for the ones deleted); compaction merges a namespace's segments into one.
//! Segments are applied oldest first, so a newer segment's record or
//! tombstone wins.
//!
//! # Layout
//!
//! ```text
//! header     magic "LARCHSEG" | version:u32 | dimension:u32 | flags:u32
//!            | records:u32 | tombstones:u32 | 6 block lengths:u64 | crc32 of the previous 76 bytes
//! vectors    records × dimension f32, contiguous, row-major   | crc32
//! ids        records × str                                    | crc32
//! sparse     records × opt<sparse>                            | crc32
//! metadata   records × opt<metadata>                          | crc32
//! tombstones tombstones × str                                 | crc32
//! namespace  name:str schema:opt<list<str>>                   | crc32
//! ```
//!
//! Values are encoded as in a log record (see `codec`); integers are
//! little-endian. The header is 80 bytes, so the vectors start 16-byte
//! aligned. Flag bit 0, *cleared*, says that nothing older of this namespace
//! survives: it is set after `delete_all`, for a namespace created (or
//! re-created) since the last flush, and on every compacted segment.
//! Decoding checks the header, every block's checksum, every length and the
//! file size, and reports the offset of the first bad block: a segment is
//! used whole or not at all.

use crate::{
    Metadata, Namespace, SparseVector, VectorId,
    codec::{Decoder, Encoder},
    manifest::MAX_FILE_NUMBER,
    record::NewRecord,
};

const MAGIC: &[u8; 8] = b"LARCHSEG";
const VERSION: u32 = 1;
/// Bytes of the header, checksum included.
const HEADER_LEN: usize = 80;
/// Bytes of the header covered by its checksum.
const HEADER_BODY: usize = HEADER_LEN - 4;
const CLEARED: u32 = 1;
/// The blocks after the header, in file order.
const BLOCKS: [&str; 6] = [
    "vectors",
    "ids",
    "sparse values",
    "metadata",
    "tombstones",
    "namespace",
];

/// The name of segment number `number` under the storage root.
pub(crate) fn path(number: u64) -> String {
    format!("{DIR}/seg-{number:06}.seg")
}

/// The folder of segment files under the storage root.
pub(crate) const DIR: &str = "segments";

/// The number of the segment at `path`, if it is one this engine could have written (see
/// [`MAX_FILE_NUMBER`]).
pub(crate) fn parse_path(path: &str) -> Option<u64> {
    let digits = path
        .strip_prefix(DIR)?
        .strip_prefix("/seg-")?
        .strip_suffix(".seg")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n <= MAX_FILE_NUMBER)
}

/// One record to write, borrowed from wherever it lives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordRef<'a> {
    pub(crate) id: &'a VectorId,
    pub(crate) values: &'a [f32],
    pub(crate) sparse: Option<&'a SparseVector>,
    pub(crate) metadata: Option<&'a Metadata>,
}

impl<'a> From<&'a NewRecord> for RecordRef<'a> {
    fn from(record: &'a NewRecord) -> Self {
        RecordRef {
            id: &record.id,
            values: &record.values,
            sparse: record.sparse.as_ref(),
            metadata: record.metadata.as_ref(),
        }
    }
}

/// What a segment says about its namespace as a whole.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Header {
    pub(crate) namespace: Namespace,
    /// Nothing older of this namespace survives this segment.
    pub(crate) cleared: bool,
    /// The metadata fields declared when the namespace was created.
    pub(crate) schema_fields: Option<Vec<String>>,
}

/// A decoded segment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment {
    pub(crate) header: Header,
    pub(crate) records: Vec<NewRecord>,
    pub(crate) tombstones: Vec<VectorId>,
}

/// Encodes a segment of an index whose vectors have `dimension` values.
pub(crate) fn encode(
    header: &Header,
    dimension: usize,
    records: &[RecordRef<'_>],
    tombstones: &[&VectorId],
) -> Vec<u8> {
    let mut vectors = Encoder::empty();
    let mut ids = Encoder::empty();
    let mut sparse = Encoder::empty();
    let mut metadata = Encoder::empty();
    for record in records {
        debug_assert_eq!(record.values.len(), dimension);
        vectors.f32s(record.values);
        ids.str(record.id.as_str());
        sparse.option(record.sparse, Encoder::sparse);
        metadata.option(record.metadata, Encoder::metadata);
    }
    let mut dead = Encoder::empty();
    tombstones.iter().for_each(|id| dead.str(id.as_str()));
    let mut info = Encoder::empty();
    info.str(header.namespace.as_str());
    info.option(header.schema_fields.as_deref(), Encoder::strings);
    let blocks = [vectors, ids, sparse, metadata, dead, info].map(Encoder::into_bytes);

    let total = HEADER_LEN + blocks.iter().map(|b| b.len() + 4).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&count(dimension).to_le_bytes());
    let flags = if header.cleared { CLEARED } else { 0 };
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&count(records.len()).to_le_bytes());
    out.extend_from_slice(&count(tombstones.len()).to_le_bytes());
    for block in &blocks {
        out.extend_from_slice(&(block.len() as u64).to_le_bytes());
    }
    debug_assert_eq!(out.len(), HEADER_BODY);
    out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    for block in &blocks {
        out.extend_from_slice(block);
        out.extend_from_slice(&crc32fast::hash(block).to_le_bytes());
    }
    debug_assert_eq!(out.len(), total);
    out
}

fn count(n: usize) -> u32 {
    u32::try_from(n).expect("a segment holds fewer than 4 Gi records of bounded size")
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Decodes a segment of an index whose vectors have `dimension` values; on
/// failure, the offset of the bad part and why.
pub(crate) fn decode(bytes: &[u8], dimension: usize) -> Result<Segment, (u64, String)> {
    if bytes.len() < HEADER_LEN {
        return Err((
            0,
            format!(
                "the file is {} bytes, shorter than its {HEADER_LEN}-byte header",
                bytes.len()
            ),
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err((0, "not a larch segment (wrong magic bytes)".to_owned()));
    }
    if crc32fast::hash(&bytes[..HEADER_BODY]) != u32_at(bytes, HEADER_BODY) {
        return Err((0, "the segment header fails its checksum".to_owned()));
    }
    let version = u32_at(bytes, 8);
    if version != VERSION {
        return Err((
            8,
            format!(
                "unsupported segment format version {version}; this build reads version {VERSION}"
            ),
        ));
    }
    let stored_dimension = u32_at(bytes, 12) as usize;
    if stored_dimension != dimension {
        return Err((
            12,
            format!(
                "the segment holds vectors of dimension {stored_dimension}, but the index dimension is {dimension}"
            ),
        ));
    }
    let flags = u32_at(bytes, 16);
    if flags & !CLEARED != 0 {
        return Err((16, format!("unknown segment flags {flags:#x}")));
    }
    let records = u32_at(bytes, 20) as usize;
    let tombstones = u32_at(bytes, 24) as usize;

    // Locate and check every block before decoding any of them.
    let mut blocks: [(usize, &[u8]); BLOCKS.len()] = [(0, &[]); BLOCKS.len()];
    let mut offset = HEADER_LEN;
    for (i, name) in BLOCKS.iter().enumerate() {
        let len = u64::from_le_bytes(bytes[28 + 8 * i..36 + 8 * i].try_into().expect("8 bytes"));
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| offset.checked_add(len)?.checked_add(4))
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| {
                (
                    offset as u64,
                    format!(
                        "the {name} block of {len} bytes runs past the end of the {}-byte file",
                        bytes.len()
                    ),
                )
            })?;
        let block = &bytes[offset..end - 4];
        if crc32fast::hash(block) != u32_at(bytes, end - 4) {
            return Err((
                offset as u64,
                format!("the {name} block fails its checksum"),
            ));
        }
        blocks[i] = (offset, block);
        offset = end;
    }
    if offset != bytes.len() {
        return Err((
            offset as u64,
            format!(
                "{} unexpected bytes after the last block",
                bytes.len() - offset
            ),
        ));
    }

    let [vectors, ids, sparse, metadata, dead, info] = blocks;
    let bad = |(at, _): (usize, &[u8]), name: &str, reason: String| {
        (at as u64, format!("the {name} block is invalid: {reason}"))
    };
    if Some(vectors.1.len()) != records.checked_mul(dimension * 4) {
        return Err(bad(
            vectors,
            "vectors",
            format!(
                "{} bytes for {records} vectors of dimension {dimension}",
                vectors.1.len()
            ),
        ));
    }
    let mut id_input = Decoder::new(ids.1, dimension);
    let mut sparse_input = Decoder::new(sparse.1, dimension);
    let mut metadata_input = Decoder::new(metadata.1, dimension);
    // Every record takes at least 4 bytes of ids; check before allocating.
    if records > ids.1.len() / 4 {
        return Err(bad(ids, "ids", format!("too short for {records} ids")));
    }
    let mut decoded = Vec::with_capacity(records);
    // Rows are `dimension * 4` bytes (none in a sparse index: `chunks_exact` cannot take 0).
    let row_bytes = dimension * 4;
    for row in 0..records {
        let values = &vectors.1[row * row_bytes..(row + 1) * row_bytes];
        let record = NewRecord {
            id: id_input.id().map_err(|e| bad(ids, "ids", e))?,
            values: values
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
            sparse: sparse_input
                .option(Decoder::sparse)
                .map_err(|e| bad(sparse, "sparse values", e))?,
            metadata: metadata_input
                .option(Decoder::metadata)
                .map_err(|e| bad(metadata, "metadata", e))?,
        };
        decoded.push(record);
    }
    id_input.finish().map_err(|e| bad(ids, "ids", e))?;
    sparse_input
        .finish()
        .map_err(|e| bad(sparse, "sparse values", e))?;
    metadata_input
        .finish()
        .map_err(|e| bad(metadata, "metadata", e))?;

    if tombstones > dead.1.len() / 4 {
        return Err(bad(
            dead,
            "tombstones",
            format!("too short for {tombstones} ids"),
        ));
    }
    let mut dead_input = Decoder::new(dead.1, dimension);
    let tombstones = (0..tombstones)
        .map(|_| dead_input.id())
        .collect::<Result<Vec<_>, _>>()
        .and_then(|ids| dead_input.finish().map(|()| ids))
        .map_err(|e| bad(dead, "tombstones", e))?;

    let mut info_input = Decoder::new(info.1, dimension);
    let header = info_input
        .str()
        .and_then(|name| Namespace::parse("namespace", &name).map_err(|e| e.to_string()))
        .and_then(|namespace| {
            let schema_fields = info_input.option(Decoder::strings)?;
            info_input.finish()?;
            Ok(Header {
                namespace,
                cleared: flags & CLEARED != 0,
                schema_fields,
            })
        })
        .map_err(|e| bad(info, "namespace", e))?;
    Ok(Segment {
        header,
        records: decoded,
        tombstones,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetadataValue;

    const DIM: usize = 3;

    fn id(s: &str) -> VectorId {
        VectorId::parse("id", s).unwrap()
    }

    fn sample() -> (Segment, Vec<u8>) {
        let records = vec![
            NewRecord {
                id: id("a"),
                values: vec![1.0, -0.0, f32::MIN_POSITIVE],
                sparse: Some(SparseVector {
                    indices: vec![2, 7],
                    values: vec![0.5, -1.5],
                }),
                metadata: Some(Metadata::from([
                    ("genre".to_owned(), MetadataValue::String("drama".into())),
                    ("year".to_owned(), MetadataValue::Number(2019.0)),
                ])),
            },
            NewRecord {
                id: id("é-b"),
                values: vec![3.0, 2.0, 1.0],
                sparse: None,
                metadata: None,
            },
        ];
        let segment = Segment {
            header: Header {
                namespace: Namespace::parse("namespace", "films").unwrap(),
                cleared: true,
                schema_fields: Some(vec!["genre".into()]),
            },
            records,
            tombstones: vec![id("gone"), id("x")],
        };
        let refs: Vec<RecordRef<'_>> = segment.records.iter().map(RecordRef::from).collect();
        let dead: Vec<&VectorId> = segment.tombstones.iter().collect();
        let bytes = encode(&segment.header, DIM, &refs, &dead);
        (segment, bytes)
    }

    #[test]
    fn segments_round_trip_with_vectors_contiguous_after_the_header() {
        let (segment, bytes) = sample();
        assert_eq!(decode(&bytes, DIM).unwrap(), segment);
        let first = f32::from_le_bytes(bytes[HEADER_LEN..HEADER_LEN + 4].try_into().unwrap());
        assert_eq!(first, 1.0);
        let empty = encode(
            &Header {
                namespace: Namespace::default(),
                cleared: false,
                schema_fields: None,
            },
            DIM,
            &[],
            &[],
        );
        let decoded = decode(&empty, DIM).unwrap();
        assert!(decoded.records.is_empty() && decoded.tombstones.is_empty());
        assert_eq!(decoded.header.namespace, Namespace::default());
    }

    #[test]
    fn segments_of_a_sparse_index_round_trip_without_dense_values() {
        let (mut segment, _) = sample();
        for record in &mut segment.records {
            record.values.clear();
            record.sparse.get_or_insert_with(|| SparseVector {
                indices: vec![4_000_000_000],
                values: vec![1.0],
            });
        }
        let refs: Vec<RecordRef<'_>> = segment.records.iter().map(RecordRef::from).collect();
        let dead: Vec<&VectorId> = segment.tombstones.iter().collect();
        let bytes = encode(&segment.header, 0, &refs, &dead);
        assert_eq!(decode(&bytes, 0).unwrap(), segment);
        assert!(decode(&bytes, DIM).is_err(), "a dense index refuses it");
    }

    /// Every flipped byte and every cut is caught, and the offset points at
    /// the header or at the start of the block that holds the byte.
    #[test]
    fn any_damage_is_reported_at_its_block() {
        let (_, bytes) = sample();
        let mut starts = vec![0, HEADER_LEN];
        let mut offset = HEADER_LEN;
        for i in 0..BLOCKS.len() {
            let len = u64::from_le_bytes(bytes[28 + 8 * i..36 + 8 * i].try_into().unwrap());
            offset += len as usize + 4;
            starts.push(offset);
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            let (offset, reason) = decode(&bad, DIM).unwrap_err();
            let block_start = *starts.iter().filter(|s| **s <= at).max().unwrap();
            let expected = if at < HEADER_LEN {
                0
            } else {
                block_start as u64
            };
            assert_eq!(offset, expected, "flipped byte {at}: {reason}");
        }
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], DIM).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(
            decode(&longer, DIM)
                .unwrap_err()
                .1
                .contains("unexpected bytes")
        );
        let (offset, reason) = decode(&bytes, DIM + 1).unwrap_err();
        assert_eq!(offset, 12);
        assert!(reason.contains("dimension 3"), "{reason}");
    }

    #[test]
    fn paths_are_numbered() {
        assert_eq!(path(7), "segments/seg-000007.seg");
        assert_eq!(parse_path(&path(7)), Some(7));
        assert_eq!(parse_path(&path(12_345_678)), Some(12_345_678));
        assert_eq!(parse_path("segments/seg-7.seg"), None);
        assert_eq!(parse_path("manifest"), None);
        assert_eq!(parse_path("segments/seg-00000x.seg"), None);
    }

    /// A file `segments/seg-18446744073709551615.seg` beside an index's segments made
    /// recovery overflow (in a debug build) numbering the next segment after it; it is not
    /// a segment this engine could have written, so it is ignored. (Seen in the code while
    /// fixing `fuzz_regression_manifest_next_segment_overflow`.)
    #[test]
    fn segment_file_numbers_past_the_limit_are_not_segments() {
        assert_eq!(parse_path(&path(u64::MAX)), None);
        assert_eq!(parse_path(&path(MAX_FILE_NUMBER + 1)), None);
        assert_eq!(parse_path(&path(MAX_FILE_NUMBER)), Some(MAX_FILE_NUMBER));
    }
}
