//! The PostgreSQL journal's writes of a running run: the append of its
//! records (the fence, the cancel flag and every record in one round trip)
//! and its end (with its last records, in one round trip too), whether the
//! caller waits for them on its thread or as a task. It owns those
//! statements only; the journal's other writes are `postgres.rs`'s.

use tokio_postgres::types::ToSql;

use super::super::rows::{batch_columns, end_columns};
use super::{Fail, JournalError, Pool, RecordKind, RunReport, fenced, now_ms, now_us};

/// An append's parameters, as the statement binds them.
pub(super) struct Columns {
    run: String,
    epoch: i64,
    seqs: Vec<i64>,
    kinds: Vec<String>,
    nodes: Vec<Option<String>>,
    actions: Vec<Option<String>>,
    attempts: Vec<Option<i32>>,
    bodies: Vec<String>,
}

impl Columns {
    /// `records` of `run`, written under lease `epoch`.
    pub(super) fn of(
        run: &str,
        epoch: u64,
        records: &[(u64, RecordKind)],
    ) -> Result<Columns, JournalError> {
        let mut columns = Columns {
            run: run.to_string(),
            epoch: epoch as i64,
            seqs: Vec::with_capacity(records.len()),
            kinds: Vec::with_capacity(records.len()),
            nodes: Vec::with_capacity(records.len()),
            actions: Vec::with_capacity(records.len()),
            attempts: Vec::with_capacity(records.len()),
            bodies: Vec::with_capacity(records.len()),
        };
        for ((seq, _), (kind, node, action, attempt, body)) in
            records.iter().zip(batch_columns(records)?)
        {
            columns.seqs.push(*seq as i64);
            columns.kinds.push(kind.to_string());
            columns.nodes.push(node.map(str::to_string));
            columns.actions.push(action.map(str::to_string));
            columns.attempts.push(attempt.map(|a| a as i32));
            columns.bodies.push(body);
        }
        Ok(columns)
    }

    /// $1-$9 of a statement that writes the records (`at` is $3).
    fn params<'a>(&'a self, at: &'a i64) -> [&'a (dyn ToSql + Sync); 9] {
        [
            &self.run,
            &self.epoch,
            at,
            &self.seqs,
            &self.kinds,
            &self.nodes,
            &self.actions,
            &self.attempts,
            &self.bodies,
        ]
    }
}

/// The records' INSERT, bound to `Columns::params` ($1-$9), written only
/// when the CTE `fence` has a row (a macro so that each statement stays
/// one literal, prepared once).
macro_rules! insert_records_if_fenced {
    () => {
        "INSERT INTO records (run, seq, at, kind, node, action, attempt, body)
         SELECT $1, r.seq, $3, r.kind, r.node, r.action, r.attempt, r.body
         FROM unnest($4::bigint[], $5::text[], $6::text[], $7::text[], $8::int[], $9::text[])
              AS r(seq, kind, node, action, attempt, body)
         WHERE EXISTS (SELECT 1 FROM fence)
         RETURNING 1"
    };
}

/// Writes the records if the run's lease epoch is still theirs; answers
/// whether a cancel was requested.
pub(super) async fn append(pool: Pool, c: Columns) -> Result<bool, Fail> {
    let client = pool.get().await?;
    // One statement, one round trip: the fence row is locked (FOR SHARE)
    // so a claim waits for the records or they see its new epoch; no fence
    // row, no records.
    let statement = client
        .prepare_cached(concat!(
            "WITH fence AS (
                 SELECT cancel_requested FROM runs WHERE id = $1 AND lease_epoch = $2 FOR SHARE
             ), written AS (",
            insert_records_if_fenced!(),
            ")
             SELECT (SELECT cancel_requested FROM fence), (SELECT count(*) FROM written)",
        ))
        .await?;
    let row = client.query_one(&statement, &c.params(&now_us())).await?;
    match row.get::<_, Option<bool>>(0) {
        Some(cancel) => Ok(cancel),
        None => {
            fenced(&client, &c.run, 0).await?;
            unreachable!("a fence that changed nothing is an error")
        }
    }
}

/// A run's end, as its row stores it.
pub(super) struct End {
    run: String,
    epoch: i64,
    status: &'static str,
    partial: bool,
    output: Option<String>,
    error: Option<String>,
    errors: Option<String>,
    now: i64,
    finished_at: Option<i64>,
    wake_at: Option<i64>,
}

impl End {
    /// How `run`, executed under lease `epoch`, ended (or paused).
    pub(super) fn of(run: &str, epoch: u64, report: &RunReport) -> Result<End, JournalError> {
        let now = now_ms();
        let (finished_at, output, error, errors) = end_columns(report, now)?;
        Ok(End {
            run: run.to_string(),
            epoch: epoch as i64,
            status: report.status.as_str(),
            partial: report.partial,
            output,
            error,
            errors,
            now,
            finished_at,
            wake_at: report.wake_at,
        })
    }

    /// The columns the end sets, in the order its statements number them
    /// (status, partial, output, error, errors, updated_at, finished_at,
    /// wake_at).
    fn columns(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.status,
            &self.partial,
            &self.output,
            &self.error,
            &self.errors,
            &self.now,
            &self.finished_at,
            &self.wake_at,
        ]
    }
}

/// Records the run's last records (if any) and its end, releasing its
/// lease, if its lease epoch is still `end`'s: one statement, so one round
/// trip and one transaction (no crash can leave the records without the
/// end).
pub(super) async fn finish_with(
    pool: Pool,
    records: Option<Columns>,
    end: End,
) -> Result<(), Fail> {
    let Some(c) = records else {
        return finish(pool, end).await;
    };
    let client = pool.get().await?;
    // The end's UPDATE is the fence: it locks the run's row (a claim waits
    // for the records, or they see its new epoch) and the records are
    // written only when it changed the row.
    let statement = client
        .prepare_cached(concat!(
            "WITH fence AS (
                 UPDATE runs SET status = $10, partial = $11, output = $12, error = $13, errors = $14, updated_at = $15,
                 finished_at = $16, lease_owner = NULL, lease_until = NULL, wake_at = $17
                 WHERE id = $1 AND lease_epoch = $2
                 RETURNING 1
             ), written AS (",
            insert_records_if_fenced!(),
            ")
             SELECT (SELECT count(*) FROM fence), (SELECT count(*) FROM written)",
        ))
        .await?;
    let at = now_us();
    let mut params = c.params(&at).to_vec();
    params.extend_from_slice(&end.columns());
    let row = client.query_one(&statement, &params).await?;
    fenced(&client, &end.run, row.get::<_, i64>(0) as u64).await
}

/// Records the run's end and releases its lease, if its lease epoch is
/// still `end`'s.
pub(super) async fn finish(pool: Pool, end: End) -> Result<(), Fail> {
    let client = pool.get().await?;
    // Numbered as in `finish_with`'s statement: $1 and $2, then the end's
    // columns.
    let statement = client
        .prepare_cached(
            "UPDATE runs SET status = $3, partial = $4, output = $5, error = $6, errors = $7, updated_at = $8,
             finished_at = $9, lease_owner = NULL, lease_until = NULL, wake_at = $10 WHERE id = $1 AND lease_epoch = $2",
        )
        .await?;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&end.run, &end.epoch];
    params.extend_from_slice(&end.columns());
    let changed = client.execute(&statement, &params).await?;
    fenced(&client, &end.run, changed).await
}
