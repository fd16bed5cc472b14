//! Types and the error vocabulary every Larch crate shares, so the crate graph reads bottom-up:
//! the engine, the catalog, auth and both planes depend on this crate, and it on none of them.
//!
//! # Errors
//! Every crate's error says what kind of failure it is with one [`Code`], through the
//! [`Classified`] trait; its `Display` is the message a client sees (for [`Code::Internal`] the
//! message is for the server log only). An error that crosses a crate or process boundary keeps
//! its class: wrap it (`#[from]`, `#[source]`, or a [`Cause`]) instead of turning it into a
//! string, so a full disk is `RESOURCE_EXHAUSTED` at the edge wherever it happened.
//!
//! The transports turn a [`Classified`] error into a status in one place each: [`wire`]
//! (feature `wire`, which pulls in tonic and http; the engine builds without it).
//!
//! # Layout
//! - this file: [`Code`], [`Classified`], [`Cause`].
//! - [`index`]: what names an index ([`IndexName`], [`IndexKey`], [`DEFAULT_PROJECT`]), shared by
//!   both planes.
//! - [`host`]: what the catalog and a data plane say about serving an index ([`AttachMode`],
//!   [`AttachError`], [`HostError`]).
//! - [`wire`] (feature `wire`): [`wire::grpc_status`] and [`wire::http_error`], the one gRPC
//!   map and the one HTTP map per API dialect.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub mod host;
pub mod index;
#[cfg(feature = "wire")]
pub mod wire;

pub use host::{AttachError, AttachMode, HostError};
pub use index::{DEFAULT_PROJECT, Incarnation, IndexKey, IndexName, InvalidField};

/// What kind of failure an error is: the one vocabulary of every crate. Each transport maps it
/// exhaustively to its own status in [`wire`]; the table in the README ("Errors and status
/// codes") lists both maps, and a test holds them to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// The request is malformed or breaks a limit; [`Classified::field`] names the field.
    InvalidArgument,
    /// The index, namespace, vector, key or project does not exist (or is not the caller's).
    NotFound,
    /// The index, namespace or project already exists.
    AlreadyExists,
    /// The request is valid but the current state does not allow it.
    FailedPrecondition,
    /// The resource's own settings refuse the request: deleting an index under deletion
    /// protection. gRPC calls it a failed precondition; Pinecone's REST API answers 403
    /// `FORBIDDEN`.
    Forbidden,
    /// No API key, or one that is malformed, unknown, revoked or expired.
    Unauthenticated,
    /// A valid key without the role (or outside its index allow-list) for this request.
    PermissionDenied,
    /// A quota, a rate limit, backpressure or a full disk; [`Classified::retry_after`] says
    /// when to retry where it is known.
    ResourceExhausted,
    /// Not serving now (draining, recovering, storage failing, a peer unreachable); retrying
    /// later may succeed.
    Unavailable,
    /// The request ran out of time.
    DeadlineExceeded,
    /// The API exists in Pinecone but Larch does not implement it.
    Unimplemented,
    /// A bug or a broken invariant; the message is not for clients.
    Internal,
}

impl Code {
    /// Every code, in the order of the README's table.
    pub const ALL: [Code; 12] = [
        Code::InvalidArgument,
        Code::NotFound,
        Code::AlreadyExists,
        Code::FailedPrecondition,
        Code::Forbidden,
        Code::Unauthenticated,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::Unavailable,
        Code::DeadlineExceeded,
        Code::Unimplemented,
        Code::Internal,
    ];

    /// The class of a failed disk or file operation: [`Code::ResourceExhausted`] when the disk
    /// or the user's quota is full (freeing space fixes it), [`Code::Unavailable`] otherwise
    /// (a read-only, failing or missing disk).
    pub fn of_io(err: &std::io::Error) -> Code {
        match err.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Code::ResourceExhausted
            }
            _ => Code::Unavailable,
        }
    }

    /// The code's name as the control plane's REST errors spell it (`INVALID_ARGUMENT`, …),
    /// also used in logs.
    pub fn name(self) -> &'static str {
        match self {
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Forbidden => "FORBIDDEN",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::Unavailable => "UNAVAILABLE",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error that says what kind of failure it is. Every crate's error implements it; the
/// transports map it in [`wire`] and never look at messages.
///
/// `Display` is the message the client sees, except for [`Code::Internal`], whose message
/// (and cause chain) goes to the server log while the client gets a generic one.
pub trait Classified: std::error::Error {
    /// What kind of failure this is.
    fn code(&self) -> Code;

    /// How long the client should wait before retrying (backpressure, a rate limit); sent as
    /// gRPC's `grpc-retry-pushback-ms` and HTTP's `Retry-After`.
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// The offending request field of a [`Code::InvalidArgument`], as the client wrote it.
    fn field(&self) -> Option<&str> {
        None
    }
}

/// An error of another crate or process kept with its class, for error types that cannot name
/// the crate it came from (the catalog's view of a data plane, which may be in-process or
/// remote). Clones share the error.
#[derive(Clone)]
pub struct Cause(Arc<dyn Classified + Send + Sync>);

impl Cause {
    /// Wraps `err`, keeping its type, code and source chain.
    pub fn new(err: impl Classified + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(err))
    }

    /// An error known only by its class and message: a status another process answered, or
    /// a refusal made on the spot by a layer that has no error type of its own.
    pub fn from_parts(code: Code, message: impl Into<String>) -> Cause {
        Cause::new(Remote {
            code,
            message: message.into(),
        })
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Classified for Cause {
    fn code(&self) -> Code {
        self.0.code()
    }

    fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after()
    }

    fn field(&self) -> Option<&str> {
        self.0.field()
    }
}

/// A refusal known only by its code and message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Remote {
    code: Code,
    message: String,
}

impl Classified for Remote {
    fn code(&self) -> Code {
        self.code
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_full_disk_is_resource_exhausted_and_other_io_failures_unavailable() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            super::Code::of_io(&Error::from(ErrorKind::StorageFull)),
            super::Code::ResourceExhausted
        );
        assert_eq!(
            super::Code::of_io(&Error::from(ErrorKind::QuotaExceeded)),
            super::Code::ResourceExhausted
        );
        assert_eq!(
            super::Code::of_io(&Error::from(ErrorKind::ReadOnlyFilesystem)),
            super::Code::Unavailable
        );
    }

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("disk full: cannot write")]
    struct DiskFull;

    impl Classified for DiskFull {
        fn code(&self) -> Code {
            Code::ResourceExhausted
        }
        fn retry_after(&self) -> Option<Duration> {
            Some(Duration::from_secs(2))
        }
    }

    #[test]
    fn a_cause_keeps_the_class_and_message_of_what_it_wraps() {
        let cause = Cause::new(DiskFull);
        assert_eq!(cause.code(), Code::ResourceExhausted);
        assert_eq!(cause.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(cause.to_string(), "disk full: cannot write");
        let remote = Cause::from_parts(Code::NotFound, "index 'x' not found");
        assert_eq!(remote.code(), Code::NotFound);
        assert_eq!(remote.retry_after(), None);
        assert_eq!(remote.to_string(), "index 'x' not found");
    }

    #[test]
    fn names_are_distinct() {
        let names: std::collections::HashSet<_> = Code::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Code::ALL.len());
    }
}
