//! `larch indexes create|list|describe|configure|delete`: the control plane's
//! `larch.control.v1.IndexService` from a shell.
//!
//! Each command makes one gRPC call to `--addr` (`LARCH_ADDR`) with the key from
//! `LARCH_API_KEY`/`LARCH_API_KEY_FILE`. `--output json` prints the index the way the API's
//! JSON form (and Pinecone's 2025-10 REST body) reads, e.g.
//! `{"name":"movies","dimension":384,"metric":"cosine","host":"127.0.0.1:5081",…}`; the
//! default is a table.

use std::collections::HashMap;

use clap::{Subcommand, ValueEnum};
use larch_proto::control::index_service_client::IndexServiceClient;
use larch_proto::control::{
    ConfigureIndexRequest, CreateIndexRequest, DeleteIndexRequest, DescribeIndexRequest,
    IndexModel, IndexSpec, IndexStatus, ListIndexesRequest, SearchParams, ServerlessSpec,
};
use serde_json::{Value, json};
use tonic::metadata::{Ascii, MetadataValue};

use crate::admin::{Connection, channel, request, runtime};
use crate::output::{
    Format, OutputArgs, api_key, cell, failed, print_fields, print_json, print_table,
};

/// `larch indexes …`
#[derive(Debug, Subcommand)]
pub(crate) enum IndexesCommand {
    /// Create an index; it accepts writes when the command returns.
    Create {
        /// 1-45 characters of a-z, 0-9 and '-'.
        name: String,
        /// Vector length, 1-20000; required for a dense index, not given for a sparse one.
        #[arg(long)]
        dimension: Option<i32>,
        /// Distance: cosine, euclidean or dotproduct [server default: cosine; dotproduct, the
        /// only choice, for a sparse index].
        #[arg(long)]
        metric: Option<String>,
        /// dense (fixed-length values, optionally with sparse values on dotproduct) or
        /// sparse (sparse values only, no dimension).
        #[arg(long, value_enum, default_value = "dense")]
        vector_type: VectorType,
        /// Deployment; only serverless exists.
        #[arg(long, value_enum, default_value = "serverless")]
        spec: Spec,
        /// Cloud of the serverless spec: aws, gcp or azure.
        #[arg(long, default_value = "aws")]
        cloud: String,
        /// Region of the serverless spec.
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// enabled or disabled [server default: disabled].
        #[arg(long)]
        deletion_protection: Option<String>,
        /// A tag as key=value (repeat for several).
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        #[command(flatten)]
        search: SearchArgs,
    },
    /// List every index.
    List,
    /// Describe one index, including the host its data plane answers on.
    Describe {
        /// The index name.
        name: String,
    },
    /// Change deletion protection, tags or search parameters.
    Configure {
        /// The index name.
        name: String,
        /// enabled or disabled.
        #[arg(long)]
        deletion_protection: Option<String>,
        /// A tag as key=value, merged into the index's tags; `key=` removes it (repeat).
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        #[command(flatten)]
        search: SearchArgs,
    },
    /// Delete an index and all of its data (refused while deletion protection is enabled).
    Delete {
        /// The index name.
        name: String,
    },
}

/// What an index holds (`--vector-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum VectorType {
    /// Dense values of `--dimension` numbers.
    Dense,
    /// Sparse values only (indices and values); no `--dimension`.
    Sparse,
}

impl VectorType {
    fn as_str(self) -> &'static str {
        match self {
            VectorType::Dense => "dense",
            VectorType::Sparse => "sparse",
        }
    }
}

/// Where an index is deployed (`--spec`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Spec {
    /// Pinecone's serverless spec: `--cloud` and `--region`.
    Serverless,
}

/// Larch's ANN parameters (`SearchParams`); absent flags keep the server's values.
#[derive(Debug, clap::Args)]
pub(crate) struct SearchArgs {
    /// Links per HNSW graph node, 4-64.
    #[arg(long)]
    m: Option<u32>,
    /// Candidate list size while inserting, 8-4096.
    #[arg(long)]
    ef_construction: Option<u32>,
    /// Candidate list size while searching, 8-4096.
    #[arg(long)]
    ef_search: Option<u32>,
    /// How the graph holds vectors: none or int8.
    #[arg(long)]
    quantization: Option<String>,
}

impl SearchArgs {
    fn into_params(self) -> Option<SearchParams> {
        let SearchArgs {
            m,
            ef_construction,
            ef_search,
            quantization,
        } = self;
        let any = m.is_some()
            || ef_construction.is_some()
            || ef_search.is_some()
            || quantization.is_some();
        any.then_some(SearchParams {
            m,
            ef_construction,
            ef_search,
            quantization,
        })
    }
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}

/// A client of the control plane's `IndexService` with the configured key.
pub(crate) struct Indexes {
    client: IndexServiceClient<tonic::transport::Channel>,
    key: MetadataValue<Ascii>,
}

impl Indexes {
    pub(crate) async fn connect(connection: &Connection) -> anyhow::Result<Self> {
        let key = api_key()?;
        let client = IndexServiceClient::new(channel(connection).await?);
        Ok(Self { client, key })
    }

    pub(crate) fn key(&self) -> &MetadataValue<Ascii> {
        &self.key
    }

    pub(crate) async fn describe(&mut self, name: String) -> anyhow::Result<IndexModel> {
        let answer = self
            .client
            .describe_index(request(DescribeIndexRequest { name }, &self.key))
            .await
            .map_err(failed)?;
        Ok(answer.into_inner())
    }
}

/// Runs an `indexes` command and prints its answer.
pub(crate) fn run(
    connection: &Connection,
    output: OutputArgs,
    command: IndexesCommand,
) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let mut indexes = Indexes::connect(connection).await?;
        let key = indexes.key.clone();
        let client = &mut indexes.client;
        match command {
            IndexesCommand::Create {
                name,
                dimension,
                metric,
                vector_type,
                spec: Spec::Serverless,
                cloud,
                region,
                deletion_protection,
                tags,
                search,
            } => {
                let message = CreateIndexRequest {
                    name,
                    dimension,
                    metric,
                    spec: Some(IndexSpec {
                        serverless: Some(ServerlessSpec { cloud, region }),
                    }),
                    deletion_protection,
                    tags: tags.into_iter().collect(),
                    vector_type: Some(vector_type.as_str().to_owned()),
                    search: search.into_params(),
                };
                let index = client
                    .create_index(request(message, &key))
                    .await
                    .map_err(failed)?
                    .into_inner();
                show_index(output.output, index);
            }
            IndexesCommand::List => {
                let listed = client
                    .list_indexes(request(ListIndexesRequest {}, &key))
                    .await
                    .map_err(failed)?
                    .into_inner();
                let indexes: Vec<Value> = listed.indexes.into_iter().map(index_json).collect();
                match output.output {
                    Format::Json => print_json(&json!({ "indexes": indexes })),
                    Format::Table => {
                        let rows: Vec<Vec<String>> = indexes
                            .iter()
                            .map(|index| {
                                [
                                    "name",
                                    "vector_type",
                                    "dimension",
                                    "metric",
                                    "host",
                                    "deletion_protection",
                                ]
                                .iter()
                                .map(|field| cell(&index[field]))
                                .chain([cell(&index["status"]["state"])])
                                .collect()
                            })
                            .collect();
                        print_table(
                            &[
                                "NAME",
                                "TYPE",
                                "DIMENSION",
                                "METRIC",
                                "HOST",
                                "PROTECTION",
                                "STATE",
                            ],
                            &rows,
                        );
                    }
                }
            }
            IndexesCommand::Describe { name } => {
                let index = indexes.describe(name).await?;
                show_index(output.output, index);
            }
            IndexesCommand::Configure {
                name,
                deletion_protection,
                tags,
                search,
            } => {
                let message = ConfigureIndexRequest {
                    name,
                    deletion_protection,
                    tags: tags.into_iter().collect::<HashMap<_, _>>(),
                    search: search.into_params(),
                };
                let index = client
                    .configure_index(request(message, &key))
                    .await
                    .map_err(failed)?
                    .into_inner();
                show_index(output.output, index);
            }
            IndexesCommand::Delete { name } => {
                client
                    .delete_index(request(DeleteIndexRequest { name: name.clone() }, &key))
                    .await
                    .map_err(failed)?;
                match output.output {
                    Format::Json => print_json(&json!({"name": name, "deleted": true})),
                    Format::Table => println!("deleted index {name}"),
                }
            }
        }
        Ok(())
    })
}

fn show_index(format: Format, index: IndexModel) {
    let value = index_json(index);
    match format {
        Format::Json => print_json(&value),
        Format::Table => {
            let mut fields: Vec<(&str, String)> = [
                "name",
                "dimension",
                "metric",
                "vector_type",
                "host",
                "deletion_protection",
            ]
            .iter()
            .map(|field| (*field, cell(&value[field])))
            .collect();
            fields.push(("state", cell(&value["status"]["state"])));
            fields.push(("cloud", cell(&value["spec"]["serverless"]["cloud"])));
            fields.push(("region", cell(&value["spec"]["serverless"]["region"])));
            fields.push(("tags", cell(&value["tags"])));
            fields.push(("search", cell(&value["search"])));
            print_fields(&fields);
        }
    }
}

/// An index as the API's JSON form shows it (Pinecone's field names).
pub(crate) fn index_json(index: IndexModel) -> Value {
    let IndexModel {
        name,
        dimension,
        metric,
        host,
        spec,
        status,
        deletion_protection,
        tags,
        vector_type,
        search,
    } = index;
    let spec = spec
        .and_then(|IndexSpec { serverless }| serverless)
        .map(|ServerlessSpec { cloud, region }| {
            json!({"serverless": {"cloud": cloud, "region": region}})
        });
    let status = status.map(|IndexStatus { ready, state }| json!({"ready": ready, "state": state}));
    let search = search.map(
        |SearchParams {
             m,
             ef_construction,
             ef_search,
             quantization,
         }| {
            json!({
                "m": m,
                "ef_construction": ef_construction,
                "ef_search": ef_search,
                "quantization": quantization,
            })
        },
    );
    let tags: serde_json::Map<String, Value> = tags
        .into_iter()
        .map(|(key, value)| (key, Value::String(value)))
        .collect();
    json!({
        "name": name,
        "dimension": dimension,
        "metric": metric,
        "host": host,
        "spec": spec,
        "status": status,
        "deletion_protection": deletion_protection,
        "tags": tags,
        "vector_type": vector_type,
        "search": search,
    })
}
