//! A run's first write in PostgreSQL: its row and its manifest's files, or
//! the run that already holds its transaction id; the same transaction
//! whether the caller waits on its thread or as a task. It may not write
//! records.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::try_join;
use tokio_postgres::types::ToSql;

use super::super::rows::{ManifestFiles, json_text};
use super::{
    Begin, DB_NOW, FIND_BY_TRANSACTION, Fail, JournalError, NewRun, Owner, Pool, now_ms, parse,
    queue, run_from_row,
};

/// A new run's row (built once: `prepare_cached` finds it by its text).
static INSERT_RUN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO runs (id, transaction_id, workflow, manifest, manifest_hash, extension_dirs, input, metadata, status,
                           created_at, updated_at, lease_owner, lease_until, components, lease_epoch, rerun_of, tick, traceparent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'running', $9, $9, $10, {DB_NOW} + $11, $12, 1, $13, $14, $15)"
    )
});

/// A start's parameters, owned (they go to the database's runtime).
pub(super) struct Start {
    run: NewRun,
    owner: String,
    extension_dirs: String,
    components: String,
    hash: String,
    files: Arc<str>,
    lease: Duration,
}

impl Start {
    /// `run`, leased to `owner` for `lease`; its manifest's files serialized
    /// through `files`.
    pub(super) fn of(
        run: &NewRun,
        owner: &Owner,
        lease: Duration,
        files: &ManifestFiles,
    ) -> Result<Start, JournalError> {
        let (hash, files) = files.of(run)?;
        Ok(Start {
            run: run.clone(),
            owner: owner.id().to_string(),
            extension_dirs: json_text(&run.extension_dirs)?,
            components: json_text(&run.components)?,
            hash,
            files,
            lease,
        })
    }
}

/// Records the run, unless a run with its transaction id answers for it.
pub(super) async fn begin(pool: Pool, start: Start) -> Result<Begin, Fail> {
    let Start {
        run,
        owner,
        extension_dirs,
        components,
        hash,
        files,
        lease,
    } = start;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Four round trips: BEGIN, the lock with the lookup, the two inserts,
    // COMMIT. Statements sent together are pipelined (tokio-postgres sends
    // each as soon as its future is polled and reads the answers in order),
    // and they stay prepared on the connection.
    let (lock, find) = try_join!(
        tx.prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1 || E'\\n' || $2, 0))"),
        tx.prepare_cached(&FIND_BY_TRANSACTION),
    )?;
    // Of two concurrent starts with one transaction id, the second waits
    // at the lock and then sees the first's row: the lookup is a statement
    // of its own, whose snapshot is taken once the lock is held.
    let key: [&(dyn ToSql + Sync); 2] = [&run.workflow, &run.transaction_id];
    let (_, existing) = try_join!(tx.execute(&lock, &key), tx.query_opt(&find, &key))?;
    if let Some(existing) = existing {
        let existing = parse(run_from_row(&existing))?;
        if run.idempotent || !existing.status.is_final() {
            return Ok(Begin::Existing(Box::new(existing)));
        }
    }
    let now = now_ms();
    let lease_ms = lease.as_millis() as i64;
    let manifest = run.manifest.to_string_lossy().into_owned();
    let traceparent = run.trace_context.map(|c| c.to_stored());
    let (store_manifest, insert_run) = try_join!(
        // Touched even when it is there: a prune running meanwhile waits
        // for this row and then sees it in use.
        tx.prepare_cached(
            "INSERT INTO manifests (hash, files, used_at) VALUES ($1, $2, $3)
             ON CONFLICT (hash) DO UPDATE SET used_at = EXCLUDED.used_at",
        ),
        tx.prepare_cached(&INSERT_RUN),
    )?;
    // (Should the first fail, the second fails too, and the first's error
    // is the one answered: answers come in order.)
    let files: &str = &files;
    let manifest_row: [&(dyn ToSql + Sync); 3] = [&hash, &files, &now];
    let run_row: [&(dyn ToSql + Sync); 15] = [
        &run.id,
        &run.transaction_id,
        &run.workflow,
        &manifest,
        &hash,
        &extension_dirs,
        &run.input.text(),
        &run.metadata.text(),
        &now,
        &owner,
        &lease_ms,
        &components,
        &run.rerun_of,
        &run.tick,
        &traceparent,
    ];
    try_join!(
        tx.execute(&store_manifest, &manifest_row),
        tx.execute(&insert_run, &run_row),
    )?;
    let queued = match &run.queue {
        Some(queue) => queue::admit(&tx, &run.workflow, &run.id, queue).await?,
        None => false,
    };
    tx.commit().await?;
    Ok(if queued {
        Begin::Queued
    } else {
        Begin::Started { epoch: 1 }
    })
}
