//! What the client commands (`indexes`, `vectors`, `namespaces`) share: the `--output` flag,
//! aligned text tables, the API key as gRPC metadata, and failed calls turned into errors that
//! carry the server's message.
//!
//! Tables are a few aligned columns, written here rather than with a table crate: none is in
//! the dependency tree and the output needs no borders, wrapping or colours.

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::Value;
use tonic::metadata::{Ascii, MetadataValue};

/// How a command prints its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns for people.
    Table,
    /// The answer as pretty JSON, for scripts (e.g. `jq`).
    Json,
}

/// `--output table|json`, on every client command.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct OutputArgs {
    /// Output format: a table for people or JSON for scripts.
    #[arg(long, short = 'o', value_enum, default_value = "table", global = true)]
    pub(crate) output: Format,
}

/// The API key from `LARCH_API_KEY`/`LARCH_API_KEY_FILE`, ready to send as `api-key`.
pub(crate) fn api_key() -> anyhow::Result<MetadataValue<Ascii>> {
    let key = crate::configured_api_key()
        .map_err(anyhow::Error::msg)?
        .context("no API key: set LARCH_API_KEY or LARCH_API_KEY_FILE")?;
    MetadataValue::try_from(key.as_str())
        .map_err(|_| anyhow::anyhow!("the API key contains characters that cannot be sent"))
}

/// A failed call: the gRPC code and the server's message, with a hint where one helps.
pub(crate) fn failed(status: tonic::Status) -> anyhow::Error {
    let hint = match status.code() {
        tonic::Code::Unauthenticated => {
            "\nhint: set LARCH_API_KEY (or LARCH_API_KEY_FILE) to a valid key"
        }
        tonic::Code::PermissionDenied => {
            "\nhint: the key's roles or index allow-list do not cover this"
        }
        tonic::Code::Unavailable => "\nhint: is the server running at --addr?",
        _ => "",
    };
    anyhow::anyhow!("{:?}: {}{hint}", status.code(), status.message())
}

/// Prints a JSON value (pretty, one document).
pub(crate) fn print_json(value: &Value) {
    println!("{value:#}");
}

/// Prints rows under a header as left-aligned columns separated by two spaces.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", table(header, rows));
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, width) in cells.zip(&widths) {
            text.push_str(cell);
            text.extend(std::iter::repeat_n(' ', width + 2 - cell.chars().count()));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Prints `key: value` lines (a record seen alone, e.g. `describe`).
pub(crate) fn print_fields(fields: &[(&str, String)]) {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in fields {
        println!("{key:width$}  {value}");
    }
}

/// A JSON value as a short cell: strings bare, everything else as compact JSON.
pub(crate) fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let rows = vec![
            vec!["movies".to_owned(), "384".to_owned()],
            vec!["a".to_owned(), "8".to_owned()],
        ];
        assert_eq!(
            table(&["NAME", "DIMENSION"], &rows),
            "NAME    DIMENSION\nmovies  384\na       8\n"
        );
    }
}
