//! Import jobs: started by `POST /bulk/imports`, run in the background, persisted so a restart
//! resumes them.
//!
//! [`Imports`] is the process's import settings (the `--import-root` directory `file://` URIs
//! must be under, whether `s3://` URIs are allowed, the directory job states are kept in) and
//! its jobs, by index. Where the files come from is the `source` module's concern. A job runs on
//! a blocking thread of its own, one job of an index at a time (later ones wait as `Pending`):
//! it reads the namespaces' Parquet files a batch of rows at a time ([`super::parquet`]) and
//! upserts each batch through the engine index's `upsert`, the same call as the upsert RPC, so
//! validation, the memory budget and durability are the upsert's. A batch the engine refuses
//! as invalid is retried a record at a time to find the bad records: `continue` skips and
//! counts them, `abort` fails the job naming the first one's file and row. Backpressure (a full
//! memory budget) is waited out.
//!
//! After every batch the job's state (status, counts, the next file and row) is published to
//! describe and list; it is written to `<state dir>/<index>/<id>.json` atomically (a temporary
//! file, fsynced, renamed over) at most every [`CHECKPOINT_EVERY`], when the server stops the
//! job, and when the job ends. The batches before a written state are durable in the engine,
//! and upserts are idempotent, so a restart resumes a `Pending` or `InProgress` job from its
//! last written state (after a crash, redoing at most that interval's batches); a job whose
//! state cannot be resumed (its files changed or vanished) is marked `Failed` saying why.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use larch_engine::{Engine, UpsertRequest, VectorInput};
use larch_model::Code;
use serde::{Deserialize, Serialize};

use super::parquet;
use super::source::Source;
use super::{ImportError, Result};

/// How long a job waits before retrying a batch the engine refused for backpressure.
const BACKPRESSURE_WAIT: Duration = Duration::from_millis(200);

/// How often a running job writes its state (see the module docs): each write is the whole
/// state, every file name included, and an fsync, too much to repeat after every batch.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The most imports one page of `GET /bulk/imports` lists.
pub const MAX_PAGE: usize = 100;

/// What to do with a record that cannot be imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorMode {
    /// Stop the import (status `Failed`), naming the record.
    Abort,
    /// Skip the record, counting it, and go on.
    Continue,
}

/// An import's status, as Pinecone names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Waiting for the index's running import to end.
    Pending,
    /// Running.
    InProgress,
    /// Stopped by an error; `error` says which.
    Failed,
    /// Every file read.
    Completed,
    /// Stopped by a cancel.
    Cancelled,
}

impl Status {
    /// Whether the import has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Failed | Status::Completed | Status::Cancelled)
    }
}

/// One namespace of an import: its name and files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceFiles {
    /// The namespace (`""` for the default one).
    pub namespace: String,
    /// Its Parquet files, in import order: local paths, or `s3://bucket/key` names.
    pub files: Vec<PathBuf>,
}

/// The persisted state of one import: what `describe_import` shows, and where to resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportState {
    /// The import's id, unique in its index: "1", "2", …
    pub id: String,
    /// The URI it was started with.
    pub uri: String,
    /// What to do with bad records.
    pub error_mode: ErrorMode,
    /// Where it is.
    pub status: Status,
    /// When it was started (RFC 3339).
    pub created_at: String,
    /// When it ended (RFC 3339), once it has.
    pub finished_at: Option<String>,
    /// Records upserted.
    pub records_imported: u64,
    /// Bad records skipped (error mode `continue`).
    pub records_skipped: u64,
    /// Rows read (imported, skipped or in unreadable files), for the percentage.
    pub rows_done: u64,
    /// Rows of every file, as counted at the start.
    pub rows_total: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// What it reads.
    pub namespaces: Vec<NamespaceFiles>,
    /// The next namespace, file (both indexes into `namespaces`) and row to read.
    pub next: (usize, usize, u64),
}

impl ImportState {
    /// How far along the import is, 0-100.
    pub fn percent_complete(&self) -> f64 {
        if self.status == Status::Completed || self.rows_total == 0 {
            return if self.status == Status::Completed {
                100.0
            } else {
                0.0
            };
        }
        (self.rows_done as f64 * 100.0 / self.rows_total as f64).min(100.0)
    }
}

/// Where the import settings come from: `larch serve --import-root`.
#[derive(Debug, Clone, Default)]
pub struct ImportSettings {
    /// `file://` URIs must name a directory under this one; `None`: `file://` imports are off.
    pub root: Option<PathBuf>,
    /// Whether `s3://bucket/prefix` URIs may be imported (`--import-allow-s3`): the server
    /// reads them with its own `AWS_*` credentials, so API callers could make it read any
    /// bucket those reach.
    pub allow_s3: bool,
    /// Job states (and the scratch file of an object being read) are kept under this directory; `None`: in memory only (tests, in-memory
    /// engines).
    pub state_dir: Option<PathBuf>,
}

/// The process's import settings and jobs. Clones share them.
#[derive(Clone, Default)]
pub struct Imports {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Imports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imports")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    settings: ImportSettings,
    /// By index storage name.
    indexes: Mutex<HashMap<String, Arc<IndexJobs>>>,
}

/// The imports of one index.
#[derive(Default)]
struct IndexJobs {
    jobs: Mutex<Vec<Arc<Job>>>,
    /// Held by the running job: one at a time per index.
    runner: Mutex<()>,
    /// Set when the index's server stops: jobs stop between batches, leaving their state to
    /// resume.
    stopped: AtomicBool,
    /// Set by [`Imports::pause`]: jobs wait before their first batch.
    paused: AtomicBool,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

struct Job {
    state: Mutex<ImportState>,
    cancel: AtomicBool,
}

impl Job {
    fn new(state: ImportState) -> Arc<Job> {
        Arc::new(Job {
            state: Mutex::new(state),
            cancel: AtomicBool::new(false),
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is whole; a poisoned lock still holds a consistent value.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Imports {
    /// Imports with `settings`.
    pub fn new(settings: ImportSettings) -> Imports {
        Imports {
            inner: Arc::new(Inner {
                settings,
                indexes: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn index(&self, index: &str) -> Arc<IndexJobs> {
        Arc::clone(
            lock(&self.inner.indexes)
                .entry(index.to_owned())
                .or_default(),
        )
    }

    fn state_file(&self, index: &str, id: &str) -> Option<PathBuf> {
        self.inner
            .settings
            .state_dir
            .as_ref()
            .map(|dir| dir.join(index).join(format!("{id}.json")))
    }

    /// Checks `uri` and starts importing it into `index` of `engine`; answers the new id.
    pub fn start(
        &self,
        engine: &Arc<Engine>,
        index: &str,
        uri: &str,
        error_mode: ErrorMode,
    ) -> Result<String> {
        let source = self.resolve(uri)?;
        let layout = source.layout(uri)?;
        if layout.is_empty() {
            return Err(ImportError::BadUri(format!(
                "{uri} holds no namespace directories with .parquet files (or does not exist); \
                 lay it out as \
                 Pinecone documents: one sub-directory per namespace (__default__ for the \
                 default one) of .parquet files"
            )));
        }
        // The index must exist before anything is recorded.
        engine.index(index)?;
        let rows_total = layout
            .iter()
            .flat_map(|(_, files)| files)
            .map(|file| source.rows(file))
            .sum();
        let mut state = ImportState {
            id: String::new(),
            uri: uri.to_owned(),
            error_mode,
            status: Status::Pending,
            created_at: now(),
            finished_at: None,
            records_imported: 0,
            records_skipped: 0,
            rows_done: 0,
            rows_total,
            error: None,
            namespaces: layout
                .into_iter()
                .map(|(namespace, files)| NamespaceFiles { namespace, files })
                .collect(),
            next: (0, 0, 0),
        };
        let jobs = self.index(index);
        // The id is taken and the job listed under one lock, so concurrent starts get
        // distinct ids (and state files).
        let job = {
            let mut list = lock(&jobs.jobs);
            let last = list
                .iter()
                .filter_map(|job| lock(&job.state).id.parse::<u64>().ok())
                .max()
                .unwrap_or(0);
            state.id = (last + 1).to_string();
            let job = Job::new(state.clone());
            list.push(Arc::clone(&job));
            job
        };
        if let Err(err) = self.persist(index, &state) {
            lock(&jobs.jobs).retain(|listed| !Arc::ptr_eq(listed, &job));
            return Err(err);
        }
        tracing::info!(index, import = %state.id, uri, "import started");
        self.spawn(engine, index, &jobs, job);
        Ok(state.id)
    }

    /// Resumes the imports of `index` that a stop left unfinished, and loads the others so
    /// they are listed. Called when the index's server starts.
    pub fn recover(&self, engine: &Arc<Engine>, index: &str) {
        let jobs = self.index(index);
        jobs.stopped.store(false, Ordering::SeqCst);
        let Some(dir) = self
            .inner
            .settings
            .state_dir
            .as_ref()
            .map(|dir| dir.join(index))
        else {
            return;
        };
        if !lock(&jobs.jobs).is_empty() {
            return;
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
            Err(err) => {
                tracing::error!(index, dir = %dir.display(), error = %err, "cannot read the import states; the index's imports are neither listed nor resumed");
                return;
            }
        };
        let mut states: Vec<ImportState> = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("json") => {}
                // A scratch file a crash left behind (see `spool`).
                Some("download") => {
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                _ => continue,
            }
            match std::fs::read(&path)
                .map_err(|err| err.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<ImportState>(&bytes).map_err(|err| err.to_string())
                }) {
                Ok(state) => states.push(state),
                Err(err) => {
                    tracing::warn!(index, file = %path.display(), error = %err, "unreadable import state")
                }
            }
        }
        states.sort_by_key(|state| state.id.parse::<u64>().unwrap_or(u64::MAX));
        for state in states {
            let resume = !state.status.is_terminal();
            if resume {
                tracing::info!(index, import = %state.id, "resuming import after a restart");
            }
            let job = Job::new(state);
            lock(&jobs.jobs).push(Arc::clone(&job));
            if resume {
                self.spawn(engine, index, &jobs, job);
            }
        }
    }

    /// Stops the jobs of `index` between batches and waits for them (the index's server is
    /// stopping); their states stay as they are, to resume at the next start.
    pub fn stop(&self, index: &str) {
        let jobs = self.index(index);
        jobs.stopped.store(true, Ordering::SeqCst);
        let threads: Vec<_> = lock(&jobs.threads).drain(..).collect();
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!(index, "an import thread panicked");
            }
        }
        lock(&jobs.jobs).clear();
    }

    /// Holds back (or, with `false`, lets go) the imports of `index` that have not started
    /// their first batch: they stay `Pending`, and can still be cancelled. For maintenance
    /// windows and for tests that need an import caught before it runs.
    pub fn pause(&self, index: &str, paused: bool) {
        self.index(index).paused.store(paused, Ordering::SeqCst);
    }

    /// The import `id` of `index`.
    pub fn describe(&self, index: &str, id: &str) -> Result<ImportState> {
        let jobs = self.index(index);
        let list = lock(&jobs.jobs);
        list.iter()
            .map(|job| lock(&job.state).clone())
            .find(|state| state.id == id)
            .ok_or_else(|| ImportError::NotFound(id.to_owned()))
    }

    /// A page of the imports of `index` by id, after `token` (the last id of the page
    /// before); the next page's token when there are more.
    pub fn list(
        &self,
        index: &str,
        limit: Option<u32>,
        token: Option<&str>,
    ) -> Result<(Vec<ImportState>, Option<String>)> {
        let limit = match limit {
            None => MAX_PAGE,
            Some(n) if (1..=MAX_PAGE as u32).contains(&n) => n as usize,
            Some(n) => {
                return Err(ImportError::BadPage {
                    field: "limit",
                    message: format!("limit must be 1-{MAX_PAGE}, got {n}"),
                });
            }
        };
        let after = match token {
            None => 0,
            Some(token) => token.parse::<u64>().map_err(|_| ImportError::BadPage {
                field: "paginationToken",
                message: format!("paginationToken {token:?} is not one this server gave"),
            })?,
        };
        let jobs = self.index(index);
        let mut states: Vec<ImportState> = lock(&jobs.jobs)
            .iter()
            .map(|job| lock(&job.state).clone())
            .filter(|state| state.id.parse::<u64>().is_ok_and(|id| id > after))
            .collect();
        states.sort_by_key(|state| state.id.parse::<u64>().unwrap_or(u64::MAX));
        let more = states.len() > limit;
        states.truncate(limit);
        let next = more.then(|| states.last().map(|s| s.id.clone())).flatten();
        Ok((states, next))
    }

    /// Cancels import `id` of `index`: it stops before its next batch (status `Cancelled`).
    /// Cancelling a cancelled import is a no-op; one that completed or failed cannot be.
    pub fn cancel(&self, index: &str, id: &str) -> Result<()> {
        let jobs = self.index(index);
        let list = lock(&jobs.jobs);
        let job = list
            .iter()
            .find(|job| lock(&job.state).id == id)
            .ok_or_else(|| ImportError::NotFound(id.to_owned()))?;
        let status = lock(&job.state).status;
        match status {
            Status::Cancelled => Ok(()),
            Status::Completed | Status::Failed => Err(ImportError::Finished {
                id: id.to_owned(),
                status,
            }),
            Status::Pending | Status::InProgress => {
                job.cancel.store(true, Ordering::SeqCst);
                Ok(())
            }
        }
    }

    /// Writes `state` atomically: a temporary file, fsynced, renamed over the old one.
    fn persist(&self, index: &str, state: &ImportState) -> Result<()> {
        let Some(path) = self.state_file(index, &state.id) else {
            return Ok(());
        };
        let io = |err: std::io::Error| ImportError::State {
            file: path.clone(),
            source: err,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let bytes = serde_json::to_vec_pretty(state).expect("an import state serialises");
        let temporary = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&temporary).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&temporary, &path).map_err(io)?;
        Ok(())
    }

    /// Runs `job`, listed already among `jobs`, on a thread of its own.
    fn spawn(&self, engine: &Arc<Engine>, index: &str, jobs: &Arc<IndexJobs>, job: Arc<Job>) {
        let runner = Runner {
            imports: self.clone(),
            engine: Arc::clone(engine),
            index: index.to_owned(),
            jobs: Arc::clone(jobs),
            job,
            written: Cell::new(Instant::now()),
        };
        let thread = std::thread::Builder::new()
            .name("larch-import".into())
            .spawn(move || runner.run());
        match thread {
            Ok(thread) => lock(&jobs.threads).push(thread),
            Err(err) => tracing::error!(index, error = %err, "cannot start an import thread"),
        }
    }

    /// Where job `id` of `index` downloads the object it reads: beside the job states, or in
    /// the system's temporary directory without them.
    fn spool(&self, index: &str, id: &str) -> PathBuf {
        match &self.inner.settings.state_dir {
            Some(dir) => dir.join(index).join(format!("{id}.download")),
            None => std::env::temp_dir().join(format!(
                "larch-import-{}-{index}-{id}.download",
                std::process::id()
            )),
        }
    }

    /// Whether imports of `uri` are allowed, and its source: the resolved directory of a
    /// `file://` URI, the bucket of an `s3://` one. Checked when a job starts and again when
    /// it runs, so a resumed job is held to today's settings.
    fn resolve(&self, uri: &str) -> Result<Source> {
        if uri.starts_with("s3://") {
            if !self.inner.settings.allow_s3 {
                return Err(ImportError::S3Off);
            }
            return Source::s3(uri);
        }
        if uri.starts_with("gs://") || uri.starts_with("https://") {
            return Err(ImportError::BadUri(format!(
                "{uri}: imports from this object storage are not available in Larch; use \
                 s3://BUCKET/PREFIX of an S3-compatible store (if the server allows it), or \
                 copy the files under the server's --import-root and give a file:// URI"
            )));
        }
        let Some(root) = &self.inner.settings.root else {
            return Err(ImportError::Off);
        };
        let Some(path) = uri.strip_prefix("file://") else {
            return Err(ImportError::BadUri(format!(
                "{uri} is not a file:// URI; give file:///PATH under the server's --import-root"
            )));
        };
        let path = Path::new(path);
        if !path.is_absolute() {
            return Err(ImportError::BadUri(format!(
                "{uri}: the path must be absolute (file:///…)"
            )));
        }
        let root = root.canonicalize().map_err(|err| ImportError::State {
            file: root.clone(),
            source: err,
        })?;
        // Resolves `..` and symlinks, so what is checked is what will be read.
        let resolved = path.canonicalize().map_err(|err| {
            ImportError::BadUri(format!("{uri}: cannot read {}: {err}", path.display()))
        })?;
        if !resolved.starts_with(&root) {
            return Err(ImportError::BadUri(format!(
                "{uri} is outside the directory imports may read (the server's --import-root)"
            )));
        }
        if !resolved.is_dir() {
            return Err(ImportError::BadUri(format!(
                "{uri} is not a directory; give the directory holding the namespace directories"
            )));
        }
        Ok(Source::Dir(resolved))
    }
}

/// One job's run on its thread.
struct Runner {
    imports: Imports,
    engine: Arc<Engine>,
    index: String,
    jobs: Arc<IndexJobs>,
    job: Arc<Job>,
    /// When the job's state was last written (see [`CHECKPOINT_EVERY`]).
    written: Cell<Instant>,
}

/// Why a run ended before its files did.
enum Stop {
    /// The server is stopping: leave the state to resume.
    Shutdown,
    /// Cancelled by a client.
    Cancelled,
    /// Failed, with the message for `error`.
    Failed(String),
}

impl Runner {
    fn run(self) {
        let _turn = lock(&self.jobs.runner);
        let mut state = lock(&self.job.state).clone();
        // The counts of a failed or cancelled run include its last partial batch.
        let outcome = self.import(&mut state);
        match outcome {
            Err(Stop::Shutdown) => {
                // The last published state is where the last batch left off: the next start
                // resumes there.
                let last = lock(&self.job.state).clone();
                self.persist(&last);
                return;
            }
            // A cancel that was accepted is honoured, even if the last batch made it.
            Ok(()) if self.job.cancel.load(Ordering::SeqCst) => state.status = Status::Cancelled,
            Ok(()) => state.status = Status::Completed,
            Err(Stop::Cancelled) => state.status = Status::Cancelled,
            Err(Stop::Failed(error)) => {
                tracing::warn!(index = %self.index, import = %state.id, error = %error, "import failed");
                state.status = Status::Failed;
                state.error = Some(error);
            }
        }
        state.finished_at = Some(now());
        tracing::info!(
            index = %self.index,
            import = %state.id,
            status = ?state.status,
            records_imported = state.records_imported,
            records_skipped = state.records_skipped,
            "import ended"
        );
        self.persist(&state);
        *lock(&self.job.state) = state;
    }

    /// Publishes `state`, and writes it too once [`CHECKPOINT_EVERY`] has passed since the
    /// last write.
    fn save(&self, state: ImportState) {
        if self.written.get().elapsed() >= CHECKPOINT_EVERY {
            self.persist(&state);
        }
        *lock(&self.job.state) = state;
    }

    /// Writes `state`; one that cannot be written is logged (the next write tries again, and
    /// a restart resumes from the last one written).
    fn persist(&self, state: &ImportState) {
        self.written.set(Instant::now());
        if let Err(err) = self.imports.persist(&self.index, state) {
            tracing::error!(index = %self.index, import = %state.id, error = %err, "cannot write the import state");
        }
    }

    fn check(&self) -> std::result::Result<(), Stop> {
        if self.jobs.stopped.load(Ordering::SeqCst) {
            return Err(Stop::Shutdown);
        }
        if self.job.cancel.load(Ordering::SeqCst) {
            return Err(Stop::Cancelled);
        }
        Ok(())
    }

    fn import(&self, state: &mut ImportState) -> std::result::Result<(), Stop> {
        while self.jobs.paused.load(Ordering::SeqCst) {
            self.check()?;
            std::thread::sleep(Duration::from_millis(10));
        }
        self.check()?;
        let source = self
            .imports
            .resolve(&state.uri)
            .map_err(|err| Stop::Failed(err.to_string()))?;
        let spool = self.imports.spool(&self.index, &state.id);
        let interrupted = || self.check().is_err();
        state.status = Status::InProgress;
        self.save(state.clone());
        let (first_ns, first_file, first_row) = state.next;
        for ns in first_ns..state.namespaces.len() {
            let NamespaceFiles { namespace, files } = state.namespaces[ns].clone();
            let start_file = if ns == first_ns { first_file } else { 0 };
            for (f, path) in files.iter().enumerate().skip(start_file) {
                let start_row = if (ns, f) == (first_ns, first_file) {
                    first_row
                } else {
                    0
                };
                let mut records = match source.open(path, start_row, &spool, &interrupted) {
                    Ok(records) => records,
                    Err(err) => {
                        // A stop or cancel interrupts a download: that, not the file, is why.
                        self.check()?;
                        self.unreadable(state, err, (ns, f + 1, 0))?;
                        continue;
                    }
                };
                loop {
                    self.check()?;
                    let rows = match records.next_batch() {
                        Ok(Some(rows)) => rows,
                        Ok(None) => break,
                        Err(err) => {
                            let left = records.rows().saturating_sub(records.position());
                            state.rows_done += left;
                            self.unreadable(state, err, (ns, f + 1, 0))?;
                            break;
                        }
                    };
                    let read = rows.len() as u64;
                    self.upsert(state, &namespace, rows)?;
                    state.rows_done += read;
                    state.next = (ns, f, records.position());
                    self.save(state.clone());
                }
                state.next = (ns, f + 1, 0);
                self.save(state.clone());
            }
            state.next = (ns + 1, 0, 0);
        }
        Ok(())
    }

    /// A file that cannot be read: `abort` fails the job; `continue` skips the file.
    fn unreadable(
        &self,
        state: &mut ImportState,
        err: ImportError,
        next: (usize, usize, u64),
    ) -> std::result::Result<(), Stop> {
        match state.error_mode {
            ErrorMode::Abort => Err(Stop::Failed(err.to_string())),
            ErrorMode::Continue => {
                tracing::warn!(index = %self.index, import = %state.id, error = %err, "import skips an unreadable file");
                state.next = next;
                self.save(state.clone());
                Ok(())
            }
        }
    }

    /// Upserts one batch of rows, handling bad ones by the error mode.
    fn upsert(
        &self,
        state: &mut ImportState,
        namespace: &str,
        rows: Vec<parquet::Row>,
    ) -> std::result::Result<(), Stop> {
        let mut good: Vec<VectorInput> = Vec::with_capacity(rows.len());
        for row in rows {
            match row {
                Ok(record) => good.push(record),
                Err(bad) => match state.error_mode {
                    ErrorMode::Abort => {
                        // Records before the bad one land, as they would have in order.
                        self.write(state, namespace, good)?;
                        return Err(Stop::Failed(bad.to_string()));
                    }
                    ErrorMode::Continue => state.records_skipped += 1,
                },
            }
        }
        self.write(state, namespace, good)
    }

    /// Upserts `records`; if the engine refuses the batch as invalid, one at a time.
    fn write(
        &self,
        state: &mut ImportState,
        namespace: &str,
        records: Vec<VectorInput>,
    ) -> std::result::Result<(), Stop> {
        if records.is_empty() {
            return Ok(());
        }
        match self.upsert_batch(namespace, &records)? {
            Ok(count) => {
                state.records_imported += count;
                Ok(())
            }
            Err(_) => {
                for record in &records {
                    match self.upsert_batch(namespace, std::slice::from_ref(record))? {
                        Ok(count) => state.records_imported += count,
                        Err(err) => match state.error_mode {
                            ErrorMode::Abort => {
                                return Err(Stop::Failed(format!(
                                    "record {:?} of namespace {namespace:?}: {err}",
                                    record.id
                                )));
                            }
                            ErrorMode::Continue => state.records_skipped += 1,
                        },
                    }
                }
                Ok(())
            }
        }
    }

    /// One upsert through the engine: `Ok(Ok(count))`, `Ok(Err(message))` when the engine
    /// refuses the records as invalid, `Err` when the job must stop. Backpressure is waited
    /// out. The engine takes the records it is given, so each attempt sends a copy.
    fn upsert_batch(
        &self,
        namespace: &str,
        vectors: &[VectorInput],
    ) -> std::result::Result<std::result::Result<u64, String>, Stop> {
        loop {
            self.check()?;
            let index = self
                .engine
                .index(&self.index)
                .map_err(|err| Stop::Failed(format!("the index is gone: {err}")))?;
            let request = UpsertRequest {
                namespace: namespace.to_owned(),
                vectors: vectors.to_vec(),
            };
            match index.upsert(request) {
                Ok(count) => return Ok(Ok(u64::from(count))),
                Err(err) => match err.code() {
                    Code::InvalidArgument => return Ok(Err(err.to_string())),
                    Code::ResourceExhausted | Code::Unavailable => {
                        let wait = err.retry_after().unwrap_or(BACKPRESSURE_WAIT);
                        tracing::debug!(index = %self.index, error = %err, "import waits out backpressure");
                        std::thread::sleep(wait.min(Duration::from_secs(5)));
                    }
                    _ => return Err(Stop::Failed(format!("cannot write: {err}"))),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::parquet::write::write_records;
    use larch_engine::{Dimension, IndexConfig, Metric};

    fn record(i: usize) -> VectorInput {
        VectorInput {
            id: format!("r{i}"),
            values: vec![i as f32, 1.0],
            ..VectorInput::default()
        }
    }

    /// An engine with index "i" (dimension 2), an import root holding `set/ns/0.parquet` with
    /// `rows` records, and imports over both.
    fn setup(rows: usize) -> (tempfile::TempDir, Arc<Engine>, Imports, String) {
        let dir = tempfile::tempdir().unwrap();
        let set = dir.path().join("root").join("set");
        std::fs::create_dir_all(set.join("ns")).unwrap();
        let records: Vec<VectorInput> = (0..rows).map(record).collect();
        write_records(&set.join("ns").join("0.parquet"), &records, 500).unwrap();
        let engine = Arc::new(Engine::new());
        engine
            .create_index(
                "i",
                IndexConfig {
                    dimension: Dimension::new(2).unwrap(),
                    metric: Metric::Euclidean,
                },
            )
            .unwrap();
        let imports = Imports::new(ImportSettings {
            root: Some(dir.path().join("root")),
            allow_s3: false,
            state_dir: Some(dir.path().join("state")),
        });
        let uri = format!("file://{}", set.display());
        (dir, engine, imports, uri)
    }

    /// `state` is a failed import whose error names `what`.
    fn assert_failed_naming(state: &ImportState, what: &str) {
        assert_eq!(state.status, Status::Failed, "{state:?}");
        assert!(
            state.error.as_deref().is_some_and(|e| e.contains(what)),
            "{state:?}"
        );
    }

    fn wait(imports: &Imports, id: &str) -> ImportState {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let state = imports.describe("i", id).unwrap();
            if state.status.is_terminal() {
                return state;
            }
            assert!(std::time::Instant::now() < deadline, "{state:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_job_imports_every_row_and_persists_its_end() {
        let (dir, engine, imports, uri) = setup(1500);
        let id = imports.start(&engine, "i", &uri, ErrorMode::Abort).unwrap();
        let state = wait(&imports, &id);
        assert_eq!(state.status, Status::Completed);
        assert_eq!((state.records_imported, state.rows_done), (1500, 1500));
        assert_eq!(state.percent_complete(), 100.0);
        let stored: ImportState = serde_json::from_slice(
            &std::fs::read(dir.path().join("state").join("i").join("1.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(stored, state);
    }

    #[test]
    fn uris_outside_the_root_or_not_file_are_refused() {
        let (dir, engine, imports, _) = setup(1);
        let refused = |uri: &str| {
            imports
                .start(&engine, "i", uri, ErrorMode::Abort)
                .unwrap_err()
        };
        let outside = dir.path().join("state");
        std::fs::create_dir_all(&outside).unwrap();
        let err = refused(&format!("file://{}", outside.display()));
        assert!(err.to_string().contains("outside"), "{err}");
        let err = refused(&format!("file://{}/root/set/../..", dir.path().display()));
        assert!(err.to_string().contains("outside"), "{err}");
        // s3:// needs the operator's switch: 412 naming it.
        let err = refused("s3://bucket/x");
        assert_eq!(
            larch_model::Classified::code(&err),
            Code::FailedPrecondition
        );
        assert!(err.to_string().contains("--import-allow-s3"), "{err}");
        let err = refused("gs://bucket/x");
        assert!(err.to_string().contains("object storage"), "{err}");
        let err = refused("root/set");
        assert!(err.to_string().contains("file://"), "{err}");
        let off = Imports::default();
        let err = off
            .start(&engine, "i", "file:///", ErrorMode::Abort)
            .unwrap_err();
        assert_eq!(
            larch_model::Classified::code(&err),
            Code::FailedPrecondition
        );
    }

    #[test]
    fn a_full_memory_budget_holds_an_import_until_it_is_cancelled() {
        let (dir, _, _, uri) = setup(10);
        // 1 MiB: any test process is past it, so every write is refused as backpressure.
        let engine = Arc::new(Engine::new().with_memory_budget(1024 * 1024));
        engine
            .create_index(
                "i",
                IndexConfig {
                    dimension: Dimension::new(2).unwrap(),
                    metric: Metric::Euclidean,
                },
            )
            .unwrap();
        let imports = Imports::new(ImportSettings {
            root: Some(dir.path().join("root")),
            allow_s3: false,
            state_dir: None,
        });
        let id = imports.start(&engine, "i", &uri, ErrorMode::Abort).unwrap();
        // It waits (InProgress), never fails for backpressure; a cancel still stops it.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while imports.describe("i", &id).unwrap().status != Status::InProgress {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        imports.cancel("i", &id).unwrap();
        let state = wait(&imports, &id);
        assert_eq!(
            (state.status, state.records_imported),
            (Status::Cancelled, 0)
        );
        assert_eq!(
            engine
                .index("i")
                .unwrap()
                .describe_stats(None)
                .unwrap()
                .total_vector_count,
            0
        );
    }

    #[test]
    fn pages_of_imports_follow_their_ids() {
        let (_dir, engine, imports, uri) = setup(10);
        for _ in 0..3 {
            let id = imports.start(&engine, "i", &uri, ErrorMode::Abort).unwrap();
            wait(&imports, &id);
        }
        let (page, next) = imports.list("i", Some(2), None).unwrap();
        let ids: Vec<&str> = page.iter().map(|s| s.id.as_str()).collect();
        assert_eq!((ids, next.as_deref()), (vec!["1", "2"], Some("2")));
        let (page, next) = imports.list("i", Some(2), Some("2")).unwrap();
        assert_eq!((page.len(), page[0].id.as_str(), next), (1, "3", None));
        assert!(imports.list("i", Some(0), None).is_err());
        assert!(imports.list("i", None, Some("x")).is_err());
    }

    #[test]
    fn concurrent_starts_get_distinct_ids() {
        let (_dir, engine, imports, uri) = setup(1);
        // Held before their first batch: only the starts race.
        imports.pause("i", true);
        let barrier = std::sync::Barrier::new(8);
        let mut ids: Vec<String> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        imports.start(&engine, "i", &uri, ErrorMode::Abort).unwrap()
                    })
                })
                .collect();
            starts
                .into_iter()
                .map(|start| start.join().unwrap())
                .collect()
        });
        imports.stop("i");
        ids.sort_by_key(|id| id.parse::<u64>().unwrap());
        assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7", "8"]);
    }

    #[test]
    fn a_resumed_file_import_is_checked_against_todays_root() {
        let (dir, engine, imports, uri) = setup(10);
        imports.pause("i", true);
        let id = imports.start(&engine, "i", &uri, ErrorMode::Abort).unwrap();
        imports.stop("i");
        // Restarted without --import-root: the job fails saying so instead of reading on.
        let off = Imports::new(ImportSettings {
            root: None,
            allow_s3: false,
            state_dir: Some(dir.path().join("state")),
        });
        off.recover(&engine, "i");
        let state = wait(&off, &id);
        assert_failed_naming(&state, "--import-root");
        assert_eq!(state.records_imported, 0);
    }

    #[test]
    fn imports_without_a_state_dir_run_after_their_index_server_restarts() {
        let (dir, engine, _, uri) = setup(10);
        let imports = Imports::new(ImportSettings {
            root: Some(dir.path().join("root")),
            allow_s3: false,
            state_dir: None,
        });
        // The index's server starts and stops (crate::serve_index), then starts again.
        imports.recover(&engine, "i");
        imports.stop("i");
        imports.recover(&engine, "i");
        let id = imports.start(&engine, "i", &uri, ErrorMode::Abort).unwrap();
        let state = wait(&imports, &id);
        assert_eq!(
            (state.status, state.records_imported),
            (Status::Completed, 10)
        );
    }

    /// Puts `bytes` at `name` under the test bucket's prefix.
    fn put(bucket: &larch_state::bucket::Bucket, name: &str, bytes: Vec<u8>) {
        use object_store::ObjectStoreExt;
        futures_executor::block_on(bucket.store.put(&bucket.path(name), bytes.into())).unwrap();
    }

    /// A Parquet file of records `r<first>`… as bytes.
    fn parquet_bytes(range: std::ops::Range<usize>) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        let records: Vec<VectorInput> = range.map(record).collect();
        write_records(&path, &records, 500).unwrap();
        std::fs::read(path).unwrap()
    }

    fn s3_imports(state: &Path, allow_s3: bool) -> Imports {
        Imports::new(ImportSettings {
            root: None,
            allow_s3,
            state_dir: Some(state.to_owned()),
        })
    }

    fn counts(engine: &Engine) -> Vec<(String, u64)> {
        let mut counts = engine
            .index("i")
            .unwrap()
            .describe_stats(None)
            .unwrap()
            .namespaces;
        counts.sort();
        counts
    }

    #[test]
    fn s3_imports_read_every_namespace_of_a_bucket_prefix() {
        let Some(test) = larch_state::testing::s3("s3_import_namespaces") else {
            return;
        };
        put(&test.bucket, "set/docs/0.parquet", parquet_bytes(0..1200));
        put(
            &test.bucket,
            "set/docs/1.parquet",
            parquet_bytes(1200..1500),
        );
        put(
            &test.bucket,
            "set/docs/notes.txt",
            b"not an import file".to_vec(),
        );
        put(
            &test.bucket,
            "set/__default__/0.parquet",
            parquet_bytes(0..10),
        );
        put(
            &test.bucket,
            "elsewhere/docs/0.parquet",
            parquet_bytes(0..7),
        );
        let (dir, engine, _, _) = setup(0);
        let imports = s3_imports(&dir.path().join("state"), true);
        let uri = format!("{}/set/", test.url);
        let id = imports.start(&engine, "i", &uri, ErrorMode::Abort).unwrap();
        let state = wait(&imports, &id);
        assert_eq!(state.status, Status::Completed, "{state:?}");
        assert_eq!(
            (state.records_imported, state.rows_done, state.rows_total),
            (1510, 1510, 1510)
        );
        assert_eq!(
            counts(&engine),
            vec![(String::new(), 10), ("docs".to_owned(), 1500)]
        );
        // The scratch file of the last object is gone.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("state").join("i"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|name| !name.to_string_lossy().ends_with(".json"))
            .collect();
        assert!(left.is_empty(), "{left:?}");

        // Refused up front with 400: an empty prefix, a bucket that does not exist.
        for (uri, why) in [
            (format!("{}/nothing", test.url), "no namespace directories"),
            ("s3://larch-no-such-bucket/set".to_owned(), "cannot list"),
        ] {
            let err = imports
                .start(&engine, "i", &uri, ErrorMode::Abort)
                .unwrap_err();
            assert_eq!(larch_model::Classified::code(&err), Code::InvalidArgument);
            assert!(err.to_string().contains(why), "{uri}: {err}");
        }
    }

    #[test]
    fn s3_a_corrupt_object_fails_the_import_naming_it_or_is_skipped() {
        let Some(test) = larch_state::testing::s3("s3_import_corrupt") else {
            return;
        };
        put(
            &test.bucket,
            "set/ns/0.parquet",
            b"PAR1 this is no parquet".to_vec(),
        );
        put(&test.bucket, "set/ns/1.parquet", parquet_bytes(0..5));
        let (dir, engine, _, _) = setup(0);
        let imports = s3_imports(&dir.path().join("state"), true);
        let uri = format!("{}/set", test.url);
        let id = imports.start(&engine, "i", &uri, ErrorMode::Abort).unwrap();
        let state = wait(&imports, &id);
        let named = format!("{}/set/ns/0.parquet", test.url);
        assert_failed_naming(&state, &named);
        let id = imports
            .start(&engine, "i", &uri, ErrorMode::Continue)
            .unwrap();
        let state = wait(&imports, &id);
        assert_eq!(
            (state.status, state.records_imported),
            (Status::Completed, 5)
        );
    }

    #[test]
    fn s3_a_failed_download_leaves_no_scratch_file() {
        let Some(test) = larch_state::testing::s3("s3_import_failed_download") else {
            return;
        };
        put(&test.bucket, "set/ns/0.parquet", parquet_bytes(0..5));
        let (dir, engine, _, _) = setup(0);
        let state_dir = dir.path().join("state");
        let imports = s3_imports(&state_dir, true);
        // Listed at the start, gone when the job downloads it.
        imports.pause("i", true);
        let uri = format!("{}/set", test.url);
        let id = imports.start(&engine, "i", &uri, ErrorMode::Abort).unwrap();
        futures_executor::block_on(object_store::ObjectStoreExt::delete(
            &test.bucket.store,
            &test.bucket.path("set/ns/0.parquet"),
        ))
        .unwrap();
        imports.pause("i", false);
        let state = wait(&imports, &id);
        assert_failed_naming(&state, "cannot download");
        let left: Vec<_> = std::fs::read_dir(state_dir.join("i"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|name| !name.to_string_lossy().ends_with(".json"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn s3_imports_resume_after_a_restart_only_while_still_allowed() {
        let Some(test) = larch_state::testing::s3("s3_import_resume") else {
            return;
        };
        put(&test.bucket, "set/ns/0.parquet", parquet_bytes(0..30));
        let (dir, engine, _, _) = setup(0);
        let state_dir = dir.path().join("state");
        let uri = format!("{}/set", test.url);
        // A server stopped before its import ran, then restarted.
        let start_stopped = |imports: &Imports| {
            imports.pause("i", true);
            let id = imports.start(&engine, "i", &uri, ErrorMode::Abort).unwrap();
            imports.stop("i");
            imports.pause("i", false);
            id
        };
        // Resumed by a server that still allows s3://.
        let id = start_stopped(&s3_imports(&state_dir, true));
        let imports = s3_imports(&state_dir, true);
        imports.recover(&engine, "i");
        let state = wait(&imports, &id);
        assert_eq!(
            (state.status, state.records_imported),
            (Status::Completed, 30)
        );
        // A server restarted without the switch fails the job saying so, not silently.
        let id = start_stopped(&imports);
        assert_eq!(id, "2");
        let imports = s3_imports(&state_dir, false);
        imports.recover(&engine, "i");
        let state = wait(&imports, &id);
        assert_failed_naming(&state, "--import-allow-s3");
    }
}
