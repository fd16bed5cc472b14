//! The authorization matrix (issue 6): every RPC of both planes and of the admin API, called
//! by every kind of caller — no key, a malformed, unknown, revoked or expired key, a key of
//! another project, a key of each role, a key restricted to another index, and the admin key —
//! must get exactly the status the role × action table and the project rules give. Afterwards
//! the stored state shows that each refused write changed nothing and each allowed one landed.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use larch_auth::{Action, Role};
use larch_proto::control::{
    ConfigureIndexRequest, CreateApiKeyRequest, CreateIndexRequest, CreateProjectRequest,
    DeleteIndexRequest, DeleteProjectRequest, DescribeApiKeyRequest, DescribeIndexRequest,
    DescribeProjectRequest, ListApiKeysRequest, ListIndexesRequest, ListProjectsRequest,
    RevokeApiKeyRequest, UpdateApiKeyRequest,
};
use larch_proto::pinecone::{
    CreateNamespaceRequest, DeleteNamespaceRequest, DeleteRequest, DescribeIndexStatsRequest,
    DescribeNamespaceRequest, FetchByMetadataRequest, FetchRequest, ListNamespacesRequest,
    ListRequest, QueryRequest, UpdateRequest, UpsertRequest, Vector,
};
use larch_tests::{TestServer, json};
use tonic::{Code, Status};

const DATA_RPCS: [&str; 12] = [
    "Upsert",
    "Query",
    "Fetch",
    "Update",
    "Delete",
    "List",
    "DescribeIndexStats",
    "ListNamespaces",
    "DescribeNamespace",
    "CreateNamespace",
    "DeleteNamespace",
    "FetchByMetadata",
];
const CONTROL_RPCS: [&str; 5] = [
    "CreateIndex",
    "ListIndexes",
    "DescribeIndex",
    "ConfigureIndex",
    "DeleteIndex",
];
const ADMIN_RPCS: [&str; 9] = [
    "CreateApiKey",
    "ListApiKeys",
    "DescribeApiKey",
    "UpdateApiKey",
    "RevokeApiKey",
    "CreateProject",
    "ListProjects",
    "DescribeProject",
    "DeleteProject",
];

/// The index every data-plane call targets, in the default project.
const INDEX: &str = "idx-a";
/// The namespace the data-plane write probes touch; the default namespace holds a canary.
const PROBE_NS: &str = "probe";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Data(&'static str),
    Control(&'static str),
    Admin(&'static str),
}

impl Rpc {
    fn all() -> Vec<Rpc> {
        let data = DATA_RPCS.into_iter().map(Rpc::Data);
        let control = CONTROL_RPCS.into_iter().map(Rpc::Control);
        let admin = ADMIN_RPCS.into_iter().map(Rpc::Admin);
        data.chain(control).chain(admin).collect()
    }

    fn action(self) -> Action {
        let path = match self {
            Rpc::Data(m) => format!("/VectorService/{m}"),
            Rpc::Control(m) => format!("/larch.control.v1.IndexService/{m}"),
            Rpc::Admin(m) => format!("/larch.control.v1.ApiKeyService/{m}"),
        };
        larch_auth::action_of(&path).expect("every RPC has an action")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    NoKey,
    Malformed,
    Unknown,
    Revoked,
    Expired,
    OtherProject,
    Role(Role),
    /// ProjectEditor restricted to index `idx-b`.
    Restricted,
    Admin,
}

/// The status `caller` must get for `rpc`.
fn expected(caller: Caller, rpc: Rpc) -> Code {
    match caller {
        Caller::NoKey | Caller::Malformed | Caller::Unknown | Caller::Revoked | Caller::Expired => {
            Code::Unauthenticated
        }
        Caller::Admin => Code::Ok,
        // A ProjectEditor of another project: its own project has no idx-a (so NOT_FOUND, as for
        // a missing index), may list and create there, and is no admin.
        Caller::OtherProject => match rpc {
            Rpc::Data(_) => Code::NotFound,
            Rpc::Control("ListIndexes" | "CreateIndex") => Code::Ok,
            Rpc::Control(_) => Code::NotFound,
            Rpc::Admin(_) => Code::PermissionDenied,
        },
        Caller::Role(role) => {
            if rpc.action().granted_by().contains(&role) {
                Code::Ok
            } else {
                Code::PermissionDenied
            }
        }
        Caller::Restricted => match rpc {
            Rpc::Control("ListIndexes") => Code::Ok,
            _ => Code::PermissionDenied,
        },
    }
}

/// What one call did, to check the stored state against afterwards.
struct Outcome {
    caller: Caller,
    rpc: Rpc,
    n: usize,
    allowed: bool,
}

struct Fixture {
    server: TestServer,
    host: String,
    other_project: String,
    /// A key the UpdateApiKey probes rename.
    rename_target: String,
}

impl Fixture {
    fn admin_key(&self) -> Option<&str> {
        Some(&self.server.key)
    }

    async fn data(&self, key: Option<&str>) -> larch_tests::DataClient {
        self.server.data_with_key(&self.host, key).await
    }

    /// Calls `rpc` as `key`, after any set-up the probe needs (done with the admin key).
    async fn call(&self, key: Option<&str>, rpc: Rpc, n: usize) -> Result<(), Status> {
        let admin = self.admin_key();
        match rpc {
            Rpc::Data(method) => {
                let mut setup = self.data(admin).await;
                match method {
                    "Delete" => {
                        upsert(&mut setup, PROBE_NS, &format!("del-{n}"), 0.5).await;
                    }
                    "DeleteNamespace" => {
                        upsert(&mut setup, &format!("dns-{n}"), "x", 0.5).await;
                    }
                    _ => {}
                }
                let mut client = self.data(key).await;
                call_data(&mut client, method, n).await
            }
            Rpc::Control(method) => {
                if method == "DeleteIndex" {
                    self.server
                        .control()
                        .await
                        .create_index(create_index(&format!("doomed-{n}")))
                        .await
                        .expect("set-up index");
                }
                let mut client = self.server.control_with_key(key).await;
                call_control(&mut client, method, n).await
            }
            Rpc::Admin(method) => {
                let victim = match method {
                    "RevokeApiKey" => {
                        let created = self
                            .server
                            .api_keys_with_key(admin)
                            .await
                            .create_api_key(CreateApiKeyRequest {
                                name: format!("victim-{n}"),
                                ..Default::default()
                            })
                            .await
                            .expect("set-up key")
                            .into_inner();
                        created.key.expect("key").id
                    }
                    "DeleteProject" => {
                        self.server
                            .projects_with_key(admin)
                            .await
                            .create_project(CreateProjectRequest {
                                name: format!("empty-{n}"),
                            })
                            .await
                            .expect("set-up project")
                            .into_inner()
                            .id
                    }
                    _ => String::new(),
                };
                let mut keys = self.server.api_keys_with_key(key).await;
                let mut projects = self.server.projects_with_key(key).await;
                match method {
                    "CreateApiKey" => keys
                        .create_api_key(CreateApiKeyRequest {
                            name: format!("probe-{n}"),
                            roles: vec!["DataPlaneViewer".into()],
                            ..Default::default()
                        })
                        .await
                        .map(drop),
                    "ListApiKeys" => keys
                        .list_api_keys(ListApiKeysRequest::default())
                        .await
                        .map(drop),
                    "DescribeApiKey" => keys
                        .describe_api_key(DescribeApiKeyRequest {
                            id: self.rename_target.clone(),
                        })
                        .await
                        .map(drop),
                    "UpdateApiKey" => keys
                        .update_api_key(UpdateApiKeyRequest {
                            id: self.rename_target.clone(),
                            name: Some(format!("renamed-{n}")),
                            ..Default::default()
                        })
                        .await
                        .map(drop),
                    "RevokeApiKey" => keys
                        .revoke_api_key(RevokeApiKeyRequest { id: victim })
                        .await
                        .map(drop),
                    "CreateProject" => projects
                        .create_project(CreateProjectRequest {
                            name: format!("probe-{n}"),
                        })
                        .await
                        .map(drop),
                    "ListProjects" => projects
                        .list_projects(ListProjectsRequest {})
                        .await
                        .map(drop),
                    "DescribeProject" => projects
                        .describe_project(DescribeProjectRequest {
                            id: self.other_project.clone(),
                        })
                        .await
                        .map(drop),
                    "DeleteProject" => projects
                        .delete_project(DeleteProjectRequest { id: victim })
                        .await
                        .map(drop),
                    other => panic!("no probe for {other}"),
                }
            }
        }
    }
}

fn create_index(name: &str) -> CreateIndexRequest {
    CreateIndexRequest {
        name: name.into(),
        dimension: Some(2),
        metric: Some("euclidean".into()),
        ..Default::default()
    }
}

async fn upsert(client: &mut larch_tests::DataClient, namespace: &str, id: &str, x: f32) {
    client
        .upsert(UpsertRequest {
            vectors: vec![Vector {
                id: id.into(),
                values: vec![x, 1.0],
                metadata: json(serde_json::json!({"tag": id})),
                ..Default::default()
            }],
            namespace: namespace.into(),
        })
        .await
        .expect("set-up upsert");
}

async fn call_data(
    client: &mut larch_tests::DataClient,
    method: &str,
    n: usize,
) -> Result<(), Status> {
    let ns = || PROBE_NS.to_owned();
    match method {
        "Upsert" => client
            .upsert(UpsertRequest {
                vectors: vec![Vector {
                    id: format!("up-{n}"),
                    values: vec![n as f32, 1.0],
                    ..Default::default()
                }],
                namespace: ns(),
            })
            .await
            .map(drop),
        "Query" => client
            .query(QueryRequest {
                vector: vec![0.0, 1.0],
                top_k: 3,
                include_values: true,
                include_metadata: true,
                ..Default::default()
            })
            .await
            .map(drop),
        "Fetch" => client
            .fetch(FetchRequest {
                ids: vec!["a1".into()],
                namespace: String::new(),
            })
            .await
            .map(drop),
        "Update" => client
            .update(UpdateRequest {
                id: "target".into(),
                set_metadata: json(serde_json::json!({"by": n})),
                namespace: ns(),
                ..Default::default()
            })
            .await
            .map(drop),
        "Delete" => client
            .delete(DeleteRequest {
                ids: vec![format!("del-{n}")],
                namespace: ns(),
                ..Default::default()
            })
            .await
            .map(drop),
        "List" => client
            .list(ListRequest {
                namespace: String::new(),
                ..Default::default()
            })
            .await
            .map(drop),
        "DescribeIndexStats" => client
            .describe_index_stats(DescribeIndexStatsRequest::default())
            .await
            .map(drop),
        "ListNamespaces" => client
            .list_namespaces(ListNamespacesRequest::default())
            .await
            .map(drop),
        "DescribeNamespace" => client
            .describe_namespace(DescribeNamespaceRequest { namespace: ns() })
            .await
            .map(drop),
        "CreateNamespace" => client
            .create_namespace(CreateNamespaceRequest {
                name: format!("cns-{n}"),
                schema: None,
            })
            .await
            .map(drop),
        "DeleteNamespace" => client
            .delete_namespace(DeleteNamespaceRequest {
                namespace: format!("dns-{n}"),
            })
            .await
            .map(drop),
        "FetchByMetadata" => client
            .fetch_by_metadata(FetchByMetadataRequest {
                namespace: String::new(),
                filter: json(serde_json::json!({"tag": "a1"})),
                ..Default::default()
            })
            .await
            .map(drop),
        other => panic!("no probe for {other}"),
    }
}

async fn call_control(
    client: &mut larch_tests::ControlClient,
    method: &str,
    n: usize,
) -> Result<(), Status> {
    match method {
        "CreateIndex" => client
            .create_index(create_index(&format!("made-{n}")))
            .await
            .map(drop),
        "ListIndexes" => client.list_indexes(ListIndexesRequest {}).await.map(drop),
        "DescribeIndex" => client
            .describe_index(DescribeIndexRequest { name: INDEX.into() })
            .await
            .map(drop),
        "ConfigureIndex" => client
            .configure_index(ConfigureIndexRequest {
                name: INDEX.into(),
                tags: [(format!("by-{n}"), "x".to_owned())].into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "DeleteIndex" => client
            .delete_index(DeleteIndexRequest {
                name: format!("doomed-{n}"),
            })
            .await
            .map(drop),
        other => panic!("no probe for {other}"),
    }
}

/// Creates a key as admin; returns its value and id.
async fn make_key(server: &TestServer, request: CreateApiKeyRequest) -> (String, String) {
    server.create_key(request).await
}

fn role_key(name: &str, role: &str) -> CreateApiKeyRequest {
    CreateApiKeyRequest {
        name: name.into(),
        roles: vec![role.into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn every_rpc_by_every_caller_gets_exactly_its_status_and_refusals_change_nothing() {
    // Dozens of wrong keys from one address: without this, the failed-auth slowdown (tested in
    // `projects`) would hold each refusal up to 3 s.
    let server = TestServer::start_with(|keys| keys.slow_down_failed_auth(false)).await;
    // The expiring key first: its second must pass before the matrix runs.
    let expires = SystemTime::now() + Duration::from_secs(2);
    let (expiring, _) = make_key(
        &server,
        CreateApiKeyRequest {
            expires_at: humantime::format_rfc3339_seconds(expires).to_string(),
            ..role_key("expiring", "ProjectEditor")
        },
    )
    .await;

    let (model, mut admin_data) = server.create_index(INDEX, 2, "euclidean").await;
    server.create_index("idx-b", 2, "euclidean").await;
    for (id, x) in [("a1", 0.1), ("a2", 0.2), ("a3", 0.3)] {
        upsert(&mut admin_data, "", id, x).await;
    }
    upsert(&mut admin_data, PROBE_NS, "target", 0.9).await;
    let other_project = server
        .projects()
        .await
        .create_project(CreateProjectRequest {
            name: "other".into(),
        })
        .await
        .expect("project")
        .into_inner()
        .id;
    let (other_key, _) = make_key(
        &server,
        CreateApiKeyRequest {
            project_id: other_project.clone(),
            ..role_key("other", "ProjectEditor")
        },
    )
    .await;
    let (restricted, _) = make_key(
        &server,
        CreateApiKeyRequest {
            index_names: vec!["idx-b".into()],
            ..role_key("restricted", "ProjectEditor")
        },
    )
    .await;
    let (revoked, revoked_id) = make_key(&server, role_key("revoked", "ProjectEditor")).await;
    let (_, rename_target) = make_key(&server, role_key("rename-me", "DataPlaneViewer")).await;
    let mut role_keys = BTreeMap::new();
    for role in Role::ALL {
        role_keys.insert(
            role,
            make_key(&server, role_key(role.as_str(), role.as_str()))
                .await
                .0,
        );
    }

    let fixture = Fixture {
        host: model.host.clone(),
        server,
        other_project: other_project.clone(),
        rename_target,
    };
    // The revoked and expiring keys worked before: their refusals below are due to revocation
    // and expiry, not to anything else.
    for key in [&revoked, &expiring] {
        fixture
            .data(Some(key))
            .await
            .describe_index_stats(DescribeIndexStatsRequest::default())
            .await
            .expect("works before revocation/expiry");
    }
    fixture
        .server
        .api_keys()
        .await
        .revoke_api_key(RevokeApiKeyRequest { id: revoked_id })
        .await
        .expect("revoked");
    if let Ok(left) = expires.duration_since(SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(1100)).await;
    }

    let unknown = larch_auth::ApiKey::generate().as_str().to_owned();
    let admin = fixture.server.key.clone();
    let mut callers: Vec<(Caller, Option<&str>)> = vec![
        (Caller::NoKey, None),
        (Caller::Malformed, Some("larch_zz_not-a-key")),
        (Caller::Unknown, Some(&unknown)),
        (Caller::Revoked, Some(&revoked)),
        (Caller::Expired, Some(&expiring)),
        (Caller::OtherProject, Some(&other_key)),
        (Caller::Restricted, Some(&restricted)),
    ];
    for (role, key) in &role_keys {
        callers.push((Caller::Role(*role), Some(key.as_str())));
    }
    // Last, so its allowed writes do not hide anything an earlier caller did.
    callers.push((Caller::Admin, Some(&admin)));

    let mut outcomes = Vec::new();
    let mut wrong = Vec::new();
    let mut n = 0;
    for (caller, key) in &callers {
        for rpc in Rpc::all() {
            n += 1;
            let want = expected(*caller, rpc);
            let got = match fixture.call(*key, rpc, n).await {
                Ok(()) => Code::Ok,
                Err(status) => {
                    if want != Code::Ok && status.code() == want {
                        assert!(
                            !status.message().is_empty(),
                            "{caller:?} {rpc:?}: no message"
                        );
                    }
                    status.code()
                }
            };
            if got != want {
                wrong.push(format!(
                    "{caller:?} {rpc:?}: expected {want:?}, got {got:?}"
                ));
            }
            outcomes.push(Outcome {
                caller: *caller,
                rpc,
                n,
                allowed: got == Code::Ok,
            });
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong statuses:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    check_state(&fixture, &outcomes).await;
    fixture.server.stop().await;
}

/// The stored state is exactly what the allowed calls made of it.
async fn check_state(fixture: &Fixture, outcomes: &[Outcome]) {
    let allowed = |rpc: Rpc| -> Vec<&Outcome> {
        outcomes
            .iter()
            .filter(|o| o.rpc == rpc && o.allowed)
            .collect()
    };
    let all = |rpc: Rpc| -> Vec<&Outcome> { outcomes.iter().filter(|o| o.rpc == rpc).collect() };
    let mut data = fixture.data(fixture.admin_key()).await;

    // The canary in the default namespace is untouched.
    let canary = data
        .fetch(FetchRequest {
            ids: vec!["a1".into(), "a2".into(), "a3".into()],
            namespace: String::new(),
        })
        .await
        .expect("fetch")
        .into_inner();
    assert_eq!(canary.vectors.len(), 3);
    assert_eq!(canary.vectors["a2"].values, vec![0.2, 1.0]);

    let probe_ids: Vec<String> = data
        .list(ListRequest {
            namespace: PROBE_NS.into(),
            limit: Some(100),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .vectors
        .into_iter()
        .map(|item| item.id)
        .collect();
    for o in all(Rpc::Data("Upsert")) {
        let id = format!("up-{}", o.n);
        assert_eq!(
            probe_ids.contains(&id),
            o.allowed,
            "{:?} Upsert {id}",
            o.caller
        );
    }
    for o in all(Rpc::Data("Delete")) {
        let id = format!("del-{}", o.n);
        assert_eq!(
            probe_ids.contains(&id),
            !o.allowed,
            "{:?} Delete {id}",
            o.caller
        );
    }
    let target = data
        .fetch(FetchRequest {
            ids: vec!["target".into()],
            namespace: PROBE_NS.into(),
        })
        .await
        .expect("fetch")
        .into_inner()
        .vectors
        .remove("target")
        .expect("target");
    let by = larch_tests::from_struct(&target.metadata.expect("metadata"))["by"].clone();
    let last_update = allowed(Rpc::Data("Update"))
        .last()
        .expect("some update allowed")
        .n;
    assert_eq!(by, serde_json::json!(last_update as f64));

    let namespaces: Vec<String> = data
        .list_namespaces(ListNamespacesRequest {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .expect("namespaces")
        .into_inner()
        .namespaces
        .into_iter()
        .map(|ns| ns.name)
        .collect();
    for o in all(Rpc::Data("CreateNamespace")) {
        let name = format!("cns-{}", o.n);
        assert_eq!(
            namespaces.contains(&name),
            o.allowed,
            "{:?} {name}",
            o.caller
        );
    }
    for o in all(Rpc::Data("DeleteNamespace")) {
        let name = format!("dns-{}", o.n);
        assert_eq!(
            namespaces.contains(&name),
            !o.allowed,
            "{:?} {name}",
            o.caller
        );
    }

    // Control plane, as the admin (default project) and the other project's key see it.
    let mut control = fixture.server.control().await;
    let names = |list: larch_proto::control::ListIndexesResponse| -> Vec<String> {
        list.indexes.into_iter().map(|index| index.name).collect()
    };
    let default_indexes = names(
        control
            .list_indexes(ListIndexesRequest {})
            .await
            .expect("list")
            .into_inner(),
    );
    for o in all(Rpc::Control("CreateIndex")) {
        let name = format!("made-{}", o.n);
        let in_default = o.allowed && o.caller != Caller::OtherProject;
        assert_eq!(
            default_indexes.contains(&name),
            in_default,
            "{:?} {name}",
            o.caller
        );
    }
    for o in all(Rpc::Control("DeleteIndex")) {
        let name = format!("doomed-{}", o.n);
        assert_eq!(
            default_indexes.contains(&name),
            !o.allowed,
            "{:?} {name}",
            o.caller
        );
    }
    let tags = control
        .describe_index(DescribeIndexRequest { name: INDEX.into() })
        .await
        .expect("describe")
        .into_inner()
        .tags;
    for o in all(Rpc::Control("ConfigureIndex")) {
        let tag = format!("by-{}", o.n);
        assert_eq!(tags.contains_key(&tag), o.allowed, "{:?} {tag}", o.caller);
    }

    // Admin API.
    let keys = fixture
        .server
        .api_keys()
        .await
        .list_api_keys(ListApiKeysRequest::default())
        .await
        .expect("keys")
        .into_inner()
        .keys;
    for o in all(Rpc::Admin("CreateApiKey")) {
        let name = format!("probe-{}", o.n);
        assert_eq!(
            keys.iter().any(|k| k.name == name),
            o.allowed,
            "{:?} {name}",
            o.caller
        );
    }
    for o in all(Rpc::Admin("RevokeApiKey")) {
        let name = format!("victim-{}", o.n);
        assert_eq!(
            keys.iter().any(|k| k.name == name),
            !o.allowed,
            "{:?} {name}",
            o.caller
        );
    }
    let renamed = keys
        .iter()
        .find(|k| k.id == fixture.rename_target)
        .expect("rename target");
    let last_rename = allowed(Rpc::Admin("UpdateApiKey"))
        .last()
        .expect("admin renamed")
        .n;
    assert_eq!(renamed.name, format!("renamed-{last_rename}"));
    let projects: Vec<String> = fixture
        .server
        .projects()
        .await
        .list_projects(ListProjectsRequest {})
        .await
        .expect("projects")
        .into_inner()
        .projects
        .into_iter()
        .map(|p| p.name)
        .collect();
    for o in all(Rpc::Admin("CreateProject")) {
        let name = format!("probe-{}", o.n);
        assert_eq!(projects.contains(&name), o.allowed, "{:?} {name}", o.caller);
    }
    for o in all(Rpc::Admin("DeleteProject")) {
        let name = format!("empty-{}", o.n);
        assert_eq!(
            projects.contains(&name),
            !o.allowed,
            "{:?} {name}",
            o.caller
        );
    }
}
