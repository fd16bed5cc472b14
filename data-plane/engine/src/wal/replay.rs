//! Reading a log back at recovery: [`replay`] of an index directory's files in order, and
//! [`scan`] of one file, which drops a torn record at the very end of the last file and
//! reports any other damage as corruption.

use std::{
    fs::File,
    io::{self, BufReader, Read},
    path::Path,
};

use super::{
    file::{file_name, file_numbers, truncate},
    frame::{FRAME_LEN, HEADER_LEN, check_header},
};
use crate::{Error, Result, limits};

/// The file to append to after replay, its length, and how many records were replayed.
#[derive(Debug)]
pub(crate) struct Replayed {
    pub(crate) number: u64,
    pub(crate) len: u64,
    /// Good records in all the files replayed: the log continues numbering at the manifest's
    /// LSN plus this (see [`Wal::after_lsn`](super::Wal::after_lsn)).
    pub(crate) records: u64,
}

/// Replays the log files of `dir` numbered `start` and up, in order, calling
/// `visit(file, offset, payload)` for each good record (older files are
/// covered by segments and ignored). Drops and truncates a torn record at
/// the end of the last file; any other damage, or a missing file, is
/// [`Error::Corrupt`].
pub(crate) fn replay(
    dir: &Path,
    start: u64,
    mut visit: impl FnMut(&Path, u64, &[u8]) -> Result<()>,
) -> Result<Replayed> {
    let mut numbers = file_numbers(dir)?;
    numbers.retain(|number| *number >= start);
    let (Some(&first), Some(&last)) = (numbers.first(), numbers.last()) else {
        return Err(Error::corrupt(
            dir.join(file_name(start)),
            0,
            "missing: no write-ahead log file from here on in the index directory",
        ));
    };
    if first != start {
        return Err(Error::corrupt(
            dir.join(file_name(start)),
            0,
            format!(
                "missing: replay must start here, but the write-ahead log starts at {}",
                file_name(first)
            ),
        ));
    }
    if let Some(pair) = numbers.windows(2).find(|pair| pair[1] != pair[0] + 1) {
        return Err(Error::corrupt(
            dir.join(file_name(pair[0] + 1)),
            0,
            format!(
                "missing: the write-ahead log jumps from {} to {}",
                file_name(pair[0]),
                file_name(pair[1])
            ),
        ));
    }
    debug_assert!(first <= last);
    let mut replayed = None;
    let mut records = 0u64;
    for number in numbers {
        let path = dir.join(file_name(number));
        let read_error = |err: io::Error| {
            Error::storage(
                format!("cannot read the write-ahead log {}", path.display()),
                &err,
            )
        };
        let file = File::open(&path).map_err(read_error)?;
        let len = file.metadata().map_err(read_error)?.len();
        let is_last = number == last;
        let scan = scan(
            BufReader::with_capacity(1 << 20, file),
            len,
            &path,
            number,
            is_last,
            &mut visit,
        )?;
        if let Some(reason) = &scan.torn {
            debug_assert!(is_last);
            tracing::warn!(
                file = %path.display(),
                offset = scan.good_len,
                dropped_bytes = len - scan.good_len,
                reason = %reason,
                "dropping a torn record at the end of the write-ahead log (a crash during a write that was never acknowledged)"
            );
            truncate(&path, scan.good_len).map_err(|err| {
                Error::storage(
                    format!(
                        "cannot cut the torn end off the write-ahead log {}",
                        path.display()
                    ),
                    &err,
                )
            })?;
        }
        records += scan.records;
        replayed = Some(Replayed {
            number,
            len: scan.good_len,
            records,
        });
    }
    Ok(replayed.expect("there is at least one log file"))
}

/// What scanning one file found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// End of the last good record.
    pub(crate) good_len: u64,
    /// Good records, each passed to `visit`.
    pub(crate) records: u64,
    /// Why the bytes after `good_len` were dropped, if there are any.
    pub(crate) torn: Option<String>,
}

/// Reads log file number `number` (`len` bytes, from `input`), calling
/// `visit` for each good record. A torn record is accepted only at the end of
/// the `last` file.
pub(crate) fn scan(
    mut input: impl Read,
    len: u64,
    path: &Path,
    number: u64,
    last: bool,
    visit: &mut impl FnMut(&Path, u64, &[u8]) -> Result<()>,
) -> Result<Scan> {
    let read_error = |err: io::Error| {
        Error::storage(
            format!("cannot read the write-ahead log {}", path.display()),
            &err,
        )
    };
    if len < HEADER_LEN {
        return Err(Error::corrupt(
            path,
            0,
            format!("the file is {len} bytes, shorter than its {HEADER_LEN}-byte header"),
        ));
    }
    let mut head = [0; HEADER_LEN as usize];
    input.read_exact(&mut head).map_err(read_error)?;
    check_header(&head, number).map_err(|(offset, reason)| Error::corrupt(path, offset, reason))?;

    let mut records = 0;
    let torn = |offset: u64, records: u64, reason: String| {
        if last {
            Ok(Scan {
                good_len: offset,
                records,
                torn: Some(reason),
            })
        } else {
            Err(Error::corrupt(
                path,
                offset,
                format!("{reason}, and another log file follows"),
            ))
        }
    };
    let mut offset = HEADER_LEN;
    let mut payload = Vec::new();
    while offset < len {
        let left = len - offset;
        if left < FRAME_LEN {
            return torn(
                offset,
                records,
                format!("an incomplete record frame of {left} bytes"),
            );
        }
        let mut frame = [0; FRAME_LEN as usize];
        input.read_exact(&mut frame).map_err(read_error)?;
        let size = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
        let frame_crc = u32::from_le_bytes(frame[8..].try_into().expect("4 bytes"));
        if crc32fast::hash(&frame[..8]) != frame_crc {
            // Torn only if nothing intact follows; damage to an old frame leaves
            // intact records behind it.
            let mut rest = Vec::new();
            input.read_to_end(&mut rest).map_err(read_error)?;
            if let Some(at) = next_intact_record(&rest) {
                return Err(Error::corrupt(
                    path,
                    offset,
                    format!(
                        "a record frame fails its checksum, and an intact record follows at byte {}",
                        offset + FRAME_LEN + at as u64
                    ),
                ));
            }
            return torn(
                offset,
                records,
                "the last record's frame fails its checksum".to_owned(),
            );
        }
        if size == 0 || size as usize > limits::MAX_LOG_RECORD_BYTES {
            return Err(Error::corrupt(
                path,
                offset,
                format!(
                    "a record length of {size} bytes is out of range (1 to {})",
                    limits::MAX_LOG_RECORD_BYTES
                ),
            ));
        }
        let size = u64::from(size);
        if size > left - FRAME_LEN {
            return torn(
                offset,
                records,
                format!(
                    "a record of {size} bytes ends {} bytes past the end of the file",
                    size - (left - FRAME_LEN)
                ),
            );
        }
        // `size` is at most the limit and fits in the file: a sane allocation.
        payload.resize(size as usize, 0);
        input.read_exact(&mut payload).map_err(read_error)?;
        if crc32fast::hash(&payload) != crc {
            if rest_is_zero(&mut input).map_err(read_error)? {
                return torn(
                    offset,
                    records,
                    "the last record fails its checksum".to_owned(),
                );
            }
            return Err(Error::corrupt(
                path,
                offset,
                "a record fails its checksum, and more records follow it",
            ));
        }
        visit(path, offset, &payload)?;
        records += 1;
        offset += FRAME_LEN + size;
    }
    Ok(Scan {
        good_len: offset,
        records,
        torn: None,
    })
}

/// The position in `bytes` of the first intact record (a frame passing its
/// checksum, with a payload that fits and passes its own), if any. A frame
/// checksum is cheap, so every position is tried; a false match needs two
/// 32-bit checksums to agree by chance.
fn next_intact_record(bytes: &[u8]) -> Option<usize> {
    let frame_len = FRAME_LEN as usize;
    (0..bytes.len().saturating_sub(frame_len - 1)).find(|&at| {
        let frame = &bytes[at..at + frame_len];
        let stored = u32::from_le_bytes(frame[8..].try_into().expect("4 bytes"));
        if crc32fast::hash(&frame[..8]) != stored {
            return false;
        }
        let size = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
        bytes
            .get(at + frame_len..at + frame_len + size)
            .is_some_and(|payload| size > 0 && crc32fast::hash(payload) == crc)
    })
}

/// Whether everything left in `input` is zero bytes (or nothing).
fn rest_is_zero(input: &mut impl Read) -> io::Result<bool> {
    let mut buffer = [0; 8192];
    loop {
        let n = match input.read(&mut buffer) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if buffer[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
    }
}
