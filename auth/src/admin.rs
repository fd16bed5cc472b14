//! [`Admin`]: projects and API keys as the admin API changes them, persisted in
//! `<state_dir>/access.json` (hashes only, never keys).
//!
//! Every change is validated, written to disk (atomically), and only then applied to the
//! shared [`KeyStore`], so a failed write changes nothing and an acknowledged change survives
//! a crash. Revocations and role changes apply to a key's next request: the store is read on
//! every request. Each change, made or refused, is an [`audit`](crate::audit) event.
//!
//! The bootstrap (admin) key lives in its own file (see [`crate::bootstrap`]) and is rotated
//! by configuring a new one at start, never through this API, so an admin cannot lock
//! everyone out by revoking it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::access::Denied;
use crate::{
    Action, ApiKey, Error, Grant, KeyStore, Principal, Result, Role, StoredKey, Timestamp, audit,
    file,
};

/// Name of the file, inside the state directory, holding projects and (hashed) keys.
pub const ACCESS_FILE: &str = "access.json";
const FILE_VERSION: u32 = 1;

/// Longest key name.
const MAX_KEY_NAME: usize = 80;
/// Longest project name.
const MAX_PROJECT_NAME: usize = 64;
/// Longest index name (Pinecone's rule, also the catalog's).
const MAX_INDEX_NAME: usize = 45;

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

/// The on-disk layout of [`ACCESS_FILE`].
#[derive(Serialize, Deserialize)]
struct AccessFile {
    version: u32,
    projects: Vec<Project>,
    keys: Vec<StoredKey>,
}

/// Projects and keys, changed by admins.
pub struct Admin {
    store: KeyStore,
    /// Where [`ACCESS_FILE`] lives; `None` keeps everything in memory (tests).
    dir: Option<PathBuf>,
    /// Held for every change, so changes apply one at a time and in the order written.
    projects: Mutex<BTreeMap<String, Project>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("dir", &self.dir)
            .field("projects", &self.lock().len())
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
        let path = dir.join(ACCESS_FILE);
        let admin = match file::read::<AccessFile>(&path, FILE_VERSION)? {
            Some(AccessFile { projects, keys, .. }) => {
                for key in keys {
                    store.insert(key);
                }
                let projects = projects.into_iter().map(|p| (p.id.clone(), p)).collect();
                Admin {
                    store,
                    dir: Some(dir.to_owned()),
                    projects: Mutex::new(projects),
                }
            }
            None => {
                let admin = Admin::in_memory(store);
                let admin = Admin {
                    dir: Some(dir.to_owned()),
                    ..admin
                };
                admin.save(&admin.lock(), admin.persisted_keys())?;
                admin
            }
        };
        admin
            .lock()
            .entry(Grant::DEFAULT_PROJECT.to_owned())
            .or_insert_with(default_project);
        Ok(admin)
    }

    /// Projects and keys kept in memory only, with the default project.
    pub fn in_memory(store: KeyStore) -> Admin {
        let default = default_project();
        Admin {
            store,
            dir: None,
            projects: Mutex::new(BTreeMap::from([(default.id.clone(), default)])),
        }
    }

    /// The key store requests are checked against.
    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// Whether project `id` exists.
    pub fn project_exists(&self, id: &str) -> bool {
        self.lock().contains_key(id)
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
            let projects = self.lock();
            let name = key_name(&request.name)?;
            let roles = roles(&request.roles)?.unwrap_or_else(|| vec![Role::ProjectEditor]);
            let index_names = index_names(&request.index_names)?;
            let expires_at = expiry(&request.expires_at)?;
            if !projects.contains_key(&project) {
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
            let mut keys = self.persisted_keys();
            keys.push(stored.clone());
            self.save(&projects, keys)?;
            let info = KeyInfo::from(&stored);
            self.store.insert(stored);
            Ok((info, key))
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
        if !project.is_empty() && !self.project_exists(project) {
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
            let projects = self.lock();
            let mut stored = self
                .store
                .get(&update.id)
                .ok_or_else(|| not_found("api key", &update.id))?;
            project = Some(stored.grant().project_id.clone());
            refuse_bootstrap(&stored, "changed")?;
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
            let keys = self
                .persisted_keys()
                .into_iter()
                .map(|key| {
                    if key.key_id() == update.id {
                        stored.clone()
                    } else {
                        key
                    }
                })
                .collect();
            self.save(&projects, keys)?;
            let info = KeyInfo::from(&stored);
            self.store.insert(stored);
            Ok(info)
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
            let projects = self.lock();
            let stored = self.store.get(id).ok_or_else(|| not_found("api key", id))?;
            project = Some(stored.grant().project_id.clone());
            refuse_bootstrap(&stored, "revoked")?;
            let keys = self
                .persisted_keys()
                .into_iter()
                .filter(|key| key.key_id() != id)
                .collect();
            self.save(&projects, keys)?;
            self.store.remove(id);
            Ok(())
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
            let mut projects = self.lock();
            if projects.values().any(|p| p.name == name) {
                return Err(Error::AlreadyExists {
                    what: "project",
                    name,
                });
            }
            let project = Project {
                id: uuid::Uuid::new_v4().to_string(),
                name,
                created_at: Timestamp::now(),
            };
            let mut next = projects.clone();
            next.insert(project.id.clone(), project.clone());
            self.save(&next, self.persisted_keys())?;
            *projects = next;
            Ok(project)
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
        let mut projects: Vec<Project> = self.lock().values().cloned().collect();
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
        self.lock()
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
        let result = (|| {
            require_admin(actor)?;
            let mut projects = self.lock();
            let project = projects.get(id).ok_or_else(|| not_found("project", id))?;
            if id == Grant::DEFAULT_PROJECT {
                return Err(Error::FailedPrecondition(
                    "the default project cannot be deleted".into(),
                ));
            }
            let indexes = index_count(id);
            if indexes > 0 {
                return Err(Error::FailedPrecondition(format!(
                    "project '{}' ({id}) still has {indexes} index(es); delete them first with a \
                     key of that project",
                    project.name
                )));
            }
            let (gone, keys): (Vec<StoredKey>, Vec<StoredKey>) = self
                .persisted_keys()
                .into_iter()
                .partition(|key| key.grant().project_id == id);
            let mut next = projects.clone();
            next.remove(id);
            self.save(&next, keys)?;
            *projects = next;
            for key in gone {
                self.store.remove(key.key_id());
            }
            Ok(())
        })();
        audited(actor, "DeleteProject", Some(id), None, result)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Project>> {
        // Changes replace the map whole after the file is written; a poisoned lock is still
        // consistent.
        self.projects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The keys written to [`ACCESS_FILE`]: all but the bootstrap key, which has its own file.
    fn persisted_keys(&self) -> Vec<StoredKey> {
        self.store
            .all()
            .into_iter()
            .filter(|key| !key.grant().is_admin)
            .collect()
    }

    fn save(&self, projects: &BTreeMap<String, Project>, keys: Vec<StoredKey>) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let mut projects: Vec<Project> = projects.values().cloned().collect();
        projects.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        file::write(
            dir,
            &dir.join(ACCESS_FILE),
            &AccessFile {
                version: FILE_VERSION,
                projects,
                keys,
            },
        )
    }
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
mod tests;
