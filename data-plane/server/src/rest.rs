//! Pinecone's data-plane REST API, the twin of `VectorService` on the same port.
//!
//! JSON in ([`crate::json`]), one [`IndexHandle`] call with the same domain request the gRPC
//! handler decodes, JSON out: each handler is a `From`/`TryFrom` of its body (or query string,
//! `Params`), one facade call with the [`Caller`], and an [`Encoded`] answer. Errors have
//! the gRPC-gateway shape Pinecone's data plane uses, `{"code":3,"message":"…","details":[]}`
//! (a gRPC code and an HTTP status), from the shared map of errors
//! (`larch_model::wire`, [`Dialect::DataPlane`]). Every answer is serialised to JSON in the same pool job as its engine call
//! (see [`crate::api::FromAnswer`]), never on an async worker; answers with records (query,
//! fetch, fetch by metadata, list) are held to the answer budget. Writes (upsert, update,
//! delete) and queries send the index's log sequence number in Pinecone's headers
//! ([`REQUEST_LSN_HEADER`], [`MAX_INDEXED_LSN_HEADER`]). Integrated inference
//! (`/records/…`) and the documents API answer 501 with a message.
//!
//! Bulk imports (`/bulk/imports…`, see [`crate::import`]) are adapters over
//! [`crate::import::Imports`]: starting and cancelling are writes (DataPlaneEditor), listing
//! and describing reads, as the auth layer decides by method.
//!
//! | Route | gRPC twin |
//! |---|---|
//! | `POST /vectors/upsert` | `Upsert` |
//! | `POST /query` | `Query` |
//! | `GET /vectors/fetch?ids=a&ids=b&namespace=` | `Fetch` |
//! | `POST /vectors/fetch_by_metadata` | `FetchByMetadata` |
//! | `POST /vectors/delete` | `Delete` |
//! | `POST /vectors/update` | `Update` |
//! | `POST` (or `GET`) `/describe_index_stats` | `DescribeIndexStats` |
//! | `GET /vectors/list?namespace=&prefix=&limit=&paginationToken=` | `List` |
//! | `GET /namespaces?prefix=&limit=&paginationToken=`, `POST /namespaces` | `ListNamespaces`, `CreateNamespace` |
//! | `GET`, `DELETE /namespaces/{namespace}` | `DescribeNamespace`, `DeleteNamespace` |
//! | `POST`, `GET /bulk/imports?limit=&paginationToken=` | (REST only) start, list imports |
//! | `GET`, `DELETE /bulk/imports/{id}` | (REST only) describe, cancel an import |

use std::marker::PhantomData;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use larch_auth::http::{HttpAuth, require_key};
use larch_auth::{KeyStore, Principal, Scope};
use larch_engine::{FetchRequest, ListNamespacesRequest, ListRequest};
use larch_model::Code;
use larch_model::wire::{Dialect, HttpError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    API_VERSION_HEADER, Caller, DeleteNamespaceRequest, DescribeNamespaceRequest, FromAnswer,
    IndexHandle, MAX_INDEXED_LSN_HEADER, REQUEST_LSN_HEADER, Sequenced,
};
use crate::{import, json};

/// Largest JSON request body: generous next to Pinecone's 2 MB upsert limit, since JSON
/// numbers take several times the bytes of protobuf floats.
pub const MAX_JSON_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The REST routes of one index's data plane, behind `Api-Key` auth: requests act on the
/// index of `scope` (see [`larch_auth::Scope::Index`]).
pub fn router(index: IndexHandle, keys: KeyStore, scope: Scope) -> Router {
    router_forwarding(index, keys, scope, None)
}

/// [`router`]; with `forward`, an authorized write to an index this process follows goes to
/// its writer (see [`crate::forward`]).
pub fn router_forwarding(
    index: IndexHandle,
    keys: KeyStore,
    scope: Scope,
    forward: Option<crate::forward::Forwarder>,
) -> Router {
    let routes = Router::new()
        .route("/vectors/upsert", post(upsert))
        .route("/query", post(query))
        .route("/vectors/fetch", get(fetch))
        .route("/vectors/fetch_by_metadata", post(fetch_by_metadata))
        .route("/vectors/delete", post(delete))
        .route("/vectors/update", post(update))
        .route(
            "/describe_index_stats",
            post(describe_index_stats).get(describe_index_stats_get),
        )
        .route("/vectors/list", get(list))
        .route("/namespaces", get(list_namespaces).post(create_namespace))
        .route(
            "/namespaces/{namespace}",
            get(describe_namespace).delete(delete_namespace),
        )
        .route(
            "/records/namespaces/{namespace}/{op}",
            post(not_implemented),
        )
        .route("/bulk/imports", get(list_imports).post(start_import))
        .route(
            "/bulk/imports/{id}",
            get(describe_import).delete(cancel_import),
        )
        .route(
            "/namespaces/{namespace}/documents/{op}",
            post(not_implemented),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(index);
    let routes = match forward {
        Some(forward) => routes.layer(axum::middleware::from_fn_with_state(
            forward,
            crate::forward::forward_writes,
        )),
        None => routes,
    };
    routes
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            HttpAuth::scoped(keys, scope, render_error),
            require_key,
        ))
}

/// The answer for a path that is neither a REST route nor a gRPC method.
pub async fn not_found(request: Request) -> Response {
    RestError::new(
        StatusCode::NOT_FOUND,
        Code::NotFound,
        format!(
            "no route {} {}; see Pinecone's data-plane REST API (/vectors/upsert, /query, …)",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response()
}

async fn upsert(
    State(index): State<IndexHandle>,
    caller: Caller,
    Json(body): Json<json::UpsertBody>,
) -> Result<WithLsn<json::UpsertResponse>, RestError> {
    let answer = index.upsert(&caller, body.into()).await?;
    Ok(WithLsn::new(REQUEST_LSN_HEADER, answer))
}

async fn query(
    State(index): State<IndexHandle>,
    caller: Caller,
    Json(body): Json<json::QueryBody>,
) -> Result<WithLsn<json::QueryResponse>, RestError> {
    let answer = index.query(&caller, body.try_into()?).await?;
    Ok(WithLsn::new(MAX_INDEXED_LSN_HEADER, answer))
}

async fn fetch(
    State(index): State<IndexHandle>,
    caller: Caller,
    params: Params,
) -> Result<Encoded<json::FetchResponse>, RestError> {
    Ok(index.fetch(&caller, params.try_into()?).await?)
}

async fn fetch_by_metadata(
    State(index): State<IndexHandle>,
    caller: Caller,
    Json(body): Json<json::FetchByMetadataBody>,
) -> Result<Encoded<json::FetchByMetadataResponse>, RestError> {
    Ok(index.fetch_by_metadata(&caller, body.into()).await?)
}

async fn delete(
    State(index): State<IndexHandle>,
    caller: Caller,
    Json(body): Json<json::DeleteBody>,
) -> Result<WithLsn<json::Empty>, RestError> {
    let answer = index.delete(&caller, body.into()).await?;
    Ok(WithLsn::new(REQUEST_LSN_HEADER, answer))
}

async fn update(
    State(index): State<IndexHandle>,
    caller: Caller,
    Json(body): Json<json::UpdateBody>,
) -> Result<WithLsn<json::UpdateResponse>, RestError> {
    let answer = index.update(&caller, body.into()).await?;
    Ok(WithLsn::new(REQUEST_LSN_HEADER, answer))
}

async fn describe_index_stats(
    State(index): State<IndexHandle>,
    caller: Caller,
    Json(body): Json<json::DescribeIndexStatsBody>,
) -> Result<Encoded<json::DescribeIndexStatsResponse>, RestError> {
    Ok(index.describe_index_stats(&caller, body.into()).await?)
}

/// `GET /describe_index_stats`, the bodiless form older clients use.
async fn describe_index_stats_get(
    state: State<IndexHandle>,
    caller: Caller,
) -> Result<Encoded<json::DescribeIndexStatsResponse>, RestError> {
    describe_index_stats(state, caller, Json(json::DescribeIndexStatsBody::default())).await
}

async fn list(
    State(index): State<IndexHandle>,
    caller: Caller,
    params: Params,
) -> Result<Encoded<json::ListResponse>, RestError> {
    Ok(index.list(&caller, params.try_into()?).await?)
}

async fn list_namespaces(
    State(index): State<IndexHandle>,
    caller: Caller,
    params: Params,
) -> Result<Encoded<json::ListNamespacesResponse>, RestError> {
    Ok(index.list_namespaces(&caller, params.try_into()?).await?)
}

async fn create_namespace(
    State(index): State<IndexHandle>,
    caller: Caller,
    Json(body): Json<json::CreateNamespaceBody>,
) -> Result<Encoded<json::NamespaceDescription>, RestError> {
    Ok(index.create_namespace(&caller, body.into()).await?)
}

async fn describe_namespace(
    State(index): State<IndexHandle>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> Result<Encoded<json::NamespaceDescription>, RestError> {
    let request = DescribeNamespaceRequest { namespace };
    Ok(index.describe_namespace(&caller, request).await?)
}

async fn delete_namespace(
    State(index): State<IndexHandle>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> Result<Encoded<json::Empty>, RestError> {
    let request = DeleteNamespaceRequest { namespace };
    Ok(index.delete_namespace(&caller, request).await?)
}

async fn start_import(
    State(index): State<IndexHandle>,
    Json(body): Json<import::wire::StartImportRequest>,
) -> Result<Encoded<import::wire::StartImportResponse>, RestError> {
    let mode = body.error_mode().map_err(|message| {
        RestError::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, message)
    })?;
    let id = index.start_import(body.uri, mode).await?;
    Ok(Encoded::from_answer(import::wire::StartImportResponse {
        id,
    })?)
}

async fn list_imports(
    State(index): State<IndexHandle>,
    Params(pairs): Params,
) -> Result<Encoded<import::wire::ListImportsResponse>, RestError> {
    let mut limit = None;
    let mut token = None;
    for (key, value) in pairs {
        match key.as_str() {
            "limit" => limit = Some(parse_limit(&value)?),
            "paginationToken" | "pagination_token" => token = Some(value),
            _ => {}
        }
    }
    let (page, next) = index.list_imports(limit, token.as_deref())?;
    Ok(Encoded::from_answer(import::wire::ListImportsResponse {
        data: page.into_iter().map(Into::into).collect(),
        pagination: next.map(|next| import::wire::Pagination { next }),
    })?)
}

async fn describe_import(
    State(index): State<IndexHandle>,
    Path(id): Path<String>,
) -> Result<Encoded<import::wire::ImportModel>, RestError> {
    Ok(Encoded::from_answer(index.describe_import(&id)?)?)
}

async fn cancel_import(
    State(index): State<IndexHandle>,
    Path(id): Path<String>,
) -> Result<Encoded<json::Empty>, RestError> {
    index.cancel_import(&id)?;
    Ok(Encoded::from_answer(json::Empty {})?)
}

async fn not_implemented(request: Request) -> RestError {
    RestError::new(
        StatusCode::NOT_IMPLEMENTED,
        Code::Unimplemented,
        format!(
            "{} {} is not implemented by Larch: integrated inference (records upsert and \
             search) and the documents API are not available; upsert vectors with POST \
             /vectors/upsert (or bulk import Parquet with POST /bulk/imports) and search with \
             POST /query",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn method_not_allowed(request: Request) -> RestError {
    RestError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        Code::InvalidArgument,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// The caller of a REST request: the principal the auth layer attached and the API version
/// it sent.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, Self::Rejection> {
        Ok(Caller::new(
            parts.extensions.get::<Principal>(),
            parts
                .headers
                .get(API_VERSION_HEADER)
                .and_then(|v| v.to_str().ok()),
        ))
    }
}

/// The decoded `key=value` pairs of a request's query string, in order (`ids=a&ids=b` gives
/// two): the parameters of the `GET` routes.
struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Params, RestError> {
        query_pairs(parts.uri.query()).map(Params)
    }
}

/// `GET /vectors/fetch?ids=a&ids=b&namespace=`.
impl TryFrom<Params> for FetchRequest {
    type Error = RestError;

    fn try_from(Params(pairs): Params) -> Result<FetchRequest, RestError> {
        let mut request = FetchRequest::default();
        for (key, value) in pairs {
            match key.as_str() {
                "ids" => request.ids.push(value),
                "namespace" => request.namespace = value,
                _ => {}
            }
        }
        Ok(request)
    }
}

/// `GET /vectors/list?namespace=&prefix=&limit=&paginationToken=`.
impl TryFrom<Params> for ListRequest {
    type Error = RestError;

    fn try_from(Params(pairs): Params) -> Result<ListRequest, RestError> {
        let mut request = ListRequest::default();
        for (key, value) in pairs {
            match key.as_str() {
                "namespace" => request.namespace = value,
                "prefix" => request.prefix = Some(value),
                "limit" => request.limit = Some(parse_limit(&value)?),
                "paginationToken" | "pagination_token" => request.pagination_token = Some(value),
                _ => {}
            }
        }
        Ok(request)
    }
}

/// `GET /namespaces?prefix=&limit=&paginationToken=`.
impl TryFrom<Params> for ListNamespacesRequest {
    type Error = RestError;

    fn try_from(Params(pairs): Params) -> Result<ListNamespacesRequest, RestError> {
        let mut request = ListNamespacesRequest::default();
        for (key, value) in pairs {
            match key.as_str() {
                "prefix" => request.prefix = Some(value),
                "limit" => request.limit = Some(parse_limit(&value)?),
                "paginationToken" | "pagination_token" => request.pagination_token = Some(value),
                _ => {}
            }
        }
        Ok(request)
    }
}

/// The decoded `key=value` pairs of a query string, in order (`ids=a&ids=b` gives two).
fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, RestError> {
    let decode = |part: &str| {
        // Form encoding: '+' is a space; a literal '+' arrives as %2B.
        percent_encoding::percent_decode_str(&part.replace('+', " "))
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| {
                RestError::new(
                    StatusCode::BAD_REQUEST,
                    Code::InvalidArgument,
                    format!("query string: {part:?} is not percent-encoded UTF-8"),
                )
            })
    };
    raw.unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(key)?, decode(value)?))
        })
        .collect()
}

fn parse_limit(value: &str) -> Result<u32, RestError> {
    value.parse().map_err(|_| {
        RestError::new(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            format!("limit: must be a whole number, got {value:?}"),
        )
    })
}

/// A 200 answer: the JSON of the wire answer `W`, encoded by the facade on the thread that
/// ran the engine call (see [`FromAnswer`]).
pub struct Encoded<W> {
    body: Vec<u8>,
    wire: PhantomData<fn() -> W>,
}

impl<T, W> FromAnswer<T> for Encoded<W>
where
    W: From<T> + Serialize + 'static,
{
    fn from_answer(answer: T) -> larch_engine::Result<Self> {
        let body = serde_json::to_vec(&W::from(answer))
            .map_err(|err| larch_engine::Error::Internal(format!("cannot encode JSON: {err}")))?;
        Ok(Encoded {
            body,
            wire: PhantomData,
        })
    }
}

impl<W> IntoResponse for Encoded<W> {
    fn into_response(self) -> Response {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            self.body,
        )
            .into_response()
    }
}

/// A 200 answer with the index's log sequence number in one of Pinecone's LSN headers.
pub struct WithLsn<W> {
    header: &'static str,
    answer: Sequenced<Encoded<W>>,
}

impl<W> WithLsn<W> {
    /// `answer`, its LSN sent in `header`.
    fn new(header: &'static str, answer: Sequenced<Encoded<W>>) -> WithLsn<W> {
        WithLsn { header, answer }
    }
}

impl<W> IntoResponse for WithLsn<W> {
    fn into_response(self) -> Response {
        let Sequenced { answer, lsn } = self.answer;
        (
            [(HeaderName::from_static(self.header), HeaderValue::from(lsn))],
            answer,
        )
            .into_response()
    }
}

/// A data-plane error response in the gRPC-gateway shape: `{"code","message","details":[]}`.
#[derive(Debug)]
pub struct RestError {
    status: StatusCode,
    code: Code,
    message: String,
    /// Backpressure: sent as `Retry-After` (whole seconds, rounded up).
    retry_after: Option<std::time::Duration>,
}

impl RestError {
    fn new(status: StatusCode, code: Code, message: impl Into<String>) -> RestError {
        RestError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// Import errors through the shared HTTP map.
impl From<import::ImportError> for RestError {
    fn from(err: import::ImportError) -> RestError {
        RestError::from(HttpError::of(&err))
    }
}

/// Engine errors through the shared HTTP map ([`HttpError::of`]).
impl From<larch_engine::Error> for RestError {
    fn from(err: larch_engine::Error) -> RestError {
        RestError::from(HttpError::of(&err))
    }
}

impl From<HttpError> for RestError {
    fn from(err: HttpError) -> RestError {
        let HttpError {
            status,
            code,
            message,
            retry_after,
        } = err;
        RestError {
            status,
            code,
            message,
            retry_after,
        }
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let RestError {
            status,
            code,
            message,
            retry_after,
        } = self;
        HttpError {
            status,
            code,
            message,
            retry_after,
        }
        .into_parts(Dialect::DataPlane)
        .into_response()
    }
}

/// Renders a refusal of the auth or limit layers in the data plane's error shape.
pub(crate) fn render_error(refused: HttpError) -> Response {
    RestError::from(refused).into_response()
}

/// A JSON request body. Unlike axum's own extractor it ignores `Content-Type` and answers in
/// the data plane's error shape (400 `INVALID_ARGUMENT`, as Pinecone's gateway does). An empty
/// body reads as `{}`.
struct Json<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = RestError;

    async fn from_request(request: Request, state: &S) -> Result<Self, RestError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!("request body is larger than {MAX_JSON_BODY_BYTES} bytes")
                } else {
                    rejection.body_text()
                };
                RestError::new(status, Code::InvalidArgument, message)
            })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes).map(Json).map_err(|err| {
            RestError::new(
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                format!("invalid JSON body: {err}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_repeated_keys() {
        let pairs = query_pairs(Some("ids=a&ids=b%2Bc&namespace=my+ns&empty&x=")).unwrap();
        assert_eq!(
            pairs,
            [
                ("ids", "a"),
                ("ids", "b+c"),
                ("namespace", "my ns"),
                ("empty", ""),
                ("x", "")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert!(query_pairs(None).unwrap().is_empty());
        assert!(query_pairs(Some("ids=%ff")).is_err());
    }

    #[test]
    fn engine_errors_map_to_http_and_grpc_codes() {
        let cases = [
            (
                larch_engine::Error::InvalidArgument {
                    field: "topK".into(),
                    message: "x".into(),
                },
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
            ),
            (
                larch_engine::Error::NotFound("x".into()),
                StatusCode::NOT_FOUND,
                Code::NotFound,
            ),
            (
                larch_engine::Error::AlreadyExists("x".into()),
                StatusCode::CONFLICT,
                Code::AlreadyExists,
            ),
            (
                larch_engine::Error::Internal("secret detail".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
            ),
        ];
        for (err, status, code) in cases {
            let rest = RestError::from(err);
            assert_eq!((rest.status, rest.code), (status, code));
            assert!(!rest.message.contains("secret"));
        }
    }
}
