//! Storage timings: the receiver of how long each timed storage step took (a value given to
//! the engine with [`Engine::with_storage_timer`](crate::Engine::with_storage_timer) and
//! handed down to each index's log and segments when they are built), and the names of those
//! steps.
//!
//! It sits at the bottom of the engine so that the log and the flush, deep below the
//! [`Engine`](crate::Engine), can hold one without reaching up.

use std::{fmt, sync::Arc, time::Duration};

/// Step name of one `fdatasync` of a write-ahead log batch (shared by its writers).
pub(crate) const WAL_FSYNC: &str = "wal_fsync";
/// Step name of one flush: cutting the memtable, writing its segments, swapping the manifest
/// and deleting the log files it covers (compaction not included).
pub(crate) const FLUSH: &str = "flush";
/// Step name of one compaction: merging one namespace's segments into one.
pub(crate) const COMPACTION: &str = "compaction";

/// Receives the name of a timed storage step (an `Engine::TIMED_…` name) and how long it
/// took. It runs on the thread doing the work (a writer holding the log, a flush), so it must
/// be quick.
pub type StorageTimer = Arc<dyn Fn(&'static str, Duration) + Send + Sync>;

/// The storage timer of one engine as its logs and segments hold it: a clone of the engine's
/// [`StorageTimer`], or nothing (an engine built without one), so recording takes no lock.
#[derive(Clone, Default)]
pub(crate) struct Timer(Option<StorageTimer>);

impl Timer {
    /// Sends every timing to `timer`.
    pub(crate) fn new(timer: StorageTimer) -> Timer {
        Timer(Some(timer))
    }

    /// Reports that the storage step `step` (one of the names above) took `elapsed`.
    pub(crate) fn record(&self, step: &'static str, elapsed: Duration) {
        if let Some(timer) = &self.0 {
            timer(step, elapsed);
        }
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Timer(set)"
        } else {
            "Timer(none)"
        })
    }
}
