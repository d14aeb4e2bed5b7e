//! How SQLite rows map to the journal's shared row types (`journal::rows`).
//! It may not run SQL of its own beyond reading a row it is handed.

use rusqlite::Row;

use crate::journal::rows::RunRecordRow;

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
        lease_epoch: row.get(20)?,
        wake_at: row.get(21)?,
        rerun_of: row.get(22)?,
        crashes: row.get(23)?,
        tick: row.get(24)?,
        concurrency_key: row.get(25)?,
        traceparent: row.get(26)?,
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
