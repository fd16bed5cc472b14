//! `larch.control.v1.ApiKeyService` and `ProjectService`: protobuf in, one
//! [`larch_auth::Admin`] call, protobuf out. Admin keys only (the auth layer refuses others
//! before a handler runs, and [`Admin`] checks again).

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
            .map_err(|err| {
                tracing::error!(error = %err, "admin task failed");
                Status::internal(larch_model::wire::INTERNAL_MESSAGE)
            })?
            .map_err(Status::from)
    }
}

fn caller<T>(request: &Request<T>) -> Result<Principal, Status> {
    larch_auth::grpc::principal(request).cloned()
}

#[tonic::async_trait]
impl ApiKeyService for AdminApi {
    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let principal = caller(&request)?;
        let CreateApiKeyRequest {
            name,
            roles,
            project_id,
            index_names,
            expires_at,
        } = request.into_inner();
        let new = NewKey {
            name,
            roles,
            project_id,
            index_names,
            expires_at,
        };
        let (info, key) = self
            .run(principal, move |admin, actor| admin.create_key(actor, new))
            .await?;
        Ok(Response::new(CreateApiKeyResponse {
            key: Some(api_key(info)),
            value: key.as_str().to_owned(),
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let principal = caller(&request)?;
        let ListApiKeysRequest { project_id } = request.into_inner();
        // On the blocking pool too: with shared state, reading starts by catching up with the
        // store.
        let keys = self
            .run(principal, move |admin, actor| {
                admin.list_keys(actor, &project_id)
            })
            .await?;
        Ok(Response::new(ListApiKeysResponse {
            keys: keys.into_iter().map(api_key).collect(),
        }))
    }

    async fn describe_api_key(
        &self,
        request: Request<DescribeApiKeyRequest>,
    ) -> Result<Response<ApiKey>, Status> {
        let principal = caller(&request)?;
        let DescribeApiKeyRequest { id } = request.into_inner();
        let info = self
            .run(principal, move |admin, actor| {
                admin.describe_key(actor, &id)
            })
            .await?;
        Ok(Response::new(api_key(info)))
    }

    async fn update_api_key(
        &self,
        request: Request<UpdateApiKeyRequest>,
    ) -> Result<Response<ApiKey>, Status> {
        let principal = caller(&request)?;
        let UpdateApiKeyRequest {
            id,
            name,
            roles,
            index_names,
            all_indexes,
        } = request.into_inner();
        let update = KeyUpdate {
            id,
            name,
            roles,
            index_names,
            all_indexes,
        };
        let info = self
            .run(principal, move |admin, actor| {
                admin.update_key(actor, update)
            })
            .await?;
        Ok(Response::new(api_key(info)))
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<RevokeApiKeyResponse>, Status> {
        let principal = caller(&request)?;
        let RevokeApiKeyRequest { id } = request.into_inner();
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
        let principal = caller(&request)?;
        let CreateProjectRequest { name } = request.into_inner();
        let project = self
            .run(principal, move |admin, actor| {
                admin.create_project(actor, &name)
            })
            .await?;
        Ok(Response::new(project_model(project)))
    }

    async fn list_projects(
        &self,
        request: Request<ListProjectsRequest>,
    ) -> Result<Response<ListProjectsResponse>, Status> {
        let principal = caller(&request)?;
        let ListProjectsRequest {} = request.into_inner();
        let projects = self
            .run(principal, |admin, actor| admin.list_projects(actor))
            .await?;
        Ok(Response::new(ListProjectsResponse {
            projects: projects.into_iter().map(project_model).collect(),
        }))
    }

    async fn describe_project(
        &self,
        request: Request<DescribeProjectRequest>,
    ) -> Result<Response<Project>, Status> {
        let principal = caller(&request)?;
        let DescribeProjectRequest { id } = request.into_inner();
        let project = self
            .run(principal, move |admin, actor| {
                admin.describe_project(actor, &id)
            })
            .await?;
        Ok(Response::new(project_model(project)))
    }

    async fn delete_project(
        &self,
        request: Request<DeleteProjectRequest>,
    ) -> Result<Response<DeleteProjectResponse>, Status> {
        let principal = caller(&request)?;
        let DeleteProjectRequest { id } = request.into_inner();
        // Only a recovered catalog can say whether the project still has indexes (counted on
        // the blocking pool: a shared catalog reads its store first).
        let (indexes, project) = (self.indexes.clone(), id.clone());
        let counted = tokio::task::spawn_blocking(move || indexes.index_count(&project))
            .await
            .map_err(|err| {
                tracing::error!(error = %err, "admin task failed");
                Status::internal(larch_model::wire::INTERNAL_MESSAGE)
            })?;
        if let Err(recovering) = counted {
            return Err(larch_model::wire::grpc_status(&recovering));
        }
        let indexes = self.indexes.clone();
        self.run(principal, move |admin, actor| {
            admin.delete_project(actor, &id, |project| {
                indexes.index_count(project).unwrap_or(usize::MAX)
            })
        })
        .await?;
        Ok(Response::new(DeleteProjectResponse {}))
    }
}

fn api_key(info: KeyInfo) -> ApiKey {
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

fn project_model(project: ProjectRecord) -> Project {
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
