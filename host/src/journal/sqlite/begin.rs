//! A run's first write: its row (and its manifest's files, when no row
//! holds them), or the run that already holds its transaction id. Owned,
//! so that it can wait in the group-commit queue beside other runs'
//! appends (`append.rs` commits it); it may not write records.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::super::rows::ManifestFiles;
use super::rows::run_from_row;
use super::{RUN_COLUMNS, Sql, json_text, queue};
use crate::journal::{Begin, JournalError, NewRun, Owner, Queue, now_ms};

/// A new run's row, owned.
pub(super) struct NewRunRow {
    id: String,
    transaction_id: String,
    workflow: String,
    manifest: String,
    /// The hash of the manifest's files.
    manifest_hash: String,
    /// The files, serialized (written when the file lacks them).
    files: Arc<str>,
    extension_dirs: String,
    input: String,
    metadata: String,
    components: String,
    idempotent: bool,
    rerun_of: Option<String>,
    tick: Option<i64>,
    queue: Option<Queue>,
    traceparent: Option<String>,
    owner: String,
    lease: Duration,
}

impl NewRunRow {
    /// `run`'s row, leased to `owner` for `lease` from when it is written;
    /// its manifest's files serialized through `files`.
    pub(super) fn of(
        run: &NewRun,
        owner: &Owner,
        lease: Duration,
        files: &ManifestFiles,
    ) -> Result<NewRunRow, JournalError> {
        let (manifest_hash, files) = files.of(run)?;
        Ok(NewRunRow {
            id: run.id.clone(),
            transaction_id: run.transaction_id.clone(),
            workflow: run.workflow.clone(),
            manifest: run.manifest.to_string_lossy().into_owned(),
            manifest_hash,
            files,
            extension_dirs: json_text(&run.extension_dirs)?,
            input: run.input.text().to_string(),
            metadata: run.metadata.text().to_string(),
            components: json_text(&run.components)?,
            idempotent: run.idempotent,
            rerun_of: run.rerun_of.clone(),
            tick: run.tick,
            queue: run.queue.clone(),
            traceparent: run.trace_context.map(|c| c.to_stored()),
            owner: owner.id().to_string(),
            lease,
        })
    }
}

/// The latest run of a workflow's transaction id (built once: every start
/// looks it up).
static FIND_BY_TRANSACTION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE workflow = ?1 AND transaction_id = ?2 ORDER BY created_at DESC LIMIT 1"
    )
});

/// Writes `run`'s row inside the open write transaction, unless a run with
/// its transaction id exists that answers for it (then nothing is written).
/// The transaction holds the write lock, so of two starts with one
/// transaction id the second sees the first's row.
pub(super) fn write_begin(conn: &Connection, run: &NewRunRow) -> Result<Begin, Sql> {
    let existing = conn
        .prepare_cached(&FIND_BY_TRANSACTION)?
        .query_row(params![run.workflow, run.transaction_id], run_from_row)
        .optional()?;
    if let Some(existing) = existing {
        let existing = existing.parse()?;
        if run.idempotent || !existing.status.is_final() {
            return Ok(Begin::Existing(Box::new(existing)));
        }
    }
    // Ignored, writing nothing, when the row is there: one lookup of the
    // hash per start keeps every run's manifest in the file whatever was
    // pruned since this process last stored it.
    conn.prepare_cached("INSERT OR IGNORE INTO manifests (hash, files) VALUES (?1, ?2)")?
        .execute(params![run.manifest_hash, &*run.files])?;
    let now = now_ms();
    conn.prepare_cached(
        "INSERT INTO runs (id, transaction_id, workflow, manifest, manifest_hash, extension_dirs, input, metadata, status,
                           created_at, updated_at, lease_owner, lease_until, components, lease_epoch, rerun_of, tick, traceparent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'running', ?9, ?9, ?10, ?11, ?12, 1, ?13, ?14, ?15)",
    )?
    .execute(params![
        run.id,
        run.transaction_id,
        run.workflow,
        run.manifest,
        run.manifest_hash,
        run.extension_dirs,
        run.input,
        run.metadata,
        now,
        run.owner,
        now + run.lease.as_millis() as i64,
        run.components,
        run.rerun_of,
        run.tick,
        run.traceparent
    ])?;
    let queued = match &run.queue {
        Some(queue) => queue::admit(conn, &run.workflow, &run.id, queue)?,
        None => false,
    };
    Ok(if queued {
        Begin::Queued
    } else {
        Begin::Started { epoch: 1 }
    })
}
