//! Typed, validated index settings, the [`IndexKey`] (project and name) that identifies an
//! index, and the record the catalog keeps per index.
//!
//! Every constructor validates, so a value of these types is always within Pinecone's
//! limits; nothing past the validation of a [`CreateIndex`] re-checks them.

use std::collections::BTreeMap;

use larch_engine::limits::MAX_DIMENSION;
use larch_engine::{
    Dimension, IndexConfig, Metric, Quantization, SearchParams, VectorType as EngineVectorType,
};

use crate::error::{Error, Result};

/// Longest tag key.
pub const MAX_TAG_KEY_LEN: usize = 80;
/// Longest tag value.
pub const MAX_TAG_VALUE_LEN: usize = 120;
/// Most tags one index may carry.
pub const MAX_TAGS: usize = 64;

/// Index names, keys and project ids live in the crate both planes share.
pub use larch_model::index::{
    DEFAULT_PROJECT, Incarnation, IndexKey, IndexName, MAX_INDEX_NAME_LEN, MAX_PROJECT_ID_LEN,
    check_project_id,
};

/// The cloud named in a serverless spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// Amazon Web Services.
    Aws,
    /// Google Cloud.
    Gcp,
    /// Microsoft Azure.
    Azure,
}

impl Cloud {
    /// Parses Pinecone's spelling (`aws`, `gcp`, `azure`).
    pub fn parse(s: &str) -> Result<Cloud> {
        match s {
            "aws" => Ok(Cloud::Aws),
            "gcp" => Ok(Cloud::Gcp),
            "azure" => Ok(Cloud::Azure),
            other => Err(Error::invalid(
                "spec.serverless.cloud",
                format!("unknown cloud {other:?}; use one of \"aws\", \"gcp\", \"azure\""),
            )),
        }
    }

    /// Pinecone's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Gcp => "gcp",
            Cloud::Azure => "azure",
        }
    }
}

/// Whether an index may be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeletionProtection {
    /// Delete is refused until protection is disabled with configure.
    Enabled,
    /// Delete is allowed.
    #[default]
    Disabled,
}

impl DeletionProtection {
    /// Parses `enabled` / `disabled`; `field` names the request field in errors.
    pub fn parse(s: &str, field: &'static str) -> Result<DeletionProtection> {
        match s {
            "enabled" => Ok(DeletionProtection::Enabled),
            "disabled" => Ok(DeletionProtection::Disabled),
            other => Err(Error::invalid(
                field,
                format!("unknown value {other:?}; use \"enabled\" or \"disabled\""),
            )),
        }
    }

    /// Pinecone's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeletionProtection::Enabled => "enabled",
            DeletionProtection::Disabled => "disabled",
        }
    }
}

/// What kind of vectors an index holds: the engine's [`EngineVectorType`], parsed with the
/// catalog's errors.
pub type VectorType = EngineVectorType;

/// Parses Pinecone's `dense` / `sparse`; `field` names the request field in errors.
pub(crate) fn parse_vector_type(s: &str, field: &'static str) -> Result<VectorType> {
    s.parse::<VectorType>().map_err(|_| {
        Error::invalid(
            field,
            format!("unknown vector type {s:?}; use \"dense\" or \"sparse\""),
        )
    })
}

/// The lifecycle state shown in `status.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexState {
    /// Accepting reads and writes.
    Ready,
}

impl IndexState {
    /// Pinecone's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IndexState::Ready => "Ready",
        }
    }

    /// Whether the index takes requests.
    pub fn is_ready(self) -> bool {
        matches!(self, IndexState::Ready)
    }
}

/// A request to create an index, as raw values from any transport.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateIndex {
    /// Index name.
    pub name: String,
    /// Dense dimension; required for a dense index, absent for a sparse one.
    pub dimension: Option<i64>,
    /// `cosine` when absent (`dotproduct`, the only choice, for a sparse index).
    pub metric: Option<String>,
    /// `aws` when absent (with region `us-east-1`).
    pub cloud: Option<String>,
    /// Region string, required when `cloud` is given.
    pub region: Option<String>,
    /// `disabled` when absent.
    pub deletion_protection: Option<String>,
    /// Free-form labels.
    pub tags: BTreeMap<String, String>,
    /// `dense` when absent.
    pub vector_type: Option<String>,
    /// ANN parameters; absent fields take [`SearchParams::default_for`] the index's metric.
    pub search: SearchSettings,
}

/// ANN parameters as raw values from any transport; `None` keeps the value they are applied
/// to (the defaults at creation, the current value at configure).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchSettings {
    /// Graph degree.
    pub m: Option<u32>,
    /// Candidate list size while inserting.
    pub ef_construction: Option<u32>,
    /// Candidate list size while searching.
    pub ef_search: Option<u32>,
    /// `none` or `int8`; empty is the same as absent.
    pub quantization: Option<String>,
}

impl SearchSettings {
    /// `base` with the given fields replaced; every given field is validated, and errors
    /// name it as `search.<field>`.
    pub fn apply_to(self, base: SearchParams) -> Result<SearchParams> {
        let SearchSettings {
            m,
            ef_construction,
            ef_search,
            quantization,
        } = self;
        let mut params = base;
        if let Some(m) = m {
            params = params.with_m(m).map_err(search_error("search.m"))?;
        }
        if let Some(ef) = ef_construction {
            params = params
                .with_ef_construction(ef)
                .map_err(search_error("search.ef_construction"))?;
        }
        if let Some(ef) = ef_search {
            params = params
                .with_ef_search(ef)
                .map_err(search_error("search.ef_search"))?;
        }
        // Empty is absent, as from clients that cannot leave a string field unset.
        if let Some(quantization) = quantization.filter(|q| !q.is_empty()) {
            let field = "search.quantization";
            let quantization =
                Quantization::parse(field, &quantization).map_err(search_error(field))?;
            params = params.with_quantization(quantization);
        }
        Ok(params)
    }
}

/// The engine names a search parameter by its bare name (`m`); requests nest it under
/// `search`, so the catalog's error names `field` instead.
fn search_error(field: &'static str) -> impl FnOnce(larch_engine::Error) -> Error {
    move |err| match err {
        larch_engine::Error::InvalidArgument { message, .. } => Error::invalid(field, message),
        other => Error::invalid(field, other.to_string()),
    }
}

impl CreateIndex {
    /// Checks every field and makes the record of the new index in `project` (without its
    /// `host`, which depends on where it is served); the first problem found is returned.
    pub(crate) fn validate(self, project: &str) -> Result<IndexRecord> {
        let name = IndexName::new(&self.name)?;
        let vector_type = self
            .vector_type
            .as_deref()
            .map(|s| parse_vector_type(s, "vector_type"))
            .transpose()?
            .unwrap_or_default();
        let config = match vector_type {
            VectorType::Dense => dense_config(self.dimension, self.metric.as_deref())?,
            VectorType::Sparse => sparse_config(self.dimension, self.metric.as_deref())?,
        };
        let (cloud, region) = match (self.cloud.as_deref(), self.region) {
            (None, None) => (Cloud::Aws, "us-east-1".to_owned()),
            (Some(cloud), Some(region)) if !region.is_empty() => (Cloud::parse(cloud)?, region),
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "spec.serverless.cloud",
                    "cloud is required with a region (\"aws\", \"gcp\" or \"azure\")",
                ));
            }
            (Some(_), _) => {
                return Err(Error::invalid(
                    "spec.serverless.region",
                    "region is required, e.g. \"us-east-1\"",
                ));
            }
        };
        if region.len() > 64
            || !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(Error::invalid(
                "spec.serverless.region",
                "region must be at most 64 characters of letters, digits and '-'",
            ));
        }
        let deletion_protection = self
            .deletion_protection
            .as_deref()
            .map(|s| DeletionProtection::parse(s, "deletion_protection"))
            .transpose()?
            .unwrap_or_default();
        let mut tags = BTreeMap::new();
        merge_tags(&mut tags, self.tags)?;
        let search = self
            .search
            .apply_to(SearchParams::default_for(config.metric))?;
        Ok(IndexRecord {
            project_id: project.to_owned(),
            name,
            config,
            vector_type,
            cloud,
            region,
            deletion_protection,
            tags,
            search,
            state: IndexState::Ready,
            host: String::new(),
        })
    }
}

/// The config of a dense index: `dimension` required, `metric` cosine when absent.
fn dense_config(dimension: Option<i64>, metric: Option<&str>) -> Result<IndexConfig> {
    let dimension = match dimension {
        None => {
            return Err(Error::invalid(
                "dimension",
                format!("dimension is required for dense indexes (1 to {MAX_DIMENSION})"),
            ));
        }
        Some(d) => u32::try_from(d)
            .ok()
            .and_then(|d| Dimension::new(d).ok())
            .ok_or_else(|| {
                Error::invalid(
                    "dimension",
                    format!("must be between 1 and {MAX_DIMENSION}, got {d}"),
                )
            })?,
    };
    let metric = match metric {
        None | Some("") => Metric::Cosine,
        Some(m) => m.parse::<Metric>().map_err(|_| {
            Error::invalid(
                "metric",
                format!("unknown metric {m:?}; use \"cosine\", \"euclidean\" or \"dotproduct\""),
            )
        })?,
    };
    Ok(IndexConfig { dimension, metric })
}

/// The config of a sparse index: no dimension, and dotproduct, the only metric sparse values
/// are scored by (as Pinecone requires).
fn sparse_config(dimension: Option<i64>, metric: Option<&str>) -> Result<IndexConfig> {
    if let Some(d) = dimension {
        return Err(Error::invalid(
            "dimension",
            format!(
                "a sparse index has no dimension (its records hold sparse values of any \
                 dimension); leave dimension out, got {d}"
            ),
        ));
    }
    match metric {
        None | Some("") | Some("dotproduct") => Ok(IndexConfig::sparse()),
        Some(other) => Err(Error::invalid(
            "metric",
            format!(
                "a sparse index is scored by dot product; use \"dotproduct\" or leave metric \
                 out, got {other:?}"
            ),
        )),
    }
}

/// Merges `changes` into `tags`: a value of `""` removes the key. Validates every entry
/// before changing anything.
pub(crate) fn merge_tags(
    tags: &mut BTreeMap<String, String>,
    changes: BTreeMap<String, String>,
) -> Result<()> {
    for (key, value) in &changes {
        if key.is_empty()
            || key.len() > MAX_TAG_KEY_LEN
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::invalid(
                "tags",
                format!(
                    "tag key {key:?} must be 1-{MAX_TAG_KEY_LEN} characters of letters, digits, '_' and '-'"
                ),
            ));
        }
        if value.chars().count() > MAX_TAG_VALUE_LEN
            || !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ' ' | '.' | ':'))
        {
            return Err(Error::invalid(
                "tags",
                format!(
                    "tag {key:?}: value must be at most {MAX_TAG_VALUE_LEN} characters of letters, digits, spaces and '_-.:'"
                ),
            ));
        }
    }
    let mut merged = tags.clone();
    for (key, value) in changes {
        if value.is_empty() {
            merged.remove(&key);
        } else {
            merged.insert(key, value);
        }
    }
    if merged.len() > MAX_TAGS {
        return Err(Error::invalid(
            "tags",
            format!("an index may have at most {MAX_TAGS} tags"),
        ));
    }
    *tags = merged;
    Ok(())
}

/// A request to change an index's settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigureIndex {
    /// The index to change.
    pub name: String,
    /// New deletion protection, if it changes.
    pub deletion_protection: Option<String>,
    /// Tags to merge; `""` removes a tag.
    pub tags: BTreeMap<String, String>,
    /// ANN parameters to change; the fields left `None` stay as they are.
    pub search: SearchSettings,
}

/// Everything the catalog knows about one index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRecord {
    /// The project owning the index.
    pub project_id: String,
    /// Name, unique within the project.
    pub name: IndexName,
    /// Dimension and metric, fixed at creation.
    pub config: IndexConfig,
    /// Dense or sparse; always `config.vector_type()`.
    pub vector_type: VectorType,
    /// Cloud of the serverless spec.
    pub cloud: Cloud,
    /// Region of the serverless spec.
    pub region: String,
    /// Whether delete is refused.
    pub deletion_protection: DeletionProtection,
    /// Labels.
    pub tags: BTreeMap<String, String>,
    /// ANN parameters in force; the data plane is told of every change.
    pub search: SearchParams,
    /// Lifecycle state.
    pub state: IndexState,
    /// `host:port` clients dial for this index's data plane.
    pub host: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(dimension: i64) -> CreateIndex {
        CreateIndex {
            name: "idx".into(),
            dimension: Some(dimension),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_pinecone_defaults() {
        let v = create(8).validate(DEFAULT_PROJECT).unwrap();
        assert_eq!(v.config.metric, Metric::Cosine);
        assert_eq!(v.config.dimension.get(), 8);
        assert_eq!(v.cloud, Cloud::Aws);
        assert_eq!(v.region, "us-east-1");
        assert_eq!(v.deletion_protection, DeletionProtection::Disabled);
        assert_eq!(v.vector_type, VectorType::Dense);
    }

    #[test]
    fn dimension_metric_and_spec_are_checked() {
        for d in [0, -1, 20001, i64::MAX] {
            let err = create(d).validate(DEFAULT_PROJECT).unwrap_err();
            assert!(err.to_string().starts_with("dimension: "), "{err}");
        }
        let mut c = create(4);
        c.dimension = None;
        assert!(
            c.validate(DEFAULT_PROJECT)
                .unwrap_err()
                .to_string()
                .contains("required")
        );
        let mut c = create(4);
        c.metric = Some("manhattan".into());
        assert!(
            c.validate(DEFAULT_PROJECT)
                .unwrap_err()
                .to_string()
                .starts_with("metric: ")
        );
        let mut c = create(4);
        c.cloud = Some("ibm".into());
        c.region = Some("x".into());
        assert!(
            c.validate(DEFAULT_PROJECT)
                .unwrap_err()
                .to_string()
                .contains("aws")
        );
        let mut c = create(4);
        c.cloud = Some("gcp".into());
        assert!(
            c.validate(DEFAULT_PROJECT)
                .unwrap_err()
                .to_string()
                .contains("region")
        );
        let mut c = create(4);
        c.vector_type = Some("sparsest".into());
        assert_eq!(
            c.validate(DEFAULT_PROJECT).unwrap_err().to_string(),
            r#"vector_type: unknown vector type "sparsest"; use "dense" or "sparse""#
        );
    }

    #[test]
    fn sparse_indexes_have_no_dimension_and_score_by_dot_product() {
        let sparse = |dimension: Option<i64>, metric: Option<&str>| CreateIndex {
            name: "s".into(),
            dimension,
            metric: metric.map(str::to_owned),
            vector_type: Some("sparse".into()),
            ..Default::default()
        };
        for metric in [None, Some("dotproduct")] {
            let record = sparse(None, metric).validate(DEFAULT_PROJECT).unwrap();
            assert_eq!(record.vector_type, VectorType::Sparse);
            assert_eq!(record.config, IndexConfig::sparse());
        }
        let err = sparse(None, Some("cosine"))
            .validate(DEFAULT_PROJECT)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"metric: a sparse index is scored by dot product; use "dotproduct" or leave metric out, got "cosine""#
        );
        let err = sparse(Some(8), None).validate(DEFAULT_PROJECT).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("dimension: a sparse index has no dimension"),
            "{err}"
        );
    }

    #[test]
    fn search_settings_default_and_validate_naming_the_field() {
        assert_eq!(
            create(8).validate(DEFAULT_PROJECT).unwrap().search,
            SearchParams::default()
        );
        let mut c = create(8);
        c.search = SearchSettings {
            m: Some(24),
            ef_search: Some(100),
            quantization: Some("INT8".into()),
            ..Default::default()
        };
        let search = c.validate(DEFAULT_PROJECT).unwrap().search;
        assert_eq!(
            (
                search.m(),
                search.ef_construction(),
                search.ef_search(),
                search.quantization()
            ),
            (24, 128, 100, Quantization::Int8)
        );
        let cases = [
            (
                SearchSettings {
                    m: Some(2),
                    ..Default::default()
                },
                "search.m: must be between 4 and 64; got 2",
            ),
            (
                SearchSettings {
                    ef_construction: Some(5000),
                    ..Default::default()
                },
                "search.ef_construction: must be between 8 and 4096; got 5000",
            ),
            (
                SearchSettings {
                    ef_search: Some(0),
                    ..Default::default()
                },
                "search.ef_search: must be between 8 and 4096; got 0",
            ),
            (
                SearchSettings {
                    quantization: Some("pq".into()),
                    ..Default::default()
                },
                r#"search.quantization: must be one of none, int8; got "pq""#,
            ),
        ];
        for (search, message) in cases {
            let mut c = create(8);
            c.search = search;
            let err = c.validate(DEFAULT_PROJECT).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn search_settings_change_only_the_given_fields() {
        let base = SearchSettings {
            m: Some(24),
            ef_construction: Some(200),
            ef_search: Some(100),
            quantization: Some("int8".into()),
        }
        .apply_to(SearchParams::default())
        .unwrap();
        let changed = SearchSettings {
            ef_search: Some(40),
            ..Default::default()
        }
        .apply_to(base)
        .unwrap();
        assert_eq!(changed, base.with_ef_search(40).unwrap());
        assert_eq!(
            SearchSettings::default().apply_to(base).unwrap(),
            base,
            "nothing given, nothing changes"
        );
    }

    #[test]
    fn tags_merge_and_empty_value_removes() {
        let mut tags = BTreeMap::from([("env".to_owned(), "dev".to_owned())]);
        merge_tags(
            &mut tags,
            BTreeMap::from([
                ("env".to_owned(), String::new()),
                ("team".to_owned(), "search".to_owned()),
            ]),
        )
        .unwrap();
        assert_eq!(
            tags,
            BTreeMap::from([("team".to_owned(), "search".to_owned())])
        );
        let before = tags.clone();
        let bad = BTreeMap::from([
            ("ok".to_owned(), "x".to_owned()),
            ("bad key!".to_owned(), "x".to_owned()),
        ]);
        assert!(merge_tags(&mut tags, bad).is_err());
        assert_eq!(tags, before, "a rejected change leaves tags untouched");
    }
}
