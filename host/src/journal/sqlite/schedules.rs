//! The SQLite side of schedules: each schedule's last tick handled, and
//! whether a run its ticks started is unfinished. It may not start runs (a
//! scheduled run is begun like any other, with its tick).

use rusqlite::{OptionalExtension, params};

use super::{SqliteJournal, run_sql};
use crate::journal::JournalError;

impl SqliteJournal {
    pub(super) fn last_tick(&self, workflow: &str, initial: i64) -> Result<i64, JournalError> {
        run_sql(|| {
            let conn = self.conn();
            conn.prepare_cached(
                "INSERT INTO schedules (workflow, last_tick) VALUES (?1, ?2) ON CONFLICT (workflow) DO NOTHING",
            )?
            .execute(params![workflow, initial])?;
            let last: Option<i64> = conn
                .prepare_cached("SELECT last_tick FROM schedules WHERE workflow = ?1")?
                .query_row(params![workflow], |row| row.get(0))
                .optional()?;
            Ok(last.unwrap_or(initial))
        })
    }

    pub(super) fn advance_tick(&self, workflow: &str, tick: i64) -> Result<bool, JournalError> {
        run_sql(|| {
            let changed = self
                .conn()
                .prepare_cached(
                    "UPDATE schedules SET last_tick = ?2 WHERE workflow = ?1 AND last_tick < ?2",
                )?
                .execute(params![workflow, tick])?;
            Ok(changed == 1)
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
                                 AND status IN ('running', 'waiting', 'compensating'))
                         OR EXISTS (SELECT 1 FROM runs WHERE workflow = ?1 AND tick < ?2
                                 AND finished_at > ?2)",
                )?
                .query_row(params![workflow, at], |row| row.get(0))?)
        })
    }
}
