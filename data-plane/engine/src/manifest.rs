//! The manifest: which segments are live, per namespace and in order, and
//! the first write-ahead log file that recovery must replay on top of them,
//! with the log sequence number (LSN) its records are numbered on from.
//!
//! It is one small file, `manifest`, replaced whole and atomically on every
//! flush and compaction (see `storage`): a reader sees one version or the
//! next, never a mix. A namespace exists in the segments exactly when it has
//! at least one segment listed (an empty one for an explicitly created,
//! empty namespace).
//!
//! # Layout
//!
//! ```text
//! magic "LARCHMAN" | version:u32 | generation:u64 | wal start:u64 | next segment:u64 | lsn:u64
//! | epoch:u64 | namespaces:u32 | (name:str | segments:u32 | (number:u64 | size:u64)*)* | crc32 of everything before
//! ```
//!
//! Integers are little-endian; `str` is a u32 length and UTF-8 bytes. Version 1, written
//! before indexes numbered their writes, has no `lsn` and is read as LSN 0 (no LSN was ever
//! given out then); version 2 has no `epoch` and is read as epoch 0 (written on local disk, or
//! before object logs had writers); every manifest written now is version 3.
//!
//! `epoch` is the writer epoch of the object log (see `objlog`) of the writer that wrote the
//! manifest, 0 on local disk: every batch from `wal start` on was written by that writer or a
//! newer one, so replay refuses an older epoch there, and a writer never replaces a manifest
//! of a newer epoch than its own.

use std::collections::BTreeMap;

use crate::{Namespace, codec::Decoder};

/// Where the manifest lives under the storage root.
pub(crate) const PATH: &str = "manifest";
const MAGIC: &[u8; 8] = b"LARCHMAN";
const VERSION: u32 = 3;
/// The version before `epoch`, still read.
const VERSION_WITHOUT_EPOCH: u32 = 2;
/// The version before `lsn`, still read.
const VERSION_WITHOUT_LSN: u32 = 1;
/// Bytes before the namespace list.
const FIXED_LEN: usize = 8 + 4 + 8 + 8 + 8 + 8 + 8 + 4;
/// Bytes before the namespace list of a version 2 manifest.
const FIXED_LEN_WITHOUT_EPOCH: usize = FIXED_LEN - 8;
/// Bytes before the namespace list of a version 1 manifest.
const FIXED_LEN_WITHOUT_LSN: usize = FIXED_LEN_WITHOUT_EPOCH - 8;

/// Above every log and segment file number and manifest generation this engine can reach:
/// each flush or compaction takes one or two of each, so a number this high was never written
/// by it, and counting on from one (`+ 1`) cannot overflow.
pub(crate) const MAX_FILE_NUMBER: u64 = 1 << 62;

/// A live segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentRef {
    /// Its number (see `segment::path`).
    pub(crate) number: u64,
    /// Its size in bytes.
    pub(crate) bytes: u64,
}

/// One version of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// Counts versions, starting at 1 for the first one written.
    pub(crate) generation: u64,
    /// Recovery replays log files from this number on; older ones are
    /// covered by the segments.
    pub(crate) wal_start: u64,
    /// Every segment number below this has been used.
    pub(crate) next_segment: u64,
    /// The log sequence number of the last record before log file `wal_start` (0: none): the
    /// records replayed are numbered on from here (see `wal`'s `Wal::after_lsn`).
    pub(crate) lsn: u64,
    /// The writer epoch of the object log's writer that wrote this version (0: local disk).
    pub(crate) epoch: u64,
    /// Live segments of each namespace, oldest first.
    pub(crate) namespaces: BTreeMap<Namespace, Vec<SegmentRef>>,
}

impl Manifest {
    /// The state of an index that has never flushed: no segments, the log
    /// from its first file.
    pub(crate) fn empty() -> Self {
        Manifest {
            generation: 0,
            wal_start: 1,
            next_segment: 1,
            lsn: 0,
            epoch: 0,
            namespaces: BTreeMap::new(),
        }
    }

    /// Every live segment.
    pub(crate) fn segments(&self) -> impl Iterator<Item = &SegmentRef> {
        self.namespaces.values().flatten()
    }

    /// Encodes this version.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + 64 * self.namespaces.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.wal_start.to_le_bytes());
        out.extend_from_slice(&self.next_segment.to_le_bytes());
        out.extend_from_slice(&self.lsn.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        let len = |n: usize| u32::try_from(n).expect("fewer than 4 Gi namespaces and segments");
        out.extend_from_slice(&len(self.namespaces.len()).to_le_bytes());
        for (namespace, segments) in &self.namespaces {
            out.extend_from_slice(&len(namespace.as_str().len()).to_le_bytes());
            out.extend_from_slice(namespace.as_str().as_bytes());
            out.extend_from_slice(&len(segments.len()).to_le_bytes());
            for segment in segments {
                out.extend_from_slice(&segment.number.to_le_bytes());
                out.extend_from_slice(&segment.bytes.to_le_bytes());
            }
        }
        out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
        out
    }

    /// Decodes a manifest; on failure, the offset of the bad part and why.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, (u64, String)> {
        if bytes.len() < FIXED_LEN_WITHOUT_LSN + 4 {
            return Err((
                0,
                format!(
                    "the file is {} bytes, too short for a manifest",
                    bytes.len()
                ),
            ));
        }
        if &bytes[..8] != MAGIC {
            return Err((0, "not a larch manifest (wrong magic bytes)".to_owned()));
        }
        let body = bytes.len() - 4;
        let crc = u32::from_le_bytes(bytes[body..].try_into().expect("4 bytes"));
        if crc32fast::hash(&bytes[..body]) != crc {
            return Err((body as u64, "the manifest fails its checksum".to_owned()));
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let (fixed_len, lsn, epoch) = match version {
            VERSION if bytes.len() >= FIXED_LEN + 4 => (FIXED_LEN, u64_at(36), u64_at(44)),
            VERSION_WITHOUT_EPOCH if bytes.len() >= FIXED_LEN_WITHOUT_EPOCH + 4 => {
                (FIXED_LEN_WITHOUT_EPOCH, u64_at(36), 0)
            }
            VERSION | VERSION_WITHOUT_EPOCH => {
                return Err((
                    0,
                    format!(
                        "the file is {} bytes, too short for a manifest",
                        bytes.len()
                    ),
                ));
            }
            VERSION_WITHOUT_LSN => (FIXED_LEN_WITHOUT_LSN, 0, 0),
            _ => {
                return Err((
                    8,
                    format!(
                        "unsupported manifest format version {version}; this build reads versions {VERSION_WITHOUT_LSN} to {VERSION}"
                    ),
                ));
            }
        };
        let mut manifest = Manifest {
            generation: u64_at(12),
            wal_start: u64_at(20),
            next_segment: u64_at(28),
            lsn,
            epoch,
            namespaces: BTreeMap::new(),
        };
        // The checksum matched, so anything wrong below was written that way.
        let invalid =
            |reason: String| (fixed_len as u64 - 4, format!("invalid manifest: {reason}"));
        let mut input = Decoder::new(&bytes[fixed_len - 4..body], 0);
        let namespaces = input.count(8).map_err(invalid)?;
        for _ in 0..namespaces {
            let name = input.str().map_err(invalid)?;
            let namespace =
                Namespace::parse("namespace", &name).map_err(|err| invalid(err.to_string()))?;
            let count = input.count(16).map_err(invalid)?;
            let mut segments = Vec::with_capacity(count);
            for _ in 0..count {
                let number = input.u64().map_err(invalid)?;
                let bytes = input.u64().map_err(invalid)?;
                if number >= manifest.next_segment {
                    return Err(invalid(format!(
                        "segment {number} is not below the next segment number {}",
                        manifest.next_segment
                    )));
                }
                segments.push(SegmentRef { number, bytes });
            }
            if manifest.namespaces.insert(namespace, segments).is_some() {
                return Err(invalid(format!("namespace '{name}' is listed twice")));
            }
        }
        input.finish().map_err(invalid)?;
        if manifest.wal_start == 0 {
            return Err(invalid("the log starts at file 0".to_owned()));
        }
        let numbers = [
            manifest.generation,
            manifest.wal_start,
            manifest.next_segment,
            manifest.lsn,
        ];
        // No LSN gets that high either (2^62 records), so numbering on cannot overflow.
        if numbers.iter().any(|n| *n > MAX_FILE_NUMBER) {
            return Err(invalid(format!(
                "numbers (generation {}, log {}, next segment {}, lsn {}) above {MAX_FILE_NUMBER} were never written",
                manifest.generation, manifest.wal_start, manifest.next_segment, manifest.lsn
            )));
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut namespaces = BTreeMap::new();
        namespaces.insert(
            Namespace::default(),
            vec![
                SegmentRef {
                    number: 3,
                    bytes: 100,
                },
                SegmentRef {
                    number: 9,
                    bytes: 80,
                },
            ],
        );
        namespaces.insert(
            Namespace::parse("ns", "films").unwrap(),
            vec![SegmentRef {
                number: 4,
                bytes: 7,
            }],
        );
        Manifest {
            generation: 5,
            wal_start: 12,
            next_segment: 10,
            lsn: 77,
            epoch: 4,
            namespaces,
        }
    }

    #[test]
    fn manifests_round_trip() {
        let manifest = sample();
        assert_eq!(Manifest::decode(&manifest.encode()).unwrap(), manifest);
        let empty = Manifest::empty();
        assert_eq!(Manifest::decode(&empty.encode()).unwrap(), empty);
        assert_eq!(manifest.segments().count(), 3);
    }

    /// `manifest` re-encoded as format `version` without the bytes at `drop` (the fields that
    /// version lacks), with its checksum fixed.
    fn older(manifest: &Manifest, version: u32, drop: std::ops::Range<usize>) -> Vec<u8> {
        let mut bytes = manifest.encode();
        bytes[8..12].copy_from_slice(&version.to_le_bytes());
        bytes.drain(drop);
        let body = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Indexes whose manifest was written before writes were numbered open, numbering on
    /// from 0 (no LSN was given out then); those written before writer epochs, with epoch 0.
    #[test]
    fn older_manifests_are_read_with_lsn_and_epoch_0() {
        let manifest = sample();
        let v2 = older(&manifest, VERSION_WITHOUT_EPOCH, 44..52);
        let read = Manifest::decode(&v2).unwrap();
        assert_eq!(
            read,
            Manifest {
                epoch: 0,
                ..manifest.clone()
            }
        );
        let v1 = older(&read, VERSION_WITHOUT_LSN, 36..52);
        let read = Manifest::decode(&v1).unwrap();
        assert_eq!(
            read,
            Manifest {
                lsn: 0,
                epoch: 0,
                ..manifest
            }
        );
        let mut bytes = v1;
        let body = bytes.len() - 4;
        bytes[8..12].copy_from_slice(&4u32.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
        let (offset, reason) = Manifest::decode(&bytes).unwrap_err();
        assert_eq!(offset, 8);
        assert!(
            reason.contains("unsupported manifest format version 4"),
            "{reason}"
        );
    }

    #[test]
    fn damage_is_caught() {
        let bytes = sample().encode();
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x08;
            assert!(Manifest::decode(&bad).is_err(), "flipped byte {at}");
        }
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong = sample();
        wrong.next_segment = 9;
        let (_, reason) = Manifest::decode(&wrong.encode()).unwrap_err();
        assert!(reason.contains("segment 9"), "{reason}");
    }

    /// Found with `fuzz/` (recovery, a seed whose manifest says the next segment is number
    /// u64::MAX): the index opened, and its first flush overflowed counting on from there.
    #[test]
    fn fuzz_regression_manifest_next_segment_overflow() {
        let mut bytes = sample().encode();
        bytes[28..36].copy_from_slice(&u64::MAX.to_le_bytes()); // next segment
        let body = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
        let (_, reason) = Manifest::decode(&bytes).unwrap_err();
        assert!(reason.contains("never written"), "{reason}");
        let mut far = sample();
        far.wal_start = MAX_FILE_NUMBER + 1;
        assert!(Manifest::decode(&far.encode()).is_err());
        far.wal_start = MAX_FILE_NUMBER;
        far.next_segment = MAX_FILE_NUMBER;
        far.generation = MAX_FILE_NUMBER;
        far.lsn = MAX_FILE_NUMBER + 1;
        assert!(Manifest::decode(&far.encode()).is_err());
        far.lsn = MAX_FILE_NUMBER;
        assert_eq!(Manifest::decode(&far.encode()), Ok(far));
    }

    /// Found with `fuzz/` (recovery, a seed whose manifest generation is u64::MAX): the
    /// index opened, and its first flush overflowed numbering the next manifest.
    #[test]
    fn fuzz_regression_manifest_generation_overflow() {
        let mut bytes = sample().encode();
        bytes[12..20].copy_from_slice(&u64::MAX.to_le_bytes()); // generation
        let body = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
        let (_, reason) = Manifest::decode(&bytes).unwrap_err();
        assert!(reason.contains("never written"), "{reason}");
    }
}
