//! A run's report rebuilt from what the journal holds: its record and every
//! transition of every life (what `runs show` and `GET /runs/{id}` answer).

use std::collections::HashMap;

use super::{Journal, JournalError, RecordKind};
use crate::json::Json;
use crate::saga::{Action, CallRecord, OutboundRequest, Outcome, RunReport, RunStatus, TraceEntry};

/// Rebuilds a run's report from its record and transitions.
pub fn report_from_journal(journal: &dyn Journal, run: &str) -> Result<RunReport, JournalError> {
    let record = journal.run(run)?;
    let mut trace = Vec::new();
    let mut events = Vec::new();
    // (node, action, attempt) → (started at, step, input)
    type Start = (i64, String, Option<Json>);
    let mut starts: HashMap<(String, Action, u32), Start> = HashMap::new();
    let mut requests: HashMap<(String, Action, u32), Vec<OutboundRequest>> = HashMap::new();
    // (node, action, attempt) → the trace entry of an async step's invoke
    // that waits: its answer (a `finished` record with no `started` of its
    // own) completes that entry instead of adding a second one.
    let mut waiting: HashMap<(String, Action, u32), usize> = HashMap::new();
    for entry in journal.records(run)? {
        match entry.kind {
            RecordKind::Started {
                node,
                step,
                action,
                attempt,
                input,
            } => {
                starts.insert((node, action, attempt), (entry.at, step, input));
            }
            RecordKind::Finished {
                node,
                action,
                attempt,
                record: outcome,
            } => {
                let key = (node.clone(), action, attempt);
                let is_waiting = matches!(outcome, CallRecord::Waiting { .. });
                let (outcome, output, error) = match outcome {
                    CallRecord::Done { output, .. } | CallRecord::Waiting { output, .. } => {
                        (Outcome::Ok, Some(output), None)
                    }
                    CallRecord::Compensated => (Outcome::Ok, None, None),
                    CallRecord::Skipped => (Outcome::Skipped, None, None),
                    CallRecord::Failed { error, .. } => (Outcome::Error, None, Some(error)),
                };
                let start = starts.remove(&key);
                if start.is_none()
                    && let Some(index) = waiting.remove(&key)
                {
                    // The answer: the waiting attempt ends now, as answered.
                    let answered: &mut TraceEntry = &mut trace[index];
                    answered.outcome = outcome;
                    answered.error = error;
                    // The answer's output (a failed answer keeps the invoke's).
                    if output.is_some() {
                        answered.output = output;
                    }
                    answered.duration_ms =
                        (entry.at as f64 / 1000.0 - record.created_at as f64 - answered.started_ms)
                            .max(0.0);
                    continue;
                }
                let (started, step, input) = start.unwrap_or((entry.at, node.clone(), None));
                if is_waiting {
                    waiting.insert(key.clone(), trace.len());
                }
                trace.push(TraceEntry {
                    node: (node != step).then_some(node),
                    step,
                    action,
                    attempt,
                    outcome,
                    input,
                    output,
                    error,
                    started_ms: ((started - record.created_at * 1000) as f64 / 1000.0).max(0.0),
                    duration_ms: (entry.at - started) as f64 / 1000.0,
                    requests: requests.remove(&key).unwrap_or_default(),
                });
            }
            RecordKind::Requests {
                node,
                action,
                attempt,
                requests: made,
            } => {
                requests.insert((node, action, attempt), made);
            }
            RecordKind::Event(event) => events.push(event),
            RecordKind::Compensating(_) | RecordKind::Retry { .. } => {}
        }
    }
    let end = record.finished_at.unwrap_or(record.updated_at);
    let mut reruns: Vec<String> = journal
        .list(&super::RunFilter {
            rerun_of: Some(record.id.clone()),
            limit: Some(1000),
            ..Default::default()
        })?
        .into_iter()
        .map(|rerun| rerun.id)
        .collect();
    reruns.reverse();
    let trace_id = record
        .trace_context()
        .map(|c| crate::telemetry::hex(&c.trace_id));
    Ok(RunReport {
        run: record.id,
        workflow: record.workflow,
        transaction_id: record.transaction_id,
        status: record.status,
        partial: record.partial,
        output: record.output,
        error: record.error,
        errors: record.errors,
        trace,
        events,
        all_events: Vec::new(),
        duration_ms: (end - record.created_at) as f64,
        wake_at: record
            .wake_at
            .filter(|_| record.status == RunStatus::Waiting),
        rerun_of: record.rerun_of,
        reruns,
        trace_id,
        tick: record.tick,
    })
}
