//! Write backpressure: refusing new writes, with a retry hint, before memory or the
//! write-ahead log outgrow what the node can hold — while reads go on being served.
//!
//! Two conditions refuse a write that adds data (upsert, update) with
//! [`Error::Overloaded`] (`RESOURCE_EXHAUSTED`, with how long to wait):
//!
//! - **Memory budget** ([`Engine::with_memory_budget`](crate::Engine::with_memory_budget)):
//!   the whole index lives in memory, so the budget bounds the process's resident memory.
//!   A write is refused when the resident set, plus the ANN graph nodes still to be built for
//!   rows already accepted (the indexer adds them later), plus what this write would add,
//!   passes the budget less a reserve of 1/[`RESERVE_DIVISOR`] of it: the reserve is for what
//!   no estimate counts — the transient memory of requests being served (decoded messages,
//!   log frames, query buffers) and the pages the allocator keeps for a moment after they are
//!   freed — so the peak resident set stays under the budget. The resident set is read from `/proc/self/status` at most every
//!   [`SAMPLE_EVERY`]; writes accepted in between are counted on top of it, so a burst cannot
//!   slip past between two readings. Deletes are never refused: they are how memory is freed
//!   (the memory of deleted rows is reused by later writes).
//! - **Log backlog**: a write is refused while an index's active write-ahead log holds more
//!   than [`LOG_BACKLOG_FACTOR`] times the flush threshold (at least [`MIN_LOG_BACKLOG`]) of
//!   records — the flushes have fallen behind the writes (or keep failing), and letting the
//!   log grow would make restarts slow. A refused write first tries the flush itself, so the
//!   refusals end as soon as a flush can succeed again.
//!
//! Nothing acknowledged is ever dropped: a refused write was not logged and not applied.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{Error, IndexConfig, Result, SearchParams};

/// Writes are admitted up to the budget less `1 / RESERVE_DIVISOR` of it (see the module
/// docs).
pub const RESERVE_DIVISOR: u64 = 16;

/// How often the resident set is read.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// An index's active log may hold this many times the flush threshold before writes wait.
pub const LOG_BACKLOG_FACTOR: u64 = 4;

/// The backlog limit is never below this, so a tiny flush threshold (tests flush on every
/// write) does not refuse writes while one flush runs.
pub const MIN_LOG_BACKLOG: u64 = 1024 * 1024;

/// Bytes of records the active log may hold before writes that add data are refused, for a
/// flush threshold of `wal_bytes`.
pub fn log_backlog_limit(wal_bytes: u64) -> u64 {
    wal_bytes
        .saturating_mul(LOG_BACKLOG_FACTOR)
        .max(MIN_LOG_BACKLOG)
}

/// How long a client refused for memory should wait before retrying: memory is freed by
/// deletes and compaction, not by time, so retries are spaced out.
const MEMORY_RETRY: Duration = Duration::from_secs(1);

/// How long a client refused for the log backlog should wait: about one flush.
pub(crate) const LOG_RETRY: Duration = Duration::from_millis(500);

/// Measures the memory a budget counts: resident set plus graph bytes still owed.
pub(crate) type Measure = Box<dyn Fn() -> u64 + Send + Sync>;

/// The memory budget of one engine and its accounting.
pub(crate) struct MemoryBudget {
    budget: u64,
    /// Resident set plus graph nodes still to be built over every index (read at each sample).
    measure: Measure,
    state: Mutex<Sample>,
    /// Bytes of writes accepted since the last sample.
    accepted: AtomicU64,
}

struct Sample {
    at: Option<Instant>,
    /// Resident set plus graph debt at `at`.
    projected: u64,
}

impl MemoryBudget {
    pub(crate) fn new(budget: u64, measure: Measure) -> MemoryBudget {
        MemoryBudget {
            budget,
            measure,
            state: Mutex::new(Sample {
                at: None,
                projected: 0,
            }),
            accepted: AtomicU64::new(0),
        }
    }

    /// Admits a write that adds about `bytes` of memory (rows, metadata and their graph
    /// nodes), or refuses it with [`Error::Overloaded`].
    pub(crate) fn admit(&self, bytes: u64) -> Result<()> {
        let projected = self.projected();
        let accepted = self.accepted.load(Ordering::Relaxed);
        let after = projected.saturating_add(accepted).saturating_add(bytes);
        if after > self.budget - self.budget / RESERVE_DIVISOR {
            return Err(Error::Overloaded {
                message: format!(
                    "memory budget reached: this write needs about {} MiB more, and the node \
                     already holds {} MiB of its {} MiB budget (--memory-budget), counting \
                     graph nodes still to be built; writes are refused until memory is freed \
                     (delete records, namespaces or indexes) or the budget is raised; reads \
                     are served",
                    mib(bytes),
                    mib(projected.saturating_add(accepted)),
                    mib(self.budget)
                ),
                retry_after: MEMORY_RETRY,
            });
        }
        self.accepted.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Resident set plus graph debt, re-read if the last reading is older than
    /// [`SAMPLE_EVERY`] (which also forgets the writes counted since: the reading includes them).
    fn projected(&self) -> u64 {
        let mut sample = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stale = sample.at.is_none_or(|at| at.elapsed() >= SAMPLE_EVERY);
        if stale {
            // Reset first: writes admitted from now on are not in the reading below.
            self.accepted.store(0, Ordering::Relaxed);
            sample.projected = (self.measure)();
            sample.at = Some(Instant::now());
        }
        sample.projected
    }
}

/// About how many bytes one row adds to its namespace's graph: its vector again (f32; int8
/// codes are smaller, so this errs high), the links of the bottom layer and node overhead.
/// `config` and `params` are the index's; a sparse index has no graph.
pub(crate) fn graph_row_bytes(config: IndexConfig, params: SearchParams) -> u64 {
    if config.is_sparse() {
        return 0;
    }
    let dimension = u64::from(config.dimension.get());
    let m = u64::from(params.m());
    dimension * 4 + m * 12 + 64
}

/// About how many bytes a write of `rows` rows with `payload` bytes of values, ids and
/// metadata adds to memory of an index with `config` and `params`: the rows themselves plus
/// their graph nodes.
pub(crate) fn write_bytes(
    config: IndexConfig,
    params: SearchParams,
    rows: u64,
    payload: u64,
) -> u64 {
    payload.saturating_add(rows.saturating_mul(graph_row_bytes(config, params) + 64))
}

/// The process's resident set in bytes (`VmRSS` of `/proc/self/status`); 0 where there is no
/// `/proc` (the budget then counts only the graph debt and the writes themselves).
pub fn resident_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1024 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_set_is_read() {
        let rss = resident_bytes();
        assert!(
            rss > 1024 * 1024,
            "a test process uses more than 1 MiB: {rss}"
        );
    }

    #[test]
    fn writes_past_the_budget_are_refused_with_a_retry_hint() {
        const MIB: u64 = 1024 * 1024;
        // 80 MiB in use (resident set and graph debt) of a 160 MiB budget, of which 10 MiB are
        // the reserve: 70 MiB to go.
        let budget = MemoryBudget::new(160 * MIB, Box::new(|| 80 * MIB));
        budget.admit(30 * MIB).expect("fits");
        budget.admit(30 * MIB).expect("fits");
        // Counted since the sample, so the third does not fit even before the next reading,
        // nor one that would eat into the reserve.
        let err = budget.admit(30 * MIB).expect_err("over budget");
        budget.admit(11 * MIB).expect_err("into the reserve");
        assert_eq!(err.code(), crate::ErrorCode::ResourceExhausted);
        assert_eq!(err.retry_after(), Some(MEMORY_RETRY));
        let message = err.to_string();
        assert!(message.contains("--memory-budget"), "{message}");
        assert!(message.contains("reads are served"), "{message}");
        // Small writes still fit.
        budget.admit(10 * MIB).expect("fits up to the reserve");
    }
}
