//! How the journal's types map to the columns every backend stores them in
//! and back: the `runs` row, a record's columns, the JSON text of their
//! bodies, and the cache of each manifest's serialized files. It may not
//! run SQL: each backend reads its rows into these.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{JournalError, NewRun, RecordKind, RunRecord, StartedByReference};
use crate::json::Json;
use crate::saga::{RunReport, RunStatus};

pub(super) fn storage(message: impl std::fmt::Display) -> JournalError {
    JournalError::Storage(message.to_string())
}

pub(super) fn json_text<T: serde::Serialize>(value: &T) -> Result<String, JournalError> {
    serde_json::to_string(value).map_err(storage)
}

pub(super) fn from_text<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, JournalError> {
    serde_json::from_str(text).map_err(storage)
}

/// A `runs` row before its JSON columns are parsed.
pub(super) struct RunRecordRow {
    pub id: String,
    pub transaction_id: String,
    pub workflow: String,
    pub manifest: String,
    pub manifest_hash: String,
    pub extension_dirs: String,
    pub input: String,
    pub metadata: String,
    pub status: String,
    pub partial: bool,
    pub output: Option<String>,
    pub error: Option<String>,
    pub errors: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub cancel_requested: bool,
    pub components: Option<String>,
    pub lease_epoch: i64,
    pub wake_at: Option<i64>,
    pub rerun_of: Option<String>,
    pub crashes: i64,
    pub tick: Option<i64>,
    pub concurrency_key: Option<String>,
    pub traceparent: Option<String>,
}

impl RunRecordRow {
    pub(super) fn parse(self) -> Result<RunRecord, JournalError> {
        {
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
                lease_epoch: self.lease_epoch.max(0) as u64,
                wake_at: self.wake_at,
                rerun_of: self.rerun_of,
                crashes: self.crashes.clamp(0, u32::MAX as i64) as u32,
                tick: self.tick,
                concurrency_key: self.concurrency_key,
                traceparent: self.traceparent,
                components: self
                    .components
                    .as_deref()
                    .map(from_text)
                    .transpose()?
                    .unwrap_or_default(),
            })
        }
    }
}

/// The hash the pinned files of a run are stored under. Each path and text
/// is preceded by its length, so no two different lists of files hash
/// alike by moving bytes from one file into the next (a separator could
/// itself appear in a text).
fn sources_hash(sources: &[(PathBuf, String)]) -> String {
    let mut hasher = blake3::Hasher::new();
    for (path, text) in sources {
        let path = path.to_string_lossy();
        for part in [path.as_bytes(), text.as_bytes()] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
    }
    hasher.finalize().to_hex().to_string()
}

/// Each manifest's files as the `manifests` table stores them, serialized
/// once per process (per journal). Only a cache: whether the store holds
/// them is asked at every start, in its transaction, since a prune (by
/// this process's retention or by `host runs prune` in another) deletes
/// the rows no run uses any more.
#[derive(Default)]
pub(super) struct ManifestFiles(Mutex<HashMap<String, Arc<str>>>);

/// Manifests kept serialized; past it the cache starts over (a server
/// whose manifest changes on every reload must not grow without end).
const MANIFESTS_KEPT: usize = 64;

impl ManifestFiles {
    /// `run`'s manifest: the hash its files are stored under, and the files
    /// serialized.
    pub(super) fn of(&self, run: &NewRun) -> Result<(String, Arc<str>), JournalError> {
        let hash = sources_hash(&run.sources);
        let files = self.serialized(&hash, run)?;
        Ok((hash, files))
    }

    fn serialized(&self, hash: &str, run: &NewRun) -> Result<Arc<str>, JournalError> {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(files) = kept.get(hash) {
            return Ok(files.clone());
        }
        let files: Vec<(String, &str)> = run
            .sources
            .iter()
            .map(|(p, t)| (p.to_string_lossy().into_owned(), t.as_str()))
            .collect();
        let files: Arc<str> = json_text(&files)?.into();
        if kept.len() >= MANIFESTS_KEPT {
            kept.clear();
        }
        kept.insert(hash.to_string(), files.clone());
        Ok(files)
    }
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
    {
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
            RecordKind::Retry { compensations } => (
                "retry",
                None,
                None,
                None,
                json_text(&serde_json::json!({ "compensations": compensations }))?,
            ),
        })
    }
}

/// The columns of a write's records (one run's, in order). A step's input
/// that is the output of the call finished just before it in the same
/// write (the usual flow: the finished record is held back until the next
/// start) is stored as a reference to that record, so the payload is
/// written once per step, not twice; `RunDecoder` reads it back.
pub(super) fn batch_columns(
    records: &[(u64, RecordKind)],
) -> Result<Vec<Columns<'_>>, JournalError> {
    let mut by_reference = StartedByReference::new();
    records
        .iter()
        .map(|(seq, kind)| match (by_reference.body(*seq, kind), kind) {
            (
                Some(body),
                &RecordKind::Started {
                    ref node,
                    action,
                    attempt,
                    ..
                },
            ) => Ok((
                "started",
                Some(node.as_str()),
                Some(action.as_str()),
                Some(attempt),
                body,
            )),
            _ => kind_columns(kind),
        })
        .collect()
}

/// The columns a run's end sets: finished at (when final), output, error,
/// errors (NULL when there are none).
pub(super) type EndColumns = (Option<i64>, Option<String>, Option<String>, Option<String>);

pub(super) fn end_columns(report: &RunReport, now: i64) -> Result<EndColumns, JournalError> {
    Ok((
        report.status.is_final().then_some(now),
        report.output.as_ref().map(|o| o.text().to_string()),
        report.error.as_ref().map(json_text).transpose()?,
        (!report.errors.is_empty())
            .then(|| json_text(&report.errors))
            .transpose()?,
    ))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::sources_hash;

    fn files(list: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        list.iter()
            .map(|(path, text)| (PathBuf::from(path), text.to_string()))
            .collect()
    }

    #[test]
    fn different_lists_of_files_hash_apart_even_when_their_bytes_run_together() {
        // Joined with NUL separators, these two were the same bytes.
        let one = files(&[("a.toml", "x\0b.toml\0y")]);
        let two = files(&[("a.toml", "x"), ("b.toml", "y")]);
        assert_ne!(sources_hash(&one), sources_hash(&two));
        assert_eq!(sources_hash(&two), sources_hash(&two.clone()));
        assert_ne!(
            sources_hash(&files(&[("a", "bc")])),
            sources_hash(&files(&[("ab", "c")]))
        );
    }
}
