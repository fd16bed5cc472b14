//! `larch keys …` and `larch projects …`: the admin API from a shell.
//!
//! Each command makes one gRPC call to the control plane (`--addr`, default
//! `http://127.0.0.1:5080`) with the admin key from `LARCH_API_KEY` or the file named by
//! `LARCH_API_KEY_FILE` (never a flag, so keys stay out of process lists and shell history),
//! and prints the answer as JSON — the same shapes as the gRPC API's JSON form, e.g.
//! `{"key":{"id":…,"name":"ci",…},"value":"larch_…"}` for `keys create`.
//!
//! [`Connection`], [`channel`], [`request`] and [`runtime`] are shared with the other client
//! commands (`indexes`, `vectors`, `namespaces`).

use anyhow::Context;
use clap::{Args, Subcommand};
use larch_proto::control::api_key_service_client::ApiKeyServiceClient;
use larch_proto::control::project_service_client::ProjectServiceClient;
use larch_proto::control::{
    ApiKey, CreateApiKeyRequest, CreateProjectRequest, DeleteProjectRequest, DescribeApiKeyRequest,
    DescribeProjectRequest, ListApiKeysRequest, ListProjectsRequest, Project, RevokeApiKeyRequest,
    UpdateApiKeyRequest,
};
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

/// Where the control plane is (shared by every client command: admin, indexes, vectors).
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// Control-plane address (gRPC).
    #[arg(
        long,
        env = "LARCH_ADDR",
        default_value = "http://127.0.0.1:5080",
        global = true
    )]
    pub(crate) addr: String,
}

/// `larch keys …`
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Create a key; its secret is printed this once.
    Create {
        /// A name for people, e.g. "ci".
        #[arg(long)]
        name: String,
        /// A role (repeat for several): ProjectEditor (default), ProjectViewer,
        /// ControlPlaneEditor, ControlPlaneViewer, DataPlaneEditor, DataPlaneViewer.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// The project the key belongs to [default: the default project].
        #[arg(long = "project")]
        project_id: Option<String>,
        /// Restrict the key to this index (repeat for several) [default: every index].
        #[arg(long = "index")]
        index_names: Vec<String>,
        /// When the key stops working (RFC 3339 UTC, e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        /// Only keys of this project.
        #[arg(long = "project")]
        project_id: Option<String>,
    },
    /// Describe one key.
    Describe {
        /// The key id (the part after `larch_`).
        id: String,
    },
    /// Change a key's name, roles or index allow-list (applies to its next request).
    Update {
        /// The key id.
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New roles (repeat; replaces the old ones).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// New allow-list (repeat; replaces the old one).
        #[arg(long = "index", conflicts_with = "all_indexes")]
        index_names: Vec<String>,
        /// Lift the allow-list: the key may use every index of its project.
        #[arg(long)]
        all_indexes: bool,
    },
    /// Revoke a key for good.
    Revoke {
        /// The key id.
        id: String,
    },
}

/// `larch projects …`
#[derive(Debug, Subcommand)]
pub(crate) enum ProjectsCommand {
    /// Create a project.
    Create {
        /// Unique name: letters, digits, '-' and '_'.
        name: String,
    },
    /// List projects.
    List,
    /// Describe one project.
    Describe {
        /// The project id.
        id: String,
    },
    /// Delete a project and revoke its keys (refused while it has indexes).
    Delete {
        /// The project id.
        id: String,
    },
}

/// What a failed command reports: the gRPC status, in words a person can act on.
fn failed(status: tonic::Status) -> anyhow::Error {
    let hint = match status.code() {
        tonic::Code::Unauthenticated => {
            "\nhint: set LARCH_API_KEY (or LARCH_API_KEY_FILE) to the admin key printed at first start"
        }
        tonic::Code::PermissionDenied => {
            "\nhint: key and project administration needs the admin key"
        }
        tonic::Code::Unavailable => "\nhint: is `larch serve` running at --addr?",
        _ => "",
    };
    anyhow::anyhow!("{:?}: {}{hint}", status.code(), status.message())
}

/// The admin key from the environment.
fn admin_key() -> anyhow::Result<MetadataValue<tonic::metadata::Ascii>> {
    let key = crate::configured_api_key()
        .map_err(anyhow::Error::msg)?
        .context("no API key: set LARCH_API_KEY or LARCH_API_KEY_FILE to the admin key")?;
    MetadataValue::try_from(key.as_str())
        .map_err(|_| anyhow::anyhow!("the API key contains characters that cannot be sent"))
}

pub(crate) async fn channel(connection: &Connection) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(connection.addr.clone()).with_context(|| {
        format!(
            "--addr {:?} is not a URL such as http://127.0.0.1:5080",
            connection.addr
        )
    })?;
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach the control plane at {}", connection.addr))
}

pub(crate) fn request<T>(
    message: T,
    key: &MetadataValue<tonic::metadata::Ascii>,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("api-key", key.clone());
    request
}

fn non_empty(value: Option<String>) -> String {
    value.unwrap_or_default()
}

/// Runs a `keys` command and returns what to print.
pub(crate) fn keys(connection: &Connection, command: KeysCommand) -> anyhow::Result<Value> {
    let key = admin_key()?;
    runtime()?.block_on(async {
        let mut client = ApiKeyServiceClient::new(channel(connection).await?);
        Ok(match command {
            KeysCommand::Create {
                name,
                roles,
                project_id,
                index_names,
                expires_at,
            } => {
                let message = CreateApiKeyRequest {
                    name,
                    roles,
                    project_id: non_empty(project_id),
                    index_names,
                    expires_at: non_empty(expires_at),
                };
                let created = client
                    .create_api_key(request(message, &key))
                    .await
                    .map_err(failed)?
                    .into_inner();
                json!({
                    "key": created.key.map(api_key_json).unwrap_or(Value::Null),
                    "value": created.value,
                })
            }
            KeysCommand::List { project_id } => {
                let message = ListApiKeysRequest {
                    project_id: non_empty(project_id),
                };
                let listed = client
                    .list_api_keys(request(message, &key))
                    .await
                    .map_err(failed)?
                    .into_inner();
                json!({"keys": listed.keys.into_iter().map(api_key_json).collect::<Vec<_>>()})
            }
            KeysCommand::Describe { id } => api_key_json(
                client
                    .describe_api_key(request(DescribeApiKeyRequest { id }, &key))
                    .await
                    .map_err(failed)?
                    .into_inner(),
            ),
            KeysCommand::Update {
                id,
                name,
                roles,
                index_names,
                all_indexes,
            } => {
                let message = UpdateApiKeyRequest {
                    id,
                    name,
                    roles,
                    index_names,
                    all_indexes,
                };
                api_key_json(
                    client
                        .update_api_key(request(message, &key))
                        .await
                        .map_err(failed)?
                        .into_inner(),
                )
            }
            KeysCommand::Revoke { id } => {
                client
                    .revoke_api_key(request(RevokeApiKeyRequest { id: id.clone() }, &key))
                    .await
                    .map_err(failed)?;
                json!({"id": id, "revoked": true})
            }
        })
    })
}

/// Runs a `projects` command and returns what to print.
pub(crate) fn projects(connection: &Connection, command: ProjectsCommand) -> anyhow::Result<Value> {
    let key = admin_key()?;
    runtime()?.block_on(async {
        let mut client = ProjectServiceClient::new(channel(connection).await?);
        Ok(match command {
            ProjectsCommand::Create { name } => project_json(
                client
                    .create_project(request(CreateProjectRequest { name }, &key))
                    .await
                    .map_err(failed)?
                    .into_inner(),
            ),
            ProjectsCommand::List => {
                let listed = client
                    .list_projects(request(ListProjectsRequest {}, &key))
                    .await
                    .map_err(failed)?
                    .into_inner();
                json!({"projects": listed.projects.into_iter().map(project_json).collect::<Vec<_>>()})
            }
            ProjectsCommand::Describe { id } => project_json(
                client
                    .describe_project(request(DescribeProjectRequest { id }, &key))
                    .await
                    .map_err(failed)?
                    .into_inner(),
            ),
            ProjectsCommand::Delete { id } => {
                client
                    .delete_project(request(DeleteProjectRequest { id: id.clone() }, &key))
                    .await
                    .map_err(failed)?;
                json!({"id": id, "deleted": true})
            }
        })
    })
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn api_key_json(key: ApiKey) -> Value {
    let ApiKey {
        id,
        name,
        project_id,
        roles,
        index_names,
        created_at,
        expires_at,
        admin,
    } = key;
    let expires_at = if expires_at.is_empty() {
        Value::Null
    } else {
        Value::String(expires_at)
    };
    json!({
        "id": id,
        "name": name,
        "project_id": project_id,
        "roles": roles,
        "index_names": index_names,
        "created_at": created_at,
        "expires_at": expires_at,
        "admin": admin,
    })
}

fn project_json(project: Project) -> Value {
    let Project {
        id,
        name,
        created_at,
    } = project;
    json!({"id": id, "name": name, "created_at": created_at})
}
