//! Pruning finished runs from the SQLite file: their records, rows and the
//! pinned manifests no run uses any more, then the pages they held. It may
//! not touch unfinished runs.

use rusqlite::{TransactionBehavior, params};

use super::{FINAL, SqliteJournal, run_sql};
use crate::journal::JournalError;

impl SqliteJournal {
    pub(super) fn prune_finished(
        &self,
        finished_before: i64,
        workflow: Option<&str>,
    ) -> Result<usize, JournalError> {
        run_sql(|| {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let selection =
                format!("status IN {FINAL} AND finished_at < ?1 AND (?2 IS NULL OR workflow = ?2)");
            tx.execute(
                &format!(
                    "DELETE FROM records WHERE run IN (SELECT id FROM runs WHERE {selection})"
                ),
                params![finished_before, workflow],
            )?;
            let pruned = tx.execute(
                &format!("DELETE FROM runs WHERE {selection}"),
                params![finished_before, workflow],
            )?;
            tx.execute(
                "DELETE FROM manifests WHERE hash NOT IN (SELECT manifest_hash FROM runs)",
                [],
            )?;
            tx.commit()?;
            // The file shrinks by the pages the runs held (on a state file
            // made before incremental vacuum, nothing happens here).
            // (Stepped to its end: each step frees one page.)
            let mut vacuum = conn.prepare("PRAGMA incremental_vacuum")?;
            let mut steps = vacuum.query([])?;
            while steps.next()?.is_some() {}
            Ok(pruned)
        })
    }
}
