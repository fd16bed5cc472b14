//! The byte format of a log file: its header, and the frame before each record's payload,
//! each with its own checksum (see the `wal` module docs).

/// First bytes of every log file.
const MAGIC: &[u8; 8] = b"LARCHWAL";

/// Format version written in the header (2: frames carry their own checksum).
const VERSION: u32 = 2;

/// Bytes of a file header.
pub(crate) const HEADER_LEN: u64 = 24;

/// Bytes of a record's frame before its payload: length, payload checksum and
/// the frame's own checksum.
pub(crate) const FRAME_LEN: u64 = 12;

/// The header of log file number `number`.
pub(super) fn header(number: u64) -> [u8; HEADER_LEN as usize] {
    let mut header = [0; HEADER_LEN as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&number.to_le_bytes());
    let crc = crc32fast::hash(&header[..20]);
    header[20..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Appends `payload`, framed, to `buffer`.
pub(super) fn push_frame(buffer: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payloads are checked against the record limit");
    let mut frame = [0; FRAME_LEN as usize];
    frame[..4].copy_from_slice(&len.to_le_bytes());
    frame[4..8].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let frame_crc = crc32fast::hash(&frame[..8]);
    frame[8..].copy_from_slice(&frame_crc.to_le_bytes());
    buffer.extend_from_slice(&frame);
    buffer.extend_from_slice(payload);
}

/// Checks a file header; on failure, the offset of the bad field and why.
pub(super) fn check_header(
    head: &[u8; HEADER_LEN as usize],
    number: u64,
) -> Result<(), (u64, String)> {
    if &head[..8] != MAGIC {
        return Err((
            0,
            "not a larch write-ahead log (wrong magic bytes)".to_owned(),
        ));
    }
    let crc = u32::from_le_bytes(head[20..].try_into().expect("4 bytes"));
    if crc32fast::hash(&head[..20]) != crc {
        return Err((20, "the file header fails its checksum".to_owned()));
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err((
            8,
            format!("unsupported log format version {version}; this build reads version {VERSION}"),
        ));
    }
    let stored = u64::from_le_bytes(head[12..20].try_into().expect("8 bytes"));
    if stored != number {
        return Err((
            12,
            format!("the header says this is log file {stored}, but its name says {number}"),
        ));
    }
    Ok(())
}
