//! The group-committed writes of a run: its start (`begin.rs` writes it),
//! its records as rows, the fenced write of one run's records or of its
//! end, and the commit of a batch of concurrent runs' writes (and the
//! entity store's statements, `shared.rs`) in one transaction (the queue
//! itself is `group.rs`).

use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use super::super::rows::batch_columns;
use super::begin::{NewRunRow, write_begin};
use super::{JournalError, RecordKind, Sql, SqliteJournal, group, now_us, refusal};
use crate::journal::{Begin, NewRun, Owner};
use wasaga_core::journal::{Appending, Beginning};

impl SqliteJournal {
    /// Appends `records` of `run`, committed with whatever other runs
    /// append meanwhile.
    pub(super) fn append_grouped(
        &self,
        run: &str,
        epoch: u64,
        records: &[(u64, RecordKind)],
    ) -> Result<bool, JournalError> {
        self.write_grouped(Write::Records {
            run: run.to_string(),
            epoch,
            rows: rows_of(records)?,
        })
        .and_then(Answer::cancel)
    }

    /// Appends `run`'s last `records` and records how it ended (or paused),
    /// releasing its lease: one write, committed with whatever other runs
    /// write meanwhile.
    pub(super) fn finish_grouped(
        &self,
        run: &str,
        epoch: u64,
        records: &[(u64, RecordKind)],
        end: End,
    ) -> Result<(), JournalError> {
        self.write_grouped(Write::End {
            run: run.to_string(),
            epoch,
            rows: rows_of(records)?,
            end,
        })
        .map(|_| ())
    }

    /// Records `run`, unless its transaction id has a run that answers for
    /// it: committed with whatever other runs write meanwhile.
    pub(super) fn begin_grouped(
        &self,
        run: &NewRun,
        owner: &Owner,
        lease: std::time::Duration,
    ) -> Result<Begin, JournalError> {
        let row = NewRunRow::of(run, owner, lease, &self.manifest_files)?;
        self.write_grouped(Write::Begin(row))?.begun()
    }

    /// [`Self::begin_grouped`] for a run's task (see `queue_grouped`).
    pub(super) fn queue_begin_grouped(
        &self,
        run: &NewRun,
        owner: &Owner,
        lease: std::time::Duration,
    ) -> Beginning<'_> {
        let row = match NewRunRow::of(run, owner, lease, &self.manifest_files) {
            Ok(row) => row,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let write = self.queue(Write::Begin(row));
        Box::pin(async move { write.await?.begun() })
    }

    fn write_grouped(&self, write: Write) -> Result<Answer, JournalError> {
        if !group::enabled() {
            let alone = Arc::new(group::Pending::new(write));
            commit_writes(&self.conn, std::slice::from_ref(&alone));
            return alone.outcome();
        }
        self.writes.submit(write, |batch| self.commit_batch(batch))
    }

    /// [`Self::append_grouped`] for a run's task: queued now, and the
    /// future waits for the commit as a task (see `Group::settled`).
    pub(super) fn queue_grouped(
        &self,
        run: &str,
        epoch: u64,
        records: &[(u64, RecordKind)],
    ) -> Appending<'_> {
        match rows_of(records) {
            Ok(rows) => self.cancel_once_committed(Write::Records {
                run: run.to_string(),
                epoch,
                rows,
            }),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    /// [`Self::finish_grouped`] for a run's task (see `queue_grouped`).
    pub(super) fn queue_finish_grouped(
        &self,
        run: &str,
        epoch: u64,
        records: &[(u64, RecordKind)],
        end: End,
    ) -> Appending<'_> {
        match rows_of(records) {
            Ok(rows) => self.cancel_once_committed(Write::End {
                run: run.to_string(),
                epoch,
                rows,
                end,
            }),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    /// Queues `write` now; the future answers whether a cancel was
    /// requested, once it is committed.
    fn cancel_once_committed(&self, write: Write) -> Appending<'_> {
        let committed = self.queue(write);
        Box::pin(async move { committed.await.and_then(Answer::cancel) })
    }

    /// Queues `write` now (so a run's writes commit in the order it made
    /// them); the future waits for its commit as a task.
    fn queue(
        &self,
        write: Write,
    ) -> impl std::future::Future<Output = Result<Answer, JournalError>> + Send + '_ {
        let queued = if group::enabled() {
            Queueing::Queued(self.writes.enqueue(write))
        } else {
            // Committed alone, at once (the benchmarks' baseline).
            Queueing::Alone(self.write_grouped(write))
        };
        async move {
            match queued {
                Queueing::Queued(queued) => queued.settled(|batch| self.commit_batch(batch)).await,
                Queueing::Alone(answer) => answer,
            }
        }
    }

    fn commit_batch(&self, batch: &[Arc<group::Pending<Write, Answer>>]) {
        commit_batch(&self.conn, self.flushes, batch)
    }
}

/// Commits a batch of writes; with `flushes` (the commit waits for the
/// disk), off the tokio worker, which goes on with other runs meanwhile
/// (they queue for the next commit).
pub(super) fn commit_batch(
    conn: &Mutex<Connection>,
    flushes: bool,
    batch: &[Arc<group::Pending<Write, Answer>>],
) {
    if flushes {
        group::off_the_worker(|| commit_writes(conn, batch))
    } else {
        commit_writes(conn, batch)
    }
}

/// Commits a batch of writes (of concurrent runs, and of the entity store)
/// in one transaction; each append or end is fenced on its own run's
/// epoch, and one refused or failed write (rolled back to its savepoint)
/// leaves the others written.
pub(super) fn commit_writes(
    conn: &Mutex<Connection>,
    batch: &[Arc<group::Pending<Write, Answer>>],
) {
    let conn = super::gate::lock(conn);
    // Alone, a write needs no savepoint: the transaction is its own.
    let alone = batch.len() == 1;
    let committed = (|| -> Result<Vec<Result<Answer, Sql>>, Sql> {
        // IMMEDIATE: a read-then-write transaction would get "busy" at
        // once (no waiting) if another connection wrote in between.
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        // Whatever happens next (an error, a panic), no transaction is
        // left open on the connection for a later statement to join.
        let _open = OpenTransaction(&conn);
        let at = now_us();
        let mut outcomes = Vec::with_capacity(batch.len());
        for pending in batch {
            if !alone {
                conn.prepare_cached("SAVEPOINT write")?.execute([])?;
            }
            let outcome = write_one(&conn, &pending.work, at);
            if let Err(e) = &outcome
                && conn.is_autocommit()
            {
                // SQLite rolled the whole transaction back (a full disk,
                // an I/O error): every write of the batch failed, with
                // this error.
                return Err(Sql::Journal(JournalError::Storage(describe(e))));
            }
            if !alone {
                if outcome.is_err() {
                    conn.prepare_cached("ROLLBACK TO write")?.execute([])?;
                }
                conn.prepare_cached("RELEASE write")?.execute([])?;
            }
            outcomes.push(outcome);
        }
        if alone && outcomes[0].is_err() {
            conn.prepare_cached("ROLLBACK")?.execute([])?;
            return Ok(outcomes);
        }
        if let Err(e) = conn
            .prepare_cached("COMMIT")
            .and_then(|mut c| c.execute([]))
        {
            // What was refused stays refused (a lost lease says so);
            // what was to be written was not.
            let message = e.to_string();
            return Ok(outcomes
                .into_iter()
                .map(|outcome| {
                    outcome.and_then(|_| Err(Sql::Journal(JournalError::Storage(message.clone()))))
                })
                .collect());
        }
        Ok(outcomes)
    })();
    match committed {
        Ok(outcomes) => {
            for (pending, outcome) in batch.iter().zip(outcomes) {
                pending.settle(outcome.map_err(JournalError::from));
            }
        }
        Err(e) => {
            let message = describe(&e);
            for pending in batch {
                pending.settle(Err(JournalError::Storage(message.clone())));
            }
        }
    }
}

/// Records as rows, owned (the write waits in a queue); see
/// `rows::batch_columns` for an input stored as a reference.
fn rows_of(records: &[(u64, RecordKind)]) -> Result<Vec<RecordRow>, JournalError> {
    let columns = batch_columns(records)?;
    Ok(records
        .iter()
        .zip(columns)
        .map(
            |((seq, _), (kind, node, action, attempt, body))| RecordRow {
                seq: *seq as i64,
                kind,
                node: node.map(str::to_string),
                action,
                attempt,
                body,
            },
        )
        .collect())
}

/// Rolls back, when dropped, a transaction still open on the connection.
struct OpenTransaction<'a>(&'a Connection);

impl Drop for OpenTransaction<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit() {
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }
}

/// A failure's words, to be wrapped in `JournalError::Storage` again.
fn describe(e: &Sql) -> String {
    match e {
        Sql::Sqlite(e) => e.to_string(),
        Sql::Journal(JournalError::Storage(message)) => message.clone(),
        Sql::Journal(e) => e.to_string(),
    }
}

/// A write queued now, or (group commit off) already committed alone.
enum Queueing<'a> {
    Queued(group::Queued<'a, Write, Answer>),
    Alone(Result<Answer, JournalError>),
}

/// One run's write, queued for a group commit: its start, records, or its
/// end.
pub(super) enum Write {
    /// The run's row, unless its transaction id has a run.
    Begin(NewRunRow),
    Records {
        run: String,
        epoch: u64,
        rows: Vec<RecordRow>,
    },
    /// The run's last records (maybe none), then its end.
    End {
        run: String,
        epoch: u64,
        rows: Vec<RecordRow>,
        end: End,
    },
    /// A statement of another store in the state file (the entity store's
    /// insert), with its parameters: see `shared.rs`.
    Statement {
        sql: &'static str,
        params: Vec<rusqlite::types::Value>,
    },
}

/// What a committed write answers.
pub(super) enum Answer {
    /// Records or an end: whether a cancel of the run was requested.
    Cancel(bool),
    /// A start: how it went.
    Begun(Begin),
    /// A statement: how many rows it changed.
    Changed(usize),
}

impl Answer {
    /// An append's or an end's answer (another's is a storage error: the
    /// queue mixed them up).
    fn cancel(self) -> Result<bool, JournalError> {
        match self {
            Answer::Cancel(cancel) => Ok(cancel),
            other => Err(other.mixed_up("an append")),
        }
    }

    /// A start's answer (see [`Answer::cancel`]).
    fn begun(self) -> Result<Begin, JournalError> {
        match self {
            Answer::Begun(begun) => Ok(begun),
            other => Err(other.mixed_up("a start")),
        }
    }

    /// A statement's answer (see [`Answer::cancel`]).
    pub(super) fn changed(self) -> Result<usize, JournalError> {
        match self {
            Answer::Changed(changed) => Ok(changed),
            other => Err(other.mixed_up("a statement")),
        }
    }

    fn mixed_up(&self, write: &str) -> JournalError {
        let answer = match self {
            Answer::Cancel(_) => "an append",
            Answer::Begun(_) => "a start",
            Answer::Changed(_) => "a statement",
        };
        JournalError::Storage(format!("{write} was answered as {answer}"))
    }
}

/// The columns a run's end sets (see `rows::end_columns`).
pub(super) struct End {
    pub status: &'static str,
    pub partial: bool,
    pub finished_at: Option<i64>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub errors: Option<String>,
    pub now: i64,
    /// When a waiting run wakes (NULL for any other status).
    pub wake_at: Option<i64>,
}

/// A record's columns, owned (the append waits in a queue).
pub(super) struct RecordRow {
    seq: i64,
    kind: &'static str,
    node: Option<String>,
    action: Option<&'static str>,
    attempt: Option<u32>,
    body: String,
}

/// Writes one run's write inside the open transaction.
fn write_one(conn: &Connection, write: &Write, at: i64) -> Result<Answer, Sql> {
    match write {
        Write::Begin(run) => write_begin(conn, run).map(Answer::Begun),
        Write::Records { run, epoch, rows } => {
            write_records(conn, run, *epoch, rows, at).map(Answer::Cancel)
        }
        Write::End {
            run,
            epoch,
            rows,
            end,
        } => {
            if !rows.is_empty() {
                write_records(conn, run, *epoch, rows, at)?;
            }
            write_end(conn, run, *epoch, end).map(|()| Answer::Cancel(false))
        }
        Write::Statement { sql, params } => Ok(Answer::Changed(
            conn.prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params))?,
        )),
    }
}

/// The run's end, fenced on its epoch in the same statement.
fn write_end(conn: &Connection, run: &str, epoch: u64, end: &End) -> Result<(), Sql> {
    let changed = conn
        .prepare_cached(
            "UPDATE runs SET status = ?2, partial = ?3, output = ?4, error = ?5, errors = ?6, updated_at = ?7,
             finished_at = ?8, lease_owner = NULL, lease_until = NULL, wake_at = ?10 WHERE id = ?1 AND lease_epoch = ?9",
        )?
        .execute(params![
            run,
            end.status,
            end.partial,
            end.output,
            end.error,
            end.errors,
            end.now,
            end.finished_at,
            epoch as i64,
            end.wake_at
        ])?;
    if changed == 1 {
        return Ok(());
    }
    Err(refusal(conn, run)?)
}

/// The fence, read under the write lock (no claim can come between it and
/// the records), then the records; whether a cancel was requested.
fn write_records(
    conn: &Connection,
    run: &str,
    epoch: u64,
    rows: &[RecordRow],
    at: i64,
) -> Result<bool, Sql> {
    let (cancel, held): (bool, i64) = conn
        .prepare_cached("SELECT cancel_requested, lease_epoch FROM runs WHERE id = ?1")?
        .query_row(params![run], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?
        .ok_or_else(|| JournalError::UnknownRun(run.to_string()))?;
    if held != epoch as i64 {
        return Err(JournalError::LeaseLost(run.to_string()).into());
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO records (run, seq, at, kind, node, action, attempt, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for row in rows {
        insert.execute(params![
            run,
            row.seq,
            at,
            row.kind,
            row.node,
            row.action,
            row.attempt,
            row.body
        ])?;
    }
    Ok(cancel)
}
