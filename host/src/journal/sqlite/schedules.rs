//! The SQLite side of schedules: each schedule's last tick handled and the
//! tick whose run is being recorded, and whether a run its ticks started
//! was unfinished at a time. It may not start runs (a
//! scheduled run is begun like any other, with its tick).

use rusqlite::{OptionalExtension, params};

use super::{SqliteJournal, run_sql};
use crate::journal::{JournalError, ScheduleState};

impl SqliteJournal {
    pub(super) fn state(
        &self,
        workflow: &str,
        pattern: &str,
        initial: i64,
    ) -> Result<ScheduleState, JournalError> {
        run_sql(|| {
            let conn = self.conn();
            let read = || -> rusqlite::Result<Option<(i64, Option<i64>, String)>> {
                conn.prepare_cached(
                    "SELECT last_tick, pending_tick, pattern FROM schedules WHERE workflow = ?1",
                )?
                .query_row(params![workflow], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()
            };
            // Read first: a look that finds the schedule as it was writes nothing.
            let row = match read()? {
                Some((last, pending, seen)) if seen == pattern => (last, pending),
                Some(_) => {
                    conn.prepare_cached(
                        "UPDATE schedules SET last_tick = ?2, pending_tick = NULL, pattern = ?3
                         WHERE workflow = ?1 AND pattern != ?3",
                    )?
                    .execute(params![workflow, initial, pattern])?;
                    read()?.map_or((initial, None), |(last, pending, _)| (last, pending))
                }
                None => {
                    conn.prepare_cached(
                        "INSERT INTO schedules (workflow, last_tick, pattern) VALUES (?1, ?2, ?3)
                         ON CONFLICT (workflow) DO NOTHING",
                    )?
                    .execute(params![workflow, initial, pattern])?;
                    read()?.map_or((initial, None), |(last, pending, _)| (last, pending))
                }
            };
            Ok(ScheduleState {
                last_tick: row.0,
                pending_tick: row.1,
            })
        })
    }

    pub(super) fn decide(
        &self,
        workflow: &str,
        last: i64,
        latest: i64,
        pending: Option<i64>,
    ) -> Result<bool, JournalError> {
        run_sql(|| {
            let changed = self
                .conn()
                .prepare_cached(
                    "UPDATE schedules SET last_tick = ?3, pending_tick = ?4
                     WHERE workflow = ?1 AND last_tick = ?2 AND pending_tick IS NULL",
                )?
                .execute(params![workflow, last, latest, pending])?;
            Ok(changed == 1)
        })
    }

    pub(super) fn settle(&self, workflow: &str, tick: i64) -> Result<(), JournalError> {
        run_sql(|| {
            self.conn()
                .prepare_cached(
                    "UPDATE schedules SET pending_tick = NULL WHERE workflow = ?1 AND pending_tick = ?2",
                )?
                .execute(params![workflow, tick])?;
            Ok(())
        })
    }

    pub(super) fn ticks_unfinished_at(
        &self,
        workflow: &str,
        at: i64,
    ) -> Result<bool, JournalError> {
        run_sql(|| {
            Ok(self
                .conn()
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM runs WHERE workflow = ?1 AND tick < ?2
                                 AND status IN ('running', 'waiting', 'compensating', 'queued'))
                         OR EXISTS (SELECT 1 FROM runs WHERE workflow = ?1 AND tick < ?2
                                 AND finished_at > ?2)",
                )?
                .query_row(params![workflow, at], |row| row.get(0))?)
        })
    }
}
