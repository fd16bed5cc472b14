//! Who a key belongs to and what it may do: [`Role`], [`Grant`] and [`Principal`].
//!
//! Authorization (checking roles and index allow-lists against an operation) is not done
//! here yet; these types carry the data so that it can be added without changing them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Pinecone's role names for API keys.
///
/// [`Display`](fmt::Display), [`FromStr`] and serde all use exactly Pinecone's
/// spelling (`ProjectEditor`, `DataPlaneViewer`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Full access to the project: control plane, data plane and key management.
    ProjectEditor,
    /// Read-only access to the whole project.
    ProjectViewer,
    /// Create, configure and delete indexes.
    ControlPlaneEditor,
    /// List and describe indexes.
    ControlPlaneViewer,
    /// Read and write vectors.
    DataPlaneEditor,
    /// Read vectors (query, fetch, list, stats).
    DataPlaneViewer,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 6] = [
        Role::ProjectEditor,
        Role::ProjectViewer,
        Role::ControlPlaneEditor,
        Role::ControlPlaneViewer,
        Role::DataPlaneEditor,
        Role::DataPlaneViewer,
    ];

    /// Pinecone's name for the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ProjectEditor => "ProjectEditor",
            Role::ProjectViewer => "ProjectViewer",
            Role::ControlPlaneEditor => "ControlPlaneEditor",
            Role::ControlPlaneViewer => "ControlPlaneViewer",
            Role::DataPlaneEditor => "DataPlaneEditor",
            Role::DataPlaneViewer => "DataPlaneViewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| Error::UnknownRole(s.to_owned()))
    }
}

/// What a key is allowed to do: everything in a [`Principal`] except the key id.
///
/// Stored next to the key's hash in [`StoredKey`](crate::StoredKey).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The project the key belongs to; a key never reaches another project.
    pub project_id: String,
    /// Pinecone roles held by the key.
    pub roles: Vec<Role>,
    /// Indexes the key may touch; `None` means all indexes of the project.
    pub index_names: Option<Vec<String>>,
    /// Admin keys may manage other keys.
    pub is_admin: bool,
}

impl Grant {
    /// The project used until projects exist as a concept of their own.
    pub const DEFAULT_PROJECT: &'static str = "default";

    /// The bootstrap admin's grant: project `default`, `ProjectEditor`, all indexes, admin.
    pub fn admin() -> Grant {
        Grant {
            project_id: Grant::DEFAULT_PROJECT.to_owned(),
            roles: vec![Role::ProjectEditor],
            index_names: None,
            is_admin: true,
        }
    }
}

/// Who is calling: attached to each authenticated request's extensions.
///
/// Handlers read it from there (see [`grpc::principal`](crate::grpc::principal)); they
/// never look at the key themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Id of the key that authenticated the request (safe to log; not secret).
    pub key_id: String,
    /// The project the key belongs to.
    pub project_id: String,
    /// Pinecone roles held by the key.
    pub roles: Vec<Role>,
    /// None = all indexes of the project
    pub index_names: Option<Vec<String>>,
    /// Admin keys may manage other keys.
    pub is_admin: bool,
}

impl Principal {
    /// The principal of key `key_id` holding `grant`.
    pub fn new(key_id: impl Into<String>, grant: Grant) -> Principal {
        let Grant {
            project_id,
            roles,
            index_names,
            is_admin,
        } = grant;
        Principal {
            key_id: key_id.into(),
            project_id,
            roles,
            index_names,
            is_admin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip_through_display_from_str_and_serde() {
        for role in Role::ALL {
            let name = role.to_string();
            assert_eq!(name.parse::<Role>().expect("own name parses"), role);
            let json = serde_json::to_string(&role).expect("serializes");
            assert_eq!(json, format!("\"{name}\""));
            let back: Role = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, role);
        }
    }

    #[test]
    fn unknown_role_is_an_error() {
        let err = "projecteditor".parse::<Role>().expect_err("case matters");
        assert!(matches!(err, Error::UnknownRole(ref name) if name == "projecteditor"));
    }

    #[test]
    fn principal_takes_every_field_of_the_grant() {
        let principal = Principal::new("abc", Grant::admin());
        assert_eq!(
            principal,
            Principal {
                key_id: "abc".into(),
                project_id: "default".into(),
                roles: vec![Role::ProjectEditor],
                index_names: None,
                is_admin: true,
            }
        );
    }
}
