//! Per-key concurrency: a run of a workflow with `concurrency` is recorded
//! `queued` while its key is at its limit (the journal decides, in the
//! begin transaction), and starts when a run of its key ends — on this host
//! at once, or on any host's next look (a host that died after a run ended
//! leaves the queue to the others). It may not decide admission itself.

use std::sync::Arc;
use std::time::Duration;

use super::{DurableError, Host};
use crate::expr::Scope;
use crate::journal::Queue;
use crate::json::Json;
use crate::saga::RunReport;
use crate::workflow::LoadedWorkflow;

/// How many queued runs one look starts at most.
const PROMOTE_BATCH: usize = 64;

impl Host {
    /// Where a run of `workflow` with `input` queues: its key and priority,
    /// evaluated over the input; `None` without `concurrency`.
    pub(super) fn queue_for(
        &self,
        workflow: &LoadedWorkflow,
        input: &Json,
    ) -> Result<Option<Queue>, DurableError> {
        let Some(concurrency) = &workflow.manifest.concurrency else {
            return Ok(None);
        };
        let scope = Scope::with_input(input.clone());
        let key = match &concurrency.key {
            None => String::new(),
            Some(expr) => {
                let value = expr.eval(&scope).map_err(|e| {
                    DurableError::Refused(format!("the concurrency key cannot be computed: {e}"))
                })?;
                match value.value() {
                    serde_json::Value::String(text) => text.clone(),
                    _ => value.to_string(),
                }
            }
        };
        let priority = match &concurrency.priority {
            None => 0,
            Some(expr) => {
                let value = expr.eval(&scope).map_err(|e| {
                    DurableError::Refused(format!("the run's priority cannot be computed: {e}"))
                })?;
                value
                    .value()
                    .as_f64()
                    .filter(|n| n.is_finite())
                    .map(|n| n.clamp(i64::MIN as f64, i64::MAX as f64) as i64)
                    .ok_or_else(|| {
                        DurableError::Refused(format!("a run's priority is a number, not {value}"))
                    })?
            }
        };
        Ok(Some(Queue {
            key,
            limit: concurrency.limit,
            priority,
        }))
    }

    /// Says that a run of a workflow with `concurrency` ended here: the
    /// queue loop looks for runs to start at once.
    pub(super) fn slot_freed(&self) {
        self.promotions.notify_one();
    }

    /// Starts queued runs whose key has room, as long as the returned task
    /// runs: when a run ends here, and every `poll` (runs that ended on
    /// other hosts, or on a host that died before it looked).
    pub fn queue_loop(self: &Arc<Self>, poll: Duration) -> tokio::task::JoinHandle<()> {
        let host = self.clone();
        tokio::spawn(async move {
            loop {
                match host.journal.promote(&host.owner, host.lease, PROMOTE_BATCH) {
                    Ok(started) => {
                        for (run, epoch) in started {
                            let host = host.clone();
                            tokio::spawn(async move {
                                tracing::info!(run, "a queued run starts: its key has room");
                                if let Err(e) = host.resume_claimed(&run, epoch).await {
                                    host.note_failed_resume(&run, &e);
                                }
                            });
                        }
                    }
                    Err(e) => tracing::warn!("could not start queued runs: {e}"),
                }
                tokio::select! {
                    _ = host.promotions.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        })
    }

    /// Starts the queued runs that have room and executes them one after
    /// the other (`host resume --all` and the start of `host run`), until
    /// none has.
    pub(super) async fn promote_here(
        &self,
        results: &mut Vec<(String, Result<RunReport, DurableError>)>,
    ) -> Result<(), DurableError> {
        loop {
            let started = self
                .journal
                .promote(&self.owner, self.lease, PROMOTE_BATCH)?;
            if started.is_empty() {
                return Ok(());
            }
            // Leased here: executed in turn (a lease that expires meanwhile
            // is renewed by the recorder before it writes).
            for (run, epoch) in started {
                tracing::info!(run = %run, "a queued run starts: its key has room");
                let result = self.resume_claimed(&run, epoch).await;
                results.push((run, result));
            }
        }
    }
}
