//! The PostgreSQL side of schedules: each schedule's last tick handled and
//! the tick whose run is being recorded (moved on by compare-and-set, so of
//! hosts deciding at once one does), and whether a run its ticks started
//! was unfinished at a time. It may not start runs.

use super::{Fail, Pool};
use crate::journal::ScheduleState;

pub(super) async fn state(
    pool: Pool,
    workflow: String,
    pattern: String,
    initial: i64,
) -> Result<ScheduleState, Fail> {
    let client = pool.get().await?;
    let read = "SELECT last_tick, pending_tick, pattern FROM schedules WHERE workflow = $1";
    // Read first: a look that finds the schedule as it was writes nothing.
    let row = client.query_opt(read, &[&workflow]).await?;
    let row = match row {
        Some(row) if row.get::<_, String>(2) == pattern => row,
        Some(_) => {
            client
                .execute(
                    "UPDATE schedules SET last_tick = $2, pending_tick = NULL, pattern = $3
                     WHERE workflow = $1 AND pattern <> $3",
                    &[&workflow, &initial, &pattern],
                )
                .await?;
            client.query_one(read, &[&workflow]).await?
        }
        None => {
            client
                .execute(
                    "INSERT INTO schedules (workflow, last_tick, pattern) VALUES ($1, $2, $3)
                     ON CONFLICT (workflow) DO NOTHING",
                    &[&workflow, &initial, &pattern],
                )
                .await?;
            client.query_one(read, &[&workflow]).await?
        }
    };
    Ok(ScheduleState {
        last_tick: row.get(0),
        pending_tick: row.get(1),
    })
}

pub(super) async fn decide(
    pool: Pool,
    workflow: String,
    last: i64,
    latest: i64,
    pending: Option<i64>,
) -> Result<bool, Fail> {
    let client = pool.get().await?;
    let changed = client
        .execute(
            "UPDATE schedules SET last_tick = $3, pending_tick = $4
             WHERE workflow = $1 AND last_tick = $2 AND pending_tick IS NULL",
            &[&workflow, &last, &latest, &pending],
        )
        .await?;
    Ok(changed == 1)
}

pub(super) async fn settle(pool: Pool, workflow: String, tick: i64) -> Result<(), Fail> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE schedules SET pending_tick = NULL WHERE workflow = $1 AND pending_tick = $2",
            &[&workflow, &tick],
        )
        .await?;
    Ok(())
}

pub(super) async fn busy(pool: Pool, workflow: String, at: i64) -> Result<bool, Fail> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE workflow = $1 AND tick < $2
                            AND status IN ('running', 'waiting', 'compensating', 'queued'))
                 OR EXISTS (SELECT 1 FROM runs WHERE workflow = $1 AND tick < $2
                            AND finished_at > $2)",
            &[&workflow, &at],
        )
        .await?;
    Ok(row.get(0))
}
