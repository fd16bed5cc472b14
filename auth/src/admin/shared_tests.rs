//! Several replicas over one shared access document: each test builds two [`Admin`]s with
//! their own [`KeyStore`] (and their own bootstrap key) over two handles on one directory,
//! as two control-plane pods over one shared volume.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::thread;

use super::tests::{Dir, admin_principal, new_key};
use super::*;
use crate::{BOOTSTRAP_KEY_ID, bootstrap_shared};
use larch_state::Written;

/// The operator's bootstrap key, the same on every replica.
const CONFIGURED: &str = "pclocal";

/// A handle on the shared access document in `shared`.
fn doc(shared: &Path) -> SharedDocument {
    SharedDocument::local(shared, "access").expect("shared directory")
}

/// One replica: its own key store, holding its own hash of the bootstrap key.
struct Replica {
    admin: Arc<Admin>,
    store: KeyStore,
}

fn replica(shared: &Path) -> Replica {
    let store = KeyStore::new();
    let key = ApiKey::from_configured(CONFIGURED).expect("valid");
    store.insert(StoredKey::new(&key, Grant::admin()));
    let admin = Admin::open_shared(doc(shared), store.clone()).expect("open shared");
    Replica {
        admin: Arc::new(admin),
        store,
    }
}

/// The newest version of the document, read by a third party.
fn newest(shared: &Path) -> u64 {
    doc(shared)
        .refresh(0)
        .expect("readable")
        .expect("written")
        .version
}

/// Ids of the keys in `store`, the bootstrap key excepted.
fn key_ids(store: &KeyStore) -> BTreeSet<String> {
    store
        .all()
        .iter()
        .filter(|key| !key.grant().is_admin)
        .map(|key| key.key_id().to_owned())
        .collect()
}

fn project_names(admin: &Admin) -> Vec<String> {
    let projects = admin.list_projects(&admin_principal()).expect("list");
    projects.into_iter().map(|p| p.name).collect()
}

/// Runs `hook` before each write of `admin`'s changes (another replica winning the race).
fn before_write(admin: &Admin, hook: impl FnMut() + Send + 'static) {
    *admin.before_write.lock().expect("not poisoned") = Some(Box::new(hook));
}

#[test]
fn keys_changed_on_one_replica_work_on_another_after_its_refresh() {
    let dir = Dir::new("shared-keys");
    let (a, b) = (replica(&dir.0), replica(&dir.0));
    assert_eq!(newest(&dir.0), 1, "only the first replica wrote version 1");
    let bootstrap_before = b.store.get(BOOTSTRAP_KEY_ID).expect("b's bootstrap key");
    let actor = admin_principal();

    let (info, key) = a
        .admin
        .create_key(&actor, new_key("ci", &[]))
        .expect("created");
    assert!(
        matches!(b.store.authenticate(key.as_str()), Err(Error::InvalidKey)),
        "b has not refreshed yet"
    );
    b.admin.refresh().expect("refresh");
    let principal = b.store.authenticate(key.as_str()).expect("valid on b");
    assert_eq!(principal.key_id, info.id);
    assert!(!principal.is_admin);

    a.admin.revoke_key(&actor, &info.id).expect("revoked");
    assert!(
        b.store.authenticate(key.as_str()).is_ok(),
        "b has not refreshed yet"
    );
    b.admin.refresh().expect("refresh");
    assert!(matches!(
        b.store.authenticate(key.as_str()),
        Err(Error::InvalidKey)
    ));
    b.admin.refresh().expect("nothing new: a no-op");

    assert_eq!(
        b.store.get(BOOTSTRAP_KEY_ID).expect("kept"),
        bootstrap_before,
        "refresh never touches the bootstrap key"
    );
    assert_eq!(b.store.len(), 1);
    assert!(b.store.authenticate(CONFIGURED).expect("valid").is_admin);
    assert_eq!(newest(&dir.0), 3);
}

#[test]
fn admin_reads_on_one_replica_see_changes_made_on_another() {
    let dir = Dir::new("shared-reads");
    let (a, b) = (replica(&dir.0), replica(&dir.0));
    let actor = admin_principal();

    let search = a.admin.create_project(&actor, "search").expect("created");
    assert_eq!(project_names(&b.admin), ["default", "search"]);
    assert_eq!(
        b.admin.describe_project(&actor, &search.id).expect("seen"),
        search
    );
    assert!(b.admin.project_exists(&search.id));

    let (info, _) = a
        .admin
        .create_key(
            &actor,
            NewKey {
                project_id: search.id.clone(),
                ..new_key("search-ci", &[])
            },
        )
        .expect("created");
    let listed = b.admin.list_keys(&actor, &search.id).expect("listed");
    assert_eq!(listed, vec![info.clone()]);
    assert_eq!(b.admin.describe_key(&actor, &info.id).expect("seen"), info);

    a.admin
        .delete_project(&actor, &search.id, |_| 0)
        .expect("deleted");
    assert!(matches!(
        b.admin.describe_project(&actor, &search.id),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        b.admin.describe_key(&actor, &info.id),
        Err(Error::NotFound { .. })
    ));
    assert!(!b.admin.project_exists(&search.id));
    assert_eq!(project_names(&b.admin), ["default"]);
}

#[test]
fn one_project_name_created_at_once_on_two_replicas_is_made_once() {
    let dir = Dir::new("shared-race");
    let (a, b) = (replica(&dir.0), replica(&dir.0));
    const ROUNDS: u64 = 10;
    for round in 0..ROUNDS {
        let name = format!("race-{round}");
        let barrier = Arc::new(Barrier::new(2));
        let racers = [&a.admin, &b.admin].map(|admin| {
            let (admin, barrier, name) = (Arc::clone(admin), Arc::clone(&barrier), name.clone());
            thread::spawn(move || {
                barrier.wait();
                admin.create_project(&admin_principal(), &name)
            })
        });
        let results = racers.map(|racer| racer.join().expect("no panic"));
        let made = results.iter().filter(|result| result.is_ok()).count();
        assert_eq!(made, 1, "round {round}: {results:?}");
        assert!(
            results
                .iter()
                .any(|result| matches!(result, Err(Error::AlreadyExists { .. }))),
            "round {round}: {results:?}"
        );
    }
    assert_eq!(newest(&dir.0), 1 + ROUNDS, "one version per project");
    for admin in [&a.admin, &b.admin] {
        assert_eq!(project_names(admin).len(), 1 + ROUNDS as usize);
    }
}

#[test]
fn keys_created_at_once_on_two_replicas_are_all_kept() {
    let dir = Dir::new("shared-many");
    let (a, b) = (replica(&dir.0), replica(&dir.0));
    const PER_REPLICA: usize = 25;
    let barrier = Arc::new(Barrier::new(2));
    let writers = [&a.admin, &b.admin].map(|admin| {
        let (admin, barrier) = (Arc::clone(admin), Arc::clone(&barrier));
        thread::spawn(move || {
            barrier.wait();
            (0..PER_REPLICA)
                .map(|i| {
                    let (info, _) = admin
                        .create_key(&admin_principal(), new_key(&format!("k{i}"), &[]))
                        .expect("created");
                    info.id
                })
                .collect::<Vec<String>>()
        })
    });
    let created: BTreeSet<String> = writers
        .into_iter()
        .flat_map(|writer| writer.join().expect("no panic"))
        .collect();
    assert_eq!(created.len(), 2 * PER_REPLICA);
    for replica in [&a, &b] {
        replica.admin.refresh().expect("refresh");
        assert_eq!(key_ids(&replica.store), created);
    }
    assert_eq!(
        newest(&dir.0),
        1 + 2 * PER_REPLICA as u64,
        "one version per key"
    );
}

#[test]
fn reopening_on_a_fresh_store_sees_every_change() {
    let dir = Dir::new("shared-reopen");
    let a = replica(&dir.0);
    let actor = admin_principal();
    let search = a.admin.create_project(&actor, "search").expect("created");
    let (kept, key) = a
        .admin
        .create_key(
            &actor,
            NewKey {
                project_id: search.id.clone(),
                ..new_key("kept", &["DataPlaneViewer"])
            },
        )
        .expect("created");
    let (gone, _) = a
        .admin
        .create_key(&actor, new_key("gone", &[]))
        .expect("created");
    a.admin.revoke_key(&actor, &gone.id).expect("revoked");

    let store = KeyStore::new();
    let reopened = Admin::open_shared(doc(&dir.0), store.clone()).expect("reopen");
    assert_eq!(project_names(&reopened), ["default", "search"]);
    assert_eq!(
        reopened.list_keys(&actor, "").expect("list"),
        vec![kept.clone()]
    );
    let principal = store.authenticate(key.as_str()).expect("valid");
    assert_eq!(
        (principal.project_id, principal.roles),
        (search.id, vec![Role::DataPlaneViewer])
    );
    assert_eq!(newest(&dir.0), 5, "reopening writes nothing");
}

#[test]
fn a_change_that_lost_the_race_is_redone_on_the_newer_state() {
    let dir = Dir::new("shared-conflict");
    let (a, b) = (replica(&dir.0), replica(&dir.0));
    let actor = admin_principal();
    let (info, _) = a
        .admin
        .create_key(&actor, new_key("ci", &[]))
        .expect("created");
    b.admin.refresh().expect("b knows the key");

    // A stale view: a revokes, b's update refreshes first and finds nothing to update.
    a.admin.revoke_key(&actor, &info.id).expect("revoked");
    let before = newest(&dir.0);
    let rename = KeyUpdate {
        id: info.id.clone(),
        name: Some("renamed".into()),
        ..KeyUpdate::default()
    };
    assert!(matches!(
        b.admin.update_key(&actor, rename.clone()),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(newest(&dir.0), before, "nothing written");

    // The revocation lands between b's validation and b's write: b's write conflicts, and
    // the redone update no longer finds the key.
    let (info, _) = a
        .admin
        .create_key(&actor, new_key("ci2", &[]))
        .expect("created");
    b.admin.refresh().expect("b knows the key");
    let (winner, id) = (Arc::clone(&a.admin), info.id.clone());
    let mut once = Some(move || winner.revoke_key(&admin_principal(), &id).expect("revoked"));
    before_write(&b.admin, move || once.take().into_iter().for_each(|f| f()));
    let before = newest(&dir.0);
    let err = b
        .admin
        .update_key(
            &actor,
            KeyUpdate {
                id: info.id.clone(),
                ..rename
            },
        )
        .expect_err("revoked meanwhile");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_eq!(
        newest(&dir.0),
        before + 1,
        "only a's revocation was written"
    );
    assert!(!b.store.contains(&info.id), "b took the newer state");

    // A project name taken between b's validation and b's write.
    let winner = Arc::clone(&a.admin);
    let mut once = Some(move || {
        winner
            .create_project(&admin_principal(), "p")
            .expect("made")
    });
    before_write(&b.admin, move || {
        once.take().into_iter().for_each(|f| {
            f();
        })
    });
    let before = newest(&dir.0);
    assert!(matches!(
        b.admin.create_project(&actor, "p"),
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(newest(&dir.0), before + 1, "only a's project was written");

    // A change that still applies after the conflict is made, and a's change is kept.
    let winner = Arc::clone(&a.admin);
    let mut once = Some(move || winner.create_key(&admin_principal(), new_key("a", &[])));
    let (made_on_a, made) = std::sync::mpsc::channel();
    before_write(&b.admin, move || {
        if let Some(f) = once.take() {
            made_on_a.send(f().expect("made").0.id).expect("received");
        }
    });
    let before = newest(&dir.0);
    let (on_b, _) = b.admin.create_key(&actor, new_key("b", &[])).expect("made");
    let on_a = made.recv().expect("a made one");
    assert_eq!(newest(&dir.0), before + 2);
    assert_eq!(key_ids(&b.store), BTreeSet::from([on_a, on_b.id]));
}

#[test]
fn a_change_that_keeps_losing_gives_up_as_unavailable() {
    let dir = Dir::new("shared-contended");
    let b = replica(&dir.0);
    let other = doc(&dir.0);
    // Another replica writes a version (a copy of the newest) before each of b's writes.
    before_write(&b.admin, move || {
        let newest = other.refresh(0).expect("read").expect("written");
        let written = other
            .write_next(newest.version, newest.bytes)
            .expect("written");
        assert!(matches!(written, Written::Done(_)));
    });
    let before = newest(&dir.0);
    let err = b
        .admin
        .create_project(&admin_principal(), "never")
        .expect_err("always beaten");
    assert!(
        matches!(err, Error::Contended { attempts } if attempts == MAX_ATTEMPTS),
        "{err}"
    );
    assert_eq!(err.code_name(), "UNAVAILABLE");
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::Unavailable);
    assert_eq!(newest(&dir.0), before + u64::from(MAX_ATTEMPTS));
    *b.admin.before_write.lock().expect("not poisoned") = None;
    assert_eq!(project_names(&b.admin), ["default"]);
}

#[test]
fn shared_store_failures_are_unavailable_with_the_store_message() {
    let failures = [
        larch_state::Error::Store {
            what: "reading /shared/access".into(),
            message: "connection refused".into(),
        },
        larch_state::Error::Unknown("/shared/access".into()),
    ];
    for failure in failures {
        let expected = failure.to_string();
        let err = Error::from(failure);
        assert_eq!(err.code_name(), "UNAVAILABLE");
        let (status, message) = crate::http::rejection(&err);
        assert_eq!(
            (status, message.as_str()),
            (http::StatusCode::SERVICE_UNAVAILABLE, expected.as_str())
        );
        let status = tonic::Status::from(err);
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::Unavailable, expected.as_str())
        );
    }
}

#[test]
fn a_version_that_cannot_be_understood_is_an_error_and_left_alone() {
    let dir = Dir::new("shared-damaged");
    let shared = doc(&dir.0);
    assert_eq!(
        shared.write_next(0, b"{".to_vec()).expect("written"),
        Written::Done(1)
    );
    let err = Admin::open_shared(doc(&dir.0), KeyStore::new()).expect_err("damaged");
    assert!(matches!(err, Error::InvalidKeyFile { .. }), "{err}");
    assert!(err.to_string().contains("(version 1)"), "{err}");

    let newer = br#"{"version": 2, "projects": [], "keys": []}"#.to_vec();
    assert_eq!(
        shared.write_next(1, newer).expect("written"),
        Written::Done(2)
    );
    let err = Admin::open_shared(doc(&dir.0), KeyStore::new()).expect_err("newer");
    assert!(err.to_string().contains("unsupported version 2"), "{err}");
    assert_eq!(newest(&dir.0), 2, "nothing written over them");
}

#[test]
fn a_shared_key_posing_as_the_bootstrap_key_is_ignored() {
    let dir = Dir::new("shared-posing");
    let b = replica(&dir.0);
    let impostor = ApiKey::from_configured("impostor").expect("valid");
    let posing = StoredKey::new(
        &impostor,
        Grant {
            is_admin: false,
            ..Grant::admin()
        },
    );
    assert_eq!(posing.key_id(), BOOTSTRAP_KEY_ID);
    let forged = AccessFile {
        version: FILE_VERSION,
        projects: vec![default_project()],
        keys: vec![posing],
    };
    let bytes = serde_json::to_vec(&forged).expect("encodes");
    let written = doc(&dir.0).write_next(newest(&dir.0), bytes);
    assert!(matches!(written, Ok(Written::Done(2))), "{written:?}");

    b.admin.refresh().expect("refresh");
    assert!(b.store.authenticate(CONFIGURED).expect("kept").is_admin);
    assert!(b.store.authenticate("impostor").is_err());
}

#[test]
fn replicas_bootstrapped_with_one_configured_key_share_the_access_state() {
    let dir = Dir::new("shared-bootstrap");
    let shared = dir.0.join("shared");
    let (state_a, state_b) = (dir.0.join("a"), dir.0.join("b"));
    let a = bootstrap_shared(&state_a, CONFIGURED, doc(&shared)).expect("a");
    let b = bootstrap_shared(&state_b, CONFIGURED, doc(&shared)).expect("b");
    assert!(a.generated.is_none() && b.generated.is_none());
    for (boot, state) in [(&a, &state_a), (&b, &state_b)] {
        let principal = boot.store.authenticate(CONFIGURED).expect("valid");
        assert_eq!(principal.key_id, BOOTSTRAP_KEY_ID);
        assert!(principal.is_admin);
        assert!(state.join(crate::BOOTSTRAP_FILE).is_file(), "kept locally");
        assert!(!state.join(ACCESS_FILE).exists(), "access state is shared");
    }

    let actor = admin_principal();
    let (_, key) = a
        .admin
        .create_key(&actor, new_key("ci", &[]))
        .expect("created");
    b.admin.refresh().expect("refresh");
    assert!(b.store.authenticate(key.as_str()).is_ok());
    let listed = b.admin.list_keys(&actor, "").expect("list");
    assert_eq!(listed.iter().filter(|k| k.admin).count(), 1, "b's own");
    assert_eq!(listed.len(), 2);

    // A configured key of the generated shape has its own id, the same on every replica.
    let generated = ApiKey::generate();
    let c = bootstrap_shared(&dir.0.join("c"), generated.as_str(), doc(&shared)).expect("c");
    let d = bootstrap_shared(&dir.0.join("d"), generated.as_str(), doc(&shared)).expect("d");
    for boot in [&c, &d] {
        let principal = boot.store.authenticate(generated.as_str()).expect("valid");
        assert_eq!(principal.key_id, generated.key_id());
        assert!(boot.store.authenticate(key.as_str()).is_ok(), "shared keys");
    }
    assert_eq!(
        newest(&shared),
        2,
        "bootstrap keys are never in the document"
    );
}
