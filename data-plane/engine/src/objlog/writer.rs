//! The writer of a log: it fences the log when it opens, group-commits
//! appends into batch objects with at most one create in flight, resolves
//! ambiguous creates, steps down for good when fenced, and truncates.
//!
//! Appenders call [`Writer::append`] from any number of threads; each call
//! blocks until the batch holding its record is stored (or has failed). While
//! one batch's create is in flight, new records form the next batch (up to
//! [`LogConfig::max_batch_bytes`]); one of the waiting appenders stores it
//! once the create before it is done. No lock is held during a create: the
//! writer's mutex only guards the queue of forming batches.

use std::{
    collections::VecDeque,
    fmt,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use super::{
    Bucket, LogError,
    log::{Batch, BatchId, Created, FENCE_SIZE, LogReader, Retry, create_batch},
    unavailable,
};

/// What a writer writes under: its epoch, and whether it may acknowledge.
/// [`Lease`](super::lease::Lease) is the real one.
pub(crate) trait Authority: Send + Sync + fmt::Debug {
    /// The epoch written into every batch; higher for every new writer.
    fn epoch(&self) -> u64;

    /// Whether the writer may acknowledge now, by its own clock alone (cheap;
    /// called before and after every batch create).
    fn check(&self) -> Result<(), LogError>;

    /// Proves with the store that the writer still holds its authority (an
    /// `If-Match` renewal of the lease): called before anything is deleted.
    fn confirm(&self) -> Result<(), LogError>;
}

/// How a [`Writer`] batches and retries.
#[derive(Debug, Clone)]
pub(crate) struct LogConfig {
    /// A batch takes records while their total stays within this (a single
    /// larger record makes a batch alone).
    pub(crate) max_batch_bytes: usize,
    /// Attempts at a batch's create (each resolved by reading back) before
    /// its outcome counts as unknown and the writer stops.
    pub(crate) attempts: u32,
    /// Pause before attempt `n + 1`: `backoff * n`.
    pub(crate) backoff: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_batch_bytes: 8 << 20,
            attempts: 5,
            backoff: Duration::from_millis(200),
        }
    }
}

impl LogConfig {
    fn retry(&self) -> Retry {
        Retry {
            attempts: self.attempts,
            backoff: self.backoff,
        }
    }
}

/// The one writer of a log (see the module docs of `objlog` for why only
/// one can succeed).
pub(crate) struct Writer {
    bucket: Bucket,
    authority: Arc<dyn Authority>,
    config: LogConfig,
    /// Where this writer's fence batch is: its first object.
    fence_seq: u64,
    state: Mutex<State>,
    /// Signalled when a create finishes.
    changed: Condvar,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("bucket", &self.bucket)
            .field("epoch", &self.authority.epoch())
            .field("fence_seq", &self.fence_seq)
            .finish_non_exhaustive()
    }
}

struct State {
    /// Batches waiting for their create, in sequence order; new records join
    /// the last one.
    forming: VecDeque<Forming>,
    /// The sequence number the next new batch gets.
    next_form: u64,
    /// Every batch below this number is stored: it is the next to create.
    stored_below: u64,
    /// Whether a create is in flight (at most one, so numbers stay dense).
    in_flight: bool,
    /// Once set, the batch at this number and every later one fail with
    /// this error: fenced, not the writer, or an outcome left unknown. The
    /// writer never writes again.
    failure: Option<(u64, LogError)>,
}

struct Forming {
    seq: u64,
    records: Vec<Vec<u8>>,
    bytes: usize,
}

impl Writer {
    /// Becomes the writer of `bucket`'s log under `authority` (a freshly
    /// acquired lease): replays the log from `start` (the manifest's first
    /// batch) to its end through `apply`, then creates the fence batch, an
    /// empty batch with this writer's epoch, right after the last one.
    ///
    /// If a batch of an older writer takes the fence's number first, it is
    /// replayed too and the fence goes after it, so nothing that older
    /// writer acknowledged is missed; its next create then meets the fence.
    /// A batch of a newer epoch in the log means a newer writer exists:
    /// [`LogError::Fenced`]. Batches of this very epoch are replayed: they
    /// are an earlier writer under the same lease, which a process opens
    /// again after its writer stopped (an outcome left unknown).
    pub(crate) fn open<E: From<LogError>>(
        bucket: Bucket,
        authority: Arc<dyn Authority>,
        start: u64,
        min_epoch: u64,
        config: LogConfig,
        mut apply: impl FnMut(&Batch) -> Result<(), E>,
    ) -> Result<Writer, E> {
        let epoch = authority.epoch();
        let mut reader = LogReader::new(bucket.clone(), start).with_min_epoch(min_epoch);
        let fence_seq = loop {
            while let Some(batch) = reader.next_batch()? {
                if batch.epoch > epoch {
                    return Err(LogError::Fenced {
                        seq: batch.seq,
                        epoch,
                        by_epoch: batch.epoch,
                    }
                    .into());
                }
                apply(&batch)?;
            }
            authority.check()?;
            let fence = Batch {
                seq: reader.next_seq(),
                epoch,
                id: BatchId::random()?,
                records: Vec::new(),
            };
            match create_batch(&bucket, &fence, config.retry())? {
                Created::Ours => break fence.seq,
                Created::Theirs(found) => tracing::info!(
                    bucket = ?bucket,
                    seq = found.seq,
                    epoch = found.epoch,
                    "an older writer's batch took the fence's place; replaying it"
                ),
            }
        };
        tracing::info!(bucket = ?bucket, epoch, fence_seq, "fenced the log; now its writer");
        Ok(Writer {
            bucket,
            authority,
            config,
            fence_seq,
            state: Mutex::new(State {
                forming: VecDeque::new(),
                next_form: fence_seq + 1,
                stored_below: fence_seq + 1,
                in_flight: false,
                failure: None,
            }),
            changed: Condvar::new(),
        })
    }

    /// This writer's epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.authority.epoch()
    }

    /// The sequence number of this writer's fence batch.
    pub(crate) fn fence_seq(&self) -> u64 {
        self.fence_seq
    }

    /// The sequence number the next batch will be stored at: every one below
    /// it is in the log.
    pub(crate) fn next_seq(&self) -> Result<u64, LogError> {
        Ok(self.lock()?.stored_below)
    }

    /// The sequence number of the last batch stored: this writer's fence, then its
    /// newest batch (reported once it is stored, before its appenders return).
    pub(crate) fn last_stored(&self) -> u64 {
        // A panic while storing leaves `stored_below` as it was: still true.
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.stored_below - 1
    }

    /// Why this writer stopped writing, if it did.
    pub(crate) fn failure(&self) -> Option<LogError> {
        self.lock()
            .ok()?
            .failure
            .as_ref()
            .map(|(_, err)| err.clone())
    }

    /// Appends `record` and returns the sequence number of the batch that
    /// stored it, once that batch is in the store (the acknowledgement
    /// point). Blocks meanwhile; holds no lock while a create is in flight.
    ///
    /// An error means the record is not acknowledged: it was not stored, or
    /// it was stored but this writer may no longer acknowledge (its lease
    /// lapsed during the create), or the outcome is unknown. After any error
    /// the writer refuses every later append with the same error: the
    /// caller stops writing and (if it still should write) opens a new
    /// writer, whose replay shows what is in the log.
    pub(crate) fn append(&self, record: Vec<u8>) -> Result<u64, LogError> {
        let len = record.len();
        let mut state = self.lock()?;
        if let Some((_, err)) = &state.failure {
            return Err(err.clone());
        }
        let max = self.config.max_batch_bytes;
        let seq = match state.forming.back_mut() {
            Some(batch) if batch.bytes.saturating_add(len) <= max => {
                batch.bytes += len;
                batch.records.push(record);
                batch.seq
            }
            _ => {
                let seq = state.next_form;
                state.next_form += 1;
                state.forming.push_back(Forming {
                    seq,
                    records: vec![record],
                    bytes: len,
                });
                seq
            }
        };
        loop {
            if state.stored_below > seq {
                return Ok(seq);
            }
            if let Some((from, err)) = &state.failure
                && seq >= *from
            {
                return Err(err.clone());
            }
            if !state.in_flight
                && let Some(batch) = state.forming.pop_front()
            {
                // This thread stores the oldest forming batch (its own or an
                // earlier one whose appenders have not woken up yet).
                state.in_flight = true;
                drop(state);
                let flight = InFlight {
                    writer: self,
                    seq: batch.seq,
                };
                let stored = batch.seq;
                let result = self.store(batch);
                state = self.lock()?;
                std::mem::forget(flight);
                state.in_flight = false;
                match result {
                    Ok(()) => state.stored_below = stored + 1,
                    Err(err) => {
                        tracing::warn!(bucket = ?self.bucket, seq = stored, error = %err, "log writer stopped");
                        state.forming.clear();
                        state.failure = Some((stored, err));
                    }
                }
                self.changed.notify_all();
                continue;
            }
            state = self.changed.wait(state).map_err(|_| poisoned())?;
        }
    }

    /// Creates one batch, acknowledging it only while the authority holds.
    fn store(&self, forming: Forming) -> Result<(), LogError> {
        // A batch this writer could not acknowledge is never started.
        self.authority.check()?;
        let epoch = self.authority.epoch();
        let batch = Batch {
            seq: forming.seq,
            epoch,
            id: BatchId::random()?,
            records: forming.records,
        };
        match create_batch(&self.bucket, &batch, self.config.retry())? {
            Created::Ours => {}
            Created::Theirs(found) => {
                return Err(LogError::Fenced {
                    seq: batch.seq,
                    epoch,
                    by_epoch: found.epoch,
                });
            }
        }
        // Stored, but acknowledged only if the lease did not lapse meanwhile.
        self.authority.check()
    }

    /// Deletes the log's batches below `seq` (at most up to what is stored),
    /// oldest first, so the log stays gap-free from `seq` on while it runs;
    /// returns how many were deleted. Only a writer that is not fenced and
    /// has just confirmed its lease with the store deletes anything. The
    /// caller passes the start of a durable manifest, after a grace period
    /// for followers still reading below it.
    ///
    /// Fence batches are never deleted (they are tiny, one per change of
    /// writer): a stale writer, however long it was paused, must always
    /// meet the fence of its successor. Were that fence deleted, its next
    /// create would succeed below the manifest's start and be acknowledged
    /// but never replayed. Below a deleted fence-free number, a stale
    /// writer can only re-create the very batch that was already replayed.
    pub(crate) fn delete_before(&self, seq: u64) -> Result<usize, LogError> {
        let seq = {
            let state = self.lock()?;
            if let Some((_, err)) = &state.failure {
                return Err(err.clone());
            }
            seq.min(state.stored_below)
        };
        self.authority.confirm()?;
        let what = || format!("cannot truncate the log in {:?}", self.bucket);
        let present = self
            .bucket
            .list_wal()
            .map_err(|err| unavailable(what(), &err))?;
        let mut deleted = 0;
        for (old, size) in present.into_iter().take_while(|(old, _)| *old < seq) {
            if size == FENCE_SIZE {
                continue;
            }
            self.bucket
                .delete(&self.bucket.wal(old))
                .map_err(|err| unavailable(what(), &err))?;
            deleted += 1;
        }
        Ok(deleted)
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, LogError> {
        self.state.lock().map_err(|_| poisoned())
    }

    /// How many records are waiting in forming batches (tests watch batches form).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock()
            .map(|state| state.forming.iter().map(|b| b.records.len()).sum())
            .unwrap_or_default()
    }
}

fn poisoned() -> LogError {
    LogError::Unavailable("the log writer is unusable after an earlier panic".to_owned())
}

/// Marks the writer failed if the thread storing a batch panics, so the
/// other appenders wake up instead of waiting forever. Forgotten on the
/// normal path.
struct InFlight<'a> {
    writer: &'a Writer,
    seq: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = self
            .writer
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.in_flight = false;
        state.forming.clear();
        state.failure = Some((self.seq, poisoned()));
        self.writer.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    };

    use object_store::{ObjectStore, memory::InMemory};
    use proptest::prelude::*;

    use super::*;
    use crate::objlog::faulty::{Failure, Fault, FaultyStore, Gate, Op};

    /// An authority that holds until revoked.
    #[derive(Debug)]
    struct Granted {
        epoch: u64,
        revoked: AtomicBool,
    }

    impl Granted {
        fn new(epoch: u64) -> Arc<Self> {
            Arc::new(Granted {
                epoch,
                revoked: AtomicBool::new(false),
            })
        }
    }

    impl Authority for Granted {
        fn epoch(&self) -> u64 {
            self.epoch
        }
        fn check(&self) -> Result<(), LogError> {
            if self.revoked.load(Ordering::SeqCst) {
                return Err(LogError::NotWriter {
                    reason: "revoked".into(),
                });
            }
            Ok(())
        }
        fn confirm(&self) -> Result<(), LogError> {
            self.check()
        }
    }

    fn quick() -> LogConfig {
        LogConfig {
            max_batch_bytes: 1 << 20,
            attempts: 3,
            backoff: Duration::ZERO,
        }
    }

    fn open(store: Arc<dyn ObjectStore>, authority: Arc<dyn Authority>) -> Writer {
        open_with(store, authority, quick())
    }

    fn open_with(
        store: Arc<dyn ObjectStore>,
        authority: Arc<dyn Authority>,
        config: LogConfig,
    ) -> Writer {
        Writer::open(Bucket::new(store, "idx"), authority, 0, 0, config, |_| {
            Ok::<_, LogError>(())
        })
        .unwrap()
    }

    /// Every batch of the log from 0, checked: dense (the reader stops at a
    /// gap, so the count must match the objects present), epochs never
    /// decreasing (the reader checks).
    fn whole_log(store: Arc<dyn ObjectStore>) -> Vec<Batch> {
        let bucket = Bucket::new(store, "idx");
        let batches = LogReader::new(bucket.clone(), 0).read_to_end().unwrap();
        let present: Vec<u64> = bucket
            .list_wal()
            .unwrap()
            .iter()
            .map(|(seq, _)| *seq)
            .collect();
        let read: Vec<u64> = batches.iter().map(|b| b.seq).collect();
        assert_eq!(read, present, "the log has a gap");
        batches
    }

    /// Each record of the log and the batch holding it; a record twice fails.
    fn records(batches: &[Batch]) -> HashMap<Vec<u8>, u64> {
        let mut found = HashMap::new();
        for batch in batches {
            for record in &batch.records {
                let again = found.insert(record.clone(), batch.seq);
                assert!(again.is_none(), "record {record:?} is in the log twice");
            }
        }
        found
    }

    #[test]
    fn concurrent_appends_are_stored_exactly_once_in_dense_batches() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let writer = open(Arc::clone(&store), Granted::new(1));
        assert_eq!(writer.fence_seq(), 0);
        let acked = Mutex::new(HashMap::new());
        std::thread::scope(|scope| {
            for thread in 0..6 {
                let (writer, acked) = (&writer, &acked);
                scope.spawn(move || {
                    for n in 0..40 {
                        let record = format!("t{thread}-{n}").into_bytes();
                        let seq = writer.append(record.clone()).unwrap();
                        acked.lock().unwrap().insert(record, seq);
                    }
                });
            }
        });
        let log = whole_log(store);
        assert!(log[0].is_fence() && log[0].epoch == 1);
        assert_eq!(records(&log), acked.into_inner().unwrap());
        assert_eq!(writer.next_seq().unwrap(), log.len() as u64);
    }

    #[test]
    fn a_follower_tailing_the_log_sees_every_batch_in_order() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let writer = open(Arc::clone(&store), Granted::new(1));
        let total = 60;
        let tailed = std::thread::scope(|scope| {
            let follower = scope.spawn(|| {
                let mut reader = LogReader::new(Bucket::new(Arc::clone(&store), "idx"), 0);
                let (mut batches, mut records) = (Vec::new(), 0);
                while records < total {
                    match reader.next_batch().unwrap() {
                        Some(batch) => {
                            records += batch.records.len();
                            batches.push(batch);
                        }
                        // At the tail for now: ask again from the same place.
                        None => std::thread::yield_now(),
                    }
                }
                batches
            });
            for thread in 0..3 {
                let writer = &writer;
                scope.spawn(move || {
                    for n in 0..total / 3 {
                        writer
                            .append(format!("t{thread}-{n}").into_bytes())
                            .unwrap();
                    }
                });
            }
            follower.join().unwrap()
        });
        assert_eq!(tailed, whole_log(store));
    }

    #[test]
    fn appends_during_a_create_form_the_next_batch_within_its_size() {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let config = LogConfig {
            max_batch_bytes: 8,
            ..quick()
        };
        let writer = open_with(faulty.clone(), Granted::new(1), config);
        let gate = Gate::new();
        faulty.inject(Op::Put, "wal/", Fault::Hold(Arc::clone(&gate)), 1);
        std::thread::scope(|scope| {
            let first = scope.spawn(|| writer.append(b"first".to_vec()));
            gate.wait_arrived(1);
            let mut rest = Vec::new();
            for n in 0..5 {
                let writer = &writer;
                rest.push(scope.spawn(move || writer.append(format!("rec{n}").into_bytes())));
            }
            // Every later record waits in a forming batch while the first create is held.
            while writer.waiting() < 5 {
                std::thread::yield_now();
            }
            assert_eq!(
                faulty.counts().puts,
                2,
                "one create in flight (after the fence)"
            );
            gate.open();
            assert_eq!(first.join().unwrap().unwrap(), 1);
            for handle in rest {
                handle.join().unwrap().unwrap();
            }
        });
        let log = whole_log(faulty);
        let sizes: Vec<usize> = log.iter().map(|b| b.records.len()).collect();
        // The fence, the held batch, then five 4-byte records two to a batch of 8 bytes.
        assert_eq!(sizes, [0, 1, 2, 2, 1]);
    }

    #[test]
    fn ambiguous_creates_are_acknowledged_exactly_once() {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let writer = open(faulty.clone(), Granted::new(1));
        for failure in [Failure::Timeout, Failure::AlreadyExists, Failure::Timeout] {
            faulty.inject(Op::Put, "wal/", Fault::ApplyThenFail(failure), 1);
        }
        // And a create that did not happen; and the first read-back fails too.
        faulty.inject(Op::Put, "wal/", Fault::Fail(Failure::Timeout), 1);
        faulty.inject(Op::Get, "wal/", Fault::Fail(Failure::Timeout), 1);
        let mut acked = HashMap::new();
        for n in 0..6 {
            let record = format!("r{n}").into_bytes();
            acked.insert(record.clone(), writer.append(record).unwrap());
        }
        let log = whole_log(faulty.clone());
        assert_eq!(records(&log), acked);
        assert_eq!(
            log.len(),
            7,
            "the fence and one batch per append, no number skipped"
        );
        // One put per batch, plus a retry after the failed read-back and one
        // after the create that did not happen.
        assert_eq!(faulty.counts().puts, 7 + 2);
    }

    #[test]
    fn racing_writers_lose_no_acknowledged_record_and_the_old_one_stops_at_the_fence() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let old = open(Arc::clone(&store), Granted::new(1));
        let acked = Mutex::new(HashMap::new());
        let old_acked = AtomicUsize::new(0);
        let new_fence = Mutex::new(None);
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let (old, acked, old_acked) = (&old, &acked, &old_acked);
                scope.spawn(move || {
                    for n in 0.. {
                        let record = format!("old{thread}-{n}").into_bytes();
                        match old.append(record.clone()) {
                            Ok(seq) => {
                                acked.lock().unwrap().insert(record, (1, seq));
                                old_acked.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(err) => {
                                assert!(err.is_not_writer(), "{err}");
                                assert!(
                                    matches!(
                                        err,
                                        LogError::Fenced {
                                            epoch: 1,
                                            by_epoch: 2,
                                            ..
                                        }
                                    ),
                                    "{err}"
                                );
                                // Every later append fails too.
                                assert_eq!(old.append(b"late".to_vec()), Err(err));
                                return;
                            }
                        }
                    }
                });
            }
            // The new writer opens while the old one is busy.
            while old_acked.load(Ordering::SeqCst) < 20 {
                std::thread::yield_now();
            }
            let new = open(Arc::clone(&store), Granted::new(2));
            assert_eq!((old.epoch(), new.epoch()), (1, 2));
            *new_fence.lock().unwrap() = Some(new.fence_seq());
            for n in 0..30 {
                let record = format!("new-{n}").into_bytes();
                let seq = new.append(record.clone()).unwrap();
                acked.lock().unwrap().insert(record, (2, seq));
            }
        });
        let fence = new_fence.into_inner().unwrap().unwrap();
        let log = whole_log(store);
        assert!(log[fence as usize].is_fence() && log[fence as usize].epoch == 2);
        let acked = acked.into_inner().unwrap();
        for (record, (epoch, seq)) in &acked {
            assert_eq!(
                *epoch == 1,
                *seq < fence,
                "{record:?} acked at {seq}, fence at {fence}"
            );
        }
        let acked: HashMap<_, _> = acked.into_iter().map(|(r, (_, seq))| (r, seq)).collect();
        // Every acknowledged record exactly once, and nothing that was refused.
        assert_eq!(records(&log), acked);
    }

    #[test]
    fn an_older_writers_batch_in_the_fences_place_is_replayed_first() {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let old = open(faulty.clone(), Granted::new(1));
        old.append(b"a".to_vec()).unwrap();
        // The new writer reads to the end (seq 2 is missing), then the old
        // writer's batch lands at 2 before the fence's create.
        let gate = Gate::new();
        faulty.inject(Op::Put, "wal/", Fault::Hold(Arc::clone(&gate)), 1);
        let applied = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            let new = scope.spawn(|| {
                Writer::open(
                    Bucket::new(faulty.clone(), "idx"),
                    Granted::new(2),
                    0,
                    0,
                    quick(),
                    |b| {
                        applied.lock().unwrap().push(b.records.clone());
                        Ok::<_, LogError>(())
                    },
                )
            });
            gate.wait_arrived(1);
            assert_eq!(old.append(b"b".to_vec()), Ok(2));
            gate.open();
            let new = new.join().unwrap().unwrap();
            assert_eq!(new.fence_seq(), 3);
            assert_eq!(
                *applied.lock().unwrap(),
                [vec![], vec![b"a".to_vec()], vec![b"b".to_vec()]]
            );
            assert!(matches!(
                old.append(b"c".to_vec()),
                Err(LogError::Fenced { seq: 3, .. })
            ));
        });
    }

    #[test]
    fn a_writer_refuses_to_open_behind_a_newer_epoch() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        open(Arc::clone(&store), Granted::new(5));
        let err = Writer::open(
            Bucket::new(store, "idx"),
            Granted::new(4),
            0,
            0,
            quick(),
            |_| Ok::<_, LogError>(()),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                LogError::Fenced {
                    seq: 0,
                    epoch: 4,
                    by_epoch: 5
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_fenced_writer_acknowledges_and_deletes_nothing() {
        let shared: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let old_store = FaultyStore::new(Arc::clone(&shared));
        let old = open(old_store.clone(), Granted::new(1));
        for n in 0..3 {
            old.append(vec![n]).unwrap();
        }
        let new_store = FaultyStore::new(Arc::clone(&shared));
        let new = open(new_store.clone(), Granted::new(2));
        let follower_store = FaultyStore::new(Arc::clone(&shared));
        let follower = LogReader::new(Bucket::new(follower_store.clone(), "idx"), 0)
            .read_to_end()
            .unwrap();
        assert_eq!(follower.len(), 5);

        let err = old.append(vec![9]).unwrap_err();
        assert!(matches!(err, LogError::Fenced { seq: 4, .. }), "{err}");
        assert_eq!(old.append(vec![10]), Err(err.clone()));
        assert_eq!(old.delete_before(4), Err(err));
        assert_eq!(old.failure().map(|e| e.is_not_writer()), Some(true));
        assert_eq!(old_store.counts().deletes, 0);
        assert_eq!(follower_store.counts().deletes, 0);
        assert_eq!(follower_store.counts().puts, 0);

        // The writer deletes, oldest first (a failure leaves no gap), and
        // keeps every fence.
        new.append(vec![11]).unwrap();
        new_store.inject(
            Op::Delete,
            "00000000000000000002",
            Fault::Fail(Failure::Timeout),
            1,
        );
        assert!(new.delete_before(4).is_err());
        assert_eq!(kept(&shared), [0, 2, 3, 4, 5]);
        assert_eq!(new.delete_before(4), Ok(2));
        assert_eq!(kept(&shared), [0, 4, 5]);
        // Never past what is stored.
        assert_eq!(new.delete_before(100), Ok(1));
        assert_eq!(kept(&shared), [0, 4]);
        assert_eq!(new_store.counts().deletes, 1 + 1 + 2 + 1);
        // The old writer's store still issued none.
        assert_eq!(old_store.counts().deletes, 0);
    }

    fn kept(store: &Arc<dyn ObjectStore>) -> Vec<u64> {
        let bucket = Bucket::new(Arc::clone(store), "idx");
        bucket
            .list_wal()
            .unwrap()
            .iter()
            .map(|(seq, _)| *seq)
            .collect()
    }

    #[test]
    fn a_stale_writer_meets_the_fence_even_after_truncation() {
        // The old writer still believes it may write (its clock is wrong, or
        // it was paused): only the fence stops it.
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let old = open(Arc::clone(&store), Granted::new(1));
        assert_eq!(old.append(b"old".to_vec()), Ok(1));
        let new = open(Arc::clone(&store), Granted::new(2));
        assert_eq!(new.fence_seq(), 2);
        for n in 0..3 {
            new.append(vec![n]).unwrap();
        }
        // A flush made the log below 5 redundant.
        assert_eq!(new.delete_before(5), Ok(3));
        assert_eq!(kept(&store), [0, 2, 5]);
        let err = old.append(b"late".to_vec()).unwrap_err();
        assert!(
            matches!(
                err,
                LogError::Fenced {
                    seq: 2,
                    by_epoch: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(kept(&store), [0, 2, 5]);
        let log = LogReader::new(Bucket::new(store, "idx"), 5)
            .read_to_end()
            .unwrap();
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn an_unknown_outcome_stops_the_writer_without_skipping_a_number() {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let writer = open(faulty.clone(), Granted::new(1));
        writer.append(b"ok".to_vec()).unwrap();
        faulty.inject_always(Op::Put, "wal/", Fault::Fail(Failure::Timeout));
        faulty.inject_always(Op::Get, "wal/", Fault::Fail(Failure::Timeout));
        let err = writer.append(b"lost".to_vec()).unwrap_err();
        assert!(
            matches!(&err, LogError::Unavailable(m) if m.contains("outcome unknown")),
            "{err}"
        );
        faulty.clear();
        let puts = faulty.counts().puts;
        assert_eq!(writer.append(b"later".to_vec()), Err(err));
        assert_eq!(
            faulty.counts().puts,
            puts,
            "a stopped writer creates nothing"
        );
        // A new writer under the same lease sees what is there and goes on from it.
        let next = open(faulty.clone(), writer.authority.clone());
        assert_eq!((next.epoch(), next.fence_seq()), (1, 2));
        assert_eq!(next.append(b"again".to_vec()), Ok(3));
    }

    #[test]
    fn a_writer_without_authority_starts_no_create_and_acknowledges_nothing() {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let authority = Granted::new(1);
        let writer = open(faulty.clone(), authority.clone());
        authority.revoked.store(true, Ordering::SeqCst);
        let puts = faulty.counts().puts;
        let err = writer.append(b"x".to_vec()).unwrap_err();
        assert!(err.is_not_writer(), "{err}");
        assert_eq!(faulty.counts().puts, puts);

        // Revoked while the create is in flight: stored, but not acknowledged.
        let authority = Granted::new(2);
        let writer = open(faulty.clone(), authority.clone());
        let gate = Gate::new();
        faulty.inject(Op::Put, "wal/", Fault::Hold(Arc::clone(&gate)), 1);
        std::thread::scope(|scope| {
            let append = scope.spawn(|| writer.append(b"y".to_vec()));
            gate.wait_arrived(1);
            authority.revoked.store(true, Ordering::SeqCst);
            gate.open();
            assert!(append.join().unwrap().unwrap_err().is_not_writer());
        });
        assert_eq!(
            writer.delete_before(1).map_err(|e| e.is_not_writer()),
            Err(true)
        );
        assert_eq!(faulty.counts().deletes, 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the store does to creates and read-backs, every
        /// acknowledged record is in the log exactly once at the sequence
        /// number it was acknowledged with, the log stays dense, nothing
        /// refused outright is in it, and after the first error nothing is
        /// acknowledged again.
        #[test]
        fn the_log_holds_exactly_what_was_acknowledged(
            faults in proptest::collection::vec((0u8..5, any::<bool>()), 0..16),
            appends in 1usize..12,
        ) {
            let faulty = FaultyStore::new(Arc::new(InMemory::new()));
            let writer = open(faulty.clone(), Granted::new(1));
            for (kind, on_put) in faults {
                let fault = match kind {
                    0 => Fault::Fail(Failure::Timeout),
                    1 => Fault::ApplyThenFail(Failure::Timeout),
                    2 => Fault::ApplyThenFail(Failure::AlreadyExists),
                    3 => Fault::Fail(Failure::AlreadyExists),
                    _ => Fault::Delay(Duration::ZERO),
                };
                let op = if on_put { Op::Put } else { Op::Get };
                faulty.inject(op, "wal/", fault, 1);
            }
            let mut acked = HashMap::new();
            let mut unknown = Vec::new();
            let mut first_error: Option<LogError> = None;
            for n in 0..appends {
                let record = format!("r{n}").into_bytes();
                match (writer.append(record.clone()), &first_error) {
                    (Ok(seq), None) => {
                        acked.insert(record, seq);
                    }
                    (Ok(seq), Some(err)) => {
                        prop_assert!(false, "acknowledged at {} after {}", seq, err);
                    }
                    (Err(err), Some(first)) => prop_assert_eq!(&err, first),
                    (Err(err), None) => {
                        if matches!(err, LogError::Unavailable(_)) {
                            unknown.push(record);
                        }
                        first_error = Some(err);
                    }
                }
            }
            faulty.clear();
            let log = whole_log(faulty);
            for (record, seq) in records(&log) {
                match acked.remove(&record) {
                    Some(acked_seq) => prop_assert_eq!(acked_seq, seq),
                    None => prop_assert!(
                        unknown.contains(&record),
                        "{:?} is in the log but was refused",
                        record
                    ),
                }
            }
            prop_assert!(acked.is_empty(), "acknowledged but not in the log: {:?}", acked);
        }
    }
}
