//! Backups and restore jobs in the catalog, over a data plane that keeps indexes and backups
//! in a real engine (a temporary directory): records survive reopening the catalog and the
//! source index's deletion, belong to one project, and a failed restore leaves a failed job
//! and no index.

use larch_engine::{Engine, ErrorCode, ListRequest, UpsertRequest, VectorInput};

use super::*;
use crate::{BackupRecord, CreateBackup, CreateIndexFromBackup, RestoreStatus};

/// The data plane of an embedded server, reduced to its engine (no ports).
struct EnginePlane(Engine);

impl DataPlaneHost for EnginePlane {
    fn attach(
        &self,
        key: &IndexKey,
        config: IndexConfig,
        _: SearchParams,
        port: u16,
        mode: AttachMode,
    ) -> Result<u16, AttachError> {
        let storage = key.storage_name();
        match mode {
            AttachMode::Create => self.0.create_index(&storage, config),
            AttachMode::Recover => self.0.open_index(&storage, config),
        }
        .map_err(|err| AttachError::Refused(larch_model::Cause::new(err)))?;
        Ok(if port == 0 { 40000 } else { port })
    }
    fn configure(&self, _: &IndexKey, _: SearchParams) -> Result<(), HostError> {
        Ok(())
    }
    fn detach(&self, key: &IndexKey) -> Result<(), HostError> {
        let storage = key.storage_name();
        match self.0.drop_index(&storage) {
            Err(err) if err.code() == ErrorCode::NotFound => self.0.remove_orphan(&storage),
            other => other,
        }
        .map_err(refused)
    }
    fn backup(&self, key: &IndexKey, backup_id: &str) -> Result<BackupInfo, HostError> {
        self.0
            .backup_index(&key.storage_name(), backup_id)
            .map_err(refused)
    }
    fn restore(&self, backup_id: &str, key: &IndexKey) -> Result<BackupInfo, HostError> {
        self.0
            .restore_backup(backup_id, &key.storage_name())
            .map_err(refused)
    }
    fn delete_backup(&self, backup_id: &str) -> Result<(), HostError> {
        self.0.delete_backup(backup_id).map(drop).map_err(refused)
    }
}

fn refused(err: larch_engine::Error) -> HostError {
    HostError::Refused(larch_model::Cause::new(err))
}

/// A catalog in `dir`, its indexes and backups under `dir/indexes` and `dir/backups`.
fn catalog_in(dir: &Path) -> (Catalog, Engine) {
    let engine = Engine::open(dir.join("indexes"));
    let plane = Arc::new(EnginePlane(engine.clone()));
    let catalog = Catalog::open(dir, plane, PortPolicy::Ephemeral, "127.0.0.1").unwrap();
    (catalog, engine)
}

/// Upserts `ids` into index `name` of the default project.
fn upsert(catalog: &Catalog, engine: &Engine, name: &str, ids: &[&str]) {
    let key = catalog.index_keys().unwrap();
    let key = key.iter().find(|k| k.name().as_str() == name).unwrap();
    let vectors = ids
        .iter()
        .map(|id| VectorInput {
            id: (*id).into(),
            values: vec![1.0; 4],
            ..Default::default()
        })
        .collect();
    let request = UpsertRequest {
        namespace: String::new(),
        vectors,
    };
    engine
        .index(&key.storage_name())
        .unwrap()
        .upsert(request)
        .unwrap();
}

fn ids(catalog: &Catalog, engine: &Engine, name: &str) -> Vec<String> {
    let keys = catalog.index_keys().unwrap();
    let key = keys.iter().find(|k| k.name().as_str() == name).unwrap();
    let index = engine.index(&key.storage_name()).unwrap();
    index.list(ListRequest::default()).unwrap().ids
}

fn backup_of(catalog: &Catalog, project: &str, index: &str) -> BackupRecord {
    let request = CreateBackup {
        index_name: index.into(),
        name: Some("nightly".into()),
        description: None,
    };
    catalog.create_backup(project, request).unwrap()
}

fn restore(name: &str, backup: &BackupRecord) -> CreateIndexFromBackup {
    CreateIndexFromBackup {
        backup_id: backup.backup_id.clone(),
        name: name.into(),
        ..Default::default()
    }
}

#[test]
fn backups_and_restore_jobs_survive_reopening_and_the_index_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, engine) = catalog_in(dir.path());
    let tags = BTreeMap::from([("env".to_owned(), "dev".to_owned())]);
    catalog
        .create_index(
            P,
            CreateIndex {
                tags,
                ..create("movies")
            },
        )
        .unwrap();
    upsert(&catalog, &engine, "movies", &["a", "b"]);
    let backup = backup_of(&catalog, P, "movies");
    assert_eq!(
        (
            backup.record_count,
            backup.dimension,
            backup.status.as_str()
        ),
        (2, 4, "Ready")
    );
    assert_eq!(backup.tags["env"], "dev");
    upsert(&catalog, &engine, "movies", &["late"]);
    catalog.delete_index(P, "movies").unwrap();
    assert!(
        catalog
            .describe_backup(P, &backup.backup_id)
            .unwrap()
            .source_index_deleted_at
            .is_some()
    );
    // The index-scoped list needs the index, or include_deleted.
    assert!(matches!(
        catalog.list_backups(P, Some("movies"), false),
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        catalog.list_backups(P, Some("movies"), true).unwrap().len(),
        1
    );
    drop((catalog, engine));

    let (catalog, engine) = catalog_in(dir.path());
    let (job, record) = catalog
        .create_index_from_backup(P, restore("movies", &backup))
        .unwrap();
    assert_eq!(
        (job.status, job.percent_complete),
        (RestoreStatus::Completed, 100.0)
    );
    assert_eq!(record.tags["env"], "dev", "the backup's tags");
    assert_eq!(ids(&catalog, &engine, "movies"), ["a", "b"]);
    drop((catalog, engine));

    let (catalog, engine) = catalog_in(dir.path());
    assert_eq!(catalog.list_restore_jobs(P).unwrap(), [job]);
    assert_eq!(ids(&catalog, &engine, "movies"), ["a", "b"]);
    catalog.delete_backup(P, &backup.backup_id).unwrap();
    assert!(matches!(
        catalog.describe_backup(P, &backup.backup_id),
        Err(Error::BackupNotFound(_))
    ));
    assert!(engine.backup_info(&backup.backup_id).is_err());
}

#[test]
fn backups_and_jobs_belong_to_one_project() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, _engine) = catalog_in(dir.path());
    catalog.create_index(P, create("movies")).unwrap();
    let backup = backup_of(&catalog, P, "movies");
    const OTHER: &str = "3f2b8c1e-7d4a-4e0b-9c6f-1a2b3c4d5e6f";
    let id = &backup.backup_id;
    assert!(matches!(
        catalog.describe_backup(OTHER, id),
        Err(Error::BackupNotFound(_))
    ));
    assert!(catalog.list_backups(OTHER, None, true).unwrap().is_empty());
    assert!(matches!(
        catalog.delete_backup(OTHER, id),
        Err(Error::BackupNotFound(_))
    ));
    assert!(matches!(
        catalog.create_index_from_backup(OTHER, restore("stolen", &backup)),
        Err(Error::BackupNotFound(_))
    ));
    let (job, _) = catalog
        .create_index_from_backup(P, restore("copy", &backup))
        .unwrap();
    assert!(matches!(
        catalog.describe_restore_job(OTHER, &job.restore_job_id),
        Err(Error::RestoreJobNotFound(_))
    ));
    assert!(catalog.list_restore_jobs(OTHER).unwrap().is_empty());
    // An empty id is a malformed request, not an unknown one.
    for err in [
        catalog.describe_backup(P, "").unwrap_err(),
        catalog.delete_backup(P, "").unwrap_err(),
        catalog.describe_restore_job(P, "").unwrap_err(),
    ] {
        assert!(
            err.to_string().ends_with(": is required")
                && err.code() == larch_model::Code::InvalidArgument,
            "{err}"
        );
    }
    assert_eq!(catalog.list_backups(P, None, false).unwrap(), [backup]);
}

#[test]
fn a_failed_restore_leaves_a_failed_job_and_no_index() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, engine) = catalog_in(dir.path());
    catalog.create_index(P, create("movies")).unwrap();
    let backup = backup_of(&catalog, P, "movies");
    // The data plane lost the backup's files behind the catalog's back.
    assert!(engine.delete_backup(&backup.backup_id).unwrap());
    let err = catalog
        .create_index_from_backup(P, restore("copy", &backup))
        .unwrap_err();
    assert_eq!(err.code(), larch_model::Code::NotFound, "{err}");
    let jobs = catalog.list_restore_jobs(P).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, RestoreStatus::Failed);
    assert!(
        jobs[0].error.as_deref().unwrap().contains("not found"),
        "{jobs:?}"
    );
    assert!(matches!(
        catalog.describe_index(P, "copy"),
        Err(Error::NotFound(_))
    ));
    // A taken name is refused before any job is recorded.
    assert!(matches!(
        catalog.create_index_from_backup(P, restore("movies", &backup)),
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(catalog.list_restore_jobs(P).unwrap().len(), 1);
}

#[test]
fn a_restore_interrupted_by_a_stop_ends_failed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, engine) = catalog_in(dir.path());
    catalog.create_index(P, create("movies")).unwrap();
    let backup = backup_of(&catalog, P, "movies");
    catalog
        .create_index_from_backup(P, restore("copy", &backup))
        .unwrap();
    drop((catalog, engine));
    // As a crash between recording the job and finishing it leaves catalog.json.
    let file = dir.path().join(crate::CATALOG_FILE);
    let mut stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    stored["restore_jobs"][0]["status"] = "Pending".into();
    stored["restore_jobs"][0]["completed_at"] = serde_json::Value::Null;
    std::fs::write(&file, serde_json::to_vec(&stored).unwrap()).unwrap();

    let (catalog, _engine) = catalog_in(dir.path());
    let jobs = catalog.list_restore_jobs(P).unwrap();
    assert_eq!(jobs[0].status, RestoreStatus::Failed);
    assert!(jobs[0].completed_at.is_some());
    assert!(jobs[0].error.as_deref().unwrap().contains("interrupted"));
}
