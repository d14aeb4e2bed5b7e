//! The PostgreSQL journal, shared by several hosts: tables `runs`,
//! `records` and `manifests` as in the SQLite file, with each run's lease
//! and lease epoch. Every write of an executing host is fenced on its epoch
//! in the same statement; an append is one round trip (the fence, the
//! cancel flag and every record in one statement).

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::rows::{RunRecordRow, from_text, json_text, storage};
use super::{
    Appending, Begin, Beginning, Journal, JournalError, NewRun, Owner, PinnedComponent, Record,
    RecordKind, RunDecoder, RunFilter, RunRecord, ScheduleState, now_ms, now_us,
};
use crate::postgres::{Database, PgError};
use crate::saga::{RunReport, RunStatus};

mod append;
mod begin;
mod queue;
mod schedules;

/// The journal in a PostgreSQL database.
pub struct PgJournal {
    database: Arc<Database>,
    /// Each manifest's files, serialized once.
    manifest_files: super::rows::ManifestFiles,
}

const RUN_COLUMNS: &str = "id, transaction_id, workflow, manifest, manifest_hash, extension_dirs, input, metadata, \
     status, partial, output, error, errors, created_at, updated_at, finished_at, lease_owner, lease_until, cancel_requested, \
     components, lease_epoch, wake_at, rerun_of, crashes, tick, concurrency_key, traceparent";

const FINAL: &str = "('done', 'reverted', 'failed', 'cancelled')";

/// The database's clock in unix ms: leases are given and judged by one
/// clock, so a host whose clock runs ahead cannot take runs early.
const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The latest run of a workflow's transaction id (`$1` the workflow, `$2`
/// the transaction id); built once, since a start looks it up every time.
static FIND_BY_TRANSACTION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE workflow = $1 AND transaction_id = $2 ORDER BY created_at DESC LIMIT 1"
    )
});

fn run_from_row(row: &Row) -> RunRecordRow {
    RunRecordRow {
        id: row.get(0),
        transaction_id: row.get(1),
        workflow: row.get(2),
        manifest: row.get(3),
        manifest_hash: row.get(4),
        extension_dirs: row.get(5),
        input: row.get(6),
        metadata: row.get(7),
        status: row.get(8),
        partial: row.get(9),
        output: row.get(10),
        error: row.get(11),
        errors: row.get(12),
        created_at: row.get(13),
        updated_at: row.get(14),
        finished_at: row.get(15),
        lease_owner: row.get(16),
        lease_until: row.get(17),
        cancel_requested: row.get(18),
        components: row.get(19),
        lease_epoch: row.get(20),
        wake_at: row.get(21),
        rerun_of: row.get(22),
        crashes: row.get(23),
        tick: row.get(24),
        concurrency_key: row.get(25),
        traceparent: row.get(26),
    }
}

/// What this file's code fails with: PostgreSQL's errors and the journal's
/// own, so `?` works on both.
#[derive(Debug)]
enum Fail {
    Pg(PgError),
    Journal(JournalError),
}

impl<E: Into<PgError>> From<E> for Fail {
    fn from(err: E) -> Fail {
        Fail::Pg(err.into())
    }
}

fn journal(err: JournalError) -> Fail {
    Fail::Journal(err)
}

impl From<Fail> for JournalError {
    fn from(err: Fail) -> JournalError {
        match err {
            Fail::Pg(err) => JournalError::Storage(err.to_string()),
            Fail::Journal(err) => err,
        }
    }
}

type Pool = deadpool_postgres::Pool;

impl PgJournal {
    /// The journal in `database` (its schema already migrated).
    pub fn new(database: Arc<Database>) -> PgJournal {
        PgJournal {
            database,
            manifest_files: Default::default(),
        }
    }

    /// Runs `body` against the pool and gives its failure as a journal error.
    fn run_pg<T, F, Fut>(&self, body: F) -> Result<T, JournalError>
    where
        F: FnOnce(Pool) -> Fut,
        Fut: std::future::Future<Output = Result<T, Fail>> + Send + 'static,
        T: Send + 'static,
    {
        self.database.run(body).map_err(JournalError::from)
    }
}

/// What a fenced write that changed `changed` rows means: done, an
/// unknown run, or a lease another host took.
///
/// Asked on the connection that made the write: a second one from the pool
/// could wait for the pool's timeout when every connection is taken.
async fn fenced(client: &deadpool_postgres::Client, run: &str, changed: u64) -> Result<(), Fail> {
    if changed == 1 {
        return Ok(());
    }
    let exists = client
        .query_opt("SELECT 1 FROM runs WHERE id = $1", &[&run])
        .await?
        .is_some();
    Err(journal(if exists {
        JournalError::LeaseLost(run.to_string())
    } else {
        JournalError::UnknownRun(run.to_string())
    }))
}

/// A run's last records (none when there are none) and its end, as the
/// end's statement binds them.
fn finish_columns(
    run: &str,
    epoch: u64,
    records: &[(u64, RecordKind)],
    report: &RunReport,
) -> Result<(Option<append::Columns>, append::End), JournalError> {
    let columns = (!records.is_empty())
        .then(|| append::Columns::of(run, epoch, records))
        .transpose()?;
    Ok((columns, append::End::of(run, epoch, report)?))
}

fn parse(row: RunRecordRow) -> Result<RunRecord, Fail> {
    row.parse().map_err(journal)
}

impl Journal for PgJournal {
    fn begin(&self, run: &NewRun, owner: &Owner, lease: Duration) -> Result<Begin, JournalError> {
        let start = begin::Start::of(run, owner, lease, &self.manifest_files)?;
        self.run_pg(move |pool| begin::begin(pool, start))
    }

    /// The start's statements run on the database's runtime either way;
    /// here the caller's task awaits their answer instead of blocking a
    /// thread.
    fn begin_queued(&self, run: &NewRun, owner: &Owner, lease: Duration) -> Beginning<'_> {
        let start = match begin::Start::of(run, owner, lease, &self.manifest_files) {
            Ok(start) => start,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let answer = self
            .database
            .run_queued(move |pool| begin::begin(pool, start));
        Box::pin(async move { answer.await.map_err(JournalError::from) })
    }

    fn append(
        &self,
        run: &str,
        epoch: u64,
        records: &[(u64, RecordKind)],
    ) -> Result<bool, JournalError> {
        let columns = append::Columns::of(run, epoch, records)?;
        self.run_pg(move |pool| append::append(pool, columns))
    }

    /// The append's statement runs on the database's runtime either way;
    /// here the run's task awaits its answer instead of blocking a thread.
    fn append_queued(&self, run: &str, epoch: u64, records: &[(u64, RecordKind)]) -> Appending<'_> {
        let columns = match append::Columns::of(run, epoch, records) {
            Ok(columns) => columns,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let answer = self
            .database
            .run_queued(move |pool| append::append(pool, columns));
        Box::pin(async move { answer.await.map_err(JournalError::from) })
    }

    fn set_status(&self, run: &str, epoch: u64, status: RunStatus) -> Result<(), JournalError> {
        let run = run.to_string();
        self.run_pg(move |pool| async move {
            let client = pool.get().await?;
            let statement = client
                .prepare_cached(
                    "UPDATE runs SET status = $2, updated_at = $3 WHERE id = $1 AND lease_epoch = $4",
                )
                .await?;
            let changed = client
                .execute(
                    &statement,
                    &[&run, &status.as_str(), &now_ms(), &(epoch as i64)],
                )
                .await?;
            fenced(&client, &run, changed).await
        })
    }

    fn set_components(
        &self,
        run: &str,
        epoch: u64,
        components: &[PinnedComponent],
    ) -> Result<(), JournalError> {
        let run = run.to_string();
        let components = json_text(&components)?;
        self.run_pg(move |pool| async move {
            let client = pool.get().await?;
            let changed = client
                .execute(
                    "UPDATE runs SET components = $2, updated_at = $3 WHERE id = $1 AND lease_epoch = $4",
                    &[&run, &components, &now_ms(), &(epoch as i64)],
                )
                .await?;
            fenced(&client, &run, changed).await
        })
    }

    fn finish(&self, run: &str, epoch: u64, report: &RunReport) -> Result<(), JournalError> {
        let end = append::End::of(run, epoch, report)?;
        self.run_pg(move |pool| append::finish(pool, end))
    }

    /// The run's last records and its end in one statement.
    fn finish_with(
        &self,
        run: &str,
        epoch: u64,
        records: &[(u64, RecordKind)],
        report: &RunReport,
    ) -> Result<(), JournalError> {
        let (columns, end) = finish_columns(run, epoch, records, report)?;
        self.run_pg(move |pool| append::finish_with(pool, columns, end))
    }

    /// [`Journal::finish_with`]'s statement on the database's runtime, the
    /// run's task awaiting it.
    fn finish_queued(
        &self,
        run: &str,
        epoch: u64,
        records: &[(u64, RecordKind)],
        report: &RunReport,
    ) -> Appending<'_> {
        let (columns, end) = match finish_columns(run, epoch, records, report) {
            Ok(prepared) => prepared,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let answer = self.database.run_queued(move |pool| async move {
            append::finish_with(pool, columns, end)
                .await
                .map(|()| false)
        });
        Box::pin(async move { answer.await.map_err(JournalError::from) })
    }

    fn reopen(
        &self,
        run: &str,
        from: RunStatus,
        to: RunStatus,
        owner: &Owner,
        lease: Duration,
    ) -> Result<Option<u64>, JournalError> {
        let (run, owner) = (run.to_string(), owner.id().to_string());
        let (from, to) = (from.as_str(), to.as_str());
        let lease_ms = lease.as_millis() as i64;
        self.run_pg(move |pool| async move {
            let client = pool.get().await?;
            let row = client
                .query_opt(
                    &format!(
                        "UPDATE runs SET status = $6, updated_at = $2, lease_owner = $3,
                                         lease_until = {DB_NOW} + $4, lease_epoch = lease_epoch + 1, crashes = 0
                         WHERE id = $1 AND status = $5
                         RETURNING lease_epoch"
                    ),
                    &[&run, &now_ms(), &owner, &lease_ms, &from, &to],
                )
                .await?;
            Ok(row.map(|row| row.get::<_, i64>(0) as u64))
        })
    }

    fn run(&self, run: &str) -> Result<RunRecord, JournalError> {
        let run = run.to_string();
        self.run_pg(move |pool| async move {
            let client = pool.get().await?;
            let statement = client
                .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
                .await?;
            let row = client
                .query_opt(&statement, &[&run])
                .await?
                .ok_or_else(|| journal(JournalError::UnknownRun(run.clone())))?;
            parse(run_from_row(&row))
        })
    }

    fn find_transaction(
        &self,
        workflow: &str,
        transaction_id: &str,
    ) -> Result<Option<RunRecord>, JournalError> {
        let (workflow, transaction_id) = (workflow.to_string(), transaction_id.to_string());
        self.run_pg(move |pool| async move {
            let client = pool.get().await?;
            let row = client
                .query_opt(FIND_BY_TRANSACTION.as_str(), &[&workflow, &transaction_id])
                .await?;
            row.map(|row| parse(run_from_row(&row))).transpose()
        })
    }

    fn records(&self, run: &str) -> Result<Vec<Record>, JournalError> {
        let run = run.to_string();
        self.run_pg(move |pool| async move {
            let client = pool.get().await?;
            let statement = client
                .prepare_cached(
                    "SELECT seq, at, kind, node, action, attempt, body FROM records WHERE run = $1 ORDER BY seq",
                )
                .await?;
            let rows = client.query(&statement, &[&run]).await?;
            let mut records = Vec::with_capacity(rows.len());
            let mut decoder = RunDecoder::new();
            for row in rows {
                let kind: String = row.get(2);
                let action: Option<String> = row.get(4);
                let attempt: Option<i32> = row.get(5);
                let body: Option<String> = row.get(6);
                let kind = decoder.decode(
                    row.get::<_, i64>(0) as u64,
                    &kind,
                    row.get(3),
                    action.as_deref(),
                    attempt.map(|a| a.max(0) as u32),
                    body.as_deref().unwrap_or_default(),
                )
                .map_err(|e| journal(storage(e)))?;
                records.push(Record {
                    seq: row.get::<_, i64>(0) as u64,
                    at: row.get(1),
                    kind,
                });
            }
            Ok(records)
        })
    }

    fn sources(&self, hash: &str) -> Result<Vec<(PathBuf, String)>, JournalError> {
        let hash = hash.to_string();
        self.run_pg(move |pool| async move {
            let client = pool.get().await?;
            let row = client
                .query_opt("SELECT files FROM manifests WHERE hash = $1", &[&hash])
                .await?
                .ok_or_else(|| {
                    journal(storage(format!(
                        "the manifests of run with hash {hash} are missing"
                    )))
                })?;
            let files: Vec<(String, String)> = from_text(row.get(0)).map_err(journal)?;
            Ok(files
                .into_iter()
                .map(|(p, t)| (PathBuf::from(p), t))
                .collect())
        })
    }

    fn list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, JournalError> {
        let filter = filter.clone();
        self.run_pg(move |pool| async move {
            let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE TRUE");
            let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
            let mut arg = |sql: &mut String, text: &str, value: Box<dyn ToSql + Sync + Send>| {
                args.push(value);
                sql.push_str(&text.replace('?', &format!("${}", args.len())));
            };
            if let Some(status) = filter.status {
                arg(
                    &mut sql,
                    " AND status = ?",
                    Box::new(status.as_str().to_string()),
                );
            }
            if let Some(workflow) = filter.workflow.clone() {
                arg(&mut sql, " AND workflow = ?", Box::new(workflow));
            }
            if let Some(rerun_of) = filter.rerun_of.clone() {
                arg(&mut sql, " AND rerun_of = ?", Box::new(rerun_of));
            }
            if let Some(before) = filter.before.clone() {
                arg(
                    &mut sql,
                    " AND (created_at, id) < (SELECT created_at, id FROM runs WHERE id = ?)",
                    Box::new(before),
                );
            }
            arg(
                &mut sql,
                " ORDER BY created_at DESC, id DESC LIMIT ?",
                Box::new(filter.limit.unwrap_or(100) as i64),
            );
            let client = pool.get().await?;
            let params: Vec<&(dyn ToSql + Sync)> = args
                .iter()
                .map(|a| a.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let rows = client.query(&sql, &params).await?;
            rows.iter().map(|row| parse(run_from_row(row))).collect()
        })
    }

    fn claim(
        &self,
        run: &str,
        owner: &Owner,
        lease: Duration,
    ) -> Result<Option<u64>, JournalError> {
        let record = self.run(run)?;
        if record.status.is_final() || record.status == RunStatus::Queued {
            return Ok(None);
        }
        // A holder on this machine whose process is gone is free at once.
        let holder_dead = record
            .lease_owner
            .as_deref()
            .is_some_and(|holder| holder != owner.id() && !Owner::is_alive(holder));
        let (run, owner) = (run.to_string(), owner.id().to_string());
        let lease_ms = lease.as_millis() as i64;
        let previous = record.lease_epoch as i64;
        self.run_pg(move |pool| async move {
            let client = pool.get().await?;
            // Compare-and-set on the epoch: of two claimers, one wins, and
            // the loser (or a former holder) is fenced out. A live holder's
            // lease is judged by the database's clock.
            let row = client
                .query_opt(
                    &format!(
                        "UPDATE runs SET lease_owner = $2, lease_until = {DB_NOW} + $3, updated_at = $4,
                                         lease_epoch = lease_epoch + 1,
                                         crashes = crashes + CASE WHEN lease_owner IS NOT NULL AND lease_owner <> $2 THEN 1 ELSE 0 END
                         WHERE id = $1 AND lease_epoch = $5 AND status NOT IN {FINAL} AND status <> 'queued'
                           AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < {DB_NOW} OR $6)
                         RETURNING lease_epoch"
                    ),
                    &[&run, &owner, &lease_ms, &now_ms(), &previous, &holder_dead],
                )
                .await?;
            Ok(row.map(|row| row.get::<_, i64>(0) as u64))
        })
    }

    fn claim_orphans(
        &self,
        owner: &Owner,
        lease: Duration,
        limit: usize,
        skip: &[String],
    ) -> Result<Vec<(String, u64)>, JournalError> {
        let now = now_ms();
        let me = owner.id().to_string();
        let skip = skip.to_vec();
        let lease_ms = lease.as_millis() as i64;
        let limit = limit as i64;
        self.run_pg(move |pool| async move {
            let client = pool.get().await?;
            // A holder on this machine whose process is gone loses its runs
            // at once; any other, when its lease expires.
            let holders = client
                .query(
                    &format!(
                        "SELECT DISTINCT lease_owner FROM runs
                         WHERE status IN ('running', 'compensating') AND lease_owner IS NOT NULL AND lease_until >= {DB_NOW}"
                    ),
                    &[],
                )
                .await?;
            let dead: Vec<String> = holders
                .iter()
                .map(|row| row.get::<_, String>(0))
                .filter(|holder| *holder != me && !Owner::is_alive(holder))
                .collect();
            // A batch at once; runs another host is claiming right now are
            // skipped, not waited for.
            let rows = client
                .query(
                    &format!(
                        "WITH picked AS (
                             SELECT id FROM runs
                             WHERE status IN ('running', 'compensating')
                               AND (lease_owner IS NULL OR lease_until < {DB_NOW} OR lease_owner = ANY($2))
                               AND NOT (id = ANY($3))
                             ORDER BY updated_at LIMIT $4
                             FOR UPDATE SKIP LOCKED
                         )
                         UPDATE runs SET lease_owner = $5, lease_until = {DB_NOW} + $6, updated_at = $1,
                                         lease_epoch = runs.lease_epoch + 1,
                                         crashes = runs.crashes + CASE WHEN runs.lease_owner IS NOT NULL AND runs.lease_owner <> $5 THEN 1 ELSE 0 END
                         FROM picked WHERE runs.id = picked.id
                         RETURNING runs.id, runs.lease_epoch"
                    ),
                    &[&now, &dead, &skip, &limit, &me, &lease_ms],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1) as u64))
                .collect())
        })
    }

    fn renew(
        &self,
        owner: &Owner,
        lease: Duration,
        runs: &[String],
    ) -> Result<Vec<String>, JournalError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let owner = owner.id().to_string();
        let runs = runs.to_vec();
        let lease_ms = lease.as_millis() as i64;
        self.run_pg(move |pool| async move {
            let client = pool.get().await?;
            let rows = client
                .query(
                    &format!(
                        "UPDATE runs SET lease_until = {DB_NOW} + $2 WHERE lease_owner = $1 AND id = ANY($3) RETURNING id"
                    ),
                    &[&owner, &lease_ms, &runs],
                )
                .await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    fn request_cancel(&self, run: &str) -> Result<(), JournalError> {
        let run = run.to_string();
        self.run_pg(move |pool| async move {
            let client = pool.get().await?;
            let changed = client
                .execute(
                    "UPDATE runs SET cancel_requested = TRUE, updated_at = $2 WHERE id = $1",
                    &[&run, &now_ms()],
                )
                .await?;
            if changed == 0 {
                return Err(journal(JournalError::UnknownRun(run)));
            }
            Ok(())
        })
    }

    fn cancel_requested(&self, run: &str) -> Result<bool, JournalError> {
        let run = run.to_string();
        self.run_pg(move |pool| async move {
            let client = pool.get().await?;
            let statement = client
                .prepare_cached("SELECT cancel_requested FROM runs WHERE id = $1")
                .await?;
            Ok(client
                .query_opt(&statement, &[&run])
                .await?
                .is_some_and(|row| row.get(0)))
        })
    }

    fn count(&self, status: RunStatus) -> Result<u64, JournalError> {
        let status = status.as_str();
        self.run_pg(move |pool| async move {
            let client = pool.get().await?;
            let row = client
                .query_one("SELECT count(*) FROM runs WHERE status = $1", &[&status])
                .await?;
            Ok(row.get::<_, i64>(0).max(0) as u64)
        })
    }

    fn due(&self, now: i64, limit: usize) -> Result<Vec<String>, JournalError> {
        self.run_pg(move |pool| async move {
            let client = pool.get().await?;
            let rows = client
                .query(
                    "SELECT id FROM runs WHERE wake_at <= $1 AND status = 'waiting' ORDER BY wake_at LIMIT $2",
                    &[&now, &(limit as i64)],
                )
                .await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    fn promote(
        &self,
        owner: &Owner,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, JournalError> {
        let (owner, lease_ms) = (owner.id().to_string(), lease.as_millis() as i64);
        self.run_pg(move |pool| queue::promote(pool, owner, lease_ms, limit))
    }

    fn cancel_queued(&self, run: &str) -> Result<bool, JournalError> {
        let run = run.to_string();
        self.run_pg(move |pool| queue::cancel(pool, run))
    }

    fn schedule_state(
        &self,
        workflow: &str,
        pattern: &str,
        initial: i64,
    ) -> Result<ScheduleState, JournalError> {
        let (workflow, pattern) = (workflow.to_string(), pattern.to_string());
        self.run_pg(move |pool| schedules::state(pool, workflow, pattern, initial))
    }

    fn decide_schedule(
        &self,
        workflow: &str,
        last: i64,
        latest: i64,
        pending: Option<i64>,
    ) -> Result<bool, JournalError> {
        let workflow = workflow.to_string();
        self.run_pg(move |pool| schedules::decide(pool, workflow, last, latest, pending))
    }

    fn settle_schedule(&self, workflow: &str, tick: i64) -> Result<(), JournalError> {
        let workflow = workflow.to_string();
        self.run_pg(move |pool| schedules::settle(pool, workflow, tick))
    }

    fn schedule_busy(&self, workflow: &str, at: i64) -> Result<bool, JournalError> {
        let workflow = workflow.to_string();
        self.run_pg(move |pool| schedules::busy(pool, workflow, at))
    }

    fn prune(&self, finished_before: i64, workflow: Option<&str>) -> Result<usize, JournalError> {
        let workflow = workflow.map(str::to_string);
        self.run_pg(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            let selection = format!(
                "status IN {FINAL} AND finished_at < $1 AND ($2::text IS NULL OR workflow = $2)"
            );
            tx.execute(
                &format!(
                    "DELETE FROM records WHERE run IN (SELECT id FROM runs WHERE {selection})"
                ),
                &[&finished_before, &workflow],
            )
            .await?;
            let pruned = tx
                .execute(
                    &format!("DELETE FROM runs WHERE {selection}"),
                    &[&finished_before, &workflow],
                )
                .await?;
            // Not one a run began with in the last minute: its run may not
            // be visible to this statement yet.
            tx.execute(
                "DELETE FROM manifests m WHERE used_at < $1
                 AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.manifest_hash = m.hash)",
                &[&(now_ms() - 60_000)],
            )
            .await?;
            tx.commit().await?;
            Ok(pruned as usize)
        })
    }
}
