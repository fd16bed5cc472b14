//! Writes the seed corpus of every fuzz target into `corpus/<target>/seed-*`:
//! `cargo run --example make_seeds` from `fuzz/` (see README.md). Storage seeds are real
//! files written by the engine; request seeds are valid requests of every kind.

use std::{fs, path::Path, thread, time::Duration};

use larch_engine::{
    DeleteRequest, Dimension, Engine, IndexConfig, Metric, Quantization, SearchParams,
    UpdateRequest, UpsertRequest, VectorInput,
};
use larch_proto::pinecone::{
    CreateNamespaceRequest, DeleteNamespaceRequest, DeleteRequest as PbDelete,
    DescribeIndexStatsRequest, DescribeNamespaceRequest, FetchByMetadataRequest, FetchRequest,
    ListNamespacesRequest, ListRequest, MetadataFieldProperties, MetadataSchema, QueryRequest,
    SparseValues, UpdateRequest as PbUpdate, UpsertRequest as PbUpsert, Vector,
};
use prost::Message;
use prost_types::{Struct, Value, value::Kind};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    storage(&corpus.join("storage_decode"))?;
    filter(&corpus.join("filter"))?;
    proto(&corpus.join("proto_requests"))?;
    rest(&corpus.join("rest_json"))?;
    Ok(())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join(format!("seed-{name}")), bytes)
}

/// Format bytes as `storage_decode` reads them (`Format::ALL` order).
const LOG: u8 = 0;
const LOG_RECORD: u8 = 1;
const SEGMENT: u8 = 2;
const MANIFEST: u8 = 3;
const INDEX_META: u8 = 4;
const GRAPH: u8 = 5;

/// The index byte of `storage_decode`: dimension 3, cosine; `| 0x8` seals.
const DIM3: u8 = 2;
const SEAL: u8 = 0x8;

fn vector(id: &str, values: [f32; 3], metadata: serde_json::Value) -> VectorInput {
    VectorInput {
        id: id.to_owned(),
        values: values.to_vec(),
        sparse_values: None,
        metadata: metadata.as_object().cloned(),
    }
}

/// A durable index of dimension 3 with every kind of change in its first log file, then
/// flushed to a segment and a manifest, with its graph saved.
fn storage(out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::temp_dir().join(format!("larch-seeds-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    for (name, metric, quantization, index_byte) in [
        ("cosine", Metric::Cosine, Quantization::None, DIM3),
        (
            "dotproduct-int8",
            Metric::DotProduct,
            Quantization::Int8,
            DIM3 | 0x20,
        ),
    ] {
        let engine = Engine::open(&root).with_ann_min_rows(1);
        let config = IndexConfig {
            dimension: Dimension::new(3)?,
            metric,
        };
        let index = engine.create_index(name, config)?;
        index.set_search_params(
            SearchParams::default()
                .with_m(4)?
                .with_quantization(quantization),
        );
        let mut vectors: Vec<VectorInput> = (0..12)
            .map(|i| {
                let i = i as f32;
                vector(
                    &format!("v{i}"),
                    [i, 1.0 - i, 0.5],
                    json!({"n": i, "genre": if i < 5.0 { "drama" } else { "comedy" }}),
                )
            })
            .collect();
        if metric == Metric::DotProduct {
            vectors[0].sparse_values = Some(larch_engine::SparseInput {
                indices: vec![1, 7],
                values: vec![0.5, -2.0],
            });
        }
        vectors[1].metadata = Some(
            json!({"tags": ["a", "b"], "ok": true})
                .as_object()
                .cloned()
                .expect("object"),
        );
        index.upsert(UpsertRequest {
            namespace: String::new(),
            vectors,
        })?;
        index.create_namespace("films", Some(vec!["genre".to_owned()]))?;
        index.upsert(UpsertRequest {
            namespace: "films".into(),
            vectors: vec![vector("f", [0.0, 0.0, 1.0], json!({"genre": "drama"}))],
        })?;
        index.update(UpdateRequest {
            id: "v2".into(),
            values: vec![9.0, 8.0, 7.0],
            set_metadata: json!({"genre": "noir"}).as_object().cloned(),
            ..Default::default()
        })?;
        index.update(UpdateRequest {
            filter: json!({"genre": "comedy"}).as_object().cloned(),
            set_metadata: json!({"seen": true}).as_object().cloned(),
            ..Default::default()
        })?;
        index.delete(DeleteRequest {
            ids: vec!["v3".into()],
            ..Default::default()
        })?;
        index.create_namespace("gone", None)?;
        index.delete_namespace("gone")?;
        index.upsert(UpsertRequest {
            namespace: "cleared".into(),
            vectors: vec![vector("c", [1.0, 1.0, 1.0], json!({}))],
        })?;
        index.delete(DeleteRequest {
            namespace: "cleared".into(),
            delete_all: true,
            ..Default::default()
        })?;

        let dir = root.join(name);
        pack(
            &out.with_file_name("recovery"),
            &format!("{name}-unflushed"),
            index_byte,
            &dir,
        )?;
        let log = fs::read(dir.join("wal-000001.log"))?;
        write(
            out,
            &format!("log-{name}"),
            &[&[LOG, index_byte][..], &log].concat(),
        )?;
        // Each record of the log on its own.
        let mut at = 24;
        let mut n = 0;
        while at + 12 <= log.len() {
            let len = u32::from_le_bytes(log[at..at + 4].try_into()?) as usize;
            let payload = &log[at + 12..at + 12 + len];
            write(
                out,
                &format!("log-record-{name}-{n}"),
                &[&[LOG_RECORD, index_byte][..], payload].concat(),
            )?;
            at += 12 + len;
            n += 1;
        }
        write(
            out,
            &format!("index-meta-{name}"),
            &[
                &[INDEX_META, index_byte][..],
                &fs::read(dir.join("index.meta"))?,
            ]
            .concat(),
        )?;

        // Wait for the background indexer to save the graph of the default namespace.
        let graphs = dir.join("graphs");
        for _ in 0..200 {
            if fs::read_dir(&graphs)
                .map(|d| d.count() > 0)
                .unwrap_or(false)
            {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        for entry in fs::read_dir(&graphs)? {
            let bytes = fs::read(entry?.path())?;
            write(
                out,
                &format!("graph-{name}"),
                &[&[GRAPH, index_byte | SEAL][..], &bytes].concat(),
            )?;
        }

        index.flush()?;
        write(
            out,
            &format!("manifest-{name}"),
            &[
                &[MANIFEST, index_byte | SEAL][..],
                &fs::read(dir.join("manifest"))?,
            ]
            .concat(),
        )?;
        let mut segments: Vec<_> = fs::read_dir(dir.join("segments"))?.collect::<Result<_, _>>()?;
        segments.sort_by_key(|e| e.path());
        for (n, entry) in segments.iter().enumerate() {
            let bytes = fs::read(entry.path())?;
            write(
                out,
                &format!("segment-{name}-{n}"),
                &[&[SEGMENT, index_byte | SEAL][..], &bytes].concat(),
            )?;
        }
        // A flushed index with more changes in its next log file.
        index.upsert(UpsertRequest {
            namespace: "films".into(),
            vectors: vec![vector("g", [0.5, 0.5, 0.0], json!({"genre": "noir"}))],
        })?;
        index.delete(DeleteRequest {
            ids: vec!["v4".into()],
            ..Default::default()
        })?;
        pack(
            &out.with_file_name("recovery"),
            &format!("{name}-flushed"),
            index_byte,
            &dir,
        )?;
        drop(index);
        drop(engine);
    }
    fs::remove_dir_all(&root)?;
    Ok(())
}

/// The files of the index directory `dir` as `recovery` reads them: the index byte, then
/// each file as its kind (sealed), a `u16` length and its bytes.
fn pack(out: &Path, name: &str, index_byte: u8, dir: &Path) -> std::io::Result<()> {
    const FILES: [&str; 9] = [
        "index.meta",
        "manifest",
        "wal-000001.log",
        "wal-000002.log",
        "wal-000003.log",
        "segments/seg-000001.seg",
        "segments/seg-000002.seg",
        "segments/seg-000003.seg",
        "segments/seg-000004.seg",
    ];
    let mut packed = vec![index_byte];
    for (kind, file) in FILES.iter().enumerate() {
        let Ok(bytes) = fs::read(dir.join(file)) else {
            continue;
        };
        let len = u16::try_from(bytes.len()).expect("seed files are small");
        packed.push(kind as u8 | 0x80);
        packed.extend_from_slice(&len.to_le_bytes());
        packed.extend_from_slice(&bytes);
    }
    write(out, name, &packed)
}

/// Filters and metadata as `filter` reads them: a filter object, then metadata objects.
fn filter(out: &Path) -> std::io::Result<()> {
    let records = r#"{"genre":"drama","year":2001,"tags":["a","b"]} {"genre":"comedy","year":1999.5,"rated":true} {} {"year":-3,"tags":[]} {"genre":"noir","rated":false}"#;
    let filters = [
        ("eq", r#"{"genre":"drama"}"#),
        (
            "ops",
            r#"{"year":{"$gte":2000,"$lt":2010},"genre":{"$ne":"comedy"}}"#,
        ),
        (
            "in",
            r#"{"tags":{"$in":["a","z"]},"genre":{"$nin":["noir",1]}}"#,
        ),
        (
            "logic",
            r#"{"$or":[{"rated":true},{"$and":[{"year":{"$exists":true}},{"year":{"$lte":0}}]}]}"#,
        ),
        (
            "exists",
            r#"{"rated":{"$exists":false},"$and":[{"genre":{"$eq":"drama"}}]}"#,
        ),
        ("empty", r#"{}"#),
    ];
    for (name, filter) in filters {
        write(out, name, format!("{filter} {records}").as_bytes())?;
    }
    Ok(())
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

fn object(fields: &[(&str, Value)]) -> Struct {
    Struct {
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    }
}

/// One request of every RPC as `proto_requests` reads it: the RPC's number, then the message.
#[allow(deprecated)] // `QueryRequest::queries`, the refused batch form, is set empty.
fn proto(out: &Path) -> std::io::Result<()> {
    let number = |n: f64| Value {
        kind: Some(Kind::NumberValue(n)),
    };
    let filter = object(&[
        ("genre", string("drama")),
        (
            "year",
            Value {
                kind: Some(Kind::StructValue(object(&[("$gte", number(2000.0))]))),
            },
        ),
    ]);
    let sparse = SparseValues {
        indices: vec![3, 9],
        values: vec![0.5, 0.25],
    };
    let messages: [(u8, &str, Vec<u8>); 12] = [
        (
            0,
            "upsert",
            PbUpsert {
                vectors: vec![Vector {
                    id: "e".into(),
                    values: vec![0.1, 0.2],
                    sparse_values: Some(sparse.clone()),
                    metadata: Some(object(&[
                        ("genre", string("noir")),
                        ("year", number(1950.0)),
                    ])),
                }],
                namespace: "ns".into(),
            }
            .encode_to_vec(),
        ),
        (
            1,
            "delete",
            PbDelete {
                ids: vec!["a".into()],
                delete_all: false,
                namespace: String::new(),
                filter: Some(filter.clone()),
            }
            .encode_to_vec(),
        ),
        (
            2,
            "fetch",
            FetchRequest {
                ids: vec!["a".into(), "b".into()],
                namespace: String::new(),
            }
            .encode_to_vec(),
        ),
        (
            3,
            "list",
            ListRequest {
                prefix: Some("a".into()),
                limit: Some(2),
                pagination_token: None,
                namespace: String::new(),
            }
            .encode_to_vec(),
        ),
        (
            4,
            "query",
            QueryRequest {
                namespace: String::new(),
                top_k: 2,
                filter: Some(filter.clone()),
                include_values: true,
                include_metadata: true,
                queries: vec![],
                vector: vec![0.5, 0.5],
                sparse_vector: Some(sparse.clone()),
                id: String::new(),
                scan_factor: None,
                max_candidates: None,
            }
            .encode_to_vec(),
        ),
        (
            5,
            "update",
            PbUpdate {
                id: "a".into(),
                values: vec![0.3, 0.4],
                sparse_values: Some(sparse),
                set_metadata: Some(object(&[(
                    "seen",
                    Value {
                        kind: Some(Kind::BoolValue(true)),
                    },
                )])),
                namespace: String::new(),
                filter: None,
                dry_run: Some(false),
            }
            .encode_to_vec(),
        ),
        (
            6,
            "describe-index-stats",
            DescribeIndexStatsRequest {
                filter: Some(filter.clone()),
            }
            .encode_to_vec(),
        ),
        (
            7,
            "list-namespaces",
            ListNamespacesRequest {
                pagination_token: None,
                limit: Some(1),
                prefix: Some("n".into()),
            }
            .encode_to_vec(),
        ),
        (
            8,
            "describe-namespace",
            DescribeNamespaceRequest {
                namespace: "ns".into(),
            }
            .encode_to_vec(),
        ),
        (
            9,
            "delete-namespace",
            DeleteNamespaceRequest {
                namespace: "ns".into(),
            }
            .encode_to_vec(),
        ),
        (
            10,
            "create-namespace",
            CreateNamespaceRequest {
                name: "new".into(),
                schema: Some(MetadataSchema {
                    fields: [(
                        "genre".to_owned(),
                        MetadataFieldProperties { filterable: true },
                    )]
                    .into_iter()
                    .collect(),
                }),
            }
            .encode_to_vec(),
        ),
        (
            11,
            "fetch-by-metadata",
            FetchByMetadataRequest {
                namespace: String::new(),
                filter: Some(filter),
                limit: Some(2),
                pagination_token: None,
            }
            .encode_to_vec(),
        ),
    ];
    for (rpc, name, bytes) in messages {
        write(out, name, &[&[rpc][..], &bytes].concat())?;
    }
    Ok(())
}

/// A request of every route as `rest_json` reads it: the route's number, then the body (or the
/// query string, or the path segment).
fn rest(out: &Path) -> std::io::Result<()> {
    let bodies: [(u8, &str, &str); 16] = [
        (
            0,
            "upsert",
            r#"{"vectors":[{"id":"e","values":[0.1,0.2],"sparseValues":{"indices":[1],"values":[0.5]},"metadata":{"genre":"noir","tags":["x"]}}],"namespace":"ns"}"#,
        ),
        (
            1,
            "query",
            r#"{"topK":2,"vector":[0.5,0.5],"filter":{"genre":{"$in":["drama"]}},"includeValues":true,"includeMetadata":true}"#,
        ),
        (2, "fetch", "ids=a&ids=b&namespace="),
        (
            3,
            "fetch-by-metadata",
            r#"{"filter":{"year":{"$gt":2000}},"limit":1,"namespace":""}"#,
        ),
        (4, "delete", r#"{"ids":["a"],"namespace":""}"#),
        (
            5,
            "update",
            r#"{"id":"a","values":[1,2],"setMetadata":{"seen":true},"namespace":""}"#,
        ),
        (6, "describe-index-stats", r#"{"filter":{"genre":"drama"}}"#),
        (7, "list", "prefix=a&limit=1&namespace="),
        (8, "list-namespaces", "limit=1&prefix=n"),
        (
            9,
            "create-namespace",
            r#"{"name":"new","schema":{"fields":{"genre":{"filterable":true}}}}"#,
        ),
        (10, "describe-namespace", "ns"),
        (11, "delete-namespace", "__default__"),
        (
            12,
            "create-index",
            r#"{"name":"films","dimension":3,"metric":"dotproduct","spec":{"serverless":{"cloud":"aws","region":"us-east-1"}},"deletion_protection":"disabled","tags":{"team":"a"}}"#,
        ),
        (
            12 | 0xC0,
            "create-index-2026",
            r#"{"name":"films","schema":{"fields":{"_values":{"type":"dense_vector","dimension":4,"metric":"cosine"}}},"deployment":{"deployment_type":"managed","cloud":"aws","region":"us-east-1"}}"#,
        ),
        (
            13,
            "configure-index",
            r#"{"deletion_protection":"enabled","tags":{"team":"b"}}"#,
        ),
        (14, "describe-index", "movies"),
    ];
    for (route, name, body) in bodies {
        write(out, name, &[&[route][..], body.as_bytes()].concat())?;
    }
    Ok(())
}
