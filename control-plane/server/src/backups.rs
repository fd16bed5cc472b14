//! Backups and restore jobs: the [`Indexes`] calls both transports share, Pinecone's JSON for
//! the REST routes (`/indexes/{name}/backups`, `/backups…`, `/restore-jobs…`, served by
//! [`crate::rest`]), and the `larch.control.v1.BackupService` gRPC handlers ([`BackupApi`]).
//!
//! Authorization is the index routes': taking a backup, deleting one and restoring one change
//! indexes (`ControlWrite`, as create and delete index do), listing and describing read them
//! (`ControlRead`, so viewers may). A key restricted to some indexes sees only the backups of
//! those indexes and the restore jobs into them; anything else of its project is NOT_FOUND
//! for it, as another project's backups are for everyone.

use std::collections::BTreeMap;

use larch_auth::{Action, Principal};
use larch_catalog::catalog::{backup_order, job_order};
use larch_catalog::{
    BackupRecord, CreateBackup, CreateIndexFromBackup, IndexRecord, RestoreJob, backups::page,
};
use larch_proto::control::{self as pb, backup_service_server::BackupService};
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

use crate::indexes::{ApiVersion, Failure, Indexes, authorize};
use crate::service::decode;

/// One page of a listing: the items and the token of the next page.
pub type Page<T> = (Vec<T>, Option<String>);

/// Where a listing starts and how long its page is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// 1 to 100; `None`: 10.
    pub limit: Option<u32>,
    /// The previous page's token.
    pub token: Option<String>,
}

/// Whether `principal`'s roles grant `action` (on no index in particular).
fn authorize_role(principal: &Principal, action: Action) -> Result<(), Failure> {
    principal.authorize(action, None).map_err(|denied| {
        let error = larch_auth::Error::Denied(denied.clone());
        larch_auth::audit::denied(principal, action.as_str(), None, &error);
        Failure::Denied(denied)
    })
}

fn catalog_failure(err: larch_catalog::Error) -> Failure {
    Failure::Catalog(err)
}

impl Indexes {
    /// Backs up index `request.index_name` of the caller's project; the backup is complete
    /// when this returns.
    pub async fn create_backup(
        &self,
        principal: &Principal,
        request: CreateBackup,
    ) -> Result<BackupRecord, Failure> {
        authorize(principal, Action::ControlWrite, &request.index_name)?;
        let project = principal.project_id.clone();
        self.run(move |c| c.create_backup(&project, request)).await
    }

    /// A page of the backups of the caller's project (of index `index` only, when given)
    /// that it may see, oldest first.
    pub async fn list_backups(
        &self,
        principal: &Principal,
        index: Option<String>,
        include_deleted: bool,
        request: PageRequest,
    ) -> Result<Page<BackupRecord>, Failure> {
        match &index {
            Some(name) => authorize(principal, Action::ControlRead, name)?,
            None => authorize_role(principal, Action::ControlRead)?,
        }
        let project = principal.project_id.clone();
        let mut backups = self
            .run(move |c| c.list_backups(&project, index.as_deref(), include_deleted))
            .await?;
        backups.retain(|backup| principal.may_see(&backup.source_index_name));
        page(
            &backups,
            backup_order,
            request.limit,
            request.token.as_deref(),
        )
        .map_err(catalog_failure)
    }

    /// Backup `backup_id` of the caller's project, if it may see its source index.
    pub async fn describe_backup(
        &self,
        principal: &Principal,
        backup_id: &str,
    ) -> Result<BackupRecord, Failure> {
        authorize_role(principal, Action::ControlRead)?;
        let (project, id) = (principal.project_id.clone(), backup_id.to_owned());
        let backup = self.run(move |c| c.describe_backup(&project, &id)).await?;
        if !principal.may_see(&backup.source_index_name) {
            return Err(Failure::Catalog(larch_catalog::Error::BackupNotFound(
                backup_id.to_owned(),
            )));
        }
        Ok(backup)
    }

    /// Deletes backup `backup_id` of the caller's project.
    pub async fn delete_backup(
        &self,
        principal: &Principal,
        backup_id: &str,
    ) -> Result<(), Failure> {
        authorize_role(principal, Action::ControlWrite)?;
        let backup = self.describe_backup(principal, backup_id).await?;
        authorize(principal, Action::ControlWrite, &backup.source_index_name)?;
        let (project, id) = (principal.project_id.clone(), backup_id.to_owned());
        self.run(move |c| c.delete_backup(&project, &id)).await
    }

    /// Creates index `request.name` from backup `request.backup_id`, both of the caller's
    /// project; the index is ready when this returns. Returns the restore job and the index.
    pub async fn create_index_from_backup(
        &self,
        principal: &Principal,
        request: CreateIndexFromBackup,
    ) -> Result<(RestoreJob, IndexRecord), Failure> {
        authorize(principal, Action::ControlWrite, &request.name)?;
        self.describe_backup(principal, &request.backup_id).await?;
        let project = principal.project_id.clone();
        self.run(move |c| c.create_index_from_backup(&project, request))
            .await
    }

    /// A page of the restore jobs of the caller's project into indexes it may see, oldest
    /// first.
    pub async fn list_restore_jobs(
        &self,
        principal: &Principal,
        request: PageRequest,
    ) -> Result<Page<RestoreJob>, Failure> {
        authorize_role(principal, Action::ControlRead)?;
        let project = principal.project_id.clone();
        let mut jobs = self.run(move |c| c.list_restore_jobs(&project)).await?;
        jobs.retain(|job| principal.may_see(&job.target_index_name));
        page(&jobs, job_order, request.limit, request.token.as_deref()).map_err(catalog_failure)
    }

    /// Restore job `job_id` of the caller's project, if it may see its index.
    pub async fn describe_restore_job(
        &self,
        principal: &Principal,
        job_id: &str,
    ) -> Result<RestoreJob, Failure> {
        authorize_role(principal, Action::ControlRead)?;
        let (project, id) = (principal.project_id.clone(), job_id.to_owned());
        let job = self
            .run(move |c| c.describe_restore_job(&project, &id))
            .await?;
        if !principal.may_see(&job.target_index_name) {
            return Err(Failure::Catalog(larch_catalog::Error::RestoreJobNotFound(
                job_id.to_owned(),
            )));
        }
        Ok(job)
    }
}

/// `POST /indexes/{name}/backups`.
#[derive(Debug, Default, Deserialize)]
pub struct CreateBackupBody {
    /// The caller's name for the backup.
    pub name: Option<String>,
    /// A note kept with it.
    pub description: Option<String>,
}

/// `POST /backups/{id}/create-index`.
#[derive(Debug, Deserialize)]
pub struct CreateIndexFromBackupBody {
    /// The new index's name.
    pub name: String,
    /// Its tags (the backup's when absent).
    pub tags: Option<BTreeMap<String, String>>,
    /// `enabled` or `disabled`.
    pub deletion_protection: Option<String>,
    /// Only on-demand read capacity exists in Larch: `{"mode":"OnDemand"}` or absent.
    pub read_capacity: Option<Value>,
}

impl CreateIndexFromBackupBody {
    /// The catalog request for backup `backup_id`; a dedicated read capacity is refused.
    pub fn into_request(self, backup_id: String) -> Result<CreateIndexFromBackup, Failure> {
        let CreateIndexFromBackupBody {
            name,
            tags,
            deletion_protection,
            read_capacity,
        } = self;
        if let Some(capacity) = read_capacity
            && capacity.get("mode").and_then(Value::as_str) != Some("OnDemand")
        {
            return Err(Failure::Unsupported(
                "read_capacity: only {\"mode\":\"OnDemand\"} is supported by Larch".to_owned(),
            ));
        }
        Ok(CreateIndexFromBackup {
            backup_id,
            name,
            tags,
            deletion_protection,
        })
    }
}

/// Pinecone's `BackupModel` of `backup`, in the shape of `version` (2026-07: `schema` instead of
/// `dimension` and `metric`).
pub fn backup_json(backup: &BackupRecord, version: ApiVersion) -> Value {
    let BackupRecord {
        backup_id,
        // The caller's own project: not part of Pinecone's model.
        project_id: _,
        source_index_name,
        source_index_id,
        name,
        description,
        status,
        cloud,
        region,
        dimension,
        metric,
        vector_type,
        record_count,
        namespace_count,
        size_bytes,
        tags,
        created_at,
        source_index_deleted_at,
    } = backup;
    let mut model = json!({
        "backup_id": backup_id,
        "source_index_name": source_index_name,
        "source_index_id": source_index_id,
        "name": name,
        "description": description,
        "status": status,
        "cloud": cloud,
        "region": region,
        "record_count": record_count,
        "namespace_count": namespace_count,
        "size_bytes": size_bytes,
        "tags": tags,
        "created_at": created_at,
    });
    match version {
        ApiVersion::Classic => {
            model["dimension"] = json!(dimension);
            model["metric"] = json!(metric);
            model["vector_type"] = json!(vector_type);
        }
        ApiVersion::Schema => {
            model["schema"] = json!({"fields": {
                "_values": {"type": "dense_vector", "dimension": dimension, "metric": metric},
                "_sparse_values": {"type": "sparse_vector"},
            }});
        }
    }
    if let Some(deleted) = source_index_deleted_at {
        model["source_index_deleted_at"] = json!(deleted);
    }
    without_nulls(model)
}

/// `model` without its `null` fields: Pinecone leaves optional fields out, and the classic
/// SDK (8.x) refuses `null` for a string.
fn without_nulls(mut model: Value) -> Value {
    if let Value::Object(fields) = &mut model {
        fields.retain(|_, value| !value.is_null());
    }
    model
}

/// Pinecone's `RestoreJobModel` of `job`.
pub fn restore_job_json(job: &RestoreJob) -> Value {
    let RestoreJob {
        restore_job_id,
        project_id: _,
        backup_id,
        target_index_name,
        target_index_id,
        status,
        created_at,
        completed_at,
        percent_complete,
        // Logged and kept; Pinecone's model has no field for it.
        error: _,
    } = job;
    let job = json!({
        "restore_job_id": restore_job_id,
        "backup_id": backup_id,
        "target_index_name": target_index_name,
        "target_index_id": target_index_id,
        "status": status.as_str(),
        "created_at": created_at,
        "completed_at": completed_at,
        "percent_complete": percent_complete,
    });
    without_nulls(job)
}

/// A listing page as Pinecone answers it: `{"data":[…],"pagination":{"next":…}}`, without
/// `pagination` on the last page.
pub fn page_json(data: Vec<Value>, next: Option<String>) -> Value {
    let mut body = json!({ "data": data });
    if let Some(next) = next {
        body["pagination"] = json!({ "next": next });
    }
    body
}

/// The gRPC face of backups and restore jobs, over the same [`Indexes`] as REST.
#[derive(Clone)]
pub struct BackupApi {
    indexes: Indexes,
}

impl From<Indexes> for BackupApi {
    fn from(indexes: Indexes) -> BackupApi {
        BackupApi { indexes }
    }
}

fn status(err: Failure) -> Status {
    larch_model::wire::grpc_status(&err)
}

/// A page request from a message's `limit` (0: the default) and token (empty: the first).
fn page_request(limit: u32, token: String) -> PageRequest {
    PageRequest {
        limit: (limit != 0).then_some(limit),
        token: (!token.is_empty()).then_some(token),
    }
}

fn backup_message(backup: BackupRecord) -> pb::Backup {
    let BackupRecord {
        backup_id,
        project_id: _,
        source_index_name,
        source_index_id,
        name,
        description,
        status,
        cloud,
        region,
        dimension,
        metric,
        vector_type,
        record_count,
        namespace_count,
        size_bytes,
        tags,
        created_at,
        source_index_deleted_at,
    } = backup;
    pb::Backup {
        backup_id,
        source_index_name,
        source_index_id,
        name,
        description,
        status,
        cloud,
        region,
        dimension,
        metric,
        record_count,
        namespace_count,
        size_bytes,
        tags: tags.into_iter().collect(),
        created_at,
        source_index_deleted_at,
        vector_type,
    }
}

fn job_message(job: RestoreJob) -> pb::RestoreJob {
    let RestoreJob {
        restore_job_id,
        project_id: _,
        backup_id,
        target_index_name,
        target_index_id,
        status,
        created_at,
        completed_at,
        percent_complete,
        error: _,
    } = job;
    pb::RestoreJob {
        restore_job_id,
        backup_id,
        target_index_name,
        target_index_id,
        status: status.as_str().to_owned(),
        created_at,
        completed_at,
        percent_complete,
    }
}

#[tonic::async_trait]
impl BackupService for BackupApi {
    async fn create_backup(
        &self,
        request: Request<pb::CreateBackupRequest>,
    ) -> Result<Response<pb::Backup>, Status> {
        let (
            principal,
            pb::CreateBackupRequest {
                index_name,
                name,
                description,
            },
        ) = decode(request)?;
        let request = CreateBackup {
            index_name,
            name,
            description,
        };
        let backup = self.indexes.create_backup(&principal, request).await;
        Ok(Response::new(backup_message(backup.map_err(status)?)))
    }

    async fn list_backups(
        &self,
        request: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        let (
            principal,
            pb::ListBackupsRequest {
                index_name,
                limit,
                pagination_token,
                include_deleted,
            },
        ) = decode(request)?;
        let index = (!index_name.is_empty()).then_some(index_name);
        let (backups, next) = self
            .indexes
            .list_backups(
                &principal,
                index,
                include_deleted,
                page_request(limit, pagination_token),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListBackupsResponse {
            data: backups.into_iter().map(backup_message).collect(),
            next_pagination_token: next.unwrap_or_default(),
        }))
    }

    async fn describe_backup(
        &self,
        request: Request<pb::DescribeBackupRequest>,
    ) -> Result<Response<pb::Backup>, Status> {
        let (principal, pb::DescribeBackupRequest { backup_id }) = decode(request)?;
        let backup = self.indexes.describe_backup(&principal, &backup_id).await;
        Ok(Response::new(backup_message(backup.map_err(status)?)))
    }

    async fn delete_backup(
        &self,
        request: Request<pb::DeleteBackupRequest>,
    ) -> Result<Response<pb::DeleteBackupResponse>, Status> {
        let (principal, pb::DeleteBackupRequest { backup_id }) = decode(request)?;
        self.indexes
            .delete_backup(&principal, &backup_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteBackupResponse {}))
    }

    async fn create_index_from_backup(
        &self,
        request: Request<pb::CreateIndexFromBackupRequest>,
    ) -> Result<Response<pb::CreateIndexFromBackupResponse>, Status> {
        let (
            principal,
            pb::CreateIndexFromBackupRequest {
                backup_id,
                name,
                tags,
                deletion_protection,
            },
        ) = decode(request)?;
        let request = CreateIndexFromBackup {
            backup_id,
            name,
            tags: (!tags.is_empty()).then(|| tags.into_iter().collect()),
            deletion_protection,
        };
        let (job, _) = self
            .indexes
            .create_index_from_backup(&principal, request)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateIndexFromBackupResponse {
            restore_job_id: job.restore_job_id,
            index_id: job.target_index_id,
        }))
    }

    async fn list_restore_jobs(
        &self,
        request: Request<pb::ListRestoreJobsRequest>,
    ) -> Result<Response<pb::ListRestoreJobsResponse>, Status> {
        let (
            principal,
            pb::ListRestoreJobsRequest {
                limit,
                pagination_token,
            },
        ) = decode(request)?;
        let (jobs, next) = self
            .indexes
            .list_restore_jobs(&principal, page_request(limit, pagination_token))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListRestoreJobsResponse {
            data: jobs.into_iter().map(job_message).collect(),
            next_pagination_token: next.unwrap_or_default(),
        }))
    }

    async fn describe_restore_job(
        &self,
        request: Request<pb::DescribeRestoreJobRequest>,
    ) -> Result<Response<pb::RestoreJob>, Status> {
        let (principal, pb::DescribeRestoreJobRequest { job_id }) = decode(request)?;
        let job = self.indexes.describe_restore_job(&principal, &job_id).await;
        Ok(Response::new(job_message(job.map_err(status)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use larch_catalog::RestoreStatus;

    fn backup() -> BackupRecord {
        BackupRecord {
            backup_id: "b-1".into(),
            project_id: "default".into(),
            source_index_name: "movies".into(),
            source_index_id: "0a1b".into(),
            name: None,
            description: Some("note".into()),
            status: "Ready".into(),
            cloud: "aws".into(),
            region: "us-east-1".into(),
            dimension: 8,
            metric: "cosine".into(),
            vector_type: "dense".into(),
            record_count: 3,
            namespace_count: 1,
            size_bytes: 99,
            tags: BTreeMap::new(),
            created_at: "2026-01-01T00:00:00.000000Z".into(),
            source_index_deleted_at: None,
        }
    }

    #[test]
    fn backups_take_the_shape_of_the_api_version_and_leave_out_what_is_unset() {
        let classic = backup_json(&backup(), ApiVersion::Classic);
        assert_eq!(
            classic,
            json!({"backup_id": "b-1", "source_index_name": "movies", "source_index_id": "0a1b",
                "description": "note", "status": "Ready", "cloud": "aws", "region": "us-east-1",
                "dimension": 8, "metric": "cosine", "vector_type": "dense", "record_count": 3,
                "namespace_count": 1, "size_bytes": 99, "tags": {},
                "created_at": "2026-01-01T00:00:00.000000Z"})
        );
        let schema = backup_json(
            &BackupRecord {
                source_index_deleted_at: Some("2026-02-01T00:00:00.000000Z".into()),
                ..backup()
            },
            ApiVersion::Schema,
        );
        assert_eq!(
            schema["schema"]["fields"]["_values"],
            json!({"type": "dense_vector", "dimension": 8, "metric": "cosine"})
        );
        assert!(schema.get("dimension").is_none() && schema.get("name").is_none());
        assert_eq!(
            schema["source_index_deleted_at"],
            "2026-02-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn restore_jobs_and_pages_read_like_pinecones() {
        let job = RestoreJob {
            restore_job_id: "j-1".into(),
            project_id: "default".into(),
            backup_id: "b-1".into(),
            target_index_name: "copy".into(),
            target_index_id: "2c3d".into(),
            status: RestoreStatus::Pending,
            created_at: "2026-01-01T00:00:00.000000Z".into(),
            completed_at: None,
            percent_complete: 0.0,
            error: Some("kept, not shown".into()),
        };
        let shown = restore_job_json(&job);
        assert_eq!(
            shown,
            json!({"restore_job_id": "j-1", "backup_id": "b-1", "target_index_name": "copy",
                "target_index_id": "2c3d", "status": "Pending",
                "created_at": "2026-01-01T00:00:00.000000Z", "percent_complete": 0.0})
        );
        assert_eq!(
            page_json(vec![shown.clone()], Some("t".into())),
            json!({"data": [shown], "pagination": {"next": "t"}})
        );
        assert_eq!(page_json(Vec::new(), None), json!({"data": []}));
        assert_eq!(
            page_request(0, String::new()),
            PageRequest::default(),
            "0 and empty mean the defaults"
        );
    }

    #[test]
    fn only_on_demand_read_capacity_is_accepted() {
        let body = |capacity: Value| CreateIndexFromBackupBody {
            name: "copy".into(),
            tags: None,
            deletion_protection: None,
            read_capacity: Some(capacity),
        };
        assert!(
            body(json!({"mode": "OnDemand"}))
                .into_request("b-1".into())
                .is_ok()
        );
        let refused = body(json!({"mode": "Dedicated"}))
            .into_request("b-1".into())
            .unwrap_err();
        assert!(
            refused.to_string().starts_with("read_capacity:"),
            "{refused}"
        );
    }
}
