//! Flush and compaction: how an index's memtable becomes immutable
//! segments, how the manifest follows, and how segments are merged.
//!
//! # Flush
//!
//! When the active write-ahead log file has grown past
//! [`FlushPolicy::wal_bytes`], the write that noticed it flushes, after its
//! own change is durable and applied (see `Index::flush`):
//!
//! 1. **Cut** (writers paused, readers not): the index takes its flush gate
//!    exclusively, so no change is between its log append and its apply;
//!    starts the next log file; and takes from every namespace what changed
//!    since the last cut, encoded as a segment (see
//!    `NamespaceStore::take_changes`), plus the namespaces deleted meanwhile.
//!    Every change before the cut is in an earlier log file and in these
//!    segments; every later one is in the new file.
//! 2. **Write** (no index lock held): each segment is put as a new
//!    immutable file, then a new manifest version lists them after the
//!    namespace's older segments (replacing those when the segment clears
//!    the namespace, dropping them for a deleted namespace) and names the
//!    new log file as where replay starts.
//! 3. **Clean up**: log files before that one, and segments no longer
//!    listed, are deleted.
//!
//! If step 2 fails (disk full, say), the manifest and the log files are
//! untouched, so nothing is lost; the cut segments stay pending and the
//! next flush writes them first. Files written without reaching a manifest
//! are orphans: deleted at the next start of an index on local disk, left in
//! place (and counted) in a shared store (see Recovery).
//!
//! # Compaction
//!
//! After a flush, each namespace with more than
//! [`FlushPolicy::max_segments`] segments has all of them merged, oldest
//! first, into one: the newest version of each id wins, and tombstones are
//! dropped since nothing older remains for them to hide. The merged segment
//! is written, the manifest swapped, then the inputs deleted; deleted and
//! overwritten records are then gone from disk.
//!
//! # Recovery
//!
//! [`Segments::open`] reads the manifest (none: an index that never
//! flushed) and reads and checks every listed segment, whole, in order. The
//! caller then replays the log from the manifest's first file and, only once
//! all of that succeeded, deletes the files under `segments/` that the
//! manifest does not list ([`Segments::remove_orphans`]): nothing is deleted
//! from an index that fails to open.
//!
//! That deletion happens only in a private index directory on local disk. In
//! a shared store ([`Storage::private`] is false) start-up deletes nothing it
//! does not recognise: an unlisted segment may be the work of another writer
//! of the same index whose manifest this process has not seen, so it is only
//! logged (at debug) and counted ([`StorageStats::unlisted_segments`]). The
//! only deletes in a shared store are the writer's own clean-up right after
//! a manifest swap (the segments and graph files that manifest no longer
//! needs) and dropping the index (its incarnation's whole prefix).

use std::{
    collections::{BTreeMap, HashSet},
    mem,
    sync::{Arc, Mutex, MutexGuard, TryLockError},
    time::{Duration, Instant},
};

use crate::{
    Error, IndexConfig, Namespace, Result, VectorId,
    manifest::{self, Manifest, SegmentRef},
    record::NewRecord,
    segment::{self, RecordRef, Segment},
    storage::{Storage, Version},
    timing::{self, Timer},
};

/// Where graph files live, beside `segments/`.
const GRAPHS: &str = "graphs";

/// The file-name key of a namespace's graph files: a 64-bit FNV-1a hash of
/// its name (names may be longer than a file name may be; the file itself
/// names its namespace, and loading checks it).
fn graph_key(namespace: &Namespace) -> String {
    let hash = namespace
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// How long a flush that failed waits before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// When an index flushes its memtable to segments and compacts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Flush once the active write-ahead log file holds this many bytes
    /// (default 64 MiB). Recovery replays at most about this much log.
    pub wal_bytes: u64,
    /// Merge a namespace's segments into one once it has more than this
    /// many (default 8; 0 counts as 1).
    pub max_segments: usize,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy {
            wal_bytes: 64 * 1024 * 1024,
            max_segments: 8,
        }
    }
}

/// What a durable index holds on disk, for monitoring and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Live segment files, over all namespaces.
    pub segments: usize,
    /// Their total size in bytes.
    pub segment_bytes: u64,
    /// Write-ahead log files that recovery would replay (in a shared store: log batch
    /// objects, fences included).
    pub wal_files: u64,
    /// Bytes in the active write-ahead log file (in a shared store: bytes of records logged
    /// since the last flush).
    pub wal_bytes: u64,
    /// Version of the manifest (0: never flushed).
    pub manifest_generation: u64,
    /// Flushes and compactions completed since the index was opened.
    pub flushes: u64,
    /// See `flushes`.
    pub compactions: u64,
    /// Segment files found at open that the manifest does not list and that were left in
    /// place: in a shared store start-up deletes nothing it does not recognise (on local disk
    /// they are deleted, and this stays 0).
    pub unlisted_segments: usize,
}

/// Where an index's log stands, for [`Segments::stats`]: the number of its newest log file
/// (in a shared store: of its newest batch object), and the bytes logged since the last cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ActiveLog {
    pub(crate) last: u64,
    pub(crate) bytes: u64,
}

/// Changes cut from the memtable that no manifest lists yet, oldest first.
#[derive(Debug)]
pub(crate) enum Pending {
    /// The segment of one namespace.
    Segment {
        namespace: Namespace,
        /// Whether it replaces the namespace's older segments.
        cleared: bool,
        /// Its bytes until written; emptied once `written`.
        bytes: Vec<u8>,
        written: Option<SegmentRef>,
    },
    /// A deleted namespace: its segments go.
    Dropped(Namespace),
}

/// Flush state, under [`Segments::state`].
#[derive(Debug)]
pub(crate) struct State {
    manifest: Manifest,
    /// Of the manifest as last read or written; `None` if there is none.
    version: Option<Version>,
    pending: Vec<Pending>,
    /// Set when the index is dropped: no file may be written any more.
    closed: bool,
    /// After a failed flush, no automatic retry before this.
    retry_at: Option<Instant>,
    /// Makes the next manifest swaps fail, to test crashes between writing
    /// segments and swapping the manifest.
    #[cfg(test)]
    pub(crate) fail_manifest: bool,
}

impl State {
    /// Where replay starts according to the current manifest.
    pub(crate) fn wal_start(&self) -> u64 {
        self.manifest.wal_start
    }

    /// Notes a failed flush: no automatic retry for a moment.
    pub(crate) fn back_off(&mut self) {
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
    }

    /// Whether cut changes wait for a manifest.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The current manifest (what a backup copies, see `backup`).
    pub(crate) fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

/// Counters published for [`StorageStats`], so reading them never waits
/// for a flush in progress.
#[derive(Debug, Default, Clone, Copy)]
struct Published {
    segments: usize,
    segment_bytes: u64,
    generation: u64,
    wal_start: u64,
    flushes: u64,
    compactions: u64,
    unlisted_segments: usize,
}

/// The segments and manifest of one durable index, and the flushes and
/// compactions that change them.
#[derive(Debug)]
pub(crate) struct Segments {
    index: String,
    config: IndexConfig,
    policy: FlushPolicy,
    storage: Arc<dyn Storage>,
    /// Held through a whole flush or compaction: one at a time.
    state: Mutex<State>,
    published: Mutex<Published>,
    /// Segment files found at open that the manifest does not list.
    orphans: Mutex<Vec<String>>,
    /// Receives the duration of every flush and compaction (the engine's storage timer, or
    /// none).
    timer: Timer,
    /// Runs once inside the next graph save, after its checks and before it
    /// writes: tests race a drop of the index against it.
    #[cfg(test)]
    pub(crate) before_graph_put: Mutex<Option<GraphHook>>,
}

/// A test's step inside a graph save (see `Segments::before_graph_put`).
#[cfg(test)]
pub(crate) struct GraphHook(pub(crate) Box<dyn FnOnce() + Send>);

#[cfg(test)]
impl std::fmt::Debug for GraphHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GraphHook")
    }
}

impl Segments {
    /// The segments of a new index: none.
    pub(crate) fn new(
        index: &str,
        config: IndexConfig,
        policy: FlushPolicy,
        storage: Arc<dyn Storage>,
    ) -> Self {
        Segments::with_manifest(index, config, policy, storage, Manifest::empty(), None)
    }

    fn with_manifest(
        index: &str,
        config: IndexConfig,
        policy: FlushPolicy,
        storage: Arc<dyn Storage>,
        manifest: Manifest,
        version: Option<Version>,
    ) -> Self {
        let segments = Segments {
            index: index.to_owned(),
            config,
            policy,
            storage,
            state: Mutex::new(State {
                manifest,
                version,
                pending: Vec::new(),
                closed: false,
                retry_at: None,
                #[cfg(test)]
                fail_manifest: false,
            }),
            published: Mutex::new(Published::default()),
            orphans: Mutex::new(Vec::new()),
            timer: Timer::default(),
            #[cfg(test)]
            before_graph_put: Mutex::new(None),
        };
        if let Ok(state) = segments.state.lock() {
            segments.publish(&state.manifest, |_| {});
        }
        segments
    }

    /// Recovers the segments of an existing index: reads the manifest and
    /// every segment it lists (all checked whole), handing them to `restore`
    /// namespace by namespace (each namespace's segments oldest first, read
    /// as the iterator is advanced), and notes unlisted segment files. The
    /// caller replays the log from [`Segments::wal_start`] on top, then calls
    /// [`Segments::remove_orphans`].
    pub(crate) fn open(
        index: &str,
        config: IndexConfig,
        policy: FlushPolicy,
        storage: Arc<dyn Storage>,
        mut restore: impl FnMut(&Namespace, &mut dyn Iterator<Item = Result<Segment>>) -> Result<()>,
    ) -> Result<Self> {
        let location = storage.location(manifest::PATH);
        let (mut manifest, version) = match storage
            .get_manifest(manifest::PATH)
            .map_err(|err| err.into_error(format!("cannot read {}", location.display())))?
        {
            None => (Manifest::empty(), None),
            Some((bytes, version)) => {
                let manifest = Manifest::decode(&bytes)
                    .map_err(|(offset, reason)| Error::corrupt(&location, offset, reason))?;
                (manifest, Some(version))
            }
        };

        for (name, listed) in &manifest.namespaces {
            let mut segments = listed
                .iter()
                .map(|entry| read(storage.as_ref(), config, name, entry));
            restore(name, &mut segments)?;
        }

        // Leftovers of a flush or compaction that never reached the manifest.
        let live: HashSet<u64> = manifest.segments().map(|s| s.number).collect();
        let listed = storage.list(segment::DIR).map_err(|err| {
            err.into_error(format!(
                "cannot list {}",
                storage.location(segment::DIR).display()
            ))
        })?;
        let mut orphans = Vec::new();
        for file in listed {
            let number = segment::parse_path(&file.path);
            if number.is_some_and(|n| live.contains(&n)) {
                continue;
            }
            if let Some(number) = number {
                // Never reuse the number of a file that may still be there.
                manifest.next_segment = manifest.next_segment.max(number + 1);
            }
            orphans.push(file.path);
        }
        let segments = Segments::with_manifest(index, config, policy, storage, manifest, version);
        *segments.orphans.lock().map_err(|_| poisoned())? = orphans;
        Ok(segments)
    }

    /// These segments, reporting how long each flush and compaction took to `timer`.
    pub(crate) fn timed(mut self, timer: Timer) -> Self {
        self.timer = timer;
        self
    }

    /// Deletes the segment files that [`Segments::open`] found unlisted:
    /// leftovers of a flush or compaction that never reached the manifest.
    /// Best effort; call it once recovery has succeeded. In a shared store
    /// (not [`Storage::private`]) nothing is deleted: the files are logged
    /// and counted in [`StorageStats::unlisted_segments`] instead.
    pub(crate) fn remove_orphans(&self) {
        let orphans = match self.orphans.lock() {
            Ok(mut orphans) => mem::take(&mut *orphans),
            Err(_) => return,
        };
        if !self.storage.private() {
            for path in &orphans {
                tracing::debug!(index = %self.index, file = %self.storage.location(path).display(), "leaving a segment file the manifest does not list (a shared store: start-up deletes nothing)");
            }
            if !orphans.is_empty() {
                tracing::debug!(index = %self.index, count = orphans.len(), "segment files the manifest does not list were left in the shared store");
            }
            if let Ok(mut published) = self.published.lock() {
                published.unlisted_segments = orphans.len();
            }
            return;
        }
        for path in orphans {
            tracing::warn!(index = %self.index, file = %self.storage.location(&path).display(), "deleting a segment file the manifest does not list (left by an interrupted flush or compaction)");
            if let Err(err) = self.storage.delete(&path) {
                let err = err.into_error("cannot delete it");
                tracing::warn!(index = %self.index, file = %path, error = %err, "cannot delete an unlisted segment file");
            }
        }
    }

    /// Where replay starts according to the current manifest.
    pub(crate) fn wal_start(&self) -> Result<u64> {
        Ok(self.lock()?.manifest.wal_start)
    }

    /// The LSN of the last log record before [`Segments::wal_start`], by the current manifest.
    pub(crate) fn lsn(&self) -> Result<u64> {
        Ok(self.lock()?.manifest.lsn)
    }

    /// The writer epoch of the object log's writer that wrote the current manifest (0 on
    /// local disk; see `manifest`).
    pub(crate) fn writer_epoch(&self) -> Result<u64> {
        Ok(self.lock()?.manifest.epoch)
    }

    /// Manifests written from now on carry writer epoch `epoch` (this process writes the
    /// index's object log under it, no older than the current manifest's).
    pub(crate) fn set_writer_epoch(&self, epoch: u64) -> Result<()> {
        let mut state = self.lock()?;
        state.manifest.epoch = state.manifest.epoch.max(epoch);
        Ok(())
    }

    /// The flush and compaction policy.
    pub(crate) fn policy(&self) -> FlushPolicy {
        self.policy
    }

    /// Locks the flush state for a flush: waits if `wait`, else gives up
    /// when another flush runs or the last one failed moments ago. `None`
    /// also when the index was dropped.
    pub(crate) fn begin(&self, wait: bool) -> Result<Option<MutexGuard<'_, State>>> {
        let state = match self.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::WouldBlock) if wait => self.lock()?,
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Poisoned(_)) => return Err(poisoned()),
        };
        let backing_off = state.retry_at.is_some_and(|at| Instant::now() < at);
        if state.closed || (backing_off && !wait) {
            return Ok(None);
        }
        Ok(Some(state))
    }

    /// Saves the graph file of `namespace` (see `hnsw::file`) and deletes
    /// its older ones. Skipped (false) while a flush or compaction runs or
    /// once the index is closed; graph files are derived data, so a skipped
    /// or failed save only means a rebuild after the next restart.
    ///
    /// The flush lock is held through the write: [`Segments::close`] waits
    /// for it, so once a dropped index is closed no save can write into
    /// (and so recreate) its removed directory.
    pub(crate) fn save_graph(&self, namespace: &Namespace, bytes: &[u8]) -> Result<bool> {
        let _state = match self.state.try_lock() {
            Ok(state) if !state.closed => state,
            _ => return Ok(false),
        };
        #[cfg(test)]
        if let Some(GraphHook(hook)) = self
            .before_graph_put
            .lock()
            .ok()
            .and_then(|mut hook| hook.take())
        {
            hook();
        }
        let key = graph_key(namespace);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = format!("{GRAPHS}/{key}-{nanos:032}.graph");
        let what = || {
            format!(
                "cannot save the graph of namespace '{}'",
                namespace.as_str()
            )
        };
        self.storage
            .put_immutable(&path, bytes)
            .map_err(|err| err.into_error(what()))?;
        for old in self.graph_files(&key)? {
            if old != path
                && let Err(err) = self.storage.delete(&old)
            {
                tracing::warn!(index = %self.index, file = %old, error = %err.into_error("cannot delete an old graph file"), "old graph file left behind");
            }
        }
        Ok(true)
    }

    /// The newest graph file of `namespace`, if there is one.
    pub(crate) fn load_graph(&self, namespace: &Namespace) -> Result<Option<Vec<u8>>> {
        let Some(newest) = self.graph_files(&graph_key(namespace))?.into_iter().max() else {
            return Ok(None);
        };
        let what = || format!("cannot read graph file {newest}");
        self.storage
            .get(&newest)
            .map(Some)
            .map_err(|err| err.into_error(what()))
    }

    /// Graph files of the namespace whose key is `key`.
    fn graph_files(&self, key: &str) -> Result<Vec<String>> {
        let prefix = format!("{GRAPHS}/{key}-");
        let listed = self
            .storage
            .list(GRAPHS)
            .map_err(|err| err.into_error("cannot list graph files"))?;
        Ok(listed
            .into_iter()
            .map(|file| file.path)
            .filter(|path| path.starts_with(&prefix))
            .collect())
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| poisoned())
    }

    /// Stops all writing of files (the index is being dropped), after
    /// waiting for a flush or compaction in progress.
    pub(crate) fn close(&self) {
        match self.state.lock() {
            Ok(mut state) => state.closed = true,
            Err(poisoned) => poisoned.into_inner().closed = true,
        }
    }

    /// Segment and log figures, without waiting for a flush in progress.
    pub(crate) fn stats(&self, log: ActiveLog) -> StorageStats {
        let published = self.published.lock().map(|p| *p).unwrap_or_default();
        StorageStats {
            segments: published.segments,
            segment_bytes: published.segment_bytes,
            wal_files: (log.last + 1).saturating_sub(published.wal_start),
            wal_bytes: log.bytes,
            manifest_generation: published.generation,
            flushes: published.flushes,
            compactions: published.compactions,
            unlisted_segments: published.unlisted_segments,
        }
    }

    /// Test hook: makes manifest swaps fail (or succeed again).
    #[cfg(test)]
    pub(crate) fn fail_manifest(&self, fail: bool) {
        self.lock().expect("not poisoned in tests").fail_manifest = fail;
    }

    /// Steps 2 and 3 of a flush (see the module docs): writes `cut` and
    /// every earlier pending change as segments, swaps the manifest to
    /// start replay at log file `wal_start` (numbering its records on from `lsn`, the LSN of
    /// the last record before it), deletes what it covers (the log through `covered`, called
    /// with `wal_start` once the manifest is swapped), then
    /// compacts. On error the cut stays pending for the next flush. `started`: when the flush
    /// began (before the cut), for its reported duration.
    pub(crate) fn write(
        &self,
        state: &mut State,
        (wal_start, lsn): (u64, u64),
        cut: Vec<Pending>,
        started: Instant,
        covered: &dyn Fn(u64),
    ) -> Result<()> {
        state.pending.extend(cut);
        let written = self.write_pending(state, wal_start, lsn, covered);
        if let Err(err) = written {
            state.back_off();
            return Err(err);
        }
        self.timer.record(timing::FLUSH, started.elapsed());
        state.retry_at = None;
        self.compact(state)
    }

    fn write_pending(
        &self,
        state: &mut State,
        wal_start: u64,
        lsn: u64,
        covered: &dyn Fn(u64),
    ) -> Result<()> {
        for pending in &mut state.pending {
            let Pending::Segment {
                namespace,
                bytes,
                written: written @ None,
                ..
            } = pending
            else {
                continue;
            };
            let number = state.manifest.next_segment;
            // Burnt even if the put fails: a number is never reused.
            state.manifest.next_segment += 1;
            self.put_segment(number, bytes)?;
            tracing::debug!(index = %self.index, namespace = %namespace.label(), segment = number, bytes = bytes.len(), "wrote a segment");
            *written = Some(SegmentRef {
                number,
                bytes: bytes.len() as u64,
            });
            *bytes = Vec::new();
        }

        let mut next = state.manifest.clone();
        next.generation += 1;
        next.wal_start = wal_start;
        next.lsn = lsn;
        let mut obsolete = Vec::new();
        for pending in &state.pending {
            match pending {
                Pending::Dropped(namespace) => {
                    obsolete.extend(next.namespaces.remove(namespace).unwrap_or_default());
                }
                Pending::Segment {
                    namespace,
                    cleared,
                    written,
                    ..
                } => {
                    let written = written.expect("every pending segment was written above");
                    let listed = next.namespaces.entry(namespace.clone()).or_default();
                    if *cleared {
                        obsolete.append(listed);
                    }
                    listed.push(written);
                }
            }
        }
        self.swap(state, next)?;
        state.pending.clear();
        self.publish(&state.manifest, |p| p.flushes += 1);

        covered(wal_start);
        self.delete_segments(&obsolete);
        Ok(())
    }

    /// Merges the segments of every namespace that has too many.
    fn compact(&self, state: &mut State) -> Result<()> {
        let crowded: Vec<Namespace> = state
            .manifest
            .namespaces
            .iter()
            .filter(|(_, listed)| listed.len() > self.policy.max_segments.max(1))
            .map(|(name, _)| name.clone())
            .collect();
        for namespace in crowded {
            let started = Instant::now();
            let inputs = state.manifest.namespaces[&namespace].clone();
            let bytes = self.merge(&namespace, &inputs)?;
            let number = state.manifest.next_segment;
            state.manifest.next_segment += 1;
            self.put_segment(number, &bytes)?;
            let mut next = state.manifest.clone();
            next.generation += 1;
            next.namespaces.insert(
                namespace.clone(),
                vec![SegmentRef {
                    number,
                    bytes: bytes.len() as u64,
                }],
            );
            self.swap(state, next)?;
            self.publish(&state.manifest, |p| p.compactions += 1);
            self.timer.record(timing::COMPACTION, started.elapsed());
            tracing::debug!(index = %self.index, namespace = %namespace.label(), inputs = inputs.len(), segment = number, bytes = bytes.len(), "compacted segments");
            self.delete_segments(&inputs);
        }
        Ok(())
    }

    /// One segment with the newest version of every live record of
    /// `inputs`, which are all the segments of `namespace`, oldest first.
    fn merge(&self, namespace: &Namespace, inputs: &[SegmentRef]) -> Result<Vec<u8>> {
        let mut merged: BTreeMap<VectorId, Option<NewRecord>> = BTreeMap::new();
        let mut schema_fields = None;
        for entry in inputs {
            let Segment {
                header,
                records,
                tombstones,
            } = read(self.storage.as_ref(), self.config, namespace, entry)?;
            if header.cleared {
                merged.clear();
            }
            merged.extend(tombstones.into_iter().map(|id| (id, None)));
            merged.extend(records.into_iter().map(|r| (r.id.clone(), Some(r))));
            schema_fields = header.schema_fields;
        }
        let records: Vec<RecordRef<'_>> = merged.values().flatten().map(RecordRef::from).collect();
        let header = segment::Header {
            namespace: namespace.clone(),
            // The merge reaches down to the oldest segment: it is the base.
            cleared: true,
            schema_fields,
        };
        Ok(segment::encode(
            &header,
            self.config.dimension.len(),
            &records,
            &[],
        ))
    }

    fn put_segment(&self, number: u64, bytes: &[u8]) -> Result<()> {
        let path = segment::path(number);
        self.storage.put_immutable(&path, bytes).map_err(|err| {
            err.into_error(format!(
                "cannot write the segment {} of index '{}'",
                self.storage.location(&path).display(),
                self.index
            ))
        })
    }

    /// Writes `next` as the new manifest version.
    fn swap(&self, state: &mut State, next: Manifest) -> Result<()> {
        let location = self.storage.location(manifest::PATH);
        let what = || {
            format!(
                "cannot write the manifest {} of index '{}'",
                location.display(),
                self.index
            )
        };
        #[cfg(test)]
        if state.fail_manifest {
            return Err(Error::Storage {
                code: crate::ErrorCode::Unavailable,
                message: format!("{}: injected failure", what()),
            });
        }
        let version = self
            .storage
            .put_manifest(manifest::PATH, &next.encode(), state.version.as_ref())
            .map_err(|err| err.into_error(what()))?;
        state.version = Some(version);
        state.manifest = next;
        Ok(())
    }

    /// Best effort: a segment left behind is an orphan, deleted at the next
    /// start of a local index (and left, counted, in a shared store).
    fn delete_segments(&self, obsolete: &[SegmentRef]) {
        for entry in obsolete {
            let path = segment::path(entry.number);
            if let Err(err) = self.storage.delete(&path) {
                let err = err.into_error("cannot delete it");
                tracing::warn!(index = %self.index, file = %path, error = %err, "cannot delete a segment the manifest no longer lists; it is left behind as an unlisted segment");
            }
        }
    }

    fn publish(&self, manifest: &Manifest, count: impl FnOnce(&mut Published)) {
        let Ok(mut published) = self.published.lock() else {
            return;
        };
        published.segments = manifest.segments().count();
        published.segment_bytes = manifest.segments().map(|s| s.bytes).sum();
        published.generation = manifest.generation;
        published.wal_start = manifest.wal_start;
        count(&mut published);
    }
}

/// Reads the listed segment `entry` of `namespace` and checks it whole.
pub(crate) fn read(
    storage: &dyn Storage,
    config: IndexConfig,
    namespace: &Namespace,
    entry: &SegmentRef,
) -> Result<Segment> {
    let path = segment::path(entry.number);
    let location = storage.location(&path);
    let bytes = storage.get(&path).map_err(|err| match err {
        crate::storage::StoreError::NotFound => Error::corrupt(
            &location,
            0,
            "missing: the manifest lists this segment, but the file does not exist",
        ),
        other => other.into_error(format!("cannot read {}", location.display())),
    })?;
    if bytes.len() as u64 != entry.bytes {
        return Err(Error::corrupt(
            &location,
            0,
            format!(
                "the file is {} bytes, but the manifest says {}",
                bytes.len(),
                entry.bytes
            ),
        ));
    }
    let segment = segment::decode(&bytes, config.dimension.len())
        .map_err(|(offset, reason)| Error::corrupt(&location, offset, reason))?;
    if segment.header.namespace != *namespace {
        return Err(Error::corrupt(
            &location,
            0,
            format!(
                "the segment belongs to namespace '{}', but the manifest lists it under '{}'",
                segment.header.namespace.label(),
                namespace.label()
            ),
        ));
    }
    Ok(segment)
}

fn poisoned() -> Error {
    Error::Internal("the segments of the index are unavailable after an earlier panic".to_owned())
}
