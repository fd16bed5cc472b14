//! The indexer: a few background threads per engine that keep every
//! namespace's ANN graph caught up with its writes (see `namespace::ann`).
//!
//! Writes wake it ([`Signal`]); a worker then runs a round the engine hands it (one
//! build step per namespace with pending rows, index after index) and goes
//! round again until nothing is pending, so one busy namespace cannot starve
//! the others. The workers ([`workers`] of them) run rounds at the same time:
//! a namespace is built by one worker at a time (the others skip it, see
//! `ann::build_step`), so several namespaces build on several cores, and a
//! namespace being rebuilt from scratch — one long step — holds one worker
//! while the others keep the rest of the namespaces indexed. A worker that
//! found work wakes another, so all of them join in while there is work. An
//! idle worker also looks round on its own when no worker has for a few hundred
//! milliseconds (once per period, not once per worker); they stop when the
//! engine is dropped. Queries never wait for them.
//!
//! On Linux the workers run at a lower scheduling priority (nice [`NICE`]) than
//! the rest of the process: while writes arrive, the threads that decode, log
//! and acknowledge them and the ones answering queries get the cores first,
//! and the graph catches up with whatever is left, then with everything once
//! the writes stop. Indexing is background work; an acknowledged write is
//! searchable at once either way (exactly, until its graph catches up).

use std::{
    num::NonZero,
    sync::{Arc, Condvar, Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

/// How long the workers go without a round when nothing wakes them.
const IDLE: Duration = Duration::from_millis(250);

/// The workers' nice value on Linux: the kernel then gives a busy worker about a tenth of
/// the CPU time of a busy thread at the default 0 on the same core.
const NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`NICE`] (Linux: a thread's own
/// nice value); elsewhere, or if the call fails, it keeps the process' priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        #[allow(unsafe_code)]
        // SAFETY: `gettid` has no preconditions; `setpriority` only reads its integer
        // arguments, and `PRIO_PROCESS` with a thread id changes that thread alone.
        let failed = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE) != 0
        };
        if failed {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower an indexer thread's priority");
        }
    }
}

/// Indexer workers per engine: one per core, at least two so that a long
/// rebuild never holds up the other namespaces even on one core, and at most
/// eight (each namespace building at once holds a working copy of its graph's
/// links, so more would mostly cost memory).
pub(crate) fn workers() -> usize {
    thread::available_parallelism()
        .map_or(1, NonZero::get)
        .clamp(2, 8)
}

#[derive(Debug, Default)]
struct State {
    /// Something was written since the last round.
    dirty: bool,
    /// The engine is gone.
    stop: bool,
    /// The workers run.
    started: bool,
    /// When a worker last started rounds, if one has.
    looked: Option<Instant>,
}

/// What the thread and the writers share.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    state: Mutex<State>,
    wake: Condvar,
}

impl Signal {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the indexer that rows are pending: wakes one waiting worker.
    pub(crate) fn wake(&self) {
        let mut state = self.state();
        if !state.dirty {
            state.dirty = true;
            self.wake.notify_one();
        }
    }

    /// Waits until woken, stopped, or [`IDLE`] passed since any worker last looked round;
    /// returns whether to go on.
    fn wait(&self) -> bool {
        let mut state = self.state();
        loop {
            state = self
                .wake
                .wait_timeout_while(state, IDLE, |state| !state.dirty && !state.stop)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            let idle = state.looked.is_none_or(|looked| looked.elapsed() >= IDLE);
            if state.stop || state.dirty || idle {
                break;
            }
        }
        state.dirty = false;
        state.looked = Some(Instant::now());
        !state.stop
    }
}

/// Handle to the indexer workers of one engine; stops them when dropped.
#[derive(Debug, Default)]
pub(crate) struct Indexer {
    signal: Arc<Signal>,
}

impl Indexer {
    /// The signal writers use to wake the workers.
    pub(crate) fn signal(&self) -> Arc<Signal> {
        Arc::clone(&self.signal)
    }

    /// Starts the workers unless they run already. `round` is one build step for every
    /// namespace with graph work that no other worker is building, index after index:
    /// whether any had some, or `None` once the engine is gone.
    pub(crate) fn start(&self, round: impl Fn() -> Option<bool> + Send + Sync + 'static) {
        {
            let mut state = self.signal.state();
            if state.started {
                return;
            }
            state.started = true;
        }
        let round = Arc::new(round);
        for worker in 0..workers() {
            let (signal, round) = (Arc::clone(&self.signal), Arc::clone(&round));
            let spawned = thread::Builder::new()
                .name(format!("larch-indexer-{worker}"))
                .spawn(move || {
                    lower_priority();
                    run(&signal, &*round)
                });
            if let Err(err) = spawned {
                tracing::error!(worker, error = %err, "cannot start an indexer thread");
            }
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.signal.state().stop = true;
        self.signal.wake.notify_all();
    }
}

/// One worker: each time `signal` wakes it, calls `round` until a round finds no graph work,
/// waking another worker after each round that found some (there may be more namespaces to
/// build than this worker can take on); returns when the indexer is dropped or `round`
/// reports that the engine is gone (`None`).
fn run(signal: &Signal, round: &dyn Fn() -> Option<bool>) {
    while signal.wait() {
        loop {
            match round() {
                None => return,
                Some(true) => signal.wake(),
                Some(false) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// An idle engine costs one round per [`IDLE`], as with a single indexer thread, not one
    /// per worker. (A busy machine can only delay the rounds, never add any.)
    #[test]
    fn idle_workers_look_round_once_per_idle_period() {
        let rounds = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&rounds);
        let indexer = Indexer::default();
        let started = Instant::now();
        indexer.start(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            Some(false)
        });
        thread::sleep(IDLE * 4 + IDLE / 2);
        drop(indexer);
        let rounds = rounds.load(Ordering::Relaxed);
        let periods = started.elapsed().as_millis() / IDLE.as_millis();
        assert!(rounds >= 1, "no worker looked round");
        assert!(
            rounds as u128 <= periods,
            "{rounds} idle rounds in {periods} periods of {IDLE:?} with {} workers",
            workers()
        );
    }

    /// Each worker runs its rounds at nice [`NICE`], read back from the kernel: `round`
    /// records the nice value of the thread running it (field 19 of its `stat` file).
    #[cfg(target_os = "linux")]
    #[test]
    fn workers_run_at_a_lower_priority() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let indexer = Indexer::default();
        indexer.start(move || {
            #[allow(unsafe_code)]
            // SAFETY: `gettid` has no preconditions.
            let tid = unsafe { libc::gettid() };
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
                .expect("the thread's stat file");
            // After the command name in parentheses: state is field 3, nice field 19.
            let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
                .split(' ')
                .collect();
            let nice: i32 = fields[19 - 3].parse().expect("nice value");
            record.lock().expect("lock").push(nice);
            Some(false)
        });
        indexer.signal().wake();
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.lock().expect("lock").is_empty() {
            assert!(Instant::now() < deadline, "no worker ran a round");
            thread::sleep(Duration::from_millis(5));
        }
        drop(indexer);
        let seen = seen.lock().expect("lock");
        assert!(seen.iter().all(|nice| *nice == NICE), "{seen:?}");
    }
}
