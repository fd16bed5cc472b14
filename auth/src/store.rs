//! [`KeyStore`]: the in-memory verifier shared by both planes.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::key::Presented;
use crate::limit::{Buckets, Failures, RateLimit};
use crate::stored::verify_against_dummy;
use crate::{Error, Principal, Result, StoredKey};

/// Maps key ids to [`StoredKey`]s and authenticates presented keys against them.
///
/// A cheap, clonable handle: clones share the same keys, so a key inserted or removed
/// through one handle (e.g. by the admin API) takes effect for every server at once.
#[derive(Clone, Default)]
pub struct KeyStore {
    /// Read on every request, written only when keys change: a `RwLock` suits that. It is
    /// never held across an `.await` (no method here is async).
    keys: Arc<RwLock<HashMap<String, StoredKey>>>,
    /// Rate limit and failed-authentication slowdown, shared by every server using the store.
    guard: Arc<Guard>,
}

#[derive(Default)]
pub(crate) struct Guard {
    /// Set once at start-up when a per-key rate limit is configured.
    pub(crate) rate: OnceLock<Buckets>,
    pub(crate) failures: Failures,
    /// Set once at start-up when refusals are counted (see `KeyStore::count_refusals`).
    pub(crate) refusals: OnceLock<crate::gate::RefusalCounter>,
}

impl KeyStore {
    /// An empty store: every key is rejected until one is inserted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key, replacing any key with the same id.
    pub fn insert(&self, stored: StoredKey) {
        let key_id = stored.key_id().to_owned();
        self.write().insert(key_id, stored);
    }

    /// Revokes a key; returns whether it existed.
    pub fn remove(&self, key_id: &str) -> bool {
        if let Some(rate) = self.guard.rate.get() {
            rate.forget(key_id);
        }
        self.write().remove(key_id).is_some()
    }

    /// Replaces every key with `keys` at once (a split-mode data plane taking the control
    /// plane's current set): a key missing from `keys` is revoked from the next request on.
    pub fn replace_all(&self, keys: Vec<StoredKey>) {
        let next: HashMap<String, StoredKey> = keys
            .into_iter()
            .map(|key| (key.key_id().to_owned(), key))
            .collect();
        let mut current = self.write();
        if let Some(rate) = self.guard.rate.get() {
            for gone in current.keys().filter(|id| !next.contains_key(*id)) {
                rate.forget(gone);
            }
        }
        *current = next;
    }

    /// The stored key with this id.
    pub fn get(&self, key_id: &str) -> Option<StoredKey> {
        self.read().get(key_id).cloned()
    }

    /// Every stored key, ordered by id.
    pub fn all(&self) -> Vec<StoredKey> {
        let mut keys: Vec<StoredKey> = self.read().values().cloned().collect();
        keys.sort_by(|a, b| a.key_id().cmp(b.key_id()));
        keys
    }

    /// Limits every key to `limit` (for the life of the store; a second call is ignored and
    /// returns false). Off unless called.
    pub fn limit_rate(&self, limit: RateLimit) -> bool {
        self.guard.rate.set(Buckets::new(limit)).is_ok()
    }

    /// Turns the slowdown of repeated failed authentications from one peer address on (the
    /// default) or off — off when all clients come through one proxy, whose address would be
    /// slowed for everyone.
    pub fn slow_down_failed_auth(&self, enabled: bool) {
        self.guard.failures.set_enabled(enabled);
    }

    /// The per-key rate limit in force, if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.guard.rate.get().map(Buckets::limit)
    }

    pub(crate) fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Whether a key with this id exists.
    pub fn contains(&self, key_id: &str) -> bool {
        self.read().contains_key(key_id)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether there are no keys at all.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Checks a key as presented by a client and returns who it belongs to.
    ///
    /// A `larch_<id>_<secret>` key is looked up by its id; any other string is compared
    /// with the operator-chosen bootstrap key (id [`BOOTSTRAP_KEY_ID`](crate::BOOTSTRAP_KEY_ID)).
    /// The comparison is constant-time on the salted hash, and an unknown id costs the same
    /// hashing work as a known one.
    ///
    /// # Errors
    ///
    /// [`Error::MissingKey`] for an empty string, [`Error::ExpiredKey`] for a right key past
    /// its `expires_at`, [`Error::InvalidKey`] for anything else that does not match (unknown
    /// id, wrong secret, revoked).
    pub fn authenticate(&self, presented: &str) -> Result<Principal> {
        if presented.is_empty() {
            return Err(Error::MissingKey);
        }
        let presented = Presented::classify(presented);
        let keys = self.read();
        match keys.get(presented.key_id()) {
            Some(stored) if stored.verify_presented(presented) => match stored.expires_at() {
                Some(at) if at.is_past() => Err(Error::ExpiredKey(at)),
                _ => Ok(stored.principal()),
            },
            Some(_) => Err(Error::InvalidKey),
            None => {
                verify_against_dummy(presented);
                Err(Error::InvalidKey)
            }
        }
    }

    // A panic while holding the lock cannot leave the map half-updated (every write is a
    // single `insert`/`remove`), so a poisoned lock is still safe to use.
    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, StoredKey>> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, StoredKey>> {
        self.keys.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("rate", &self.rate.get().map(Buckets::limit))
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("keys", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ApiKey, Grant, Role};

    fn viewer(project: &str) -> Grant {
        Grant {
            project_id: project.into(),
            roles: vec![Role::DataPlaneViewer],
            index_names: None,
            is_admin: false,
        }
    }

    #[test]
    fn authenticates_each_key_as_its_own_principal() {
        let store = KeyStore::new();
        let (a, b) = (ApiKey::generate(), ApiKey::generate());
        store.insert(StoredKey::new(&a, viewer("pa")));
        store.insert(StoredKey::new(&b, Grant::admin()));
        assert_eq!(store.len(), 2);

        let pa = store.authenticate(a.as_str()).expect("a is valid");
        assert_eq!(
            (pa.key_id.as_str(), pa.project_id.as_str()),
            (a.key_id(), "pa")
        );
        assert!(!pa.is_admin);
        let pb = store.authenticate(b.as_str()).expect("b is valid");
        assert_eq!(pb.key_id, b.key_id());
        assert!(pb.is_admin);
    }

    #[test]
    fn rejects_missing_unknown_wrong_and_revoked_keys() {
        let store = KeyStore::new();
        let key = ApiKey::generate();
        store.insert(StoredKey::new(&key, viewer("p")));

        assert!(matches!(store.authenticate(""), Err(Error::MissingKey)));
        assert!(matches!(
            store.authenticate(ApiKey::generate().as_str()),
            Err(Error::InvalidKey)
        ));
        let text = key.as_str();
        assert!(matches!(
            store.authenticate(&text[..text.len() - 1]),
            Err(Error::InvalidKey)
        ));
        // Opaque strings are checked against the bootstrap key, which does not exist here.
        assert!(matches!(
            store.authenticate("pclocal"),
            Err(Error::InvalidKey)
        ));

        assert!(store.remove(key.key_id()));
        assert!(!store.remove(key.key_id()));
        assert!(matches!(store.authenticate(text), Err(Error::InvalidKey)));
        assert!(store.is_empty());
    }

    #[test]
    fn custom_bootstrap_key_authenticates_as_bootstrap() {
        let store = KeyStore::new();
        let custom = ApiKey::from_configured("pclocal").expect("valid");
        store.insert(StoredKey::new(&custom, Grant::admin()));
        assert!(store.contains("bootstrap"));

        let principal = store.authenticate("pclocal").expect("valid");
        assert_eq!(principal.key_id, "bootstrap");
        assert!(principal.is_admin);
        assert!(matches!(
            store.authenticate("pclocal "),
            Err(Error::InvalidKey)
        ));
        assert!(matches!(
            store.authenticate("other"),
            Err(Error::InvalidKey)
        ));
    }

    #[test]
    fn expired_keys_are_refused_as_such_only_to_their_holder() {
        let store = KeyStore::new();
        let key = ApiKey::generate();
        let past = "2001-01-01T00:00:00Z".parse().expect("time");
        store.insert(StoredKey::new(&key, viewer("p")).expiring(Some(past)));
        assert!(matches!(
            store.authenticate(key.as_str()),
            Err(Error::ExpiredKey(at)) if at == past
        ));
        // A wrong secret under the same id learns nothing about expiry.
        let wrong = format!("larch_{}_{}", key.key_id(), "0".repeat(64));
        assert!(matches!(store.authenticate(&wrong), Err(Error::InvalidKey)));

        let future = "2999-01-01T00:00:00Z".parse().expect("time");
        let later = ApiKey::generate();
        store.insert(StoredKey::new(&later, viewer("p")).expiring(Some(future)));
        assert!(store.authenticate(later.as_str()).is_ok());
    }

    #[test]
    fn replace_all_revokes_what_is_missing() {
        let store = KeyStore::new();
        let (a, b) = (ApiKey::generate(), ApiKey::generate());
        store.insert(StoredKey::new(&a, viewer("p")));
        let b_stored = StoredKey::new(&b, viewer("p"));
        store.replace_all(vec![b_stored.clone()]);
        assert!(matches!(
            store.authenticate(a.as_str()),
            Err(Error::InvalidKey)
        ));
        assert!(store.authenticate(b.as_str()).is_ok());
        assert_eq!(store.all(), vec![b_stored]);
    }

    #[test]
    fn clones_share_keys() {
        let store = KeyStore::new();
        let handle = store.clone();
        let key = ApiKey::generate();
        handle.insert(StoredKey::new(&key, viewer("p")));
        assert!(store.authenticate(key.as_str()).is_ok());
        assert_eq!(format!("{store:?}"), "KeyStore { keys: 1 }");
    }
}
