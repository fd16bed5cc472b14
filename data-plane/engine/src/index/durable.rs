//! What a durable [`Index`] has beyond its memory ([`Durable`]: its log, its segments, the
//! flush gate), how every logged change holds the gate (`Index::logged`), and the flush:
//! the cut (`Index::cut`) and the hand-over to `flush` that writes the segments.

use std::{
    mem,
    sync::{Mutex, RwLock},
};

use super::{Index, log::IndexLog};
use crate::{
    Namespace, Result,
    flush::{Pending, Segments, State, StorageStats},
    locks::{lock, read_lock, write_lock},
};

/// Where replay starts after a flush: the log file number (in a shared store: the sequence
/// number of the first batch), and the LSN of the last record before it (see
/// `Segments::write`).
type ReplayStart = (u64, u64);

/// What a durable index has beyond its memory: its log, its segments, and
/// what the next flush needs to know.
pub(crate) struct Durable {
    pub(super) log: IndexLog,
    pub(super) segments: Segments,
    /// Held shared by every logged change from before its append until it
    /// is applied, and exclusively by a flush while it cuts.
    gate: RwLock<()>,
    /// Namespaces deleted since the last cut.
    pub(super) dropped: Mutex<Vec<Namespace>>,
    /// Log files this process rotated away from (in a shared store: the last batch of each
    /// cut), with their bytes of records: until a manifest starts replay after them, they
    /// are backlog too (a failed flush rotates but deletes nothing).
    rotated: Mutex<Vec<(u64, u64)>>,
}

impl Durable {
    /// `dropped`: namespaces deleted since the segments were written (by
    /// the replayed log).
    pub(crate) fn new(log: IndexLog, segments: Segments, dropped: Vec<Namespace>) -> Self {
        Durable {
            log,
            segments,
            gate: RwLock::new(()),
            dropped: Mutex::new(dropped),
            rotated: Mutex::new(Vec::new()),
        }
    }

    /// Bytes of logged records no manifest covers yet: the active file's and those of the
    /// rotated files replay would still start from.
    pub(super) fn log_backlog(&self) -> Result<u64> {
        let active = self.log.record_bytes();
        let log = self.log.active();
        let files = self.segments.stats(log).wal_files;
        let replay_start = (log.last + 1).saturating_sub(files);
        let mut rotated = lock(&self.rotated)?;
        rotated.retain(|&(file, _)| file >= replay_start);
        Ok(active + rotated.iter().map(|&(_, bytes)| bytes).sum::<u64>())
    }

    /// The segments (and graph files).
    pub(crate) fn segments(&self) -> &Segments {
        &self.segments
    }
}

impl Index {
    /// Runs `change`, which may log changes, holding the flush gate shared
    /// so that a flush never cuts between a change's append and its apply;
    /// then, with no lock held, flushes if the log has grown past the
    /// threshold.
    pub(super) fn logged<T>(&self, change: impl FnOnce() -> Result<T>) -> Result<T> {
        let Some(durable) = &self.durable else {
            return change();
        };
        let output = {
            let _gate = read_lock(&durable.gate)?;
            change()?
        };
        if durable.log.wants_flush(durable.segments.policy().wal_bytes)
            && let Err(err) = self.flush_segments(false)
        {
            // The change is durable in the log, which keeps everything until a flush succeeds.
            tracing::warn!(index = %self.name, error = %err, "flushing or compacting segments failed; the write-ahead log keeps every change and the flush is retried");
        }
        Ok(output)
    }

    /// Flushes every change logged so far to segments and swaps the
    /// manifest (then compacts if a namespace has too many segments), even
    /// below the flush threshold. Returns whether anything was written;
    /// `false` for an in-memory index. Writes continue meanwhile, except
    /// for the moment of the cut (see the crate's `# Durability`).
    pub fn flush(&self) -> Result<bool> {
        self.flush_segments(true)
    }

    /// Segment and log figures of a durable index; `None` in memory.
    pub fn storage_stats(&self) -> Option<StorageStats> {
        let durable = self.durable.as_ref()?;
        Some(durable.segments.stats(durable.log.active()))
    }

    /// Stops writing files for good, once a flush in progress is done: the
    /// index is being dropped and its directory removed.
    pub(crate) fn close(&self) {
        if let Some(durable) = &self.durable {
            durable.segments.close();
            durable.log.release();
        }
    }

    /// Stops writing to a log in a shared store and releases its writer lease, so another
    /// process takes the index over at once (the process is draining); nothing for a local
    /// log. Later writes are refused ("not the writer").
    pub(crate) fn release_log(&self) {
        if let Some(durable) = &self.durable {
            durable.log.release();
        }
    }

    /// The log and segments, for tests.
    #[cfg(test)]
    pub(crate) fn durable_parts(&self) -> Option<&Durable> {
        self.durable.as_ref()
    }

    /// A flush (see `flush`). `force`: wait for a flush in progress, and
    /// flush whatever there is; otherwise give up if another flush runs,
    /// the last one failed moments ago, or the log is below the threshold.
    pub(super) fn flush_segments(&self, force: bool) -> Result<bool> {
        let Some(durable) = &self.durable else {
            return Ok(false);
        };
        let Some(mut state) = durable.segments.begin(force)? else {
            return Ok(false);
        };
        self.flush_locked(durable, &mut state, force)
    }

    /// A forced flush, then `then` on the flush state it left (its manifest), with the flush
    /// state still held: no flush or compaction changes or deletes a segment meanwhile. Every
    /// change acknowledged before this was called is in those segments, and none logged after
    /// the cut (see `backup`). `FailedPrecondition` for an index in memory or being dropped.
    pub(crate) fn with_flushed<T>(&self, then: impl FnOnce(&State) -> Result<T>) -> Result<T> {
        let closed = || {
            crate::Error::FailedPrecondition(format!(
                "index '{}' has no segments to copy (in memory, or being deleted)",
                self.name
            ))
        };
        let durable = self.durable.as_ref().ok_or_else(closed)?;
        let mut state = durable.segments.begin(true)?.ok_or_else(closed)?;
        self.flush_locked(durable, &mut state, true)?;
        then(&state)
    }

    /// [`Index::flush_segments`] once the flush state is held.
    fn flush_locked(&self, durable: &Durable, state: &mut State, force: bool) -> Result<bool> {
        let started = std::time::Instant::now();
        // Before the cut, so writers are not paused for the round trip.
        if let Err(err) = durable.log.confirm_writer(&self.name) {
            state.back_off();
            return Err(err);
        }
        let (start, cut) = match self.cut(durable, state, force) {
            Ok(Some(cut)) => cut,
            Ok(None) => return Ok(false),
            Err(err) => {
                state.back_off();
                return Err(err);
            }
        };
        let covered = |start| durable.log.remove_before(&self.name, start);
        durable
            .segments
            .write(state, start, cut, started, &covered)?;
        Ok(true)
    }

    /// Step 1 of a flush (see `flush`): with writers paused, starts the next
    /// log file and takes every change since the last cut. Returns the
    /// number of the new file (where replay will start) with the LSN of the
    /// last record before it, and the changes;
    /// `None` if there is nothing to flush (or, unless `force`, the log is
    /// below the threshold after all). A failure before the new file exists
    /// takes nothing; after it, nothing can fail.
    fn cut(
        &self,
        durable: &Durable,
        state: &State,
        force: bool,
    ) -> Result<Option<(ReplayStart, Vec<Pending>)>> {
        let _gate = write_lock(&durable.gate)?;
        let wal = &durable.log;
        if !force && !wal.wants_flush(durable.segments.policy().wal_bytes) {
            // Another flush got there first.
            return Ok(None);
        }
        // A log in a shared store whose writer stopped may have a successor: no flush.
        wal.check_writable(&self.name)?;
        let empty_log = wal.is_empty();
        if empty_log && wal.number() == state.wal_start() && !state.has_pending() {
            return Ok(None);
        }
        // Take every lock first, so the cut cannot stop halfway.
        let namespaces = read_lock(&self.namespaces)?;
        let stores = namespaces
            .iter()
            .map(|(name, shared)| Ok((name, read_lock(shared)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut dropped = lock(&durable.dropped)?;
        let mut rotated = lock(&durable.rotated)?;
        let wal_start = if empty_log {
            wal.number()
        } else {
            let bytes = wal.record_bytes();
            let next = wal.rotate()?;
            // The last file (or batch) before the new start.
            rotated.push((next - 1, bytes));
            next
        };
        let mut cut: Vec<Pending> = mem::take(&mut *dropped)
            .into_iter()
            .map(Pending::Dropped)
            .collect();
        for (name, store) in &stores {
            if let Some((bytes, cleared)) = store.take_changes(name) {
                cut.push(Pending::Segment {
                    namespace: (*name).clone(),
                    cleared,
                    bytes,
                    written: None,
                });
            }
        }
        // No append is in flight (the gate): every record up to this LSN is before the start.
        Ok(Some(((wal_start, wal.last_lsn()), cut)))
    }
}
