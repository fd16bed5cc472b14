//! What names an index: its [`IndexName`], its project ([`DEFAULT_PROJECT`],
//! [`check_project_id`]) and the [`IndexKey`] of both (with an optional [`Incarnation`]), which
//! both planes use — the control plane to keep its catalog, the data plane to name storage and
//! route requests.
//!
//! Every constructor validates; a refusal is an [`InvalidField`] naming the field.

use std::fmt;

use crate::{Classified, Code};

/// A value that is not a valid index name, project id or incarnation: `{field}: {message}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    /// The field, as the client wrote it (`name`, `project`, `incarnation`).
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl InvalidField {
    fn new(field: &'static str, message: impl Into<String>) -> InvalidField {
        InvalidField {
            field,
            message: message.into(),
        }
    }
}

impl Classified for InvalidField {
    fn code(&self) -> Code {
        Code::InvalidArgument
    }

    fn field(&self) -> Option<&str> {
        Some(self.field)
    }
}

/// Longest index name Pinecone accepts.
pub const MAX_INDEX_NAME_LEN: usize = 45;

/// An index name: 1–45 characters of `a-z`, `0-9` and `-`, not starting or ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IndexName(String);

impl IndexName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<IndexName, InvalidField> {
        let field = "name";
        if name.is_empty() {
            return Err(InvalidField::new(field, "index name is required"));
        }
        if name.len() > MAX_INDEX_NAME_LEN {
            return Err(InvalidField::new(
                field,
                format!(
                    "index name must be at most {MAX_INDEX_NAME_LEN} characters, got {}",
                    name.chars().count()
                ),
            ));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(InvalidField::new(
                field,
                format!(
                    "index name may contain only lowercase letters a-z, digits and '-', found {bad:?}"
                ),
            ));
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(InvalidField::new(
                field,
                "index name must not start or end with '-'",
            ));
        }
        Ok(IndexName(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IndexName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The project every index belonged to before projects existed, and the project of the
/// bootstrap admin key (the same id as `larch_auth::Grant::DEFAULT_PROJECT`).
pub const DEFAULT_PROJECT: &str = "default";

/// Longest project id accepted (ids are `"default"` or a UUID).
pub const MAX_PROJECT_ID_LEN: usize = 64;

/// Checks a project id: 1–64 characters, none of them `/`, `@` or whitespace — so that
/// `name@project` names one index's storage unambiguously and `project/name` reads clearly.
///
/// Project ids come from the auth crate, not from request bodies, so a bad one is a bug or a
/// damaged file rather than a typo; it is refused all the same.
pub fn check_project_id(project: &str) -> Result<(), InvalidField> {
    let field = "project";
    if project.is_empty() {
        return Err(InvalidField::new(field, "project id is required"));
    }
    if project.chars().count() > MAX_PROJECT_ID_LEN {
        return Err(InvalidField::new(
            field,
            format!("project id must be at most {MAX_PROJECT_ID_LEN} characters"),
        ));
    }
    if let Some(bad) = project
        .chars()
        .find(|c| matches!(c, '/' | '@') || c.is_whitespace() || c.is_control())
    {
        return Err(InvalidField::new(
            field,
            format!("project id must not contain {bad:?}"),
        ));
    }
    Ok(())
}

/// What identifies an index: its project and its name. Names are unique per project only, so
/// two projects may each have an index `movies`, with separate data and ports.
///
/// Ordered by project, then name. Displayed as `project/name`.
///
/// A key may also name one *incarnation* of the index (see [`Incarnation`]): the catalog looks
/// indexes up by project and name only, and hands the data plane keys with the incarnation,
/// which is part of the [storage name](IndexKey::storage_name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IndexKey {
    project: String,
    name: IndexName,
    incarnation: Option<Incarnation>,
}

/// Which creation of an index a record is: a short random id given at each CreateIndex and
/// part of the index's storage name, so an index deleted and created again under the same name
/// gets a fresh data directory and never sees the old data, even while the old data's removal
/// is still pending. Indexes created before incarnations existed have none (and keep their old
/// storage name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Incarnation(String);

impl Incarnation {
    /// Longest accepted incarnation id.
    const MAX_LEN: usize = 32;

    /// A fresh random incarnation: 16 lowercase hex digits (64 random bits).
    pub fn random() -> Incarnation {
        let mut bytes = [0u8; 8];
        // Only fails where the OS has no random source at all; a clock-derived id still keeps
        // one re-creation apart from the next.
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes = (nanos as u64).to_le_bytes();
        }
        Incarnation(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Checks a stored or received incarnation: 1 to 32 lowercase ASCII letters and digits.
    pub fn parse(id: &str) -> Result<Incarnation, InvalidField> {
        let valid = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(InvalidField::new(
                "incarnation",
                format!("'{id}' is not an incarnation id (1 to 32 lowercase letters and digits)"),
            ));
        }
        Ok(Incarnation(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl IndexKey {
    /// The index `name` of `project`; the project id is checked with [`check_project_id`].
    pub fn new(project: &str, name: IndexName) -> Result<IndexKey, InvalidField> {
        check_project_id(project)?;
        Ok(IndexKey {
            project: project.to_owned(),
            name,
            incarnation: None,
        })
    }

    /// The key of index `name` of `project`, incarnation `incarnation` (empty: none), as the
    /// planes send it to each other; every part is checked.
    pub fn parse(project: &str, name: &str, incarnation: &str) -> Result<IndexKey, InvalidField> {
        let incarnation = match incarnation {
            "" => None,
            id => Some(Incarnation::parse(id)?),
        };
        Ok(IndexKey::new(project, IndexName::new(name)?)?.with_incarnation(incarnation))
    }

    /// The key whose [storage name](IndexKey::storage_name) is `storage` (its inverse), e.g.
    /// to label an engine's index with its project and name; `None` if no key has it.
    pub fn from_storage_name(storage: &str) -> Option<IndexKey> {
        let mut parts = storage.split('@');
        let name = parts.next()?;
        let (project, incarnation) = match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => (DEFAULT_PROJECT, ""),
            (Some(project), None, _) => (project, ""),
            (Some(project), Some(incarnation), None) => (project, incarnation),
            _ => return None,
        };
        IndexKey::parse(project, name, incarnation).ok()
    }

    /// The incarnation as the planes send it: empty for none.
    pub fn incarnation_str(&self) -> &str {
        self.incarnation.as_ref().map_or("", Incarnation::as_str)
    }

    /// This key naming incarnation `incarnation` (`None`: an index from before incarnations).
    pub fn with_incarnation(mut self, incarnation: Option<Incarnation>) -> IndexKey {
        self.incarnation = incarnation;
        self
    }

    /// The incarnation this key names, if any.
    pub fn incarnation(&self) -> Option<&Incarnation> {
        self.incarnation.as_ref()
    }

    /// This key without an incarnation: how the catalog looks the index up.
    pub fn without_incarnation(&self) -> IndexKey {
        self.clone().with_incarnation(None)
    }

    /// The project owning the index.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The index name, unique within its project.
    pub fn name(&self) -> &IndexName {
        &self.name
    }

    /// The name the engine (and so the index's data directory) knows the index by:
    /// `name@project@incarnation` for a key with an [`Incarnation`]; for one without (indexes
    /// created before incarnations existed, whose data must be found unchanged) the bare name
    /// in the [`DEFAULT_PROJECT`] and `name@project` in any other. Index names, project ids and
    /// incarnations never contain `@`, so no two keys share a storage name.
    pub fn storage_name(&self) -> String {
        match &self.incarnation {
            Some(incarnation) => format!("{}@{}@{incarnation}", self.name, self.project),
            None if self.project == DEFAULT_PROJECT => self.name.to_string(),
            None => format!("{}@{}", self.name, self.project),
        }
    }
}

impl fmt::Display for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.project, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_follow_pinecone_rules() {
        assert!(IndexName::new("my-index-1").is_ok());
        assert!(IndexName::new(&"a".repeat(45)).is_ok());
        for bad in ["", "-a", "a-", "My", "a_b", "a.b", &"a".repeat(46)] {
            let err = IndexName::new(bad).unwrap_err();
            assert!(err.to_string().starts_with("name: "), "{bad:?}: {err}");
        }
    }

    #[test]
    fn storage_names_keep_the_default_project_bare() {
        let name = || IndexName::new("movies").unwrap();
        let default = IndexKey::new(DEFAULT_PROJECT, name()).unwrap();
        assert_eq!(
            default.storage_name(),
            "movies",
            "existing data dirs keep working"
        );
        assert_eq!(default.to_string(), "default/movies");
        let other = IndexKey::new("3f2b8c1e-7d4a-4e0b-9c6f-1a2b3c4d5e6f", name()).unwrap();
        assert_eq!(
            other.storage_name(),
            "movies@3f2b8c1e-7d4a-4e0b-9c6f-1a2b3c4d5e6f"
        );
        assert_eq!(other.project(), "3f2b8c1e-7d4a-4e0b-9c6f-1a2b3c4d5e6f");
        assert_eq!(other.name().as_str(), "movies");
        // A project literally named like a storage suffix still cannot collide: '@' is
        // refused in both parts.
        assert!(IndexKey::new("x@y", name()).is_err());
        assert!(IndexName::new("movies@x").is_err());
    }

    #[test]
    fn incarnations_give_each_creation_its_own_storage_name() {
        let key = IndexKey::new(DEFAULT_PROJECT, IndexName::new("movies").unwrap()).unwrap();
        let (first, second) = (Incarnation::random(), Incarnation::random());
        assert_ne!(first, second);
        assert_eq!(first.as_str().len(), 16);
        assert_eq!(Incarnation::parse(first.as_str()).unwrap(), first);
        let of = |incarnation: &Incarnation| {
            key.clone()
                .with_incarnation(Some(incarnation.clone()))
                .storage_name()
        };
        assert_eq!(of(&first), format!("movies@default@{first}"));
        assert_ne!(of(&first), of(&second));
        assert_ne!(of(&first), key.storage_name(), "apart from the old name");
        for storage in [of(&first), key.storage_name(), format!("movies@{}", "p-1")] {
            let parsed = IndexKey::from_storage_name(&storage).expect("a storage name");
            assert_eq!(parsed.storage_name(), storage);
        }
        assert_eq!(IndexKey::from_storage_name("a@b@c@d"), None);
        let with = key.clone().with_incarnation(Some(first));
        assert_eq!(with.without_incarnation(), key);
        assert_eq!(with.to_string(), "default/movies");
        for bad in ["", "ABC", "a@b", "a-b", &"a".repeat(33)] {
            assert!(Incarnation::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn project_ids_are_checked() {
        assert!(check_project_id("default").is_ok());
        assert!(check_project_id(&"p".repeat(MAX_PROJECT_ID_LEN)).is_ok());
        for bad in ["", "a/b", "a@b", "a b", "a\tb", "a\nb", &"p".repeat(65)] {
            let err = check_project_id(bad).unwrap_err();
            assert!(err.to_string().starts_with("project: "), "{bad:?}: {err}");
        }
    }
}
