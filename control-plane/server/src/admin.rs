//! `larch.control.v1.ApiKeyService` and `ProjectService`: protobuf in, one
//! [`larch_auth::Admin`] call, protobuf out. Admin keys only (the auth layer refuses others
//! before a handler runs, and [`Admin`] checks again).
//!
//! [`Admin`] is the facade (it authorizes and changes the access state); [`AdminApi`] runs its
//! calls on the blocking pool. The protobuf ⇄ [`larch_auth`] conversions are the `From` impls
//! at the end of this module, through [`Proto`].

use std::sync::Arc;

use larch_auth::{Admin, KeyInfo, KeyUpdate, NewKey, Principal, Project as ProjectRecord};
use larch_proto::control::{
    ApiKey, CreateApiKeyRequest, CreateApiKeyResponse, CreateProjectRequest, DeleteProjectRequest,
    DeleteProjectResponse, DescribeApiKeyRequest, DescribeProjectRequest, ListApiKeysRequest,
    ListApiKeysResponse, ListProjectsRequest, ListProjectsResponse, Project, RevokeApiKeyRequest,
    RevokeApiKeyResponse, UpdateApiKeyRequest, api_key_service_server::ApiKeyService,
    project_service_server::ProjectService,
};
use tonic::{Request, Response, Status};

use crate::indexes::Indexes;
use crate::service::{Proto, decode};

/// The admin services over the shared [`Admin`] and, to refuse deleting a project that still
/// has indexes, the catalog.
#[derive(Clone)]
pub struct AdminApi {
    admin: Arc<Admin>,
    indexes: Indexes,
}

impl AdminApi {
    /// Administers `admin`'s projects and keys; `indexes` says which projects hold indexes.
    pub fn new(admin: Arc<Admin>, indexes: Indexes) -> AdminApi {
        AdminApi { admin, indexes }
    }

    /// Runs `op` with the caller on the blocking pool: changes fsync a file, and with shared
    /// state every call reads the store.
    async fn run<T, F>(&self, principal: Principal, op: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Admin, &Principal) -> larch_auth::Result<T> + Send + 'static,
    {
        let admin = Arc::clone(&self.admin);
        // In the request's span, so audit events carry its request id.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| op(&admin, &principal)))
            .await
            .map_err(TaskFailed)?
            .map_err(Status::from)
    }

    /// Deletes project `id` for `principal` once the catalog, recovered, says it holds no
    /// index.
    async fn delete_empty_project(&self, principal: Principal, id: String) -> Result<(), Status> {
        // Only a recovered catalog can say whether the project still has indexes (counted on
        // the blocking pool: a shared catalog reads its store first).
        let (indexes, project) = (self.indexes.clone(), id.clone());
        let counted = tokio::task::spawn_blocking(move || indexes.index_count(&project))
            .await
            .map_err(TaskFailed)?;
        if let Err(recovering) = counted {
            return Err(larch_model::wire::grpc_status(&recovering));
        }
        let indexes = self.indexes.clone();
        self.run(principal, move |admin, actor| {
            admin.delete_project(actor, &id, |project| {
                indexes.index_count(project).unwrap_or(usize::MAX)
            })
        })
        .await
    }
}

/// A blocking admin task that panicked or was cancelled: INTERNAL, so the client gets the
/// generic message and the server log the cause.
#[derive(Debug, thiserror::Error)]
#[error("admin task failed")]
struct TaskFailed(#[source] tokio::task::JoinError);

impl larch_model::Classified for TaskFailed {
    fn code(&self) -> larch_model::Code {
        larch_model::Code::Internal
    }
}

impl From<TaskFailed> for Status {
    fn from(err: TaskFailed) -> Status {
        larch_model::wire::grpc_status(&err)
    }
}

#[tonic::async_trait]
impl ApiKeyService for AdminApi {
    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let (principal, request) = decode(request)?;
        let new = NewKey::from(Proto(request));
        let created = self.run(principal, |admin, actor| admin.create_key(actor, new));
        Ok(encode(created.await?))
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let (principal, ListApiKeysRequest { project_id }) = decode(request)?;
        let keys = self.run(principal, move |admin, actor| {
            admin.list_keys(actor, &project_id)
        });
        Ok(encode(keys.await?))
    }

    async fn describe_api_key(
        &self,
        request: Request<DescribeApiKeyRequest>,
    ) -> Result<Response<ApiKey>, Status> {
        let (principal, DescribeApiKeyRequest { id }) = decode(request)?;
        let key = self.run(principal, move |admin, actor| {
            admin.describe_key(actor, &id)
        });
        Ok(encode(key.await?))
    }

    async fn update_api_key(
        &self,
        request: Request<UpdateApiKeyRequest>,
    ) -> Result<Response<ApiKey>, Status> {
        let (principal, request) = decode(request)?;
        let update = KeyUpdate::from(Proto(request));
        let key = self.run(principal, |admin, actor| admin.update_key(actor, update));
        Ok(encode(key.await?))
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<RevokeApiKeyResponse>, Status> {
        let (principal, RevokeApiKeyRequest { id }) = decode(request)?;
        self.run(principal, move |admin, actor| admin.revoke_key(actor, &id))
            .await?;
        Ok(Response::new(RevokeApiKeyResponse {}))
    }
}

#[tonic::async_trait]
impl ProjectService for AdminApi {
    async fn create_project(
        &self,
        request: Request<CreateProjectRequest>,
    ) -> Result<Response<Project>, Status> {
        let (principal, CreateProjectRequest { name }) = decode(request)?;
        let project = self.run(principal, move |admin, actor| {
            admin.create_project(actor, &name)
        });
        Ok(encode(project.await?))
    }

    async fn list_projects(
        &self,
        request: Request<ListProjectsRequest>,
    ) -> Result<Response<ListProjectsResponse>, Status> {
        let (principal, ListProjectsRequest {}) = decode(request)?;
        let projects = self.run(principal, |admin, actor| admin.list_projects(actor));
        Ok(encode(projects.await?))
    }

    async fn describe_project(
        &self,
        request: Request<DescribeProjectRequest>,
    ) -> Result<Response<Project>, Status> {
        let (principal, DescribeProjectRequest { id }) = decode(request)?;
        let project = self.run(principal, move |admin, actor| {
            admin.describe_project(actor, &id)
        });
        Ok(encode(project.await?))
    }

    async fn delete_project(
        &self,
        request: Request<DeleteProjectRequest>,
    ) -> Result<Response<DeleteProjectResponse>, Status> {
        let (principal, DeleteProjectRequest { id }) = decode(request)?;
        self.delete_empty_project(principal, id).await?;
        Ok(Response::new(DeleteProjectResponse {}))
    }
}

/// An answer of [`Admin`] as a gRPC response.
fn encode<T, M: From<Proto<T>>>(answer: T) -> Response<M> {
    Response::new(M::from(Proto(answer)))
}

impl From<Proto<CreateApiKeyRequest>> for NewKey {
    fn from(Proto(request): Proto<CreateApiKeyRequest>) -> NewKey {
        let CreateApiKeyRequest {
            name,
            roles,
            project_id,
            index_names,
            expires_at,
        } = request;
        NewKey {
            name,
            roles,
            project_id,
            index_names,
            expires_at,
        }
    }
}

impl From<Proto<UpdateApiKeyRequest>> for KeyUpdate {
    fn from(Proto(request): Proto<UpdateApiKeyRequest>) -> KeyUpdate {
        let UpdateApiKeyRequest {
            id,
            name,
            roles,
            index_names,
            all_indexes,
        } = request;
        KeyUpdate {
            id,
            name,
            roles,
            index_names,
            all_indexes,
        }
    }
}

impl From<Proto<(KeyInfo, larch_auth::ApiKey)>> for CreateApiKeyResponse {
    fn from(Proto((info, key)): Proto<(KeyInfo, larch_auth::ApiKey)>) -> CreateApiKeyResponse {
        CreateApiKeyResponse {
            key: Some(Proto(info).into()),
            // The only time the secret is sent.
            value: key.as_str().to_owned(),
        }
    }
}

impl From<Proto<Vec<KeyInfo>>> for ListApiKeysResponse {
    fn from(Proto(keys): Proto<Vec<KeyInfo>>) -> ListApiKeysResponse {
        ListApiKeysResponse {
            keys: keys.into_iter().map(|info| Proto(info).into()).collect(),
        }
    }
}

impl From<Proto<KeyInfo>> for ApiKey {
    fn from(Proto(info): Proto<KeyInfo>) -> ApiKey {
        let KeyInfo {
            id,
            name,
            project_id,
            roles,
            index_names,
            created_at,
            expires_at,
            admin,
        } = info;
        ApiKey {
            id,
            name,
            project_id,
            roles: roles.iter().map(ToString::to_string).collect(),
            index_names,
            created_at: created_at.map(|t| t.to_string()).unwrap_or_default(),
            expires_at: expires_at.map(|t| t.to_string()).unwrap_or_default(),
            admin,
        }
    }
}

impl From<Proto<Vec<ProjectRecord>>> for ListProjectsResponse {
    fn from(Proto(projects): Proto<Vec<ProjectRecord>>) -> ListProjectsResponse {
        ListProjectsResponse {
            projects: projects.into_iter().map(|p| Proto(p).into()).collect(),
        }
    }
}

impl From<Proto<ProjectRecord>> for Project {
    fn from(Proto(project): Proto<ProjectRecord>) -> Project {
        let ProjectRecord {
            id,
            name,
            created_at,
        } = project;
        Project {
            id,
            name,
            created_at: created_at.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_admin_task_is_internal_and_tells_the_client_nothing() {
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        let status = Status::from(TaskFailed(task.await.expect_err("aborted")));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), larch_model::wire::INTERNAL_MESSAGE);
    }
}
