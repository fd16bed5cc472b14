//! Backups and restore jobs as the catalog keeps them, beside the indexes in the same catalog
//! document (so they survive restarts, and in split mode every replica sees them).
//!
//! A [`BackupRecord`] describes a consistent point-in-time copy that the data plane took of an
//! index (see `larch_engine`'s backups) and belongs to the index's project: another project's
//! callers get NOT_FOUND for it. It outlives its source index (deleting the index only notes
//! when, in `source_index_deleted_at`). A [`RestoreJob`] is one creation of an index from a
//! backup, as Pinecone reports it: `Pending` while it runs, then `Completed` or `Failed`.
//!
//! Both are stored as plain serde values in `catalog.json` (`backups`, `restore_jobs`; absent
//! in catalogs written before backups existed).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::record::{DeletionProtection, Incarnation};

/// Longest backup name and description accepted (Pinecone documents none; these keep records
/// small).
const MAX_NAME: usize = 512;
const MAX_DESCRIPTION: usize = 4096;

/// A request for a backup of an index, from any transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateBackup {
    /// The index to back up (in the caller's project).
    pub index_name: String,
    /// The caller's name for the backup.
    pub name: Option<String>,
    /// A free-text note kept with it.
    pub description: Option<String>,
}

/// A request for a new index made from a backup, from any transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateIndexFromBackup {
    /// The backup to restore.
    pub backup_id: String,
    /// The new index's name (free in the caller's project).
    pub name: String,
    /// Its tags; the source index's tags (kept in the backup) when absent.
    pub tags: Option<BTreeMap<String, String>>,
    /// `enabled` or `disabled` (the default).
    pub deletion_protection: Option<String>,
}

/// One backup, as clients see it (Pinecone's `BackupModel`) and as it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// Its id (a UUID-shaped random id), unique over all projects.
    pub backup_id: String,
    /// The project owning it: the source index's.
    pub project_id: String,
    /// The name of the index it was taken from.
    pub source_index_name: String,
    /// That index's id (its incarnation: which creation of the name it was).
    pub source_index_id: String,
    /// The caller's name for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The caller's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `Ready` (backups are taken before the create call answers).
    pub status: String,
    /// The source index's cloud and region.
    pub cloud: String,
    /// See `cloud`.
    pub region: String,
    /// The source index's dimension, metric and vector type.
    pub dimension: u32,
    /// See `dimension`.
    pub metric: String,
    /// See `dimension`.
    pub vector_type: String,
    /// Records, namespaces and bytes of segment files in the backup.
    pub record_count: u64,
    /// See `record_count`.
    pub namespace_count: u64,
    /// See `record_count`.
    pub size_bytes: u64,
    /// The source index's tags when the backup was taken.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// When it was taken (RFC 3339, UTC).
    pub created_at: String,
    /// When the source index was deleted, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_index_deleted_at: Option<String>,
}

/// What a restore job has come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreStatus {
    /// Running (Pinecone has no separate in-progress value).
    Pending,
    /// The index is ready.
    Completed,
    /// The index could not be made; it does not exist.
    Failed,
}

impl RestoreStatus {
    /// Pinecone's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreStatus::Pending => "Pending",
            RestoreStatus::Completed => "Completed",
            RestoreStatus::Failed => "Failed",
        }
    }
}

/// One restore job (Pinecone's `RestoreJobModel`), as clients see it and as it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreJob {
    /// Its id (UUID-shaped), unique over all projects.
    pub restore_job_id: String,
    /// The project owning it: the caller's.
    pub project_id: String,
    /// The backup restored.
    pub backup_id: String,
    /// The index made.
    pub target_index_name: String,
    /// Its id (its incarnation).
    pub target_index_id: String,
    /// Where it stands.
    pub status: RestoreStatus,
    /// When it started and ended (RFC 3339, UTC).
    pub created_at: String,
    /// See `created_at`; `None` while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// 0 while pending, 100 once completed.
    pub percent_complete: f64,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CreateBackup {
    /// Checks the name and the description.
    pub(crate) fn check(&self) -> Result<()> {
        if self.name.as_ref().is_some_and(|name| name.len() > MAX_NAME) {
            return Err(Error::invalid(
                "name",
                format!("a backup name is at most {MAX_NAME} bytes"),
            ));
        }
        if self
            .description
            .as_ref()
            .is_some_and(|text| text.len() > MAX_DESCRIPTION)
        {
            return Err(Error::invalid(
                "description",
                format!("a backup description is at most {MAX_DESCRIPTION} bytes"),
            ));
        }
        Ok(())
    }
}

impl CreateIndexFromBackup {
    /// The deletion protection asked for (disabled when absent).
    pub(crate) fn protection(&self) -> Result<DeletionProtection> {
        self.deletion_protection
            .as_deref()
            .map_or(Ok(DeletionProtection::Disabled), |value| {
                DeletionProtection::parse(value, "deletion_protection")
            })
    }
}

/// A fresh random id shaped like a UUID (8-4-4-4-12 lowercase hex digits, 128 random bits).
pub(crate) fn random_id() -> String {
    let hex = format!(
        "{}{}",
        Incarnation::random().as_str(),
        Incarnation::random().as_str()
    );
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Now, in RFC 3339 (UTC, microseconds), as Pinecone writes timestamps.
pub(crate) fn now() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// `InvalidArgument` naming `field` when the id `id` is empty (an id that names nothing is
/// NOT_FOUND, but an empty one is a malformed request).
pub(crate) fn check_id(field: &'static str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Ok(())
}

/// "Not found" for backup `id` (also when another project owns it).
pub(crate) fn backup_not_found(id: &str) -> Error {
    Error::BackupNotFound(id.to_owned())
}

/// One page of `items` (sorted) after the one whose key is `token`: at most `limit` (1 to
/// 100, default 10), and the token of the next page when more follow. The token is the key
/// of the last item of the page (opaque to clients).
pub fn page<T: Clone>(
    items: &[T],
    key: impl Fn(&T) -> String,
    limit: Option<u32>,
    token: Option<&str>,
) -> Result<(Vec<T>, Option<String>)> {
    let limit = match limit {
        None => 10,
        Some(limit @ 1..=100) => limit as usize,
        Some(other) => {
            return Err(Error::invalid(
                "limit",
                format!("{other} is out of range: use 1 to 100"),
            ));
        }
    };
    let start = match token.filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => items.partition_point(|item| key(item).as_str() <= token),
    };
    let page: Vec<T> = items.iter().skip(start).take(limit).cloned().collect();
    let next = (start + page.len() < items.len())
        .then(|| page.last().map(&key))
        .flatten();
    Ok((page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_uuids_and_differ() {
        let (a, b) = (random_id(), random_id());
        assert_ne!(a, b);
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert!(a.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn pages_follow_tokens_to_the_end() {
        let items: Vec<String> = (0..25).map(|n| format!("{n:02}")).collect();
        let (first, next) = page(&items, String::clone, None, None).unwrap();
        assert_eq!(first.len(), 10);
        let (second, next) = page(&items, String::clone, Some(10), next.as_deref()).unwrap();
        assert_eq!(second[0], "10");
        let (last, next) = page(&items, String::clone, Some(10), next.as_deref()).unwrap();
        assert_eq!((last.len(), next), (5, None));
        let err = page(&items, String::clone, Some(0), None).unwrap_err();
        assert_eq!(err.to_string(), "limit: 0 is out of range: use 1 to 100");
        assert!(page(&items, String::clone, Some(101), None).is_err());
    }

    #[test]
    fn long_names_and_notes_are_refused() {
        let request = CreateBackup {
            index_name: "a".into(),
            name: Some("x".repeat(MAX_NAME + 1)),
            description: None,
        };
        assert!(
            request
                .check()
                .unwrap_err()
                .to_string()
                .starts_with("name:")
        );
    }
}
