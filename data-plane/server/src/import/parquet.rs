//! Pinecone's Parquet import format read into upsert records.
//!
//! A file holds one record a row in the columns Pinecone documents for imports: `id`
//! (string, required), `values` (a list of floats), `sparse_values` (a struct of `indices`, a
//! list of integers, and `values`, a list of floats) and `metadata` (a JSON object as a string).
//! Only `id` is required; the others may be absent or null in a row. Floats may be 32- or
//! 64-bit, lists plain, large or fixed-size, strings plain or large, as pyarrow and pandas
//! write them. Other columns are refused, so a misspelt column is not silently dropped.
//!
//! [`ParquetRecords`] reads a file a batch of rows at a time and yields each row as an engine
//! [`VectorInput`] or, when the row cannot be one, a [`BadRecord`] naming the file and the
//! 0-based row. What the engine checks on upsert (dimension, id length, metadata limits) is
//! left to the upsert itself; this module checks what the wire format cannot express (a null
//! id, non-finite floats, metadata that is not a JSON object, negative sparse indices).
//!
//! [`namespaces`] lists a directory in Pinecone's import layout: one sub-directory per
//! namespace (`__default__` for the default one), holding `.parquet` files; other files are
//! ignored.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_schema::DataType;
use larch_engine::{JsonObject, SparseInput, VectorInput};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::Value;

use super::{ImportError, Result};

/// The namespace directory Pinecone's layout uses for the default namespace.
pub const DEFAULT_NAMESPACE_DIR: &str = "__default__";

/// Rows read at once: a batch of records is at most this many upserts' worth.
pub const BATCH_ROWS: usize = 1000;

/// The columns a record file may have.
const COLUMNS: [&str; 4] = ["id", "values", "sparse_values", "metadata"];

/// A row that cannot be imported: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// The file the row is in.
    pub file: PathBuf,
    /// The row's 0-based position in the file.
    pub row: u64,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} row {}: {}",
            self.file.display(),
            self.row,
            self.message
        )
    }
}

/// One row read: a record, or why the row is not one.
pub type Row = std::result::Result<VectorInput, BadRecord>;

/// The records of one Parquet file, read a batch at a time.
pub struct ParquetRecords {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    rows: u64,
    /// The 0-based row of the next record.
    next_row: u64,
}

impl std::fmt::Debug for ParquetRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetRecords")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .field("next_row", &self.next_row)
            .finish_non_exhaustive()
    }
}

impl ParquetRecords {
    /// Opens `path` positioned at row `skip`, checking its columns before any row is read.
    pub fn open(path: &Path, skip: u64) -> Result<ParquetRecords> {
        ParquetRecords::open_named(path, path, skip)
    }

    /// [`ParquetRecords::open`] of the local file `local`, named `name` in every message and
    /// bad record (a downloaded object: `s3://bucket/key`).
    pub fn open_named(local: &Path, name: &Path, skip: u64) -> Result<ParquetRecords> {
        let path = name;
        let unreadable = |message: String| ImportError::Unreadable {
            file: path.to_owned(),
            message,
        };
        let file = File::open(local).map_err(|err| unreadable(format!("cannot open: {err}")))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|err| unreadable(format!("not a Parquet file: {err}")))?;
        let rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        check_schema(builder.schema().fields()).map_err(unreadable)?;
        let skip = skip.min(rows);
        let reader = builder
            .with_batch_size(BATCH_ROWS)
            .with_offset(usize::try_from(skip).unwrap_or(usize::MAX))
            .build()
            .map_err(|err| unreadable(format!("cannot read: {err}")))?;
        Ok(ParquetRecords {
            path: path.to_owned(),
            reader,
            rows,
            next_row: skip,
        })
    }

    /// The file's rows, all of them (skipped ones too).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The 0-based row the next batch starts at (the rows read so far, skipped ones included).
    pub fn position(&self) -> u64 {
        self.next_row
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next batch of at most [`BATCH_ROWS`] rows, `None` at the end. An error here is the
    /// file's (a corrupt page, an unsupported codec): the rows after it cannot be reached.
    pub fn next_batch(&mut self) -> Result<Option<Vec<Row>>> {
        let Some(batch) = self.reader.next() else {
            return Ok(None);
        };
        let batch = batch.map_err(|err| ImportError::Unreadable {
            file: self.path.clone(),
            message: format!("cannot read rows from {}: {err}", self.next_row),
        })?;
        let first = self.next_row;
        self.next_row += batch.num_rows() as u64;
        Ok(Some(records(&batch, &self.path, first)))
    }
}

/// The namespaces of a directory in Pinecone's import layout, sorted by name: each
/// sub-directory's `.parquet` files (sorted), `__default__` as the default namespace (`""`).
/// Sub-directories without Parquet files and other entries are skipped.
pub fn namespaces(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let unreadable = |message: String| ImportError::Unreadable {
        file: dir.to_owned(),
        message,
    };
    let mut found = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(|err| unreadable(format!("cannot list: {err}")))?;
    for entry in entries {
        let entry = entry.map_err(|err| unreadable(format!("cannot list: {err}")))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(unreadable(format!(
                "{} is not a UTF-8 namespace name",
                path.display()
            )));
        };
        let files = parquet_files(&path)?;
        if files.is_empty() {
            continue;
        }
        let namespace = if name == DEFAULT_NAMESPACE_DIR {
            String::new()
        } else {
            name
        };
        found.push((namespace, files));
    }
    found.sort();
    Ok(found)
}

/// The `.parquet` files directly in `dir`, sorted.
fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let unreadable = |err: std::io::Error| ImportError::Unreadable {
        file: dir.to_owned(),
        message: format!("cannot list: {err}"),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "parquet") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Refuses a schema without `id` or with columns of another name.
fn check_schema(fields: &arrow_schema::Fields) -> std::result::Result<(), String> {
    if let Some(unknown) = fields
        .iter()
        .find(|field| !COLUMNS.contains(&field.name().as_str()))
    {
        return Err(format!(
            "unknown column {:?}; a record file has the columns id, values, sparse_values and \
             metadata",
            unknown.name()
        ));
    }
    if fields.find("id").is_none() {
        return Err("no \"id\" column; every record needs an id".into());
    }
    Ok(())
}

/// The rows of `batch` (the file's rows from `first`) as records.
fn records(batch: &RecordBatch, file: &Path, first: u64) -> Vec<Row> {
    let id = batch.column_by_name("id");
    let values = batch.column_by_name("values");
    let sparse = batch.column_by_name("sparse_values");
    let metadata = batch.column_by_name("metadata");
    (0..batch.num_rows())
        .map(|i| {
            record(id, values, sparse, metadata, i).map_err(|message| BadRecord {
                file: file.to_owned(),
                row: first + i as u64,
                message,
            })
        })
        .collect()
}

fn record(
    id: Option<&ArrayRef>,
    values: Option<&ArrayRef>,
    sparse: Option<&ArrayRef>,
    metadata: Option<&ArrayRef>,
    i: usize,
) -> std::result::Result<VectorInput, String> {
    let id = match id.map(|column| string_at(column, i, "id")).transpose()? {
        Some(Some(id)) => id,
        _ => return Err("\"id\" is null; every record needs an id".into()),
    };
    let values = match values {
        Some(column) => floats_list_at(column, i, "values")?.unwrap_or_default(),
        None => Vec::new(),
    };
    let sparse_values = match sparse {
        Some(column) if column.is_valid(i) => Some(sparse_at(column, i)?),
        _ => None,
    };
    let metadata = match metadata
        .map(|column| string_at(column, i, "metadata"))
        .transpose()?
        .flatten()
    {
        Some(text) => Some(metadata_object(&text)?),
        None => None,
    };
    Ok(VectorInput {
        id,
        values,
        sparse_values,
        metadata,
    })
}

/// A string cell; `None` when null.
fn string_at(
    column: &ArrayRef,
    i: usize,
    name: &str,
) -> std::result::Result<Option<String>, String> {
    if column.is_null(i) {
        return Ok(None);
    }
    let text = match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().value(i),
        DataType::LargeUtf8 => column.as_string::<i64>().value(i),
        DataType::Utf8View => column.as_string_view().value(i),
        other => return Err(format!("\"{name}\" must be a string column, not {other}")),
    };
    Ok(Some(text.to_owned()))
}

/// The list cell of a list-of-floats column; `None` when null.
fn floats_list_at(
    column: &ArrayRef,
    i: usize,
    name: &str,
) -> std::result::Result<Option<Vec<f32>>, String> {
    match list_at(column, i, name)? {
        Some(items) => floats(&items, name).map(Some),
        None => Ok(None),
    }
}

/// The items of a list cell; `None` when null.
fn list_at(
    column: &ArrayRef,
    i: usize,
    name: &str,
) -> std::result::Result<Option<ArrayRef>, String> {
    if column.is_null(i) {
        return Ok(None);
    }
    let items = match column.data_type() {
        DataType::List(_) => column.as_list::<i32>().value(i),
        DataType::LargeList(_) => column.as_list::<i64>().value(i),
        DataType::FixedSizeList(_, _) => column.as_fixed_size_list().value(i),
        other => return Err(format!("\"{name}\" must be a list column, not {other}")),
    };
    Ok(Some(items))
}

/// A list's items as finite `f32`s.
fn floats(items: &ArrayRef, name: &str) -> std::result::Result<Vec<f32>, String> {
    let values: Vec<Option<f32>> = match items.data_type() {
        DataType::Float32 => items.as_primitive::<Float32Type>().iter().collect(),
        DataType::Float64 => items
            .as_primitive::<Float64Type>()
            .iter()
            .map(|x| x.map(|x| x as f32))
            .collect(),
        DataType::Float16 => items
            .as_primitive::<Float16Type>()
            .iter()
            .map(|x| x.map(f32::from))
            .collect(),
        other => return Err(format!("\"{name}\" must hold floats, not {other}")),
    };
    values
        .into_iter()
        .enumerate()
        .map(|(at, value)| match value {
            Some(x) if x.is_finite() => Ok(x),
            Some(x) => Err(format!("\"{name}[{at}]\" is {x}; values must be finite")),
            None => Err(format!("\"{name}[{at}]\" is null")),
        })
        .collect()
}

/// A list's items as sparse indices (0 to 2^32-1).
fn indices(items: &ArrayRef) -> std::result::Result<Vec<u32>, String> {
    fn convert<T: TryInto<u32> + Copy>(
        items: impl Iterator<Item = Option<T>>,
    ) -> std::result::Result<Vec<u32>, String> {
        items
            .enumerate()
            .map(|(at, item)| {
                item.and_then(|x| x.try_into().ok()).ok_or_else(|| {
                    format!("\"sparse_values.indices[{at}]\" must be an integer 0-4294967295")
                })
            })
            .collect()
    }
    match items.data_type() {
        DataType::Int8 => convert(items.as_primitive::<Int8Type>().iter()),
        DataType::Int16 => convert(items.as_primitive::<Int16Type>().iter()),
        DataType::Int32 => convert(items.as_primitive::<Int32Type>().iter()),
        DataType::Int64 => convert(items.as_primitive::<Int64Type>().iter()),
        DataType::UInt8 => convert(items.as_primitive::<UInt8Type>().iter()),
        DataType::UInt16 => convert(items.as_primitive::<UInt16Type>().iter()),
        DataType::UInt32 => convert(items.as_primitive::<UInt32Type>().iter()),
        DataType::UInt64 => convert(items.as_primitive::<UInt64Type>().iter()),
        other => Err(format!(
            "\"sparse_values.indices\" must hold integers, not {other}"
        )),
    }
}

/// A non-null `sparse_values` struct cell.
fn sparse_at(column: &ArrayRef, i: usize) -> std::result::Result<SparseInput, String> {
    let Some(fields) = column.as_struct_opt() else {
        return Err(format!(
            "\"sparse_values\" must be a struct of indices and values, not {}",
            column.data_type()
        ));
    };
    let field = |name: &str| -> std::result::Result<&ArrayRef, String> {
        StructArray::column_by_name(fields, name)
            .ok_or_else(|| format!("\"sparse_values\" has no \"{name}\" field"))
    };
    let indices = match list_at(field("indices")?, i, "sparse_values.indices")? {
        Some(items) => indices(&items)?,
        None => Vec::new(),
    };
    let values = floats_list_at(field("values")?, i, "sparse_values.values")?.unwrap_or_default();
    Ok(SparseInput { indices, values })
}

/// The `metadata` cell's JSON object.
fn metadata_object(text: &str) -> std::result::Result<JsonObject, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err("\"metadata\" must be a JSON object".into()),
        Err(err) => Err(format!("\"metadata\" is not JSON: {err}")),
    }
}

/// Writing record files: the tests' generated Parquet sets (and anyone's, through
/// [`write_records`]).
pub mod write {
    use std::fs::File;
    use std::path::Path;
    use std::sync::Arc;

    use arrow_array::builder::{
        Float32Builder, ListBuilder, StringBuilder, StructBuilder, UInt32Builder,
    };
    use arrow_array::{ArrayRef, RecordBatch};
    use arrow_schema::{DataType, Field, Fields};
    use larch_engine::VectorInput;
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;

    /// Writes `records` to a new snappy-compressed Parquet file at `path` in Pinecone's import
    /// format (metadata as JSON strings), `rows_per_group` rows per row group.
    pub fn write_records(
        path: &Path,
        records: &[VectorInput],
        rows_per_group: usize,
    ) -> Result<(), parquet::errors::ParquetError> {
        let mut ids = StringBuilder::new();
        let mut values = ListBuilder::new(Float32Builder::new());
        let sparse_fields = Fields::from(vec![
            Field::new(
                "indices",
                DataType::List(Arc::new(Field::new("item", DataType::UInt32, true))),
                true,
            ),
            Field::new(
                "values",
                DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
                true,
            ),
        ]);
        let mut sparse = StructBuilder::new(
            sparse_fields,
            vec![
                Box::new(ListBuilder::new(UInt32Builder::new())),
                Box::new(ListBuilder::new(Float32Builder::new())),
            ],
        );
        let mut metadata = StringBuilder::new();
        for record in records {
            ids.append_value(&record.id);
            values.values().append_slice(&record.values);
            values.append(true);
            let (indices, sparse_values, valid) = match &record.sparse_values {
                Some(s) => (s.indices.as_slice(), s.values.as_slice(), true),
                None => (&[][..], &[][..], false),
            };
            let list = sparse
                .field_builder::<ListBuilder<UInt32Builder>>(0)
                .expect("field 0 is the indices list");
            list.values().append_slice(indices);
            list.append(valid);
            let list = sparse
                .field_builder::<ListBuilder<Float32Builder>>(1)
                .expect("field 1 is the values list");
            list.values().append_slice(sparse_values);
            list.append(valid);
            sparse.append(valid);
            match &record.metadata {
                Some(fields) => metadata
                    .append_value(serde_json::to_string(fields).expect("a JSON object serialises")),
                None => metadata.append_null(),
            }
        }
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("id", Arc::new(ids.finish())),
            ("values", Arc::new(values.finish())),
            ("sparse_values", Arc::new(sparse.finish())),
            ("metadata", Arc::new(metadata.finish())),
        ];
        let batch = RecordBatch::try_from_iter(columns)?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(rows_per_group.max(1)))
            .build();
        let file = File::create(path)?;
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties))?;
        writer.write(&batch)?;
        writer.close()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::write::write_records;
    use super::*;
    use serde_json::json;

    fn record(i: usize) -> VectorInput {
        VectorInput {
            id: format!("r{i}"),
            values: vec![i as f32, 0.5],
            sparse_values: i.is_multiple_of(2).then(|| SparseInput {
                indices: vec![1, 7],
                values: vec![0.25, 0.75],
            }),
            metadata: i.is_multiple_of(3).then(|| {
                json!({"genre": "drama", "year": i})
                    .as_object()
                    .cloned()
                    .expect("an object")
            }),
        }
    }

    fn read_all(path: &Path, skip: u64) -> Vec<Row> {
        let mut reader = ParquetRecords::open(path, skip).unwrap();
        let mut rows = Vec::new();
        while let Some(batch) = reader.next_batch().unwrap() {
            rows.extend(batch);
        }
        rows
    }

    #[test]
    fn records_round_trip_through_a_file_with_several_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.parquet");
        let written: Vec<VectorInput> = (0..2500).map(record).collect();
        write_records(&path, &written, 700).unwrap();
        let reader = ParquetRecords::open(&path, 0).unwrap();
        assert_eq!(reader.rows(), 2500);
        let read: Vec<VectorInput> = read_all(&path, 0).into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(read, written);
        let rest: Vec<VectorInput> = read_all(&path, 2000)
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(rest, written[2000..]);
    }

    #[test]
    fn a_bad_row_names_its_file_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.parquet");
        let mut written: Vec<VectorInput> = (0..5).map(record).collect();
        written[3].values[1] = f32::NAN;
        write_records(&path, &written, 100).unwrap();
        let rows = read_all(&path, 0);
        assert!(rows[2].is_ok());
        let bad = rows[3].clone().unwrap_err();
        assert_eq!((bad.file.as_path(), bad.row), (path.as_path(), 3));
        assert_eq!(bad.message, "\"values[1]\" is NaN; values must be finite");
        assert!(bad.to_string().contains("bad.parquet row 3"));
    }

    /// What pandas and pyarrow write by default: float64 values, int64 sparse indices, large
    /// strings, no compression here.
    #[test]
    fn float64_lists_int64_indices_and_large_strings_are_read() {
        use arrow_array::builder::{
            Float64Builder, Int64Builder, LargeStringBuilder, ListBuilder, StructBuilder,
        };
        use arrow_schema::{Field, Fields};
        use std::sync::Arc;
        let mut ids = LargeStringBuilder::new();
        let mut values = ListBuilder::new(Float64Builder::new());
        let fields = Fields::from(vec![
            Field::new(
                "indices",
                DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
                true,
            ),
            Field::new(
                "values",
                DataType::List(Arc::new(Field::new("item", DataType::Float64, true))),
                true,
            ),
        ]);
        let mut sparse = StructBuilder::new(
            fields,
            vec![
                Box::new(ListBuilder::new(Int64Builder::new())),
                Box::new(ListBuilder::new(Float64Builder::new())),
            ],
        );
        for (id, indices) in [("a", vec![3_i64, 9]), ("b", vec![-1])] {
            ids.append_value(id);
            values.values().append_slice(&[0.5, 1.5]);
            values.append(true);
            let list = sparse
                .field_builder::<ListBuilder<Int64Builder>>(0)
                .unwrap();
            list.values().append_slice(&indices);
            list.append(true);
            let list = sparse
                .field_builder::<ListBuilder<Float64Builder>>(1)
                .unwrap();
            list.values().append_slice(&vec![0.25; indices.len()]);
            list.append(true);
            sparse.append(true);
        }
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("id", Arc::new(ids.finish())),
            ("values", Arc::new(values.finish())),
            ("sparse_values", Arc::new(sparse.finish())),
        ];
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pandas.parquet");
        let file = File::create(&path).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();

        let rows = read_all(&path, 0);
        let a = rows[0].clone().unwrap();
        assert_eq!(
            (a.id.as_str(), a.values.as_slice()),
            ("a", &[0.5_f32, 1.5][..])
        );
        assert_eq!(
            a.sparse_values,
            Some(SparseInput {
                indices: vec![3, 9],
                values: vec![0.25, 0.25]
            })
        );
        assert_eq!(a.metadata, None);
        let b = rows[1].clone().unwrap_err();
        assert_eq!(b.row, 1);
        assert!(
            b.message.contains("sparse_values.indices[0]"),
            "{}",
            b.message
        );
    }

    #[test]
    fn metadata_must_be_a_json_object() {
        assert!(metadata_object(r#"{"a":1}"#).is_ok());
        assert_eq!(
            metadata_object("[1]").unwrap_err(),
            "\"metadata\" must be a JSON object"
        );
        assert!(
            metadata_object("{")
                .unwrap_err()
                .starts_with("\"metadata\" is not JSON")
        );
    }

    #[test]
    fn a_file_that_is_not_parquet_is_refused_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        std::fs::write(&path, b"not parquet at all").unwrap();
        let err = ParquetRecords::open(&path, 0).unwrap_err();
        assert!(err.to_string().contains("not a Parquet file"), "{err}");
    }

    #[test]
    fn the_layout_maps_directories_to_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        for (ns, file) in [
            ("__default__", "0.parquet"),
            ("movies", "1.parquet"),
            ("movies", "0.parquet"),
        ] {
            std::fs::create_dir_all(dir.path().join(ns)).unwrap();
            write_records(&dir.path().join(ns).join(file), &[record(1)], 10).unwrap();
        }
        std::fs::write(dir.path().join("movies").join(".log"), b"x").unwrap();
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        let found = namespaces(dir.path()).unwrap();
        let names: Vec<(&str, Vec<String>)> = found
            .iter()
            .map(|(ns, files)| {
                (
                    ns.as_str(),
                    files
                        .iter()
                        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("", vec!["0.parquet".to_owned()]),
                (
                    "movies",
                    vec!["0.parquet".to_owned(), "1.parquet".to_owned()]
                )
            ]
        );
    }
}
