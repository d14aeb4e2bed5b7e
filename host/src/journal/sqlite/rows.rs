//! How the journal's types map to SQLite rows and back: the `runs` row, a
//! record's columns, and the JSON text of their bodies. It may not run SQL
//! of its own beyond reading a row it is handed.

use std::path::PathBuf;

use rusqlite::Row;

use super::{JournalError, Json, RecordKind, RunRecord, RunStatus, run_sql, storage};

pub(super) fn json_text<T: serde::Serialize>(value: &T) -> Result<String, JournalError> {
    serde_json::to_string(value).map_err(storage)
}

pub(super) fn from_text<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, JournalError> {
    serde_json::from_str(text).map_err(storage)
}

pub(super) fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RunRecordRow> {
    Ok(RunRecordRow {
        id: row.get(0)?,
        transaction_id: row.get(1)?,
        workflow: row.get(2)?,
        manifest: row.get(3)?,
        manifest_hash: row.get(4)?,
        extension_dirs: row.get(5)?,
        input: row.get(6)?,
        metadata: row.get(7)?,
        status: row.get(8)?,
        partial: row.get(9)?,
        output: row.get(10)?,
        error: row.get(11)?,
        errors: row.get(12)?,
        created_at: row.get(13)?,
        updated_at: row.get(14)?,
        finished_at: row.get(15)?,
        lease_owner: row.get(16)?,
        lease_until: row.get(17)?,
        cancel_requested: row.get(18)?,
        components: row.get(19)?,
    })
}

/// A `runs` row before its JSON columns are parsed.
pub(super) struct RunRecordRow {
    id: String,
    transaction_id: String,
    workflow: String,
    manifest: String,
    manifest_hash: String,
    extension_dirs: String,
    input: String,
    metadata: String,
    status: String,
    partial: bool,
    output: Option<String>,
    error: Option<String>,
    errors: Option<String>,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
    lease_owner: Option<String>,
    lease_until: Option<i64>,
    cancel_requested: bool,
    components: Option<String>,
}

impl RunRecordRow {
    pub(super) fn parse(self) -> Result<RunRecord, JournalError> {
        run_sql(|| {
            Ok(RunRecord {
                status: RunStatus::from_name(&self.status)
                    .ok_or_else(|| storage(format!("unknown status '{}'", self.status)))?,
                extension_dirs: from_text(&self.extension_dirs)?,
                input: Json::parse(self.input).map_err(storage)?,
                metadata: Json::parse(self.metadata).map_err(storage)?,
                output: self.output.map(Json::parse).transpose().map_err(storage)?,
                error: self.error.as_deref().map(from_text).transpose()?,
                errors: self
                    .errors
                    .as_deref()
                    .map(from_text)
                    .transpose()?
                    .unwrap_or_default(),
                id: self.id,
                transaction_id: self.transaction_id,
                workflow: self.workflow,
                manifest: PathBuf::from(self.manifest),
                manifest_hash: self.manifest_hash,
                partial: self.partial,
                created_at: self.created_at,
                updated_at: self.updated_at,
                finished_at: self.finished_at,
                lease_owner: self.lease_owner,
                lease_until: self.lease_until,
                cancel_requested: self.cancel_requested,
                components: self
                    .components
                    .as_deref()
                    .map(from_text)
                    .transpose()?
                    .unwrap_or_default(),
            })
        })
    }
}

/// The hash the pinned files of a run are stored under.
pub(super) fn sources_hash(sources: &[(PathBuf, String)]) -> String {
    let mut hasher = blake3::Hasher::new();
    for (path, text) in sources {
        hasher.update(path.to_string_lossy().as_bytes());
        hasher.update(&[0]);
        hasher.update(text.as_bytes());
        hasher.update(&[0]);
    }
    hasher.finalize().to_hex().to_string()
}

/// The columns of a record: kind, node, action, attempt, body.
pub(super) type Columns<'a> = (
    &'static str,
    Option<&'a str>,
    Option<&'static str>,
    Option<u32>,
    String,
);

/// The body of a *started* record.
#[derive(serde::Serialize)]
struct StartedBody<'a> {
    step: &'a str,
    input: &'a Option<Json>,
}

pub(super) fn kind_columns(kind: &RecordKind) -> Result<Columns<'_>, JournalError> {
    run_sql(|| {
        Ok(match kind {
            RecordKind::Started {
                node,
                step,
                action,
                attempt,
                input,
            } => (
                "started",
                Some(node.as_str()),
                Some(action.as_str()),
                Some(*attempt),
                // A struct, not `json!`: the input is written as its raw text
                // instead of being parsed into a `Value` first.
                json_text(&StartedBody { step, input })?,
            ),
            RecordKind::Finished {
                node,
                action,
                attempt,
                record,
            } => (
                "finished",
                Some(node.as_str()),
                Some(action.as_str()),
                Some(*attempt),
                json_text(record)?,
            ),
            RecordKind::Requests {
                node,
                action,
                attempt,
                requests,
            } => (
                "requests",
                Some(node.as_str()),
                Some(action.as_str()),
                Some(*attempt),
                json_text(requests)?,
            ),
            RecordKind::Event(event) => ("event", None, None, None, json_text(event)?),
            RecordKind::Compensating(error) => {
                ("compensating", None, None, None, json_text(error)?)
            }
        })
    })
}

pub(super) type RecordRow = (
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<u32>,
    Option<String>,
);

pub(super) fn record_from_row(row: &Row<'_>) -> rusqlite::Result<RecordRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}
