//! The catalog: the set of indexes of every project and the data-plane ports they are served
//! on.
//!
//! Indexes are keyed by [`IndexKey`] (project and name): every lookup is scoped to the caller's
//! project, and an index of another project is as invisible as one that does not exist.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use larch_engine::{BackupInfo, IndexConfig, SearchParams};
/// How the data plane answers the catalog: shared with the data plane, which implements
/// [`DataPlaneHost`], through the crate both planes depend on.
pub use larch_model::host::{AttachError, AttachMode, HostError};
use larch_state::{LocalFile, Memory, SharedDocument, Store, Versioned};

use crate::backups::{
    BackupRecord, CreateBackup, CreateIndexFromBackup, RestoreJob, RestoreStatus, check_id, now,
    random_id,
};
use crate::doc::{Configured, Entry, Indexes, not_found};
use crate::error::{Error, Result};
use crate::hosts::{HostTemplate, Hosts};
use crate::record::{
    ConfigureIndex, CreateIndex, DeletionProtection, Incarnation, IndexKey, IndexName, IndexRecord,
    check_project_id,
};
use crate::store::CatalogFormat;

/// Which ports the data plane may use for indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortPolicy {
    /// Each index gets the lowest free port of `first..=last` (Pinecone Local's scheme).
    Range {
        /// First port of the range.
        first: u16,
        /// Last port of the range, inclusive.
        last: u16,
    },
    /// Each index gets a port chosen by the operating system (tests, `--data-ports 0`).
    Ephemeral,
}

impl PortPolicy {
    /// Parses `"5081-5199"`, a single port `"5081"`, or `"0"` for ephemeral ports.
    pub fn parse(s: &str) -> Result<PortPolicy, String> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("{p:?} is not a port number (0-65535)"))
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(s)?;
                (p, p)
            }
        };
        match (first, last) {
            (0, 0) => Ok(PortPolicy::Ephemeral),
            (0, _) => {
                Err("a port range cannot start at 0; use \"0\" alone for any free port".into())
            }
            (first, last) if first > last => Err(format!(
                "port range {first}-{last} is empty: the first port must not exceed the last"
            )),
            (first, last) => Ok(PortPolicy::Range { first, last }),
        }
    }
}

impl fmt::Display for PortPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortPolicy::Range { first, last } => write!(f, "{first}-{last}"),
            PortPolicy::Ephemeral => f.write_str("0"),
        }
    }
}

impl From<HostError> for Error {
    fn from(err: HostError) -> Error {
        match err {
            HostError::Unavailable(reason) => Error::DataPlaneUnavailable(reason),
            HostError::Failed(reason) => Error::DataPlane(reason),
            HostError::Refused(cause) => Error::DataPlaneRefused(cause),
        }
    }
}

/// The data plane as the catalog sees it: it opens, reconfigures and drops indexes on request.
///
/// Every call is synchronous (bind a socket, create or recover the index's storage, spawn a
/// task, or a call to a data plane in another process, bounded by its timeout). Changes are
/// serialized by the catalog's change lock, which is held across these calls so the catalog's
/// state and the data plane's stay in step; the lock on the records themselves is not, so
/// reads (list, describe, what data planes pull) answer while a data plane is slow or gone.
/// Recovery replays an index's log, so it may take a while at start-up.
///
/// The catalog owns (and persists) each index's [`SearchParams`]; the data plane only applies
/// them: at attach, so an index never answers a query with other parameters, and at
/// [`configure`](DataPlaneHost::configure) when they change.
///
/// Indexes are named by their [`IndexKey`]; the data plane stores each under
/// [`IndexKey::storage_name`], so indexes of the same name in two projects never share data.
pub trait DataPlaneHost: Send + Sync {
    /// Starts serving an index with ANN parameters `search` on `port` (0 = any free port);
    /// returns the bound port.
    fn attach(
        &self,
        key: &IndexKey,
        config: IndexConfig,
        search: SearchParams,
        port: u16,
        mode: AttachMode,
    ) -> Result<u16, AttachError>;
    /// Applies new ANN parameters to the attached index `key`.
    fn configure(&self, key: &IndexKey, search: SearchParams) -> Result<(), HostError>;
    /// Stops serving `key` and drops its data.
    fn detach(&self, key: &IndexKey) -> Result<(), HostError>;

    /// Takes backup `backup_id` of the served index `key`: a consistent point-in-time copy
    /// that outlives the index (see `larch_engine`'s backups). A data plane without backups
    /// refuses (the default).
    fn backup(&self, key: &IndexKey, backup_id: &str) -> Result<BackupInfo, HostError> {
        let _ = (key, backup_id);
        Err(no_backups())
    }

    /// Materialises index `key` (a new incarnation) from backup `backup_id`, without serving
    /// it: the catalog then attaches it with [`AttachMode::Recover`].
    fn restore(&self, backup_id: &str, key: &IndexKey) -> Result<BackupInfo, HostError> {
        let _ = (backup_id, key);
        Err(no_backups())
    }

    /// Deletes backup `backup_id`; done if there is none.
    fn delete_backup(&self, backup_id: &str) -> Result<(), HostError> {
        let _ = backup_id;
        Err(no_backups())
    }
}

/// What a data plane without backups answers.
fn no_backups() -> HostError {
    HostError::Refused(larch_model::Cause::from_parts(
        larch_model::Code::Unimplemented,
        "this data plane keeps no backups",
    ))
}

/// An index as a data plane serves it: its key with its incarnation (see
/// [`IndexKey::storage_name`]) and its record.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// Project, name and incarnation.
    pub key: IndexKey,
    /// Everything else the catalog knows about it.
    pub record: IndexRecord,
}

/// The catalog document in its store ([`CatalogFormat`] over a local file, a shared document
/// or memory).
type State = Versioned<CatalogFormat>;

/// Every index of this control plane, of every project.
pub struct Catalog {
    /// The records: this process's copy of the catalog document and its store. Held briefly
    /// (a read, or one write of the document), never across a call to the data plane.
    state: Mutex<State>,
    /// Serializes changes (create, configure, delete): held for a whole change, data-plane call
    /// included, so no two changes interleave; never needed to read.
    changes: Mutex<()>,
    /// Whether other writers (control-plane replicas) share the document, so a new index's
    /// name is recorded — reserved — before the data plane is told, and of two replicas
    /// creating the same name one is refused before touching it. Otherwise an index is
    /// recorded only once the data plane serves it, so no read ever sees an index that is not
    /// served yet.
    reserve_first: bool,
    data_plane: Arc<dyn DataPlaneHost>,
    ports: PortPolicy,
    /// How each index's `host` (what clients dial) is formed.
    hosts: Hosts,
}

impl Catalog {
    /// An empty catalog whose indexes are served by `data_plane` on ports from `ports`, and
    /// advertised as `advertise_host:port`.
    pub fn new(
        data_plane: Arc<dyn DataPlaneHost>,
        ports: PortPolicy,
        advertise_host: impl Into<String>,
    ) -> Catalog {
        let hosts = Hosts::PerPort {
            advertise_host: advertise_host.into(),
        };
        Catalog::with_store(Box::new(Memory::default()), data_plane, ports, hosts)
    }

    /// An empty catalog whose indexes are all served by one data-plane address (split mode),
    /// each with the host `template` gives it.
    pub fn routed(data_plane: Arc<dyn DataPlaneHost>, template: HostTemplate) -> Catalog {
        Catalog::with_store(
            Box::new(Memory::default()),
            data_plane,
            PortPolicy::Ephemeral,
            Hosts::Template(template),
        )
    }

    fn with_store(
        store: Box<dyn Store>,
        data_plane: Arc<dyn DataPlaneHost>,
        ports: PortPolicy,
        hosts: Hosts,
    ) -> Catalog {
        let format = CatalogFormat {
            hosts: hosts.clone(),
        };
        Catalog {
            state: Mutex::new(Versioned::new(store, format)),
            changes: Mutex::new(()),
            reserve_first: false,
            data_plane,
            ports,
            hosts,
        }
    }

    /// A durable catalog kept in `dir` (file [`CATALOG_FILE`](crate::CATALOG_FILE)): every
    /// index recorded there, of every project, is recovered by the data plane — on its old port
    /// when that is free, so its `host` stays the same — before this returns.
    pub fn open(
        dir: &Path,
        data_plane: Arc<dyn DataPlaneHost>,
        ports: PortPolicy,
        advertise_host: impl Into<String>,
    ) -> Result<Catalog> {
        let hosts = Hosts::PerPort {
            advertise_host: advertise_host.into(),
        };
        Catalog::open_local(dir, data_plane, ports, hosts)
    }

    /// [`Catalog::open`] for split mode: every index is served by one data-plane address, each
    /// with the host `template` gives it (see [`Catalog::routed`]).
    pub fn open_routed(
        dir: &Path,
        data_plane: Arc<dyn DataPlaneHost>,
        template: HostTemplate,
    ) -> Result<Catalog> {
        let hosts = Hosts::Template(template);
        Catalog::open_local(dir, data_plane, PortPolicy::Ephemeral, hosts)
    }

    /// A catalog in a document that several control-plane replicas share (split mode), each
    /// index with the host `template` gives it. Every read starts by catching up with the
    /// newest version, and every change is written as the next version — redone on the newest
    /// state when another replica wrote first — before it is acknowledged; only then is the
    /// data plane told. The data planes also pull every index from any replica, so an index
    /// created, changed or deleted through one replica is served accordingly even if that
    /// replica stops right after writing.
    pub fn open_shared(
        doc: SharedDocument,
        data_plane: Arc<dyn DataPlaneHost>,
        template: HostTemplate,
    ) -> Result<Catalog> {
        let mut catalog = Catalog::with_store(
            Box::new(doc),
            data_plane,
            PortPolicy::Ephemeral,
            Hosts::Template(template),
        );
        catalog.reserve_first = true;
        {
            let state = catalog.synced()?;
            tracing::info!(
                location = state.location(),
                version = ?state.version(),
                indexes = state.doc().len(),
                "shared catalog opened",
            );
        }
        Ok(catalog)
    }

    /// [`Catalog::open`] with the catalog in a document of an object-store bucket instead of
    /// a local file (`larch serve --object-store-url`): one process at a time serves it, and
    /// a process started afresh — an empty data dir — recovers every index from there.
    pub fn open_document(
        doc: SharedDocument,
        data_plane: Arc<dyn DataPlaneHost>,
        ports: PortPolicy,
        advertise_host: impl Into<String>,
    ) -> Result<Catalog> {
        let hosts = Hosts::PerPort {
            advertise_host: advertise_host.into(),
        };
        Catalog::recover(Box::new(doc), data_plane, ports, hosts)
    }

    /// A catalog in `dir`'s [`CATALOG_FILE`](crate::CATALOG_FILE), each index recovered by the
    /// data plane (see [`Catalog::open`]).
    fn open_local(
        dir: &Path,
        data_plane: Arc<dyn DataPlaneHost>,
        ports: PortPolicy,
        hosts: Hosts,
    ) -> Result<Catalog> {
        let store = LocalFile::new(dir.join(crate::CATALOG_FILE));
        Catalog::recover(Box::new(store), data_plane, ports, hosts)
    }

    /// A catalog kept in `store`, each index it lists recovered by the data plane.
    fn recover(
        store: Box<dyn Store>,
        data_plane: Arc<dyn DataPlaneHost>,
        ports: PortPolicy,
        hosts: Hosts,
    ) -> Result<Catalog> {
        let catalog = Catalog::with_store(store, data_plane, ports, hosts);
        let stored = catalog.synced()?.doc().clone();
        // What is served so far: recovered indexes keep their port, so others pick from the
        // rest.
        let mut served = Indexes {
            tombstones: stored.tombstones.clone(),
            ..Indexes::default()
        };
        for (key, entry) in &stored.live {
            let index = entry.served(key);
            let (config, search) = (entry.record.config, entry.record.search);
            let port = match catalog.data_plane.attach(
                &index,
                config,
                search,
                entry.port,
                AttachMode::Recover,
            ) {
                Ok(port) => port,
                Err(AttachError::PortInUse) => {
                    tracing::warn!(
                        index = %key,
                        port = entry.port,
                        "the index's port is taken by another program; serving it on a new port, so its host changes",
                    );
                    catalog.attach(&served, &index, config, search, AttachMode::Recover)?
                }
                Err(AttachError::Failed(reason) | AttachError::Unavailable(reason)) => {
                    return Err(Error::DataPlane(format!(
                        "cannot recover index '{key}': {reason}"
                    )));
                }
                Err(AttachError::Refused(cause)) => {
                    return Err(Error::DataPlane(format!(
                        "cannot recover index '{key}': {cause}"
                    )));
                }
            };
            let mut entry = entry.clone();
            entry.port = port;
            entry.record.host = catalog.hosts.host(key, port);
            tracing::info!(index = %key, host = %entry.record.host, "index recovered");
            served.live.insert(key.clone(), entry);
        }
        // Ports that moved are recorded (nothing is written when none did), and restore jobs
        // a stop interrupted end as failed (their index was never recorded, so its data, if
        // any, is an orphan the data plane moves aside).
        catalog.commit(|doc| {
            for (key, entry) in &served.live {
                doc.serve_on(key, entry.port, entry.record.host.clone());
            }
            doc.fail_pending_restores(
                "interrupted: the server stopped before the restore finished",
            );
            Ok(())
        })?;
        Ok(catalog)
    }

    /// The lock on the records, caught up with the newest version of the document (a no-op
    /// but for a shared one).
    fn synced(&self) -> Result<MutexGuard<'_, State>> {
        // A panic while holding the lock cannot leave a half-written document (a change
        // replaces it whole once stored), so a poisoned lock is still consistent.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.refresh()?;
        Ok(state)
    }

    /// Makes one change to the document (see [`crate::doc`]): stored before it is applied
    /// here, redone on the newer document when another replica wrote first.
    fn commit<T>(&self, change: impl FnMut(&mut Indexes) -> Result<T>) -> Result<T> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .change(change)
    }

    /// The change lock (see [`Catalog::changes`]); take it before the records lock.
    fn changing(&self) -> MutexGuard<'_, ()> {
        self.changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key of every index of every project, with its incarnation, for telling data the
    /// catalog knows from data it does not (compare [`IndexKey::storage_name`]s).
    pub fn index_keys(&self) -> Result<Vec<IndexKey>> {
        Ok(self
            .synced()?
            .doc()
            .iter()
            .map(|(key, entry)| entry.served(key))
            .collect())
    }

    /// Every index of every project as a data plane serves it, ordered by project and name.
    pub fn served(&self) -> Result<Vec<Served>> {
        Ok(self
            .synced()?
            .doc()
            .iter()
            .map(|(key, entry)| Served {
                key: entry.served(key),
                record: entry.record.clone(),
            })
            .collect())
    }

    /// Deleted indexes (keys with their incarnation) whose data the data plane has not yet
    /// confirmed removing.
    pub fn tombstones(&self) -> Result<Vec<IndexKey>> {
        Ok(self.synced()?.doc().tombstones.iter().cloned().collect())
    }

    /// Forgets the tombstones of `removed`, whose data a data plane has removed; unknown keys
    /// are ignored (another replica may have forgotten them first).
    pub fn confirm_removed(&self, removed: &[IndexKey]) -> Result<()> {
        if removed.is_empty() {
            return Ok(());
        }
        for key in self.commit(|doc| Ok(doc.forget(removed)))? {
            tracing::info!(index = %key, storage = %key.storage_name(), "data of a deleted index removed");
        }
        Ok(())
    }

    /// Every index of every project, ordered by project and name (what a data plane serves).
    pub fn all_indexes(&self) -> Result<Vec<IndexRecord>> {
        Ok(self
            .synced()?
            .doc()
            .values()
            .map(|entry| entry.record.clone())
            .collect())
    }

    /// How many indexes `project` has (a project is deleted only once it has none).
    pub fn index_count(&self, project: &str) -> Result<usize> {
        Ok(self
            .synced()?
            .doc()
            .keys()
            .filter(|key| key.project() == project)
            .count())
    }

    /// Creates an index in `project` and starts serving it; it is ready when this returns.
    /// The name must be free in `project` only.
    ///
    /// The record is stored before the data plane is told when other replicas share the
    /// catalog, so of two replicas creating the same name one is refused before touching the
    /// data plane (the record is taken back if the data plane refuses); otherwise it is stored
    /// once the data plane serves the index, so no read sees an index not served yet (and the
    /// data plane's index is dropped if storing fails).
    pub fn create_index(&self, project: &str, request: CreateIndex) -> Result<IndexRecord> {
        check_project_id(project)?;
        let record = request.validate(project)?;
        let _changing = self.changing();
        self.create_locked(record, None)
    }

    /// [`Catalog::create_index`] with the change lock held, for a validated `record`. With
    /// `restore`, the data plane first materialises the index from that backup, and then
    /// recovers it rather than creating it empty; the restore job is told the incarnation.
    fn create_locked(
        &self,
        record: IndexRecord,
        restore: Option<(&str, Started<'_>)>,
    ) -> Result<IndexRecord> {
        let key = IndexKey::new(&record.project_id, record.name.clone())?;
        // A fresh storage name: a name deleted and created again never meets the old data.
        let incarnation = Incarnation::random();
        let mut entry = Entry {
            record: IndexRecord {
                host: self.hosts.host(&key, 0),
                ..record
            },
            port: 0,
            incarnation: Some(incarnation.clone()),
        };
        let served = entry.served(&key);
        // A copy to pick a free port from (the data plane is called without the lock), which
        // refuses a taken name before the data plane is touched.
        let known = self.synced()?.doc().clone();
        if self.reserve_first {
            self.commit(|doc| doc.create(&key, &entry))?;
        } else {
            known.clone().create(&key, &entry)?;
        }
        let (config, search) = (entry.record.config, entry.record.search);
        let attached = match restore {
            None => self.attach(&known, &served, config, search, AttachMode::Create),
            Some((backup_id, started)) => started(&incarnation)
                .and_then(|()| Ok(self.data_plane.restore(backup_id, &served)?))
                .and_then(|_| {
                    let attached =
                        self.attach(&known, &served, config, search, AttachMode::Recover);
                    if attached.is_err()
                        && let Err(detach) = self.data_plane.detach(&served)
                    {
                        tracing::warn!(index = %key, error = %detach, "cannot drop the data of an index restored but not served");
                    }
                    attached
                }),
        };
        let port = match attached {
            Ok(port) => port,
            Err(err) => {
                if self.reserve_first {
                    let undo = self.commit(|doc| {
                        doc.take_back(&key, entry.incarnation.as_ref());
                        Ok(())
                    });
                    if let Err(undo) = undo {
                        tracing::warn!(index = %key, error = %undo, "cannot take back the record of an index the data plane refused");
                    }
                }
                return Err(err);
            }
        };
        if !self.reserve_first {
            entry.port = port;
            entry.record.host = self.hosts.host(&key, port);
            if let Err(err) = self.commit(|doc| doc.create(&key, &entry)) {
                // Not recorded, so not created: undo the data plane's side too.
                if let Err(detach) = self.data_plane.detach(&served) {
                    tracing::warn!(index = %key, error = %detach, "cannot drop the unrecorded index");
                }
                return Err(err);
            }
        }
        tracing::info!(index = %key, host = %entry.record.host, "index created");
        Ok(entry.record)
    }

    /// Asks the data plane to serve `key` on the first port that works (ports are shared by
    /// every project).
    fn attach(
        &self,
        indexes: &Indexes,
        key: &IndexKey,
        config: IndexConfig,
        search: SearchParams,
        mode: AttachMode,
    ) -> Result<u16> {
        let candidates: Box<dyn Iterator<Item = u16>> = match self.ports {
            PortPolicy::Ephemeral => Box::new(std::iter::once(0)),
            PortPolicy::Range { first, last } => {
                Box::new((first..=last).filter(|p| indexes.values().all(|entry| entry.port != *p)))
            }
        };
        for port in candidates {
            match self.data_plane.attach(key, config, search, port, mode) {
                Ok(bound) => return Ok(bound),
                Err(AttachError::PortInUse) => {
                    tracing::debug!(port, "data-plane port in use, trying the next one");
                }
                Err(AttachError::Failed(reason)) => return Err(Error::DataPlane(reason)),
                Err(AttachError::Refused(cause)) => return Err(Error::DataPlaneRefused(cause)),
                Err(AttachError::Unavailable(reason)) => {
                    return Err(Error::DataPlaneUnavailable(reason));
                }
            }
        }
        Err(Error::NoFreePort(self.ports.to_string()))
    }

    /// Every index of `project`, ordered by name.
    pub fn list_indexes(&self, project: &str) -> Result<Vec<IndexRecord>> {
        // Keys order by project first, so this project's indexes come by name.
        Ok(self
            .synced()?
            .doc()
            .iter()
            .filter(|(key, _)| key.project() == project)
            .map(|(_, e)| e.record.clone())
            .collect())
    }

    /// One index of `project`.
    pub fn describe_index(&self, project: &str, name: &str) -> Result<IndexRecord> {
        let key = key_of(project, name)?;
        self.synced()?
            .doc()
            .get(&key)
            .map(|e| e.record.clone())
            .ok_or_else(|| not_found(&key))
    }

    /// Changes deletion protection, merges tags (`""` removes a tag) and changes the given ANN
    /// parameters, which the data plane applies before this returns. The index is looked up in
    /// `project`.
    ///
    /// Recorded first, then applied; if the data plane refuses, the recorded parameters go
    /// back to what they were (unless another change came in between).
    pub fn configure_index(&self, project: &str, request: ConfigureIndex) -> Result<IndexRecord> {
        let ConfigureIndex {
            name,
            deletion_protection,
            tags,
            search,
        } = request;
        let key = key_of(project, &name)?;
        let protection = deletion_protection
            .as_deref()
            .map(|s| DeletionProtection::parse(s, "deletion_protection"))
            .transpose()?;
        let _changing = self.changing();
        let Configured {
            record,
            previous,
            served,
        } = self.commit(|doc| doc.configure(&key, protection, &tags, &search))?;
        if record.search != previous {
            if let Err(reason) = self.data_plane.configure(&served, record.search) {
                let undo = self.commit(|doc| {
                    doc.restore_search(&key, record.search, previous);
                    Ok(())
                });
                if let Err(undo) = undo {
                    tracing::warn!(index = %key, error = %undo, "cannot restore the recorded search parameters");
                }
                return Err(reason.into());
            }
            tracing::info!(index = %key, search = ?record.search, "search parameters changed");
        }
        Ok(record)
    }

    /// Deletes an index of `project` and its data, unless deletion protection is enabled.
    ///
    /// The record goes and a tombstone naming its incarnation is written in the same step, then
    /// the data plane is told to drop the data. Once it has, the tombstone goes too; if it
    /// cannot be reached (split mode), the delete still succeeds — the name is free at once
    /// (a new index of that name gets a new incarnation, so a fresh directory) — and the data
    /// plane removes the data when its next sync brings it the tombstone.
    pub fn delete_index(&self, project: &str, name: &str) -> Result<()> {
        let key = key_of(project, name)?;
        let _changing = self.changing();
        let served = self.commit(|doc| doc.delete(&key))?;
        // Recorded as gone first: a crash now leaves a tombstone, acted on at the next start
        // (embedded) or sync (split).
        match self.data_plane.detach(&served) {
            Ok(()) => {
                tracing::info!(index = %key, "index deleted");
                if let Err(err) = self.confirm_removed(std::slice::from_ref(&served)) {
                    // Harmless: the data plane is told again, and removing nothing is done.
                    tracing::warn!(index = %key, error = %err, "cannot forget the tombstone of a deleted index; it is retried");
                }
            }
            Err(reason) => {
                tracing::warn!(index = %key, storage = %served.storage_name(), error = %reason, "index deleted, but the data plane has not dropped its data yet; it does so at its next sync");
            }
        }
        Ok(())
    }
}

/// What a restore does once the new index's incarnation is chosen and its name known to be free
/// (records the restore job as pending), before the data plane restores the data.
type Started<'a> = &'a mut dyn FnMut(&Incarnation) -> Result<()>;

/// Backups and restore jobs (see [`crate::backups`]): kept in the catalog document beside the
/// indexes, each in its project; the data plane keeps the data.
impl Catalog {
    /// Backs up index `request.index_name` of `project`; the backup is complete (status
    /// `Ready`) when this returns. Holds the change lock, so the index cannot be deleted
    /// meanwhile.
    pub fn create_backup(&self, project: &str, request: CreateBackup) -> Result<BackupRecord> {
        request.check()?;
        let key = key_of(project, &request.index_name)?;
        let _changing = self.changing();
        let entry = self
            .synced()?
            .doc()
            .get(&key)
            .cloned()
            .ok_or_else(|| not_found(&key))?;
        let backup_id = random_id();
        let info = self.data_plane.backup(&entry.served(&key), &backup_id)?;
        let record = entry.record;
        let backup = BackupRecord {
            backup_id: backup_id.clone(),
            project_id: project.to_owned(),
            source_index_name: key.name().to_string(),
            source_index_id: entry
                .incarnation
                .as_ref()
                .map_or_else(|| key.name().to_string(), |i| i.as_str().to_owned()),
            name: request.name,
            description: request.description,
            status: "Ready".to_owned(),
            cloud: record.cloud.as_str().to_owned(),
            region: record.region,
            dimension: record.config.dimension.get(),
            metric: record.config.metric.to_string(),
            vector_type: record.vector_type.as_str().to_owned(),
            record_count: info.record_count,
            namespace_count: info.namespace_count,
            size_bytes: info.size_bytes,
            tags: record.tags,
            created_at: now(),
            source_index_deleted_at: None,
        };
        if let Err(err) = self.commit(|doc| {
            doc.add_backup(&backup);
            Ok(())
        }) {
            // Not recorded, so not taken: its files go too.
            if let Err(delete) = self.data_plane.delete_backup(&backup_id) {
                tracing::warn!(backup = %backup_id, error = %delete, "cannot delete the files of an unrecorded backup");
            }
            return Err(err);
        }
        tracing::info!(index = %key, backup = %backup_id, records = backup.record_count, "backup created");
        Ok(backup)
    }

    /// The backups of `project`, oldest first; with `index`, only those of the index of that
    /// name (`NotFound` if there is none), and of its earlier incarnations only when
    /// `include_deleted`.
    pub fn list_backups(
        &self,
        project: &str,
        index: Option<&str>,
        include_deleted: bool,
    ) -> Result<Vec<BackupRecord>> {
        check_project_id(project)?;
        let state = self.synced()?;
        let doc = state.doc();
        if let Some(name) = index {
            let key = key_of(project, name)?;
            if !include_deleted && !doc.contains_key(&key) {
                return Err(not_found(&key));
            }
        }
        let mut backups: Vec<BackupRecord> = doc
            .backups
            .values()
            .filter(|b| b.project_id == project)
            .filter(|b| {
                index.is_none_or(|name| {
                    b.source_index_name == name
                        && (include_deleted || b.source_index_deleted_at.is_none())
                })
            })
            .cloned()
            .collect();
        backups.sort_by_key(backup_order);
        Ok(backups)
    }

    /// Backup `backup_id` of `project`.
    pub fn describe_backup(&self, project: &str, backup_id: &str) -> Result<BackupRecord> {
        check_project_id(project)?;
        check_id("backup_id", backup_id)?;
        Ok(self.synced()?.doc().backup(project, backup_id)?.clone())
    }

    /// Deletes backup `backup_id` of `project`: its data first, then its record (so a failure
    /// leaves it listed, to retry). Indexes restored from it are not affected.
    pub fn delete_backup(&self, project: &str, backup_id: &str) -> Result<()> {
        check_project_id(project)?;
        check_id("backup_id", backup_id)?;
        let _changing = self.changing();
        self.synced()?.doc().backup(project, backup_id)?;
        self.data_plane.delete_backup(backup_id)?;
        self.commit(|doc| doc.remove_backup(project, backup_id))?;
        tracing::info!(backup = %backup_id, "backup deleted");
        Ok(())
    }

    /// Creates index `request.name` in `project` from backup `request.backup_id` of `project`,
    /// as a restore job: the job is recorded `Pending` once the name is known to be free, and
    /// the index is restored and ready when this returns, the job `Completed` (or `Failed`,
    /// and the error returned). Returns the job and the new index.
    pub fn create_index_from_backup(
        &self,
        project: &str,
        request: CreateIndexFromBackup,
    ) -> Result<(RestoreJob, IndexRecord)> {
        check_project_id(project)?;
        let protection = request.protection()?;
        let backup = self.describe_backup(project, &request.backup_id)?;
        let CreateIndexFromBackup {
            backup_id,
            name,
            tags,
            deletion_protection: _,
        } = request;
        let create = CreateIndex {
            name: name.clone(),
            dimension: Some(i64::from(backup.dimension)),
            metric: Some(backup.metric.clone()),
            cloud: Some(backup.cloud.clone()),
            region: Some(backup.region.clone()),
            deletion_protection: Some(protection.as_str().to_owned()),
            tags: tags.unwrap_or_else(|| backup.tags.clone()),
            vector_type: Some(backup.vector_type.clone()),
            search: Default::default(),
        };
        let record = create.validate(project)?;
        let mut job = RestoreJob {
            restore_job_id: random_id(),
            project_id: project.to_owned(),
            backup_id: backup_id.clone(),
            target_index_name: name,
            target_index_id: String::new(),
            status: RestoreStatus::Pending,
            created_at: now(),
            completed_at: None,
            percent_complete: 0.0,
            error: None,
        };
        let _changing = self.changing();
        let mut started = |incarnation: &Incarnation| {
            job.target_index_id = incarnation.as_str().to_owned();
            self.commit(|doc| {
                doc.put_restore_job(&job);
                Ok(())
            })
        };
        let created = self.create_locked(record, Some((&backup_id, &mut started)));
        let finished = !job.target_index_id.is_empty();
        job.completed_at = Some(now());
        match &created {
            Ok(_) => {
                job.status = RestoreStatus::Completed;
                job.percent_complete = 100.0;
            }
            Err(err) => {
                job.status = RestoreStatus::Failed;
                job.error = Some(err.to_string());
            }
        }
        if finished {
            let recorded = self.commit(|doc| {
                doc.put_restore_job(&job);
                Ok(())
            });
            if let Err(err) = recorded {
                tracing::warn!(job = %job.restore_job_id, error = %err, "cannot record the end of a restore job");
            }
        }
        let record = created?;
        tracing::info!(index = %record.name, backup = %backup_id, job = %job.restore_job_id, "index restored from a backup");
        Ok((job, record))
    }

    /// The restore jobs of `project`, oldest first.
    pub fn list_restore_jobs(&self, project: &str) -> Result<Vec<RestoreJob>> {
        check_project_id(project)?;
        let mut jobs: Vec<RestoreJob> = self
            .synced()?
            .doc()
            .restore_jobs
            .values()
            .filter(|job| job.project_id == project)
            .cloned()
            .collect();
        jobs.sort_by_key(job_order);
        Ok(jobs)
    }

    /// Restore job `job_id` of `project`.
    pub fn describe_restore_job(&self, project: &str, job_id: &str) -> Result<RestoreJob> {
        check_project_id(project)?;
        check_id("job_id", job_id)?;
        self.synced()?
            .doc()
            .restore_jobs
            .get(job_id)
            .filter(|job| job.project_id == project)
            .cloned()
            .ok_or_else(|| Error::RestoreJobNotFound(job_id.to_owned()))
    }
}

/// Where a backup goes in listings (oldest first) and its page token.
pub fn backup_order(backup: &BackupRecord) -> String {
    format!("{}|{}", backup.created_at, backup.backup_id)
}

/// Where a restore job goes in listings (oldest first) and its page token.
pub fn job_order(job: &RestoreJob) -> String {
    format!("{}|{}", job.created_at, job.restore_job_id)
}

/// The key of index `name` in `project`, both validated.
fn key_of(project: &str, name: &str) -> Result<IndexKey> {
    check_project_id(project)?;
    Ok(IndexKey::new(project, IndexName::new(name)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SearchSettings;
    use larch_engine::Quantization;
    use larch_state::Written;
    use std::collections::BTreeMap;
    use std::collections::BTreeSet;

    mod backups;
    mod shared;

    /// The project of the tests that predate projects.
    const P: &str = crate::DEFAULT_PROJECT;

    /// A data plane that records calls and refuses the ports it is told are busy. Its maps
    /// are by storage name without incarnation (one per project and name); `storage` has the
    /// full storage names.
    #[derive(Default)]
    struct FakeDataPlane {
        busy: BTreeSet<u16>,
        attached: Mutex<BTreeMap<String, u16>>,
        /// Storage names (with incarnation) holding data: attached and not yet detached.
        storage: Mutex<BTreeSet<String>>,
        /// Detach fails while set (a data plane that cannot be reached).
        unreachable: std::sync::atomic::AtomicBool,
        /// The search parameters each index was last given.
        search: Mutex<BTreeMap<String, SearchParams>>,
    }

    impl FakeDataPlane {
        fn search_of(&self, name: &str) -> Option<SearchParams> {
            self.search.lock().unwrap().get(name).copied()
        }
    }

    impl DataPlaneHost for FakeDataPlane {
        fn attach(
            &self,
            key: &IndexKey,
            _: IndexConfig,
            search: SearchParams,
            port: u16,
            _: AttachMode,
        ) -> Result<u16, AttachError> {
            if self.busy.contains(&port) {
                return Err(AttachError::PortInUse);
            }
            let port = if port == 0 { 40000 } else { port };
            self.storage.lock().unwrap().insert(key.storage_name());
            let name = key.without_incarnation().storage_name();
            self.attached.lock().unwrap().insert(name.clone(), port);
            self.search.lock().unwrap().insert(name, search);
            Ok(port)
        }
        fn configure(&self, key: &IndexKey, search: SearchParams) -> Result<(), HostError> {
            assert!(
                key.incarnation().is_some(),
                "configure names the incarnation"
            );
            let name = key.without_incarnation().storage_name();
            if !self.attached.lock().unwrap().contains_key(&name) {
                return Err(HostError::Failed(format!("index '{key}' is not attached")));
            }
            self.search.lock().unwrap().insert(name, search);
            Ok(())
        }
        fn detach(&self, key: &IndexKey) -> Result<(), HostError> {
            if self.unreachable.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(HostError::Unavailable(
                    "the data plane cannot be reached".into(),
                ));
            }
            self.storage.lock().unwrap().remove(&key.storage_name());
            let name = key.without_incarnation().storage_name();
            self.attached.lock().unwrap().remove(&name);
            self.search.lock().unwrap().remove(&name);
            Ok(())
        }
    }

    fn create(name: &str) -> CreateIndex {
        CreateIndex {
            name: name.into(),
            dimension: Some(4),
            ..Default::default()
        }
    }

    #[test]
    fn ports_come_from_the_range_skipping_busy_ones() {
        let dp = Arc::new(FakeDataPlane {
            busy: BTreeSet::from([5081]),
            ..Default::default()
        });
        let catalog = Catalog::new(
            dp.clone(),
            PortPolicy::parse("5081-5083").unwrap(),
            "127.0.0.1",
        );
        assert_eq!(
            catalog.create_index(P, create("a")).unwrap().host,
            "127.0.0.1:5082"
        );
        assert_eq!(
            catalog.create_index(P, create("b")).unwrap().host,
            "127.0.0.1:5083"
        );
        let err = catalog.create_index(P, create("c")).unwrap_err();
        assert!(matches!(err, Error::NoFreePort(_)), "{err}");
        catalog.delete_index(P, "a").unwrap();
        assert_eq!(
            catalog.create_index(P, create("c")).unwrap().host,
            "127.0.0.1:5082"
        );
        assert_eq!(dp.attached.lock().unwrap().len(), 2);
    }

    #[test]
    fn routed_catalogs_give_each_index_a_host_from_the_template() {
        let dir = tempfile::tempdir().unwrap();
        let template = HostTemplate::parse("{index}.{project}.data.test:5081").unwrap();
        let dp = Arc::new(FakeDataPlane::default());
        let catalog = Catalog::open_routed(dir.path(), dp.clone(), template.clone()).unwrap();
        let a = catalog.create_index(P, create("a")).unwrap();
        assert_eq!(a.host, format!("a.{P}.data.test:5081"));
        let b = catalog.create_index("team", create("a")).unwrap();
        assert_eq!(b.host, "a.team.data.test:5081");
        assert_eq!(catalog.all_indexes().unwrap().len(), 2);
        drop(catalog);
        // Recovered with the same hosts.
        let again = Catalog::open_routed(dir.path(), dp, template).unwrap();
        let hosts: Vec<String> = again
            .all_indexes()
            .unwrap()
            .into_iter()
            .map(|r| r.host)
            .collect();
        assert_eq!(
            hosts,
            [
                format!("a.{P}.data.test:5081"),
                "a.team.data.test:5081".into()
            ]
        );
    }

    #[test]
    fn lifecycle_errors() {
        let catalog = Catalog::new(
            Arc::new(FakeDataPlane::default()),
            PortPolicy::Ephemeral,
            "::1",
        );
        let rec = catalog.create_index(P, create("a")).unwrap();
        assert_eq!(rec.host, "[::1]:40000");
        assert!(matches!(
            catalog.create_index(P, create("a")),
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            catalog.describe_index(P, "zz"),
            Err(Error::NotFound(_))
        ));
        catalog
            .configure_index(
                P,
                ConfigureIndex {
                    name: "a".into(),
                    deletion_protection: Some("enabled".into()),
                    tags: BTreeMap::from([("env".into(), "dev".into())]),
                    search: SearchSettings::default(),
                },
            )
            .unwrap();
        let err = catalog.delete_index(P, "a").unwrap_err();
        assert!(matches!(err, Error::FailedPrecondition(_)));
        assert!(
            err.to_string()
                .contains("\"deletion_protection\":\"disabled\""),
            "{err}"
        );
        let rec = catalog.describe_index(P, "a").unwrap();
        assert_eq!(rec.tags.get("env").map(String::as_str), Some("dev"));
        catalog
            .configure_index(
                P,
                ConfigureIndex {
                    name: "a".into(),
                    deletion_protection: Some("disabled".into()),
                    tags: BTreeMap::new(),
                    search: SearchSettings::default(),
                },
            )
            .unwrap();
        catalog.delete_index(P, "a").unwrap();
        assert!(matches!(
            catalog.describe_index(P, "a"),
            Err(Error::NotFound(_))
        ));
        assert!(catalog.list_indexes(P).unwrap().is_empty());
    }

    #[test]
    fn durable_catalog_recovers_records_and_ports() {
        let dir = tempfile::tempdir().unwrap();
        let policy = PortPolicy::parse("6001-6010").unwrap();
        let dp = Arc::new(FakeDataPlane::default());
        let catalog = Catalog::open(dir.path(), dp.clone(), policy, "127.0.0.1").unwrap();
        catalog.create_index(P, create("a")).unwrap();
        catalog.create_index(P, create("b")).unwrap();
        catalog.create_index(P, create("c")).unwrap();
        catalog
            .configure_index(
                P,
                ConfigureIndex {
                    name: "b".into(),
                    deletion_protection: Some("enabled".into()),
                    tags: BTreeMap::from([("env".into(), "prod".into())]),
                    search: SearchSettings {
                        ef_search: Some(40),
                        ..Default::default()
                    },
                },
            )
            .unwrap();
        catalog.delete_index(P, "a").unwrap();
        let before = catalog.list_indexes(P).unwrap();
        drop(catalog);

        // Restart: same records, same hosts; recovered, not created.
        let dp = Arc::new(FakeDataPlane::default());
        let reopened = Catalog::open(dir.path(), dp.clone(), policy, "127.0.0.1").unwrap();
        assert_eq!(reopened.list_indexes(P).unwrap(), before);
        assert_eq!(
            dp.attached.lock().unwrap().clone(),
            BTreeMap::from([("b".to_owned(), 6002), ("c".to_owned(), 6003)])
        );
        let b_search = SearchParams::default().with_ef_search(40).unwrap();
        assert_eq!(reopened.describe_index(P, "b").unwrap().search, b_search);
        assert_eq!(
            dp.search_of("b"),
            Some(b_search),
            "recovery applies the stored search parameters"
        );
        assert_eq!(dp.search_of("c"), Some(SearchParams::default()));
        drop(reopened);

        // A port taken by another program moves the index and records the new port.
        let dp = Arc::new(FakeDataPlane {
            busy: BTreeSet::from([6002]),
            ..Default::default()
        });
        let moved = Catalog::open(dir.path(), dp, policy, "127.0.0.1").unwrap();
        assert_eq!(moved.describe_index(P, "b").unwrap().host, "127.0.0.1:6001");
        drop(moved);
        let dp = Arc::new(FakeDataPlane::default());
        let again = Catalog::open(dir.path(), dp, policy, "127.0.0.1").unwrap();
        assert_eq!(again.describe_index(P, "b").unwrap().host, "127.0.0.1:6001");
    }

    /// Absent settings take the defaults of the index's metric: an int8 graph, but an f32 one
    /// for dotproduct (see `SearchParams::default_for`).
    #[test]
    fn a_new_index_gets_its_metrics_default_graph_format() {
        let dp = Arc::new(FakeDataPlane::default());
        let catalog = Catalog::new(dp.clone(), PortPolicy::Ephemeral, "127.0.0.1");
        for (name, metric, quantization) in [
            ("cos", "cosine", Quantization::Int8),
            ("l2", "euclidean", Quantization::Int8),
            ("dot", "dotproduct", Quantization::None),
        ] {
            let request = CreateIndex {
                metric: Some(metric.into()),
                ..create(name)
            };
            let created = catalog.create_index(P, request).unwrap().search;
            assert_eq!(created.quantization(), quantization, "{metric}");
            assert_eq!(dp.search_of(name), Some(created), "{metric}");
            // An empty value is absent, at create and at configure.
            let request = CreateIndex {
                metric: Some(metric.into()),
                search: SearchSettings {
                    quantization: Some(String::new()),
                    ..Default::default()
                },
                ..create(&format!("{name}-empty"))
            };
            let created = catalog.create_index(P, request).unwrap().search;
            assert_eq!(created.quantization(), quantization, "{metric}");
            let configured = catalog
                .configure_index(
                    P,
                    ConfigureIndex {
                        name: name.into(),
                        search: SearchSettings {
                            quantization: Some(String::new()),
                            ..Default::default()
                        },
                        ..Default::default()
                    },
                )
                .unwrap()
                .search;
            assert_eq!(configured.quantization(), quantization, "{metric}");
        }
    }

    #[test]
    fn search_params_reach_the_data_plane_at_create_and_configure() {
        let dp = Arc::new(FakeDataPlane::default());
        let catalog = Catalog::new(dp.clone(), PortPolicy::Ephemeral, "127.0.0.1");
        let mut request = create("a");
        request.search = SearchSettings {
            m: Some(24),
            ef_search: Some(100),
            quantization: Some("none".into()),
            ..Default::default()
        };
        let created = catalog.create_index(P, request).unwrap().search;
        let expected = SearchParams::default()
            .with_m(24)
            .and_then(|p| p.with_ef_search(100))
            .unwrap()
            .with_quantization(Quantization::None);
        assert_eq!(created, expected);
        assert_eq!(dp.search_of("a"), Some(expected));

        let configure = |search: SearchSettings| {
            catalog.configure_index(
                P,
                ConfigureIndex {
                    name: "a".into(),
                    search,
                    ..Default::default()
                },
            )
        };
        let changed = configure(SearchSettings {
            ef_search: Some(40),
            ..Default::default()
        })
        .unwrap()
        .search;
        let expected = expected.with_ef_search(40).unwrap();
        assert_eq!(changed, expected, "only ef_search changes");
        assert_eq!(dp.search_of("a"), Some(expected));

        let err = configure(SearchSettings {
            m: Some(2),
            ef_search: Some(50),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "search.m: must be between 4 and 64; got 2");
        assert_eq!(
            catalog.describe_index(P, "a").unwrap().search,
            expected,
            "a refused change changes nothing"
        );
        assert_eq!(dp.search_of("a"), Some(expected));
    }

    #[test]
    fn search_parameters_the_data_plane_refuses_are_not_kept_on_disk_either() {
        let dir = tempfile::tempdir().unwrap();
        let dp = Arc::new(FakeDataPlane::default());
        let catalog = Catalog::open(dir.path(), dp.clone(), PortPolicy::Ephemeral, "h").unwrap();
        let before = catalog.create_index(P, create("a")).unwrap();
        // The data plane lost the index, so it refuses new parameters for it.
        dp.attached.lock().unwrap().clear();
        let request = ConfigureIndex {
            name: "a".into(),
            search: SearchSettings {
                ef_search: Some(300),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = catalog.configure_index(P, request).unwrap_err();
        assert!(matches!(err, Error::DataPlane(_)), "{err}");
        assert_eq!(catalog.describe_index(P, "a").unwrap(), before);
        drop(catalog);
        let reopened = Catalog::open(dir.path(), dp, PortPolicy::Ephemeral, "h").unwrap();
        assert_eq!(reopened.describe_index(P, "a").unwrap(), before);
    }

    #[test]
    fn catalog_written_before_search_params_loads_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        // catalog.json as written before `search` existed.
        std::fs::write(
            dir.path().join(crate::CATALOG_FILE),
            r#"{"version":1,"indexes":[{"name":"old","dimension":4,"metric":"cosine",
                "vector_type":"dense","cloud":"aws","region":"us-east-1",
                "deletion_protection":"disabled","tags":{},"port":0}]}"#,
        )
        .unwrap();
        let dp = Arc::new(FakeDataPlane::default());
        let catalog =
            Catalog::open(dir.path(), dp.clone(), PortPolicy::Ephemeral, "127.0.0.1").unwrap();
        assert_eq!(
            catalog.describe_index(P, "old").unwrap().search,
            SearchParams::default()
        );
        assert_eq!(dp.search_of("old"), Some(SearchParams::default()));
    }

    #[test]
    fn stored_search_params_out_of_range_are_refused_naming_the_index() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(crate::CATALOG_FILE),
            r#"{"version":1,"indexes":[{"name":"bad","dimension":4,"metric":"cosine",
                "vector_type":"dense","cloud":"aws","region":"us-east-1",
                "deletion_protection":"disabled","tags":{},"port":0,
                "search":{"m":1000}}]}"#,
        )
        .unwrap();
        let err = Catalog::open(
            dir.path(),
            Arc::new(FakeDataPlane::default()),
            PortPolicy::Ephemeral,
            "127.0.0.1",
        )
        .err()
        .expect("an out-of-range m is refused");
        assert!(err.to_string().contains("index 'bad'"), "{err}");
        assert!(err.to_string().contains("search.m"), "{err}");
    }

    #[test]
    fn unreadable_catalog_stops_startup_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(crate::CATALOG_FILE), b"{not json").unwrap();
        let err = Catalog::open(
            dir.path(),
            Arc::new(FakeDataPlane::default()),
            PortPolicy::Ephemeral,
            "127.0.0.1",
        )
        .err()
        .expect("a corrupt catalog is refused");
        assert!(err.to_string().contains("catalog.json"), "{err}");
    }

    /// A project other than the default, with an id shaped like the auth crate's.
    const OTHER: &str = "3f2b8c1e-7d4a-4e0b-9c6f-1a2b3c4d5e6f";

    #[test]
    fn the_same_name_in_two_projects_is_two_indexes() {
        let dp = Arc::new(FakeDataPlane::default());
        let policy = PortPolicy::parse("5081-5089").unwrap();
        let catalog = Catalog::new(dp.clone(), policy, "127.0.0.1");
        let mine = catalog.create_index(P, create("movies")).unwrap();
        let mut request = create("movies");
        request.dimension = Some(8);
        let theirs = catalog.create_index(OTHER, request).unwrap();
        assert_eq!(
            (mine.host.as_str(), mine.project_id.as_str()),
            ("127.0.0.1:5081", P)
        );
        assert_eq!(
            (theirs.host.as_str(), theirs.project_id.as_str()),
            ("127.0.0.1:5082", OTHER),
            "its own port"
        );
        assert_eq!(
            dp.attached.lock().unwrap().clone(),
            BTreeMap::from([
                ("movies".to_owned(), 5081),
                (format!("movies@{OTHER}"), 5082)
            ]),
            "its own data: the data plane knows them by distinct storage names"
        );
        assert_eq!(
            catalog
                .describe_index(P, "movies")
                .unwrap()
                .config
                .dimension
                .get(),
            4
        );
        assert_eq!(
            catalog
                .describe_index(OTHER, "movies")
                .unwrap()
                .config
                .dimension
                .get(),
            8
        );
        assert!(matches!(
            catalog.create_index(OTHER, create("movies")),
            Err(Error::AlreadyExists(_))
        ));
        let mut keys: Vec<String> = catalog
            .index_keys()
            .unwrap()
            .iter()
            .map(|key| key.without_incarnation().storage_name())
            .collect();
        keys.sort();
        assert_eq!(keys, ["movies".to_owned(), format!("movies@{OTHER}")]);
    }

    #[test]
    fn issue_14_a_catalog_written_before_incarnations_loads_with_the_old_storage_names() {
        let dir = tempfile::tempdir().unwrap();
        // What an older larch wrote: no incarnation, no tombstones.
        let old = serde_json::json!({"version": 1, "indexes": [
            {"name": "movies", "dimension": 4, "metric": "cosine", "vector_type": "dense",
             "cloud": "aws", "region": "us-east-1", "deletion_protection": "disabled",
             "tags": {}, "port": 6001},
            {"project": OTHER, "name": "books", "dimension": 4, "metric": "cosine",
             "vector_type": "dense", "cloud": "aws", "region": "us-east-1",
             "deletion_protection": "disabled", "tags": {}, "port": 6002},
        ]});
        std::fs::write(dir.path().join(crate::CATALOG_FILE), old.to_string()).unwrap();
        let dp = Arc::new(FakeDataPlane::default());
        let policy = PortPolicy::parse("6001-6010").unwrap();
        let catalog = Catalog::open(dir.path(), dp.clone(), policy, "127.0.0.1").unwrap();
        let storage = |dp: &FakeDataPlane| dp.storage.lock().unwrap().clone();
        let legacy = BTreeSet::from(["movies".to_owned(), format!("books@{OTHER}")]);
        assert_eq!(storage(&dp), legacy, "recovered from their old directories");
        let keys: BTreeSet<String> = catalog
            .index_keys()
            .unwrap()
            .iter()
            .map(IndexKey::storage_name)
            .collect();
        assert_eq!(keys, legacy);

        // Deleted and created again: the new index gets an incarnation, so new storage.
        catalog.delete_index(P, "movies").unwrap();
        catalog.create_index(P, create("movies")).unwrap();
        let now = storage(&dp);
        assert!(!now.contains("movies"), "{now:?}");
        assert!(
            now.iter().any(|s| s.starts_with("movies@default@")),
            "{now:?}"
        );
        // Written back with the incarnation; reloads the same.
        drop(catalog);
        let dp = Arc::new(FakeDataPlane::default());
        let _catalog = Catalog::open(dir.path(), dp.clone(), policy, "127.0.0.1").unwrap();
        assert_eq!(storage(&dp), now);
    }

    /// `catalog.json` exactly as the catalog wrote it before the store trait: an index with
    /// an incarnation, one without, and two tombstones.
    const CATALOG_BEFORE_THE_STORE_TRAIT: &str = r#"{
  "version": 1,
  "indexes": [
    {
      "project": "default",
      "name": "movies",
      "dimension": 4,
      "metric": "cosine",
      "vector_type": "dense",
      "cloud": "aws",
      "region": "us-east-1",
      "deletion_protection": "enabled",
      "tags": {
        "team": "search"
      },
      "port": 6001,
      "search": {
        "m": 16,
        "ef_construction": 200,
        "ef_search": 40,
        "quantization": "none"
      },
      "incarnation": "0123456789abcdef"
    },
    {
      "project": "default",
      "name": "old",
      "dimension": 8,
      "metric": "euclidean",
      "vector_type": "dense",
      "cloud": "gcp",
      "region": "europe-west4",
      "deletion_protection": "disabled",
      "tags": {},
      "port": 6002,
      "search": {
        "m": 16,
        "ef_construction": 200,
        "ef_search": 100,
        "quantization": "none"
      }
    }
  ],
  "tombstones": [
    {
      "project": "default",
      "name": "books",
      "incarnation": "aaaa"
    },
    {
      "project": "default",
      "name": "gone"
    }
  ]
}"#;

    #[test]
    fn a_catalog_file_loads_and_is_written_back_byte_for_byte_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::CATALOG_FILE);
        std::fs::write(&path, CATALOG_BEFORE_THE_STORE_TRAIT).unwrap();
        let dp = Arc::new(FakeDataPlane::default());
        let policy = PortPolicy::parse("6001-6010").unwrap();
        let catalog = Catalog::open(dir.path(), dp.clone(), policy, "127.0.0.1").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            CATALOG_BEFORE_THE_STORE_TRAIT,
            "recovering without a change writes nothing"
        );
        let movies = catalog.describe_index(P, "movies").unwrap();
        assert_eq!(
            (movies.host.as_str(), movies.search.ef_search()),
            ("127.0.0.1:6001", 40)
        );
        let storage = dp.storage.lock().unwrap().clone();
        assert_eq!(
            storage,
            BTreeSet::from([
                "movies@default@0123456789abcdef".to_owned(),
                "old".to_owned()
            ])
        );
        assert_eq!(catalog.tombstones().unwrap().len(), 2);

        // One change: the file is what the old catalog wrote for the same change.
        let books = IndexKey::parse(P, "books", "aaaa").unwrap();
        catalog.confirm_removed(&[books]).unwrap();
        let start = CATALOG_BEFORE_THE_STORE_TRAIT
            .find("    {\n      \"project\": \"default\",\n      \"name\": \"books\"")
            .unwrap();
        let end = CATALOG_BEFORE_THE_STORE_TRAIT
            .find("    {\n      \"project\": \"default\",\n      \"name\": \"gone\"")
            .unwrap();
        let expected = format!(
            "{}{}",
            &CATALOG_BEFORE_THE_STORE_TRAIT[..start],
            &CATALOG_BEFORE_THE_STORE_TRAIT[end..]
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "the catalog is readable by its owner only"
            );
        }
    }

    #[test]
    fn issue_14_a_delete_the_data_plane_missed_leaves_a_tombstone_until_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let dp = Arc::new(FakeDataPlane::default());
        let catalog = Catalog::open(dir.path(), dp.clone(), PortPolicy::Ephemeral, "h").unwrap();
        catalog.create_index(P, create("movies")).unwrap();
        let old = catalog.index_keys().unwrap().remove(0);
        dp.unreachable
            .store(true, std::sync::atomic::Ordering::Relaxed);
        catalog.delete_index(P, "movies").unwrap();
        assert_eq!(catalog.tombstones().unwrap(), std::slice::from_ref(&old));
        assert!(dp.storage.lock().unwrap().contains(&old.storage_name()));

        // The name is free at once; the new index has its own storage.
        catalog.create_index(P, create("movies")).unwrap();
        let new = catalog.index_keys().unwrap().remove(0);
        assert_ne!(new.storage_name(), old.storage_name());
        assert_eq!(catalog.tombstones().unwrap(), std::slice::from_ref(&old));

        // The tombstone survives a restart, and goes once the data plane confirms.
        drop(catalog);
        let catalog = Catalog::open(dir.path(), dp.clone(), PortPolicy::Ephemeral, "h").unwrap();
        assert_eq!(catalog.tombstones().unwrap(), std::slice::from_ref(&old));
        catalog.confirm_removed(&[old]).unwrap();
        assert!(catalog.tombstones().unwrap().is_empty());
        drop(catalog);
        let catalog = Catalog::open(dir.path(), dp, PortPolicy::Ephemeral, "h").unwrap();
        assert!(catalog.tombstones().unwrap().is_empty());
        assert_eq!(catalog.index_keys().unwrap(), [new]);
    }

    #[test]
    fn issue_14_a_delete_the_data_plane_did_leaves_no_tombstone() {
        let dp = Arc::new(FakeDataPlane::default());
        let catalog = Catalog::new(dp.clone(), PortPolicy::Ephemeral, "h");
        catalog.create_index(P, create("movies")).unwrap();
        catalog.delete_index(P, "movies").unwrap();
        assert!(catalog.tombstones().unwrap().is_empty());
        assert!(dp.storage.lock().unwrap().is_empty());
    }

    #[test]
    fn every_call_is_scoped_to_its_project() {
        let dp = Arc::new(FakeDataPlane::default());
        let catalog = Catalog::new(dp.clone(), PortPolicy::Ephemeral, "127.0.0.1");
        for name in ["b", "a", "shared"] {
            catalog.create_index(OTHER, create(name)).unwrap();
        }
        for name in ["shared", "c"] {
            catalog.create_index(P, create(name)).unwrap();
        }
        let names = |project: &str| -> Vec<String> {
            catalog
                .list_indexes(project)
                .unwrap()
                .into_iter()
                .map(|record| {
                    assert_eq!(record.project_id, project);
                    record.name.to_string()
                })
                .collect()
        };
        assert_eq!(names(OTHER), ["a", "b", "shared"], "only its own, by name");
        assert_eq!(names(P), ["c", "shared"]);
        assert!(names("nobody").is_empty());
        assert_eq!(
            (
                catalog.index_count(P).unwrap(),
                catalog.index_count(OTHER).unwrap(),
                catalog.index_count("nobody").unwrap()
            ),
            (2, 3, 0)
        );

        // Configure changes only the caller's index of that name.
        catalog
            .configure_index(
                OTHER,
                ConfigureIndex {
                    name: "shared".into(),
                    deletion_protection: Some("enabled".into()),
                    tags: BTreeMap::from([("team".into(), "x".into())]),
                    search: SearchSettings {
                        ef_search: Some(99),
                        ..Default::default()
                    },
                },
            )
            .unwrap();
        let theirs = catalog.describe_index(OTHER, "shared").unwrap();
        let mine = catalog.describe_index(P, "shared").unwrap();
        assert_eq!(theirs.deletion_protection, DeletionProtection::Enabled);
        assert_eq!(mine.deletion_protection, DeletionProtection::Disabled);
        assert!(mine.tags.is_empty());
        assert_eq!(mine.search, SearchParams::default());
        assert_eq!(dp.search_of("shared"), Some(SearchParams::default()));
        assert_eq!(
            dp.search_of(&format!("shared@{OTHER}")),
            Some(theirs.search),
            "the data plane applied it to the other project's index only"
        );

        // Delete removes only the caller's index; protection is per index too.
        catalog.delete_index(P, "shared").unwrap();
        assert!(matches!(
            catalog.describe_index(P, "shared"),
            Err(Error::NotFound(_))
        ));
        assert!(catalog.describe_index(OTHER, "shared").is_ok());
        assert!(matches!(
            catalog.delete_index(OTHER, "shared"),
            Err(Error::FailedPrecondition(_))
        ));
        assert!(!dp.attached.lock().unwrap().contains_key("shared"));
        assert!(
            dp.attached
                .lock()
                .unwrap()
                .contains_key(&format!("shared@{OTHER}"))
        );
        assert_eq!(
            (
                catalog.index_count(P).unwrap(),
                catalog.index_count(OTHER).unwrap()
            ),
            (1, 3)
        );
    }

    #[test]
    fn an_index_of_another_project_is_not_found_without_a_hint() {
        let catalog = Catalog::new(
            Arc::new(FakeDataPlane::default()),
            PortPolicy::Ephemeral,
            "127.0.0.1",
        );
        catalog.create_index(OTHER, create("secret")).unwrap();
        let absent = catalog
            .describe_index(P, "nothing")
            .unwrap_err()
            .to_string();
        let errors = [
            catalog.describe_index(P, "secret").unwrap_err(),
            catalog
                .configure_index(
                    P,
                    ConfigureIndex {
                        name: "secret".into(),
                        deletion_protection: Some("enabled".into()),
                        ..Default::default()
                    },
                )
                .unwrap_err(),
            catalog.delete_index(P, "secret").unwrap_err(),
        ];
        for err in errors {
            assert!(matches!(err, Error::NotFound(_)), "{err}");
            assert_eq!(err.to_string(), "index 'secret' not found");
            assert_eq!(
                err.to_string(),
                absent.replace("nothing", "secret"),
                "worded exactly as for a name nobody has"
            );
        }
        assert!(catalog.list_indexes(P).unwrap().is_empty());
        assert_eq!(
            catalog
                .describe_index(OTHER, "secret")
                .unwrap()
                .deletion_protection,
            DeletionProtection::Disabled,
            "the refused configure changed nothing"
        );
    }

    #[test]
    fn project_ids_are_checked() {
        let catalog = Catalog::new(
            Arc::new(FakeDataPlane::default()),
            PortPolicy::Ephemeral,
            "127.0.0.1",
        );
        for bad in ["", "a/b", "a@b", "a b", &"p".repeat(65)] {
            let err = catalog.create_index(bad, create("x")).unwrap_err();
            assert!(err.to_string().starts_with("project: "), "{bad:?}: {err}");
            assert!(catalog.describe_index(bad, "x").is_err());
            assert!(catalog.delete_index(bad, "x").is_err());
        }
        assert!(catalog.index_keys().unwrap().is_empty());
    }

    #[test]
    fn projects_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let policy = PortPolicy::parse("6001-6010").unwrap();
        let catalog = Catalog::open(
            dir.path(),
            Arc::new(FakeDataPlane::default()),
            policy,
            "127.0.0.1",
        )
        .unwrap();
        catalog.create_index(P, create("a")).unwrap();
        catalog.create_index(OTHER, create("a")).unwrap();
        let before = (
            catalog.list_indexes(P).unwrap(),
            catalog.list_indexes(OTHER).unwrap(),
        );
        drop(catalog);

        let dp = Arc::new(FakeDataPlane::default());
        let reopened = Catalog::open(dir.path(), dp.clone(), policy, "127.0.0.1").unwrap();
        assert_eq!(
            (
                reopened.list_indexes(P).unwrap(),
                reopened.list_indexes(OTHER).unwrap()
            ),
            before
        );
        assert_eq!(
            dp.attached.lock().unwrap().clone(),
            BTreeMap::from([("a".to_owned(), 6001), (format!("a@{OTHER}"), 6002)]),
            "each recovered from its own storage"
        );
    }

    #[test]
    fn catalog_written_before_projects_loads_into_the_default_project() {
        let dir = tempfile::tempdir().unwrap();
        // catalog.json as written before `project` existed.
        std::fs::write(
            dir.path().join(crate::CATALOG_FILE),
            r#"{"version":1,"indexes":[{"name":"old","dimension":4,"metric":"cosine",
                "vector_type":"dense","cloud":"aws","region":"us-east-1",
                "deletion_protection":"disabled","tags":{},"port":6003,
                "search":{"m":16,"ef_construction":128,"ef_search":64,"quantization":"none"}}]}"#,
        )
        .unwrap();
        let dp = Arc::new(FakeDataPlane::default());
        let policy = PortPolicy::parse("6001-6010").unwrap();
        let catalog = Catalog::open(dir.path(), dp.clone(), policy, "127.0.0.1").unwrap();
        let record = catalog.describe_index(P, "old").unwrap();
        assert_eq!(record.project_id, "default");
        assert_eq!(record.host, "127.0.0.1:6003");
        assert_eq!(
            dp.attached.lock().unwrap().clone(),
            BTreeMap::from([("old".to_owned(), 6003)]),
            "recovered from the same data directory as before"
        );
        assert!(matches!(
            catalog.describe_index(OTHER, "old"),
            Err(Error::NotFound(_))
        ));
        // The next save writes the project out.
        catalog.create_index(OTHER, create("new")).unwrap();
        let text = std::fs::read_to_string(dir.path().join(crate::CATALOG_FILE)).unwrap();
        assert!(text.contains(r#""project": "default""#), "{text}");
        assert!(text.contains(&format!(r#""project": "{OTHER}""#)), "{text}");
    }

    #[test]
    fn a_stored_bad_project_id_is_refused_naming_the_index() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(crate::CATALOG_FILE),
            r#"{"version":1,"indexes":[{"project":"a@b","name":"bad","dimension":4,
                "metric":"cosine","vector_type":"dense","cloud":"aws","region":"us-east-1",
                "deletion_protection":"disabled","tags":{},"port":0}]}"#,
        )
        .unwrap();
        let err = Catalog::open(
            dir.path(),
            Arc::new(FakeDataPlane::default()),
            PortPolicy::Ephemeral,
            "127.0.0.1",
        )
        .err()
        .expect("a bad project id is refused");
        assert!(
            err.to_string().contains("index 'bad' of project 'a@b'"),
            "{err}"
        );
    }

    #[test]
    fn port_policy_parsing() {
        assert_eq!(PortPolicy::parse("0"), Ok(PortPolicy::Ephemeral));
        assert_eq!(
            PortPolicy::parse("5081-5199"),
            Ok(PortPolicy::Range {
                first: 5081,
                last: 5199
            })
        );
        assert_eq!(
            PortPolicy::parse("6000"),
            Ok(PortPolicy::Range {
                first: 6000,
                last: 6000
            })
        );
        for bad in ["", "x", "5199-5081", "0-10", "70000"] {
            assert!(PortPolicy::parse(bad).is_err(), "{bad}");
        }
    }

    /// A data plane whose attach says it started, then waits until released (a data plane
    /// that is slow or paused).
    struct GatedDataPlane {
        entered: Mutex<std::sync::mpsc::Sender<()>>,
        release: Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl DataPlaneHost for GatedDataPlane {
        fn attach(
            &self,
            _: &IndexKey,
            _: IndexConfig,
            _: SearchParams,
            _: u16,
            _: AttachMode,
        ) -> Result<u16, AttachError> {
            self.entered.lock().unwrap().send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
            Ok(40000)
        }
        fn configure(&self, _: &IndexKey, _: SearchParams) -> Result<(), HostError> {
            Ok(())
        }
        fn detach(&self, _: &IndexKey) -> Result<(), HostError> {
            Ok(())
        }
    }

    #[test]
    fn issue_14_reads_answer_while_the_data_plane_is_slow_to_attach() {
        let (entered, attaching) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel();
        let dp = Arc::new(GatedDataPlane {
            entered: Mutex::new(entered),
            release: Mutex::new(released),
        });
        let catalog = Arc::new(Catalog::new(dp, PortPolicy::Ephemeral, "localhost"));
        let creating = {
            let catalog = Arc::clone(&catalog);
            std::thread::spawn(move || catalog.create_index(P, create("slow")))
        };
        attaching.recv().unwrap();
        // Read on another thread, so that a read blocked behind the attach fails the test
        // rather than hanging it.
        let (answer, answered) = std::sync::mpsc::channel();
        {
            let catalog = Arc::clone(&catalog);
            std::thread::spawn(move || {
                let listed = catalog.list_indexes(P).map(|l| l.len());
                let described = catalog.describe_index(P, "slow").map(|r| r.host);
                let _ = answer.send((listed, described));
            });
        }
        let (listed, described) = answered
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("reads answer while an attach is in flight");
        assert_eq!(
            listed.unwrap(),
            0,
            "not recorded before the data plane answered"
        );
        assert!(
            matches!(described, Err(Error::NotFound(_))),
            "{described:?}"
        );
        release.send(()).unwrap();
        let record = creating.join().unwrap().unwrap();
        assert_eq!(record.host, "localhost:40000");
        assert_eq!(catalog.list_indexes(P).unwrap().len(), 1);
    }
}
