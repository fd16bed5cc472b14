//! What `larch-bench load` sends, built before the clock starts: vectors read from a `.npy`
//! float matrix or a raw little-endian `f32` file, and every request message encoded once into
//! [`Bytes`] (Pinecone `Query`/`Upsert` for Larch, `SearchPoints`/`UpsertPoints` for Qdrant).

use std::path::Path;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use larch_proto::pinecone;
use prost::Message as _;
use prost_types::value::Kind;

use super::qdrant;

/// Row-major `rows × dim` vectors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Matrix {
    pub(crate) rows: usize,
    pub(crate) dim: usize,
    pub(crate) data: Vec<f32>,
}

impl Matrix {
    pub(crate) fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Reads `path`: a NumPy `.npy` 2-D array of `<f4` or `<f8` (C order), or else raw
/// little-endian `f32`s, `dim` per row. A given `dim` must match a `.npy` file's.
pub(crate) fn read_vectors(path: &Path, dim: Option<usize>) -> anyhow::Result<Matrix> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let matrix = if bytes.starts_with(b"\x93NUMPY") {
        let matrix = parse_npy(&bytes).with_context(|| format!("{}", path.display()))?;
        if let Some(dim) = dim {
            ensure!(
                dim == matrix.dim,
                "{}: --dim {dim} but the file's rows have {} values",
                path.display(),
                matrix.dim
            );
        }
        matrix
    } else {
        let dim = dim.with_context(|| {
            format!(
                "{} is not a .npy file: give --dim to read it as raw little-endian f32",
                path.display()
            )
        })?;
        ensure!(dim > 0, "--dim must be at least 1");
        ensure!(
            bytes.len() % (4 * dim) == 0,
            "{}: {} bytes is not a whole number of {dim}-value f32 rows",
            path.display(),
            bytes.len()
        );
        let data = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect::<Vec<_>>();
        Matrix {
            rows: data.len() / dim,
            dim,
            data,
        }
    };
    ensure!(matrix.rows > 0, "{} holds no vectors", path.display());
    Ok(matrix)
}

/// Parses a version 1–3 `.npy` file holding a 2-D little-endian float array in C order.
fn parse_npy(bytes: &[u8]) -> anyhow::Result<Matrix> {
    ensure!(bytes.len() >= 10, "truncated .npy header");
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            ensure!(bytes.len() >= 12, "truncated .npy header");
            let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (usize::try_from(len)?, 12)
        }
        v => bail!(".npy format version {v} is not supported"),
    };
    let header = bytes
        .get(start..start + header_len)
        .context("truncated .npy header")?;
    let header = std::str::from_utf8(header).context(".npy header is not text")?;
    let width = if header.contains("'<f4'") {
        4
    } else if header.contains("'<f8'") {
        8
    } else {
        bail!(".npy array must be little-endian float32 or float64 ('<f4'/'<f8'): {header}");
    };
    ensure!(
        !header.contains("'fortran_order': True"),
        ".npy array must be in C order"
    );
    let shape = header
        .split_once("'shape':")
        .and_then(|(_, rest)| rest.split_once('('))
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inside, _)| inside)
        .context(".npy header has no shape")?;
    let dims = shape
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::parse::<usize>)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!(".npy shape ({shape})"))?;
    let [rows, dim] = dims[..] else {
        bail!(".npy array must be 2-D (rows × dim), not ({shape})");
    };
    let body = &bytes[start + header_len..];
    ensure!(
        body.len() == rows * dim * width,
        ".npy holds {} data bytes, shape ({rows}, {dim}) needs {}",
        body.len(),
        rows * dim * width
    );
    let data = if width == 4 {
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        body.chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect()
    };
    Ok(Matrix { rows, dim, data })
}

/// A JSON object as a `google.protobuf.Struct` (a Pinecone metadata filter).
pub(crate) fn json_struct(text: &str) -> anyhow::Result<prost_types::Struct> {
    let value: serde_json::Value = serde_json::from_str(text).context("--filter is not JSON")?;
    match to_value(value).kind {
        Some(Kind::StructValue(s)) => Ok(s),
        _ => bail!("--filter must be a JSON object, e.g. '{{\"genre\": {{\"$eq\": \"drama\"}}}}'"),
    }
}

fn to_value(value: serde_json::Value) -> prost_types::Value {
    use serde_json::Value as J;
    let kind = match value {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => Kind::StringValue(s),
        J::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        J::Object(fields) => Kind::StructValue(prost_types::Struct {
            fields: fields.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// What a query asks for, beyond its vector.
#[derive(Debug, Clone)]
pub(crate) struct QueryShape {
    pub(crate) top_k: u32,
    pub(crate) namespace: String,
    pub(crate) include_values: bool,
    pub(crate) include_metadata: bool,
    pub(crate) filter: Option<prost_types::Struct>,
}

/// One encoded Pinecone `QueryRequest` per row.
pub(crate) fn larch_queries(queries: &Matrix, shape: &QueryShape) -> Vec<Bytes> {
    (0..queries.rows)
        .map(|i| {
            // Every field named (house rule 3); `queries` is Pinecone's deprecated batch form.
            #[allow(deprecated)]
            let request = pinecone::QueryRequest {
                namespace: shape.namespace.clone(),
                top_k: shape.top_k,
                filter: shape.filter.clone(),
                include_values: shape.include_values,
                include_metadata: shape.include_metadata,
                queries: Vec::new(),
                vector: queries.row(i).to_vec(),
                sparse_vector: None,
                id: String::new(),
                scan_factor: None,
                max_candidates: None,
            };
            Bytes::from(request.encode_to_vec())
        })
        .collect()
}

/// One encoded `SearchPoints` per row.
pub(crate) fn qdrant_queries(
    queries: &Matrix,
    shape: &QueryShape,
    collection: &str,
    hnsw_ef: Option<u64>,
) -> Vec<Bytes> {
    (0..queries.rows)
        .map(|i| {
            let request = qdrant::SearchPoints {
                collection_name: collection.to_owned(),
                vector: queries.row(i).to_vec(),
                limit: u64::from(shape.top_k),
                with_payload: Some(qdrant::Selector {
                    enable: Some(shape.include_metadata),
                }),
                params: Some(qdrant::SearchParams {
                    hnsw_ef,
                    exact: Some(false),
                }),
                with_vectors: Some(qdrant::Selector {
                    enable: Some(shape.include_values),
                }),
            };
            Bytes::from(request.encode_to_vec())
        })
        .collect()
}

/// Encoded upserts of every row once, `batch` rows per request, with the ids
/// `{id_prefix}{row}`; returns each request with its number of vectors.
pub(crate) fn larch_upserts(
    vectors: &Matrix,
    batch: usize,
    namespace: &str,
    id_prefix: &str,
) -> Vec<(Bytes, u64)> {
    batches(vectors.rows, batch)
        .map(|rows| {
            let count = rows.len() as u64;
            let request = pinecone::UpsertRequest {
                vectors: rows
                    .map(|row| pinecone::Vector {
                        id: format!("{id_prefix}{row}"),
                        values: vectors.row(row).to_vec(),
                        sparse_values: None,
                        metadata: None,
                    })
                    .collect(),
                namespace: namespace.to_owned(),
            };
            (Bytes::from(request.encode_to_vec()), count)
        })
        .collect()
}

/// Like [`larch_upserts`] for Qdrant: point id = row number, `wait: true`.
pub(crate) fn qdrant_upserts(
    vectors: &Matrix,
    batch: usize,
    collection: &str,
) -> Vec<(Bytes, u64)> {
    batches(vectors.rows, batch)
        .map(|rows| {
            let count = rows.len() as u64;
            let request = qdrant::UpsertPoints {
                collection_name: collection.to_owned(),
                wait: Some(true),
                points: rows
                    .map(|row| qdrant::PointStruct {
                        id: Some(qdrant::PointId {
                            num: Some(row as u64),
                            uuid: None,
                        }),
                        vectors: Some(qdrant::Vectors {
                            vector: Some(qdrant::Vector {
                                data: vectors.row(row).to_vec(),
                            }),
                        }),
                    })
                    .collect(),
            };
            (Bytes::from(request.encode_to_vec()), count)
        })
        .collect()
}

fn batches(rows: usize, batch: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..rows)
        .step_by(batch.max(1))
        .map(move |start| start..(start + batch.max(1)).min(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn reads_npy_float32_and_float64_and_raw_files() {
        let dir = tempfile::tempdir().unwrap();
        let values = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let f32s: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let f64s: Vec<u8> = values
            .iter()
            .flat_map(|v| f64::from(*v).to_le_bytes())
            .collect();
        let want = Matrix {
            rows: 2,
            dim: 3,
            data: values.to_vec(),
        };

        let path = dir.path().join("a.npy");
        std::fs::write(&path, npy("<f4", "(2, 3)", &f32s)).unwrap();
        assert_eq!(read_vectors(&path, None).unwrap(), want);
        assert!(read_vectors(&path, Some(4)).is_err(), "--dim must match");

        std::fs::write(&path, npy("<f8", "(2, 3)", &f64s)).unwrap();
        assert_eq!(read_vectors(&path, Some(3)).unwrap(), want);

        std::fs::write(&path, npy("<f4", "(3, 3)", &f32s)).unwrap();
        assert!(read_vectors(&path, None).is_err(), "short body");
        std::fs::write(&path, npy("<i4", "(2, 3)", &f32s)).unwrap();
        assert!(read_vectors(&path, None).is_err(), "ints");

        let raw = dir.path().join("a.f32");
        std::fs::write(&raw, &f32s).unwrap();
        assert_eq!(read_vectors(&raw, Some(3)).unwrap(), want);
        assert!(read_vectors(&raw, None).is_err(), "raw needs --dim");
        assert!(
            read_vectors(&raw, Some(4)).is_err(),
            "6 values are not rows of 4"
        );
    }

    #[test]
    fn requests_decode_back_to_what_was_asked() {
        let m = Matrix {
            rows: 5,
            dim: 2,
            data: (0..10).map(|v| v as f32).collect(),
        };
        let shape = QueryShape {
            top_k: 7,
            namespace: "ns".into(),
            include_values: false,
            include_metadata: true,
            filter: Some(json_struct(r#"{"genre": {"$in": ["a", 1, true, null]}}"#).unwrap()),
        };
        let queries = larch_queries(&m, &shape);
        assert_eq!(queries.len(), 5);
        let q = pinecone::QueryRequest::decode(queries[2].clone()).unwrap();
        assert_eq!(
            (q.top_k, q.vector, q.namespace.as_str()),
            (7, vec![4.0, 5.0], "ns")
        );
        assert!(q.include_metadata && !q.include_values);
        assert!(q.filter.unwrap().fields.contains_key("genre"));

        let upserts = larch_upserts(&m, 2, "ns", "v");
        let counts: Vec<u64> = upserts.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, [2, 2, 1]);
        let last = pinecone::UpsertRequest::decode(upserts[2].0.clone()).unwrap();
        assert_eq!(last.vectors[0].id, "v4");
        assert_eq!(last.vectors[0].values, [8.0, 9.0]);

        let search = qdrant_queries(&m, &shape, "bench", Some(64));
        let s = qdrant::SearchPoints::decode(search[1].clone()).unwrap();
        assert_eq!(
            (s.limit, s.vector, s.collection_name.as_str()),
            (7, vec![2.0, 3.0], "bench")
        );
        assert_eq!(s.params.unwrap().hnsw_ef, Some(64));
        let points = qdrant_upserts(&m, 4, "bench");
        let p = qdrant::UpsertPoints::decode(points[1].0.clone()).unwrap();
        assert_eq!(p.points[0].id.as_ref().unwrap().text(), "4");

        assert!(json_struct("[1]").is_err());
        assert!(json_struct("{").is_err());
    }
}
