//! Durable time: finds the waiting runs whose wake-up time has come (a
//! sleep's end, an async step's answer deadline) and continues them through
//! `Host`'s resume, where the orchestrator settles what is due. The time
//! itself is in the journal (`wake_at`), so any host may fire a timer and a
//! run's lease makes sure one does. It may not write to the journal itself.

use std::sync::Arc;

use super::{DurableError, Host};
use crate::journal::now_ms;
use crate::saga::RunReport;

/// How many due runs one look continues at most.
const DUE_BATCH: usize = 64;

impl Host {
    /// The waiting runs due now that no one here is at (nor refused before).
    pub(super) fn due_runs(&self, skip: &[String]) -> Result<Vec<String>, DurableError> {
        // Past the ones skipped: a batch of refused runs with the earliest
        // times must not keep every later timer from firing.
        let due = self.journal.due(now_ms(), DUE_BATCH + skip.len())?;
        Ok(due
            .into_iter()
            .filter(|run| !skip.contains(run))
            .take(DUE_BATCH)
            .collect())
    }

    /// Continues each due run in a task of its own (what the sweep of
    /// `host serve` does every poll); two hosts that find one run due race
    /// for its lease, and the loser leaves it.
    pub(super) fn wake_due(self: &Arc<Self>, skip: &[String]) {
        let due = match self.due_runs(skip) {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!("could not look for runs whose time has come: {e}");
                return;
            }
        };
        for run in due {
            let host = self.clone();
            tokio::spawn(async move {
                tracing::info!(run, "waking a waiting run: its time has come");
                match host.resume(&run).await {
                    Ok(report) => {
                        tracing::info!(
                            run,
                            status = report.status.as_str(),
                            "woken run paused or ended"
                        )
                    }
                    // Another host (or a request here) was quicker.
                    Err(DurableError::Refused(reason)) => tracing::debug!(run, "{reason}"),
                    Err(e) => host.note_failed_resume(&run, &e),
                }
            });
        }
    }

    /// Continues the due runs one after the other (`host resume --all` and
    /// the start of `host run`).
    pub(super) async fn wake_due_here(
        &self,
        results: &mut Vec<(String, Result<RunReport, DurableError>)>,
    ) -> Result<(), DurableError> {
        for run in self.due_runs(&[])? {
            tracing::info!(run = %run, "waking a waiting run: its time has come");
            let result = self.resume(&run).await;
            results.push((run, result));
        }
        Ok(())
    }
}
