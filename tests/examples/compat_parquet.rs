//! Writes the Parquet set the compatibility suite imports with Pinecone's Python SDK
//! (tests/compat/test_pinecone10.py): `DIR/__default__/0.parquet` (300 records `d0`…) and
//! `DIR/films/0.parquet`, `1.parquet` (200 records `f0`…), dimension 4, metadata `{"n": i}`,
//! in Pinecone's import layout. The compat venv has no pyarrow, so the set comes from Larch's
//! own writer.
//!
//! Usage: `compat_parquet DIR`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use larch_data_plane::import::parquet::write::write_records;
use larch_engine::VectorInput;

fn records(prefix: &str, range: std::ops::Range<usize>) -> Vec<VectorInput> {
    range
        .map(|i| VectorInput {
            id: format!("{prefix}{i}"),
            values: vec![1.0, i as f32, 0.5, 0.25],
            sparse_values: None,
            metadata: serde_json::json!({"n": i}).as_object().cloned(),
        })
        .collect()
}

fn write(dir: &Path, namespace: &str, file: &str, records: &[VectorInput]) {
    let path = dir.join(namespace).join(file);
    std::fs::create_dir_all(path.parent().expect("a file has a parent")).unwrap();
    write_records(&path, records, 100).unwrap();
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: compat_parquet DIR (where to write the set)");
    let dir = Path::new(&dir);
    write(dir, "__default__", "0.parquet", &records("d", 0..300));
    write(dir, "films", "0.parquet", &records("f", 0..120));
    write(dir, "films", "1.parquet", &records("f", 120..200));
}
