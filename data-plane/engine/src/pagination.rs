//! Opaque pagination tokens.
//!
//! A token is the hex encoding of a one-byte tag (what is being paged) and the
//! last key returned, so the next page resumes right after it even if records
//! were added or removed in between. The tag keeps a token of one endpoint
//! from being accepted by another and makes tokens never empty (the default
//! namespace's key is `""`).

use crate::{Error, Result};

/// What a token pages through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cursor {
    /// Record ids of `list`.
    Ids,
    /// Record ids of `fetch_by_metadata`.
    Metadata,
    /// Namespace names of `list_namespaces`.
    Namespaces,
}

impl Cursor {
    fn tag(self) -> u8 {
        match self {
            Cursor::Ids => b'i',
            Cursor::Metadata => b'm',
            Cursor::Namespaces => b'n',
        }
    }

    /// The token that resumes after `last`.
    pub(crate) fn encode(self, last: &str) -> String {
        let mut bytes = Vec::with_capacity(1 + last.len());
        bytes.push(self.tag());
        bytes.extend_from_slice(last.as_bytes());
        hex::encode(bytes)
    }

    /// The key a client's token resumes after; an absent or empty token means
    /// the first page.
    pub(crate) fn decode(self, token: Option<&str>) -> Result<Option<String>> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let invalid = || {
            Error::invalid(
                "pagination_token",
                "is not a valid token; pass the `next` token of the previous page",
            )
        };
        let bytes = hex::decode(token).map_err(|_| invalid())?;
        match bytes.split_first() {
            Some((tag, last)) if *tag == self.tag() => String::from_utf8(last.to_vec())
                .map(Some)
                .map_err(|_| invalid()),
            _ => Err(invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for key in ["", "a", "é/x y"] {
            let token = Cursor::Ids.encode(key);
            assert!(!token.is_empty());
            assert_eq!(
                Cursor::Ids.decode(Some(&token)).unwrap().as_deref(),
                Some(key)
            );
        }
        assert_eq!(Cursor::Namespaces.decode(None).unwrap(), None);
        assert_eq!(Cursor::Namespaces.decode(Some("")).unwrap(), None);
    }

    #[test]
    fn rejects_foreign_and_malformed_tokens() {
        let token = Cursor::Ids.encode("a");
        let err = Cursor::Namespaces.decode(Some(&token)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pagination_token: is not a valid token; pass the `next` token of the previous page"
        );
        assert!(Cursor::Ids.decode(Some("zz")).is_err());
        assert!(Cursor::Ids.decode(Some("69ff")).is_err()); // tag 'i' + invalid utf-8
    }
}
