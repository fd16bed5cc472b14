//! Typed values that cannot be invalid once built: [`Metric`], [`Dimension`],
//! [`VectorType`], [`IndexConfig`], [`VectorId`] and [`Namespace`].

use std::{borrow::Borrow, fmt, str::FromStr};

use crate::{Error, Result, limits};

/// How vectors are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Cosine similarity in `[-1, 1]`; higher is more similar.
    Cosine,
    /// Squared euclidean distance; lower is more similar.
    Euclidean,
    /// Raw inner product; higher is more similar.
    DotProduct,
}

impl Metric {
    /// Every metric, in the order error messages list them.
    pub const ALL: [Metric; 3] = [Metric::Cosine, Metric::Euclidean, Metric::DotProduct];

    /// The wire name: `cosine`, `euclidean` or `dotproduct`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Euclidean => "euclidean",
            Metric::DotProduct => "dotproduct",
        }
    }

    /// Whether a higher score means a better match (false only for euclidean,
    /// whose score is a distance).
    pub fn higher_is_better(&self) -> bool {
        !matches!(self, Metric::Euclidean)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Metric {
    type Err = Error;

    /// Accepts exactly `cosine`, `euclidean` and `dotproduct`.
    fn from_str(s: &str) -> Result<Self> {
        Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "metric",
                    format!("unknown metric '{s}'; expected one of cosine, euclidean, dotproduct"),
                )
            })
    }
}

/// The number of dense values per vector: `1..=20000` for a dense index, none
/// ([`Dimension::SPARSE`]) for a sparse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dimension(u32);

impl Dimension {
    /// The dimension of a sparse index: its records carry no dense values. Clients never
    /// give it ([`Dimension::new`] refuses 0); [`IndexConfig::sparse`] uses it.
    pub const SPARSE: Dimension = Dimension(0);

    /// Checks that `value` is within `1..=20000`.
    pub fn new(value: u32) -> Result<Self> {
        if (1..=limits::MAX_DIMENSION).contains(&value) {
            Ok(Dimension(value))
        } else {
            Err(Error::invalid(
                "dimension",
                format!(
                    "must be between 1 and {}, got {value}",
                    limits::MAX_DIMENSION
                ),
            ))
        }
    }

    /// The dimension as a number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The dimension as a slice length.
    pub(crate) fn len(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What kind of vectors an index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VectorType {
    /// Dense values of a fixed dimension, with optional sparse values on dotproduct
    /// (hybrid search).
    #[default]
    Dense,
    /// Sparse values only (Pinecone's sparse-only index): no dimension, metric dotproduct.
    Sparse,
}

impl VectorType {
    /// The wire name: `dense` or `sparse`.
    pub fn as_str(self) -> &'static str {
        match self {
            VectorType::Dense => "dense",
            VectorType::Sparse => "sparse",
        }
    }
}

impl fmt::Display for VectorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VectorType {
    type Err = Error;

    /// Accepts exactly `dense` and `sparse`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "dense" => Ok(VectorType::Dense),
            "sparse" => Ok(VectorType::Sparse),
            other => Err(Error::invalid(
                "vector_type",
                format!("unknown vector type '{other}'; expected dense or sparse"),
            )),
        }
    }
}

/// What an index is: its dimension and metric, fixed at creation.
///
/// A sparse index is the config of [`IndexConfig::sparse`]: dimension [`Dimension::SPARSE`]
/// (its records have no dense values) and metric dotproduct; [`IndexConfig::vector_type`]
/// tells the two kinds apart, and [`IndexConfig::new`] builds either from wire values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IndexConfig {
    /// Number of dense values per vector ([`Dimension::SPARSE`] for a sparse index).
    pub dimension: Dimension,
    /// How vectors are compared.
    pub metric: Metric,
}

impl IndexConfig {
    /// The config of a sparse index: no dense values, scored by dot product.
    pub const fn sparse() -> IndexConfig {
        IndexConfig {
            dimension: Dimension::SPARSE,
            metric: Metric::DotProduct,
        }
    }

    /// A config from wire values: a dense index of `dimension` (1 to 20000) and `metric`, or a
    /// sparse index, whose `dimension` must be 0 (absent) and `metric` dotproduct.
    pub fn new(vector_type: VectorType, dimension: u32, metric: Metric) -> Result<IndexConfig> {
        match vector_type {
            VectorType::Dense => Ok(IndexConfig {
                dimension: Dimension::new(dimension)?,
                metric,
            }),
            VectorType::Sparse if metric != Metric::DotProduct => Err(Error::invalid(
                "metric",
                format!("a sparse index needs metric dotproduct, got {metric}"),
            )),
            VectorType::Sparse if dimension != 0 => Err(Error::invalid(
                "dimension",
                format!("a sparse index has no dimension, got {dimension}"),
            )),
            VectorType::Sparse => Ok(IndexConfig::sparse()),
        }
    }

    /// Dense, or sparse for the config of [`IndexConfig::sparse`].
    pub fn vector_type(&self) -> VectorType {
        if self.dimension == Dimension::SPARSE {
            VectorType::Sparse
        } else {
            VectorType::Dense
        }
    }

    /// Whether this is a sparse index.
    pub fn is_sparse(&self) -> bool {
        self.vector_type() == VectorType::Sparse
    }
}

/// Checks the rules shared by ids and namespace names: at most `max`
/// characters and no NUL.
fn check_name(field: &str, value: &str, max: usize) -> Result<()> {
    // A string of at most `max` bytes has at most `max` characters; count only when it matters.
    if value.len() > max {
        let chars = value.chars().count();
        if chars > max {
            return Err(Error::invalid(
                field,
                format!("has {chars} characters; the maximum is {max}"),
            ));
        }
    }
    if value.contains('\0') {
        return Err(Error::invalid(field, "must not contain the NUL character"));
    }
    Ok(())
}

/// A record id: 1–512 characters, no NUL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VectorId(String);

impl VectorId {
    /// Validates `id`; errors name `field`.
    pub fn parse(field: &str, id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        if id.is_empty() {
            return Err(Error::invalid(field, "must not be empty"));
        }
        check_name(field, &id, limits::MAX_ID_CHARS)?;
        Ok(VectorId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl Borrow<str> for VectorId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VectorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A namespace name: at most 512 characters, no NUL. The default namespace is
/// `""`; `"__default__"` is accepted as another name for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Namespace(String);

impl Namespace {
    /// The alias clients may use for the default namespace `""`.
    pub const DEFAULT_ALIAS: &'static str = "__default__";

    /// Validates `name`, mapping `__default__` to the default namespace;
    /// errors name `field`.
    pub fn parse(field: &str, name: &str) -> Result<Self> {
        if name == Self::DEFAULT_ALIAS {
            return Ok(Namespace::default());
        }
        check_name(field, name, limits::MAX_NAMESPACE_CHARS)?;
        Ok(Namespace(name.to_owned()))
    }

    /// The name as responses report it: `""` for the default namespace.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the default namespace.
    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }

    /// The name for messages: `__default__` for the default namespace, so a
    /// message never shows a bare `''`.
    pub(crate) fn label(&self) -> &str {
        if self.is_default() {
            Self::DEFAULT_ALIAS
        } else {
            &self.0
        }
    }
}

impl Borrow<str> for Namespace {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_round_trips_through_its_wire_name() {
        for metric in Metric::ALL {
            assert_eq!(metric.as_str().parse::<Metric>().unwrap(), metric);
            assert_eq!(metric.to_string(), metric.as_str());
        }
        assert!(Metric::Cosine.higher_is_better());
        assert!(Metric::DotProduct.higher_is_better());
        assert!(!Metric::Euclidean.higher_is_better());
    }

    #[test]
    fn unknown_metric_lists_the_allowed_values() {
        let err = "Cosine".parse::<Metric>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "metric: unknown metric 'Cosine'; expected one of cosine, euclidean, dotproduct"
        );
        assert!("dot_product".parse::<Metric>().is_err());
    }

    #[test]
    fn dimension_bounds() {
        assert_eq!(Dimension::new(1).unwrap().get(), 1);
        assert_eq!(Dimension::new(20_000).unwrap().get(), 20_000);
        assert_eq!(
            Dimension::new(0).unwrap_err().to_string(),
            "dimension: must be between 1 and 20000, got 0"
        );
        assert!(Dimension::new(20_001).is_err());
    }

    #[test]
    fn sparse_configs_have_no_dimension_and_dotproduct_only() {
        let sparse = IndexConfig::new(VectorType::Sparse, 0, Metric::DotProduct).unwrap();
        assert_eq!(sparse, IndexConfig::sparse());
        assert_eq!(sparse.vector_type(), VectorType::Sparse);
        assert_eq!(
            IndexConfig::new(VectorType::Sparse, 0, Metric::Cosine)
                .unwrap_err()
                .to_string(),
            "metric: a sparse index needs metric dotproduct, got cosine"
        );
        assert_eq!(
            IndexConfig::new(VectorType::Sparse, 8, Metric::DotProduct)
                .unwrap_err()
                .to_string(),
            "dimension: a sparse index has no dimension, got 8"
        );
        let dense = IndexConfig::new(VectorType::Dense, 8, Metric::Cosine).unwrap();
        assert_eq!(dense.vector_type(), VectorType::Dense);
        assert!(IndexConfig::new(VectorType::Dense, 0, Metric::DotProduct).is_err());
        for t in [VectorType::Dense, VectorType::Sparse] {
            assert_eq!(t.as_str().parse::<VectorType>().unwrap(), t);
        }
        assert!("Sparse".parse::<VectorType>().is_err());
    }

    #[test]
    fn vector_id_rules() {
        assert_eq!(VectorId::parse("id", "a").unwrap().as_str(), "a");
        assert_eq!(
            VectorId::parse("id", "").unwrap_err().to_string(),
            "id: must not be empty"
        );
        assert!(VectorId::parse("id", "x".repeat(512)).is_ok());
        assert_eq!(
            VectorId::parse("ids[1]", "x".repeat(513))
                .unwrap_err()
                .to_string(),
            "ids[1]: has 513 characters; the maximum is 512"
        );
        // 512 two-byte characters are fine: the limit counts characters.
        assert!(VectorId::parse("id", "é".repeat(512)).is_ok());
        assert_eq!(
            VectorId::parse("id", "a\0b").unwrap_err().to_string(),
            "id: must not contain the NUL character"
        );
    }

    #[test]
    fn namespace_rules_and_default_alias() {
        assert!(Namespace::parse("namespace", "").unwrap().is_default());
        let alias = Namespace::parse("namespace", "__default__").unwrap();
        assert!(alias.is_default());
        assert_eq!(alias.as_str(), "");
        assert_eq!(alias.label(), "__default__");
        assert_eq!(
            Namespace::parse("namespace", "films").unwrap().as_str(),
            "films"
        );
        assert!(Namespace::parse("namespace", &"n".repeat(512)).is_ok());
        assert_eq!(
            Namespace::parse("namespace", &"n".repeat(513))
                .unwrap_err()
                .to_string(),
            "namespace: has 513 characters; the maximum is 512"
        );
        assert!(Namespace::parse("namespace", "a\0").is_err());
    }
}
