//! The indexer: one background thread per engine that keeps every
//! namespace's ANN graph caught up with its writes (see `ann`).
//!
//! Writes wake it; it then runs one build step per namespace with pending
//! rows, index after index, and goes round again until nothing is pending,
//! so one busy namespace cannot starve the others. It also looks round every
//! few hundred milliseconds on its own, and stops when the engine is
//! dropped. Queries never wait for it.

use std::{
    collections::BTreeMap,
    sync::{Arc, Condvar, Mutex, PoisonError, RwLock, Weak},
    thread,
    time::Duration,
};

use crate::Index;

/// How long the thread sleeps when nothing wakes it.
const IDLE: Duration = Duration::from_millis(250);

/// The indexes of an engine, as the indexer sees them.
pub(crate) type Indexes = RwLock<BTreeMap<String, Arc<Index>>>;

#[derive(Debug, Default)]
struct State {
    /// Something was written since the last round.
    dirty: bool,
    /// The engine is gone.
    stop: bool,
    /// The thread runs.
    started: bool,
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

    /// Tells the indexer that rows are pending.
    pub(crate) fn wake(&self) {
        let mut state = self.state();
        if !state.dirty {
            state.dirty = true;
            self.wake.notify_one();
        }
    }

    /// Waits until woken, stopped, or [`IDLE`] passed; returns whether to go on.
    fn wait(&self) -> bool {
        let state = self.state();
        let (mut state, _) = self
            .wake
            .wait_timeout_while(state, IDLE, |state| !state.dirty && !state.stop)
            .unwrap_or_else(PoisonError::into_inner);
        state.dirty = false;
        !state.stop
    }
}

/// Handle to the indexer thread of one engine; stops it when dropped.
#[derive(Debug, Default)]
pub(crate) struct Indexer {
    signal: Arc<Signal>,
}

impl Indexer {
    /// The signal writers use to wake the thread.
    pub(crate) fn signal(&self) -> Arc<Signal> {
        Arc::clone(&self.signal)
    }

    /// Starts the thread for `indexes` unless it runs already.
    pub(crate) fn start(&self, indexes: Weak<Indexes>) {
        {
            let mut state = self.signal.state();
            if state.started {
                return;
            }
            state.started = true;
        }
        let signal = Arc::clone(&self.signal);
        let spawned = thread::Builder::new()
            .name("larch-indexer".into())
            .spawn(move || run(&signal, &indexes));
        if let Err(err) = spawned {
            tracing::error!(error = %err, "cannot start the indexer thread; queries stay exact");
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.signal.state().stop = true;
        self.signal.wake.notify_all();
    }
}

fn run(signal: &Signal, indexes: &Weak<Indexes>) {
    while signal.wait() {
        loop {
            let Some(indexes) = indexes.upgrade() else {
                return;
            };
            let open: Vec<Arc<Index>> = match indexes.read() {
                Ok(map) => map.values().cloned().collect(),
                Err(_) => return,
            };
            drop(indexes);
            let mut worked = false;
            for index in open {
                worked |= index.build_step();
            }
            if !worked {
                break;
            }
        }
    }
}
