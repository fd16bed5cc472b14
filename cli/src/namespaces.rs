//! `larch namespaces list|describe|delete`: an index's namespaces, over its data plane
//! (found by describing the index on the control plane, as for `larch vectors`).

use clap::{Args, Subcommand};
use larch_proto::pinecone::{
    DeleteNamespaceRequest, DescribeNamespaceRequest, IndexedFields, ListNamespacesRequest,
    MetadataSchema, NamespaceDescription, Pagination,
};
use serde_json::{Value, json};

use crate::admin::{Connection, request, runtime};
use crate::output::{Format, OutputArgs, cell, failed, print_fields, print_json, print_table};
use crate::vectors::{DataPlane, Route, namespace_label};

/// `larch namespaces …`
#[derive(Debug, Subcommand)]
pub(crate) enum NamespacesCommand {
    /// List the index's namespaces (every page).
    List {
        #[command(flatten)]
        index: IndexArg,
        /// Only namespaces starting with this.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Describe one namespace: its record count.
    Describe {
        #[command(flatten)]
        index: IndexArg,
        /// The namespace.
        name: String,
    },
    /// Delete a namespace and all of its records.
    Delete {
        #[command(flatten)]
        index: IndexArg,
        /// The namespace.
        name: String,
    },
}

/// `--index NAME`
#[derive(Debug, Args)]
pub(crate) struct IndexArg {
    /// The index name.
    #[arg(long)]
    index: String,
}

/// Runs a `namespaces` command and prints its answer.
pub(crate) fn run(
    connection: &Connection,
    route: &Route,
    output: OutputArgs,
    command: NamespacesCommand,
) -> anyhow::Result<()> {
    let format = output.output;
    runtime()?.block_on(async {
        match command {
            NamespacesCommand::List { index, prefix } => {
                let mut data = DataPlane::connect(connection, route, &index.index).await?;
                let mut namespaces = Vec::new();
                let mut token = None;
                loop {
                    let message = ListNamespacesRequest {
                        pagination_token: token.take(),
                        limit: None,
                        prefix: prefix.clone(),
                    };
                    let page = data
                        .client
                        .list_namespaces(request(message, &data.key))
                        .await
                        .map_err(failed)?
                        .into_inner();
                    namespaces.extend(page.namespaces.into_iter().map(namespace_json));
                    match page.pagination {
                        Some(Pagination { next }) if !next.is_empty() => token = Some(next),
                        _ => break,
                    }
                }
                match format {
                    Format::Json => print_json(&json!({ "namespaces": namespaces })),
                    Format::Table => {
                        let rows: Vec<Vec<String>> = namespaces
                            .iter()
                            .map(|ns| {
                                vec![
                                    namespace_label(&cell(&ns["name"])),
                                    cell(&ns["record_count"]),
                                ]
                            })
                            .collect();
                        print_table(&["NAMESPACE", "RECORDS"], &rows);
                    }
                }
            }
            NamespacesCommand::Describe { index, name } => {
                let mut data = DataPlane::connect(connection, route, &index.index).await?;
                let message = DescribeNamespaceRequest { namespace: name };
                let described = data
                    .client
                    .describe_namespace(request(message, &data.key))
                    .await
                    .map_err(failed)?
                    .into_inner();
                let described = namespace_json(described);
                match format {
                    Format::Json => print_json(&described),
                    Format::Table => print_fields(&[
                        ("name", namespace_label(&cell(&described["name"]))),
                        ("record_count", cell(&described["record_count"])),
                    ]),
                }
            }
            NamespacesCommand::Delete { index, name } => {
                let mut data = DataPlane::connect(connection, route, &index.index).await?;
                let message = DeleteNamespaceRequest {
                    namespace: name.clone(),
                };
                data.client
                    .delete_namespace(request(message, &data.key))
                    .await
                    .map_err(failed)?;
                match format {
                    Format::Json => print_json(&json!({"name": name, "deleted": true})),
                    Format::Table => println!("deleted namespace {name}"),
                }
            }
        }
        Ok(())
    })
}

fn namespace_json(namespace: NamespaceDescription) -> Value {
    let NamespaceDescription {
        name,
        record_count,
        schema,
        indexed_fields,
        size_bytes: _,
    } = namespace;
    let schema = schema.map(|MetadataSchema { fields }| {
        let fields: serde_json::Map<String, Value> = fields
            .into_iter()
            .map(|(name, properties)| (name, json!({"filterable": properties.filterable})))
            .collect();
        json!({ "fields": fields })
    });
    json!({
        "name": name,
        "record_count": record_count,
        "schema": schema,
        "indexed_fields": indexed_fields.map(|IndexedFields { fields }| json!({"fields": fields})),
    })
}
