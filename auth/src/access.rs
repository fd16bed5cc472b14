//! Authorization decisions: what each RPC needs, and whether a [`Principal`] has it.
//!
//! Every RPC of both planes maps to one [`Action`] ([`action_of`], by its gRPC path). A key's
//! roles grant actions — Pinecone's role names, with effective rights the union of the roles
//! held: a viewer lists and describes indexes or queries, fetches, lists and reads stats; an
//! editor adds the writes of its plane; the project roles span both planes. Key and project
//! administration needs an admin key. A key with an index allow-list may act only on those
//! indexes. [`Principal::authorize`] answers with the reason for a refusal, so the transport
//! can return `PERMISSION_DENIED` with a message a person can act on.

use std::fmt;

use crate::{Principal, Role, Scope};

/// What an RPC does, as far as permissions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// List or describe indexes.
    ControlRead,
    /// Create, configure or delete indexes.
    ControlWrite,
    /// Query, fetch, list vectors or namespaces, read stats.
    DataRead,
    /// Upsert, update, delete vectors; create or delete namespaces.
    DataWrite,
    /// Manage API keys and projects.
    Admin,
}

impl Action {
    /// How the action is named in refusals.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ControlRead => "read the control plane",
            Action::ControlWrite => "change indexes",
            Action::DataRead => "read vectors",
            Action::DataWrite => "write vectors",
            Action::Admin => "manage keys and projects",
        }
    }

    /// The roles that grant this action.
    pub fn granted_by(self) -> &'static [Role] {
        match self {
            Action::ControlRead => &[
                Role::ProjectEditor,
                Role::ProjectViewer,
                Role::ControlPlaneEditor,
                Role::ControlPlaneViewer,
            ],
            Action::ControlWrite => &[Role::ProjectEditor, Role::ControlPlaneEditor],
            Action::DataRead => &[
                Role::ProjectEditor,
                Role::ProjectViewer,
                Role::DataPlaneEditor,
                Role::DataPlaneViewer,
            ],
            Action::DataWrite => &[Role::ProjectEditor, Role::DataPlaneEditor],
            Action::Admin => &[],
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a principal may not do something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// None of the key's roles grants the action.
    Role {
        /// What was asked.
        action: Action,
        /// The roles that would grant it (empty: admin keys only).
        needs: &'static [Role],
    },
    /// The key is restricted to other indexes.
    Index {
        /// The index asked for.
        index: String,
    },
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::Role { action, needs: [] } => {
                write!(f, "this API key may not {action}: that needs an admin key")
            }
            Denied::Role { action, needs } => {
                let names: Vec<&str> = needs.iter().map(|role| role.as_str()).collect();
                write!(
                    f,
                    "this API key may not {action}: that needs one of the roles {}",
                    names.join(", ")
                )
            }
            Denied::Index { index } => write!(
                f,
                "this API key is restricted to other indexes and may not use index '{index}'"
            ),
        }
    }
}

impl std::error::Error for Denied {}

impl Principal {
    /// Whether this principal may do `action`, on `index` when the action targets one.
    pub fn authorize(&self, action: Action, index: Option<&str>) -> Result<(), Denied> {
        let by_role = match action {
            Action::Admin => self.is_admin,
            _ => {
                self.is_admin
                    || self
                        .roles
                        .iter()
                        .any(|role| action.granted_by().contains(role))
            }
        };
        if !by_role {
            return Err(Denied::Role {
                action,
                needs: action.granted_by(),
            });
        }
        match index {
            Some(index) if !self.may_see(index) => Err(Denied::Index {
                index: index.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether the index allow-list (if any) includes `index`; listing uses it to leave
    /// other indexes out.
    pub fn may_see(&self, index: &str) -> bool {
        self.index_names
            .as_ref()
            .is_none_or(|names| names.iter().any(|name| name == index))
    }
}

/// The action of the RPC at gRPC `path` (`/service/method`); `None` for paths of neither
/// plane (health and reflection are not authorized at all).
pub fn action_of(path: &str) -> Option<Action> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    match service {
        "VectorService" => match method {
            "Query" | "Fetch" | "List" | "DescribeIndexStats" | "ListNamespaces"
            | "DescribeNamespace" | "FetchByMetadata" => Some(Action::DataRead),
            "Upsert" | "Delete" | "Update" | "CreateNamespace" | "DeleteNamespace" => {
                Some(Action::DataWrite)
            }
            _ => None,
        },
        "larch.control.v1.IndexService" => match method {
            "ListIndexes" | "DescribeIndex" => Some(Action::ControlRead),
            "CreateIndex" | "ConfigureIndex" | "DeleteIndex" => Some(Action::ControlWrite),
            _ => None,
        },
        "larch.control.v1.BackupService" => match method {
            "ListBackups" | "DescribeBackup" | "ListRestoreJobs" | "DescribeRestoreJob" => {
                Some(Action::ControlRead)
            }
            "CreateBackup" | "DeleteBackup" | "CreateIndexFromBackup" => Some(Action::ControlWrite),
            _ => None,
        },
        "larch.control.v1.ApiKeyService"
        | "larch.control.v1.ProjectService"
        | "larch.internal.v1.ControlPlaneSync"
        | "larch.internal.v1.DataPlaneControl" => Some(Action::Admin),
        _ => None,
    }
}

/// The action of a REST request with `method` and `path` in `scope`; `None` never happens for
/// the two planes (every REST route is a read or a write) but keeps the shape of [`action_of`].
///
/// Reads: every `GET`/`HEAD`, and on the data plane the `POST`s that only read (`/query`,
/// `/vectors/fetch_by_metadata`, `/describe_index_stats`). Everything else writes.
pub fn rest_action(scope: &Scope, method: &http::Method, path: &str) -> Option<Action> {
    let reads = method == http::Method::GET || method == http::Method::HEAD;
    Some(match scope {
        Scope::ControlPlane if reads => Action::ControlRead,
        Scope::ControlPlane => Action::ControlWrite,
        Scope::Index { .. } => {
            let read_post = matches!(
                path.trim_end_matches('/'),
                "/query" | "/vectors/fetch_by_metadata" | "/describe_index_stats"
            );
            if reads || (method == http::Method::POST && read_post) {
                Action::DataRead
            } else {
                Action::DataWrite
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Grant;

    fn key(roles: &[Role], index_names: Option<&[&str]>) -> Principal {
        Principal::new(
            "k",
            Grant {
                project_id: Grant::DEFAULT_PROJECT.into(),
                roles: roles.to_vec(),
                index_names: index_names.map(|names| names.iter().map(|n| n.to_string()).collect()),
                is_admin: false,
            },
        )
    }

    /// The whole role × action matrix, as the issue and Pinecone's docs define it.
    #[test]
    fn each_role_grants_exactly_its_actions() {
        use Action::*;
        let expected: [(Role, &[Action]); 6] = [
            (
                Role::ProjectEditor,
                &[ControlRead, ControlWrite, DataRead, DataWrite],
            ),
            (Role::ProjectViewer, &[ControlRead, DataRead]),
            (Role::ControlPlaneEditor, &[ControlRead, ControlWrite]),
            (Role::ControlPlaneViewer, &[ControlRead]),
            (Role::DataPlaneEditor, &[DataRead, DataWrite]),
            (Role::DataPlaneViewer, &[DataRead]),
        ];
        for (role, allowed) in expected {
            let principal = key(&[role], None);
            for action in [ControlRead, ControlWrite, DataRead, DataWrite, Admin] {
                assert_eq!(
                    principal.authorize(action, None).is_ok(),
                    allowed.contains(&action),
                    "{role} {action:?}"
                );
            }
        }
    }

    #[test]
    fn rights_are_the_union_of_the_roles_and_admin_keys_may_do_everything() {
        let both = key(&[Role::ControlPlaneViewer, Role::DataPlaneEditor], None);
        assert!(both.authorize(Action::ControlRead, None).is_ok());
        assert!(both.authorize(Action::DataWrite, None).is_ok());
        assert!(both.authorize(Action::ControlWrite, None).is_err());
        let admin = Principal::new("a", Grant::admin());
        for action in [Action::Admin, Action::ControlWrite, Action::DataWrite] {
            assert!(admin.authorize(action, Some("any")).is_ok());
        }
        assert_eq!(
            key(&[Role::ProjectEditor], None)
                .authorize(Action::Admin, None)
                .expect_err("not admin")
                .to_string(),
            "this API key may not manage keys and projects: that needs an admin key"
        );
    }

    #[test]
    fn an_allow_list_restricts_indexes_and_says_so() {
        let restricted = key(&[Role::DataPlaneViewer], Some(&["idx-a"]));
        assert!(
            restricted
                .authorize(Action::DataRead, Some("idx-a"))
                .is_ok()
        );
        let denied = restricted
            .authorize(Action::DataRead, Some("idx-b"))
            .expect_err("other index");
        assert_eq!(
            denied.to_string(),
            "this API key is restricted to other indexes and may not use index 'idx-b'"
        );
        // The role is checked first: a write is refused for the role even on an allowed index.
        let denied = restricted
            .authorize(Action::DataWrite, Some("idx-a"))
            .expect_err("viewer");
        assert_eq!(
            denied.to_string(),
            "this API key may not write vectors: that needs one of the roles ProjectEditor, DataPlaneEditor"
        );
        assert!(restricted.may_see("idx-a") && !restricted.may_see("idx-b"));
        assert!(key(&[Role::DataPlaneViewer], None).may_see("anything"));
    }

    #[test]
    fn every_rpc_of_both_planes_has_an_action() {
        let data_reads = [
            "Query",
            "Fetch",
            "List",
            "DescribeIndexStats",
            "ListNamespaces",
            "DescribeNamespace",
            "FetchByMetadata",
        ];
        let data_writes = [
            "Upsert",
            "Delete",
            "Update",
            "CreateNamespace",
            "DeleteNamespace",
        ];
        for method in data_reads {
            assert_eq!(
                action_of(&format!("/VectorService/{method}")),
                Some(Action::DataRead)
            );
        }
        for method in data_writes {
            assert_eq!(
                action_of(&format!("/VectorService/{method}")),
                Some(Action::DataWrite)
            );
        }
        let control = "/larch.control.v1.IndexService";
        assert_eq!(
            action_of(&format!("{control}/ListIndexes")),
            Some(Action::ControlRead)
        );
        assert_eq!(
            action_of(&format!("{control}/DescribeIndex")),
            Some(Action::ControlRead)
        );
        for method in ["CreateIndex", "ConfigureIndex", "DeleteIndex"] {
            assert_eq!(
                action_of(&format!("{control}/{method}")),
                Some(Action::ControlWrite)
            );
        }
        // Backups follow the index routes: taking, deleting and restoring change indexes.
        let backups = "/larch.control.v1.BackupService";
        for method in [
            "ListBackups",
            "DescribeBackup",
            "ListRestoreJobs",
            "DescribeRestoreJob",
        ] {
            assert_eq!(
                action_of(&format!("{backups}/{method}")),
                Some(Action::ControlRead)
            );
        }
        for method in ["CreateBackup", "DeleteBackup", "CreateIndexFromBackup"] {
            assert_eq!(
                action_of(&format!("{backups}/{method}")),
                Some(Action::ControlWrite)
            );
        }
        assert_eq!(
            action_of("/larch.control.v1.ApiKeyService/CreateApiKey"),
            Some(Action::Admin)
        );
        assert_eq!(action_of("/grpc.health.v1.Health/Check"), None);
        assert_eq!(action_of("/VectorService/Unknown"), None);
        assert_eq!(action_of("VectorService/Query"), None);
    }

    /// The proto files list exactly the RPCs the table knows, so a new RPC cannot slip
    /// through without a decision.
    #[test]
    fn the_table_covers_every_rpc_in_the_protos() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/proto");
        let mut seen = 0;
        for (file, package) in [
            ("vector_service.proto", ""),
            ("larch/control/v1/index.proto", "larch.control.v1."),
            ("larch/control/v1/access.proto", "larch.control.v1."),
            ("larch/control/v1/backup.proto", "larch.control.v1."),
            ("larch/internal/v1/internal.proto", "larch.internal.v1."),
        ] {
            let text = std::fs::read_to_string(format!("{root}/{file}")).expect("proto file");
            let mut service = None;
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.split_whitespace().next();
                } else if let Some(rest) = line.strip_prefix("rpc ") {
                    let method = rest.split('(').next().expect("rpc name").trim();
                    let service = service.expect("rpc inside a service");
                    assert!(
                        action_of(&format!("/{package}{service}/{method}")).is_some(),
                        "{service}/{method} has no action"
                    );
                    seen += 1;
                }
            }
        }
        // 12 data-plane RPCs, 5 index RPCs, 5 key RPCs, 4 project RPCs, 7 backup RPCs,
        // 8 internal RPCs.
        assert_eq!(seen, 41);
    }

    #[test]
    fn rest_routes_read_or_write() {
        use http::Method;
        let index = Scope::Index {
            project: "p".into(),
            name: "i".into(),
        };
        let cases = [
            (
                &Scope::ControlPlane,
                Method::GET,
                "/indexes",
                Action::ControlRead,
            ),
            (
                &Scope::ControlPlane,
                Method::GET,
                "/indexes/a",
                Action::ControlRead,
            ),
            (
                &Scope::ControlPlane,
                Method::POST,
                "/indexes",
                Action::ControlWrite,
            ),
            (
                &Scope::ControlPlane,
                Method::PATCH,
                "/indexes/a",
                Action::ControlWrite,
            ),
            (
                &Scope::ControlPlane,
                Method::DELETE,
                "/indexes/a",
                Action::ControlWrite,
            ),
            (&index, Method::POST, "/query", Action::DataRead),
            (&index, Method::GET, "/vectors/fetch", Action::DataRead),
            (&index, Method::GET, "/vectors/list", Action::DataRead),
            (
                &index,
                Method::POST,
                "/vectors/fetch_by_metadata",
                Action::DataRead,
            ),
            (
                &index,
                Method::POST,
                "/describe_index_stats",
                Action::DataRead,
            ),
            (
                &index,
                Method::GET,
                "/describe_index_stats",
                Action::DataRead,
            ),
            (&index, Method::GET, "/namespaces", Action::DataRead),
            (&index, Method::GET, "/namespaces/n", Action::DataRead),
            (&index, Method::POST, "/vectors/upsert", Action::DataWrite),
            (&index, Method::POST, "/vectors/update", Action::DataWrite),
            (&index, Method::POST, "/vectors/delete", Action::DataWrite),
            (&index, Method::POST, "/namespaces", Action::DataWrite),
            (&index, Method::DELETE, "/namespaces/n", Action::DataWrite),
        ];
        for (scope, method, path, action) in cases {
            assert_eq!(
                rest_action(scope, &method, path),
                Some(action),
                "{method} {path}"
            );
        }
    }
}
