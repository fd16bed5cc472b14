use super::*;
use crate::bootstrap;
use std::path::PathBuf;

/// A fresh state directory, removed on drop.
pub(super) struct Dir(pub(super) PathBuf);

impl Dir {
    pub(super) fn new(name: &str) -> Dir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "larch-admin-test-{}-{name}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn admin_principal() -> Principal {
    Principal::new("bootstrap", Grant::admin())
}

pub(super) fn new_key(name: &str, roles: &[&str]) -> NewKey {
    NewKey {
        name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..NewKey::default()
    }
}

#[test]
fn created_key_works_at_once_and_after_a_restart_and_its_secret_is_not_stored() {
    let dir = Dir::new("create");
    let boot = bootstrap(&dir.0, Some("pclocal")).expect("bootstrap");
    let admin = &boot.admin;
    let (info, key) = admin
        .create_key(&admin_principal(), new_key("ci", &[]))
        .expect("created");
    assert_eq!(info.name, "ci");
    assert_eq!(info.project_id, "default");
    assert_eq!(info.roles, vec![Role::ProjectEditor]);
    assert!(info.index_names.is_empty() && info.expires_at.is_none() && !info.admin);
    assert_eq!(info.id, key.key_id());

    let principal = boot
        .store
        .authenticate(key.as_str())
        .expect("valid at once");
    assert_eq!(principal.key_id, info.id);
    assert!(!principal.is_admin);

    let text = std::fs::read_to_string(dir.0.join(ACCESS_FILE)).expect("written");
    let secret = ApiKey::parse(key.as_str()).expect("ours").secret();
    assert!(!text.contains(secret), "only the hash is stored");
    assert!(text.contains(&info.id));

    drop(boot);
    let again = bootstrap(&dir.0, None).expect("restart");
    assert_eq!(
        again
            .store
            .authenticate(key.as_str())
            .expect("still valid")
            .key_id,
        info.id
    );
    assert!(again.store.authenticate("pclocal").is_ok());
    let listed = again.admin.list_keys(&admin_principal(), "").expect("list");
    assert_eq!(listed.len(), 2, "bootstrap and ci: {listed:?}");
    assert!(listed.iter().any(|k| k.admin && k.id == "bootstrap"));
}

#[test]
fn create_key_validates_every_field() {
    let admin = Admin::in_memory(KeyStore::new());
    let actor = admin_principal();
    let cases: Vec<(NewKey, &str)> = vec![
        (new_key("", &[]), "name"),
        (new_key(&"x".repeat(81), &[]), "name"),
        (new_key("a", &["Owner"]), "unknown role 'Owner'"),
        (
            NewKey {
                project_id: "nope".into(),
                ..new_key("a", &[])
            },
            "project 'nope' not found",
        ),
        (
            NewKey {
                index_names: vec!["Bad_Name".into()],
                ..new_key("a", &[])
            },
            "index_names",
        ),
        (
            NewKey {
                expires_at: "2001-01-01T00:00:00Z".into(),
                ..new_key("a", &[])
            },
            "not in the future",
        ),
        (
            NewKey {
                expires_at: "soon".into(),
                ..new_key("a", &[])
            },
            "expires_at: ",
        ),
    ];
    for (request, expected) in cases {
        let err = admin.create_key(&actor, request).expect_err(expected);
        assert!(err.to_string().contains(expected), "{err} lacks {expected}");
    }
    assert_eq!(admin.store().len(), 0, "nothing was created");
}

#[test]
fn only_admins_administer() {
    let admin = Admin::in_memory(KeyStore::new());
    let editor = Principal::new(
        "k",
        Grant {
            is_admin: false,
            ..Grant::admin()
        },
    );
    let err = admin
        .create_key(&editor, new_key("a", &[]))
        .expect_err("not admin");
    assert!(matches!(err, Error::Denied(_)), "{err}");
    assert!(matches!(
        admin.create_project(&editor, "p"),
        Err(Error::Denied(_))
    ));
    assert!(matches!(
        admin.list_keys(&editor, ""),
        Err(Error::Denied(_))
    ));
    assert!(matches!(
        admin.list_projects(&editor),
        Err(Error::Denied(_))
    ));
}

#[test]
fn updates_apply_to_the_next_authentication() {
    let store = KeyStore::new();
    let admin = Admin::in_memory(store.clone());
    let actor = admin_principal();
    let (info, key) = admin
        .create_key(
            &actor,
            NewKey {
                index_names: vec!["a".into(), "a".into(), "b".into()],
                ..new_key("reader", &["DataPlaneViewer", "DataPlaneViewer"])
            },
        )
        .expect("created");
    assert_eq!(info.roles, vec![Role::DataPlaneViewer], "de-duplicated");
    assert_eq!(info.index_names, vec!["a", "b"]);

    let updated = admin
        .update_key(
            &actor,
            KeyUpdate {
                id: info.id.clone(),
                name: Some("writer".into()),
                roles: vec!["DataPlaneEditor".into()],
                index_names: vec!["c".into()],
                all_indexes: false,
            },
        )
        .expect("updated");
    assert_eq!(updated.name, "writer");
    let principal = store.authenticate(key.as_str()).expect("valid");
    assert_eq!(principal.roles, vec![Role::DataPlaneEditor]);
    assert_eq!(principal.index_names, Some(vec!["c".to_owned()]));

    // Empty fields leave things as they are; all_indexes lifts the allow-list.
    let lifted = admin
        .update_key(
            &actor,
            KeyUpdate {
                id: info.id.clone(),
                all_indexes: true,
                ..KeyUpdate::default()
            },
        )
        .expect("updated");
    assert_eq!(
        (lifted.name.as_str(), lifted.roles.as_slice()),
        ("writer", [Role::DataPlaneEditor].as_slice())
    );
    assert!(
        store
            .authenticate(key.as_str())
            .expect("valid")
            .index_names
            .is_none()
    );

    let both = KeyUpdate {
        id: info.id.clone(),
        index_names: vec!["a".into()],
        all_indexes: true,
        ..KeyUpdate::default()
    };
    assert!(matches!(
        admin.update_key(&actor, both),
        Err(Error::Invalid { .. })
    ));
    let missing = KeyUpdate {
        id: "000000000000".into(),
        ..KeyUpdate::default()
    };
    assert!(matches!(
        admin.update_key(&actor, missing),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn revoked_keys_stop_working_and_the_bootstrap_key_cannot_be_revoked() {
    let dir = Dir::new("revoke");
    let boot = bootstrap(&dir.0, Some("pclocal")).expect("bootstrap");
    let actor = admin_principal();
    let (info, key) = boot
        .admin
        .create_key(&actor, new_key("tmp", &[]))
        .expect("created");
    boot.admin.revoke_key(&actor, &info.id).expect("revoked");
    assert!(matches!(
        boot.store.authenticate(key.as_str()),
        Err(Error::InvalidKey)
    ));
    assert!(matches!(
        boot.admin.describe_key(&actor, &info.id),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        boot.admin.revoke_key(&actor, &info.id),
        Err(Error::NotFound { .. })
    ));
    let err = boot
        .admin
        .revoke_key(&actor, "bootstrap")
        .expect_err("bootstrap");
    assert!(err.to_string().contains("LARCH_API_KEY"), "{err}");
    assert!(boot.store.authenticate("pclocal").is_ok());

    drop(boot);
    let again = bootstrap(&dir.0, None).expect("restart");
    assert!(
        again.store.authenticate(key.as_str()).is_err(),
        "revocation is durable"
    );
}

#[test]
fn projects_are_unique_persisted_and_deleted_only_when_empty() {
    let dir = Dir::new("projects");
    let boot = bootstrap(&dir.0, Some("pclocal")).expect("bootstrap");
    let actor = admin_principal();
    let admin = &boot.admin;
    let names: Vec<String> = admin
        .list_projects(&actor)
        .expect("list")
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(
        names,
        vec!["default"],
        "the default project exists from the start"
    );

    let search = admin.create_project(&actor, "search").expect("created");
    assert_eq!(search.id.len(), 36, "a UUID: {}", search.id);
    assert!(matches!(
        admin.create_project(&actor, "search"),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        admin.create_project(&actor, "no spaces"),
        Err(Error::Invalid { .. })
    ));
    let (_, key) = admin
        .create_key(
            &actor,
            NewKey {
                project_id: search.id.clone(),
                ..new_key("search-ci", &[])
            },
        )
        .expect("key in project");
    assert_eq!(
        boot.store
            .authenticate(key.as_str())
            .expect("valid")
            .project_id,
        search.id
    );
    assert_eq!(admin.list_keys(&actor, &search.id).expect("list").len(), 1);

    let err = admin
        .delete_project(&actor, &search.id, |_| 2)
        .expect_err("has indexes");
    assert!(err.to_string().contains("still has 2 index(es)"), "{err}");
    assert!(matches!(
        admin.delete_project(&actor, "default", |_| 0),
        Err(Error::FailedPrecondition(_))
    ));
    drop(boot);

    let again = bootstrap(&dir.0, None).expect("restart");
    assert_eq!(
        again
            .admin
            .describe_project(&actor, &search.id)
            .expect("persisted"),
        search
    );
    again
        .admin
        .delete_project(&actor, &search.id, |_| 0)
        .expect("deleted");
    assert!(
        again.store.authenticate(key.as_str()).is_err(),
        "its keys are revoked"
    );
    assert!(matches!(
        again.admin.describe_project(&actor, &search.id),
        Err(Error::NotFound { .. })
    ));
    drop(again);
    let third = bootstrap(&dir.0, None).expect("restart");
    assert_eq!(third.admin.list_projects(&actor).expect("list").len(), 1);
    assert!(third.store.authenticate(key.as_str()).is_err());
}

#[test]
fn a_damaged_access_file_is_an_error_and_left_alone() {
    let dir = Dir::new("damaged");
    std::fs::create_dir_all(&dir.0).expect("mkdir");
    std::fs::write(dir.0.join(ACCESS_FILE), "{").expect("write");
    let err = bootstrap(&dir.0, Some("pclocal")).expect_err("damaged");
    assert!(matches!(err, Error::InvalidKeyFile { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.0.join(ACCESS_FILE)).expect("kept"),
        "{"
    );
}

#[test]
fn issue_14_allow_lists_are_bounded_on_create_and_update() {
    let admin = Admin::in_memory(KeyStore::new());
    let actor = admin_principal();
    let names = |n: usize| (0..n).map(|i| format!("index-{i}")).collect::<Vec<_>>();
    let largest = NewKey {
        index_names: names(MAX_ALLOWED_INDEXES),
        ..new_key("largest", &[])
    };
    let (info, _) = admin
        .create_key(&actor, largest)
        .expect("the bound is allowed");
    assert_eq!(info.index_names.len(), MAX_ALLOWED_INDEXES);
    let too_many = NewKey {
        index_names: names(10_000),
        ..new_key("too-many", &[])
    };
    let err = admin
        .create_key(&actor, too_many)
        .expect_err("over the bound");
    assert_eq!(err.code_name(), "INVALID_ARGUMENT");
    let message = err.to_string();
    assert!(
        message.contains("index_names") && message.contains(&MAX_ALLOWED_INDEXES.to_string()),
        "{message}"
    );
    let update = KeyUpdate {
        id: info.id.clone(),
        index_names: names(MAX_ALLOWED_INDEXES + 1),
        ..KeyUpdate::default()
    };
    let err = admin
        .update_key(&actor, update)
        .expect_err("over the bound");
    assert!(err.to_string().contains("at most 1000"), "{err}");
    assert_eq!(
        admin
            .describe_key(&actor, &info.id)
            .unwrap()
            .index_names
            .len(),
        MAX_ALLOWED_INDEXES,
        "unchanged"
    );
}

/// `access.json` exactly as `Admin` wrote it before the store trait: projects by creation
/// time, keys by id, pretty JSON and a newline.
const ACCESS_BEFORE_THE_STORE_TRAIT: &str = r#"{
  "version": 1,
  "projects": [
    {
      "id": "default",
      "name": "default",
      "created_at": "2026-01-01T00:00:00Z"
    },
    {
      "id": "3f2b8c1e-7d4a-4e0b-9c6f-1a2b3c4d5e6f",
      "name": "team",
      "created_at": "2026-02-01T00:00:00Z"
    }
  ],
  "keys": [
    {
      "key_id": "0123456789ab",
      "salt": "00112233445566778899aabbccddeeff",
      "hash": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
      "grant": {
        "project_id": "default",
        "roles": [
          "ProjectEditor"
        ],
        "index_names": null,
        "is_admin": false
      },
      "name": "ci",
      "created_at": "2026-01-02T00:00:00Z"
    },
    {
      "key_id": "ba9876543210",
      "salt": "ffeeddccbbaa99887766554433221100",
      "hash": "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100",
      "grant": {
        "project_id": "3f2b8c1e-7d4a-4e0b-9c6f-1a2b3c4d5e6f",
        "roles": [
          "DataPlaneViewer"
        ],
        "index_names": [
          "movies"
        ],
        "is_admin": false
      },
      "name": "reader",
      "created_at": "2026-02-02T00:00:00Z",
      "expires_at": "2999-01-01T00:00:00Z"
    }
  ]
}
"#;

#[test]
fn an_access_file_loads_and_is_written_back_byte_for_byte_as_before() {
    let dir = Dir::new("golden");
    std::fs::create_dir_all(&dir.0).expect("dir");
    let path = dir.0.join(ACCESS_FILE);
    std::fs::write(&path, ACCESS_BEFORE_THE_STORE_TRAIT).expect("written");
    let store = KeyStore::new();
    let admin = Admin::open(&dir.0, store.clone()).expect("loads");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        ACCESS_BEFORE_THE_STORE_TRAIT,
        "opening writes nothing"
    );
    assert_eq!(store.len(), 2);
    let actor = admin_principal();
    let reader = admin.describe_key(&actor, "ba9876543210").expect("loaded");
    assert_eq!(reader.index_names, ["movies"]);

    // A change and its reverse: the file is what it was, byte for byte.
    let extra = admin.create_project(&actor, "extra").expect("created");
    assert_ne!(
        std::fs::read_to_string(&path).expect("read"),
        ACCESS_BEFORE_THE_STORE_TRAIT
    );
    admin
        .delete_project(&actor, &extra.id, |_| 0)
        .expect("deleted");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        ACCESS_BEFORE_THE_STORE_TRAIT
    );
}
