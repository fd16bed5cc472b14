//! The clock a lease is timed with: only intervals on one process's own
//! monotonic clock are ever compared, never timestamps of two processes.

use std::{
    fmt,
    time::{Duration, Instant},
};

/// A monotonic clock: the time since an arbitrary origin of this process.
pub(crate) trait Clock: Send + Sync + fmt::Debug {
    /// The time now; never less than an earlier answer.
    fn now(&self) -> Duration;
}

/// The real monotonic clock (`Instant`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when a test says so.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct FakeClock {
    now: std::sync::Mutex<Duration>,
}

#[cfg(test)]
impl FakeClock {
    pub(crate) fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::default()
    }

    pub(crate) fn advance(&self, by: Duration) {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += by;
    }
}

#[cfg(test)]
impl Clock for FakeClock {
    fn now(&self) -> Duration {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
