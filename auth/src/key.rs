//! The API key format: [`ApiKey`] (a plaintext key) and [`ParsedKey`] (its parts).
//!
//! Generated keys look like `larch_<key-id>_<secret>`:
//!
//! - `key-id`: 12 lowercase hex characters (6 random bytes). Not secret: it names the key
//!   in logs and lets the verifier find the stored hash without trying every key.
//! - `secret`: 64 lowercase hex characters (32 bytes, 256 bits, from the OS RNG).
//!
//! Operators may also choose their own bootstrap key (e.g. `LARCH_API_KEY=pclocal`), which
//! need not follow the format. Such a key has the fixed key id [`BOOTSTRAP_KEY_ID`] and its
//! whole text is treated as the secret.

use std::fmt;

use crate::{Error, Result};

/// Every generated key starts with this prefix.
pub const KEY_PREFIX: &str = "larch_";

/// Key id of an operator-chosen key that does not follow the `larch_<id>_<secret>` format.
/// It cannot collide with a generated id (those are 12 hex characters).
pub const BOOTSTRAP_KEY_ID: &str = "bootstrap";

/// Random bytes in a key id (12 hex characters).
const KEY_ID_BYTES: usize = 6;
/// Random bytes in a secret (64 hex characters).
const SECRET_BYTES: usize = 32;

const FORMAT_HINT: &str = "expected larch_<12 lowercase hex key id>_<64 lowercase hex secret>";

/// A plaintext API key.
///
/// Its [`Debug`](fmt::Debug) output hides the secret (`ApiKey(larch_<id>_****)`), and it
/// deliberately has no `Display`, so it cannot end up in a log line by accident.
pub struct ApiKey(String);

impl ApiKey {
    /// Generates a fresh key: a random key id and a 256-bit secret from the OS RNG.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide random bytes, which means the system is
    /// broken; carrying on with weak keys would be worse.
    pub fn generate() -> ApiKey {
        let key_id = hex::encode(random_bytes::<KEY_ID_BYTES>());
        let secret = hex::encode(random_bytes::<SECRET_BYTES>());
        ApiKey(format!("{KEY_PREFIX}{key_id}_{secret}"))
    }

    /// Splits a `larch_<id>_<secret>` key into its parts, checking the format exactly.
    pub fn parse(s: &str) -> Result<ParsedKey<'_>> {
        let rest = s
            .strip_prefix(KEY_PREFIX)
            .ok_or(Error::Malformed("missing 'larch_' prefix"))?;
        let (key_id, secret) = rest.split_once('_').ok_or(Error::Malformed(FORMAT_HINT))?;
        if !is_lower_hex(key_id, 2 * KEY_ID_BYTES) || !is_lower_hex(secret, 2 * SECRET_BYTES) {
            return Err(Error::Malformed(FORMAT_HINT));
        }
        Ok(ParsedKey { key_id, secret })
    }

    /// Accepts an operator-chosen key, e.g. the value of `LARCH_API_KEY`.
    ///
    /// A well-formed `larch_<id>_<secret>` key keeps its id; any other string of at least
    /// one visible ASCII character becomes the key with id [`BOOTSTRAP_KEY_ID`]. Short or
    /// guessable strings such as `pclocal` are accepted for local development, but they are
    /// only as strong as they are long: use a generated key for anything reachable by others.
    ///
    /// Rejected: the empty string; spaces, control or non-ASCII characters (such a key
    /// could not be sent as `api-key` metadata); and strings that start with `larch_` but
    /// are not well-formed (almost always a truncated copy of a generated key).
    pub fn from_configured(s: &str) -> Result<ApiKey> {
        if s.starts_with(KEY_PREFIX) {
            ApiKey::parse(s)?;
        } else if s.is_empty() {
            return Err(Error::Malformed("must not be empty"));
        } else if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Malformed(
                "may contain only visible ASCII characters, without spaces",
            ));
        }
        Ok(ApiKey(s.to_owned()))
    }

    /// The key id: the `<id>` part of a generated key, or [`BOOTSTRAP_KEY_ID`].
    pub fn key_id(&self) -> &str {
        Presented::classify(&self.0).key_id()
    }

    /// The full plaintext key.
    ///
    /// Only for showing the key once to the person who created it (e.g. printing a freshly
    /// generated bootstrap key). Never log it or store it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match ApiKey::parse(&self.0) {
            Ok(parsed) => write!(f, "ApiKey({KEY_PREFIX}{}_****)", parsed.key_id),
            Err(_) => f.write_str("ApiKey(****)"),
        }
    }
}

/// The parts of a well-formed `larch_<id>_<secret>` key, borrowed from the key text.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    key_id: &'a str,
    secret: &'a str,
}

impl<'a> ParsedKey<'a> {
    /// The key id (12 lowercase hex characters).
    pub fn key_id(&self) -> &'a str {
        self.key_id
    }

    /// The secret (64 lowercase hex characters); only the verifier needs it.
    pub(crate) fn secret(&self) -> &'a str {
        self.secret
    }
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedKey")
            .field("key_id", &self.key_id)
            .field("secret", &"****")
            .finish()
    }
}

/// A presented key, classified the way the verifier looks it up.
#[derive(Clone, Copy)]
pub(crate) enum Presented<'a> {
    /// `larch_<id>_<secret>`: look up `id`, hash `secret`.
    Parsed(ParsedKey<'a>),
    /// Anything else: look up [`BOOTSTRAP_KEY_ID`], hash the whole string.
    Opaque(&'a str),
}

impl<'a> Presented<'a> {
    pub(crate) fn classify(s: &'a str) -> Presented<'a> {
        match ApiKey::parse(s) {
            Ok(parsed) => Presented::Parsed(parsed),
            Err(_) => Presented::Opaque(s),
        }
    }

    /// The id under which the stored hash is looked up.
    pub(crate) fn key_id(&self) -> &'a str {
        match self {
            Presented::Parsed(parsed) => parsed.key_id(),
            Presented::Opaque(_) => BOOTSTRAP_KEY_ID,
        }
    }

    /// The text covered by the stored hash.
    pub(crate) fn secret(&self) -> &'a str {
        match self {
            Presented::Parsed(parsed) => parsed.secret(),
            Presented::Opaque(whole) => whole,
        }
    }
}

/// `N` bytes from the operating system's RNG.
///
/// # Panics
///
/// If the OS RNG fails. On the platforms Larch supports that means the system is broken
/// (e.g. `getrandom(2)` unavailable), and carrying on with weak keys would be worse.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
    bytes
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_parses_back_into_its_parts() {
        let key = ApiKey::generate();
        let parsed = ApiKey::parse(key.as_str()).expect("generated keys are well-formed");
        assert_eq!(parsed.key_id().len(), 12);
        assert_eq!(parsed.secret().len(), 64);
        assert_eq!(
            key.as_str(),
            format!("larch_{}_{}", parsed.key_id(), parsed.secret())
        );
        assert_eq!(key.key_id(), parsed.key_id());
    }

    #[test]
    fn generated_secrets_differ_and_are_64_lowercase_hex_chars() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        let (pa, pb) = (
            ApiKey::parse(a.as_str()).expect("well-formed"),
            ApiKey::parse(b.as_str()).expect("well-formed"),
        );
        assert_ne!(pa.secret(), pb.secret());
        assert_ne!(pa.key_id(), pb.key_id());
        for secret in [pa.secret(), pb.secret()] {
            assert_eq!(secret.len(), 64);
            assert!(is_lower_hex(secret, 64));
        }
    }

    #[test]
    fn parse_rejects_near_misses() {
        let id = "0123456789ab";
        let secret = "f".repeat(64);
        assert!(ApiKey::parse(&format!("larch_{id}_{secret}")).is_ok());
        for bad in [
            format!("larch_{id}{secret}"),                   // no separator
            format!("larch_{id}_{}", &secret[1..]),          // truncated secret
            format!("larch_{}_{secret}", &id[1..]),          // short id
            format!("larch_{}_{secret}", id.to_uppercase()), // uppercase id
            format!("larch_{id}_{}", secret.to_uppercase()), // uppercase secret
            format!("larch_{id}_{secret}_"),                 // trailing junk
            format!("LARCH_{id}_{secret}"),                  // wrong prefix
            format!("pcsk_{id}_{secret}"),                   // someone else's key
            String::new(),
        ] {
            assert!(
                matches!(ApiKey::parse(&bad), Err(Error::Malformed(_))),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn configured_keys_follow_the_documented_rules() {
        let custom = ApiKey::from_configured("pclocal").expect("any visible ascii");
        assert_eq!(custom.key_id(), BOOTSTRAP_KEY_ID);
        assert_eq!(custom.as_str(), "pclocal");
        assert_eq!(
            ApiKey::from_configured("x").expect("one char").key_id(),
            BOOTSTRAP_KEY_ID
        );

        let generated = ApiKey::generate();
        let configured = ApiKey::from_configured(generated.as_str()).expect("well-formed");
        assert_eq!(configured.key_id(), generated.key_id());

        for bad in ["", "has space", "tab\t", "naïve", "larch_truncated"] {
            assert!(
                matches!(ApiKey::from_configured(bad), Err(Error::Malformed(_))),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = ApiKey::generate();
        let parsed = ApiKey::parse(key.as_str()).expect("well-formed");
        let shown = format!("{key:?} {parsed:?} {key:#?} {parsed:#?}");
        assert!(!shown.contains(parsed.secret()), "{shown}");
        assert!(shown.contains(&format!("ApiKey(larch_{}_****)", parsed.key_id())));

        let custom = ApiKey::from_configured("pclocal").expect("valid");
        assert_eq!(format!("{custom:?}"), "ApiKey(****)");
    }

    #[test]
    fn presented_keys_are_classified_by_format() {
        let key = ApiKey::generate();
        let presented = Presented::classify(key.as_str());
        assert_eq!(presented.key_id(), key.key_id());
        assert_eq!(presented.secret().len(), 64);

        let opaque = Presented::classify("pclocal");
        assert_eq!(opaque.key_id(), BOOTSTRAP_KEY_ID);
        assert_eq!(opaque.secret(), "pclocal");
    }
}
