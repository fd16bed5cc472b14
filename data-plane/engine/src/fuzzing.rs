//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, off in every
//! build the project ships).
//!
//! The storage formats are private to the engine. [`decode`] runs the decoder of one format
//! on arbitrary bytes exactly as recovery does, then applies what it decoded to namespaces
//! as recovery would; [`seal`] rewrites a file's checksums, so that the fuzzer's mutations
//! get past them to the decoders. Whatever the bytes, these functions must return — an
//! error is fine — and never panic or allocate more than the input justifies: a fuzz target
//! treats anything else as a bug.
//!
//! # Layout
//!
//! - [`Format`]: the file formats (a log file, one log record, a segment, the manifest,
//!   `index.meta`, a graph file).
//! - [`seal`]: recomputes every checksum the layout of the bytes allows.
//! - [`decode`]: decodes, applies, and checks that what was applied encodes to a segment that
//!   decodes again.
//!
//! ```
//! use larch_engine::fuzzing::{Format, decode, seal};
//! use larch_engine::{Dimension, IndexConfig, Metric};
//!
//! let config = IndexConfig { dimension: Dimension::new(2)?, metric: Metric::Cosine };
//! let mut bytes = b"LARCHSEG and then nonsense".to_vec();
//! seal(Format::Segment, &mut bytes);
//! assert!(decode(Format::Segment, &bytes, config).is_err());
//! # Ok::<(), larch_engine::Error>(())
//! ```

use std::{collections::BTreeMap, io::Cursor, path::Path};

use crate::{
    IndexConfig, Namespace, codec, dir, hnsw::Graph, manifest::Manifest, namespace::NamespaceStore,
    record::WriteOp, segment, wal,
};

/// A storage file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A write-ahead log file, `wal-000001.log`: header and framed records.
    Log,
    /// The payload of one log record (see `codec`).
    LogRecord,
    /// A segment file.
    Segment,
    /// The manifest.
    Manifest,
    /// `index.meta`.
    IndexMeta,
    /// A saved HNSW graph.
    Graph,
}

impl Format {
    /// Every format, in a fixed order (a fuzz target picks one by its position).
    pub const ALL: [Format; 6] = [
        Format::Log,
        Format::LogRecord,
        Format::Segment,
        Format::Manifest,
        Format::IndexMeta,
        Format::Graph,
    ];

    /// A short name, for corpus folders and messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Log => "log",
            Format::LogRecord => "log_record",
            Format::Segment => "segment",
            Format::Manifest => "manifest",
            Format::IndexMeta => "index_meta",
            Format::Graph => "graph",
        }
    }
}

/// Recomputes, in place, every checksum of `bytes` read as `format` that its layout allows
/// (a block whose stated length runs past the end keeps its bytes). Nothing else changes.
pub fn seal(format: Format, bytes: &mut [u8]) {
    match format {
        Format::Log => seal_log(bytes),
        Format::LogRecord => {}
        Format::Segment => seal_segment(bytes),
        Format::Manifest | Format::Graph => seal_trailing(bytes),
        Format::IndexMeta => {
            if bytes.len() >= 21 {
                let crc = crc32fast::hash(&bytes[..17]);
                bytes[17..21].copy_from_slice(&crc.to_le_bytes());
            }
        }
    }
}

/// A checksum of everything before it, in the last four bytes.
fn seal_trailing(bytes: &mut [u8]) {
    if let Some(body) = bytes.len().checked_sub(4) {
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn put_crc(bytes: &mut [u8], at: usize, covered: std::ops::Range<usize>) {
    let crc = crc32fast::hash(&bytes[covered]);
    bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The header checksum, then each frame's checksums, frame by frame (see `wal`).
fn seal_log(bytes: &mut [u8]) {
    let header = wal::HEADER_LEN as usize;
    let frame = wal::FRAME_LEN as usize;
    if bytes.len() < header {
        return;
    }
    put_crc(bytes, 20, 0..20);
    let mut at = header;
    while at + frame <= bytes.len() {
        let Some(size) = u32_at(bytes, at) else {
            return;
        };
        let payload = at + frame..(at + frame).saturating_add(size as usize).min(bytes.len());
        let end = payload.end;
        put_crc(bytes, at + 4, payload);
        put_crc(bytes, at + 8, at..at + 8);
        at = end;
    }
}

/// The header checksum, then each block's (see `segment`).
fn seal_segment(bytes: &mut [u8]) {
    const HEADER: usize = 80;
    if bytes.len() < HEADER {
        return;
    }
    let mut lens = [0u64; 6];
    for (i, len) in lens.iter_mut().enumerate() {
        let at = 28 + 8 * i;
        *len = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    }
    put_crc(bytes, HEADER - 4, 0..HEADER - 4);
    let mut at = HEADER;
    for len in lens {
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|len| at.checked_add(len))
            .filter(|end| end.saturating_add(4) <= bytes.len())
        else {
            return;
        };
        put_crc(bytes, end, at..end);
        at = end + 4;
    }
}

/// Decodes `bytes` as a file of `format` of an index with `config`, as recovery does, and
/// applies what it holds to namespaces. Every namespace changed then encodes its changes as
/// a segment, which must decode again (a panic says it does not: the engine would write a
/// segment it cannot read back). `Err` says why the bytes were refused.
pub fn decode(format: Format, bytes: &[u8], config: IndexConfig) -> Result<(), String> {
    let dimension = config.dimension.len();
    let mut namespaces = BTreeMap::new();
    match format {
        Format::Log => {
            let path = Path::new(&wal::file_name(1)).to_owned();
            // First as a log file that another one follows (a torn end is corruption)…
            let _ = wal::scan(
                Cursor::new(bytes),
                bytes.len() as u64,
                &path,
                1,
                false,
                &mut |_, _, _| Ok(()),
            );
            // …then as the last one, replayed.
            let mut dropped = Vec::new();
            let scan = wal::scan(
                Cursor::new(bytes),
                bytes.len() as u64,
                &path,
                1,
                true,
                &mut |file, offset, payload| {
                    let record = codec::decode(payload, dimension).map_err(|reason| {
                        crate::Error::corrupt(file, offset, format!("undecodable record: {reason}"))
                    })?;
                    dir::apply(&mut namespaces, &mut dropped, config, record)
                        .map_err(|reason| crate::Error::corrupt(file, offset, reason))
                },
            )
            .map_err(|err| err.to_string())?;
            assert!(scan.good_len <= bytes.len() as u64);
        }
        Format::LogRecord => {
            let record = codec::decode(bytes, dimension)?;
            dir::apply(&mut namespaces, &mut Vec::new(), config, record)?;
        }
        Format::Segment => {
            let segment::Segment {
                header,
                records,
                tombstones,
            } = segment::decode(bytes, dimension).map_err(|(_, reason)| reason)?;
            // As `flush` restores a segment at recovery, but tracked, so that the records
            // are written to a segment again below.
            let mut store = NamespaceStore::new(config, header.schema_fields);
            if !tombstones.is_empty() {
                store.apply(WriteOp::Delete(tombstones));
            }
            if !records.is_empty() {
                store.apply(WriteOp::Upsert(records));
            }
            namespaces.insert(header.namespace, store);
        }
        Format::Manifest => {
            let manifest = Manifest::decode(bytes).map_err(|(_, reason)| reason)?;
            assert_eq!(Manifest::decode(&manifest.encode()), Ok(manifest));
        }
        Format::IndexMeta => {
            dir::decode_meta(bytes).map_err(|(_, reason)| reason)?;
        }
        Format::Graph => {
            let (_, loaded) = Graph::decode(bytes).ok_or("not a usable graph file")?;
            // As `ann` loads a saved graph: only one built for this index is used.
            if !loaded.graph.fits(dimension, config.metric) {
                return Err("a graph of vectors of another width or metric".to_owned());
            }
            loaded.graph.exercise();
        }
    }
    check_segments(&namespaces, dimension);
    Ok(())
}

/// Every namespace's changes, written as a segment, decode again.
fn check_segments(namespaces: &BTreeMap<Namespace, NamespaceStore>, dimension: usize) {
    for (name, store) in namespaces {
        let _ = store.count_matching(None);
        if let Some((bytes, _)) = store.take_changes(name)
            && let Err((offset, reason)) = segment::decode(&bytes, dimension)
        {
            panic!(
                "a segment written from namespace '{name:?}' does not decode: {reason} at byte {offset}"
            );
        }
    }
}
