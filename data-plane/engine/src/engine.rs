//! All indexes of this node, by name, and where their data lives: in memory
//! ([`Engine::new`]), each in its own local directory ([`Engine::open`]), or
//! wholly in a shared object store, the write-ahead log included
//! ([`Engine::open_on_store`]; layout in `storage` and `dir`, the object log in
//! `objlog` and `index/log.rs`).

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock, Weak},
    time::Duration,
};

use crate::{
    CatchUp, Error, FlushPolicy, Index, IndexConfig, Result, SearchParams,
    backup::{self, BackupInfo},
    dir::{self, Role},
    indexer::Indexer,
    locks::{read_lock, write_lock},
    namespace::ann::Ann,
    objlog::{LogSetup, ObjectLogConfig, Taken},
    pressure::{self, MemoryBudget},
    storage::{Placement, Vault},
    timing::{self, StorageTimer, Timer},
};

/// All indexes of this node, by name. Cheap to clone: clones share the same
/// indexes.
///
/// [`Engine::new`] keeps everything in memory; [`Engine::open`] keeps each
/// index durable in its own directory (see the crate's `# Durability`);
/// [`Engine::open_on_store`] keeps everything, the log included, in a shared
/// object store.
///
/// Index names are validated by the control plane; here they only have to be
/// usable as directory names (and, on a shared store, carry an incarnation).
#[derive(Clone, Default)]
pub struct Engine {
    indexes: Arc<RwLock<BTreeMap<String, Arc<Index>>>>,
    /// Where index directories live; `None` keeps everything in memory.
    root: Option<Arc<Path>>,
    /// Serializes creating, opening, dropping and removing indexes, so their
    /// directory work never races while lookups stay on the quick map lock.
    lifecycle: Arc<Mutex<()>>,
    /// When durable indexes flush and compact.
    policy: FlushPolicy,
    /// Where durable indexes keep their segments and manifests.
    placement: Placement,
    /// The background workers building ANN graphs, shared by all clones.
    indexer: Arc<Indexer>,
    /// Namespaces with fewer records get no graph; `None`: the default.
    ann_min_rows: Option<usize>,
    /// Writes that add data are refused past this (see `pressure`); `None`: no budget.
    memory: Option<Arc<MemoryBudget>>,
    /// Where the durable indexes' logs and segments report their timings; none by default.
    timer: Timer,
    /// How indexes in a shared store write their object logs (lease, batches).
    log: LogSetup,
    /// Whether the thread tailing the indexes this process follows runs (see
    /// [`Engine::follow_round`]).
    following: Arc<std::sync::atomic::AtomicBool>,
}

/// Whether a process would rather write an index in a shared store or follow it (see
/// [`Engine::create_index_preferring`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preference {
    /// Take the index's writer lease unless another live process holds it.
    #[default]
    Write,
    /// Follow the index; take it over only once its writer stopped (released its lease, or
    /// did not renew it for a full TTL).
    Follow,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.index_names().unwrap_or_default();
        f.debug_struct("Engine")
            .field("root", &self.root)
            .field("indexes", &names)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Engine {
    /// Timing name of one `fdatasync` of a write-ahead log batch (shared by its writers).
    pub const TIMED_WAL_FSYNC: &'static str = timing::WAL_FSYNC;
    /// Timing name of one flush: cutting the memtable, writing its segments, swapping the
    /// manifest and deleting the log files it covers (compaction not included).
    pub const TIMED_FLUSH: &'static str = timing::FLUSH;
    /// Timing name of one compaction: merging one namespace's segments into one.
    pub const TIMED_COMPACTION: &'static str = timing::COMPACTION;

    /// An in-memory engine without indexes: nothing is written to disk.
    pub fn new() -> Self {
        Engine::default()
    }

    /// A durable engine keeping each index in `<root>/<index name>/`. Does no
    /// IO: [`Engine::create_index`] creates directories, and
    /// [`Engine::open_index`] recovers existing ones.
    pub fn open(root: impl Into<PathBuf>) -> Self {
        Engine::open_with(root, FlushPolicy::default())
    }

    /// [`Engine::open`] with a flush and compaction policy other than the
    /// default (64 MiB of log per flush, at most 8 segments per namespace).
    pub fn open_with(root: impl Into<PathBuf>, policy: FlushPolicy) -> Self {
        Engine {
            root: Some(Arc::from(root.into())),
            policy,
            ..Engine::default()
        }
    }

    /// A durable engine keeping its indexes in a shared object store (a
    /// bucket), under `prefix`: each index's description, manifest, segments,
    /// graph files, writer lease and write-ahead log (`wal/<seq>` objects) live
    /// under `<prefix>/indexes/<project>/<name>/<incarnation>/`, so a fresh
    /// process on the same store opens them with every acknowledged write.
    /// Nothing of an index is on local disk (`root` holds no index data).
    /// Does no IO.
    ///
    /// A write is acknowledged only once its group-commit batch is stored as a
    /// new object; one process at a time writes an index, holding its lease
    /// (see [`Engine::with_object_log`]): opening or creating an index another
    /// live process writes opens it as a follower, which serves reads, tails the
    /// log and refuses writes ("not the writer"), and takes the index over once
    /// its writer stops (see [`Index::catch_up`]). Dropping the index
    /// ([`Engine::drop_index`], or the last reference to it) releases the lease,
    /// so another process takes it over at once.
    ///
    /// Index names must be storage names with an incarnation
    /// (`name@project@incarnation`, see `larch_model::IndexKey::storage_name`):
    /// creating never deletes, and a name created again gets a new incarnation
    /// and never meets the old objects. `store` must support conditional
    /// creates (`PutMode::Create`), as S3-compatible stores, `InMemory` and
    /// `LocalFileSystem` do.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use larch_engine::{Dimension, Engine, FetchRequest, FlushPolicy, IndexConfig, Metric, UpsertRequest, VectorInput};
    /// use larch_engine::object_store::{memory::InMemory, path::Path};
    ///
    /// let root = tempfile::tempdir()?;
    /// let bucket = Arc::new(InMemory::new());
    /// let config = IndexConfig { dimension: Dimension::new(2)?, metric: Metric::Cosine };
    /// let engine = Engine::open_on_store(root.path(), FlushPolicy::default(), bucket.clone(), Path::from("larch"));
    /// let index = engine.create_index("movies@default@0a1b2c3d", config)?;
    /// let vector = VectorInput { id: "a".into(), values: vec![1.0, 0.0], ..Default::default() };
    /// index.upsert(UpsertRequest { namespace: "films".into(), vectors: vec![vector] })?; // in the bucket now
    /// drop((index, engine)); // releases the index's writer lease
    ///
    /// // Another process, with an empty directory of its own, finds the index and the write.
    /// let other = tempfile::tempdir()?;
    /// let engine = Engine::open_on_store(other.path(), FlushPolicy::default(), bucket, Path::from("larch"));
    /// let index = engine.open_index("movies@default@0a1b2c3d", config)?;
    /// let fetched = index.fetch(FetchRequest { namespace: "films".into(), ids: vec!["a".into()] })?;
    /// assert_eq!(fetched.vectors.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_on_store(
        root: impl Into<PathBuf>,
        policy: FlushPolicy,
        store: Arc<dyn object_store::ObjectStore>,
        prefix: object_store::path::Path,
    ) -> Self {
        Engine {
            placement: Placement::Shared { store, prefix },
            ..Engine::open_with(root, policy)
        }
    }

    /// How the indexes of an engine on a shared store write their logs: lease TTL and batch
    /// size (default [`ObjectLogConfig::default`]). Applies to indexes created or opened from
    /// now on; nothing for other engines.
    pub fn with_object_log(mut self, config: ObjectLogConfig) -> Self {
        self.log = LogSetup::new(config);
        self
    }

    /// Leases of indexes opened from now on are timed by `clock` (tests move a fake one).
    #[cfg(test)]
    pub(crate) fn with_log_clock(mut self, clock: Arc<dyn crate::objlog::clock::Clock>) -> Self {
        self.log = self.log.with_clock(clock);
        self
    }

    /// Where this process takes writes forwarded by followers, as written into the writer
    /// leases it takes ([`ObjectLogConfig::address`]; empty if not said).
    pub fn advertised_address(&self) -> &str {
        self.log.address()
    }

    /// Whether indexes keep their files in a shared object store
    /// ([`Engine::open_on_store`]).
    pub fn is_on_store(&self) -> bool {
        self.placement.is_shared()
    }

    /// The directory holding index directories; `None` for an in-memory engine.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// Creates an empty index; `AlreadyExists` if the name is taken. A
    /// durable engine first replaces any stale directory of that name (left
    /// by a crash) with a fresh one holding the index description and an
    /// empty log, synced to disk. An engine on a shared store
    /// ([`Engine::open_on_store`]) deletes nothing: it stores the description
    /// once, and if this incarnation is already in the store with the same
    /// dimension and metric (a repeated create), opens it as it is.
    pub fn create_index(&self, name: &str, config: IndexConfig) -> Result<Arc<Index>> {
        self.create_index_preferring(name, config, Preference::Write, SearchParams::default())
    }

    /// [`Engine::create_index`]; on a shared store, with `preference` saying whether this
    /// process should write the index or follow it (it follows anyway while another live
    /// process writes it). A followed index serves reads from the bucket, tails its log and
    /// refuses changes ("not the writer"; see [`Index::writer_address`]). `search` is in
    /// force before the indexer first sees the index (see [`Engine::open_index_preferring`]).
    pub fn create_index_preferring(
        &self,
        name: &str,
        config: IndexConfig,
        preference: Preference,
        search: SearchParams,
    ) -> Result<Arc<Index>> {
        dir::check_name(name)?;
        let _lifecycle = self.lifecycle()?;
        self.check_free(name)?;
        let index = match &self.root {
            None => Index::new(name, config),
            Some(root) => {
                let (namespaces, durable) =
                    dir::create(root, name, config, self.keeping(), preference.role())?;
                Index::durable(name, config, namespaces, durable)
            }
        };
        self.register(name, index, search)
    }

    /// Recovers an index created by an earlier run: checks that its stored
    /// description matches `config` (`FailedPrecondition` if not), loads its
    /// segments, replays the rest of its write-ahead log into memory and
    /// registers it. `NotFound` if it has no
    /// directory (on a shared store: no description there);
    /// [`Error::Corrupt`] if its files are damaged, in which case
    /// nothing is served. An in-memory engine has nothing to open
    /// (`FailedPrecondition`).
    pub fn open_index(&self, name: &str, config: IndexConfig) -> Result<Arc<Index>> {
        self.open_index_preferring(name, config, Preference::Write, SearchParams::default())
    }

    /// [`Engine::open_index`], with a [`Preference`] as for
    /// [`Engine::create_index_preferring`] and the index's ANN parameters, in force before the
    /// indexer first looks at the index: set afterwards, the indexer could meet a saved graph
    /// built with other than the defaults (another degree or quantization), rebuild it with the
    /// defaults and then again with `search`.
    pub fn open_index_preferring(
        &self,
        name: &str,
        config: IndexConfig,
        preference: Preference,
        search: SearchParams,
    ) -> Result<Arc<Index>> {
        dir::check_name(name)?;
        let Some(root) = &self.root else {
            return Err(Error::FailedPrecondition(format!(
                "cannot open index '{name}': the engine keeps indexes in memory only"
            )));
        };
        let _lifecycle = self.lifecycle()?;
        self.check_free(name)?;
        let (namespaces, durable) =
            dir::open(root, name, config, self.keeping(), preference.role())?;
        self.register(
            name,
            Index::durable(name, config, namespaces, durable),
            search,
        )
    }

    /// The index called `name`; `NotFound` if there is none.
    pub fn index(&self, name: &str) -> Result<Arc<Index>> {
        read_lock(&self.indexes)?
            .get(name)
            .cloned()
            .ok_or_else(|| index_not_found(name))
    }

    /// Removes the index called `name` and its data; `NotFound` if there is
    /// none. On a shared store its data is exactly its incarnation's prefix:
    /// other incarnations of the name are untouched. Requests already holding
    /// the index finish against it. If its
    /// directory cannot be deleted, the index is dropped all the same and the
    /// failure is logged; the directory then shows up in
    /// [`Engine::index_dirs`] for [`Engine::remove_orphan`].
    pub fn drop_index(&self, name: &str) -> Result<()> {
        let _lifecycle = self.lifecycle()?;
        let index = write_lock(&self.indexes)?
            .remove(name)
            .ok_or_else(|| index_not_found(name))?;
        // Requests still holding the index may write to its log, but no
        // flush writes files any more once this returns.
        index.close();
        if let Some(root) = &self.root
            && let Err(err) = dir::remove(root, name)
        {
            tracing::warn!(index = %name, error = %err, "cannot delete the data of a dropped index; it is left for orphan collection");
        }
        if let Err(err) = self.placement.remove(name) {
            tracing::warn!(index = %name, error = %err, "cannot delete the stored segments of a dropped index");
        }
        Ok(())
    }

    /// Stops every index in a shared store from writing and releases its writer lease, so
    /// other processes take the indexes over at once (call it when draining, e.g. on
    /// SIGTERM); reads go on, writes are refused ("not the writer"). Nothing for indexes on
    /// local disk or in memory.
    pub fn release_leases(&self) -> Result<()> {
        let indexes: Vec<Arc<Index>> = read_lock(&self.indexes)?.values().cloned().collect();
        for index in indexes {
            index.release_log();
        }
        Ok(())
    }

    /// Names of all indexes, sorted.
    pub fn index_names(&self) -> Result<Vec<String>> {
        Ok(read_lock(&self.indexes)?.keys().cloned().collect())
    }

    /// Names of the directories under the root, sorted, whether or not an
    /// index is open on them: directories of indexes, and leftovers of
    /// interrupted work (names starting with `.`, never an index name). The
    /// server moves aside those its catalog does not know with
    /// [`Engine::quarantine_orphan`] and deletes leftovers with
    /// [`Engine::remove_orphan`]. Empty for an in-memory engine or a root
    /// that does not exist yet.
    pub fn index_dirs(&self) -> Result<Vec<String>> {
        match &self.root {
            None => Ok(Vec::new()),
            Some(root) => dir::list(root),
        }
    }

    /// Deletes the directory `name` (an entry of [`Engine::index_dirs`]) of
    /// an index that is not open, and on a shared store its incarnation's
    /// objects; does nothing if there are none.
    /// `FailedPrecondition` for an open index: drop it instead.
    ///
    /// Only for data that was asked to go (a deleted index, a leftover of
    /// interrupted work); a directory nobody asked about is moved aside with
    /// [`Engine::quarantine_orphan`] instead.
    pub fn remove_orphan(&self, name: &str) -> Result<()> {
        check_dir_name(name)?;
        let _lifecycle = self.lifecycle()?;
        self.check_closed(name)?;
        let Some(root) = &self.root else {
            return Ok(());
        };
        dir::remove(root, name).map_err(|err| {
            Error::storage(format!("cannot delete {}", root.join(name).display()), &err)
        })?;
        self.placement.remove(name)
    }

    /// Moves the directory `name` (an entry of [`Engine::index_dirs`]) of an
    /// index that is not open to `<into>/<name>-<unix seconds>` (a rename:
    /// `into` must be on the same file system as the root, e.g. beside it),
    /// creating `into` if needed, and returns where it went; `None` if there
    /// was no such directory or the engine keeps indexes in memory.
    /// Nothing is deleted: the operator restores the directory by moving it
    /// back (with a catalog entry for it) or removes it.
    /// `FailedPrecondition` for an open index.
    pub fn quarantine_orphan(&self, name: &str, into: &Path) -> Result<Option<PathBuf>> {
        check_dir_name(name)?;
        let _lifecycle = self.lifecycle()?;
        self.check_closed(name)?;
        let Some(root) = &self.root else {
            return Ok(None);
        };
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        dir::quarantine(root, name, into, seconds).map_err(|err| {
            Error::storage(
                format!(
                    "cannot move {} into {}",
                    root.join(name).display(),
                    into.display()
                ),
                &err,
            )
        })
    }

    /// `FailedPrecondition` if an index is open on the directory `name`.
    fn check_closed(&self, name: &str) -> Result<()> {
        if read_lock(&self.indexes)?.contains_key(name) {
            return Err(Error::FailedPrecondition(format!(
                "index '{name}' is open; drop it instead"
            )));
        }
        Ok(())
    }

    fn lifecycle(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        self.lifecycle.lock().map_err(|_| {
            Error::Internal("engine state is unavailable after an earlier panic".to_owned())
        })
    }

    /// How this engine keeps its indexes, for `dir`.
    fn keeping(&self) -> dir::Keeping<'_> {
        dir::Keeping {
            placement: &self.placement,
            policy: self.policy,
            timer: &self.timer,
            log: &self.log,
        }
    }

    /// `AlreadyExists` if an index called `name` is registered.
    fn check_free(&self, name: &str) -> Result<()> {
        if read_lock(&self.indexes)?.contains_key(name) {
            return Err(Error::AlreadyExists(format!(
                "index '{name}' already exists"
            )));
        }
        Ok(())
    }

    /// Registers `index`; the caller holds the lifecycle lock and checked the name.
    /// Namespaces with fewer than `min_rows` records are searched exactly
    /// and get no ANN graph (default 5,000); applies to indexes created or
    /// opened from now on.
    pub fn with_ann_min_rows(mut self, min_rows: usize) -> Self {
        self.ann_min_rows = Some(min_rows);
        self
    }

    /// Refuses writes that add data once the process's memory — its resident set, plus the
    /// graph nodes still to be built for accepted rows, plus the write — would pass `bytes`
    /// (see the `pressure` module); reads and deletes go on. Applies to indexes created or
    /// opened from now on.
    pub fn with_memory_budget(mut self, bytes: u64) -> Self {
        let measure = memory_measure(Arc::downgrade(&self.indexes));
        self.memory = Some(Arc::new(MemoryBudget::new(bytes, measure)));
        self
    }

    /// Sends the duration of every timed storage step of this engine's durable indexes —
    /// [`Engine::TIMED_WAL_FSYNC`], [`Engine::TIMED_FLUSH`], [`Engine::TIMED_COMPACTION`] — to
    /// `timer` (e.g. a server's metrics); other engines in the process report elsewhere.
    /// Applies to indexes created or opened from now on: each index's log and segments hold
    /// a clone of it, so recording takes no lock.
    pub fn with_storage_timer(mut self, timer: StorageTimer) -> Self {
        self.timer = Timer::new(timer);
        self
    }

    /// Makes `index` (with its ANN parameters `search`) reachable by name and by the indexer.
    fn register(&self, name: &str, index: Index, search: SearchParams) -> Result<Arc<Index>> {
        // Before the indexer can see the index: nothing to wake yet.
        index.set_search_params(search);
        let index = Arc::new(index);
        if self.placement.is_shared() {
            self.start_following();
        }
        if let Some(memory) = &self.memory {
            index.attach_memory_budget(Arc::clone(memory));
        }
        index.attach_indexer(
            self.indexer.signal(),
            self.ann_min_rows.unwrap_or(Ann::MIN_ROWS),
        );
        write_lock(&self.indexes)?.insert(name.to_owned(), Arc::clone(&index));
        let indexes = Arc::downgrade(&self.indexes);
        self.indexer.start(move || build_round(&indexes));
        Ok(index)
    }
}

/// Following indexes in a shared store (see `index/follow.rs`).
impl Engine {
    /// Starts the follower thread once: every `tail_interval` (up to eight times that while
    /// the logs are idle) it runs [`Engine::follow_round`], until the engine is gone.
    fn start_following(&self) {
        if self
            .following
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let indexes = Arc::downgrade(&self.indexes);
        let template = Engine {
            indexes: Arc::default(),
            ..self.clone()
        };
        let interval = self.log.tail_interval();
        let spawned = std::thread::Builder::new()
            .name("larch-follow".to_owned())
            .spawn(move || {
                let mut idle = 0u32;
                loop {
                    std::thread::sleep(interval * (1 << idle.min(3)));
                    let Some(indexes) = indexes.upgrade() else {
                        return;
                    };
                    let engine = Engine {
                        indexes,
                        ..template.clone()
                    };
                    let worked = engine.follow_round();
                    drop(engine);
                    idle = if worked { 0 } else { idle.saturating_add(1) };
                }
            });
        if let Err(err) = spawned {
            self.following
                .store(false, std::sync::atomic::Ordering::Release);
            tracing::error!(error = %err, "cannot start the thread following indexes; followed indexes catch up only when a forwarded write waits for them");
        }
    }

    /// One round over the indexes in a shared store: applies the batches their writers
    /// stored since the last round to those this process follows, opens afresh one whose
    /// log moved past what it read (the writer flushed and deleted those batches), and takes
    /// one over whose writer stopped. An index this process wrote until its writer stopped
    /// for good (fenced, lease lost: e.g. paused past its TTL) is opened afresh too, as a
    /// follower of whoever writes it now (or as the writer again if nobody does). Returns
    /// whether anything was applied or reopened.
    pub(crate) fn follow_round(&self) -> bool {
        let open: Vec<(String, Arc<Index>)> = match read_lock(&self.indexes) {
            Ok(map) => map
                .iter()
                .map(|(name, index)| (name.clone(), Arc::clone(index)))
                .collect(),
            Err(_) => return false,
        };
        let mut worked = false;
        for (name, index) in open {
            if index.writer_stopped() {
                tracing::info!(index = %name, "this process no longer writes the index; opening it afresh");
                // Hands the lease on if it is still held (an append's outcome was unknown).
                index.release_log();
                worked |= self.reopen(&name, &index, Role::Write);
                continue;
            }
            match index.catch_up() {
                Ok(CatchUp::AtEnd(applied)) => worked |= applied > 0,
                Ok(CatchUp::More(_)) => worked = true,
                Ok(CatchUp::Reload) => {
                    tracing::info!(index = %name, "the writer flushed past this follower's place in the log; opening the index afresh");
                    worked |= self.reopen(&name, &index, Role::Follow);
                    continue;
                }
                Ok(CatchUp::NotFollowing) => continue,
                Err(err) => {
                    tracing::warn!(index = %name, error = %err, "cannot catch up with the index's log; trying again");
                }
            }
            // A GET each: a few looks per TTL see a lease unchanged for a TTL, and a released
            // one within a second.
            let every = (self.log.lease_ttl() / 4).min(Duration::from_secs(1));
            if !index.lease_look_due(self.log.now(), every) {
                continue;
            }
            let taken = self
                .placement
                .shared(&name)
                .and_then(|shared| match shared {
                    Some((_, bucket)) => self.log.try_take(&name, &bucket).map(Some),
                    None => Ok(None),
                });
            match taken {
                Ok(Some(Taken::Lease(lease))) => {
                    tracing::info!(index = %name, epoch = lease.epoch(), "the index's writer stopped; taking it over");
                    worked |= self.reopen(&name, &index, Role::WriteWith(lease));
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(index = %name, error = %err, "cannot look at the index's writer lease");
                }
            }
        }
        worked
    }

    /// Opens the index `name` (`old`, followed or stopped) afresh from the store in `role`
    /// and serves it instead of `old`; returns whether it did. Requests already holding `old` finish
    /// against it.
    fn reopen(&self, name: &str, old: &Arc<Index>, role: Role) -> bool {
        let release = |role: &Role| {
            if let Role::WriteWith(lease) = role
                && let Err(err) = lease.release()
            {
                tracing::debug!(index = %name, error = %err, "cannot release the lease just taken");
            }
        };
        let Some(root) = &self.root else {
            return false;
        };
        let Ok(_lifecycle) = self.lifecycle() else {
            return false;
        };
        let current = read_lock(&self.indexes)
            .ok()
            .and_then(|map| map.get(name).cloned());
        if !current.is_some_and(|current| Arc::ptr_eq(&current, old)) {
            // Dropped or replaced meanwhile.
            release(&role);
            return false;
        }
        let config = old.config();
        let opened = dir::open(root, name, config, self.keeping(), role.clone());
        match opened {
            Ok((namespaces, durable)) => {
                let index = Index::durable(name, config, namespaces, durable);
                old.close();
                self.register(name, index, old.search_params()).is_ok()
            }
            Err(err) => {
                tracing::warn!(index = %name, error = %err, "cannot open the index afresh; going on following it");
                release(&role);
                false
            }
        }
    }
}

impl Preference {
    fn role(self) -> Role {
        match self {
            Preference::Write => Role::Write,
            Preference::Follow => Role::Follow,
        }
    }
}

/// Backups (see `backup`): consistent point-in-time copies of an index kept beside the indexes
/// (`<data dir>/backups/<id>/` beside the index root `<data dir>/<root>`, or
/// `<prefix>/backups/<id>/` in a shared store), sharing the index's immutable segment files,
/// and new indexes made from them.
impl Engine {
    /// Takes backup `backup_id` of the open index `name`: every change acknowledged before
    /// this call is in it, and nothing logged after its cut (a forced flush; writers pause
    /// only for the cut). The backup outlives the index. `NotFound` for an unknown index,
    /// `AlreadyExists` for a taken id, `FailedPrecondition` for an engine in memory.
    pub fn backup_index(&self, name: &str, backup_id: &str) -> Result<BackupInfo> {
        backup::check_id(backup_id)?;
        let vault = self.vault()?;
        let index = self.index(name)?;
        backup::create(&vault, &index, backup_id)
    }

    /// What backup `backup_id` holds; `NotFound` if there is no complete backup of that id.
    pub fn backup_info(&self, backup_id: &str) -> Result<BackupInfo> {
        backup::info(&self.vault()?, backup_id)
    }

    /// Materialises the index `target` (a new storage name, with an incarnation in a shared
    /// store) from backup `backup_id`, without opening it: open it with
    /// [`Engine::open_index`] and the returned backup's `config`. `AlreadyExists` if `target`
    /// is open or has data; `NotFound` for an unknown backup.
    pub fn restore_backup(&self, backup_id: &str, target: &str) -> Result<BackupInfo> {
        let vault = self.vault()?;
        let root = self.root.clone().ok_or_else(in_memory)?;
        let _lifecycle = self.lifecycle()?;
        self.check_free(target)?;
        backup::restore(&vault, &root, self.placement.is_shared(), backup_id, target)
    }

    /// [`Engine::restore_backup`], then opens the restored index.
    pub fn restore_index(&self, backup_id: &str, target: &str) -> Result<Arc<Index>> {
        let info = self.restore_backup(backup_id, target)?;
        self.open_index(target, info.config)
    }

    /// Deletes backup `backup_id`, complete or not; whether there was one (deleting none is
    /// not an error).
    pub fn delete_backup(&self, backup_id: &str) -> Result<bool> {
        backup::delete(&self.vault()?, backup_id)
    }

    fn vault(&self) -> Result<Vault> {
        let root = self.root.as_deref().ok_or_else(in_memory)?;
        Vault::new(&self.placement, root)
    }
}

fn in_memory() -> Error {
    Error::FailedPrecondition(
        "this engine keeps indexes in memory only, so it keeps no backups".to_owned(),
    )
}

/// The engine's indexes, as its memory budget and its indexer see them (weakly, so they do
/// not keep them alive).
type Indexes = Weak<RwLock<BTreeMap<String, Arc<Index>>>>;

/// The resident set plus the graph nodes `indexes` owe: the pending rows of each index at
/// [`pressure::graph_row_bytes`] each.
fn memory_measure(indexes: Indexes) -> pressure::Measure {
    Box::new(move || {
        let debt = match indexes.upgrade() {
            None => 0,
            Some(indexes) => {
                let indexes: Vec<_> = match indexes.read() {
                    Ok(map) => map.values().cloned().collect(),
                    Err(_) => Vec::new(),
                };
                indexes
                    .iter()
                    .map(|index| {
                        let pending = index.indexing_status().map_or(0, |status| status.pending);
                        pending.saturating_mul(pressure::graph_row_bytes(
                            index.config(),
                            index.search_params(),
                        ))
                    })
                    .sum()
            }
        };
        pressure::resident_bytes().saturating_add(debt)
    })
}

/// One round of the indexer (see `indexer`): a build step for every index of `indexes`.
/// Returns whether any had graph work, or `None` once the engine is gone.
fn build_round(indexes: &Indexes) -> Option<bool> {
    let indexes = indexes.upgrade()?;
    let open: Vec<Arc<Index>> = match indexes.read() {
        Ok(map) => map.values().cloned().collect(),
        Err(_) => return None,
    };
    drop(indexes);
    let mut worked = false;
    for index in open {
        worked |= index.build_step();
    }
    Some(worked)
}

/// `InvalidArgument` unless `name` is a plain directory name (no separator,
/// not `.` or `..`).
fn check_dir_name(name: &str) -> Result<()> {
    let valid =
        !name.is_empty() && !matches!(name, "." | "..") && !name.contains(['/', '\\', '\0']);
    if !valid {
        return Err(Error::invalid(
            "name",
            format!("'{name}' is not a directory name"),
        ));
    }
    Ok(())
}

fn index_not_found(name: &str) -> Error {
    Error::NotFound(format!("index '{name}' not found"))
}

#[cfg(test)]
mod backup_tests;
#[cfg(test)]
mod bucket_tests;
#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod flush_proptests;
#[cfg(test)]
mod flush_tests;
#[cfg(test)]
mod object_log_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dimension, ErrorCode, Metric};

    fn config() -> IndexConfig {
        IndexConfig {
            dimension: Dimension::new(3).unwrap(),
            metric: Metric::Euclidean,
        }
    }

    #[test]
    fn index_lifecycle() {
        let engine = Engine::new();
        let index = engine.create_index("a", config()).unwrap();
        assert_eq!(index.name(), "a");
        assert_eq!(index.config(), config());
        let err = engine.create_index("a", config()).unwrap_err();
        assert_eq!(
            (err.code(), err.to_string()),
            (ErrorCode::AlreadyExists, "index 'a' already exists".into())
        );
        // Clones share indexes.
        let clone = engine.clone();
        assert!(Arc::ptr_eq(&clone.index("a").unwrap(), &index));
        assert_eq!(engine.index_names().unwrap(), ["a"]);
        clone.drop_index("a").unwrap();
        let err = engine.index("a").unwrap_err();
        assert_eq!(
            (err.code(), err.to_string()),
            (ErrorCode::NotFound, "index 'a' not found".into())
        );
        assert_eq!(
            engine.drop_index("a").unwrap_err().code(),
            ErrorCode::NotFound
        );
        assert!(format!("{engine:?}").contains("Engine"));
    }

    /// A storage timer recording the steps it sees, and what it saw.
    fn recording_timer() -> (StorageTimer, Arc<Mutex<Vec<&'static str>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let timer: StorageTimer =
            Arc::new(move |step, _| record.lock().expect("not poisoned").push(step));
        (timer, seen)
    }

    fn upsert_one(index: &Index, id: &str) {
        index
            .upsert(crate::UpsertRequest {
                namespace: String::new(),
                vectors: vec![crate::VectorInput {
                    id: id.into(),
                    values: vec![1.0, 2.0, 3.0],
                    sparse_values: None,
                    metadata: None,
                }],
            })
            .expect("upserted");
    }

    #[test]
    fn each_engine_reports_its_storage_steps_to_its_own_timer() {
        let policy = FlushPolicy {
            max_segments: 1,
            ..FlushPolicy::default()
        };
        let (timer, seen) = recording_timer();
        let (other_timer, other_seen) = recording_timer();
        let dir = tempfile::tempdir().expect("a temp dir");
        let engine = Engine::open_with(dir.path().join("one"), policy).with_storage_timer(timer);
        let other =
            Engine::open_with(dir.path().join("two"), policy).with_storage_timer(other_timer);
        let index = engine.create_index("timed", config()).expect("created");
        let other_index = other.create_index("timed", config()).expect("created");
        for id in ["a", "b"] {
            upsert_one(&index, id);
            // Two flushes of one namespace: two segments, more than `max_segments`.
            assert!(index.flush().expect("flushed"));
        }
        assert_eq!(
            *seen.lock().expect("not poisoned"),
            [
                Engine::TIMED_WAL_FSYNC,
                Engine::TIMED_FLUSH,
                Engine::TIMED_WAL_FSYNC,
                Engine::TIMED_FLUSH,
                Engine::TIMED_COMPACTION,
            ]
        );
        assert!(
            other_seen.lock().expect("not poisoned").is_empty(),
            "another engine's steps are not reported to this one"
        );

        upsert_one(&other_index, "c");
        assert_eq!(
            *other_seen.lock().expect("not poisoned"),
            [Engine::TIMED_WAL_FSYNC]
        );
        assert_eq!(seen.lock().expect("not poisoned").len(), 5);

        // An index opened again (recovery) reports to the timer of the engine opening it.
        drop((index, other_index, engine));
        let (timer, reopened_seen) = recording_timer();
        let reopened = Engine::open_with(dir.path().join("one"), policy).with_storage_timer(timer);
        let index = reopened.open_index("timed", config()).expect("reopened");
        upsert_one(&index, "d");
        assert!(index.flush().expect("flushed"));
        assert_eq!(
            *reopened_seen.lock().expect("not poisoned"),
            // The flushed segment joins the compacted one: two, so they are compacted again.
            [
                Engine::TIMED_WAL_FSYNC,
                Engine::TIMED_FLUSH,
                Engine::TIMED_COMPACTION
            ]
        );
    }
}
