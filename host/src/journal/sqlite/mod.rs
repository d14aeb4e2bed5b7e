//! The SQLite journal (WAL mode), in the same state file as the entities:
//! tables `runs`, `records` (one row per transition) and `manifests` (the
//! files each run was started with).
//!
//! The `Journal` methods are here, side by side: each is a few SQL
//! statements over the same three tables, and a change to the schema shows
//! every statement it touches. How rows map to the journal's types is in
//! `rows.rs`; the tests are in `tests.rs`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{RunRecordRow, end_columns, from_text, json_text, storage};
use super::{
    Begin, Journal, JournalError, NewRun, Owner, PinnedComponent, Record, RecordKind, RunDecoder,
    RunFilter, RunRecord, ScheduleState, now_ms, now_us,
};
use crate::saga::{RunReport, RunStatus};
use rows::{record_from_row, run_from_row};

mod append;
mod begin;
mod checkpoint;
mod counts;
mod gate;
mod group;
mod hold;
mod prune;
mod queue;
mod rows;
mod schedules;
pub mod schema;
mod shared;
pub mod wal_writes;

/// How hard a commit tries to reach the disk (SQLite's `synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `synchronous = NORMAL` in WAL mode: every transition survives the host
    /// process dying (kill -9, a crash); the last ones may be lost if the
    /// machine loses power. The default.
    #[default]
    Normal,
    /// `synchronous = FULL`: every transition is fsynced before the next
    /// action, so it survives power loss too; each one costs a disk flush.
    Full,
}

/// The journal in a SQLite file.
pub struct SqliteJournal {
    /// Shared with the entity store of the same state file (see
    /// [`SqliteJournal::connection`]).
    conn: std::sync::Arc<Mutex<Connection>>,
    /// Starts, appends and ends of concurrent runs, committed together.
    writes: std::sync::Arc<group::Group<append::Write, append::Answer>>,
    /// Whether each commit waits for the disk (`full`).
    flushes: bool,
    /// Manifests' files, serialized once (by hash).
    manifest_files: super::rows::ManifestFiles,
    /// Tells the checkpointer thread to stop when the journal goes.
    _checkpointer: Option<Checkpointer>,
}

pub use gate::{Gated, lock as lock_gated};
pub use hold::HOLD_AT as LOG_HOLD_AT;
pub use shared::SharedCommits;

use checkpoint::Checkpointer;

/// The log's size past which a commit wakes the checkpointer.
pub const RESTART_AT: u64 = WAL_BOUND / 4;

/// The most the write-ahead log file may grow to (`journal_size_limit`):
/// past a quarter of it the checkpointer restarts the log; past three
/// quarters this process's uses of the file wait for that restart
/// (`hold.rs`).
pub const WAL_BOUND: u64 = 64 << 20;

const FINAL: &str = "('done', 'reverted', 'failed', 'cancelled')";

const RUN_COLUMNS: &str = "id, transaction_id, workflow, manifest, manifest_hash, extension_dirs, input, metadata, \
     status, partial, output, error, errors, created_at, updated_at, finished_at, lease_owner, lease_until, cancel_requested, \
     components, lease_epoch, wake_at, rerun_of, crashes, tick, concurrency_key, traceparent";

/// What this file's code fails with: SQLite's errors and the journal's own,
/// so `?` works on both (the core's error type cannot know rusqlite).
#[derive(Debug)]
enum Sql {
    Sqlite(rusqlite::Error),
    Journal(JournalError),
}

impl From<schema::SchemaError> for Sql {
    fn from(err: schema::SchemaError) -> Sql {
        match err {
            schema::SchemaError::Sqlite(err) => Sql::Sqlite(err),
            newer => Sql::Journal(JournalError::Storage(newer.to_string())),
        }
    }
}

impl From<rusqlite::Error> for Sql {
    fn from(err: rusqlite::Error) -> Sql {
        Sql::Sqlite(err)
    }
}

impl From<JournalError> for Sql {
    fn from(err: JournalError) -> Sql {
        Sql::Journal(err)
    }
}

impl From<Sql> for JournalError {
    fn from(err: Sql) -> JournalError {
        match err {
            Sql::Sqlite(err) => JournalError::Storage(err.to_string()),
            Sql::Journal(err) => err,
        }
    }
}

/// Runs `body`, giving its failure as a journal error.
fn run_sql<T>(body: impl FnOnce() -> Result<T, Sql>) -> Result<T, JournalError> {
    body().map_err(JournalError::from)
}

impl SqliteJournal {
    /// Opens (or creates) the journal in the SQLite file at `path`.
    pub fn open(path: &Path, sync: SyncMode) -> Result<SqliteJournal, JournalError> {
        // Two processes creating one state file race to set it up; SQLite
        // answers the loser "busy" at once: try again.
        let mut wait = Duration::from_millis(5);
        loop {
            match Self::open_once(path, sync) {
                Err(JournalError::Storage(e)) if e.contains("locked") || e.contains("busy") => {
                    if wait > Duration::from_secs(5) {
                        return Err(JournalError::Storage(e));
                    }
                    std::thread::sleep(wait);
                    wait *= 2;
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path, sync: SyncMode) -> Result<SqliteJournal, JournalError> {
        run_sql(|| {
            let conn = wal_writes::open(path)?;
            conn.busy_timeout(Duration::from_secs(30))?;
            // The same plan whatever the bound values: otherwise SQLite
            // re-prepares the start's transaction lookup on every bind (a
            // quarter of a durable run's instructions, callgrind showed).
            conn.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
                true,
            )?;
            // A new state file gives freed pages back (pruning, retention):
            // set before WAL mode and the first table; a no-op on an
            // existing file.
            conn.pragma_update(None, "auto_vacuum", "incremental")?;
            conn.pragma_update(None, "journal_mode", "wal")?;
            let synchronous = match sync {
                SyncMode::Normal => "normal",
                SyncMode::Full => "full",
            };
            conn.pragma_update(None, "synchronous", synchronous)?;
            // Checkpoints happen in the background (and when the last connection closes).
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            // Whichever connection resets the log cuts its file back to the bound.
            conn.pragma_update(None, "journal_size_limit", WAL_BOUND as i64)?;
            let mut conn = conn;
            let log = hold::LogSize::of(path);
            gate::watch(&mut conn, RESTART_AT, log.clone())?;
            let mut journal = Self::init(conn)?;
            journal.flushes = sync == SyncMode::Full;
            if journal.flushes {
                group::commits_wait_for_the_disk();
            }
            journal._checkpointer = Checkpointer::start(path, log);
            Ok(journal)
        })
    }

    /// A journal in memory (for tests and benchmarks).
    pub fn in_memory() -> Result<SqliteJournal, JournalError> {
        run_sql(|| Ok(Self::init(Connection::open_in_memory()?)?))
    }

    fn init(mut conn: Connection) -> Result<SqliteJournal, JournalError> {
        run_sql(|| {
            // Every statement of the journal, and of the entity store that
            // shares the connection, stays prepared (~20 and ~15).
            conn.set_prepared_statement_cache_capacity(64);
            schema::migrate(&mut conn)?;
            Ok(SqliteJournal {
                conn: std::sync::Arc::new(Mutex::new(conn)),
                writes: std::sync::Arc::default(),
                flushes: false,
                manifest_files: super::rows::ManifestFiles::default(),
                _checkpointer: None,
            })
        })
    }

    /// How many commits this process's state-file journals made so far
    /// (each a disk flush with `full` durability): what the benchmarks
    /// report per step.
    pub fn commits() -> u64 {
        gate::commits()
    }

    /// Times a state file's log of this process reached its hold line, and
    /// the seconds this process's uses of its state files waited there.
    pub fn log_holds() -> (u64, f64) {
        hold::totals()
    }

    fn conn(&self) -> gate::Gated<'_> {
        gate::lock(&self.conn)
    }

    /// The journal's connection, for the entity store of the same state
    /// file. One connection, not two: SQLite drops a connection's whole page
    /// cache whenever another connection wrote to the file since its last
    /// transaction (so the two re-read every page, alternately), and a
    /// connection that finds the other one writing waits in SQLite's busy
    /// handler, which sleeps a millisecond and more; on one connection they
    /// take turns on its lock instead.
    pub fn connection(&self) -> std::sync::Arc<Mutex<Connection>> {
        self.conn.clone()
    }
}

/// How a run ended, as its row stores it.
fn run_end(report: &RunReport) -> Result<append::End, JournalError> {
    let now = now_ms();
    let (finished_at, output, error, errors) = end_columns(report, now)?;
    Ok(append::End {
        status: report.status.as_str(),
        partial: report.partial,
        finished_at,
        output,
        error,
        errors,
        now,
        wake_at: report.wake_at,
    })
}

impl Journal for SqliteJournal {
    fn begin(&self, run: &NewRun, owner: &Owner, lease: Duration) -> Result<Begin, JournalError> {
        self.begin_grouped(run, owner, lease)
    }

    fn begin_queued(
        &self,
        run: &NewRun,
        owner: &Owner,
        lease: Duration,
    ) -> wasaga_core::journal::Beginning<'_> {
        self.queue_begin_grouped(run, owner, lease)
    }

    fn append(
        &self,
        run: &str,
        epoch: u64,
        records: &[(u64, RecordKind)],
    ) -> Result<bool, JournalError> {
        self.append_grouped(run, epoch, records)
    }

    fn append_queued(
        &self,
        run: &str,
        epoch: u64,
        records: &[(u64, RecordKind)],
    ) -> wasaga_core::journal::Appending<'_> {
        self.queue_grouped(run, epoch, records)
    }

    fn set_status(&self, run: &str, epoch: u64, status: RunStatus) -> Result<(), JournalError> {
        run_sql(|| {
            let changed = self
                .conn()
                .prepare_cached(
                    "UPDATE runs SET status = ?2, updated_at = ?3 WHERE id = ?1 AND lease_epoch = ?4",
                )?
                .execute(params![run, status.as_str(), now_ms(), epoch as i64])?;
            self.fenced(run, changed)
        })
    }

    fn set_components(
        &self,
        run: &str,
        epoch: u64,
        components: &[PinnedComponent],
    ) -> Result<(), JournalError> {
        run_sql(|| {
            let changed = self
                .conn()
                .prepare_cached(
                    "UPDATE runs SET components = ?2, updated_at = ?3 WHERE id = ?1 AND lease_epoch = ?4",
                )?
                .execute(params![run, json_text(&components)?, now_ms(), epoch as i64])?;
            self.fenced(run, changed)
        })
    }

    fn reopen(
        &self,
        run: &str,
        from: RunStatus,
        to: RunStatus,
        owner: &Owner,
        lease: Duration,
    ) -> Result<Option<u64>, JournalError> {
        run_sql(|| {
            let now = now_ms();
            let epoch = self
                .conn()
                .prepare_cached(
                    "UPDATE runs SET status = ?6, updated_at = ?2, lease_owner = ?3,
                                     lease_until = ?4, lease_epoch = lease_epoch + 1, crashes = 0
                     WHERE id = ?1 AND status = ?5
                     RETURNING lease_epoch",
                )?
                .query_row(
                    params![
                        run,
                        now,
                        owner.id(),
                        now + lease.as_millis() as i64,
                        from.as_str(),
                        to.as_str()
                    ],
                    |row| row.get::<_, i64>(0),
                )
                .optional()?;
            Ok(epoch.map(|e| e as u64))
        })
    }

    fn finish(&self, run: &str, epoch: u64, report: &RunReport) -> Result<(), JournalError> {
        self.finish_with(run, epoch, &[], report)
    }

    fn finish_with(
        &self,
        run: &str,
        epoch: u64,
        records: &[(u64, RecordKind)],
        report: &RunReport,
    ) -> Result<(), JournalError> {
        self.finish_grouped(run, epoch, records, run_end(report)?)
    }

    fn finish_queued(
        &self,
        run: &str,
        epoch: u64,
        records: &[(u64, RecordKind)],
        report: &RunReport,
    ) -> wasaga_core::journal::Appending<'_> {
        match run_end(report) {
            Ok(end) => self.queue_finish_grouped(run, epoch, records, end),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn run(&self, run: &str) -> Result<RunRecord, JournalError> {
        run_sql(|| {
            Ok(self
                .conn()
                .query_row(
                    &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                    params![run],
                    run_from_row,
                )
                .optional()?
                .ok_or_else(|| JournalError::UnknownRun(run.to_string()))?
                .parse()?)
        })
    }

    fn find_transaction(
        &self,
        workflow: &str,
        transaction_id: &str,
    ) -> Result<Option<RunRecord>, JournalError> {
        run_sql(|| {
            Ok(self.conn()
            .query_row(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE workflow = ?1 AND transaction_id = ?2 ORDER BY created_at DESC LIMIT 1"
                ),
                params![workflow, transaction_id],
                run_from_row,
            )
            .optional()?
            .map(RunRecordRow::parse)
            .transpose()?)
        })
    }

    fn records(&self, run: &str) -> Result<Vec<Record>, JournalError> {
        run_sql(|| {
            let conn = self.conn();
            let mut statement = conn.prepare_cached(
            "SELECT seq, at, kind, node, action, attempt, body FROM records WHERE run = ?1 ORDER BY seq",
        )?;
            let rows = statement.query_map(params![run], record_from_row)?;
            let mut records = Vec::new();
            let mut decoder = RunDecoder::new();
            for row in rows {
                let (seq, at, kind, node, action, attempt, body) = row?;
                let body = body.unwrap_or_default();
                let kind = decoder
                    .decode(seq as u64, &kind, node, action.as_deref(), attempt, &body)
                    .map_err(storage)?;
                records.push(Record {
                    seq: seq as u64,
                    at,
                    kind,
                });
            }
            Ok(records)
        })
    }

    fn sources(&self, hash: &str) -> Result<Vec<(PathBuf, String)>, JournalError> {
        run_sql(|| {
            let files: String = self
                .conn()
                .query_row(
                    "SELECT files FROM manifests WHERE hash = ?1",
                    params![hash],
                    |row| row.get(0),
                )
                .optional()?
                .ok_or_else(|| {
                    storage(format!("the manifests of run with hash {hash} are missing"))
                })?;
            let files: Vec<(String, String)> = from_text(&files)?;
            Ok(files
                .into_iter()
                .map(|(p, t)| (PathBuf::from(p), t))
                .collect())
        })
    }

    fn list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, JournalError> {
        run_sql(|| {
            let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(status) = filter.status {
                sql.push_str(" AND status = ?");
                args.push(status.as_str().to_string().into());
            }
            if let Some(workflow) = &filter.workflow {
                sql.push_str(" AND workflow = ?");
                args.push(workflow.clone().into());
            }
            if let Some(rerun_of) = &filter.rerun_of {
                sql.push_str(" AND rerun_of = ?");
                args.push(rerun_of.clone().into());
            }
            if let Some(before) = &filter.before {
                sql.push_str(
                    " AND (created_at, id) < (SELECT created_at, id FROM runs WHERE id = ?)",
                );
                args.push(before.clone().into());
            }
            sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
            args.push((filter.limit.unwrap_or(100) as i64).into());
            let conn = self.conn();
            let mut statement = conn.prepare(&sql)?;
            let rows = statement.query_map(rusqlite::params_from_iter(args), run_from_row)?;
            let runs = rows
                .map(|row| -> Result<RunRecord, Sql> { Ok(row?.parse()?) })
                .collect::<Result<Vec<_>, Sql>>()?;
            Ok(runs)
        })
    }

    fn claim(
        &self,
        run: &str,
        owner: &Owner,
        lease: Duration,
    ) -> Result<Option<u64>, JournalError> {
        run_sql(|| {
            let record = self.run(run)?;
            let now = now_ms();
            if record.status.is_final()
                || record.status == RunStatus::Queued
                || record.held_by_other(owner, now)
            {
                return Ok(None);
            }
            // Compare-and-set on the epoch: of two claimers, one wins, and
            // the loser (or a former holder) is fenced out.
            // The holder was judged dead or expired above; the statement
            // checks again that nothing changed since (a finish, a renewal
            // by a live holder, another claim).
            let holder_dead = record
                .lease_owner
                .as_deref()
                .is_some_and(|holder| holder != owner.id() && !Owner::is_alive(holder));
            let changed = self.conn().execute(
                &format!(
                    "UPDATE runs SET lease_owner = ?2, lease_until = ?3, updated_at = ?4, lease_epoch = lease_epoch + 1,
                                     crashes = crashes + (lease_owner IS NOT NULL AND lease_owner != ?2)
                     WHERE id = ?1 AND lease_epoch = ?5 AND status NOT IN {FINAL} AND status != 'queued'
                       AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_until < ?4 OR ?6)"
                ),
                params![
                    run,
                    owner.id(),
                    now + lease.as_millis() as i64,
                    now,
                    record.lease_epoch as i64,
                    holder_dead
                ],
            )?;
            Ok((changed == 1).then_some(record.lease_epoch + 1))
        })
    }

    fn claim_orphans(
        &self,
        owner: &Owner,
        lease: Duration,
        limit: usize,
        skip: &[String],
    ) -> Result<Vec<(String, u64)>, JournalError> {
        run_sql(|| {
            let now = now_ms();
            // On one machine a dead holder is known at once (its pid is
            // gone); elsewhere, once its lease expired.
            let holders: Vec<String> = {
                let conn = self.conn();
                let mut statement = conn.prepare_cached(
                    "SELECT DISTINCT lease_owner FROM runs
                     WHERE status IN ('running', 'compensating') AND lease_owner IS NOT NULL AND lease_until >= ?1",
                )?;
                statement
                    .query_map(params![now], |row| row.get(0))?
                    .collect::<Result<_, _>>()?
            };
            let dead: Vec<&String> = holders
                .iter()
                .filter(|holder| holder.as_str() != owner.id() && !Owner::is_alive(holder))
                .collect();
            let candidates: Vec<(String, i64)> = {
                let conn = self.conn();
                let mut statement = conn.prepare_cached(
                    "SELECT id, lease_epoch FROM runs
                     WHERE status IN ('running', 'compensating')
                       AND (lease_owner IS NULL OR lease_until < ?1 OR lease_owner IN (SELECT value FROM json_each(?2)))
                     ORDER BY updated_at LIMIT ?3",
                )?;
                statement
                    .query_map(
                        params![now, json_text(&dead)?, (limit + skip.len()) as i64],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )?
                    .collect::<Result<_, _>>()?
            };
            let mut claimed = Vec::new();
            for (run, epoch) in candidates {
                if claimed.len() == limit || skip.contains(&run) {
                    continue;
                }
                let changed = self.conn().execute(
                    "UPDATE runs SET lease_owner = ?2, lease_until = ?3, updated_at = ?4, lease_epoch = lease_epoch + 1,
                                     crashes = crashes + (lease_owner IS NOT NULL AND lease_owner != ?2)
                     WHERE id = ?1 AND lease_epoch = ?5 AND status IN ('running', 'compensating')",
                    params![run, owner.id(), now + lease.as_millis() as i64, now, epoch],
                )?;
                if changed == 1 {
                    claimed.push((run, epoch as u64 + 1));
                }
            }
            Ok(claimed)
        })
    }

    fn renew(
        &self,
        owner: &Owner,
        lease: Duration,
        runs: &[String],
    ) -> Result<Vec<String>, JournalError> {
        run_sql(|| {
            if runs.is_empty() {
                return Ok(Vec::new());
            }
            let conn = self.conn();
            let mut statement = conn.prepare_cached(
                "UPDATE runs SET lease_until = ?2
                 WHERE lease_owner = ?1 AND id IN (SELECT value FROM json_each(?3))
                 RETURNING id",
            )?;
            let renewed = statement
                .query_map(
                    params![
                        owner.id(),
                        now_ms() + lease.as_millis() as i64,
                        json_text(&runs)?
                    ],
                    |row| row.get(0),
                )?
                .collect::<Result<_, _>>()?;
            Ok(renewed)
        })
    }

    fn request_cancel(&self, run: &str) -> Result<(), JournalError> {
        run_sql(|| {
            let changed = self.conn().execute(
                "UPDATE runs SET cancel_requested = 1, updated_at = ?2 WHERE id = ?1",
                params![run, now_ms()],
            )?;
            if changed == 0 {
                return Err(JournalError::UnknownRun(run.to_string()).into());
            }
            Ok(())
        })
    }

    fn cancel_requested(&self, run: &str) -> Result<bool, JournalError> {
        run_sql(|| {
            Ok(self
                .conn()
                .prepare_cached("SELECT cancel_requested FROM runs WHERE id = ?1")?
                .query_row(params![run], |row| row.get(0))
                .optional()?
                .unwrap_or(false))
        })
    }

    fn count(&self, status: RunStatus) -> Result<u64, JournalError> {
        self.count_status(status)
    }

    fn due(&self, now: i64, limit: usize) -> Result<Vec<String>, JournalError> {
        self.due_runs(now, limit)
    }

    fn schedule_state(
        &self,
        workflow: &str,
        pattern: &str,
        initial: i64,
    ) -> Result<ScheduleState, JournalError> {
        self.state(workflow, pattern, initial)
    }

    fn promote(
        &self,
        owner: &Owner,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, JournalError> {
        self.promote_queued(owner, lease, limit)
    }

    fn cancel_queued(&self, run: &str) -> Result<bool, JournalError> {
        self.cancel_if_queued(run)
    }

    fn decide_schedule(
        &self,
        workflow: &str,
        last: i64,
        latest: i64,
        pending: Option<i64>,
    ) -> Result<bool, JournalError> {
        self.decide(workflow, last, latest, pending)
    }

    fn settle_schedule(&self, workflow: &str, tick: i64) -> Result<(), JournalError> {
        self.settle(workflow, tick)
    }

    fn schedule_busy(&self, workflow: &str, at: i64) -> Result<bool, JournalError> {
        self.ticks_unfinished_at(workflow, at)
    }

    fn prune(&self, finished_before: i64, workflow: Option<&str>) -> Result<usize, JournalError> {
        self.prune_finished(finished_before, workflow)
    }
}

impl SqliteJournal {
    /// What a fenced write that changed `changed` rows means: done, an
    /// unknown run, or a lease another host took.
    fn fenced(&self, run: &str, changed: usize) -> Result<(), Sql> {
        if changed == 1 {
            return Ok(());
        }
        Err(refusal(&self.conn(), run)?)
    }
}

/// Why a fenced write to `run` changed nothing: the run is another
/// host's now, or there is no such run.
fn refusal(conn: &Connection, run: &str) -> Result<Sql, Sql> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")?
        .exists(params![run])?;
    Ok(if exists {
        JournalError::LeaseLost(run.to_string())
    } else {
        JournalError::UnknownRun(run.to_string())
    }
    .into())
}

#[cfg(test)]
mod tests;
