//! First start: load or create the bootstrap admin key in the data directory, then open the
//! access state: [`bootstrap`] for one control plane, [`bootstrap_shared`] for replicas that
//! share it.
//!
//! The key's hash (never the key) lives in `<state_dir>/bootstrap-key.json`, in each
//! replica's own state directory even when the access state is shared:
//!
//! ```json
//! {
//!   "version": 1,
//!   "key": { "key_id": "…", "salt": "…", "hash": "…", "grant": { … } }
//! }
//! ```

use std::fs;
use std::path::Path;

use larch_state::SharedDocument;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{Admin, ApiKey, Error, Grant, KeyStore, Result, StoredKey, file};

/// Name of the file, inside the state directory, that holds the bootstrap key's hash.
pub const BOOTSTRAP_FILE: &str = "bootstrap-key.json";

/// Layout version of [`BOOTSTRAP_FILE`]; bumped when the layout changes incompatibly.
const FILE_VERSION: u32 = 1;

/// The on-disk layout of [`BOOTSTRAP_FILE`].
#[derive(Serialize, Deserialize)]
struct BootstrapFile<K> {
    version: u32,
    key: K,
}

/// Result of loading or creating the bootstrap admin key in a data directory.
#[derive(Debug)]
pub struct Bootstrap {
    /// The key store every server checks requests against: the bootstrap admin key and the
    /// keys made through the admin API.
    pub store: KeyStore,
    /// Projects and keys (from [`ACCESS_FILE`](crate::admin::ACCESS_FILE) or the shared
    /// document), for the admin API.
    pub admin: Admin,
    /// Some(plaintext) only when a key was generated now and must be printed once
    pub generated: Option<ApiKey>,
}

/// Loads or creates the bootstrap admin key in `state_dir` (created if missing).
///
/// `configured` is the operator's choice (the binary passes `LARCH_API_KEY`; this crate
/// reads no environment):
///
/// - `Some(key)`: `key` is the admin key (see [`ApiKey::from_configured`] for what is
///   accepted). Its hash replaces whatever was stored before, so it also works after a
///   later restart without the variable.
/// - `None`, file present: the stored key keeps working (e.g. the key printed at first start).
/// - `None`, no file: a key is generated, only its hash is written, and the plaintext is
///   returned in [`Bootstrap::generated`] so the caller can print it once.
///
/// The admin principal is project `default`, role `ProjectEditor`, all indexes, admin.
///
/// # Errors
///
/// [`Error::Malformed`] for an unusable configured key, [`Error::InvalidKeyFile`] for a
/// file that cannot be understood (it is left alone when no key is configured), and
/// [`Error::Io`] when the directory or file cannot be created, read or written.
pub fn bootstrap(state_dir: &Path, configured: Option<&str>) -> Result<Bootstrap> {
    let (store, generated) = admin_key(state_dir, configured)?;
    let admin = Admin::open(state_dir, store.clone())?;
    Ok(Bootstrap {
        store,
        admin,
        generated,
    })
}

/// As [`bootstrap`] with a configured key, for one of several control-plane replicas: the
/// bootstrap key's hash stays in `state_dir`, projects and other keys are the shared
/// document `access` (see [`Admin::open_shared`]).
///
/// Every replica is given the same `configured` key, so it works on each of them and has the
/// same key id everywhere (the id comes from the key's text: [`BOOTSTRAP_KEY_ID`] for a key
/// of the operator's own shape, the `<id>` part of a `larch_<id>_<secret>` key); only the
/// salt differs. A key generated at first start would exist on one replica only, so there
/// is no such option here.
///
/// # Errors
///
/// As [`bootstrap`], plus [`Error::SharedState`] when the shared document cannot be read or
/// written.
///
/// [`BOOTSTRAP_KEY_ID`]: crate::BOOTSTRAP_KEY_ID
pub fn bootstrap_shared(
    state_dir: &Path,
    configured: &str,
    access: SharedDocument,
) -> Result<Bootstrap> {
    let (store, generated) = admin_key(state_dir, Some(configured))?;
    debug_assert!(generated.is_none(), "a configured key is never generated");
    let admin = Admin::open_shared(access, store.clone())?;
    Ok(Bootstrap {
        store,
        admin,
        generated,
    })
}

/// Loads or creates the bootstrap key as [`bootstrap`] describes: a store holding it, and
/// the key itself if it was generated now.
fn admin_key(state_dir: &Path, configured: Option<&str>) -> Result<(KeyStore, Option<ApiKey>)> {
    fs::create_dir_all(state_dir).map_err(Error::io("create directory", state_dir))?;
    let path = state_dir.join(BOOTSTRAP_FILE);

    let (stored, generated) = match configured {
        Some(configured) => {
            let key = ApiKey::from_configured(configured)?;
            let existing = load(&path).unwrap_or_else(|err| {
                warn!(error = %err, "replacing the bootstrap key file with the configured key");
                None
            });
            let stored = match existing {
                // Same key already stored: keep the file instead of rewriting it on every start.
                Some(stored)
                    if stored.verify(key.as_str()) && *stored.grant() == Grant::admin() =>
                {
                    stored
                }
                _ => {
                    let stored = StoredKey::new(&key, Grant::admin());
                    save(state_dir, &path, &stored)?;
                    stored
                }
            };
            info!(
                key_id = stored.key_id(),
                "using the configured api key as bootstrap admin key"
            );
            (stored, None)
        }
        None => match load(&path)? {
            Some(stored) => {
                info!(key_id = stored.key_id(), path = %path.display(), "loaded bootstrap admin key");
                (stored, None)
            }
            None => {
                let key = ApiKey::generate();
                let stored = StoredKey::new(&key, Grant::admin());
                save(state_dir, &path, &stored)?;
                info!(key_id = stored.key_id(), path = %path.display(), "generated bootstrap admin key");
                (stored, Some(key))
            }
        },
    };

    let store = KeyStore::new();
    store.insert(stored);
    Ok((store, generated))
}

/// The stored key, or `None` if the file does not exist.
fn load(path: &Path) -> Result<Option<StoredKey>> {
    Ok(file::read::<BootstrapFile<StoredKey>>(path, FILE_VERSION)?.map(|f| f.key))
}

fn save(dir: &Path, path: &Path, stored: &StoredKey) -> Result<()> {
    file::write(
        dir,
        path,
        &BootstrapFile {
            version: FILE_VERSION,
            key: stored,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> TestDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("larch-auth-test-{}-{name}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            TestDir(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join(BOOTSTRAP_FILE)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn generated_key_is_printed_once_and_survives_a_restart() {
        let dir = TestDir::new("restart");
        let first = bootstrap(&dir.0, None).expect("first start");
        let key = first.generated.expect("no file yet, so a key is generated");
        let principal = first.store.authenticate(key.as_str()).expect("valid");
        assert_eq!(
            (principal.project_id.as_str(), principal.roles.as_slice()),
            ("default", [Role::ProjectEditor].as_slice())
        );
        assert!(principal.is_admin && principal.index_names.is_none());
        assert_eq!(principal.key_id, key.key_id());

        let second = bootstrap(&dir.0, None).expect("restart");
        assert!(second.generated.is_none(), "printed only at first start");
        assert_eq!(
            second
                .store
                .authenticate(key.as_str())
                .expect("still valid"),
            principal
        );

        let text = fs::read_to_string(dir.file()).expect("file written");
        let secret = ApiKey::parse(key.as_str()).expect("well-formed").secret();
        assert!(!text.contains(secret), "only the hash is stored");
        assert!(!dir.0.join(format!("{BOOTSTRAP_FILE}.tmp")).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.file())
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn configured_key_replaces_the_stored_one_and_persists() {
        let dir = TestDir::new("configured");
        let generated = bootstrap(&dir.0, None)
            .expect("first start")
            .generated
            .expect("generated");

        let configured = bootstrap(&dir.0, Some("pclocal")).expect("configured");
        assert!(configured.generated.is_none());
        let principal = configured.store.authenticate("pclocal").expect("valid");
        assert_eq!(principal.key_id, "bootstrap");
        assert!(principal.is_admin);
        assert!(configured.store.authenticate(generated.as_str()).is_err());

        // Same key again: the file is kept as it is.
        let before = fs::read(dir.file()).expect("exists");
        bootstrap(&dir.0, Some("pclocal")).expect("configured again");
        assert_eq!(fs::read(dir.file()).expect("exists"), before);

        // Later start without the variable: the configured key still works.
        let later = bootstrap(&dir.0, None).expect("restart");
        assert!(later.generated.is_none());
        assert!(later.store.authenticate("pclocal").is_ok());
    }

    #[test]
    fn creates_a_missing_state_dir() {
        let dir = TestDir::new("nested");
        let nested = dir.0.join("a").join("b");
        let boot = bootstrap(&nested, Some("x")).expect("creates directories");
        assert!(nested.join(BOOTSTRAP_FILE).is_file());
        assert!(boot.store.authenticate("x").is_ok());
    }

    #[test]
    fn invalid_configured_key_is_rejected_and_nothing_written() {
        let dir = TestDir::new("invalid-configured");
        let err = bootstrap(&dir.0, Some("")).expect_err("empty key");
        assert!(matches!(err, Error::Malformed(_)));
        assert!(!dir.file().exists());
    }

    #[test]
    fn unreadable_file_is_an_error_unless_a_key_is_configured() {
        let dir = TestDir::new("corrupt");
        fs::create_dir_all(&dir.0).expect("mkdir");
        fs::write(dir.file(), "not json").expect("write");
        let err = bootstrap(&dir.0, None).expect_err("corrupt file");
        assert!(matches!(err, Error::InvalidKeyFile { .. }), "{err}");
        assert_eq!(fs::read_to_string(dir.file()).expect("kept"), "not json");

        let boot = bootstrap(&dir.0, Some("pclocal")).expect("configured key replaces it");
        assert!(boot.store.authenticate("pclocal").is_ok());

        fs::write(dir.file(), r#"{"version": 2, "key": {}}"#).expect("write");
        let err = bootstrap(&dir.0, None).expect_err("newer version");
        assert!(err.to_string().contains("unsupported version 2"), "{err}");
    }
}
