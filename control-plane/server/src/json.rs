//! Pinecone's control-plane JSON, in both shapes, and its translation to and from the catalog.
//!
//! Requests: one body type per operation accepts the fields of both API generations — the
//! 2025-10 `dimension`/`metric`/`vector_type`/`spec` and the 2026-07 `schema`/`deployment`
//! — and the translation picks the shape by which fields are present (not by the version
//! header), so either body works with any client. Unknown fields are refused (422), so a typo
//! is never silently ignored. The translations are `TryFrom` impls ([`CreateIndexBody`] →
//! [`CreateIndex`], [`ConfigureIndexCall`] → [`ConfigureIndex`]) that [`Indexes`](crate::Indexes) runs after
//! it has authorized the caller for the index the body names ([`NamesIndex`]).
//! Responses: [`IndexModel::new`] writes the shape of the caller's [`ApiVersion`].
//!
//! Only what the catalog can express is accepted; anything else (pod or BYOC deployments,
//! read-capacity modes, collections, document schemas) is refused with
//! [`Failure::Unsupported`] naming the field. Larch's own ANN parameters (`search`) are neither
//! accepted nor shown here: this JSON stays exactly Pinecone's, and gRPC carries them.

use std::collections::BTreeMap;

use larch_catalog::{ConfigureIndex, CreateIndex, IndexRecord, SearchSettings};
use larch_engine::IndexConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::indexes::{ApiVersion, Failure, NamesIndex};

/// The reserved 2026-07 schema field of a classic index's dense values.
pub const DENSE_FIELD: &str = "_values";
/// The reserved 2026-07 schema field of a classic index's sparse values.
pub const SPARSE_FIELD: &str = "_sparse_values";

/// `POST /indexes`, either shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateIndexBody {
    name: Option<String>,
    // 2025-10 shape.
    dimension: Option<i64>,
    metric: Option<String>,
    vector_type: Option<String>,
    spec: Option<SpecBody>,
    // 2026-07 shape.
    schema: Option<SchemaBody>,
    deployment: Option<DeploymentBody>,
    read_capacity: Option<Value>,
    cmek_id: Option<Value>,
    source_collection: Option<Value>,
    source_backup_id: Option<Value>,
    // Both.
    deletion_protection: Option<String>,
    tags: Option<BTreeMap<String, String>>,
}

/// 2025-10 `spec`: exactly one of its members.
#[derive(Debug, Deserialize)]
struct SpecBody {
    serverless: Option<ServerlessBody>,
    pod: Option<Value>,
    byoc: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ServerlessBody {
    cloud: Option<String>,
    region: Option<String>,
    read_capacity: Option<Value>,
    source_collection: Option<Value>,
    schema: Option<Value>,
}

/// 2026-07 `schema`.
#[derive(Debug, Deserialize)]
struct SchemaBody {
    #[serde(default)]
    fields: BTreeMap<String, FieldBody>,
}

#[derive(Debug, Deserialize)]
struct FieldBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    dimension: Option<i64>,
    metric: Option<String>,
}

/// 2026-07 `deployment`.
#[derive(Debug, Deserialize)]
struct DeploymentBody {
    deployment_type: Option<String>,
    cloud: Option<String>,
    region: Option<String>,
}

/// `PATCH /indexes/{name}`, either shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigureIndexBody {
    deletion_protection: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    // 2025-10 shape.
    spec: Option<Value>,
    embed: Option<Value>,
    // 2026-07 shape.
    deployment: Option<Value>,
    schema: Option<Value>,
    read_capacity: Option<Value>,
}

fn unsupported(message: impl Into<String>) -> Failure {
    Failure::Unsupported(message.into())
}

/// Refuses `value` at `field` when it is set (JSON `null` counts as not set).
fn refuse_if_set(value: Option<&Value>, field: &str, why: &str) -> Result<(), Failure> {
    match value {
        None => Ok(()),
        Some(_) => Err(unsupported(format!("{field}: {why}"))),
    }
}

/// Accepts no read capacity or on-demand read capacity (what every Larch index has).
fn check_read_capacity(value: Option<&Value>, field: &str) -> Result<(), Failure> {
    match value {
        None => Ok(()),
        Some(Value::Object(capacity))
            if capacity.get("mode").and_then(Value::as_str) == Some("OnDemand") =>
        {
            Ok(())
        }
        Some(_) => Err(unsupported(format!(
            "{field}: only {{\"mode\":\"OnDemand\"}} read capacity is supported"
        ))),
    }
}

impl NamesIndex for CreateIndexBody {
    fn index_name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
}

/// The catalog request a body asks for, or what the catalog cannot express in it.
impl TryFrom<CreateIndexBody> for CreateIndex {
    type Error = Failure;

    fn try_from(body: CreateIndexBody) -> Result<CreateIndex, Failure> {
        let CreateIndexBody {
            name,
            dimension,
            metric,
            vector_type,
            spec,
            schema,
            deployment,
            read_capacity,
            cmek_id,
            source_collection,
            source_backup_id,
            deletion_protection,
            tags,
        } = body;
        check_read_capacity(read_capacity.as_ref(), "read_capacity")?;
        refuse_if_set(
            cmek_id.as_ref(),
            "cmek_id",
            "customer-managed keys are not supported",
        )?;
        for (value, field) in [
            (&source_collection, "source_collection"),
            (&source_backup_id, "source_backup_id"),
        ] {
            refuse_if_set(
                value.as_ref(),
                field,
                "collections and backups are not supported; create an empty index and upsert",
            )?;
        }
        let classic_fields =
            dimension.is_some() || metric.is_some() || vector_type.is_some() || spec.is_some();
        let (
            VectorSettings {
                dimension,
                metric,
                vector_type,
            },
            (cloud, region),
        ) = if schema.is_some() || deployment.is_some() {
            if classic_fields {
                return Err(unsupported(
                    "schema: send either the 2026-07 fields (schema, deployment) or the \
                     2025-10 fields (dimension, metric, vector_type, spec), not both",
                ));
            }
            let Some(schema) = schema else {
                return Err(unsupported(
                    "schema: required with deployment, e.g. {\"fields\":{\"_values\":\
                     {\"type\":\"dense_vector\",\"dimension\":8,\"metric\":\"cosine\"}}}",
                ));
            };
            (vector_fields(schema)?, placement(deployment)?)
        } else {
            let settings = VectorSettings {
                dimension,
                metric,
                vector_type,
            };
            (settings, serverless(spec)?)
        };
        Ok(CreateIndex {
            name: name.unwrap_or_default(),
            dimension,
            metric,
            cloud,
            region,
            deletion_protection,
            tags: tags.unwrap_or_default(),
            vector_type,
            // Pinecone's REST API has no ANN parameters, so REST-created indexes get the
            // defaults; they are set and shown over gRPC (`larch.control.v1`) only.
            search: SearchSettings::default(),
        })
    }
}

/// The vector settings of a create request, as raw values for the catalog to validate.
struct VectorSettings {
    dimension: Option<i64>,
    metric: Option<String>,
    vector_type: Option<String>,
}

/// The vector settings of a 2026-07 schema: a classic index declares exactly `_values` (dense)
/// and optionally `_sparse_values`.
fn vector_fields(schema: SchemaBody) -> Result<VectorSettings, Failure> {
    let SchemaBody { fields } = schema;
    let mut dense = None;
    let mut sparse = false;
    for (name, field) in fields {
        let FieldBody {
            kind,
            dimension,
            metric,
        } = field;
        match (name.as_str(), kind.as_deref()) {
            (DENSE_FIELD, Some("dense_vector")) => dense = Some((dimension, metric)),
            (SPARSE_FIELD, Some("sparse_vector")) => sparse = true,
            (DENSE_FIELD, other) => {
                return Err(unsupported(format!(
                    "schema.fields.{DENSE_FIELD}.type: must be \"dense_vector\", got {other:?}"
                )));
            }
            (SPARSE_FIELD, other) => {
                return Err(unsupported(format!(
                    "schema.fields.{SPARSE_FIELD}.type: must be \"sparse_vector\", got {other:?}"
                )));
            }
            (other, _) => {
                return Err(unsupported(format!(
                    "schema.fields.{other}: Larch serves vector indexes only; declare \
                     \"{DENSE_FIELD}\" ({{\"type\":\"dense_vector\",\"dimension\":…,\"metric\":…}}) \
                     and optionally \"{SPARSE_FIELD}\" ({{\"type\":\"sparse_vector\"}}); every \
                     metadata field is filterable without being declared"
                )));
            }
        }
    }
    match (dense, sparse) {
        (Some((dimension, metric)), _) => Ok(VectorSettings {
            dimension,
            metric,
            vector_type: None,
        }),
        (None, true) => Ok(VectorSettings {
            dimension: None,
            metric: Some("dotproduct".to_owned()),
            vector_type: Some("sparse".to_owned()),
        }),
        (None, false) => Err(unsupported(format!(
            "schema.fields.{DENSE_FIELD}: required, e.g. {{\"type\":\"dense_vector\",\
             \"dimension\":8,\"metric\":\"cosine\"}}; or, for a sparse index, declare only \
             \"{SPARSE_FIELD}\": {{\"type\":\"sparse_vector\"}}"
        ))),
    }
}

/// Cloud and region of a 2026-07 deployment; only managed (serverless) deployments exist.
fn placement(
    deployment: Option<DeploymentBody>,
) -> Result<(Option<String>, Option<String>), Failure> {
    let Some(DeploymentBody {
        deployment_type,
        cloud,
        region,
    }) = deployment
    else {
        return Ok((None, None));
    };
    match deployment_type.as_deref() {
        Some("managed") => Ok((cloud, region)),
        other => Err(unsupported(format!(
            "deployment.deployment_type: only \"managed\" (serverless) deployments are \
             supported, got {other:?}"
        ))),
    }
}

/// Cloud and region of a 2025-10 spec; only serverless specs exist.
fn serverless(spec: Option<SpecBody>) -> Result<(Option<String>, Option<String>), Failure> {
    let Some(SpecBody {
        serverless,
        pod,
        byoc,
    }) = spec
    else {
        return Ok((None, None));
    };
    let only_serverless = "only serverless indexes are supported, e.g. \
                           {\"serverless\":{\"cloud\":\"aws\",\"region\":\"us-east-1\"}}";
    refuse_if_set(pod.as_ref(), "spec.pod", only_serverless)?;
    refuse_if_set(byoc.as_ref(), "spec.byoc", only_serverless)?;
    let Some(ServerlessBody {
        cloud,
        region,
        read_capacity,
        source_collection,
        schema,
    }) = serverless
    else {
        return Err(unsupported(format!("spec: {only_serverless}")));
    };
    check_read_capacity(read_capacity.as_ref(), "spec.serverless.read_capacity")?;
    refuse_if_set(
        source_collection.as_ref(),
        "spec.serverless.source_collection",
        "collections are not supported; create an empty index and upsert",
    )?;
    refuse_if_set(
        schema.as_ref(),
        "spec.serverless.schema",
        "every metadata field is filterable in Larch; leave the schema out",
    )?;
    Ok((cloud, region))
}

/// `PATCH /indexes/{name}`: the index named by the path, and the changes of the body.
#[derive(Debug)]
pub struct ConfigureIndexCall {
    /// The index to change, from the path.
    pub name: String,
    /// The changes.
    pub body: ConfigureIndexBody,
}

impl NamesIndex for ConfigureIndexCall {
    fn index_name(&self) -> &str {
        &self.name
    }
}

/// The catalog request a call asks for, or what the catalog cannot express in it.
impl TryFrom<ConfigureIndexCall> for ConfigureIndex {
    type Error = Failure;

    fn try_from(call: ConfigureIndexCall) -> Result<ConfigureIndex, Failure> {
        let ConfigureIndexCall { name, body } = call;
        let ConfigureIndexBody {
            deletion_protection,
            tags,
            spec,
            embed,
            deployment,
            schema,
            read_capacity,
        } = body;
        let only = "only deletion_protection and tags can be changed";
        refuse_if_set(spec.as_ref(), "spec", only)?;
        refuse_if_set(embed.as_ref(), "embed", only)?;
        refuse_if_set(deployment.as_ref(), "deployment", only)?;
        refuse_if_set(schema.as_ref(), "schema", only)?;
        check_read_capacity(read_capacity.as_ref(), "read_capacity")?;
        Ok(ConfigureIndex {
            name,
            deletion_protection,
            tags: tags.unwrap_or_default(),
            // Not settable over REST (Pinecone's API has no such field); see `CreateIndex`.
            search: SearchSettings::default(),
        })
    }
}

/// An index as Pinecone describes it to a client of `version`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum IndexModel {
    /// The 2025-10 shape.
    Classic(ClassicIndexModel),
    /// The 2026-07 shape.
    Schema(SchemaIndexModel),
}

/// `IndexModel` of API 2025-10 (and older).
#[derive(Debug, Serialize)]
pub struct ClassicIndexModel {
    name: String,
    /// Absent for a sparse index, as in Pinecone's model (where it is optional).
    #[serde(skip_serializing_if = "Option::is_none")]
    dimension: Option<u32>,
    metric: String,
    host: String,
    deletion_protection: &'static str,
    tags: BTreeMap<String, String>,
    vector_type: &'static str,
    spec: ClassicSpec,
    status: StatusModel,
}

#[derive(Debug, Serialize)]
struct ClassicSpec {
    serverless: ServerlessModel,
}

#[derive(Debug, Serialize)]
struct ServerlessModel {
    cloud: &'static str,
    region: String,
    /// Required by pinecone 8.x's `ServerlessSpecResponse`.
    read_capacity: ReadCapacityModel,
}

/// Every Larch index reads on demand.
#[derive(Debug, Serialize)]
struct ReadCapacityModel {
    mode: &'static str,
    status: ReadCapacityStatus,
}

#[derive(Debug, Serialize)]
struct ReadCapacityStatus {
    state: &'static str,
}

impl ReadCapacityModel {
    const ON_DEMAND: ReadCapacityModel = ReadCapacityModel {
        mode: "OnDemand",
        status: ReadCapacityStatus { state: "Ready" },
    };
}

#[derive(Debug, Serialize)]
struct StatusModel {
    ready: bool,
    state: &'static str,
}

/// `IndexModel` of API 2026-07.
#[derive(Debug, Serialize)]
pub struct SchemaIndexModel {
    name: String,
    host: String,
    status: StatusModel,
    deployment: DeploymentModel,
    schema: SchemaModel,
    read_capacity: ReadCapacityModel,
    deletion_protection: &'static str,
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct DeploymentModel {
    deployment_type: &'static str,
    cloud: &'static str,
    region: String,
}

#[derive(Debug, Serialize)]
struct SchemaModel {
    fields: BTreeMap<&'static str, FieldModel>,
}

impl SchemaModel {
    /// The classic vector fields of an index of `config`: "Dense vectors-API indexes always
    /// report both `_values` and `_sparse_values`"; a sparse index has only `_sparse_values`
    /// (what SDK 10.2.0 creates it with).
    fn of(config: IndexConfig) -> SchemaModel {
        let mut fields = BTreeMap::from([(SPARSE_FIELD, FieldModel::Sparse {})]);
        if !config.is_sparse() {
            fields.insert(
                DENSE_FIELD,
                FieldModel::Dense {
                    dimension: config.dimension.get(),
                    metric: config.metric.to_string(),
                },
            );
        }
        SchemaModel { fields }
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "type")]
enum FieldModel {
    #[serde(rename = "dense_vector")]
    Dense { dimension: u32, metric: String },
    #[serde(rename = "sparse_vector")]
    Sparse {},
}

/// `GET /indexes`.
#[derive(Debug, Serialize)]
pub struct IndexList {
    /// Every index, ordered by name.
    pub indexes: Vec<IndexModel>,
}

impl IndexList {
    /// `records` in the shape of `version`.
    pub fn new(records: Vec<IndexRecord>, version: ApiVersion) -> IndexList {
        IndexList {
            indexes: records
                .into_iter()
                .map(|record| IndexModel::new(record, version))
                .collect(),
        }
    }
}

impl IndexModel {
    /// `record` in the shape of `version`, with the `host` that version's clients can dial.
    pub fn new(record: IndexRecord, version: ApiVersion) -> IndexModel {
        let host = version.host(&record);
        let IndexRecord {
            // The caller's own project: not part of Pinecone's index model.
            project_id: _,
            name,
            config,
            vector_type,
            cloud,
            region,
            deletion_protection,
            tags,
            // Not shown: Pinecone's SDKs parse index models strictly in places, so the REST JSON
            // stays exactly Pinecone's. gRPC's IndexModel carries the ANN parameters.
            search: _,
            state,
            host: _,
        } = record;
        let status = StatusModel {
            ready: state.is_ready(),
            state: state.as_str(),
        };
        match version {
            ApiVersion::Classic => IndexModel::Classic(ClassicIndexModel {
                name: name.to_string(),
                dimension: (!config.is_sparse()).then(|| config.dimension.get()),
                metric: config.metric.to_string(),
                host,
                deletion_protection: deletion_protection.as_str(),
                tags,
                vector_type: vector_type.as_str(),
                spec: ClassicSpec {
                    serverless: ServerlessModel {
                        cloud: cloud.as_str(),
                        region,
                        read_capacity: ReadCapacityModel::ON_DEMAND,
                    },
                },
                status,
            }),
            ApiVersion::Schema => IndexModel::Schema(SchemaIndexModel {
                name: name.to_string(),
                host,
                status,
                deployment: DeploymentModel {
                    deployment_type: "managed",
                    cloud: cloud.as_str(),
                    region,
                },
                schema: SchemaModel::of(config),
                read_capacity: ReadCapacityModel::ON_DEMAND,
                deletion_protection: deletion_protection.as_str(),
                tags,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(body: Value) -> Result<CreateIndex, Failure> {
        CreateIndex::try_from(
            serde_json::from_value::<CreateIndexBody>(body).expect("deserializes"),
        )
    }

    #[test]
    fn both_create_shapes_give_the_same_request() {
        // What pinecone 8.1.2 sends, and what 10.2.0 sends for the same call.
        let classic = create(json!({"name":"smoke-test","spec":{"serverless":{"cloud":"aws","region":"us-east-1"}},
            "dimension":8,"metric":"cosine","deletion_protection":"disabled","vector_type":"dense","tags":{"env":"dev"}}))
        .unwrap();
        let schema = create(json!({"schema":{"fields":{"_values":{"type":"dense_vector","dimension":8,"metric":"cosine"}}},
            "name":"smoke-test","deployment":{"deployment_type":"managed","cloud":"aws","region":"us-east-1"},
            "deletion_protection":"disabled","tags":{"env":"dev"}}))
        .unwrap();
        assert_eq!(
            CreateIndex {
                vector_type: None,
                ..classic.clone()
            },
            schema
        );
        assert_eq!(classic.dimension, Some(8));
        assert_eq!(classic.cloud.as_deref(), Some("aws"));
        assert_eq!(classic.region.as_deref(), Some("us-east-1"));
    }

    #[test]
    fn unsupported_requests_name_the_field() {
        let cases = [
            (
                json!({"name":"a","dimension":2,"spec":{"pod":{"environment":"x"}}}),
                "spec.pod: ",
            ),
            (
                json!({"name":"a","schema":{"fields":{}}}),
                "schema.fields._values: ",
            ),
            (
                json!({"name":"a","dimension":2,"schema":{"fields":{}}}),
                "schema: send either",
            ),
            (
                json!({"name":"a","schema":{"fields":{"_values":{"type":"dense_vector","dimension":2},"title":{"type":"string"}}}}),
                "schema.fields.title: ",
            ),
            (
                json!({"name":"a","schema":{"fields":{"_values":{"type":"dense_vector","dimension":2}}},
                    "deployment":{"deployment_type":"pod","environment":"e"}}),
                "deployment.deployment_type: ",
            ),
            (
                json!({"name":"a","deployment":{"deployment_type":"managed"}}),
                "schema: ",
            ),
            (
                json!({"name":"a","dimension":2,"read_capacity":{"mode":"Dedicated"}}),
                "read_capacity: ",
            ),
        ];
        for (body, prefix) in cases {
            let err = create(body.clone()).unwrap_err();
            assert!(matches!(err, Failure::Unsupported(_)), "{body}");
            assert!(err.to_string().starts_with(prefix), "{body}: {err}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_value::<CreateIndexBody>(json!({"name":"a","dimensions":3}))
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `dimensions`"),
            "{err}"
        );
    }

    #[test]
    fn sparse_only_schemas_reach_the_catalog_as_sparse() {
        let request = create(
            json!({"name":"s","schema":{"fields":{"_sparse_values":{"type":"sparse_vector"}}}}),
        )
        .unwrap();
        assert_eq!(request.vector_type.as_deref(), Some("sparse"));
    }

    #[test]
    fn sparse_indexes_describe_without_dimension_or_dense_field() {
        let record = IndexRecord {
            project_id: "default".into(),
            name: larch_catalog::IndexName::new("s").unwrap(),
            config: IndexConfig::sparse(),
            vector_type: larch_catalog::VectorType::Sparse,
            cloud: larch_catalog::Cloud::Aws,
            region: "us-east-1".into(),
            deletion_protection: larch_catalog::DeletionProtection::Disabled,
            tags: BTreeMap::new(),
            search: larch_engine::SearchParams::default(),
            state: larch_catalog::IndexState::Ready,
            host: "127.0.0.1:5081".into(),
        };
        let classic =
            serde_json::to_value(IndexModel::new(record.clone(), ApiVersion::Classic)).unwrap();
        assert_eq!(classic["vector_type"], "sparse");
        assert_eq!(classic["metric"], "dotproduct");
        assert!(classic.get("dimension").is_none(), "{classic}");
        let schema = serde_json::to_value(IndexModel::new(record, ApiVersion::Schema)).unwrap();
        assert_eq!(
            schema["schema"],
            json!({"fields":{"_sparse_values":{"type":"sparse_vector"}}})
        );
    }

    #[test]
    fn configure_accepts_protection_and_tags_only() {
        let body: ConfigureIndexBody = serde_json::from_value(
            json!({"deletion_protection":"enabled","tags":{"a":"b"},"spec":null}),
        )
        .unwrap();
        let call = |body| ConfigureIndexCall {
            name: "x".into(),
            body,
        };
        let request = ConfigureIndex::try_from(call(body)).unwrap();
        assert_eq!(request.deletion_protection.as_deref(), Some("enabled"));
        let body: ConfigureIndexBody =
            serde_json::from_value(json!({"deployment":{"replicas":2}})).unwrap();
        assert!(ConfigureIndex::try_from(call(body)).is_err());
    }
}
