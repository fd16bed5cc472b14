//! Pinecone's REST control plane: `GET/POST /indexes`, `GET/PATCH/DELETE /indexes/{name}`,
//! and backups: `GET/POST /indexes/{name}/backups`, `GET /backups`, `GET/DELETE
//! /backups/{id}`, `POST /backups/{id}/create-index`, `GET /restore-jobs[/{id}]`.
//!
//! JSON in, one [`Indexes`] call, JSON out — in the shape the `X-Pinecone-Api-Version` header
//! asks for (see [`crate::json`], which holds the JSON ⇄ catalog conversions). Status codes are Pinecone's: 201 for create, 202 for
//! configure and delete, 201 for a backup, 202 for deleting a backup and creating an index
//! from one, 200 otherwise; errors are `{"error":{"code","message"},"status"}`,
//! mapped from the transport-neutral error class in [`RestError`]'s one `From` impl.
//! Endpoints Larch does not implement (collections, integrated inference) answer 501 with a
//! message, rather than 404.
//!
//! Each handler takes the caller's [`Principal`] (attached by [`require_key`]) and hands it to
//! [`Indexes`] with the decoded body, which works in the caller's project only and checks the
//! key's allow-list before anything else about the request (a refusal is 403
//! `PERMISSION_DENIED`, even for a body Larch would refuse).

use std::convert::Infallible;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use larch_auth::http::{HttpAuth, require_key};
use larch_auth::{KeyStore, Principal};
use larch_catalog::{CreateBackup, IndexRecord};
use larch_model::wire::{Dialect, HttpError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backups::{
    CreateBackupBody, CreateIndexFromBackupBody, PageRequest, backup_json, page_json,
    restore_job_json,
};
use crate::indexes::{ApiVersion, Failure, Indexes};
use crate::json::{ConfigureIndexBody, ConfigureIndexCall, CreateIndexBody, IndexList, IndexModel};

/// The request header naming the API version, and so the JSON shape.
pub const API_VERSION_HEADER: &str = "x-pinecone-api-version";

/// The REST routes of the control plane over `indexes`, behind `Api-Key` auth.
pub fn router(indexes: Indexes, keys: KeyStore) -> Router {
    Router::new()
        .route("/indexes", get(list_indexes).post(create_index))
        .route(
            "/indexes/{name}",
            get(describe_index)
                .patch(configure_index)
                .delete(delete_index),
        )
        .route("/indexes/create-for-model", post(not_implemented))
        .route(
            "/indexes/{name}/backups",
            get(list_index_backups).post(create_backup),
        )
        .route("/collections", any(not_implemented))
        .route("/collections/{name}", any(not_implemented))
        .route("/backups", get(list_backups))
        .route("/backups/{id}", get(describe_backup).delete(delete_backup))
        .route("/backups/{id}/create-index", post(create_index_from_backup))
        .route("/restore-jobs", get(list_restore_jobs))
        .route("/restore-jobs/{id}", get(describe_restore_job))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(indexes)
        .layer(axum::middleware::from_fn_with_state(
            HttpAuth::new(keys, render_error),
            require_key,
        ))
}

/// The answer for a path that is neither a REST route nor a gRPC method.
pub async fn not_found(request: Request) -> Response {
    RestError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!(
            "no route {} {}; the control plane serves /indexes and /indexes/{{name}}",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response()
}

async fn list_indexes(
    State(indexes): State<Indexes>,
    Caller(principal): Caller,
    Version(version): Version,
) -> Result<Response, RestError> {
    let records = indexes.list(&principal).await?;
    Ok(json(StatusCode::OK, &IndexList::new(records, version)))
}

async fn create_index(
    State(indexes): State<Indexes>,
    Caller(principal): Caller,
    Version(version): Version,
    Json(body): Json<CreateIndexBody>,
) -> Result<Response, RestError> {
    let record = indexes.create(&principal, body).await?;
    Ok(index(StatusCode::CREATED, record, version))
}

async fn describe_index(
    State(indexes): State<Indexes>,
    Caller(principal): Caller,
    Version(version): Version,
    Path(name): Path<String>,
) -> Result<Response, RestError> {
    let record = indexes.describe(&principal, &name).await?;
    Ok(index(StatusCode::OK, record, version))
}

async fn configure_index(
    State(indexes): State<Indexes>,
    Caller(principal): Caller,
    Version(version): Version,
    Path(name): Path<String>,
    Json(body): Json<ConfigureIndexBody>,
) -> Result<Response, RestError> {
    let call = ConfigureIndexCall { name, body };
    let record = indexes.configure(&principal, call).await?;
    Ok(index(StatusCode::ACCEPTED, record, version))
}

async fn delete_index(
    State(indexes): State<Indexes>,
    Caller(principal): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, RestError> {
    indexes.delete(&principal, &name).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn create_backup(
    State(indexes): State<Indexes>,
    Caller(principal): Caller,
    Version(version): Version,
    Path(index_name): Path<String>,
    Json(body): Json<CreateBackupBody>,
) -> Result<Response, RestError> {
    let CreateBackupBody { name, description } = body;
    let request = CreateBackup {
        index_name,
        name,
        description,
    };
    let backup = indexes.create_backup(&principal, request).await?;
    Ok(json(StatusCode::CREATED, &backup_json(&backup, version)))
}

async fn list_index_backups(
    State(indexes): State<Indexes>,
    Caller(principal): Caller,
    Version(version): Version,
    Path(index_name): Path<String>,
    Listing(page, include_deleted): Listing,
) -> Result<Response, RestError> {
    let (backups, next) = indexes
        .list_backups(&principal, Some(index_name), include_deleted, page)
        .await?;
    let data = backups.iter().map(|b| backup_json(b, version)).collect();
    Ok(json(StatusCode::OK, &page_json(data, next)))
}

async fn list_backups(
    State(indexes): State<Indexes>,
    Caller(principal): Caller,
    Version(version): Version,
    Listing(page, _): Listing,
) -> Result<Response, RestError> {
    let (backups, next) = indexes.list_backups(&principal, None, true, page).await?;
    let data = backups.iter().map(|b| backup_json(b, version)).collect();
    Ok(json(StatusCode::OK, &page_json(data, next)))
}

async fn describe_backup(
    State(indexes): State<Indexes>,
    Caller(principal): Caller,
    Version(version): Version,
    Path(id): Path<String>,
) -> Result<Response, RestError> {
    let backup = indexes.describe_backup(&principal, &id).await?;
    Ok(json(StatusCode::OK, &backup_json(&backup, version)))
}

async fn delete_backup(
    State(indexes): State<Indexes>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, RestError> {
    indexes.delete_backup(&principal, &id).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn create_index_from_backup(
    State(indexes): State<Indexes>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    Json(body): Json<CreateIndexFromBackupBody>,
) -> Result<Response, RestError> {
    let request = body.into_request(id)?;
    let (job, _) = indexes
        .create_index_from_backup(&principal, request)
        .await?;
    let answer = serde_json::json!({
        "restore_job_id": job.restore_job_id,
        "index_id": job.target_index_id,
    });
    Ok(json(StatusCode::ACCEPTED, &answer))
}

async fn list_restore_jobs(
    State(indexes): State<Indexes>,
    Caller(principal): Caller,
    Listing(page, _): Listing,
) -> Result<Response, RestError> {
    let (jobs, next) = indexes.list_restore_jobs(&principal, page).await?;
    let data = jobs.iter().map(restore_job_json).collect();
    Ok(json(StatusCode::OK, &page_json(data, next)))
}

async fn describe_restore_job(
    State(indexes): State<Indexes>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response, RestError> {
    let job = indexes.describe_restore_job(&principal, &id).await?;
    Ok(json(StatusCode::OK, &restore_job_json(&job)))
}

/// The query of a listing: `limit`, `paginationToken` (Pinecone's spelling; also
/// `pagination_token`) and `include_deleted`; other parameters are ignored.
struct Listing(PageRequest, bool);

impl<S: Send + Sync> FromRequestParts<S> for Listing {
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, RestError> {
        let invalid =
            |message: String| RestError::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message);
        let mut page = PageRequest::default();
        let mut include_deleted = false;
        for pair in parts.uri.query().unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8()
                .map_err(|_| invalid(format!("{key}: not percent-encoded UTF-8")))?
                .into_owned();
            match key {
                "limit" => {
                    let limit = value.parse().map_err(|_| {
                        invalid(format!("limit: {value:?} is not a number from 1 to 100"))
                    })?;
                    page.limit = Some(limit);
                }
                "paginationToken" | "pagination_token" => page.token = Some(value),
                "include_deleted" => include_deleted = value == "true",
                _ => {}
            }
        }
        Ok(Listing(page, include_deleted))
    }
}

async fn not_implemented(request: Request) -> RestError {
    RestError::new(
        StatusCode::NOT_IMPLEMENTED,
        "UNIMPLEMENTED",
        format!(
            "{} {} is not implemented by Larch: collections and integrated inference \
             (create-for-model) are not available; see the README's compatibility table",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn method_not_allowed(request: Request) -> RestError {
    RestError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "INVALID_ARGUMENT",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// The API version a request asks for ([`API_VERSION_HEADER`]), which chooses the JSON shape
/// of its answer.
struct Version(ApiVersion);

impl<S: Send + Sync> FromRequestParts<S> for Version {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let header = parts.headers.get(API_VERSION_HEADER);
        Ok(Version(ApiVersion::parse(
            header.and_then(|v| v.to_str().ok()),
        )))
    }
}

/// `record` as a JSON response in the shape of `version`.
fn index(status: StatusCode, record: IndexRecord, version: ApiVersion) -> Response {
    json(status, &IndexModel::new(record, version))
}

/// `value` as a JSON response.
fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(err) => RestError::from(Failure::TaskFailed(format!("cannot encode JSON: {err}")))
            .into_response(),
    }
}

/// A control-plane error response: `{"error":{"code","message"},"status"}`.
#[derive(Debug)]
pub struct RestError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl RestError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> RestError {
        RestError {
            status,
            code,
            message: message.into(),
        }
    }
}

/// Control-plane failures through the shared HTTP map ([`HttpError::of`]).
impl From<Failure> for RestError {
    fn from(err: Failure) -> RestError {
        RestError::from(HttpError::of(&err))
    }
}

impl From<HttpError> for RestError {
    fn from(err: HttpError) -> RestError {
        let HttpError {
            status,
            code,
            message,
            // The control plane sends no retry hints of its own.
            retry_after: _,
        } = err;
        RestError::new(status, code.name(), message)
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let RestError {
            status,
            code,
            message,
        } = self;
        let body = larch_model::wire::control_plane_body(status, code, &message);
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// Renders a refusal of the auth or limit layers in the control plane's error shape.
pub(crate) fn render_error(refused: HttpError) -> Response {
    refused.into_parts(Dialect::ControlPlane).into_response()
}

/// The authenticated caller, attached to the request by [`require_key`].
struct Caller(Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, RestError> {
        match parts.extensions.get::<Principal>() {
            Some(principal) => Ok(Caller(principal.clone())),
            None => {
                tracing::error!("request has no principal; is the route behind require_key?");
                Err(RestError::new(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHENTICATED",
                    "missing api key: send it in the 'Api-Key' header",
                ))
            }
        }
    }
}

/// A JSON request body. Unlike axum's own extractor it ignores `Content-Type` (curl users often
/// omit it) and answers in the control plane's error shape: 400 for text that is not JSON, 422
/// for JSON that does not fit the request type, as Pinecone does.
struct Json<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = RestError;

    async fn from_request(request: Request, state: &S) -> Result<Self, RestError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                RestError::new(
                    rejection.status(),
                    "INVALID_ARGUMENT",
                    rejection.body_text(),
                )
            })?;
        serde_json::from_slice(&bytes).map(Json).map_err(|err| {
            if err.is_data() {
                RestError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "UNPROCESSABLE_ENTITY",
                    format!("Failed to deserialize the JSON body into the target type: {err}"),
                )
            } else {
                RestError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    format!("Failed to parse the request body as JSON: {err}"),
                )
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indexes::testing::{OTHER, caller, indexes};
    use larch_auth::Grant;
    use serde_json::{Value, json};

    async fn body_of(response: Response) -> (StatusCode, Value) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn create_body(name: &str) -> Json<CreateIndexBody> {
        Json(
            serde_json::from_value(json!({
                "name": name,
                "dimension": 4,
                "spec": {"serverless": {"cloud": "aws", "region": "us-east-1"}}
            }))
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn a_denied_call_is_403_permission_denied_in_pinecones_shape() {
        let indexes = indexes();
        let restricted = caller(OTHER, Some(&["a"]));
        let refused = describe_index(
            State(indexes.clone()),
            Caller(restricted.clone()),
            Version(ApiVersion::Classic),
            Path("b".into()),
        )
        .await
        .unwrap_err();
        let (status, body) = body_of(refused.into_response()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body,
            json!({
                "error": {
                    "code": "PERMISSION_DENIED",
                    "message": "this API key is restricted to other indexes and may not use index 'b'"
                },
                "status": 403
            })
        );
        let refused = create_index(
            State(indexes.clone()),
            Caller(restricted.clone()),
            Version(ApiVersion::Classic),
            create_body("b"),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(refused.code, "PERMISSION_DENIED");
        let refused = delete_index(State(indexes.clone()), Caller(restricted), Path("b".into()))
            .await
            .unwrap_err();
        assert_eq!(refused.code, "PERMISSION_DENIED");
    }

    #[tokio::test]
    async fn a_key_is_authorized_for_the_index_before_its_body_is_validated() {
        let indexes = indexes();
        let pod = |name: &str| {
            Json(
                serde_json::from_value::<CreateIndexBody>(json!({
                    "name": name, "dimension": 4, "spec": {"pod": {"environment": "x"}}
                }))
                .unwrap(),
            )
        };
        let restricted = caller(OTHER, Some(&["a"]));
        let create = |principal: &Principal, body| {
            create_index(
                State(indexes.clone()),
                Caller(principal.clone()),
                Version(ApiVersion::Classic),
                body,
            )
        };
        let refused = create(&restricted, pod("b")).await.unwrap_err();
        assert_eq!(
            (refused.status, refused.code),
            (StatusCode::FORBIDDEN, "PERMISSION_DENIED")
        );
        let refused = create(&restricted, pod("a")).await.unwrap_err();
        assert_eq!(
            (refused.status, refused.code),
            (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT")
        );
        assert!(refused.message.starts_with("spec.pod: "), "{refused:?}");
        let configure = |name: &str| {
            configure_index(
                State(indexes.clone()),
                Caller(restricted.clone()),
                Version(ApiVersion::Classic),
                Path(name.into()),
                Json(serde_json::from_value(json!({"spec": {"pod": {}}})).unwrap()),
            )
        };
        let refused = configure("b").await.unwrap_err();
        assert_eq!(refused.code, "PERMISSION_DENIED");
        let refused = configure("a").await.unwrap_err();
        assert_eq!(refused.code, "INVALID_ARGUMENT");
    }

    #[tokio::test]
    async fn rest_calls_are_scoped_to_the_callers_project() {
        let indexes = indexes();
        let (mine, theirs) = (caller(Grant::DEFAULT_PROJECT, None), caller(OTHER, None));
        for (principal, name) in [(&mine, "a"), (&theirs, "a"), (&theirs, "b")] {
            let created = create_index(
                State(indexes.clone()),
                Caller(principal.clone()),
                Version(ApiVersion::Classic),
                create_body(name),
            )
            .await
            .unwrap();
            assert_eq!(created.status(), StatusCode::CREATED);
        }
        let list = |principal| {
            list_indexes(
                State(indexes.clone()),
                Caller(principal),
                Version(ApiVersion::Classic),
            )
        };
        let names = |body: Value| -> Vec<String> {
            body["indexes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|model| model["name"].as_str().unwrap().to_owned())
                .collect()
        };
        let (_, body) = body_of(list(mine.clone()).await.unwrap()).await;
        assert_eq!(names(body), ["a"]);
        let (_, body) = body_of(list(theirs.clone()).await.unwrap()).await;
        assert_eq!(names(body), ["a", "b"]);
        let (_, body) = body_of(list(caller(OTHER, Some(&["b"]))).await.unwrap()).await;
        assert_eq!(names(body), ["b"], "the allow-list filters the list");

        let missing = describe_index(
            State(indexes.clone()),
            Caller(mine.clone()),
            Version(ApiVersion::Classic),
            Path("b".into()),
        )
        .await
        .unwrap_err();
        let (status, body) = body_of(missing.into_response()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["message"], "index 'b' not found");
    }
}
