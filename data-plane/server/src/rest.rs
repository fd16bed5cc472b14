//! Pinecone's data-plane REST API, the twin of `VectorService` on the same port.
//!
//! JSON in ([`crate::json`]), one [`IndexHandle`] call with the same engine request struct the
//! gRPC handler builds, JSON out. Errors have the gRPC-gateway shape Pinecone's data plane
//! uses, `{"code":3,"message":"…","details":[]}` (a gRPC code and an HTTP status), from the
//! shared map of errors (`larch_model::wire`, [`Dialect::DataPlane`]). Answers with records (query,
//! fetch, fetch by metadata, list) are held to the answer budget and serialised to JSON in the
//! same query-pool job as their engine call, never on an async worker. Integrated inference
//! (`/records/…`), bulk imports and the documents API answer 501 with a message.
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

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use larch_auth::http::{HttpAuth, require_key};
use larch_auth::{KeyStore, Principal, Scope};
use larch_engine::{
    DeleteRequest, FetchByMetadataRequest, FetchRequest, ListNamespacesRequest, ListRequest,
    NamespaceInfo, QueryRequest, Record, ScoredRecord, UpdateRequest, UpsertRequest, VectorInput,
};
use larch_model::Code;
use larch_model::wire::{Dialect, HttpError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    API_VERSION_HEADER, IndexHandle, VECTOR_TYPE, declared_fields, default_namespace_name,
    display_namespace, refuse_batch_queries,
};
use crate::json::{self, metadata};

/// Largest JSON request body: generous next to Pinecone's 2 MB upsert limit, since JSON
/// numbers take several times the bytes of protobuf floats.
pub const MAX_JSON_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The REST routes of one index's data plane, behind `Api-Key` auth: requests act on the
/// index of `scope` (see [`larch_auth::Scope::Index`]).
pub fn router(index: IndexHandle, keys: KeyStore, scope: Scope) -> Router {
    Router::new()
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
        .route("/bulk/imports", get(not_implemented).post(not_implemented))
        .route(
            "/bulk/imports/{id}",
            get(not_implemented).delete(not_implemented),
        )
        .route(
            "/namespaces/{namespace}/documents/{op}",
            post(not_implemented),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(index)
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
    Json(body): Json<json::UpsertBody>,
) -> Result<Response, RestError> {
    let json::UpsertBody { vectors, namespace } = body;
    let vectors = vectors
        .unwrap_or_default()
        .into_iter()
        .map(|vector| {
            let json::VectorBody {
                id,
                values,
                sparse_values,
                metadata,
            } = vector;
            VectorInput {
                id: id.unwrap_or_default(),
                values: values.unwrap_or_default(),
                sparse_values: sparse_values.map(Into::into),
                metadata,
            }
        })
        .collect();
    let namespace = namespace.unwrap_or_default();
    let upserted_count = index
        .run(move |index| index.upsert(UpsertRequest { namespace, vectors }))
        .await?;
    Ok(ok(&json::UpsertResponse { upserted_count }))
}

async fn query(
    State(index): State<IndexHandle>,
    principal: Option<Extension<Principal>>,
    Json(body): Json<json::QueryBody>,
) -> Result<Response, RestError> {
    let json::QueryBody {
        namespace,
        top_k,
        filter,
        include_values,
        include_metadata,
        queries,
        vector,
        sparse_vector,
        id,
        // Tuning knobs of Pinecone's dedicated read nodes; exact search needs neither.
        scan_factor: _,
        max_candidates: _,
    } = body;
    refuse_batch_queries(queries.map_or(0, |q| q.len()))?;
    let request = QueryRequest {
        namespace: namespace.unwrap_or_default(),
        top_k: top_k.unwrap_or_default(),
        filter,
        include_values: include_values.unwrap_or_default(),
        include_metadata: include_metadata.unwrap_or_default(),
        vector: vector.unwrap_or_default(),
        sparse_vector: sparse_vector.map(Into::into),
        id: id.unwrap_or_default(),
    };
    let budget = index.answer_budget();
    // Encoded on the query pool with the engine call: a large answer's JSON is CPU work that
    // must not hold up an async worker.
    let body = index
        .query(key_id(principal.as_ref()), move |index| {
            let response = index.query_within(request, budget)?;
            let matches = response
                .matches
                .into_iter()
                .map(|scored| {
                    let ScoredRecord {
                        id,
                        score,
                        values,
                        sparse_values,
                        metadata: stored,
                    } = scored;
                    json::ScoredVector {
                        id,
                        score,
                        values,
                        sparse_values: sparse_values.map(Into::into),
                        metadata: metadata(stored),
                    }
                })
                .collect();
            encode(&json::QueryResponse {
                matches,
                namespace: response.namespace,
            })
        })
        .await?;
    Ok(ok_encoded(body))
}

async fn fetch(
    State(index): State<IndexHandle>,
    RawQuery(raw): RawQuery,
) -> Result<Response, RestError> {
    let mut request = FetchRequest::default();
    for (key, value) in query_pairs(raw.as_deref())? {
        match key.as_str() {
            "ids" => request.ids.push(value),
            "namespace" => request.namespace = value,
            _ => {}
        }
    }
    let budget = index.answer_budget();
    let body = index
        .read(move |index| {
            let response = index.fetch_within(request, budget)?;
            encode(&json::FetchResponse {
                vectors: vector_map(response.vectors),
                namespace: response.namespace,
            })
        })
        .await?;
    Ok(ok_encoded(body))
}

async fn fetch_by_metadata(
    State(index): State<IndexHandle>,
    principal: Option<Extension<Principal>>,
    Json(body): Json<json::FetchByMetadataBody>,
) -> Result<Response, RestError> {
    let json::FetchByMetadataBody {
        namespace,
        filter,
        limit,
        pagination_token,
    } = body;
    let request = FetchByMetadataRequest {
        namespace: namespace.unwrap_or_default(),
        filter,
        limit,
        pagination_token,
    };
    let budget = index.answer_budget();
    let body = index
        .query(key_id(principal.as_ref()), move |index| {
            let response = index.fetch_by_metadata_within(request, budget)?;
            encode(&json::FetchByMetadataResponse {
                vectors: vector_map(response.vectors),
                namespace: response.namespace,
                pagination: pagination(response.next),
            })
        })
        .await?;
    Ok(ok_encoded(body))
}

async fn delete(
    State(index): State<IndexHandle>,
    Json(body): Json<json::DeleteBody>,
) -> Result<Response, RestError> {
    let json::DeleteBody {
        ids,
        delete_all,
        namespace,
        filter,
    } = body;
    let request = DeleteRequest {
        namespace: namespace.unwrap_or_default(),
        ids: ids.unwrap_or_default(),
        delete_all: delete_all.unwrap_or_default(),
        filter,
    };
    index.run(move |index| index.delete(request)).await?;
    Ok(ok(&serde_json::Map::new()))
}

async fn update(
    State(index): State<IndexHandle>,
    Json(body): Json<json::UpdateBody>,
) -> Result<Response, RestError> {
    let json::UpdateBody {
        id,
        values,
        sparse_values,
        set_metadata,
        namespace,
        filter,
        dry_run,
    } = body;
    let request = UpdateRequest {
        namespace: namespace.unwrap_or_default(),
        id: id.unwrap_or_default(),
        values: values.unwrap_or_default(),
        sparse_values: sparse_values.map(Into::into),
        set_metadata,
        filter,
        dry_run: dry_run.unwrap_or_default(),
    };
    let matched_records = index.run(move |index| index.update(request)).await?;
    Ok(ok(&json::UpdateResponse { matched_records }))
}

async fn describe_index_stats(
    State(index): State<IndexHandle>,
    headers: HeaderMap,
    Json(body): Json<json::DescribeIndexStatsBody>,
) -> Result<Response, RestError> {
    let json::DescribeIndexStatsBody { filter } = body;
    let default_name = default_namespace(&headers);
    let stats = index
        .read(move |index| index.describe_stats(filter))
        .await?;
    let namespaces = stats
        .namespaces
        .into_iter()
        .map(|(name, vector_count)| {
            (
                display_namespace(name, default_name),
                json::NamespaceSummary { vector_count },
            )
        })
        .collect();
    Ok(ok(&json::DescribeIndexStatsResponse {
        namespaces,
        dimension: stats.dimension.get(),
        index_fullness: 0.0,
        total_vector_count: stats.total_vector_count,
        metric: stats.metric.to_string(),
        vector_type: VECTOR_TYPE,
    }))
}

/// `GET /describe_index_stats`, the bodiless form older clients use.
async fn describe_index_stats_get(
    state: State<IndexHandle>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    describe_index_stats(
        state,
        headers,
        Json(json::DescribeIndexStatsBody::default()),
    )
    .await
}

async fn list(
    State(index): State<IndexHandle>,
    RawQuery(raw): RawQuery,
) -> Result<Response, RestError> {
    let mut request = ListRequest::default();
    for (key, value) in query_pairs(raw.as_deref())? {
        match key.as_str() {
            "namespace" => request.namespace = value,
            "prefix" => request.prefix = Some(value),
            "limit" => request.limit = Some(parse_limit(&value)?),
            "paginationToken" | "pagination_token" => request.pagination_token = Some(value),
            _ => {}
        }
    }
    let budget = index.answer_budget();
    let body = index
        .read(move |index| {
            let response = index.list_within(request, budget)?;
            encode(&json::ListResponse {
                vectors: response
                    .ids
                    .into_iter()
                    .map(|id| json::ListItem { id })
                    .collect(),
                pagination: pagination(response.next),
                namespace: response.namespace,
            })
        })
        .await?;
    Ok(ok_encoded(body))
}

async fn list_namespaces(
    State(index): State<IndexHandle>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, RestError> {
    let mut request = ListNamespacesRequest::default();
    for (key, value) in query_pairs(raw.as_deref())? {
        match key.as_str() {
            "prefix" => request.prefix = Some(value),
            "limit" => request.limit = Some(parse_limit(&value)?),
            "paginationToken" | "pagination_token" => request.pagination_token = Some(value),
            _ => {}
        }
    }
    let default_name = default_namespace(&headers);
    let response = index
        .read(move |index| index.list_namespaces(request))
        .await?;
    Ok(ok(&json::ListNamespacesResponse {
        namespaces: response
            .namespaces
            .into_iter()
            .map(|info| namespace_description(info, default_name))
            .collect(),
        pagination: pagination(response.next),
        total_count: response.total_count,
    }))
}

async fn create_namespace(
    State(index): State<IndexHandle>,
    headers: HeaderMap,
    Json(body): Json<json::CreateNamespaceBody>,
) -> Result<Response, RestError> {
    let json::CreateNamespaceBody { name, schema } = body;
    let fields = schema
        .map(|json::NamespaceSchema { fields }| {
            declared_fields(
                fields
                    .into_iter()
                    .map(|(field, json::FieldProperties { filterable })| (field, filterable)),
            )
        })
        .transpose()?;
    let name = name.unwrap_or_default();
    let default_name = default_namespace(&headers);
    let info = index
        .run(move |index| index.create_namespace(&name, fields))
        .await?;
    Ok(ok(&namespace_description(info, default_name)))
}

async fn describe_namespace(
    State(index): State<IndexHandle>,
    headers: HeaderMap,
    Path(namespace): Path<String>,
) -> Result<Response, RestError> {
    let default_name = default_namespace(&headers);
    let info = index
        .read(move |index| index.describe_namespace(&namespace))
        .await?;
    Ok(ok(&namespace_description(info, default_name)))
}

async fn delete_namespace(
    State(index): State<IndexHandle>,
    Path(namespace): Path<String>,
) -> Result<Response, RestError> {
    index
        .run(move |index| index.delete_namespace(&namespace))
        .await?;
    Ok(ok(&serde_json::Map::new()))
}

async fn not_implemented(request: Request) -> RestError {
    RestError::new(
        StatusCode::NOT_IMPLEMENTED,
        Code::Unimplemented,
        format!(
            "{} {} is not implemented by Larch: integrated inference (records upsert and \
             search), bulk imports and the documents API are not available; upsert vectors \
             with POST /vectors/upsert and search with POST /query",
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

/// Fetched records keyed by id, as Pinecone's responses carry them.
fn vector_map(records: Vec<Record>) -> BTreeMap<String, json::Vector> {
    records
        .into_iter()
        .map(|record| {
            let Record {
                id,
                values,
                sparse_values,
                metadata: stored,
            } = record;
            let vector = json::Vector {
                id: id.clone(),
                values,
                sparse_values: sparse_values.map(Into::into),
                metadata: metadata(stored),
            };
            (id, vector)
        })
        .collect()
}

fn pagination(next: Option<String>) -> Option<json::Pagination> {
    next.map(|next| json::Pagination { next })
}

fn namespace_description(info: NamespaceInfo, default_name: &str) -> json::NamespaceDescription {
    let NamespaceInfo {
        name,
        record_count,
        size_bytes,
        schema_fields,
    } = info;
    json::NamespaceDescription {
        name: display_namespace(name, default_name),
        record_count,
        schema: schema_fields.as_ref().map(|fields| json::NamespaceSchema {
            fields: fields
                .iter()
                .map(|f| (f.clone(), json::FieldProperties { filterable: true }))
                .collect(),
        }),
        indexed_fields: schema_fields.map(|fields| json::IndexedFields { fields }),
        size_bytes,
    }
}

fn default_namespace(headers: &HeaderMap) -> &'static str {
    default_namespace_name(
        headers
            .get(API_VERSION_HEADER)
            .and_then(|v| v.to_str().ok()),
    )
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

/// `value` as a 200 JSON response, encoded here (small answers; answers with records are
/// encoded on the query pool, see [`encode`]).
fn ok(value: &impl Serialize) -> Response {
    match encode(value) {
        Ok(body) => ok_encoded(body),
        Err(err) => RestError::from(err).into_response(),
    }
}

/// `value` as JSON, for a 200 answer.
fn encode(value: &impl Serialize) -> larch_engine::Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|err| larch_engine::Error::Internal(format!("cannot encode JSON: {err}")))
}

/// A 200 response of the JSON `body`.
fn ok_encoded(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// The id of the API key that authenticated the request (attached by the auth layer).
fn key_id(principal: Option<&Extension<Principal>>) -> Option<&str> {
    principal.map(|Extension(principal)| principal.key_id.as_str())
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
