//! The indexer: one background thread per engine that keeps every
//! namespace's ANN graph caught up with its writes (see `namespace::ann`).
//!
//! Writes wake it ([`Signal`]); it then runs a round the engine hands it (one
//! build step per namespace with pending rows, index after index) and goes
//! round again until nothing is pending, so one busy namespace cannot starve
//! the others. It also looks round every
//! few hundred milliseconds on its own, and stops when the engine is
//! dropped. Queries never wait for it.

use std::{
    sync::{Arc, Condvar, Mutex, PoisonError},
    thread,
    time::Duration,
};

/// How long the thread sleeps when nothing wakes it.
const IDLE: Duration = Duration::from_millis(250);

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

    /// Starts the thread unless it runs already. `round` is one build step for every
    /// namespace with graph work, index after index: whether any had some, or `None` once the
    /// engine is gone.
    pub(crate) fn start(&self, round: impl FnMut() -> Option<bool> + Send + 'static) {
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
            .spawn(move || run(&signal, round));
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

/// Each time `signal` wakes it, calls `round` until a round finds no graph work; returns when
/// the indexer is dropped or `round` reports that the engine is gone (`None`).
fn run(signal: &Signal, mut round: impl FnMut() -> Option<bool>) {
    while signal.wait() {
        loop {
            match round() {
                None => return,
                Some(true) => {}
                Some(false) => break,
            }
        }
    }
}
