//! The one map of errors to gRPC statuses ([`grpc_status`]) and the one map to HTTP statuses
//! and error bodies per API dialect ([`http_error`]); every transport of both planes and of
//! auth answers errors through here.
//!
//! The README's "Errors and status codes" table lists both maps; a test here holds them to it.
//!
//! Both maps send a [`Classified::retry_after`] as a retry hint (`grpc-retry-pushback-ms`,
//! `Retry-After`), and log a [`Code::Internal`] error with its cause chain while the client
//! gets [`INTERNAL_MESSAGE`].
//!
//! Pinecone's two REST APIs shape errors differently, hence [`Dialect`]: the data plane answers
//! in the gRPC-gateway shape `{"code":3,"message":"…","details":[]}` (the gRPC code's number),
//! the control plane `{"error":{"code":"NOT_FOUND","message":"…"},"status":404}`.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use tonic::Status;

use crate::{Classified, Code};

/// What a client sees instead of the message of a [`Code::Internal`] error.
pub const INTERNAL_MESSAGE: &str = "internal error; see the server log";

/// Trailer (or trailers-only header) telling gRPC clients when to retry; Pinecone's clients
/// honour it.
pub const RETRY_PUSHBACK_HEADER: &str = "grpc-retry-pushback-ms";

/// The gRPC code of `code`.
pub fn grpc_code(code: Code) -> tonic::Code {
    match code {
        Code::InvalidArgument => tonic::Code::InvalidArgument,
        Code::NotFound => tonic::Code::NotFound,
        Code::AlreadyExists => tonic::Code::AlreadyExists,
        // gRPC has no "forbidden": deletion protection is a precondition of the delete.
        Code::FailedPrecondition | Code::Forbidden => tonic::Code::FailedPrecondition,
        Code::Unauthenticated => tonic::Code::Unauthenticated,
        Code::PermissionDenied => tonic::Code::PermissionDenied,
        Code::ResourceExhausted => tonic::Code::ResourceExhausted,
        Code::Unavailable => tonic::Code::Unavailable,
        Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        Code::Unimplemented => tonic::Code::Unimplemented,
        Code::Internal => tonic::Code::Internal,
    }
}

/// The class of a status another Larch process answered (split mode's internal calls), so its
/// error keeps its class here. Codes Larch never sends are [`Code::Internal`], except those
/// that mean the call did not get through ([`Code::Unavailable`]).
pub fn code_of_status(code: tonic::Code) -> Code {
    match code {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Code::InvalidArgument,
        tonic::Code::NotFound => Code::NotFound,
        tonic::Code::AlreadyExists => Code::AlreadyExists,
        tonic::Code::FailedPrecondition | tonic::Code::Aborted => Code::FailedPrecondition,
        tonic::Code::Unauthenticated => Code::Unauthenticated,
        tonic::Code::PermissionDenied => Code::PermissionDenied,
        tonic::Code::ResourceExhausted => Code::ResourceExhausted,
        tonic::Code::Unavailable | tonic::Code::Cancelled => Code::Unavailable,
        tonic::Code::DeadlineExceeded => Code::DeadlineExceeded,
        tonic::Code::Unimplemented => Code::Unimplemented,
        tonic::Code::Ok | tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::DataLoss => {
            Code::Internal
        }
    }
}

/// The HTTP status of `code`, the same on every REST API (Pinecone's documented statuses:
/// 412 for a failed precondition, 403 `FORBIDDEN` for deletion protection).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Forbidden | Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The message a client sees for `err`: its `Display`, except for an internal error, which is
/// logged (with its cause chain) and replaced by [`INTERNAL_MESSAGE`].
fn client_message(err: &(impl Classified + ?Sized)) -> String {
    if err.code() == Code::Internal {
        tracing::error!(error = %chain(err), "request failed");
        INTERNAL_MESSAGE.to_owned()
    } else {
        err.to_string()
    }
}

/// `err` and its sources, `outer: inner: …`.
fn chain(err: &(impl std::error::Error + ?Sized)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        // Transparent wrappers repeat their source's message; say it once.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// The gRPC status a client sees for `err`: the one gRPC map.
pub fn grpc_status(err: &(impl Classified + ?Sized)) -> Status {
    let mut status = Status::new(grpc_code(err.code()), client_message(err));
    if let Some(retry_after) = err.retry_after() {
        set_pushback(status.metadata_mut(), retry_after);
    }
    status
}

/// Tells a gRPC client to wait `retry_after` before retrying (`grpc-retry-pushback-ms`, whole
/// milliseconds).
pub fn set_pushback(metadata: &mut tonic::metadata::MetadataMap, retry_after: Duration) {
    let millis = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
    metadata.insert(RETRY_PUSHBACK_HEADER, millis.into());
}

/// Tells an HTTP client to wait `retry_after` before retrying (`Retry-After`, whole seconds,
/// rounded up).
pub fn set_retry_after(headers: &mut HeaderMap, retry_after: Duration) {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    headers.insert(header::RETRY_AFTER, seconds.into());
}

/// Which REST API answers: Pinecone's data plane and control plane shape errors differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `{"code":<gRPC code number>,"message":"…","details":[]}` (gRPC-gateway's shape).
    DataPlane,
    /// `{"error":{"code":"<CODE_NAME>","message":"…"},"status":<HTTP status>}`.
    ControlPlane,
}

/// An HTTP error answer before it is shaped by a [`Dialect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The response status.
    pub status: StatusCode,
    /// The class the body names.
    pub code: Code,
    /// The message for the client.
    pub message: String,
    /// Sent as `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl HttpError {
    /// The one HTTP map: the status of `err`'s code, its client message, its retry hint.
    pub fn of(err: &(impl Classified + ?Sized)) -> HttpError {
        HttpError {
            status: http_status(err.code()),
            code: err.code(),
            message: client_message(err),
            retry_after: err.retry_after(),
        }
    }

    /// A refusal of the HTTP layer itself whose status HTTP dictates (413 for a body too large,
    /// 408 for one that never came, 405 for a method), with the class its body names.
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The status, headers (content type, `Retry-After`) and JSON body of this error in
    /// `dialect`.
    pub fn into_parts(self, dialect: Dialect) -> (StatusCode, HeaderMap, Vec<u8>) {
        let HttpError {
            status,
            code,
            message,
            retry_after,
        } = self;
        let body = match dialect {
            Dialect::DataPlane => data_plane_body(grpc_code(code), &message),
            Dialect::ControlPlane => control_plane_body(status, code.name(), &message),
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(retry_after) = retry_after {
            set_retry_after(&mut headers, retry_after);
        }
        (status, headers, body)
    }
}

/// The status, headers and body a REST client of `dialect` sees for `err`: the one HTTP map
/// ([`HttpError::of`]) in the dialect's shape.
pub fn http_error(
    dialect: Dialect,
    err: &(impl Classified + ?Sized),
) -> (StatusCode, HeaderMap, Vec<u8>) {
    HttpError::of(err).into_parts(dialect)
}

/// The data plane's error body: `{"code":3,"message":"…","details":[]}`.
pub fn data_plane_body(code: tonic::Code, message: &str) -> Vec<u8> {
    format!(
        r#"{{"code":{},"message":{},"details":[]}}"#,
        code as i32,
        serde_json::Value::from(message)
    )
    .into_bytes()
}

/// The control plane's error body: `{"error":{"code":"NOT_FOUND","message":"…"},"status":404}`.
pub fn control_plane_body(status: StatusCode, code: &str, message: &str) -> Vec<u8> {
    format!(
        r#"{{"error":{{"code":{},"message":{}}},"status":{}}}"#,
        serde_json::Value::from(code),
        serde_json::Value::from(message),
        status.as_u16()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests;
