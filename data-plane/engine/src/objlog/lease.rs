//! The writer lease of an index: one object `<prefix>/lease` holding the
//! holder's id, its epoch, its TTL and a renewal counter, written only with
//! conditional puts.
//!
//! - **Acquire** ([`Contender::try_acquire`]): create the object with
//!   `If-None-Match: *` (epoch 1). If it exists, take it over with an
//!   `If-Match` write of epoch + 1, but only once this contender has seen the
//!   *same* content and version unchanged for a full TTL on its own clock,
//!   or at once if the lease says it was released.
//! - **Renew** ([`Lease::renew`], every TTL/3, [`Lease::renew_in`];
//!   [`Renewer`](super::renew::Renewer) does it from one thread for every lease): an
//!   `If-Match` write of the next counter. A failed `If-Match` means the
//!   lease was taken over: the lease is lost for good.
//! - **Stop acknowledging** ([`Lease::may_acknowledge`]): once the last
//!   successful renewal was *sent* longer than TTL − margin ago by the
//!   holder's own clock, it must not acknowledge anything.
//! - **Release** ([`Lease::release`], on shutdown): an `If-Match` write
//!   marking the lease released, so a successor need not wait.
//!
//! Every write whose answer is lost is resolved by reading the object back:
//! each write carries a fresh counter value, so equal content means this
//! very write landed.

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use object_store::{PutMode, PutPayload, UpdateVersion, path::Path as ObjectPath};
use serde_json::{Value, json};

use super::{Bucket, Clock, LogError, random, unavailable, writer::Authority};

/// Lease timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseConfig {
    /// How long a contender waits, on its own clock, for a lease it sees
    /// unchanged before it takes the lease over.
    pub(crate) ttl: Duration,
    /// How much earlier than `ttl` after its last renewal the holder stops
    /// acknowledging: covers the difference in clock rates between holder
    /// and contender over one TTL (and must stay below 2/3 of the TTL, so
    /// that renewals every TTL/3 keep the holder acknowledging).
    pub(crate) margin: Duration,
}

impl LeaseConfig {
    /// A TTL, with a margin of a quarter of it (clock rates may differ by up
    /// to 25% over one TTL).
    pub(crate) fn new(ttl: Duration) -> Self {
        LeaseConfig {
            ttl,
            margin: ttl / 4,
        }
    }

    /// How often the holder renews.
    pub(crate) fn renew_every(&self) -> Duration {
        self.ttl / 3
    }
}

/// The content of the lease object (JSON, for operators reading the bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: String,
    /// Where the holder takes writes forwarded by followers (empty: not said).
    address: String,
    epoch: u64,
    ttl: Duration,
    /// Different in every write of one holder.
    renewed: u64,
    released: bool,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let value = json!({
            "holder": self.holder,
            "address": self.address,
            "epoch": self.epoch,
            "ttl_ms": ttl_ms,
            "renewed": self.renewed,
            "released": self.released,
        });
        value.to_string().into_bytes()
    }

    fn decode(path: &ObjectPath, bytes: &[u8]) -> Result<Self, LogError> {
        let corrupt = |reason: &str| LogError::corrupt(path, 0, reason);
        let value: Value =
            serde_json::from_slice(bytes).map_err(|err| corrupt(&format!("not json: {err}")))?;
        let number = |field: &str| {
            value[field]
                .as_u64()
                .ok_or_else(|| corrupt(&format!("`{field}` is not a number")))
        };
        Ok(Record {
            holder: value["holder"]
                .as_str()
                .ok_or_else(|| corrupt("`holder` is not a string"))?
                .to_owned(),
            // Leases written before followers existed name no address.
            address: value["address"].as_str().unwrap_or_default().to_owned(),
            epoch: number("epoch")?,
            ttl: Duration::from_millis(number("ttl_ms")?),
            renewed: number("renewed")?,
            released: value["released"]
                .as_bool()
                .ok_or_else(|| corrupt("`released` is not a boolean"))?,
        })
    }
}

/// The outcome of one lease acquisition attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// This process holds the lease now.
    Acquired(Box<Lease>),
    /// Someone else holds it; try again in `retry_in` at the latest (sooner
    /// is fine: every look that finds it unchanged counts toward the TTL).
    Held {
        holder: String,
        epoch: u64,
        retry_in: Duration,
    },
}

/// A process that wants the lease.
#[derive(Debug)]
pub(crate) struct Contender {
    bucket: Bucket,
    holder: String,
    /// Written into the lease this contender acquires (see [`Contender::with_address`]).
    address: String,
    config: LeaseConfig,
    clock: Arc<dyn Clock>,
    /// The lease as last seen, and since when (this clock) it is unchanged.
    seen: Option<Seen>,
    /// The highest epoch known to be in use (see [`Contender::with_min_epoch`]).
    min_epoch: u64,
    /// Since when (this clock) the lease was seen missing, when a missing lease is taken
    /// only after a full TTL (see [`Contender::patient_when_missing`]).
    missing_since: Option<Duration>,
    patient: bool,
}

#[derive(Debug)]
struct Seen {
    bytes: Vec<u8>,
    version: UpdateVersion,
    since: Duration,
}

impl Contender {
    /// A contender for `bucket`'s lease named after `name` (e.g. the pod
    /// name) plus a random suffix, so each process is a different holder.
    pub(crate) fn new(
        bucket: Bucket,
        name: &str,
        config: LeaseConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LogError> {
        let suffix: [u8; 8] = random()?;
        Ok(Contender {
            bucket,
            holder: format!("{name}-{}", hex::encode(suffix)),
            address: String::new(),
            config,
            clock,
            seen: None,
            min_epoch: 0,
            missing_since: None,
            patient: false,
        })
    }

    /// Never acquires an epoch at or below `epoch` (the highest one the
    /// caller knows of, e.g. from the manifest): should the lease object
    /// ever be lost, a new lease still fences the log with a higher epoch.
    pub(crate) fn with_min_epoch(mut self, epoch: u64) -> Self {
        self.min_epoch = epoch;
        self
    }

    /// Names `address` in the lease once acquired: where followers forward writes.
    pub(crate) fn with_address(mut self, address: &str) -> Self {
        address.clone_into(&mut self.address);
        self
    }

    /// Takes a missing lease only once it was seen missing for a full TTL, like a lease
    /// that is not renewed: a follower leaves a new index to its preferred writer, which
    /// creates the lease when it opens the index.
    pub(crate) fn patient_when_missing(&mut self) {
        self.patient = true;
    }

    /// This contender's holder id, as written in the lease.
    pub(crate) fn holder(&self) -> &str {
        &self.holder
    }

    /// Looks at the lease once and takes it if it is free, released, or has
    /// been seen unchanged for a full TTL (the TTL the holder wrote).
    pub(crate) fn try_acquire(&mut self) -> Result<Attempt, LogError> {
        let path = self.bucket.lease();
        let found = self
            .bucket
            .get(&path)
            .map_err(|err| unavailable(format_args!("cannot read the lease {path}"), &err))?;
        // Measured after the read returned: whatever it saw was written before now.
        let now = self.clock.now();
        let Some(found) = found else {
            if self.patient {
                let since = *self.missing_since.get_or_insert(now);
                let missing_for = now.saturating_sub(since);
                if missing_for < self.config.ttl {
                    return Ok(Attempt::Held {
                        holder: String::new(),
                        epoch: 0,
                        retry_in: self.config.ttl - missing_for,
                    });
                }
            }
            let record = self.record(self.min_epoch + 1);
            return self.write(record, PutMode::Create);
        };
        self.missing_since = None;
        let current = Record::decode(&path, &found.bytes)?;
        let since = match &self.seen {
            Some(seen) if seen.bytes == found.bytes && seen.version == found.version => seen.since,
            _ => {
                self.seen = Some(Seen {
                    bytes: found.bytes,
                    version: found.version.clone(),
                    since: now,
                });
                now
            }
        };
        let unchanged_for = now.saturating_sub(since);
        if !current.released && unchanged_for < current.ttl {
            return Ok(Attempt::Held {
                holder: current.holder,
                epoch: current.epoch,
                retry_in: current.ttl - unchanged_for,
            });
        }
        tracing::info!(
            lease = %path,
            from = %current.holder,
            released = current.released,
            "taking over the lease"
        );
        let record = self.record(current.epoch.max(self.min_epoch) + 1);
        self.write(record, PutMode::Update(found.version))
    }

    fn record(&self, epoch: u64) -> Record {
        Record {
            holder: self.holder.clone(),
            address: self.address.clone(),
            epoch,
            ttl: self.config.ttl,
            renewed: 0,
            released: false,
        }
    }

    fn write(&mut self, record: Record, mode: PutMode) -> Result<Attempt, LogError> {
        let path = self.bucket.lease();
        let bytes = record.encode();
        self.seen = None;
        let sent = self.clock.now();
        let outcome = resolve(&self.bucket, &bytes, mode);
        let version = match outcome {
            Resolved::Written(version) => version,
            Resolved::Other(found) => {
                let other = Record::decode(&path, &found.bytes)?;
                return Ok(Attempt::Held {
                    holder: other.holder,
                    epoch: other.epoch,
                    retry_in: Duration::ZERO,
                });
            }
            Resolved::Missing => {
                return Ok(Attempt::Held {
                    holder: String::new(),
                    epoch: 0,
                    retry_in: Duration::ZERO,
                });
            }
            Resolved::Unknown(err) => return Err(err),
        };
        tracing::info!(lease = %path, holder = %record.holder, epoch = record.epoch, "acquired the lease");
        Ok(Attempt::Acquired(Box::new(Lease {
            epoch: record.epoch,
            holder: record.holder.clone(),
            address: record.address.clone(),
            bucket: self.bucket.clone(),
            clock: Arc::clone(&self.clock),
            config: self.config,
            writing: Mutex::new(()),
            state: Mutex::new(Holding {
                version,
                renewed: record.renewed,
                renewed_at: sent,
                lost: None,
            }),
        })))
    }
}

/// What a conditional write of the lease did.
enum Resolved {
    /// It landed (the answer said so, or reading back found its bytes).
    Written(UpdateVersion),
    /// It did not; the lease holds this.
    Other(super::Fetched),
    /// It did not; there is no lease.
    Missing,
    /// Unknown: neither the write nor the read-back got an answer.
    Unknown(LogError),
}

/// Writes `bytes` to the lease with `mode`, reading back when that fails.
fn resolve(bucket: &Bucket, bytes: &[u8], mode: PutMode) -> Resolved {
    let path = bucket.lease();
    let err = match bucket.put(&path, PutPayload::from(bytes.to_vec()), mode) {
        Ok(version) => return Resolved::Written(version),
        Err(err) => err,
    };
    match bucket.get(&path) {
        Ok(Some(found)) if found.bytes == bytes => Resolved::Written(found.version),
        Ok(Some(found)) => Resolved::Other(found),
        Ok(None) => Resolved::Missing,
        Err(read) => Resolved::Unknown(LogError::Unavailable(format!(
            "cannot write the lease {path}: {err}; reading it back: {read}"
        ))),
    }
}

/// The lease of an index as anyone reads it (see [`read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    /// The holder id (pod name and a random suffix).
    pub(crate) holder: String,
    /// Where the holder takes forwarded writes; empty if it did not say.
    pub(crate) address: String,
    /// The holder's epoch.
    pub(crate) epoch: u64,
    /// Whether the holder let the lease go (it writes no more).
    pub(crate) released: bool,
}

/// Reads the lease of `bucket`'s index, if there is one: who writes the index, and where.
pub(crate) fn read(bucket: &Bucket) -> Result<Option<Holder>, LogError> {
    let path = bucket.lease();
    let Some(found) = bucket
        .get(&path)
        .map_err(|err| unavailable(format_args!("cannot read the lease {path}"), &err))?
    else {
        return Ok(None);
    };
    let record = Record::decode(&path, &found.bytes)?;
    Ok(Some(Holder {
        holder: record.holder,
        address: record.address,
        epoch: record.epoch,
        released: record.released,
    }))
}

/// The lease, held: this process is the writer while
/// [`Lease::may_acknowledge`] says so.
pub(crate) struct Lease {
    epoch: u64,
    holder: String,
    address: String,
    bucket: Bucket,
    clock: Arc<dyn Clock>,
    config: LeaseConfig,
    /// Serialises renewals and the release (held across their PUTs, which
    /// `state` never is, so `may_acknowledge` never waits for the store).
    writing: Mutex<()>,
    state: Mutex<Holding>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("bucket", &self.bucket)
            .field("holder", &self.holder)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Holding {
    /// The version of the lease object this holder wrote last.
    version: UpdateVersion,
    /// The counter of this holder's last write attempt.
    renewed: u64,
    /// When (this clock) the last write known to have landed was sent.
    renewed_at: Duration,
    /// Why the lease is no longer held, once it is not.
    lost: Option<String>,
}

impl Lease {
    /// The epoch this lease gives its writer.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The holder id written in the lease.
    pub(crate) fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether the lease is gone for good: taken over, released, or its object deleted.
    pub(crate) fn is_lost(&self) -> bool {
        self.lock().map_or(true, |state| state.lost.is_some())
    }

    /// Whether this holder may acknowledge writes now.
    pub(crate) fn may_acknowledge(&self) -> bool {
        self.may_acknowledge_at(self.clock.now())
    }

    /// Whether this holder may acknowledge writes at `now` (its clock): the
    /// lease is not lost or released, and its last successful renewal was
    /// sent less than TTL − margin ago.
    pub(crate) fn may_acknowledge_at(&self, now: Duration) -> bool {
        self.refusal(now).is_none()
    }

    fn refusal(&self, now: Duration) -> Option<String> {
        let state = match self.lock() {
            Ok(state) => state,
            Err(err) => return Some(err.to_string()),
        };
        if let Some(lost) = &state.lost {
            return Some(lost.clone());
        }
        let valid_for = self.config.ttl.saturating_sub(self.config.margin);
        (now >= state.renewed_at + valid_for).then(|| {
            format!(
                "the lease of epoch {} was not renewed for {:?}",
                self.epoch,
                now - state.renewed_at
            )
        })
    }

    /// Its timing.
    pub(crate) fn config(&self) -> LeaseConfig {
        self.config
    }

    /// How many writes of the lease this holder attempted (renewals and release).
    #[cfg(test)]
    pub(crate) fn renewals(&self) -> u64 {
        self.lock().map_or(0, |state| state.renewed)
    }

    /// How long until the next renewal is due (zero: now).
    pub(crate) fn renew_in(&self) -> Duration {
        let now = self.clock.now();
        self.lock()
            .map(|state| (state.renewed_at + self.config.renew_every()).saturating_sub(now))
            .unwrap_or_default()
    }

    /// Renews the lease (`If-Match` on the version this holder wrote last).
    /// [`LogError::NotWriter`] if it was taken over: lost for good. Any
    /// other error leaves the lease held until it lapses by the clock.
    pub(crate) fn renew(&self) -> Result<(), LogError> {
        self.write(false)
    }

    /// Marks the lease released (`If-Match`), so a successor takes it at
    /// once; this holder may not acknowledge anything afterwards.
    pub(crate) fn release(&self) -> Result<(), LogError> {
        self.write(true)
    }

    fn write(&self, release: bool) -> Result<(), LogError> {
        let _writing = self.writing.lock().map_err(|_| poisoned())?;
        let path = self.bucket.lease();
        // At most twice: once more after adopting an earlier write of ours
        // that landed although its answer was lost.
        for _ in 0..2 {
            let (record, version) = {
                let mut state = self.lock()?;
                if let Some(lost) = &state.lost {
                    return Err(LogError::NotWriter {
                        reason: lost.clone(),
                    });
                }
                state.renewed += 1;
                let record = Record {
                    holder: self.holder.clone(),
                    address: self.address.clone(),
                    epoch: self.epoch,
                    ttl: self.config.ttl,
                    renewed: state.renewed,
                    released: release,
                };
                (record, state.version.clone())
            };
            let sent = self.clock.now();
            let outcome = resolve(&self.bucket, &record.encode(), PutMode::Update(version));
            let mut state = self.lock()?;
            match outcome {
                Resolved::Written(version) => {
                    state.version = version;
                    state.renewed_at = sent;
                    if release {
                        tracing::info!(lease = %path, epoch = self.epoch, "released the lease");
                        state.lost =
                            Some(format!("the lease of epoch {} was released", self.epoch));
                    }
                    return Ok(());
                }
                Resolved::Other(found) => {
                    let other = Record::decode(&path, &found.bytes)?;
                    if other.holder == self.holder && other.epoch == self.epoch && !other.released {
                        // An earlier write of ours that landed unseen: go on from it
                        // (but do not count it as a renewal: when it was sent is unknown).
                        state.version = found.version;
                        state.renewed = state.renewed.max(other.renewed);
                        continue;
                    }
                    let reason = format!(
                        "the lease of epoch {} was taken over by {} (epoch {})",
                        self.epoch, other.holder, other.epoch
                    );
                    tracing::warn!(lease = %path, reason, "lost the lease");
                    state.lost = Some(reason.clone());
                    return Err(LogError::NotWriter { reason });
                }
                Resolved::Missing => {
                    let reason = format!("the lease object {path} is gone");
                    state.lost = Some(reason.clone());
                    return Err(LogError::NotWriter { reason });
                }
                Resolved::Unknown(err) => return Err(err),
            }
        }
        Err(LogError::Unavailable(format!(
            "cannot write the lease {path}: it keeps changing under this holder"
        )))
    }

    fn lock(&self) -> Result<MutexGuard<'_, Holding>, LogError> {
        self.state.lock().map_err(|_| poisoned())
    }
}

fn poisoned() -> LogError {
    LogError::Unavailable("the lease is unusable after an earlier panic".to_owned())
}

impl Authority for Lease {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn check(&self) -> Result<(), LogError> {
        match self.refusal(self.clock.now()) {
            None => Ok(()),
            Some(reason) => Err(LogError::NotWriter { reason }),
        }
    }

    fn confirm(&self) -> Result<(), LogError> {
        self.renew()?;
        self.check()
    }
}

#[cfg(test)]
mod tests {
    use object_store::{ObjectStore, memory::InMemory};

    use super::super::renew::Renewer;
    use proptest::prelude::*;

    use super::*;
    use crate::objlog::{
        clock::{FakeClock, MonotonicClock},
        faulty::{Failure, Fault, FaultyStore, Op},
        log::LogReader,
        writer::{LogConfig, Writer},
    };

    /// Divisible by 3 and 4: renewals at TTL/3, a margin of TTL/4, exactly.
    const TTL: Duration = Duration::from_secs(12);

    fn contender(store: Arc<dyn ObjectStore>, name: &str, clock: Arc<FakeClock>) -> Contender {
        Contender::new(
            Bucket::new(store, "idx"),
            name,
            LeaseConfig::new(TTL),
            clock,
        )
        .unwrap()
    }

    fn advance_to(clock: &FakeClock, at: Duration) {
        clock.advance(at - clock.now());
    }

    fn acquired(attempt: Attempt) -> Lease {
        match attempt {
            Attempt::Acquired(lease) => *lease,
            Attempt::Held { holder, .. } => panic!("the lease is held by {holder}"),
        }
    }

    fn held(attempt: Attempt) -> Duration {
        match attempt {
            Attempt::Held { retry_in, .. } => retry_in,
            Attempt::Acquired(lease) => panic!("acquired epoch {}", lease.epoch()),
        }
    }

    #[test]
    fn a_contender_takes_over_only_after_a_full_ttl_unchanged() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let clock = FakeClock::new();
        let a = acquired(
            contender(Arc::clone(&store), "a", clock.clone())
                .try_acquire()
                .unwrap(),
        );
        assert_eq!(a.epoch(), 1);
        assert!(a.may_acknowledge());
        let mut b = contender(Arc::clone(&store), "b", clock.clone());
        assert!(b.holder().starts_with("b-"), "{}", b.holder());
        match b.try_acquire().unwrap() {
            Attempt::Held {
                holder,
                epoch,
                retry_in,
            } => assert_eq!((holder.as_str(), epoch, retry_in), (a.holder(), 1, TTL)),
            Attempt::Acquired(_) => panic!("a held lease was taken at once"),
        }

        // A renewal changes the lease: b starts counting again.
        clock.advance(TTL / 3);
        assert_eq!(a.renew_in(), Duration::ZERO);
        a.renew().unwrap();
        clock.advance(TTL * 2 / 3);
        assert_eq!(held(b.try_acquire().unwrap()), TTL);

        // a stops renewing: it stops acknowledging at its last renewal + TTL - margin,
        // before b, which saw the renewal at TTL, may take over at 2 * TTL.
        let stop = TTL / 3 + (TTL - a.config.margin);
        advance_to(&clock, stop - Duration::from_millis(1));
        assert!(a.may_acknowledge());
        advance_to(&clock, stop);
        assert!(!a.may_acknowledge());
        held(b.try_acquire().unwrap());
        advance_to(&clock, TTL * 2 - Duration::from_millis(1));
        assert_eq!(held(b.try_acquire().unwrap()), Duration::from_millis(1));
        advance_to(&clock, TTL * 2);
        let b = acquired(b.try_acquire().unwrap());
        assert_eq!(b.epoch(), 2);
        assert!(b.may_acknowledge());

        // a's next renewal finds the lease taken: lost for good.
        let err = a.renew().unwrap_err();
        assert!(
            err.is_not_writer() && err.to_string().contains("taken over by b-"),
            "{err}"
        );
        assert!(!a.may_acknowledge_at(Duration::ZERO));
        b.renew().unwrap();
    }

    #[test]
    fn the_monotonic_clock_never_goes_back() {
        let clock = MonotonicClock::default();
        let (first, second) = (clock.now(), clock.now());
        assert!(second >= first);
    }

    #[test]
    fn the_renewer_keeps_a_lease_until_stopped_or_lost() {
        // Real time, with generous bounds: only "eventually" is asserted.
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let config = LeaseConfig::new(Duration::from_millis(300));
        let clock = Arc::new(MonotonicClock::default());
        let bucket = Bucket::new(Arc::clone(&store), "idx");
        let mut a = Contender::new(bucket.clone(), "a", config, clock.clone()).unwrap();
        let a = Arc::new(acquired(a.try_acquire().unwrap()));
        let renewer = Renewer::start(Arc::clone(&a)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while a.lock().unwrap().renewed < 3 {
            assert!(std::time::Instant::now() < deadline, "no renewals");
            std::thread::sleep(Duration::from_millis(10));
        }
        renewer.stop();
        let renewed = a.lock().unwrap().renewed;
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            a.lock().unwrap().renewed,
            renewed,
            "renewals go on after stop"
        );

        // A lost lease ends the thread by itself.
        let renewer = Renewer::start(Arc::clone(&a)).unwrap();
        a.release().unwrap();
        while !renewer.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the renewer outlives its lease"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut b = Contender::new(bucket, "b", config, clock).unwrap();
        assert_eq!(acquired(b.try_acquire().unwrap()).epoch(), 2);
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let clock = FakeClock::new();
        let a = acquired(
            contender(Arc::clone(&store), "a", clock.clone())
                .try_acquire()
                .unwrap(),
        );
        let mut b = contender(Arc::clone(&store), "b", clock.clone());
        held(b.try_acquire().unwrap());
        a.release().unwrap();
        assert!(!a.may_acknowledge());
        assert!(a.renew().unwrap_err().is_not_writer());
        let b = acquired(b.try_acquire().unwrap());
        assert_eq!(b.epoch(), 2);
    }

    #[test]
    fn a_minimum_epoch_outranks_a_lost_lease_object() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let clock = FakeClock::new();
        let mut a = contender(Arc::clone(&store), "a", clock.clone()).with_min_epoch(6);
        let a = acquired(a.try_acquire().unwrap());
        assert_eq!(a.epoch(), 7);
        a.release().unwrap();
        let mut b = contender(Arc::clone(&store), "b", clock.clone()).with_min_epoch(9);
        assert_eq!(acquired(b.try_acquire().unwrap()).epoch(), 10);
    }

    #[test]
    fn racing_contenders_get_one_lease() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let clock = FakeClock::new();
        for round in 0..2 {
            let winners: Vec<Box<Lease>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..4)
                    .map(|n| {
                        let mut c = contender(Arc::clone(&store), &format!("c{n}"), clock.clone());
                        scope.spawn(move || match c.try_acquire().unwrap() {
                            Attempt::Acquired(lease) => Some(lease),
                            Attempt::Held { .. } => None,
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| h.join().unwrap())
                    .collect()
            });
            assert_eq!(winners.len(), 1, "round {round}");
            assert_eq!(winners[0].epoch(), round + 1);
            // The next round races for the released lease.
            winners[0].release().unwrap();
        }
    }

    #[test]
    fn an_ambiguous_renewal_is_resolved_by_reading_back() {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let clock = FakeClock::new();
        let a = acquired(
            contender(faulty.clone(), "a", clock.clone())
                .try_acquire()
                .unwrap(),
        );
        clock.advance(TTL / 3);
        faulty.inject(Op::Put, "lease", Fault::ApplyThenFail(Failure::Timeout), 1);
        a.renew().unwrap();
        assert_eq!(a.renew_in(), TTL / 3, "the renewal that landed counts");

        // Landed, but the read-back failed too: not counted, not lost.
        clock.advance(TTL / 3);
        faulty.inject(Op::Put, "lease", Fault::ApplyThenFail(Failure::Timeout), 1);
        faulty.inject(Op::Get, "lease", Fault::Fail(Failure::Timeout), 1);
        assert!(matches!(a.renew(), Err(LogError::Unavailable(_))));
        assert_eq!(a.renew_in(), Duration::ZERO);
        // The next renewal meets its own earlier write and goes on from it.
        a.renew().unwrap();
        assert_eq!(a.renew_in(), TTL / 3);
        assert!(a.may_acknowledge());
    }

    #[test]
    fn a_holder_that_cannot_renew_stops_acknowledging_before_anyone_takes_over() {
        let shared: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let faulty = FaultyStore::new(Arc::clone(&shared));
        let clock = FakeClock::new();
        let a = acquired(
            contender(faulty.clone(), "a", clock.clone())
                .try_acquire()
                .unwrap(),
        );
        faulty.inject_always(Op::Put, "lease", Fault::Fail(Failure::Timeout));
        let b = contender(shared, "b", clock.clone());
        let timeline = run(&a, b, &clock, TTL / 100, TTL * 2);
        let stopped = timeline.stopped.expect("a stops acknowledging");
        let took = timeline.took_over.expect("b takes over");
        assert!(stopped <= TTL - a.config.margin, "{stopped:?}");
        assert!(took >= TTL && stopped < took, "{took:?}");
        assert!(timeline.renew_attempts >= 2);
    }

    /// When the holder stopped acknowledging and the contender took over,
    /// each by the holder's clock.
    #[derive(Debug, Default)]
    struct Timeline {
        stopped: Option<Duration>,
        took_over: Option<Duration>,
        renew_attempts: usize,
    }

    /// Steps time: the holder renews when due (through its own, failing,
    /// store), the contender looks at the lease every step; fails if ever
    /// both may write at once.
    fn run(
        a: &Lease,
        mut b: Contender,
        clock: &FakeClock,
        step: Duration,
        until: Duration,
    ) -> Timeline {
        let mut timeline = Timeline::default();
        while clock.now() < until {
            if a.renew_in().is_zero() {
                timeline.renew_attempts += 1;
                assert!(a.renew().is_err());
            }
            let a_may = a.may_acknowledge();
            if !a_may && timeline.stopped.is_none() {
                timeline.stopped = Some(clock.now());
            }
            if timeline.took_over.is_none()
                && let Attempt::Acquired(_) = b.try_acquire().unwrap()
            {
                timeline.took_over = Some(clock.now());
            }
            assert!(
                !(a_may && timeline.took_over.is_some()),
                "both may write at {:?}",
                clock.now()
            );
            clock.advance(step);
        }
        timeline
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever renewals fail or land unseen, and however the two clocks'
        /// rates differ within the margin, the holder never acknowledges
        /// once the contender holds the lease.
        #[test]
        fn never_two_writers(
            faults in proptest::collection::vec(0u8..4, 1..12),
            b_faster_permille in 0u64..240,
            step_ms in 50u64..2_000,
        ) {
            let shared: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let faulty = FaultyStore::new(Arc::clone(&shared));
            let a_clock = FakeClock::new();
            let b_clock = FakeClock::new();
            let a = acquired(contender(faulty.clone(), "a", a_clock.clone()).try_acquire().unwrap());
            // Each scripted fault is spent by a renewal (one every TTL/3 at most
            // while they succeed, every step while they fail); then a renewal
            // fails for good, the holder stops, and a TTL later the lease is free.
            let until = (TTL / 3 + Duration::from_millis(step_ms)) * u32::try_from(faults.len()).unwrap()
                + TTL * 2 * 1000 / (1000 - u32::try_from(b_faster_permille).unwrap())
                + Duration::from_millis(2 * step_ms);
            for fault in faults {
                let fault = match fault {
                    0 => Fault::Fail(Failure::Timeout),
                    1 => Fault::ApplyThenFail(Failure::Timeout),
                    2 => Fault::Delay(Duration::ZERO),
                    _ => Fault::Fail(Failure::Precondition),
                };
                faulty.inject(Op::Put, "lease", fault, 1);
            }
            // After the scripted faults, every renewal fails.
            faulty.inject_always(Op::Put, "lease", Fault::Fail(Failure::Timeout));
            let mut b = contender(shared, "b", b_clock.clone());
            let step = Duration::from_millis(step_ms);
            let b_step = step + step * u32::try_from(b_faster_permille).unwrap() / 1000;
            let mut took_over = false;
            while a_clock.now() < until {
                if a.renew_in().is_zero() {
                    let _ = a.renew();
                }
                let a_may = a.may_acknowledge();
                if !took_over {
                    took_over = matches!(b.try_acquire().unwrap(), Attempt::Acquired(_));
                }
                prop_assert!(!(a_may && took_over), "both may write at {:?}", a_clock.now());
                a_clock.advance(step);
                b_clock.advance(b_step);
            }
            prop_assert!(took_over);
        }
    }

    #[test]
    fn a_writer_under_a_lapsed_lease_is_fenced_by_its_successor() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let clock = FakeClock::new();
        let bucket = Bucket::new(Arc::clone(&store), "idx");
        let open = |lease: Lease| {
            Writer::open(
                bucket.clone(),
                Arc::new(lease),
                0,
                0,
                LogConfig::default(),
                |_| Ok::<_, LogError>(()),
            )
            .unwrap()
        };
        let a = open(acquired(
            contender(Arc::clone(&store), "a", clock.clone())
                .try_acquire()
                .unwrap(),
        ));
        assert_eq!(a.append(b"a1".to_vec()), Ok(1));
        let mut b = contender(Arc::clone(&store), "b", clock.clone());
        held(b.try_acquire().unwrap());
        clock.advance(TTL);
        // a's lease lapsed by its own clock: it acknowledges nothing, starts no create.
        let err = a.append(b"a2".to_vec()).unwrap_err();
        assert!(err.is_not_writer(), "{err}");
        let b = open(acquired(b.try_acquire().unwrap()));
        assert_eq!(b.epoch(), 2);
        assert_eq!(b.fence_seq(), 2);
        assert_eq!(b.append(b"b1".to_vec()), Ok(3));
        let log = LogReader::new(bucket, 0).read_to_end().unwrap();
        let records: Vec<&[u8]> = log
            .iter()
            .flat_map(|b| b.records.iter().map(Vec::as_slice))
            .collect();
        assert_eq!(records, [&b"a1"[..], b"b1"]);
    }
}
