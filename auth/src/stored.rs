//! [`StoredKey`]: what is kept of a key: its id, a salted hash of its secret, and its grant.
//!
//! # Why a fast salted hash (SHA-256) and not argon2/bcrypt
//!
//! Slow password hashes exist to protect *low-entropy* secrets: a human password can be
//! guessed from a dictionary, so each guess is made expensive. A generated key's secret is
//! 256 bits from the OS RNG; even a fast hash leaves 2^256 guesses, far beyond any attacker,
//! so slowness would buy nothing. It would cost a lot, though: every request is
//! authenticated, and argon2/bcrypt spend milliseconds of CPU per check by design. The
//! per-key random salt keeps equal secrets from producing equal hashes and rules out
//! precomputed tables across keys and installations.
//!
//! The one exception is an operator-chosen bootstrap key such as `pclocal`: it is only as
//! strong as the operator made it, which is why its documentation warns against short ones.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::key::{Presented, random_bytes};
use crate::{ApiKey, Grant, Principal, Timestamp};

/// Bytes of random salt per key.
const SALT_LEN: usize = 16;
/// Bytes of a SHA-256 digest.
const HASH_LEN: usize = 32;

/// What is stored for a key: never the key itself.
///
/// Serializes (salt and hash as lowercase hex) so that keys can be persisted:
///
/// ```json
/// {"key_id":"0123456789ab","salt":"…32 hex…","hash":"…64 hex…",
///  "grant":{"project_id":"default","roles":["ProjectEditor"],"index_names":null,"is_admin":true}}
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    /// Looks the key up; also the [`Principal::key_id`].
    key_id: String,
    /// Random per key, so equal secrets never give equal hashes.
    #[serde(with = "hex_array")]
    salt: [u8; SALT_LEN],
    /// SHA-256(salt || secret), where the secret is the `<secret>` part of a generated
    /// key, or the whole text of an operator-chosen key.
    #[serde(with = "hex_array")]
    hash: [u8; HASH_LEN],
    /// What the key may do.
    grant: Grant,
    /// A label for people (empty for keys stored before keys had names).
    #[serde(default)]
    name: String,
    /// When the key was made (absent in bootstrap files written before this was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<Timestamp>,
    /// When the key stops working; `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<Timestamp>,
}

impl StoredKey {
    /// Hashes `key` with a fresh random salt; the plaintext is not kept.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide random bytes for the salt.
    pub fn new(key: &ApiKey, grant: Grant) -> StoredKey {
        let presented = Presented::classify(key.as_str());
        let salt = random_bytes::<SALT_LEN>();
        StoredKey {
            key_id: presented.key_id().to_owned(),
            salt,
            hash: digest(&salt, presented.secret()),
            grant,
            name: String::new(),
            created_at: Some(Timestamp::now()),
            expires_at: None,
        }
    }

    /// The same key with a name for people.
    pub fn named(mut self, name: impl Into<String>) -> StoredKey {
        self.name = name.into();
        self
    }

    /// The same key, expiring at `at` (`None`: never).
    pub fn expiring(mut self, at: Option<Timestamp>) -> StoredKey {
        self.expires_at = at;
        self
    }

    /// The key's name for people.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When the key was made, if known.
    pub fn created_at(&self) -> Option<Timestamp> {
        self.created_at
    }

    /// When the key stops working, if ever.
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.expires_at
    }

    /// Replaces what the key may do (the admin API's update).
    pub(crate) fn set_grant(&mut self, grant: Grant) {
        self.grant = grant;
    }

    /// Renames the key.
    pub(crate) fn set_name(&mut self, name: String) {
        self.name = name;
    }

    /// The key id (not secret).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// What the key may do.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// The principal that authenticating with this key yields.
    pub fn principal(&self) -> Principal {
        Principal::new(self.key_id.clone(), self.grant.clone())
    }

    /// Whether `presented` (a full key as sent by a client) is this key.
    ///
    /// The hash comparison is constant-time, and the hash is computed even when the key id
    /// does not match, so the time taken does not depend on the secret.
    pub fn verify(&self, presented: &str) -> bool {
        self.verify_presented(Presented::classify(presented))
    }

    pub(crate) fn verify_presented(&self, presented: Presented<'_>) -> bool {
        let hash_matches = digest(&self.salt, presented.secret()).ct_eq(&self.hash);
        // Key ids are not secret, so comparing them in variable time reveals nothing.
        bool::from(hash_matches) && presented.key_id() == self.key_id
    }
}

/// Spends the same work as [`StoredKey::verify`] and always fails. Used when the key id is
/// unknown, so response times do not reveal which key ids exist.
pub(crate) fn verify_against_dummy(presented: Presented<'_>) -> bool {
    const DUMMY_SALT: [u8; SALT_LEN] = [0; SALT_LEN];
    const DUMMY_HASH: [u8; HASH_LEN] = [0; HASH_LEN];
    let matches = digest(&DUMMY_SALT, presented.secret()).ct_eq(&DUMMY_HASH);
    // Keep the comparison from being optimized away; the answer is "no" regardless.
    let _ = std::hint::black_box(bool::from(matches));
    false
}

fn digest(salt: &[u8; SALT_LEN], secret: &str) -> [u8; HASH_LEN] {
    Sha256::new()
        .chain_update(salt)
        .chain_update(secret.as_bytes())
        .finalize()
        .into()
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash is not the secret, but there is no reason to print it either.
        f.debug_struct("StoredKey")
            .field("key_id", &self.key_id)
            .field("grant", &self.grant)
            .field("name", &self.name)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Serde for fixed-size byte arrays as lowercase hex strings.
mod hex_array {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut bytes = [0u8; N];
        hex::decode_to_slice(&text, &mut bytes).map_err(|err| {
            D::Error::custom(format_args!("expected {} hex characters: {err}", 2 * N))
        })?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    fn viewer() -> Grant {
        Grant {
            project_id: "p1".into(),
            roles: vec![Role::DataPlaneViewer],
            index_names: Some(vec!["movies".into()]),
            is_admin: false,
        }
    }

    #[test]
    fn verify_accepts_only_the_right_key() {
        let key = ApiKey::generate();
        let stored = StoredKey::new(&key, viewer());
        assert_eq!(stored.key_id(), key.key_id());
        assert!(stored.verify(key.as_str()));

        // Same id, different secret.
        let secret = ApiKey::parse(key.as_str()).expect("well-formed").secret();
        let flipped = if secret.starts_with('0') { "1" } else { "0" };
        let wrong = format!("larch_{}_{flipped}{}", key.key_id(), &secret[1..]);
        assert!(!stored.verify(&wrong));
        // Another generated key.
        assert!(!stored.verify(ApiKey::generate().as_str()));
        // Right secret under another id.
        assert!(!stored.verify(&format!("larch_000000000000_{secret}")));
        // Truncated key, secret alone, nothing.
        let text = key.as_str();
        assert!(!stored.verify(&text[..text.len() - 1]));
        assert!(!stored.verify(secret));
        assert!(!stored.verify(""));
    }

    #[test]
    fn custom_key_hash_covers_the_whole_string() {
        let key = ApiKey::from_configured("pclocal").expect("valid");
        let stored = StoredKey::new(&key, Grant::admin());
        assert_eq!(stored.key_id(), "bootstrap");
        assert!(stored.verify("pclocal"));
        for wrong in ["pclocal2", "pcloca", "PCLOCAL", ""] {
            assert!(!stored.verify(wrong), "accepted {wrong:?}");
        }
    }

    #[test]
    fn same_key_hashes_differently_each_time() {
        let key = ApiKey::generate();
        let (a, b) = (
            StoredKey::new(&key, viewer()),
            StoredKey::new(&key, viewer()),
        );
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.hash, b.hash);
        assert!(a.verify(key.as_str()) && b.verify(key.as_str()));
    }

    #[test]
    fn serde_round_trip_keeps_the_key_working() {
        let key = ApiKey::generate();
        let stored = StoredKey::new(&key, viewer());
        let json = serde_json::to_string(&stored).expect("serializes");
        assert!(json.contains(&hex::encode(stored.hash)));
        assert!(!json.contains(ApiKey::parse(key.as_str()).expect("ok").secret()));
        let back: StoredKey = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, stored);
        assert!(back.verify(key.as_str()));
        assert_eq!(back.principal().roles, vec![Role::DataPlaneViewer]);
    }

    #[test]
    fn serde_rejects_bad_hex() {
        let json = r#"{"key_id":"bootstrap","salt":"zz","hash":"00",
            "grant":{"project_id":"default","roles":[],"index_names":null,"is_admin":false}}"#;
        assert!(serde_json::from_str::<StoredKey>(json).is_err());
    }

    #[test]
    fn debug_shows_neither_secret_nor_hash() {
        let key = ApiKey::generate();
        let stored = StoredKey::new(&key, viewer());
        let shown = format!("{stored:?}");
        assert!(!shown.contains(ApiKey::parse(key.as_str()).expect("ok").secret()));
        assert!(!shown.contains(&hex::encode(stored.hash)));
        assert!(shown.contains(key.key_id()));
    }

    #[test]
    fn dummy_verification_always_fails() {
        assert!(!verify_against_dummy(Presented::classify("anything")));
    }
}
