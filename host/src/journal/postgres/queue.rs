//! The PostgreSQL side of per-key concurrency: whether a new run must
//! queue, starting the queued runs whose key has room, and cancelling a
//! queued run. Every decision about a key holds that key's advisory lock for
//! its transaction, so two hosts cannot both take the key's last slot. It
//! may not execute runs.

use std::sync::LazyLock;

use futures::try_join;
use tokio_postgres::types::ToSql;

use super::{DB_NOW, Fail, Pool};
use crate::journal::{Queue, now_ms};

/// The statuses that hold a key's slot.
const ACTIVE: &str = "('running', 'waiting', 'compensating')";

/// The advisory lock of a workflow's (`$1`) key (`$2`), for the transaction.
const LOCK_KEY: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('queue' || E'\\n' || $1 || E'\\n' || $2, 0))";

/// Takes the advisory lock of `workflow`'s `key` for the transaction.
async fn lock_key(
    tx: &deadpool_postgres::Transaction<'_>,
    workflow: &str,
    key: &str,
) -> Result<(), Fail> {
    let lock = tx.prepare_cached(LOCK_KEY).await?;
    tx.execute(&lock, &[&workflow, &key]).await?;
    Ok(())
}

/// Records run `$1`'s key `$2` (of workflow `$5`, limit `$3`, priority
/// `$4`) and queues it when the key is at its limit or other runs of the key
/// already wait; answers whether it queued. One statement, so that the
/// decision and the write are one round trip.
static ADMIT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH verdict AS (
             SELECT (SELECT count(*) FROM runs WHERE workflow = $5 AND concurrency_key = $2
                        AND status IN {ACTIVE} AND id <> $1) >= $3::bigint
                 OR EXISTS (SELECT 1 FROM runs WHERE workflow = $5 AND concurrency_key = $2 AND status = 'queued')
                 AS queued
         )
         UPDATE runs SET concurrency_key = $2, concurrency_limit = $3::bigint, priority = $4,
                         status = CASE WHEN verdict.queued THEN 'queued' ELSE status END,
                         lease_owner = CASE WHEN verdict.queued THEN NULL ELSE lease_owner END,
                         lease_until = CASE WHEN verdict.queued THEN NULL ELSE lease_until END,
                         lease_epoch = CASE WHEN verdict.queued THEN 0 ELSE lease_epoch END
         FROM verdict WHERE id = $1
         RETURNING verdict.queued"
    )
});

/// Records `run`'s key; queues it (no lease, status `queued`) when its key
/// is at its limit or other runs of the key already wait. Inside the begin
/// transaction that just inserted it.
pub(super) async fn admit(
    tx: &deadpool_postgres::Transaction<'_>,
    workflow: &str,
    run: &str,
    queue: &Queue,
) -> Result<bool, Fail> {
    let (lock, admit) = try_join!(tx.prepare_cached(LOCK_KEY), tx.prepare_cached(&ADMIT))?;
    let limit = i64::from(queue.limit);
    // Pipelined, as the start's lookup is: the server runs the decision
    // after the lock is held, and under READ COMMITTED its snapshot is
    // taken then, so it sees every run the key's last holder committed.
    let key: [&(dyn ToSql + Sync); 2] = [&workflow, &queue.key];
    let decision: [&(dyn ToSql + Sync); 5] = [&run, &queue.key, &limit, &queue.priority, &workflow];
    let (_, verdict) = try_join!(tx.execute(&lock, &key), tx.query_one(&admit, &decision))?;
    Ok(verdict.get(0))
}

/// Starts the queued runs whose key has room (see `Journal::promote`).
pub(super) async fn promote(
    pool: Pool,
    owner: String,
    lease_ms: i64,
    limit: usize,
) -> Result<Vec<(String, u64)>, Fail> {
    let mut client = pool.get().await?;
    let keys: Vec<(String, String)> = client
        .query(
            // Only keys with room: full ones, however many, cannot keep the
            // others from being looked at.
            &format!(
                "SELECT workflow, concurrency_key FROM runs q WHERE status = 'queued'
                 GROUP BY workflow, concurrency_key
                 HAVING max(concurrency_limit) > (SELECT count(*) FROM runs a WHERE a.workflow = q.workflow
                                                   AND a.concurrency_key = q.concurrency_key AND a.status IN {ACTIVE})
                 LIMIT $1"
            ),
            &[&(limit as i64)],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut started = Vec::new();
    for (workflow, key) in keys {
        let tx = client.transaction().await?;
        lock_key(&tx, &workflow, &key).await?;
        let room: i64 = tx
            .query_opt(
                &format!(
                    "SELECT concurrency_limit - (SELECT count(*) FROM runs WHERE workflow = $1 AND concurrency_key = $2
                                                  AND status IN {ACTIVE})
                     FROM runs WHERE workflow = $1 AND concurrency_key = $2 AND status = 'queued'
                     ORDER BY priority DESC, created_at, id LIMIT 1"
                ),
                &[&workflow, &key],
            )
            .await?
            .map_or(0, |row| row.get(0));
        let room = room.min((limit - started.len()) as i64);
        if room > 0 {
            let rows = tx
                .query(
                    &format!(
                        "UPDATE runs SET status = 'running', lease_owner = $3, lease_until = {DB_NOW} + $4,
                                         updated_at = $5, lease_epoch = lease_epoch + 1
                         WHERE status = 'queued'
                           AND id IN (SELECT id FROM runs WHERE workflow = $1 AND concurrency_key = $2 AND status = 'queued'
                                      ORDER BY priority DESC, created_at, id LIMIT $6)
                         RETURNING id, lease_epoch"
                    ),
                    &[&workflow, &key, &owner, &lease_ms, &now_ms(), &room],
                )
                .await?;
            started.extend(
                rows.iter()
                    .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1) as u64)),
            );
        }
        tx.commit().await?;
        if started.len() >= limit {
            break;
        }
    }
    Ok(started)
}

/// Ends a run that is still queued as cancelled.
pub(super) async fn cancel(pool: Pool, run: String) -> Result<bool, Fail> {
    let client = pool.get().await?;
    let now = now_ms();
    let changed = client
        .execute(
            "UPDATE runs SET status = 'cancelled', updated_at = $2, finished_at = $2
             WHERE id = $1 AND status = 'queued'",
            &[&run, &now],
        )
        .await?;
    Ok(changed == 1)
}
