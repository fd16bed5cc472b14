//! [`Admin`]: projects and API keys as the admin API changes them, persisted (hashes only,
//! never keys) in one of three places:
//!
//! - [`Admin::open`]: `<state_dir>/access.json`, one control plane.
//! - [`Admin::open_shared`]: a [`SharedDocument`] several control-plane replicas share (a
//!   Kubernetes Deployment with more than one pod). Each version of the document holds the
//!   same JSON as `access.json`.
//! - [`Admin::in_memory`]: nowhere (tests).
//!
//! The three are [`larch_state::Store`]s ([`LocalFile`], [`SharedDocument`], [`Memory`])
//! under one [`Versioned`] document: each change (create, update, revoke a key; create, delete
//! a project) is written once, as a closure over the in-memory access state, and run by
//! the one read-modify-write loop [`Versioned::change`], whatever the store.
//!
//! Every change is validated, written (atomically), and only then applied to the shared
//! [`KeyStore`], so a failed write changes nothing and an acknowledged change survives a
//! crash. Revocations and role changes apply to a key's next request: the store is read on
//! every request. Each change, made or refused, is one [`audit`] event.
//!
//! # Several replicas
//!
//! With a shared document, each replica keeps the version it read last. A change refreshes
//! first, validates and computes the new state against the newest version, and writes the
//! next version with a conditional create (a change that alters nothing writes nothing). If another replica wrote that version first, the
//! change is redone from the start on the newer state, validation included (a project name
//! just taken elsewhere is then `ALREADY_EXISTS`, a key just revoked elsewhere `NOT_FOUND`),
//! up to [`MAX_ATTEMPTS`] times. So no acknowledged change is lost or applied twice.
//!
//! Reads of the admin API ([`Admin::list_keys`], [`Admin::list_projects`], …) refresh first
//! (two cheap existence checks when nothing changed), so they see every change acknowledged
//! by any replica before they started. Authentication only reads the local [`KeyStore`]: a
//! key created or revoked on another replica takes effect here at the next
//! [`Admin::refresh`], which the server calls every [`REFRESH_EVERY`]; that is the bound.
//!
//! The bootstrap (admin) key lives in each replica's own file (see
//! [`bootstrap`](mod@crate::bootstrap)), never in the access state, and is rotated by
//! configuring a new one at start, never through this API, so an admin cannot lock everyone
//! out by revoking it. Refreshing never touches it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use larch_state::{Format, LocalFile, Memory, SharedDocument, Store, Versioned};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::access::Denied;
use crate::{
    Action, ApiKey, Error, Grant, KeyStore, Principal, Result, Role, StoredKey, Timestamp, audit,
    file,
};

/// Name of the file, inside the state directory, holding projects and (hashed) keys.
pub const ACCESS_FILE: &str = "access.json";
const FILE_VERSION: u32 = 1;

/// How often a server with shared access state calls [`Admin::refresh`]: the longest a key
/// created or revoked on another replica keeps being refused or accepted here.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// How many times a change is tried against a shared document that other replicas keep
/// changing first, before it is refused with [`Error::Contended`].
pub const MAX_ATTEMPTS: u32 = larch_state::ATTEMPTS;

/// Longest key name.
const MAX_KEY_NAME: usize = 80;
/// Longest project name.
const MAX_PROJECT_NAME: usize = 64;
/// Longest index name (Pinecone's rule, also the catalog's).
const MAX_INDEX_NAME: usize = 45;

/// The most index names one key's allow-list may hold. Every key travels to every split-mode
/// data plane on each refresh, so one key must stay small (at most ~46 KiB of names); a client
/// that needs more indexes gives the key all indexes of its project, or uses several keys.
pub const MAX_ALLOWED_INDEXES: usize = 1_000;

/// A project: owns indexes and keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// [`Grant::DEFAULT_PROJECT`] for the project that exists from the first start, a UUID
    /// for the others.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// When it was made.
    pub created_at: Timestamp,
}

/// A key as admins see it: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Key id (not secret).
    pub id: String,
    /// Name for people.
    pub name: String,
    /// Owning project.
    pub project_id: String,
    /// Pinecone roles.
    pub roles: Vec<Role>,
    /// Allow-list; empty means every index of the project.
    pub index_names: Vec<String>,
    /// When it was made, if known.
    pub created_at: Option<Timestamp>,
    /// When it stops working, if ever.
    pub expires_at: Option<Timestamp>,
    /// The organization's admin (bootstrap) key.
    pub admin: bool,
}

impl From<&StoredKey> for KeyInfo {
    fn from(stored: &StoredKey) -> KeyInfo {
        let grant = stored.grant();
        KeyInfo {
            id: stored.key_id().to_owned(),
            name: stored.name().to_owned(),
            project_id: grant.project_id.clone(),
            roles: grant.roles.clone(),
            index_names: grant.index_names.clone().unwrap_or_default(),
            created_at: stored.created_at(),
            expires_at: stored.expires_at(),
            admin: grant.is_admin,
        }
    }
}

/// A CreateApiKey request, as sent (validated by [`Admin::create_key`]).
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// 1-80 characters.
    pub name: String,
    /// Role names; empty means `ProjectEditor`.
    pub roles: Vec<String>,
    /// Empty means the default project.
    pub project_id: String,
    /// Allow-list; empty means every index of the project.
    pub index_names: Vec<String>,
    /// RFC 3339 time in the future; empty means never.
    pub expires_at: String,
}

/// An UpdateApiKey request, as sent (validated by [`Admin::update_key`]).
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    /// The key to change.
    pub id: String,
    /// New name, if any.
    pub name: Option<String>,
    /// New roles; empty leaves them.
    pub roles: Vec<String>,
    /// New allow-list; empty leaves it.
    pub index_names: Vec<String>,
    /// Lift the allow-list.
    pub all_indexes: bool,
}

/// The on-disk layout of [`ACCESS_FILE`], and of each version of a shared document.
#[derive(Serialize, Deserialize)]
struct AccessFile {
    version: u32,
    projects: Vec<Project>,
    keys: Vec<StoredKey>,
}

/// The access state: projects, and the keys other than the bootstrap key (which has its own
/// file). Every change is a function over it, run by [`Versioned::change`] whatever the
/// store.
#[derive(Debug, Clone, Default, PartialEq)]
struct Access {
    /// By id; always holds the default project once read or written.
    projects: BTreeMap<String, Project>,
    /// By key id.
    keys: BTreeMap<String, StoredKey>,
}

/// The access state's [`Format`]: [`Access`] as the bytes of [`ACCESS_FILE`] (pretty JSON,
/// projects by creation, keys by id).
struct AccessFormat;

impl Format for AccessFormat {
    type Doc = Access;
    type Error = Error;

    fn decode(&self, bytes: &[u8], location: &str) -> Result<Access> {
        let AccessFile { projects, keys, .. } =
            file::parse(bytes, FILE_VERSION, Path::new(location))?;
        Ok(Access {
            projects: with_default(projects),
            keys: keys
                .into_iter()
                .map(|key| (key.key_id().to_owned(), key))
                .collect(),
        })
    }

    fn encode(&self, doc: &Access, location: &str) -> Result<Vec<u8>> {
        let mut projects: Vec<&Project> = doc.projects.values().collect();
        projects.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        let file = AccessFile {
            version: FILE_VERSION,
            projects: projects.into_iter().cloned().collect(),
            keys: doc.keys.values().cloned().collect(),
        };
        file::encode(&file, Path::new(location))
    }

    fn failed(&self, err: larch_state::Error) -> Error {
        file::from_state(err)
    }
}

/// Projects and keys, changed by admins.
pub struct Admin {
    store: KeyStore,
    /// This replica's copy of the access state and where it is kept. Held for every change
    /// and refresh, so they apply one at a time and in the order written.
    state: Mutex<Versioned<AccessFormat>>,
    /// Runs before every write of a change: lets tests make another replica win the race.
    #[cfg(test)]
    before_write: Mutex<Option<Box<dyn FnMut() + Send>>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Admin")
            .field("location", &state.location())
            .field("version", state.version())
            .field("projects", &state.doc().projects.len())
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// Loads `dir/access.json` (creating it with the default project at first start) and puts
    /// its keys into `store`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKeyFile`] for a file that cannot be understood (it is left alone), and
    /// [`Error::Io`] when it cannot be read or written.
    pub fn open(dir: &Path, store: KeyStore) -> Result<Admin> {
        Admin::with(store, Box::new(LocalFile::new(dir.join(ACCESS_FILE))))
    }

    /// Loads the newest version of the access state shared with other replicas (writing
    /// version 1, with the default project, when there is none yet) and puts its keys into
    /// `store`. Call [`Admin::refresh`] every [`REFRESH_EVERY`] afterwards.
    ///
    /// # Errors
    ///
    /// [`Error::SharedState`] when the document cannot be read or written,
    /// [`Error::InvalidKeyFile`] for a version that cannot be understood (it is left alone).
    pub fn open_shared(doc: SharedDocument, store: KeyStore) -> Result<Admin> {
        Admin::with(store, Box::new(doc))
    }

    /// Projects and keys kept in memory only, with the default project.
    pub fn in_memory(store: KeyStore) -> Admin {
        Admin::with(store, Box::new(Memory::default()))
            .expect("a document in memory is always read and written")
    }

    /// The access state in `kept`, read, or written with the default project when there is
    /// none yet (by the first replica ever to start, with a shared document).
    fn with(store: KeyStore, kept: Box<dyn Store>) -> Result<Admin> {
        let admin = Admin {
            store,
            state: Mutex::new(Versioned::new(kept, AccessFormat)),
            #[cfg(test)]
            before_write: Mutex::new(None),
        };
        let mut state = admin.lock();
        state.change(|doc| {
            if !doc.projects.contains_key(Grant::DEFAULT_PROJECT) {
                doc.projects = with_default(Vec::new());
            }
            Ok(())
        })?;
        admin.apply(state.doc());
        drop(state);
        Ok(admin)
    }

    /// Takes the newest version of shared access state, if another replica wrote one since
    /// this replica last read or wrote: its projects, and its keys into the [`KeyStore`] (keys
    /// missing from it are removed from the store; the bootstrap key is never touched). Does
    /// nothing for local and in-memory admins.
    ///
    /// Changes and admin reads refresh by themselves; servers call this every
    /// [`REFRESH_EVERY`] so that authentication sees keys changed on other replicas.
    ///
    /// # Errors
    ///
    /// [`Error::SharedState`] when the document cannot be read, [`Error::InvalidKeyFile`]
    /// for a version that cannot be understood; this replica then keeps what it had.
    pub fn refresh(&self) -> Result<()> {
        self.fresh().map(drop)
    }

    /// The key store requests are checked against.
    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// Whether project `id` exists. With shared access state, when the newest version cannot
    /// be read, answers from the version read last (and logs why).
    pub fn project_exists(&self, id: &str) -> bool {
        let state = match self.fresh() {
            Ok(state) => state,
            Err(err) => {
                warn!(error = %err, "answering from the access state read last");
                self.lock()
            }
        };
        state.doc().projects.contains_key(id)
    }

    /// Creates a key; returns what admins see of it and the key itself, to be shown once.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`]/[`Error::UnknownRole`] for bad fields, [`Error::NotFound`] for an
    /// unknown project, [`Error::Denied`] if `actor` is not an admin, storage errors.
    pub fn create_key(&self, actor: &Principal, request: NewKey) -> Result<(KeyInfo, ApiKey)> {
        let project = non_empty_or(&request.project_id, Grant::DEFAULT_PROJECT).to_owned();
        let result = (|| {
            require_admin(actor)?;
            self.change(|access| {
                let name = key_name(&request.name)?;
                let roles = roles(&request.roles)?.unwrap_or_else(|| vec![Role::ProjectEditor]);
                let index_names = index_names(&request.index_names)?;
                let expires_at = expiry(&request.expires_at)?;
                if !access.projects.contains_key(&project) {
                    return Err(not_found("project", &project));
                }
                let key = ApiKey::generate();
                let grant = Grant {
                    project_id: project.clone(),
                    roles,
                    index_names,
                    is_admin: false,
                };
                let stored = StoredKey::new(&key, grant).named(name).expiring(expires_at);
                let info = KeyInfo::from(&stored);
                access.keys.insert(stored.key_id().to_owned(), stored);
                Ok((info, key))
            })
        })();
        let target = result.as_ref().ok().map(|(info, _)| info.id.clone());
        audited(
            actor,
            "CreateApiKey",
            Some(&project),
            target.as_deref(),
            result,
        )
    }

    /// Every key (never a secret), of `project` or of all projects when it is empty.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown project, [`Error::Denied`] for a non-admin.
    pub fn list_keys(&self, actor: &Principal, project: &str) -> Result<Vec<KeyInfo>> {
        require_admin(actor)?;
        let state = self.fresh()?;
        if !project.is_empty() && !state.doc().projects.contains_key(project) {
            return Err(not_found("project", project));
        }
        Ok(self
            .store
            .all()
            .iter()
            .filter(|stored| project.is_empty() || stored.grant().project_id == project)
            .map(KeyInfo::from)
            .collect())
    }

    /// One key (never its secret).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown (or revoked) key, [`Error::Denied`] for a non-admin.
    pub fn describe_key(&self, actor: &Principal, id: &str) -> Result<KeyInfo> {
        require_admin(actor)?;
        let _state = self.fresh()?;
        self.store
            .get(id)
            .map(|stored| KeyInfo::from(&stored))
            .ok_or_else(|| not_found("api key", id))
    }

    /// Changes a key's name, roles and/or allow-list; its next request sees the change.
    ///
    /// # Errors
    ///
    /// As [`Admin::create_key`], plus [`Error::FailedPrecondition`] for the bootstrap key.
    pub fn update_key(&self, actor: &Principal, update: KeyUpdate) -> Result<KeyInfo> {
        let mut project = None;
        let result = (|| {
            require_admin(actor)?;
            self.change(|access| {
                let stored = self.find_key(access, &update.id, &mut project, "changed")?;
                let mut grant = stored.grant().clone();
                if let Some(roles) = roles(&update.roles)? {
                    grant.roles = roles;
                }
                match (update.all_indexes, index_names(&update.index_names)?) {
                    (true, Some(_)) => {
                        return Err(Error::Invalid {
                            field: "index_names",
                            reason: "give either index_names or all_indexes, not both".into(),
                        });
                    }
                    (true, None) => grant.index_names = None,
                    (false, Some(names)) => grant.index_names = Some(names),
                    (false, None) => {}
                }
                if let Some(name) = &update.name {
                    stored.set_name(key_name(name)?);
                }
                stored.set_grant(grant);
                Ok(KeyInfo::from(&*stored))
            })
        })();
        audited(
            actor,
            "UpdateApiKey",
            project.as_deref(),
            Some(&update.id),
            result,
        )
    }

    /// Revokes a key: its next request is refused.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::FailedPrecondition`] for the bootstrap key,
    /// [`Error::Denied`] for a non-admin, storage errors.
    pub fn revoke_key(&self, actor: &Principal, id: &str) -> Result<()> {
        let mut project = None;
        let result = (|| {
            require_admin(actor)?;
            self.change(|access| {
                self.find_key(access, id, &mut project, "revoked")?;
                access.keys.remove(id);
                Ok(())
            })
        })();
        audited(actor, "RevokeApiKey", project.as_deref(), Some(id), result)
    }

    /// Creates a project with a unique `name`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`], [`Error::AlreadyExists`], [`Error::Denied`], storage errors.
    pub fn create_project(&self, actor: &Principal, name: &str) -> Result<Project> {
        let result = (|| {
            require_admin(actor)?;
            let name = project_name(name)?;
            self.change(|access| {
                if access.projects.values().any(|p| p.name == name) {
                    return Err(Error::AlreadyExists {
                        what: "project",
                        name: name.clone(),
                    });
                }
                let project = Project {
                    id: uuid::Uuid::new_v4().to_string(),
                    name: name.clone(),
                    created_at: Timestamp::now(),
                };
                access.projects.insert(project.id.clone(), project.clone());
                Ok(project)
            })
        })();
        let id = result.as_ref().ok().map(|p| p.id.clone());
        audited(actor, "CreateProject", id.as_deref(), None, result)
    }

    /// Every project, ordered by name.
    ///
    /// # Errors
    ///
    /// [`Error::Denied`] for a non-admin.
    pub fn list_projects(&self, actor: &Principal) -> Result<Vec<Project>> {
        require_admin(actor)?;
        let mut projects: Vec<Project> = self.fresh()?.doc().projects.values().cloned().collect();
        projects.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(projects)
    }

    /// One project.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Denied`] for a non-admin.
    pub fn describe_project(&self, actor: &Principal, id: &str) -> Result<Project> {
        require_admin(actor)?;
        self.fresh()?
            .doc()
            .projects
            .get(id)
            .cloned()
            .ok_or_else(|| not_found("project", id))
    }

    /// Deletes a project and revokes its keys; `index_count` says how many indexes it still
    /// has (the catalog knows), and any is a refusal.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::FailedPrecondition`] (default project, or indexes left),
    /// [`Error::Denied`], storage errors.
    pub fn delete_project(
        &self,
        actor: &Principal,
        id: &str,
        index_count: impl FnOnce(&str) -> usize,
    ) -> Result<()> {
        // Asked once even if the change is redone: the catalog does not depend on the access
        // state.
        let mut index_count = Some(index_count);
        let mut indexes = None;
        let result = (|| {
            require_admin(actor)?;
            self.change(|access| {
                let project = access
                    .projects
                    .remove(id)
                    .ok_or_else(|| not_found("project", id))?;
                if id == Grant::DEFAULT_PROJECT {
                    return Err(Error::FailedPrecondition(
                        "the default project cannot be deleted".into(),
                    ));
                }
                let count = *indexes.get_or_insert_with(|| {
                    index_count.take().expect("set once, taken only here")(id)
                });
                if count > 0 {
                    return Err(Error::FailedPrecondition(format!(
                        "project '{}' ({id}) still has {count} index(es); delete them first with \
                         a key of that project",
                        project.name
                    )));
                }
                access.keys.retain(|_, key| key.grant().project_id != id);
                Ok(())
            })
        })();
        audited(actor, "DeleteProject", Some(id), None, result)
    }

    fn lock(&self) -> MutexGuard<'_, Versioned<AccessFormat>> {
        // Changes replace the state whole after it is written; a poisoned lock is still
        // consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock, after taking the newest shared version (for admin reads).
    fn fresh(&self) -> Result<MutexGuard<'_, Versioned<AccessFormat>>> {
        let mut state = self.lock();
        if state.refresh()? {
            self.apply(state.doc());
        }
        Ok(state)
    }

    /// Makes one change: `edit` validates it against the newest state and makes it on a copy,
    /// which is written and only then applied (see [`Versioned::change`]: a change another
    /// replica beat to the next version is redone from the start on the newer state).
    fn change<T>(&self, mut edit: impl FnMut(&mut Access) -> Result<T>) -> Result<T> {
        let mut state = self.lock();
        let made = state.change(|doc| {
            let made = edit(doc)?;
            #[cfg(test)]
            if let Some(hook) = self
                .before_write
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
            {
                hook();
            }
            Ok(made)
        });
        // Also after a failure: the copy may have caught up with another replica's change.
        self.apply(state.doc());
        made
    }

    /// Makes the store's keys those of `access`, the bootstrap key aside: it is never removed
    /// nor replaced (a stored key of the same id is ignored). Admin keys other than it come
    /// only from the stored state (written there by an operator), and stay until restart.
    fn apply(&self, access: &Access) {
        for held in self.store.all() {
            if !held.grant().is_admin && !access.keys.contains_key(held.key_id()) {
                self.store.remove(held.key_id());
            }
        }
        for (id, key) in &access.keys {
            match self.store.get(id) {
                // Never replace the bootstrap key, nor a key that did not change.
                Some(held) if held.grant().is_admin || held == *key => {}
                _ => self.store.insert(key.clone()),
            }
        }
    }

    /// The key `id` of `access`, to be changed or revoked (`what`); `project` learns its
    /// project for the audit event.
    fn find_key<'d>(
        &self,
        access: &'d mut Access,
        id: &str,
        project: &mut Option<String>,
        what: &str,
    ) -> Result<&'d mut StoredKey> {
        // The bootstrap key is in the store but never in the access state.
        if let Some(held) = self.store.get(id).filter(|key| key.grant().is_admin) {
            *project = Some(held.grant().project_id.clone());
            refuse_bootstrap(&held, what)?;
        }
        let stored = access
            .keys
            .get_mut(id)
            .ok_or_else(|| not_found("api key", id))?;
        *project = Some(stored.grant().project_id.clone());
        Ok(stored)
    }
}

/// `projects` by id, with the default project added if missing.
fn with_default(projects: Vec<Project>) -> BTreeMap<String, Project> {
    let mut projects: BTreeMap<String, Project> =
        projects.into_iter().map(|p| (p.id.clone(), p)).collect();
    projects
        .entry(Grant::DEFAULT_PROJECT.to_owned())
        .or_insert_with(default_project);
    projects
}

fn default_project() -> Project {
    Project {
        id: Grant::DEFAULT_PROJECT.to_owned(),
        name: Grant::DEFAULT_PROJECT.to_owned(),
        created_at: Timestamp::now(),
    }
}

/// Audits a change and passes its result on.
fn audited<T>(
    actor: &Principal,
    rpc: &str,
    project: Option<&str>,
    target: Option<&str>,
    result: Result<T>,
) -> Result<T> {
    audit::change(actor, rpc, project, target, result.as_ref().map(|_| ()));
    result
}

fn require_admin(actor: &Principal) -> Result<()> {
    actor
        .authorize(Action::Admin, None)
        .map_err(|denied: Denied| Error::Denied(denied))
}

fn refuse_bootstrap(stored: &StoredKey, what: &str) -> Result<()> {
    if stored.grant().is_admin {
        return Err(Error::FailedPrecondition(format!(
            "the bootstrap admin key cannot be {what} through the API; rotate it by starting \
             larch with a new LARCH_API_KEY or LARCH_API_KEY_FILE"
        )));
    }
    Ok(())
}

fn not_found(what: &'static str, id: &str) -> Error {
    Error::NotFound {
        what,
        id: id.to_owned(),
    }
}

fn non_empty_or<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}

fn key_name(name: &str) -> Result<String> {
    let name = name.trim();
    let count = name.chars().count();
    if count == 0 || count > MAX_KEY_NAME || name.chars().any(char::is_control) {
        return Err(Error::Invalid {
            field: "name",
            reason: format!(
                "a key needs a name of 1-{MAX_KEY_NAME} printable characters, e.g. \"ci\""
            ),
        });
    }
    Ok(name.to_owned())
}

fn project_name(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PROJECT_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(Error::Invalid {
            field: "name",
            reason: format!(
                "a project name has 1-{MAX_PROJECT_NAME} characters: letters, digits, '-' and \
                 '_'; got {name:?}"
            ),
        });
    }
    Ok(name.to_owned())
}

/// Parsed, de-duplicated roles; `None` when none were given.
fn roles(names: &[String]) -> Result<Option<Vec<Role>>> {
    if names.is_empty() {
        return Ok(None);
    }
    let mut roles = Vec::with_capacity(names.len());
    for name in names {
        let role: Role = name.trim().parse()?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    Ok(Some(roles))
}

/// Checked, de-duplicated index names; `None` when none were given.
fn index_names(names: &[String]) -> Result<Option<Vec<String>>> {
    if names.is_empty() {
        return Ok(None);
    }
    if names.len() > MAX_ALLOWED_INDEXES {
        return Err(Error::Invalid {
            field: "index_names",
            reason: format!(
                "{} index names given; a key's allow-list holds at most {MAX_ALLOWED_INDEXES} \
                 (give the key every index of its project instead, or split it into several keys)",
                names.len()
            ),
        });
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let valid = !name.is_empty()
            && name.len() <= MAX_INDEX_NAME
            && !name.starts_with('-')
            && !name.ends_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(Error::Invalid {
                field: "index_names",
                reason: format!(
                    "{name:?} is not an index name (1-{MAX_INDEX_NAME} characters: a-z, 0-9 and \
                     '-', not at either end)"
                ),
            });
        }
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    Ok(Some(out))
}

fn expiry(text: &str) -> Result<Option<Timestamp>> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let at: Timestamp = text.parse().map_err(|err| match err {
        Error::Invalid { reason, .. } => Error::Invalid {
            field: "expires_at",
            reason,
        },
        other => other,
    })?;
    if at.is_past() {
        return Err(Error::Invalid {
            field: "expires_at",
            reason: format!("{at} is not in the future"),
        });
    }
    Ok(Some(at))
}

#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod tests;
