//! Storage timings: the process-wide hook that receives how long each timed storage step
//! took (see [`Engine::set_timing_hook`](crate::Engine::set_timing_hook)), and the names of
//! those steps.
//!
//! It sits at the bottom of the engine so that the log and the flush, deep below the
//! [`Engine`](crate::Engine), can report to it without reaching up.

use std::{sync::RwLock, time::Duration};

/// Step name of one `fdatasync` of a write-ahead log batch (shared by its writers).
pub(crate) const WAL_FSYNC: &str = "wal_fsync";
/// Step name of one flush: cutting the memtable, writing its segments, swapping the manifest
/// and deleting the log files it covers (compaction not included).
pub(crate) const FLUSH: &str = "flush";
/// Step name of one compaction: merging one namespace's segments into one.
pub(crate) const COMPACTION: &str = "compaction";

/// The process-wide receiver of storage timings.
type TimingHook = Box<dyn Fn(&'static str, Duration) + Send + Sync>;

/// Set once by the server binary; read on every timed storage step (an uncontended read lock).
static TIMING_HOOK: RwLock<Option<TimingHook>> = RwLock::new(None);

/// Sends every later timing to `hook`, replacing any earlier hook.
pub(crate) fn set_hook(hook: impl Fn(&'static str, Duration) + Send + Sync + 'static) {
    *TIMING_HOOK
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(hook));
}

/// Reports that the storage step `step` (one of the names above) took `elapsed`.
pub(crate) fn record(step: &'static str, elapsed: Duration) {
    // A panic in a hook poisons the lock; timings are only for monitoring, so keep going.
    let hook = TIMING_HOOK
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(hook) = hook.as_ref() {
        hook(step, elapsed);
    }
}
