//! The dead-letter rule: a run whose host died while executing it too many
//! times (a step that crashes the host, say) is parked as `failed` with the
//! reason, instead of being taken over and crashing hosts forever. An
//! operator who fixed the cause continues it with `host runs retry`. It may
//! not execute the run.

use super::{DurableError, Host};
use crate::journal::{RecordKind, RunRecord};
use crate::saga::{FailureKind, RunError, RunReport, RunStatus};

impl Host {
    /// Ends the run, claimed here under `epoch`, as `failed` with why; its
    /// steps are neither called nor compensated.
    pub(super) async fn park(
        &self,
        run: &str,
        epoch: u64,
        record: &RunRecord,
    ) -> Result<RunReport, DurableError> {
        let at = self.call_in_flight(run)?;
        let place = at
            .as_ref()
            .map_or_else(String::new, |node| format!(", the last time at '{node}'"));
        let message = format!(
            "the hosts executing this run died (or stalled past their lease) {} times while executing it{place}: it is parked as failed instead of being resumed again (the dead-letter rule, WASAGA_DEAD_LETTER_AFTER={}). What ran is not compensated. Find the cause (a step that crashes or exhausts the host, say), then `host runs retry {run}` continues it where it stopped, or `host runs rerun {run}` starts it again",
            record.crashes, self.dead_letter_after
        );
        tracing::error!(run, crashes = record.crashes, "{message}");
        let report = RunReport {
            run: run.to_string(),
            workflow: record.workflow.clone(),
            transaction_id: record.transaction_id.clone(),
            status: RunStatus::Failed,
            partial: false,
            output: None,
            error: Some(RunError {
                step: at,
                kind: FailureKind::Host,
                message,
                permanent: true,
                compensation_failures: Vec::new(),
            }),
            errors: Vec::new(),
            trace: Vec::new(),
            events: Vec::new(),
            all_events: Vec::new(),
            duration_ms: 0.0,
            wake_at: None,
            rerun_of: None,
            reruns: Vec::new(),
            tick: None,
            trace_id: None,
        };
        self.journal.finish(run, epoch, &report)?;
        // Live streams end and metrics count it, as for any run that ended.
        if let Some(observer) = &self.observer {
            observer.status(run, RunStatus::Failed);
        }
        Ok(self.report(run)?)
    }

    /// The call whose start is the run's last record without an end: where
    /// its hosts died.
    fn call_in_flight(&self, run: &str) -> Result<Option<String>, DurableError> {
        let mut open: Option<String> = None;
        for record in self.journal.records(run)? {
            match record.kind {
                RecordKind::Started { node, .. } => open = Some(node),
                RecordKind::Finished { node, .. } if open.as_ref() == Some(&node) => open = None,
                _ => {}
            }
        }
        Ok(open)
    }
}
