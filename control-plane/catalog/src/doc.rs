//! The catalog document: every index of every project and the tombstones of deleted ones, as
//! the control plane holds it in memory, and every change to it.
//!
//! Each change is written once, as a method over the document that validates against it and
//! edits it (`fn(&mut Indexes, …) -> Result<Outcome>`). The [`Catalog`](crate::Catalog) runs
//! them through [`larch_state::Versioned::change`], the one read-modify-write loop, whatever
//! the store (`catalog.json`, a shared document, memory): on a conflict the loop runs the
//! change again on the newer document, which may now refuse it.

use std::collections::{BTreeMap, BTreeSet};

use larch_engine::SearchParams;

use crate::backups::{BackupRecord, RestoreJob, RestoreStatus, backup_not_found};
use crate::error::{Error, Result};
use crate::record::{
    DeletionProtection, Incarnation, IndexKey, IndexRecord, SearchSettings, merge_tags,
};

/// One index in the catalog.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// What clients see of it.
    pub(crate) record: IndexRecord,
    /// The data-plane port it is served on (0 when every index shares one address), kept so
    /// its `host` stays the same after a restart.
    pub(crate) port: u16,
    /// Which creation of the index this is; `None` for indexes from before incarnations.
    pub(crate) incarnation: Option<Incarnation>,
}

impl Entry {
    /// `key` as the data plane knows this index: with its incarnation.
    pub(crate) fn served(&self, key: &IndexKey) -> IndexKey {
        key.clone().with_incarnation(self.incarnation.clone())
    }
}

/// The indexes of one project or another, by project and name (keys without incarnation),
/// and the tombstones of deleted ones. Derefs to the map of live indexes, which is what most
/// code looks at.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Indexes {
    pub(crate) live: BTreeMap<IndexKey, Entry>,
    /// Deleted indexes (keys with their incarnation) whose data the data plane has not
    /// confirmed removing: it removes it when told, or at its next sync if that failed.
    pub(crate) tombstones: BTreeSet<IndexKey>,
    /// Every backup of every project, by id (see `backups`).
    pub(crate) backups: BTreeMap<String, BackupRecord>,
    /// Every restore job of every project, by id.
    pub(crate) restore_jobs: BTreeMap<String, RestoreJob>,
}

impl std::ops::Deref for Indexes {
    type Target = BTreeMap<IndexKey, Entry>;

    fn deref(&self) -> &Self::Target {
        &self.live
    }
}

/// What [`Indexes::configure`] did.
pub(crate) struct Configured {
    /// The record as changed.
    pub(crate) record: IndexRecord,
    /// The search parameters before the change.
    pub(crate) previous: SearchParams,
    /// The index as the data plane knows it.
    pub(crate) served: IndexKey,
}

impl Indexes {
    /// Adds a new index `key`; refused if its name is taken in its project.
    pub(crate) fn create(&mut self, key: &IndexKey, entry: &Entry) -> Result<()> {
        if self.live.contains_key(key) {
            return Err(Error::AlreadyExists(key.name().to_string()));
        }
        self.live.insert(key.clone(), entry.clone());
        Ok(())
    }

    /// Takes back the record of index `key`, incarnation `incarnation`, which the data plane
    /// refused to serve (a later creation of the same name is left alone).
    pub(crate) fn take_back(&mut self, key: &IndexKey, incarnation: Option<&Incarnation>) {
        if self
            .live
            .get(key)
            .is_some_and(|entry| entry.incarnation.as_ref() == incarnation)
        {
            self.live.remove(key);
        }
    }

    /// Changes deletion protection, merges tags (`""` removes a tag) and changes the given ANN
    /// parameters of index `key`.
    pub(crate) fn configure(
        &mut self,
        key: &IndexKey,
        protection: Option<DeletionProtection>,
        tags: &BTreeMap<String, String>,
        search: &SearchSettings,
    ) -> Result<Configured> {
        let entry = self.live.get_mut(key).ok_or_else(|| not_found(key))?;
        let mut record = entry.record.clone();
        merge_tags(&mut record.tags, tags.clone())?;
        if let Some(protection) = protection {
            record.deletion_protection = protection;
        }
        record.search = search.clone().apply_to(record.search)?;
        let previous = std::mem::replace(&mut entry.record, record.clone());
        Ok(Configured {
            record,
            previous: previous.search,
            served: entry.served(key),
        })
    }

    /// Puts the search parameters of index `key` back to `previous` after the data plane
    /// refused `refused`, unless another change came in between.
    pub(crate) fn restore_search(
        &mut self,
        key: &IndexKey,
        refused: SearchParams,
        previous: SearchParams,
    ) {
        if let Some(entry) = self.live.get_mut(key)
            && entry.record.search == refused
        {
            entry.record.search = previous;
        }
    }

    /// Deletes index `key` unless deletion protection is on, leaving a tombstone naming its
    /// incarnation; returns the index as the data plane knows it.
    pub(crate) fn delete(&mut self, key: &IndexKey) -> Result<IndexKey> {
        let entry = self.live.get(key).ok_or_else(|| not_found(key))?;
        check_unprotected(&entry.record)?;
        let served = entry.served(key);
        let incarnation = entry.incarnation.as_ref().map(|i| i.as_str().to_owned());
        self.live.remove(key);
        self.tombstones.insert(served.clone());
        // Its backups stay, noting that their source is gone.
        let deleted_at = crate::backups::now();
        for backup in self.backups.values_mut() {
            if backup.project_id == key.project()
                && backup.source_index_name == key.name().as_str()
                && Some(&backup.source_index_id) == incarnation.as_ref()
            {
                backup.source_index_deleted_at = Some(deleted_at.clone());
            }
        }
        Ok(served)
    }

    /// Backup `id` of `project`; `BackupNotFound` if there is none there.
    pub(crate) fn backup(&self, project: &str, id: &str) -> Result<&BackupRecord> {
        self.backups
            .get(id)
            .filter(|backup| backup.project_id == project)
            .ok_or_else(|| backup_not_found(id))
    }

    /// Records a new backup.
    pub(crate) fn add_backup(&mut self, backup: &BackupRecord) {
        self.backups
            .insert(backup.backup_id.clone(), backup.clone());
    }

    /// Forgets backup `id` of `project`; `BackupNotFound` if there is none there.
    pub(crate) fn remove_backup(&mut self, project: &str, id: &str) -> Result<BackupRecord> {
        self.backup(project, id)?;
        Ok(self.backups.remove(id).expect("checked above"))
    }

    /// Ends every pending restore job as failed, saying `why`.
    pub(crate) fn fail_pending_restores(&mut self, why: &str) {
        for job in self.restore_jobs.values_mut() {
            if job.status == RestoreStatus::Pending {
                job.status = RestoreStatus::Failed;
                job.completed_at = Some(crate::backups::now());
                job.error = Some(why.to_owned());
            }
        }
    }

    /// Records restore job `job` as it now stands (new or changed).
    pub(crate) fn put_restore_job(&mut self, job: &RestoreJob) {
        self.restore_jobs
            .insert(job.restore_job_id.clone(), job.clone());
    }

    /// Forgets the tombstones of `removed`; returns those it held.
    pub(crate) fn forget(&mut self, removed: &[IndexKey]) -> Vec<IndexKey> {
        removed
            .iter()
            .filter(|key| self.tombstones.remove(*key))
            .cloned()
            .collect()
    }

    /// Records that index `key` is served on `port`, with `host`.
    pub(crate) fn serve_on(&mut self, key: &IndexKey, port: u16, host: String) {
        if let Some(entry) = self.live.get_mut(key) {
            entry.port = port;
            entry.record.host = host;
        }
    }
}

/// Deletion protection refuses deleting `record`'s index.
fn check_unprotected(record: &IndexRecord) -> Result<()> {
    if record.deletion_protection == DeletionProtection::Enabled {
        let name = &record.name;
        return Err(Error::FailedPrecondition(format!(
            "index '{name}' has deletion protection enabled; disable it first with \
             ConfigureIndex {{\"name\":\"{name}\",\"deletion_protection\":\"disabled\"}}"
        )));
    }
    Ok(())
}

/// "Not found" for `key`, naming only the index: whether another project has an index of that
/// name is none of the caller's business.
pub(crate) fn not_found(key: &IndexKey) -> Error {
    Error::NotFound(key.name().to_string())
}
