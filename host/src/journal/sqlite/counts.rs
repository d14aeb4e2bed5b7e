//! What the sweeps and the metrics ask the SQLite file: the waiting runs
//! whose time has come, and how many runs have a status. It may not write.

use rusqlite::params;

use super::{SqliteJournal, run_sql};
use crate::journal::JournalError;
use crate::saga::RunStatus;

impl SqliteJournal {
    pub(super) fn due_runs(&self, now: i64, limit: usize) -> Result<Vec<String>, JournalError> {
        run_sql(|| {
            let conn = self.conn();
            let mut statement = conn.prepare_cached(
                "SELECT id FROM runs WHERE wake_at <= ?1 AND status = 'waiting' ORDER BY wake_at LIMIT ?2",
            )?;
            let ids = statement
                .query_map(params![now, limit as i64], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(ids)
        })
    }

    pub(super) fn count_status(&self, status: RunStatus) -> Result<u64, JournalError> {
        run_sql(|| {
            let n: i64 = self
                .conn()
                .prepare_cached("SELECT count(*) FROM runs WHERE status = ?1")?
                .query_row(params![status.as_str()], |row| row.get(0))?;
            Ok(n.max(0) as u64)
        })
    }
}
