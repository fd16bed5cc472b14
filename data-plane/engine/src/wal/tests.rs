//! The write-ahead log: file names, scanning and damage, group commit, failed writes and
//! syncs, rotation.

use std::{io::Cursor, sync::Arc, thread, time::Duration};

use super::{
    file::parse_file_name,
    frame::{header, push_frame},
    testing::MemoryFile,
    *,
};
use crate::{Error, ErrorCode, Result, limits};
use std::{io, path::Path};

/// Payloads of the good records of an in-memory log, or the scan error.
fn records(bytes: &[u8], last: bool) -> Result<(Vec<Vec<u8>>, Scan)> {
    let mut payloads = Vec::new();
    let scan = scan(
        Cursor::new(bytes),
        bytes.len() as u64,
        Path::new("wal-000001.log"),
        1,
        last,
        &mut |_, _, payload: &[u8]| {
            payloads.push(payload.to_vec());
            Ok(())
        },
    )?;
    Ok((payloads, scan))
}

fn log_of(payloads: &[&[u8]]) -> Vec<u8> {
    let mut bytes = header(1).to_vec();
    payloads.iter().for_each(|p| push_frame(&mut bytes, p));
    bytes
}

fn corrupt_offset(err: Error) -> (u64, String) {
    match err {
        Error::Corrupt { offset, reason, .. } => (offset, reason),
        other => panic!("expected corruption, got {other}"),
    }
}

#[test]
fn file_names_sort_by_number() {
    assert_eq!(file_name(1), "wal-000001.log");
    assert_eq!(file_name(1_234_567), "wal-1234567.log");
    assert_eq!(parse_file_name("wal-000042.log"), Some(42));
    assert_eq!(parse_file_name("wal-1234567.log"), Some(1_234_567));
    assert_eq!(parse_file_name("wal-42.log"), None);
    assert_eq!(parse_file_name("wal-00004x.log"), None);
    assert_eq!(parse_file_name("index.meta"), None);
}

#[test]
fn scan_returns_every_record_in_order() {
    let bytes = log_of(&[b"one", b"two", b"three"]);
    let (payloads, scan) = records(&bytes, true).unwrap();
    assert_eq!(payloads, [&b"one"[..], b"two", b"three"]);
    assert_eq!(scan.good_len, bytes.len() as u64);
    assert!(scan.torn.is_none());
    let (payloads, _) = records(&header(1), true).unwrap();
    assert!(payloads.is_empty());
}

#[test]
fn a_torn_tail_is_dropped_at_every_cut() {
    let full = log_of(&[b"one", b"two", b"three"]);
    let second_end = log_of(&[b"one", b"two"]).len();
    for cut in second_end + 1..full.len() {
        let (payloads, scan) = records(&full[..cut], true).unwrap();
        assert_eq!(payloads, [&b"one"[..], b"two"], "cut at {cut}");
        assert_eq!(scan.good_len, second_end as u64);
        assert!(scan.torn.is_some());
        // The same damage before another file is corruption.
        let (offset, _) = corrupt_offset(records(&full[..cut], false).unwrap_err());
        assert_eq!(offset, second_end as u64);
    }
    // Zeros after the last good record (a file extended but never written).
    let mut zeros = log_of(&[b"one"]);
    zeros.extend_from_slice(&[0; 40]);
    let (payloads, scan) = records(&zeros, true).unwrap();
    assert_eq!(payloads, [b"one"]);
    assert_eq!(scan.good_len, log_of(&[b"one"]).len() as u64);
    // A last record whose payload was zeroed by the crash.
    let mut zeroed = full.clone();
    let len = zeroed.len();
    zeroed[len - 3..].fill(0);
    let (payloads, _) = records(&zeroed, true).unwrap();
    assert_eq!(payloads, [&b"one"[..], b"two"]);
}

#[test]
fn damage_in_the_middle_is_corruption_with_its_offset() {
    let full = log_of(&[b"one", b"two", b"three"]);
    let second = log_of(&[b"one"]).len();
    let mut flipped = full.clone();
    flipped[second + FRAME_LEN as usize] ^= 0x01;
    let (offset, reason) = corrupt_offset(records(&flipped, true).unwrap_err());
    assert_eq!(offset, second as u64);
    assert_eq!(
        reason,
        "a record fails its checksum, and more records follow it"
    );
    // An absurd length is corruption, never an allocation.
    let mut absurd = full.clone();
    absurd[second + 3] = 0xff;
    let (offset, reason) = corrupt_offset(records(&absurd, true).unwrap_err());
    assert_eq!(offset, second as u64);
    assert!(reason.contains("fails its checksum"), "{reason}");
    // A length damaged to point past the end of the file is not mistaken
    // for a torn write: an intact record follows it.
    let mut past_end = full.clone();
    past_end[second + 1] ^= 0x01;
    let (offset, reason) = corrupt_offset(records(&past_end, true).unwrap_err());
    assert_eq!(offset, second as u64);
    let third = log_of(&[b"one", b"two"]).len();
    assert!(
        reason.contains(&format!("an intact record follows at byte {third}")),
        "{reason}"
    );
    // A zero length followed by data.
    let mut zero = full.clone();
    zero[second..second + 4].fill(0);
    assert_eq!(
        corrupt_offset(records(&zero, true).unwrap_err()).0,
        second as u64
    );
}

#[test]
fn bad_headers_are_corruption() {
    let good = log_of(&[b"one"]);
    for (at, field_offset) in [(0, 0), (9, 20), (15, 20), (21, 20)] {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        let (offset, _) = corrupt_offset(records(&bad, true).unwrap_err());
        assert_eq!(offset, field_offset, "flipped byte {at}");
    }
    let (offset, reason) = corrupt_offset(records(&good[..10], true).unwrap_err());
    assert_eq!(offset, 0);
    assert!(
        reason.contains("shorter than its 24-byte header"),
        "{reason}"
    );
    let mut other_number = good.clone();
    other_number[..HEADER_LEN as usize].copy_from_slice(&header(7));
    let (offset, reason) = corrupt_offset(records(&other_number, true).unwrap_err());
    assert_eq!(offset, 12);
    assert!(reason.contains("log file 7"), "{reason}");
}

/// Many writers at once: every append becomes durable, in per-writer
/// order, and syncs are shared (never more syncs than appends).
#[test]
fn group_commit_makes_every_concurrent_append_durable() {
    let file = MemoryFile::with_header();
    file.faults.lock().unwrap().sync_delay = Duration::from_micros(200);
    let wal = Arc::new(Wal::new("test", Box::new(file.clone()), file.len()));
    const WRITERS: u8 = 8;
    const EACH: u16 = 40;
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let wal = Arc::clone(&wal);
            thread::spawn(move || {
                for seq in 0..EACH {
                    let mut payload = vec![writer];
                    payload.extend_from_slice(&seq.to_le_bytes());
                    wal.append(&payload).unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());

    let (appends, syncs) = wal.counts();
    assert_eq!(appends, u64::from(WRITERS) * u64::from(EACH));
    assert!(
        syncs >= 1 && syncs <= appends,
        "{syncs} syncs for {appends} appends"
    );
    let bytes = file.bytes.lock().unwrap().clone();
    let (payloads, _) = records(&bytes, true).unwrap();
    assert_eq!(payloads.len() as u64, appends);
    let mut next = [0u16; WRITERS as usize];
    for payload in payloads {
        let writer = usize::from(payload[0]);
        let seq = u16::from_le_bytes([payload[1], payload[2]]);
        assert_eq!(seq, next[writer], "writer {writer} out of order");
        next[writer] += 1;
    }
    assert!(next.iter().all(|n| *n == EACH));
}

fn storage_code<T: std::fmt::Debug>(result: Result<T>) -> (ErrorCode, String) {
    let err = result.unwrap_err();
    (err.code(), err.to_string())
}

#[test]
fn a_failed_write_is_cut_off_and_later_writes_work() {
    let file = MemoryFile::with_header();
    let wal = Wal::new("movies", Box::new(file.clone()), file.len());
    wal.append(b"one").unwrap();
    {
        let mut faults = file.faults.lock().unwrap();
        faults.append = Some(io::ErrorKind::StorageFull);
        faults.partial = 5;
    }
    let (code, message) = storage_code(wal.append(b"two"));
    assert_eq!(code, ErrorCode::ResourceExhausted);
    assert!(
        message.starts_with("disk full: cannot write the write-ahead log of index 'movies': "),
        "{message}"
    );
    // Space freed: the log goes on, with no trace of the failed record.
    file.faults.lock().unwrap().append = None;
    wal.append(b"three").unwrap();
    let bytes = file.bytes.lock().unwrap().clone();
    let (payloads, scan) = records(&bytes, true).unwrap();
    assert_eq!(payloads, [&b"one"[..], b"three"]);
    assert!(scan.torn.is_none());
}

#[test]
fn a_write_that_cannot_be_cut_off_poisons_the_log() {
    let file = MemoryFile::with_header();
    let wal = Wal::new("movies", Box::new(file.clone()), file.len());
    {
        let mut faults = file.faults.lock().unwrap();
        faults.append = Some(io::ErrorKind::ReadOnlyFilesystem);
        faults.partial = 3;
        faults.truncate = true;
    }
    let (code, message) = storage_code(wal.append(b"one"));
    assert_eq!(code, ErrorCode::Unavailable);
    assert!(
        message.starts_with("cannot write the write-ahead log of index 'movies': "),
        "{message}"
    );
    *file.faults.lock().unwrap() = Default::default();
    let (code, message) = storage_code(wal.append(b"two"));
    assert_eq!(code, ErrorCode::Unavailable);
    assert!(message.contains("refuses writes"), "{message}");
}

#[test]
fn a_failed_sync_poisons_the_log() {
    let file = MemoryFile::with_header();
    let wal = Wal::new("movies", Box::new(file.clone()), file.len());
    wal.append(b"one").unwrap();
    file.faults.lock().unwrap().sync = Some(io::ErrorKind::Other);
    let (code, _) = storage_code(wal.append(b"two"));
    assert_eq!(code, ErrorCode::Unavailable);
    // Even once the disk behaves again, the log stays closed.
    file.faults.lock().unwrap().sync = None;
    let (code, message) = storage_code(wal.append(b"three"));
    assert_eq!(code, ErrorCode::Unavailable);
    assert!(message.contains("until the server restarts"), "{message}");
    // A sync failing with a full disk says so.
    let file = MemoryFile::with_header();
    let wal = Wal::new("movies", Box::new(file.clone()), file.len());
    file.faults.lock().unwrap().sync = Some(io::ErrorKind::StorageFull);
    assert_eq!(
        storage_code(wal.append(b"one")).0,
        ErrorCode::ResourceExhausted
    );
}

#[test]
fn issue_14_a_rotation_that_failed_after_creating_the_next_file_does_not_jam_the_log() {
    let dir = tempfile::tempdir().unwrap();
    create_file(dir.path(), 1).unwrap();
    let wal = Wal::open("movies", dir.path(), 1, HEADER_LEN).unwrap();
    wal.append(b"one").unwrap();
    // What a rotation leaves when the directory sync or the open fails after the next
    // file was created: that file, holding just its header.
    create_file(dir.path(), 2).unwrap();
    assert_eq!(
        wal.rotate().unwrap(),
        2,
        "the leftover is taken as the next file"
    );
    wal.append(b"two").unwrap();
    assert_eq!(wal.rotate().unwrap(), 3);
    wal.append(b"three").unwrap();
    let mut replayed = Vec::new();
    replay(dir.path(), 1, |_, _, payload| {
        replayed.push(payload.to_vec());
        Ok(())
    })
    .unwrap();
    assert_eq!(replayed, [&b"one"[..], b"two", b"three"]);

    // A file of that number holding records is never taken over.
    let wal = Wal::open("movies", dir.path(), 1, HEADER_LEN).unwrap();
    let err = wal.rotate().unwrap_err();
    assert!(err.to_string().contains("wal-"), "{err}");
}

#[test]
fn oversized_records_are_refused_before_logging() {
    let file = MemoryFile::with_header();
    let wal = Wal::new("movies", Box::new(file.clone()), file.len());
    let huge = vec![0; limits::MAX_LOG_RECORD_BYTES + 1];
    let err = wal.append(&huge).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(file.len(), HEADER_LEN);
}

#[test]
fn records_are_numbered_in_log_order_and_failed_batches_take_no_number() {
    let file = MemoryFile::with_header();
    let wal = Wal::new("movies", Box::new(file.clone()), file.len());
    assert_eq!(wal.last_lsn(), 0);
    assert_eq!(wal.append(b"one").unwrap(), 1);
    assert_eq!(wal.append(b"two").unwrap(), 2);
    {
        let mut faults = file.faults.lock().unwrap();
        faults.append = Some(io::ErrorKind::StorageFull);
        faults.partial = 5;
    }
    storage_code(wal.append(b"lost"));
    assert_eq!(wal.last_lsn(), 2, "a failed batch takes no number");
    file.faults.lock().unwrap().append = None;
    // The next record is the third in the file, and numbered so.
    assert_eq!(wal.append(b"three").unwrap(), 3);
    assert_eq!(wal.last_lsn(), 3);
    let (payloads, scan) = records(&file.bytes.lock().unwrap(), true).unwrap();
    assert_eq!(payloads.len(), 3);
    assert_eq!(scan.records, 3);
}

#[test]
fn writers_of_one_batch_get_consecutive_numbers() {
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    let file = MemoryFile::with_header();
    // Slow syncs, so writers queue up behind the leader and share batches.
    file.faults.lock().unwrap().sync_delay = Duration::from_millis(2);
    let wal = Arc::new(Wal::new("movies", Box::new(file.clone()), file.len()).after_lsn(100));
    let handles: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let wal = Arc::clone(&wal);
            thread::spawn(move || {
                (0..EACH)
                    .map(|seq| {
                        let lsn = wal.append(format!("{writer}:{seq}").as_bytes()).unwrap();
                        (lsn, format!("{writer}:{seq}"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut numbered: Vec<(u64, String)> = handles
        .into_iter()
        .flat_map(|handle| handle.join().unwrap())
        .collect();
    numbered.sort();
    let total = (WRITERS * EACH) as u64;
    // Every record has its own number, from 101 on, and the number is its place in the file.
    let lsns: Vec<u64> = numbered.iter().map(|(lsn, _)| *lsn).collect();
    assert_eq!(lsns, (101..=100 + total).collect::<Vec<_>>());
    assert_eq!(wal.last_lsn(), 100 + total);
    let (payloads, _) = records(&file.bytes.lock().unwrap(), true).unwrap();
    let in_file: Vec<String> = payloads
        .iter()
        .map(|p| String::from_utf8(p.clone()).unwrap())
        .collect();
    let by_number: Vec<String> = numbered.into_iter().map(|(_, payload)| payload).collect();
    assert_eq!(in_file, by_number);
    let (appends, syncs) = wal.counts();
    assert_eq!(appends, total);
    assert!(syncs <= appends);
}

#[test]
fn replay_counts_the_records_of_every_file() {
    let dir = tempfile::tempdir().unwrap();
    create_file(dir.path(), 1).unwrap();
    let wal = Wal::open("movies", dir.path(), 1, HEADER_LEN).unwrap();
    wal.append(b"one").unwrap();
    wal.append(b"two").unwrap();
    wal.rotate().unwrap();
    assert_eq!(
        wal.append(b"three").unwrap(),
        3,
        "numbers go on across files"
    );
    drop(wal);
    let replayed = replay(dir.path(), 1, |_, _, _| Ok(())).unwrap();
    assert_eq!((replayed.number, replayed.records), (2, 3));
    let replayed = replay(dir.path(), 2, |_, _, _| Ok(())).unwrap();
    assert_eq!(replayed.records, 1);
    // A torn record at the end is not counted.
    let path = dir.path().join(file_name(2));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[7; 5]);
    std::fs::write(&path, bytes).unwrap();
    let replayed = replay(dir.path(), 1, |_, _, _| Ok(())).unwrap();
    assert_eq!(replayed.records, 3);
}
