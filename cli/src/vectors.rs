//! `larch vectors upsert|query|fetch|delete|list|stats`: an index's data plane (Pinecone's
//! `VectorService`) from a shell.
//!
//! Every command first describes the index on the control plane (`--addr`) to learn its
//! `host` (a bare `host:port`), then talks gRPC to that host with the same key.
//!
//! # Upserting a file
//! `upsert --file data.jsonl` reads JSON Lines, one record a line with Pinecone's field names:
//! `{"id":"a","values":[0.1,…],"sparse_values":{"indices":[3],"values":[0.5]},"metadata":{…}}`
//! (blank lines are ignored). Records go out in batches of `--batch` (at most 1,000, Pinecone's
//! limit) with up to `--in-flight` batches outstanding. A batch is parsed whole before it is
//! sent, so a bad line fails naming its line number before any record of its batch leaves.
//! Progress goes to stderr: a line rewritten in place with records/s and ETA on a terminal,
//! a plain line every few seconds otherwise. Upserts are idempotent, so a failed run can be
//! re-run as is; `--skip N` (the run's error says which N) starts after the first N records.
//!
//! `upsert --file emb.npy` reads a NumPy 2-D float32 (or float64) matrix, one record a row
//! (the format is parsed in [`crate::npy`], rows streamed). Ids come from `--ids-file` (one a
//! line, as many as there are rows, checked before anything is sent) or are generated as
//! `--id-prefix` and the row's 0-based index (default prefix: the file's stem and `-`, so
//! `emb-0`, `emb-1`, …). `--skip N` skips rows, by seeking; batching and progress are the
//! JSON Lines path's.
//!
//! `upsert --file data.parquet` reads Pinecone's Parquet import format (columns `id`,
//! `values`, `sparse_values`, `metadata` as a JSON string; read by the data plane's
//! [`larch_data_plane::import::parquet`], which bulk import uses too), a record a row; `--skip N`
//! skips rows. `--file DIR` reads a directory in Pinecone's import layout: one sub-directory per
//! namespace (`__default__` for the default one) of `.parquet` files, each namespace upserted in
//! turn (so `--namespace` and `--skip` do not apply).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, Subcommand};
use larch_proto::pinecone::vector_service_client::VectorServiceClient;
use larch_proto::pinecone::{
    DeleteRequest, DescribeIndexStatsRequest, DescribeIndexStatsResponse, FetchRequest,
    ListRequest, NamespaceSummary, Pagination, QueryRequest, ScoredVector, SparseValues,
    UpsertRequest, Vector,
};
use larch_proto::prost_types;
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::admin::{Connection, request, runtime};
use crate::indexes::Indexes;
use crate::npy;
use crate::output::{Format, OutputArgs, cell, failed, print_fields, print_json, print_table};
use larch_data_plane::import::parquet::{self as pq, ParquetRecords};

/// Pinecone's limit on records per upsert request.
const MAX_BATCH: usize = 1000;

/// Which index and namespace a command works on.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// The index name.
    #[arg(long)]
    pub(crate) index: String,
    /// The namespace [default: the default namespace, ""].
    #[arg(long, short = 'n', default_value = "")]
    pub(crate) namespace: String,
}

/// `larch vectors …`
#[derive(Debug, Subcommand)]
pub(crate) enum VectorsCommand {
    /// Upsert the records of a JSON Lines, .npy or Parquet file (or a directory in Pinecone's
    /// import layout), in batches, several in flight.
    Upsert {
        #[command(flatten)]
        target: Target,
        /// A .jsonl (or .ndjson) file: one {"id","values","sparse_values","metadata"} a line;
        /// a .npy 2-D float32 (or float64) matrix, one record a row; a .parquet file in
        /// Pinecone's import format; or a directory of namespace directories of .parquet files.
        #[arg(long)]
        file: PathBuf,
        /// For .npy input: the rows' ids, one a line, as many as the matrix has rows.
        #[arg(long, conflicts_with = "id_prefix")]
        ids_file: Option<PathBuf>,
        /// For .npy input: ids PREFIX0, PREFIX1, … by row [default: the file's stem and "-"].
        #[arg(long)]
        id_prefix: Option<String>,
        /// Records per request, 1-1000.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=1000))]
        batch: u16,
        /// Requests outstanding at once, 1-64.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=64))]
        in_flight: u8,
        /// Skip the file's first N records (resume a run that stopped).
        #[arg(long, default_value_t = 0)]
        skip: u64,
    },
    /// The nearest records to a vector (dense, sparse, or both for hybrid search), or to a
    /// stored record's vector; the server says which combinations an index takes.
    #[command(group(
        ArgGroup::new("by").required(true).multiple(true).args(["vector", "sparse_vector", "id"])
    ))]
    Query {
        #[command(flatten)]
        target: Target,
        /// The query vector as a JSON array, e.g. '[0.1,0.2]'.
        #[arg(long)]
        vector: Option<String>,
        /// Sparse query values as JSON, e.g. '{"indices":[3,17],"values":[0.5,0.2]}': the query
        /// of a sparse index, or with --vector a hybrid query of a dotproduct index.
        #[arg(long)]
        sparse_vector: Option<String>,
        /// Query with the vector of this stored record.
        #[arg(long)]
        id: Option<String>,
        /// How many matches.
        #[arg(long, default_value_t = 10)]
        top_k: u32,
        /// A metadata filter as JSON, e.g. '{"genre":"drama"}'.
        #[arg(long)]
        filter: Option<String>,
        /// Return each match's values.
        #[arg(long)]
        include_values: bool,
        /// Return each match's metadata.
        #[arg(long)]
        include_metadata: bool,
    },
    /// Fetch records by id.
    Fetch {
        #[command(flatten)]
        target: Target,
        /// Ids, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        ids: Vec<String>,
    },
    /// Delete records by id, by metadata filter, or all of a namespace.
    #[command(group(ArgGroup::new("what").required(true).args(["ids", "filter", "all"])))]
    Delete {
        #[command(flatten)]
        target: Target,
        /// Ids, comma-separated.
        #[arg(long, value_delimiter = ',')]
        ids: Vec<String>,
        /// A metadata filter as JSON.
        #[arg(long)]
        filter: Option<String>,
        /// Every record of the namespace.
        #[arg(long)]
        all: bool,
    },
    /// List record ids (every page), optionally by prefix.
    List {
        #[command(flatten)]
        target: Target,
        /// Only ids starting with this.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Record counts per namespace, dimension and metric.
    Stats {
        /// The index name.
        #[arg(long)]
        index: String,
    },
}

/// How to reach an index's data plane (`--connect-to`, on `vectors` and `namespaces`).
#[derive(Debug, Args)]
pub(crate) struct Route {
    /// Dial this address (host:port) instead of the index's host, still naming the host as
    /// the request's authority: split mode's host-routed data plane without wildcard DNS.
    #[arg(long, env = "LARCH_CONNECT_TO", global = true)]
    connect_to: Option<String>,
    /// The index's host (host:port, as `larch indexes describe` shows it): used as given
    /// instead of describing the index on the control plane, so a key with only data-plane
    /// roles (DataPlaneViewer, DataPlaneEditor), which may not describe indexes, works too.
    #[arg(long, env = "LARCH_INDEX_HOST", global = true)]
    host: Option<String>,
}

/// A data-plane client for one index, found by describing it on the control plane (or at
/// `--host`).
#[derive(Clone)]
pub(crate) struct DataPlane {
    pub(crate) client: VectorServiceClient<Channel>,
    pub(crate) key: MetadataValue<Ascii>,
}

impl DataPlane {
    pub(crate) async fn connect(
        connection: &Connection,
        route: &Route,
        index: &str,
    ) -> anyhow::Result<Self> {
        let (host, key) = match &route.host {
            Some(host) => (host.clone(), crate::output::api_key()?),
            None => {
                let mut indexes = Indexes::connect(connection).await?;
                let host = indexes.describe(index.to_owned()).await?.host;
                (host, indexes.key().clone())
            }
        };
        let url = with_scheme(&host);
        let endpoint = match &route.connect_to {
            None => Endpoint::from_shared(url.clone())
                .with_context(|| format!("index {index}: host {url:?} is not an address"))?,
            Some(addr) => {
                let origin = url
                    .parse::<tonic::codegen::http::Uri>()
                    .with_context(|| format!("index {index}: host {url:?} is not an address"))?;
                Endpoint::from_shared(with_scheme(addr))
                    .with_context(|| format!("--connect-to {addr:?} is not host:port"))?
                    .origin(origin)
            }
        };
        let url = route.connect_to.as_deref().map_or(url.clone(), with_scheme);
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach index {index}'s data plane at {url}"))?;
        Ok(Self {
            client: VectorServiceClient::new(channel),
            key,
        })
    }
}

/// The control plane answers a bare `host:port`; a scheme is kept if one is given.
fn with_scheme(host: &str) -> String {
    if host.contains("://") {
        host.to_owned()
    } else {
        format!("http://{host}")
    }
}

/// Runs a `vectors` command and prints its answer.
pub(crate) fn run(
    connection: &Connection,
    route: &Route,
    output: OutputArgs,
    command: VectorsCommand,
) -> anyhow::Result<()> {
    let format = output.output;
    runtime()?.block_on(async {
        match command {
            VectorsCommand::Upsert {
                target,
                file,
                ids_file,
                id_prefix,
                batch,
                in_flight,
                skip,
            } => {
                let plan = Upsert {
                    file,
                    ids_file,
                    id_prefix,
                    namespace: target.namespace,
                    batch: usize::from(batch).min(MAX_BATCH),
                    in_flight: usize::from(in_flight),
                    skip,
                };
                let summary = if plan.file.is_dir() {
                    upsert_layout(plan, connection, route, &target.index).await?
                } else {
                    let records = plan.open()?;
                    let data = DataPlane::connect(connection, route, &target.index).await?;
                    let namespace = plan.namespace.clone();
                    let upserted = plan.run(records, data).await?;
                    json!({"upserted_count": upserted, "namespace": namespace})
                };
                match format {
                    Format::Json => print_json(&summary),
                    Format::Table => println!(
                        "upserted {} records into {}",
                        summary["upserted_count"], target.index
                    ),
                }
            }
            VectorsCommand::Query {
                target,
                vector,
                sparse_vector,
                id,
                top_k,
                filter,
                include_values,
                include_metadata,
            } => {
                let vector = match vector {
                    Some(text) => serde_json::from_str::<Vec<f32>>(&text).with_context(|| {
                        format!("--vector {text:?} is not a JSON array of numbers")
                    })?,
                    None => Vec::new(),
                };
                let sparse_vector = match sparse_vector {
                    Some(text) => {
                        let json = serde_json::from_str::<Value>(&text)
                            .with_context(|| format!("--sparse-vector {text:?} is not JSON"))?;
                        Some(parse_sparse(json, "--sparse-vector").map_err(anyhow::Error::msg)?)
                    }
                    None => None,
                };
                // `queries` is Pinecone's deprecated batch form: named, left empty.
                #[allow(deprecated)]
                let message = QueryRequest {
                    namespace: target.namespace,
                    top_k,
                    filter: filter
                        .as_deref()
                        .map(|f| parse_filter(f, "--filter"))
                        .transpose()?,
                    include_values,
                    include_metadata,
                    queries: Vec::new(),
                    vector,
                    sparse_vector,
                    id: id.unwrap_or_default(),
                    scan_factor: None,
                    max_candidates: None,
                };
                let mut data = DataPlane::connect(connection, route, &target.index).await?;
                let answer = data
                    .client
                    .query(request(message, &data.key))
                    .await
                    .map_err(failed)?
                    .into_inner();
                let matches: Vec<Value> = answer.matches.into_iter().map(scored_json).collect();
                match format {
                    Format::Json => {
                        print_json(&json!({"matches": matches, "namespace": answer.namespace}));
                    }
                    Format::Table => print_records(
                        &["ID", "SCORE"],
                        &matches,
                        &["id", "score"],
                        include_values,
                        include_metadata,
                    ),
                }
            }
            VectorsCommand::Fetch { target, ids } => {
                let mut data = DataPlane::connect(connection, route, &target.index).await?;
                let message = FetchRequest {
                    ids: ids.clone(),
                    namespace: target.namespace,
                };
                let answer = data
                    .client
                    .fetch(request(message, &data.key))
                    .await
                    .map_err(failed)?
                    .into_inner();
                let vectors: Map<String, Value> = answer
                    .vectors
                    .into_iter()
                    .map(|(id, vector)| (id, vector_json(vector)))
                    .collect();
                match format {
                    Format::Json => {
                        print_json(&json!({"vectors": vectors, "namespace": answer.namespace}))
                    }
                    Format::Table => {
                        // In the order asked for; ids not found are left out, as in the API.
                        let rows: Vec<Value> = ids
                            .iter()
                            .filter_map(|id| vectors.get(id).cloned())
                            .collect();
                        print_records(&["ID"], &rows, &["id"], true, true);
                    }
                }
            }
            VectorsCommand::Delete {
                target,
                ids,
                filter,
                all,
            } => {
                let mut data = DataPlane::connect(connection, route, &target.index).await?;
                let message = DeleteRequest {
                    ids,
                    delete_all: all,
                    namespace: target.namespace.clone(),
                    filter: filter
                        .as_deref()
                        .map(|f| parse_filter(f, "--filter"))
                        .transpose()?,
                };
                data.client
                    .delete(request(message, &data.key))
                    .await
                    .map_err(failed)?;
                match format {
                    Format::Json => {
                        print_json(&json!({"deleted": true, "namespace": target.namespace}));
                    }
                    Format::Table => println!("deleted"),
                }
            }
            VectorsCommand::List { target, prefix } => {
                let mut data = DataPlane::connect(connection, route, &target.index).await?;
                let mut ids = Vec::new();
                let mut token = None;
                loop {
                    let message = ListRequest {
                        prefix: prefix.clone(),
                        limit: None,
                        pagination_token: token.take(),
                        namespace: target.namespace.clone(),
                    };
                    let page = data
                        .client
                        .list(request(message, &data.key))
                        .await
                        .map_err(failed)?
                        .into_inner();
                    ids.extend(page.vectors.into_iter().map(|item| item.id));
                    match page.pagination {
                        Some(Pagination { next }) if !next.is_empty() => token = Some(next),
                        _ => break,
                    }
                }
                match format {
                    Format::Json => print_json(&json!({
                        "vectors": ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
                        "namespace": target.namespace,
                    })),
                    Format::Table => {
                        let rows: Vec<Vec<String>> = ids.into_iter().map(|id| vec![id]).collect();
                        print_table(&["ID"], &rows);
                    }
                }
            }
            VectorsCommand::Stats { index } => {
                let mut data = DataPlane::connect(connection, route, &index).await?;
                let message = DescribeIndexStatsRequest { filter: None };
                let stats = data
                    .client
                    .describe_index_stats(request(message, &data.key))
                    .await
                    .map_err(failed)?
                    .into_inner();
                let stats = stats_json(stats);
                match format {
                    Format::Json => print_json(&stats),
                    Format::Table => {
                        print_fields(&[
                            ("dimension", cell(&stats["dimension"])),
                            ("metric", cell(&stats["metric"])),
                            ("total_vector_count", cell(&stats["total_vector_count"])),
                        ]);
                        println!();
                        let rows: Vec<Vec<String>> = stats["namespaces"]
                            .as_object()
                            .map(|namespaces| {
                                namespaces
                                    .iter()
                                    .map(|(name, summary)| {
                                        vec![namespace_label(name), cell(&summary["vector_count"])]
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        print_table(&["NAMESPACE", "VECTORS"], &rows);
                    }
                }
            }
        }
        Ok(())
    })
}

/// A namespace as a table shows it: the default one (named "") as `(default)`.
pub(crate) fn namespace_label(name: &str) -> String {
    if name.is_empty() {
        "(default)".to_owned()
    } else {
        name.to_owned()
    }
}

/// A table of records: the `columns` fields, then values and metadata when asked for.
fn print_records(
    header: &[&str],
    records: &[Value],
    columns: &[&str],
    values: bool,
    metadata: bool,
) {
    let mut header = header.to_vec();
    if values {
        header.push("VALUES");
    }
    if metadata {
        header.push("METADATA");
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| {
            let mut row: Vec<String> = columns.iter().map(|c| cell(&record[c])).collect();
            if values {
                row.push(cell(&record["values"]));
            }
            if metadata {
                row.push(cell(&record["metadata"]));
            }
            row
        })
        .collect();
    print_table(&header, &rows);
}

/// An upsert of one file.
struct Upsert {
    file: PathBuf,
    ids_file: Option<PathBuf>,
    id_prefix: Option<String>,
    namespace: String,
    batch: usize,
    in_flight: usize,
    skip: u64,
}

/// One batch sent: its sequence number and the count of the file's records up to its end.
type Sent = (usize, u64, Result<u32, tonic::Status>);

impl Upsert {
    /// Opens the input past `--skip`, refusing what it cannot read before anything is sent.
    fn open(&self) -> anyhow::Result<Records> {
        let extension = self.file.extension().and_then(|e| e.to_str()).unwrap_or("");
        let (total, source) = match extension {
            "jsonl" | "ndjson" => {
                self.refuse_ids_flags("a JSON Lines record")?;
                let total = count_records(&self.file)?.saturating_sub(self.skip);
                let file = File::open(&self.file)
                    .with_context(|| format!("cannot open {}", self.file.display()))?;
                let lines = BufReader::new(file).lines();
                let source = Source::Jsonl {
                    lines,
                    number: 0,
                    skip: self.skip,
                };
                (total, source)
            }
            "parquet" => {
                self.refuse_ids_flags("a Parquet record")?;
                let file = ParquetRecords::open(&self.file, self.skip)?;
                let total = file.rows().saturating_sub(self.skip);
                (
                    total,
                    Source::Parquet {
                        file,
                        batch: Vec::new().into_iter(),
                        name: false,
                    },
                )
            }
            "npy" => {
                let mut rows = npy::Rows::open(&self.file)?;
                let count = rows.header().rows;
                let ids = match (&self.ids_file, &self.id_prefix) {
                    (Some(path), _) => Ids::File(open_ids(path, count, self.skip)?),
                    (None, Some(prefix)) => Ids::Prefix(prefix.clone()),
                    (None, None) => {
                        let stem = self.file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                        Ids::Prefix(format!("{stem}-"))
                    }
                };
                rows.seek(self.skip)?;
                (count.saturating_sub(self.skip), Source::Npy { rows, ids })
            }
            other => bail!(
                "{}: .{other} input is not supported; give a JSON Lines file (.jsonl) with one \
                 {{\"id\",\"values\",\"sparse_values\",\"metadata\"}} object a line, a \
                 .npy 2-D float32 matrix, a .parquet file in Pinecone's import format, or a \
                 directory in Pinecone's import layout",
                self.file.display()
            ),
        };
        Ok(Records { total, source })
    }

    /// Refuses `--ids-file` and `--id-prefix` for input whose records carry their own id.
    fn refuse_ids_flags(&self, what: &str) -> anyhow::Result<()> {
        if self.ids_file.is_some() || self.id_prefix.is_some() {
            bail!("--ids-file and --id-prefix apply to .npy input only; {what} carries its own id");
        }
        Ok(())
    }

    /// Upserts `records` into `data`; how many the server acknowledged.
    async fn run(self, mut records: Records, data: DataPlane) -> anyhow::Result<u64> {
        let mut progress = Progress::new(records.total);
        let mut sending = JoinSet::new();
        // Acknowledged batches: sequence → records of the file up to the batch's end; the
        // contiguous prefix tells `--skip` for a re-run.
        let mut acknowledged: BTreeMap<usize, u64> = BTreeMap::new();
        let mut resume = Resume {
            next: 0,
            records: self.skip,
        };
        let mut batch = Vec::with_capacity(self.batch);
        let mut seen: u64 = self.skip;
        let mut sequence = 0;
        let mut upserted: u64 = 0;
        while let Some(read) = records
            .next()
            .with_context(|| self.file.display().to_string())?
        {
            seen += 1;
            let record = match read {
                Ok(record) => record,
                Err(bad) => {
                    // What is in flight still lands: wait, so the resume point is exact.
                    while let Some(sent) = sending.join_next().await {
                        upserted += settle(sent, &mut acknowledged, &mut resume)?;
                    }
                    progress.finish(upserted);
                    bail!(
                        "{}: {} {}: {}\nnothing of this {}'s batch was sent; {} records before it \
                         were upserted (fix the {} and re-run with --skip {})",
                        self.file.display(),
                        bad.unit,
                        bad.number,
                        bad.message,
                        bad.unit,
                        upserted,
                        bad.unit,
                        resume.records
                    );
                }
            };
            batch.push(record);
            if batch.len() == self.batch {
                while sending.len() >= self.in_flight {
                    let sent = sending.join_next().await.expect("the set is not empty");
                    upserted += settle(sent, &mut acknowledged, &mut resume)?;
                    progress.show(upserted);
                }
                self.send(
                    &mut sending,
                    &data,
                    sequence,
                    seen,
                    std::mem::take(&mut batch),
                );
                sequence += 1;
            }
        }
        if !batch.is_empty() {
            self.send(&mut sending, &data, sequence, seen, batch);
        }
        while let Some(sent) = sending.join_next().await {
            upserted += settle(sent, &mut acknowledged, &mut resume)?;
            progress.show(upserted);
        }
        progress.finish(upserted);
        Ok(upserted)
    }

    fn send(
        &self,
        sending: &mut JoinSet<Sent>,
        data: &DataPlane,
        sequence: usize,
        records_to_end: u64,
        vectors: Vec<Vector>,
    ) {
        let mut client = data.client.clone();
        let message = UpsertRequest {
            vectors,
            namespace: self.namespace.clone(),
        };
        let message = request(message, &data.key);
        sending.spawn(async move {
            let answer = client.upsert(message).await;
            (
                sequence,
                records_to_end,
                answer.map(|a| a.into_inner().upserted_count),
            )
        });
    }
}

/// Where a re-run may start: the next batch not yet acknowledged, and the records before it.
struct Resume {
    next: usize,
    records: u64,
}

/// Records one finished batch; a refused one ends the run with the server's message.
fn settle(
    sent: Result<Sent, tokio::task::JoinError>,
    acknowledged: &mut BTreeMap<usize, u64>,
    resume: &mut Resume,
) -> anyhow::Result<u64> {
    let (sequence, records_to_end, answer) = sent.context("an upsert task failed")?;
    match answer {
        Ok(count) => {
            acknowledged.insert(sequence, records_to_end);
            while let Some(records) = acknowledged.remove(&resume.next) {
                resume.records = records;
                resume.next += 1;
            }
            Ok(u64::from(count))
        }
        Err(status) => Err(failed(status).context(match resume.records {
            // Nothing acknowledged: a plain refusal (a key without the right, a bad index),
            // not a run to resume.
            0 => "upsert refused; no record of this run was written".to_owned(),
            records => format!(
                "upsert refused; the file's first {records} records are in (re-run with --skip {records})"
            ),
        })),
    }
}

/// An upsert's input, positioned past `--skip`: what is left of it and where it comes from.
struct Records {
    total: u64,
    source: Source,
}

/// Where records come from: JSON Lines, or a `.npy` matrix's rows with their ids.
enum Source {
    Jsonl {
        lines: std::io::Lines<BufReader<File>>,
        /// The last line read, 1-based.
        number: usize,
        /// Records still to pass over unparsed.
        skip: u64,
    },
    Npy {
        rows: npy::Rows,
        ids: Ids,
    },
    Parquet {
        file: ParquetRecords,
        /// The rest of the batch of rows last read.
        batch: std::vec::IntoIter<pq::Row>,
        /// Whether a bad row's message names its file (a directory's files).
        name: bool,
    },
}

/// A `.npy` row's id: the prefix and the row's index, or the ids file's line.
enum Ids {
    Prefix(String),
    File(IdsFile),
}

/// An ids file being read in step with the rows.
struct IdsFile {
    path: PathBuf,
    lines: std::io::Lines<BufReader<File>>,
}

/// A record that cannot be sent: which line or row, and why.
struct Bad {
    unit: &'static str,
    number: u64,
    message: String,
}

impl Records {
    /// The next record, a record that cannot be sent, or `None` at the end.
    fn next(&mut self) -> anyhow::Result<Option<Result<Vector, Bad>>> {
        match &mut self.source {
            Source::Jsonl {
                lines,
                number,
                skip,
            } => loop {
                let Some(line) = lines.next() else {
                    return Ok(None);
                };
                *number += 1;
                let line = line.with_context(|| format!("cannot read line {number}"))?;
                if line.trim().is_empty() {
                    continue;
                }
                if *skip > 0 {
                    *skip -= 1;
                    continue;
                }
                return Ok(Some(parse_record(&line).map_err(|message| Bad {
                    unit: "line",
                    number: *number as u64,
                    message,
                })));
            },
            Source::Npy { rows, ids } => {
                let Some((row, values)) = rows.next_row()? else {
                    return Ok(None);
                };
                let id = match ids {
                    Ids::Prefix(prefix) => format!("{prefix}{row}"),
                    Ids::File(file) => file.next(row)?,
                };
                if let Some((at, value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                    return Ok(Some(Err(Bad {
                        unit: "row",
                        number: row,
                        message: format!("values[{at}] is {value}; values must be finite"),
                    })));
                }
                Ok(Some(Ok(Vector {
                    id,
                    values,
                    ..Vector::default()
                })))
            }
            Source::Parquet { file, batch, name } => loop {
                if let Some(row) = batch.next() {
                    return Ok(Some(row.map(proto_vector).map_err(|bad| Bad {
                        unit: "row",
                        number: bad.row,
                        message: if *name {
                            format!("{} (in {})", bad.message, bad.file.display())
                        } else {
                            bad.message
                        },
                    })));
                }
                match file.next_batch()? {
                    Some(rows) => *batch = rows.into_iter(),
                    None => return Ok(None),
                }
            },
        }
    }

    /// The records of each of `files`, opened (columns checked), in order.
    fn parquet_files(files: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, Records)>> {
        files
            .iter()
            .map(|path| {
                let file = ParquetRecords::open(path, 0)?;
                let records = Records {
                    total: file.rows(),
                    source: Source::Parquet {
                        file,
                        batch: Vec::new().into_iter(),
                        name: true,
                    },
                };
                Ok((path.clone(), records))
            })
            .collect()
    }
}

/// An engine upsert record (the Parquet reader's) as the wire's `Vector`.
fn proto_vector(record: larch_engine::VectorInput) -> Vector {
    let larch_engine::VectorInput {
        id,
        values,
        sparse_values,
        metadata,
    } = record;
    Vector {
        id,
        values,
        sparse_values: sparse_values
            .map(|larch_engine::SparseInput { indices, values }| SparseValues { indices, values }),
        metadata: metadata.map(to_struct),
    }
}

/// `upsert --file DIR`: each namespace directory of Pinecone's import layout in turn, its
/// Parquet files one after another; every file is opened (its columns checked) first.
async fn upsert_layout(
    plan: Upsert,
    connection: &Connection,
    route: &Route,
    index: &str,
) -> anyhow::Result<Value> {
    if !plan.namespace.is_empty() || plan.skip > 0 {
        bail!(
            "{}: a directory's sub-directories name the namespaces and each is upserted whole; \
             --namespace and --skip apply to a single file",
            plan.file.display()
        );
    }
    plan.refuse_ids_flags("a Parquet record")?;
    let layout = pq::namespaces(&plan.file)?;
    if layout.is_empty() {
        bail!(
            "{}: no namespace directories with .parquet files (Pinecone's import layout: \
             DIR/NAMESPACE/*.parquet, DIR/__default__/ for the default namespace)",
            plan.file.display()
        );
    }
    let mut opened = Vec::new();
    for (namespace, files) in layout {
        opened.push((namespace, Records::parquet_files(&files)?));
    }
    let data = DataPlane::connect(connection, route, index).await?;
    let mut total: u64 = 0;
    let mut namespaces = Map::new();
    for (namespace, files) in opened {
        let mut count: u64 = 0;
        for (path, records) in files {
            let one = Upsert {
                file: path,
                ids_file: None,
                id_prefix: None,
                namespace: namespace.clone(),
                batch: plan.batch,
                in_flight: plan.in_flight,
                skip: 0,
            };
            count += one
                .run(records, data.clone())
                .await
                .with_context(|| format!("namespace {:?}", namespace_label(&namespace)))?;
        }
        total += count;
        namespaces.insert(namespace, json!({"upserted_count": count}));
    }
    Ok(json!({"upserted_count": total, "namespaces": namespaces}))
}

impl IdsFile {
    fn next(&mut self, row: u64) -> anyhow::Result<String> {
        match self.lines.next() {
            Some(line) => Ok(line
                .with_context(|| format!("cannot read {}", self.path.display()))?
                .trim_end_matches('\r')
                .to_owned()),
            None => bail!("{}: no id for row {row}", self.path.display()),
        }
    }
}

/// Opens an ids file after checking it holds one non-empty id a line for each of `rows`,
/// positioned at the id of row `skip`.
fn open_ids(path: &Path, rows: u64, skip: u64) -> anyhow::Result<IdsFile> {
    let open = || {
        File::open(path)
            .map(|file| BufReader::new(file).lines())
            .with_context(|| format!("cannot open {}", path.display()))
    };
    let mut count: u64 = 0;
    for line in open()? {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        count += 1;
        if line.trim_end_matches('\r').is_empty() {
            bail!(
                "{}: line {count} is empty; give one id a line, one for each row",
                path.display()
            );
        }
    }
    if count != rows {
        bail!(
            "{} has {count} ids but the matrix has {rows} rows; give one id a line, one for each \
             row (nothing was sent)",
            path.display()
        );
    }
    let mut ids = IdsFile {
        path: path.to_owned(),
        lines: open()?,
    };
    for row in 0..skip.min(rows) {
        ids.next(row)?;
    }
    Ok(ids)
}

/// The file's non-blank lines, for the ETA.
fn count_records(path: &Path) -> anyhow::Result<u64> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut count = 0;
    for line in BufReader::new(file).lines() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if !line.trim().is_empty() {
            count += 1;
        }
    }
    Ok(count)
}

/// Upsert progress on stderr: rewritten in place on a terminal, periodic lines otherwise.
struct Progress {
    total: u64,
    start: Instant,
    last: Instant,
    terminal: bool,
}

impl Progress {
    fn new(total: u64) -> Self {
        let now = Instant::now();
        Self {
            total,
            start: now,
            last: now,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn line(&self, done: u64) -> String {
        let elapsed = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / elapsed;
        let eta = if rate > 0.0 {
            format!("{:.0}s", self.total.saturating_sub(done) as f64 / rate)
        } else {
            "?".to_owned()
        };
        let percent = if self.total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / self.total as f64
        };
        format!(
            "{done}/{} records ({percent:.0}%)  {rate:.0} records/s  ETA {eta}",
            self.total
        )
    }

    fn show(&mut self, done: u64) {
        let every = if self.terminal {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(5)
        };
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let mut stderr = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not fail the upsert.
        let _ = if self.terminal {
            write!(stderr, "\r\x1b[2K{}", self.line(done))
        } else {
            writeln!(stderr, "{}", self.line(done))
        };
    }

    fn finish(&mut self, done: u64) {
        let line = self.line(done);
        let mut stderr = std::io::stderr().lock();
        let _ = if self.terminal {
            writeln!(stderr, "\r\x1b[2K{line} in {:.1?}", self.start.elapsed())
        } else {
            writeln!(stderr, "{line} in {:.1?}", self.start.elapsed())
        };
    }
}

/// Sparse values as JSON, `{"indices":[…],"values":[…]}`; errors name `field`.
fn parse_sparse(value: Value, field: &str) -> Result<SparseValues, String> {
    let Value::Object(mut sparse) = value else {
        return Err(format!("\"{field}\" must be an object"));
    };
    let indices = match sparse.remove("indices") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| format!("\"{field}.indices\" must be integers 0-4294967295"))
            })
            .collect::<Result<Vec<u32>, _>>()?,
        _ => return Err(format!("\"{field}.indices\" must be an array")),
    };
    let values = floats(
        sparse.get("values").unwrap_or(&Value::Null),
        &format!("{field}.values"),
    )?;
    Ok(SparseValues { indices, values })
}

/// One JSON Lines record, with Pinecone's field names.
fn parse_record(line: &str) -> Result<Vector, String> {
    let value: Value = serde_json::from_str(line).map_err(|err| format!("not JSON: {err}"))?;
    let Value::Object(mut fields) = value else {
        return Err("not a JSON object".into());
    };
    let id = match fields.remove("id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        Some(_) => return Err("\"id\" must be a non-empty string".into()),
        None => return Err("missing \"id\"".into()),
    };
    let values = match fields.remove("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(values) => floats(&values, "values")?,
    };
    let sparse_values = match fields.remove("sparse_values") {
        None | Some(Value::Null) => None,
        Some(sparse) => Some(parse_sparse(sparse, "sparse_values")?),
    };
    let metadata = match fields.remove("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(metadata)) => Some(to_struct(metadata)),
        Some(_) => return Err("\"metadata\" must be an object".into()),
    };
    if let Some(unknown) = fields.keys().next() {
        return Err(format!(
            "unknown field {unknown:?} (expected id, values, sparse_values, metadata)"
        ));
    }
    Ok(Vector {
        id,
        values,
        sparse_values,
        metadata,
    })
}

fn floats(value: &Value, field: &str) -> Result<Vec<f32>, String> {
    let Value::Array(items) = value else {
        return Err(format!("{field:?} must be an array of numbers"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| format!("\"{field}[{i}]\" is not a number"))
        })
        .collect()
}

/// A filter flag's JSON object as a `Struct`.
fn parse_filter(text: &str, flag: &str) -> anyhow::Result<prost_types::Struct> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => Ok(to_struct(fields)),
        _ => bail!("{flag} {text:?} is not a JSON object such as '{{\"genre\":\"drama\"}}'"),
    }
}

fn to_struct(fields: Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: fields
            .into_iter()
            .map(|(key, value)| (key, to_proto(value)))
            .collect(),
    }
}

fn to_proto(value: Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(flag) => Kind::BoolValue(flag),
        Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or(f64::NAN)),
        Value::String(text) => Kind::StringValue(text),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(to_proto).collect(),
        }),
        Value::Object(fields) => Kind::StructValue(to_struct(fields)),
    };
    prost_types::Value { kind: Some(kind) }
}

pub(crate) fn from_struct(metadata: prost_types::Struct) -> Value {
    Value::Object(
        metadata
            .fields
            .into_iter()
            .map(|(key, value)| (key, from_proto(value)))
            .collect(),
    )
}

fn from_proto(value: prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(flag)) => Value::Bool(flag),
        Some(Kind::NumberValue(number)) => json!(number),
        Some(Kind::StringValue(text)) => Value::String(text),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.into_iter().map(from_proto).collect())
        }
        Some(Kind::StructValue(fields)) => from_struct(fields),
    }
}

/// An `f32` as JSON with its shortest decimal form (`0.1`, not `0.10000000149011612`).
fn f32_json(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn floats_json(values: Vec<f32>) -> Value {
    Value::Array(values.into_iter().map(f32_json).collect())
}

fn sparse_json(sparse: Option<SparseValues>) -> Value {
    sparse.map_or(Value::Null, |SparseValues { indices, values }| {
        json!({"indices": indices, "values": floats_json(values)})
    })
}

fn vector_json(vector: Vector) -> Value {
    let Vector {
        id,
        values,
        sparse_values,
        metadata,
    } = vector;
    json!({
        "id": id,
        "values": floats_json(values),
        "sparse_values": sparse_json(sparse_values),
        "metadata": metadata.map_or(Value::Null, from_struct),
    })
}

fn scored_json(scored: ScoredVector) -> Value {
    let ScoredVector {
        id,
        score,
        values,
        sparse_values,
        metadata,
    } = scored;
    json!({
        "id": id,
        "score": f32_json(score),
        "values": floats_json(values),
        "sparse_values": sparse_json(sparse_values),
        "metadata": metadata.map_or(Value::Null, from_struct),
    })
}

fn stats_json(stats: DescribeIndexStatsResponse) -> Value {
    let DescribeIndexStatsResponse {
        namespaces,
        dimension,
        index_fullness,
        total_vector_count,
        metric,
        vector_type,
        memory_fullness: _,
        storage_fullness: _,
    } = stats;
    let namespaces: Map<String, Value> = namespaces
        .into_iter()
        .map(|(name, NamespaceSummary { vector_count })| {
            (name, json!({"vector_count": vector_count}))
        })
        .collect();
    json!({
        "namespaces": namespaces,
        "dimension": dimension,
        "index_fullness": index_fullness,
        "total_vector_count": total_vector_count,
        "metric": metric,
        "vector_type": vector_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_line_reads_pinecones_field_names() {
        let record = parse_record(
            r#"{"id":"a","values":[1,2.5],"sparse_values":{"indices":[3],"values":[0.5]},"metadata":{"genre":"drama","year":2001}}"#,
        )
        .unwrap();
        assert_eq!(record.id, "a");
        assert_eq!(record.values, [1.0, 2.5]);
        assert_eq!(f32_json(0.1).to_string(), "0.1");
        assert_eq!(record.sparse_values.unwrap().indices, [3]);
        let metadata = from_struct(record.metadata.unwrap());
        assert_eq!(metadata, json!({"genre": "drama", "year": 2001.0}));
    }

    #[test]
    fn a_bad_record_line_names_what_is_wrong() {
        assert!(parse_record("{").unwrap_err().starts_with("not JSON"));
        assert_eq!(
            parse_record(r#"{"values":[1]}"#).unwrap_err(),
            "missing \"id\""
        );
        assert_eq!(
            parse_record(r#"{"id":"a","values":[1,"x"]}"#).unwrap_err(),
            "\"values[1]\" is not a number"
        );
        assert!(
            parse_record(r#"{"id":"a","vector":[1]}"#)
                .unwrap_err()
                .contains("unknown field \"vector\"")
        );
    }
}
