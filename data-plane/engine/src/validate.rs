//! Request structs → typed, validated values.
//!
//! Only stateless checks live here: shapes, types and limits. Checks against
//! stored data (does the id exist, does merged metadata still fit) happen in
//! `index` under the namespace lock. Each function validates the whole request
//! before anything is applied, so a rejected request changes nothing.

use std::collections::HashSet;

use crate::{
    Error, Filter, IndexConfig, JsonObject, Metadata, Namespace, Result, SparseVector, VectorId,
    limits, metadata,
    pagination::Cursor,
    record::NewRecord,
    requests::{
        DeleteRequest, FetchByMetadataRequest, FetchRequest, ListNamespacesRequest, ListRequest,
        QueryRequest, UpdateRequest, UpsertRequest, VectorInput,
    },
    vectors,
};

/// A namespace field of a request.
pub(crate) fn namespace(name: &str) -> Result<Namespace> {
    Namespace::parse("namespace", name)
}

/// The name of a namespace to create: a real name, not the default namespace.
pub(crate) fn new_namespace(name: &str) -> Result<Namespace> {
    if name.is_empty() {
        return Err(Error::invalid(
            "name",
            "must not be empty; the default namespace needs no creating",
        ));
    }
    if name == Namespace::DEFAULT_ALIAS {
        return Err(Error::invalid(
            "name",
            "'__default__' is reserved for the default namespace",
        ));
    }
    Namespace::parse("name", name)
}

/// The metadata fields declared for a new namespace: at most 50 distinct,
/// non-empty names not starting with `$`.
pub(crate) fn schema_fields(fields: Option<Vec<String>>) -> Result<Option<Vec<String>>> {
    let Some(fields) = fields else {
        return Ok(None);
    };
    if fields.len() > limits::MAX_SCHEMA_FIELDS {
        return Err(Error::invalid(
            "schema.fields",
            format!(
                "has {} fields; the maximum is {}",
                fields.len(),
                limits::MAX_SCHEMA_FIELDS
            ),
        ));
    }
    let mut seen = HashSet::new();
    for (i, field) in fields.iter().enumerate() {
        let path = || format!("schema.fields[{i}]");
        if field.is_empty() {
            return Err(Error::invalid(path(), "must not be empty"));
        }
        if field.starts_with('$') {
            return Err(Error::invalid(path(), "must not start with '$'"));
        }
        if !seen.insert(field.as_str()) {
            return Err(Error::invalid(
                path(),
                format!("field '{field}' appears more than once"),
            ));
        }
    }
    Ok(Some(fields))
}

/// A filter that may be absent; an empty object counts as absent.
pub(crate) fn optional_filter(filter: Option<JsonObject>) -> Result<Option<Filter>> {
    match filter {
        Some(object) if !object.is_empty() => Filter::parse(&object).map(Some),
        _ => Ok(None),
    }
}

/// Metadata of a write; an empty object counts as absent.
fn optional_metadata(field: &str, object: Option<JsonObject>) -> Result<Option<Metadata>> {
    match object {
        Some(object) if !object.is_empty() => metadata::parse(field, &object).map(Some),
        _ => Ok(None),
    }
}

/// A validated upsert: where, and what.
pub(crate) fn upsert(
    request: UpsertRequest,
    config: IndexConfig,
) -> Result<(Namespace, Vec<NewRecord>)> {
    let UpsertRequest {
        namespace: ns,
        vectors,
    } = request;
    let namespace = namespace(&ns)?;
    let max = limits::MAX_UPSERT_VECTORS;
    if vectors.is_empty() {
        return Err(Error::invalid(
            "vectors",
            format!("at least one vector is required (at most {max})"),
        ));
    }
    if vectors.len() > max {
        return Err(Error::invalid(
            "vectors",
            format!("has {} vectors; the maximum is {max}", vectors.len()),
        ));
    }
    let records = vectors
        .into_iter()
        .enumerate()
        .map(|(i, vector)| record(&format!("vectors[{i}]"), vector, config))
        .collect::<Result<_>>()?;
    Ok((namespace, records))
}

fn record(path: &str, vector: VectorInput, config: IndexConfig) -> Result<NewRecord> {
    let VectorInput {
        id,
        values,
        sparse_values,
        metadata,
    } = vector;
    let id = VectorId::parse(&format!("{path}.id"), id)?;
    let sparse_field = format!("{path}.sparse_values");
    let sparse = vectors::sparse(&sparse_field, sparse_values, config.metric)?;
    let values = if config.is_sparse() {
        no_dense_values(&format!("{path}.values"), &values)?;
        if sparse.is_none() {
            return Err(Error::invalid(
                sparse_field,
                "is required: a sparse index stores each record's sparse values (indices and \
                 values of its non-zero entries)",
            ));
        }
        Vec::new()
    } else {
        vectors::dense(&format!("{path}.values"), values, config.dimension, true)?
    };
    Ok(NewRecord {
        id,
        values,
        sparse,
        metadata: optional_metadata(&format!("{path}.metadata"), metadata)?,
    })
}

/// Refuses dense values sent to a sparse index.
fn no_dense_values(field: &str, values: &[f32]) -> Result<()> {
    if values.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(
        field,
        format!(
            "has {} dense values, but this is a sparse index: it stores sparse_values only",
            values.len()
        ),
    ))
}

/// What a query compares against.
#[derive(Debug)]
pub(crate) enum QueryTarget {
    /// The client's vector (empty in a sparse index, queried by its `sparse` part alone).
    Vector(Vec<f32>),
    /// The values of a stored record: its dense values, and in a sparse index its sparse
    /// values.
    Id(VectorId),
}

/// A validated query.
#[derive(Debug)]
pub(crate) struct Query {
    pub(crate) namespace: Namespace,
    pub(crate) top_k: usize,
    pub(crate) filter: Option<Filter>,
    pub(crate) include_values: bool,
    pub(crate) include_metadata: bool,
    pub(crate) target: QueryTarget,
    pub(crate) sparse: Option<SparseVector>,
}

pub(crate) fn query(request: QueryRequest, config: IndexConfig) -> Result<Query> {
    let QueryRequest {
        namespace: ns,
        top_k,
        filter,
        include_values,
        include_metadata,
        vector,
        sparse_vector,
        id,
    } = request;
    let namespace = namespace(&ns)?;
    if !(1..=limits::MAX_TOP_K).contains(&top_k) {
        return Err(Error::invalid(
            "top_k",
            format!(
                "must be between 1 and {} (the limit on matches per query, as in Pinecone), \
                 got {top_k}",
                limits::MAX_TOP_K
            ),
        ));
    }
    let sparse = vectors::sparse("sparse_vector", sparse_vector, config.metric)?;
    let target = if config.is_sparse() {
        sparse_target(vector, id, sparse.is_some())?
    } else {
        match (vector.is_empty(), id.is_empty()) {
            (false, false) => {
                return Err(Error::invalid("id", "give either vector or id, not both"));
            }
            (true, true) => {
                return Err(Error::invalid("vector", "either vector or id is required"));
            }
            (false, true) => {
                QueryTarget::Vector(vectors::dense("vector", vector, config.dimension, false)?)
            }
            (true, false) => QueryTarget::Id(VectorId::parse("id", id)?),
        }
    };
    Ok(Query {
        namespace,
        top_k: top_k as usize,
        filter: optional_filter(filter)?,
        include_values,
        include_metadata,
        target,
        sparse,
    })
}

/// What a query of a sparse index compares against: its `sparse_vector` or a stored record,
/// never dense values.
fn sparse_target(vector: Vec<f32>, id: String, has_sparse: bool) -> Result<QueryTarget> {
    if !vector.is_empty() {
        return Err(Error::invalid(
            "vector",
            "this is a sparse index: query it with sparse_vector (indices and values) or id, \
             not a dense vector",
        ));
    }
    match (has_sparse, id.is_empty()) {
        (true, false) => Err(Error::invalid(
            "id",
            "give either sparse_vector or id, not both",
        )),
        (false, true) => Err(Error::invalid(
            "sparse_vector",
            "a sparse index is queried with sparse_vector (indices and values) or id; give one",
        )),
        (true, true) => Ok(QueryTarget::Vector(Vec::new())),
        (false, false) => Ok(QueryTarget::Id(VectorId::parse("id", id)?)),
    }
}

/// Ids of a fetch or delete: validated, at most `max`, repeats dropped (first
/// occurrence kept).
fn ids(ids: Vec<String>, max: usize) -> Result<Vec<VectorId>> {
    if ids.len() > max {
        return Err(Error::invalid(
            "ids",
            format!("has {} ids; the maximum is {max}", ids.len()),
        ));
    }
    let mut seen = HashSet::with_capacity(ids.len());
    let mut unique = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        let id = VectorId::parse(&format!("ids[{i}]"), id)?;
        if seen.insert(id.clone()) {
            unique.push(id);
        }
    }
    Ok(unique)
}

/// A validated fetch: the namespace and the distinct ids in request order.
pub(crate) fn fetch(request: FetchRequest) -> Result<(Namespace, Vec<VectorId>)> {
    let FetchRequest {
        namespace: ns,
        ids: raw,
    } = request;
    let namespace = namespace(&ns)?;
    if raw.is_empty() {
        return Err(Error::invalid("ids", "at least one id is required"));
    }
    Ok((namespace, ids(raw, limits::MAX_FETCH_IDS)?))
}

/// A page request: keys starting with `prefix`, after `after`, at most `limit`.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) prefix: String,
    pub(crate) limit: usize,
    pub(crate) after: Option<String>,
}

fn limit(value: Option<u32>, default: u32, max: u32) -> Result<usize> {
    let limit = value.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(Error::invalid(
            "limit",
            format!("must be between 1 and {max}, got {limit}"),
        ));
    }
    Ok(limit as usize)
}

fn page(prefix: Option<String>, limit: usize, token: Option<&str>, cursor: Cursor) -> Result<Page> {
    let prefix = prefix.unwrap_or_default();
    let chars = prefix.chars().count();
    if chars > limits::MAX_PREFIX_CHARS {
        return Err(Error::invalid(
            "prefix",
            format!(
                "has {chars} characters; the maximum is {}",
                limits::MAX_PREFIX_CHARS
            ),
        ));
    }
    Ok(Page {
        prefix,
        limit,
        after: cursor.decode(token)?,
    })
}

/// A validated fetch by metadata.
#[derive(Debug)]
pub(crate) struct FetchByMetadata {
    pub(crate) namespace: Namespace,
    pub(crate) filter: Filter,
    pub(crate) limit: usize,
    pub(crate) after: Option<String>,
}

pub(crate) fn fetch_by_metadata(request: FetchByMetadataRequest) -> Result<FetchByMetadata> {
    let FetchByMetadataRequest {
        namespace: ns,
        filter,
        limit: raw_limit,
        pagination_token,
    } = request;
    let namespace = namespace(&ns)?;
    let filter = optional_filter(filter)?
        .ok_or_else(|| Error::invalid("filter", "fetch by metadata needs a non-empty filter"))?;
    let limit = limit(
        raw_limit,
        limits::DEFAULT_FETCH_BY_METADATA_LIMIT,
        limits::MAX_FETCH_BY_METADATA_LIMIT,
    )?;
    let after = Cursor::Metadata.decode(pagination_token.as_deref())?;
    Ok(FetchByMetadata {
        namespace,
        filter,
        limit,
        after,
    })
}

/// Which records a delete removes.
#[derive(Debug)]
pub(crate) enum DeleteTarget {
    Ids(Vec<VectorId>),
    All,
    Filter(Filter),
}

pub(crate) fn delete(request: DeleteRequest) -> Result<(Namespace, DeleteTarget)> {
    let DeleteRequest {
        namespace: ns,
        ids: raw_ids,
        delete_all,
        filter,
    } = request;
    let namespace = namespace(&ns)?;
    let given: Vec<&str> = [
        (!raw_ids.is_empty(), "ids"),
        (delete_all, "delete_all"),
        (filter.is_some(), "filter"),
    ]
    .into_iter()
    .filter_map(|(given, name)| given.then_some(name))
    .collect();
    if given.len() != 1 {
        let field = if given.is_empty() {
            "ids".to_owned()
        } else {
            given.join(", ")
        };
        let got = if given.is_empty() {
            "none".to_owned()
        } else {
            given.join(" and ")
        };
        return Err(Error::invalid(
            field,
            format!("give exactly one of ids, delete_all or filter; got {got}"),
        ));
    }
    let target = if delete_all {
        DeleteTarget::All
    } else if let Some(filter) = filter {
        match optional_filter(Some(filter))? {
            Some(filter) => DeleteTarget::Filter(filter),
            None => {
                return Err(Error::invalid(
                    "filter",
                    "delete with empty metadata filter is not allowed",
                ));
            }
        }
    } else {
        DeleteTarget::Ids(ids(raw_ids, limits::MAX_DELETE_IDS)?)
    };
    Ok((namespace, target))
}

/// Which records an update changes, and how.
#[derive(Debug)]
pub(crate) enum UpdateTarget {
    /// One record; at least one of the parts is set.
    Id {
        id: VectorId,
        values: Option<Vec<f32>>,
        sparse: Option<SparseVector>,
        patch: Option<Metadata>,
    },
    /// Every record matching the filter gets `patch` merged into its metadata.
    Filter { filter: Filter, patch: Metadata },
}

/// A validated update.
#[derive(Debug)]
pub(crate) struct Update {
    pub(crate) namespace: Namespace,
    pub(crate) target: UpdateTarget,
    pub(crate) dry_run: bool,
}

pub(crate) fn update(request: UpdateRequest, config: IndexConfig) -> Result<Update> {
    let UpdateRequest {
        namespace: ns,
        id,
        values,
        sparse_values,
        set_metadata,
        filter,
        dry_run,
    } = request;
    let namespace = namespace(&ns)?;
    let target = match (id.is_empty(), filter) {
        (false, Some(_)) => {
            return Err(Error::invalid(
                "filter",
                "give either id or filter, not both",
            ));
        }
        (true, None) => return Err(Error::invalid("id", "either id or filter is required")),
        (false, None) => {
            let id = VectorId::parse("id", id)?;
            let values = if values.is_empty() {
                None
            } else if config.is_sparse() {
                no_dense_values("values", &values)?;
                None
            } else {
                Some(vectors::dense("values", values, config.dimension, true)?)
            };
            let sparse = vectors::sparse("sparse_values", sparse_values, config.metric)?;
            let patch = optional_metadata("set_metadata", set_metadata)?;
            if values.is_none() && sparse.is_none() && patch.is_none() {
                return Err(Error::invalid(
                    "values",
                    "nothing to update; give at least one of values, sparse_values or set_metadata",
                ));
            }
            UpdateTarget::Id {
                id,
                values,
                sparse,
                patch,
            }
        }
        (true, Some(filter)) => {
            let filter = optional_filter(Some(filter))?.ok_or_else(|| {
                Error::invalid("filter", "update with empty metadata filter is not allowed")
            })?;
            let only_metadata =
                "cannot be combined with filter; an update by filter changes only metadata";
            if !values.is_empty() {
                return Err(Error::invalid("values", only_metadata));
            }
            if sparse_values.is_some_and(|s| !s.indices.is_empty() || !s.values.is_empty()) {
                return Err(Error::invalid("sparse_values", only_metadata));
            }
            let patch = optional_metadata("set_metadata", set_metadata)?.ok_or_else(|| {
                Error::invalid("set_metadata", "is required when updating by filter")
            })?;
            UpdateTarget::Filter { filter, patch }
        }
    };
    Ok(Update {
        namespace,
        target,
        dry_run,
    })
}

/// A validated list of ids.
pub(crate) fn list(request: ListRequest) -> Result<(Namespace, Page)> {
    let ListRequest {
        namespace: ns,
        prefix,
        limit: raw_limit,
        pagination_token,
    } = request;
    let namespace = namespace(&ns)?;
    let limit = limit(
        raw_limit,
        limits::DEFAULT_LIST_LIMIT,
        limits::MAX_LIST_LIMIT,
    )?;
    Ok((
        namespace,
        page(prefix, limit, pagination_token.as_deref(), Cursor::Ids)?,
    ))
}

/// A validated list of namespaces.
pub(crate) fn list_namespaces(request: ListNamespacesRequest) -> Result<Page> {
    let ListNamespacesRequest {
        prefix,
        limit: raw_limit,
        pagination_token,
    } = request;
    let limit = limit(
        raw_limit,
        limits::DEFAULT_LIST_LIMIT,
        limits::MAX_LIST_LIMIT,
    )?;
    page(
        prefix,
        limit,
        pagination_token.as_deref(),
        Cursor::Namespaces,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dimension, Metric, SparseInput};

    fn sparse_input(indices: &[u32], values: &[f32]) -> Option<SparseInput> {
        Some(SparseInput {
            indices: indices.to_vec(),
            values: values.to_vec(),
        })
    }

    fn upsert_one(vector: VectorInput, config: IndexConfig) -> Result<Vec<NewRecord>> {
        let request = UpsertRequest {
            namespace: String::new(),
            vectors: vec![vector],
        };
        upsert(request, config).map(|(_, records)| records)
    }

    fn message(result: Result<impl std::fmt::Debug>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn sparse_index_records_carry_sparse_values_only() {
        let sparse = IndexConfig::sparse();
        let good = VectorInput {
            id: "a".into(),
            sparse_values: sparse_input(&[9, 2], &[0.5, 1.0]),
            ..Default::default()
        };
        let records = upsert_one(good.clone(), sparse).unwrap();
        assert!(records[0].values.is_empty());
        assert_eq!(records[0].sparse.as_ref().unwrap().indices, [2, 9]);
        assert_eq!(
            message(upsert_one(
                VectorInput {
                    values: vec![0.1, 0.2],
                    ..good.clone()
                },
                sparse
            )),
            "vectors[0].values: has 2 dense values, but this is a sparse index: it stores \
             sparse_values only"
        );
        assert_eq!(
            message(upsert_one(
                VectorInput {
                    sparse_values: None,
                    ..good.clone()
                },
                sparse
            )),
            "vectors[0].sparse_values: is required: a sparse index stores each record's sparse \
             values (indices and values of its non-zero entries)"
        );
        // A dense index still wants its dense values.
        let dense = IndexConfig {
            dimension: Dimension::new(2).unwrap(),
            metric: Metric::DotProduct,
        };
        assert!(message(upsert_one(good, dense)).starts_with("vectors[0].values: has 0 values"));
    }

    fn query_of(vector: Vec<f32>, sparse_vector: Option<SparseInput>, id: &str) -> Result<Query> {
        query(
            QueryRequest {
                top_k: 3,
                vector,
                sparse_vector,
                id: id.into(),
                ..Default::default()
            },
            IndexConfig::sparse(),
        )
    }

    #[test]
    fn sparse_index_queries_take_a_sparse_vector_or_an_id() {
        let by_sparse = query_of(Vec::new(), sparse_input(&[1], &[1.0]), "").unwrap();
        assert!(matches!(&by_sparse.target, QueryTarget::Vector(v) if v.is_empty()));
        assert!(by_sparse.sparse.is_some());
        let by_id = query_of(Vec::new(), None, "a").unwrap();
        assert!(matches!(by_id.target, QueryTarget::Id(_)));
        assert_eq!(
            message(query_of(vec![0.5], sparse_input(&[1], &[1.0]), "")),
            "vector: this is a sparse index: query it with sparse_vector (indices and values) \
             or id, not a dense vector"
        );
        assert_eq!(
            message(query_of(Vec::new(), None, "")),
            "sparse_vector: a sparse index is queried with sparse_vector (indices and values) or \
             id; give one"
        );
        assert_eq!(
            message(query_of(Vec::new(), sparse_input(&[1], &[1.0]), "a")),
            "id: give either sparse_vector or id, not both"
        );
    }

    #[test]
    fn sparse_index_updates_refuse_dense_values() {
        let request = UpdateRequest {
            id: "a".into(),
            values: vec![1.0],
            ..Default::default()
        };
        assert_eq!(
            message(update(request, IndexConfig::sparse())),
            "values: has 1 dense values, but this is a sparse index: it stores sparse_values only"
        );
        let request = UpdateRequest {
            id: "a".into(),
            sparse_values: sparse_input(&[3], &[2.0]),
            ..Default::default()
        };
        assert!(update(request, IndexConfig::sparse()).is_ok());
    }
}
