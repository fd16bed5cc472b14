//! Renewing every lease this process holds from one scheduler thread, however many indexes
//! it writes.
//!
//! A [`Renewer`] is a handle on one lease's renewals. Every handle is an entry of one
//! process-wide schedule; its thread (`larch-lease`, started at the first lease) sleeps until
//! the earliest renewal is due ([`Lease::renew_in`]: TTL/3 after the last successful one, or
//! TTL/12 after a failed one) and hands each due renewal to a short-lived thread of its own
//! (`larch-lease-renew`), since each is a blocking PUT. A PUT that hangs therefore holds up
//! only its own lease, never the schedule of the others, and at most one renewal per lease is
//! ever in flight. A data plane writing 1,000 indexes with a 10 s TTL renews ~300 leases a
//! second; at ~30 ms a PUT that is about ten threads alive at any moment, where a thread per
//! lease (as before) kept 1,000 threads, each mostly asleep.
//!
//! Safety never depends on the schedule: a holder stops acknowledging by its own clock once
//! its last successful renewal is older than TTL − margin ([`Lease::may_acknowledge`]), so a
//! late renewal costs availability (writes refused until it lands), never correctness.

use std::{
    sync::{
        Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::lease::Lease;

/// The longest the scheduler sleeps without looking at its entries again.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// One lease's renewals: registered in the process-wide schedule until it is stopped (or
/// dropped), or its lease is lost or released.
#[derive(Debug)]
pub(crate) struct Renewer {
    entry: Arc<Entry>,
}

#[derive(Debug)]
struct Entry {
    lease: Arc<Lease>,
    /// Set by [`Renewer::stop`]: no renewal starts after it.
    stopped: AtomicBool,
    /// Held while this entry's renewal runs, so `stop` can wait for one in flight.
    renewing: Mutex<()>,
    /// Set while a renewal of this entry is handed out and not finished.
    in_flight: AtomicBool,
    /// No renewal before this (after a failed one: TTL/12 later).
    not_before: Mutex<Option<Instant>>,
}

impl Entry {
    /// When this entry is next due, from `now`: `None` once it is stopped or finished.
    fn due_in(&self, now: Instant) -> Option<Duration> {
        if self.stopped.load(Ordering::Acquire) || self.is_finished() {
            return None;
        }
        let retry =
            lock(&self.not_before).map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
        Some(self.lease.renew_in().max(retry))
    }

    /// A lost lease (taken over, released, its object gone) is never renewed again; a
    /// renewal that finds it lost marks it so.
    fn is_finished(&self) -> bool {
        self.lease.is_lost()
    }

    /// One renewal, unless the entry was stopped meanwhile.
    fn renew(&self) {
        let _renewing = lock(&self.renewing);
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        let lease = &self.lease;
        match lease.renew() {
            Ok(()) => *lock(&self.not_before) = None,
            Err(err) if err.is_not_writer() => {
                tracing::warn!(holder = %lease.holder(), epoch = lease.epoch(), error = %err, "stopped renewing the lease");
            }
            Err(err) => {
                tracing::warn!(holder = %lease.holder(), epoch = lease.epoch(), error = %err, "lease renewal failed; retrying");
                *lock(&self.not_before) = Some(Instant::now() + lease.config().ttl / 12);
            }
        }
    }
}

impl Renewer {
    /// Starts renewing `lease` (its first renewal is due TTL/3 after it was taken).
    pub(crate) fn start(lease: Arc<Lease>) -> std::io::Result<Self> {
        let entry = Arc::new(Entry {
            lease,
            stopped: AtomicBool::new(false),
            renewing: Mutex::new(()),
            in_flight: AtomicBool::new(false),
            not_before: Mutex::new(None),
        });
        schedule()?.add(Arc::clone(&entry));
        Ok(Renewer { entry })
    }

    /// Whether renewing has ended by itself (the lease was lost or released).
    pub(crate) fn is_finished(&self) -> bool {
        self.entry.is_finished()
    }

    /// Stops renewing, waiting for a renewal in flight; the lease stays held until it lapses
    /// or is released.
    pub(crate) fn stop(self) {
        // `Drop` does it.
    }

    fn halt(&self) {
        self.entry.stopped.store(true, Ordering::Release);
        drop(lock(&self.entry.renewing));
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The process-wide schedule: every entry not yet stopped or finished, and the thread.
#[derive(Debug, Default)]
struct Schedule {
    entries: Mutex<Vec<Arc<Entry>>>,
    /// Signalled when an entry is added (it may be due before the thread would wake) and when
    /// a renewal ends (its next one is due from then).
    changed: Condvar,
}

fn schedule() -> std::io::Result<&'static Schedule> {
    static SCHEDULE: OnceLock<std::result::Result<&'static Schedule, String>> = OnceLock::new();
    let started = SCHEDULE.get_or_init(|| {
        let schedule: &'static Schedule = Box::leak(Box::default());
        std::thread::Builder::new()
            .name("larch-lease".into())
            .spawn(move || schedule.run())
            .map(|_| schedule)
            .map_err(|err| err.to_string())
    });
    started.as_ref().copied().map_err(|err| {
        std::io::Error::other(format!("cannot start the lease renewal thread: {err}"))
    })
}

impl Schedule {
    fn add(&self, entry: Arc<Entry>) {
        lock(&self.entries).push(entry);
        self.changed.notify_all();
    }

    /// Forever: wait until the earliest entry is due, hand each due entry's renewal to a
    /// thread of its own, forget the entries stopped or finished.
    fn run(&'static self) {
        loop {
            for entry in self.wait_due() {
                self.hand_out(entry);
            }
        }
    }

    /// Renews `entry` on a thread of its own (on this one if none can start), then wakes the
    /// scheduler to plan its next renewal.
    fn hand_out(&'static self, entry: Arc<Entry>) {
        let finish = move |entry: &Entry| {
            entry.renew();
            entry.in_flight.store(false, Ordering::Release);
            let _entries = lock(&self.entries);
            self.changed.notify_all();
        };
        let handed = Arc::clone(&entry);
        let spawned = std::thread::Builder::new()
            .name("larch-lease-renew".into())
            .spawn(move || finish(&handed));
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "cannot start a lease renewal thread; renewing on the scheduler's");
            finish(&entry);
        }
    }

    /// The entries due now (each marked in flight), waiting (at most [`MAX_PAUSE`] at a time)
    /// until there is one.
    fn wait_due(&self) -> Vec<Arc<Entry>> {
        let mut entries = lock(&self.entries);
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            let mut pause = MAX_PAUSE;
            entries.retain(|entry| match entry.due_in(now) {
                None => false,
                // Planned again when it ends.
                Some(_) if entry.in_flight.load(Ordering::Acquire) => true,
                Some(in_) if in_.is_zero() => {
                    entry.in_flight.store(true, Ordering::Release);
                    due.push(Arc::clone(entry));
                    true
                }
                Some(in_) => {
                    pause = pause.min(in_);
                    true
                }
            });
            if !due.is_empty() {
                return due;
            }
            entries = self
                .changed
                .wait_timeout(entries, pause)
                .map_or_else(|poisoned| poisoned.into_inner().0, |(guard, _)| guard);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use object_store::{ObjectStore, memory::InMemory};

    use super::super::{
        Bucket,
        clock::MonotonicClock,
        faulty::{Fault, FaultyStore, Gate, Op},
        lease::{Attempt, Contender, LeaseConfig},
    };
    use super::*;

    fn lease(store: &Arc<dyn ObjectStore>, index: usize, ttl: Duration) -> Arc<Lease> {
        let bucket = Bucket::new(Arc::clone(store), format!("idx-{index}"));
        let clock = Arc::new(MonotonicClock::default());
        let mut contender = Contender::new(bucket, "holder", LeaseConfig::new(ttl), clock).unwrap();
        match contender.try_acquire().unwrap() {
            Attempt::Acquired(lease) => Arc::new(*lease),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn many_leases_are_renewed_without_a_thread_each() {
        // Real time with generous bounds: only "eventually" is asserted.
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let leases: Vec<Arc<Lease>> = (0..50)
            .map(|index| lease(&store, index, Duration::from_millis(300)))
            .collect();
        let threads_before = threads();
        let renewers: Vec<Renewer> = leases
            .iter()
            .map(|lease| Renewer::start(Arc::clone(lease)).unwrap())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while leases.iter().any(|lease| lease.renewals() < 3) {
            assert!(Instant::now() < deadline, "not every lease was renewed");
            std::thread::sleep(Duration::from_millis(10));
        }
        if let (Some(before), Some(after)) = (threads_before, threads()) {
            // One scheduler at most (others' tests may start threads meanwhile: generous).
            assert!(
                after < before + 25,
                "{before} threads before, {after} after 50 renewers"
            );
        }
        assert!(leases.iter().all(|lease| lease.may_acknowledge()));
        drop(renewers);
        let renewed: Vec<u64> = leases.iter().map(|lease| lease.renewals()).collect();
        std::thread::sleep(Duration::from_millis(250));
        let after: Vec<u64> = leases.iter().map(|lease| lease.renewals()).collect();
        assert_eq!(
            renewed, after,
            "renewals go on after the renewers were dropped"
        );
    }

    #[test]
    fn a_renewal_that_hangs_holds_up_no_other_lease() {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let stuck_store: Arc<dyn ObjectStore> = faulty.clone();
        let stuck = lease(&stuck_store, 0, Duration::from_millis(300));
        let gate = Gate::new();
        faulty.inject(Op::Put, "lease", Fault::Hold(Arc::clone(&gate)), 1);
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let free = lease(&store, 1, Duration::from_millis(300));
        let stuck_renewer = Renewer::start(Arc::clone(&stuck)).unwrap();
        let free_renewer = Renewer::start(Arc::clone(&free)).unwrap();
        gate.wait_arrived(1);
        let from = free.renewals();
        let deadline = Instant::now() + Duration::from_secs(60);
        while free.renewals() < from + 3 {
            assert!(
                Instant::now() < deadline,
                "the hung renewal held up the other lease"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(free.may_acknowledge());
        assert_eq!(
            stuck.renewals(),
            1,
            "one renewal in flight per lease at most"
        );
        gate.open();
        drop((stuck_renewer, free_renewer));
    }

    /// Threads of this process, where Linux tells.
    fn threads() -> Option<usize> {
        std::fs::read_dir("/proc/self/task")
            .ok()
            .map(|dir| dir.count())
    }
}
