//! The log's objects: one group-commit batch per object `wal/<seq>`, its
//! binary format, reading the log in order, and the one way a batch is ever
//! written (a conditional create, resolved by reading back when its outcome
//! is unclear).
//!
//! # Format
//!
//! ```text
//! magic        8 bytes  "LARCHOWL" (Larch object write-ahead log)
//! version      u32      1
//! epoch        u64      the writer's lease epoch
//! batch id     16 bytes random: tells this writer's object from anyone else's
//! seq          u64      the object's own sequence number (as in its key)
//! records      u32      how many records follow (0: a fence batch)
//! record       u32 length, then that many bytes; repeated
//! crc32        u32      of every byte before it
//! ```
//!
//! Integers are little-endian. Records are opaque here (the engine stores
//! its codec's log records in them).

use std::collections::VecDeque;
use std::time::Duration;

use object_store::{PutMode, PutPayload, path::Path as ObjectPath};

use super::{Bucket, Fetched, LogError, random, unavailable};
use crate::{
    Error,
    codec::{self, LogRecord},
};

const MAGIC: &[u8; 8] = b"LARCHOWL";
const VERSION: u32 = 1;
/// magic, version, epoch, batch id, seq, record count.
const HEADER: usize = 8 + 4 + 8 + 16 + 8 + 4;
const CRC: usize = 4;
/// The size of a fence batch (no records); every other batch is larger.
pub(crate) const FENCE_SIZE: u64 = (HEADER + CRC) as u64;

/// The random id of one batch object: a writer recognises its own object by
/// it when the answer to its create was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchId([u8; 16]);

impl BatchId {
    pub(crate) fn random() -> Result<Self, LogError> {
        random().map(BatchId)
    }
}

/// One object of the log: a group-commit batch of records, or a fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    /// Its place in the log; the log is dense (no number is skipped).
    pub(crate) seq: u64,
    /// The epoch of the writer that created it; never decreases along the log.
    pub(crate) epoch: u64,
    pub(crate) id: BatchId,
    /// The appended payloads, in the order they were acknowledged. Empty in
    /// a fence batch.
    pub(crate) records: Vec<Vec<u8>>,
}

impl Batch {
    /// Whether this is a fence: a new writer's first object, holding no records.
    pub(crate) fn is_fence(&self) -> bool {
        self.records.is_empty()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let size = HEADER + self.records.iter().map(|r| 4 + r.len()).sum::<usize>() + CRC;
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&len_u32(self.records.len()).to_le_bytes());
        for record in &self.records {
            out.extend_from_slice(&len_u32(record.len()).to_le_bytes());
            out.extend_from_slice(record);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes the object `object`, which must be batch `seq`.
    pub(crate) fn decode(object: &ObjectPath, seq: u64, bytes: &[u8]) -> Result<Self, LogError> {
        let corrupt =
            |offset: usize, reason: &str| LogError::corrupt(object, offset as u64, reason);
        if bytes.len() < HEADER + CRC {
            return Err(corrupt(0, "too short for a log batch"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - CRC);
        let mut reader = Reader { bytes: body, at: 0 };
        if reader.take(8) != Some(&MAGIC[..]) {
            return Err(corrupt(0, "not a larch log batch (bad magic)"));
        }
        let version = reader.u32().unwrap_or_default();
        if version != VERSION {
            return Err(corrupt(8, &format!("unknown log batch version {version}")));
        }
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(corrupt(body.len(), "checksum mismatch"));
        }
        let header = (|| {
            let epoch = reader.u64()?;
            let id = BatchId(reader.take(16)?.try_into().ok()?);
            Some((epoch, id, reader.u64()?, reader.u32()?))
        })();
        let Some((epoch, id, found, count)) = header else {
            return Err(corrupt(12, "truncated header"));
        };
        if found != seq {
            return Err(corrupt(
                28,
                &format!("holds batch {found} but its key names batch {seq}"),
            ));
        }
        let mut records = Vec::new();
        for _ in 0..count {
            let at = reader.at;
            let record = reader
                .u32()
                .and_then(|len| reader.take(len as usize))
                .ok_or_else(|| corrupt(at, "record runs past the end"))?;
            records.push(record.to_vec());
        }
        if reader.at != body.len() {
            return Err(corrupt(reader.at, "bytes after the last record"));
        }
        Ok(Batch {
            seq,
            epoch,
            id,
            records,
        })
    }
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("records and batches are bounded far below 4 GiB")
}

/// A cursor over a batch's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(len)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Reads a log in order from a sequence number on: a new writer's replay, a
/// follower's tail.
///
/// It stops at the first missing number (the end of the log for now; a
/// follower asks again later from the same place) and checks every object:
/// its checksum, that it is the batch its key names, and that epochs never
/// decrease (a lower epoch after a higher one is a stale or foreign object,
/// and reading stops with [`LogError::Corrupt`]).
///
/// It reads ahead: a log being replayed (a new writer, a follower opening or catching up after
/// a burst) is asked for in growing windows of batches whose GETs overlap — 1, 2, 4, … up to
/// [`MAX_AHEAD`] while every batch asked for exists — so replaying hundreds of batches from a
/// store 20 ms away takes a fraction of a second instead of seconds, which is most of a
/// takeover's time. At the end of the log the window falls back to one, so a follower tailing
/// an idle log costs one GET per look. Read-ahead is safe because a batch object never
/// changes once created: what is kept is exactly what the next reads would find, and anything
/// past the first missing number is dropped and read again later.
#[derive(Debug)]
pub(crate) struct LogReader {
    bucket: Bucket,
    next_seq: u64,
    last_epoch: u64,
    /// What the store answered for `next_seq`, `next_seq + 1`, … (read ahead), up to and
    /// including the first missing batch or failed read.
    ahead: VecDeque<Result<Option<Fetched>, object_store::Error>>,
    /// How many batches the next read asks for at once.
    window: usize,
    /// How many times it asked the store (each time for a window of batches at once).
    rounds: usize,
}

/// The most batches a [`LogReader`] asks for at once.
pub(crate) const MAX_AHEAD: usize = 16;

impl LogReader {
    /// A reader of `bucket`'s log starting at batch `seq`.
    pub(crate) fn new(bucket: Bucket, seq: u64) -> Self {
        LogReader {
            bucket,
            next_seq: seq,
            last_epoch: 0,
            ahead: VecDeque::new(),
            window: 1,
            rounds: 0,
        }
    }

    /// Also refuses batches older than `epoch` (e.g. the epoch of the
    /// manifest replay starts from).
    pub(crate) fn with_min_epoch(mut self, epoch: u64) -> Self {
        self.last_epoch = epoch;
        self
    }

    /// The sequence number of the next batch to read (after a complete
    /// read: the first one that does not exist yet).
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The epoch of the last batch read (or the minimum given).
    pub(crate) fn last_epoch(&self) -> u64 {
        self.last_epoch
    }

    /// The next batch; `None` if it does not exist (yet). A failed read can
    /// be retried: the reader stays where it was.
    pub(crate) fn next_batch(&mut self) -> Result<Option<Batch>, LogError> {
        let seq = self.next_seq;
        let path = self.bucket.wal(seq);
        if self.ahead.is_empty() {
            self.read_ahead();
        }
        let fetched = match self.ahead.pop_front() {
            Some(Ok(Some(fetched))) => fetched,
            // The end of the log for now (nothing was kept after it).
            Some(Ok(None)) | None => return Ok(None),
            Some(Err(err)) => {
                self.ahead.clear();
                return Err(unavailable(
                    format_args!("cannot read log batch {path}"),
                    &err,
                ));
            }
        };
        // Whatever goes wrong below, the reader stays at `seq` and reads afresh from there.
        let checked = self.check(&path, seq, &fetched.bytes);
        if checked.is_err() {
            self.ahead.clear();
        }
        let batch = checked?;
        self.last_epoch = batch.epoch;
        self.next_seq = seq + 1;
        Ok(Some(batch))
    }

    /// How many times this reader asked the store for batches.
    #[cfg(test)]
    pub(crate) fn rounds(&self) -> usize {
        self.rounds
    }

    /// Asks for the next `window` batches at once and keeps the answers up to the first
    /// missing batch or failed read; the next window doubles if every batch was there, and is
    /// one otherwise.
    fn read_ahead(&mut self) {
        let paths: Vec<ObjectPath> = (self.next_seq..)
            .take(self.window)
            .map(|seq| self.bucket.wal(seq))
            .collect();
        let mut complete = true;
        self.rounds += 1;
        for answer in self.bucket.get_many(&paths) {
            let last = !matches!(answer, Ok(Some(_)));
            self.ahead.push_back(answer);
            if last {
                complete = false;
                break;
            }
        }
        self.window = if complete {
            (self.window * 2).min(MAX_AHEAD)
        } else {
            1
        };
    }

    /// Batch `seq` decoded from `bytes` (the object at `path`), if it may follow what was read.
    fn check(&self, path: &ObjectPath, seq: u64, bytes: &[u8]) -> Result<Batch, LogError> {
        let batch = Batch::decode(path, seq, bytes)?;
        if batch.epoch < self.last_epoch {
            return Err(LogError::corrupt(
                path,
                12,
                format!(
                    "written by epoch {} after epoch {}: a stale or foreign object",
                    batch.epoch, self.last_epoch
                ),
            ));
        }
        Ok(batch)
    }

    /// Every batch from here to the current end of the log.
    pub(crate) fn read_to_end(&mut self) -> Result<Vec<Batch>, LogError> {
        let mut batches = Vec::new();
        while let Some(batch) = self.next_batch()? {
            batches.push(batch);
        }
        Ok(batches)
    }
}

impl Batch {
    /// Decodes each change record of this batch (read from `bucket`) for an index of
    /// `dimension` and hands it to `apply`, in order; returns the bytes of records applied. A
    /// record that does not decode, or that `apply` finds inconsistent with what came before
    /// (an [`Error::Internal`] reason), is corruption of this batch's object.
    pub(crate) fn apply_records(
        &self,
        bucket: &Bucket,
        dimension: usize,
        mut apply: impl FnMut(LogRecord) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        let location = bucket.wal_location(self.seq);
        let mut bytes = 0u64;
        for (n, payload) in self.records.iter().enumerate() {
            let at = |reason: String| Error::corrupt(&location, 0, format!("record {n}: {reason}"));
            let record = codec::decode(payload, dimension)
                .map_err(|reason| at(format!("undecodable record: {reason}")))?;
            apply(record).map_err(|err| match err {
                Error::Internal(reason) => at(reason),
                other => other,
            })?;
            bytes += payload.len() as u64;
        }
        Ok(bytes)
    }
}

/// What a conditional create of a batch found.
#[derive(Debug)]
pub(crate) enum Created {
    /// The object is this batch: created now, or by an earlier attempt whose
    /// answer was lost.
    Ours,
    /// Someone else's batch holds this sequence number.
    Theirs(Batch),
}

/// How hard [`create_batch`] tries before the outcome counts as unknown.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    /// Attempts in all (at least 1).
    pub(crate) attempts: u32,
    /// Pause before attempt `n + 1`: `backoff * n`.
    pub(crate) backoff: Duration,
}

/// Creates `batch` as `wal/<seq>` with `If-None-Match: *`: the only way a log
/// object is ever written.
///
/// Any failure of the create (an error, a timeout, `AlreadyExists` from a
/// retried request whose first attempt landed) is resolved by reading the
/// object back: the same batch id means the create succeeded; another batch
/// means someone else owns the number ([`Created::Theirs`]); no object means
/// the create did not happen, and it is tried again with the same number and
/// the same id. The number is never skipped. When every attempt (create or
/// read-back) failed, the outcome is unknown: [`LogError::Unavailable`].
pub(crate) fn create_batch(
    bucket: &Bucket,
    batch: &Batch,
    retry: Retry,
) -> Result<Created, LogError> {
    let path = bucket.wal(batch.seq);
    let payload = PutPayload::from(batch.encode());
    let mut last_error = String::new();
    for attempt in 0..retry.attempts.max(1) {
        if attempt > 0 {
            std::thread::sleep(retry.backoff * attempt);
        }
        let put = bucket.put(&path, payload.clone(), PutMode::Create);
        let Err(err) = put else {
            return Ok(Created::Ours);
        };
        last_error = err.to_string();
        tracing::debug!(object = %path, attempt, error = %err, "log batch create failed; reading it back");
        match bucket.get(&path) {
            Ok(Some(found)) => {
                let found = Batch::decode(&path, batch.seq, &found.bytes)?;
                return Ok(if found.id == batch.id {
                    Created::Ours
                } else {
                    Created::Theirs(found)
                });
            }
            // Not there: the create did not happen; try it again.
            Ok(None) => {}
            Err(err) => last_error = format!("{last_error}; reading it back: {err}"),
        }
    }
    Err(LogError::Unavailable(format!(
        "cannot create log batch {path}: outcome unknown after {} attempts: {last_error}",
        retry.attempts.max(1)
    )))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;

    use super::*;
    use crate::objlog::faulty::{Failure, Fault, FaultyStore, Op};

    /// The sequence numbers of every batch `reader` reads to the end of the log.
    fn read_seqs(reader: &mut LogReader) -> Vec<u64> {
        reader
            .read_to_end()
            .unwrap()
            .iter()
            .map(|b| b.seq)
            .collect()
    }

    fn batch(seq: u64, epoch: u64, records: &[&[u8]]) -> Batch {
        Batch {
            seq,
            epoch,
            id: BatchId::random().unwrap(),
            records: records.iter().map(|r| r.to_vec()).collect(),
        }
    }

    const ONCE: Retry = Retry {
        attempts: 1,
        backoff: Duration::ZERO,
    };
    const THRICE: Retry = Retry {
        attempts: 3,
        backoff: Duration::ZERO,
    };

    #[test]
    fn a_batch_round_trips_and_damage_is_found() {
        let path = ObjectPath::from("i/wal/00000000000000000007");
        let original = batch(7, 3, &[b"one", b"", b"three"]);
        let bytes = original.encode();
        assert_eq!(Batch::decode(&path, 7, &bytes).unwrap(), original);
        let fence = batch(7, 3, &[]);
        assert!(Batch::decode(&path, 7, &fence.encode()).unwrap().is_fence());
        assert_eq!(fence.encode().len() as u64, FENCE_SIZE);
        assert!(batch(7, 3, &[b""]).encode().len() as u64 > FENCE_SIZE);

        // Under the wrong key.
        let err = Batch::decode(&path, 8, &bytes).unwrap_err();
        assert!(err.to_string().contains("its key names batch 8"), "{err}");
        // Every flipped byte and every truncation is refused.
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(
                matches!(
                    Batch::decode(&path, 7, &damaged),
                    Err(LogError::Corrupt { .. })
                ),
                "flipped byte {at}"
            );
            assert!(
                Batch::decode(&path, 7, &bytes[..at]).is_err(),
                "cut at {at}"
            );
        }
    }

    #[test]
    fn the_reader_stops_at_the_first_gap_and_resumes_there() {
        let bucket = Bucket::new(Arc::new(InMemory::new()), "idx");
        for seq in [3, 4, 6] {
            assert!(matches!(
                create_batch(&bucket, &batch(seq, 1, &[b"x"]), ONCE).unwrap(),
                Created::Ours
            ));
        }
        let mut reader = LogReader::new(bucket.clone(), 3);
        let seqs = read_seqs(&mut reader);
        assert_eq!(seqs, [3, 4]);
        assert_eq!(reader.next_seq(), 5);
        create_batch(&bucket, &batch(5, 1, &[b"y"]), ONCE).unwrap();
        let seqs = read_seqs(&mut reader);
        assert_eq!(seqs, [5, 6]);
        assert_eq!(reader.next_seq(), 7);
        assert_eq!(reader.last_epoch(), 1);
    }

    #[test]
    fn a_long_log_is_read_ahead_and_an_idle_tail_costs_one_get_a_look() {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let bucket = Bucket::new(faulty.clone(), "idx");
        for seq in 0..40 {
            create_batch(&bucket, &batch(seq, 1, &[b"x"]), ONCE).unwrap();
        }
        let before = faulty.counts().gets;
        let mut reader = LogReader::new(bucket.clone(), 0);
        let seqs = read_seqs(&mut reader);
        assert_eq!(seqs, (0..40).collect::<Vec<_>>());
        // Windows 1, 2, 4, 8, 16 (seqs 0..31), then 16 more ending past the end: each batch
        // read once, and at most a window's worth of misses.
        let gets = faulty.counts().gets - before;
        assert!((41..=40 + MAX_AHEAD).contains(&gets), "{gets} GETs");
        assert_eq!(reader.rounds(), 6, "6 round trips to the store, not 41");
        for _ in 0..5 {
            let before = faulty.counts().gets;
            assert!(reader.next_batch().unwrap().is_none());
            assert_eq!(
                faulty.counts().gets - before,
                1,
                "one GET per look at the end"
            );
        }
        // Batches that appear later are read from where the reader stopped.
        for seq in 40..43 {
            create_batch(&bucket, &batch(seq, 1, &[b"y"]), ONCE).unwrap();
        }
        let seqs = read_seqs(&mut reader);
        assert_eq!(seqs, [40, 41, 42]);
    }

    #[test]
    fn a_failed_read_ahead_stops_at_the_failure_and_is_read_again() {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let bucket = Bucket::new(faulty.clone(), "idx");
        for seq in 0..10 {
            create_batch(&bucket, &batch(seq, 1, &[b"x"]), ONCE).unwrap();
        }
        faulty.inject(
            Op::Get,
            "wal/00000000000000000005",
            Fault::Fail(Failure::Timeout),
            1,
        );
        let mut reader = LogReader::new(bucket, 0);
        let mut read = Vec::new();
        let err = loop {
            match reader.next_batch() {
                Ok(Some(batch)) => read.push(batch.seq),
                Ok(None) => panic!("the failure was skipped"),
                Err(err) => break err,
            }
        };
        assert_eq!(read, [0, 1, 2, 3, 4]);
        assert!(err.to_string().contains("00000000000000000005"), "{err}");
        assert_eq!(reader.next_seq(), 5);
        let rest = read_seqs(&mut reader);
        assert_eq!(rest, (5..10).collect::<Vec<_>>());
    }

    #[test]
    fn epochs_never_decrease_on_replay() {
        let bucket = Bucket::new(Arc::new(InMemory::new()), "idx");
        for (seq, epoch) in [(0, 1), (1, 1), (2, 3), (3, 3), (4, 2), (5, 3)] {
            create_batch(&bucket, &batch(seq, epoch, &[b"x"]), ONCE).unwrap();
        }
        let mut reader = LogReader::new(bucket.clone(), 0);
        let err = reader.read_to_end().unwrap_err();
        assert!(err.to_string().contains("epoch 2 after epoch 3"), "{err}");
        assert_eq!(
            reader.next_seq(),
            4,
            "the reader stops before the stale batch"
        );
        // A minimum epoch refuses older batches from the start.
        let err = LogReader::new(bucket, 0)
            .with_min_epoch(2)
            .next_batch()
            .unwrap_err();
        assert!(err.to_string().contains("epoch 1 after epoch 2"), "{err}");
    }

    #[test]
    fn an_ambiguous_create_is_resolved_by_reading_back() {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let bucket = Bucket::new(faulty.clone(), "idx");
        for failure in [Failure::Timeout, Failure::AlreadyExists] {
            let seq = faulty.counts().puts as u64;
            faulty.inject(Op::Put, "wal/", Fault::ApplyThenFail(failure), 1);
            let ours = batch(seq, 1, &[b"a"]);
            assert!(matches!(
                create_batch(&bucket, &ours, ONCE).unwrap(),
                Created::Ours
            ));
        }
        // Exactly once: one put each, no retry into the next number.
        assert_eq!(faulty.counts().puts, 2);
        let all = LogReader::new(bucket, 0).read_to_end().unwrap();
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn a_create_that_did_not_happen_is_retried_with_the_same_number() {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let bucket = Bucket::new(faulty.clone(), "idx");
        faulty.inject(Op::Put, "wal/", Fault::Fail(Failure::Timeout), 2);
        let ours = batch(0, 1, &[b"a"]);
        assert!(matches!(
            create_batch(&bucket, &ours, THRICE).unwrap(),
            Created::Ours
        ));
        assert_eq!(faulty.counts().puts, 3);
        let all = LogReader::new(bucket.clone(), 0).read_to_end().unwrap();
        assert_eq!(all, [ours]);

        // When neither the create nor the read-back gets through, the outcome is unknown.
        faulty.inject(Op::Put, "wal/", Fault::ApplyThenFail(Failure::Timeout), 1);
        faulty.inject(Op::Put, "wal/", Fault::Fail(Failure::Timeout), 2);
        faulty.inject(Op::Get, "wal/", Fault::Fail(Failure::Timeout), 3);
        let err = create_batch(&bucket, &batch(1, 1, &[b"b"]), THRICE).unwrap_err();
        assert!(
            matches!(&err, LogError::Unavailable(m) if m.contains("outcome unknown")),
            "{err}"
        );
    }

    #[test]
    fn someone_elses_batch_is_reported_not_overwritten() {
        let bucket = Bucket::new(Arc::new(InMemory::new()), "idx");
        let theirs = batch(0, 2, &[b"theirs"]);
        create_batch(&bucket, &theirs, ONCE).unwrap();
        match create_batch(&bucket, &batch(0, 1, &[b"ours"]), ONCE).unwrap() {
            Created::Theirs(found) => assert_eq!(found, theirs),
            Created::Ours => panic!("a taken number was reported as ours"),
        }
    }
}
