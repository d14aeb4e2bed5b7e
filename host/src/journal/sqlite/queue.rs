//! The SQLite side of per-key concurrency: whether a new run must queue,
//! starting the queued runs whose key has room, and cancelling a queued run.
//! Every decision is one write transaction (SQLite has one writer at a
//! time), so two hosts cannot both take a key's last slot. It may not
//! execute runs.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{SqliteJournal, run_sql};
use crate::journal::{JournalError, Owner, Queue, now_ms};

/// The statuses that hold a key's slot.
const ACTIVE: &str = "('running', 'waiting', 'compensating')";

/// Records `run`'s key; queues it (no lease, status `queued`) when its key
/// is at its limit or other runs of the key already wait. Inside the write
/// transaction that just inserted it (its connection's).
pub(super) fn admit(
    conn: &rusqlite::Connection,
    workflow: &str,
    run: &str,
    queue: &Queue,
) -> rusqlite::Result<bool> {
    let full: bool = conn
        .prepare_cached(&format!(
            "SELECT (SELECT count(*) FROM runs WHERE workflow = ?1 AND concurrency_key = ?2
                        AND status IN {ACTIVE} AND id != ?3) >= ?4
                 OR EXISTS (SELECT 1 FROM runs WHERE workflow = ?1 AND concurrency_key = ?2 AND status = 'queued')"
        ))?
        .query_row(
            params![workflow, queue.key, run, queue.limit],
            |row| row.get(0),
        )?;
    conn.prepare_cached(
        "UPDATE runs SET concurrency_key = ?2, concurrency_limit = ?3, priority = ?4,
                         status = CASE WHEN ?5 THEN 'queued' ELSE status END,
                         lease_owner = CASE WHEN ?5 THEN NULL ELSE lease_owner END,
                         lease_until = CASE WHEN ?5 THEN NULL ELSE lease_until END,
                         lease_epoch = CASE WHEN ?5 THEN 0 ELSE lease_epoch END
         WHERE id = ?1",
    )?
    .execute(params![run, queue.key, queue.limit, queue.priority, full])?;
    Ok(full)
}

impl SqliteJournal {
    pub(super) fn promote_queued(
        &self,
        owner: &Owner,
        lease: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, JournalError> {
        run_sql(|| {
            let keys: Vec<(String, String)> = {
                let conn = self.conn();
                // Only keys with room: full ones, however many, cannot
                // keep the others from being looked at.
                let mut statement = conn.prepare_cached(&format!(
                    "SELECT workflow, concurrency_key FROM runs q WHERE status = 'queued'
                     GROUP BY workflow, concurrency_key
                     HAVING max(concurrency_limit) > (SELECT count(*) FROM runs a WHERE a.workflow = q.workflow
                                                       AND a.concurrency_key = q.concurrency_key AND a.status IN {ACTIVE})
                     LIMIT ?1"
                ))?;
                statement
                    .query_map(params![limit as i64], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<_, _>>()?
            };
            let mut started = Vec::new();
            for (workflow, key) in keys {
                let mut conn = self.conn();
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let room: Option<i64> = tx
                    .prepare_cached(&format!(
                        "SELECT concurrency_limit - (SELECT count(*) FROM runs WHERE workflow = ?1 AND concurrency_key = ?2
                                                      AND status IN {ACTIVE})
                         FROM runs WHERE workflow = ?1 AND concurrency_key = ?2 AND status = 'queued'
                         ORDER BY priority DESC, created_at, id LIMIT 1"
                    ))?
                    .query_row(params![workflow, key], |row| row.get(0))
                    .optional()?;
                let room = room.unwrap_or(0).min((limit - started.len()) as i64);
                if room > 0 {
                    let now = now_ms();
                    let mut statement = tx.prepare_cached(
                        "UPDATE runs SET status = 'running', lease_owner = ?3, lease_until = ?4, updated_at = ?5,
                                         lease_epoch = lease_epoch + 1
                         WHERE status = 'queued'
                           AND id IN (SELECT id FROM runs WHERE workflow = ?1 AND concurrency_key = ?2 AND status = 'queued'
                                      ORDER BY priority DESC, created_at, id LIMIT ?6)
                         RETURNING id, lease_epoch",
                    )?;
                    let promoted: Vec<(String, i64)> = statement
                        .query_map(
                            params![
                                workflow,
                                key,
                                owner.id(),
                                now + lease.as_millis() as i64,
                                now,
                                room
                            ],
                            |row| Ok((row.get(0)?, row.get(1)?)),
                        )?
                        .collect::<Result<_, _>>()?;
                    drop(statement);
                    started.extend(promoted.into_iter().map(|(id, epoch)| (id, epoch as u64)));
                }
                tx.commit()?;
                if started.len() >= limit {
                    break;
                }
            }
            Ok(started)
        })
    }

    pub(super) fn cancel_if_queued(&self, run: &str) -> Result<bool, JournalError> {
        run_sql(|| {
            let now = now_ms();
            let changed = self.conn().execute(
                "UPDATE runs SET status = 'cancelled', updated_at = ?2, finished_at = ?2
                 WHERE id = ?1 AND status = 'queued'",
                params![run, now],
            )?;
            Ok(changed == 1)
        })
    }
}
