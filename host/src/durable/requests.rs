//! What an outside caller asks of a run it does not execute: cancel it,
//! answer its waiting async step, or retry the compensations of a failed
//! one. Each journals the request first, then continues the run here
//! through `Host`'s resume. It may not start runs.

use super::{DurableError, Host};
use crate::journal::RecordKind;
use crate::json::Json;
use crate::saga::{Action, CallRecord, FailureKind, RunReport, RunStatus, StepFailure};

/// The answer to a waiting async step.
#[derive(Debug, Clone)]
pub enum Answer {
    /// It succeeded with this output.
    Succeed(Json),
    /// It failed.
    Fail(StepFailure),
}

impl Host {
    /// Cancels a run: no new call starts, and everything it did is
    /// compensated. Refused for a failed run (its compensation already
    /// failed) and for one already compensated.
    pub async fn cancel(&self, run: &str) -> Result<RunReport, DurableError> {
        let mut record = self.journal.run(run)?;
        // A queued run never ran: nothing to compensate. (Started meanwhile,
        // it is cancelled like any running run.)
        if record.status == RunStatus::Queued {
            if self.journal.cancel_queued(run)? {
                if let Some(observer) = &self.observer {
                    observer.status(run, RunStatus::Cancelled);
                }
                return Ok(self.report(run)?);
            }
            record = self.journal.run(run)?;
        }
        match record.status {
            RunStatus::Failed => {
                return Err(DurableError::Refused(format!(
                    "run {run} failed: a compensation already failed ({}); cancelling would not undo more. Fix the cause, then compensate by hand",
                    record
                        .error
                        .as_ref()
                        .map_or_else(String::new, |e| e.message.clone())
                )));
            }
            RunStatus::Reverted | RunStatus::Cancelled => {
                return Err(DurableError::Refused(format!(
                    "run {run} is already {}: everything it did was compensated",
                    record.status.as_str()
                )));
            }
            _ => {}
        }
        if self.busy_elsewhere(&record) {
            // Journaled for the recorder, which reads it with every commit;
            // a call in flight is interrupted at once here, or within a
            // second by the process executing it.
            self.journal.request_cancel(run)?;
            self.interrupt(run);
            let report = self.wait_final(run).await?;
            if !matches!(report.status, RunStatus::Waiting | RunStatus::Done) {
                return Ok(report);
            }
            // It paused or finished before it saw the cancel: cancel it here
            // (found in review: the answer said "waiting" while the cancel
            // stayed pending for a later answer to act on).
            record = self.journal.run(run)?;
        }
        // Refused before anything changes if it cannot resume here.
        self.resumable(&record)?;
        // Journaled first: whoever continues the run (this host, or another
        // after this one died) compensates it.
        self.journal.request_cancel(run)?;
        if record.status == RunStatus::Done {
            // A finished run is reopened for its compensation, leased here
            // at once.
            let executing = self.executing_or_refuse(run)?;
            let Some(epoch) = self.journal.reopen(
                run,
                RunStatus::Done,
                RunStatus::Compensating,
                &self.owner,
                self.lease,
            )?
            else {
                return Err(DurableError::Refused(format!(
                    "run {run} is being cancelled by another request"
                )));
            };
            return self
                .continue_marked(run, true, executing, Some(epoch))
                .await;
        }
        self.continue_run(run, true).await
    }

    /// Retries the compensations of a `failed` run (one that gave up on a
    /// compensation) once an operator fixed the cause: exactly those that
    /// failed, in the same reverse order, each with its next attempt
    /// number. The run ends `reverted`, or `failed` again with the new
    /// errors. A run parked by the dead-letter rule (its host died while
    /// executing it too many times) continues where it stopped instead.
    /// Refused, changing nothing, for a run in any other status.
    pub async fn retry(&self, run: &str) -> Result<RunReport, DurableError> {
        let record = self.journal.run(run)?;
        if record.status != RunStatus::Failed {
            let why = match record.status {
                RunStatus::Done => "it finished and nothing failed (`host cancel` compensates it)",
                RunStatus::Reverted | RunStatus::Cancelled => {
                    "every compensation already succeeded"
                }
                _ => "it has not finished: it is still being executed or waits",
            };
            return Err(DurableError::Refused(format!(
                "run {run} is {}: only a failed run (a compensation gave up) can be retried, and {why}",
                record.status.as_str()
            )));
        }
        // Refused before anything changes if it cannot resume here.
        self.resumable(&record)?;
        let executing = self.executing_or_refuse(run)?;
        let history = self.journal.history(run)?;
        let compensations = history.failed_compensations();
        // Parked by the dead-letter rule: it failed without a compensation
        // failing (a run that compensated and failed always has one).
        let parked = record
            .error
            .as_ref()
            .is_none_or(|e| e.compensation_failures.is_empty());
        let to = if parked {
            RunStatus::Running
        } else {
            RunStatus::Compensating
        };
        if parked {
            tracing::info!(run, "continuing a parked run where it stopped");
        } else {
            tracing::info!(run, compensations = ?compensations, "retrying the compensations that failed");
        }
        // Journaled first, under the run's last epoch: whoever continues the
        // run (this host, or another after this one died) retries them; a
        // host that dies before the reopen leaves it failed, to retry again.
        let retry = RecordKind::Retry { compensations };
        let _cancelled =
            self.journal
                .append(run, record.lease_epoch, &[(history.last_seq + 1, retry)])?;
        let Some(epoch) =
            self.journal
                .reopen(run, RunStatus::Failed, to, &self.owner, self.lease)?
        else {
            return Err(DurableError::Refused(format!(
                "run {run} is being retried by another request"
            )));
        };
        self.continue_marked(run, false, executing, Some(epoch))
            .await
    }

    /// Records the answer to a waiting async step, then continues the run.
    pub async fn answer(
        &self,
        run: &str,
        step: &str,
        answer: Answer,
    ) -> Result<RunReport, DurableError> {
        // Taken first: an answer is recorded only for a run no one executes.
        let executing = self.executing_or_refuse(run)?;
        let record = self.journal.run(run)?;
        if record.status.is_final() {
            return Err(DurableError::Refused(format!(
                "run {run} is {}: it waits for nothing",
                record.status.as_str()
            )));
        }
        let history = self.journal.history(run)?;
        let waiting: Vec<String> = history.waiting_nodes();
        let Some(_) = history
            .call(step, Action::Invoke)
            .filter(|c| c.waiting.is_some() && c.settled.is_none())
        else {
            let known = if history.call(step, Action::Invoke).is_some() {
                format!("step '{step}' of run {run} is not waiting for an answer")
            } else {
                format!("run {run} has no step '{step}' that ran")
            };
            let hint = if waiting.is_empty() {
                "no step of it is waiting".to_string()
            } else {
                format!("waiting: {}", waiting.join(", "))
            };
            return Err(DurableError::Refused(format!("{known} ({hint})")));
        };
        let Some(epoch) = self.journal.claim(run, &self.owner, self.lease)? else {
            return Err(DurableError::Refused(format!(
                "run {run} is being executed by another process"
            )));
        };
        // Read again under the lease: between the first read and the claim
        // another host may have timed the step out (and invoked it again).
        let history = self.journal.history(run)?;
        let Some(call) = history
            .call(step, Action::Invoke)
            .filter(|c| c.waiting.is_some() && c.settled.is_none())
            .cloned()
        else {
            // Continued as it is (which releases the lease), then refused.
            let report = self
                .continue_marked(run, false, executing, Some(epoch))
                .await?;
            return Err(DurableError::Refused(format!(
                "step '{step}' of run {run} stopped waiting for an answer just before this one (the run is now {})",
                report.status.as_str()
            )));
        };
        // `running` before the answer is recorded: a host that dies in
        // between leaves a run the sweep resumes (it waits again for the
        // answer), never a `waiting` run whose call already settled.
        self.journal.set_status(run, epoch, RunStatus::Running)?;
        let outcome = match answer {
            Answer::Succeed(output) => CallRecord::Done {
                output,
                compensation: None,
            },
            Answer::Fail(error) => CallRecord::Failed { error, last: true },
        };
        let answer = RecordKind::Finished {
            node: step.to_string(),
            action: Action::Invoke,
            attempt: call.attempts,
            record: outcome,
        };
        let _cancelled = self
            .journal
            .append(run, epoch, &[(history.last_seq + 1, answer)])?;
        self.continue_marked(run, false, executing, Some(epoch))
            .await
    }
}

/// A step failure given on the command line (`--error '{"kind": ..., "message": ...}'`).
pub fn parse_answer_error(text: &str) -> Result<StepFailure, String> {
    #[derive(serde::Deserialize)]
    struct Given {
        #[serde(default)]
        kind: Option<FailureKind>,
        message: String,
        #[serde(default)]
        compensation_data: Option<Box<serde_json::value::RawValue>>,
    }
    let given: Given = serde_json::from_str(text).map_err(|e| {
        format!("the error is not {{\"kind\"?: \"...\", \"message\": \"...\"}}: {e}")
    })?;
    let mut failure =
        StepFailure::new(given.kind.unwrap_or(FailureKind::Unknown), given.message).permanent();
    // Checked by `Json::parse`, like every JSON that enters.
    failure.compensation_data = given
        .compensation_data
        .map(|raw| Json::parse(raw.get().to_string()))
        .transpose()
        .map_err(|e| format!("the error's compensation_data: {e}"))?;
    Ok(failure)
}
