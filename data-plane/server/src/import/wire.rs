//! Pinecone's JSON of the import API: `StartImportRequest` in, `StartImportResponse`,
//! `ImportModel` and `ListImportsResponse` out (camelCase, as Pinecone's REST API).

use serde::{Deserialize, Serialize};

use super::job::{ErrorMode, ImportState};

/// `POST /bulk/imports`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartImportRequest {
    /// The directory to import: `file:///…` under the server's import root.
    pub uri: String,
    /// A storage integration; Larch has none, so it is accepted and ignored.
    #[serde(default)]
    pub integration_id: Option<String>,
    /// What to do with bad records [default: abort].
    #[serde(default)]
    pub error_mode: Option<ImportErrorMode>,
}

/// `errorMode`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportErrorMode {
    /// `abort` or `continue`.
    #[serde(default)]
    pub on_error: Option<String>,
}

impl StartImportRequest {
    /// The error mode asked for (`abort` when none), or the message refusing it.
    pub fn error_mode(&self) -> Result<ErrorMode, String> {
        match self
            .error_mode
            .as_ref()
            .and_then(|mode| mode.on_error.as_deref())
        {
            None => Ok(ErrorMode::Abort),
            Some(mode) if mode.eq_ignore_ascii_case("abort") => Ok(ErrorMode::Abort),
            Some(mode) if mode.eq_ignore_ascii_case("continue") => Ok(ErrorMode::Continue),
            Some(other) => Err(format!(
                "errorMode.onError must be \"abort\" or \"continue\", got {other:?}"
            )),
        }
    }
}

/// The answer of `POST /bulk/imports`.
#[derive(Debug, Serialize)]
pub struct StartImportResponse {
    /// The new import's id.
    pub id: String,
}

/// One import, as `GET /bulk/imports/{id}` answers it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportModel {
    /// The id.
    pub id: String,
    /// The URI it was started with.
    pub uri: String,
    /// Pending, InProgress, Failed, Completed or Cancelled.
    pub status: super::Status,
    /// When it started (RFC 3339).
    pub created_at: String,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// 0-100.
    pub percent_complete: f64,
    /// Records upserted so far.
    pub records_imported: u64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<ImportState> for ImportModel {
    fn from(state: ImportState) -> ImportModel {
        let percent_complete = state.percent_complete();
        let ImportState {
            id,
            uri,
            error_mode: _,
            status,
            created_at,
            finished_at,
            records_imported,
            records_skipped: _,
            rows_done: _,
            rows_total: _,
            error,
            namespaces: _,
            next: _,
        } = state;
        ImportModel {
            id,
            uri,
            status,
            created_at,
            finished_at,
            percent_complete,
            records_imported,
            error,
        }
    }
}

/// `GET /bulk/imports`.
#[derive(Debug, Serialize)]
pub struct ListImportsResponse {
    /// This page's imports, by id.
    pub data: Vec<ImportModel>,
    /// The next page's token; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
}

/// A page token.
#[derive(Debug, Serialize)]
pub struct Pagination {
    /// Pass as `paginationToken` for the next page.
    pub next: String,
}
